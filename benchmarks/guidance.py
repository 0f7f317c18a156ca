"""Speed of influence guidance, measured side by side in one run.

Run from the project root after the preprocess stage (``dvc repro preprocess``)::

    python -m benchmarks.guidance [--batch 512] [--repeats 3]

It uses the trained diffuser and classifier of ``outputs/`` when present and
freshly initialised models of the active profile's sizes otherwise; timings do
not depend on the weights. It prints:

1. guided over unguided DDIM sampling time, same batch, steps and noise;
2. time per sample of each guidance-gradient mode over that of the released
   code's batch-mean cosine gradient (``reference_batch_cosine_gradient``);
3. the precompute time of every inverse-Hessian estimator.

The last line is the guided over unguided sampling-time ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tardiff.config import load_params
from tardiff.data.cohort import load_prepared
from tardiff.ihvp import IHVP_METHODS, compute_ihvp, hessian_subsample
from tardiff.influence import guidance_gradient, reference_batch_cosine_gradient
from tardiff.sampling import InfluenceGuidance, sample_batch
from tardiff.training import build_classifier, build_diffusion, build_unet, resolve_device
from tasks.load import load_classifier, load_diffuser


def best_of(repeats: int, run: Callable[[], object]) -> float:
    """Return the fastest of ``repeats`` wall times of ``run`` after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Time guided sampling, guidance gradients and estimators.")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: generate.batch_size)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement; the best counts")
    parser.add_argument("--outputs", default="outputs/physionet2012", help="folder with the stage outputs")
    args = parser.parse_args(argv)

    params = load_params()
    device = resolve_device(params.device)
    torch.manual_seed(params.seed)
    outputs = Path(args.outputs)
    cohort = load_prepared(outputs / "preprocess")
    batch = args.batch or params.generate.batch_size
    channels, hours = cohort.train.x.shape[2], cohort.train.x.shape[1]

    if (outputs / "train_diffuser/model.pt").is_file():
        unet, diffusion = load_diffuser(outputs / "train_diffuser/model.pt", True, device)
    else:
        unet, diffusion = build_unet(params.diffusion, channels).to(device).eval(), build_diffusion(params.diffusion)
    if (outputs / "train_classifier/model.pt").is_file():
        classifier = load_classifier(outputs / "train_classifier/model.pt", device)
    else:
        classifier = build_classifier(params.classifier, channels).to(device).eval()
    n_params = sum(p.numel() for p in classifier.parameters())
    vector = torch.randn(n_params, device=device)
    vector = vector / vector.norm()
    print(f"device={device} batch={batch} steps={params.generate.sampling_steps} classifier_parameters={n_params} "
          f"torch_threads={torch.get_num_threads()}")

    # 1. Guided against unguided sampling, same batch, steps and noise.
    labels = torch.ones(batch, dtype=torch.long, device=device)
    guidance = InfluenceGuidance(classifier, vector, "dot", params.generate.guidance_scale,
                                 params.generate.gradient_at, params.generate.guidance_gradient)

    def sample(active: InfluenceGuidance | None) -> Callable[[], object]:
        def run() -> object:
            generator = torch.Generator(device=device).manual_seed(0)
            return sample_batch(unet, diffusion, labels, (channels, hours), params.generate.sampling_steps,
                                params.generate.eta, generator, active)
        return run

    unguided = best_of(args.repeats, sample(None))
    guided = best_of(args.repeats, sample(guidance))
    print(f"sampling  unguided {unguided:.3f} s  guided ({params.generate.guidance_gradient}) {guided:.3f} s")

    # 2. Guidance gradient per sample, each mode against the released code's batch-mean cosine.
    x = torch.as_tensor(cohort.train.x[:batch], device=device)
    y = torch.as_tensor(cohort.train.y[:batch], device=device)
    reference = best_of(args.repeats, lambda: reference_batch_cosine_gradient(classifier, x, y, vector))
    print(f"gradient  reference (batch-mean cosine, double backward) {1e3 * reference / batch:.4f} ms/sample")
    for score, mode in (("dot", "finite_difference"), ("dot", "double_backward"), ("cos", "double_backward")):
        seconds = best_of(args.repeats, lambda: guidance_gradient(classifier, x, y, vector, score, mode))
        print(f"gradient  {score}/{mode} {1e3 * seconds / batch:.4f} ms/sample  "
              f"ratio to reference {seconds / reference:.3f}")

    # 3. Precompute time of each estimator on the real splits.
    index = hessian_subsample(len(cohort.train), params.ihvp.hessian_samples, np.random.default_rng(params.seed))
    train_x = torch.as_tensor(cohort.train.x[index], device=device)
    train_y = torch.as_tensor(cohort.train.y[index], device=device)
    guide_x = torch.as_tensor(cohort.val.x, device=device)
    guide_y = torch.as_tensor(cohort.val.y, device=device)
    for method in IHVP_METHODS:
        config = dataclasses.replace(params.ihvp, method=method)
        result = compute_ihvp(classifier, guide_x, guide_y, train_x, train_y, config, params.seed)
        print(f"precompute  {method:12s} {result.seconds:8.2f} s  products={result.iterations:4d}  "
              f"damping={result.damping:g}  residual={result.relative_residual:.2e}")

    print(f"guided/unguided sampling time ratio: {guided / unguided:.3f}")


if __name__ == "__main__":
    main()
