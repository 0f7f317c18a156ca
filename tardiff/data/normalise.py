"""Per-channel, invertible normalisers fitted on the observed values of the training split.

Arrays have the channel axis last, so ``(n, T, C)`` grids and ``(T, C)`` single stays both
work. Two kinds exist:

- ``zscore``: ``(x - mean) / std`` per channel.
- ``pit``: the centred probability integral transform ``u = 2 F(x) - 1`` in [-1, 1], where
  ``F`` is the empirical CDF of the channel, stored as a fixed number of quantiles and
  interpolated linearly. The inverse interpolates the same knots the other way, so values
  inside the fitted range round-trip exactly. A value below the fitted minimum gets the
  minimum's PIT value, which is -1 unless several quantiles tie at the minimum. Values
  above the maximum behave the same way, and the inverse maps such values to the fitted
  minimum or maximum.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from tardiff.errors import TardiffInputError

logger = logging.getLogger(__name__)

NORMALISER_KINDS = ("zscore", "pit")


def _check_finite(x: np.ndarray, description: str) -> np.ndarray:
    array = np.asarray(x, dtype=np.float64)
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise TardiffInputError(
            f"{description} contains {int(bad.sum())} NaN or infinite value(s), first at index {first} "
            f"(value {array[first]}); fill missing values before normalising"
        )
    return array


def _observed_by_channel(values: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """Return, per channel, the values where ``mask`` is true; raise on bad shapes or non-finite observations."""
    values = np.asarray(values, dtype=np.float64)
    mask = np.asarray(mask)
    if values.ndim < 2 or values.shape != mask.shape:
        raise TardiffInputError(
            f"normaliser fit needs values and mask of the same shape (..., channels); got {values.shape} and "
            f"{mask.shape}"
        )
    mask = mask.astype(bool)
    observed = values[mask]
    _check_finite(observed, "observed values passed to fit")
    channels = values.shape[-1]
    flat_values = values.reshape(-1, channels)
    flat_mask = mask.reshape(-1, channels)
    per_channel = [flat_values[flat_mask[:, c], c] for c in range(channels)]
    empty = [c for c, column in enumerate(per_channel) if column.size == 0]
    if empty:
        raise TardiffInputError(
            f"channel(s) {empty} have no observed value in the fitting data; a normaliser needs at least one "
            f"observation per channel, so use more stays or drop the channel"
        )
    return per_channel


class _Normaliser:
    kind = ""

    def __init__(self) -> None:
        self.n_channels: int | None = None

    def _require_fitted(self, x: np.ndarray, description: str) -> np.ndarray:
        if self.n_channels is None:
            raise TardiffInputError(
                f"{type(self).__name__} is not fitted; call fit() or load it with normaliser_from_dict()"
            )
        array = _check_finite(x, description)
        if array.ndim < 1 or array.shape[-1] != self.n_channels:
            raise TardiffInputError(
                f"{description} has shape {array.shape}, but the normaliser was fitted on {self.n_channels} channel(s) "
                f"on the last axis"
            )
        return array


class ZScoreNormaliser(_Normaliser):
    """Per-channel standardisation ``(x - mean) / std`` with mean and std of the observed training values."""

    kind = "zscore"

    def __init__(self) -> None:
        super().__init__()
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def fit(self, values: np.ndarray, mask: np.ndarray) -> ZScoreNormaliser:
        """Fit mean and standard deviation per channel on the values where ``mask`` is true."""
        per_channel = _observed_by_channel(values, mask)
        self.mean = np.array([column.mean() for column in per_channel])
        std = np.array([column.std() for column in per_channel])
        constant = np.flatnonzero(std == 0)
        if constant.size:
            logger.warning("channel(s) %s are constant in the fitting data; their std is set to 1", constant.tolist())
            std[constant] = 1.0
        self.std = std
        self.n_channels = len(per_channel)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Map clinical values to z-scores; keeps the input's float dtype."""
        array = self._require_fitted(x, "input to transform")
        return ((array - self.mean) / self.std).astype(_float_dtype(x))

    def inverse_transform(self, x: np.ndarray) -> np.ndarray:
        """Map z-scores back to clinical values."""
        array = self._require_fitted(x, "input to inverse_transform")
        return (array * self.std + self.mean).astype(_float_dtype(x))

    def to_dict(self) -> dict[str, Any]:
        """Return the fitted parameters as a JSON-serialisable dict."""
        if self.mean is None or self.std is None:
            raise TardiffInputError("ZScoreNormaliser is not fitted; call fit() before to_dict()")
        return {"kind": self.kind, "n_channels": self.n_channels, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> ZScoreNormaliser:
        """Rebuild a fitted normaliser from :meth:`to_dict` output."""
        normaliser = cls()
        mean = _vector(payload, "mean")
        std = _vector(payload, "std")
        if mean.shape != std.shape or (std <= 0).any():
            raise TardiffInputError(
                f"zscore normaliser parameters are invalid: mean has {mean.size} and std {std.size} entries, "
                f"std minimum {std.min() if std.size else None}; re-run the preprocess stage"
            )
        normaliser.mean, normaliser.std, normaliser.n_channels = mean, std, mean.size
        return normaliser


class PitNormaliser(_Normaliser):
    """Per-channel centred probability integral transform ``u = 2 F(x) - 1`` from stored quantiles."""

    kind = "pit"

    def __init__(self, n_quantiles: int = 512) -> None:
        super().__init__()
        if n_quantiles < 2:
            raise TardiffInputError(f"PitNormaliser needs n_quantiles >= 2, got {n_quantiles}")
        self.n_quantiles = n_quantiles
        self.quantiles: np.ndarray | None = None  # (C, n_quantiles) at levels linspace(0, 1, n_quantiles)
        self._knots: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def levels(self) -> np.ndarray:
        """Probability levels of the stored quantiles, evenly spaced from 0 to 1."""
        return np.linspace(0.0, 1.0, self.n_quantiles)

    def fit(self, values: np.ndarray, mask: np.ndarray) -> PitNormaliser:
        """Store ``n_quantiles`` quantiles per channel of the values where ``mask`` is true."""
        per_channel = _observed_by_channel(values, mask)
        self.quantiles = np.stack([np.quantile(column, self.levels) for column in per_channel])
        self.n_channels = len(per_channel)
        self._build_knots()
        return self

    def _build_knots(self) -> None:
        # Tied quantiles (a discrete scale such as GCS, or many zero urine volumes) collapse
        # into one knot at the middle of their probability range, which keeps both
        # interpolation directions strictly increasing and so invertible.
        self._knots = []
        for row in self.quantiles:
            knots, inverse = np.unique(row, return_inverse=True)
            sums = np.bincount(inverse, weights=self.levels)
            sizes = np.bincount(inverse)
            self._knots.append((knots, sums / sizes))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Map clinical values to ``2 F(x) - 1`` in [-1, 1]; keeps the input's float dtype."""
        array = self._require_fitted(x, "input to transform")
        out = np.empty_like(array)
        for c, (knots, probabilities) in enumerate(self._knots):
            out[..., c] = 2.0 * np.interp(array[..., c], knots, probabilities) - 1.0
        return out.astype(_float_dtype(x))

    def inverse_transform(self, x: np.ndarray) -> np.ndarray:
        """Map values in [-1, 1] back to clinical values; inputs outside [-1, 1] are clipped to it."""
        array = self._require_fitted(x, "input to inverse_transform")
        out = np.empty_like(array)
        for c, (knots, probabilities) in enumerate(self._knots):
            out[..., c] = np.interp((np.clip(array[..., c], -1.0, 1.0) + 1.0) / 2.0, probabilities, knots)
        return out.astype(_float_dtype(x))

    def to_dict(self) -> dict[str, Any]:
        """Return the stored quantiles as a JSON-serialisable dict."""
        if self.quantiles is None:
            raise TardiffInputError("PitNormaliser is not fitted; call fit() before to_dict()")
        return {
            "kind": self.kind,
            "n_channels": self.n_channels,
            "n_quantiles": self.n_quantiles,
            "quantiles": self.quantiles.tolist(),
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> PitNormaliser:
        """Rebuild a fitted normaliser from :meth:`to_dict` output."""
        quantiles = np.asarray(payload.get("quantiles"), dtype=np.float64)
        if quantiles.ndim != 2 or quantiles.shape[1] < 2 or not np.isfinite(quantiles).all():
            raise TardiffInputError(
                f"pit normaliser quantiles must be a finite (channels, n_quantiles>=2) table, got shape "
                f"{quantiles.shape}; re-run the preprocess stage"
            )
        if (np.diff(quantiles, axis=1) < 0).any():
            raise TardiffInputError("pit normaliser quantiles decrease along a row; re-run the preprocess stage")
        normaliser = cls(n_quantiles=quantiles.shape[1])
        normaliser.quantiles = quantiles
        normaliser.n_channels = quantiles.shape[0]
        normaliser._build_knots()
        return normaliser


Normaliser = ZScoreNormaliser | PitNormaliser


def _float_dtype(x: Any) -> np.dtype:
    dtype = np.asarray(x).dtype
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def _vector(payload: dict[str, Any], key: str) -> np.ndarray:
    try:
        vector = np.asarray(payload[key], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise TardiffInputError(
            f"normaliser parameters lack a numeric list {key!r}; re-run the preprocess stage"
        ) from exc
    if vector.ndim != 1 or not np.isfinite(vector).all():
        raise TardiffInputError(f"normaliser parameter {key!r} must be a finite list, got {payload[key]!r}")
    return vector


def make_normaliser(kind: str) -> Normaliser:
    """Create an unfitted normaliser of the given kind ("zscore" or "pit")."""
    if kind == "zscore":
        return ZScoreNormaliser()
    if kind == "pit":
        return PitNormaliser()
    raise TardiffInputError(f"unknown normaliser {kind!r}; set data.normaliser to one of {list(NORMALISER_KINDS)}")


def normaliser_from_dict(payload: dict[str, Any]) -> Normaliser:
    """Rebuild a fitted normaliser from the dict that its ``to_dict`` returned."""
    if not isinstance(payload, dict):
        raise TardiffInputError(f"normaliser parameters must be a mapping, got {type(payload).__name__}")
    kind = payload.get("kind")
    if kind == "zscore":
        return ZScoreNormaliser.from_dict(payload)
    if kind == "pit":
        return PitNormaliser.from_dict(payload)
    raise TardiffInputError(
        f"normaliser parameters name kind {kind!r}; expected one of {list(NORMALISER_KINDS)}. "
        f"Re-run the preprocess stage"
    )
