"""Estimators of the guidance vector ``s``, an inverse-Hessian-vector product.

``s`` approximates ``(H + lambda I)^{-1} G`` where ``H`` is the Hessian of the
guidance classifier's mean training loss, ``G`` the mean loss gradient over the
guidance set and ``lambda`` the damping. ``IHVP_METHODS``:

- ``grad_dot``: ``s = G`` (identity Hessian, the score of the TarDiff paper).
- ``grad_cos``: ``s = G / |G|``, scored as a cosine similarity (TarDiff's released code).
- ``cg``: conjugate gradient with exact Hessian-vector products.
- ``gauss_newton``: conjugate gradient with Gauss-Newton products ``J^T D J``
  (``D = p (1 - p)`` for binary cross-entropy), positive semi-definite by construction.
- ``lissa``: the stochastic Neumann-series recursion of Agarwal et al. (2017)
  as used by Koh and Liang (2017), on mini-batches of the training set.
- ``last_layer``: the exact damped solve restricted to the linear head, whose
  loss Hessian is ``mean p (1 - p) a a^T`` for head inputs ``a``.
- ``arnoldi``: Arnoldi iteration for the top eigenpairs of ``H``, inverted on
  that subspace (Schioppa et al., 2022); scales to large models because it
  needs only ``arnoldi_iterations`` Hessian-vector products.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.func import jvp, vjp
from tqdm.auto import tqdm

from tardiff.classifier import GRUClassifier
from tardiff.influence import (
    detached_parameters,
    flatten_tensors,
    functional_logits,
    mean_loss_gradient,
    named_vector,
    summed_loss,
    trainable_parameters,
    unflatten_vector,
)

logger = logging.getLogger(__name__)

IHVP_METHODS = ("grad_dot", "grad_cos", "cg", "gauss_newton", "lissa", "last_layer", "arnoldi")
POOR_RESIDUAL = 0.5  # relative residual above which a stochastic or subspace estimate is reported as poor


def hessian_subsample(num_samples: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Return sorted indices of ``min(size, num_samples)`` training samples that define the Hessian."""
    return np.sort(rng.choice(num_samples, size=min(size, num_samples), replace=False))


def hessian_vector_product(
    model: GRUClassifier, x: torch.Tensor, y: torch.Tensor, vector: torch.Tensor, batch_size: int = 1024
) -> torch.Tensor:
    """Return ``H v`` for the Hessian ``H`` of the mean loss over ``(x, y)``, by double backpropagation."""
    params = trainable_parameters(model)
    pieces = unflatten_vector(vector, params)
    total = torch.zeros_like(vector)
    for start in range(0, x.shape[0], batch_size):
        loss = summed_loss(model, x[start : start + batch_size], y[start : start + batch_size])
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * v).sum() for g, v in zip(grads, pieces))
        total += flatten_tensors(torch.autograd.grad(dot, params))
    return total / x.shape[0]


def gauss_newton_vector_product(
    model: GRUClassifier, x: torch.Tensor, y: torch.Tensor, vector: torch.Tensor, batch_size: int = 1024
) -> torch.Tensor:
    """Return ``J^T D J v / n``: the Gauss-Newton matrix of the mean binary cross-entropy times ``v``.

    ``J`` is the Jacobian of the logits in the parameters, computed forward
    (``jvp``) then backward (``vjp``); ``D = p (1 - p)`` is the loss's second
    derivative in the logit. The labels do not enter.
    """
    params = detached_parameters(model)
    tangent = named_vector(model, vector)
    total = torch.zeros_like(vector)
    for start in range(0, x.shape[0], batch_size):
        batch = x[start : start + batch_size]

        def logits_of(p: dict[str, torch.Tensor], batch: torch.Tensor = batch) -> torch.Tensor:
            return functional_logits(model, p, batch)

        logits, jacobian_vector = jvp(logits_of, (params,), (tangent,))
        prob = torch.sigmoid(logits)
        _, pullback = vjp(logits_of, params)
        (product,) = pullback(prob * (1 - prob) * jacobian_vector)
        total += flatten_tensors([product[name] for name in tangent])
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



