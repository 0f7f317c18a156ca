"""Final stage: one table and one figure of the downstream results on every cohort in params.yaml.

Reads ``metrics/<cohort>/evaluate.json`` for each entry under ``cohorts`` and writes
``reports/results.md`` and ``reports/results.png``. A cohort without an evaluation yet
gets a "not evaluated yet" row, so the report of a partial run is still honest. Each
evaluated cohort also gets ``reports/cohorts/<cohort>.md``: every source against every
evaluator and metric, with its fidelity and privacy scores.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import mlflow

from tardiff.config import Params, cohort_names, params_from_dict, read_params_file
from tardiff.errors import CorruptFileError, TardiffInputError
from tardiff.io import atomic_path, read_json
from tardiff.report import cohort_table, plot_results, results_tables
from tasks import tracking
from tasks.common import INPUT_ERROR_MARKER, INPUT_ERROR_STATUS, metrics_path, setup_logging

logger = logging.getLogger("tasks.report")

REPORTS = Path("reports")
COHORT_PAGES = REPORTS / "cohorts"


def build_report(params_file: str, root: Path) -> tuple[str, dict, Params, dict[str, str]]:
    """Collect every cohort's evaluation summary.

    Returns the markdown, the summaries by cohort, the parameters of the default
    cohort (whose tags the report's MLflow run carries) and each evaluated cohort's page.
    """
    raw = read_params_file(params_file)
    summaries: dict[str, dict | None] = {}
    info: dict[str, dict] = {}
    profiles = set()
    for cohort in cohort_names(raw, params_file):
        params = params_from_dict(raw, params_file, cohort=cohort)
        profiles.add(params.profile)
        info[cohort] = {"dataset": params.data.dataset, "task": params.data.task}
        path = root / metrics_path("evaluate", cohort)
        summaries[cohort] = read_json(path, what="evaluation summary") if path.is_file() else None
        if summaries[cohort] is not None and not isinstance(summaries[cohort], dict):
            raise CorruptFileError(f"{path} does not hold an evaluation summary; re-run `dvc repro evaluate@{cohort}`")
    pages = {}
    for cohort, summary in summaries.items():
        if summary is None:
            continue
        fidelity_path = root / metrics_path("fidelity", cohort)
        fidelity = read_json(fidelity_path, what="fidelity metrics") if fidelity_path.is_file() else None
        pages[cohort] = cohort_table(cohort, summary, fidelity, info[cohort])
    header = (
        "# Downstream results on every cohort\n\n"
        f"Profile: {', '.join(sorted(profiles))}. Real test split of each cohort; mean ± std over the evaluator "
        "seeds and the 95% bootstrap interval over test stays. TSTR trains on synthetic data only; TSRTR adds "
        "synthetic data to the real training split, reported at the alpha with the best mean AUPRC. F1 is that "
        "of the positive class at the threshold chosen on the validation split. Made by `dvc repro` "
        "(stage `report`). Every source, baselines included, with fidelity and privacy: one page per cohort in "
        "[cohorts/](cohorts/).\n\n"
    )
    return header + results_tables(summaries, info), summaries, params_from_dict(raw, params_file), pages


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tasks.report", description="Write the cross-cohort results.")
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    args = parser.parse_args(argv)
    setup_logging()
    root = Path.cwd()
    try:
        markdown, summaries, params, pages = build_report(args.params, root)
    except TardiffInputError as exc:
        print(f"{INPUT_ERROR_MARKER} {exc}", file=sys.stderr)
        sys.exit(INPUT_ERROR_STATUS)
    with atomic_path(REPORTS / "results.md") as tmp:
        tmp.write_text(markdown)
    with atomic_path(REPORTS / "results.png") as tmp:
        plot_results(summaries, str(tmp))
    for stale in COHORT_PAGES.glob("*.md"):
        if stale.stem not in pages:
            stale.unlink()
    for cohort, page in pages.items():
        with atomic_path(COHORT_PAGES / f"{cohort}.md") as tmp:
            tmp.write_text(page)
    tracking.configure(root)
    tags = {**tracking.run_tags("report", params), "dataset": "all"}
    with mlflow.start_run(run_name="report", tags=tags):
        for cohort, summary in summaries.items():
            if summary is not None:
                tracking.log_metrics(summary, prefix=cohort)
        mlflow.log_artifact(str(REPORTS / "results.md"))
        mlflow.log_artifact(str(REPORTS / "results.png"))
        for cohort in pages:
            mlflow.log_artifact(str(COHORT_PAGES / f"{cohort}.md"), artifact_path="cohorts")
    logger.info("wrote %s and %s:\n%s", REPORTS / "results.md", REPORTS / "results.png", markdown)


if __name__ == "__main__":
    main()
