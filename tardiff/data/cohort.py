"""Turn a reader's long-format observations into a filled, normalised and split hourly cohort.

The steps, in order:

0. Read the dataset named by ``data.dataset`` with its reader (tardiff.data.sources).
1. Bin observations into an hourly grid of the configured channels.
2. Exclude stays without any observation of those channels.
3. Split stays into train, validation and test, stratified by label.
4. Fill missing cells (FILL_RULE) with fallback medians from the training split.
5. Fit the normaliser on the observed cells of the training split and normalise every split.
"""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tardiff.config import ChannelSpec, DataConfig
from tardiff.data.normalise import Normaliser, make_normaliser, normaliser_from_dict
from tardiff.data.sources import read_cohort
from tardiff.errors import CorruptFileError, MissingDataError, TardiffInputError
from tardiff.io import load_npz, read_json, save_npz, write_json

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
COHORT_FILE = "cohort.npz"
METADATA_FILE = "metadata.json"
WINDOW_RULE = (
    "hour h holds observations with minute in [60h, 60h + 60) since ICU admission; the window is "
    "[0, hours * 60) minutes, so an observation at exactly hours * 60 (for example 48:00 with hours = 48) "
    "is excluded"
)
PRIORITY_RULE = (
    "a channel with several sources takes, in each hour, only the values of the first-listed source that has "
    "an in-range observation in that hour (invasive before non-invasive blood pressure)"
)
FILL_RULE = (
    "in clinical units, per stay and channel: carry the last observed hourly value forward, fill the hours "
    "before the first observation with that first observation, and fill a channel never observed in the "
    "stay with the training split's median of observed hourly values; the mask keeps which cells were observed"
)
PREPARE_HINT = "run the preprocess stage first (`dvc repro preprocess` or `python -m tasks.preprocess`)"


@dataclass(eq=False)
class Split:
    """One split of the cohort: normalised, filled values with their observation mask, labels and stay ids."""

    x: np.ndarray  # float32 (n, hours, channels), normalised
    mask: np.ndarray  # bool (n, hours, channels), true where the cell was observed
    y: np.ndarray  # int64 (n,), the binary label of the cohort's task
    record_id: np.ndarray  # int64 (n,), the stay id of the source data

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def clinical(self, normaliser: Normaliser) -> np.ndarray:
        """Return ``x`` mapped back to clinical units with the cohort's normaliser."""
        return normaliser.inverse_transform(self.x)


@dataclass(eq=False)
class PreparedCohort:
    """The train, validation and test splits, the fitted normaliser and the metadata describing how they were built."""

    train: Split
    val: Split
    test: Split
    normaliser: Normaliser
    metadata: dict[str, Any]

    @property
    def channel_names(self) -> list[str]:
        """Names of the channels on the last axis of ``x``."""
        return [channel["name"] for channel in self.metadata["channels"]]

    def split(self, name: str) -> Split:
        """Return the split called ``name`` ("train", "val" or "test")."""
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; choose one of {list(SPLITS)}")
        return getattr(self, name)

    def to_clinical(self, x: np.ndarray) -> np.ndarray:
        """Map normalised values (..., channels), such as generated samples, back to clinical units."""
        return self.normaliser.inverse_transform(x)


