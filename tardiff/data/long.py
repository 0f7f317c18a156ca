"""Read a user's own ICU data from a long observation table and a labels table (``data.dataset: long``).

Observations, at ``data.dir / data.observations_file`` (CSV, CSV.gz or Parquet, chosen by
the file extension), one row per measurement:

- ``stay_id``: integer id of the stay.
- ``time``: when the value was measured. With ``data.time_unit: hours`` or ``minutes`` it
  is a number of hours or minutes since the start of the stay's window (ICU admission,
  say), or a Parquet duration. With ``data.time_unit: datetime`` it is a date and time
  (ISO 8601 text in CSV, a timestamp in Parquet), and the labels table gives each stay's
  window start.
- ``variable``: the variable name that ``data.channels[].sources`` refer to.
- ``value``: the number, in the channel's unit.
- ``unit`` (optional): the value's unit. Rows in another unit are converted or rejected
  (tardiff.data.validate).

Labels, at ``data.dir / data.labels_file`` (CSV or Parquet): ``stay_id``, ``label`` (0/1
or boolean) and, with ``time_unit: datetime`` only, ``start`` (the window start). The
labels table defines the cohort. An explicit ``start`` is required rather than taking
the first observation, which would move the window with whatever happened to be charted
first.

Times are floored to whole minutes, so hour h of the grid contains the times in
[h, h + 1) hours. The other rules (missing values, units, window, duplicates, missing labels) are
those of :mod:`tardiff.data.validate`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from tardiff.data.sources import RawCohort, register_reader
from tardiff.data.validate import (
    apply_window,
    check_sources_found,
    collect,
    convert_units,
    count_duplicate_times,
    drop_unlabelled,
    finish_cohort,
    limit_stays,
    minutes_between,
    minutes_from_number,
    parse_binary_labels,
    parse_datetimes,
    parse_integer_ids,
    parse_numbers,
    require_columns,
    require_rows,
    require_unique,
    resolve_input,
    row_location,
    scan_table,
    source_variables,
)
from tardiff.errors import TardiffInputError

if TYPE_CHECKING:
    from tardiff.config import ChannelSpec, DataConfig

logger = logging.getLogger(__name__)

OBSERVATION_COLUMNS = ("stay_id", "time", "variable", "value")
LABEL_COLUMNS = ("stay_id", "label")
MINUTES_PER_UNIT = {"hours": 60.0, "minutes": 1.0}
TIME_UNITS = ("hours", "minutes", "datetime")


@register_reader("long")
def read_long_cohort(config: DataConfig) -> RawCohort:
    """Reader for ``data.dataset: long``: the user's observation and labels tables (module docstring)."""
    return read_long(
        Path(config.dir),
        config.observations_file,
        config.labels_file,
        config.channels,
        config.hours,
        config.time_unit,
        config.max_stays,
    )


def read_long(
    data_dir: Path,
    observations_file: str,
    labels_file: str,
    channels: tuple[ChannelSpec, ...],
    hours: int,
    time_unit: str = "hours",
    max_stays: int | None = None,
) -> RawCohort:
    """Read the long table and labels into a RawCohort of the channels' source variables.

    Only rows of variables named in ``channels`` are read. ``max_stays`` keeps the first N
    labelled stays by id. Raises TardiffInputError (or MissingDataError) naming the file,
    the row and the fix for every malformed input.
    """
    if time_unit not in TIME_UNITS:
        raise TardiffInputError(f"data.time_unit is {time_unit!r}; choose one of {list(TIME_UNITS)}")
    observations_path = resolve_input(data_dir, observations_file, "observations_file", "long")
    labels_path = resolve_input(data_dir, labels_file, "labels_file", "long")
    counts: dict[str, Any] = {
        "observations_file": str(observations_path),
        "labels_file": str(labels_path),
        "time_unit": time_unit,
    }

    labels = read_labels(labels_path, time_unit == "datetime")
    observations = _read_selected_rows(observations_path, channels, counts)
    observations = drop_unlabelled(observations, labels, counts, observations_path, labels_path)
    labels = limit_stays(labels, max_stays, counts)
    observations = observations.filter(pl.col("record_id").is_in(labels["record_id"].implode()))

    observations, counts["missing_values"] = parse_numbers(observations, "value", observations_path, "value")
    observations = _add_minutes(observations, labels, time_unit, observations_path, labels_path)
    if "unit" in observations.columns:
        observations, unit_counts = convert_units(observations, channels, observations_path)
        counts.update(unit_counts)
    observations = apply_window(observations, hours, counts)
    counts["duplicate_time_rows"] = count_duplicate_times(observations, "time")
    return finish_cohort(observations, labels, counts, labels_path, observations_path, max_stays)


