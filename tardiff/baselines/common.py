"""Input checks, per-channel scaling and the per-class loop shared by the baseline generators."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tardiff.errors import TardiffInputError

logger = logging.getLogger(__name__)


def check_training_set(x: np.ndarray, y: np.ndarray) -> None:
    """Raise :class:`TardiffInputError` unless ``x (n, time, channels)`` and ``y (n,)`` form a usable training set.

    The generators need a finite 3-D array, one integer label per series, and
    at least two classes, because each one reproduces a labelled set.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 3 or min(x.shape, default=0) == 0:
        raise TardiffInputError(
            f"baseline training series x has shape {x.shape}; expected a non-empty (n, time, channels) array"
        )
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise TardiffInputError(
            f"baseline labels y have shape {y.shape} but x has {x.shape[0]} series; pass one label per series"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise TardiffInputError(f"baseline labels y have dtype {y.dtype}; pass integer class labels")
    if not np.issubdtype(x.dtype, np.floating):
        raise TardiffInputError(f"baseline training series x have dtype {x.dtype}; pass floating-point series")
    if not np.isfinite(x).all():
        raise TardiffInputError(
            f"baseline training series x contain {int((~np.isfinite(x)).sum())} NaN or infinite value(s); "
            "fill or drop them before generating"
        )
    labels = np.unique(y)
    if labels.size < 2:
        raise TardiffInputError(
            f"baseline labels y contain one class only ({labels.tolist()}); the generators reproduce a labelled "
            "set and need at least two classes"
        )


def check_counts(counts: dict[int, int], y: np.ndarray, min_per_class: int = 1) -> None:
    """Raise :class:`TardiffInputError` unless every requested label has ``min_per_class`` real series."""
    for label, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
            raise TardiffInputError(f"baseline sample count for label {label} is {count!r}; use a count >= 0")
    if sum(counts.values()) == 0:
        raise TardiffInputError(
            f"baseline sample counts are {counts!r}; request at least one sample, e.g. counts_per_label(y_train)"
        )
    present = dict(zip(*np.unique(y, return_counts=True)))
    for label, count in counts.items():
        available = int(present.get(label, 0))
        if count > 0 and available < min_per_class:
            raise TardiffInputError(
                f"label {label} has {available} real series but this baseline needs at least {min_per_class} "
                f"to draw {count} samples from; check the labels or the method's settings"
            )


@dataclass(frozen=True)
class MinMaxScaler:
    """Per-channel affine map of a training set onto ``[0, 1]``, as TimeVAE and TimeGAN scale their input."""

    minimum: np.ndarray  # (channels,)
    span: np.ndarray  # (channels,), maximum - minimum, never zero

    @classmethod
    def fit(cls, x: np.ndarray) -> MinMaxScaler:
        """Fit on ``x (n, time, channels)``; a constant channel gets span 1, so it maps to 0."""
        minimum = x.min(axis=(0, 1))
        span = x.max(axis=(0, 1)) - minimum
        return cls(minimum=minimum, span=np.where(span > 0, span, 1.0))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.minimum) / self.span).astype(np.float32)

    def inverse_transform(self, x: np.ndarray) -> np.ndarray:
        return (x * self.span + self.minimum).astype(np.float32)


@dataclass
class PerClassResult:
    """A synthetic set drawn class by class, with each class model's training history."""

    x: np.ndarray  # float32 (n, time, channels), in the input's normalisation
    y: np.ndarray  # int64 (n,), labels in ascending order
    history: dict[int, dict[str, list[float]]]  # label -> loss name -> values over training


# fit_and_sample(x_class, n_samples, seed) -> (samples (n_samples, time, channels), history)
ClassSampler = Callable[[np.ndarray, int, int], tuple[np.ndarray, dict[str, list[float]]]]


def generate_per_class(
    x: np.ndarray, y: np.ndarray, counts: dict[int, int], fit_and_sample: ClassSampler, seed: int, name: str
) -> PerClassResult:
    """Fit one generative model per class on that class's series and draw ``counts[label]`` samples from it.

    One model per class is the simplest label-conditional form of an
    unconditional generator. Class ``label`` gets the seed ``seed + label``.
    """
    check_training_set(x, y)
    check_counts(counts, y, min_per_class=2)
    xs, ys, history = [], [], {}
    for label, count in sorted(counts.items()):
        if count == 0:
            continue
        x_class = np.asarray(x[y == label], dtype=np.float32)
        logger.info("%s: fitting class %s on %d series, drawing %d", name, label, x_class.shape[0], count)
        samples, history[int(label)] = fit_and_sample(x_class, int(count), seed + int(label))
        if not np.isfinite(samples).all():
            raise FloatingPointError(f"{name} samples of class {label} contain NaN or inf; lower its learning rate")
        xs.append(samples.astype(np.float32))
        ys.append(np.full(count, label, dtype=np.int64))
    return PerClassResult(x=np.concatenate(xs), y=np.concatenate(ys), history=history)
