"""Checkpoint and array loading: every kind of unreadable file gives one short error that names the file and the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tardiff.errors import CorruptFileError, MissingDataError
from tardiff.io import load_checkpoint, load_npz, save_checkpoint, save_npz


class Custom:
    """A class that weights_only loading does not allow."""


def _message(path) -> str:
    with pytest.raises(CorruptFileError) as info:
        load_checkpoint(path, required=("state",))
    return str(info.value)


def test_junk_bytes_name_the_file_and_fix(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"not a checkpoint")
    message = _message(path)
    assert str(path) in message
    assert "re-run the stage" in message
    assert "\n" not in message


def test_disallowed_pickle_hides_torch_advice(tmp_path):
    """A pickle that weights_only loading rejects gets one line, not torch's paragraphs of advice."""
    path = tmp_path / "model.pt"
    torch.save({"state": Custom()}, path)
    message = _message(path)
    assert "UnpicklingError" in message
    assert "\n" not in message
    assert len(message) < 500


def test_truncated_checkpoint_is_corrupt(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"state": torch.zeros(1000)})
    path.write_bytes(path.read_bytes()[:200])
    assert str(path) in _message(path)


def test_missing_key_and_non_dict_are_corrupt(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"other": torch.zeros(2)})
    assert "lacks keys ['state']" in _message(path)
    torch.save([torch.zeros(2)], path)
    assert "contains list" in _message(path)


def test_missing_checkpoint_names_the_stage(tmp_path):
    with pytest.raises(MissingDataError, match="run the stage that produces it"):
        load_checkpoint(tmp_path / "absent.pt")


@pytest.mark.parametrize("damage", ["truncate", "text", "npy"])
def test_damaged_npz_is_corrupt_without_pickle_advice(tmp_path, damage):
    path = tmp_path / "guided.npz"
    save_npz(path, x=np.zeros((50, 24, 7), dtype=np.float32), y=np.zeros(50))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "text":
        path.write_text("x,y\n1,0\n")
    else:
        np.save(tmp_path / "array.npy", np.zeros(3))
        path.write_bytes((tmp_path / "array.npy").read_bytes())
    with pytest.raises(CorruptFileError) as info:
        load_npz(path, required=("x", "y"), what="synthetic data")
    message = str(info.value)
    assert f"synthetic data {path} is not a valid .npz file" in message
    assert "pickle" not in message


def test_npz_without_required_array_is_corrupt(tmp_path):
    path = tmp_path / "guided.npz"
    save_npz(path, x=np.zeros((2, 3)))
    with pytest.raises(CorruptFileError, match=r"lacks arrays \['y'\]"):
        load_npz(path, required=("x", "y"))
