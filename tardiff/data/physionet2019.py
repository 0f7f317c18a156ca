"""Read the PhysioNet/CinC Challenge 2019 sepsis records straight from their ``tar.gz`` archives.

Each stay is a pipe-separated member ``training_setB/p100001.psv`` with one row per hour
of ICU stay and the fixed 41-column HEADER, where ``NaN`` marks a missing value. ``ICULOS``
numbers the hours of the ICU stay from 1, and a file's first row is not always hour 1.
The member texts of one archive are joined, each line prefixed with its record id, and
parsed by a single ``polars.read_csv`` call.

Time rule: the row of ICU hour ``ICULOS`` covers minutes ``[(ICULOS - 1) * 60, ICULOS * 60)``
since ICU admission, so it is given ``minute = (ICULOS - 1) * 60`` and lands in grid hour
``ICULOS - 1`` (ICU hour 1 is grid hour 0). The 24-hour window is ICU hours 1 to 24.

Task ``sepsis``: a stay is positive when any row has ``SepsisLabel`` 1. Upstream sets the
label from 6 hours before clinical onset onwards, and some stays are positive from their
first row.

Malformed files raise TardiffInputError naming the archive, member, line and value. These
are errors and not exclusions because none occurs in the official files, so each one means
a damaged or edited file whose other rows cannot be trusted either:

- a wrong header or a wrong number of fields;
- a value that is not a number or ``NaN``, or an infinite value;
- an ``ICULOS`` that is missing, fractional or below 1 (hour 1 is the first ICU hour);
- an ``ICULOS`` hour repeated within one file;
- a ``SepsisLabel`` other than 0 or 1.
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

import polars as pl

from tardiff.data.checksums import read_checksums, verify_if_listed, warn_no_checksums
from tardiff.data.sources import OBSERVATION_SCHEMA, RawCohort, register_reader
from tardiff.errors import CorruptFileError, MissingDataError, TardiffInputError

if TYPE_CHECKING:
    from tardiff.config import DataConfig

logger = logging.getLogger(__name__)

TASKS = ("sepsis",)
# The 8 vital signs and 26 laboratory values in file order: the columns emitted as observations.
VARIABLES = (
    "HR", "O2Sat", "Temp", "SBP", "MAP", "DBP", "Resp", "EtCO2",
    "BaseExcess", "HCO3", "FiO2", "pH", "PaCO2", "SaO2", "AST", "BUN", "Alkalinephos", "Calcium", "Chloride",
    "Creatinine", "Bilirubin_direct", "Glucose", "Lactate", "Magnesium", "Phosphate", "Potassium",
    "Bilirubin_total", "TroponinI", "Hct", "Hgb", "PTT", "WBC", "Fibrinogen", "Platelets",
)  # fmt: skip
DEMOGRAPHICS = ("Age", "Gender", "Unit1", "Unit2", "HospAdmTime")
COLUMNS = (*VARIABLES, *DEMOGRAPHICS, "ICULOS", "SepsisLabel")
HEADER = "|".join(COLUMNS).encode()
UPSTREAM_PAGE = "https://physionet.org/content/challenge-2019/1.0.0/"
REDOWNLOAD_HINT = f"replace it with the official file from {UPSTREAM_PAGE}"
TIME_RULE = "the row of ICU hour ICULOS gets minute (ICULOS - 1) * 60, so ICU hour 1 is grid hour 0"

_PART_REGEX = re.compile(r"^training_set([A-Za-z])\.part(\d+)\.tar\.gz$")
_WHOLE_REGEX = re.compile(r"^training_set([A-Za-z])\.tar\.gz$")
_MEMBER_REGEX = re.compile(r"(?:^|/)p(\d+)\.psv$")
_NUMBER_REGEX = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def find_archives(data_dir: Path) -> dict[str, list[Path]]:
    """Return the archives of each training set found in ``data_dir``, sets in name order.

    A set's archives are its chunks ``training_setB.partN.tar.gz`` in part order, else
    ``training_setB.tar.gz``.
    """
    parts: dict[str, list[tuple[int, Path]]] = {}
    wholes: dict[str, Path] = {}
    for path in data_dir.glob("training_set*.tar.gz"):
        chunk = _PART_REGEX.match(path.name)
        whole = _WHOLE_REGEX.match(path.name)
        if chunk:
            parts.setdefault(chunk.group(1), []).append((int(chunk.group(2)), path))
        elif whole:
            wholes[whole.group(1)] = path
    archives = {}
    for set_name in sorted(parts.keys() | wholes.keys()):
        if set_name in parts:
            if set_name in wholes:
                logger.warning("using the chunks of training set %s and ignoring %s", set_name, wholes[set_name])
            archives[set_name] = [path for _, path in sorted(parts[set_name])]
        else:
            archives[set_name] = [wholes[set_name]]
    return archives


def read_physionet2019(
    data_dir: Path,
    hours: int = 24,
    max_stays: int | None = None,
    min_stay_hours: float = 0.0,
    exclude_positive_in_window: bool = False,
    verify_checksums: bool = True,
) -> RawCohort:
    """Read the stays of every training set in ``data_dir`` and label each by sepsis during the stay.

    Stays are excluded and counted in this order. Files with a header and no rows go
    first. ``min_stay_hours`` then drops stays whose last
    ICU hour (the largest ``ICULOS``) is below it. A kept stay shorter than the window has
    unobserved hours after discharge, which the shared fill rule fills later.
    ``exclude_positive_in_window`` drops stays with ``SepsisLabel`` 1 in ICU hours 1 to
    ``hours``. Stays without any observation of the 34 time-series variables go last.

    ``max_stays`` keeps the first N stays by record id among the archives read. Archives are
    read in set and part order, and reading stops after the archive that brings the count
    to N, so a small ``max_stays`` touches only the first chunk.
    NOTE: these are the N lowest ids of all archives only when each archive contains higher ids
    than the one before, as the official chunks of training set B do.

    Returns observations of the 34 time-series VARIABLES (minute per TIME_RULE), one
    label per kept stay and the counts of everything read, dropped and excluded.

    Raises:
        MissingDataError: the directory or every training set archive is absent.
        CorruptFileError: a checksum differs, or an archive is truncated or not gzip/tar.
        TardiffInputError: a record is malformed (module docstring), a record id appears
            twice, or an argument is invalid.
    """
    data_dir = Path(data_dir)
    if max_stays is not None and max_stays < 1:
        raise TardiffInputError(f"data.max_stays is {max_stays}; use a positive integer or null for all stays")
    if hours < 1:
        raise TardiffInputError(f"data.hours is {hours}; use a positive number of hours")

    started = time.perf_counter()
    archives = _find_input_files(data_dir)
    checksums = read_checksums(data_dir, REDOWNLOAD_HINT) if verify_checksums else None
    if verify_checksums and checksums is None:
        warn_no_checksums(data_dir)
    counts: dict[str, Any] = {
        "sets": list(archives),
        "max_stays": max_stays,
        "time_rule": TIME_RULE,
        "files_verified": [],
        "files_unverified": [],
        "archives_read": [],
        "records_read": 0,
        "rows_read": 0,
        "records_first_row_after_hour_1": 0,
        "missing_values": 0,
    }

    tables = []
    seen: dict[int, str] = {}
    for archive in [path for paths in archives.values() for path in paths]:
        if max_stays is not None and len(seen) >= max_stays:
            break
        verify_if_listed(archive, checksums, counts, REDOWNLOAD_HINT)
        members = _read_archive_members(archive, seen)
        counts["archives_read"].append(archive.name)
        counts["records_read"] += len(members)
        if members:
            tables.append(_parse_members(archive, members))

    read_ids = sorted(seen)[:max_stays] if max_stays is not None else sorted(seen)
    table = pl.concat(tables) if tables else _empty_table()
    table = table.filter(pl.col("record_id").is_in(read_ids))
    counts["stays_read"] = len(read_ids)
    counts["rows_read"] = table.height
    without_rows = sorted(set(read_ids) - set(table["record_id"].unique().to_list()))
    counts["records_without_rows"] = len(without_rows)
    counts["records_without_rows_ids"] = without_rows
    if without_rows:
        logger.info("excluded %d record(s) with a header but no rows: %s", len(without_rows), without_rows[:10])
    stays = _label_stays(table, hours)
    counts["records_first_row_after_hour_1"] = int((stays["first_hour"] > 1).sum())
    stays = _apply_exclusions(stays, min_stay_hours, exclude_positive_in_window, hours, counts)

    observations = _to_long(table.filter(pl.col("record_id").is_in(stays["record_id"].implode())), counts)
    with_observations = observations["record_id"].unique()
    without = stays.filter(~pl.col("record_id").is_in(with_observations.implode()))["record_id"].sort().to_list()
    counts["stays_without_observations"] = len(without)
    counts["stays_without_observations_ids"] = without
    if without:
        logger.info("excluded %d stay(s) without any time-series observation: %s", len(without), without[:10])
    outcomes = (
        stays.filter(pl.col("record_id").is_in(with_observations.implode()))
        .select(pl.col("record_id").cast(pl.Int64), pl.col("label").cast(pl.Int8))
        .sort("record_id")
    )
    counts["stays"] = outcomes.height
    counts["positive_stays"] = int(outcomes["label"].sum())
    counts["observations"] = observations.height
    counts["seconds"] = round(time.perf_counter() - started, 2)
    logger.info(
        "read %d stays (%d septic) and %d observations from %d archive(s) in %s in %.1f s",
        outcomes.height,
        counts["positive_stays"],
        observations.height,
        len(counts["archives_read"]),
        data_dir,
        counts["seconds"],
    )
    return RawCohort(observations=observations, outcomes=outcomes, counts=counts)


def _find_input_files(data_dir: Path) -> dict[str, list[Path]]:
    if not data_dir.is_dir():
        raise MissingDataError(
            f"PhysioNet 2019 data directory {data_dir} not found; point data.dir at the folder with "
            f"training_setB.tar.gz or its chunks training_setB.partN.tar.gz"
        )
    archives = find_archives(data_dir)
    if not archives:
        raise MissingDataError(
            f"PhysioNet 2019 files missing from {data_dir}: no training_setX.tar.gz or training_setX.partN.tar.gz "
            f"found. Download the folder training_setB/ from {UPSTREAM_PAGE}, pack it with "
            f"`tar -czf training_setB.tar.gz training_setB` and point data.dir at its folder"
        )
    return archives


def _read_archive_members(archive: Path, seen: dict[int, str]) -> list[tuple[int, str, bytes]]:
    """Return (record id, member name, text) of every record member of ``archive``, adding the ids to ``seen``."""
    members = []
    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                match = _MEMBER_REGEX.search(member.name)
                if match is None:
                    logger.warning("skipping member %s of %s: not a record file p<id>.psv", member.name, archive)
                    continue
                record_id = int(match.group(1))
                if record_id in seen:
                    raise TardiffInputError(
                        f"record {record_id} appears twice: as {seen[record_id]} and again as member "
                        f"{member.name} of {archive}; keep either the chunked or the whole archives"
                    )
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                members.append((record_id, member.name, handle.read()))
                seen[record_id] = f"member {member.name} of {archive.name}"
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise CorruptFileError(
            f"archive {archive} is corrupt or truncated ({type(exc).__name__}: {exc}); {REDOWNLOAD_HINT}"
        ) from exc
    return members


def _empty_table() -> pl.DataFrame:
    schema = {"record_id": pl.Int64, "line": pl.Int64} | {name: pl.Float64 for name in COLUMNS}
    return pl.DataFrame(schema=schema)


def _parse_members(archive: Path, members: list[tuple[int, str, bytes]]) -> pl.DataFrame:
    """Parse the member texts of one archive with one ``read_csv`` call and check every row.

    Returns record_id, line (the line number inside the member, where the header is line 1)
    and the 41 columns as Float64, with nulls where a file has ``NaN``.
    """
    pieces = []
    fields_per_line = len(COLUMNS) - 1
    for record_id, name, text in members:
        if b"\r" in text:
            text = text.replace(b"\r\n", b"\n")
        header, _, body = text.partition(b"\n")
        if header.strip() != HEADER:
            raise TardiffInputError(
                f"{archive}: member {name}, line 1: header starts {header[:80].decode(errors='replace')!r}, "
                f"expected the 41 PhysioNet 2019 column names {HEADER[:40].decode()}...|ICULOS|SepsisLabel; "
                f"fix the header or {REDOWNLOAD_HINT}"
            )
        body = body.rstrip(b"\n")
        if not body:
            continue
        if body.count(b"|") != fields_per_line * (body.count(b"\n") + 1):
            _raise_first_bad_line(archive, name, text)
        prefix = b"%d|" % record_id
        pieces.append(prefix + body.replace(b"\n", b"\n" + prefix) + b"\n")
    if not pieces:
        return _empty_table()

    try:
        table = pl.read_csv(
            b"".join(pieces),
            separator="|",
            has_header=False,
            new_columns=["record_id", *COLUMNS],
            schema_overrides={"record_id": pl.Int64} | {column: pl.Float64 for column in COLUMNS},
            null_values="NaN",
            quote_char=None,
        )
    except pl.exceptions.PolarsError as exc:
        for _, name, text in members:
            _raise_first_bad_line(archive, name, text)
        raise CorruptFileError(f"{archive}: records cannot be parsed ({exc}); {REDOWNLOAD_HINT}") from exc

    # Other spellings of NaN ("nan") parse as floating-point NaN, and they mean missing as "NaN" does.
    table = table.fill_nan(None)
    table = table.with_columns((pl.int_range(pl.len()).over("record_id") + 2).cast(pl.Int64).alias("line"))
    _check_rows(archive, table, {record_id: name for record_id, name, _ in members})
    return table.select("record_id", "line", *COLUMNS)


def _check_rows(archive: Path, table: pl.DataFrame, names: dict[int, str]) -> None:
    """Raise TardiffInputError on the first row with an invalid value, ICULOS or SepsisLabel."""

    def fail(row: dict[str, Any], problem: str, fix: str) -> None:
        raise TardiffInputError(
            f"{archive}: member {names[row['record_id']]}, line {row['line']}: {problem}; {fix}, or {REDOWNLOAD_HINT}"
        )

    infinite = table.filter(pl.any_horizontal(pl.col(list(COLUMNS)).is_infinite()))
    if infinite.height:
        row = infinite.row(0, named=True)
        column = next(c for c in COLUMNS if row[c] is not None and abs(row[c]) == float("inf"))
        fail(row, f"{column} is {row[column]}", "write a finite number or NaN for a missing value")

    hour = pl.col("ICULOS")
    bad_hour = table.filter(hour.is_null() | (hour < 1) | (hour != hour.floor()))
    if bad_hour.height:
        row = bad_hour.row(0, named=True)
        value = "NaN" if row["ICULOS"] is None else row["ICULOS"]
        fail(row, f"ICULOS is {value}", "ICULOS numbers the hours of ICU stay as whole numbers from 1")

    label = pl.col("SepsisLabel")
    bad_label = table.filter(label.is_null() | ~label.is_in([0.0, 1.0]))
    if bad_label.height:
        row = bad_label.row(0, named=True)
        fail(row, f"SepsisLabel is {row['SepsisLabel']}", "SepsisLabel must be 0 or 1 in every row")

    repeated = table.filter(pl.struct("record_id", "ICULOS").is_duplicated()).sort("record_id", "line")
    if repeated.height:
        first = repeated.row(0, named=True)
        lines = repeated.filter(
            (pl.col("record_id") == first["record_id"]) & (pl.col("ICULOS") == first["ICULOS"])
        )["line"].to_list()
        fail(first, f"ICULOS hour {first['ICULOS']:g} appears on lines {lines}", "keep one row per ICU hour")


def _raise_first_bad_line(archive: Path, name: str, text: bytes) -> None:
    """Raise TardiffInputError naming the first line of ``text`` with a wrong field count or a non-numeric value."""
    lines = text.decode(errors="replace").replace("\r\n", "\n").rstrip("\n").split("\n")
    for line_number, line in enumerate(lines[1:], start=2):
        fields = line.split("|")
        if len(fields) != len(COLUMNS):
            problem = f"{len(fields)} pipe-separated fields instead of {len(COLUMNS)}"
        else:
            bad = [(c, v) for c, v in zip(COLUMNS, fields, strict=True) if v != "NaN" and not _NUMBER_REGEX.match(v)]
            if not bad:
                continue
            problem = f"{bad[0][0]} is {bad[0][1]!r}, not a number or NaN"
        raise TardiffInputError(
            f"{archive}: member {name}, line {line_number}: {problem}. Each line must contain {len(COLUMNS)} numbers "
            f"separated by '|', with NaN for a missing value; fix or delete the line, or {REDOWNLOAD_HINT}"
        )


def _label_stays(table: pl.DataFrame, hours: int) -> pl.DataFrame:
    """Return one row per stay: record_id, label (any SepsisLabel 1), first_hour, last_hour, positive_in_window."""
    in_window = pl.col("ICULOS") <= hours
    return (
        table.group_by("record_id")
        .agg(
            (pl.col("SepsisLabel").max() == 1).cast(pl.Int8).alias("label"),
            pl.col("ICULOS").min().alias("first_hour"),
            pl.col("ICULOS").max().alias("last_hour"),
            ((pl.col("SepsisLabel") == 1) & in_window).any().alias("positive_in_window"),
        )
        .sort("record_id")
    )


def _apply_exclusions(
    stays: pl.DataFrame, min_stay_hours: float, exclude_positive_in_window: bool, hours: int, counts: dict[str, Any]
) -> pl.DataFrame:
    """Drop short stays, then stays positive inside the window when requested; record both in ``counts``."""
    short = stays.filter(pl.col("last_hour") < min_stay_hours)["record_id"].to_list()
    counts["min_stay_hours"] = min_stay_hours
    counts["stays_shorter_than_min_stay_hours"] = len(short)
    stays = stays.filter(pl.col("last_hour") >= min_stay_hours)
    if short:
        logger.info("excluded %d stay(s) with fewer than %g ICU hours", len(short), min_stay_hours)

    positive = stays.filter(pl.col("positive_in_window"))["record_id"].to_list()
    counts["exclude_positive_in_window"] = exclude_positive_in_window
    counts["stays_positive_in_window"] = len(positive)
    counts["stays_excluded_positive_in_window"] = len(positive) if exclude_positive_in_window else 0
    if exclude_positive_in_window:
        stays = stays.filter(~pl.col("positive_in_window"))
        if positive:
            logger.info("excluded %d stay(s) with SepsisLabel 1 in ICU hours 1 to %d", len(positive), hours)
    return stays


def _to_long(table: pl.DataFrame, counts: dict[str, Any]) -> pl.DataFrame:
    """Unpivot the time-series columns to record_id, minute, parameter, value, dropping and counting NaN cells."""
    long = table.with_columns(((pl.col("ICULOS") - 1) * 60).cast(pl.Int32).alias("minute")).unpivot(
        index=["record_id", "minute"], on=list(VARIABLES), variable_name="parameter", value_name="value"
    )
    counts["missing_values"] = int(long["value"].null_count())
    long = long.drop_nulls("value")
    return long.select([pl.col(name).cast(dtype) for name, dtype in OBSERVATION_SCHEMA.items()]).sort(
        ["record_id", "minute"], maintain_order=True
    )


@register_reader("physionet2019")
def read_physionet2019_cohort(config: DataConfig) -> RawCohort:
    """Reader for ``data.dataset: physionet2019``: sepsis during the stay; ``data.sets`` is not used."""
    task = config.task or "sepsis"
    if task not in TASKS:
        raise TardiffInputError(f"data.task is {config.task!r}; the physionet2019 reader builds {list(TASKS)} only")
    return read_physionet2019(
        Path(config.dir),
        config.hours,
        config.max_stays,
        config.min_stay_hours,
        config.exclude_positive_in_window,
        config.verify_checksums,
    )
