"""Input checks and conversions shared by the long, meds, mimic3 and eicu readers.

Each helper either returns cleaned data with counts of what it dropped or raises
:class:`~tardiff.errors.TardiffInputError` naming the file, the value and the fix. The
rules, which docs/bring_your_own_data.md states for users:

- A missing value (null, empty, ``NA``, ``NaN``, ``null``, ``None``) drops its row,
  counted in ``missing_values``. A non-numeric or infinite value raises.
- A row whose unit differs from its channel's unit is converted when a conversion is
  known (:data:`UNIT_CONVERSIONS`) and raises otherwise. A row without a unit is taken
  to be in the channel's unit and counted in ``rows_without_unit``.
- A row before the window start (minute < 0) or at or after its end (minute >=
  hours * 60) is dropped, counted in ``rows_before_window`` or ``rows_after_window``.
- Rows of one stay and variable at the same time are all kept and counted in
  ``duplicate_time_rows``. The hourly grid then averages them (or sums them for
  ``aggregate: sum`` channels, where they are separate volumes).
- The labels table defines the cohort. A stay with observations but no label, and a
  labelled stay without observations, are excluded and counted. A label that is not
  0/1 or boolean raises, and so does a cohort with one class only.
"""

from __future__ import annotations

import difflib
import gzip
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from tardiff.config import ChannelSpec
from tardiff.data.sources import RawCohort
from tardiff.errors import CorruptFileError, MissingDataError, TardiffInputError

logger = logging.getLogger(__name__)

# Id lists in the counts keep at most this many ids, so the metadata stays small on large cohorts.
MAX_LISTED_IDS = 20
MISSING_TEXT = ("", "na", "nan", "null", "none")
CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")

# Canonical names of unit spellings. Units are compared after lower-casing and removing
# white space, degree signs, dots and "?" (MIMIC-III writes the lost degree sign as "?").
_UNIT_ALIASES = {
    "c": "degC", "degc": "degC", "celsius": "degC", "degreesc": "degC", "degreescelsius": "degC",
    "f": "degF", "degf": "degF", "fahrenheit": "degF", "degreesf": "degF", "degreesfahrenheit": "degF",
    "mmhg": "mmHg", "torr": "mmHg",
    "kpa": "kPa",
    # Heart and respiratory rates are both counts per minute.
    "bpm": "/min", "/min": "/min", "1/min": "/min", "min-1": "/min", "perminute": "/min", "beats/min": "/min",
    "breaths/min": "/min", "insp/min": "/min", "b/min": "/min",
    "%": "%", "percent": "%", "pct": "%",
}
# (from, to) -> (scale, offset): value_to = value_from * scale + offset.
# 1 mmHg = 133.322 Pa, so 1 kPa = 7.50062 mmHg.
UNIT_CONVERSIONS: dict[tuple[str, str], tuple[float, float]] = {
    ("degF", "degC"): (5.0 / 9.0, -32.0 * 5.0 / 9.0),
    ("degC", "degF"): (9.0 / 5.0, 32.0),
    ("kPa", "mmHg"): (7.50062, 0.0),
    ("mmHg", "kPa"): (1.0 / 7.50062, 0.0),
}


def resolve_input(data_dir: Path, name: str, field: str, dataset: str) -> Path:
    """Return ``data_dir / name`` (an absolute ``name`` stays as is), raising when unset or absent."""
    if not name:
        raise TardiffInputError(
            f"data.{field} is empty but data.dataset {dataset!r} needs it; set data.{field} in params.yaml to the "
            f"file name inside data.dir ({data_dir}) or an absolute path"
        )
    path = Path(data_dir) / name
    if not path.exists():
        raise MissingDataError(
            f"{dataset} input {path} (data.{field}) not found; check data.dir and data.{field} in params.yaml"
        )
    return path


