"""Stage 8: fidelity and privacy of every synthetic source against the real cohort.

The sources are each ``*.npz`` file in the generate stage's folder (arrays ``x`` and
``y``), named by its file name, then the output of every method in
``baselines.methods`` from the baselines stage. Fidelity compares a source with the real training split, the data
the generator learned from. Privacy compares distances to the training split with those of
the held-out split (``fidelity.holdout``). The row ``real_holdout`` scores the held-out
split as if it were a synthetic source: it shows what a fresh sample of real records
reaches with the same sample sizes. Its predictive score is the predictor trained on the
real training split.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch

from tardiff.config import FidelityConfig, Params
from tardiff.data.cohort import PreparedCohort, Split, load_prepared
from tardiff.errors import CorruptFileError, MissingDataError, TardiffInputError
from tardiff.fidelity import (
    autocorrelation_difference,
    check_labels,
    check_series,
    discriminative_score,
    embed_2d,
    marginal_distances,
    mmd_rbf,
    per_class,
    predictive_score,
    subsample,
)
from tardiff.io import atomic_path, load_npz, write_json
from tardiff.plots import plot_embedding, plot_marginals
from tardiff.privacy import privacy_metrics
from tardiff.report import nested_value
from tardiff.training import resolve_device
from tasks import tracking
from tasks.common import metrics_path, run_stage, stage_dir

logger = logging.getLogger("tasks.fidelity")

REFERENCE = "real_holdout"


def source_paths(params: Params) -> dict[str, Path]:
    """Return ``source name -> npz path``: every file of the generate stage, then each baseline's output."""
    generated = sorted(stage_dir("generate").glob("*.npz"))
    if not generated:
        raise MissingDataError(
            f"no synthetic data (*.npz) found in {stage_dir('generate')}; run the generate stage first "
            "(`dvc repro generate` or `python -m tasks.generate`)"
        )
    paths = {path.stem: path for path in generated}
    for method in params.baselines.methods:
        path = stage_dir("baselines") / f"{method}.npz"
        if method in paths:
            raise TardiffInputError(
                f"{paths[method]} and the baseline {method!r} share a name; rename the file in the generate folder"
            )
        if not path.is_file():
            raise MissingDataError(
                f"{path} not found, though baselines.methods lists {method!r}; run the baselines stage first "
                "(`dvc repro baselines` or `python -m tasks.baselines`)"
            )
        paths[method] = path
    return paths


