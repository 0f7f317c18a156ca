"""Read a cohort exported by Yet Another ICU Benchmark (YAIB): ``dyn.parquet`` and ``outc.parquet``.

``data.dir`` is one cohort folder, ``<root>/<task>/<database>`` (for example
``yaib/mortality24/eicu_demo``). ``dyn.parquet`` is wide: ``stay_id``, ``time`` (a duration
since ICU admission, in hourly steps) and one column per variable (``hr``, ``sbp``, ...;
ricu names and units). It is melted to the long observations of the reader contract, with
``parameter`` the column name and ``minute`` the time in minutes, so the row at time
``t`` hours lands in grid hour ``t``. Nulls and NaN are dropped and counted.

Labels by ``data.task``:

- ``mortality24``: ``outc.parquet`` has one 0/1 label per stay (ICU mortality after the
  first 24 hours).
- ``los``: ``outc.parquet`` has one row per stay and hour with the remaining length of stay
  in hours (capped at 168 in YAIB's eICU demo cohort). The stay length is the window end plus the remaining
  length of stay at the first label row at or after the window end, and the label is 1
  when it exceeds ``data.los_threshold_hours``. Stays that end before the window ends have
  no such row and are excluded and counted.
- ``aki``: one 0/1 label per stay and hour, and the stay is positive when any hour is 1.
  In YAIB's eICU demo cohort a label that turns 1 stays 1, and the stay's rows end 6 to
  12 hours later. ``data.exclude_positive_in_window`` drops stays with a 1 in the window.

Checks and what they do:

- Errors (TardiffInputError naming the file, column, value and fix) mean a damaged or
  mismatched export. They are raised for a missing file or column, a non-numeric variable
  column and a ``time`` that is not a duration or is null. They are also raised for an
  infinite value, a repeated (stay_id, time) row, a null or invalid label, and a channel
  source that ``dyn.parquet`` lacks.
- Counted exclusions, logged: rows with a negative time are dropped, because they were
  charted before ICU admission (ricu can export such rows) and the window never uses
  them. Stays with data but no label, and stays with labels but no data, are dropped.
  Each such stay is valid on its own, so it is dropped instead of rejecting the cohort.
  The task rules above exclude further stays.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from tardiff.data.checksums import Checksums, read_checksums, verify_if_listed, warn_no_checksums
from tardiff.data.sources import OBSERVATION_SCHEMA, RawCohort, register_reader
from tardiff.errors import CorruptFileError, MissingDataError, TardiffInputError

if TYPE_CHECKING:
    from tardiff.config import DataConfig

logger = logging.getLogger(__name__)

TASKS = ("mortality24", "los", "aki")
HOURLY_TASKS = ("los", "aki")
DYN_FILE = "dyn.parquet"
OUTCOME_FILE = "outc.parquet"
ID_COLUMN = "stay_id"
TIME_COLUMN = "time"
# A YAIB cohort folder is <root>/<task>/<database>, and its checksum file is in <root>.
CHECKSUM_SEARCH_DEPTH = 2
REEXPORT_HINT = "re-export the cohort with YAIB or restore the original file"


def read_yaib(
    cohort_dir: Path,
    task: str,
    hours: int = 24,
    required_variables: tuple[str, ...] = (),
    max_stays: int | None = None,
    min_stay_hours: float = 0.0,
    exclude_positive_in_window: bool = False,
    los_threshold_hours: float = 72.0,
    verify_checksums: bool = True,
) -> RawCohort:
    """Read one YAIB cohort folder and build one binary label per stay for ``task`` (module docstring).

    ``required_variables`` are the dyn columns that the configured channels use, and a
    missing one raises. ``max_stays`` keeps the first N stays by stay id among those with both data and
    labels. Stays are then excluded and counted in this order:

    1. ``min_stay_hours``: a stay's length is the time of its last hourly label row for los
       and aki, and of its last dyn row for mortality24.
    2. Stays ending before the window ends (los).
    3. Stays positive in the window (aki with ``exclude_positive_in_window``).
    4. Stays without any observation.

    Returns observations of every dyn variable, the labels and the counts.
    """
    cohort_dir = Path(cohort_dir)
    if task not in TASKS:
        raise TardiffInputError(f"data.task is {task!r}; the yaib reader builds one of {list(TASKS)}")
    if exclude_positive_in_window and task != "aki":
        raise TardiffInputError(
            f"data.exclude_positive_in_window is true for task {task!r}; it applies to the hourly event label of "
            f"task 'aki' only, so set it to false"
        )
    if max_stays is not None and max_stays < 1:
        raise TardiffInputError(f"data.max_stays is {max_stays}; use a positive integer or null for all stays")
    if hours < 1:
        raise TardiffInputError(f"data.hours is {hours}; use a positive number of hours")

    started = time.perf_counter()
    dyn_path, outcome_path = _find_input_files(cohort_dir)
    counts: dict[str, Any] = {"task": task, "files_verified": [], "files_unverified": []}
    checksums = _find_checksums(cohort_dir) if verify_checksums else None
    if verify_checksums and checksums is None:
        warn_no_checksums(cohort_dir)
    for path in (dyn_path, outcome_path):
        verify_if_listed(path, checksums, counts, REEXPORT_HINT)

    dyn = _read_dyn(dyn_path, required_variables, counts)
    labels = _read_outcomes(outcome_path, task, counts)
    stays = _match_stays(dyn, labels, dyn_path, outcome_path, counts)
    if max_stays is not None:
        stays = stays.head(max_stays)
    counts["max_stays"] = max_stays
    counts["stays_read"] = stays.height

    stay_table = _label_stays(task, stays, dyn, labels, hours, los_threshold_hours, outcome_path)
    stay_table = _apply_exclusions(stay_table, min_stay_hours, exclude_positive_in_window, hours, counts)

    observations = _to_long(dyn.filter(pl.col("record_id").is_in(stay_table["record_id"].implode())), counts)
    with_observations = observations["record_id"].unique()
    without = stay_table.filter(~pl.col("record_id").is_in(with_observations.implode()))["record_id"]
    counts["stays_without_observations"] = without.len()
    counts["stays_without_observations_ids"] = without.sort().to_list()
    if without.len():
        logger.info("excluded %d stay(s) without any observation", without.len())
    outcomes = (
        stay_table.filter(pl.col("record_id").is_in(with_observations.implode()))
        .select("record_id", pl.col("label").cast(pl.Int8))
        .sort("record_id")
    )
    counts["stays"] = outcomes.height
    counts["positive_stays"] = int(outcomes["label"].sum())
    counts["observations"] = observations.height
    counts["seconds"] = round(time.perf_counter() - started, 2)
    logger.info(
        "read %d stays (%d positive for %s) and %d observations from %s in %.1f s",
        outcomes.height,
        counts["positive_stays"],
        task,
        observations.height,
        cohort_dir,
        counts["seconds"],
    )
    return RawCohort(observations=observations, outcomes=outcomes, counts=counts)


def _find_input_files(cohort_dir: Path) -> tuple[Path, Path]:
    if not cohort_dir.is_dir():
        raise MissingDataError(
            f"YAIB cohort folder {cohort_dir} not found; point data.dir at a folder <root>/<task>/<database> "
            f"with {DYN_FILE} and {OUTCOME_FILE}"
        )
    paths = (cohort_dir / DYN_FILE, cohort_dir / OUTCOME_FILE)
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise MissingDataError(
            f"YAIB files missing from {cohort_dir}: {', '.join(missing)} not found. A YAIB cohort folder contains "
            f"{DYN_FILE} (hourly variables) and {OUTCOME_FILE} (labels); check data.dir or {REEXPORT_HINT}"
        )
    return paths


def _find_checksums(cohort_dir: Path) -> Checksums | None:
    """Return the nearest checksum file in ``cohort_dir`` or up to CHECKSUM_SEARCH_DEPTH folders above it."""
    for folder in [cohort_dir, *cohort_dir.resolve().parents][: CHECKSUM_SEARCH_DEPTH + 1]:
        checksums = read_checksums(folder, REEXPORT_HINT)
        if checksums is not None:
            return checksums
    return None


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise CorruptFileError(
            f"{path} cannot be read as Parquet ({type(exc).__name__}: {exc}); {REEXPORT_HINT}"
        ) from exc


def _require_columns(frame: pl.DataFrame, path: Path, columns: tuple[str, ...], expectation: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise TardiffInputError(
            f"{path} lacks column(s) {missing} (it has {frame.columns[:8]}{'...' if frame.width > 8 else ''}); "
            f"{expectation}. Check data.dir or {REEXPORT_HINT}"
        )


def _check_id_and_time(frame: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Return ``frame`` with record_id (Int64) and minute (Int64) from stay_id and the time duration."""
    id_type = frame.schema[ID_COLUMN]
    if not id_type.is_integer():
        raise TardiffInputError(f"{path}: column {ID_COLUMN} has type {id_type}, expected integers; {REEXPORT_HINT}")
    time_type = frame.schema[TIME_COLUMN]
    if not isinstance(time_type, pl.Duration):
        raise TardiffInputError(
            f"{path}: column {TIME_COLUMN} has type {time_type}, expected a duration since ICU admission (YAIB "
            f"writes hourly steps as durations); convert it, for example with pl.duration(hours=...), or "
            f"{REEXPORT_HINT}"
        )
    nulls = frame.filter(pl.col(ID_COLUMN).is_null() | pl.col(TIME_COLUMN).is_null())
    if nulls.height:
        raise TardiffInputError(
            f"{path}: {nulls.height} row(s) have a null {ID_COLUMN} or {TIME_COLUMN} (first: "
            f"{nulls.select(ID_COLUMN, TIME_COLUMN).row(0)}); every row needs both, so {REEXPORT_HINT}"
        )
    return frame.with_columns(
        pl.col(ID_COLUMN).cast(pl.Int64).alias("record_id"),
        pl.col(TIME_COLUMN).dt.total_minutes().alias("minute"),
    )


