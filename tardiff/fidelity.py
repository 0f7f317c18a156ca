"""Fidelity of synthetic series: how closely they follow the distribution of real ones.

All functions take normalised series ``(n, time, channels)`` as stored by the
preprocess stage (float32 numpy arrays) and return plain numbers or dicts that
can be written to JSON as they are.

- :func:`discriminative_score`: ``|accuracy - 0.5|`` of a post-hoc GRU classifier
  of real against synthetic series (0 is best, 0.5 worst).
- :func:`predictive_score`: mean absolute error on real series of a next-step
  GRU predictor trained on synthetic series ("train on synthetic, test on real",
  as in TimeGAN, Yoon et al. 2019). Lower is better; the same predictor trained
  on real data gives the reference.
- :func:`mmd_rbf`: unbiased squared maximum mean discrepancy of the flattened
  series with a Gaussian kernel (median-heuristic bandwidth). About 0 when the
  distributions match; it can fall slightly below 0.
- :func:`marginal_distances`: per channel, the Wasserstein-1 distance and the
  Kolmogorov-Smirnov statistic between all cell values.
- :func:`autocorrelation_difference`: per channel, the mean absolute difference
  between the real and synthetic mean autocorrelation at lags 1 to ``max_lag``.
- :func:`per_class`: any of these on the samples of label 0 and label 1 separately.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import ks_2samp, wasserstein_distance
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm.auto import tqdm

from tardiff.config import ClassifierConfig
from tardiff.errors import TardiffInputError
from tardiff.training import predict_proba, seeded_generator, train_classifier

logger = logging.getLogger(__name__)

LABELS = (0, 1)
# Variance (normalised units squared) below which one channel of one series counts as constant,
# so that series adds nothing to the channel's mean autocorrelation.
CONSTANT_VARIANCE = 1e-12


def check_series(x: Any, name: str, min_samples: int = 1, min_steps: int = 1) -> np.ndarray:
    """Return ``x`` as a float array ``(n, time, channels)``; raise TardiffInputError naming ``name`` otherwise."""
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise TardiffInputError(f"{name} must be a numpy array (n, time, channels), got {type(x).__name__}")
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
    if array.ndim != 3:
        raise TardiffInputError(f"{name} has shape {array.shape}; expected three axes (n, time, channels)")
    if not np.issubdtype(array.dtype, np.floating):
        raise TardiffInputError(f"{name} has dtype {array.dtype}; expected floating-point series")
    if array.shape[0] < min_samples:
        raise TardiffInputError(
            f"{name} has {array.shape[0]} sample(s); this metric needs at least {min_samples}. "
            "Pass more samples or raise the subsampling cap"
        )
    if array.shape[1] < min_steps or array.shape[2] < 1:
        raise TardiffInputError(
            f"{name} has shape {array.shape}; expected at least {min_steps} time step(s) and one channel"
        )
    bad = int((~np.isfinite(array)).sum())
    if bad:
        raise TardiffInputError(f"{name} contains {bad} NaN or infinite value(s); remove or fill them first")
    return array


def check_pair(
    real: Any, synthetic: Any, real_name: str = "real", synthetic_name: str = "synthetic",
    min_samples: int = 1, min_steps: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Check both sets with :func:`check_series` and that their time and channel axes agree."""
    real = check_series(real, real_name, min_samples, min_steps)
    synthetic = check_series(synthetic, synthetic_name, min_samples, min_steps)
    if real.shape[2] != synthetic.shape[2]:
        raise TardiffInputError(
            f"{synthetic_name} has {synthetic.shape[2]} channel(s) but {real_name} has {real.shape[2]}; "
            "compare series with the same channels"
        )
    if real.shape[1] != synthetic.shape[1]:
        raise TardiffInputError(
            f"{synthetic_name} has {synthetic.shape[1]} time step(s) but {real_name} has {real.shape[1]}; "
            "compare series of the same length"
        )
    return real, synthetic


