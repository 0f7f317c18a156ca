"""Binary classification metrics computed row-wise, so a whole bootstrap runs as a few array operations.

Every function takes labels ``y`` and scores ``p`` of shape ``(n,)`` or ``(rows, n)``
(one bootstrap replicate per row) and returns one value per row. The results
equal scikit-learn's ``roc_auc_score``, ``average_precision_score`` and
``f1_score`` (positive class) on each row, ties included; the tests check this.
"""

from __future__ import annotations

import numpy as np

from tardiff.errors import TardiffInputError

CONFIDENCE = 0.95


def check_binary(y: np.ndarray, p: np.ndarray | None = None, what: str = "labels") -> None:
    """Raise TardiffInputError unless ``y`` contains 0/1 labels of both classes and ``p`` finite scores of its shape."""
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] == 0:
        raise TardiffInputError(f"{what} must be a non-empty 1-D array, got shape {y.shape}")
    values = np.unique(y)
    if not np.isin(values, (0, 1)).all():
        raise TardiffInputError(f"{what} must be 0 or 1, got values {values[:10].tolist()}")
    if values.size < 2:
        raise TardiffInputError(
            f"{what} contain one class only ({values.tolist()}); AUROC, AUPRC and F1 need both, so use a larger split"
        )
    if p is not None:
        p = np.asarray(p)
        if p.shape != y.shape:
            raise TardiffInputError(f"scores for {what} have shape {p.shape}, expected {y.shape}")
        if not np.isfinite(p).all():
            raise TardiffInputError(f"scores for {what} contain NaN or inf; check the evaluator's training")


def _sorted_ties(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort each row by score, ascending; return sorted labels and, per position, its tie group's first and last index."""
    order = np.argsort(p, axis=1, kind="stable")
    scores = np.take_along_axis(p, order, axis=1)
    labels = np.take_along_axis(y, order, axis=1).astype(np.float64)
    n = scores.shape[1]
    positions = np.broadcast_to(np.arange(n), scores.shape)

    changes = scores[:, 1:] != scores[:, :-1]
    starts = np.concatenate([np.ones((scores.shape[0], 1), bool), changes], axis=1)
    ends = np.concatenate([changes, np.ones((scores.shape[0], 1), bool)], axis=1)
    first = np.maximum.accumulate(np.where(starts, positions, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, positions, n)[:, ::-1], axis=1)[:, ::-1]
    return labels, first, last


def ranking_metrics(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return AUROC and average precision (AUPRC) per row of ``y, p (rows, n)``, from one sort.

    AUROC is the Mann-Whitney statistic with mid-ranks for ties. Average precision is
    the sum over distinct thresholds of (recall increment) x (precision), thresholds
    at each distinct score, predicting positive when the score is at least the threshold.
    """
    y, p = np.atleast_2d(y), np.atleast_2d(p)
    labels, first, last = _sorted_ties(y, p)
    n = labels.shape[1]
    positives = labels.sum(axis=1)
    negatives = n - positives

    mid_ranks = (first + last) / 2.0 + 1.0
    auroc = ((labels * mid_ranks).sum(axis=1) - positives * (positives + 1) / 2.0) / (positives * negatives)

    # At the threshold of a tie group starting at ascending position a, the predicted
    # positives are positions a..n-1; their count is n - a and their true positives are
    # all positives minus those before a.
    positives_before = np.cumsum(labels, axis=1) - labels
    true_positives = positives[:, None] - np.take_along_axis(positives_before, first, axis=1)
    precision = true_positives / (n - first)
    auprc = (labels * precision).sum(axis=1) / positives
    return auroc, auprc


def f1_at_threshold(y: np.ndarray, p: np.ndarray, threshold: float) -> np.ndarray:
    """Return the F1 score of class 1 per row when predicting 1 for scores at or above ``threshold``; 0 if undefined."""
    y, p = np.atleast_2d(y).astype(bool), np.atleast_2d(p)
    predicted = p >= threshold
    true_positives = (predicted & y).sum(axis=1)
    denominator = predicted.sum(axis=1) + y.sum(axis=1)  # 2 TP + FP + FN
    return np.divide(2.0 * true_positives, denominator, out=np.zeros(y.shape[0]), where=denominator > 0)


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Return the threshold that maximises the F1 score of class 1 on ``y, p (n,)``, and that F1.

    Candidates are the distinct scores (predict 1 when the score is at least the
    threshold). Among thresholds with the same F1, the highest is returned.
    """
    check_binary(y, p, "threshold labels")
    labels, first, _ = _sorted_ties(np.atleast_2d(y), np.atleast_2d(p))
    labels, first = labels[0], first[0]
    scores = np.sort(np.asarray(p, dtype=np.float64))
    n = labels.shape[0]
    positives = labels.sum()

    starts = np.unique(first)  # ascending: one candidate per distinct score
    positives_before = np.cumsum(labels) - labels
    true_positives = positives - positives_before[starts]
    f1 = 2.0 * true_positives / ((n - starts) + positives)  # 2 TP / (predicted positives + actual positives)
    best = len(starts) - 1 - int(np.argmax(f1[::-1]))
    return float(scores[starts[best]]), float(f1[best])


def stratified_bootstrap_indices(y: np.ndarray, replicates: int, seed: int) -> np.ndarray:
    """Return ``(replicates, n)`` indices into ``y``, resampling each class with replacement at its own count.

    Keeping the class counts fixed keeps the prevalence, on which AUPRC and F1 depend,
    and guarantees both classes in every replicate, so AUROC is always defined.
    """
    check_binary(y, what="bootstrap labels")
    if replicates < 1:
        raise TardiffInputError(f"bootstrap replicates is {replicates}; use at least 1")
    rng = np.random.default_rng(seed)
    parts = []
    for label in (0, 1):
        pool = np.flatnonzero(np.asarray(y) == label)
        parts.append(rng.choice(pool, size=(replicates, pool.size), replace=True))
    return np.concatenate(parts, axis=1)


def percentile_interval(values: np.ndarray) -> tuple[float, float]:
    """Return the 2.5th and 97.5th percentiles of bootstrap ``values``: the 95% percentile interval."""
    tail = (1.0 - CONFIDENCE) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)
