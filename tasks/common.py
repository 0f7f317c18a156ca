"""Shared plumbing of the stage commands that ``dvc.yaml`` runs.

Each stage is ``python -m tasks.<stage> [--params params.yaml] [--cohort NAME]``: it
reads its inputs under ``outputs/<cohort>/``, calls the library, writes its outputs
atomically and logs to MLflow.
Invalid input ends the process with exit status 2 and one line starting with
``tardiff: input error:``; the Prefect flow does not retry those.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from tardiff.config import Params, load_params
from tardiff.errors import TardiffInputError

STAGES = (
    "preprocess", "train_diffuser", "train_classifier", "precompute_ihvp", "generate", "baselines", "evaluate",
    "fidelity",
)
REPORT_STAGE = "report"  # once over all cohorts, after their stages
INPUT_ERROR_MARKER = "tardiff: input error:"
INPUT_ERROR_STATUS = 2

OUTPUTS = Path("outputs")
METRICS = Path("metrics")

# The cohort of the running stage, set by run_stage from --cohort or params.yaml.
_active: dict[str, str] = {}
# While run_stage runs a stage, the stage writes into a staging folder that replaces its
# output folder only on success. A failed or interrupted direct run so leaves the old
# outputs whole. Under DVC this adds nothing, because DVC removes outputs before a run.
_staging: dict[tuple[str, str], Path] = {}


@contextlib.contextmanager
def cohort_context(cohort: str) -> Iterator[None]:
    """Make ``cohort`` the active one, so stage_dir and metrics_path resolve under it (run_stage does this)."""
    previous = _active.get("cohort")
    _active["cohort"] = cohort
    try:
        yield
    finally:
        if previous is None:
            _active.pop("cohort", None)
        else:
            _active["cohort"] = previous


def active_cohort() -> str:
    """Return the cohort of the running stage (``cohort`` in params.yaml unless --cohort selects another)."""
    if "cohort" not in _active:
        raise RuntimeError("no cohort is active; stage paths are known only inside run_stage")
    return _active["cohort"]


def stage_dir(stage: str, cohort: str | None = None) -> Path:
    """Return ``outputs/<cohort>/<stage>``, relative to the project root (default: the active cohort)."""
    cohort = cohort or active_cohort()
    return _staging.get((cohort, stage), OUTPUTS / cohort / stage)


def _publish(final: Path, staging: Path) -> None:
    previous = final.with_name(f".{final.name}.previous")
    shutil.rmtree(previous, ignore_errors=True)
    if final.exists():
        final.rename(previous)
    staging.rename(final)
    shutil.rmtree(previous, ignore_errors=True)


def metrics_path(stage: str, cohort: str | None = None) -> Path:
    """Return the DVC metrics file ``metrics/<cohort>/<stage>.json`` (default: the active cohort)."""
    return METRICS / (cohort or active_cohort()) / f"{stage}.json"


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    for noisy in ("alembic", "mlflow.store", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_stage(stage: str, body: Callable[[Params, Path], None], argv: list[str] | None = None) -> None:
    """Parse the command line, load the parameters of the cohort and run ``body(params, project_root)``."""
    parser = argparse.ArgumentParser(prog=f"python -m tasks.{stage}", description=f"Run the {stage} stage.")
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    parser.add_argument("--cohort", default=None, help="cohort under `cohorts` in params.yaml (default: `cohort`)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        params = load_params(args.params, cohort=args.cohort)
    except TardiffInputError as exc:
        print(f"{INPUT_ERROR_MARKER} {exc}", file=sys.stderr)
        sys.exit(INPUT_ERROR_STATUS)
    cohort = params.cohort
    final = OUTPUTS / cohort / stage
    staging = final.with_name(f".{stage}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _staging[(cohort, stage)] = staging
    try:
        with cohort_context(cohort):
            body(params, Path.cwd())
        _staging.pop((cohort, stage))
        _publish(final, staging)
    except TardiffInputError as exc:
        print(f"{INPUT_ERROR_MARKER} {exc}", file=sys.stderr)
        sys.exit(INPUT_ERROR_STATUS)
    finally:
        _staging.pop((cohort, stage), None)
        shutil.rmtree(staging, ignore_errors=True)