def damped_conjugate_gradient(
    product: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    damping: float,
    max_iter: int,
    tol: float,
    damping_increases: int,
) -> tuple[ConjugateGradientResult, float]:
    """Solve ``(A + damping I) s = rhs``, raising the damping tenfold while ``A + damping I`` is indefinite.

    Returns the result and the damping it was obtained with.
    """
    for attempt in range(damping_increases + 1):
        progress = tqdm(total=max_iter + 1, desc=f"conjugate gradient (damping {damping:g})", mininterval=5,
                        leave=False)

        def damped(v: torch.Tensor, damping: float = damping) -> torch.Tensor:
            progress.update(1)
            return product(v) + damping * v

        result = conjugate_gradient(damped, rhs, max_iter, tol)
        progress.close()
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


def top_eigenvalue(product: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor, iterations: int,
                   generator: torch.Generator) -> float:
    """Estimate the largest eigenvalue magnitude of a symmetric operator by power iteration."""
    vector = torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device)
    vector = vector / vector.norm()
    value = 0.0
    for _ in range(iterations):
        image = product(vector)
        value = image.norm().item()
        if value == 0.0:
            break
        vector = image / value
    return value


@dataclass
class LissaResult:
    solution: torch.Tensor
    scale: float
    residual_trace: list[float] = field(default_factory=list)  # relative change of the estimate per step


def lissa(
    product_on_batch: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    damping: float,
    scale: float,
    depth: int,
    repeats: int,
    num_samples: int,
    batch_size: int,
    generator: torch.Generator,
) -> LissaResult:
    """Approximate ``(H + damping I)^{-1} rhs`` by the LiSSA recursion on mini-batch Hessians.

    Each step draws a mini-batch ``B`` and sets
    ``h <- rhs + h - (H_B h + damping h) / scale``; the fixed point is
    ``scale (H + damping I)^{-1} rhs``, so the result is ``h / scale``, averaged
    over ``repeats`` independent runs. ``scale`` must exceed the largest
    eigenvalue of ``H + damping I`` for the recursion to converge.

    Args:
        product_on_batch: ``(indices, v) -> H_B v`` for a batch of training indices.
        num_samples: size of the training set that batches are drawn from.
    """
    estimates = []
    trace: list[float] = []
    for _ in range(repeats):
        estimate = rhs.clone()
        for _ in tqdm(range(depth), desc="lissa", mininterval=5, leave=False):
            index = torch.randint(0, num_samples, (batch_size,), generator=generator)
            updated = rhs + estimate - (product_on_batch(index, estimate) + damping * estimate) / scale
            change = (updated - estimate).norm().item() / max(updated.norm().item(), 1e-30)
            trace.append(change)
            if not torch.isfinite(updated).all():
                raise FloatingPointError(
                    f"LiSSA diverged (scale {scale:g}, damping {damping:g}); raise ihvp.lissa_scale or ihvp.damping"
                )
            estimate = updated
        estimates.append(estimate / scale)
    return LissaResult(torch.stack(estimates).mean(dim=0), scale, trace)


def last_layer_solve(
    model: GRUClassifier, train_x: torch.Tensor, rhs: torch.Tensor, damping: float
) -> torch.Tensor:
    """Return ``(H_head + damping I)^{-1} rhs_head`` in the head's coordinates, zero elsewhere.

    The logit is linear in the head's weights and bias, so the exact loss Hessian
    of that block is ``mean p (1 - p) a a^T`` with ``a`` the head input with a 1 appended.
    """
    with torch.no_grad():
        features = model.features_unrolled(train_x)
        prob = torch.sigmoid(model.head(features).squeeze(-1))
    design = torch.cat([features, torch.ones_like(features[:, :1])], dim=1)
    hessian = (design * (prob * (1 - prob))[:, None]).T @ design / train_x.shape[0]

    names = [name for name, p in model.named_parameters() if p.requires_grad]
    pieces = dict(zip(names, unflatten_vector(rhs, trainable_parameters(model))))
    head_rhs = torch.cat([pieces["head.weight"].reshape(-1), pieces["head.bias"].reshape(-1)])
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
    head_solution = torch.linalg.solve(hessian + damping * eye, head_rhs)

    solution = torch.zeros_like(rhs)
    out = dict(zip(names, unflatten_vector(solution, trainable_parameters(model))))
    out["head.weight"].copy_(head_solution[:-1].view_as(out["head.weight"]))
    out["head.bias"].copy_(head_solution[-1:].view_as(out["head.bias"]))
    return solution


