"""Downstream evaluation: TRTR, TSTR and TSRTR on the real test split.

- TRTR: train on the real training split (the "real data" row).
- TSTR: train on synthetic data only.
- TSRTR: train on the real training split plus ``alpha * |real train|``
  synthetic samples, drawn per seed without replacement and stratified by label.

A fresh evaluator is trained for every protocol, source and seed, for a fixed
number of epochs with no model selection, so no real validation data reaches
the synthetic-data protocols.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from tardiff.config import ClassifierConfig, EvaluateConfig
from tardiff.training import binary_metrics, predict_proba, train_classifier

logger = logging.getLogger(__name__)


@dataclass
class LabelledSeries:
    x: np.ndarray  # (n, time, channels), normalised
    y: np.ndarray  # (n,)


def stratified_subsample(y: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Return ``size`` indices into ``y`` without replacement, keeping the label proportions."""
    if size > y.shape[0]:
        raise ValueError(f"cannot draw {size} synthetic samples from {y.shape[0]}; lower the largest alpha")
    chosen = []
    labels, counts = np.unique(y, return_counts=True)
    quotas = np.floor(counts / counts.sum() * size).astype(int)
    # Hand the remainder to the labels with the largest fractional parts.
    remainder = size - quotas.sum()
    fractions = counts / counts.sum() * size - quotas
    quotas[np.argsort(-fractions)[:remainder]] += 1
    for label, quota in zip(labels, quotas):
        pool = np.flatnonzero(y == label)
        chosen.append(rng.choice(pool, size=quota, replace=False))
    return np.sort(np.concatenate(chosen))


def _evaluator_config(config: EvaluateConfig) -> ClassifierConfig:
    return ClassifierConfig(
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        dropout=config.dropout,
        lr=config.lr,
        batch_size=config.batch_size,
        epochs=config.epochs,
    )


def train_and_test(
    train: LabelledSeries, test: LabelledSeries, config: EvaluateConfig, seed: int, device: torch.device, desc: str
) -> dict[str, float]:
    """Train a fresh GRU evaluator on ``train`` and return its AUROC and AUPRC on ``test``."""
    result = train_classifier(train.x, train.y, _evaluator_config(config), device, seed, desc=desc)
    return binary_metrics(test.y, predict_proba(result.model, test.x, device))


def evaluate_sources(
    real_train: LabelledSeries,
    real_test: LabelledSeries,
    synthetic: dict[str, LabelledSeries],
    config: EvaluateConfig,
    device: torch.device,
) -> list[dict]:
    """Run every protocol for every seed; returns one record per (seed, source, protocol, alpha)."""
    records = []
    for seed in config.seeds:
        metrics = train_and_test(real_train, real_test, config, seed, device, f"trtr seed {seed}")
        records.append({"seed": seed, "source": "real", "protocol": "trtr", "alpha": None, **metrics})
        logger.info("seed %d real TRTR auroc=%.4f auprc=%.4f", seed, metrics["auroc"], metrics["auprc"])

        for source, data in synthetic.items():
            metrics = train_and_test(data, real_test, config, seed, device, f"tstr {source} seed {seed}")
            records.append({"seed": seed, "source": source, "protocol": "tstr", "alpha": None, **metrics})
            logger.info("seed %d %s TSTR auroc=%.4f auprc=%.4f", seed, source, metrics["auroc"], metrics["auprc"])

            rng = np.random.default_rng(seed)
            for alpha in config.alphas:
                index = stratified_subsample(data.y, int(round(alpha * real_train.y.shape[0])), rng)
                mixed = LabelledSeries(
                    x=np.concatenate([real_train.x, data.x[index]]), y=np.concatenate([real_train.y, data.y[index]])
                )
                metrics = train_and_test(mixed, real_test, config, seed, device, f"tsrtr {source} a={alpha}")
                records.append({"seed": seed, "source": source, "protocol": "tsrtr", "alpha": alpha, **metrics})
    return records


def summarise(records: list[dict]) -> dict:
    """Aggregate records into mean and sample standard deviation over seeds.

    Returns ``{source: {"trtr"|"tstr": {...}, "tsrtr": {"alpha=0.2": {...}, ...}, "tsrtr_best": {...}}}``
    where each leaf has ``auroc_mean``, ``auroc_std``, ``auprc_mean``, ``auprc_std`` and ``n_seeds``.
    The best alpha is the one with the highest mean AUPRC.
    """
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault((record["source"], record["protocol"], record["alpha"]), []).append(record)

    summary: dict = {}
    for (source, protocol, alpha), rows in groups.items():
        leaf = {"n_seeds": len(rows)}
        for metric in ("auroc", "auprc"):
            values = np.array([row[metric] for row in rows])
            leaf[f"{metric}_mean"] = float(values.mean())
            leaf[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        if protocol == "tsrtr":
            summary.setdefault(source, {}).setdefault("tsrtr", {})[f"alpha={alpha}"] = leaf
        else:
            summary.setdefault(source, {})[protocol] = leaf

    for source, entry in summary.items():
        if "tsrtr" in entry:
            best_key = max(entry["tsrtr"], key=lambda key: entry["tsrtr"][key]["auprc_mean"])
            entry["tsrtr_best"] = {"alpha": float(best_key.split("=")[1]), **entry["tsrtr"][best_key]}
    return summary


def results_table(summary: dict) -> str:
    """Render the summary as a markdown table: TSTR and best-alpha TSRTR per source, TRTR for real data."""

    def cell(leaf: dict, metric: str) -> str:
        return f"{leaf[f'{metric}_mean']:.4f} ± {leaf[f'{metric}_std']:.4f}"

    lines = [
        "| source | protocol | AUROC (mean ± std) | AUPRC (mean ± std) | seeds |",
        "|---|---|---|---|---|",
    ]
    for source in sorted(summary, key=lambda name: (name == "real", name)):
        entry = summary[source]
        if "trtr" in entry:
            leaf = entry["trtr"]
            lines.append(f"| {source} | TRTR | {cell(leaf, 'auroc')} | {cell(leaf, 'auprc')} | {leaf['n_seeds']} |")
        if "tstr" in entry:
            leaf = entry["tstr"]
            lines.append(f"| {source} | TSTR | {cell(leaf, 'auroc')} | {cell(leaf, 'auprc')} | {leaf['n_seeds']} |")
        if "tsrtr_best" in entry:
            leaf = entry["tsrtr_best"]
            protocol = f"TSRTR (best alpha = {leaf['alpha']:g})"
            lines.append(f"| {source} | {protocol} | {cell(leaf, 'auroc')} | {cell(leaf, 'auprc')} | {leaf['n_seeds']} |")
    alpha_lines = ["", "| source | alpha | AUROC (mean ± std) | AUPRC (mean ± std) |", "|---|---|---|---|"]
    for source in sorted(summary):
        for key, leaf in summary[source].get("tsrtr", {}).items():
            alpha_lines.append(f"| {source} | {key.split('=')[1]} | {cell(leaf, 'auroc')} | {cell(leaf, 'auprc')} |")
    return "\n".join(lines + (alpha_lines if len(alpha_lines) > 3 else [])) + "\n"
