"""The cross-cohort report: table cells come from each cohort's evaluation summary."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from tardiff.io import write_json
from tardiff.report import results_tables
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


def test_report_stage_reads_metrics_of_every_cohort(tmp_path, physionet2012_dir):
    raw = tiny_params(physionet2012_dir)
    raw["cohorts"]["second"] = raw["cohorts"]["physionet2012"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    write_json(tmp_path / "metrics/physionet2012/evaluate.json", SUMMARY)
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        report.main([])
    finally:
        os.chdir(previous)
    text = (tmp_path / "reports/results.md").read_text()
    assert "| physionet2012 | physionet2012 | 0.800 ± 0.010" in text
    assert "| second | physionet2012 | not evaluated yet |" in text
    assert (tmp_path / "reports/results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
