"""Shared fixtures: the real data folder and isolated Prefect and MLflow state."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """Return the folder with the open ICU data: ``TARDIFF_DATA_ROOT`` or ``../shared/data``."""
    return Path(os.environ.get("TARDIFF_DATA_ROOT", PROJECT_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = shared_data_root()
    if not (root / "physionet2012").is_dir():
        pytest.fail(
            f"real test data not found at {root}; put the shared data folder beside the project "
            "or set TARDIFF_DATA_ROOT to it"
        )
    return root


@pytest.fixture(scope="session")
def physionet2012_dir(data_root: Path) -> Path:
    return data_root / "physionet2012"


@pytest.fixture(autouse=True, scope="session")
def isolated_services(tmp_path_factory: pytest.TempPathFactory):
    """Keep Prefect's database and MLflow's store of the tests out of the user's home and project."""
    state = tmp_path_factory.mktemp("services")
    previous = {key: os.environ.get(key) for key in ("PREFECT_HOME", "MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    os.environ["PREFECT_HOME"] = str(state / "prefect")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{state / 'mlflow.db'}"
    os.environ.pop("PREFECT_API_URL", None)
    yield state
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
