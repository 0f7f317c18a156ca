"""Read the raw PhysioNet/CinC Challenge 2012 records straight from their ``tar.gz`` archives.

Each record is a CSV member ``set-a/132539.txt`` with header ``Time,Parameter,Value``.
``Time`` is ``HH:MM`` since ICU admission. The first occurrence at 00:00 of ``RecordID``,
``Age``, ``Gender``, ``Height``, ``ICUType`` and ``Weight`` is a descriptor, and every other
row is an observation of a time-series variable. Archives are streamed member by member.
The member texts of one archive are joined, each line prefixed with its record id, and
parsed by a single ``polars.read_csv`` call.
"""

from __future__ import annotations

import gzip
import logging
import re
import tarfile
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from tardiff.data.checksums import read_checksums, verify_if_listed, warn_no_checksums
from tardiff.data.sources import RawCohort, register_reader
from tardiff.errors import CorruptFileError, MissingDataError, TardiffInputError

if TYPE_CHECKING:
    from tardiff.config import DataConfig

logger = logging.getLogger(__name__)

SETS = ("a", "b", "c")
DESCRIPTORS = ("RecordID", "Age", "Gender", "Height", "ICUType", "Weight")
HEADER = b"Time,Parameter,Value"
# Inside the time series, -1 marks a value that was not recorded (224 DiasABP and
# NIDiasABP rows of set c), as it does in the descriptors.
MISSING_MARKER = -1.0
UPSTREAM_PAGE = "https://physionet.org/content/challenge-2012/1.0.0/"
DOWNLOAD_COMMAND = "python -m tardiff.data.download --dest DIR"
REDOWNLOAD_HINT = (
    f"delete it and download it again with `{DOWNLOAD_COMMAND}`; for a chunk set-X.partN.tar.gz, delete "
    "every set-X.part*.tar.gz, because the reader prefers chunks to the whole set-X.tar.gz that the "
    "download writes"
)

_TIME_PATTERN = r"^(\d+):([0-5]\d)$"
_TIME_REGEX = re.compile(_TIME_PATTERN)
_NUMBER_REGEX = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_PART_REGEX = re.compile(r"^set-([a-z])\.part(\d+)\.tar\.gz$")
_RECORD_MEMBER_REGEX = re.compile(r"(?:^|/)(\d+)\.txt$")


# Observations without the descriptor rows; labels from ``In-hospital_death``.
RawPhysionet2012 = RawCohort


def missing_data_message(data_dir: Path, missing: list[str] | None) -> str:
    """Build the error message for absent raw files, naming the official files and the download command.

    ``missing`` lists the absent file names, or is None when ``data_dir`` itself is absent.
    """
    official = ", ".join([f"set-{s}.tar.gz" for s in SETS] + [f"Outcomes-{s}.txt" for s in SETS])
    if missing is None:
        problem = f"PhysioNet 2012 data directory {data_dir} not found."
    else:
        problem = f"PhysioNet 2012 files missing from {data_dir}: {', '.join(missing)} not found."
    return (
        f"{problem} "
        f"The pipeline needs the official files {official} from {UPSTREAM_PAGE} "
        f"(or their chunked copies set-X.partN.tar.gz). Download them with "
        f"`{DOWNLOAD_COMMAND}` and point data.dir in params.yaml at DIR."
    )


def find_archives(data_dir: Path, set_name: str) -> list[Path]:
    """Return the record archives of one set: chunks ``set-a.partN.tar.gz`` in part order, else ``set-a.tar.gz``."""
    parts = []
    for path in data_dir.glob(f"set-{set_name}.part*.tar.gz"):
        match = _PART_REGEX.match(path.name)
        if match and match.group(1) == set_name:
            parts.append((int(match.group(2)), path))
    whole = data_dir / f"set-{set_name}.tar.gz"
    if parts:
        if whole.exists():
            logger.warning("using the chunks of set %s in %s and ignoring %s", set_name, data_dir, whole.name)
        return [path for _, path in sorted(parts)]
    return [whole] if whole.is_file() else []


