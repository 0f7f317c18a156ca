"""Tests of the bring-your-own long-format reader (``data.dataset: long``).

Most fixtures are SYNTHETIC. The helpers below write small tables into tmp_path, from a
seeded numpy RNG or by hand, and they hold no patient data. The round-trip tests convert
a real slice of PhysioNet 2012 (the first 300 stays of set a) into the long format. They
check that the long reader prepares the same cohort as the PhysioNet reader.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from tardiff.config import ChannelSpec, DataConfig, load_params, params_from_dict, read_params_file
from tardiff.data.cohort import preprocess_cohort
from tardiff.data.long import read_long
from tardiff.data.physionet2012 import read_physionet2012
from tardiff.data.sources import read_cohort, reader_names
from tardiff.errors import CorruptFileError, MissingDataError, TardiffInputError

REPO = Path(__file__).resolve().parents[1]
SEED = 20250417
HR = ChannelSpec("HR", ("HR",), "bpm", 1, 300)
TEMP = ChannelSpec("Temp", ("Temp",), "degC", 25, 45)
SBP = ChannelSpec("SBP", ("SysABP", "NISysABP"), "mmHg", 1, 300)
CHANNELS = (HR, TEMP, SBP)


def write_table(frame: pl.DataFrame, path: Path) -> Path:
    """Write ``frame`` as CSV or Parquet, by the extension of ``path``."""
    if path.suffix == ".parquet":
        frame.write_parquet(path)
    else:
        frame.write_csv(path)
    return path


def synthetic_hand_tables(folder: Path) -> None:
    """Write a SYNTHETIC hand-made long table and labels, each row chosen to exercise one rule."""
    rows = [
        # stay_id, time (hours), variable, value, unit
        (1, "0.5", "HR", "80", "bpm"),  # minute 30
        (1, "0.5", "HR", "84", "bpm"),  # same stay, variable and time: a duplicate, kept
        (1, "1.0", "Temp", "98.6", "F"),  # converted to 37 degC, minute 60
        (1, "23.99", "SysABP", "120", "mmHg"),  # minute 1439, last of the window
        (1, "-0.25", "HR", "70", "bpm"),  # before the window: dropped
        (1, "24", "HR", "75", "bpm"),  # at the window end: dropped
        (1, "2", "HR", "", "bpm"),  # missing value: dropped
        (1, "3", "HR", "NA", "bpm"),  # missing value: dropped
        (2, "2.0", "HR", "90", ""),  # no unit: taken as bpm
        (2, "2.5", "Temp", "37.5", "°C"),
        (3, "1", "HR", "100", "bpm"),  # stay 3 has no label
        (4, "1", "Weight", "70", "kg"),  # not a channel source: not read
    ]
    obs = pl.DataFrame(rows, schema=["stay_id", "time", "variable", "value", "unit"], orient="row")
    write_table(obs, folder / "obs.csv")
    labels = pl.DataFrame({"stay_id": [1, 2, 5], "label": [0, 1, 1]})  # stay 5 has no observation
    write_table(labels, folder / "labels.csv")


def synthetic_cohort_tables(folder: Path, seed: int, n_stays: int = 60, suffix: str = ".csv") -> None:
    """Write a SYNTHETIC long table of ``n_stays`` stays drawn from a seeded RNG, a third of them positive."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(n_stays, dtype=int)
    labels[rng.permutation(n_stays)[: n_stays // 3]] = 1
    rows = []
    for stay, label in enumerate(labels, start=100):
        for variable, mean, unit in (("HR", 85 + 10 * label, "bpm"), ("Temp", 37.0, "degC"), ("NISysABP", 120, "mmHg")):
            times = np.sort(rng.uniform(0, 30, size=rng.integers(5, 25)))
            for time in times:
                rows.append((stay, round(float(time), 4), variable, round(float(rng.normal(mean, 5)), 2), unit))
    obs = pl.DataFrame(rows, schema=["stay_id", "time", "variable", "value", "unit"], orient="row")
    write_table(obs, folder / f"obs{suffix}")
    write_table(pl.DataFrame({"stay_id": np.arange(100, 100 + n_stays), "label": labels}), folder / f"labels{suffix}")


def long_config(folder: Path, **changes) -> DataConfig:
    """Return a DataConfig for the long reader on ``folder``'s obs.csv and labels.csv."""
    config = DataConfig(
        dataset="long", dir=str(folder), sets=(), observations_file="obs.csv", labels_file="labels.csv",
        channels=CHANNELS, hours=24, time_unit="hours",
    )
    return dataclasses.replace(config, **changes)


@pytest.fixture
def hand(tmp_path: Path) -> Path:
    synthetic_hand_tables(tmp_path)
    return tmp_path


def test_long_registered():
    assert "long" in reader_names()


def test_long_minutes_parameters_values(hand: Path):
    raw = read_cohort(long_config(hand))
    rows = raw.observations.rows()
    assert rows == [
        (1, 30, "HR", 80.0),
        (1, 30, "HR", 84.0),
        (1, 60, "Temp", pytest.approx(37.0)),
        (1, 1439, "SysABP", 120.0),
        (2, 120, "HR", 90.0),
        (2, 150, "Temp", 37.5),
    ]
    assert raw.observations.schema == {"record_id": pl.Int64, "minute": pl.Int32, "parameter": pl.Utf8,
                                       "value": pl.Float64}
    assert raw.outcomes.rows() == [(1, 0), (2, 1)]


def test_long_counts_every_exclusion(hand: Path):
    counts = read_cohort(long_config(hand)).counts
    assert counts["rows_read"] == 12
    assert counts["rows_of_other_variables"] == 1
    assert counts["missing_values"] == 2
    assert counts["rows_before_window"] == 1
    assert counts["rows_after_window"] == 1
    assert counts["duplicate_time_rows"] == 1
    assert counts["rows_without_unit"] == 1
    assert counts["converted_rows"] == {"Temp: F -> degC": 1}
    assert counts["stays_without_label"] == 1
    assert counts["stays_without_label_first_ids"] == [3]
    assert counts["stays_without_observations"] == 1
    assert counts["stays_without_observations_first_ids"] == [5]
    assert counts["stays"] == 2


def test_long_minutes_unit(tmp_path: Path):
    obs = pl.DataFrame({"stay_id": [1, 1, 2], "time": [0.0, 59.9, 61.0], "variable": ["HR"] * 3, "value": [1.0] * 3})
    write_table(obs, tmp_path / "obs.parquet")
    write_table(pl.DataFrame({"stay_id": [1, 2], "label": [True, False]}), tmp_path / "labels.parquet")
    raw = read_long(tmp_path, "obs.parquet", "labels.parquet", (HR,), 24, "minutes")
    assert raw.observations["minute"].to_list() == [0, 59, 61]
    assert raw.outcomes.rows() == [(1, 1), (2, 0)]


def test_long_duration_time_column(tmp_path: Path):
    obs = pl.DataFrame({"stay_id": [1, 2], "time": [timedelta(minutes=90, seconds=30), timedelta(hours=2)],
                        "variable": ["HR", "HR"], "value": [1.0, 2.0]})
    write_table(obs, tmp_path / "obs.parquet")
    write_table(pl.DataFrame({"stay_id": [1, 2], "label": [0, 1]}), tmp_path / "labels.parquet")
    for time_unit in ("hours", "minutes"):
        raw = read_long(tmp_path, "obs.parquet", "labels.parquet", (HR,), 24, time_unit)
        assert raw.observations["minute"].to_list() == [90, 120]


def test_long_datetime_uses_label_start(tmp_path: Path):
    obs = pl.DataFrame({
        "stay_id": [1, 1, 2, 2],
        "time": ["2101-10-20 10:00:00", "2101-10-20 12:30:59", "2150-01-01 23:59:00", "2150-01-02 00:00:30"],
        "variable": ["HR"] * 4,
        "value": [80, 81, 82, 83],
    })
    write_table(obs, tmp_path / "obs.csv")
    labels = pl.DataFrame({"stay_id": [1, 2], "label": [0, 1],
                           "start": ["2101-10-20 10:00:00", "2150-01-02 00:00:00"]})
    write_table(labels, tmp_path / "labels.csv")
    raw = read_long(tmp_path, "obs.csv", "labels.csv", (HR,), 24, "datetime")
    assert raw.observations.select("record_id", "minute").rows() == [(1, 0), (1, 150), (2, 0)]
    assert raw.counts["rows_before_window"] == 1


def test_long_datetime_needs_start_column(tmp_path: Path):
    write_table(pl.DataFrame({"stay_id": [1], "time": ["2101-10-20 10:00"], "variable": ["HR"], "value": [80]}),
                tmp_path / "obs.csv")
    write_table(pl.DataFrame({"stay_id": [1], "label": [0]}), tmp_path / "labels.csv")
    with pytest.raises(TardiffInputError, match=r"lacks column\(s\) \['start'\].*data.time_unit is datetime"):
        read_long(tmp_path, "obs.csv", "labels.csv", (HR,), 24, "datetime")


def test_long_parquet_matches_csv(tmp_path: Path):
    csv_dir, parquet_dir = tmp_path / "csv", tmp_path / "parquet"
    csv_dir.mkdir()
    parquet_dir.mkdir()
    synthetic_cohort_tables(csv_dir, SEED, suffix=".csv")
    synthetic_cohort_tables(parquet_dir, SEED, suffix=".parquet")
    from_csv = read_cohort(long_config(csv_dir))
    from_parquet = read_cohort(long_config(parquet_dir, observations_file="obs.parquet",
                                           labels_file="labels.parquet"))
    assert from_csv.observations.equals(from_parquet.observations)
    assert from_csv.outcomes.equals(from_parquet.outcomes)


def test_long_max_stays_keeps_first_ids(tmp_path: Path):
    synthetic_cohort_tables(tmp_path, SEED)
    raw = read_cohort(long_config(tmp_path, max_stays=30))
    assert raw.outcomes["record_id"].to_list() == list(range(100, 130))
    assert raw.counts["stays_over_max_stays"] == 30


def test_long_preprocess_end_to_end(tmp_path: Path):
    synthetic_cohort_tables(tmp_path, SEED)
    cohort = preprocess_cohort(long_config(tmp_path), seed=SEED)
    assert cohort.channel_names == ["HR", "Temp", "SBP"]
    for name in ("train", "val", "test"):
        split = cohort.split(name)
        assert split.x.shape[1:] == (24, 3)
        assert set(split.y.tolist()) == {0, 1}
    assert cohort.metadata["dataset"] == "long"
    assert cohort.metadata["reader_counts"]["rows_after_window"] > 0
    assert len(cohort.train) + len(cohort.val) + len(cohort.test) == 60


def test_docs_examples_load():
    """Each ``cohorts:`` example of docs/bring_your_own_data.md is a valid params.yaml entry."""
    text = (REPO / "docs" / "bring_your_own_data.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    base = read_params_file(REPO / "params.yaml")
    datasets = []
    for block in blocks:
        for name, overrides in yaml.safe_load(block)["cohorts"].items():
            raw = dict(base, cohorts={**(base.get("cohorts") or {}), name: overrides})
            params = params_from_dict(raw, cohort=name)
            assert [channel.name for channel in params.data.channels] == [
                channel["name"] for channel in overrides["data"]["channels"]
            ]
            datasets.append(params.data.dataset)
    assert datasets == ["long", "meds", "mimic3", "eicu"]


# Bad input: each raises TardiffInputError naming the file, the value and the fix.


def bad_tables(folder: Path, obs: pl.DataFrame | None = None, labels: pl.DataFrame | None = None) -> None:
    """Write SYNTHETIC tables (two stays, both classes) with ``obs`` or ``labels`` replaced."""
    default_obs = pl.DataFrame({"stay_id": [1, 2], "time": [1.0, 2.0], "variable": ["HR", "HR"],
                                "value": ["80", "90"], "unit": ["bpm", "bpm"]})
    write_table(default_obs if obs is None else obs, folder / "obs.csv")
    write_table(pl.DataFrame({"stay_id": [1, 2], "label": [0, 1]}) if labels is None else labels,
                folder / "labels.csv")


@pytest.mark.parametrize(
    ("obs", "labels", "pattern"),
    [
        (pl.DataFrame({"stay_id": [1], "time": [1.0], "value": [1.0]}), None,
         r"obs.csv lacks column\(s\) \['variable'\].*needs columns stay_id, time, variable, value"),
        (None, pl.DataFrame({"stay_id": [1, 2], "outcome": [0, 1]}),
         r"labels.csv lacks column\(s\) \['label'\]"),
        (pl.DataFrame({"stay_id": [1, 2], "time": [1.0, 2.0], "variable": ["HR", "HR"], "value": ["80", "high"]}),
         None, r"obs.csv, line 3: value 'high' of variable 'HR' is not a finite number"),
        (pl.DataFrame({"stay_id": [1, 2], "time": [1.0, 2.0], "variable": ["HR", "HR"], "value": ["80", "inf"]}),
         None, r"line 3: value 'inf' of variable 'HR' is not a finite number"),
        (pl.DataFrame({"stay_id": [1, 2], "time": [1.0, 2.0], "variable": ["HR", "HR"], "value": [80.0, 90.0],
                       "unit": ["bpm", "mmHg"]}),
         None, r"variable 'HR' has unit 'mmHg' on 1 row\(s\), but channel HR expects 'bpm'.*remove 'HR'"),
        (None, pl.DataFrame({"stay_id": [1, 2], "label": [0, 2]}),
         r"labels.csv, line 3: label '2' in column 'label' is not 0, 1 or a boolean.*0/1 or true/false"),
        (None, pl.DataFrame({"stay_id": [1, 2], "label": ["0", "yes"]}), r"label 'yes' .* is not 0, 1"),
        (None, pl.DataFrame({"stay_id": [1, 2], "label": [0, None]}), r"line 3: label in column 'label' is missing"),
        (None, pl.DataFrame({"stay_id": [1, 2], "label": [1, 1]}),
         r"one class only: label counts \{'0': 0, '1': 2\}"),
        (None, pl.DataFrame({"stay_id": [1, 1, 2], "label": [0, 0, 1]}),
         r"stay id \[1\] appear\(s\) on more than one row"),
        (pl.DataFrame({"stay_id": ["a1", "2"], "time": [1.0, 2.0], "variable": ["HR", "HR"], "value": [1.0, 2.0]}),
         None, r"line 2: stay id 'a1' in column 'stay_id' is not an integer"),
        (pl.DataFrame({"stay_id": [1, 2], "time": [None, 2.0], "variable": ["HR", "HR"], "value": [1.0, 2.0]}),
         None, r"line 2: time None is missing or not a finite number of hours"),
        (pl.DataFrame({"stay_id": [7, 8], "time": [1.0, 2.0], "variable": ["HR", "HR"], "value": [1.0, 2.0]}),
         None, r"no stay id of .*obs.csv occurs in the labels .*labels.csv"),
        (pl.DataFrame({"stay_id": [1, 2], "time": [1.0, 2.0], "variable": ["hr", "heart_rate"], "value": [1.0, 2]}),
         None, r"channel HR: none of its sources \['HR'\] occurs in .*Closest variable names in the file: \['hr'"),
        (pl.DataFrame({"stay_id": [1, 2], "time": [1.0, 30.0], "variable": ["HR", "HR"], "value": [1.0, 2.0]}),
         None, r"one class only: label counts \{'0': 1, '1': 0\}"),
    ],
    ids=["obs-column", "label-column", "non-numeric", "infinite", "unknown-unit", "label-2", "label-text",
         "label-missing", "one-class", "duplicate-label", "stay-id-text", "time-missing", "no-shared-ids",
         "source-absent", "one-class-after-window"],
)
def test_long_bad_input_raises(tmp_path: Path, obs, labels, pattern):
    bad_tables(tmp_path, obs, labels)
    with pytest.raises(TardiffInputError, match=pattern):
        read_cohort(long_config(tmp_path, channels=(HR,)))


def test_long_header_only_file_raises(tmp_path: Path):
    bad_tables(tmp_path)
    (tmp_path / "obs.csv").write_text("stay_id,time,variable,value\n")
    with pytest.raises(TardiffInputError, match=r"obs.csv contains no rows"):
        read_cohort(long_config(tmp_path, channels=(HR,)))


def test_long_zero_byte_file_raises(tmp_path: Path):
    bad_tables(tmp_path)
    (tmp_path / "labels.csv").write_bytes(b"")
    with pytest.raises(TardiffInputError, match=r"labels.csv is empty; it needs a header line"):
        read_cohort(long_config(tmp_path, channels=(HR,)))


def test_long_missing_file_and_setting_raise(tmp_path: Path):
    bad_tables(tmp_path)
    with pytest.raises(MissingDataError, match=r"absent.csv \(data.observations_file\) not found"):
        read_cohort(long_config(tmp_path, observations_file="absent.csv", channels=(HR,)))
    with pytest.raises(TardiffInputError, match=r"data.labels_file is empty but data.dataset 'long' needs it"):
        read_cohort(long_config(tmp_path, labels_file="", channels=(HR,)))


def test_long_corrupt_parquet_raises(tmp_path: Path):
    bad_tables(tmp_path)
    (tmp_path / "obs.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(CorruptFileError, match=r"obs.parquet cannot be read as a table"):
        read_cohort(long_config(tmp_path, observations_file="obs.parquet", channels=(HR,)))


def test_long_unknown_extension_raises(tmp_path: Path):
    bad_tables(tmp_path)
    (tmp_path / "obs.txt").write_text((tmp_path / "obs.csv").read_text())
    with pytest.raises(TardiffInputError, match=r"cannot tell the format of .*obs.txt.*\*.csv, \*.csv.gz, \*.parquet"):
        read_cohort(long_config(tmp_path, observations_file="obs.txt", channels=(HR,)))


def test_long_conflicting_channel_units_raise(tmp_path: Path):
    bad_tables(tmp_path)
    fahrenheit = ChannelSpec("HR2", ("HR",), "degF", 1, 300)
    pattern = r"variable 'HR' is a source of channel HR \('bpm'\) and of channel HR2"
    with pytest.raises(TardiffInputError, match=pattern):
        read_cohort(long_config(tmp_path, channels=(HR, fahrenheit)))


# Round trip through real PhysioNet 2012 records


@pytest.fixture(scope="module")
def physionet_config(physionet2012_dir: Path) -> DataConfig:
    data = load_params(REPO / "params.yaml").data
    return dataclasses.replace(data, dir=str(physionet2012_dir), sets=("a",), max_stays=300)


@pytest.fixture(scope="module")
def physionet_cohort(physionet_config: DataConfig):
    return preprocess_cohort(physionet_config, seed=SEED)


@pytest.mark.parametrize(
    ("suffix", "time_unit"), [(".csv", "hours"), (".parquet", "minutes"), (".parquet", "datetime")]
)
def test_long_reproduces_physionet2012(tmp_path: Path, physionet_config, physionet_cohort, suffix, time_unit):
    raw = read_physionet2012(Path(physionet_config.dir), ("a",), 300, True)
    start = datetime(2101, 10, 20, 7, 15)
    if time_unit == "hours":
        time = pl.col("minute") / 60
    elif time_unit == "minutes":
        time = pl.col("minute").cast(pl.Float64)
    else:
        time = pl.lit(start) + pl.duration(minutes=pl.col("minute"))
    obs = raw.observations.select(
        pl.col("record_id").alias("stay_id"), time.alias("time"), pl.col("parameter").alias("variable"), "value"
    )
    labels = raw.outcomes.rename({"record_id": "stay_id"})
    if time_unit == "datetime":
        labels = labels.with_columns(pl.lit(start).alias("start"))
    write_table(obs, tmp_path / f"obs{suffix}")
    write_table(labels, tmp_path / f"labels{suffix}")

    config = dataclasses.replace(
        physionet_config, dataset="long", dir=str(tmp_path), sets=(), max_stays=None,
        observations_file=f"obs{suffix}", labels_file=f"labels{suffix}", time_unit=time_unit,
    )
    cohort = preprocess_cohort(config, seed=SEED)
    for name in ("train", "val", "test"):
        expected, actual = physionet_cohort.split(name), cohort.split(name)
        assert np.array_equal(actual.record_id, expected.record_id)
        assert np.array_equal(actual.y, expected.y)
        assert np.array_equal(actual.mask, expected.mask)
        assert np.array_equal(actual.x, expected.x)
    assert cohort.metadata["fill_medians"] == physionet_cohort.metadata["fill_medians"]