def check_labels(y: Any, name: str, n_samples: int) -> np.ndarray:
    """Return ``y`` as an int64 vector of 0/1 labels of length ``n_samples``, or raise TardiffInputError."""
    array = np.asarray(y)
    if array.ndim != 1 or array.shape[0] != n_samples:
        raise TardiffInputError(f"{name} has shape {array.shape}; expected ({n_samples},), one label per series")
    if not np.isin(array, LABELS).all():
        raise TardiffInputError(f"{name} contains labels {np.unique(array).tolist()}; expected 0 and 1 only")
    return array.astype(np.int64)


def subsample(n: int, size: int | None, rng: np.random.Generator) -> np.ndarray:
    """Return all of ``range(n)`` when ``size`` is None or at least ``n``, else ``size`` indices drawn without replacement."""
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=size, replace=False))


def flatten(x: np.ndarray) -> np.ndarray:
    """Return series ``(n, time, channels)`` as float64 rows ``(n, time * channels)``."""
    return x.reshape(x.shape[0], -1).astype(np.float64)


@dataclass(frozen=True)
class DiscriminativeResult:
    score: float  # |accuracy - 0.5| on the held-out part, 0 when the classifier does no better than chance
    accuracy: float
    auroc: float  # of the discriminator's probability that a series is synthetic
    n_train: int  # training series per side (real and synthetic each)
    n_test: int  # held-out series per side

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def discriminative_score(
    real: np.ndarray,
    synthetic: np.ndarray,
    *,
    hidden_size: int = 32,
    num_layers: int = 1,
    epochs: int = 8,
    batch_size: int = 256,
    lr: float = 3e-3,
    test_fraction: float = 0.2,
    max_samples: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> DiscriminativeResult:
    """Train a GRU classifier of ``real`` against ``synthetic`` series and score it on a held-out part.

    Both sets are subsampled to the same size ``min(n_real, n_synthetic, max_samples)``,
    so the held-out part is balanced and chance accuracy is 0.5. The discriminator is the
    project's bidirectional GRU classifier without dropout, trained for a fixed number of
    epochs (no model selection). Returns the score ``|accuracy - 0.5|`` with the accuracy
    at threshold 0.5 and the AUROC.
    """
    real, synthetic = check_pair(real, synthetic, min_samples=2)
    if not 0 < test_fraction < 1:
        raise TardiffInputError(f"test_fraction is {test_fraction}; use a fraction strictly between 0 and 1")
    rng = np.random.default_rng(seed)
    n = min(len(real), len(synthetic), max_samples if max_samples is not None else len(real))
    n_test = round(n * test_fraction)
    if n_test < 1 or n - n_test < 1:
        raise TardiffInputError(
            f"{n} series per side with test_fraction {test_fraction} leave no training or no held-out series; "
            "pass more series or change test_fraction"
        )
    real_index = rng.permutation(len(real))[:n]
    synthetic_index = rng.permutation(len(synthetic))[:n]

    def part(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([real[real_index[start:stop]], synthetic[synthetic_index[start:stop]]])
        y = np.concatenate([np.zeros(stop - start), np.ones(stop - start)]).astype(np.int64)
        return x.astype(np.float32), y

    x_test, y_test = part(0, n_test)
    x_train, y_train = part(n_test, n)
    config = ClassifierConfig(
        hidden_size=hidden_size, num_layers=num_layers, dropout=0.0, lr=lr, batch_size=batch_size, epochs=epochs
    )
    result = train_classifier(x_train, y_train, config, torch.device(device), seed, desc="discriminator")
    probability = predict_proba(result.model, x_test, torch.device(device))
    accuracy = float(np.mean((probability >= 0.5) == y_test))
    return DiscriminativeResult(
        score=abs(accuracy - 0.5),
        accuracy=accuracy,
        auroc=float(roc_auc_score(y_test, probability)),
        n_train=n - n_test,
        n_test=n_test,
    )


class NextStepGRU(nn.Module):
    """Unidirectional GRU that predicts every channel at step ``t + 1`` from the steps up to ``t``."""

    def __init__(self, n_channels: int, hidden_size: int, num_layers: int):
        super().__init__()
        self.gru = nn.GRU(n_channels, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, n_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x (batch, time, channels)`` to predictions of the next step, same shape."""
        outputs, _ = self.gru(x)
        return self.head(outputs)


def train_next_step_predictor(
    x: np.ndarray,
    *,
    hidden_size: int,
    num_layers: int,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device | str = "cpu",
) -> NextStepGRU:
    """Fit :class:`NextStepGRU` on ``x (n, time, channels)`` with teacher forcing and an L1 loss.

    The inputs are steps ``0 .. T-2`` and the targets steps ``1 .. T-1``, so each step is
    predicted from the true preceding ones. Returns the model in eval mode.
    """
    torch.manual_seed(seed)
    generator = seeded_generator(seed)
    series = torch.as_tensor(x, dtype=torch.float32)
    model = NextStepGRU(series.shape[2], hidden_size, num_layers).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in tqdm(range(epochs), desc="next-step predictor", mininterval=5, leave=False):
        order = torch.randperm(series.shape[0], generator=generator)
        for start in range(0, series.shape[0], batch_size):
            batch = series[order[start : start + batch_size]].to(device)
            loss = F.l1_loss(model(batch[:, :-1]), batch[:, 1:])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    model.eval()
    return model


@torch.no_grad()
def next_step_mae(model: NextStepGRU, x: np.ndarray, device: torch.device | str = "cpu", batch_size: int = 2048) -> float:
    """Return the mean absolute error of ``model``'s next-step predictions over all cells of steps 1 .. T-1 of ``x``."""
    series = torch.as_tensor(x, dtype=torch.float32)
    total = 0.0
    for start in range(0, series.shape[0], batch_size):
        batch = series[start : start + batch_size].to(device)
        total += float((model(batch[:, :-1]) - batch[:, 1:]).abs().sum())
    return total / (series.shape[0] * (series.shape[1] - 1) * series.shape[2])


def predictive_score(
    train: np.ndarray,
    test: np.ndarray,
    *,
    hidden_size: int = 32,
    num_layers: int = 1,
    epochs: int = 5,
    batch_size: int = 256,
    lr: float = 3e-3,
    max_samples: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> float:
    """Return the next-step MAE on ``test`` of a GRU predictor trained on ``train``.

    With synthetic ``train`` and real ``test`` this is the TimeGAN predictive score. With
    real training data it is the reference for the synthetic score. TimeGAN predicts one
    feature from the others, whereas this predictor predicts every channel.
    ``max_samples`` caps the training series (drawn with ``seed``).
    """
    train, test = check_pair(train, test, "train", "test", min_steps=2)
    index = subsample(len(train), max_samples, np.random.default_rng(seed))
    model = train_next_step_predictor(
        train[index], hidden_size=hidden_size, num_layers=num_layers, epochs=epochs, batch_size=batch_size,
        lr=lr, seed=seed, device=device,
    )
    return next_step_mae(model, test, device)


@dataclass(frozen=True)
class MMDResult:
    mmd2: float  # unbiased estimate of the squared MMD; can be slightly negative when the sets match
    bandwidth: float  # sigma of the kernel exp(-d^2 / (2 sigma^2)), in normalised units
    n_real: int
    n_synthetic: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def mmd_rbf(
    real: np.ndarray,
    synthetic: np.ndarray,
    *,
    max_samples: int | None = 2000,
    bandwidth: float | None = None,
    seed: int = 0,
) -> MMDResult:
    """Estimate the squared maximum mean discrepancy of the flattened series with a Gaussian kernel.

    Each set is subsampled to ``max_samples`` rows (seeded). The kernel is
    ``k(a, b) = exp(-|a - b|^2 / (2 sigma^2))``. Unless ``bandwidth`` is given, sigma is the
    median Euclidean distance between distinct rows of the pooled sample (the median
    heuristic). The estimator is the unbiased one of Gretton et al. (2012, eq. 3): the
    means of the within-set kernels exclude the diagonal. Memory grows with
    ``max_samples ** 2`` (2000 rows: about 300 MB, measured).
    """
    real, synthetic = check_pair(real, synthetic, min_samples=2)
    rng = np.random.default_rng(seed)
    a = torch.as_tensor(flatten(real[subsample(len(real), max_samples, rng)]))
    b = torch.as_tensor(flatten(synthetic[subsample(len(synthetic), max_samples, rng)]))
    m, n = a.shape[0], b.shape[0]
    d_aa = torch.cdist(a, a)
    d_bb = torch.cdist(b, b)
    d_ab = torch.cdist(a, b)

    if bandwidth is None:
        upper_a = torch.triu_indices(m, m, offset=1)
        upper_b = torch.triu_indices(n, n, offset=1)
        pooled = torch.cat([d_aa[upper_a[0], upper_a[1]], d_bb[upper_b[0], upper_b[1]], d_ab.reshape(-1)])
        del upper_a, upper_b
        bandwidth = float(pooled.median())
        if bandwidth <= 0:
            positive = pooled[pooled > 0]
            if positive.numel() == 0:
                # Every row of both sets is the same point: the distributions are identical.
                return MMDResult(0.0, 0.0, m, n)
            bandwidth = float(positive.median())
        del pooled
    elif not bandwidth > 0:
        raise TardiffInputError(f"bandwidth is {bandwidth}; use a positive kernel width or None for the median heuristic")

    def kernel(distances: torch.Tensor) -> torch.Tensor:
        # In place, so the distance matrices turn into kernel matrices without extra copies.
        return distances.square_().div_(-2 * bandwidth**2).exp_()

    k_aa, k_bb = kernel(d_aa), kernel(d_bb)
    within_a = (k_aa.sum() - k_aa.diagonal().sum()) / (m * (m - 1))
    within_b = (k_bb.sum() - k_bb.diagonal().sum()) / (n * (n - 1))
    between = kernel(d_ab).mean()
    return MMDResult(float(within_a + within_b - 2 * between), float(bandwidth), m, n)


def channel_keys(n_channels: int, channel_names: list[str] | None) -> list[str]:
    """Return ``channel_names``, checked against the channel count, or "0", "1", ... when None."""
    if channel_names is None:
        return [str(index) for index in range(n_channels)]
    if len(channel_names) != n_channels:
        raise TardiffInputError(
            f"channel_names has {len(channel_names)} name(s) {list(channel_names)} but the series have "
            f"{n_channels} channel(s); pass one name per channel"
        )
    return list(channel_names)


def marginal_distances(
    real: np.ndarray, synthetic: np.ndarray, channel_names: list[str] | None = None
) -> dict[str, Any]:
    """Compare the distribution of all cell values per channel.

    Returns ``per_channel`` (name -> Wasserstein-1 distance in normalised units and the
    two-sample Kolmogorov-Smirnov statistic), and their means over channels
    ``wasserstein_mean`` and ``ks_mean``. Both are 0 for identical value distributions.
    """
    real, synthetic = check_pair(real, synthetic)
    names = channel_keys(real.shape[2], channel_names)
    per_channel = {}
    for index, name in enumerate(names):
        real_values = real[:, :, index].ravel().astype(np.float64)
        synthetic_values = synthetic[:, :, index].ravel().astype(np.float64)
        per_channel[name] = {
            "wasserstein": float(wasserstein_distance(real_values, synthetic_values)),
            "ks": float(ks_2samp(real_values, synthetic_values).statistic),
        }
    return {
        "wasserstein_mean": float(np.mean([v["wasserstein"] for v in per_channel.values()])),
        "ks_mean": float(np.mean([v["ks"] for v in per_channel.values()])),
        "per_channel": per_channel,
    }


def mean_autocorrelation(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Return the mean autocorrelation of each channel at lags 1 .. ``max_lag``, shape ``(channels, max_lag)``.

    Each series is centred on its own mean, so level differences between stays do not
    count as autocorrelation. The result is the ratio of the mean lag-k autocovariance to
    the mean variance over series, which equals the variance-weighted mean of the
    per-series autocorrelation functions. Constant series (forward-filled channels that
    were never observed) therefore add nothing, instead of a 0/0. A channel in which
    every series is constant gets NaN.
    """
    if max_lag < 1:
        raise TardiffInputError(f"max_lag is {max_lag}; use a positive number of lags")
    x = check_series(x, "x", min_steps=max_lag + 1)
    centred = x.astype(np.float64) - x.mean(axis=1, keepdims=True, dtype=np.float64)
    steps = x.shape[1]
    variance = (centred**2).sum(axis=1) / steps  # (n, channels)
    varying = variance > CONSTANT_VARIANCE
    mean_variance = np.where(varying, variance, 0.0).mean(axis=0)
    acf = np.full((x.shape[2], max_lag), np.nan)
    defined = mean_variance > 0
    for lag in range(1, max_lag + 1):
        autocovariance = (centred[:, :-lag] * centred[:, lag:]).sum(axis=1) / steps
        mean_autocovariance = np.where(varying, autocovariance, 0.0).mean(axis=0)
        acf[defined, lag - 1] = mean_autocovariance[defined] / mean_variance[defined]
    return acf


def autocorrelation_difference(
    real: np.ndarray, synthetic: np.ndarray, max_lag: int, channel_names: list[str] | None = None
) -> dict[str, Any]:
    """Compare the lag structure of real and synthetic series channel by channel.

    Returns ``per_channel`` (name -> mean over lags 1 .. ``max_lag`` of the absolute
    difference between the two :func:`mean_autocorrelation` curves) and their mean
    ``mean_abs_diff`` over channels. A channel that is constant in every series of
    either set has no autocorrelation: its entry is None, it is left out of the mean,
    and a warning names it.
    """
    real, synthetic = check_pair(real, synthetic)
    names = channel_keys(real.shape[2], channel_names)
    if not 1 <= max_lag < real.shape[1]:
        raise TardiffInputError(
            f"max_lag is {max_lag} but the series have {real.shape[1]} step(s); use 1 <= max_lag < {real.shape[1]}"
        )
    difference = np.abs(mean_autocorrelation(real, max_lag) - mean_autocorrelation(synthetic, max_lag)).mean(axis=1)
    undefined = [name for name, value in zip(names, difference) if np.isnan(value)]
    if undefined:
        logger.warning("channel(s) %s are constant in every series of one set; left out of the autocorrelation mean",
                       undefined)
    defined = difference[~np.isnan(difference)]
    return {
        "mean_abs_diff": float(defined.mean()) if defined.size else None,
        "per_channel": {name: None if np.isnan(value) else float(value) for name, value in zip(names, difference)},
    }


def per_class(
    metric: Callable[..., Any],
    real: np.ndarray,
    real_labels: np.ndarray,
    synthetic: np.ndarray,
    synthetic_labels: np.ndarray,
    min_samples: int = 2,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run ``metric(real_subset, synthetic_subset, **kwargs)`` for label 0 and label 1 separately.

    Returns ``{"0": result, "1": result}``. A label with fewer than ``min_samples``
    series in either set gets None, and a warning gives the counts.
    """
    real, synthetic = check_pair(real, synthetic)
    real_labels = check_labels(real_labels, "real_labels", len(real))
    synthetic_labels = check_labels(synthetic_labels, "synthetic_labels", len(synthetic))
    results: dict[str, Any] = {}
    for label in LABELS:
        real_part = real[real_labels == label]
        synthetic_part = synthetic[synthetic_labels == label]
        if len(real_part) < min_samples or len(synthetic_part) < min_samples:
            logger.warning(
                "label %d has %d real and %d synthetic series, fewer than %d; %s skipped for this label",
                label, len(real_part), len(synthetic_part), min_samples, getattr(metric, "__name__", "metric"),
            )
            results[str(label)] = None
            continue
        results[str(label)] = metric(real_part, synthetic_part, **kwargs)
    return results


def embed_2d(x: np.ndarray, method: str, seed: int, perplexity: float = 30.0) -> np.ndarray:
    """Return a two-dimensional embedding ``(n, 2)`` of the flattened series, by "pca" or "tsne".

    t-SNE starts from the PCA embedding and lowers ``perplexity`` to ``(n - 1) / 3`` for
    small samples, because scikit-learn requires a perplexity below the sample count.
    """
    x = check_series(x, "x", min_samples=3)
    rows = flatten(x)
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(rows)
    if method == "tsne":
        effective = min(perplexity, (rows.shape[0] - 1) / 3)
        return TSNE(n_components=2, perplexity=effective, init="pca", random_state=seed).fit_transform(rows)
    raise TardiffInputError(f"embedding method is {method!r}; choose 'pca' or 'tsne'")
