"""Read the raw eICU-CRD v2.0 tables (``data.dataset: eicu``): hospital or unit mortality per unit stay.

eICU-CRD needs credentialed access (https://physionet.org/content/eicu-crd/2.0/). The
reader takes, from ``data.dir``, the official CSV files, compressed or not (names and
columns matched case-insensitively, so the eICU-CRD demo works too):

- patient: one sample per patientunitstayid. ``data.task: mortality`` (the default)
  labels a stay 1 when hospitaldischargestatus is "Expired" and 0 when "Alive";
  ``data.task: unit_mortality`` reads unitdischargestatus instead. A stay with an empty
  status is excluded and counted. unitdischargeoffset (minutes) is the stay length that
  ``data.min_stay_hours`` checks.
- vitalPeriodic: one row per patientunitstayid and observationoffset (minutes since unit
  admission) with one column per vital sign. ``parameter`` is the column name, so
  channels list column names (heart rate: sources ["heartrate"]).
- vitalAperiodic (read only when a channel names one of its columns): the non-invasive
  blood pressures noninvasivesystolic, noninvasivediastolic and noninvasivemean.

An empty cell means the vital sign was not recorded in that row; such cells are counted
in ``empty_cells``. The tables carry no unit column, so each column has its documented
unit (COLUMN_UNITS), converted to the channel's unit when a conversion is known.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from tardiff.config import ChannelSpec
from tardiff.data.sources import RawCohort, register_reader
from tardiff.data.validate import (
    apply_window,
    check_sources_found,
    collect,
    convert_units,
    count_duplicate_times,
    count_ids,
    csv_header,
    find_table,
    finish_cohort,
    limit_stays,
    parse_integer_ids,
    parse_numbers,
    require_columns,
    require_rows,
    require_table,
    require_unique,
    row_location,
    scan_table,
    source_variables,
)
from tardiff.errors import MissingDataError, TardiffInputError

if TYPE_CHECKING:
    from tardiff.config import DataConfig

logger = logging.getLogger(__name__)

SOURCE = "eICU-CRD v2.0 (https://physionet.org/content/eicu-crd/2.0/, credentialed access)"
TASK_COLUMNS = {"mortality": "hospitaldischargestatus", "unit_mortality": "unitdischargestatus"}
STATUS_LABELS = {"alive": 0, "expired": 1}
VITAL_TABLES = ("vitalPeriodic", "vitalAperiodic")
ID_COLUMNS = ("patientunitstayid", "observationoffset")

# Units of the vital sign columns, from the eICU-CRD documentation of both tables.
COLUMN_UNITS = {
    "temperature": "degC",
    "sao2": "%",
    "heartrate": "bpm",
    "respiration": "/min",
    "cvp": "mmHg",
    "etco2": "mmHg",
    "systemicsystolic": "mmHg",
    "systemicdiastolic": "mmHg",
    "systemicmean": "mmHg",
    "pasystolic": "mmHg",
    "padiastolic": "mmHg",
    "pamean": "mmHg",
    "icp": "mmHg",
    "noninvasivesystolic": "mmHg",
    "noninvasivediastolic": "mmHg",
    "noninvasivemean": "mmHg",
}

# The seven vital signs; invasive (systemic*) blood pressure is preferred over the cuff
# (noninvasive*, vitalAperiodic). sao2 of vitalPeriodic is pulse oximetry.
VITAL_CHANNELS = (
    ChannelSpec("HR", ("heartrate",), "bpm", 1, 300),
    ChannelSpec("SBP", ("systemicsystolic", "noninvasivesystolic"), "mmHg", 1, 300),
    ChannelSpec("DBP", ("systemicdiastolic", "noninvasivediastolic"), "mmHg", 1, 250),
    ChannelSpec("MAP", ("systemicmean", "noninvasivemean"), "mmHg", 1, 300),
    ChannelSpec("RespRate", ("respiration",), "/min", 1, 80),
    ChannelSpec("Temp", ("temperature",), "degC", 25, 45),
    ChannelSpec("SpO2", ("sao2",), "%", 1, 100),
)


@register_reader("eicu")
def read_eicu_cohort(config: DataConfig) -> RawCohort:
    """Reader for ``data.dataset: eicu``: the module docstring gives the files and rules."""
    return read_eicu(
        Path(config.dir), config.channels, config.hours, config.task, config.min_stay_hours, config.max_stays
    )


def read_eicu(
    data_dir: Path,
    channels: tuple[ChannelSpec, ...],
    hours: int,
    task: str = "mortality",
    min_stay_hours: float = 0.0,
    max_stays: int | None = None,
) -> RawCohort:
    """Read the unit stays, their labels and the channels' vital sign columns in the first ``hours`` hours.

    ``max_stays`` keeps the first N eligible stays by patientunitstayid.
    """
    task = task or "mortality"
    if task not in TASK_COLUMNS:
        raise TardiffInputError(f"data.task is {task!r}; the eicu reader builds one of {list(TASK_COLUMNS)}")
    data_dir = Path(data_dir)
    patient_path = require_table(data_dir, "patient", "eicu", SOURCE)
    counts: dict[str, Any] = {"task": task, "min_stay_hours": min_stay_hours}

    stays = read_patients(patient_path, TASK_COLUMNS[task], min_stay_hours, counts)
    stays = limit_stays(stays, max_stays, counts)
    tables = _locate_sources(data_dir, channels)

    counts.update({"empty_cells": 0, "rows_without_unit": 0, "converted_rows": {}})
    events = pl.concat([read_vitals(path, columns, channels, stays["record_id"], counts) for path, columns in tables])
    counts["sources_absent"] = check_sources_found(events["parameter"].unique().to_list(), channels, data_dir)
    events = apply_window(events, hours, counts)
    counts["duplicate_time_rows"] = count_duplicate_times(events, "minute")
    return finish_cohort(events, stays, counts, patient_path, tables[0][0], max_stays)


def read_patients(path: Path, status_column: str, min_stay_hours: float, counts: dict[str, Any]) -> pl.DataFrame:
    """Return the eligible stays as record_id (patientunitstayid) and label (1 for "Expired").

    Stays with an empty status, and stays shorter than ``min_stay_hours`` (or without
    unitdischargeoffset when a minimum is set), are excluded and counted.
    """
    lazy = _scan_lower(path)
    required = ("patientunitstayid", status_column, "unitdischargeoffset")
    require_columns(lazy.collect_schema().names(), required, path, f"Use the official patient table of {SOURCE}")
    require_rows(lazy, path)
    frame = collect(lazy.with_row_index("_row").select("_row", *required), path)
    frame = parse_integer_ids(frame, "patientunitstayid", path)
    require_unique(frame, "record_id", path, "patientunitstayid")
    counts["unit_stays_read"] = frame.height

    status = frame[status_column].str.strip_chars().str.to_lowercase()
    invalid = status.is_not_null() & (status != "") & ~status.is_in(list(STATUS_LABELS))
    if invalid.any():
        bad = frame.filter(invalid).row(0, named=True)
        raise TardiffInputError(
            f"{path}, {row_location(bad, path)}: {status_column} is {bad[status_column]!r}; expected 'Alive', "
            f"'Expired' or empty ({int(invalid.sum())} such row(s)). Use the official patient table of {SOURCE}"
        )
    frame = frame.with_columns(status.replace_strict(STATUS_LABELS, default=None, return_dtype=pl.Int8).alias("label"))
    count_ids(counts, "stays_without_label", frame.filter(pl.col("label").is_null())["record_id"].sort().to_list())
    if counts["stays_without_label"]:
        logger.warning("excluded %d unit stay(s) with an empty %s", counts["stays_without_label"], status_column)
    frame = frame.filter(pl.col("label").is_not_null())

    counts["stays_without_discharge_offset"] = 0
    counts["stays_shorter_than_min_stay_hours"] = 0
    if min_stay_hours > 0:
        offset = frame["unitdischargeoffset"].str.strip_chars().cast(pl.Float64, strict=False)
        frame = frame.with_columns(offset.alias("unitdischargeoffset"))
        counts["stays_without_discharge_offset"] = int(offset.is_null().sum())
        short = offset.is_not_null() & (offset < min_stay_hours * 60)
        counts["stays_shorter_than_min_stay_hours"] = int(short.sum())
        frame = frame.filter(offset.is_not_null() & ~short)
        logger.info("excluded %d stay(s) shorter than %g h and %d without unitdischargeoffset",
                    counts["stays_shorter_than_min_stay_hours"], min_stay_hours,
                    counts["stays_without_discharge_offset"])
    return frame.select("record_id", "label")


def read_vitals(
    path: Path, columns: list[str], channels: tuple[ChannelSpec, ...], stay_ids: pl.Series, counts: dict[str, Any]
) -> pl.DataFrame:
    """Read ``columns`` of one vital sign table for ``stay_ids`` as record_id, minute, parameter and value.

    Values are converted from the column's unit (COLUMN_UNITS) to the channel's unit.
    """
    lazy = _scan_lower(path)
    require_columns(lazy.collect_schema().names(), ID_COLUMNS, path, f"Use the official {path.name} of {SOURCE}")
    require_rows(lazy, path)
    stay_id = pl.col("patientunitstayid").str.strip_chars().cast(pl.Int64, strict=False)
    wide = collect(
        lazy.with_row_index("_row")
        .filter(stay_id.is_in(stay_ids.implode()))
        .select("_row", stay_id.alias("record_id"), "observationoffset", *columns),
        path,
    )
    counts[f"{path.name}_rows_selected"] = wide.height
    offset = wide["observationoffset"].str.strip_chars().cast(pl.Int64, strict=False)
    if offset.is_null().any():
        bad = wide.filter(offset.is_null()).row(0, named=True)
        raise TardiffInputError(
            f"{path}, {row_location(bad, path)}: observationoffset {bad['observationoffset']!r} is not a whole "
            f"number of minutes ({int(offset.is_null().sum())} such row(s)); use the official {path.name}"
        )
    wide = wide.with_columns(offset.alias("minute")).drop("observationoffset")
    long = wide.unpivot(on=columns, index=["_row", "record_id", "minute"], variable_name="parameter")
    long, empty = parse_numbers(long, "value", path, "value")
    counts["empty_cells"] += empty
    long = long.with_columns(pl.col("parameter").replace_strict(COLUMN_UNITS, default=None).alias("unit"))
    long, unit_counts = convert_units(long, channels, path)
    counts["rows_without_unit"] += unit_counts["rows_without_unit"]
    counts["converted_rows"].update(unit_counts["converted_rows"])
    return long


def _locate_sources(data_dir: Path, channels: tuple[ChannelSpec, ...]) -> list[tuple[Path, list[str]]]:
    """Map each channel source to the vital sign table that has it as a column; return (table, columns) pairs.

    Raises when a source is a column of neither table or when the table it needs is absent.
    """
    sources = source_variables(channels)
    headers: dict[str, tuple[Path | None, list[str]]] = {}
    for stem in VITAL_TABLES:
        path = find_table(data_dir, stem, "eicu", SOURCE)
        headers[stem] = (path, [name.lower() for name in csv_header(path)] if path else [])
    if headers["vitalPeriodic"][0] is None:
        require_table(data_dir, "vitalPeriodic", "eicu", SOURCE)

    tables = []
    placed: set[str] = set()
    for stem in VITAL_TABLES:
        path, names = headers[stem]
        columns = [source for source in sources if source in names and source not in ID_COLUMNS + ("vitalperiodicid",)]
        if path is not None and columns:
            tables.append((path, columns))
            placed.update(columns)
    unplaced = [source for source in sources if source not in placed]
    if unplaced:
        aperiodic_columns = {"noninvasivesystolic", "noninvasivediastolic", "noninvasivemean"}
        if headers["vitalAperiodic"][0] is None and set(unplaced) & aperiodic_columns:
            raise MissingDataError(
                f"channel source(s) {unplaced} are columns of vitalAperiodic, which is not in {data_dir}; copy "
                f"vitalAperiodic.csv.gz there from {SOURCE} or remove them from data.channels[].sources"
            )
        known = sorted(set(COLUMN_UNITS) | {n for _, names in headers.values() for n in names})
        raise TardiffInputError(
            f"channel source(s) {unplaced} are not columns of vitalPeriodic or vitalAperiodic in {data_dir}; eICU "
            f"channel sources are lower-case column names of these tables, such as {known}. Fix data.channels in "
            f"params.yaml"
        )
    return tables


def _scan_lower(path: Path) -> pl.LazyFrame:
    lazy = scan_table(path)
    return lazy.rename({name: name.lower() for name in lazy.collect_schema().names()})
