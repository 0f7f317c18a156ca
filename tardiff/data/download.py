"""Download the official PhysioNet 2012 challenge files and verify them against upstream SHA-256 sums.

Usage: ``python -m tardiff.data.download --dest DIR [--sets a b c]``. The command fetches
``SHA256SUMS.txt`` first, then each ``set-X.tar.gz`` and ``Outcomes-X.txt``. Each file is
streamed into a temporary file beside its destination, hashed while it is written, and
moved into place only when its digest matches. Files already present with the right
digest are kept without downloading them again.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tardiff.data.checksums import parse_checksum_text, sha256_of
from tardiff.data.physionet2012 import SETS
from tardiff.errors import CorruptFileError, TardiffInputError
from tardiff.io import atomic_path

logger = logging.getLogger(__name__)

BASE_URL = "https://physionet.org/files/challenge-2012/1.0.0/"
CHECKSUM_NAME = "SHA256SUMS.txt"
DEFAULT_TIMEOUT_S = 60.0


class DownloadError(RuntimeError):
    """A file could not be fetched: no network, an HTTP error or a timeout."""


def files_for_sets(sets: Sequence[str]) -> list[str]:
    """Return the upstream file names needed for the given sets, archives first."""
    unknown = [s for s in sets if s not in SETS]
    if unknown or not sets:
        raise TardiffInputError(f"unknown set(s) {unknown or list(sets)}; choose from {list(SETS)}")
    return [f"set-{s}.tar.gz" for s in sets] + [f"Outcomes-{s}.txt" for s in sets]


def fetch(url: str, destination: Path, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Stream ``url`` into ``destination`` atomically and return the SHA-256 hex digest of the bytes written."""
    digest = hashlib.sha256()
    try:
        with atomic_path(destination) as tmp, urllib.request.urlopen(url, timeout=timeout_s) as response:
            with tmp.open("wb") as handle:
                for block in iter(lambda: response.read(1 << 20), b""):
                    digest.update(block)
                    handle.write(block)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"download of {url} failed with HTTP {exc.code} {exc.reason}; check the URL") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"download of {url} failed ({reason}); check the network connection or proxy, or copy the files "
            f"by hand from https://physionet.org/content/challenge-2012/1.0.0/"
        ) from exc
    return digest.hexdigest()


def download_physionet2012(
    dest: Path,
    sets: Sequence[str] = SETS,
    base_url: str = BASE_URL,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[Path]:
    """Download the files of ``sets`` into ``dest``, verify each against upstream's SHA256SUMS.txt, return their paths.

    Raises:
        DownloadError: a file could not be fetched.
        CorruptFileError: a downloaded file's digest differs from upstream's; nothing is
            left at its destination.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    names = files_for_sets(sets)
    base_url = base_url if base_url.endswith("/") else base_url + "/"

    checksum_path = dest / CHECKSUM_NAME
    fetch(base_url + CHECKSUM_NAME, checksum_path, timeout_s)
    sums = parse_checksum_text(checksum_path.read_text(), base_url + CHECKSUM_NAME)
    unlisted = [name for name in names if name not in sums]
    if unlisted:
        raise CorruptFileError(
            f"{base_url + CHECKSUM_NAME} does not list {unlisted}, so they cannot be verified; check --base-url"
        )

    paths = []
    for name in names:
        path = dest / name
        expected = sums[name]
        if path.is_file() and sha256_of(path) == expected:
            logger.info("%s is present and verified; skipping its download", path)
            paths.append(path)
            continue
        logger.info("downloading %s to %s", base_url + name, path)
        staging = dest / f".{name}.download"
        try:
            actual = fetch(base_url + name, staging, timeout_s)
            if actual != expected:
                raise CorruptFileError(
                    f"checksum mismatch for {base_url + name}: expected sha256 {expected} (from {CHECKSUM_NAME}), "
                    f"got {actual}; the download is corrupt or the mirror changed, so run the command again"
                )
            os.replace(staging, path)
        finally:
            staging.unlink(missing_ok=True)
        paths.append(path)
    return paths


def build_parser() -> argparse.ArgumentParser:
    """Build the command-line parser of ``python -m tardiff.data.download``."""
    parser = argparse.ArgumentParser(
        prog="python -m tardiff.data.download",
        description="Download the PhysioNet/CinC Challenge 2012 records and outcomes and verify their SHA-256 sums.",
    )
    parser.add_argument(
        "--dest", type=Path, required=True, help="directory to write the files into (created if absent)"
    )
    parser.add_argument(
        "--sets",
        nargs="+",
        choices=SETS,
        default=list(SETS),
        help="challenge sets to download (default: a b c); each set is 4,000 stays",
    )
    parser.add_argument(
        "--base-url", default=BASE_URL, help=f"URL of the directory holding the files (default: {BASE_URL})"
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="network timeout per request, in seconds (default: 60)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the download command; return 0 on success and 1 on a download or checksum error."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        paths = download_physionet2012(args.dest, tuple(dict.fromkeys(args.sets)), args.base_url, args.timeout)
    except (DownloadError, TardiffInputError) as exc:
        logger.error("%s", exc)
        return 1
    logger.info("%d file(s) verified in %s; set data.dir in params.yaml to this directory", len(paths), args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
