"""Downstream evaluators, metrics, bootstrap statistics and result tables on small synthetic tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score
from threadpoolctl import threadpool_limits

from tardiff.config import EVALUATOR_NAMES, ConfigError, EvaluateConfig, params_from_dict
from tardiff.errors import TardiffInputError
from tardiff.evaluation import (
    BootstrapStatistics,
    EvaluationResult,
    Fit,
    LabelledSeries,
    curve_scores,
    evaluate_sources,
    load_predictions,
    results_tables,
    save_predictions,
    summarise,
)
from tardiff.evaluators import EVALUATORS, fit_evaluator, summary_feature_names, summary_features
from tardiff.metrics import (
    best_f1_threshold,
    f1_at_threshold,
    percentile_interval,
    ranking_metrics,
    stratified_bootstrap_indices,
)
from tardiff.plots import plot_metric_over_alpha, plot_roc_pr
from tardiff.timesnet import InceptionBlock, TimesNetClassifier, TimesNetConfig, dominant_periods
from tests.stage_project import PROJECT_ROOT

CPU = torch.device("cpu")
FAST = EvaluateConfig(
    hidden_size=16, num_layers=1, epochs=8, batch_size=32,
    timesnet_d_model=16, timesnet_d_ff=16, timesnet_epochs=6, timesnet_batch_size=32,
    gbt_max_iter=50,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run torch and scikit-learn on one thread.

    These models are so small that on a busy CPU the threads spend most of their
    time waiting for each other. One thread makes the tests several times faster.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(previous)


def _separable(n: int, seed: int, hours: int = 24, channels: int = 7) -> LabelledSeries:
    """Noise series whose label shifts the mean of channel 2 by one noise standard deviation."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, hours, channels)).astype(np.float32)
    x[y == 1, :, 2] += 1.0
    return LabelledSeries(x, y)


def _auroc(model, data: LabelledSeries) -> float:
    return roc_auc_score(data.y, model.predict_proba(data.x))


# TimesNet


def test_timesnet_returns_one_logit_per_series():
    torch.manual_seed(0)
    model = TimesNetClassifier(TimesNetConfig(in_channels=7, seq_len=24))
    assert model(torch.randn(5, 24, 7)).shape == (5,)
    with pytest.raises(ValueError, match=r"\(batch, 24, 7\)"):
        model(torch.randn(5, 7, 24))


def test_dominant_periods_find_planted_sine():
    hours = torch.arange(24, dtype=torch.float32)
    strong = torch.sin(2 * torch.pi * hours / 6)
    weak = 0.4 * torch.cos(2 * torch.pi * hours / 12)
    x = (strong + weak + 5.0)[None, :, None].repeat(2, 1, 3)  # the offset is the excluded zero frequency
    periods, amplitudes = dominant_periods(x, top_k=2)
    assert periods.tolist() == [[6, 12], [6, 12]]
    assert (amplitudes[:, 0] > amplitudes[:, 1]).all()


def test_dominant_periods_are_chosen_per_series():
    hours = torch.arange(24, dtype=torch.float32)
    x = torch.stack([torch.sin(2 * torch.pi * hours / 8), torch.sin(2 * torch.pi * hours / 4)])[:, :, None]
    periods, _ = dominant_periods(x, top_k=1)
    assert periods[:, 0].tolist() == [8, 4]


def test_inception_block_equals_mean_of_branches():
    torch.manual_seed(0)
    block = InceptionBlock(3, 4, num_kernels=3)
    for bias in block.biases:
        torch.nn.init.normal_(bias)
    x = torch.randn(2, 3, 4, 6)
    branches = [
        torch.nn.functional.conv2d(x, weight, bias, padding=i)
        for i, (weight, bias) in enumerate(zip(block.weights, block.biases))
    ]
    assert torch.allclose(block(x), torch.stack(branches).mean(dim=0), atol=1e-5)


def test_timesnet_has_no_batch_coupling():
    torch.manual_seed(0)
    model = TimesNetClassifier(TimesNetConfig(in_channels=3, seq_len=12, top_k=2)).eval()
    x = torch.randn(6, 12, 3)
    assert torch.allclose(model(x)[2:3], model(x[2:3]), atol=1e-5)


def test_timesnet_learns_separable_task():
    train = _separable(256, seed=0)
    model = fit_evaluator("timesnet", train.x, train.y, FAST, seed=0, device=CPU)
    assert _auroc(model, _separable(256, seed=1)) > 0.9


def test_timesnet_fit_is_seeded():
    train, test = _separable(64, seed=0), _separable(32, seed=1)
    config = EvaluateConfig(timesnet_epochs=1, timesnet_batch_size=16)
    first = fit_evaluator("timesnet", train.x, train.y, config, seed=3, device=CPU).predict_proba(test.x)
    again = fit_evaluator("timesnet", train.x, train.y, config, seed=3, device=CPU).predict_proba(test.x)
    other = fit_evaluator("timesnet", train.x, train.y, config, seed=4, device=CPU).predict_proba(test.x)
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)


