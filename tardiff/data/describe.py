"""Print a Markdown summary of each cohort in ``params.yaml``, as written in docs/data.md.

Usage: ``python -m tardiff.data.describe [--cohort NAME ...] [--variables N] [--params FILE]``.
For each cohort the command runs :func:`~tardiff.data.cohort.preprocess_cohort` with the
cohort's parameters and seed. It then prints the stays, positive rate, split sizes and
exclusions with their counts. Per channel it prints the unit, the valid range and the
share of stays and of hour cells observed in the window. ``--variables N`` adds the N raw variables with
the most observed hour cells, which is how the channels were chosen.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from tardiff.config import Params, cohort_names, load_params, read_params_file
from tardiff.data.cohort import SPLITS, PreparedCohort, observation_density, preprocess_cohort
from tardiff.data.sources import read_cohort
from tardiff.errors import TardiffInputError

logger = logging.getLogger(__name__)

LICENCES = {
    "physionet2012": "Open Data Commons Attribution License v1.0 (ODC-By)",
    "physionet2019": "Creative Commons Attribution 4.0 International (CC BY 4.0)",
    "yaib": (
        "Open Database License v1.0 (ODbL), from the MIMIC-III and eICU-CRD demo databases; share-alike: a "
        "derived database that is published must stay under ODbL with attribution"
    ),
}
# Reader and grid counts that remove whole stays, in the order the readers apply them.
STAY_EXCLUSIONS = (
    "stays_without_labels",
    "stays_without_data",
    "records_without_time_series",
    "records_without_rows",
    "stays_shorter_than_min_stay_hours",
    "stays_ending_in_window",
    "stays_excluded_positive_in_window",
    "stays_without_observations",
    "stays_without_selected_channels",
)
# Reader counts that remove single rows or values.
ROW_DROPS = (
    "dyn_rows_before_admission",
    "label_rows_before_admission",
    "empty_parameter_rows",
    "missing_values",
)


def describe_cohort(name: str, params: Params, variables: int = 0) -> str:
    """Prepare the cohort ``name`` with ``params`` and return its Markdown section."""
    data = params.data
    cohort = preprocess_cohort(data, params.seed)
    lines = [f"#### {name}", ""]
    lines += _summary_lines(cohort, params)
    lines += ["", *_exclusion_lines(cohort)]
    lines += ["", *_channel_table(cohort)]
    if variables:
        lines += ["", *_variable_table(params, variables)]
    return "\n".join(lines) + "\n"


def _summary_lines(cohort: PreparedCohort, params: Params) -> list[str]:
    data = params.data
    metadata = cohort.metadata
    labels = np.concatenate([cohort.split(split).y for split in SPLITS])
    positive = int(labels.sum())
    split_text = ", ".join(
        f"{split} {len(cohort.split(split))} ({int(cohort.split(split).y.sum())} positive)" for split in SPLITS
    )
    fractions = "/".join(f"{100 * metadata['split_fractions'][split]:g}" for split in SPLITS)
    source = f"`data.dataset: {data.dataset}`, `data.dir: {data.dir}`, task `{data.task or 'default'}`"
    return [
        f"- Source: {source}, first {data.hours} hours.",
        f"- Licence: {LICENCES.get(data.dataset, 'see the data source')}.",
        f"- Stays: {labels.size:,}, of which {positive:,} positive ({100 * positive / labels.size:.1f}%).",
        f"- Splits ({fractions}, stratified by label, seed {params.seed}): {split_text}.",
    ]


def _exclusion_lines(cohort: PreparedCohort) -> list[str]:
    counts: dict[str, Any] = dict(cohort.metadata["reader_counts"])
    counts["stays_without_selected_channels"] = cohort.metadata["exclusions"]["stays_without_selected_channels"]
    read = counts.get("stays_read", counts.get("records_read"))
    lines = [f"Stays read: {read:,}.", ""] if read is not None else []
    lines += ["| excluded or dropped | count |", "|---|---:|"]
    for key in STAY_EXCLUSIONS + ROW_DROPS:
        if key in counts:
            lines.append(f"| {key.replace('_', ' ')} | {counts[key]:,} |")
    out_of_range = cohort.metadata["dropped_values"]["out_of_range"]
    lines.append(f"| values outside the valid range | {sum(out_of_range.values()):,} |")
    outside = cohort.metadata["dropped_values"]["observations_outside_window"]
    lines.append(f"| observations outside the window | {outside:,} |")
    return lines


def _channel_table(cohort: PreparedCohort) -> list[str]:
    mask = np.concatenate([cohort.split(split).mask for split in SPLITS])
    stays_observed = mask.any(axis=1).mean(axis=0)
    cells_observed = mask.mean(axis=(0, 1))
    out_of_range = cohort.metadata["dropped_values"]["out_of_range"]
    lines = [
        "| channel | sources | unit | valid range | stays observed | hour cells observed | out of range |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for index, channel in enumerate(cohort.metadata["channels"]):
        low, high = channel["valid_range"]
        lines.append(
            f"| {channel['name']} | {', '.join(channel['sources'])} | {channel['unit']} | [{low:g}, {high:g}] | "
            f"{100 * stays_observed[index]:.1f}% | {100 * cells_observed[index]:.1f}% | "
            f"{out_of_range[channel['name']]:,} |"
        )
    return lines


def _variable_table(params: Params, top: int) -> list[str]:
    """Rank every raw variable by the share of hour cells observed in the window, without range checks."""
    raw = read_cohort(params.data)
    names = raw.observations["parameter"].unique().sort().to_list()
    density = observation_density(raw.observations, {name: (name,) for name in names}, params.data.hours)
    density = density.sort(["cells_observed", "name"], descending=[True, False])
    scope = f"{min(top, len(names))} of {len(names)}; stays kept by the reader, no range check"
    lines = [
        f"Raw variables with the most observed hour cells ({scope}):",
        "",
        "| variable | stays observed | hour cells observed |",
        "|---|---:|---:|",
    ]
    for row in density.head(top).iter_rows(named=True):
        lines.append(f"| {row['name']} | {100 * row['stays_observed']:.1f}% | {100 * row['cells_observed']:.1f}% |")
    return lines


def build_parser() -> argparse.ArgumentParser:
    """Build the command-line parser of ``python -m tardiff.data.describe``."""
    parser = argparse.ArgumentParser(
        prog="python -m tardiff.data.describe",
        description="Prepare each cohort of params.yaml and print its stays, labels, splits, exclusions and channels.",
    )
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    parser.add_argument(
        "--cohort", action="append", help="cohort name under 'cohorts' (repeatable; default: every cohort)"
    )
    parser.add_argument(
        "--variables", type=int, default=0, help="also list this many raw variables by observed hour cells"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Print the Markdown sections; return 0, or 1 when a cohort cannot be prepared."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        names = args.cohort or cohort_names(read_params_file(args.params), args.params)
        for name in names:
            params = load_params(args.params, cohort=name)
            print(describe_cohort(name, params, args.variables))
    except TardiffInputError as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