def _check_unique_times(frame: pl.DataFrame, path: Path) -> None:
    repeated = frame.filter(pl.struct("record_id", "minute").is_duplicated())
    if repeated.height:
        record_id, minute = repeated.sort("record_id", "minute").select("record_id", "minute").row(0)
        raise TardiffInputError(
            f"{path}: {repeated.height} rows share their ({ID_COLUMN}, {TIME_COLUMN}) with another row, first "
            f"{ID_COLUMN} {record_id} at {minute / 60:g} h; keep one row per stay and hour, so {REEXPORT_HINT}"
        )


def _drop_before_admission(frame: pl.DataFrame, path: Path, counts: dict[str, Any], key: str) -> pl.DataFrame:
    negative = int((frame["minute"] < 0).sum())
    counts[key] = negative
    if negative:
        logger.info("dropped %d row(s) of %s with a negative time (before ICU admission)", negative, path)
    return frame.filter(pl.col("minute") >= 0)


def _read_dyn(path: Path, required_variables: tuple[str, ...], counts: dict[str, Any]) -> pl.DataFrame:
    """Read and check ``dyn.parquet``; return record_id, minute and the numeric variable columns as Float64."""
    frame = _read_parquet(path)
    _require_columns(frame, path, (ID_COLUMN, TIME_COLUMN), f"a YAIB {DYN_FILE} has {ID_COLUMN}, {TIME_COLUMN}")
    variables = [column for column in frame.columns if column not in (ID_COLUMN, TIME_COLUMN)]
    missing = [name for name in dict.fromkeys(required_variables) if name not in variables]
    if missing:
        raise TardiffInputError(
            f"{path} lacks variable column(s) {missing} that data.channels uses as sources; available: "
            f"{variables}. Fix the channel sources in params.yaml or {REEXPORT_HINT}"
        )
    non_numeric = {column: str(frame.schema[column]) for column in variables if not frame.schema[column].is_numeric()}
    if non_numeric:
        raise TardiffInputError(
            f"{path}: variable column(s) {non_numeric} are not numeric; every column besides {ID_COLUMN} and "
            f"{TIME_COLUMN} must hold numbers, so convert or drop them, or {REEXPORT_HINT}"
        )

    frame = _check_id_and_time(frame, path).select(
        "record_id", "minute", *[pl.col(column).cast(pl.Float64) for column in variables]
    )
    infinite = [column for column in variables if frame[column].is_infinite().any()]
    if infinite:
        row = frame.filter(pl.col(infinite[0]).is_infinite()).row(0, named=True)
        raise TardiffInputError(
            f"{path}: column {infinite[0]} is {row[infinite[0]]} for {ID_COLUMN} {row['record_id']} at "
            f"{row['minute'] / 60:g} h ({len(infinite)} column(s) with infinite values); write null for a missing "
            f"value or {REEXPORT_HINT}"
        )
    _check_unique_times(frame, path)
    counts["dyn_rows"] = frame.height
    counts["variables"] = len(variables)
    return _drop_before_admission(frame, path, counts, "dyn_rows_before_admission")


