"""Sweep the guidance scale on a finished pipeline run: score gain against realism.

Run from a project root whose outputs exist (after `dvc repro`)::

    python -m benchmarks.guidance_scale --scales 0 1 3 10 30 100 --per-class 256

For each scale it draws the same number of samples per class from the same
noise and prints: sampling time, the mean influence score of the samples per
class (what guidance ascends), the mean per-channel Wasserstein-1 distance
between synthetic and real training values (normalised units, pooled over
hours), and the guidance classifier's mean predicted mortality per class.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.stats import wasserstein_distance

from benchmarks.common import load_trained_run, load_unit_vector
from tardiff.influence import influence_scores
from tardiff.sampling import InfluenceGuidance, generate

SCORED_PER_CLASS = 128  # per-sample scores use torch.func and are slow; a subsample suffices for the mean


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[0, 1, 3, 10, 30, 100])
    parser.add_argument("--per-class", type=int, default=256, help="samples drawn per class and scale")
    parser.add_argument("--outputs", default="outputs/physionet2012", help="folder with the stage outputs")
    args = parser.parse_args(argv)

    run = load_trained_run(args.outputs)
    params, device, cohort = run.params, run.device, run.cohort
    model, diffusion, classifier = run.unet, run.diffusion, run.classifier
    vector, payload = load_unit_vector(args.outputs, device, required=("score",))
    shape = (cohort.train.x.shape[2], cohort.train.x.shape[1])
    real = cohort.train.x

    print(f"method={payload.get('method')} score={payload['score']} per_class={args.per_class} device={device}")
    print("scale   seconds  score_y0  score_y1  wasserstein1  p_death_y0  p_death_y1")
    for scale in args.scales:
        guidance = InfluenceGuidance(classifier, vector, payload["score"], scale,
                                     params.generate.gradient_at, params.generate.guidance_gradient)
        started = time.perf_counter()
        x, y, _ = generate(model, diffusion, {0: args.per_class, 1: args.per_class}, shape,
                           params.generate.sampling_steps, params.generate.eta, params.generate.batch_size,
                           params.seed, device, guidance=guidance)
        seconds = time.perf_counter() - started

        scores = []
        for label in (0, 1):
            index = np.flatnonzero(y == label)[:SCORED_PER_CLASS]
            batch = torch.as_tensor(x[index], device=device)
            labels = torch.as_tensor(y[index], device=device)
            scores.append(influence_scores(classifier, batch, labels, vector, payload["score"]).mean().item())
        distance = np.mean([wasserstein_distance(real[:, :, k].ravel(), x[:, :, k].ravel())
                            for k in range(real.shape[2])])
        with torch.no_grad():
            prob = torch.sigmoid(classifier(torch.as_tensor(x, device=device))).cpu().numpy()
        print(f"{scale:7g} {seconds:8.1f} {scores[0]:9.4f} {scores[1]:9.4f} {distance:13.3f} "
              f"{prob[y == 0].mean():11.3f} {prob[y == 1].mean():11.3f}")


if __name__ == "__main__":
    main()
