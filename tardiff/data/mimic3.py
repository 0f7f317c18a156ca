"""Read the raw MIMIC-III v1.4 tables (``data.dataset: mimic3``): in-hospital mortality per ICU stay.

MIMIC-III needs credentialed access (https://physionet.org/content/mimiciii/1.4/). The
reader takes the official CSV files, compressed or not, from ``data.dir``. Names of files
and columns are matched case-insensitively, so the lower-case files of the MIMIC-III demo
work too. The tables and columns read:

- ICUSTAYS: one sample per ICUSTAY_ID. The window starts at INTIME; OUTTIME - INTIME is
  the stay length that ``data.min_stay_hours`` checks.
- ADMISSIONS: the label of ``data.task: mortality`` (the default) is
  HOSPITAL_EXPIRE_FLAG of the stay's HADM_ID, 1 for death in hospital.
- CHARTEVENTS: ICUSTAY_ID, ITEMID, CHARTTIME, VALUENUM, VALUEUOM and ERROR. The table
  (33 GB upstream) is scanned lazily with polars and only the rows of the channels'
  itemids and the selected stays are kept. ``parameter`` is ITEMID as text, so channels
  list itemids (heart rate: sources ["220045", "211"]).

Rows flagged ERROR = 1 are dropped and counted. Rows whose VALUEUOM differs from the
channel's unit are converted when a conversion is known (Fahrenheit to Celsius for the
temperature items) and raise otherwise. An empty VALUEUOM takes the itemid's unit from
ITEM_UNITS, or else the channel's unit. Every stay of an admission gets the admission's
label, and a patient's stays can fall into different splits.
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
    finish_cohort,
    limit_stays,
    minutes_between,
    parse_binary_labels,
    parse_datetimes,
    parse_integer_ids,
    parse_numbers,
    require_columns,
    require_rows,
    require_table,
    require_unique,
    scan_table,
    source_variables,
)
from tardiff.errors import TardiffInputError

if TYPE_CHECKING:
    from tardiff.config import DataConfig

logger = logging.getLogger(__name__)

SOURCE = "MIMIC-III v1.4 (https://physionet.org/content/mimiciii/1.4/, credentialed access)"
TASKS = ("mortality",)

# The seven vital signs of common MIMIC-III benchmark cohorts, with the CareVue (3- and
# 4-digit) and MetaVision (22xxxx) itemids of MIT-LCP's mimic-code vitals-first-day
# concept. Fahrenheit items are converted to Celsius through ITEM_UNITS and VALUEUOM.
VITAL_CHANNELS = (
    ChannelSpec("HR", ("220045", "211"), "bpm", 1, 300),
    ChannelSpec("SBP", ("220050", "51", "6701", "220179", "455", "442"), "mmHg", 1, 300),
    ChannelSpec("DBP", ("220051", "8368", "8555", "220180", "8441", "8440"), "mmHg", 1, 250),
    ChannelSpec("MAP", ("220052", "52", "6702", "225312", "220181", "456", "443"), "mmHg", 1, 300),
    ChannelSpec("RespRate", ("220210", "618", "224690", "615"), "insp/min", 1, 80),
    ChannelSpec("Temp", ("223762", "676", "223761", "678"), "degC", 25, 45),
    ChannelSpec("SpO2", ("220277", "646"), "%", 1, 100),
)
# The unit of an itemid's rows whose VALUEUOM is empty, where the itemid fixes it.
ITEM_UNITS = {"223761": "degF", "678": "degF", "223762": "degC", "676": "degC"}
_ERROR_FLAG = "1"


@register_reader("mimic3")
def read_mimic3_cohort(config: DataConfig) -> RawCohort:
    """Reader for ``data.dataset: mimic3``: the module docstring gives the files and rules."""
    return read_mimic3(
        Path(config.dir), config.channels, config.hours, config.task, config.min_stay_hours, config.max_stays
    )


def read_mimic3(
    data_dir: Path,
    channels: tuple[ChannelSpec, ...],
    hours: int,
    task: str = "mortality",
    min_stay_hours: float = 0.0,
    max_stays: int | None = None,
) -> RawCohort:
    """Read the ICU stays, their labels and the channels' CHARTEVENTS rows in the first ``hours`` hours.

    ``max_stays`` keeps the first N eligible stays by ICUSTAY_ID.
    """
    task = task or "mortality"
    if task not in TASKS:
        raise TardiffInputError(f"data.task is {task!r}; the mimic3 reader builds one of {list(TASKS)}")
    data_dir = Path(data_dir)
    icustays_path = require_table(data_dir, "ICUSTAYS", "mimic3", SOURCE)
    admissions_path = require_table(data_dir, "ADMISSIONS", "mimic3", SOURCE)
    chartevents_path = require_table(data_dir, "CHARTEVENTS", "mimic3", SOURCE)
    counts: dict[str, Any] = {"task": task, "min_stay_hours": min_stay_hours}

    stays = read_stays(icustays_path, admissions_path, min_stay_hours, counts)
    stays = limit_stays(stays, max_stays, counts)
    events = read_chartevents(chartevents_path, channels, stays["record_id"], counts)

    events = events.join(stays.select("record_id", "INTIME"), on="record_id", how="inner")
    events = events.with_columns(minutes_between("CHARTTIME", "INTIME").alias("minute"))
    events = apply_window(events, hours, counts)
    counts["duplicate_time_rows"] = count_duplicate_times(events, "CHARTTIME")
    return finish_cohort(events, stays.select("record_id", "label"), counts, icustays_path, chartevents_path, max_stays)


def read_stays(
    icustays_path: Path, admissions_path: Path, min_stay_hours: float, counts: dict[str, Any]
) -> pl.DataFrame:
    """Return the eligible stays: record_id (ICUSTAY_ID), label (HOSPITAL_EXPIRE_FLAG) and INTIME.

    Stays without an admission row or flag, and stays shorter than ``min_stay_hours`` (or
    without OUTTIME when a minimum is set), are excluded and counted.
    """
    icu = _read_upper(icustays_path, ("ICUSTAY_ID", "HADM_ID", "INTIME", "OUTTIME"))
    icu = parse_integer_ids(icu, "ICUSTAY_ID", icustays_path)
    icu = parse_integer_ids(icu, "HADM_ID", icustays_path, target="hadm_id")
    require_unique(icu, "record_id", icustays_path, "ICUSTAY_ID")
    icu = icu.with_columns(parse_datetimes(icu, "INTIME", icustays_path))
    icu = icu.with_columns(parse_datetimes(icu, "OUTTIME", icustays_path, allow_null=True))
    counts["icu_stays_read"] = icu.height

    admissions = _read_upper(admissions_path, ("HADM_ID", "HOSPITAL_EXPIRE_FLAG"))
    admissions = parse_integer_ids(admissions, "HADM_ID", admissions_path, target="hadm_id")
    require_unique(admissions, "hadm_id", admissions_path, "HADM_ID")
    admissions = admissions.with_columns(parse_binary_labels(admissions, "HOSPITAL_EXPIRE_FLAG", admissions_path, True))

    stays = icu.join(admissions.select("hadm_id", "label"), on="hadm_id", how="left")
    unlabelled = stays.filter(pl.col("label").is_null())["record_id"].sort().to_list()
    count_ids(counts, "stays_without_label", unlabelled)
    if unlabelled:
        logger.warning("excluded %d ICU stay(s) without an admission row or flag in %s", len(unlabelled),
                       admissions_path)
    stays = stays.filter(pl.col("label").is_not_null())

    counts["stays_without_outtime"] = 0
    counts["stays_shorter_than_min_stay_hours"] = 0
    if min_stay_hours > 0:
        length_hours = (pl.col("OUTTIME") - pl.col("INTIME")).dt.total_seconds() / 3600.0
        counts["stays_without_outtime"] = int(stays["OUTTIME"].is_null().sum())
        short = stays.filter(pl.col("OUTTIME").is_not_null() & (length_hours < min_stay_hours))
        counts["stays_shorter_than_min_stay_hours"] = short.height
        stays = stays.filter(pl.col("OUTTIME").is_not_null() & (length_hours >= min_stay_hours))
        logger.info("excluded %d stay(s) shorter than %g h and %d without OUTTIME", short.height, min_stay_hours,
                    counts["stays_without_outtime"])
    return stays.select("record_id", "label", "INTIME")


def read_chartevents(
    path: Path, channels: tuple[ChannelSpec, ...], stay_ids: pl.Series, counts: dict[str, Any]
) -> pl.DataFrame:
    """Read the CHARTEVENTS rows of the channels' itemids for ``stay_ids`` as record_id, parameter, value, CHARTTIME.

    ERROR = 1 rows are dropped and counted, units are converted to the channels' units.
    """
    lazy = _scan_upper(path)
    columns = lazy.collect_schema().names()
    require_columns(
        columns, ("ICUSTAY_ID", "ITEMID", "CHARTTIME", "VALUENUM"), path,
        "Use the official CHARTEVENTS file of MIMIC-III v1.4",
    )
    require_rows(lazy, path)
    optional = [name for name in ("VALUEUOM", "ERROR") if name in columns]
    itemids = source_variables(channels)
    stay_id = pl.col("ICUSTAY_ID").str.strip_chars().cast(pl.Int64, strict=False)
    itemid = pl.col("ITEMID").str.strip_chars()
    events = collect(
        lazy.with_row_index("_row")
        .filter(itemid.is_in(itemids) & stay_id.is_in(stay_ids.implode()))
        .select("_row", stay_id.alias("record_id"), itemid.alias("parameter"), "CHARTTIME", "VALUENUM", *optional),
        path,
    )
    counts["rows_selected"] = events.height
    counts["sources_absent"] = check_sources_found(events["parameter"].unique().to_list(), channels, path)

    flagged = (events["ERROR"].str.strip_chars() == _ERROR_FLAG).fill_null(False) if "ERROR" in optional else None
    counts["rows_flagged_error"] = int(flagged.sum()) if flagged is not None else 0
    if flagged is not None and flagged.any():
        logger.info("dropped %d CHARTEVENTS row(s) flagged ERROR = 1", counts["rows_flagged_error"])
        events = events.filter(~flagged)
    events, counts["missing_values"] = parse_numbers(events.rename({"VALUENUM": "value"}), "value", path, "VALUENUM")
    events = events.with_columns(parse_datetimes(events, "CHARTTIME", path))

    uom = pl.col("VALUEUOM").str.strip_chars() if "VALUEUOM" in optional else pl.lit(None, dtype=pl.Utf8)
    fallback = pl.col("parameter").replace_strict(ITEM_UNITS, default=None, return_dtype=pl.Utf8)
    events = events.with_columns(
        pl.when(uom.is_null() | (uom == "")).then(fallback).otherwise(uom).alias("unit")
    )
    events, unit_counts = convert_units(events, channels, path)
    counts.update(unit_counts)
    return events.select("record_id", "parameter", "value", "CHARTTIME")


def _scan_upper(path: Path) -> pl.LazyFrame:
    lazy = scan_table(path)
    return lazy.rename({name: name.upper() for name in lazy.collect_schema().names()})


def _read_upper(path: Path, required: tuple[str, ...]) -> pl.DataFrame:
    """Read the ``required`` columns of a small MIMIC-III table, with ``_row``, as text."""
    lazy = _scan_upper(path)
    require_columns(lazy.collect_schema().names(), required, path, f"Use the official {path.name} of {SOURCE}")
    require_rows(lazy, path)
    return collect(lazy.with_row_index("_row").select("_row", *required), path)
