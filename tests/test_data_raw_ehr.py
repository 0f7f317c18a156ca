"""Tests of the raw MIMIC-III (``mimic3``) and eICU-CRD (``eicu``) readers.

Every fixture is SYNTHETIC: gzip CSV tables with the published column names of MIMIC-III
v1.4 (ICUSTAYS, ADMISSIONS, CHARTEVENTS) and eICU-CRD v2.0 (patient, vitalPeriodic,
vitalAperiodic), filled from a seeded numpy RNG by the helpers below. They hold no row of
the real databases. Each helper also returns the truth it wrote, so the tests compare the
readers' output with values computed here independently.
"""

from __future__ import annotations

import dataclasses
import gzip
import re
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from tardiff.config import ChannelSpec, DataConfig
from tardiff.data import eicu, mimic3
from tardiff.data.cohort import preprocess_cohort
from tardiff.data.sources import read_cohort, reader_names
from tardiff.errors import CorruptFileError, MissingDataError, TardiffInputError

SEED = 20250417
HOURS = 24
WINDOW = HOURS * 60

ICUSTAYS_COLUMNS = ("ROW_ID", "SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "DBSOURCE", "FIRST_CAREUNIT", "LAST_CAREUNIT",
                    "FIRST_WARDID", "LAST_WARDID", "INTIME", "OUTTIME", "LOS")
ADMISSIONS_COLUMNS = ("ROW_ID", "SUBJECT_ID", "HADM_ID", "ADMITTIME", "DISCHTIME", "DEATHTIME", "ADMISSION_TYPE",
                      "ADMISSION_LOCATION", "DISCHARGE_LOCATION", "INSURANCE", "LANGUAGE", "RELIGION",
                      "MARITAL_STATUS", "ETHNICITY", "EDREGTIME", "EDOUTTIME", "DIAGNOSIS", "HOSPITAL_EXPIRE_FLAG",
                      "HAS_CHARTEVENTS_DATA")
CHARTEVENTS_COLUMNS = ("ROW_ID", "SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "ITEMID", "CHARTTIME", "STORETIME", "CGID",
                       "VALUE", "VALUENUM", "VALUEUOM", "WARNING", "ERROR", "RESULTSTATUS", "STOPPED")
PATIENT_COLUMNS = ("patientunitstayid", "patienthealthsystemstayid", "gender", "age", "ethnicity", "hospitalid",
                   "wardid", "apacheadmissiondx", "admissionheight", "hospitaladmittime24", "hospitaladmitoffset",
                   "hospitaladmitsource", "hospitaldischargeyear", "hospitaldischargetime24",
                   "hospitaldischargeoffset", "hospitaldischargelocation", "hospitaldischargestatus", "unittype",
                   "unitadmittime24", "unitadmitsource", "unitvisitnumber", "unitstaytype", "admissionweight",
                   "dischargeweight", "unitdischargetime24", "unitdischargeoffset", "unitdischargelocation",
                   "unitdischargestatus", "uniquepid")
PERIODIC_COLUMNS = ("vitalperiodicid", "patientunitstayid", "observationoffset", "temperature", "sao2", "heartrate",
                    "respiration", "cvp", "etco2", "systemicsystolic", "systemicdiastolic", "systemicmean",
                    "pasystolic", "padiastolic", "pamean", "st1", "st2", "st3", "icp")
APERIODIC_COLUMNS = ("vitalaperiodicid", "patientunitstayid", "observationoffset", "noninvasivesystolic",
                     "noninvasivediastolic", "noninvasivemean", "paop", "cardiacoutput", "cardiacinput", "svr", "svri",
                     "pvr", "pvri")

# (itemid, VALUEUOM, mean in the channel's unit, Fahrenheit); MetaVision and CareVue items of the seven vitals.
METAVISION_ITEMS = (("220045", "bpm", 85.0, False), ("220179", "mmHg", 120.0, False), ("220180", "mmHg", 65.0, False),
                    ("220181", "mmHg", 80.0, False), ("220210", "insp/min", 18.0, False), ("223761", "?F", 37.0, True),
                    ("223762", "?C", 37.0, False), ("220277", "%", 96.0, False))