def find_table(data_dir: Path, stem: str, dataset: str, source: str) -> Path | None:
    """Return the file ``<stem>.csv`` or ``<stem>.csv.gz`` in ``data_dir``, matching the name case-insensitively.

    Returns None when absent; raises when ``data_dir`` is not a directory. ``source`` names
    where the official files come from, for the error message.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MissingDataError(f"{dataset} data directory {data_dir} not found; point data.dir at the {source} files")
    names = {f"{stem}{suffix}".lower() for suffix in CSV_SUFFIXES}
    matches = sorted(path for path in data_dir.iterdir() if path.is_file() and path.name.lower() in names)
    if len(matches) > 1:
        logger.warning("found %s in %s; reading %s", [p.name for p in matches], data_dir, matches[0].name)
    return matches[0] if matches else None


def require_table(data_dir: Path, stem: str, dataset: str, source: str) -> Path:
    """Return the path of a table :func:`find_table` finds, or raise MissingDataError naming it and its source."""
    path = find_table(data_dir, stem, dataset, source)
    if path is None:
        raise MissingDataError(
            f"{dataset} table {stem}.csv or {stem}.csv.gz not found in {data_dir}; copy it there from {source} "
            f"(the official file names, compressed or not) or point data.dir at the folder that contains it"
        )
    return path


def is_parquet(path: Path) -> bool:
    """Return True for Parquet input (``.parquet``, ``.pq`` or a folder) and False for ``.csv``/``.csv.gz``.

    Raises for any other file name.
    """
    name = path.name.lower()
    if path.is_dir() or name.endswith(PARQUET_SUFFIXES):
        return True
    if name.endswith(CSV_SUFFIXES):
        return False
    raise TardiffInputError(
        f"cannot tell the format of {path} from its name; name it *.csv, *.csv.gz, *.parquet or *.pq"
    )


def parquet_files(path: Path) -> list[Path]:
    """Return ``path`` itself, or the Parquet files under the folder ``path`` (recursively, sorted)."""
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(PARQUET_SUFFIXES))
    if not files:
        raise MissingDataError(
            f"folder {path} contains no *.parquet file; put the Parquet files there or fix data.dir and "
            f"data.labels_file"
        )
    return files


def csv_header(path: Path) -> list[str]:
    """Read the header line of a CSV file (gzip or plain) without reading the rest."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            line = handle.readline()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{path} cannot be read ({type(exc).__name__}: {exc}); replace the file") from exc
    if not line.strip():
        raise TardiffInputError(f"{path} is empty; it needs a header line and at least one row")
    return [name.strip().strip('"') for name in line.rstrip("\r\n").split(",")]


def scan_table(path: Path) -> pl.LazyFrame:
    """Scan a CSV (every column as text, gzip allowed) or Parquet table lazily, raising on unreadable files.

    CSV columns stay text so that each reader can report the exact value it cannot parse.
    Giving the schema from the header lets polars decompress ``.csv.gz`` files as a stream.
    """
    try:
        if is_parquet(path):
            lazy = pl.scan_parquet(parquet_files(path))
            lazy.collect_schema()
            return lazy
        header = csv_header(path)
        if len(set(header)) != len(header):
            raise TardiffInputError(f"{path} has duplicate column names in its header {header}; rename them")
        return pl.scan_csv(path, schema={name: pl.Utf8 for name in header})
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise CorruptFileError(f"{path} cannot be read as a table ({type(exc).__name__}: {exc}); replace it") from exc


def collect(lazy: pl.LazyFrame, path: Path) -> pl.DataFrame:
    """Run a query on a scanned table with the streaming engine, raising CorruptFileError when parsing fails."""
    try:
        return lazy.collect(engine="streaming")
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise CorruptFileError(
            f"{path} cannot be parsed ({type(exc).__name__}: {str(exc)[:300]}); check that every row has the "
            f"header's number of fields, or replace the file"
        ) from exc


