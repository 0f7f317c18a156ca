"""Downstream effect of each inverse-Hessian estimator when it drives guidance.

Run from a project root whose outputs exist (after `dvc repro`)::

    python -m benchmarks.estimator_downstream [--methods cg grad_cos ...] [--seeds 0]

For each estimator it computes the guidance vector with the ``ihvp`` settings
of ``params.yaml``, generates as many samples per class as the real training
split has (the same noise for every estimator, and for the unguided baseline
that comes first), trains fresh evaluators of the ``evaluate`` section on the
synthetic data (TSTR) and on the real training split plus as many synthetic
samples (TSRTR, alpha 1), and prints AUROC and AUPRC on the real test split,
averaged over ``--seeds``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from benchmarks.common import load_trained_run
from tardiff.evaluation import LabelledSeries, train_and_test
from tardiff.ihvp import IHVP_METHODS, compute_ihvp, hessian_subsample
from tardiff.sampling import InfluenceGuidance, counts_per_label, generate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="TSTR and TSRTR on the test split per guidance estimator.")
    parser.add_argument("--methods", nargs="+", default=list(IHVP_METHODS), choices=IHVP_METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="evaluator seeds")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unguided baseline row")
    parser.add_argument("--outputs", default="outputs/physionet2012")
    args = parser.parse_args(argv)

    run = load_trained_run(args.outputs)
    params, device, cohort = run.params, run.device, run.cohort
    model, diffusion, classifier = run.unet, run.diffusion, run.classifier
    per_class = counts_per_label(cohort.train.y)
    shape = (cohort.train.x.shape[2], cohort.train.x.shape[1])
    real = LabelledSeries(cohort.train.x, cohort.train.y)
    test = LabelledSeries(cohort.test.x, cohort.test.y)

    index = hessian_subsample(len(cohort.train), params.ihvp.hessian_samples, np.random.default_rng(params.seed))
    train_x = torch.as_tensor(cohort.train.x[index], device=device)
    train_y = torch.as_tensor(cohort.train.y[index], device=device)
    guide_x = torch.as_tensor(cohort.val.x, device=device)
    guide_y = torch.as_tensor(cohort.val.y, device=device)

    print(f"seeds={args.seeds} guidance_scale={params.generate.guidance_scale} score=estimator's own "
          f"samples={sum(per_class.values())} device={device}")
    print("method        tstr_auroc  tstr_auprc  tsrtr_auroc  tsrtr_auprc  seconds")
    for method in ([] if args.no_baseline else ["unguided"]) + list(args.methods):
        started = time.perf_counter()
        guidance = None
        if method != "unguided":
            config = dataclasses.replace(params.ihvp, method=method)
            result = compute_ihvp(classifier, guide_x, guide_y, train_x, train_y, config, params.seed)
            vector = result.vector / result.vector.norm()
            guidance = InfluenceGuidance(classifier, vector, result.score, params.generate.guidance_scale,
                                         params.generate.gradient_at, params.generate.guidance_gradient)
        x, y, _ = generate(model, diffusion, per_class, shape, params.generate.sampling_steps, params.generate.eta,
                           params.generate.batch_size, params.seed, device, guidance=guidance)
        synthetic = LabelledSeries(x, y)
        mixed = LabelledSeries(np.concatenate([real.x, x]), np.concatenate([real.y, y]))
        tstr = [train_and_test(synthetic, test, params.evaluate, seed, device, "tstr") for seed in args.seeds]
        tsrtr = [train_and_test(mixed, test, params.evaluate, seed, device, "tsrtr") for seed in args.seeds]

        def mean(rows: list[dict], key: str) -> float:
            return float(np.mean([row[key] for row in rows]))

        print(f"{method:12s} {mean(tstr, 'auroc'):11.4f} {mean(tstr, 'auprc'):11.4f} "
              f"{mean(tsrtr, 'auroc'):12.4f} {mean(tsrtr, 'auprc'):12.4f} {time.perf_counter() - started:8.1f}",
              flush=True)


if __name__ == "__main__":
    main()
