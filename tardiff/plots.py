"""Figures of real versus synthetic series and of the downstream evaluation."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or assumed

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

CLASS_MARKERS = {0: "o", 1: "^"}


def plot_trajectories(
    real: tuple[np.ndarray, np.ndarray],
    synthetic: dict[str, tuple[np.ndarray, np.ndarray]],
    channel_names: list[str],
    units: list[str],
    path: str,
) -> None:
    """Plot the median and interquartile band per hour, per channel and class, in clinical units.

    ``real`` and each ``synthetic`` value are ``(x (n, time, channels), y (n,))``.
    Rows are classes, columns channels; each panel overlays the real data and every synthetic source.
    """
    labels = sorted(np.unique(real[1]).tolist())
    n_channels = len(channel_names)
    fig, axes = plt.subplots(len(labels), n_channels, figsize=(2.6 * n_channels, 2.4 * len(labels)), squeeze=False)
    sources = {"real": real, **synthetic}
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, label in enumerate(labels):
        for col in range(n_channels):
            ax = axes[row, col]
            for (name, (x, y)), colour in zip(sources.items(), colours):
                values = x[y == label, :, col]
                if values.shape[0] == 0:
                    continue
                hours = np.arange(values.shape[1])
                q25, q50, q75 = np.percentile(values, [25, 50, 75], axis=0)
                ax.plot(hours, q50, color=colour, label=name, linewidth=1.4)
                ax.fill_between(hours, q25, q75, color=colour, alpha=0.15)
            ax.set_title(f"{channel_names[col]} ({units[col]}), y={label}", fontsize=8)
            ax.tick_params(labelsize=7)
            if row == len(labels) - 1:
                ax.set_xlabel("hour", fontsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def plot_roc_pr(y_true: np.ndarray, scores: dict[str, dict[str, np.ndarray]], path: str, note: str = "") -> None:
    """Plot ROC and precision-recall curves: one row per evaluator, one curve per label of ``scores[evaluator]``.

    ``scores`` maps evaluator to ``{curve label: predicted probability of class 1 (n,)}``
    on the test labels ``y_true (n,)``. ``note`` is appended to the first row's titles.
    """
    fig, axes = plt.subplots(len(scores), 2, figsize=(9, 3.8 * len(scores)), squeeze=False)
    prevalence = float(np.mean(y_true))
    for row, (evaluator, curves) in enumerate(scores.items()):
        roc_ax, pr_ax = axes[row]
        for label, p in curves.items():
            fpr, tpr, _ = roc_curve(y_true, p)
            precision, recall, _ = precision_recall_curve(y_true, p)
            roc_ax.plot(fpr, tpr, linewidth=1.3, label=f"{label} ({roc_auc_score(y_true, p):.3f})")
            pr_ax.step(recall, precision, where="post", linewidth=1.3,
                       label=f"{label} ({average_precision_score(y_true, p):.3f})")
        roc_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        pr_ax.axhline(prevalence, color="grey", linestyle=":", linewidth=1)
        suffix = f", {note}" if note and row == 0 else ""
        roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{evaluator}: ROC (AUROC){suffix}")
        pr_ax.set(xlabel="recall", ylabel="precision", title=f"{evaluator}: precision-recall (AUPRC){suffix}")
        for ax in (roc_ax, pr_ax):
            ax.legend(fontsize=7)
            ax.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def plot_metric_over_alpha(results: dict, metrics: dict[str, str], path: str) -> None:
    """Plot each TSRTR metric over alpha, mean with its 95% interval per source; TRTR as a horizontal band.

    ``results`` is the ``"results"`` part of :func:`tardiff.evaluation.summarise`;
    ``metrics`` maps metric keys to axis labels. One row per evaluator, one column per metric.
    """
    fig, axes = plt.subplots(len(results), len(metrics), figsize=(3.6 * len(metrics), 3.0 * len(results)),
                             squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, (evaluator, sources) in enumerate(results.items()):
        for col, (metric, label) in enumerate(metrics.items()):
            ax = axes[row, col]
            for (source, entry), colour in zip(sources.items(), colours):
                if "trtr" in entry:
                    leaf = entry["trtr"]
                    ax.axhline(leaf[f"{metric}_mean"], color=colour, linestyle="--", linewidth=1, label=f"{source} TRTR")
                    ax.axhspan(leaf[f"{metric}_lo"], leaf[f"{metric}_hi"], color=colour, alpha=0.1)
                if "tsrtr" not in entry:
                    continue
                alphas = [float(key.split("=")[1]) for key in entry["tsrtr"]]
                leaves = list(entry["tsrtr"].values())
                ax.plot(alphas, [leaf[f"{metric}_mean"] for leaf in leaves], marker="o", markersize=3,
                        color=colour, linewidth=1.3, label=source)
                ax.fill_between(alphas, [leaf[f"{metric}_lo"] for leaf in leaves],
                                [leaf[f"{metric}_hi"] for leaf in leaves], color=colour, alpha=0.15)
            ax.set_title(f"{evaluator}: TSRTR {label}", fontsize=9)
            ax.set_xlabel("alpha (synthetic / real training size)", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def plot_embedding(
    embeddings: dict[str, np.ndarray],
    sources: np.ndarray,
    labels: np.ndarray,
    path: str,
) -> None:
    """Scatter two-dimensional embeddings of pooled real and synthetic series, one panel per method.

    ``embeddings`` maps a method name ("PCA", "t-SNE") to coordinates ``(n, 2)`` of the same
    ``n`` series. ``sources`` (n,) names each series' source and ``labels`` (n,) its class.
    Colour shows the source and the marker the class.
    """
    names = list(dict.fromkeys(sources.tolist()))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, len(embeddings), figsize=(5.2 * len(embeddings), 4.6), squeeze=False)
    for ax, (method, coordinates) in zip(axes[0], embeddings.items()):
        for index, name in enumerate(names):
            for label, marker in CLASS_MARKERS.items():
                chosen = (sources == name) & (labels == label)
                if chosen.any():
                    ax.scatter(
                        coordinates[chosen, 0], coordinates[chosen, 1], s=9, alpha=0.55, marker=marker,
                        color=colours[index % len(colours)], label=f"{name}, y={label}", linewidths=0,
                    )
        ax.set_title(method, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0, -1].legend(fontsize=7, markerscale=1.5, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def plot_marginals(
    real: np.ndarray,
    synthetic: dict[str, np.ndarray],
    channel_names: list[str],
    units: list[str],
    path: str,
    bins: int = 40,
) -> None:
    """Overlay per-channel histograms (densities) of all cell values of real and each synthetic source.

    Inputs are ``(n, time, channels)`` in clinical units. The bins span the 0.5th to 99.5th
    percentile of the pooled values, so a few extreme synthetic values do not squeeze the rest.
    """
    n_channels = len(channel_names)
    columns = min(4, n_channels)
    rows = -(-n_channels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 2.4 * rows), squeeze=False)
    sources = {"real": real, **synthetic}
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for channel, ax in enumerate(axes.ravel()):
        if channel >= n_channels:
            ax.axis("off")
            continue
        pooled = np.concatenate([x[:, :, channel].ravel() for x in sources.values()])
        low, high = np.percentile(pooled, [0.5, 99.5])
        edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
        for (name, x), colour in zip(sources.items(), colours):
            ax.hist(x[:, :, channel].ravel(), bins=edges, density=True, histtype="step", color=colour,
                    label=name, linewidth=1.2)
        ax.set_title(f"{channel_names[channel]} ({units[channel]})", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
