"""The fidelity stage on a small real cohort (PhysioNet 2012 set a, 400 stays, tiny profile).

Running the diffuser, classifier and generation stages first would take minutes, so the
synthetic sources are built from the prepared cohort instead, and their expected scores
are known. The generate folder contains white noise with the training split's per-channel
mean and spread. The baselines folder contains the one baseline the parameters list, ``ros``,
which here copies training records as random oversampling does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml

from tardiff.config import load_params
from tardiff.data.cohort import load_prepared
from tardiff.io import save_npz
from tasks import fidelity, preprocess
from tasks.common import INPUT_ERROR_MARKER, INPUT_ERROR_STATUS, cohort_context, run_stage
from tests.stage_project import tiny_params

N_COPIES = 120


@pytest.fixture(scope="module")
def project(tmp_path_factory, physionet2012_dir):
    """Prepare the cohort, write the two derived sources, run the stage through its command line."""
    root = tmp_path_factory.mktemp("fidelity")
    raw = tiny_params(physionet2012_dir)
    raw["profiles"]["tiny"]["baselines"]["methods"] = ["ros"]
    raw["profiles"]["tiny"]["evaluate"]["baselines"] = ["ros"]
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    previous = Path.cwd()
    os.chdir(root)
    try:
        with cohort_context("physionet2012"):
            preprocess.main(load_params("params.yaml"), root)
        cohort = load_prepared(root / "outputs/physionet2012/preprocess")
        train = cohort.train
        save_npz(root / "outputs/physionet2012/baselines/ros.npz", x=train.x[:N_COPIES], y=train.y[:N_COPIES])
        rng = np.random.default_rng(0)
        mean, spread = train.x.mean(axis=(0, 1)), train.x.std(axis=(0, 1))
        noise = (mean + spread * rng.standard_normal(train.x.shape)).astype(np.float32)
        save_npz(root / "outputs/physionet2012/generate/noise.npz", x=noise, y=train.y)
        run_stage("fidelity", fidelity.main, [])
        yield root
    finally:
        os.chdir(previous)


def _metrics(project: Path) -> dict:
    return json.loads((project / "metrics/physionet2012/fidelity.json").read_text())


def test_every_source_and_reference_is_scored(project):
    metrics = _metrics(project)
    assert list(metrics) == [fidelity.REFERENCE, "noise", "ros"]
    for name in ("ros", "noise"):
        assert set(metrics[name]) >= {"discriminative", "predictive_mae", "mmd", "marginal", "autocorrelation",
                                      "privacy"}
        assert set(metrics[name]["marginal"]["per_channel"]) == {"HR", "SBP", "DBP", "MAP", "Temp", "GCS", "Urine"}
        assert set(metrics[name]["mmd"]["per_class"]) == {"0", "1"}
    assert "privacy" not in metrics[fidelity.REFERENCE]


def test_copied_records_are_flagged(project):
    privacy = _metrics(project)["ros"]["privacy"]
    assert privacy["copies"]["copies"] == N_COPIES
    assert privacy["copies"]["exact_duplicates"] == N_COPIES
    assert privacy["dcr"]["synthetic_median"] < 1e-6
    assert privacy["dcr"]["share_below_holdout_p5"] == 1.0
    assert privacy["mia"]["auroc"] > 0.6


def test_noise_is_farther_from_real_than_copies(project):
    metrics = _metrics(project)
    copies, noise, reference = metrics["ros"], metrics["noise"], metrics[fidelity.REFERENCE]
    assert noise["discriminative"]["score"] > copies["discriminative"]["score"] + 0.15
    assert noise["mmd"]["mmd2"] > copies["mmd"]["mmd2"] + 0.005
    assert noise["marginal"]["wasserstein_mean"] > copies["marginal"]["wasserstein_mean"]
    assert noise["autocorrelation"]["mean_abs_diff"] > 5 * copies["autocorrelation"]["mean_abs_diff"]
    assert noise["predictive_mae"] > reference["predictive_mae"] + 0.1
    assert noise["privacy"]["copies"]["copies"] == 0
    assert reference["autocorrelation"]["mean_abs_diff"] < noise["autocorrelation"]["mean_abs_diff"]


def test_report_and_plots_written(project):
    page = (project / "outputs/physionet2012/fidelity/fidelity.md").read_text()
    for row in (fidelity.REFERENCE, "ros", "noise"):
        assert f"| {row} |" in page
    assert "discriminative score" in page
    for name in ("embedding.png", "marginals.png"):
        assert (project / "outputs/physionet2012/fidelity" / name).stat().st_size > 10_000


def test_stage_logged_an_mlflow_run(project):
    runs = mlflow.search_runs(experiment_names=["tardiff"], output_format="list")
    run = next(run for run in runs if run.data.tags.get("tardiff.stage") == "fidelity")
    assert run.data.metrics["ros/privacy/copies/exact_duplicates"] == N_COPIES
    assert run.data.params["fidelity.holdout"] == "test"


def test_missing_synthetic_data_is_an_input_error(project, tmp_path, capsys):
    (tmp_path / "params.yaml").write_text((project / "params.yaml").read_text())
    (tmp_path / "outputs/physionet2012/preprocess").mkdir(parents=True)
    (tmp_path / "outputs/physionet2012/generate").mkdir(parents=True)
    for name in ("cohort.npz", "metadata.json"):
        source = project / "outputs/physionet2012/preprocess" / name
        (tmp_path / "outputs/physionet2012/preprocess" / name).write_bytes(source.read_bytes())
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(SystemExit) as exit_info:
            run_stage("fidelity", fidelity.main, [])
        assert exit_info.value.code == INPUT_ERROR_STATUS
        message = capsys.readouterr().err
        assert INPUT_ERROR_MARKER in message
        assert "outputs/physionet2012/generate" in message

        save_npz(tmp_path / "outputs/physionet2012/generate/noise.npz", x=np.zeros((5, 24, 7), dtype=np.float32),
                 y=np.arange(5) % 2)
        with pytest.raises(SystemExit) as exit_info:
            run_stage("fidelity", fidelity.main, [])
        assert exit_info.value.code == INPUT_ERROR_STATUS
        message = capsys.readouterr().err
        assert "outputs/physionet2012/baselines/ros.npz not found" in message
        assert "run the baselines stage" in message

        save_npz(tmp_path / "outputs/physionet2012/baselines/ros.npz", x=np.zeros((5, 12, 7), dtype=np.float32),
                 y=np.arange(5) % 2)
        with pytest.raises(SystemExit):
            run_stage("fidelity", fidelity.main, [])
        assert "ros.npz" in capsys.readouterr().err
    finally:
        os.chdir(previous)
    assert not (tmp_path / "outputs/physionet2012/fidelity").exists()
