"""Stage 7: TRTR, TSTR and TSRTR of guided, unguided, baseline and real data on the real test split, per evaluator."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import polars as pl

from tardiff.config import Params
from tardiff.data.cohort import load_prepared
from tardiff.evaluation import (
    METRIC_LABELS,
    LabelledSeries,
    curve_scores,
    evaluate_sources,
    results_tables,
    save_predictions,
    summarise,
)
from tardiff.io import atomic_path, load_npz, write_json
from tardiff.plots import plot_metric_over_alpha, plot_roc_pr
from tardiff.training import resolve_device
from tasks import tracking
from tasks.common import metrics_path, run_stage, stage_dir

logger = logging.getLogger("tasks.evaluate")

PLOTS = ("curves.png", "tsrtr_alpha.png")


def main(params: Params, root: Path) -> None:
    device = resolve_device(params.device)
    config = params.evaluate
    cohort = load_prepared(stage_dir("preprocess"))
    synthetic = {}
    files = {name: stage_dir("generate") / f"{name}.npz" for name in ("guided", "unguided")}
    files.update({name: stage_dir("baselines") / f"{name}.npz" for name in config.baselines})
    for name, path in files.items():
        arrays = load_npz(path, required=("x", "y"), what="synthetic data")
        synthetic[name] = LabelledSeries(arrays["x"], arrays["y"])

    with tracking.stage_run("evaluate", params, root):
        result = evaluate_sources(
            LabelledSeries(cohort.train.x, cohort.train.y),
            LabelledSeries(cohort.val.x, cohort.val.y),
            LabelledSeries(cohort.test.x, cohort.test.y),
            synthetic,
            config,
            device,
        )
        summary = summarise(result, config.bootstrap_replicates, config.bootstrap_seed, config.paired_baseline)
        tables = results_tables(summary)

        out = stage_dir("evaluate")
        with atomic_path(out / "per_seed.csv") as tmp:
            pl.DataFrame(result.records()).write_csv(tmp)
        save_predictions(out / "predictions.npz", result, test_ids=cohort.test.record_id)
        with atomic_path(out / "results.md") as tmp:
            tmp.write_text(f"# Downstream evaluation: {params.data.dataset}, profile {params.profile}\n\n{tables}")

        curve_seed = config.seeds[0]
        with atomic_path(out / "curves.png") as tmp:
            plot_roc_pr(result.y_test, curve_scores(result, curve_seed), str(tmp), note=f"seed {curve_seed}")
        with atomic_path(out / "tsrtr_alpha.png") as tmp:
            plot_metric_over_alpha(summary["results"], METRIC_LABELS, str(tmp))

        write_json(metrics_path("evaluate"), summary)
        tracking.log_metrics(summary)
        for name in ("results.md", "per_seed.csv", "predictions.npz"):
            mlflow.log_artifact(str(out / name))
        for name in PLOTS:
            mlflow.log_artifact(str(out / name), artifact_path="plots")
        logger.info("results:\n%s", tables)


if __name__ == "__main__":
    run_stage("evaluate", main)