def build_hourly_grid(
    observations: pl.DataFrame,
    channels: tuple[ChannelSpec, ...],
    hours: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Bin observations into an hourly grid of the given channels, following WINDOW_RULE and PRIORITY_RULE.

    Values outside a channel's [valid_min, valid_max] are dropped and counted. Observations
    inside one hour are averaged, or summed for channels with ``aggregate == "sum"``. Stays
    without any kept observation are excluded and counted.

    Returns values (float32, NaN where unobserved), mask (bool), both (N, hours, C), the
    sorted record ids (int64, N) and a dict of counts.
    """
    if hours < 1:
        raise TardiffInputError(f"data.hours is {hours}; use a positive number of hours")
    if not channels:
        raise TardiffInputError("data.channels is empty; list at least one channel in params.yaml")
    names = [channel.name for channel in channels]
    if len(set(names)) != len(names):
        raise TardiffInputError(f"data.channels has duplicate names {names}; give each channel a unique name")

    sources = pl.DataFrame(
        [
            {
                "parameter": source,
                "channel": index,
                "priority": priority,
                "valid_min": channel.valid_min,
                "valid_max": channel.valid_max,
                "is_sum": channel.aggregate == "sum",
            }
            for index, channel in enumerate(channels)
            for priority, source in enumerate(channel.sources)
        ],
        schema={
            "parameter": pl.Utf8,
            "channel": pl.Int32,
            "priority": pl.Int32,
            "valid_min": pl.Float64,
            "valid_max": pl.Float64,
            "is_sum": pl.Boolean,
        },
    )
    _check_sources_exist(observations, channels)
    end_minute = hours * 60
    stays_in = observations["record_id"].n_unique()
    in_window = observations.filter((pl.col("minute") >= 0) & (pl.col("minute") < end_minute))
    selected = in_window.join(sources, on="parameter", how="inner")
    in_range = pl.col("value").is_between(pl.col("valid_min"), pl.col("valid_max"))
    dropped = selected.filter(~in_range).group_by("channel").len()
    in_range_rows = selected.filter(in_range).with_columns((pl.col("minute") // 60).cast(pl.Int32).alias("hour"))

    cell = ["record_id", "hour", "channel"]
    best = in_range_rows.filter(pl.col("priority") == pl.col("priority").min().over(cell))
    cells = (
        best.group_by(cell)
        .agg(
            pl.col("value").mean().alias("mean"),
            pl.col("value").sum().alias("sum"),
            pl.col("is_sum").first(),
            pl.col("priority").first(),
        )
        .with_columns(pl.when(pl.col("is_sum")).then(pl.col("sum")).otherwise(pl.col("mean")).alias("value"))
        .sort(cell)
    )

    record_ids = np.sort(cells["record_id"].unique().to_numpy()).astype(np.int64)
    values = np.full((record_ids.size, hours, len(channels)), np.nan, dtype=np.float32)
    rows = np.searchsorted(record_ids, cells["record_id"].to_numpy())
    values[rows, cells["hour"].to_numpy(), cells["channel"].to_numpy()] = cells["value"].to_numpy()
    mask = ~np.isnan(values)

    out_of_range = {name: 0 for name in names}
    for index, number in dropped.iter_rows():
        out_of_range[names[index]] = int(number)
    secondary = cells.filter(pl.col("priority") > 0).group_by("channel").len()
    from_secondary = {channel.name: 0 for channel in channels if len(channel.sources) > 1}
    for index, number in secondary.iter_rows():
        from_secondary[names[index]] = int(number)
    excluded_ids = sorted(set(observations["record_id"].unique().to_list()) - set(record_ids.tolist()))
    for name, number in out_of_range.items():
        if number:
            logger.info("dropped %d out-of-range value(s) of channel %s", number, name)
    if excluded_ids:
        logger.info("excluded %d stay(s) without any observation of the selected channels", len(excluded_ids))
    counts = {
        "stays_in": int(stays_in),
        "stays_kept": int(record_ids.size),
        "stays_without_selected_channels": len(excluded_ids),
        "stays_without_selected_channels_ids": excluded_ids,
        "observations_outside_window": int(observations.height - in_window.height),
        "selected_observations_in_window": int(selected.height),
        "out_of_range": out_of_range,
        "cells_from_secondary_source": from_secondary,
    }
    return values, mask, record_ids, counts


def _check_sources_exist(observations: pl.DataFrame, channels: tuple[ChannelSpec, ...]) -> None:
    """Raise when no source variable of a channel occurs in the data at all: a misspelt name, not missing data."""
    if observations.height == 0:
        return
    present = set(observations["parameter"].unique().to_list())
    for channel in channels:
        if present.isdisjoint(channel.sources):
            close = sorted({m for source in channel.sources for m in difflib.get_close_matches(source, present, n=3)})
            hint = f"; close names in the data: {close}" if close else ""
            raise TardiffInputError(
                f"channel {channel.name}: none of its sources {list(channel.sources)} is a variable of the data "
                f"({len(present)} variables read){hint}. Fix data.channels[].sources in params.yaml"
            )


def observation_density(
    observations: pl.DataFrame,
    groups: dict[str, tuple[str, ...]],
    hours: int,
) -> pl.DataFrame:
    """Measure, per group of raw variables, the share of stays and of hour cells with an observation.

    A group counts as observed in an hour when any of its variables has a row there, with no
    range check. The denominators are the stays in ``observations`` and ``stays * hours``;
    the window follows WINDOW_RULE. Returns columns name, stays_observed, cells_observed,
    sorted by cells_observed, highest first.
    """
    n_stays = observations["record_id"].n_unique()
    membership = pl.DataFrame(
        [{"parameter": source, "name": name} for name, sources in groups.items() for source in sources],
        schema={"parameter": pl.Utf8, "name": pl.Utf8},
    )
    cells = (
        observations.filter((pl.col("minute") >= 0) & (pl.col("minute") < hours * 60))
        .join(membership, on="parameter", how="inner")
        .select("name", "record_id", (pl.col("minute") // 60).alias("hour"))
        .unique()
    )
    density = cells.group_by("name").agg(
        (pl.col("record_id").n_unique() / n_stays).alias("stays_observed"),
        (pl.len() / (n_stays * hours)).alias("cells_observed"),
    )
    absent = pl.DataFrame(
        {"name": [name for name in groups if name not in density["name"].to_list()]},
        schema={"name": pl.Utf8},
    ).with_columns(pl.lit(0.0).alias("stays_observed"), pl.lit(0.0).alias("cells_observed"))
    return pl.concat([density, absent]).sort("cells_observed", descending=True)


def fill_missing(values: np.ndarray, mask: np.ndarray, medians: np.ndarray) -> np.ndarray:
    """Fill unobserved cells of (n, T, C) values following FILL_RULE, given per-channel fallback medians."""
    n, hours, n_channels = values.shape
    steps = np.arange(hours)[None, :, None]
    last_seen = np.maximum.accumulate(np.where(mask, steps, -1), axis=1)
    observed_any = mask.any(axis=1)
    first_seen = np.where(observed_any, mask.argmax(axis=1), 0)
    source = np.where(last_seen >= 0, last_seen, first_seen[:, None, :])
    filled = np.take_along_axis(values, source, axis=1)
    fallback = np.broadcast_to(np.asarray(medians, dtype=values.dtype), (n, n_channels))
    never = ~observed_any
    filled = np.where(never[:, None, :], fallback[:, None, :], filled)
    return filled.astype(values.dtype)


def channel_medians(values: np.ndarray, mask: np.ndarray, names: list[str]) -> np.ndarray:
    """Return the median of the observed cells of each channel; raise when a channel has none."""
    medians = []
    for index, name in enumerate(names):
        observed = values[..., index][mask[..., index]]
        if observed.size == 0:
            raise TardiffInputError(
                f"channel {name} has no observation in the training split, so no fill value exists; "
                f"use more stays (data.max_stays, data.sets) or remove the channel"
            )
        medians.append(float(np.median(observed)))
    return np.asarray(medians, dtype=np.float64)


def split_stays(
    labels: np.ndarray,
    fractions: tuple[float, float, float],
    seed: int,
) -> dict[str, np.ndarray]:
    """Split indices into train/val/test, stratified by label and seeded.

    Per class, the indices are permuted with ``numpy.random.default_rng(seed)`` and cut at
    rounded fractions, validation and test first, so training takes the rounding remainder.
    Returns sorted index arrays. Raises TardiffInputError when a split lacks a class.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(members.size)]
        n_val = int(np.floor(members.size * fractions[1] + 0.5))
        n_test = int(np.floor(members.size * fractions[2] + 0.5))
        n_train = members.size - n_val - n_test
        parts["train"].append(members[:n_train])
        parts["val"].append(members[n_train : n_train + n_val])
        parts["test"].append(members[n_train + n_val :])
    indices = {name: np.sort(np.concatenate(parts[name])) for name in SPLITS}
    for name, index in indices.items():
        present = set(labels[index].tolist())
        if present != {0, 1}:
            counts = {str(int(k)): int(v) for k, v in zip(*np.unique(labels, return_counts=True))}
            raise TardiffInputError(
                f"the {name} split has {index.size} stay(s) with labels {sorted(present)} only; every split needs "
                f"both classes. Label counts of the cohort: {counts}, fractions {list(fractions)}. Use more stays "
                f"(raise data.max_stays or add data.sets)"
            )
    return indices