# Feature models and the registry


def test_summary_features_per_channel():
    hours = np.arange(24, dtype=np.float32)
    x = np.stack([np.stack([2.0 * hours + 1.0, np.full(24, 3.0)], axis=1)])  # (1, 24, 2)
    features = summary_features(x)
    names = summary_feature_names(["ramp", "flat"])
    assert features.shape == (1, 14)
    assert len(names) == 14
    values = dict(zip(names, features[0]))
    assert values["ramp_slope"] == pytest.approx(2.0)
    assert values["ramp_first"] == 1.0
    assert values["ramp_last"] == 47.0
    assert values["flat_std"] == 0.0
    assert values["flat_mean"] == 3.0


@pytest.mark.parametrize("name", ["gru", "gbt", "logreg"])
def test_evaluator_learns_separable_task(name):
    train = _separable(256, seed=0)
    model = fit_evaluator(name, train.x, train.y, FAST, seed=0, device=CPU)
    probabilities = model.predict_proba(_separable(256, seed=1).x)
    assert probabilities.shape == (256,)
    assert _auroc(model, _separable(256, seed=1)) > 0.9


def test_registry_matches_config_choices():
    assert tuple(EVALUATORS) == EVALUATOR_NAMES


def test_unknown_evaluator_is_config_error():
    data = _separable(16, seed=0)
    with pytest.raises(ConfigError, match=r"'rocket'.*gru.*timesnet.*gbt"):
        fit_evaluator("rocket", data.x, data.y, FAST, seed=0, device=CPU)


def test_unknown_evaluator_in_params_is_rejected():
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    raw["evaluate"]["evaluators"] = ["gru", "rocket"]
    with pytest.raises(ConfigError, match=r"evaluate.evaluators.*'rocket'.*gru.*timesnet.*gbt.*logreg"):
        params_from_dict(raw)


def test_duplicate_evaluator_in_params_is_rejected():
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    raw["evaluate"]["evaluators"] = ["gbt", "gbt"]
    with pytest.raises(ConfigError, match="each evaluator once"):
        params_from_dict(raw)


def test_one_class_training_labels_are_rejected():
    data = _separable(16, seed=0)
    with pytest.raises(TardiffInputError, match="both 0 and 1"):
        fit_evaluator("gbt", data.x, np.zeros(16, dtype=int), FAST, seed=0, device=CPU)


# Metrics, threshold and bootstrap


def test_ranking_metrics_match_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(20, 40))
    y[:, :2] = [0, 1]
    p = np.round(rng.random((20, 40)), 1)  # coarse scores, so many ties
    auroc, auprc = ranking_metrics(y, p)
    assert np.allclose(auroc, [roc_auc_score(a, b) for a, b in zip(y, p)])
    assert np.allclose(auprc, [average_precision_score(a, b) for a, b in zip(y, p)])


def test_threshold_maximises_f1_on_hand_example():
    y = np.array([1, 0, 1, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.2])
    # Predicting 1 from 0.6 up gives TP 3, FP 1, FN 0: F1 = 6 / 7, the best of the six thresholds.
    threshold, f1 = best_f1_threshold(y, p)
    assert threshold == 0.6
    assert f1 == pytest.approx(6 / 7)
    assert f1_at_threshold(y, p, threshold)[0] == pytest.approx(f1_score(y, p >= threshold))
    assert f1 == pytest.approx(max(f1_score(y, p >= t) for t in p))


def test_threshold_beats_every_candidate_with_ties():
    rng = np.random.default_rng(1)
    y = np.arange(60) % 3 == 0
    p = np.round(rng.random(60) + 0.3 * y, 1)
    threshold, f1 = best_f1_threshold(y.astype(int), p)
    assert f1 == pytest.approx(max(f1_score(y, p >= t) for t in np.unique(p)))
    assert f1_score(y, p >= threshold) == pytest.approx(f1)


def _noisy_scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 4 == 0).astype(int)
    return y, y + rng.normal(scale=1.0, size=n)


def test_bootstrap_keeps_class_counts():
    y, _ = _noisy_scores(40, seed=0)
    indices = stratified_bootstrap_indices(y, replicates=50, seed=0)
    assert indices.shape == (50, 40)
    assert (y[indices].sum(axis=1) == y.sum()).all()
    assert np.array_equal(indices, stratified_bootstrap_indices(y, replicates=50, seed=0))


