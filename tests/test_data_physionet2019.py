"""Tests of the PhysioNet 2019 sepsis reader on the real training set B.

Most tests read the first chunk only (2,500 stays, via ``max_stays``) and compare the
reader with a plain-Python parse of the same members. Small archives written to
``tmp_path`` from real members test the rules at their edges and every malformed input.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tardiff.config import ChannelSpec, load_params
from tardiff.data.cohort import build_hourly_grid
from tardiff.data.physionet2019 import COLUMNS, VARIABLES, read_physionet2019
from tardiff.data.sources import read_cohort
from tardiff.errors import CorruptFileError, MissingDataError, TardiffInputError

REPO = Path(__file__).resolve().parents[1]
PART1 = "training_setB.part1.tar.gz"
CHUNK = 2500
HOURS = 24


@pytest.fixture(scope="module")
def p19_dir(data_root: Path) -> Path:
    return data_root / "physionet2019"


@pytest.fixture(scope="module")
def members(p19_dir: Path) -> dict[int, bytes]:
    """Return record id -> text of every member of the first chunk, in archive order."""
    texts = {}
    with tarfile.open(p19_dir / PART1, "r|gz") as tar:
        for member in tar:
            if member.isfile():
                texts[int(Path(member.name).stem[1:])] = tar.extractfile(member).read()
    return texts


@pytest.fixture(scope="module")
def parsed(members: dict[int, bytes]) -> dict[int, list[dict[str, float | None]]]:
    """Parse each member by hand into rows of column -> value (None for NaN)."""
    return {record_id: parse_psv(text) for record_id, text in members.items()}


@pytest.fixture(scope="module")
def raw_chunk(p19_dir: Path):
    return read_physionet2019(p19_dir, HOURS, CHUNK, 0.0, False, True)


def parse_psv(text: bytes) -> list[dict[str, float | None]]:
    lines = text.decode().splitlines()
    assert lines[0].split("|") == list(COLUMNS)
    rows = []
    for line in lines[1:]:
        pairs = zip(COLUMNS, line.split("|"), strict=True)
        rows.append({column: None if value == "NaN" else float(value) for column, value in pairs})
    return rows


def write_archive(folder: Path, texts: dict[int, bytes], name: str = "training_setB.tar.gz") -> Path:
    """Write ``texts`` as members ``training_setB/p<id>.psv`` of a new archive in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / name
    with tarfile.open(archive, "w:gz") as tar:
        for record_id, text in texts.items():
            info = tarfile.TarInfo(f"training_setB/p{record_id:06d}.psv")
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    return archive


def first_stay(parsed, condition) -> int:
    return next(record_id for record_id, rows in parsed.items() if condition(rows))


# Reading


def test_max_stays_reads_first_chunk_only(raw_chunk, members):
    assert raw_chunk.counts["archives_read"] == [PART1]
    assert raw_chunk.counts["records_read"] == CHUNK
    assert raw_chunk.counts["stays_read"] == CHUNK
    assert raw_chunk.counts["rows_read"] == sum(text.count(b"\n") - 1 for text in members.values())


def test_max_stays_keeps_lowest_ids(p19_dir: Path, members):
    raw = read_physionet2019(p19_dir, HOURS, 40, 0.0, False, False)
    assert raw.outcomes["record_id"].to_list() == sorted(members)[:40]
    assert raw.counts["stays_read"] == 40
    assert raw.counts["archives_read"] == [PART1]


def test_checksum_verified(raw_chunk):
    assert raw_chunk.counts["files_verified"] == [PART1]
    assert raw_chunk.counts["files_unverified"] == []


def test_checksum_mismatch_names_digests(p19_dir: Path, members, tmp_path: Path):
    shutil.copy(p19_dir / "SHA256SUMS", tmp_path)
    archive = write_archive(tmp_path, dict(list(members.items())[:3]), PART1)
    expected = next(
        line.split()[0] for line in (p19_dir / "SHA256SUMS").read_text().splitlines() if line.endswith(PART1)
    )
    with pytest.raises(CorruptFileError) as info:
        read_physionet2019(tmp_path, HOURS, None, 0.0, False, True)
    message = str(info.value)
    assert PART1 in message
    assert expected in message
    assert hashlib.sha256(archive.read_bytes()).hexdigest() in message


