"""Build a throw-away project folder whose params.yaml selects the tiny profile."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
IGNORED = {".venv", ".git", "outputs", "mlflow.db", "mlartifacts", "mlruns", ".pytest_cache", "__pycache__",
           "tardiff.egg-info", ".prefect", "cache", "tmp"}


def tiny_params(data_dir: Path, cohort: str = "physionet2012", **overrides) -> dict:
    """Return params.yaml of the project with the tiny profile, only ``cohort`` kept, its ``data.dir`` absolute.

    ``overrides`` are dotted keys such as ``data.max_stays`` (base section) or
    ``cohorts.physionet2012.data.sets``.
    """
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    raw["profile"] = "tiny"
    raw["cohort"] = cohort
    raw["cohorts"] = {cohort: raw["cohorts"][cohort]}
    raw["cohorts"][cohort]["data"]["dir"] = str(data_dir)
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return raw


def copy_project(destination: Path, data_dir: Path, **overrides) -> Path:
    """Copy the project's sources (no outputs, caches or virtual environment) and write tiny params."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        return {name for name in names if name in IGNORED or name.endswith(".pyc")}

    shutil.copytree(PROJECT_ROOT, destination, ignore=ignore)
    (destination / "params.yaml").write_text(yaml.safe_dump(tiny_params(data_dir, **overrides), sort_keys=False))
    return destination
