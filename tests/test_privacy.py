"""Privacy metrics on small simulated sets: copies, independent draws and the distance attack."""

from __future__ import annotations

import numpy as np
import pytest

from tardiff.errors import TardiffInputError
from tardiff.privacy import (
    copy_threshold,
    count_copies,
    distance_to_closest_record,
    membership_inference_risk,
    nearest_distances,
    privacy_metrics,
)

STEPS, CHANNELS = 12, 4


def draw(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, STEPS, CHANNELS)).astype(np.float32)


def test_nearest_distances_match_brute_force_across_chunks():
    queries, references = draw(23, 1), draw(31, 2)
    flat_q, flat_r = queries.reshape(23, -1).astype(np.float64), references.reshape(31, -1).astype(np.float64)
    expected = np.sqrt(((flat_q[:, None, :] - flat_r[None, :, :]) ** 2).sum(-1)).min(axis=1)
    for chunk_size in (1, 7, 100):
        np.testing.assert_allclose(nearest_distances(queries, references, chunk_size=chunk_size), expected, rtol=1e-10)


def test_copies_have_zero_dcr():
    train = draw(200, 1)
    synthetic = np.concatenate([train[:10], draw(90, 2)])
    dcr = nearest_distances(synthetic, train)
    assert (dcr[:10] < 1e-6).all()
    assert (dcr[10:] > 1.0).all()
    counts = count_copies(synthetic, train)
    assert counts["copies"] == 10
    assert counts["exact_duplicates"] == 10


def test_near_copies_count_by_tolerance_not_as_duplicates():
    train = draw(50, 1)
    rng = np.random.default_rng(3)
    near = train[:5] + (1e-4 * rng.standard_normal(train[:5].shape)).astype(np.float32)
    farther = train[5:8] + (1e-2 * rng.standard_normal(train[5:8].shape)).astype(np.float32)
    counts = count_copies(np.concatenate([near, farther]), train, tolerance=1e-3)
    assert counts["copies"] == 5
    assert counts["exact_duplicates"] == 0
    assert counts["copy_distance"] == pytest.approx(1e-3 * np.sqrt(STEPS * CHANNELS))


def test_copy_threshold_rejects_negative_tolerance():
    assert copy_threshold(0.0, 10) == 0.0
    with pytest.raises(TardiffInputError, match="tolerance"):
        copy_threshold(-1.0, 10)


def test_independent_samples_look_like_holdout():
    train, holdout, synthetic = draw(300, 1), draw(300, 2), draw(300, 3)
    dcr = distance_to_closest_record(synthetic, train, holdout)
    assert dcr["synthetic_median"] == pytest.approx(dcr["holdout_median"], rel=0.05)
    assert dcr["share_below_holdout_p5"] < 0.15


def test_memorised_samples_sit_below_holdout_dcr():
    train, holdout = draw(300, 1), draw(300, 2)
    synthetic = train + (0.05 * draw(300, 3))
    dcr = distance_to_closest_record(synthetic, train, holdout)
    assert dcr["share_below_holdout_p5"] == 1.0
    assert dcr["synthetic_median"] < dcr["holdout_p5"]


def test_mia_near_chance_for_independent_samples():
    result = membership_inference_risk(draw(400, 3), draw(400, 1), draw(400, 2))
    assert abs(result["auroc"] - 0.5) < 0.06
    assert result["advantage"] < 0.12
    assert (result["n_members"], result["n_nonmembers"]) == (400, 400)


def test_mia_perfect_when_synthetic_are_training_records():
    train, holdout = draw(200, 1), draw(100, 2)
    result = membership_inference_risk(train.copy(), train, holdout)
    assert result["auroc"] == 1.0
    assert result["advantage"] == 1.0


def test_privacy_metrics_combine_the_three_parts():
    train, holdout = draw(100, 1), draw(50, 2)
    synthetic = np.concatenate([train[:4], draw(46, 3)])
    result = privacy_metrics(synthetic, train, holdout)
    assert result["copies"]["exact_duplicates"] == 4
    assert result["dcr"] == distance_to_closest_record(synthetic, train, holdout)
    assert result["mia"] == membership_inference_risk(synthetic, train, holdout)


@pytest.mark.parametrize("which", ["synthetic", "train", "holdout"])
def test_bad_inputs_name_the_argument(which):
    good = {"synthetic": draw(10, 3), "train": draw(10, 1), "holdout": draw(10, 2)}
    with_nan = good[which].copy()
    with_nan[0, 0, 0] = np.inf
    cases = {
        "three axes": good[which][:, :, 0],
        "channel": good[which][:, :, :2],
        "time step": good[which][:, :5],
        "NaN": with_nan,
        "0 sample": good[which][:0],
    }
    for fragment, bad in cases.items():
        for metric in (distance_to_closest_record, membership_inference_risk, privacy_metrics):
            arguments = {**good, which: bad}
            with pytest.raises(TardiffInputError, match=fragment) as info:
                metric(**arguments)
            assert which in str(info.value)


def test_precomputed_dcr_must_match_samples():
    with pytest.raises(TardiffInputError, match="synthetic_dcr"):
        count_copies(draw(5, 1), draw(5, 2), synthetic_dcr=np.zeros(4))