def _read_outcomes(path: Path, task: str, counts: dict[str, Any]) -> pl.DataFrame:
    """Read and check ``outc.parquet``; return record_id, label (Float64) and, for hourly tasks, minute."""
    frame = _read_parquet(path)
    hourly = task in HOURLY_TASKS
    expected = (ID_COLUMN, TIME_COLUMN, "label") if hourly else (ID_COLUMN, "label")
    _require_columns(frame, path, expected, f"task {task} needs an {OUTCOME_FILE} with columns {list(expected)}")
    if not hourly and TIME_COLUMN in frame.columns:
        raise TardiffInputError(
            f"{path} has hourly labels (a {TIME_COLUMN} column), but data.task {task!r} expects one label per stay; "
            f"set data.task to the task of this folder (los or aki) or point data.dir at a {task} cohort"
        )
    label_type = frame.schema["label"]
    if not (label_type.is_numeric() or label_type == pl.Boolean):
        raise TardiffInputError(f"{path}: column label has type {label_type}, expected numbers; {REEXPORT_HINT}")
    if hourly:
        frame = _check_id_and_time(frame, path).select("record_id", "minute", pl.col("label").cast(pl.Float64))
        _check_unique_times(frame, path)
    else:
        frame = frame.select(pl.col(ID_COLUMN).cast(pl.Int64).alias("record_id"), pl.col("label").cast(pl.Float64))
        repeated = frame.filter(pl.col("record_id").is_duplicated())["record_id"].unique().sort()
        if repeated.len():
            raise TardiffInputError(
                f"{path} lists {ID_COLUMN}(s) {repeated.head(5).to_list()} more than once; task {task} needs one "
                f"label per stay, so {REEXPORT_HINT}"
            )

    valid = pl.col("label").is_not_null() & pl.col("label").is_finite()
    valid = valid & (pl.col("label") >= 0) if task == "los" else valid & pl.col("label").is_in([0.0, 1.0])
    invalid = frame.filter(~valid)
    if invalid.height:
        row = invalid.row(0, named=True)
        rule = "a remaining length of stay in hours, not negative" if task == "los" else "0 or 1"
        value = "null" if row["label"] is None else row["label"]
        raise TardiffInputError(
            f"{path}: label is {value} for {ID_COLUMN} {row['record_id']} ({invalid.height} invalid row(s)); "
            f"task {task} needs {rule} in every row, so {REEXPORT_HINT}"
        )
    counts["label_rows"] = frame.height
    if hourly:
        frame = _drop_before_admission(frame, path, counts, "label_rows_before_admission")
    return frame