def test_bootstrap_interval_contains_point_and_narrows():
    widths = []
    for n in (100, 1600):
        y, p = _noisy_scores(n, seed=0)
        point = roc_auc_score(y, p)
        indices = stratified_bootstrap_indices(y, replicates=500, seed=0)
        low, high = percentile_interval(ranking_metrics(y[indices], p[indices])[0])
        assert low < point < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # about 1 / sqrt(16) in theory


# Summaries from predictions


def _fake_result(shift: dict[str, float], seeds=(0, 1, 2), n_test=300, n_val=200) -> EvaluationResult:
    """Predictions whose separation of the classes grows with ``shift[source]``, for the gbt evaluator."""
    rng = np.random.default_rng(0)
    y_test, y_val = (np.arange(n_test) % 5 == 0).astype(int), (np.arange(n_val) % 5 == 0).astype(int)
    groups = [("real", "trtr", None)]
    for source in (name for name in shift if name != "real"):
        groups += [(source, "tstr", None), (source, "tsrtr", 0.5), (source, "tsrtr", 1.0)]
    fits = []
    for seed in seeds:
        for source, protocol, alpha in groups:
            scale = shift[source]
            p_test = 1 / (1 + np.exp(-(scale * y_test + rng.normal(size=n_test))))
            p_val = 1 / (1 + np.exp(-(scale * y_val + rng.normal(size=n_val))))
            threshold, val_f1 = best_f1_threshold(y_val, p_val)
            fits.append(Fit("gbt", source, protocol, alpha, seed, 100, threshold, val_f1, 0.1, p_val, p_test))
    return EvaluationResult(y_val=y_val, y_test=y_test, fits=fits)


def test_paired_difference_with_itself_is_zero():
    result = _fake_result({"real": 2.0, "guided": 1.5, "unguided": 1.0})
    statistics = BootstrapStatistics(result, replicates=200, seed=0)
    for protocol, alpha in (("tstr", None), ("tsrtr", 0.5)):
        leaf = statistics.paired("gbt", "guided", "guided", protocol, alpha)
        for metric in ("auroc", "auprc", "f1"):
            assert leaf[f"{metric}_mean"] == 0.0
            assert leaf[f"{metric}_lo"] == leaf[f"{metric}_hi"] == 0.0


def test_paired_difference_detects_better_source():
    result = _fake_result({"real": 2.0, "guided": 2.5, "unguided": 0.5})
    leaf = BootstrapStatistics(result, replicates=200, seed=0).paired("gbt", "guided", "unguided", "tstr", None)
    assert leaf["auroc_lo"] > 0
    assert leaf["auroc_lo"] <= leaf["auroc_mean"] <= leaf["auroc_hi"]


def test_summary_holds_every_group_and_pairing():
    result = _fake_result({"real": 2.0, "guided": 1.5, "unguided": 1.0})
    summary = summarise(result, replicates=200, seed=0)
    gbt = summary["results"]["gbt"]
    assert set(gbt) == {"real", "guided", "unguided"}
    assert set(gbt["real"]) == {"trtr"}
    assert set(gbt["guided"]["tsrtr"]) == {"alpha=0.5", "alpha=1.0"}
    leaf = gbt["guided"]["tstr"]
    assert leaf["n_seeds"] == 3
    for metric in ("auroc", "auprc", "f1"):
        assert leaf[f"{metric}_lo"] <= leaf[f"{metric}_hi"]
        assert leaf[f"{metric}_std"] > 0
    assert gbt["real"]["trtr"]["auroc_mean"] > gbt["unguided"]["tstr"]["auroc_mean"]
    paired = summary["paired"]["gbt"]
    assert set(paired) == {"guided_vs_unguided"}
    assert set(paired["guided_vs_unguided"]["tsrtr"]) == {"alpha=0.5", "alpha=1.0"}
    assert summary["bootstrap"]["replicates"] == 200


def test_summary_without_baseline_has_no_pairs():
    result = _fake_result({"real": 2.0, "guided": 1.5})
    assert summarise(result, replicates=50, seed=0)["paired"] == {}


def test_results_tables_render_cells_and_differences():
    summary = summarise(_fake_result({"real": 2.0, "guided": 1.5, "unguided": 1.0}), replicates=100, seed=0)
    text = results_tables(summary)
    leaf = summary["results"]["gbt"]["guided"]["tstr"]
    expected = f"{leaf['auroc_mean']:.3f} ± {leaf['auroc_std']:.3f} [{leaf['auroc_lo']:.3f}, {leaf['auroc_hi']:.3f}]"
    assert "## gbt" in text
    assert f"| guided | TSTR | {expected} |" in text
    assert "| real | TRTR |" in text
    assert "| guided | TSRTR α = 0.5 |" in text
    assert "| guided − unguided | TSTR | " in text
    assert text.index("| real | TRTR |") < text.index("| guided | TSTR |")