CAREVUE_ITEMS = (("211", "BPM", 85.0, False), ("455", "mmHg", 120.0, False), ("8441", "mmHg", 65.0, False),
                 ("456", "mmHg", 80.0, False), ("618", "BPM", 18.0, False), ("678", "Deg. F", 37.0, True),
                 ("676", "Deg. C", 37.0, False), ("646", "%", 96.0, False))
OTHER_ITEM = "227969"  # a charted item that no channel lists
MIMIC_BASE = datetime(2130, 1, 1)


def write_csv_gz(rows: list[dict], columns: tuple[str, ...], path: Path) -> Path:
    """Write SYNTHETIC rows as a gzip CSV with the given header, every field quoted as text."""
    frame = pl.DataFrame([{name: row.get(name) for name in columns} for row in rows],
                         schema={name: pl.Utf8 for name in columns})
    path.write_bytes(gzip.compress(frame.write_csv(quote_style="non_numeric").encode()))
    return path


def text(value: float | None) -> str | None:
    return None if value is None else f"{value:.1f}"


def write_synthetic_mimic3(folder: Path, seed: int, n_stays: int = 48) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Write SYNTHETIC MIMIC-III tables of ``n_stays`` ICU stays; return (chart truth, stay truth).

    A third of the stays are positive. The last stay's admission is missing from ADMISSIONS and
    the stay before it lasts 3 hours. The chart truth has one row per CHARTEVENTS row with the
    expected minute, the value in the channel's unit and the flags the reader acts on.
    """
    rng = np.random.default_rng(seed)
    labels = np.zeros(n_stays, dtype=int)
    labels[rng.permutation(n_stays)[: n_stays // 3]] = 1
    stays, admissions, chart, truth, stay_truth = [], [], [], [], []
    for index in range(n_stays):
        icustay, hadm, subject = 200000 + index, 100000 + index, 10000 + index
        intime = MIMIC_BASE + timedelta(days=int(rng.integers(0, 3000)), minutes=int(rng.integers(0, 1440)))
        length = 3.0 if index == n_stays - 2 else float(rng.uniform(30, 200))
        outtime = intime + timedelta(hours=length)
        label = int(labels[index])
        stays.append({"ROW_ID": str(index + 1), "SUBJECT_ID": str(subject), "HADM_ID": str(hadm),
                      "ICUSTAY_ID": str(icustay), "DBSOURCE": "metavision" if index % 2 == 0 else "carevue",
                      "FIRST_CAREUNIT": "MICU", "LAST_CAREUNIT": "MICU", "FIRST_WARDID": "12", "LAST_WARDID": "12",
                      "INTIME": f"{intime:%Y-%m-%d %H:%M:%S}", "OUTTIME": f"{outtime:%Y-%m-%d %H:%M:%S}",
                      "LOS": f"{length / 24:.4f}"})
        if index != n_stays - 1:
            admissions.append({"ROW_ID": str(index + 1), "SUBJECT_ID": str(subject), "HADM_ID": str(hadm),
                               "ADMITTIME": f"{intime - timedelta(hours=5):%Y-%m-%d %H:%M:%S}",
                               "ADMISSION_TYPE": "EMERGENCY", "HOSPITAL_EXPIRE_FLAG": str(label),
                               "HAS_CHARTEVENTS_DATA": "1"})
        stay_truth.append({"record_id": icustay, "label": label, "length_hours": length,
                           "has_admission": index != n_stays - 1})

        items = METAVISION_ITEMS if index % 2 == 0 else CAREVUE_ITEMS
        for itemid, uom, mean, fahrenheit in items + ((OTHER_ITEM, "", 5.0, False),):
            for minute in rng.integers(-120, 30 * 60, size=rng.integers(3, 9)):
                value_c = round(float(rng.normal(mean + (8.0 * label if itemid in ("220045", "211") else 0.0), 2)), 1)
                raw = round(value_c * 9 / 5 + 32, 1) if fahrenheit else value_c
                missing = rng.random() < 0.04
                error = index % 2 == 0 and rng.random() < 0.05
                empty_uom = fahrenheit and rng.random() < 0.3
                charttime = intime + timedelta(minutes=int(minute), seconds=int(rng.integers(0, 60)))
                if index % 2 == 0:
                    error_flag = "1" if error else "0"
                else:
                    error_flag = None  # CareVue rows leave ERROR empty
                value = None
                if not missing:
                    value = (raw - 32) * 5 / 9 if fahrenheit else raw
                chart.append({"ROW_ID": str(len(chart) + 1), "SUBJECT_ID": str(subject), "HADM_ID": str(hadm),
                              "ICUSTAY_ID": str(icustay), "ITEMID": itemid,
                              "CHARTTIME": f"{charttime:%Y-%m-%d %H:%M:%S}", "CGID": "17000",
                              "VALUE": "Error" if missing else text(raw), "VALUENUM": None if missing else text(raw),
                              "VALUEUOM": None if empty_uom else uom,
                              "ERROR": error_flag})
                truth.append({"record_id": icustay, "parameter": itemid, "minute": int(minute),
                              "value": value,
                              "error": error, "missing": missing, "other": itemid == OTHER_ITEM})
    write_csv_gz(stays, ICUSTAYS_COLUMNS, folder / "ICUSTAYS.csv.gz")
    write_csv_gz(admissions, ADMISSIONS_COLUMNS, folder / "ADMISSIONS.csv.gz")
    write_csv_gz(chart, CHARTEVENTS_COLUMNS, folder / "CHARTEVENTS.csv.gz")
    return pl.DataFrame(truth), pl.DataFrame(stay_truth)


def mimic_config(folder: Path, **changes) -> DataConfig:
    config = DataConfig(dataset="mimic3", dir=str(folder), sets=(), channels=mimic3.VITAL_CHANNELS, hours=HOURS,
                        task="mortality")
    return dataclasses.replace(config, **changes)


@pytest.fixture
def mimic(tmp_path: Path) -> tuple[Path, pl.DataFrame, pl.DataFrame]:
    chart, stays = write_synthetic_mimic3(tmp_path, SEED)
    return tmp_path, chart, stays


def test_raw_readers_registered():
    assert {"mimic3", "eicu"} <= set(reader_names())


@pytest.mark.parametrize("module", [mimic3, eicu], ids=["mimic3", "eicu"])
def test_docs_channels_match_defaults(module):
    """The channel list of each raw reader's example in docs/bring_your_own_data.md equals VITAL_CHANNELS."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "bring_your_own_data.md").read_text()
    dataset = module.__name__.rsplit(".", 1)[1]
    entries = [yaml.safe_load(block)["cohorts"] for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)]
    data = next(entry["data"] for cohort in entries for entry in cohort.values() if entry["data"]["dataset"] == dataset)
    channels = tuple(
        ChannelSpec(c["name"], tuple(c["sources"]), c["unit"], c["valid_range"][0], c["valid_range"][1])
        for c in data["channels"]
    )
    assert channels == module.VITAL_CHANNELS