def _match_stays(
    dyn: pl.DataFrame, labels: pl.DataFrame, dyn_path: Path, outcome_path: Path, counts: dict[str, Any]
) -> pl.DataFrame:
    """Return the sorted stay ids present in both files; count and log the stays found in one file only."""
    dyn_ids = dyn["record_id"].unique()
    label_ids = labels["record_id"].unique()
    without_labels = dyn_ids.filter(~dyn_ids.is_in(label_ids.implode())).sort()
    without_data = label_ids.filter(~label_ids.is_in(dyn_ids.implode())).sort()
    counts["stays_without_labels"] = without_labels.len()
    counts["stays_without_labels_ids"] = without_labels.head(20).to_list()
    counts["stays_without_data"] = without_data.len()
    counts["stays_without_data_ids"] = without_data.head(20).to_list()
    if without_labels.len():
        first = without_labels.head(5).to_list()
        logger.warning("excluded %d stay(s) of %s without a label in %s (first: %s)", without_labels.len(),
                       dyn_path, outcome_path, first)
    if without_data.len():
        first = without_data.head(5).to_list()
        logger.warning("excluded %d stay(s) of %s without rows in %s (first: %s)", without_data.len(),
                       outcome_path, dyn_path, first)
    both = dyn_ids.filter(dyn_ids.is_in(label_ids.implode())).sort()
    return pl.DataFrame({"record_id": both})


def _label_stays(
    task: str,
    stays: pl.DataFrame,
    dyn: pl.DataFrame,
    labels: pl.DataFrame,
    hours: int,
    los_threshold_hours: float,
    outcome_path: Path,
) -> pl.DataFrame:
    """Return record_id, label, stay_hours, positive_in_window and ends_in_window for each stay of ``stays``."""
    window_end = hours * 60
    los_cap = float(labels["label"].max()) if task == "los" and labels.height else 0.0
    labels = labels.join(stays, on="record_id", how="semi")
    if task == "mortality24":
        last_row = dyn.join(stays, on="record_id", how="semi").group_by("record_id").agg(
            (pl.col("minute").max() / 60).alias("stay_hours")
        )
        table = labels.join(last_row, on="record_id").with_columns(
            pl.lit(False).alias("positive_in_window"), pl.lit(False).alias("ends_in_window")
        )
    elif task == "aki":
        table = labels.group_by("record_id").agg(
            (pl.col("label").max() == 1).alias("label"),
            (pl.col("minute").max() / 60).alias("stay_hours"),
            ((pl.col("label") == 1) & (pl.col("minute") < window_end)).any().alias("positive_in_window"),
            pl.lit(False).alias("ends_in_window"),
        )
    else:
        table = _label_los(labels, window_end, los_threshold_hours, los_cap, outcome_path)
    return table.select(
        "record_id",
        pl.col("label").cast(pl.Int8),
        pl.col("stay_hours").cast(pl.Float64),
        "positive_in_window",
        "ends_in_window",
    ).sort("record_id")


