"""The report stage: the cross-cohort table and the per-cohort pages come from each cohort's metrics."""

from __future__ import annotations

from pathlib import Path

import yaml

from tardiff.io import write_json
from tardiff.report import cohort_table, results_tables
from tasks import report
from tests.stage_project import tiny_params


def _leaf(auroc: float, auprc: float, **extra) -> dict:
    return {"auroc_mean": auroc, "auroc_std": 0.01, "auprc_mean": auprc, "auprc_std": 0.02, "n_seeds": 3, **extra}


SUMMARY = {"results": {"gru": {
    "real": {"trtr": _leaf(0.8, 0.4)},
    "guided": {"tstr": _leaf(0.71, 0.31), "tsrtr_best": _leaf(0.79, 0.41, alpha=0.2)},
    "unguided": {"tstr": _leaf(0.77, 0.37), "tsrtr_best": _leaf(0.785, 0.405, alpha=1.0)},
}}}


def test_table_rows_and_missing_cohorts():
    text = results_tables({"a": SUMMARY, "b": None}, {"a": {"dataset": "physionet2012", "task": ""}})
    auroc, auprc = text.split("### gru: AUPRC")
    row = next(line for line in auroc.splitlines() if line.startswith("| a |"))
    assert row.split(" | ")[1:7] == ["physionet2012", "0.800 ± 0.010", "0.770 ± 0.010", "0.710 ± 0.010",
                                     "0.785 ± 0.010 (α=1)", "0.790 ± 0.010 (α=0.2)"]
    assert "| b | - | not evaluated yet |" in auroc
    assert "0.310 ± 0.020" in auprc


def _run_report(folder: Path, raw: dict, monkeypatch) -> None:
    """Write ``raw`` as params.yaml and SUMMARY as physionet2012's evaluation, then run the report stage there."""
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))
    write_json(folder / "metrics/physionet2012/evaluate.json", SUMMARY)
    monkeypatch.chdir(folder)
    report.main([])


def test_report_stage_reads_metrics_of_every_cohort(tmp_path, physionet2012_dir, monkeypatch):
    raw = tiny_params(physionet2012_dir)
    raw["cohorts"]["second"] = raw["cohorts"]["physionet2012"]
    _run_report(tmp_path, raw, monkeypatch)
    text = (tmp_path / "reports/results.md").read_text()
    assert "| physionet2012 | physionet2012 | 0.800 ± 0.010" in text
    assert "| second | physionet2012 | not evaluated yet |" in text
    assert (tmp_path / "reports/results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(path.name for path in (tmp_path / "reports/cohorts").iterdir()) == ["physionet2012.md"]
    page = (tmp_path / "reports/cohorts/physionet2012.md").read_text()
    assert "The fidelity stage has not run for physionet2012 yet." in page


def test_stale_cohort_page_is_removed(tmp_path, physionet2012_dir, monkeypatch):
    (tmp_path / "reports/cohorts").mkdir(parents=True)
    (tmp_path / "reports/cohorts/renamed.md").write_text("an old cohort")
    _run_report(tmp_path, tiny_params(physionet2012_dir), monkeypatch)
    assert sorted(path.name for path in (tmp_path / "reports/cohorts").iterdir()) == ["physionet2012.md"]


def test_cohort_page_lists_every_source_evaluator_and_fidelity():
    summary = {
        "results": {
            evaluator: {
                **SUMMARY["results"]["gru"],
                "smote": {"tstr": _leaf(0.75, 0.35), "tsrtr_best": _leaf(0.78, 0.39, alpha=0.6)},
            }
            for evaluator in ("gru", "gbt")
        },
        "paired": {"gru": {"smote_vs_unguided": {"tstr": {"auroc_mean": -0.02, "auroc_lo": -0.05, "auroc_hi": 0.01,
                                                          "auprc_mean": -0.02, "auprc_lo": -0.04, "auprc_hi": 0.0}}}},
        "bootstrap": {"n_test": 400, "n_test_positive": 60, "baseline": "unguided"},
    }
    fidelity = {
        "real_holdout": {"discriminative": {"score": 0.01}, "predictive_mae": 0.3},
        "smote": {"discriminative": {"score": 0.12}, "predictive_mae": 0.31, "privacy": {"copies": {"copies": 4}}},
    }
    page = cohort_table("demo", summary, fidelity, {"dataset": "physionet2012", "task": "mortality"})
    lines = page.splitlines()
    header = next(line for line in lines if line.startswith("| source | gru AUROC"))
    assert header.split(" | ")[1:] == ["gru AUROC", "gru AUPRC", "gru F1", "gbt AUROC", "gbt AUPRC", "gbt F1 |"]
    smote_rows = [line for line in lines if line.startswith("| SMOTE |")]
    assert smote_rows[0].startswith("| SMOTE | 0.750 ± 0.010 | 0.350 ± 0.020 | - | 0.750 ± 0.010")
    assert smote_rows[1].startswith("| SMOTE | 0.6 | 0.780 ± 0.010")
    assert smote_rows[2] == "| SMOTE | -0.020 [-0.050, +0.010] | -0.020 [-0.040, +0.000] | - | - |"
    assert smote_rows[3].startswith("| SMOTE | 0.120 | 0.310 |")
    assert smote_rows[3].endswith("| 4 |")
    assert "| Real only (TRTR) | 0.800 ± 0.010" in page
    assert "| Real held-out (reference) | 0.010 | 0.300 |" in page
    assert "400 stays, 60 positive" in page
