"""Guided DDIM sampling: influence guidance (TarDiff) and classifier guidance.

At every reverse step from ``x_t``: predict the noise, form the predicted clean
sample, take the ordinary DDIM step to ``x_{t_prev}``, then add
``guidance_scale * grad score``. The gradient is taken either at the predicted
clean sample (as the released TarDiff code does, no backpropagation through
the denoiser) or at ``x_t`` through the denoiser (the TarDiff paper's equation).

The score is the influence score for :class:`InfluenceGuidance` and the
classifier's ``log p(y | x)`` for :class:`ClassifierGuidance`, so the two differ
only in what they ascend.

The released code scales the gradient by ``1e-10`` through its update rule, so
its samples are in effect unguided; here the scale is the explicit
``guidance_scale``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tardiff.classifier import GRUClassifier
from tardiff.diffusion import GaussianDiffusion
from tardiff.influence import guidance_gradient
from tardiff.unet import UNet1D


@dataclass
class InfluenceGuidance:
    """Classifier, vector and settings that the sampler uses to add the influence gradient."""

    classifier: GRUClassifier
    vector: torch.Tensor  # the flat guidance vector s
    score: str  # "dot" or "cos"
    guidance_scale: float
    gradient_at: str = "pred_x0"  # "pred_x0" or "x_t"
    mode: str = "finite_difference"  # "double_backward" or "finite_difference"

    def input_gradient(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Return ``grad_x score(x_i, y_i)`` per sample for ``x (batch, time, channels)``."""
        return guidance_gradient(self.classifier, x, y, self.vector, self.score, self.mode)


@dataclass
class ClassifierGuidance:
    """Classifier guidance (Dhariwal and Nichol, 2021): ascend ``log p(y | x)`` of the guidance classifier.

    Dhariwal and Nichol shift the mean of each reverse step by ``s * Sigma * grad``.
    Here the gradient is added after the DDIM step with the same additive rule as
    :class:`InfluenceGuidance`, so a comparison of the two changes only the score.
    """

    classifier: GRUClassifier
    guidance_scale: float
    gradient_at: str = "pred_x0"  # "pred_x0" or "x_t"

    def input_gradient(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Return ``grad_x log p(y_i | x_i)`` per sample for ``x (batch, time, channels)``."""
        return log_likelihood_gradient(self.classifier, x, y)


Guidance = InfluenceGuidance | ClassifierGuidance


def log_likelihood_gradient(model: GRUClassifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Return ``grad_x log p(y_i | x_i)`` for every sample, shape ``(batch, time, channels)``.

    With logit ``f``, ``log p(y | x) = log sigmoid((2y - 1) f(x))``. The summed
    log-probability is separable over samples and the classifier runs without
    dropout, so each row is that sample's own gradient. Only a first derivative
    is needed, so the fused ``nn.GRU`` serves. cuDNN is disabled because its GRU
    has no backward in eval mode, and PyTorch's native CUDA kernel runs instead.
    """
    model.eval()
    x_var = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
        logits = model(x_var)
        signs = 2.0 * y.to(logits.dtype) - 1.0
        log_probability = F.logsigmoid(signs * logits).sum()
        (grad_x,) = torch.autograd.grad(log_probability, x_var)
    return grad_x


@dataclass
class SamplingStats:
    guidance_norm: list[float]  # mean per-sample L2 norm of the added guidance term, per step


def _guidance_term(
    guidance: Guidance,
    model: UNet1D,
    diffusion: GaussianDiffusion,
    x_t: torch.Tensor,
    t_batch: torch.Tensor,
    y: torch.Tensor,
    pred_x0: torch.Tensor,
) -> torch.Tensor:
    """Return ``grad score`` in the sampler's layout ``(batch, channels, time)``."""
    if guidance.gradient_at == "pred_x0":
        x_classifier = pred_x0.detach().transpose(1, 2)  # (batch, time, channels)
        return guidance.input_gradient(x_classifier, y).transpose(1, 2)

    # Through the denoiser: d score(x0_hat(x_t)) / d x_t = J^T grad score at x0_hat.
    # The U-Net has no batch coupling, so the vector-Jacobian product stays per sample.
    with torch.enable_grad():
        x_var = x_t.detach().requires_grad_(True)
        eps = model(x_var, t_batch, y)
        x0_var = diffusion.predict_x0(x_var, t_batch, eps)
        grad_x0 = guidance.input_gradient(x0_var.detach().transpose(1, 2), y).transpose(1, 2)
        (grad_xt,) = torch.autograd.grad(x0_var, x_var, grad_outputs=grad_x0)
    return grad_xt


def sample_batch(
    model: UNet1D,
    diffusion: GaussianDiffusion,
    y: torch.Tensor,
    shape: tuple[int, int],
    num_steps: int,
    eta: float,
    generator: torch.Generator,
    guidance: Guidance | None = None,
) -> tuple[torch.Tensor, SamplingStats]:
    """Draw one batch of series for labels ``y (batch,)``; returns ``(batch, time, channels)``.

    ``shape`` is ``(channels, time)``. All noise comes from ``generator``, so the
    same generator state gives the same batch with or without guidance applied.
    """
    device = y.device
    batch = y.shape[0]
    x_t = torch.randn((batch, *shape), device=device, generator=generator)
    timesteps = diffusion.ddim_timesteps(num_steps)
    norms: list[float] = []
    for index, t in enumerate(timesteps):
        t_prev = timesteps[index + 1] if index + 1 < len(timesteps) else -1
        t_batch = torch.full((batch,), t, device=device, dtype=torch.long)
        with torch.no_grad():
            eps = model(x_t, t_batch, y)
        noise = torch.randn(x_t.shape, device=device, generator=generator)
        step = diffusion.ddim_step(eps, t, t_prev, x_t, eta, noise=noise)
        x_prev = step.prev_sample
        if guidance is not None and guidance.guidance_scale != 0.0:
            term = guidance.guidance_scale * _guidance_term(guidance, model, diffusion, x_t, t_batch, y, step.pred_x0)
            norms.append(term.flatten(1).norm(dim=1).mean().item())
            x_prev = x_prev + term
        x_t = x_prev.detach()
    return x_t.transpose(1, 2), SamplingStats(guidance_norm=norms)


def counts_per_label(y: np.ndarray) -> dict[int, int]:
    """Return how many samples each label has, the per-class counts that :func:`generate` takes."""
    labels, counts = np.unique(y, return_counts=True)
    return {int(label): int(count) for label, count in zip(labels, counts)}


def generate(
    model: UNet1D,
    diffusion: GaussianDiffusion,
    counts: dict[int, int],
    shape: tuple[int, int],
    num_steps: int,
    eta: float,
    batch_size: int,
    seed: int,
    device: torch.device,
    guidance: Guidance | None = None,
    desc: str = "generate",
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Generate ``counts[label]`` series per label, one label per batch.

    Returns ``x (n, time, channels)``, ``y (n,)`` and the mean guidance norm per batch.
    """
    model.eval()
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    xs, ys, norms = [], [], []
    batches = [(label, min(batch_size, count - start)) for label, count in sorted(counts.items())
               for start in range(0, count, batch_size)]
    for label, size in tqdm(batches, desc=desc, mininterval=5, leave=False):
        y = torch.full((size,), label, device=device, dtype=torch.long)
        x, stats = sample_batch(model, diffusion, y, shape, num_steps, eta, generator, guidance)
        xs.append(x.cpu().numpy())
        ys.append(np.full(size, label, dtype=np.int64))
        if stats.guidance_norm:
            norms.append(float(np.mean(stats.guidance_norm)))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys), norms
