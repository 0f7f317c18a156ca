"""Wall time of one fit of each downstream evaluator on real training series.

Run from a project root whose preprocess outputs exist::

    python -m benchmarks.evaluator_fit_time [--series 2000] [--evaluators gru timesnet gbt logreg] [--threads 2]

Each evaluator is fitted once (seed 0) on the first ``--series`` stays of the
real training split with the ``evaluate`` settings of ``params.yaml``. The time
includes predicting the validation and test splits. The test AUROC is printed
as a check that the fit learned something.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from tardiff.config import EVALUATOR_NAMES, load_params
from tardiff.data.cohort import load_prepared
from tardiff.evaluators import fit_evaluator
from tardiff.training import resolve_device


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Time one fit of each downstream evaluator.")
    parser.add_argument("--series", type=int, default=2000, help="training series used (default: 2000)")
    parser.add_argument("--evaluators", nargs="+", default=list(EVALUATOR_NAMES), choices=EVALUATOR_NAMES)
    parser.add_argument("--threads", type=int, default=None, help="torch and OpenMP threads (default: unchanged)")
    parser.add_argument("--outputs", default="outputs/physionet2012", help="folder with the stage outputs")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)

    params = load_params(args.params, cohort=Path(args.outputs).name)
    device = resolve_device(params.device)
    cohort = load_prepared(Path(args.outputs) / "preprocess")
    x, y = cohort.train.x[: args.series], cohort.train.y[: args.series]
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"{x.shape[0]} series of {x.shape[1]} hours x {x.shape[2]} channels, torch threads {torch.get_num_threads()}")

    with threadpool_limits(limits=args.threads):
        for name in args.evaluators:
            started = time.perf_counter()
            model = fit_evaluator(name, x, y, params.evaluate, seed=0, device=device)
            model.predict_proba(cohort.val.x)
            p_test = model.predict_proba(cohort.test.x)
            seconds = time.perf_counter() - started
            print(f"{name:9s} {seconds:7.1f} s  test AUROC {roc_auc_score(cohort.test.y, p_test):.3f}", flush=True)


if __name__ == "__main__":
    main()