def preprocess_cohort(config: DataConfig, seed: int) -> PreparedCohort:
    """Read the configured dataset with its reader, then grid, split, fill and normalise it (module docstring)."""
    raw = read_cohort(config)
    data_dir = Path(config.dir)
    values, mask, record_ids, grid_counts = build_hourly_grid(raw.observations, config.channels, config.hours)
    names = [channel.name for channel in config.channels]

    labels_by_id = dict(raw.outcomes.select("record_id", "label").iter_rows())
    labels = np.array([labels_by_id[int(r)] for r in record_ids], dtype=np.int64)
    label_counts = {str(k): int((labels == k).sum()) for k in (0, 1)}
    if record_ids.size == 0:
        raise TardiffInputError(
            f"the {config.dataset} cohort from {data_dir} is empty: {raw.outcomes.height} stay(s) read, none with "
            f"an in-range observation of channels {names} in the first {config.hours} hours. Check data.channels "
            f"in params.yaml and that data.dir points at the {config.dataset} files"
        )
    if min(label_counts.values()) == 0:
        raise TardiffInputError(
            f"the {config.dataset} cohort from {data_dir} has one class only: label counts {label_counts} among "
            f"{record_ids.size} stay(s) (data.max_stays={config.max_stays}). A binary task needs both classes; "
            f"use more stays or check the labels"
        )

    fractions = (config.split_train, config.split_val, config.split_test)
    indices = split_stays(labels, fractions, seed)
    train = indices["train"]
    medians = channel_medians(values[train], mask[train], names)
    filled = fill_missing(values, mask, medians)
    normaliser = make_normaliser(config.normaliser).fit(filled[train], mask[train])
    normalised = normaliser.transform(filled).astype(np.float32)

    splits = {
        name: Split(x=normalised[index], mask=mask[index], y=labels[index], record_id=record_ids[index])
        for name, index in indices.items()
    }
    metadata = _build_metadata(config, seed, raw.counts, grid_counts, splits, medians, normaliser)
    logger.info(
        "prepared %d stays (train %d, val %d, test %d) with channels %s",
        record_ids.size,
        len(splits["train"]),
        len(splits["val"]),
        len(splits["test"]),
        names,
    )
    return PreparedCohort(normaliser=normaliser, metadata=metadata, **splits)