def _label_los(
    labels: pl.DataFrame, window_end: int, threshold_hours: float, cap: float, outcome_path: Path
) -> pl.DataFrame:
    """Label a stay 1 when window end + remaining length of stay there exceeds ``threshold_hours``.

    The remaining length of stay is read at the first label row at or after the window end.
    YAIB caps the remaining length of stay, and ``cap`` is the largest value in the whole label
    file. A capped value leaves the label undecided when window end + cap does not exceed
    the threshold, and that raises.
    """
    after_end = (
        labels.filter(pl.col("minute") >= window_end)
        .sort("record_id", "minute")
        .group_by("record_id", maintain_order=True)
        .first()
        .select("record_id", (pl.col("minute") / 60 + pl.col("label")).alias("total_hours"), "label")
    )
    undecided = after_end.filter((pl.col("label") >= cap) & (pl.col("total_hours") <= threshold_hours))
    if undecided.height:
        raise TardiffInputError(
            f"{outcome_path}: the remaining length of stay is capped at {cap:g} h, so window end + cap = "
            f"{undecided['total_hours'].min():g} h cannot decide data.los_threshold_hours {threshold_hours:g} for "
            f"{undecided.height} stay(s); choose a threshold below {window_end / 60 + cap:g} h"
        )
    last = labels.group_by("record_id").agg((pl.col("minute").max() / 60).alias("stay_hours"))
    return last.join(after_end, on="record_id", how="left").with_columns(
        (pl.col("total_hours") > threshold_hours).fill_null(False).alias("label"),
        pl.col("total_hours").is_null().alias("ends_in_window"),
        pl.lit(False).alias("positive_in_window"),
    )


def _apply_exclusions(
    stays: pl.DataFrame, min_stay_hours: float, exclude_positive_in_window: bool, hours: int, counts: dict[str, Any]
) -> pl.DataFrame:
    """Drop short stays, stays ending in the window and (on request) stays positive in it; count each."""
    short = stays.filter(pl.col("stay_hours") < min_stay_hours)
    counts["min_stay_hours"] = min_stay_hours
    counts["stays_shorter_than_min_stay_hours"] = short.height
    stays = stays.filter(pl.col("stay_hours") >= min_stay_hours)

    ending = stays.filter(pl.col("ends_in_window"))
    counts["stays_ending_in_window"] = ending.height
    stays = stays.filter(~pl.col("ends_in_window"))

    positive = stays.filter(pl.col("positive_in_window"))
    counts["exclude_positive_in_window"] = exclude_positive_in_window
    counts["stays_positive_in_window"] = positive.height
    counts["stays_excluded_positive_in_window"] = positive.height if exclude_positive_in_window else 0
    if exclude_positive_in_window:
        stays = stays.filter(~pl.col("positive_in_window"))

    if short.height:
        logger.info("excluded %d stay(s) shorter than %g hours", short.height, min_stay_hours)
    if ending.height:
        logger.info("excluded %d stay(s) that end inside the %d-hour window", ending.height, hours)
    if exclude_positive_in_window and positive.height:
        logger.info("excluded %d stay(s) with a positive label inside the %d-hour window", positive.height, hours)
    return stays


def _to_long(dyn: pl.DataFrame, counts: dict[str, Any]) -> pl.DataFrame:
    """Unpivot the variable columns to record_id, minute, parameter, value, dropping and counting null and NaN."""
    variables = [column for column in dyn.columns if column not in ("record_id", "minute")]
    long = dyn.unpivot(index=["record_id", "minute"], on=variables, variable_name="parameter", value_name="value")
    missing = long["value"].is_null() | long["value"].is_nan()
    counts["missing_values"] = int(missing.sum())
    long = long.filter(~missing)
    return long.select([pl.col(name).cast(dtype) for name, dtype in OBSERVATION_SCHEMA.items()]).sort(
        ["record_id", "minute"], maintain_order=True
    )


@register_reader("yaib")
def read_yaib_cohort(config: DataConfig) -> RawCohort:
    """Reader for ``data.dataset: yaib``: the cohort folder ``data.dir`` and the label of ``data.task``."""
    return read_yaib(
        Path(config.dir),
        config.task,
        config.hours,
        tuple(source for channel in config.channels for source in channel.sources),
        config.max_stays,
        config.min_stay_hours,
        config.exclude_positive_in_window,
        config.los_threshold_hours,
        config.verify_checksums,
    )
