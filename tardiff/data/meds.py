"""Read a MEDS dataset (Medical Event Data Standard) and a MEDS label file (``data.dataset: meds``).

MEDS data shards are Parquet files with subject_id (int64), time (timestamp, null for
static events), code (string) and numeric_value (float32, nullable), plus optional
columns that this reader ignores. ``data.dir`` is a MEDS root, whose shards lie under
``data/`` (``data/train/0.parquet`` ...), or a folder holding the shards directly.

A MEDS label file (``data.labels_file``, a Parquet file or a folder of them, inside
``data.dir`` unless absolute) has subject_id, prediction_time and a value column. The
label is ``boolean_value``; when that column is absent or entirely null,
``integer_value`` (0 or 1) is used.

Each label row is one sample. MEDS allows a model to use the events with time at or
before prediction_time, so the window is the ``data.hours`` hours ending at
prediction_time, left-open and right-closed: hour h of the grid contains the events with time in
(prediction_time - (hours - h) h, prediction_time - (hours - h - 1) h]. In minutes,
minute = hours * 60 - 1 - floor((prediction_time - time) / 1 min). Events after
prediction_time are dropped and counted; so are events before the window and static
events.

``record_id`` is subject_id when each subject has one label row, else the 0-based index
of the label row (label files read in path order). Codes are the variable names, so
channel sources list codes ("LOINC/8867-4", "HR"). MEDS has no unit column in its core
schema, so values are taken to be in the channel's unit.
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
    count_duplicate_times,
    finish_cohort,
    limit_stays,
    parquet_files,
    parse_binary_labels,
    parse_numbers,
    require_columns,
    resolve_input,
    source_variables,
)
from tardiff.errors import CorruptFileError, MissingDataError, TardiffInputError

if TYPE_CHECKING:
    from tardiff.config import ChannelSpec, DataConfig

logger = logging.getLogger(__name__)

DATA_COLUMNS = ("subject_id", "time", "code", "numeric_value")
LABEL_COLUMNS = ("subject_id", "prediction_time")
MICROSECONDS_PER_MINUTE = 60_000_000


@register_reader("meds")
def read_meds_cohort(config: DataConfig) -> RawCohort:
    """Reader for ``data.dataset: meds``: one sample per label row, window ending at prediction_time."""
    return read_meds(Path(config.dir), config.labels_file, config.channels, config.hours, config.max_stays)


def read_meds(
    root: Path,
    labels_file: str,
    channels: tuple[ChannelSpec, ...],
    hours: int,
    max_stays: int | None = None,
) -> RawCohort:
    """Read the channels' codes in the window before each label's prediction time into a RawCohort.

    ``max_stays`` keeps the first N samples by record id.
    """
    root = Path(root)
    labels_path = resolve_input(root, labels_file, "labels_file", "meds")
    shards = data_shards(root, labels_path)
    counts: dict[str, Any] = {"data_shards": len(shards), "labels_file": str(labels_path)}

    labels = read_meds_labels(labels_path, counts)
    labels = limit_stays(labels, max_stays, counts)
    events = _read_events(shards, root, channels, labels["subject_id"].unique(), counts)

    static = events["time"].is_null()
    counts["static_rows"] = int(static.sum())
    events, counts["missing_values"] = parse_numbers(events.filter(~static), "value", root, "numeric_value")

    # Join every event to each label row of its subject, so a subject with several label rows
    # contributes its events to several samples and the row counts below are per sample.
    # NOTE: memory grows with events x label rows per subject, which is large for hourly label files.
    samples = events.join(labels.select("subject_id", "record_id", "prediction_time"), on="subject_id", how="inner")
    before_prediction = (pl.col("prediction_time") - pl.col("time")).dt.total_microseconds()
    samples = samples.with_columns(before_prediction.alias("_before"))
    after = samples["_before"] < 0
    counts["rows_after_prediction_time"] = int(after.sum())
    samples = samples.filter(~after).with_columns(
        (hours * 60 - 1 - pl.col("_before").floordiv(MICROSECONDS_PER_MINUTE)).alias("minute")
    )
    samples = apply_window(samples, hours, counts)
    counts["duplicate_time_rows"] = count_duplicate_times(samples, "time")
    return finish_cohort(samples, labels, counts, labels_path, root, max_stays)


def data_shards(root: Path, labels_path: Path) -> list[Path]:
    """Return the data shards: Parquet files under ``root/data`` (a MEDS root), else directly in ``root``.

    The label file is left out when it lies among them.
    """
    if not root.is_dir():
        raise MissingDataError(f"MEDS folder {root} (data.dir) not found; point data.dir at a MEDS root or shards")
    folder = root / "data"
    if folder.is_dir():
        shards = parquet_files(folder)
    else:
        shards = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in (".parquet", ".pq"))
    labels = set(parquet_files(labels_path)) if labels_path.exists() else set()
    shards = [shard for shard in shards if shard not in labels]
    if not shards:
        raise MissingDataError(
            f"no MEDS data shard (*.parquet) found in {folder if folder.is_dir() else root}; point data.dir at a MEDS "
            f"root (with data/*.parquet) or at a folder of data shards"
        )
    return shards


def read_meds_labels(path: Path, counts: dict[str, Any]) -> pl.DataFrame:
    """Read label rows into subject_id, prediction_time, label (Int8) and record_id (Int64).

    Raises on a missing column, an empty file, a missing prediction time or a label that is
    not boolean or 0/1.
    """
    files = parquet_files(path)
    try:
        lazy = pl.scan_parquet(files)
        schema = lazy.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise CorruptFileError(f"MEDS label file {path} cannot be read as Parquet ({exc}); replace it") from exc
    fix = "A MEDS label file needs subject_id, prediction_time and boolean_value (or integer_value) columns"
    require_columns(schema.names(), LABEL_COLUMNS, path, fix)
    frame = collect(lazy.with_row_index("_row"), path)
    if frame.height == 0:
        raise TardiffInputError(f"MEDS label file {path} contains no rows; it needs one row per sample")

    value_column = "boolean_value"
    if value_column not in frame.columns or frame[value_column].null_count() == frame.height:
        value_column = "integer_value"
    require_columns(frame.columns, (value_column,), path, fix)
    if not frame["subject_id"].dtype.is_integer() or frame["subject_id"].null_count():
        raise TardiffInputError(
            f"MEDS label file {path}: subject_id has type {frame['subject_id'].dtype} with "
            f"{frame['subject_id'].null_count()} null(s); it must be a non-null int64 column"
        )
    prediction_time = _naive_datetimes(frame["prediction_time"], path, "prediction_time")
    missing_time = prediction_time.is_null()
    if missing_time.any():
        row = int(frame.filter(missing_time)["_row"][0])
        raise TardiffInputError(
            f"MEDS label file {path}, row {row}: prediction_time is null ({int(missing_time.sum())} such row(s)); "
            f"every label row needs its prediction time"
        )
    labels = parse_binary_labels(frame, value_column, path)
    unique_subjects = frame["subject_id"].n_unique() == frame.height
    record_id = frame["subject_id"] if unique_subjects else frame["_row"]
    counts["record_id_from"] = "subject_id" if unique_subjects else "label_row"
    counts["label_rows"] = frame.height
    counts["label_column"] = value_column
    return pl.DataFrame(
        {
            "subject_id": frame["subject_id"].cast(pl.Int64),
            "prediction_time": prediction_time,
            "label": labels,
            "record_id": record_id.cast(pl.Int64),
        }
    )


def _read_events(
    shards: list[Path], root: Path, channels: tuple[ChannelSpec, ...], subjects: pl.Series, counts: dict[str, Any]
) -> pl.DataFrame:
    """Read the events of the channels' codes for ``subjects`` as subject_id, time, parameter, value, _file."""
    try:
        lazy = pl.scan_parquet(shards, include_file_paths="_file")
        schema = lazy.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise CorruptFileError(
            f"MEDS data shards under {root} cannot be read as Parquet with one schema ({exc}); check that every "
            f"shard follows the MEDS data schema"
        ) from exc
    require_columns(
        schema.names(), DATA_COLUMNS, root,
        "MEDS data shards need subject_id, time, code and numeric_value columns (MEDS data schema)",
    )
    if not isinstance(schema["time"], pl.Datetime) or not schema["numeric_value"].is_numeric():
        raise TardiffInputError(
            f"MEDS data shards under {root}: time has type {schema['time']} and numeric_value "
            f"{schema['numeric_value']}; the MEDS data schema needs a timestamp and a float column"
        )
    counts["rows_read"] = int(collect(lazy.select(pl.len()), root).item())
    if counts["rows_read"] == 0:
        raise TardiffInputError(f"the MEDS data shards under {root} contain no rows")

    codes = source_variables(channels)
    code = pl.col("code").cast(pl.Utf8)
    selected = collect(
        lazy.filter(code.is_in(codes) & pl.col("subject_id").is_in(subjects.implode())).select(
            pl.col("subject_id").cast(pl.Int64),
            pl.col("time"),
            code.alias("parameter"),
            pl.col("numeric_value").alias("value"),
            "_file",
        ),
        root,
    )
    counts["rows_selected"] = selected.height
    present = set(selected["parameter"].unique().to_list())
    known: list[str] = []
    if any(not present & set(channel.sources) for channel in channels):
        known = collect(lazy.select(code.unique()), root)["code"].drop_nulls().to_list()
    counts["sources_absent"] = check_sources_found(present, channels, root, known)
    return selected.with_columns(_naive_datetimes(selected["time"], root, "time"))


def _naive_datetimes(series: pl.Series, path: Path, column: str) -> pl.Series:
    """Return a Datetime column as time-zone-naive microseconds; time-zone-aware values are converted to UTC."""
    if not isinstance(series.dtype, pl.Datetime):
        raise TardiffInputError(
            f"{path}: column {column} has type {series.dtype}; the MEDS schema needs a timestamp column"
        )
    if series.dtype.time_zone is not None:
        series = series.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return series.cast(pl.Datetime("us"))
