"""Fidelity metrics on small simulated series whose true relation is known."""

from __future__ import annotations

import numpy as np
import pytest

from tardiff.errors import TardiffInputError
from tardiff.fidelity import (
    autocorrelation_difference,
    discriminative_score,
    embed_2d,
    marginal_distances,
    mean_autocorrelation,
    mmd_rbf,
    per_class,
    predictive_score,
)

STEPS, CHANNELS = 24, 3


def ar1(n: int, phi: float, seed: int, steps: int = STEPS, channels: int = CHANNELS) -> np.ndarray:
    """Return stationary AR(1) series with unit variance: x_t = phi x_{t-1} + sqrt(1 - phi^2) e_t."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, steps, channels))
    x[:, 0] = rng.standard_normal((n, channels))
    for t in range(1, steps):
        x[:, t] = phi * x[:, t - 1] + np.sqrt(1 - phi**2) * rng.standard_normal((n, channels))
    return x.astype(np.float32)


def white_noise(n: int, seed: int, steps: int = STEPS) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, steps, CHANNELS)).astype(np.float32)


def discriminate(real: np.ndarray, synthetic: np.ndarray, seed: int = 0):
    return discriminative_score(real, synthetic, hidden_size=16, epochs=6, batch_size=64, lr=3e-3, seed=seed)


def test_discriminative_score_near_zero_for_same_distribution():
    result = discriminate(ar1(300, 0.8, seed=1), ar1(300, 0.8, seed=2))
    assert result.score < 0.12
    assert result.n_test == 60
    assert result.n_train == 240


def test_discriminative_score_near_half_for_shifted_data():
    real = ar1(300, 0.8, seed=1)
    result = discriminate(real, ar1(300, 0.8, seed=2) + 1.5)
    assert result.score > 0.4
    assert result.auroc > 0.95


def test_discriminative_score_is_reproducible():
    real, synthetic = ar1(200, 0.8, seed=1), ar1(200, 0.5, seed=2)
    assert discriminate(real, synthetic, seed=3) == discriminate(real, synthetic, seed=3)


def test_discriminative_score_balances_unequal_sets():
    result = discriminative_score(ar1(300, 0.8, seed=1), ar1(50, 0.8, seed=2), epochs=1, max_samples=40)
    assert result.n_train + result.n_test == 40


def test_mmd_about_zero_for_identical_sets():
    x = ar1(300, 0.8, seed=1)
    assert abs(mmd_rbf(x, x).mmd2) < 0.01


def test_mmd_grows_with_shift():
    real = ar1(300, 0.8, seed=1)
    same = mmd_rbf(real, ar1(300, 0.8, seed=2)).mmd2
    shifted = mmd_rbf(real, ar1(300, 0.8, seed=2) + 0.5).mmd2
    far = mmd_rbf(real, ar1(300, 0.8, seed=2) + 1.5).mmd2
    assert abs(same) < 0.01
    assert shifted > 10 * max(abs(same), 1e-3)
    assert far > shifted


def test_mmd_subsamples_to_cap():
    result = mmd_rbf(ar1(300, 0.8, seed=1), ar1(200, 0.8, seed=2), max_samples=50, seed=4)
    assert (result.n_real, result.n_synthetic) == (50, 50)
    assert result == mmd_rbf(ar1(300, 0.8, seed=1), ar1(200, 0.8, seed=2), max_samples=50, seed=4)


def test_mmd_fixed_bandwidth_is_used():
    result = mmd_rbf(ar1(50, 0.8, seed=1), ar1(50, 0.8, seed=2), bandwidth=3.0)
    assert result.bandwidth == 3.0


def test_marginal_distances_zero_for_identical_sets():
    x = ar1(100, 0.8, seed=1)
    result = marginal_distances(x, x.copy(), ["a", "b", "c"])
    assert result["wasserstein_mean"] == 0.0
    assert result["ks_mean"] == 0.0
    assert set(result["per_channel"]) == {"a", "b", "c"}


def test_marginal_distances_measure_a_shift_in_one_channel():
    real = ar1(200, 0.8, seed=1)
    synthetic = real.copy()
    synthetic[:, :, 1] += 0.7
    per_channel = marginal_distances(real, synthetic)["per_channel"]
    assert per_channel["1"]["wasserstein"] == pytest.approx(0.7, rel=1e-4)
    assert per_channel["1"]["ks"] > 0.2
    assert per_channel["0"]["wasserstein"] == 0.0


def test_autocorrelation_difference_detects_lag_structure():
    real = ar1(300, 0.8, seed=1, steps=48)
    same = autocorrelation_difference(real, ar1(300, 0.8, seed=2, steps=48), max_lag=4)
    noise = autocorrelation_difference(real, white_noise(300, seed=2, steps=48), max_lag=4)
    assert same["mean_abs_diff"] < 0.05
    assert noise["mean_abs_diff"] > 0.3
    assert set(noise["per_channel"]) == {"0", "1", "2"}


def test_mean_autocorrelation_follows_ar1_decay():
    acf = mean_autocorrelation(ar1(500, 0.8, seed=1, steps=96), max_lag=3)
    assert acf.shape == (CHANNELS, 3)
    # The per-series mean makes the estimate fall short of phi ** lag by about (1 + 4 phi) / T.
    np.testing.assert_allclose(acf[:, 0], 0.8, atol=0.1)
    assert (np.diff(acf, axis=1) < 0).all()
    np.testing.assert_allclose(mean_autocorrelation(white_noise(500, seed=2), max_lag=3), 0.0, atol=0.07)


def test_constant_series_leave_autocorrelation_unchanged():
    x = ar1(200, 0.8, seed=1)
    with_constants = np.concatenate([x, np.full((50, STEPS, CHANNELS), 0.3, dtype=np.float32)])
    np.testing.assert_allclose(mean_autocorrelation(with_constants, 4), mean_autocorrelation(x, 4), rtol=1e-10)


def test_all_constant_channel_is_left_out_of_mean():
    real, synthetic = ar1(100, 0.8, seed=1), ar1(100, 0.8, seed=2)
    real[:, :, 2] = 1.0
    result = autocorrelation_difference(real, synthetic, max_lag=2)
    assert result["per_channel"]["2"] is None
    assert result["mean_abs_diff"] == pytest.approx(np.mean([result["per_channel"][k] for k in ("0", "1")]))


def test_predictive_score_lower_for_matching_dynamics():
    real_train, real_test = ar1(200, 0.9, seed=1), ar1(200, 0.9, seed=2)
    kwargs = {"hidden_size": 16, "epochs": 10, "batch_size": 32, "lr": 1e-2, "seed": 0}
    matching = predictive_score(ar1(200, 0.9, seed=3), real_test, **kwargs)
    noise = predictive_score(white_noise(200, seed=3), real_test, **kwargs)
    reference = predictive_score(real_train, real_test, **kwargs)
    assert matching < noise - 0.1
    assert matching == pytest.approx(reference, abs=0.05)


def test_per_class_splits_by_label():
    real = np.concatenate([ar1(60, 0.8, seed=1), ar1(60, 0.8, seed=2) + 2.0])
    synthetic = np.concatenate([ar1(60, 0.8, seed=3), ar1(60, 0.8, seed=4) + 2.0])
    labels = np.repeat([0, 1], 60)
    pooled = mmd_rbf(real, synthetic[::-1].copy())
    by_class = per_class(mmd_rbf, real, labels, synthetic, labels)
    assert set(by_class) == {"0", "1"}
    assert abs(by_class["0"].mmd2) < 0.05
    assert abs(by_class["1"].mmd2) < 0.05
    marginals = per_class(marginal_distances, real, labels, synthetic, labels[::-1].copy())
    assert marginals["0"]["wasserstein_mean"] > 1.5
    assert pooled.mmd2 < 0.05


def test_per_class_skips_label_with_too_few_series():
    real, synthetic = ar1(20, 0.8, seed=1), ar1(20, 0.8, seed=2)
    labels = np.zeros(20, dtype=np.int64)
    labels[0] = 1
    result = per_class(mmd_rbf, real, labels, synthetic, labels)
    assert result["1"] is None
    assert result["0"] is not None


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embedding_is_seeded(method):
    x = ar1(30, 0.8, seed=1)
    first = embed_2d(x, method, seed=0)
    assert first.shape == (30, 2)
    np.testing.assert_array_equal(first, embed_2d(x, method, seed=0))


def test_embedding_rejects_unknown_method():
    with pytest.raises(TardiffInputError, match="umap"):
        embed_2d(ar1(10, 0.8, seed=1), "umap", seed=0)


@pytest.mark.parametrize(
    ("metric", "kwargs"),
    [
        (marginal_distances, {}),
        (mmd_rbf, {}),
        (autocorrelation_difference, {"max_lag": 2}),
        (discriminative_score, {"epochs": 1}),
        (predictive_score, {"epochs": 1}),
    ],
)
def test_bad_inputs_name_the_argument(metric, kwargs):
    good = ar1(20, 0.8, seed=1)
    second = "test" if metric is predictive_score else "synthetic"
    with_nan = good.copy()
    with_nan[3, 4, 1] = np.nan
    cases = {
        "three axes": good[:, :, 0],
        "channel": good[:, :, :2],
        "NaN": with_nan,
        "0 sample": good[:0],
    }
    for fragment, bad in cases.items():
        with pytest.raises(TardiffInputError, match=fragment) as info:
            metric(good, bad, **kwargs)
        assert second in str(info.value)


def test_labels_must_match_series():
    x = ar1(10, 0.8, seed=1)
    with pytest.raises(TardiffInputError, match="real_labels"):
        per_class(mmd_rbf, x, np.zeros(9), x, np.zeros(10))
    with pytest.raises(TardiffInputError, match="synthetic_labels"):
        per_class(mmd_rbf, x, np.zeros(10), x, np.full(10, 2))


def test_max_lag_must_fit_series():
    x = ar1(10, 0.8, seed=1)
    with pytest.raises(TardiffInputError, match="max_lag"):
        autocorrelation_difference(x, x, max_lag=STEPS)