def test_schema_and_contract(raw_chunk):
    assert raw_chunk.observations.schema == pl.Schema(
        {"record_id": pl.Int64, "minute": pl.Int32, "parameter": pl.Utf8, "value": pl.Float64}
    )
    assert raw_chunk.outcomes.schema == pl.Schema({"record_id": pl.Int64, "label": pl.Int8})
    assert set(raw_chunk.observations["parameter"].unique()) <= set(VARIABLES)
    assert set(raw_chunk.observations["record_id"].unique()) == set(raw_chunk.outcomes["record_id"])


def test_observations_match_hand_parse(raw_chunk, parsed):
    for record_id in list(parsed)[:25]:
        expected = sorted(
            ((int(row["ICULOS"]) - 1) * 60, name, row[name])
            for row in parsed[record_id]
            for name in VARIABLES
            if row[name] is not None
        )
        rows = raw_chunk.observations.filter(pl.col("record_id") == record_id).select("minute", "parameter", "value")
        assert sorted(rows.rows()) == expected, record_id


def test_sepsis_label_is_any_positive(raw_chunk, parsed):
    labels = dict(raw_chunk.outcomes.iter_rows())
    expected = {record_id: int(any(row["SepsisLabel"] == 1 for row in rows)) for record_id, rows in parsed.items()}
    assert labels == {record_id: label for record_id, label in expected.items() if record_id in labels}
    assert 0 < sum(labels.values()) < len(labels)
    assert raw_chunk.counts["positive_stays"] == sum(labels.values())


def test_first_row_after_hour_one_keeps_time(raw_chunk, parsed):
    record_id = first_stay(parsed, lambda rows: rows[0]["ICULOS"] > 1 and rows[0]["HR"] is not None)
    first_hour = int(parsed[record_id][0]["ICULOS"])
    stay = raw_chunk.observations.filter(pl.col("record_id") == record_id)
    assert stay["minute"].min() == (first_hour - 1) * 60
    assert raw_chunk.counts["records_first_row_after_hour_1"] == sum(
        rows[0]["ICULOS"] > 1 for rows in parsed.values()
    )

    channel = ChannelSpec("HR", ("HR",), "bpm", 1, 300)
    values, mask, record_ids, _ = build_hourly_grid(stay, (channel,), HOURS)
    assert record_ids.tolist() == [record_id]
    # ICU hour k lands in grid hour k - 1; the hours before the first row stay unobserved.
    assert not mask[0, : first_hour - 1, 0].any()
    assert values[0, first_hour - 1, 0] == pytest.approx(parsed[record_id][0]["HR"])


def test_exclude_positive_in_window_exact(p19_dir: Path, raw_chunk, parsed):
    raw = read_physionet2019(p19_dir, HOURS, CHUNK, 0.0, True, False)
    kept = set(raw_chunk.outcomes["record_id"])
    positive_in_window = {
        record_id
        for record_id, rows in parsed.items()
        if any(row["SepsisLabel"] == 1 and row["ICULOS"] <= HOURS for row in rows) and record_id in kept
    }
    assert positive_in_window
    assert kept - set(raw.outcomes["record_id"]) == positive_in_window
    assert raw.counts["stays_excluded_positive_in_window"] == len(positive_in_window)
    # Stays that turn positive only after the window stay in, as positives.
    assert raw.outcomes["label"].sum() > 0


def test_exclude_positive_depends_on_window(p19_dir: Path, parsed):
    raw = read_physionet2019(p19_dir, 6, CHUNK, 0.0, True, False)
    expected = sum(any(row["SepsisLabel"] == 1 and row["ICULOS"] <= 6 for row in rows) for rows in parsed.values())
    assert raw.counts["stays_positive_in_window"] == expected


def test_min_stay_hours_counts(p19_dir: Path, parsed):
    raw = read_physionet2019(p19_dir, HOURS, CHUNK, 24, False, False)
    last_hour = {record_id: max(row["ICULOS"] for row in rows) for record_id, rows in parsed.items()}
    short = {record_id for record_id, hours in last_hour.items() if hours < 24}
    assert short
    assert raw.counts["stays_shorter_than_min_stay_hours"] == len(short)
    assert not short & set(raw.outcomes["record_id"])
    exactly_24 = {record_id for record_id, hours in last_hour.items() if hours == 24}
    assert exactly_24
    assert exactly_24 <= set(raw.outcomes["record_id"])