def test_predictions_round_trip(tmp_path):
    result = _fake_result({"real": 2.0, "guided": 1.5, "unguided": 1.0})
    save_predictions(tmp_path / "predictions.npz", result, test_ids=np.arange(300) + 1000)
    loaded = load_predictions(tmp_path / "predictions.npz")
    assert len(loaded.fits) == len(result.fits)
    assert loaded.fits[0].alpha is None
    assert loaded.fits[-1].alpha == 1.0
    assert summarise(loaded, 100, 0) == summarise(result, 100, 0)


def test_plots_are_written(tmp_path):
    result = _fake_result({"real": 2.0, "guided": 1.5, "unguided": 1.0})
    summary = summarise(result, replicates=50, seed=0)
    plot_roc_pr(result.y_test, curve_scores(result, seed=0), str(tmp_path / "curves.png"), note="seed 0")
    plot_metric_over_alpha(summary["results"], {"auroc": "AUROC", "f1": "F1"}, str(tmp_path / "alpha.png"))
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert (tmp_path / "alpha.png").stat().st_size > 10_000


# The protocols end to end with fast evaluators


def test_evaluate_sources_runs_every_protocol():
    real, val, test = _separable(120, seed=0), _separable(60, seed=1), _separable(60, seed=2)
    synthetic = {"guided": _separable(120, seed=3), "unguided": _separable(120, seed=4)}
    config = EvaluateConfig(evaluators=("gbt", "logreg"), seeds=(0, 1), alphas=(0.5, 1.0), gbt_max_iter=20)
    result = evaluate_sources(real, val, test, synthetic, config, CPU)
    assert len(result.fits) == 2 * 2 * (1 + 2 * (1 + 2))
    rows = result.records()
    assert {row["n_train"] for row in rows if row["protocol"] == "tsrtr"} == {180, 240}
    assert all(0.0 <= row["threshold"] <= 1.0 for row in rows)
    assert all(row["auroc"] > 0.9 for row in rows)


def test_evaluate_sources_rejects_bad_sources():
    real, val, test = _separable(40, seed=0), _separable(20, seed=1), _separable(20, seed=2)
    config = EvaluateConfig(evaluators=("logreg",), seeds=(0,), alphas=(1.0,))
    with pytest.raises(TardiffInputError, match="named 'real'"):
        evaluate_sources(real, val, test, {"real": real}, config, CPU)
    wrong_shape = _separable(40, seed=3, channels=5)
    with pytest.raises(TardiffInputError, match="'guided'.*shape"):
        evaluate_sources(real, val, test, {"guided": wrong_shape}, config, CPU)
    one_class_test = LabelledSeries(test.x, np.zeros_like(test.y))
    with pytest.raises(TardiffInputError, match="real test split labels contain one class"):
        evaluate_sources(real, val, one_class_test, {}, config, CPU)


def test_parallel_workers_give_the_same_fits():
    """Two worker processes reproduce the one-process fits exactly, in the same order, for every evaluator."""
    real, val, test = _separable(80, seed=0), _separable(40, seed=1), _separable(40, seed=2)
    synthetic = {"guided": _separable(80, seed=3)}
    config = EvaluateConfig(
        evaluators=("gru", "timesnet", "gbt"), seeds=(0, 1), alphas=(0.5,), hidden_size=8, num_layers=1, epochs=2,
        batch_size=32, timesnet_d_model=8, timesnet_d_ff=8, timesnet_epochs=2, timesnet_batch_size=32,
        gbt_max_iter=10, gbt_max_features=0.5,
    )
    serial = evaluate_sources(real, val, test, synthetic, config, CPU)
    parallel = evaluate_sources(real, val, test, synthetic, EvaluateConfig(**{**config.__dict__, "workers": 2}), CPU)
    assert [fit.group for fit in parallel.fits] == [fit.group for fit in serial.fits]
    for in_process, in_worker in zip(serial.fits, parallel.fits):
        assert (in_process.seed, in_process.n_train) == (in_worker.seed, in_worker.n_train)
        np.testing.assert_array_equal(in_process.p_test, in_worker.p_test)
        np.testing.assert_array_equal(in_process.p_val, in_worker.p_val)


def test_workers_must_be_positive():
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    raw["evaluate"]["workers"] = 0
    with pytest.raises(ConfigError, match="evaluate.workers"):
        params_from_dict(raw, "params.yaml")


def test_worker_error_reaches_the_caller():
    """An error raised inside a worker process surfaces in the caller with its type and message."""
    real, val, test = _separable(40, seed=0), _separable(20, seed=1), _separable(20, seed=2)
    config = EvaluateConfig(evaluators=("magic",), seeds=(0,), alphas=(1.0,), workers=2)
    with pytest.raises(ConfigError, match="evaluator 'magic' is not known"):
        evaluate_sources(real, val, test, {"guided": _separable(40, seed=3)}, config, CPU)
