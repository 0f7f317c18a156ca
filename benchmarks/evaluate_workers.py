"""Wall time of the evaluate stage's fits in one process against several worker processes.

Run from a project root whose preprocess and generate outputs exist::

    python -m benchmarks.evaluate_workers [--outputs outputs/physionet2012] [--series 2000] [--workers 2]

The same fits (TRTR, and TSTR plus TSRTR at alpha 1 of the guided source, for each
evaluator and seed) run three ways, one after the other in one run:

- one process with one torch thread;
- one process with ``--workers`` torch threads;
- ``--workers`` processes with one torch thread each (``evaluate.workers``).

It prints each wall time and its ratio to the first, and checks that the worker
processes return exactly the one-process predictions.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from tardiff.config import EVALUATOR_NAMES, load_params
from tardiff.data.cohort import load_prepared
from tardiff.evaluation import EvaluationResult, LabelledSeries, evaluate_sources
from tardiff.io import load_npz


def _timed(run) -> tuple[float, EvaluationResult]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Time the evaluate stage's fits in one process and in several.")
    parser.add_argument("--outputs", default="outputs/physionet2012", help="folder with the stage outputs")
    parser.add_argument("--series", type=int, default=2000, help="real and synthetic training series used")
    parser.add_argument("--evaluators", nargs="+", default=["gru", "timesnet", "gbt"], choices=EVALUATOR_NAMES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--workers", type=int, default=2, help="processes, and threads of the one-process run")
    args = parser.parse_args(argv)

    outputs = Path(args.outputs)
    params = load_params(cohort=outputs.name)
    cohort = load_prepared(outputs / "preprocess")
    guided = load_npz(outputs / "generate/guided.npz", required=("x", "y"), what="synthetic data")
    # The generate stage writes its samples class by class, so draw a random subset of each set.
    rng = np.random.default_rng(0)
    rows = rng.permutation(len(cohort.train.y))[: args.series]
    real = LabelledSeries(cohort.train.x[rows], cohort.train.y[rows])
    rows = rng.permutation(len(guided["y"]))[: args.series]
    synthetic = {"guided": LabelledSeries(guided["x"][rows], guided["y"][rows])}
    val, test = LabelledSeries(cohort.val.x, cohort.val.y), LabelledSeries(cohort.test.x, cohort.test.y)
    config = dataclasses.replace(params.evaluate, evaluators=tuple(args.evaluators), seeds=tuple(args.seeds),
                                 alphas=(1.0,), workers=1)
    cpu = torch.device("cpu")
    fits = len(args.evaluators) * len(args.seeds) * 3
    print(f"{fits} fits on {args.series} series per source; {torch.get_num_threads()} torch threads available")

    def one_process(threads: int) -> EvaluationResult:
        torch.set_num_threads(threads)
        with threadpool_limits(limits=threads):
            return evaluate_sources(real, val, test, synthetic, config, cpu)

    def in_workers() -> EvaluationResult:
        torch.set_num_threads(args.workers)
        return evaluate_sources(real, val, test, synthetic, dataclasses.replace(config, workers=args.workers), cpu)

    reference, serial = _timed(lambda: one_process(1))
    print(f"one process, 1 thread:              {reference:7.1f} s  ratio 1.000", flush=True)
    seconds, _ = _timed(lambda: one_process(args.workers))
    print(f"one process, {args.workers} threads:             {seconds:7.1f} s  ratio {seconds / reference:.3f}",
          flush=True)
    seconds, parallel = _timed(in_workers)
    print(f"{args.workers} worker processes, 1 thread each: {seconds:7.1f} s  ratio {seconds / reference:.3f}")
    same = all(np.array_equal(a.p_test, b.p_test) for a, b in zip(serial.fits, parallel.fits))
    print(f"worker predictions equal to one-process predictions: {same}")


if __name__ == "__main__":
    main()