def test_short_stay_hours_after_discharge_unobserved(raw_chunk, parsed):
    record_id = first_stay(parsed, lambda rows: max(row["ICULOS"] for row in rows) < 12)
    last_hour = int(max(row["ICULOS"] for row in parsed[record_id]))
    stay = raw_chunk.observations.filter(pl.col("record_id") == record_id)
    channel = ChannelSpec("HR", ("HR",), "bpm", 1, 300)
    _, mask, _, _ = build_hourly_grid(stay, (channel,), HOURS)
    assert not mask[0, last_hour:, 0].any()


def test_stay_without_observations_excluded(members, tmp_path: Path):
    record_id, text = next(iter(members.items()))
    header, *lines = text.decode().splitlines()
    empty = "|".join(["NaN"] * len(VARIABLES))
    blank = [empty + "|" + "|".join(line.split("|")[len(VARIABLES):]) for line in lines]
    write_archive(tmp_path, {record_id: text, 100999: ("\n".join([header, *blank]) + "\n").encode()})

    raw = read_physionet2019(tmp_path, HOURS, None, 0.0, False, False)

    assert raw.counts["stays_without_observations_ids"] == [100999]
    assert raw.outcomes["record_id"].to_list() == [record_id]


def test_header_only_file_excluded(members, tmp_path: Path):
    record_id, text = next(iter(members.items()))
    header = text.split(b"\n", 1)[0] + b"\n"
    write_archive(tmp_path, {record_id: text, 100999: header})

    raw = read_physionet2019(tmp_path, HOURS, None, 0.0, False, False)

    assert raw.counts["stays_read"] == 2
    assert raw.counts["records_without_rows_ids"] == [100999]
    assert raw.outcomes["record_id"].to_list() == [record_id]


def test_registered_reader_uses_cohort_params(p19_dir: Path):
    data = load_params(REPO / "params.yaml", cohort="physionet2019_sepsis").data
    data = dataclasses.replace(data, dir=str(p19_dir), max_stays=300)
    raw = read_cohort(data)
    assert raw.counts["min_stay_hours"] == 24
    assert raw.counts["exclude_positive_in_window"] is True
    excluded = sum(
        raw.counts[key]
        for key in (
            "records_without_rows",
            "stays_shorter_than_min_stay_hours",
            "stays_excluded_positive_in_window",
            "stays_without_observations",
        )
    )
    assert raw.counts["stays_read"] == 300
    assert raw.outcomes.height == 300 - excluded

    with pytest.raises(TardiffInputError, match="data.task is 'mortality'"):
        read_cohort(dataclasses.replace(data, task="mortality"))


# Malformed input


def replace_line(text: bytes, line_number: int, old: bytes, new: bytes) -> bytes:
    lines = text.split(b"\n")
    assert old in lines[line_number - 1]
    lines[line_number - 1] = lines[line_number - 1].replace(old, new, 1)
    return b"\n".join(lines)


def set_field(text: bytes, line_number: int, column: str, value: str) -> bytes:
    lines = text.decode().split("\n")
    fields = lines[line_number - 1].split("|")
    fields[COLUMNS.index(column)] = value
    lines[line_number - 1] = "|".join(fields)
    return "\n".join(lines).encode()


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda t: replace_line(t, 1, b"HR|O2Sat", b"HR|SpO2"), r"line 1: header starts 'HR\|SpO2"),
        (lambda t: set_field(t, 3, "HR", "ninety"), r"line 3: HR is 'ninety', not a number or NaN"),
        (lambda t: set_field(t, 4, "Temp", "37,2"), r"line 4: Temp is '37,2', not a number or NaN"),
        (lambda t: replace_line(t, 3, b"|", b"||"), r"line 3: 42 pipe-separated fields instead of 41"),
        (lambda t: set_field(t, 3, "ICULOS", "-2"), r"line 3: ICULOS is -2.0"),
        (lambda t: set_field(t, 2, "ICULOS", "0"), r"line 2: ICULOS is 0.0"),
        (lambda t: set_field(t, 3, "ICULOS", "2.5"), r"line 3: ICULOS is 2.5"),
        (lambda t: set_field(t, 3, "ICULOS", "NaN"), r"line 3: ICULOS is NaN"),
        (lambda t: set_field(t, 4, "ICULOS", "2"), r"line 3: ICULOS hour 2 appears on lines \[3, 4\]"),
        (lambda t: set_field(t, 3, "SepsisLabel", "2"), r"line 3: SepsisLabel is 2.0"),
        (lambda t: set_field(t, 5, "MAP", "inf"), r"line 5: MAP is inf"),
    ],
)
def test_malformed_member_names_location(members, tmp_path: Path, corrupt, message):
    ids = list(members)[:3]
    texts = {record_id: members[record_id] for record_id in ids}
    assert parse_psv(texts[ids[1]])[2]["ICULOS"] == 3
    texts[ids[1]] = corrupt(texts[ids[1]])
    write_archive(tmp_path, texts)

    with pytest.raises(TardiffInputError, match=message) as info:
        read_physionet2019(tmp_path, HOURS, None, 0.0, False, False)
    assert f"member training_setB/p{ids[1]:06d}.psv" in str(info.value)
    assert "training_setB.tar.gz" in str(info.value)