def read_labels(path: Path, with_start: bool) -> pl.DataFrame:
    """Read the labels table into record_id (Int64), label (Int8) and, when ``with_start``, start (Datetime).

    Raises on a missing column, an empty table, a repeated stay id, a label other than
    0/1 or boolean, or a missing or unparseable start.
    """
    lazy = scan_table(path)
    required = LABEL_COLUMNS + (("start",) if with_start else ())
    fix = "The labels table needs columns stay_id and label" + (
        ", and start (each stay's window start) because data.time_unit is datetime" if with_start else ""
    )
    require_columns(lazy.collect_schema().names(), required, path, fix)
    require_rows(lazy, path)
    frame = collect(lazy.with_row_index("_row").select("_row", *required), path)
    frame = parse_integer_ids(frame, "stay_id", path)
    require_unique(frame, "record_id", path, "stay id")
    frame = frame.with_columns(parse_binary_labels(frame, "label", path))
    columns = ["record_id", "label"]
    if with_start:
        frame = frame.with_columns(parse_datetimes(frame, "start", path, "data.time_unit is datetime, so "))
        columns.append("start")
    return frame.select(columns)


def _read_selected_rows(path: Path, channels: tuple[ChannelSpec, ...], counts: dict[str, Any]) -> pl.DataFrame:
    """Read the rows of the channels' source variables, with record_id, parameter and the 0-based row ``_row``."""
    lazy = scan_table(path)
    columns = lazy.collect_schema().names()
    require_columns(
        columns, OBSERVATION_COLUMNS, path,
        "The observation table needs columns stay_id, time, variable, value and optionally unit",
    )
    require_rows(lazy, path)
    sources = source_variables(channels)
    keep = ["_row", *OBSERVATION_COLUMNS] + (["unit"] if "unit" in columns else [])
    text_columns = [pl.col(name).cast(pl.Utf8) for name in ("variable", "unit") if name in columns]
    indexed = lazy.with_row_index("_row").with_columns(text_columns)
    selected = collect(indexed.filter(pl.col("variable").is_in(sources)).select(keep), path)
    counts["rows_read"] = int(collect(lazy.select(pl.len()), path).item())
    counts["rows_selected"] = selected.height
    counts["rows_of_other_variables"] = counts["rows_read"] - selected.height

    present = set(selected["variable"].unique().to_list())
    known: list[str] = []
    if any(not present & set(channel.sources) for channel in channels):
        known = collect(indexed.select(pl.col("variable").unique()), path)["variable"].drop_nulls().to_list()
    counts["sources_absent"] = check_sources_found(present, channels, path, known)
    selected = parse_integer_ids(selected, "stay_id", path)
    return selected.rename({"variable": "parameter"})


def _add_minutes(
    frame: pl.DataFrame, labels: pl.DataFrame, time_unit: str, path: Path, labels_path: Path
) -> pl.DataFrame:
    """Add ``minute`` (whole minutes since the window start) and keep ``time`` for the duplicate count."""
    if time_unit == "datetime":
        frame = frame.with_columns(parse_datetimes(frame, "time", path, "data.time_unit is datetime, so "))
        frame = frame.join(labels.select("record_id", "start"), on="record_id", how="left")
        return frame.with_columns(minutes_between("time", "start").alias("minute")).drop("start")

    source = frame["time"]
    if source.dtype == pl.Utf8:
        numbers = source.str.strip_chars().cast(pl.Float64, strict=False)
    elif isinstance(source.dtype, pl.Duration):
        # A Parquet duration carries its own unit, so hours and minutes give the same minute.
        numbers = source.dt.total_microseconds().cast(pl.Float64) / (60e6 * MINUTES_PER_UNIT[time_unit])
    elif source.dtype.is_numeric():
        numbers = source.cast(pl.Float64)
    else:
        raise TardiffInputError(
            f"{path}: column 'time' has type {source.dtype}, but data.time_unit is {time_unit!r}, so it must contain "
            f"numbers of {time_unit} since the window start; set data.time_unit to datetime for dates and times"
        )
    invalid = numbers.is_null() | ~numbers.is_finite().fill_null(False)
    if invalid.any():
        bad = frame.filter(invalid).row(0, named=True)
        raise TardiffInputError(
            f"{path}, {row_location(bad, path)}: time {bad['time']!r} is missing or not a finite number of {time_unit} "
            f"({int(invalid.sum())} such row(s)). Every row needs a time; with dates and times set data.time_unit "
            f"to datetime and give a start column in {labels_path.name}"
        )
    frame = frame.with_columns(numbers.alias("time"))
    return frame.with_columns(minutes_from_number("time", MINUTES_PER_UNIT[time_unit]).alias("minute"))
