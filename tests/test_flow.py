"""The Prefect flow's retry rule, argument checks and interruption (the full flow runs in the end-to-end test)."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.states import Completed, Failed

from flows.pipeline import StageFailed, is_transient, stop_process, tardiff_pipeline
from tardiff.errors import MissingDataError, TardiffInputError
from tasks.common import INPUT_ERROR_MARKER


def test_input_errors_are_not_retried():
    error = StageFailed("preprocess", 255, f"ERROR: failed\n{INPUT_ERROR_MARKER} data dir not found\n")
    assert error.input_error
    assert not is_transient(None, None, Failed(data=error))


def test_other_failures_are_retried():
    lock = StageFailed("train_diffuser", 255, "ERROR: Unable to acquire lock\n")
    assert is_transient(None, None, Failed(data=lock))
    assert is_transient(None, None, Failed(data=OSError("disk busy")))


def test_completed_state_is_not_retried():
    assert not is_transient(None, None, Completed(data={"stage": "preprocess"}))


def test_unknown_stage_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown stage"):
        tardiff_pipeline.fn(project=str(tmp_path), stages=["train"])


def test_missing_data_dir_names_download_command(tmp_path):
    (tmp_path / "params.yaml").write_text(
        (Path(__file__).resolve().parents[1] / "params.yaml").read_text().replace(
            "dir: ../shared/data/physionet2012", f"dir: {tmp_path / 'absent'}"
        )
    )
    with pytest.raises(MissingDataError, match="tardiff.data.download"):
        tardiff_pipeline.fn(project=str(tmp_path))


def test_unknown_cohort_is_an_input_error(tmp_path):
    (tmp_path / "params.yaml").write_text((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    with pytest.raises(TardiffInputError, match="cohort\\(s\\) \\['nowhere'\\] are not defined"):
        tardiff_pipeline.fn(project=str(tmp_path), cohorts=["nowhere"])


def _child(code: str) -> subprocess.Popen:
    """Start a Python child and wait until it prints that its signal handling is set up."""
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    return process


def test_stop_process_interrupts_child():
    process = _child(
        "import sys, time\n"
        "print('ready', flush=True)\n"
        "try:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    sys.exit(130)\n"
    )
    stop_process(process, grace_seconds=30)
    assert process.returncode == 130


def test_stop_process_kills_ignoring_child():
    process = _child(
        "import signal, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    stop_process(process, grace_seconds=0.5)
    assert process.returncode == -signal.SIGKILL