def read_outcomes(path: Path) -> pl.DataFrame:
    """Read an ``Outcomes-X.txt`` file into record_id (Int64) and label (Int8, from ``In-hospital_death``)."""
    try:
        raw = pl.read_csv(path, infer_schema_length=0)
    except pl.exceptions.PolarsError as exc:
        raise CorruptFileError(
            f"outcome file {path} cannot be parsed as CSV ({exc}); re-download it with `{DOWNLOAD_COMMAND}`"
        ) from exc
    missing = [name for name in ("RecordID", "In-hospital_death") if name not in raw.columns]
    if missing:
        raise TardiffInputError(
            f"outcome file {path} lacks column(s) {missing} (header: {raw.columns}); expected the header "
            f"RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death of the official file"
        )
    frame = raw.select(
        pl.col("RecordID").str.strip_chars().cast(pl.Int64, strict=False).alias("record_id"),
        pl.col("In-hospital_death").str.strip_chars().cast(pl.Int8, strict=False).alias("label"),
        pl.col("RecordID").alias("record_text"),
        pl.col("In-hospital_death").alias("label_text"),
    ).with_row_index("row")
    bad = frame.filter(pl.col("record_id").is_null() | pl.col("label").is_null() | ~pl.col("label").is_in([0, 1]))
    if bad.height:
        first = bad.row(0, named=True)
        raise TardiffInputError(
            f"outcome file {path}, line {first['row'] + 2}: RecordID {first['record_text']!r} with "
            f"In-hospital_death {first['label_text']!r}; the label must be 0 or 1 and the id an integer "
            f"({bad.height} bad row(s) in all). Fix the row or re-download the official file."
        )
    duplicated = frame.filter(pl.col("record_id").is_duplicated())["record_id"].unique().sort()
    if duplicated.len():
        raise TardiffInputError(
            f"outcome file {path} lists record id(s) {duplicated.head(5).to_list()} more than once; "
            f"keep one row per stay or re-download the official file"
        )
    return frame.select("record_id", "label")


def read_physionet2012(
    data_dir: Path,
    sets: tuple[str, ...] = SETS,
    max_stays: int | None = None,
    verify_checksums: bool = True,
) -> RawPhysionet2012:
    """Read the records and outcomes of the given sets from ``data_dir``.

    ``max_stays`` keeps the first N stays by record id among the outcome rows of the
    selected sets. Archives are read in order and reading stops as soon as those stays are
    found, so a small ``max_stays`` touches only the first archive. When a checksum file is
    present and ``verify_checksums`` is true, every file that is read is verified first.

    Raises:
        MissingDataError: the directory or a needed file is absent.
        CorruptFileError: a checksum differs, or an archive is truncated or not gzip/tar.
        TardiffInputError: a record or outcome row is malformed, or records and outcome
            rows do not match.
    """
    data_dir = Path(data_dir)
    sets = tuple(dict.fromkeys(sets))
    unknown = [s for s in sets if s not in SETS]
    if unknown or not sets:
        raise TardiffInputError(f"data.sets is {list(sets)}; choose one or more of {list(SETS)}")
    if max_stays is not None and max_stays < 1:
        raise TardiffInputError(f"data.max_stays is {max_stays}; use a positive integer or null for all stays")

    started = time.perf_counter()
    archives = _find_input_files(data_dir, sets)
    checksums = read_checksums(data_dir, REDOWNLOAD_HINT) if verify_checksums else None
    if verify_checksums and checksums is None:
        warn_no_checksums(data_dir)
    counts: dict[str, Any] = {
        "sets": list(sets),
        "max_stays": max_stays,
        "files_verified": [],
        "files_unverified": [],
        "archives_read": [],
        "records_read": 0,
        "rows_read": 0,
        "descriptor_rows": 0,
        "empty_parameter_rows": 0,
        "missing_marker_rows": {},
        "records_without_time_series": 0,
        "records_without_time_series_ids": [],
    }

    outcomes_by_set = {}
    for set_name in sets:
        path = data_dir / f"Outcomes-{set_name}.txt"
        verify_if_listed(path, checksums, counts, REDOWNLOAD_HINT)
        outcomes_by_set[set_name] = read_outcomes(path)
    all_outcomes = pl.concat(list(outcomes_by_set.values())).sort("record_id")
    duplicated = all_outcomes.filter(pl.col("record_id").is_duplicated())["record_id"].unique()
    if duplicated.len():
        raise TardiffInputError(
            f"record id(s) {duplicated.head(5).to_list()} appear in more than one outcome file in {data_dir}; "
            f"each stay belongs to one set, so restore the official outcome files"
        )
    if max_stays is not None:
        all_outcomes = all_outcomes.head(max_stays)
    requested_ids = set(all_outcomes["record_id"].to_list())

    frames = []
    found_ids: set[int] = set()
    for set_name in sets:
        set_ids = set(outcomes_by_set[set_name]["record_id"].to_list())
        requested_here = requested_ids & set_ids
        for archive in archives[set_name]:
            if requested_here <= found_ids:
                break
            verify_if_listed(archive, checksums, counts, REDOWNLOAD_HINT)
            members = _read_archive_members(archive, set_ids, requested_here, found_ids, data_dir, set_name)
            counts["archives_read"].append(archive.name)
            if members:
                frames.append(_parse_members(archive, members, counts))
        not_found = sorted(requested_here - found_ids)
        if not_found:
            raise TardiffInputError(
                f"{len(not_found)} stay(s) of Outcomes-{set_name}.txt have no record in "
                f"{[a.name for a in archives[set_name]]} in {data_dir} (first ids: {not_found[:5]}); "
                f"the archives are incomplete, so re-download them with `{DOWNLOAD_COMMAND}`"
            )

    observations = pl.concat(frames) if frames else _empty_observations()
    observations = observations.sort(["record_id", "minute"], maintain_order=True)
    with_series = set(observations["record_id"].unique().to_list())
    without_series = sorted(found_ids - with_series)
    counts["records_without_time_series"] = len(without_series)
    counts["records_without_time_series_ids"] = without_series
    if without_series:
        logger.info("excluded %d record(s) without any time series: %s", len(without_series), without_series)
    outcomes = all_outcomes.filter(pl.col("record_id").is_in(sorted(with_series)))
    counts["stays"] = outcomes.height
    counts["observations"] = observations.height
    counts["seconds"] = round(time.perf_counter() - started, 2)
    logger.info(
        "read %d stays and %d observations from %d archive(s) in %s in %.1f s",
        outcomes.height,
        observations.height,
        len(counts["archives_read"]),
        data_dir,
        counts["seconds"],
    )
    return RawPhysionet2012(observations=observations, outcomes=outcomes, counts=counts)


