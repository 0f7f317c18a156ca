"""Stage 3: train the guidance classifier (bidirectional GRU) on the real training split."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow

from tardiff.config import Params
from tardiff.data.cohort import load_prepared
from tardiff.io import save_checkpoint, write_json
from tardiff.training import binary_metrics, predict_proba, resolve_device, train_classifier
from tasks import tracking
from tasks.common import metrics_path, run_stage, stage_dir
from tasks.load import classifier_payload

logger = logging.getLogger("tasks.train_classifier")

SEED_OFFSET = 2


def main(params: Params, root: Path) -> None:
    cohort = load_prepared(stage_dir("preprocess"))
    device = resolve_device(params.device)
    out = stage_dir("train_classifier")

    with tracking.stage_run("train_classifier", params, root):
        result = train_classifier(
            cohort.train.x, cohort.train.y, params.classifier, device, params.seed + SEED_OFFSET,
            x_val=cohort.val.x, y_val=cohort.val.y,
        )
        for record in result.history:
            mlflow.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=int(record["epoch"]))

        checkpoint = out / "model.pt"
        save_checkpoint(checkpoint, classifier_payload(result.model))
        val = binary_metrics(cohort.val.y, predict_proba(result.model, cohort.val.x, device))
        test = binary_metrics(cohort.test.y, predict_proba(result.model, cohort.test.x, device))
        metrics = {"best_epoch": result.best_epoch, "val": val, "test": test}
        write_json(metrics_path("train_classifier"), metrics)
        tracking.log_metrics(metrics)
        mlflow.log_artifact(str(checkpoint), artifact_path="checkpoints")
        logger.info("guidance classifier: %s", metrics)


if __name__ == "__main__":
    run_stage("train_classifier", main)
