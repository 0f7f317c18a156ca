"""Atomic file output and safe loading of stage artefacts."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tardiff.errors import CorruptFileError, MissingDataError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` and move it into place only on success.

    A crash or exception inside the block leaves any earlier file at ``path``
    untouched and removes the temporary file, so readers never see half-written
    output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    # mkstemp creates the file owner-only; give it the usual permissions under the umask.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path, what: str = "file") -> Any:
    """Read a JSON file, naming the producing stage when it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"{what} {path} not found; run the stage that produces it (dvc repro)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{what} {path} is not valid JSON ({exc}); delete it and re-run its stage") from exc


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Write arrays to an uncompressed ``.npz`` file, atomically."""
    with atomic_path(path) as tmp:
        with tmp.open("wb") as handle:
            np.savez(handle, **arrays)


def load_npz(path: str | Path, required: tuple[str, ...], what: str = "array file") -> dict[str, np.ndarray]:
    """Load an ``.npz`` file without pickle and check that ``required`` arrays are present."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"{what} {path} not found; run the stage that produces it (dvc repro)")
    # An .npz file is a zip archive. Anything else would reach numpy's .npy and pickle branches, whose
    # messages suggest loading the file unsafely.
    if not zipfile.is_zipfile(path):
        raise CorruptFileError(
            f"{what} {path} is not a valid .npz file (truncated, or not written by tardiff); delete it and re-run "
            "the stage that writes it"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CorruptFileError(f"{what} {path} cannot be read ({exc}); delete it and re-run its stage") from exc
    missing = [key for key in required if key not in arrays]
    if missing:
        raise CorruptFileError(f"{what} {path} lacks arrays {missing}; re-run the stage that produces it")
    return arrays


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint of tensors and plain Python values, atomically."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check its keys."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"checkpoint {path} not found; run the stage that produces it (dvc repro)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError or zipfile errors
        if isinstance(exc, pickle.UnpicklingError):
            # torch's own text here is paragraphs of advice on unsafe loading, so state the problem instead.
            reason = "it holds Python objects other than tensors and plain values"
        else:
            lines = str(exc).strip().splitlines()
            reason = lines[0][:200] if lines else "no details"
        raise CorruptFileError(
            f"checkpoint {path} cannot be loaded ({type(exc).__name__}: {reason}); the file is not a tardiff "
            "checkpoint or is truncated. Delete it and re-run the stage that writes it"
        ) from exc
    if not isinstance(payload, dict):
        raise CorruptFileError(f"checkpoint {path} contains {type(payload).__name__}, expected a dict; re-run its stage")
    missing = [key for key in required if key not in payload]
    if missing:
        raise CorruptFileError(f"checkpoint {path} lacks keys {missing}; re-run the stage that produces it")
    return payload
