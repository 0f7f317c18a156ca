"""Figures of real versus synthetic series."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or assumed

import matplotlib.pyplot as plt
import numpy as np


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
