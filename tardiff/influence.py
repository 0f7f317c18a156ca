"""Influence scores of candidate training samples and their input gradients.

Notation: ``l(x, y; phi)`` is the per-sample binary cross-entropy of the guidance
classifier, ``g(x, y)`` its gradient in the parameters ``phi`` and ``G`` the mean
of ``g`` over the guidance set (held-out real data). Up-weighting a training
sample ``z`` by ``epsilon`` moves the parameters by ``-epsilon H^{-1} g(z)``
(Koh and Liang, 2017), so the guidance loss falls by ``epsilon * s . g(z)`` with
``s = H^{-1} G``. The score ``s . g(z)`` is therefore "how much adding ``z``
helps", and guidance ascends it.

Estimators of ``s`` (``IHVP_METHODS``):

- ``grad_dot``: ``s = G`` (identity Hessian, the score of the TarDiff paper).
- ``grad_cos``: ``s = G / |G|`` and the score divides by ``|g(z)|`` as well, giving
  the cosine similarity of the released TarDiff code.
- ``cg``: ``s = (H + lambda I)^{-1} G`` by conjugate gradient with exact
  Hessian-vector products of the mean training loss.

``G`` is a mean, not the sum over the guidance set: the two differ by the
guidance-set size, which only rescales the guidance scale.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from tardiff.classifier import GRUClassifier

logger = logging.getLogger(__name__)

IHVP_METHODS = ("grad_dot", "grad_cos", "cg")
GUIDANCE_GRADIENT_MODES = ("double_backward", "finite_difference")


def _parameters(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def _flatten(tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflatten(vector: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    out, offset = [], 0
    for tensor in like:
        out.append(vector[offset : offset + tensor.numel()].view_as(tensor))
        offset += tensor.numel()
    return out


def summed_loss(model: GRUClassifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Return the summed binary cross-entropy of ``x (batch, time, channels)`` against ``y (batch,)``."""
    logits = model.forward_unrolled(x)
    return F.binary_cross_entropy_with_logits(logits, y.float(), reduction="sum")


def mean_loss_gradient(model: GRUClassifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Return the flat gradient of the mean loss over ``(x, y)`` in the model's parameters."""
    params = _parameters(model)
    total = torch.zeros(sum(p.numel() for p in params), device=x.device, dtype=x.dtype)
    for start in range(0, x.shape[0], batch_size):
        loss = summed_loss(model, x[start : start + batch_size], y[start : start + batch_size])
        total += _flatten(torch.autograd.grad(loss, params))
    return total / x.shape[0]


def hessian_vector_product(
    model: GRUClassifier, x: torch.Tensor, y: torch.Tensor, vector: torch.Tensor, batch_size: int = 1024
) -> torch.Tensor:
    """Return ``H v`` for the Hessian ``H`` of the mean loss over ``(x, y)``, by double backpropagation."""
    params = _parameters(model)
    pieces = _unflatten(vector, params)
    total = torch.zeros_like(vector)
    for start in range(0, x.shape[0], batch_size):
        loss = summed_loss(model, x[start : start + batch_size], y[start : start + batch_size])
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * v).sum() for g, v in zip(grads, pieces))
        total += _flatten(torch.autograd.grad(dot, params))
    return total / x.shape[0]


@dataclass
class ConjugateGradientResult:
    solution: torch.Tensor
    iterations: int
    relative_residual: float  # |A s - b| / |b| at the returned solution
    residual_trace: list[float] = field(default_factory=list)
    negative_curvature: bool = False  # True when p^T A p <= 0 stopped the iteration


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, max_iter: int, tol: float
) -> ConjugateGradientResult:
    """Solve ``A s = b`` for symmetric ``A`` given only ``matvec(v) = A v``.

    Stops when the relative residual falls below ``tol``, after ``max_iter``
    iterations, or when a search direction has non-positive curvature (then the
    damping is too small for this Hessian, and the caller is warned).
    """
    b_norm = b.norm().item()
    solution = torch.zeros_like(b)
    if b_norm == 0.0:
        return ConjugateGradientResult(solution, 0, 0.0, [0.0])
    residual = b.clone()
    direction = residual.clone()
    rs_old = residual.dot(residual)
    trace = [1.0]
    negative = False
    iterations = 0
    for iterations in range(1, max_iter + 1):
        a_direction = matvec(direction)
        curvature = direction.dot(a_direction)
        if curvature <= 0:
            negative = True
            iterations -= 1
            break
        step = rs_old / curvature
        solution = solution + step * direction
        residual = residual - step * a_direction
        rs_new = residual.dot(residual)
        trace.append(rs_new.sqrt().item() / b_norm)
        if trace[-1] < tol:
            break
        direction = residual + (rs_new / rs_old) * direction
        rs_old = rs_new
    true_residual = (matvec(solution) - b).norm().item() / b_norm
    return ConjugateGradientResult(solution, iterations, true_residual, trace, negative)


