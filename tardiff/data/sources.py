"""The common output of every raw-data reader, and the registry that picks a reader by ``data.dataset``.

A reader turns one data source (PhysioNet archives, YAIB parquet files, a user's long
table, a MEDS export, raw MIMIC-III or eICU tables) into a :class:`RawCohort`: long-format
observations and one binary label per stay. Everything after that (hourly grid, split,
fill, normalisation) is shared and lives in :mod:`tardiff.data.cohort`.

The reader of dataset ``name`` is the module ``tardiff/data/<name>.py``, which
registers it with :func:`register_reader`. So the preprocess stage of a cohort depends
on that module and the shared modules only.

Reader contract:

- ``observations``: columns record_id (Int64), minute (Int32), parameter (Utf8) and value
  (Float64). Minute counts from the start of the stay's window, so 0 is ICU admission or
  the window start. Parameter is the raw variable name that ``data.channels[].sources``
  refer to, and value is in the channel's unit. The reader drops and counts rows with a
  missing value.
- ``outcomes``: record_id (Int64) and label (Int8, 0 or 1), one row per stay that has at
  least one observation.
- ``counts``: JSON-serialisable counts of everything the reader read, dropped or excluded,
  with the reason in the key name, for the cohort metadata.
- Problems in the input raise :class:`~tardiff.errors.TardiffInputError` (or a subclass)
  naming the file, the value and the fix.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

import tardiff.data
from tardiff.errors import TardiffInputError

if TYPE_CHECKING:
    from tardiff.config import DataConfig

OBSERVATION_SCHEMA = {"record_id": pl.Int64, "minute": pl.Int32, "parameter": pl.Utf8, "value": pl.Float64}
OUTCOME_SCHEMA = {"record_id": pl.Int64, "label": pl.Int8}


@dataclass
class RawCohort:
    """Long-format observations and binary labels of the stays a reader kept; see the module docstring."""

    observations: pl.DataFrame
    outcomes: pl.DataFrame
    counts: dict[str, Any] = field(default_factory=dict)


Reader = Callable[["DataConfig"], RawCohort]

_READERS: dict[str, Reader] = {}


def register_reader(name: str) -> Callable[[Reader], Reader]:
    """Register ``reader`` under ``name``, the value of ``data.dataset`` that selects it."""

    def decorate(reader: Reader) -> Reader:
        _READERS[name] = reader
        return reader

    return decorate


def reader_names() -> list[str]:
    """Return the dataset names of every reader module in this package, sorted."""
    for module in pkgutil.iter_modules(tardiff.data.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"tardiff.data.{module.name}")
    return sorted(_READERS)


def read_cohort(config: DataConfig) -> RawCohort:
    """Read the raw cohort named by ``config.dataset`` with its registered reader and check the contract.

    The reader of dataset ``name`` lives in module ``tardiff.data.<name>``, which registers it on import.
    """
    if config.dataset not in _READERS:
        try:
            importlib.import_module(f"tardiff.data.{config.dataset}")
        except ModuleNotFoundError:
            pass
    reader = _READERS.get(config.dataset)
    if reader is None:
        raise TardiffInputError(f"data.dataset is {config.dataset!r}; choose one of {reader_names()}")
    raw = reader(config)
    _check_contract(raw, config.dataset)
    return raw


def _check_contract(raw: RawCohort, dataset: str) -> None:
    for name, frame, schema in (
        ("observations", raw.observations, OBSERVATION_SCHEMA),
        ("outcomes", raw.outcomes, OUTCOME_SCHEMA),
    ):
        missing = [column for column in schema if column not in frame.columns]
        if missing:
            raise TypeError(f"the {dataset} reader returned {name} without column(s) {missing}")
