"""Tests of the MEDS reader (``data.dataset: meds``).

Every fixture is SYNTHETIC. The helpers below write MEDS roots into tmp_path, filled by
hand or from a seeded numpy RNG, and they hold no patient data. The files follow the
published MEDS schemas. Data shards have subject_id int64, time timestamp[us], code string
and numeric_value float32. Label files have subject_id int64, prediction_time
timestamp[us] and boolean_value bool.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tardiff.config import ChannelSpec, DataConfig
from tardiff.data.cohort import preprocess_cohort
from tardiff.data.meds import read_meds
from tardiff.data.sources import read_cohort, reader_names
from tardiff.errors import MissingDataError, TardiffInputError

SEED = 20250417
HOURS = 24
HR = ChannelSpec("HR", ("LOINC/8867-4",), "bpm", 1, 300)
TEMP = ChannelSpec("Temp", ("LOINC/8310-5",), "degC", 25, 45)
CHANNELS = (HR, TEMP)
DATA_SCHEMA = pa.schema(
    [("subject_id", pa.int64()), ("time", pa.timestamp("us")), ("code", pa.string()), ("numeric_value", pa.float32())]
)
LABEL_SCHEMA = pa.schema(
    [("subject_id", pa.int64()), ("prediction_time", pa.timestamp("us")), ("boolean_value", pa.bool_())]
)
PREDICTION = datetime(2150, 3, 1, 12, 0)


def write_shard(path: Path, rows: list[tuple], schema: pa.Schema = DATA_SCHEMA) -> None:
    """Write SYNTHETIC rows as one MEDS Parquet file with ``schema``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(zip(*rows)) if rows else [[] for _ in schema]
    table = pa.table({field.name: pa.array(list(values), field.type) for field, values in zip(schema, columns)})
    pq.write_table(table, path)


def synthetic_hand_root(root: Path) -> None:
    """Write a SYNTHETIC MEDS root whose events each exercise one rule of the window and the counts."""
    p = PREDICTION
    write_shard(root / "data" / "train" / "0.parquet", [
        (1, None, "MEDS_BIRTH", None),  # static event, not a channel code
        (1, None, "LOINC/8867-4", 70.0),  # static event of a channel code: dropped
        (1, p, "LOINC/8867-4", 80.0),  # at prediction time: last minute of the window
        (1, p - timedelta(minutes=30), "LOINC/8867-4", 82.0),  # minute 24 * 60 - 31
        (1, p - timedelta(minutes=30), "LOINC/8867-4", 84.0),  # same subject, code and time: duplicate, kept
        (1, p - timedelta(hours=HOURS), "LOINC/8867-4", 60.0),  # exactly hours before: outside the window
        (1, p - timedelta(hours=HOURS) + timedelta(seconds=1), "LOINC/8310-5", 37.0),  # first minute
        (1, p + timedelta(seconds=1), "LOINC/8867-4", 90.0),  # after prediction time: dropped
        (1, p - timedelta(hours=1), "LOINC/8867-4", None),  # no value: dropped
        (1, p - timedelta(hours=2), "LOINC/8867-4", float("nan")),  # NaN: dropped as missing
        (1, p - timedelta(hours=3), "OTHER/1", 1.0),  # not a channel code
    ])
    write_shard(root / "data" / "held_out" / "0.parquet", [
        (2, p - timedelta(hours=5), "LOINC/8310-5", 38.5),
        (4, p - timedelta(hours=5), "LOINC/8310-5", 38.5),  # subject 4 has no label row
    ])
    write_shard(root / "labels" / "mortality.parquet", [
        (1, p, False),
        (2, p, True),
        (3, p, True),  # subject 3 has no event
    ], LABEL_SCHEMA)


