"""Downstream evaluation: TRTR, TSTR and TSRTR on the real test split, with bootstrap statistics.

- TRTR: train on the real training split (the source ``"real"``).
- TSTR: train on one synthetic source only.
- TSRTR: train on the real training split plus ``alpha * |real train|``
  synthetic samples, drawn per seed without replacement and stratified by label.

Every evaluator in ``evaluate.evaluators`` is trained afresh for every protocol,
source and seed, for a fixed number of epochs or iterations with no model
selection. The real validation split is used for one thing only: choosing the
decision threshold behind the F1 score, as the threshold that maximises the F1 of
class 1 on that fitted model's validation predictions.

Statistics come from the stored test predictions. Per (evaluator, source,
protocol, alpha): the mean and sample standard deviation over seeds, and a 95%
bootstrap percentile interval of the seed-averaged metric, resampling test stays
with replacement within each class. Sources are compared with a baseline source
(``unguided`` by default) seed by seed on the same resampled stays.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tardiff.config import EvaluateConfig
from tardiff.errors import CorruptFileError, TardiffInputError
from tardiff.evaluators import fit_evaluator
from tardiff.io import load_npz, save_npz
from tardiff.metrics import (
    CONFIDENCE,
    best_f1_threshold,
    check_binary,
    f1_at_threshold,
    percentile_interval,
    ranking_metrics,
    stratified_bootstrap_indices,
)
from tardiff.training import binary_metrics

logger = logging.getLogger(__name__)

REAL = "real"  # the source name of the real training split, evaluated by TRTR only
METRICS = ("auroc", "auprc", "f1")
METRIC_LABELS = {"auroc": "AUROC", "auprc": "AUPRC", "f1": "F1"}


@dataclass
class LabelledSeries:
    x: np.ndarray  # (n, time, channels), normalised
    y: np.ndarray  # (n,)


def stratified_subsample(y: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Return ``size`` indices into ``y`` without replacement, keeping the label proportions."""
    if size > y.shape[0]:
        raise TardiffInputError(f"cannot draw {size} synthetic samples from {y.shape[0]}; lower the largest alpha")
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


@dataclass(frozen=True, eq=False)
class Fit:
    """One trained evaluator and its predictions on the real validation and test splits."""

    evaluator: str
    source: str
    protocol: str  # "trtr", "tstr" or "tsrtr"
    alpha: float | None  # TSRTR only
    seed: int
    n_train: int
    threshold: float  # maximises the F1 of class 1 on p_val
    val_f1: float
    seconds: float  # training and prediction
    p_val: np.ndarray  # (n_val,) probability of class 1
    p_test: np.ndarray  # (n_test,)

    @property
    def group(self) -> tuple[str, str, str, float | None]:
        """The (evaluator, source, protocol, alpha) whose seeds are aggregated together."""
        return self.evaluator, self.source, self.protocol, self.alpha


@dataclass(eq=False)
class EvaluationResult:
    """Every fit of one evaluation run, with the real labels its predictions refer to."""

    y_val: np.ndarray
    y_test: np.ndarray
    fits: list[Fit]

    def records(self) -> list[dict]:
        """Return one row per fit with its metrics on the whole test split, for ``per_seed.csv``."""
        rows = []
        for fit in self.fits:
            metrics = score_predictions(self.y_test, fit.p_test, fit.threshold)
            rows.append({
                "evaluator": fit.evaluator, "seed": fit.seed, "source": fit.source, "protocol": fit.protocol,
                "alpha": fit.alpha, "n_train": fit.n_train, **metrics, "threshold": fit.threshold,
                "val_f1": fit.val_f1, "seconds": fit.seconds,
            })
        return rows


