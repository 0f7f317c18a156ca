"""Does the Hessian help? Predicted against measured influence on the guidance loss.

Run from the project root after the pipeline's classifier stage::

    python -m benchmarks.influence_accuracy [--candidates 200] [--copies 50] [--steps 20]
    python -m benchmarks.influence_accuracy --retrain converge [--prox 0.1]

For each candidate training sample ``z`` (drawn with ``params.seed``), the
measured effect is the change in guidance-set loss after warm-started
retraining: starting from the trained classifier, ``--steps`` full-batch
gradient-descent steps on the Hessian subsample with ``z`` added ``--copies``
extra times, minus the same steps without ``z``. Full-batch steps are
deterministic, so the difference carries no optimiser noise. With
``--retrain converge`` each refit instead runs full-batch L-BFGS to convergence
on the weighted loss plus a proximal term ``prox / 2 * |theta - theta_0|^2``, and
every estimator uses ``prox`` as its damping, so the measured change is the one
the damped inverse-Hessian estimators set out to predict. Each estimator's
prediction is its score ``s . g(z)`` (or the cosine form), which predicts the
loss decrease; the benchmark prints the Spearman correlation between the score
and the measured decrease, per estimator.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from benchmarks.common import load_trained_run
from tardiff.ihvp import IHVP_METHODS, compute_ihvp, hessian_subsample
from tardiff.influence import influence_scores


def guidance_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return F.binary_cross_entropy_with_logits(model(x), y.float()).item()


def retrain(model: torch.nn.Module, state: dict, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor,
            steps: int, lr: float) -> None:
    """Reset ``model`` to ``state`` and take ``steps`` full-batch gradient steps on the weighted loss."""
    model.load_state_dict(state)
    model.eval()  # no dropout: the retraining must be deterministic
    optimiser = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        losses = F.binary_cross_entropy_with_logits(model(x), y.float(), reduction="none")
        loss = (weights * losses).sum() / weights.sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def retrain_to_convergence(model: torch.nn.Module, state: dict, x: torch.Tensor, y: torch.Tensor,
                           weights: torch.Tensor, prox: float, max_iter: int) -> float:
    """Reset ``model`` to ``state`` and minimise the weighted loss plus ``prox / 2 * |theta - theta_0|^2``.

    Full-batch L-BFGS with a strong-Wolfe line search; returns the final gradient norm.
    The minimiser's response to up-weighting a sample is, to first order,
    ``-(H + prox I)^-1 g(z)``: what the damped inverse-Hessian estimators predict.
    """
    model.load_state_dict(state)
    model.eval()
    anchor = [p.detach().clone() for p in model.parameters()]
    optimiser = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        losses = F.binary_cross_entropy_with_logits(model(x), y.float(), reduction="none")
        loss = (weights * losses).sum() / weights.sum()
        loss = loss + 0.5 * prox * sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))
        loss.backward()
        return loss

    optimiser.step(closure)
    closure()
    return float(torch.sqrt(sum((p.grad**2).sum() for p in model.parameters())))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Spearman correlation of predicted and measured influence.")
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--copies", type=float, default=50.0, help="extra weight given to the candidate")
    parser.add_argument("--steps", type=int, default=20, help="full-batch retraining steps")
    parser.add_argument("--lr", type=float, default=0.1, help="retraining step size")
    parser.add_argument("--retrain", choices=("steps", "converge"), default="steps",
                        help="steps: --steps gradient steps; converge: L-BFGS to convergence with a proximal term")
    parser.add_argument("--prox", type=float, default=0.1,
                        help="converge mode: proximal weight, also used as every estimator's damping")
    parser.add_argument("--max-iter", type=int, default=200, help="converge mode: L-BFGS iterations")
    parser.add_argument("--outputs", default="outputs/physionet2012")
    args = parser.parse_args(argv)

    run = load_trained_run(args.outputs, with_diffuser=False)
    params, device, cohort, model = run.params, run.device, run.cohort, run.classifier
    state = {key: value.clone() for key, value in model.state_dict().items()}

    rng = np.random.default_rng(params.seed)
    subset = hessian_subsample(len(cohort.train), params.ihvp.hessian_samples, rng)
    size = subset.size
    train_x = torch.as_tensor(cohort.train.x[subset], device=device)
    train_y = torch.as_tensor(cohort.train.y[subset], device=device)
    guide_x = torch.as_tensor(cohort.val.x, device=device)
    guide_y = torch.as_tensor(cohort.val.y, device=device)
    candidates = rng.choice(size, size=min(args.candidates, size), replace=False)
    if args.retrain == "steps":
        mode = f"steps={args.steps} lr={args.lr}"
    else:
        mode = f"L-BFGS to convergence, prox={args.prox} max_iter={args.max_iter}"
    print(f"seed={params.seed} hessian_samples={size} candidates={len(candidates)} copies={args.copies} "
          f"retraining: {mode} device={device}")

    def refit(weights: torch.Tensor) -> float:
        if args.retrain == "steps":
            retrain(model, state, train_x, train_y, weights, args.steps, args.lr)
            return 0.0
        return retrain_to_convergence(model, state, train_x, train_y, weights, args.prox, args.max_iter)

    # 1. Measured decrease of the guidance loss per candidate.
    started = time.perf_counter()
    base_weights = torch.ones(size, device=device)
    grad_norms = [refit(base_weights)]
    baseline = guidance_loss(model, guide_x, guide_y)
    measured = []
    for index in candidates:
        weights = base_weights.clone()
        weights[index] += args.copies
        grad_norms.append(refit(weights))
        measured.append(baseline - guidance_loss(model, guide_x, guide_y))
    model.load_state_dict(state)
    measured = np.array(measured)
    print(f"retraining: {time.perf_counter() - started:.1f} s, measured decrease mean {measured.mean():.2e} "
          f"std {measured.std():.2e}, final gradient norm max {max(grad_norms):.1e}")

    # 2. Each estimator's predicted decrease: its score.
    cand_x, cand_y = train_x[candidates], train_y[candidates]
    print("method        spearman  precompute_s  damping")
    for method in IHVP_METHODS:
        config = dataclasses.replace(params.ihvp, method=method)
        if args.retrain == "converge":
            config = dataclasses.replace(config, damping=args.prox)
        result = compute_ihvp(model, guide_x, guide_y, train_x, train_y, config, params.seed)
        scores = influence_scores(model, cand_x, cand_y, result.vector, result.score).detach().cpu().numpy()
        rho = spearmanr(scores, measured).statistic
        print(f"{method:12s} {rho:9.3f} {result.seconds:13.2f}  {result.damping:g}")


if __name__ == "__main__":
    main()