def require_rows(lazy: pl.LazyFrame, path: Path) -> None:
    """Raise when the table has a header but no row."""
    if collect(lazy.head(1), path).height == 0:
        raise TardiffInputError(f"{path} contains no rows; it needs at least one row below its header")


def require_columns(columns: Iterable[str], required: Iterable[str], path: Path, fix: str) -> None:
    """Raise when any of ``required`` is not among ``columns``, naming the file, the present columns and ``fix``."""
    columns = list(columns)
    missing = [name for name in required if name not in columns]
    if missing:
        raise TardiffInputError(f"{path} lacks column(s) {missing}; its columns are {columns}. {fix}")


def source_variables(channels: tuple[ChannelSpec, ...]) -> list[str]:
    """Return every raw variable named in a channel's ``sources``, in channel order without repeats."""
    if not channels:
        raise TardiffInputError("data.channels is empty; list at least one channel in params.yaml")
    return list(dict.fromkeys(source for channel in channels for source in channel.sources))


def check_sources_found(
    found: Iterable[str], channels: tuple[ChannelSpec, ...], path: Path, known: Iterable[str] = ()
) -> list[str]:
    """Return the channel sources absent from the data; raise when a channel has none of its sources.

    ``known`` lists variables present in the file, to suggest the closest names.
    """
    found = set(found)
    absent = [source for source in source_variables(channels) if source not in found]
    for channel in channels:
        if not any(source in found for source in channel.sources):
            by_lower = {name.lower(): name for name in sorted(set(known))}
            close = difflib.get_close_matches(channel.sources[0].lower(), list(by_lower), n=5, cutoff=0.4)
            suggestions = [by_lower[name] for name in close]
            hint = f" Closest variable names in the file: {suggestions}." if suggestions else ""
            raise TardiffInputError(
                f"channel {channel.name}: none of its sources {list(channel.sources)} occurs in {path} for the "
                f"selected stays.{hint} Fix data.channels[].sources in params.yaml to name variables of the file"
            )
    if absent:
        logger.warning("channel source(s) %s do not occur in %s", absent, path)
    return absent


def parse_numbers(frame: pl.DataFrame, column: str, path: Path, value_name: str) -> tuple[pl.DataFrame, int]:
    """Cast ``column`` to Float64 and drop rows whose value is missing; return the frame and the dropped count.

    Missing means null, NaN or one of MISSING_TEXT. Raises on a non-numeric or infinite value,
    naming the row (``_row``, 0-based data row), the variable (``parameter``) and the value.
    """
    source = frame[column]
    if source.dtype == pl.Utf8:
        text = source.str.strip_chars()
        missing = text.is_null() | text.str.to_lowercase().is_in(list(MISSING_TEXT))
        numbers = text.cast(pl.Float64, strict=False)
        invalid = ~missing & numbers.is_null()
    elif source.dtype.is_numeric() or source.dtype == pl.Boolean:
        numbers = source.cast(pl.Float64)
        missing = numbers.is_null()
        invalid = pl.Series([False] * frame.height)
    else:
        raise TardiffInputError(
            f"{path}: column {column!r} has type {source.dtype}; {value_name} must be numbers (or text with numbers)"
        )
    missing = missing | numbers.is_nan().fill_null(False)
    invalid = invalid | numbers.is_infinite().fill_null(False)
    if invalid.any():
        bad = frame.filter(invalid).row(0, named=True)
        raise TardiffInputError(
            f"{path}, {row_location(bad, path)}: {value_name} {bad[column]!r} of variable {bad.get('parameter')!r} "
            f"is not a finite number ({int(invalid.sum())} such row(s)). Write numbers only, and leave a missing "
            f"value empty"
        )
    cleaned = frame.with_columns(numbers.alias(column)).filter(~missing)
    return cleaned, int(missing.sum())