def test_truncated_archive_raises(p19_dir: Path, tmp_path: Path):
    (tmp_path / PART1).write_bytes((p19_dir / PART1).read_bytes()[:200_000])
    with pytest.raises(CorruptFileError, match=r"training_setB\.part1\.tar\.gz is corrupt or truncated"):
        read_physionet2019(tmp_path, HOURS, None, 0.0, False, False)


def test_duplicate_record_across_archives(members, tmp_path: Path):
    record_id, text = next(iter(members.items()))
    write_archive(tmp_path, {record_id: text}, "training_setB.part1.tar.gz")
    write_archive(tmp_path, {record_id: text}, "training_setB.part2.tar.gz")
    with pytest.raises(TardiffInputError, match=f"record {record_id} appears twice"):
        read_physionet2019(tmp_path, HOURS, None, 0.0, False, False)


def test_missing_archives_raise(tmp_path: Path):
    with pytest.raises(MissingDataError, match="no training_setX.tar.gz"):
        read_physionet2019(tmp_path, HOURS, None, 0.0, False, False)
    with pytest.raises(MissingDataError, match="not found"):
        read_physionet2019(tmp_path / "absent", HOURS, None, 0.0, False, False)


def test_chunks_preferred_over_whole_archive(members, tmp_path: Path):
    ids = list(members)[:2]
    write_archive(tmp_path, {ids[0]: members[ids[0]]}, "training_setB.part1.tar.gz")
    write_archive(tmp_path, {ids[1]: members[ids[1]]}, "training_setB.tar.gz")
    raw = read_physionet2019(tmp_path, HOURS, None, 0.0, False, False)
    assert raw.counts["archives_read"] == ["training_setB.part1.tar.gz"]
    assert raw.outcomes["record_id"].to_list() == [ids[0]]


def test_invalid_arguments_raise(p19_dir: Path):
    with pytest.raises(TardiffInputError, match="data.max_stays is 0"):
        read_physionet2019(p19_dir, HOURS, 0, 0.0, False, False)
    with pytest.raises(TardiffInputError, match="data.hours is 0"):
        read_physionet2019(p19_dir, 0, 10, 0.0, False, False)


def test_grid_places_every_row_at_its_hour(raw_chunk, parsed):
    channel = ChannelSpec("HR", ("HR",), "bpm", 1, 300)
    ids = list(parsed)[:50]
    stays = raw_chunk.observations.filter(pl.col("record_id").is_in(ids))
    values, _, record_ids, _ = build_hourly_grid(stays, (channel,), HOURS)
    for row, record_id in enumerate(record_ids):
        expected = np.full(HOURS, np.nan)
        for hour_row in parsed[int(record_id)]:
            if hour_row["ICULOS"] <= HOURS and hour_row["HR"] is not None:
                expected[int(hour_row["ICULOS"]) - 1] = hour_row["HR"]
        np.testing.assert_allclose(values[row, :, 0], expected, equal_nan=True)


def test_lowercase_nan_is_missing(members, tmp_path: Path):
    record_id, text = next(iter(members.items()))
    line = next(number for number, row in enumerate(parse_psv(text), start=2) if row["HR"] is not None)
    write_archive(tmp_path / "original", {record_id: text})
    write_archive(tmp_path / "edited", {record_id: set_field(text, line, "HR", "nan")})

    original = read_physionet2019(tmp_path / "original", HOURS, None, 0.0, False, False)
    edited = read_physionet2019(tmp_path / "edited", HOURS, None, 0.0, False, False)

    assert edited.observations.height == original.observations.height - 1
    assert edited.counts["missing_values"] == original.counts["missing_values"] + 1
    assert not edited.observations["value"].is_nan().any()
