"""Influence scores, the conjugate-gradient inverse-Hessian solve and guidance gradients."""

import pytest
import torch

import dataclasses

from tardiff.classifier import GRUClassifier, GRUClassifierConfig
from tardiff.config import IhvpConfig
from tardiff.ihvp import compute_ihvp, conjugate_gradient, hessian_vector_product
from tardiff.influence import guidance_gradient, influence_scores, mean_loss_gradient


def _config(method, damping=0.0, max_iter=0, tol=0.0, **extra):
    return dataclasses.replace(IhvpConfig(), method=method, damping=damping, max_iter=max_iter, tol=tol, **extra)


def _classifier(hidden=8, layers=1, channels=3, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return GRUClassifier(GRUClassifierConfig(channels, hidden, layers, dropout=0.0)).to(dtype).eval()


def _data(n=12, time=6, channels=3, seed=1, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, time, channels, generator=generator, dtype=dtype)
    y = torch.tensor([i % 3 == 0 for i in range(n)], dtype=torch.long)
    return x, y


def _bias_only_classifier(bias: float) -> GRUClassifier:
    # All weights zero: the hidden state stays 0, the logit is the head bias, and the
    # only non-zero parameter gradient is d loss / d bias = sigmoid(bias) - y.
    model = _classifier(hidden=2)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.head.bias.fill_(bias)
    return model


def test_grad_dot_score_hand_computed():
    model = _bias_only_classifier(0.0)
    x, _ = _data(n=3)
    guide_y = torch.tensor([1, 1, 0])
    result = compute_ihvp(model, x, guide_y, x, guide_y, _config("grad_dot"))
    # G_bias = mean(0.5 - 1, 0.5 - 1, 0.5 - 0) = -1/6, and every other entry is 0.
    assert result.vector[-1].item() == pytest.approx(-1 / 6, abs=1e-7)
    assert result.vector[:-1].abs().max().item() == 0.0

    candidates = torch.randn(2, 6, 3)
    scores = influence_scores(model, candidates, torch.tensor([1, 0]), result.vector, "dot")
    # score = G_bias * (sigmoid(0) - y): +1/12 for a positive sample, -1/12 for a negative one.
    assert scores[0].item() == pytest.approx(1 / 12, abs=1e-7)
    assert scores[1].item() == pytest.approx(-1 / 12, abs=1e-7)


def test_grad_cos_score_hand_computed():
    model = _bias_only_classifier(0.0)
    x, _ = _data(n=3)
    guide_y = torch.tensor([1, 1, 0])
    result = compute_ihvp(model, x, guide_y, x, guide_y, _config("grad_cos"))
    assert result.score == "cos"
    assert result.vector.norm().item() == pytest.approx(1.0, abs=1e-6)
    scores = influence_scores(model, torch.randn(2, 6, 3), torch.tensor([1, 0]), result.vector, "cos")
    # Both gradients lie on the bias axis, so the cosine is +1 or -1.
    assert scores.tolist() == pytest.approx([1.0, -1.0], abs=1e-6)


def test_influence_scores_match_per_sample_autograd():
    model = _classifier()
    x, y = _data()
    vector = torch.randn(sum(p.numel() for p in model.parameters()))
    scores = influence_scores(model, x, y, vector, "dot")
    for i in range(x.shape[0]):
        logit = model.forward_unrolled(x[i : i + 1])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, y[i : i + 1].float())
        grads = torch.autograd.grad(loss, list(model.parameters()))
        expected = torch.cat([g.reshape(-1) for g in grads]) @ vector
        assert scores[i].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)


def _dense_hessian(model, x, y):
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    columns = [hessian_vector_product(model, x, y, torch.eye(n, dtype=x.dtype)[i]) for i in range(n)]
    return torch.stack(columns, dim=1)


def test_conjugate_gradient_matches_dense_damped_solve():
    model = _classifier(hidden=3, channels=2, dtype=torch.float64)
    x, y = _data(n=16, channels=2, dtype=torch.float64)
    hessian = _dense_hessian(model, x, y)
    assert torch.allclose(hessian, hessian.T, atol=1e-8)
    # Damping just above the most negative eigenvalue keeps the system positive definite.
    damping = max(0.0, -torch.linalg.eigvalsh(hessian).min().item()) + 0.05
    guide_x, guide_y = _data(n=6, channels=2, seed=7, dtype=torch.float64)

    result = compute_ihvp(model, guide_x, guide_y, x, y, _config("cg", damping, max_iter=500, tol=1e-12))
    gradient = mean_loss_gradient(model, guide_x, guide_y)
    exact = torch.linalg.solve(hessian + damping * torch.eye(hessian.shape[0], dtype=hessian.dtype), gradient)
    relative_error = ((result.vector - exact).norm() / exact.norm()).item()
    assert relative_error < 1e-4
    assert result.relative_residual < 1e-8
    assert not result.negative_curvature