def score_predictions(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Return AUROC, AUPRC and the F1 of class 1 at ``threshold`` for labels ``y`` and scores ``p (n,)``."""
    auroc, auprc = ranking_metrics(y, p)
    return {"auroc": float(auroc[0]), "auprc": float(auprc[0]), "f1": float(f1_at_threshold(y, p, threshold)[0])}


def train_and_test(
    train: LabelledSeries, test: LabelledSeries, config: EvaluateConfig, seed: int, device: torch.device, desc: str,
    evaluator: str = "gru",
) -> dict[str, float]:
    """Train a fresh evaluator (the GRU by default) on ``train`` and return its AUROC and AUPRC on ``test``."""
    model = fit_evaluator(evaluator, train.x, train.y, config, seed, device)
    metrics = binary_metrics(test.y, model.predict_proba(test.x))
    logger.info("%s (%s, seed %d): auroc=%.4f auprc=%.4f", desc, evaluator, seed, metrics["auroc"], metrics["auprc"])
    return metrics


def _check_series(data: LabelledSeries, what: str, shape: tuple[int, ...] | None = None) -> None:
    x, y = np.asarray(data.x), np.asarray(data.y)
    if x.ndim != 3 or x.shape[0] == 0:
        raise TardiffInputError(f"{what}: x must be a non-empty (n, time, channels) array, got shape {x.shape}")
    if shape is not None and x.shape[1:] != shape:
        raise TardiffInputError(f"{what}: series have shape {x.shape[1:]}, the real training split {shape}")
    if y.shape != (x.shape[0],):
        raise TardiffInputError(f"{what}: {y.shape} labels for {x.shape[0]} series; expected one label per series")
    if not np.isfinite(x).all():
        raise TardiffInputError(f"{what}: x contains NaN or inf; re-run the stage that produced it")
    check_binary(y, what=f"{what} labels")


def _fit(
    evaluator: str, source: str, protocol: str, alpha: float | None, seed: int, train: LabelledSeries,
    real_val: LabelledSeries, real_test: LabelledSeries, config: EvaluateConfig, device: torch.device,
) -> Fit:
    started = time.perf_counter()
    model = fit_evaluator(evaluator, train.x, train.y, config, seed, device)
    p_val = np.asarray(model.predict_proba(real_val.x), dtype=np.float64)
    p_test = np.asarray(model.predict_proba(real_test.x), dtype=np.float64)
    seconds = time.perf_counter() - started
    check_binary(real_test.y, p_test, f"{evaluator} {source} {protocol} test predictions")

    threshold, val_f1 = best_f1_threshold(real_val.y, p_val)
    fit = Fit(evaluator, source, protocol, alpha, seed, train.y.shape[0], threshold, val_f1, seconds, p_val, p_test)
    metrics = score_predictions(real_test.y, p_test, threshold)
    logger.info(
        "%s seed %d %s %s%s: auroc=%.4f auprc=%.4f f1=%.4f (%.1f s)", evaluator, seed, source, protocol.upper(),
        "" if alpha is None else f" alpha={alpha}", metrics["auroc"], metrics["auprc"], metrics["f1"], seconds,
    )
    return fit


@dataclass(frozen=True)
class _Job:
    """One fit to run: which evaluator, on which training set, with which seed."""

    evaluator: str
    source: str
    protocol: str
    alpha: float | None
    seed: int
    index: np.ndarray | None = None  # TSRTR: rows of the synthetic source added to the real training split


def _plan(config: EvaluateConfig, synthetic: dict[str, LabelledSeries], n_real: int) -> list[_Job]:
    """List every fit in a fixed order. The TSRTR rows of a source depend on the seed alone."""
    jobs = []
    for evaluator in config.evaluators:
        for seed in config.seeds:
            jobs.append(_Job(evaluator, REAL, "trtr", None, seed))
            for source, data in synthetic.items():
                jobs.append(_Job(evaluator, source, "tstr", None, seed))
                rng = np.random.default_rng(seed)
                for alpha in config.alphas:
                    index = stratified_subsample(data.y, round(alpha * n_real), rng)
                    jobs.append(_Job(evaluator, source, "tsrtr", alpha, seed, index))
    return jobs


def _run_job(
    job: _Job, real_train: LabelledSeries, real_val: LabelledSeries, real_test: LabelledSeries,
    synthetic: dict[str, LabelledSeries], config: EvaluateConfig, device: torch.device,
) -> Fit:
    if job.protocol == "trtr":
        train = real_train
    elif job.protocol == "tstr":
        train = synthetic[job.source]
    else:
        data = synthetic[job.source]
        train = LabelledSeries(
            x=np.concatenate([real_train.x, data.x[job.index]]), y=np.concatenate([real_train.y, data.y[job.index]])
        )
    return _fit(job.evaluator, job.source, job.protocol, job.alpha, job.seed, train, real_val, real_test, config, device)


# Data every fit of a worker process reads, set once by _start_worker so that each job ships only its indices.
_WORKER_DATA: dict = {}


def _start_worker(
    real_train: LabelledSeries, real_val: LabelledSeries, real_test: LabelledSeries,
    synthetic: dict[str, LabelledSeries], config: EvaluateConfig, threads: int, log_level: int,
) -> None:
    torch.set_num_threads(threads)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _WORKER_DATA.update(
        real_train=real_train, real_val=real_val, real_test=real_test, synthetic=synthetic, config=config
    )


def _run_job_in_worker(job: _Job) -> Fit:
    return _run_job(job, device=torch.device("cpu"), **_WORKER_DATA)


def _run_in_workers(
    jobs: list[_Job], workers: int, real_train: LabelledSeries, real_val: LabelledSeries, real_test: LabelledSeries,
    synthetic: dict[str, LabelledSeries], config: EvaluateConfig,
) -> list[Fit]:
    """Run ``jobs`` in ``workers`` fresh processes on the CPU and return their fits in the order of ``jobs``.

    Every fit seeds its own generators, so a fit gives the same result in any process and order.
    torch's threads are shared out between the workers, at least one each.
    """
    threads = max(1, torch.get_num_threads() // workers)
    logger.info("fitting %d models in %d processes of %d torch thread(s) each", len(jobs), workers, threads)
    context = multiprocessing.get_context("spawn")
    initargs = (real_train, real_val, real_test, synthetic, config, threads, logging.getLogger().getEffectiveLevel())
    # Leaving the block terminates the workers, so an error or Ctrl-C does not wait for their running fits.
    with context.Pool(workers, initializer=_start_worker, initargs=initargs) as pool:
        return list(pool.imap(_run_job_in_worker, jobs, chunksize=1))


def evaluate_sources(
    real_train: LabelledSeries,
    real_val: LabelledSeries,
    real_test: LabelledSeries,
    synthetic: dict[str, LabelledSeries],
    config: EvaluateConfig,
    device: torch.device,
) -> EvaluationResult:
    """Run every protocol for every evaluator and seed; returns the fits with their predictions.

    ``real_val`` only sets each fit's F1 threshold. The TSRTR subsample of a source
    depends on the seed alone, so every evaluator is trained on the same mixed training sets.
    With ``config.workers`` above 1 on a CPU, the fits run in that many processes and
    give the same results as in one.
    """
    _check_series(real_train, "real training split")
    shape = real_train.x.shape[1:]
    _check_series(real_val, "real validation split", shape)
    _check_series(real_test, "real test split", shape)
    if REAL in synthetic:
        raise TardiffInputError(f"a synthetic source is named {REAL!r}, which names the real training split; rename it")
    for source, data in synthetic.items():
        _check_series(data, f"synthetic source {source!r}", shape)

    jobs = _plan(config, synthetic, real_train.y.shape[0])
    if config.workers > 1 and device.type == "cpu":
        fits = _run_in_workers(jobs, config.workers, real_train, real_val, real_test, synthetic, config)
    else:
        if config.workers > 1:
            logger.info("evaluate.workers=%d applies to the CPU only; fitting on %s in this process", config.workers,
                        device)
        fits = [_run_job(job, real_train, real_val, real_test, synthetic, config, device) for job in jobs]
    return EvaluationResult(y_val=np.asarray(real_val.y), y_test=np.asarray(real_test.y), fits=fits)


class BootstrapStatistics:
    """Each fit's metrics on the whole real test split and on every bootstrap replicate of it.

    All fits share the same replicates, so seed averages, sources and evaluators are
    compared on the same resampled stays.
    """

    def __init__(self, result: EvaluationResult, replicates: int, seed: int):
        self.result = result
        self.replicates = replicates
        self.seed = seed
        indices = stratified_bootstrap_indices(result.y_test, replicates, seed)
        y_resampled = result.y_test[indices]
        self.point: dict[Fit, dict[str, float]] = {}
        self.resampled: dict[Fit, dict[str, np.ndarray]] = {}  # per fit and metric: (replicates,)
        for fit in result.fits:
            p_resampled = fit.p_test[indices]
            auroc, auprc = ranking_metrics(y_resampled, p_resampled)
            self.resampled[fit] = {
                "auroc": auroc, "auprc": auprc, "f1": f1_at_threshold(y_resampled, p_resampled, fit.threshold),
            }
            self.point[fit] = score_predictions(result.y_test, fit.p_test, fit.threshold)

    def fits(self, evaluator: str, source: str, protocol: str, alpha: float | None) -> list[Fit]:
        """Return the fits of one group, ordered by seed."""
        chosen = [fit for fit in self.result.fits if fit.group == (evaluator, source, protocol, alpha)]
        return sorted(chosen, key=lambda fit: fit.seed)

    def summary(self, fits: list[Fit]) -> dict:
        """Return mean, sample std over seeds and the 95% interval of the seed mean, per metric, for one group."""
        leaf: dict = {"n_seeds": len(fits)}
        for metric in METRICS:
            values = np.array([self.point[fit][metric] for fit in fits])
            seed_mean = np.mean([self.resampled[fit][metric] for fit in fits], axis=0)
            leaf[f"{metric}_mean"] = float(values.mean())
            leaf[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            leaf[f"{metric}_lo"], leaf[f"{metric}_hi"] = percentile_interval(seed_mean)
        return leaf

    def paired(self, evaluator: str, source: str, baseline: str, protocol: str, alpha: float | None) -> dict:
        """Return the paired difference ``source - baseline`` per metric: mean and std over seeds, 95% interval.

        Each seed of ``source`` is paired with the same seed of ``baseline`` and both
        are scored on the same resampled stays, so shared noise cancels.
        """
        fits = self.fits(evaluator, source, protocol, alpha)
        baseline_fits = self.fits(evaluator, baseline, protocol, alpha)
        seeds = [fit.seed for fit in fits]
        if not fits or seeds != [fit.seed for fit in baseline_fits]:
            raise TardiffInputError(
                f"cannot pair {source!r} with {baseline!r} for {evaluator} {protocol} alpha={alpha}: seeds {seeds} "
                f"and {[fit.seed for fit in baseline_fits]} differ; evaluate both with the same evaluate.seeds"
            )
        leaf: dict = {"n_seeds": len(fits)}
        for metric in METRICS:
            differences = np.array(
                [self.point[a][metric] - self.point[b][metric] for a, b in zip(fits, baseline_fits)]
            )
            resampled = np.mean(
                [self.resampled[a][metric] - self.resampled[b][metric] for a, b in zip(fits, baseline_fits)],
                axis=0,
            )
            leaf[f"{metric}_mean"] = float(differences.mean())
            leaf[f"{metric}_std"] = float(differences.std(ddof=1)) if len(differences) > 1 else 0.0
            leaf[f"{metric}_lo"], leaf[f"{metric}_hi"] = percentile_interval(resampled)
        return leaf


def _alpha_key(alpha: float) -> str:
    return f"alpha={alpha}"


def summarise(result: EvaluationResult, replicates: int, seed: int, baseline: str = "unguided") -> dict:
    """Aggregate the fits into the nested summary written to ``metrics/evaluate.json``.

    Returns ``{"results": {evaluator: {source: {"trtr"|"tstr": leaf, "tsrtr": {"alpha=0.2": leaf, ...},
    "tsrtr_best": leaf}}}, "paired": {evaluator: {"<source>_vs_<baseline>": {"tstr": leaf, "tsrtr": {...}}}},
    "bootstrap": {...}}``. A leaf contains ``<metric>_mean``, ``_std``, ``_lo``, ``_hi`` for AUROC, AUPRC
    and F1, and ``n_seeds``. ``tsrtr_best`` is the alpha with the highest mean AUPRC; it is chosen on
    the test split, so it is optimistic. ``paired`` is empty when ``baseline`` is not a source.
    """
    statistics = BootstrapStatistics(result, replicates, seed)
    groups = list(dict.fromkeys(fit.group for fit in result.fits))

    results: dict = {}
    for evaluator, source, protocol, alpha in groups:
        leaf = statistics.summary(statistics.fits(evaluator, source, protocol, alpha))
        entry = results.setdefault(evaluator, {}).setdefault(source, {})
        if protocol == "tsrtr":
            entry.setdefault("tsrtr", {})[_alpha_key(alpha)] = leaf
        else:
            entry[protocol] = leaf
    for sources in results.values():
        for entry in sources.values():
            if "tsrtr" in entry:
                best_key = max(entry["tsrtr"], key=lambda key: entry["tsrtr"][key]["auprc_mean"])
                entry["tsrtr_best"] = {"alpha": float(best_key.split("=")[1]), **entry["tsrtr"][best_key]}

    paired: dict = {}
    sources = {fit.source for fit in result.fits}
    if baseline not in sources:
        logger.info("no source named %r, so no paired differences are computed", baseline)
    for evaluator, source, protocol, alpha in groups:
        if baseline not in sources or source in (REAL, baseline):
            continue
        leaf = statistics.paired(evaluator, source, baseline, protocol, alpha)
        entry = paired.setdefault(evaluator, {}).setdefault(f"{source}_vs_{baseline}", {})
        if protocol == "tsrtr":
            entry.setdefault("tsrtr", {})[_alpha_key(alpha)] = leaf
        else:
            entry[protocol] = leaf

    positives = int(np.sum(result.y_test))
    return {
        "results": results,
        "paired": paired,
        "bootstrap": {
            "replicates": replicates, "seed": seed, "confidence": CONFIDENCE, "baseline": baseline,
            "n_test": int(result.y_test.shape[0]), "n_test_positive": positives,
        },
    }


def _cell(leaf: dict, metric: str) -> str:
    return (
        f"{leaf[f'{metric}_mean']:.3f} ± {leaf[f'{metric}_std']:.3f} "
        f"[{leaf[f'{metric}_lo']:.3f}, {leaf[f'{metric}_hi']:.3f}]"
    )


def _difference_cell(leaf: dict, metric: str) -> str:
    return f"{leaf[f'{metric}_mean']:+.3f} [{leaf[f'{metric}_lo']:+.3f}, {leaf[f'{metric}_hi']:+.3f}]"


def _protocol_rows(entry: dict) -> list[tuple[str, dict]]:
    rows = [(protocol.upper(), entry[protocol]) for protocol in ("trtr", "tstr") if protocol in entry]
    for key, leaf in entry.get("tsrtr", {}).items():
        rows.append((f"TSRTR α = {key.split('=')[1]}", leaf))
    return rows


def results_tables(summary: dict) -> str:
    """Render the summary as markdown: per evaluator, one table of source x protocol and one of paired differences."""
    bootstrap = summary["bootstrap"]
    header = "| " + " | ".join(METRIC_LABELS[m] for m in METRICS) + " |"
    legend = (
        f"Cells: mean ± sample std over seeds [95% bootstrap interval of the seed mean; {bootstrap['replicates']} "
        f"replicates of the {bootstrap['n_test']} test stays, resampled within each class]. "
        "F1 is that of class 1 at the threshold that maximises it on the real validation split."
    )
    lines = [legend]
    for evaluator, sources in summary["results"].items():
        lines += ["", f"## {evaluator}", "", f"| source | protocol {header} seeds |", "|---|---|---|---|---|---|"]
        for source in sorted(sources, key=lambda name: name != REAL):
            for protocol, leaf in _protocol_rows(sources[source]):
                cells = " | ".join(_cell(leaf, metric) for metric in METRICS)
                lines.append(f"| {source} | {protocol} | {cells} | {leaf['n_seeds']} |")

        comparisons = summary["paired"].get(evaluator, {})
        if comparisons:
            paired_legend = (
                f"Paired differences, {evaluator} (source minus {bootstrap['baseline']}, same seeds and resampled "
                "stays): mean over seeds [95% bootstrap interval]."
            )
            lines += [
                "",
                paired_legend,
                "",
                f"| comparison | protocol {header} seeds |",
                "|---|---|---|---|---|---|",
            ]
            for comparison, entry in comparisons.items():
                for protocol, leaf in _protocol_rows(entry):
                    cells = " | ".join(_difference_cell(leaf, metric) for metric in METRICS)
                    lines.append(f"| {comparison.replace('_vs_', ' − ')} | {protocol} | {cells} | {leaf['n_seeds']} |")
    return "\n".join(lines) + "\n"


def curve_scores(result: EvaluationResult, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Return per evaluator the test predictions of ``seed`` for TRTR and every TSTR source, keyed by curve label."""
    curves: dict[str, dict[str, np.ndarray]] = {}
    for fit in result.fits:
        if fit.seed == seed and fit.protocol in ("trtr", "tstr"):
            curves.setdefault(fit.evaluator, {})[f"{fit.source} {fit.protocol.upper()}"] = fit.p_test
    return curves


_FIT_FIELDS = ("evaluator", "source", "protocol", "alpha", "seed", "n_train", "threshold", "val_f1", "seconds")


def save_predictions(path: str | Path, result: EvaluationResult, test_ids: np.ndarray | None = None) -> None:
    """Write every fit's validation and test predictions with its identity to an ``.npz`` file (no pickle).

    Rows of ``p_val`` and ``p_test`` follow the per-fit arrays; ``alpha`` is NaN outside TSRTR.
    ``test_ids`` (for example the stays' record ids) are stored in the order of ``y_test``.
    """
    arrays = {
        "y_val": np.asarray(result.y_val),
        "y_test": np.asarray(result.y_test),
        "p_val": np.stack([fit.p_val for fit in result.fits]),
        "p_test": np.stack([fit.p_test for fit in result.fits]),
        "evaluator": np.array([fit.evaluator for fit in result.fits]),
        "source": np.array([fit.source for fit in result.fits]),
        "protocol": np.array([fit.protocol for fit in result.fits]),
        "alpha": np.array([np.nan if fit.alpha is None else fit.alpha for fit in result.fits]),
        "seed": np.array([fit.seed for fit in result.fits], dtype=np.int64),
        "n_train": np.array([fit.n_train for fit in result.fits], dtype=np.int64),
        "threshold": np.array([fit.threshold for fit in result.fits]),
        "val_f1": np.array([fit.val_f1 for fit in result.fits]),
        "seconds": np.array([fit.seconds for fit in result.fits]),
    }
    if test_ids is not None:
        arrays["test_ids"] = np.asarray(test_ids)
    save_npz(path, **arrays)


def load_predictions(path: str | Path) -> EvaluationResult:
    """Read a file written by :func:`save_predictions` back into an :class:`EvaluationResult`."""
    arrays = load_npz(path, required=("y_val", "y_test", "p_val", "p_test", *_FIT_FIELDS), what="predictions")
    count = arrays["p_test"].shape[0]
    if any(arrays[name].shape[0] != count for name in _FIT_FIELDS) or arrays["p_val"].shape[0] != count:
        raise CorruptFileError(f"predictions {path} have per-fit arrays of different lengths; re-run evaluate")
    fits = []
    for i in range(count):
        alpha = float(arrays["alpha"][i])
        fits.append(Fit(
            evaluator=str(arrays["evaluator"][i]), source=str(arrays["source"][i]), protocol=str(arrays["protocol"][i]),
            alpha=None if np.isnan(alpha) else alpha, seed=int(arrays["seed"][i]), n_train=int(arrays["n_train"][i]),
            threshold=float(arrays["threshold"][i]), val_f1=float(arrays["val_f1"][i]),
            seconds=float(arrays["seconds"][i]), p_val=arrays["p_val"][i], p_test=arrays["p_test"][i],
        ))
    return EvaluationResult(y_val=arrays["y_val"], y_test=arrays["y_test"], fits=fits)