def load_sources(paths: dict[str, Path], steps: int, channels: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load each ``name -> npz path`` as ``name -> (x, y)`` and check it against the cohort's shape."""
    sources = {}
    for name, path in paths.items():
        if name == REFERENCE:
            raise TardiffInputError(f"{path} uses the reserved source name {REFERENCE!r}; rename the file")
        arrays = load_npz(path, required=("x", "y"), what="synthetic data")
        try:
            x = check_series(arrays["x"], f"array x of {path}", min_samples=2)
            y = check_labels(arrays["y"], f"array y of {path}", len(x))
        except TardiffInputError as exc:
            raise CorruptFileError(f"{exc}; re-run the stage that wrote it") from exc
        if x.shape[1:] != (steps, channels):
            raise CorruptFileError(
                f"array x of {path} has series of shape {x.shape[1:]} but the prepared cohort has "
                f"{(steps, channels)} (hours, channels); re-run the stage that wrote it after preprocess"
            )
        sources[name] = (x.astype(np.float32), y)
    logger.info("synthetic sources: %s", {name: len(x) for name, (x, _) in sources.items()})
    return sources


def distribution_metrics(
    train: Split, x: np.ndarray, y: np.ndarray, channels: list[str], config: FidelityConfig,
    seed: int, device: torch.device,
) -> dict[str, Any]:
    """Compare series ``x`` with labels ``y`` to the real training split: discriminator, MMD, marginals, ACF."""
    discriminative = discriminative_score(
        train.x, x, hidden_size=config.discriminator_hidden_size, num_layers=config.discriminator_num_layers,
        epochs=config.discriminator_epochs, batch_size=config.batch_size, lr=config.lr,
        test_fraction=config.test_fraction, max_samples=config.max_samples, seed=seed, device=device,
    )
    mmd = mmd_rbf(train.x, x, max_samples=config.mmd_max_samples, seed=seed)
    mmd_by_class = per_class(mmd_rbf, train.x, train.y, x, y, max_samples=config.mmd_max_samples, seed=seed)
    marginal = marginal_distances(train.x, x, channels)
    marginal_by_class = per_class(marginal_distances, train.x, train.y, x, y, channel_names=channels)
    return {
        "n": len(x),
        "discriminative": discriminative.to_dict(),
        "mmd": {
            **mmd.to_dict(),
            "per_class": {label: None if r is None else r.to_dict() for label, r in mmd_by_class.items()},
        },
        "marginal": {
            **marginal,
            "per_class": {
                label: None if r is None else {"wasserstein_mean": r["wasserstein_mean"], "ks_mean": r["ks_mean"]}
                for label, r in marginal_by_class.items()
            },
        },
        "autocorrelation": autocorrelation_difference(train.x, x, config.acf_max_lag, channels),
    }


def predictive_mae(train_x: np.ndarray, holdout: Split, config: FidelityConfig, seed: int, device: torch.device) -> float:
    """Return the next-step MAE on the held-out split of a predictor trained on ``train_x``."""
    return predictive_score(
        train_x, holdout.x, hidden_size=config.predictor_hidden_size, num_layers=config.predictor_num_layers,
        epochs=config.predictor_epochs, batch_size=config.batch_size, lr=config.lr,
        max_samples=config.max_samples, seed=seed, device=device,
    )


def score_sources(
    cohort: PreparedCohort, sources: dict[str, tuple[np.ndarray, np.ndarray]], config: FidelityConfig,
    seed: int, device: torch.device,
) -> dict[str, dict[str, Any]]:
    """Return ``source -> metrics`` for the held-out reference row and every synthetic source."""
    train, holdout = cohort.train, cohort.split(config.holdout)
    channels = cohort.channel_names
    results: dict[str, dict[str, Any]] = {}

    started = time.perf_counter()
    reference = distribution_metrics(train, holdout.x, holdout.y, channels, config, seed, device)
    reference["predictive_mae"] = predictive_mae(train.x, holdout, config, seed, device)
    reference["seconds"] = time.perf_counter() - started
    results[REFERENCE] = reference

    for name, (x, y) in sources.items():
        started = time.perf_counter()
        metrics = distribution_metrics(train, x, y, channels, config, seed, device)
        metrics["predictive_mae"] = predictive_mae(x, holdout, config, seed, device)
        metrics["privacy"] = privacy_metrics(
            x, train.x, holdout.x, copy_tolerance=config.copy_tolerance, chunk_size=config.distance_chunk,
            device=device,
        )
        metrics["seconds"] = time.perf_counter() - started
        results[name] = metrics
        logger.info("%s: discriminative %.3f, predictive MAE %.3f, MMD2 %.4f, MIA AUROC %.3f", name,
                    metrics["discriminative"]["score"], metrics["predictive_mae"], metrics["mmd"]["mmd2"],
                    metrics["privacy"]["mia"]["auroc"])
    return results


def _cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


SUMMARY_COLUMNS = (
    ("n", ("n",)),
    ("discriminative score ↓", ("discriminative", "score")),
    ("discriminator AUROC", ("discriminative", "auroc")),
    ("predictive MAE ↓", ("predictive_mae",)),
    ("MMD² ↓", ("mmd", "mmd2")),
    ("Wasserstein-1 ↓", ("marginal", "wasserstein_mean")),
    ("KS ↓", ("marginal", "ks_mean")),
    ("ACF difference ↓", ("autocorrelation", "mean_abs_diff")),
    ("DCR median", ("privacy", "dcr", "synthetic_median")),
    ("share DCR < holdout p5", ("privacy", "dcr", "share_below_holdout_p5")),
    ("MIA AUROC", ("privacy", "mia", "auroc")),
    ("MIA advantage", ("privacy", "mia", "advantage")),
    ("copies", ("privacy", "copies", "copies")),
    ("exact duplicates", ("privacy", "copies", "exact_duplicates")),
)
CLASS_COLUMNS = tuple(
    (f"{title} y={label}", (section, "per_class", label, key))
    for title, section, key in (("MMD²", "mmd", "mmd2"), ("Wasserstein-1", "marginal", "wasserstein_mean"),
                                ("KS", "marginal", "ks_mean"))
    for label in ("0", "1")
)


def markdown_table(results: dict[str, dict[str, Any]], columns: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    """Return a markdown table with one row per source and one column per ``(title, key path)``."""
    lines = [
        "| source | " + " | ".join(title for title, _ in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, metrics in results.items():
        cells = [_cell(nested_value(metrics, *keys)) for _, keys in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(results: dict[str, dict[str, Any]], params: Params, holdout: Split) -> str:
    """Return the markdown page of the stage: the summary table, the per-class table and how to read them."""
    config = params.fidelity
    dcr = next((m["privacy"]["dcr"] for m in results.values() if "privacy" in m), None)
    holdout_line = (
        f"Held-out DCR to the training split: median {_cell(dcr['holdout_median'])}, "
        f"5th percentile {_cell(dcr['holdout_p5'])}.\n\n" if dcr else ""
    )
    return (
        f"# Fidelity and privacy: {params.data.dataset}, profile {params.profile}\n\n"
        f"Real reference: the training split; held-out split: {config.holdout} ({len(holdout)} stays). "
        f"The row {REFERENCE} scores the held-out split in place of synthetic data, except its predictive MAE, "
        "which comes from the predictor trained on the real training split. "
        "↓ marks metrics where lower means closer to the real data. "
        "Definitions: docs/pipeline.md, section fidelity.\n\n"
        f"{markdown_table(results, SUMMARY_COLUMNS)}\n{holdout_line}"
        f"## Per class\n\n{markdown_table(results, CLASS_COLUMNS)}"
    )


def write_plots(
    cohort: PreparedCohort, sources: dict[str, tuple[np.ndarray, np.ndarray]], config: FidelityConfig,
    seed: int, out: Path,
) -> list[Path]:
    """Write the PCA and t-SNE embedding and the per-channel histograms; returns their paths."""
    rng = np.random.default_rng(seed)
    pooled = {"real": (cohort.train.x, cohort.train.y), **sources}
    xs, names, labels = [], [], []
    for name, (x, y) in pooled.items():
        index = subsample(len(x), config.embedding_samples, rng)
        xs.append(x[index])
        names.append(np.full(index.size, name))
        labels.append(y[index])
    x_all = np.concatenate(xs)
    embeddings = {
        "PCA": embed_2d(x_all, "pca", seed),
        "t-SNE": embed_2d(x_all, "tsne", seed, config.tsne_perplexity),
    }
    embedding_path = out / "embedding.png"
    with atomic_path(embedding_path) as tmp:
        plot_embedding(embeddings, np.concatenate(names), np.concatenate(labels), str(tmp))

    units = [channel["unit"] for channel in cohort.metadata["channels"]]
    clinical = {name: cohort.to_clinical(x) for name, (x, _) in sources.items()}
    marginals_path = out / "marginals.png"
    with atomic_path(marginals_path) as tmp:
        plot_marginals(cohort.to_clinical(cohort.train.x), clinical, cohort.channel_names, units, str(tmp))
    return [embedding_path, marginals_path]


def main(params: Params, root: Path) -> None:
    config = params.fidelity
    device = resolve_device(params.device)
    seed = params.seed + config.seed_offset
    cohort = load_prepared(stage_dir("preprocess"))
    sources = load_sources(source_paths(params), cohort.train.x.shape[1], cohort.train.x.shape[2])
    out = stage_dir("fidelity")

    with tracking.stage_run("fidelity", params, root):
        results = score_sources(cohort, sources, config, seed, device)
        page = report(results, params, cohort.split(config.holdout))
        with atomic_path(out / "fidelity.md") as tmp:
            tmp.write_text(page)
        plots = write_plots(cohort, sources, config, seed, out)
        write_json(metrics_path("fidelity"), results)

        tracking.log_metrics(results)
        mlflow.log_artifact(str(out / "fidelity.md"))
        for path in plots:
            mlflow.log_artifact(str(path), artifact_path="plots")
        logger.info("fidelity and privacy:\n%s", markdown_table(results, SUMMARY_COLUMNS))


if __name__ == "__main__":
    run_stage("fidelity", main)
