"""SHA-256 checksum files in ``sha256sum`` format, shared by the raw-data readers.

A checksum file lists ``<hex digest>  <path>`` per line. Paths are relative to the folder
that contains the checksum file and may start with ``./`` (``./aki/eicu_demo/dyn.parquet``),
so a file is looked up by its path relative to that folder.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tardiff.errors import CorruptFileError

logger = logging.getLogger(__name__)

CHECKSUM_FILES = ("SHA256SUMS", "SHA256SUMS.txt")
_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Checksums:
    """The digests of one checksum file: relative path (``a/b.parquet``, no leading ``./``) -> lower-case hex."""

    source: Path
    sums: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        """Folder that the listed paths are relative to."""
        return self.source.parent


def parse_checksum_text(text: str, source: Path | str, fix: str = "restore the file") -> dict[str, str]:
    """Parse ``sha256sum`` output into relative path -> lower-case hex digest; ``fix`` ends the error message."""
    sums: dict[str, str] = {}
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not _DIGEST.fullmatch(parts[0]):
            raise CorruptFileError(
                f"checksum file {source}, line {line_number}: expected '<sha256 hex>  <file name>', got {line!r}; "
                f"{fix}"
            )
        name = parts[1].strip().lstrip("*")
        while name.startswith("./"):
            name = name[2:]
        sums[name] = parts[0].lower()
    return sums


def read_checksums(folder: Path, fix: str = "restore the file") -> Checksums | None:
    """Parse ``folder/SHA256SUMS`` (or upstream's ``SHA256SUMS.txt``); return None when neither exists."""
    for name in CHECKSUM_FILES:
        path = Path(folder) / name
        if path.is_file():
            return Checksums(path, parse_checksum_text(path.read_text(), path, fix))
    return None


def warn_no_checksums(folder: Path) -> None:
    """Log that ``folder`` has no checksum file, so the raw files will be read unverified."""
    logger.warning(
        "no %s in %s, so the raw files are read without checksum verification; to verify them, write one "
        "with `sha256sum FILES > %s/SHA256SUMS`, or set data.verify_checksums: false to silence this",
        " or ".join(CHECKSUM_FILES), folder, folder,
    )


def sha256_of(path: Path) -> str:
    """Compute the SHA-256 hex digest of a file, reading it in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, expected: str, source: Path | str, fix: str = "download the file again") -> None:
    """Raise CorruptFileError when the SHA-256 digest of ``path`` differs from ``expected``."""
    actual = sha256_of(path)
    if actual != expected.lower():
        raise CorruptFileError(
            f"checksum mismatch for {path}: expected sha256 {expected} (from {source}), got {actual}. "
            f"The file is corrupt or was replaced; {fix}"
        )


def verify_if_listed(
    path: Path, checksums: Checksums | None, counts: dict[str, Any], fix: str = "download the file again"
) -> None:
    """Verify ``path`` when ``checksums`` lists it, recording its name in ``counts["files_verified"]``.

    A file that the checksum file does not list is logged and recorded in
    ``counts["files_unverified"]``, as is every file when ``checksums`` is None.
    """
    path = Path(path)
    if checksums is None:
        counts.setdefault("files_unverified", []).append(path.name)
        return
    try:
        key = path.resolve().relative_to(checksums.root.resolve()).as_posix()
    except ValueError:
        key = path.name
    expected = checksums.sums.get(key)
    if expected is None:
        logger.warning("%s is not listed in %s, so its checksum is not verified", key, checksums.source)
        counts.setdefault("files_unverified", []).append(key)
        return
    verify_file(path, expected, checksums.source, fix)
    counts.setdefault("files_verified", []).append(key)