def preprocess_physionet2012(config: DataConfig, seed: int) -> PreparedCohort:
    """Prepare PhysioNet 2012 mortality; :func:`preprocess_cohort` for ``data.dataset: physionet2012``."""
    if config.dataset != "physionet2012":
        raise TardiffInputError(f"data.dataset is {config.dataset!r}; this function prepares 'physionet2012' only")
    return preprocess_cohort(config, seed)


def _build_metadata(
    config: DataConfig,
    seed: int,
    read_counts: dict[str, Any],
    grid_counts: dict[str, Any],
    splits: dict[str, Split],
    medians: np.ndarray,
    normaliser: Normaliser,
) -> dict[str, Any]:
    names = [channel.name for channel in config.channels]
    observed_share = {}
    stays_observed_share = {}
    for name, split in splits.items():
        cell_share = split.mask.mean(axis=(0, 1)) if len(split) else np.zeros(len(names))
        stay_share = split.mask.any(axis=1).mean(axis=0) if len(split) else np.zeros(len(names))
        observed_share[name] = {channel: round(float(v), 4) for channel, v in zip(names, cell_share)}
        stays_observed_share[name] = {channel: round(float(v), 4) for channel, v in zip(names, stay_share)}
    return {
        "dataset": config.dataset,
        "task": config.task,
        "data_dir": config.dir,
        "sets": list(config.sets),
        "max_stays": config.max_stays,
        "seed": seed,
        "hours": config.hours,
        "channels": [
            {
                "name": channel.name,
                "sources": list(channel.sources),
                "unit": channel.unit,
                "aggregate": channel.aggregate,
                "valid_range": [channel.valid_min, channel.valid_max],
            }
            for channel in config.channels
        ],
        "window_rule": WINDOW_RULE,
        "priority_rule": PRIORITY_RULE,
        "fill_rule": FILL_RULE,
        "fill_medians": {channel: float(value) for channel, value in zip(names, medians)},
        "normaliser": normaliser.to_dict(),
        "split_fractions": {"train": config.split_train, "val": config.split_val, "test": config.split_test},
        "split_record_ids": {name: split.record_id.tolist() for name, split in splits.items()},
        "label_counts": {
            name: {"0": int((split.y == 0).sum()), "1": int((split.y == 1).sum())} for name, split in splits.items()
        },
        "observed_cell_share": observed_share,
        "observed_stay_share": stays_observed_share,
        "exclusions": {
            "stays_without_selected_channels": grid_counts["stays_without_selected_channels"],
            "stays_without_selected_channels_ids": grid_counts["stays_without_selected_channels_ids"],
        },
        "dropped_values": {
            "observations_outside_window": grid_counts["observations_outside_window"],
            "out_of_range": grid_counts["out_of_range"],
        },
        "reader_counts": read_counts,
        "cells_from_secondary_source": grid_counts["cells_from_secondary_source"],
    }


