"""Influence scores of candidate training samples and their input gradients.

Notation: ``l(x, y; phi)`` is the per-sample binary cross-entropy of the guidance
classifier, ``g(x, y)`` its gradient in the parameters ``phi`` and ``G`` the mean
of ``g`` over the guidance set (held-out real data). Up-weighting a training
sample ``z`` by ``epsilon`` moves the parameters by ``-epsilon H^{-1} g(z)``
(Koh and Liang, 2017), so the guidance loss falls by ``epsilon * s . g(z)`` with
``s = H^{-1} G``. The score ``s . g(z)`` is therefore "how much adding ``z``
helps", and guidance ascends it.

The estimators of ``s`` live in :mod:`tardiff.ihvp`. ``G`` is a mean, not the
sum over the guidance set: the two differ by the guidance-set size, which only
rescales the guidance scale.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from tardiff.classifier import GRUClassifier


GUIDANCE_GRADIENT_MODES = ("double_backward", "finite_difference")
SCORES = ("dot", "cos", "logit")


def trainable_parameters(model: torch.nn.Module) -> list[torch.Tensor]:
    """Return the parameters that influence is taken over, in ``named_parameters`` order."""
    return [p for p in model.parameters() if p.requires_grad]


def flatten_tensors(tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Concatenate tensors into one flat vector."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten_vector(vector: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    """Split a flat vector into views shaped like ``like``."""
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
    params = trainable_parameters(model)
    total = torch.zeros(sum(p.numel() for p in params), device=x.device, dtype=x.dtype)
    for start in range(0, x.shape[0], batch_size):
        loss = summed_loss(model, x[start : start + batch_size], y[start : start + batch_size])
        total += flatten_tensors(torch.autograd.grad(loss, params))
    return total / x.shape[0]


def functional_logits(
    model: GRUClassifier, params: dict[str, torch.Tensor], x: torch.Tensor, unrolled: bool = True
) -> torch.Tensor:
    """Return the classifier's logits with ``params`` in place of its own parameters."""
    return functional_call(model, params, (x,), {"unrolled": unrolled})