@dataclass
class IhvpResult:
    """The precomputed guidance vector ``s`` and how it was obtained."""

    vector: torch.Tensor  # flat, one entry per classifier parameter
    method: str
    score: str  # "dot" (score = s . g) or "cos" (score = s . g / |g|)
    damping: float
    iterations: int
    relative_residual: float
    residual_trace: list[float]
    guidance_gradient_norm: float  # |G|
    guidance_set_size: int
    seconds: float
    negative_curvature: bool = False


def compute_ihvp(
    model: GRUClassifier,
    guide_x: torch.Tensor,
    guide_y: torch.Tensor,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    method: str,
    damping: float,
    max_iter: int,
    tol: float,
    damping_increases: int = 3,
) -> IhvpResult:
    """Compute the guidance vector ``s`` of ``method`` for the guidance set ``(guide_x, guide_y)``.

    ``train_x``/``train_y`` define the Hessian (mean training loss); only ``cg`` uses them.
    The Hessian of a trained network is often indefinite. When conjugate gradient
    meets non-positive curvature, the damping is multiplied by 10 and the solve
    restarted, up to ``damping_increases`` times; the damping used is recorded.
    """
    if method not in IHVP_METHODS:
        raise ValueError(f"unknown inverse-Hessian method {method!r}; choose one of {IHVP_METHODS}")
    if guide_x.shape[0] == 0:
        raise ValueError("the guidance set is empty; check ihvp.guide_class against the validation labels")
    model.eval()
    started = time.perf_counter()
    guidance_gradient = mean_loss_gradient(model, guide_x, guide_y)
    g_norm = guidance_gradient.norm().item()

    if method == "grad_dot":
        vector, score, iterations, residual, trace, negative = guidance_gradient, "dot", 0, 0.0, [], False
    elif method == "grad_cos":
        vector, score, iterations, residual, trace, negative = guidance_gradient / g_norm, "cos", 0, 0.0, [], False
    else:
        result, damping = _damped_conjugate_gradient(
            model, train_x, train_y, guidance_gradient, damping, max_iter, tol, damping_increases
        )
        vector, score = result.solution, "dot"
        iterations, residual, trace, negative = (
            result.iterations, result.relative_residual, result.residual_trace, result.negative_curvature
        )
    seconds = time.perf_counter() - started
    return IhvpResult(
        vector=vector.detach(),
        method=method,
        score=score,
        damping=damping if method == "cg" else 0.0,
        iterations=iterations,
        relative_residual=residual,
        residual_trace=trace,
        guidance_gradient_norm=g_norm,
        guidance_set_size=int(guide_x.shape[0]),
        seconds=seconds,
        negative_curvature=negative,
    )


def _functional_logits(
    model: GRUClassifier, params: dict[str, torch.Tensor], x: torch.Tensor, unrolled: bool = True
) -> torch.Tensor:
    return functional_call(model, params, (x,), {"unrolled": unrolled})


def _named_vector(model: GRUClassifier, vector: torch.Tensor) -> dict[str, torch.Tensor]:
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    return dict(zip(names, _unflatten(vector, _parameters(model))))


def _detached_params(model: GRUClassifier) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in model.named_parameters()}


def _per_sample_score_fn(model: GRUClassifier, vector: torch.Tensor, score: str) -> Callable:
    """Return ``f(x_i, y_i) -> score`` for one unbatched series ``x_i (time, channels)``."""
    params = _detached_params(model)
    pieces = _named_vector(model, vector)

    def loss(p: dict[str, torch.Tensor], x_i: torch.Tensor, y_i: torch.Tensor) -> torch.Tensor:
        logit = _functional_logits(model, p, x_i.unsqueeze(0)).squeeze(0)
        return F.binary_cross_entropy_with_logits(logit, y_i.float())

    def sample_score(x_i: torch.Tensor, y_i: torch.Tensor) -> torch.Tensor:
        g = grad(loss)(params, x_i, y_i)
        dot = sum((g[name] * pieces[name]).sum() for name in pieces)
        if score == "cos":
            return dot / torch.sqrt(sum((g[name] ** 2).sum() for name in pieces))
        return dot

    return sample_score


