"""Downstream evaluators: models trained once per protocol, source and seed, then tested on real data.

``EVALUATORS`` maps the names allowed in ``evaluate.evaluators`` to fit functions
``fit(x, y, config, seed, device)``. Each takes series ``x (n, time, channels)``
float32 with 0/1 labels ``y (n,)`` and returns a fitted model whose
``predict_proba(x)`` returns the probability of class 1, shape ``(n,)`` (not
scikit-learn's ``(n, 2)``).

- ``gru``: the bidirectional GRU of :mod:`tardiff.classifier`, trained by
  :func:`tardiff.training.train_classifier` for a fixed number of epochs.
- ``timesnet``: :class:`tardiff.timesnet.TimesNetClassifier`, trained with the same
  loop semantics (Adam, binary cross-entropy on logits, fixed epochs, no validation).
- ``gbt``: scikit-learn's HistGradientBoostingClassifier on per-channel summary features.
- ``logreg``: L2-penalised logistic regression on the same features, standardised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from tqdm.auto import tqdm

from tardiff.config import ClassifierConfig, ConfigError, EvaluateConfig
from tardiff.errors import TardiffInputError
from tardiff.timesnet import TimesNetClassifier, TimesNetConfig
from tardiff.training import predict_proba, seeded_generator, train_classifier

logger = logging.getLogger(__name__)

SUMMARY_STATISTICS = ("mean", "std", "min", "max", "first", "last", "slope")


class ProbabilisticClassifier(Protocol):
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Return the probability of class 1 for ``x (n, time, channels)``, shape ``(n,)``."""
        ...


@dataclass
class TorchEvaluator:
    """A trained network that returns one logit per series."""

    model: nn.Module
    device: torch.device

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return predict_proba(self.model, x, self.device)


@dataclass
class FeatureEvaluator:
    """A scikit-learn classifier applied to :func:`summary_features`."""

    estimator: HistGradientBoostingClassifier | Pipeline

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.estimator.predict_proba(summary_features(x))[:, 1]


