"""Stage 6: TRTR, TSTR and TSRTR of guided, unguided and real data on the real test split."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import polars as pl

from tardiff.config import Params
from tardiff.data.cohort import load_prepared
from tardiff.evaluation import LabelledSeries, evaluate_sources, results_table, summarise
from tardiff.io import atomic_path, load_npz, write_json
from tardiff.training import resolve_device
from tasks import tracking
from tasks.common import metrics_path, run_stage, stage_dir

logger = logging.getLogger("tasks.evaluate")


def main(params: Params, root: Path) -> None:
    device = resolve_device(params.device)
    cohort = load_prepared(stage_dir("preprocess"))
    synthetic = {}
    for name in ("guided", "unguided"):
        arrays = load_npz(stage_dir("generate") / f"{name}.npz", required=("x", "y"), what="synthetic data")
        synthetic[name] = LabelledSeries(arrays["x"], arrays["y"])

    with tracking.stage_run("evaluate", params, root):
        records = evaluate_sources(
            LabelledSeries(cohort.train.x, cohort.train.y),
            LabelledSeries(cohort.test.x, cohort.test.y),
            synthetic,
            params.evaluate,
            device,
        )
        summary = summarise(records)
        table = results_table(summary)

        out = stage_dir("evaluate")
        with atomic_path(out / "per_seed.csv") as tmp:
            pl.DataFrame(records).write_csv(tmp)
        with atomic_path(out / "results.md") as tmp:
            tmp.write_text(f"# Downstream evaluation: {params.data.dataset}, profile {params.profile}\n\n{table}")
        write_json(metrics_path("evaluate"), summary)
        tracking.log_metrics(summary)
        mlflow.log_artifact(str(out / "results.md"))
        mlflow.log_artifact(str(out / "per_seed.csv"))
        logger.info("results:\n%s", table)


if __name__ == "__main__":
    run_stage("evaluate", main)
