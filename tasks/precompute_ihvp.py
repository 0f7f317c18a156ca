"""Stage 4: precompute the guidance vector s = H^{-1} G (or its identity-Hessian forms)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import mlflow
import numpy as np
import torch

from tardiff.config import Params
from tardiff.data.cohort import load_prepared
from tardiff.errors import TardiffInputError
from tardiff.ihvp import compute_ihvp, hessian_subsample
from tardiff.io import save_checkpoint, write_json
from tardiff.training import resolve_device
from tasks import tracking
from tasks.common import metrics_path, run_stage, stage_dir
from tasks.load import load_classifier

logger = logging.getLogger("tasks.precompute_ihvp")

SEED_OFFSET = 3


def main(params: Params, root: Path) -> None:
    config = params.ihvp
    cohort = load_prepared(stage_dir("preprocess"))
    device = resolve_device(params.device)
    model = load_classifier(stage_dir("train_classifier") / "model.pt", device)

    # The guidance set: the validation split, optionally restricted to one class.
    keep = np.ones_like(cohort.val.y, dtype=bool) if config.guide_class == "all" else cohort.val.y == int(config.guide_class)
    if not keep.any():
        raise TardiffInputError(
            f"ihvp.guide_class={config.guide_class} selects no validation stays; use 'all' or a class present"
        )
    guide_x = torch.as_tensor(cohort.val.x[keep], device=device)
    guide_y = torch.as_tensor(cohort.val.y[keep], device=device)

    # The Hessian is that of the mean training loss over a seeded subsample.
    rng = np.random.default_rng(params.seed + SEED_OFFSET)
    index = hessian_subsample(len(cohort.train), config.hessian_samples, rng)
    size = index.size
    train_x = torch.as_tensor(cohort.train.x[index], device=device)
    train_y = torch.as_tensor(cohort.train.y[index], device=device)

    with tracking.stage_run("precompute_ihvp", params, root):
        result = compute_ihvp(model, guide_x, guide_y, train_x, train_y, config, params.seed + SEED_OFFSET)
        out = stage_dir("precompute_ihvp")
        save_checkpoint(
            out / "vector.pt",
            {
                "vector": result.vector.cpu(),
                "method": result.method,
                "score": result.score,
                "damping": result.damping,
                "iterations": result.iterations,
                "relative_residual": result.relative_residual,
                "guide_class": config.guide_class,
            },
        )
        metrics = {
            "method": result.method,
            "score": result.score,
            "damping": result.damping,
            "damping_requested": config.damping if config.method == "cg" else 0.0,
            "iterations": result.iterations,
            # NaN (no residual for identity-Hessian and last-layer vectors) is not valid JSON.
            "relative_residual": None if math.isnan(result.relative_residual) else result.relative_residual,
            "negative_curvature": result.negative_curvature,
            "guidance_gradient_norm": result.guidance_gradient_norm,
            "vector_norm": float(result.vector.norm()),
            "guidance_set_size": result.guidance_set_size,
            "hessian_samples": size,
            "seconds": result.seconds,
            **{key: value for key, value in result.details.items() if not isinstance(value, list)},
        }
        write_json(metrics_path("precompute_ihvp"), metrics)
        write_json(out / "residual_trace.json", {"relative_residual": result.residual_trace, **result.details})
        for step, value in enumerate(result.residual_trace):
            mlflow.log_metric("solver_trace", value, step=step)
        tracking.log_metrics({k: v for k, v in metrics.items() if not isinstance(v, (str, bool, type(None)))})
        mlflow.set_tags({"ihvp.method": result.method, "ihvp.negative_curvature": str(result.negative_curvature)})
        logger.info("guidance vector: %s", metrics)


if __name__ == "__main__":
    run_stage("precompute_ihvp", main)