def save_prepared(cohort: PreparedCohort, out_dir: Path) -> None:
    """Write ``out_dir/cohort.npz`` and ``out_dir/metadata.json``, each atomically.

    The metadata is serialised before anything is written, so metadata that is not
    JSON-serialisable leaves earlier output untouched.
    """
    out_dir = Path(out_dir)
    try:
        json.dumps(cohort.metadata)
    except (TypeError, ValueError) as exc:
        raise TardiffInputError(
            f"cohort metadata cannot be written as JSON ({exc}); nothing was written to {out_dir}"
        ) from exc
    arrays = {}
    for name in SPLITS:
        split = cohort.split(name)
        arrays[f"{name}_x"] = split.x.astype(np.float32)
        arrays[f"{name}_mask"] = split.mask.astype(bool)
        arrays[f"{name}_y"] = split.y.astype(np.int64)
        arrays[f"{name}_record_id"] = split.record_id.astype(np.int64)
    save_npz(out_dir / COHORT_FILE, **arrays)
    write_json(out_dir / METADATA_FILE, cohort.metadata)


def load_prepared(out_dir: Path) -> PreparedCohort:
    """Load a cohort written by :func:`save_prepared` and check that arrays and metadata agree."""
    out_dir = Path(out_dir)
    cohort_path = out_dir / COHORT_FILE
    metadata_path = out_dir / METADATA_FILE
    for path in (cohort_path, metadata_path):
        if not path.is_file():
            raise MissingDataError(f"prepared cohort file {path} not found; {PREPARE_HINT}")
    required = tuple(f"{name}_{key}" for name in SPLITS for key in ("x", "mask", "y", "record_id"))
    arrays = load_npz(cohort_path, required, what="prepared cohort")
    metadata = read_json(metadata_path, what="cohort metadata")
    try:
        normaliser = normaliser_from_dict(metadata["normaliser"])
        hours = int(metadata["hours"])
        n_channels = len(metadata["channels"])
        membership = metadata["split_record_ids"]
    except (KeyError, TypeError) as exc:
        raise CorruptFileError(f"cohort metadata {metadata_path} lacks {exc}; {PREPARE_HINT}") from exc

    if normaliser.n_channels != n_channels:
        raise CorruptFileError(
            f"cohort metadata {metadata_path} lists {n_channels} channel(s) but its normaliser was fitted on "
            f"{normaliser.n_channels}; {PREPARE_HINT}"
        )
    splits = {}
    for name in SPLITS:
        split = Split(
            x=arrays[f"{name}_x"],
            mask=arrays[f"{name}_mask"],
            y=arrays[f"{name}_y"],
            record_id=arrays[f"{name}_record_id"],
        )
        _check_split(split, name, hours, n_channels, membership.get(name), cohort_path)
        splits[name] = split
    return PreparedCohort(normaliser=normaliser, metadata=metadata, **splits)


def _check_split(
    split: Split, name: str, hours: int, n_channels: int, member_ids: list[int] | None, path: Path
) -> None:
    expected = (len(split.y), hours, n_channels)
    problems = []
    if split.x.shape != expected or split.x.dtype != np.float32:
        problems.append(f"{name}_x has shape {split.x.shape} and dtype {split.x.dtype}, expected {expected} float32")
    elif not np.isfinite(split.x).all():
        problems.append(f"{name}_x contains {int((~np.isfinite(split.x)).sum())} NaN or infinite value(s)")
    if split.mask.shape != expected or split.mask.dtype != np.bool_:
        problems.append(
            f"{name}_mask has shape {split.mask.shape} and dtype {split.mask.dtype}, expected {expected} bool"
        )
    if split.y.ndim != 1 or not np.isin(split.y, (0, 1)).all():
        problems.append(f"{name}_y must be a vector of 0/1 labels, got shape {split.y.shape}")
    if split.record_id.shape != split.y.shape:
        problems.append(f"{name}_record_id has shape {split.record_id.shape}, expected {split.y.shape}")
    elif member_ids is None or split.record_id.tolist() != list(member_ids):
        problems.append(f"{name}_record_id differs from split_record_ids.{name} in {METADATA_FILE}")
    if problems:
        raise CorruptFileError(f"prepared cohort {path} is inconsistent: {'; '.join(problems)}. {PREPARE_HINT}")

