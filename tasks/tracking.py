"""MLflow tracking for pipeline stages.

The tracking URI comes from ``MLFLOW_TRACKING_URI`` when set, else a SQLite
store ``mlflow.db`` in the project root (git-ignored), with artefacts under
``mlartifacts/``. A stage run becomes a child of the pipeline's parent run when
``TARDIFF_PARENT_RUN_ID`` is set, which the Prefect flow does for every stage.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow

from tardiff.config import Params, to_flat_dict

logger = logging.getLogger(__name__)

EXPERIMENT_ENV = "TARDIFF_MLFLOW_EXPERIMENT"
PARENT_ENV = "TARDIFF_PARENT_RUN_ID"
DEFAULT_EXPERIMENT = "tardiff"


def default_tracking_uri(project_root: Path) -> str:
    """Return the SQLite store inside ``project_root``."""
    return f"sqlite:///{(project_root / 'mlflow.db').resolve()}"


def configure(project_root: Path) -> str:
    """Point MLflow at the configured store and experiment; returns the tracking URI."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(project_root)
    mlflow.set_tracking_uri(uri)
    name = os.environ.get(EXPERIMENT_ENV, DEFAULT_EXPERIMENT)
    if mlflow.get_experiment_by_name(name) is None and uri.startswith("sqlite:"):
        # Keep artefacts beside the store rather than under the current directory.
        mlflow.create_experiment(name, artifact_location=(project_root / "mlartifacts").resolve().as_uri())
    mlflow.set_experiment(name)
    return uri


def run_tags(stage: str, params: Params, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Return the tags every stage run carries: stage, dataset (the cohort), reader, task, profile and parent."""
    tags = {
        "tardiff.stage": stage,
        "dataset": params.cohort,
        "tardiff.reader": params.data.dataset,
        "tardiff.task": params.data.task or "default",
        "profile": params.profile,
    }
    parent = os.environ.get(PARENT_ENV)
    if parent:
        tags["mlflow.parentRunId"] = parent
    tags.update(extra or {})
    return tags


@contextlib.contextmanager
def stage_run(stage: str, params: Params, project_root: Path) -> Iterator[mlflow.ActiveRun]:
    """Open the MLflow run of one stage and log the parameters of the active profile."""
    configure(project_root)
    with mlflow.start_run(run_name=stage, tags=run_tags(stage, params)) as run:
        mlflow.log_params(_loggable(to_flat_dict(params)))
        yield run


def _loggable(flat: dict[str, Any]) -> dict[str, str]:
    # MLflow caps parameter values at 6,000 characters; channel lists stay far below that.
    return {key: str(value) for key, value in flat.items()}


def log_metrics(metrics: dict[str, Any], prefix: str = "") -> None:
    """Log the numeric leaves of a nested dict with slash-joined names."""
    flat: dict[str, float] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}/{key}" if path else str(key))
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            flat[_metric_name(path)] = float(node)

    walk(metrics, prefix)
    if flat:
        mlflow.log_metrics(flat)


def _metric_name(path: str) -> str:
    # MLflow metric names allow letters, digits, _ - . / and spaces; alpha keys contain '='.
    return path.replace("=", "_")
