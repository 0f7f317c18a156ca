"""Every inverse-Hessian estimator against the exact damped solve on a classifier small enough to form H."""

import dataclasses

import pytest
import torch

from tardiff.classifier import GRUClassifier, GRUClassifierConfig
from tardiff.config import IhvpConfig
from tardiff.ihvp import IHVP_METHODS, compute_ihvp, gauss_newton_vector_product, hessian_vector_product
from tardiff.influence import mean_loss_gradient

# Stochastic estimators: the tolerance of LiSSA's relative error with the settings below
# (mini-batches of 12 of 24 samples, 1,000 steps, 8 runs averaged).
LISSA_TOLERANCE = 0.1


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(0)
    model = GRUClassifier(GRUClassifierConfig(2, 3, num_layers=1, dropout=0.0)).double().eval()
    generator = torch.Generator().manual_seed(1)
    train_x = torch.randn(24, 5, 2, generator=generator, dtype=torch.float64)
    train_y = (torch.arange(24) % 3 == 0).long()
    guide_x = torch.randn(8, 5, 2, generator=generator, dtype=torch.float64)
    guide_y = (torch.arange(8) % 2 == 0).long()
    n = sum(p.numel() for p in model.parameters())
    eye = torch.eye(n, dtype=torch.float64)
    hessian = torch.stack([hessian_vector_product(model, train_x, train_y, eye[i]) for i in range(n)], dim=1)
    gauss_newton = torch.stack(
        [gauss_newton_vector_product(model, train_x, train_y, eye[i]) for i in range(n)], dim=1
    )
    # Damping well above the most negative eigenvalue, so every method solves the same system.
    damping = max(0.0, -torch.linalg.eigvalsh(hessian).min().item()) + 0.05
    rhs = mean_loss_gradient(model, guide_x, guide_y)
    return {
        "model": model, "train": (train_x, train_y), "guide": (guide_x, guide_y), "hessian": hessian,
        "gauss_newton": gauss_newton, "damping": damping, "rhs": rhs, "eye": eye,
    }


def _run(problem, method, **settings):
    config = dataclasses.replace(IhvpConfig(), method=method, damping=problem["damping"], damping_increases=0,
                                 **settings)
    return compute_ihvp(problem["model"], *problem["guide"], *problem["train"], config, seed=3)


def _relative_error(estimate, exact):
    return ((estimate - exact).norm() / exact.norm()).item()


def test_method_list_is_complete():
    assert set(IHVP_METHODS) == {"grad_dot", "grad_cos", "cg", "gauss_newton", "lissa", "last_layer", "arnoldi"}


def test_cg_matches_exact_solve(problem):
    exact = torch.linalg.solve(problem["hessian"] + problem["damping"] * problem["eye"], problem["rhs"])
    result = _run(problem, "cg", max_iter=500, tol=1e-12)
    assert _relative_error(result.vector, exact) < 1e-4
    assert result.relative_residual < 1e-8


def test_gauss_newton_matrix_is_jt_d_j(problem):
    model, (x, _) = problem["model"], problem["train"]
    rows = []
    for i in range(x.shape[0]):
        logit = model.forward_unrolled(x[i : i + 1]).squeeze()
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(logit, list(model.parameters()))]))
    jacobian = torch.stack(rows)
    with torch.no_grad():
        prob = torch.sigmoid(model.forward_unrolled(x))
    expected = jacobian.T @ (jacobian * (prob * (1 - prob))[:, None]) / x.shape[0]
    assert torch.allclose(problem["gauss_newton"], expected, atol=1e-10)
    assert torch.linalg.eigvalsh(expected).min().item() > -1e-10


def test_gauss_newton_cg_matches_exact_solve(problem):
    exact = torch.linalg.solve(problem["gauss_newton"] + problem["damping"] * problem["eye"], problem["rhs"])
    result = _run(problem, "gauss_newton", max_iter=500, tol=1e-12)
    assert _relative_error(result.vector, exact) < 1e-4


def test_last_layer_matches_exact_head_block_solve(problem):
    model = problem["model"]
    head = model.head.weight.numel() + model.head.bias.numel()
    block = problem["hessian"][-head:, -head:]  # head.weight and head.bias come last
    exact_head = torch.linalg.solve(block + problem["damping"] * torch.eye(head, dtype=torch.float64),
                                    problem["rhs"][-head:])
    result = _run(problem, "last_layer")
    assert _relative_error(result.vector[-head:], exact_head) < 1e-4
    assert result.vector[:-head].abs().max().item() == 0.0


def test_arnoldi_with_full_subspace_matches_exact_solve(problem):
    n = problem["eye"].shape[0]
    exact = torch.linalg.solve(problem["hessian"] + problem["damping"] * problem["eye"], problem["rhs"])
    result = _run(problem, "arnoldi", arnoldi_iterations=n, arnoldi_top_k=n)
    assert _relative_error(result.vector, exact) < 1e-4


def test_arnoldi_top_eigenvalues_match_hessian(problem):
    result = _run(problem, "arnoldi", arnoldi_iterations=30, arnoldi_top_k=3)
    eigenvalues = torch.linalg.eigvalsh(problem["hessian"])
    largest = eigenvalues[eigenvalues.abs().argsort(descending=True)[:1]].item()
    assert result.details["top_eigenvalues"][0] == pytest.approx(largest, rel=1e-4)


def test_lissa_within_stated_tolerance(problem):
    exact = torch.linalg.solve(problem["hessian"] + problem["damping"] * problem["eye"], problem["rhs"])
    result = _run(problem, "lissa", lissa_depth=1000, lissa_repeats=8, lissa_batch=12)
    assert _relative_error(result.vector, exact) < LISSA_TOLERANCE
    assert result.details["lissa_scale"] > 0


def test_every_method_records_its_solver_facts(problem):
    for method in IHVP_METHODS:
        result = _run(problem, method, max_iter=50, tol=1e-8, lissa_depth=20, arnoldi_iterations=10,
                      arnoldi_top_k=5)
        assert result.vector.shape == problem["rhs"].shape, method
        assert torch.isfinite(result.vector).all(), method
        assert result.seconds >= 0.0, method
        assert result.method == method