def test_mimic3_observations_match_truth(mimic):
    folder, chart, stays = mimic
    raw = read_cohort(mimic_config(folder))
    labelled = stays.filter(pl.col("has_admission"))["record_id"]
    expected = (
        chart.filter(pl.col("record_id").is_in(labelled.implode()) & ~pl.col("other") & ~pl.col("error")
                     & ~pl.col("missing") & (pl.col("minute") >= 0) & (pl.col("minute") < WINDOW))
        .select("record_id", "minute", "parameter", "value")
        .sort("record_id", "minute", "parameter", "value")
    )
    actual = raw.observations.sort("record_id", "minute", "parameter", "value")
    assert actual.select("record_id", "minute", "parameter").rows() == expected.select(
        "record_id", "minute", "parameter").rows()
    np.testing.assert_allclose(actual["value"].to_numpy(), expected["value"].to_numpy(), rtol=0, atol=1e-9)


def test_mimic3_fahrenheit_converted(mimic):
    folder, chart, _ = mimic
    raw = read_cohort(mimic_config(folder))
    temperature = raw.observations.filter(pl.col("parameter").is_in(["223761", "678"]))["value"]
    assert temperature.len() > 0
    assert temperature.is_between(30, 44).all()
    # Rows with an empty VALUEUOM take degF from ITEM_UNITS, so they are converted too.
    converted = raw.counts["converted_rows"]
    assert set(converted) == {"223761: ?F -> degC", "678: Deg. F -> degC", "223761: degF -> degC",
                              "678: degF -> degC"}
    fahrenheit_rows = chart.filter(pl.col("parameter").is_in(["223761", "678"]) & ~pl.col("error")
                                   & ~pl.col("missing") & (pl.col("record_id") != chart["record_id"].max()))
    assert sum(converted.values()) == fahrenheit_rows.height