def test_conjugate_gradient_stops_on_negative_curvature():
    matrix = torch.diag(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    result = conjugate_gradient(lambda v: matrix @ v, torch.ones(3, dtype=torch.float64), max_iter=10, tol=1e-12)
    assert result.negative_curvature


def test_guidance_gradient_alone_equals_in_batch():
    model = _classifier(layers=2)
    x, y = _data(n=9)
    vector = torch.randn(sum(p.numel() for p in model.parameters()))
    for score, mode in (("dot", "double_backward"), ("dot", "finite_difference"), ("cos", "double_backward"),
                        ("logit", "finite_difference")):
        batch = guidance_gradient(model, x, y, vector, score, mode)
        for i in (0, 4, 8):
            alone = guidance_gradient(model, x[i : i + 1], y[i : i + 1], vector, score, mode)
            # The central difference divides float32 rounding by its step, so allow 1e-3 of the scale.
            tolerance = 1e-3 * batch[i].abs().max().item() if mode == "finite_difference" else 1e-6
            assert torch.allclose(alone[0], batch[i], rtol=1e-3, atol=tolerance), (score, mode, i)


def test_finite_difference_agrees_with_double_backward():
    model = _classifier(layers=2)
    x, y = _data(n=16)
    vector = torch.randn(sum(p.numel() for p in model.parameters()))
    vector = vector / vector.norm()
    for score in ("dot", "logit"):
        exact = guidance_gradient(model, x, y, vector, score, "double_backward")
        approx = guidance_gradient(model, x, y, vector, score, "finite_difference")
        cosine = torch.nn.functional.cosine_similarity(exact.flatten(1), approx.flatten(1), dim=1)
        assert cosine.min().item() >= 0.999, score


def test_guidance_gradient_ascends_the_score():
    model = _classifier()
    x, y = _data(n=4)
    vector = torch.randn(sum(p.numel() for p in model.parameters()))
    for score in ("dot", "cos", "logit"):
        direction = guidance_gradient(model, x, y, vector, score, "double_backward")
        before = influence_scores(model, x, y, vector, score)
        after = influence_scores(model, x + 1e-3 * direction, y, vector, score)
        assert torch.all(after > before), score


def test_unknown_method_and_empty_guidance_set_raise():
    model = _classifier()
    x, y = _data()
    with pytest.raises(ValueError, match="unknown inverse-Hessian method"):
        compute_ihvp(model, x, y, x, y, dataclasses.replace(_config("cg"), method="lissa_typo"))
    with pytest.raises(ValueError, match="guidance set is empty"):
        compute_ihvp(model, x[:0], y[:0], x, y, _config("grad_dot"))


def test_cg_raises_damping_until_positive_definite():
    model = _classifier(hidden=3, channels=2, dtype=torch.float64)
    x, y = _data(n=16, channels=2, dtype=torch.float64)
    smallest = torch.linalg.eigvalsh(_dense_hessian(model, x, y)).min().item()
    assert smallest < 0, "the fixture needs an indefinite Hessian"
    start = abs(smallest) / 50  # too small: the damped Hessian stays indefinite
    result = compute_ihvp(model, x, y, x, y, _config("cg", start, max_iter=500, tol=1e-10, damping_increases=3))
    assert result.damping > abs(smallest)
    assert result.damping == pytest.approx(start * 100)
    assert not result.negative_curvature
    assert result.relative_residual < 1e-6


def test_logit_score_drops_the_loss_residual():
    model = _classifier()
    x, y = _data(n=6)
    vector = torch.randn(sum(p.numel() for p in model.parameters()))
    dot = influence_scores(model, x, y, vector, "dot")
    logit = influence_scores(model, x, y, vector, "logit")
    with torch.no_grad():
        residual = torch.sigmoid(model.forward_unrolled(x)) - y.float()
    # g = (p - y) grad f, so dot = |p - y| * logit for either label.
    assert torch.allclose(dot, residual.abs() * logit, rtol=1e-4, atol=1e-7)


def test_reference_gradient_couples_the_batch():
    from tardiff.influence import reference_batch_cosine_gradient

    model = _classifier()
    x, y = _data(n=8)
    vector = torch.randn(sum(p.numel() for p in model.parameters()))
    batch = reference_batch_cosine_gradient(model, x, y, vector)
    alone = reference_batch_cosine_gradient(model, x[:1], y[:1], vector)
    assert not torch.allclose(batch[0], alone[0], rtol=1e-2)