def named_vector(model: GRUClassifier, vector: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split a flat parameter-space vector into a dict keyed by parameter name."""
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    return dict(zip(names, unflatten_vector(vector, trainable_parameters(model))))


def detached_parameters(model: GRUClassifier) -> dict[str, torch.Tensor]:
    """Return the model's parameters by name, detached from autograd."""
    return {name: p.detach() for name, p in model.named_parameters()}


def _per_sample_score_fn(model: GRUClassifier, vector: torch.Tensor, score: str) -> Callable:
    """Return ``f(x_i, y_i) -> score`` for one unbatched series ``x_i (time, channels)``."""
    params = detached_parameters(model)
    pieces = named_vector(model, vector)

    def loss(p: dict[str, torch.Tensor], x_i: torch.Tensor, y_i: torch.Tensor) -> torch.Tensor:
        logit = functional_logits(model, p, x_i.unsqueeze(0)).squeeze(0)
        return F.binary_cross_entropy_with_logits(logit, y_i.float())

    def logit(p: dict[str, torch.Tensor], x_i: torch.Tensor) -> torch.Tensor:
        return functional_logits(model, p, x_i.unsqueeze(0)).squeeze(0)

    def sample_score(x_i: torch.Tensor, y_i: torch.Tensor) -> torch.Tensor:
        if score == "logit":
            g_logit = grad(logit)(params, x_i)
            return (1 - 2 * y_i.float()) * sum((g_logit[name] * pieces[name]).sum() for name in pieces)
        g = grad(loss)(params, x_i, y_i)
        dot = sum((g[name] * pieces[name]).sum() for name in pieces)
        if score == "cos":
            return dot / torch.sqrt(sum((g[name] ** 2).sum() for name in pieces))
        return dot

    return sample_score


def influence_scores(
    model: GRUClassifier, x: torch.Tensor, y: torch.Tensor, vector: torch.Tensor, score: str
) -> torch.Tensor:
    """Return each sample's score, shape ``(batch,)``.

    ``score`` is ``"dot"`` (``s . g``), ``"cos"`` (``s . g / |g|``) or ``"logit"``.
    For binary cross-entropy ``g = (p - y) grad_phi f`` with ``f`` the logit and
    ``p = sigmoid(f)``. The ``"logit"`` score ``(1 - 2y) s . grad_phi f`` drops the
    residual ``|p - y|``, as the cosine does, but keeps the norm of ``grad_phi f``.
    Dropping the residual matters for guidance: ``"dot"`` grows with the loss of
    the sample, so ascending it pushes samples towards the other class.
    """
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
        score: ``"dot"``, ``"cos"`` or ``"logit"`` (see :func:`influence_scores`);
            ``"cos"`` needs per-sample parameter gradients and always goes through
            ``torch.func``.
        mode: ``"double_backward"`` differentiates ``s . grad_phi sum_i l_i`` in ``x``;
            ``"finite_difference"`` uses ``grad_x (s . g) = d/de grad_x l(phi + e s)``
            as a central difference of two input gradients, which needs no double
            backward (for example under cuDNN recurrent kernels).
        fd_step: the step ``e`` of the central difference, relative to ``1 / |s|``.
    """
    if mode not in GUIDANCE_GRADIENT_MODES:
        raise ValueError(f"unknown guidance gradient mode {mode!r}; choose one of {GUIDANCE_GRADIENT_MODES}")
    if score not in SCORES:
        raise ValueError(f"unknown influence score {score!r}; choose one of {SCORES}")
    model.eval()
    x = x.detach()
    if score == "cos":
        return vmap(grad(_per_sample_score_fn(model, vector, score)))(x, y)
    if mode == "double_backward":
        gradient = _dot_gradient_double_backward(model, x, y, vector, score)
    else:
        gradient = _dot_gradient_finite_difference(model, x, y, vector, fd_step, score)
    if score == "logit":
        gradient = gradient * (1 - 2 * y.to(gradient.dtype)).view(-1, *([1] * (x.dim() - 1)))
    return gradient


def _summed_objective(logits: torch.Tensor, y: torch.Tensor, score: str) -> torch.Tensor:
    # "dot" differentiates the loss, "logit" the logit itself; both are sums over separable samples.
    if score == "logit":
        return logits.sum()
    return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), reduction="sum")


def _dot_gradient_double_backward(
    model: GRUClassifier, x: torch.Tensor, y: torch.Tensor, vector: torch.Tensor, score: str
) -> torch.Tensor:
    # The summed loss is separable over samples, so grad_phi of the sum is sum_i g_i,
    # and the x-gradient of s . sum_i g_i splits into each sample's own gradient.
    params = trainable_parameters(model)
    x = x.requires_grad_(True)
    loss = _summed_objective(model.forward_unrolled(x), y, score)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    dot = sum((g * v).sum() for g, v in zip(grads, unflatten_vector(vector, params)))
    (grad_x,) = torch.autograd.grad(dot, x)
    return grad_x


def _dot_gradient_finite_difference(
    model: GRUClassifier, x: torch.Tensor, y: torch.Tensor, vector: torch.Tensor, fd_step: float, score: str
) -> torch.Tensor:
    params = detached_parameters(model)
    pieces = named_vector(model, vector)
    step = fd_step / max(vector.norm().item(), 1e-12)

    def input_gradient(sign: float) -> torch.Tensor:
        shifted = {name: p + sign * step * pieces[name] if name in pieces else p for name, p in params.items()}
        x_var = x.clone().requires_grad_(True)
        # Only first derivatives are needed, so the fused nn.GRU kernel serves (about twice as fast
        # as the unrolled cell on CPU). cuDNN's GRU has no backward in eval mode, so it is disabled
        # here and PyTorch's native CUDA kernel runs instead.
        with torch.backends.cudnn.flags(enabled=False):
            logits = functional_logits(model, shifted, x_var, unrolled=False)
        (grad_x,) = torch.autograd.grad(_summed_objective(logits, y, score), x_var)
        return grad_x

    return (input_gradient(1.0) - input_gradient(-1.0)) / (2 * step)


def reference_batch_cosine_gradient(
    model: GRUClassifier, x: torch.Tensor, y: torch.Tensor, vector: torch.Tensor
) -> torch.Tensor:
    """Return the guidance gradient as TarDiff's released code forms it, for comparison only.

    The score there is the cosine similarity between ``s`` and the gradient of
    the batch-mean loss, differentiated in ``x`` by double backpropagation. Every
    sample's gradient then depends on the whole batch and shrinks about as one
    over the batch size; :func:`guidance_gradient` computes per-sample scores.
    """
    model.eval()
    params = trainable_parameters(model)
    x = x.detach().requires_grad_(True)
    loss = summed_loss(model, x, y) / x.shape[0]
    grads = flatten_tensors(torch.autograd.grad(loss, params, create_graph=True))
    cosine = grads.dot(vector) / (grads.norm() * vector.norm())
    (grad_x,) = torch.autograd.grad(cosine, x)
    return grad_x