def test_mimic3_labels_and_counts(mimic):
    folder, chart, stays = mimic
    raw = read_cohort(mimic_config(folder))
    expected = stays.filter(pl.col("has_admission")).select("record_id", "label")
    assert raw.outcomes.rows() == expected.sort("record_id").rows()
    selected = chart.filter(pl.col("record_id").is_in(expected["record_id"].implode()) & ~pl.col("other"))
    valid = selected.filter(~pl.col("error") & ~pl.col("missing"))
    counts = raw.counts
    assert counts["rows_selected"] == selected.height
    assert counts["rows_flagged_error"] == selected["error"].sum()
    assert counts["missing_values"] == selected.filter(~pl.col("error"))["missing"].sum()
    assert counts["rows_before_window"] == (valid["minute"] < 0).sum()
    assert counts["rows_after_window"] == (valid["minute"] >= WINDOW).sum()
    assert counts["stays_without_label"] == 1
    assert counts["stays_without_label_first_ids"] == [stays["record_id"][-1]]
    assert counts["rows_without_unit"] == 0  # empty VALUEUOM only on temperature items, which ITEM_UNITS covers


def test_mimic3_min_stay_hours_and_max_stays(mimic):
    folder, _, stays = mimic
    raw = read_cohort(mimic_config(folder, min_stay_hours=4.0, max_stays=20))
    assert raw.counts["stays_shorter_than_min_stay_hours"] == 1
    short = stays.filter(pl.col("length_hours") < 4)["record_id"][0]
    assert short not in raw.outcomes["record_id"].to_list()
    assert raw.outcomes["record_id"].to_list() == stays["record_id"].to_list()[:20]


def test_mimic3_lower_case_demo_files(tmp_path: Path):
    write_synthetic_mimic3(tmp_path, SEED)
    for name in ("ICUSTAYS", "ADMISSIONS", "CHARTEVENTS"):
        upper = tmp_path / f"{name}.csv.gz"
        lines = gzip.decompress(upper.read_bytes()).decode().split("\n", 1)
        (tmp_path / f"{name.lower()}.csv").write_text(lines[0].lower() + "\n" + lines[1])
        upper.unlink()
    raw = read_cohort(mimic_config(tmp_path))
    assert raw.outcomes.height == 47


def test_mimic3_preprocess_end_to_end(mimic):
    folder, _, _ = mimic
    cohort = preprocess_cohort(mimic_config(folder), seed=SEED)
    assert cohort.channel_names == ["HR", "SBP", "DBP", "MAP", "RespRate", "Temp", "SpO2"]
    for name in ("train", "val", "test"):
        split = cohort.split(name)
        assert split.x.shape[1:] == (HOURS, 7)
        assert set(split.y.tolist()) == {0, 1}
    assert cohort.metadata["reader_counts"]["rows_flagged_error"] > 0


def edit_table(path: Path, edit) -> None:
    """Rewrite a SYNTHETIC gzip CSV table through ``edit`` (a function of a text DataFrame) to build bad input."""
    frame = pl.read_csv(path, infer_schema=False)
    path.write_bytes(gzip.compress(edit(frame).write_csv(quote_style="non_numeric").encode()))


