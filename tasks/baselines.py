"""Stage: baseline synthetic sets with the real training split's label counts, for comparison with TarDiff.

Each method in ``baselines.methods`` writes ``outputs/baselines/<method>.npz``
(``x (n, time, channels)`` float32 in the cohort's normalisation, ``y`` int64)
and ``<method>.parquet`` in clinical units, the formats of the generate stage.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch

from tardiff.baselines import generate_timegan, generate_timevae, random_oversample, smote
from tardiff.config import Params
from tardiff.data.cohort import PreparedCohort, load_prepared
from tardiff.errors import CorruptFileError
from tardiff.io import write_json
from tardiff.sampling import ClassifierGuidance, counts_per_label, generate
from tardiff.training import resolve_device
from tasks import tracking
from tasks.common import metrics_path, run_stage, stage_dir
from tasks.generate import SEED_OFFSET as GENERATE_SEED_OFFSET
from tasks.generate import write_synthetic
from tasks.load import load_classifier, load_diffuser

logger = logging.getLogger("tasks.baselines")

SEED_OFFSET = 5
# Fixed per method, so a method's output does not depend on which other methods run.
METHOD_SEED_OFFSETS = {"ros": 0, "smote": 1, "timevae": 2, "timegan": 3}

MethodOutput = tuple[np.ndarray, np.ndarray, dict[str, Any], dict]  # x, y, extra metrics, training history


def classifier_guidance_samples(
    params: Params, cohort: PreparedCohort, per_class: dict[int, int], device: torch.device
) -> MethodOutput:
    """Sample the trained diffuser with classifier guidance, using the generate stage's sampler settings and noise.

    The seed is the generate stage's, so each sample starts from the same noise
    as its guided and unguided twins in ``outputs/generate``.
    """
    config = params.generate
    model, diffusion = load_diffuser(stage_dir("train_diffuser") / "model.pt", config.use_ema, device)
    classifier_path = stage_dir("train_classifier") / "model.pt"
    classifier = load_classifier(classifier_path, device)
    n_channels = cohort.train.x.shape[2]
    if classifier.config.in_channels != n_channels:
        raise CorruptFileError(
            f"classifier {classifier_path} takes {classifier.config.in_channels} channels but the cohort has "
            f"{n_channels}; re-run train_classifier"
        )
    guidance = ClassifierGuidance(
        classifier=classifier,
        guidance_scale=params.baselines.classifier_guidance.guidance_scale,
        gradient_at=config.gradient_at,
    )
    shape = (n_channels, cohort.train.x.shape[1])  # (channels, time)
    x, y, norms = generate(
        model, diffusion, per_class, shape, config.sampling_steps, config.eta, config.batch_size,
        params.seed + GENERATE_SEED_OFFSET, device, guidance=guidance, desc="baseline classifier_guidance",
    )
    extra = {
        "guidance_scale": guidance.guidance_scale,
        "mean_guidance_norm": float(np.mean(norms)) if norms else 0.0,
    }
    return x, y, extra, {}


def run_method(
    name: str, params: Params, cohort: PreparedCohort, per_class: dict[int, int], device: torch.device
) -> MethodOutput:
    """Run one baseline on the real training split; returns ``(x, y, extra metrics, training history)``."""
    config = params.baselines
    x_train, y_train = cohort.train.x, cohort.train.y
    if name == "classifier_guidance":
        return classifier_guidance_samples(params, cohort, per_class, device)
    seed = params.seed + SEED_OFFSET + METHOD_SEED_OFFSETS[name]
    if name == "ros":
        x, y = random_oversample(x_train, y_train, per_class, seed)
        return x, y, {}, {}
    if name == "smote":
        x, y = smote(x_train, y_train, per_class, config.smote.k_neighbors, seed)
        return x, y, {"k_neighbors": config.smote.k_neighbors}, {}
    if name == "timevae":
        result = generate_timevae(x_train, y_train, per_class, config.timevae, seed, device)
    elif name == "timegan":
        result = generate_timegan(x_train, y_train, per_class, config.timegan, seed, device)
    else:
        raise ValueError(f"unknown baseline {name!r}")
    history = {str(label): losses for label, losses in result.history.items()}
    return result.x, result.y, {}, history


def main(params: Params, root: Path) -> None:
    device = resolve_device(params.device)
    cohort = load_prepared(stage_dir("preprocess"))
    channel_names = [c["name"] for c in cohort.metadata["channels"]]
    per_class = counts_per_label(cohort.train.y)
    out = stage_dir("baselines")

    with tracking.stage_run("baselines", params, root):
        metrics: dict[str, dict[str, Any]] = {}
        histories: dict[str, dict] = {}
        for name in params.baselines.methods:
            logger.info("baseline %s: generating %s samples per class", name, per_class)
            started = time.perf_counter()
            x, y, extra, history = run_method(name, params, cohort, per_class, device)
            seconds = time.perf_counter() - started
            if not np.isfinite(x).all():
                raise FloatingPointError(f"baseline {name} produced NaN or inf values; see its settings in params.yaml")
            if counts_per_label(y) != per_class or x.shape[1:] != cohort.train.x.shape[1:]:
                raise RuntimeError(
                    f"baseline {name} returned shape {x.shape} and counts {counts_per_label(y)}, expected "
                    f"(*, {cohort.train.x.shape[1]}, {cohort.train.x.shape[2]}) and {per_class}"
                )
            write_synthetic(out, name, x, y, cohort.normaliser.inverse_transform(x), channel_names)
            metrics[name] = {
                "seconds": seconds,
                "samples": int(y.shape[0]),
                "samples_per_class": {str(k): v for k, v in per_class.items()},
                **extra,
            }
            if history:
                histories[name] = history
            logger.info("baseline %s: %d samples in %.1f s", name, y.shape[0], seconds)

        write_json(out / "training_history.json", histories)
        write_json(metrics_path("baselines"), metrics)
        tracking.log_metrics(metrics)
        for name in params.baselines.methods:
            mlflow.log_artifact(str(out / f"{name}.parquet"), artifact_path="synthetic")


if __name__ == "__main__":
    run_stage("baselines", main)