def _damped_conjugate_gradient(
    model: GRUClassifier,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    rhs: torch.Tensor,
    damping: float,
    max_iter: int,
    tol: float,
    damping_increases: int,
) -> tuple[ConjugateGradientResult, float]:
    for attempt in range(damping_increases + 1):

        def damped_hvp(v: torch.Tensor, damping: float = damping) -> torch.Tensor:
            return hessian_vector_product(model, train_x, train_y, v) + damping * v

        result = conjugate_gradient(damped_hvp, rhs, max_iter, tol)
        if not result.negative_curvature:
            return result, damping
        if attempt < damping_increases:
            logger.warning(
                "conjugate gradient met non-positive curvature at damping %g after %d iterations; "
                "retrying with damping %g", damping, result.iterations, damping * 10
            )
            damping *= 10
    logger.warning(
        "the damped Hessian is still not positive definite at damping %g; the vector is a partial solve. "
        "Raise ihvp.damping", damping
    )
    return result, damping


def influence_scores(
    model: GRUClassifier, x: torch.Tensor, y: torch.Tensor, vector: torch.Tensor, score: str
) -> torch.Tensor:
    """Return each sample's score ``s . g(x_i, y_i)``, or its cosine form, shape ``(batch,)``."""
    model.eval()
    return vmap(_per_sample_score_fn(model, vector, score))(x, y)


def guidance_gradient(
    model: GRUClassifier,
    x: torch.Tensor,
    y: torch.Tensor,
    vector: torch.Tensor,
    score: str = "dot",
    mode: str = "double_backward",
    fd_step: float = 1e-2,
) -> torch.Tensor:
    """Return ``grad_x score(x_i, y_i)`` for every sample, shape ``(batch, time, channels)``.

    Each row depends on its own sample only, for any batch size: the classifier
    has no batch statistics and is run without dropout.

    Args:
        model: the trained guidance classifier.
        x: series ``(batch, time, channels)`` in the classifier's normalisation.
        y: labels ``(batch,)`` that the samples are generated for.
        vector: the flat guidance vector ``s``.
        score: ``"dot"`` or ``"cos"``; ``"cos"`` needs per-sample parameter gradients
            and always goes through ``torch.func``.
        mode: ``"double_backward"`` differentiates ``s . grad_phi sum_i l_i`` in ``x``;
            ``"finite_difference"`` uses ``grad_x (s . g) = d/de grad_x l(phi + e s)``
            as a central difference of two input gradients, which needs no double
            backward (for example under cuDNN recurrent kernels).
        fd_step: the step ``e`` of the central difference, relative to ``1 / |s|``.
    """
    if mode not in GUIDANCE_GRADIENT_MODES:
        raise ValueError(f"unknown guidance gradient mode {mode!r}; choose one of {GUIDANCE_GRADIENT_MODES}")
    model.eval()
    x = x.detach()
    if score == "cos":
        return vmap(grad(_per_sample_score_fn(model, vector, score)))(x, y)
    if mode == "double_backward":
        return _dot_gradient_double_backward(model, x, y, vector)
    return _dot_gradient_finite_difference(model, x, y, vector, fd_step)


def _dot_gradient_double_backward(
    model: GRUClassifier, x: torch.Tensor, y: torch.Tensor, vector: torch.Tensor
) -> torch.Tensor:
    # The summed loss is separable over samples, so grad_phi of the sum is sum_i g_i,
    # and the x-gradient of s . sum_i g_i splits into each sample's own gradient.
    params = _parameters(model)
    x = x.requires_grad_(True)
    loss = summed_loss(model, x, y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    dot = sum((g * v).sum() for g, v in zip(grads, _unflatten(vector, params)))
    (grad_x,) = torch.autograd.grad(dot, x)
    return grad_x


def _dot_gradient_finite_difference(
    model: GRUClassifier, x: torch.Tensor, y: torch.Tensor, vector: torch.Tensor, fd_step: float
) -> torch.Tensor:
    params = _detached_params(model)
    pieces = _named_vector(model, vector)
    step = fd_step / max(vector.norm().item(), 1e-12)

    def input_gradient(sign: float) -> torch.Tensor:
        shifted = {name: p + sign * step * pieces[name] if name in pieces else p for name, p in params.items()}
        x_var = x.clone().requires_grad_(True)
        # Only first derivatives are needed, so the fused nn.GRU kernel serves (about twice as fast
        # as the unrolled cell on CPU). cuDNN's GRU has no backward in eval mode, so it is disabled
        # here and PyTorch's native CUDA kernel runs instead.
        with torch.backends.cudnn.flags(enabled=False):
            logits = _functional_logits(model, shifted, x_var, unrolled=False)
        loss = F.binary_cross_entropy_with_logits(logits, y.float(), reduction="sum")
        (grad_x,) = torch.autograd.grad(loss, x_var)
        return grad_x

    return (input_gradient(1.0) - input_gradient(-1.0)) / (2 * step)