@dataclass
class ArnoldiResult:
    solution: torch.Tensor
    eigenvalues: list[float]  # the kept eigenvalues of H, largest magnitude first
    dropped: int  # kept-subspace directions skipped because eigenvalue + damping <= 0


def arnoldi_solve(
    product: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, damping: float, iterations: int, top_k: int
) -> ArnoldiResult:
    """Invert ``H + damping I`` on the span of the top eigenvectors found by Arnoldi iteration.

    The iteration starts from ``rhs`` (Schioppa et al. start from a random
    vector; starting from ``rhs`` puts it in the Krylov subspace). With
    ``iterations`` equal to the parameter count and ``top_k`` as large, the
    result is the exact damped solve.
    """
    basis = [rhs / rhs.norm()]
    hessenberg = torch.zeros(iterations + 1, iterations, dtype=rhs.dtype, device=rhs.device)
    steps = 0
    for j in tqdm(range(iterations), desc="arnoldi", mininterval=5, leave=False):
        image = product(basis[j])
        for i in range(j + 1):  # full Gram-Schmidt against every earlier basis vector
            hessenberg[i, j] = image.dot(basis[i])
            image = image - hessenberg[i, j] * basis[i]
        hessenberg[j + 1, j] = image.norm()
        steps = j + 1
        if hessenberg[j + 1, j] < 1e-10 * hessenberg[: j + 1, j].norm():
            break  # the Krylov subspace is invariant: every eigenpair in it is exact
        basis.append(image / hessenberg[j + 1, j])

    square = hessenberg[:steps, :steps]
    eigenvalues, vectors = torch.linalg.eigh((square + square.T) / 2)  # H is symmetric
    order = torch.argsort(eigenvalues.abs(), descending=True)[:top_k]
    eigenvalues, vectors = eigenvalues[order], vectors[:, order]
    ritz = torch.stack(basis[:steps], dim=1) @ vectors  # (parameters, kept)

    keep = eigenvalues + damping > 0
    coefficients = (ritz[:, keep].T @ rhs) / (eigenvalues[keep] + damping)
    return ArnoldiResult(ritz[:, keep] @ coefficients, eigenvalues.tolist(), int((~keep).sum()))


@dataclass
class IhvpResult:
    """The precomputed guidance vector ``s`` and how it was obtained."""

    vector: torch.Tensor  # flat, one entry per classifier parameter
    method: str
    score: str  # "dot" (score = s . g) or "cos" (score = s . g / |g|)
    damping: float  # the damping actually used
    iterations: int  # Hessian-vector products spent (conjugate gradient, LiSSA, Arnoldi), else 0
    relative_residual: float  # |(H + damping I) s - G| / |G| with the method's own H; NaN where not defined
    residual_trace: list[float]
    guidance_gradient_norm: float  # |G|
    guidance_set_size: int
    seconds: float
    negative_curvature: bool = False
    details: dict = field(default_factory=dict)  # method-specific facts: LiSSA scale, Arnoldi eigenvalues


