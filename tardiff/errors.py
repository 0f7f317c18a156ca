"""Exceptions for bad input: each message names the file, the value and the fix."""


class TardiffInputError(ValueError):
    """Input data, a parameter file or a checkpoint is missing, malformed or inconsistent.

    These errors are deterministic: re-running the same stage on the same input
    fails the same way, so the orchestration layer does not retry them.
    """


class MissingDataError(TardiffInputError, FileNotFoundError):
    """A required raw data file is absent from the configured data directory."""


class CorruptFileError(TardiffInputError):
    """A file exists but cannot be read: truncated archive, bad checkpoint, checksum mismatch."""