def set_cell(frame: pl.DataFrame, row: int, column: str, value: str) -> pl.DataFrame:
    """Return ``frame`` with one cell replaced."""
    values = frame[column].to_list()
    values[row] = value
    return frame.with_columns(pl.Series(column, values, dtype=pl.Utf8))


def first_valid_row(path: Path, itemid: str) -> int:
    """Return the index of the first CHARTEVENTS row of ``itemid`` that is neither flagged nor without a value."""
    frame = pl.read_csv(path, infer_schema=False).with_row_index()
    valid = frame.filter((pl.col("ITEMID") == itemid) & (pl.col("ERROR") == "0") & pl.col("VALUENUM").is_not_null())
    return int(valid["index"][0])


def test_mimic3_unknown_unit_raises(mimic):
    folder, _, _ = mimic
    edit_table(folder / "CHARTEVENTS.csv.gz",
               lambda frame: frame.with_columns(pl.col("VALUEUOM").replace("mmHg", "cmH2O")))
    with pytest.raises(TardiffInputError, match=r"CHARTEVENTS.csv.gz: variable '\d+' has unit 'cmH2O' on \d+ "
                                                r"row\(s\), but channel (SBP|DBP|MAP) expects 'mmHg'"):
        read_cohort(mimic_config(folder))


def test_mimic3_bad_flag_raises(mimic):
    folder, _, _ = mimic
    edit_table(folder / "ADMISSIONS.csv.gz", lambda frame: set_cell(frame, 2, "HOSPITAL_EXPIRE_FLAG", "2"))
    with pytest.raises(TardiffInputError, match=r"ADMISSIONS.csv.gz, line 4: label '2' in column "
                                                r"'HOSPITAL_EXPIRE_FLAG' is not 0, 1"):
        read_cohort(mimic_config(folder))


def test_mimic3_bad_charttime_raises(mimic):
    folder, _, _ = mimic
    row = first_valid_row(folder / "CHARTEVENTS.csv.gz", "220045")
    edit_table(folder / "CHARTEVENTS.csv.gz", lambda frame: set_cell(frame, row, "CHARTTIME", "not a time"))
    with pytest.raises(TardiffInputError, match=rf"CHARTEVENTS.csv.gz, line {row + 2}: CHARTTIME 'not a time'"):
        read_cohort(mimic_config(folder))


def test_mimic3_non_numeric_valuenum_raises(mimic):
    folder, _, _ = mimic
    row = first_valid_row(folder / "CHARTEVENTS.csv.gz", "220045")
    edit_table(folder / "CHARTEVENTS.csv.gz", lambda frame: set_cell(frame, row, "VALUENUM", "12,5"))
    with pytest.raises(TardiffInputError, match=rf"line {row + 2}: VALUENUM '12,5' of variable '220045' is not a"):
        read_cohort(mimic_config(folder))


def test_mimic3_missing_table_and_column_raise(mimic):
    folder, _, _ = mimic
    (folder / "ADMISSIONS.csv.gz").rename(folder / "ADMISSIONS.bak")
    with pytest.raises(MissingDataError, match=r"ADMISSIONS.csv or ADMISSIONS.csv.gz not found.*MIMIC-III v1.4"):
        read_cohort(mimic_config(folder))
    (folder / "ADMISSIONS.bak").rename(folder / "ADMISSIONS.csv.gz")
    edit_table(folder / "CHARTEVENTS.csv.gz", lambda frame: frame.rename({"VALUENUM": "VALUE_NUM"}))
    with pytest.raises(TardiffInputError, match=r"lacks column\(s\) \['VALUENUM'\].*official CHARTEVENTS"):
        read_cohort(mimic_config(folder))


def test_mimic3_empty_chartevents_raises(mimic):
    folder, _, _ = mimic
    header = ",".join(f'"{name}"' for name in CHARTEVENTS_COLUMNS) + "\n"
    (folder / "CHARTEVENTS.csv.gz").write_bytes(gzip.compress(header.encode()))
    with pytest.raises(TardiffInputError, match=r"CHARTEVENTS.csv.gz contains no rows"):
        read_cohort(mimic_config(folder))


