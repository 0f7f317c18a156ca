"""Stage 1: read the cohort's raw data with its reader and write the hourly cohort tensors and metadata."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow

from tardiff.config import Params
from tardiff.data.cohort import preprocess_cohort, save_prepared
from tardiff.io import write_json
from tasks import tracking
from tasks.common import metrics_path, run_stage, stage_dir

logger = logging.getLogger("tasks.preprocess")


def main(params: Params, root: Path) -> None:
    with tracking.stage_run("preprocess", params, root):
        cohort = preprocess_cohort(params.data, params.seed)
        out = stage_dir("preprocess")
        save_prepared(cohort, out)

        metrics = {
            "stays": {split: int(getattr(cohort, split).y.shape[0]) for split in ("train", "val", "test")},
            "positive_rate": {
                split: float(getattr(cohort, split).y.mean()) for split in ("train", "val", "test")
            },
        }
        write_json(metrics_path("preprocess"), metrics)
        tracking.log_metrics(metrics)
        mlflow.log_artifact(str(out / "metadata.json"))
        logger.info("wrote %s: %s", out, metrics)


if __name__ == "__main__":
    run_stage("preprocess", main)
