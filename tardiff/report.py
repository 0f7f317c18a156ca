"""The cross-cohort results table: TSTR and TSRTR of guided, unguided and real-only data on every cohort.

Input is each cohort's evaluation summary (``metrics/<cohort>/evaluate.json``, as written
by :func:`tardiff.evaluation.summarise`: ``results -> evaluator -> source -> protocol``).
Output is a paper-style markdown table per evaluator and metric (one row per cohort) and
a figure with a row of panels per evaluator.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or assumed

from dataclasses import dataclass  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

METRICS = ("auroc", "auprc", "f1")
METRIC_LABELS = {"auroc": "AUROC", "auprc": "AUPRC", "f1": "F1 (class 1)"}


@dataclass(frozen=True)
class Column:
    """One column of the table: a source under a protocol, read from the evaluation summary."""

    label: str
    source: str
    protocol: str  # "trtr", "tstr" or "tsrtr_best"


COLUMNS = (
    Column("Real only (TRTR)", "real", "trtr"),
    Column("Unguided TSTR", "unguided", "tstr"),
    Column("TarDiff TSTR", "guided", "tstr"),
    Column("Unguided TSRTR", "unguided", "tsrtr_best"),
    Column("TarDiff TSRTR", "guided", "tsrtr_best"),
)


def _leaf(summary: dict, evaluator: str, column: Column) -> dict | None:
    return ((summary.get("results") or {}).get(evaluator, {}).get(column.source) or {}).get(column.protocol)


def evaluators_of(summaries: dict[str, dict | None]) -> list[str]:
    """Return the evaluators found in any summary, in their first order of appearance."""
    found: list[str] = []
    for summary in summaries.values():
        for name in (summary or {}).get("results", {}):
            if name not in found:
                found.append(name)
    return found


def _cell(leaf: dict | None, metric: str, column: Column) -> tuple[str, int | None]:
    if leaf is None or f"{metric}_mean" not in leaf:
        return "-", None
    text = f"{leaf[f'{metric}_mean']:.3f} ± {leaf[f'{metric}_std']:.3f}"
    if f"{metric}_lo" in leaf:
        text += f" [{leaf[f'{metric}_lo']:.3f}, {leaf[f'{metric}_hi']:.3f}]"
    if column.protocol == "tsrtr_best":
        text += f" (α={leaf['alpha']:g})"
    return text, int(leaf["n_seeds"])


def results_tables(summaries: dict[str, dict | None], cohort_info: dict[str, dict] | None = None) -> str:
    """Render a markdown table per evaluator and metric: a row per cohort, a column per source and protocol.

    ``summaries`` maps the cohort name to its evaluation summary, or to None when the
    cohort has not been evaluated yet (its row states that). Cells are "mean ± std [95%
    bootstrap interval]" over the evaluator seeds. TSRTR cells name the best alpha, the one
    with the highest mean AUPRC on the test split, so they are optimistic.
    ``cohort_info`` adds the dataset and task.
    """
    cohort_info = cohort_info or {}
    parts = []
    for evaluator in evaluators_of(summaries) or ["(none)"]:
        for metric in METRICS:
            header = ["cohort", "dataset / task", *(column.label for column in COLUMNS), "seeds"]
            lines = [f"### {evaluator}: {METRIC_LABELS[metric]}", "", "| " + " | ".join(header) + " |",
                     "|" + "---|" * len(header)]
            for cohort, summary in summaries.items():
                info = cohort_info.get(cohort, {})
                described = " / ".join(str(v) for v in (info.get("dataset"), info.get("task")) if v) or "-"
                if summary is None:
                    cells = ["not evaluated yet"] + [""] * len(COLUMNS)
                else:
                    cells, seeds = [], set()
                    for column in COLUMNS:
                        text, n_seeds = _cell(_leaf(summary, evaluator, column), metric, column)
                        cells.append(text)
                        if n_seeds is not None:
                            seeds.add(n_seeds)
                    cells.append(",".join(str(s) for s in sorted(seeds)))
                lines.append("| " + " | ".join([cohort, described, *cells]) + " |")
            parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def plot_results(summaries: dict[str, dict | None], path: str) -> None:
    """Draw grouped bars (mean with std error bars) per cohort: a row per evaluator, a panel per metric."""
    cohorts = [name for name, summary in summaries.items() if summary is not None]
    evaluators = evaluators_of(summaries) or ["(none)"]
    fig, axes = plt.subplots(len(evaluators), len(METRICS), figsize=(max(6.0, 1.9 * len(cohorts) + 3) * 1.3,
                                                                    3.4 * len(evaluators)), squeeze=False)
    width = 0.8 / len(COLUMNS)
    positions = np.arange(len(cohorts))
    for row, evaluator in enumerate(evaluators):
        for ax, metric in zip(axes[row], METRICS):
            for index, column in enumerate(COLUMNS):
                means, stds = [], []
                for cohort in cohorts:
                    leaf = _leaf(summaries[cohort], evaluator, column)
                    means.append(np.nan if leaf is None else leaf.get(f"{metric}_mean", np.nan))
                    stds.append(0.0 if leaf is None else leaf.get(f"{metric}_std", 0.0))
                ax.bar(positions + (index - (len(COLUMNS) - 1) / 2) * width, means, width, yerr=stds,
                       label=column.label, capsize=2)
            ax.set_xticks(positions, cohorts, rotation=20, ha="right", fontsize=8)
            ax.set_title(f"{evaluator}: {METRIC_LABELS[metric]}", fontsize=9)
            ax.set_ylim(0, 1)
            ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="upper left")
    if not cohorts:
        fig.suptitle("no cohort has been evaluated yet")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


SOURCE_LABELS = {
    "real": "Real only (TRTR)",
    "guided": "TarDiff (influence guidance)",
    "unguided": "Unguided diffusion",
    "classifier_guidance": "Classifier guidance",
    "ros": "Random oversampling",
    "smote": "SMOTE",
    "timevae": "TimeVAE",
    "timegan": "TimeGAN",
}
FIDELITY_COLUMNS = (
    ("discriminative score ↓", ("discriminative", "score"), 3),
    ("predictive MAE ↓", ("predictive_mae",), 3),
    ("MMD² ↓", ("mmd", "mmd2"), 4),
    ("Wasserstein-1 ↓", ("marginal", "wasserstein_mean"), 3),
    ("ACF difference ↓", ("autocorrelation", "mean_abs_diff"), 3),
    ("share DCR < held-out p5", ("privacy", "dcr", "share_below_holdout_p5"), 3),
    ("MIA AUROC", ("privacy", "mia", "auroc"), 3),
    ("copies", ("privacy", "copies", "copies"), 0),
)


def _sources(summary: dict, evaluators: list[str]) -> list[str]:
    found = ["real", "guided", "unguided"]
    for evaluator in evaluators:
        for source in summary["results"].get(evaluator, {}):
            if source not in found:
                found.append(source)
    return [source for source in found if any(source in summary["results"].get(e, {}) for e in evaluators)]


def _mean_std(leaf: dict | None, metric: str) -> str:
    if leaf is None or f"{metric}_mean" not in leaf:
        return "-"
    return f"{leaf[f'{metric}_mean']:.3f} ± {leaf[f'{metric}_std']:.3f}"


def _difference(leaf: dict | None, metric: str) -> str:
    if leaf is None or f"{metric}_mean" not in leaf:
        return "-"
    return f"{leaf[f'{metric}_mean']:+.3f} [{leaf[f'{metric}_lo']:+.3f}, {leaf[f'{metric}_hi']:+.3f}]"


def nested_value(metrics: dict, *keys: str) -> object:
    """Return ``metrics[keys[0]][keys[1]]...``, or None where a key is missing or its value is None."""
    node: object = metrics
    for key in keys:
        if not isinstance(node, dict) or node.get(key) is None:
            return None
        node = node[key]
    return node


def cohort_table(cohort: str, summary: dict, fidelity: dict | None = None, info: dict | None = None) -> str:
    """Render one cohort's paper-style page: every source against every evaluator and metric, then fidelity.

    ``summary`` is the cohort's evaluation summary and ``fidelity`` its fidelity metrics
    (``metrics/<cohort>/fidelity.json``), or None when that stage has not run. Downstream
    cells are mean ± std over the evaluator seeds; the bootstrap intervals are in the
    evaluate stage's own ``results.md``.
    """
    info = info or {}
    evaluators = [name for name in summary["results"]]
    sources = _sources(summary, evaluators)
    bootstrap = summary.get("bootstrap", {})
    described = " / ".join(str(v) for v in (info.get("dataset"), info.get("task")) if v)
    seeds = sorted({leaf["n_seeds"] for e in evaluators for s in summary["results"][e].values()
                    for leaf in s.values() if isinstance(leaf, dict) and "n_seeds" in leaf})
    lines = [
        f"# {cohort}: every source, evaluator and metric",
        "",
        (
            f"{described + '. ' if described else ''}Real test split: {bootstrap.get('n_test', '?')} stays, "
            f"{bootstrap.get('n_test_positive', '?')} positive. Cells are mean ± sample std over "
            f"{', '.join(str(s) for s in seeds)} evaluator seeds. F1 is that of class 1 at the threshold chosen on "
            f"the validation split. Made by the pipeline's report stage from metrics/{cohort}/evaluate.json and "
            f"fidelity.json; outputs/{cohort}/evaluate/results.md adds the bootstrap intervals and every α."
        ),
        "",
        "## Train on synthetic, test on real (TSTR; TRTR for real data)",
        "",
    ]
    metric_header = [f"{e} {METRIC_LABELS[m].split(' ')[0]}" for e in evaluators for m in METRICS]
    lines += ["| source | " + " | ".join(metric_header) + " |", "|---|" + "---|" * len(metric_header)]
    for source in sources:
        protocol = "trtr" if source == "real" else "tstr"
        cells = [_mean_std(summary["results"].get(e, {}).get(source, {}).get(protocol), m)
                 for e in evaluators for m in METRICS]
        lines.append(f"| {SOURCE_LABELS.get(source, source)} | " + " | ".join(cells) + " |")

    lines += ["", "## Real plus synthetic (TSRTR) at the best α", "",
              ("α is the share of synthetic samples, relative to the real training split, with the highest mean "
               "AUPRC on the test split, so these cells are optimistic."), ""]
    header = [f"{e} {label}" for e in evaluators for label in ("α", "AUROC", "AUPRC", "F1")]
    lines += ["| source | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    for source in sources[1:]:
        cells = []
        for evaluator in evaluators:
            leaf = summary["results"].get(evaluator, {}).get(source, {}).get("tsrtr_best")
            cells.append("-" if leaf is None else f"{leaf['alpha']:g}")
            cells += [_mean_std(leaf, metric) for metric in METRICS]
        lines.append(f"| {SOURCE_LABELS.get(source, source)} | " + " | ".join(cells) + " |")

    baseline = bootstrap.get("baseline", "unguided")
    lines += ["", f"## TSTR difference from {SOURCE_LABELS.get(baseline, baseline).lower()}", "",
              "Same seeds and resampled test stays: mean over seeds [95% bootstrap interval].", ""]
    header = [f"{e} {METRIC_LABELS[m].split(' ')[0]}" for e in evaluators for m in ("auroc", "auprc")]
    lines += ["| source | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    for source in sources:
        key = f"{source}_vs_{baseline}"
        if not any(key in summary.get("paired", {}).get(e, {}) for e in evaluators):
            continue
        cells = [_difference(summary["paired"].get(e, {}).get(key, {}).get("tstr"), m)
                 for e in evaluators for m in ("auroc", "auprc")]
        lines.append(f"| {SOURCE_LABELS.get(source, source)} | " + " | ".join(cells) + " |")

    lines += ["", "## Fidelity and privacy", ""]
    if fidelity is None:
        lines.append(f"The fidelity stage has not run for {cohort} yet.")
    else:
        lines += [("↓ marks metrics where lower is closer to the real data. The held-out row scores real stays "
                   "the generator never saw, as a reference for each value."), ""]
        lines += ["| source | " + " | ".join(title for title, _, _ in FIDELITY_COLUMNS) + " |",
                  "|---|" + "---|" * len(FIDELITY_COLUMNS)]
        for source, metrics in fidelity.items():
            cells = []
            for _, keys, digits in FIDELITY_COLUMNS:
                value = nested_value(metrics, *keys)
                cells.append("-" if value is None else f"{value:.{digits}f}")
            label = "Real held-out (reference)" if source == "real_holdout" else SOURCE_LABELS.get(source, source)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
