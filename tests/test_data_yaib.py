"""Tests of the YAIB reader on the real eICU and MIMIC-III demo cohorts.

Labels are recomputed here straight from ``outc.parquet`` with polars and compared with
the reader. Corrupted copies of the real parquet files, written to ``tmp_path``, test each
malformed input. ``mimic_mortality`` (99 stays) is the end-to-end preprocessing fixture.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tardiff.config import DataConfig, load_params
from tardiff.data.cohort import SPLITS, preprocess_cohort
from tardiff.data.sources import read_cohort
from tardiff.data.yaib import read_yaib
from tardiff.errors import CorruptFileError, MissingDataError, TardiffInputError

REPO = Path(__file__).resolve().parents[1]
SEED = 20250417
HOURS = 24
WINDOW_END = timedelta(hours=HOURS)
MIMIC = "mortality24/mimic_demo"


@pytest.fixture(scope="module")
def yaib_root(data_root: Path) -> Path:
    return data_root / "yaib"


@pytest.fixture(scope="module")
def mimic_config(yaib_root: Path) -> DataConfig:
    data = load_params(REPO / "params.yaml", cohort="mimic_mortality").data
    return dataclasses.replace(data, dir=str(yaib_root / MIMIC))


@pytest.fixture(scope="module")
def mimic_raw(yaib_root: Path):
    return read_yaib(yaib_root / MIMIC, "mortality24", HOURS, ("hr",))


def read_outc(yaib_root: Path, cohort: str) -> pl.DataFrame:
    return pl.read_parquet(yaib_root / cohort / "outc.parquet")


def copy_cohort(yaib_root: Path, cohort: str, destination: Path) -> Path:
    """Copy one cohort folder (without any checksum file) to ``destination``, writable, and return it."""
    shutil.copytree(yaib_root / cohort, destination, copy_function=shutil.copyfile)
    return destination


# Reading and labels


def test_mortality_labels_match_outc(mimic_raw, yaib_root: Path):
    expected = read_outc(yaib_root, MIMIC).select(pl.col("stay_id").cast(pl.Int64), "label").sort("stay_id")
    assert mimic_raw.outcomes.schema == pl.Schema({"record_id": pl.Int64, "label": pl.Int8})
    assert mimic_raw.outcomes.rows() == expected.rows()
    assert mimic_raw.counts["positive_stays"] == 21


def test_observations_melt_dyn(mimic_raw, yaib_root: Path):
    dyn = pl.read_parquet(yaib_root / MIMIC / "dyn.parquet")
    variables = [column for column in dyn.columns if column not in ("stay_id", "time")]
    non_null = sum(dyn[column].is_not_null().sum() for column in variables)
    assert mimic_raw.observations.height == non_null
    assert mimic_raw.counts["missing_values"] == dyn.height * len(variables) - non_null

    stay = int(dyn["stay_id"][0])
    expected = (
        dyn.filter(pl.col("stay_id") == stay, pl.col("hr").is_not_null())
        .select((pl.col("time").dt.total_hours() * 60).cast(pl.Int32).alias("minute"), pl.col("hr").alias("value"))
        .rows()
    )
    got = mimic_raw.observations.filter(pl.col("record_id") == stay, pl.col("parameter") == "hr")
    assert got.select("minute", "value").rows() == expected


def test_checksums_verified_from_root(mimic_raw):
    assert mimic_raw.counts["files_verified"] == [f"{MIMIC}/dyn.parquet", f"{MIMIC}/outc.parquet"]
    assert mimic_raw.counts["files_unverified"] == []


def test_checksum_mismatch_raises(yaib_root: Path, tmp_path: Path):
    shutil.copy(yaib_root / "SHA256SUMS", tmp_path)
    cohort = copy_cohort(yaib_root, MIMIC, tmp_path / MIMIC)
    dyn = pl.read_parquet(cohort / "dyn.parquet")
    dyn.head(100).write_parquet(cohort / "dyn.parquet")
    with pytest.raises(CorruptFileError, match="checksum mismatch for .*dyn.parquet") as info:
        read_yaib(cohort, "mortality24", HOURS)
    assert hashlib.sha256((cohort / "dyn.parquet").read_bytes()).hexdigest() in str(info.value)


def test_max_stays_keeps_lowest_ids(yaib_root: Path):
    raw = read_yaib(yaib_root / MIMIC, "mortality24", HOURS, max_stays=10)
    ids = read_outc(yaib_root, MIMIC)["stay_id"].sort().head(10).to_list()
    assert raw.outcomes["record_id"].to_list() == ids
    assert set(raw.observations["record_id"].unique()) == set(ids)


def los_expectation(yaib_root: Path, threshold: float) -> tuple[dict[int, int], set[int]]:
    """Return stay -> label from the remaining length of stay at 24 h, and the stays that end before 24 h."""
    outc = read_outc(yaib_root, "los/eicu_demo")
    at_end = outc.filter(pl.col("time") == WINDOW_END).select(
        pl.col("stay_id").cast(pl.Int64), ((HOURS + pl.col("label")) > threshold).cast(pl.Int64).alias("label")
    )
    last = outc.group_by("stay_id").agg(pl.col("time").max())
    ended = set(last.filter(pl.col("time") < WINDOW_END)["stay_id"].cast(pl.Int64).to_list())
    return dict(at_end.iter_rows()), ended


@pytest.mark.parametrize("threshold", [72.0, 48.0])
def test_los_label_from_remaining_stay(yaib_root: Path, threshold: float):
    raw = read_yaib(yaib_root / "los/eicu_demo", "los", HOURS, los_threshold_hours=threshold)
    expected, ended = los_expectation(yaib_root, threshold)
    assert dict(raw.outcomes.iter_rows()) == expected
    assert raw.counts["stays_ending_in_window"] == len(ended)
    assert not ended & set(raw.outcomes["record_id"])


def test_los_stay_of_exactly_threshold_is_negative(yaib_root: Path):
    outc = read_outc(yaib_root, "los/eicu_demo")
    total = outc.filter(pl.col("time") == WINDOW_END).with_columns((HOURS + pl.col("label")).alias("total"))
    stay = int(total.filter(pl.col("total") == 72)["stay_id"][0])
    raw = read_yaib(yaib_root / "los/eicu_demo", "los", HOURS, los_threshold_hours=72)
    assert dict(raw.outcomes.iter_rows())[stay] == 0


def test_los_threshold_beyond_cap_raises(yaib_root: Path):
    # Remaining stay is capped at 168 h, so 24 + 168 = 192 h cannot decide a 200 h threshold.
    with pytest.raises(TardiffInputError, match="capped at 168 h.*choose a threshold below 192 h"):
        read_yaib(yaib_root / "los/eicu_demo", "los", HOURS, los_threshold_hours=200)


def aki_outc(yaib_root: Path) -> pl.DataFrame:
    return read_outc(yaib_root, "aki/eicu_demo").group_by("stay_id").agg(
        pl.col("label").any().cast(pl.Int64).alias("any_positive"),
        (pl.col("label") & (pl.col("time") < WINDOW_END)).any().alias("positive_in_window"),
        pl.col("time").max().alias("last_time"),
    )


def test_aki_label_is_any_positive(yaib_root: Path):
    raw = read_yaib(yaib_root / "aki/eicu_demo", "aki", HOURS)
    expected = aki_outc(yaib_root).select(pl.col("stay_id").cast(pl.Int64), "any_positive")
    assert dict(raw.outcomes.iter_rows()) == dict(expected.iter_rows())
    assert raw.counts["positive_stays"] == 698


def test_aki_exclude_positive_in_window_exact(yaib_root: Path):
    raw = read_yaib(yaib_root / "aki/eicu_demo", "aki", HOURS, exclude_positive_in_window=True)
    summary = aki_outc(yaib_root)
    in_window = set(summary.filter(pl.col("positive_in_window"))["stay_id"].cast(pl.Int64).to_list())
    all_ids = set(summary["stay_id"].cast(pl.Int64).to_list())
    assert in_window
    assert all_ids - set(raw.outcomes["record_id"]) == in_window
    assert raw.counts["stays_excluded_positive_in_window"] == len(in_window)
    assert raw.outcomes["label"].sum() > 0


def test_aki_min_stay_hours_counts(yaib_root: Path):
    raw = read_yaib(yaib_root / "aki/eicu_demo", "aki", HOURS, min_stay_hours=24)
    short = set(
        aki_outc(yaib_root).filter(pl.col("last_time") < WINDOW_END)["stay_id"].cast(pl.Int64).to_list()
    )
    assert raw.counts["stays_shorter_than_min_stay_hours"] == len(short) == 865
    assert not short & set(raw.outcomes["record_id"])


def test_registered_reader_checks_channel_sources(mimic_config: DataConfig):
    raw = read_cohort(mimic_config)
    assert raw.outcomes.height == 99
    renamed = dataclasses.replace(mimic_config.channels[0], sources=("heart_rate",))
    with pytest.raises(TardiffInputError, match=r"lacks variable column\(s\) \['heart_rate'\]"):
        read_cohort(dataclasses.replace(mimic_config, channels=(renamed, *mimic_config.channels[1:])))


def test_task_and_option_mismatch_raise(yaib_root: Path):
    with pytest.raises(TardiffInputError, match="has hourly labels"):
        read_yaib(yaib_root / "los/eicu_demo", "mortality24", HOURS)
    with pytest.raises(TardiffInputError, match="lacks column"):
        read_yaib(yaib_root / MIMIC, "aki", HOURS)
    with pytest.raises(TardiffInputError, match="applies to the hourly event label"):
        read_yaib(yaib_root / MIMIC, "mortality24", HOURS, exclude_positive_in_window=True)
    with pytest.raises(TardiffInputError, match="data.task is 'sepsis'"):
        read_yaib(yaib_root / MIMIC, "sepsis", HOURS)


# Malformed input


def rewrite(cohort: Path, name: str, change) -> None:
    frame = pl.read_parquet(cohort / name)
    change(frame).write_parquet(cohort / name)


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("dyn.parquet", lambda f: f.drop("time"), r"lacks column\(s\) \['time'\]"),
        ("dyn.parquet", lambda f: f.drop("hr"), r"lacks variable column\(s\) \['hr'\]"),
        ("dyn.parquet", lambda f: f.with_columns(pl.col("alb").cast(pl.Utf8)), r"\{'alb': 'String'\} are not numeric"),
        ("dyn.parquet", lambda f: f.with_columns(pl.col("time").dt.total_hours()), "Int64, expected a duration"),
        ("dyn.parquet", lambda f: pl.concat([f, f.head(1)]), r"2 rows share their \(stay_id, time\)"),
        ("dyn.parquet", lambda f: f.with_columns(pl.col("map").fill_null(float("inf"))), "column map is inf"),
        ("outc.parquet", lambda f: f.with_columns(pl.lit(None, pl.Int32).alias("label")), "label is null"),
        ("outc.parquet", lambda f: f.with_columns(pl.col("label") * 2), "label is 2.0"),
        ("outc.parquet", lambda f: pl.concat([f, f.head(1)]), "lists stay_id"),
        ("outc.parquet", lambda f: f.with_columns(pl.col("label").cast(pl.Utf8)), "expected numbers"),
    ],
)
def test_malformed_file_raises(yaib_root: Path, tmp_path: Path, name: str, change, message: str):
    cohort = copy_cohort(yaib_root, MIMIC, tmp_path / "cohort")
    rewrite(cohort, name, change)
    with pytest.raises(TardiffInputError, match=message) as info:
        read_yaib(cohort, "mortality24", HOURS, ("hr",))
    assert name in str(info.value)


def test_negative_time_rows_dropped_and_counted(yaib_root: Path, tmp_path: Path):
    cohort = copy_cohort(yaib_root, MIMIC, tmp_path / "cohort")
    dyn = pl.read_parquet(cohort / "dyn.parquet")
    early = dyn.head(2).with_columns(pl.col("time") - timedelta(hours=3))
    pl.concat([early, dyn]).write_parquet(cohort / "dyn.parquet")

    raw = read_yaib(cohort, "mortality24", HOURS)

    assert raw.counts["dyn_rows_before_admission"] == 2
    assert raw.observations["minute"].min() >= 0
    reference = read_yaib(yaib_root / MIMIC, "mortality24", HOURS, verify_checksums=False)
    assert raw.observations.equals(reference.observations)


def test_missing_labels_and_data_counted(yaib_root: Path, tmp_path: Path):
    cohort = copy_cohort(yaib_root, MIMIC, tmp_path / "cohort")
    outc = pl.read_parquet(cohort / "outc.parquet").sort("stay_id")
    dropped = outc["stay_id"].head(3).cast(pl.Int64).to_list()
    extra = pl.DataFrame({"stay_id": [1, 2], "label": [0, 1]}, schema=outc.schema)
    pl.concat([outc.slice(3), extra]).write_parquet(cohort / "outc.parquet")

    raw = read_yaib(cohort, "mortality24", HOURS)

    assert raw.counts["stays_without_labels"] == 3
    assert raw.counts["stays_without_labels_ids"] == dropped
    assert raw.counts["stays_without_data"] == 2
    assert raw.counts["stays_without_data_ids"] == [1, 2]
    assert raw.outcomes.height == 96
    assert not set(dropped) & set(raw.observations["record_id"].unique())


def test_missing_and_corrupt_files_raise(yaib_root: Path, tmp_path: Path):
    with pytest.raises(MissingDataError, match="not found"):
        read_yaib(tmp_path / "absent", "mortality24", HOURS)
    cohort = copy_cohort(yaib_root, MIMIC, tmp_path / "cohort")
    (cohort / "outc.parquet").unlink()
    with pytest.raises(MissingDataError, match="outc.parquet not found"):
        read_yaib(cohort, "mortality24", HOURS)
    (cohort / "outc.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(CorruptFileError, match="cannot be read as Parquet"):
        read_yaib(cohort, "mortality24", HOURS)


# End to end


@pytest.fixture(scope="module")
def mimic_cohort(mimic_config: DataConfig):
    return preprocess_cohort(mimic_config, SEED)


def test_mimic_preprocess_both_classes_every_split(mimic_cohort):
    for name in SPLITS:
        split = mimic_cohort.split(name)
        assert set(split.y.tolist()) == {0, 1}, name
        assert split.x.shape == (len(split), HOURS, 7)
        assert np.isfinite(split.x).all()
    sizes = [len(mimic_cohort.split(name)) for name in SPLITS]
    # 99 stays, 3 without any of the seven vital signs in the window.
    assert sum(sizes) == 96
    assert sizes == [76, 10, 10]
    assert mimic_cohort.metadata["exclusions"]["stays_without_selected_channels"] == 3


def test_mimic_preprocess_deterministic(mimic_config: DataConfig, mimic_cohort):
    again = preprocess_cohort(mimic_config, SEED)
    for name in SPLITS:
        assert np.array_equal(again.split(name).record_id, mimic_cohort.split(name).record_id)
        assert np.array_equal(again.split(name).x, mimic_cohort.split(name).x)


def test_one_class_only_raises(yaib_root: Path, mimic_config: DataConfig, tmp_path: Path):
    cohort = copy_cohort(yaib_root, MIMIC, tmp_path / "cohort")
    rewrite(cohort, "outc.parquet", lambda f: f.with_columns(pl.lit(0, pl.Int32).alias("label")))
    with pytest.raises(TardiffInputError, match="one class only"):
        preprocess_cohort(dataclasses.replace(mimic_config, dir=str(cohort)), SEED)


def test_nan_values_dropped_as_missing(yaib_root: Path, mimic_raw, tmp_path: Path):
    cohort = copy_cohort(yaib_root, MIMIC, tmp_path / "cohort")
    rewrite(cohort, "dyn.parquet", lambda f: f.with_columns(pl.col("hr").fill_nan(None).fill_null(float("nan"))))
    raw = read_yaib(cohort, "mortality24", HOURS)
    assert raw.observations.equals(mimic_raw.observations)
    assert raw.counts["missing_values"] == mimic_raw.counts["missing_values"]
    assert not raw.observations["value"].is_nan().any()