def parse_integer_ids(frame: pl.DataFrame, column: str, path: Path, target: str = "record_id") -> pl.DataFrame:
    """Cast the stay id ``column`` to Int64 as ``target``; raise on a missing or non-integer id."""
    source = frame[column]
    if source.dtype.is_integer():
        ids = source.cast(pl.Int64)
    elif source.dtype == pl.Utf8:
        ids = source.str.strip_chars().cast(pl.Int64, strict=False)
    elif source.dtype.is_float():
        whole = source.is_finite().fill_null(False) & (source == source.round(0))
        ids = pl.select(pl.when(whole).then(source).otherwise(None).cast(pl.Int64)).to_series()
    else:
        ids = pl.Series(column, [None] * frame.height, dtype=pl.Int64)
    invalid = ids.is_null()
    if invalid.any():
        bad = frame.filter(invalid).row(0, named=True)
        raise TardiffInputError(
            f"{path}, {row_location(bad, path)}: stay id {bad[column]!r} in column {column!r} is not an integer "
            f"({int(invalid.sum())} such row(s)). Stay ids must be integers; map other ids to integers first"
        )
    return frame.with_columns(ids.alias(target))


def parse_binary_labels(frame: pl.DataFrame, column: str, path: Path, allow_null: bool = False) -> pl.Series:
    """Return ``column`` as Int8 0/1 labels from 0/1 numbers, booleans or the text 0, 1, true, false.

    Nulls raise unless ``allow_null``, when they stay null for the caller to exclude and count.
    """
    source = frame[column]
    if source.dtype == pl.Boolean:
        labels = source.cast(pl.Int8)
        invalid = pl.Series([False] * frame.height)
    elif source.dtype == pl.Utf8:
        text = source.str.strip_chars().str.to_lowercase()
        mapping = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "true": 1, "false": 0}
        labels = text.replace_strict(mapping, default=None, return_dtype=pl.Int8)
        invalid = labels.is_null() & text.is_not_null() & (text != "")
    elif source.dtype.is_numeric():
        numbers = source.cast(pl.Float64)
        binary = numbers.is_in([0.0, 1.0]).fill_null(False)
        invalid = numbers.is_not_null() & ~binary
        labels = pl.select(pl.when(binary).then(numbers).otherwise(None).cast(pl.Int8)).to_series()
    else:
        raise TardiffInputError(f"{path}: label column {column!r} has type {source.dtype}; use 0/1 or booleans")
    if invalid.any():
        bad = frame.filter(invalid).row(0, named=True)
        raise TardiffInputError(
            f"{path}, {row_location(bad, path)}: label {bad[column]!r} in column {column!r} is not 0, 1 or a boolean "
            f"({int(invalid.sum())} such row(s)). Write each label as 0/1 or true/false"
        )
    if not allow_null and labels.is_null().any():
        bad = frame.filter(labels.is_null()).row(0, named=True)
        raise TardiffInputError(
            f"{path}, {row_location(bad, path)}: label in column {column!r} is missing ({int(labels.is_null().sum())} "
            f"such row(s)). Give every stay a 0/1 label, or remove the stays without one"
        )
    return labels.alias("label")


def require_unique(frame: pl.DataFrame, key: str, path: Path, key_name: str) -> None:
    """Raise when a value of ``key`` appears on more than one row."""
    duplicated = frame.filter(pl.col(key).is_duplicated())[key].unique().sort()
    if duplicated.len():
        raise TardiffInputError(
            f"{path}: {key_name} {duplicated.head(5).to_list()} appear(s) on more than one row "
            f"({duplicated.len()} in all); keep one row per {key_name}"
        )


def canonical_unit(text: str | None) -> str | None:
    """Return the canonical spelling of a unit (``degC``, ``mmHg``, ``/min`` ...), or None for an empty unit.

    Spellings outside the alias table come back lower-cased without spaces, so ``mL`` and
    ``ml`` compare equal.
    """
    if text is None:
        return None
    key = re.sub(r"[\s\u00b0\u00ba?.]", "", str(text).lower())
    if key.startswith("deg") and key[3:] in ("c", "f"):
        key = "deg" + key[3:]
    if not key:
        return None
    return _UNIT_ALIASES.get(key, key)