def compute_ihvp(
    model: GRUClassifier,
    guide_x: torch.Tensor,
    guide_y: torch.Tensor,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    config,
    seed: int = 0,
) -> IhvpResult:
    """Compute the guidance vector ``s`` of ``config.method`` for the guidance set ``(guide_x, guide_y)``.

    ``train_x``/``train_y`` define the Hessian (mean training loss). ``config`` is
    an :class:`tardiff.config.IhvpConfig`: method, damping and the solver limits.
    Conjugate gradient raises the damping tenfold, at most
    ``config.damping_increases`` times, while the damped Hessian is indefinite.
    """
    method = config.method
    if method not in IHVP_METHODS:
        raise ValueError(f"unknown inverse-Hessian method {method!r}; choose one of {IHVP_METHODS}")
    if guide_x.shape[0] == 0:
        raise ValueError("the guidance set is empty; check ihvp.guide_class against the validation labels")
    model.eval()
    started = time.perf_counter()
    rhs = mean_loss_gradient(model, guide_x, guide_y)
    g_norm = rhs.norm().item()
    generator = torch.Generator().manual_seed(seed)

    def hessian(v: torch.Tensor) -> torch.Tensor:
        return hessian_vector_product(model, train_x, train_y, v)

    def gauss_newton(v: torch.Tensor) -> torch.Tensor:
        return gauss_newton_vector_product(model, train_x, train_y, v)

    damping = config.damping
    score, iterations, trace, negative, details = "dot", 0, [], False, {}
    residual_product = hessian
    if method == "grad_dot":
        vector, damping, residual_product = rhs, 0.0, None
    elif method == "grad_cos":
        vector, score, damping, residual_product = rhs / g_norm, "cos", 0.0, None
    elif method in ("cg", "gauss_newton"):
        product = hessian if method == "cg" else gauss_newton
        residual_product = product
        result, damping = damped_conjugate_gradient(
            product, rhs, damping, config.max_iter, config.tol, config.damping_increases
        )
        vector, iterations, trace, negative = result.solution, result.iterations, result.residual_trace, \
            result.negative_curvature
    elif method == "lissa":
        scale = config.lissa_scale
        if scale <= 0:
            scale = 1.5 * (top_eigenvalue(hessian, rhs, config.power_iterations, generator) + damping)
            iterations += config.power_iterations

        def batch_product(index: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return hessian_vector_product(model, train_x[index], train_y[index], v)

        result = lissa(batch_product, rhs, damping, scale, config.lissa_depth, config.lissa_repeats,
                       train_x.shape[0], config.lissa_batch, generator)
        vector, trace = result.solution, result.residual_trace
        iterations += config.lissa_depth * config.lissa_repeats
        details = {"lissa_scale": scale}
    elif method == "last_layer":
        vector = last_layer_solve(model, train_x, rhs, damping)
        residual_product = None
        details = {"head_parameters": int(model.head.weight.numel() + model.head.bias.numel())}
    else:  # arnoldi
        result = arnoldi_solve(hessian, rhs, damping, config.arnoldi_iterations, config.arnoldi_top_k)
        vector, iterations = result.solution, config.arnoldi_iterations
        details = {"top_eigenvalues": result.eigenvalues[:10], "dropped_directions": result.dropped}

    if residual_product is None:
        residual = float("nan")
    else:
        residual = ((residual_product(vector) + damping * vector - rhs).norm() / rhs.norm()).item()
    if method in ("lissa", "arnoldi") and residual > POOR_RESIDUAL:
        # LiSSA diverges and Arnoldi drops directions where H + damping I is indefinite.
        logger.warning(
            "%s estimate has relative residual %.3g; the damped Hessian may be indefinite at damping %g. "
            "Raise ihvp.damping (conjugate gradient reports the damping at which it converged)",
            method, residual, damping,
        )
    return IhvpResult(
        vector=vector.detach(),
        method=method,
        score=score,
        damping=damping,
        iterations=iterations,
        relative_residual=residual,
        residual_trace=trace,
        guidance_gradient_norm=g_norm,
        guidance_set_size=int(guide_x.shape[0]),
        seconds=time.perf_counter() - started,
        negative_curvature=negative,
        details=details,
    )
