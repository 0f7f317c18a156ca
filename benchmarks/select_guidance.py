"""Choose the guidance score and scale on the validation split, never the test split.

Run from a project root whose outputs exist (after `dvc repro`)::

    python -m benchmarks.select_guidance --settings dot:0 dot:0.3 dot:1 logit:0.3 logit:1 logit:3

For each ``score:scale`` it generates as many samples per class as the real
training split has (same seed and noise for every setting), trains a fresh
evaluator of the ``evaluate`` section on the synthetic data (TSTR) and on the
real training split plus the same number of synthetic samples (TSRTR, alpha 1),
and prints AUROC and AUPRC on the real validation split.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from benchmarks.common import load_trained_run, load_unit_vector
from tardiff.evaluation import LabelledSeries, train_and_test
from tardiff.sampling import InfluenceGuidance, counts_per_label, generate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Validation AUROC/AUPRC per guidance score and scale.")
    parser.add_argument("--settings", nargs="+", default=["dot:0", "dot:1", "logit:1"],
                        help="score:scale pairs; score is dot, cos or logit")
    parser.add_argument("--seed", type=int, default=0, help="evaluator seed")
    parser.add_argument("--outputs", default="outputs/physionet2012")
    args = parser.parse_args(argv)

    run = load_trained_run(args.outputs)
    params, device, cohort = run.params, run.device, run.cohort
    model, diffusion, classifier = run.unet, run.diffusion, run.classifier
    vector, payload = load_unit_vector(args.outputs, device, required=("method",))
    per_class = counts_per_label(cohort.train.y)
    shape = (cohort.train.x.shape[2], cohort.train.x.shape[1])
    real = LabelledSeries(cohort.train.x, cohort.train.y)
    validation = LabelledSeries(cohort.val.x, cohort.val.y)

    print(f"method={payload['method']} evaluator_seed={args.seed} samples={sum(per_class.values())}")
    print("score  scale  tstr_auroc  tstr_auprc  tsrtr_auroc  tsrtr_auprc  seconds")
    for setting in args.settings:
        score, scale = setting.split(":")
        started = time.perf_counter()
        guidance = InfluenceGuidance(classifier, vector, score, float(scale), params.generate.gradient_at,
                                     params.generate.guidance_gradient)
        x, y, _ = generate(model, diffusion, per_class, shape, params.generate.sampling_steps, params.generate.eta,
                           params.generate.batch_size, params.seed, device, guidance=guidance)
        synthetic = LabelledSeries(x, y)
        mixed = LabelledSeries(np.concatenate([real.x, x]), np.concatenate([real.y, y]))
        tstr = train_and_test(synthetic, validation, params.evaluate, args.seed, device, "tstr")
        tsrtr = train_and_test(mixed, validation, params.evaluate, args.seed, device, "tsrtr")
        print(f"{score:6s} {float(scale):5g}  {tstr['auroc']:10.4f}  {tstr['auprc']:10.4f}  "
              f"{tsrtr['auroc']:11.4f}  {tsrtr['auprc']:11.4f}  {time.perf_counter() - started:7.1f}", flush=True)


if __name__ == "__main__":
    main()