def synthetic_cohort_root(root: Path, seed: int, n_subjects: int = 60) -> None:
    """Write a SYNTHETIC MEDS root of ``n_subjects`` subjects from a seeded RNG, a third positive, one label each."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(n_subjects, dtype=bool)
    labels[rng.permutation(n_subjects)[: n_subjects // 3]] = True
    events, label_rows = [], []
    for subject, label in enumerate(labels, start=1000):
        prediction = PREDICTION + timedelta(days=int(rng.integers(0, 400)))
        label_rows.append((subject, prediction, bool(label)))
        for code, mean in (("LOINC/8867-4", 85 + 10 * label), ("LOINC/8310-5", 37.0)):
            for minutes_before in rng.uniform(0, 30 * 60, size=rng.integers(5, 25)):
                events.append((subject, prediction - timedelta(minutes=float(minutes_before)), code,
                               float(rng.normal(mean, 2))))
    events.sort(key=lambda row: (row[0], row[1]))
    half = len(events) // 2
    while events[half][0] == events[half - 1][0]:  # a subject's events stay in one shard (MEDS rule)
        half += 1
    write_shard(root / "data" / "train" / "0.parquet", events[:half])
    write_shard(root / "data" / "train" / "1.parquet", events[half:])
    write_shard(root / "labels.parquet", label_rows, LABEL_SCHEMA)


def meds_config(root: Path, **changes) -> DataConfig:
    config = DataConfig(dataset="meds", dir=str(root), sets=(), labels_file="labels/mortality.parquet",
                        channels=CHANNELS, hours=HOURS)
    return dataclasses.replace(config, **changes)


@pytest.fixture
def hand(tmp_path: Path) -> Path:
    synthetic_hand_root(tmp_path)
    return tmp_path


def test_meds_registered():
    assert "meds" in reader_names()


def test_meds_window_ends_at_prediction_time(hand: Path):
    raw = read_cohort(meds_config(hand))
    last = HOURS * 60 - 1
    assert raw.observations.rows() == [
        (1, 0, "LOINC/8310-5", 37.0),
        (1, last - 30, "LOINC/8867-4", 82.0),
        (1, last - 30, "LOINC/8867-4", 84.0),
        (1, last, "LOINC/8867-4", 80.0),
        (2, last - 5 * 60, "LOINC/8310-5", 38.5),
    ]
    assert raw.outcomes.rows() == [(1, 0), (2, 1)]


def test_meds_counts_every_exclusion(hand: Path):
    counts = read_cohort(meds_config(hand)).counts
    assert counts["data_shards"] == 2
    assert counts["rows_read"] == 13
    assert counts["static_rows"] == 1
    assert counts["missing_values"] == 2
    assert counts["rows_after_prediction_time"] == 1
    assert counts["rows_before_window"] == 1
    assert counts["duplicate_time_rows"] == 1
    assert counts["stays_without_observations"] == 1
    assert counts["stays_without_observations_first_ids"] == [3]
    assert counts["record_id_from"] == "subject_id"
    assert counts["label_column"] == "boolean_value"


def test_meds_repeated_subject_uses_label_rows(hand: Path):
    p = PREDICTION
    write_shard(hand / "labels" / "mortality.parquet", [
        (1, p, False),
        (1, p - timedelta(hours=1), True),  # a second sample of subject 1, one hour earlier
        (2, p, True),
    ], LABEL_SCHEMA)
    raw = read_cohort(meds_config(hand))
    assert raw.counts["record_id_from"] == "label_row"
    assert raw.outcomes.rows() == [(0, 0), (1, 1), (2, 1)]
    # The second sample's window ends one hour earlier: the events at p - 30 min fall after it, and the
    # events 24 h before p (outside the first window) lie 23 h before its prediction time.
    second = raw.observations.filter(pl.col("record_id") == 1)
    assert second.select("minute", "parameter").rows() == [(59, "LOINC/8867-4"), (60, "LOINC/8310-5")]


def test_meds_integer_value_labels(tmp_path: Path):
    synthetic_hand_root(tmp_path)
    schema = pa.schema([("subject_id", pa.int64()), ("prediction_time", pa.timestamp("us")),
                        ("boolean_value", pa.bool_()), ("integer_value", pa.int64())])
    write_shard(tmp_path / "labels" / "mortality.parquet",
                [(1, PREDICTION, None, 0), (2, PREDICTION, None, 1)], schema)
    raw = read_cohort(meds_config(tmp_path))
    assert raw.counts["label_column"] == "integer_value"
    assert raw.outcomes.rows() == [(1, 0), (2, 1)]


def test_meds_folder_of_shards(tmp_path: Path):
    synthetic_hand_root(tmp_path / "root")
    flat = tmp_path / "flat"
    flat.mkdir()
    for index, shard in enumerate(sorted((tmp_path / "root" / "data").rglob("*.parquet"))):
        (flat / f"{index}.parquet").write_bytes(shard.read_bytes())
    (flat / "labels.parquet").write_bytes((tmp_path / "root" / "labels" / "mortality.parquet").read_bytes())
    raw = read_meds(flat, "labels.parquet", CHANNELS, HOURS)
    assert raw.counts["data_shards"] == 2
    assert raw.outcomes.rows() == [(1, 0), (2, 1)]


def test_meds_preprocess_end_to_end(tmp_path: Path):
    synthetic_cohort_root(tmp_path, SEED)
    cohort = preprocess_cohort(meds_config(tmp_path, labels_file="labels.parquet"), seed=SEED)
    assert cohort.channel_names == ["HR", "Temp"]
    for name in ("train", "val", "test"):
        split = cohort.split(name)
        assert split.x.shape[1:] == (HOURS, 2)
        assert set(split.y.tolist()) == {0, 1}
    assert len(cohort.train) + len(cohort.val) + len(cohort.test) == 60
    assert cohort.metadata["reader_counts"]["rows_before_window"] > 0


# Bad input


def test_meds_label_not_binary_raises(hand: Path):
    schema = pa.schema([("subject_id", pa.int64()), ("prediction_time", pa.timestamp("us")),
                        ("integer_value", pa.int64())])
    write_shard(hand / "labels" / "mortality.parquet", [(1, PREDICTION, 0), (2, PREDICTION, 2)], schema)
    pattern = r"mortality.parquet, row 1: label 2 in column 'integer_value' is not 0"
    with pytest.raises(TardiffInputError, match=pattern):
        read_cohort(meds_config(hand))


def test_meds_label_columns_missing_raise(hand: Path):
    schema = pa.schema([("subject_id", pa.int64()), ("prediction_time", pa.timestamp("us"))])
    write_shard(hand / "labels" / "mortality.parquet", [(1, PREDICTION)], schema)
    with pytest.raises(TardiffInputError, match=r"lacks column\(s\) \['integer_value'\].*boolean_value \(or integer"):
        read_cohort(meds_config(hand))


def test_meds_one_class_raises(hand: Path):
    write_shard(hand / "labels" / "mortality.parquet", [(1, PREDICTION, True), (2, PREDICTION, True)], LABEL_SCHEMA)
    with pytest.raises(TardiffInputError, match=r"one class only: label counts \{'0': 0, '1': 2\}"):
        read_cohort(meds_config(hand))


def test_meds_empty_label_file_raises(hand: Path):
    write_shard(hand / "labels" / "mortality.parquet", [], LABEL_SCHEMA)
    with pytest.raises(TardiffInputError, match=r"mortality.parquet contains no rows"):
        read_cohort(meds_config(hand))


def test_meds_missing_prediction_time_raises(hand: Path):
    write_shard(hand / "labels" / "mortality.parquet", [(1, None, True), (2, PREDICTION, False)], LABEL_SCHEMA)
    with pytest.raises(TardiffInputError, match=r"row 0: prediction_time is null"):
        read_cohort(meds_config(hand))


def test_meds_shard_missing_column_raises(hand: Path):
    schema = pa.schema([("subject_id", pa.int64()), ("time", pa.timestamp("us")), ("code", pa.string())])
    for shard in (hand / "data").rglob("*.parquet"):
        write_shard(shard, [(1, PREDICTION, "LOINC/8867-4")], schema)
    with pytest.raises(TardiffInputError, match=r"lacks column\(s\) \['numeric_value'\].*MEDS data schema"):
        read_cohort(meds_config(hand))


def test_meds_text_time_raises(hand: Path):
    schema = pa.schema([("subject_id", pa.int64()), ("time", pa.string()), ("code", pa.string()),
                        ("numeric_value", pa.float32())])
    for shard in (hand / "data").rglob("*.parquet"):
        write_shard(shard, [(1, "2150-03-01", "LOINC/8867-4", 1.0)], schema)
    with pytest.raises(TardiffInputError, match=r"time has type String .* needs a timestamp"):
        read_cohort(meds_config(hand))


def test_meds_infinite_value_raises(hand: Path):
    write_shard(hand / "data" / "held_out" / "0.parquet", [(2, PREDICTION, "LOINC/8310-5", float("inf"))])
    with pytest.raises(TardiffInputError, match=r"a row of 0.parquet: numeric_value inf of variable 'LOINC/8310-5'"):
        read_cohort(meds_config(hand))


def test_meds_empty_shards_raise(hand: Path):
    for shard in (hand / "data").rglob("*.parquet"):
        write_shard(shard, [])
    with pytest.raises(TardiffInputError, match=r"contain no rows"):
        read_cohort(meds_config(hand))


def test_meds_no_shards_raises(tmp_path: Path):
    write_shard(tmp_path / "labels" / "mortality.parquet", [(1, PREDICTION, True)], LABEL_SCHEMA)
    with pytest.raises(MissingDataError, match=r"no MEDS data shard \(\*.parquet\) found"):
        read_cohort(meds_config(tmp_path))


def test_meds_unknown_code_suggests_names(hand: Path):
    channel = ChannelSpec("HR", ("LOINC/8867-5",), "bpm", 1, 300)
    with pytest.raises(TardiffInputError, match=r"channel HR: none of its sources .*Closest .*'LOINC/8867-4'"):
        read_cohort(meds_config(hand, channels=(channel,)))
