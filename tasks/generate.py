"""Stage 5: influence-guided DDIM generation, plus the unguided baseline from the same noise."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import mlflow
import numpy as np
import polars as pl

from tardiff.config import Params
from tardiff.data.cohort import load_prepared
from tardiff.errors import CorruptFileError
from tardiff.io import atomic_path, load_checkpoint, save_npz, write_json
from tardiff.plots import plot_trajectories
from tardiff.sampling import InfluenceGuidance, counts_per_label, generate
from tardiff.training import resolve_device
from tasks import tracking
from tasks.common import metrics_path, run_stage, stage_dir
from tasks.load import load_classifier, load_diffuser

logger = logging.getLogger("tasks.generate")

SEED_OFFSET = 4


def to_long_frame(x_clinical: np.ndarray, y: np.ndarray, channel_names: list[str]) -> pl.DataFrame:
    """Return one row per (sample, hour) with one column per channel, in clinical units."""
    n, hours, _ = x_clinical.shape
    columns = {
        "sample_id": np.repeat(np.arange(n), hours),
        "label": np.repeat(y, hours),
        "hour": np.tile(np.arange(hours), n),
    }
    for index, name in enumerate(channel_names):
        columns[name] = x_clinical[:, :, index].reshape(-1)
    return pl.DataFrame(columns)


def write_synthetic(out: Path, name: str, x: np.ndarray, y: np.ndarray, x_clinical: np.ndarray, channels: list[str]) -> None:
    save_npz(out / f"{name}.npz", x=x, y=y)
    with atomic_path(out / f"{name}.parquet") as tmp:
        to_long_frame(x_clinical, y, channels).write_parquet(tmp)


def main(params: Params, root: Path) -> None:
    config = params.generate
    device = resolve_device(params.device)
    cohort = load_prepared(stage_dir("preprocess"))
    model, diffusion = load_diffuser(stage_dir("train_diffuser") / "model.pt", config.use_ema, device)
    classifier = load_classifier(stage_dir("train_classifier") / "model.pt", device)
    payload = load_checkpoint(stage_dir("precompute_ihvp") / "vector.pt", required=("vector", "score", "method"))
    vector = payload["vector"].to(device)
    n_params = sum(p.numel() for p in classifier.parameters())
    if vector.numel() != n_params:
        raise CorruptFileError(
            f"guidance vector has {vector.numel()} entries but the classifier has {n_params} parameters; "
            "re-run precompute_ihvp"
        )
    if config.unit_vector:
        vector = vector / vector.norm().clamp_min(1e-12)

    channel_names = [c["name"] for c in cohort.metadata["channels"]]
    units = [c["unit"] for c in cohort.metadata["channels"]]
    per_class = counts_per_label(cohort.train.y)
    shape = (cohort.train.x.shape[2], cohort.train.x.shape[1])  # (channels, time)
    seed = params.seed + SEED_OFFSET

    guidance = InfluenceGuidance(
        classifier=classifier,
        vector=vector,
        score=payload["score"] if config.score == "auto" else config.score,
        guidance_scale=config.guidance_scale,
        gradient_at=config.gradient_at,
        mode=config.guidance_gradient,
    )
    out = stage_dir("generate")
    with tracking.stage_run("generate", params, root):
        mlflow.set_tags({"ihvp.method": payload["method"]})
        results, seconds = {}, {}
        # Same seed for both: each guided sample starts from the noise of its unguided twin.
        for name, active in (("guided", guidance), ("unguided", None)):
            started = time.perf_counter()
            x, y, norms = generate(
                model, diffusion, per_class, shape, config.sampling_steps, config.eta, config.batch_size,
                seed, device, guidance=active, desc=f"generate {name}",
            )
            seconds[name] = time.perf_counter() - started
            if not np.isfinite(x).all():
                raise FloatingPointError(
                    f"{name} samples contain NaN or inf; lower generate.guidance_scale (now {config.guidance_scale})"
                )
            results[name] = (x, y, norms)

        clinical = {}
        for name, (x, y, _) in results.items():
            clinical[name] = cohort.normaliser.inverse_transform(x)
            write_synthetic(out, name, x, y, clinical[name], channel_names)

        real_clinical = cohort.normaliser.inverse_transform(cohort.train.x)
        plot_path = out / "trajectories.png"
        with atomic_path(plot_path) as tmp:
            plot_trajectories(
                (real_clinical, cohort.train.y),
                {name: (clinical[name], results[name][1]) for name in results},
                channel_names, units, str(tmp),
            )

        guided, unguided = results["guided"][0], results["unguided"][0]
        metrics = {
            "samples_per_class": {str(k): v for k, v in per_class.items()},
            "guidance_scale": config.guidance_scale,
            "mean_guidance_norm": float(np.mean(results["guided"][2])) if results["guided"][2] else 0.0,
            "mean_abs_shift_vs_unguided": float(np.abs(guided - unguided).mean()),
            "seconds_guided": seconds["guided"],
            "seconds_unguided": seconds["unguided"],
            "guided_over_unguided_time": seconds["guided"] / seconds["unguided"],
        }
        write_json(metrics_path("generate"), metrics)
        tracking.log_metrics({k: v for k, v in metrics.items() if k != "samples_per_class"})
        mlflow.log_artifact(str(plot_path), artifact_path="plots")
        for name in results:
            mlflow.log_artifact(str(out / f"{name}.parquet"), artifact_path="synthetic")
        logger.info("generated %s samples: %s", sum(per_class.values()), metrics)


if __name__ == "__main__":
    run_stage("generate", main)