def convert_units(
    frame: pl.DataFrame, channels: tuple[ChannelSpec, ...], path: Path, unit_column: str = "unit"
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Convert ``value`` of each row from its unit (``unit_column``) to the unit of the channel its variable feeds.

    Returns the frame without ``unit_column`` and counts: ``rows_without_unit`` and
    ``converted_rows`` per "variable: unit -> channel unit". Raises when a unit matches
    neither the channel's unit nor a known conversion, or when one variable feeds channels
    with different units.
    """
    target = variable_units(channels)
    pairs = frame.group_by("parameter", unit_column).len().sort("parameter", unit_column, nulls_last=True)
    rules = []
    without_unit = 0
    converted: dict[str, int] = {}
    for variable, unit, rows in pairs.iter_rows():
        channel_target = target.get(variable)
        have = canonical_unit(unit)
        if channel_target is None or not channel_target[1]:
            continue
        channel_name, channel_unit = channel_target
        if have is None:
            without_unit += rows
            continue
        if have == canonical_unit(channel_unit):
            continue
        factors = UNIT_CONVERSIONS.get((have, canonical_unit(channel_unit)))
        if factors is None:
            raise TardiffInputError(
                f"{path}: variable {variable!r} has unit {unit!r} on {rows} row(s), but channel {channel_name} "
                f"expects {channel_unit!r} and no conversion from {unit!r} is known (known: "
                f"{sorted(f'{a}->{b}' for a, b in UNIT_CONVERSIONS)}). Convert those rows to {channel_unit!r}, set the "
                f"channel's unit to {unit!r}, or remove {variable!r} from the channel's sources"
            )
        rules.append({"parameter": variable, unit_column: unit, "_scale": factors[0], "_offset": factors[1]})
        converted[f"{variable}: {unit} -> {channel_unit}"] = int(rows)
    if rules:
        table = pl.DataFrame(
            rules,
            schema={"parameter": pl.Utf8, unit_column: frame.schema[unit_column], "_scale": pl.Float64,
                    "_offset": pl.Float64},
        )
        frame = frame.join(table, on=["parameter", unit_column], how="left", nulls_equal=False, maintain_order="left")
        frame = frame.with_columns(
            (pl.col("value") * pl.col("_scale").fill_null(1.0) + pl.col("_offset").fill_null(0.0)).alias("value")
        ).drop("_scale", "_offset")
        for key, rows in converted.items():
            logger.info("converted %d row(s) of %s from %s", rows, path.name, key)
    if without_unit:
        logger.info("%d row(s) of %s have no unit and are taken to be in their channel's unit", without_unit, path)
    return frame.drop(unit_column), {"rows_without_unit": without_unit, "converted_rows": converted}


def variable_units(channels: tuple[ChannelSpec, ...]) -> dict[str, tuple[str, str]]:
    """Map each source variable to (channel name, channel unit); raise when it feeds channels of different units."""
    target: dict[str, tuple[str, str]] = {}
    for channel in channels:
        for source in channel.sources:
            previous = target.get(source)
            if previous and canonical_unit(previous[1]) != canonical_unit(channel.unit):
                raise TardiffInputError(
                    f"variable {source!r} is a source of channel {previous[0]} ({previous[1]!r}) and of channel "
                    f"{channel.name} ({channel.unit!r}); a variable can feed channels of one unit only, so fix "
                    f"data.channels in params.yaml"
                )
            target.setdefault(source, (channel.name, channel.unit))
    return target


def apply_window(frame: pl.DataFrame, hours: int, counts: dict[str, Any]) -> pl.DataFrame:
    """Keep rows with ``minute`` in [0, hours * 60) and count the rows before and after the window in ``counts``."""
    before = frame["minute"] < 0
    after = frame["minute"] >= hours * 60
    counts["rows_before_window"] = counts.get("rows_before_window", 0) + int(before.sum())
    counts["rows_after_window"] = counts.get("rows_after_window", 0) + int(after.sum())
    if before.any():
        logger.info("dropped %d row(s) before the window start", int(before.sum()))
    return frame.filter(~before & ~after)


def count_duplicate_times(frame: pl.DataFrame, time_column: str) -> int:
    """Count rows that share stay, variable and ``time_column`` with an earlier row; they are all kept."""
    keys = ["record_id", "parameter", time_column]
    number = int(frame.select(pl.len() - pl.struct(keys).n_unique()).item()) if frame.height else 0
    if number:
        logger.info("%d row(s) repeat the stay, variable and time of another row; all are kept", number)
    return number


def parse_datetimes(
    frame: pl.DataFrame, column: str, path: Path, context: str = "", allow_null: bool = False
) -> pl.Series:
    """Return ``column`` as a time-zone-naive Datetime("us") series; time-zone-aware values are converted to UTC.

    Text is parsed as ISO 8601 (``2101-10-20 19:10:00`` or ``2101-10-20T19:10:00``), with the
    format inferred from the first value. Raises on an unparseable value, and on a missing
    one unless ``allow_null``.
    """
    source = frame[column]
    has_value = source.is_not_null()
    if source.dtype == pl.Utf8:
        source = source.str.strip_chars()
        has_value = source.is_not_null() & (source != "")
        parsed = source.str.to_datetime(time_unit="us", strict=False)
    elif isinstance(source.dtype, (pl.Datetime, pl.Date)):
        parsed = source
    else:
        raise TardiffInputError(
            f"{path}: column {column!r} has type {source.dtype}; {context}it must contain dates and times (ISO 8601 "
            f"text such as 2101-10-20 19:10:00, or a timestamp column in Parquet)"
        )
    if isinstance(parsed.dtype, pl.Datetime) and parsed.dtype.time_zone is not None:
        parsed = parsed.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    parsed = parsed.cast(pl.Datetime("us"))
    invalid = (parsed.is_null() & has_value) if allow_null else parsed.is_null()
    if invalid.any():
        bad = frame.filter(invalid).row(0, named=True)
        raise TardiffInputError(
            f"{path}, {row_location(bad, path)}: {column} {bad[column]!r} is missing or not a date and time "
            f"({int(invalid.sum())} such row(s)). Write ISO 8601 dates and times, e.g. 2101-10-20 19:10:00"
        )
    return parsed.alias(column)


def drop_unlabelled(
    observations: pl.DataFrame, labels: pl.DataFrame, counts: dict[str, Any], observations_path: Path,
    labels_path: Path,
) -> pl.DataFrame:
    """Drop the observations of stays absent from ``labels`` and count those stays as ``stays_without_label``.

    Raises when no observed stay has a label, because then the two files use different ids.
    """
    observed = set(observations["record_id"].unique().to_list())
    labelled = set(labels["record_id"].to_list())
    unlabelled = sorted(observed - labelled)
    count_ids(counts, "stays_without_label", unlabelled)
    if observed and not observed & labelled:
        raise TardiffInputError(
            f"no stay id of {observations_path} occurs in the labels {labels_path} (first observation ids "
            f"{sorted(observed)[:5]}, first label ids {sorted(labelled)[:5]}); both files must use the same stay ids"
        )
    if unlabelled:
        logger.warning("excluded %d stay(s) of %s without a label in %s", len(unlabelled), observations_path,
                       labels_path)
    return observations.filter(pl.col("record_id").is_in(sorted(labelled)))


def limit_stays(labels: pl.DataFrame, max_stays: int | None, counts: dict[str, Any]) -> pl.DataFrame:
    """Sort ``labels`` by record id and keep the first ``max_stays`` rows (all when None), counting the rest."""
    if max_stays is not None and max_stays < 1:
        raise TardiffInputError(f"data.max_stays is {max_stays}; use a positive integer or null for all stays")
    labels = labels.sort("record_id")
    counts["stays_labelled"] = labels.height
    if max_stays is not None:
        counts["stays_over_max_stays"] = max(labels.height - max_stays, 0)
        labels = labels.head(max_stays)
    return labels


def finish_cohort(
    observations: pl.DataFrame, labels: pl.DataFrame, counts: dict[str, Any], labels_path: Path,
    observations_path: Path, max_stays: int | None,
) -> RawCohort:
    """Exclude labelled stays without observations, check both classes remain and return the RawCohort.

    ``observations`` must already belong to stays of ``labels`` (record_id, label).
    """
    observed = set(observations["record_id"].unique().to_list())
    empty = sorted(set(labels["record_id"].to_list()) - observed)
    count_ids(counts, "stays_without_observations", empty)
    if empty:
        logger.info("excluded %d labelled stay(s) without any observation in the window", len(empty))
    outcomes = labels.filter(pl.col("record_id").is_in(sorted(observed)))
    if outcomes.height == 0:
        raise TardiffInputError(
            f"none of the {labels.height} labelled stay(s) of {labels_path} has an observation of the channel "
            f"sources in the window in {observations_path}; check the stay ids, data.channels[].sources and data.hours"
        )
    label_counts = {str(k): int((outcomes["label"] == k).sum()) for k in (0, 1)}
    counts["label_counts"] = label_counts
    if min(label_counts.values()) == 0:
        raise TardiffInputError(
            f"the labelled stays with observations have one class only: label counts {label_counts} (labels "
            f"{labels_path}, data.max_stays={max_stays}). A binary task needs both classes; use more stays or check "
            f"the labels"
        )
    observations = observations.select(
        pl.col("record_id").cast(pl.Int64),
        pl.col("minute").cast(pl.Int32),
        pl.col("parameter").cast(pl.Utf8),
        pl.col("value").cast(pl.Float64),
    ).sort(["record_id", "minute"], maintain_order=True)
    outcomes = outcomes.select(pl.col("record_id").cast(pl.Int64), pl.col("label").cast(pl.Int8))
    counts["stays"] = outcomes.height
    counts["observations"] = observations.height
    logger.info("read %d stays and %d observations from %s", outcomes.height, observations.height, observations_path)
    return RawCohort(observations=observations, outcomes=outcomes, counts=counts)


def minutes_from_number(column: str, minutes_per_unit: float) -> pl.Expr:
    """Floor a time in hours or minutes to whole minutes; rounding to 1e-6 first absorbs float error (7/60 * 60)."""
    return (pl.col(column) * minutes_per_unit).round(6).floor().cast(pl.Int64)


def minutes_between(later: str, earlier: str) -> pl.Expr:
    """Return the whole minutes from datetime ``earlier`` to ``later``, floored (so -30 s gives -1)."""
    micro = (pl.col(later) - pl.col(earlier)).dt.total_microseconds()
    return micro.floordiv(60_000_000).cast(pl.Int64)


def count_ids(counts: dict[str, Any], key: str, ids: list[int]) -> None:
    """Store the number of ``ids`` under ``key`` and the first MAX_LISTED_IDS of them under ``<key>_first_ids``."""
    counts[key] = len(ids)
    counts[f"{key}_first_ids"] = [int(i) for i in ids[:MAX_LISTED_IDS]]


def row_location(row: dict[str, Any], path: Path) -> str:
    """Locate a row for an error: "line N" of a CSV file (header is line 1) or "row N" (0-based) of Parquet."""
    index = row.get("_row")
    where = f" of {Path(row['_file']).name}" if row.get("_file") else ""
    if index is None:
        return f"a row{where}"
    if str(row.get("_file") or path).lower().endswith(CSV_SUFFIXES):
        return f"line {int(index) + 2}{where}"
    return f"row {int(index)}{where}"