def summary_features(x: np.ndarray) -> np.ndarray:
    """Return ``(n, channels * 7)`` features: per channel its mean, std, min, max, first, last value and slope.

    The slope is the least-squares slope over the hour index (units per hour).
    Columns are grouped by statistic, in the order of ``SUMMARY_STATISTICS``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[1] < 2:
        raise TardiffInputError(f"summary features need series (n, time >= 2, channels), got shape {x.shape}")
    hours = np.arange(x.shape[1], dtype=np.float64)
    centred_hours = hours - hours.mean()
    slope = np.einsum("t,ntc->nc", centred_hours, x) / (centred_hours**2).sum()
    features = [x.mean(axis=1), x.std(axis=1), x.min(axis=1), x.max(axis=1), x[:, 0], x[:, -1], slope]
    return np.concatenate(features, axis=1).astype(np.float32)


def summary_feature_names(channels: list[str]) -> list[str]:
    """Return the column names of :func:`summary_features`, e.g. ``HR_mean``."""
    return [f"{channel}_{statistic}" for statistic in SUMMARY_STATISTICS for channel in channels]


def _gru_config(config: EvaluateConfig) -> ClassifierConfig:
    return ClassifierConfig(
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        dropout=config.dropout,
        lr=config.lr,
        batch_size=config.batch_size,
        epochs=config.epochs,
    )


def fit_gru(x: np.ndarray, y: np.ndarray, config: EvaluateConfig, seed: int, device: torch.device) -> TorchEvaluator:
    """Train the bidirectional GRU for ``config.epochs`` epochs, without validation data."""
    result = train_classifier(x, y, _gru_config(config), device, seed, desc=f"gru seed {seed}")
    return TorchEvaluator(result.model, device)


def timesnet_config(config: EvaluateConfig, seq_len: int, in_channels: int) -> TimesNetConfig:
    """Return the TimesNet architecture that the ``timesnet_*`` keys of ``config`` describe."""
    return TimesNetConfig(
        in_channels=in_channels,
        seq_len=seq_len,
        d_model=config.timesnet_d_model,
        d_ff=config.timesnet_d_ff,
        top_k=config.timesnet_top_k,
        num_kernels=config.timesnet_num_kernels,
        e_layers=config.timesnet_e_layers,
        dropout=config.timesnet_dropout,
    )


def train_logit_model(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    lr: float,
    batch_size: int,
    epochs: int,
    seed: int,
    device: torch.device,
    desc: str,
) -> nn.Module:
    """Train ``model`` (series to one logit) with Adam and binary cross-entropy; returns it after the last epoch.

    The epoch order is drawn from a generator seeded with ``seed``; dropout draws from
    torch's global generator, which the caller seeds before building the model.
    """
    generator = seeded_generator(seed)
    x_all = torch.as_tensor(x, dtype=torch.float32)
    y_all = torch.as_tensor(y, dtype=torch.float32)
    model = model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)

    progress = tqdm(range(1, epochs + 1), desc=desc, mininterval=5, leave=False)
    for epoch in progress:
        model.train()
        order = torch.randperm(x_all.shape[0], generator=generator)
        total = 0.0
        for start in range(0, x_all.shape[0], batch_size):
            index = order[start : start + batch_size]
            loss = F.binary_cross_entropy_with_logits(model(x_all[index].to(device)), y_all[index].to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss became {loss.item()} in epoch {epoch}; lower the learning rate")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.item() * index.numel()
        progress.set_postfix(loss=f"{total / x_all.shape[0]:.4f}")
    model.eval()
    return model


def fit_timesnet(
    x: np.ndarray, y: np.ndarray, config: EvaluateConfig, seed: int, device: torch.device
) -> TorchEvaluator:
    """Train TimesNet for ``config.timesnet_epochs`` epochs, without validation data."""
    torch.manual_seed(seed)
    model = TimesNetClassifier(timesnet_config(config, seq_len=x.shape[1], in_channels=x.shape[2]))
    model = train_logit_model(
        model, x, y, config.timesnet_lr, config.timesnet_batch_size, config.timesnet_epochs, seed, device,
        desc=f"timesnet seed {seed}",
    )
    return TorchEvaluator(model, device)


def fit_gbt(x: np.ndarray, y: np.ndarray, config: EvaluateConfig, seed: int, device: torch.device) -> FeatureEvaluator:
    """Fit gradient-boosted trees on :func:`summary_features` for a fixed number of iterations."""
    estimator = HistGradientBoostingClassifier(
        max_iter=config.gbt_max_iter,
        learning_rate=config.gbt_learning_rate,
        max_leaf_nodes=config.gbt_max_leaf_nodes,
        max_features=config.gbt_max_features,
        early_stopping=False,  # early stopping would hold out part of the training data and select on it
        random_state=seed,
    )
    return FeatureEvaluator(estimator.fit(summary_features(x), y))


def fit_logreg(
    x: np.ndarray, y: np.ndarray, config: EvaluateConfig, seed: int, device: torch.device
) -> FeatureEvaluator:
    """Fit L2-penalised logistic regression on standardised :func:`summary_features`."""
    estimator = make_pipeline(
        StandardScaler(), LogisticRegression(C=config.logreg_c, max_iter=2000, random_state=seed)
    )
    return FeatureEvaluator(estimator.fit(summary_features(x), y))


FitFunction = Callable[[np.ndarray, np.ndarray, EvaluateConfig, int, torch.device], ProbabilisticClassifier]

# tardiff.config.EVALUATOR_NAMES lists the same names, so params.yaml is validated without importing torch models.
EVALUATORS: dict[str, FitFunction] = {
    "gru": fit_gru,
    "timesnet": fit_timesnet,
    "gbt": fit_gbt,
    "logreg": fit_logreg,
}


def fit_evaluator(
    name: str, x: np.ndarray, y: np.ndarray, config: EvaluateConfig, seed: int, device: torch.device
) -> ProbabilisticClassifier:
    """Fit the evaluator registered as ``name`` on ``x (n, time, channels)`` and labels ``y (n,)``."""
    if name not in EVALUATORS:
        raise ConfigError(f"evaluator {name!r} is not known; choose from {list(EVALUATORS)} in evaluate.evaluators")
    if x.ndim != 3 or x.shape[0] != y.shape[0]:
        raise TardiffInputError(f"training series have shape {x.shape} for {y.shape[0]} labels; expected (n, time, channels)")
    labels = np.unique(y)
    if labels.size < 2 or not np.isin(labels, (0, 1)).all():
        raise TardiffInputError(f"training labels are {labels.tolist()}; the evaluator {name!r} needs both 0 and 1")
    return EVALUATORS[name](x, y, config, seed, device)