def test_mimic3_truncated_chartevents_raises(mimic):
    folder, _, _ = mimic
    path = folder / "CHARTEVENTS.csv.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptFileError, match=r"CHARTEVENTS.csv.gz cannot be parsed .*replace the file"):
        read_cohort(mimic_config(folder))


def test_mimic3_unknown_task_raises(mimic):
    folder, _, _ = mimic
    with pytest.raises(TardiffInputError, match=r"data.task is 'los'; the mimic3 reader builds one of \['mortality'\]"):
        read_cohort(mimic_config(folder, task="los"))


def test_mimic3_one_class_raises(mimic):
    folder, _, stays = mimic
    negatives = stays.filter(pl.col("label") == 0)["record_id"].to_list()[:5]
    with pytest.raises(TardiffInputError, match=r"one class only: label counts \{'0': 5, '1': 0\}"):
        read_mimic_subset(folder, negatives)


def read_mimic_subset(folder: Path, stay_ids: list[int]):
    """Read the SYNTHETIC tables with ICUSTAYS cut to ``stay_ids``."""
    edit_table(folder / "ICUSTAYS.csv.gz",
               lambda frame: frame.filter(pl.col("ICUSTAY_ID").cast(pl.Int64).is_in(stay_ids)))
    return read_cohort(mimic_config(folder))


# eICU-CRD


