"""The whole pipeline: the Prefect flow over `dvc repro`, tiny profile, in a copy of the project."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tasks.common import REPORT_STAGE, STAGES
from tests.stage_project import copy_project

pytestmark = pytest.mark.e2e


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def pipeline_project(tmp_path_factory, physionet2012_dir):
    root = copy_project(tmp_path_factory.mktemp("e2e") / "project", physionet2012_dir)
    state = tmp_path_factory.mktemp("e2e-state")
    env = dict(os.environ)
    env.update({
        "PREFECT_HOME": str(state / "prefect"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{state / 'mlflow.db'}",
        "TARDIFF_MLFLOW_EXPERIMENT": "e2e",
        "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.invalid",
    })
    env.pop("PREFECT_API_URL", None)
    _run(["git", "init", "-q"], root, env)
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-q", "-m", "fixture"], root, env)
    first = _run([sys.executable, "-m", "flows.pipeline"], root, env)
    second = _run([sys.executable, "-m", "flows.pipeline"], root, env)
    return root, env, first, second


def _pipeline_runs(env: dict[str, str]):
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["e2e"], output_format="list", order_by=["attributes.start_time ASC"])
    parents = [run for run in runs if run.data.tags.get("tardiff.stage") == "pipeline"]
    children = {
        parent.info.run_id: [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        for parent in parents
    }
    return parents, children


def test_first_run_executes_all_stages(pipeline_project):
    root, _, first, _ = pipeline_project
    log = first.stdout + first.stderr
    for stage in STAGES:
        assert f"Running stage '{stage}@physionet2012'" in log, stage
    assert "Running stage 'report'" in log
    summary = json.loads((root / "metrics/physionet2012/evaluate.json").read_text())
    sources = {"guided", "unguided", "classifier_guidance", "ros", "smote", "timevae", "timegan"}
    assert set(summary) >= {"results", "paired", "bootstrap"}
    for evaluator in ("gru", "timesnet", "gbt"):
        assert set(summary["results"][evaluator]) == {"real", *sources}, evaluator
    fidelity = json.loads((root / "metrics/physionet2012/fidelity.json").read_text())
    assert set(fidelity) == {"real_holdout", *sources}
    assert (root / "dvc.lock").is_file()
    report = (root / "reports/results.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| physionet2012 |"))
    assert f"{summary['results']['gru']['guided']['tstr']['auroc_mean']:.3f}" in row
    assert (root / "reports/results.png").stat().st_size > 5_000


def test_second_run_skips_every_stage(pipeline_project):
    root, env, _, second = pipeline_project
    log = second.stdout + second.stderr
    for stage in STAGES:
        assert f"Stage '{stage}@physionet2012' didn't change, skipping" in log, stage
    assert "Stage 'report' didn't change, skipping" in log
    status = _run([sys.executable, "-m", "dvc", "status"], root, env)
    assert "up to date" in status.stdout


def test_parent_run_with_stage_children(pipeline_project):
    _, env, _, _ = pipeline_project
    parents, children = _pipeline_runs(env)
    assert len(parents) == 2
    first, second = (children[parent.info.run_id] for parent in parents)
    assert sorted(run.data.tags["tardiff.stage"] for run in first) == sorted([*STAGES, REPORT_STAGE])
    assert all(run.data.tags.get("tardiff.cached") is None for run in first)
    assert sorted(run.data.tags["tardiff.stage"] for run in second) == sorted([*STAGES, REPORT_STAGE])
    assert all(run.data.tags.get("tardiff.cached") == "true" for run in second)
    assert {run.data.tags["dataset"] for run in first if run.data.tags["tardiff.stage"] in STAGES} == {"physionet2012"}
    key = "physionet2012/results/gru/guided/tstr/auroc_mean"
    assert parents[0].data.metrics[key] == parents[1].data.metrics[key]


def test_mlflow_holds_artifacts(pipeline_project):
    _, env, _, _ = pipeline_project
    parents, children = _pipeline_runs(env)
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    generate_run = next(run for run in children[parents[0].info.run_id] if run.data.tags["tardiff.stage"] == "generate")
    names = {item.path for item in client.list_artifacts(generate_run.info.run_id, "plots")}
    assert "plots/trajectories.png" in names
    synthetic = {item.path for item in client.list_artifacts(generate_run.info.run_id, "synthetic")}
    assert {"synthetic/guided.parquet", "synthetic/unguided.parquet"} <= synthetic
