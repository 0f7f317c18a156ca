"""Each pipeline stage on a small real slice of PhysioNet 2012 (set a, 400 stays, tiny profile, cohort physionet2012)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest
import torch
import yaml

from tardiff.config import load_params
from tardiff.evaluation import load_predictions
from tasks import evaluate, generate, precompute_ihvp, preprocess, train_classifier, train_diffuser
from tasks.common import INPUT_ERROR_MARKER, INPUT_ERROR_STATUS, cohort_context, run_stage
from tests.stage_project import tiny_params

STAGE_MODULES = (preprocess, train_diffuser, train_classifier, precompute_ihvp, generate, evaluate)


@pytest.fixture(scope="module")
def project(tmp_path_factory, physionet2012_dir):
    """Run the six main stages in order in a temporary folder and hand it to the tests.

    The baselines stage is not among them, so evaluate scores guided and unguided only;
    tests/test_baselines.py and the end-to-end test cover the baseline sources.
    """
    root = tmp_path_factory.mktemp("project")
    raw = tiny_params(physionet2012_dir)
    raw["profiles"]["tiny"]["evaluate"]["baselines"] = []
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    previous = Path.cwd()
    os.chdir(root)
    try:
        params = load_params("params.yaml")
        with cohort_context(params.cohort):
            for module in STAGE_MODULES:
                module.main(params, root)
        yield root
    finally:
        os.chdir(previous)


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def test_preprocess_writes_cohort_and_metadata(project):
    cohort = _npz(project / "outputs/physionet2012/preprocess/cohort.npz")
    metadata = json.loads((project / "outputs/physionet2012/preprocess/metadata.json").read_text())
    assert cohort["train_x"].shape[1:] == (24, 7)
    assert np.isfinite(cohort["train_x"]).all()
    assert [c["name"] for c in metadata["channels"]] == ["HR", "SBP", "DBP", "MAP", "Temp", "GCS", "Urine"]
    sizes = {split: cohort[f"{split}_y"].shape[0] for split in ("train", "val", "test")}
    assert sizes["train"] > 6 * sizes["test"]
    for split in ("train", "val", "test"):
        assert set(np.unique(cohort[f"{split}_y"])) == {0, 1}


def test_diffuser_checkpoint_has_ema_and_raw_weights(project):
    payload = torch.load(project / "outputs/physionet2012/train_diffuser/model.pt", weights_only=True)
    raw, ema = payload["model"], payload["ema_model"]
    assert raw.keys() == ema.keys()
    assert any(not torch.equal(raw[k], ema[k]) for k in raw)
    metrics = json.loads((project / "metrics/physionet2012/train_diffuser.json").read_text())
    assert np.isfinite(metrics["final_loss"])


def test_classifier_metrics_recorded(project):
    metrics = json.loads((project / "metrics/physionet2012/train_classifier.json").read_text())
    for split in ("val", "test"):
        assert 0.0 <= metrics[split]["auroc"] <= 1.0
        assert 0.0 <= metrics[split]["auprc"] <= 1.0


def test_ihvp_vector_matches_classifier_and_records_solver(project):
    payload = torch.load(project / "outputs/physionet2012/precompute_ihvp/vector.pt", weights_only=True)
    classifier = torch.load(project / "outputs/physionet2012/train_classifier/model.pt", weights_only=True)
    n_params = sum(t.numel() for t in classifier["model"].values())
    assert payload["vector"].numel() == n_params
    assert torch.isfinite(payload["vector"]).all()
    metrics = json.loads((project / "metrics/physionet2012/precompute_ihvp.json").read_text())
    for key in ("method", "damping", "iterations", "relative_residual"):
        assert key in metrics
    assert metrics["method"] == "cg"


def test_generate_matches_training_label_counts(project):
    cohort = _npz(project / "outputs/physionet2012/preprocess/cohort.npz")
    labels, counts = np.unique(cohort["train_y"], return_counts=True)
    guided = _npz(project / "outputs/physionet2012/generate/guided.npz")
    unguided = _npz(project / "outputs/physionet2012/generate/unguided.npz")
    for data in (guided, unguided):
        assert data["x"].shape == cohort["train_x"].shape
        assert np.unique(data["y"], return_counts=True)[1].tolist() == counts.tolist()
    assert not np.allclose(guided["x"], unguided["x"])
    assert (project / "outputs/physionet2012/generate/trajectories.png").stat().st_size > 10_000


def test_generate_writes_clinical_units(project):
    frame = pl.read_parquet(project / "outputs/physionet2012/generate/unguided.parquet")
    assert frame.columns[:3] == ["sample_id", "label", "hour"]
    metadata = json.loads((project / "outputs/physionet2012/preprocess/metadata.json").read_text())
    # Clinical units, not z-scores: the median heart rate is tens of beats per minute.
    assert 40 < frame["HR"].median() < 140
    assert frame.height == 24 * frame["sample_id"].n_unique()
    assert metadata["normaliser"]["kind"] == "zscore"


def test_evaluate_reports_every_evaluator_source_and_protocol(project):
    summary = json.loads((project / "metrics/physionet2012/evaluate.json").read_text())
    assert set(summary) == {"results", "paired", "bootstrap"}
    assert set(summary["results"]) == {"gru", "timesnet", "gbt"}
    for evaluator, sources in summary["results"].items():
        assert set(sources) == {"real", "guided", "unguided"}, evaluator
        assert set(sources["real"]) == {"trtr"}
        for source in ("guided", "unguided"):
            assert set(sources[source]["tsrtr"]) == {"alpha=0.2", "alpha=1.0"}
            leaf = sources[source]["tstr"]
            assert leaf["n_seeds"] == 2
            for metric in ("auroc", "auprc", "f1"):
                assert 0.0 <= leaf[f"{metric}_lo"] <= leaf[f"{metric}_hi"] <= 1.0
        comparison = summary["paired"][evaluator]["guided_vs_unguided"]
        assert set(comparison) == {"tstr", "tsrtr"}
    assert summary["bootstrap"]["replicates"] == 200

    rows = pl.read_csv(project / "outputs/physionet2012/evaluate/per_seed.csv")
    assert rows.height == 3 * 2 * (1 + 2 * (1 + 2))
    assert {"auroc", "auprc", "f1", "threshold"} <= set(rows.columns)
    results = (project / "outputs/physionet2012/evaluate/results.md").read_text()
    for heading in ("## gru", "## timesnet", "## gbt"):
        assert heading in results
    assert "| guided − unguided | TSTR |" in results


def test_evaluate_keeps_predictions_and_plots(project):
    result = load_predictions(project / "outputs/physionet2012/evaluate/predictions.npz")
    cohort = _npz(project / "outputs/physionet2012/preprocess/cohort.npz")
    assert len(result.fits) == 42
    assert np.array_equal(result.y_test, cohort["test_y"])
    assert result.fits[0].p_test.shape == cohort["test_y"].shape
    with np.load(project / "outputs/physionet2012/evaluate/predictions.npz") as arrays:
        assert np.array_equal(arrays["test_ids"], cohort["test_record_id"])
    for name in ("curves.png", "tsrtr_alpha.png"):
        assert (project / "outputs/physionet2012/evaluate" / name).stat().st_size > 10_000


def test_every_stage_logged_an_mlflow_run(project):
    runs = mlflow.search_runs(experiment_names=["tardiff"], output_format="list")
    stages = {run.data.tags.get("tardiff.stage") for run in runs}
    assert {"preprocess", "train_diffuser", "train_classifier", "precompute_ihvp", "generate", "evaluate"} <= stages
    generate_run = next(run for run in runs if run.data.tags.get("tardiff.stage") == "generate")
    assert generate_run.data.params["generate.guidance_scale"] == "0.3"
    evaluate_run = next(run for run in runs if run.data.tags.get("tardiff.stage") == "evaluate")
    assert "results/timesnet/guided/tstr/auroc_mean" in evaluate_run.data.metrics
    plots = {item.path for item in mlflow.MlflowClient().list_artifacts(evaluate_run.info.run_id, "plots")}
    assert plots == {"plots/curves.png", "plots/tsrtr_alpha.png"}


def test_generate_is_reproducible(project):
    first = _npz(project / "outputs/physionet2012/generate/guided.npz")["x"]
    previous = Path.cwd()
    os.chdir(project)
    try:
        with cohort_context("physionet2012"):
            generate.main(load_params("params.yaml"), project)
    finally:
        os.chdir(previous)
    assert np.array_equal(first, _npz(project / "outputs/physionet2012/generate/guided.npz")["x"])


def test_corrupt_checkpoint_is_an_input_error(project, tmp_path, capsys):
    (tmp_path / "params.yaml").write_text((project / "params.yaml").read_text())
    (tmp_path / "outputs/physionet2012/train_classifier").mkdir(parents=True)
    (tmp_path / "outputs/physionet2012/preprocess").mkdir(parents=True)
    for name in ("cohort.npz", "metadata.json"):
        source = project / "outputs/physionet2012/preprocess" / name
        (tmp_path / "outputs/physionet2012/preprocess" / name).write_bytes(source.read_bytes())
    (tmp_path / "outputs/physionet2012/train_classifier/model.pt").write_bytes(b"not a checkpoint")
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(SystemExit) as exit_info:
            run_stage("precompute_ihvp", precompute_ihvp.main, [])
    finally:
        os.chdir(previous)
    assert exit_info.value.code == INPUT_ERROR_STATUS
    # The failed run left neither a staging folder nor a half-filled output folder.
    assert not (tmp_path / "outputs/physionet2012/.precompute_ihvp.partial").exists()
    assert not (tmp_path / "outputs/physionet2012/precompute_ihvp").exists()
    message = capsys.readouterr().err
    assert INPUT_ERROR_MARKER in message
    assert "outputs/physionet2012/train_classifier/model.pt" in message
    assert "re-run" in message


def test_missing_upstream_output_names_the_stage(tmp_path, capsys, physionet2012_dir):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(physionet2012_dir)))
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(SystemExit):
            run_stage("train_diffuser", train_diffuser.main, [])
    finally:
        os.chdir(previous)
    message = capsys.readouterr().err
    assert "outputs/physionet2012/preprocess" in message
    assert "dvc repro" in message or "preprocess" in message
