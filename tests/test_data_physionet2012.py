"""Tests of the PhysioNet 2012 reader, the hourly cohort and the download command, on real records.

The ``physionet2012_dir`` fixture (tests/conftest.py) points at the real data. Most tests
read the first 300 stays of set a only. Small archives built in ``tmp_path``
from real members test the quirks of set c and the error paths.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tardiff.config import ChannelSpec, DataConfig, load_params
from tardiff.data.cohort import (
    build_hourly_grid,
    fill_missing,
    load_prepared,
    preprocess_physionet2012,
    save_prepared,
    split_stays,
)
from tardiff.data.download import DownloadError, build_parser, download_physionet2012, main
from tardiff.data.physionet2012 import read_physionet2012
from tardiff.errors import CorruptFileError, MissingDataError, TardiffInputError
from tardiff.io import save_npz

REPO = Path(__file__).resolve().parents[1]
SLICE = 300
SEED = 20250417
OFFICIAL_FILES = ("set-a.tar.gz", "set-b.tar.gz", "set-c.tar.gz", "Outcomes-a.txt", "Outcomes-b.txt", "Outcomes-c.txt")


@pytest.fixture(scope="module")
def data_config(physionet2012_dir: Path) -> DataConfig:
    """Return the params.yaml data section, pointed at the real data and cut to the first 300 stays of set a."""
    data = load_params(REPO / "params.yaml").data
    return dataclasses.replace(data, dir=str(physionet2012_dir), sets=("a",), max_stays=SLICE)


@pytest.fixture(scope="module")
def raw_slice(data_config: DataConfig):
    return read_physionet2012(Path(data_config.dir), ("a",), SLICE, True)


@pytest.fixture(scope="module")
def grid_slice(raw_slice, data_config: DataConfig):
    return build_hourly_grid(raw_slice.observations, data_config.channels, data_config.hours)


@pytest.fixture(scope="module")
def cohort(data_config: DataConfig):
    return preprocess_physionet2012(data_config, SEED)


def member_text(archive: Path, record_id: int) -> bytes:
    """Return the raw text of one record, streamed from a real archive."""
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            if member.name.endswith(f"/{record_id}.txt"):
                return tar.extractfile(member).read()
    raise AssertionError(f"record {record_id} not in {archive}")


def write_set(folder: Path, set_name: str, records: dict[int, bytes], labels: dict[int, int]) -> Path:
    """Write ``set-X.tar.gz`` (upstream naming) and ``Outcomes-X.txt`` into ``folder``; return the archive path."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / f"set-{set_name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for record_id, text in records.items():
            info = tarfile.TarInfo(f"set-{set_name}/{record_id}.txt")
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    rows = ["RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death"]
    rows += [f"{record_id},10,5,7,-1,{label}" for record_id, label in labels.items()]
    (folder / f"Outcomes-{set_name}.txt").write_text("\n".join(rows) + "\n")
    return archive


def parse_text(text: bytes) -> list[tuple[int, str, float]]:
    """Parse a record by hand into (minute, parameter, value) rows, without the six descriptor rows."""
    rows = []
    for line in text.decode().splitlines()[1:]:
        clock, parameter, value = line.split(",")
        hours, minutes = clock.split(":")
        rows.append((int(hours) * 60 + int(minutes), parameter, float(value)))
    descriptors = {"RecordID", "Age", "Gender", "Height", "ICUType", "Weight"}
    kept, seen = [], set()
    for minute, parameter, value in rows:
        if minute == 0 and parameter in descriptors and parameter not in seen:
            seen.add(parameter)
            continue
        kept.append((minute, parameter, value))
    return kept


def channel_index(config: DataConfig, name: str) -> int:
    return [channel.name for channel in config.channels].index(name)


# Reading


def test_read_slice_schema(raw_slice):
    assert raw_slice.observations.schema == pl.Schema(
        {"record_id": pl.Int64, "minute": pl.Int32, "parameter": pl.Utf8, "value": pl.Float64}
    )
    assert raw_slice.outcomes.schema == pl.Schema({"record_id": pl.Int64, "label": pl.Int8})
    assert raw_slice.outcomes.height == SLICE
    assert set(raw_slice.observations["record_id"].unique()) == set(raw_slice.outcomes["record_id"])


def test_read_slice_stops_after_first_archive(raw_slice):
    assert raw_slice.counts["archives_read"] == ["set-a.part1.tar.gz"]
    assert raw_slice.counts["records_read"] == SLICE
    assert "set-a.part1.tar.gz" in raw_slice.counts["files_verified"]


def test_read_record_matches_raw_text(raw_slice, physionet2012_dir: Path):
    expected = parse_text(member_text(physionet2012_dir / "set-a.part1.tar.gz", 132539))
    rows = raw_slice.observations.filter(pl.col("record_id") == 132539).select("minute", "parameter", "value")
    assert rows.rows() == expected
    assert len(expected) == 267  # 274 lines, less the header and 6 descriptors


def test_read_keeps_series_rows_at_minute_zero(raw_slice):
    # Record 132548 lists time-series rows at 00:00 between its descriptors (sorted by name).
    first = raw_slice.observations.filter((pl.col("record_id") == 132548) & (pl.col("minute") == 0))
    assert first.select("parameter", "value").rows() == [
        ("HR", 73.0),
        ("NIDiasABP", 88.0),
        ("NIMAP", 121.0),
        ("NISysABP", 187.0),
        ("RespRate", 14.0),
        ("Temp", 36.3),
    ]


def test_missing_marker_dropped(physionet2012_dir: Path, tmp_path: Path):
    text = member_text(physionet2012_dir / "set-c.part1.tar.gz", 153224)
    markers = [line for line in text.decode().splitlines() if line.endswith(",DiasABP,-1")]
    assert markers, "record 153224 is expected to contain a -1 DiasABP row"
    write_set(tmp_path, "c", {153224: text}, {153224: 0})

    raw = read_physionet2012(tmp_path, ("c",), None, True)

    assert raw.counts["missing_marker_rows"] == {"DiasABP": len(markers)}
    assert raw.observations.filter(pl.col("value") == -1).height == 0
    expected = [row for row in parse_text(text) if row[1] != "" and row[2] != -1]
    assert raw.observations.select("minute", "parameter", "value").rows() == expected


def test_empty_parameter_rows_dropped(physionet2012_dir: Path, tmp_path: Path):
    text = member_text(physionet2012_dir / "set-c.part1.tar.gz", 152871)
    empty = [line for line in text.decode().splitlines() if line.split(",")[1] == ""]
    assert len(empty) == 2
    write_set(tmp_path, "c", {152871: text}, {152871: 1})

    raw = read_physionet2012(tmp_path, ("c",), None, True)

    assert raw.counts["empty_parameter_rows"] == 2
    assert raw.observations["parameter"].null_count() == 0
    assert raw.outcomes.rows() == [(152871, 1)]


def test_record_without_series_excluded(physionet2012_dir: Path, tmp_path: Path):
    archive = physionet2012_dir / "set-a.part2.tar.gz"
    records = {record_id: member_text(archive, record_id) for record_id in (140501, 140502)}
    write_set(tmp_path, "a", records, {140501: 0, 140502: 1})

    raw = read_physionet2012(tmp_path, ("a",), None, True)

    assert raw.counts["records_without_time_series"] == 1
    assert raw.counts["records_without_time_series_ids"] == [140501]
    assert raw.outcomes["record_id"].to_list() == [140502]


def test_scientific_notation_parsed(tmp_path: Path):
    text = b"Time,Parameter,Value\n00:00,RecordID,1\n00:05,Urine,1.422e+04\n00:06,HR,80\n"
    write_set(tmp_path, "a", {1: text}, {1: 0})
    raw = read_physionet2012(tmp_path, ("a",), None, False)
    assert raw.observations.select("parameter", "value").rows() == [("Urine", 14220.0), ("HR", 80.0)]


# Hourly grid


def test_grid_hand_values_record_132539(grid_slice, data_config: DataConfig):
    values, mask, record_ids, _ = grid_slice
    row = int(np.searchsorted(record_ids, 132539))
    assert record_ids[row] == 132539
    # 00:07 HR 73 and 00:37 HR 77; Urine 900 and 60 mL; Temp 35.1 and 35.6.
    assert values[row, 0, channel_index(data_config, "HR")] == pytest.approx(75.0)
    assert values[row, 0, channel_index(data_config, "Urine")] == pytest.approx(960.0)
    assert values[row, 0, channel_index(data_config, "Temp")] == pytest.approx(35.35)
    assert values[row, 0, channel_index(data_config, "GCS")] == pytest.approx(15.0)
    # Non-invasive only: 00:07 NISysABP 147 and 00:37 157.
    assert values[row, 0, channel_index(data_config, "SBP")] == pytest.approx(152.0)
    assert not mask[row, 1, channel_index(data_config, "Temp")]
    assert np.isnan(values[row, 1, channel_index(data_config, "Temp")])
    assert values[row, 3, channel_index(data_config, "Temp")] == pytest.approx(37.8)


def test_grid_invasive_preferred(grid_slice, data_config: DataConfig):
    values, _, record_ids, counts = grid_slice
    row = int(np.searchsorted(record_ids, 132548))
    sbp = channel_index(data_config, "SBP")
    # Hour 1 has SysABP 205 and NISysABP 178, 77, 163, 172: the invasive value wins.
    assert values[row, 1, sbp] == pytest.approx(205.0)
    # Hour 0 has NISysABP 187 and 178 only.
    assert values[row, 0, sbp] == pytest.approx(182.5)
    assert counts["cells_from_secondary_source"]["SBP"] > 0


def test_grid_window_end_excluded(raw_slice, data_config: DataConfig):
    # Record 132577 has HR 96 at 47:00 and HR 88 at exactly 48:00.
    values, mask, record_ids, _ = build_hourly_grid(raw_slice.observations, data_config.channels, 48)
    row = int(np.searchsorted(record_ids, 132577))
    assert values.shape[1] == 48
    assert values[row, 47, channel_index(data_config, "HR")] == pytest.approx(96.0)


def test_grid_window_edges_synthetic():
    observations = pl.DataFrame(
        {
            "record_id": [7, 7, 7, 7],
            "minute": [0, 59, 60, 120],
            "parameter": ["HR", "HR", "HR", "HR"],
            "value": [60.0, 80.0, 100.0, 120.0],
        },
        schema={"record_id": pl.Int64, "minute": pl.Int32, "parameter": pl.Utf8, "value": pl.Float64},
    )
    channel = ChannelSpec("HR", ("HR",), "bpm", 1, 300)
    values, mask, _, counts = build_hourly_grid(observations, (channel,), 2)
    assert values[0, :, 0].tolist() == [70.0, 100.0]
    assert mask[0, :, 0].tolist() == [True, True]
    assert counts["observations_outside_window"] == 1


def test_grid_out_of_range_dropped():
    observations = pl.DataFrame(
        {
            "record_id": [1, 1, 1, 2],
            "minute": [5, 10, 15, 5],
            "parameter": ["SysABP", "SysABP", "NISysABP", "SysABP"],
            "value": [0.0, 400.0, 120.0, 0.0],
        },
        schema={"record_id": pl.Int64, "minute": pl.Int32, "parameter": pl.Utf8, "value": pl.Float64},
    )
    channel = ChannelSpec("SBP", ("SysABP", "NISysABP"), "mmHg", 1, 300)
    values, mask, record_ids, counts = build_hourly_grid(observations, (channel,), 1)
    # Both invasive values are out of range, so the cuff reading fills the hour.
    assert values[:, 0, 0].tolist() == [120.0]
    assert counts["out_of_range"] == {"SBP": 3}
    # Stay 2 has only an out-of-range value and is excluded.
    assert record_ids.tolist() == [1]
    assert counts["stays_without_selected_channels_ids"] == [2]


def test_grid_mask_matches_nan(grid_slice):
    values, mask, record_ids, counts = grid_slice
    assert values.dtype == np.float32
    assert mask.dtype == np.bool_
    assert record_ids.dtype == np.int64
    assert np.array_equal(mask, ~np.isnan(values))
    assert mask.any(axis=(1, 2)).all()
    assert counts["stays_kept"] + counts["stays_without_selected_channels"] == counts["stays_in"]


# Fill


def test_fill_forward_backward_median():
    nan = np.nan
    values = np.array([[[nan, nan], [5.0, nan], [nan, nan], [7.0, nan]]], dtype=np.float32)
    mask = ~np.isnan(values)
    filled = fill_missing(values, mask, np.array([1.5, 42.0]))
    assert filled[0, :, 0].tolist() == [5.0, 5.0, 5.0, 7.0]
    assert filled[0, :, 1].tolist() == [42.0] * 4
    assert filled.dtype == np.float32


def find_stay(cohort, record_id: int):
    """Return the split holding ``record_id`` and the stay's row in it."""
    for name in ("train", "val", "test"):
        split = cohort.split(name)
        rows = np.flatnonzero(split.record_id == record_id)
        if rows.size:
            return split, int(rows[0])
    raise AssertionError(f"record {record_id} is in no split")


def test_cohort_fill_matches_rule(cohort, grid_slice, data_config: DataConfig):
    _, grid_mask, record_ids, _ = grid_slice
    split, row = find_stay(cohort, 132539)
    clinical = split.clinical(cohort.normaliser)
    temp = channel_index(data_config, "Temp")
    # Temp is 35.35 in hour 0, unobserved in hours 1 and 2 and 37.8 in hour 3.
    assert clinical[row, :4, temp] == pytest.approx([35.35, 35.35, 35.35, 37.8], abs=1e-3)
    assert split.mask[row, :4, temp].tolist() == [True, False, False, True]
    assert np.array_equal(split.mask[row], grid_mask[int(np.searchsorted(record_ids, 132539))])


def test_cohort_never_observed_gets_train_median(cohort):
    medians = cohort.metadata["fill_medians"]
    for name in ("train", "val", "test"):
        split = cohort.split(name)
        clinical = split.clinical(cohort.normaliser)
        never = ~split.mask.any(axis=1)
        for c, channel in enumerate(cohort.channel_names):
            rows = np.flatnonzero(never[:, c])
            if rows.size:
                assert clinical[rows, :, c] == pytest.approx(medians[channel], abs=1e-3)


# Split


def test_split_sizes_disjoint_stratified(cohort):
    sizes = {name: len(cohort.split(name)) for name in ("train", "val", "test")}
    total = sum(sizes.values())
    ids = [set(cohort.split(name).record_id.tolist()) for name in ("train", "val", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sizes["val"] == pytest.approx(0.1 * total, abs=2)
    assert sizes["test"] == pytest.approx(0.1 * total, abs=2)
    positives = sum(int(cohort.split(name).y.sum()) for name in ("train", "val", "test"))
    for name in ("train", "val", "test"):
        split = cohort.split(name)
        assert set(split.y.tolist()) == {0, 1}
        assert int(split.y.sum()) == pytest.approx(positives * len(split) / total, abs=1.5)
        assert cohort.metadata["label_counts"][name] == {"0": int((split.y == 0).sum()), "1": int(split.y.sum())}


def test_split_deterministic_per_seed(cohort, data_config: DataConfig):
    again = preprocess_physionet2012(data_config, SEED)
    other = preprocess_physionet2012(data_config, SEED + 1)
    for name in ("train", "val", "test"):
        assert np.array_equal(cohort.split(name).record_id, again.split(name).record_id)
        assert np.array_equal(cohort.split(name).x, again.split(name).x)
    assert not np.array_equal(cohort.val.record_id, other.val.record_id)


def test_split_stays_rounding():
    labels = np.array([0] * 90 + [1] * 10)
    indices = split_stays(labels, (0.8, 0.1, 0.1), seed=3)
    assert [indices[name].size for name in ("train", "val", "test")] == [80, 10, 10]
    assert [int(labels[indices[name]].sum()) for name in ("train", "val", "test")] == [8, 1, 1]


def test_split_lacking_class_raises():
    labels = np.array([0] * 30 + [1] * 2)
    with pytest.raises(TardiffInputError, match="every split needs both classes"):
        split_stays(labels, (0.8, 0.1, 0.1), seed=0)


# Cohort outputs


def test_cohort_shapes_and_metadata(cohort, data_config: DataConfig):
    for name in ("train", "val", "test"):
        split = cohort.split(name)
        assert split.x.dtype == np.float32
        assert split.x.shape[1:] == (24, 7)
        assert np.isfinite(split.x).all()
        assert split.y.dtype == np.int64
        assert split.record_id.dtype == np.int64
        assert cohort.metadata["split_record_ids"][name] == split.record_id.tolist()
    metadata = cohort.metadata
    assert metadata["seed"] == SEED
    assert metadata["hours"] == 24
    assert [c["name"] for c in metadata["channels"]] == ["HR", "SBP", "DBP", "MAP", "Temp", "GCS", "Urine"]
    assert metadata["channels"][1]["sources"] == ["SysABP", "NISysABP"]
    assert metadata["normaliser"]["kind"] == data_config.normaliser
    assert "[0, hours * 60)" in metadata["window_rule"]
    assert set(metadata["observed_cell_share"]["train"]) == set(cohort.channel_names)
    json.dumps(metadata)


def test_save_load_roundtrip(cohort, tmp_path: Path):
    save_prepared(cohort, tmp_path)
    loaded = load_prepared(tmp_path)
    for name in ("train", "val", "test"):
        for field in ("x", "mask", "y", "record_id"):
            assert np.array_equal(getattr(loaded.split(name), field), getattr(cohort.split(name), field))
    assert loaded.metadata == json.loads(json.dumps(cohort.metadata))
    sample = cohort.val.x[:3]
    assert np.allclose(loaded.to_clinical(sample), cohort.to_clinical(sample))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort.npz", "metadata.json"]


def test_save_failure_keeps_previous_output(cohort, tmp_path: Path):
    save_prepared(cohort, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    broken = dataclasses.replace(cohort, metadata={**cohort.metadata, "bad": {1, 2}})
    with pytest.raises(TardiffInputError, match="JSON"):
        save_prepared(broken, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_atomic_npz_write_leaves_no_partial_file(tmp_path: Path):
    target = tmp_path / "cohort.npz"
    save_npz(target, a=np.arange(3))
    before = target.read_bytes()
    # An object array holding a lambda fails inside np.savez, after the file was opened.
    with pytest.raises(Exception):
        save_npz(target, a=np.arange(3), b=np.array([lambda: 0], dtype=object))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cohort.npz"]


def test_load_missing_names_stage(tmp_path: Path):
    with pytest.raises(MissingDataError, match="cohort.npz not found; run the preprocess stage"):
        load_prepared(tmp_path)


def test_load_rejects_nan_and_shape_mismatch(cohort, tmp_path: Path):
    save_prepared(cohort, tmp_path)
    arrays = dict(np.load(tmp_path / "cohort.npz"))
    arrays["val_x"][0, 0, 0] = np.nan
    save_npz(tmp_path / "cohort.npz", **arrays)
    with pytest.raises(CorruptFileError, match="val_x contains 1 NaN"):
        load_prepared(tmp_path)

    arrays["val_x"] = arrays["val_x"][:, :12]
    save_npz(tmp_path / "cohort.npz", **arrays)
    with pytest.raises(CorruptFileError, match=r"val_x has shape \(\d+, 12, 7\)"):
        load_prepared(tmp_path)


def test_load_rejects_membership_mismatch(cohort, tmp_path: Path):
    save_prepared(cohort, tmp_path)
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    metadata["split_record_ids"]["test"] = metadata["split_record_ids"]["test"][::-1]
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(CorruptFileError, match="test_record_id differs"):
        load_prepared(tmp_path)


# Errors


def test_missing_dir_names_files_and_command(tmp_path: Path):
    with pytest.raises(MissingDataError) as info:
        read_physionet2012(tmp_path / "absent", ("a", "b", "c"), None, True)
    message = str(info.value)
    for name in OFFICIAL_FILES:
        assert name in message
    assert "python -m tardiff.data.download --dest DIR" in message
    assert "https://physionet.org/content/challenge-2012/1.0.0/" in message


def test_missing_files_listed(physionet2012_dir: Path, tmp_path: Path):
    shutil.copy(physionet2012_dir / "Outcomes-a.txt", tmp_path)
    with pytest.raises(MissingDataError, match=r"set-a\.tar\.gz, set-b\.tar\.gz, Outcomes-b\.txt not found"):
        read_physionet2012(tmp_path, ("a", "b"), None, True)


def test_truncated_archive_raises(physionet2012_dir: Path, tmp_path: Path):
    shutil.copy(physionet2012_dir / "Outcomes-a.txt", tmp_path)
    (tmp_path / "set-a.part1.tar.gz").write_bytes((physionet2012_dir / "set-a.part1.tar.gz").read_bytes()[:100_000])
    with pytest.raises(CorruptFileError, match=r"set-a\.part1\.tar\.gz is corrupt or truncated"):
        read_physionet2012(tmp_path, ("a",), SLICE, True)


def test_checksum_mismatch_names_hashes(physionet2012_dir: Path, tmp_path: Path):
    for name in ("Outcomes-a.txt", "SHA256SUMS"):
        shutil.copy(physionet2012_dir / name, tmp_path)
    truncated = (physionet2012_dir / "set-a.part1.tar.gz").read_bytes()[:100_000]
    (tmp_path / "set-a.part1.tar.gz").write_bytes(truncated)
    expected = next(
        line.split()[0]
        for line in (physionet2012_dir / "SHA256SUMS").read_text().splitlines()
        if line.endswith("set-a.part1.tar.gz")
    )
    with pytest.raises(CorruptFileError) as info:
        read_physionet2012(tmp_path, ("a",), SLICE, True)
    message = str(info.value)
    assert "set-a.part1.tar.gz" in message
    assert expected in message
    assert hashlib.sha256(truncated).hexdigest() in message


@pytest.mark.parametrize(
    ("old", "new", "line", "reason"),
    [
        (b"00:37,HR,77", b"00:3x,HR,77", 16, "invalid time '00:3x'"),
        (b"00:37,HR,77", b"00:37,HR,seventy", 16, "non-numeric or non-finite value 'seventy'"),
        (b"00:37,HR,77", b"00:37,HR,77,1", 16, "4 comma-separated fields"),
        (b"Time,Parameter,Value", b"Time;Parameter;Value", 1, "expected 'Time,Parameter,Value'"),
    ],
)
def test_malformed_record_names_location(physionet2012_dir: Path, tmp_path: Path, old, new, line, reason):
    archive_in = physionet2012_dir / "set-a.part1.tar.gz"
    good = member_text(archive_in, 132540)
    text = member_text(archive_in, 132539)
    assert text.splitlines()[line - 1] == old
    archive = write_set(tmp_path, "a", {132539: text.replace(old, new, 1), 132540: good}, {132539: 0, 132540: 0})
    with pytest.raises(TardiffInputError) as info:
        read_physionet2012(tmp_path, ("a",), None, False)
    message = str(info.value)
    assert str(archive) in message
    assert "member set-a/132539.txt" in message
    assert f"line {line}:" in message
    assert reason in message
    assert "fix" in message


def test_record_id_mismatch_raises(physionet2012_dir: Path, tmp_path: Path):
    text = member_text(physionet2012_dir / "set-a.part1.tar.gz", 132539)
    write_set(tmp_path, "a", {132540: text}, {132540: 0})
    with pytest.raises(TardiffInputError, match="member set-a/132540.txt contains RecordID 132539"):
        read_physionet2012(tmp_path, ("a",), None, False)


def test_record_without_outcome_raises(physionet2012_dir: Path, tmp_path: Path):
    text = member_text(physionet2012_dir / "set-a.part1.tar.gz", 132539)
    write_set(tmp_path, "a", {132539: text}, {132540: 0})
    with pytest.raises(TardiffInputError, match="record 132539 .* has no row in Outcomes-a.txt"):
        read_physionet2012(tmp_path, ("a",), None, False)


def test_outcome_without_record_raises(physionet2012_dir: Path, tmp_path: Path):
    text = member_text(physionet2012_dir / "set-a.part1.tar.gz", 132539)
    write_set(tmp_path, "a", {132539: text}, {132539: 0, 132540: 1})
    with pytest.raises(TardiffInputError, match=r"1 stay\(s\) of Outcomes-a.txt have no record.*132540"):
        read_physionet2012(tmp_path, ("a",), None, False)


def test_invalid_label_raises(physionet2012_dir: Path, tmp_path: Path):
    text = member_text(physionet2012_dir / "set-a.part1.tar.gz", 132539)
    write_set(tmp_path, "a", {132539: text}, {132539: 2})
    expected = r"Outcomes-a.txt, line 2: RecordID '132539' with In-hospital_death '2'"
    with pytest.raises(TardiffInputError, match=expected):
        read_physionet2012(tmp_path, ("a",), None, False)


def test_one_class_cohort_raises(data_config: DataConfig):
    # The first five stays of set a all survived.
    config = dataclasses.replace(data_config, max_stays=5)
    with pytest.raises(TardiffInputError) as info:
        preprocess_physionet2012(config, SEED)
    message = str(info.value)
    assert "one class only" in message
    assert "{'0': 5, '1': 0}" in message
    assert data_config.dir in message
    assert "data.max_stays" in message


def test_empty_cohort_raises(data_config: DataConfig):
    # Heart rate exists in every stay, but no value lies in this range, so no stay keeps an observation.
    impossible = ChannelSpec("HR", ("HR",), "bpm", 1000, 2000)
    config = dataclasses.replace(data_config, max_stays=20, channels=(impossible,))
    with pytest.raises(TardiffInputError) as info:
        preprocess_physionet2012(config, SEED)
    message = str(info.value)
    assert "is empty" in message
    assert "20 stay(s) read" in message
    assert "['HR']" in message
    assert data_config.dir in message


# Download command (no network: a file:// mirror and a closed local port)


def make_mirror(physionet2012_dir: Path, folder: Path, wrong_hash: bool = False) -> Path:
    text = member_text(physionet2012_dir / "set-a.part1.tar.gz", 132539)
    archive = write_set(folder, "a", {132539: text}, {132539: 0})
    lines = []
    for path in (archive, folder / "Outcomes-a.txt"):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{'0' * 64 if wrong_hash and path == archive else digest}  {path.name}")
    (folder / "SHA256SUMS.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_download_parser_defaults():
    args = build_parser().parse_args(["--dest", "data"])
    assert args.dest == Path("data")
    assert args.sets == ["a", "b", "c"]
    assert build_parser().parse_args(["--dest", "d", "--sets", "c", "a"]).sets == ["c", "a"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--dest", "d", "--sets", "x"])
    with pytest.raises(SystemExit):
        build_parser().parse_args([])


def test_download_from_local_mirror(physionet2012_dir: Path, tmp_path: Path):
    mirror = make_mirror(physionet2012_dir, tmp_path / "mirror")
    dest = tmp_path / "dest"
    paths = download_physionet2012(dest, ("a",), base_url=mirror.as_uri())
    assert [p.name for p in paths] == ["set-a.tar.gz", "Outcomes-a.txt"]
    for path in paths:
        assert path.read_bytes() == (mirror / path.name).read_bytes()
    raw = read_physionet2012(dest, ("a",), None, True)
    assert raw.counts["files_verified"] == ["Outcomes-a.txt", "set-a.tar.gz"]
    assert raw.outcomes["record_id"].to_list() == [132539]


def test_download_checksum_mismatch_leaves_nothing(physionet2012_dir: Path, tmp_path: Path):
    mirror = make_mirror(physionet2012_dir, tmp_path / "mirror", wrong_hash=True)
    dest = tmp_path / "dest"
    with pytest.raises(CorruptFileError, match=f"checksum mismatch for .*set-a.tar.gz: expected sha256 {'0' * 64}"):
        download_physionet2012(dest, ("a",), base_url=mirror.as_uri())
    assert sorted(p.name for p in dest.iterdir()) == ["SHA256SUMS.txt"]


def test_download_without_network(tmp_path: Path):
    with pytest.raises(DownloadError, match="check the network connection"):
        download_physionet2012(tmp_path, ("a",), base_url="http://127.0.0.1:9/", timeout_s=5)
    assert main(["--dest", str(tmp_path), "--sets", "a", "--base-url", "http://127.0.0.1:9/", "--timeout", "5"]) == 1


def test_missing_checksum_file_is_reported(physionet2012_dir: Path, tmp_path: Path, caplog):
    for name in ("Outcomes-a.txt", "set-a.part1.tar.gz", "set-a.part2.tar.gz"):
        (tmp_path / name).symlink_to(physionet2012_dir / name)
    with caplog.at_level(logging.WARNING, logger="tardiff.data.checksums"):
        raw = read_physionet2012(tmp_path, ("a",), SLICE, True)
    assert "without checksum verification" in caplog.text
    assert f"{tmp_path}/SHA256SUMS" in caplog.text
    assert "set-a.part1.tar.gz" in raw.counts["files_unverified"]
    assert raw.counts["files_verified"] == []