def _find_input_files(data_dir: Path, sets: tuple[str, ...]) -> dict[str, list[Path]]:
    if not data_dir.is_dir():
        raise MissingDataError(missing_data_message(data_dir, None))
    missing = []
    archives = {}
    for set_name in sets:
        archives[set_name] = find_archives(data_dir, set_name)
        if not archives[set_name]:
            missing.append(f"set-{set_name}.tar.gz")
        if not (data_dir / f"Outcomes-{set_name}.txt").is_file():
            missing.append(f"Outcomes-{set_name}.txt")
    if missing:
        raise MissingDataError(missing_data_message(data_dir, missing))
    return archives


def _read_archive_members(
    archive: Path,
    set_ids: set[int],
    requested: set[int],
    found: set[int],
    data_dir: Path,
    set_name: str,
) -> list[tuple[int, str, bytes]]:
    """Stream ``archive`` and return (record id, member name, text) of the requested records, in archive order.

    Stops as soon as every requested record has been found. Adds the ids read to ``found``.
    """
    members = []
    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                match = _RECORD_MEMBER_REGEX.search(member.name)
                if match is None:
                    logger.warning("skipping member %s of %s: not a record file <id>.txt", member.name, archive)
                    continue
                record_id = int(match.group(1))
                if record_id not in set_ids:
                    raise TardiffInputError(
                        f"record {record_id} (member {member.name} of {archive}) has no row in "
                        f"Outcomes-{set_name}.txt in {data_dir}; every stay needs an outcome row, so "
                        f"restore the official outcome file or remove the record"
                    )
                if record_id in found:
                    raise TardiffInputError(
                        f"record {record_id} appears twice in the archives of {data_dir} (again as member "
                        f"{member.name} of {archive.name}); keep either the chunked or the unchunked archives"
                    )
                if record_id not in requested:
                    continue
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                members.append((record_id, member.name, handle.read()))
                found.add(record_id)
                if requested <= found:
                    break
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise CorruptFileError(
            f"archive {archive} is corrupt or truncated ({type(exc).__name__}: {exc}); delete it and "
            f"download it again with `{DOWNLOAD_COMMAND}`"
        ) from exc
    return members


def _empty_observations() -> pl.DataFrame:
    return pl.DataFrame(
        schema={"record_id": pl.Int64, "minute": pl.Int32, "parameter": pl.Utf8, "value": pl.Float64}
    )