def write_synthetic_eicu(folder: Path, seed: int, n_stays: int = 48, aperiodic: bool = True) -> tuple[
        pl.DataFrame, pl.DataFrame]:
    """Write SYNTHETIC eICU-CRD patient, vitalPeriodic and vitalAperiodic tables; return (vital truth, stay truth).

    A third of the stays die in hospital, half of those in the unit. The last stay has an
    empty hospitaldischargestatus and the one before it a 3-hour unit stay.
    """
    rng = np.random.default_rng(seed)
    hospital = np.zeros(n_stays, dtype=int)
    hospital[rng.permutation(n_stays)[: n_stays // 3]] = 1
    unit = hospital * (rng.random(n_stays) < 0.5)
    patients, periodic, aperiodic_rows, truth, stay_truth = [], [], [], [], []
    means = {"temperature": 37.0, "sao2": 96.0, "heartrate": 85.0, "respiration": 18.0, "systemicsystolic": 120.0,
             "systemicdiastolic": 65.0, "systemicmean": 80.0, "noninvasivesystolic": 118.0,
             "noninvasivediastolic": 63.0, "noninvasivemean": 78.0}
    presence = {"temperature": 0.3, "sao2": 0.9, "heartrate": 0.95, "respiration": 0.8}
    for index in range(n_stays):
        stay = 3000000 + index
        length_minutes = 180 if index == n_stays - 2 else int(rng.integers(30 * 60, 200 * 60))
        status = "Expired" if hospital[index] else "Alive"
        if index == n_stays - 1:
            status = ""
        patients.append({"patientunitstayid": str(stay), "patienthealthsystemstayid": str(900000 + index),
                         "gender": "Female", "age": "70", "hospitalid": "73", "hospitaldischargestatus": status,
                         "unitdischargestatus": "Expired" if unit[index] else "Alive",
                         "unitdischargeoffset": str(length_minutes), "uniquepid": f"002-{index:05d}",
                         "unittype": "Med-Surg ICU", "unitvisitnumber": "1"})
        stay_truth.append({"record_id": stay, "hospital": int(hospital[index]), "unit": int(unit[index]),
                           "length_minutes": length_minutes, "has_status": bool(status)})
        arterial = index % 2 == 0
        for offset in range(-30, 30 * 60, 15):
            row = {"vitalperiodicid": str(len(periodic) + 1), "patientunitstayid": str(stay),
                   "observationoffset": str(offset)}
            for column in ("temperature", "sao2", "heartrate", "respiration", "systemicsystolic",
                           "systemicdiastolic", "systemicmean"):
                present = rng.random() < presence.get(column, 0.9 if arterial else 0.0)
                value = round(float(rng.normal(means[column] + (8.0 * hospital[index] if column == "heartrate" else 0),
                                               2)), 1) if present else None
                row[column] = text(value)
                truth.append({"record_id": stay, "minute": offset, "parameter": column, "value": value})
            periodic.append(row)
        for offset in range(-30, 30 * 60, 60):
            row = {"vitalaperiodicid": str(len(aperiodic_rows) + 1), "patientunitstayid": str(stay),
                   "observationoffset": str(offset)}
            for column in ("noninvasivesystolic", "noninvasivediastolic", "noninvasivemean"):
                value = round(float(rng.normal(means[column], 3)), 1) if rng.random() < 0.9 else None
                row[column] = text(value)
                truth.append({"record_id": stay, "minute": offset, "parameter": column, "value": value})
            aperiodic_rows.append(row)
    write_csv_gz(patients, PATIENT_COLUMNS, folder / "patient.csv.gz")
    write_csv_gz(periodic, PERIODIC_COLUMNS, folder / "vitalPeriodic.csv.gz")
    if aperiodic:
        write_csv_gz(aperiodic_rows, APERIODIC_COLUMNS, folder / "vitalAperiodic.csv.gz")
    return pl.DataFrame(truth), pl.DataFrame(stay_truth)


def eicu_config(folder: Path, **changes) -> DataConfig:
    config = DataConfig(dataset="eicu", dir=str(folder), sets=(), channels=eicu.VITAL_CHANNELS, hours=HOURS,
                        task="mortality")
    return dataclasses.replace(config, **changes)


@pytest.fixture
def eicu_tables(tmp_path: Path) -> tuple[Path, pl.DataFrame, pl.DataFrame]:
    truth, stays = write_synthetic_eicu(tmp_path, SEED)
    return tmp_path, truth, stays


def test_eicu_observations_match_truth(eicu_tables):
    folder, truth, stays = eicu_tables
    raw = read_cohort(eicu_config(folder))
    labelled = stays.filter(pl.col("has_status"))["record_id"]
    expected = truth.filter(pl.col("record_id").is_in(labelled.implode()) & pl.col("value").is_not_null()
                            & (pl.col("minute") >= 0) & (pl.col("minute") < WINDOW))
    key = ["record_id", "minute", "parameter"]
    assert raw.observations.sort(key).rows() == expected.select(*key, "value").sort(key).rows()


def test_eicu_labels_tasks_and_counts(eicu_tables):
    folder, truth, stays = eicu_tables
    labelled = stays.filter(pl.col("has_status")).sort("record_id")
    hospital = read_cohort(eicu_config(folder))
    assert hospital.outcomes.rows() == labelled.select("record_id", "hospital").rows()
    unit = read_cohort(eicu_config(folder, task="unit_mortality"))
    assert unit.outcomes.rows() == stays.sort("record_id").select("record_id", "unit").rows()

    counts = hospital.counts
    selected = truth.filter(pl.col("record_id").is_in(labelled["record_id"].implode()))
    present = selected.filter(pl.col("value").is_not_null())
    assert counts["stays_without_label"] == 1
    assert counts["empty_cells"] == selected["value"].null_count()
    assert counts["rows_before_window"] == (present["minute"] < 0).sum()
    assert counts["rows_after_window"] == (present["minute"] >= WINDOW).sum()
    assert counts["duplicate_time_rows"] == 0
    assert counts["rows_without_unit"] == 0
    assert counts["converted_rows"] == {}


def test_eicu_min_stay_hours(eicu_tables):
    folder, _, stays = eicu_tables
    raw = read_cohort(eicu_config(folder, min_stay_hours=4.0))
    assert raw.counts["stays_shorter_than_min_stay_hours"] == 1
    short = stays.filter(pl.col("length_minutes") < 240)["record_id"][0]
    assert short not in raw.outcomes["record_id"].to_list()


def test_eicu_fahrenheit_channel_converted(eicu_tables):
    folder, truth, stays = eicu_tables
    channel = ChannelSpec("TempF", ("temperature",), "degF", 77, 113)
    raw = read_cohort(eicu_config(folder, channels=(channel,)))
    joined = raw.observations.join(truth, on=["record_id", "minute", "parameter"], suffix="_celsius")
    assert joined.height == raw.observations.height
    np.testing.assert_allclose(joined["value"].to_numpy(), joined["value_celsius"].to_numpy() * 9 / 5 + 32)
    # Units are converted before the window is applied, so the count covers every recorded temperature.
    labelled = stays.filter(pl.col("has_status"))["record_id"].implode()
    recorded = truth.filter((pl.col("parameter") == "temperature") & pl.col("value").is_not_null()
                            & pl.col("record_id").is_in(labelled))
    assert raw.counts["converted_rows"] == {"temperature: degC -> degF": recorded.height}


def test_eicu_periodic_only_channels(tmp_path: Path):
    write_synthetic_eicu(tmp_path, SEED, aperiodic=False)
    channels = tuple(channel for channel in eicu.VITAL_CHANNELS if channel.name in ("HR", "SpO2"))
    raw = read_cohort(eicu_config(tmp_path, channels=channels))
    assert set(raw.observations["parameter"].unique().to_list()) == {"heartrate", "sao2"}


def test_eicu_missing_aperiodic_raises(tmp_path: Path):
    write_synthetic_eicu(tmp_path, SEED, aperiodic=False)
    with pytest.raises(MissingDataError, match=r"columns of vitalAperiodic, which is not in .*copy vitalAperiodic"):
        read_cohort(eicu_config(tmp_path))


def test_eicu_unknown_column_raises(eicu_tables):
    folder, _, _ = eicu_tables
    channel = ChannelSpec("HR", ("heart_rate",), "bpm", 1, 300)
    with pytest.raises(TardiffInputError, match=r"\['heart_rate'\] are not columns of vitalPeriodic or vitalAperiodic"):
        read_cohort(eicu_config(folder, channels=(channel,)))


def test_eicu_wrong_channel_unit_raises(eicu_tables):
    folder, _, _ = eicu_tables
    channel = ChannelSpec("HR", ("heartrate",), "mmHg", 1, 300)
    with pytest.raises(TardiffInputError, match=r"vitalPeriodic.csv.gz: variable 'heartrate' has unit 'bpm'.*"
                                                r"channel HR expects 'mmHg'"):
        read_cohort(eicu_config(folder, channels=(channel,)))


def test_eicu_bad_status_raises(eicu_tables):
    folder, _, _ = eicu_tables
    edit_table(folder / "patient.csv.gz", lambda frame: set_cell(frame, 3, "hospitaldischargestatus", "Unknown"))
    with pytest.raises(TardiffInputError, match=r"patient.csv.gz, line 5: hospitaldischargestatus is 'Unknown'"):
        read_cohort(eicu_config(folder))


def test_eicu_non_numeric_value_raises(eicu_tables):
    folder, _, _ = eicu_tables
    edit_table(folder / "vitalPeriodic.csv.gz", lambda frame: set_cell(frame, 4, "heartrate", "high"))
    with pytest.raises(TardiffInputError, match=r"vitalPeriodic.csv.gz, line 6: value 'high' of variable 'heartrate'"):
        read_cohort(eicu_config(folder))


def test_eicu_unknown_task_raises(eicu_tables):
    folder, _, _ = eicu_tables
    pattern = r"data.task is 'sepsis'; the eicu reader builds one of \['mortality', 'unit_mortality'\]"
    with pytest.raises(TardiffInputError, match=pattern):
        read_cohort(eicu_config(folder, task="sepsis"))


def test_eicu_preprocess_end_to_end(eicu_tables):
    folder, _, _ = eicu_tables
    cohort = preprocess_cohort(eicu_config(folder), seed=SEED)
    assert cohort.channel_names == ["HR", "SBP", "DBP", "MAP", "RespRate", "Temp", "SpO2"]
    for name in ("train", "val", "test"):
        split = cohort.split(name)
        assert split.x.shape[1:] == (HOURS, 7)
        assert set(split.y.tolist()) == {0, 1}
    assert cohort.metadata["cells_from_secondary_source"]["SBP"] > 0
