"""Shared plumbing of the stage commands that ``dvc.yaml`` runs.

Each stage is ``python -m tasks.<stage> [--params params.yaml]``: it reads its
inputs, calls the library, writes its outputs atomically and logs to MLflow.
Invalid input ends the process with exit status 2 and one line starting with
``tardiff: input error:``; the Prefect flow does not retry those.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from tardiff.config import Params, load_params
from tardiff.errors import TardiffInputError

STAGES = (
    "preprocess", "train_diffuser", "train_classifier", "precompute_ihvp", "generate", "baselines", "evaluate",
)
INPUT_ERROR_MARKER = "tardiff: input error:"
INPUT_ERROR_STATUS = 2

OUTPUTS = Path("outputs")
METRICS = Path("metrics")

# While run_stage runs a stage, the stage writes into a staging folder that replaces its
# output folder only on success. A failed or interrupted direct run so leaves the old
# outputs whole. Under DVC this adds nothing, because DVC removes outputs before a run.
_staging: dict[str, Path] = {}


def stage_dir(stage: str) -> Path:
    """Return the output folder of ``stage``, relative to the project root."""
    return _staging.get(stage, OUTPUTS / stage)


def _publish(stage: str, staging: Path) -> None:
    final = OUTPUTS / stage
    previous = OUTPUTS / f".{stage}.previous"
    shutil.rmtree(previous, ignore_errors=True)
    if final.exists():
        final.rename(previous)
    staging.rename(final)
    shutil.rmtree(previous, ignore_errors=True)


def metrics_path(stage: str) -> Path:
    """Return the DVC metrics file of ``stage``."""
    return METRICS / f"{stage}.json"


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    for noisy in ("alembic", "mlflow.store", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_stage(stage: str, body: Callable[[Params, Path], None], argv: list[str] | None = None) -> None:
    """Parse the command line, load the parameters and run ``body(params, project_root)``."""
    parser = argparse.ArgumentParser(prog=f"python -m tasks.{stage}", description=f"Run the {stage} stage.")
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    args = parser.parse_args(argv)
    setup_logging()
    staging = OUTPUTS / f".{stage}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _staging[stage] = staging
    try:
        params = load_params(args.params)
        body(params, Path.cwd())
        _staging.pop(stage)
        _publish(stage, staging)
    except TardiffInputError as exc:
        print(f"{INPUT_ERROR_MARKER} {exc}", file=sys.stderr)
        sys.exit(INPUT_ERROR_STATUS)
    finally:
        _staging.pop(stage, None)
        shutil.rmtree(staging, ignore_errors=True)