def _parse_members(archive: Path, members: list[tuple[int, str, bytes]], counts: dict[str, Any]) -> pl.DataFrame:
    """Parse the member texts of one archive with one ``read_csv`` call and drop descriptors and missing markers."""
    pieces = []
    for record_id, name, text in members:
        if b"\r" in text:
            text = text.replace(b"\r\n", b"\n")
        header, _, body = text.partition(b"\n")
        if header.strip() != HEADER:
            raise TardiffInputError(
                f"{archive}: member {name}, line 1: header is {header[:80].decode(errors='replace')!r}, "
                f"expected 'Time,Parameter,Value'; fix the header or re-download the official archive "
                f"with `{DOWNLOAD_COMMAND}`"
            )
        body = body.rstrip(b"\n")
        if not body:
            continue
        prefix = b"%d," % record_id
        pieces.append(prefix + body.replace(b"\n", b"\n" + prefix) + b"\n")
    counts["records_read"] += len(members)
    if not pieces:
        return _empty_observations()

    try:
        table = pl.read_csv(
            b"".join(pieces),
            has_header=False,
            new_columns=["record_id", "time", "parameter", "value_text"],
            schema_overrides={"record_id": pl.Int64, "time": pl.Utf8, "parameter": pl.Utf8, "value_text": pl.Utf8},
            quote_char=None,
        )
    except pl.exceptions.PolarsError as exc:
        _raise_first_bad_line(archive, members)
        raise CorruptFileError(
            f"{archive}: records cannot be parsed as CSV ({exc}); re-download it with `{DOWNLOAD_COMMAND}`"
        ) from exc
    counts["rows_read"] += table.height

    table = table.with_columns(
        (
            pl.col("time").str.extract(_TIME_PATTERN, 1).cast(pl.Int32, strict=False) * 60
            + pl.col("time").str.extract(_TIME_PATTERN, 2).cast(pl.Int32, strict=False)
        ).alias("minute"),
        pl.col("value_text").cast(pl.Float64, strict=False).alias("value"),
    )
    invalid = table["minute"].is_null() | table["value"].is_null() | ~table["value"].is_finite()
    if invalid.any():
        _raise_first_bad_line(archive, members)
        raise TardiffInputError(f"{archive}: {int(invalid.sum())} malformed row(s) that could not be located")

    # The first occurrence at 00:00 of each descriptor name is the descriptor. Weight can
    # also be a time-series observation at 00:00, which then follows the descriptor row.
    table = table.with_row_index("row")
    descriptor_rows = (
        table.filter((pl.col("minute") == 0) & pl.col("parameter").is_in(list(DESCRIPTORS)))
        .group_by("record_id", "parameter")
        .agg(pl.col("row").min())
    )["row"]
    is_descriptor = np.zeros(table.height, dtype=bool)
    is_descriptor[descriptor_rows.to_numpy()] = True
    table = table.with_columns(pl.Series("is_descriptor", is_descriptor))
    _check_record_ids(archive, table, members)
    counts["descriptor_rows"] += int(table["is_descriptor"].sum())
    series = table.filter(~pl.col("is_descriptor"))

    empty_parameter = series["parameter"].is_null() | (series["parameter"].str.strip_chars() == "")
    counts["empty_parameter_rows"] += int(empty_parameter.sum())
    series = series.filter(~empty_parameter)

    markers = series.filter(pl.col("value") == MISSING_MARKER).group_by("parameter").len()
    for parameter, number in markers.iter_rows():
        counts["missing_marker_rows"][parameter] = counts["missing_marker_rows"].get(parameter, 0) + number
    series = series.filter(pl.col("value") != MISSING_MARKER)
    return series.select("record_id", "minute", "parameter", "value")


def _check_record_ids(archive: Path, table: pl.DataFrame, members: list[tuple[int, str, bytes]]) -> None:
    """Raise when a record's ``RecordID`` descriptor differs from the id in its member name."""
    mismatched = table.filter(
        pl.col("is_descriptor") & (pl.col("parameter") == "RecordID") & (pl.col("value") != pl.col("record_id"))
    )
    if mismatched.height:
        record_id, value = mismatched.select("record_id", "value").row(0)
        name = next(member for rid, member, _ in members if rid == record_id)
        raise TardiffInputError(
            f"{archive}: member {name} contains RecordID {value:g}, but its file name gives {record_id}; "
            f"rename the member or fix the RecordID row"
        )


def _raise_first_bad_line(archive: Path, members: list[tuple[int, str, bytes]]) -> None:
    """Find the first malformed line of the archive's members and raise TardiffInputError naming it."""
    for _, name, text in members:
        lines = text.decode(errors="replace").replace("\r\n", "\n").rstrip("\n").split("\n")
        for line_number, line in enumerate(lines[1:], start=2):
            reason = _line_problem(line)
            if reason:
                raise TardiffInputError(
                    f"{archive}: member {name}, line {line_number}: {reason} in {line[:80]!r}. Each line must "
                    f"read HH:MM,Parameter,Value with a finite number as value; fix or delete the line, or "
                    f"re-download the official archive with `{DOWNLOAD_COMMAND}`"
                )


def _line_problem(line: str) -> str | None:
    fields = line.split(",")
    if len(fields) != 3:
        return f"{len(fields)} comma-separated fields instead of 3"
    time_text, _, value_text = fields
    if not _TIME_REGEX.match(time_text):
        return f"invalid time {time_text!r}"
    if not _NUMBER_REGEX.match(value_text):
        return f"non-numeric or non-finite value {value_text!r}"
    return None


@register_reader("physionet2012")
def read_physionet2012_cohort(config: DataConfig) -> RawCohort:
    """Reader for ``data.dataset: physionet2012``: in-hospital mortality of the configured sets."""
    return read_physionet2012(Path(config.dir), config.sets, config.max_stays, config.verify_checksums)
