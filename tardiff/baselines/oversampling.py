"""Random oversampling and SMOTE as synthetic-data baselines, via imbalanced-learn.

Both return a synthetic set with ``counts[label]`` new series per class, the
same contract as the diffusion generators, so that TSTR and TSRTR compare them
on equal terms:

- Random oversampling (ROS): each synthetic series of class ``k`` is a copy of
  a real class-``k`` series drawn uniformly with replacement.
- SMOTE (Chawla et al., 2002): each synthetic series of class ``k`` is
  ``x_i + lambda (x_j - x_i)``. Here ``x_i`` is a real class-``k`` series drawn
  uniformly, ``x_j`` one of its ``k_neighbors`` nearest class-``k`` neighbours
  by Euclidean distance on the flattened ``time x channels`` series, and
  ``lambda`` is uniform in ``[0, 1)``.

imbalanced-learn appends new samples to the real ones when asked for a larger
class; asking for ``real + counts[k]`` series per class and keeping only the
appended rows gives exactly the draws above.
"""

from __future__ import annotations

import numpy as np
from imblearn.over_sampling import SMOTE, RandomOverSampler

from tardiff.baselines.common import check_counts, check_training_set
from tardiff.errors import TardiffInputError


def _targets(y: np.ndarray, counts: dict[int, int]) -> dict[int, int]:
    """Return the per-class sizes to request from imbalanced-learn: the real count plus the synthetic count."""
    present = dict(zip(*np.unique(y, return_counts=True)))
    return {int(label): int(present[label]) + int(count) for label, count in counts.items() if count > 0}


def _appended(x_flat: np.ndarray, x_res: np.ndarray, y_res: np.ndarray, shape: tuple[int, ...]) -> tuple:
    """Return the rows that the resampler appended after the real ones, sorted by label, as ``(x, y)``."""
    n_real = x_flat.shape[0]
    x_new = x_res[n_real:].reshape(-1, *shape).astype(np.float32)
    y_new = np.asarray(y_res[n_real:], dtype=np.int64)
    order = np.argsort(y_new, kind="stable")
    return x_new[order], y_new[order]


def random_oversample(
    x: np.ndarray, y: np.ndarray, counts: dict[int, int], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``counts[label]`` copies of real series of each class, uniformly with replacement.

    Args:
        x: real series ``(n, time, channels)``.
        y: integer labels ``(n,)``, at least two classes.
        counts: synthetic series per label, e.g. ``counts_per_label(y)``.
        seed: seed of the draws.

    Returns:
        ``x_syn (sum(counts), time, channels)`` float32 and ``y_syn`` int64, sorted by label.
    """
    check_training_set(x, y)
    check_counts(counts, y, min_per_class=1)
    x_flat = x.reshape(x.shape[0], -1)
    sampler = RandomOverSampler(sampling_strategy=_targets(y, counts), random_state=seed)
    x_res, y_res = sampler.fit_resample(x_flat, y)
    return _appended(x_flat, x_res, y_res, x.shape[1:])


def smote(
    x: np.ndarray, y: np.ndarray, counts: dict[int, int], k_neighbors: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``counts[label]`` SMOTE interpolations within each class (definition in the module docstring).

    Args:
        x: real series ``(n, time, channels)``.
        y: integer labels ``(n,)``, at least two classes, each with more than ``k_neighbors`` series.
        counts: synthetic series per label, e.g. ``counts_per_label(y)``.
        k_neighbors: neighbours per real series among which the interpolation partner is drawn.
        seed: seed of the draws.

    Returns:
        ``x_syn (sum(counts), time, channels)`` float32 and ``y_syn`` int64, sorted by label.
    """
    check_training_set(x, y)
    if isinstance(k_neighbors, bool) or not isinstance(k_neighbors, (int, np.integer)) or k_neighbors < 1:
        raise TardiffInputError(f"SMOTE k_neighbors is {k_neighbors!r}; use a positive integer such as 5")
    check_counts(counts, y, min_per_class=k_neighbors + 1)
    x_flat = x.reshape(x.shape[0], -1)
    sampler = SMOTE(sampling_strategy=_targets(y, counts), k_neighbors=int(k_neighbors), random_state=seed)
    x_res, y_res = sampler.fit_resample(x_flat, y)
    return _appended(x_flat, x_res, y_res, x.shape[1:])
