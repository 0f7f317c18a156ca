"""Tests of the z-score and PIT normalisers on hourly grids of real PhysioNet 2012 stays."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from tardiff.config import load_params
from tardiff.data.cohort import build_hourly_grid, fill_missing, preprocess_physionet2012
from tardiff.data.normalise import (
    PitNormaliser,
    ZScoreNormaliser,
    make_normaliser,
    normaliser_from_dict,
)
from tardiff.data.physionet2012 import read_physionet2012
from tardiff.errors import TardiffInputError

REPO = Path(__file__).resolve().parents[1]
KINDS = ("zscore", "pit")


@pytest.fixture(scope="module")
def data_config(physionet2012_dir: Path):
    data = load_params(REPO / "params.yaml").data
    return dataclasses.replace(data, dir=str(physionet2012_dir), sets=("a",), max_stays=200)


@pytest.fixture(scope="module")
def grid(data_config):
    """Return (values with NaN where unobserved, mask) for the first 200 stays of set a."""
    raw = read_physionet2012(Path(data_config.dir), ("a",), data_config.max_stays, False)
    values, mask, _, _ = build_hourly_grid(raw.observations, data_config.channels, data_config.hours)
    return values.astype(np.float64), mask


@pytest.mark.parametrize("kind", KINDS)
def test_roundtrip_on_observed_values(grid, kind: str):
    values, mask = grid
    normaliser = make_normaliser(kind).fit(values, mask)
    filled = fill_missing(values, mask, np.nanmedian(values, axis=(0, 1)))
    restored = normaliser.inverse_transform(normaliser.transform(filled))
    assert restored == pytest.approx(filled, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_dict_roundtrip_through_json(grid, kind: str):
    values, mask = grid
    normaliser = make_normaliser(kind).fit(values, mask)
    payload = json.loads(json.dumps(normaliser.to_dict()))
    rebuilt = normaliser_from_dict(payload)
    sample = np.where(mask, values, 0.0)[:10]
    assert type(rebuilt) is type(normaliser)
    assert np.array_equal(rebuilt.transform(sample), normaliser.transform(sample))
    normalised = normaliser.transform(sample)
    assert np.array_equal(rebuilt.inverse_transform(normalised), normaliser.inverse_transform(normalised))


def test_zscore_standardises_observed_cells(grid):
    values, mask = grid
    normalised = ZScoreNormaliser().fit(values, mask).transform(np.where(mask, values, 0.0))
    for c in range(values.shape[-1]):
        observed = normalised[..., c][mask[..., c]]
        assert observed.mean() == pytest.approx(0.0, abs=1e-9)
        assert observed.std() == pytest.approx(1.0, abs=1e-9)


def test_pit_range_order_and_centre(grid):
    values, mask = grid
    normaliser = PitNormaliser().fit(values, mask)
    assert normaliser.quantiles.shape == (values.shape[-1], 512)
    hr = values[..., 0][mask[..., 0]]
    u = normaliser.transform(np.where(mask, values, 0.0))[..., 0][mask[..., 0]]
    assert u.min() >= -1.0
    assert u.max() <= 1.0
    order = np.argsort(hr, kind="stable")
    assert np.all(np.diff(u[order]) >= 0)
    assert np.median(u) == pytest.approx(0.0, abs=0.02)


def test_pit_clamps_outside_fitted_range(grid):
    values, mask = grid
    normaliser = PitNormaliser().fit(values, mask)
    lowest, highest = normaliser.quantiles[:, 0], normaliser.quantiles[:, -1]
    u = normaliser.transform(np.stack([lowest - 100.0, highest + 100.0]))
    assert np.array_equal(u, normaliser.transform(np.stack([lowest, highest])))
    # HR has distinct extremes; GCS (index 5) has many stays at its minimum of 3 points.
    assert u[0, 0] == -1.0
    assert u[1, 0] == 1.0
    assert u[0, 5] > -1.0
    assert normaliser.inverse_transform(np.full((1, values.shape[-1]), 5.0)) == pytest.approx(highest[None, :])
    assert normaliser.inverse_transform(np.full((1, values.shape[-1]), -5.0)) == pytest.approx(lowest[None, :])


def test_pit_discrete_channel_invertible(grid, data_config):
    values, mask = grid
    gcs = [channel.name for channel in data_config.channels].index("GCS")
    normaliser = PitNormaliser().fit(values[..., gcs : gcs + 1], mask[..., gcs : gcs + 1])
    levels = np.arange(3.0, 16.0)[:, None]
    u = normaliser.transform(levels)
    assert np.all(np.diff(u[:, 0]) >= 0)
    observed_levels = np.unique(values[..., gcs][mask[..., gcs]])[:, None]
    assert normaliser.inverse_transform(normaliser.transform(observed_levels)) == pytest.approx(observed_levels)


def test_fit_uses_observed_cells_only(grid):
    values, mask = grid
    polluted = np.where(mask, values, 1e6)
    assert np.array_equal(
        ZScoreNormaliser().fit(polluted, mask).to_dict()["mean"], ZScoreNormaliser().fit(values, mask).to_dict()["mean"]
    )
    assert np.array_equal(PitNormaliser().fit(polluted, mask).quantiles, PitNormaliser().fit(values, mask).quantiles)


@pytest.mark.parametrize("kind", KINDS)
def test_cohort_normaliser_fitted_on_train_only(data_config, kind: str):
    cohort = preprocess_physionet2012(dataclasses.replace(data_config, normaliser=kind), seed=11)
    train = cohort.train.clinical(cohort.normaliser).astype(np.float64)
    refit = make_normaliser(kind).fit(train, cohort.train.mask)
    assert normaliser_from_dict(cohort.normaliser.to_dict()).to_dict().keys() == refit.to_dict().keys()
    key = "mean" if kind == "zscore" else "quantiles"
    assert np.allclose(cohort.normaliser.to_dict()[key], refit.to_dict()[key], rtol=1e-5, atol=1e-3)

    everything = {name: cohort.split(name) for name in ("train", "val", "test")}
    all_values = np.concatenate([s.clinical(cohort.normaliser) for s in everything.values()]).astype(np.float64)
    all_mask = np.concatenate([s.mask for s in everything.values()])
    on_all = make_normaliser(kind).fit(all_values, all_mask)
    assert not np.allclose(cohort.normaliser.to_dict()[key], on_all.to_dict()[key], rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_nan_input_raises(grid, kind: str):
    values, mask = grid
    normaliser = make_normaliser(kind).fit(values, mask)
    sample = np.where(mask, values, 0.0)[:2].copy()
    sample[1, 3, 2] = np.nan
    with pytest.raises(TardiffInputError, match=r"1 NaN or infinite value\(s\), first at index \(1, 3, 2\)"):
        normaliser.transform(sample)
    sample[1, 3, 2] = np.inf
    with pytest.raises(TardiffInputError, match="NaN or infinite"):
        normaliser.inverse_transform(sample)


@pytest.mark.parametrize("kind", KINDS)
def test_nan_in_observed_fit_values_raises(grid, kind: str):
    values, mask = grid
    broken = values.copy()
    first = tuple(np.argwhere(mask)[0])
    broken[first] = np.nan
    with pytest.raises(TardiffInputError, match="observed values passed to fit"):
        make_normaliser(kind).fit(broken, mask)


def test_misuse_raises(grid):
    values, mask = grid
    with pytest.raises(TardiffInputError, match="unknown normaliser 'minmax'"):
        make_normaliser("minmax")
    with pytest.raises(TardiffInputError, match="not fitted"):
        ZScoreNormaliser().transform(np.zeros((2, 7)))
    with pytest.raises(TardiffInputError, match="fitted on 7 channel"):
        PitNormaliser().fit(values, mask).transform(np.zeros((2, 3)))
    with pytest.raises(TardiffInputError, match="same shape"):
        ZScoreNormaliser().fit(values, mask[..., :3])
    with pytest.raises(TardiffInputError, match="kind 'robust'"):
        normaliser_from_dict({"kind": "robust"})
    with pytest.raises(TardiffInputError, match=r"channel\(s\) \[0\] have no observed value"):
        empty = mask.copy()
        empty[..., 0] = False
        ZScoreNormaliser().fit(values, empty)


def test_misspelt_channel_source_is_named_with_close_matches():
    import polars as pl

    from tardiff.config import ChannelSpec

    observations = pl.DataFrame(
        {"record_id": [1, 1, 2], "minute": [0, 60, 30], "parameter": ["HR", "Temp", "HR"], "value": [80.0, 37.0, 90.0]},
        schema={"record_id": pl.Int64, "minute": pl.Int32, "parameter": pl.Utf8, "value": pl.Float64},
    )
    channels = (
        ChannelSpec("HR", ("HR",), "bpm", 1, 300),
        ChannelSpec("Temp", ("Tmp",), "degC", 20, 45),
    )
    with pytest.raises(TardiffInputError, match=r"channel Temp: none of its sources \['Tmp'\].*close names.*'Temp'"):
        build_hourly_grid(observations, channels, hours=4)
