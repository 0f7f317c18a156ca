"""Noise schedule, forward process and DDIM step against their closed forms."""

import math

import pytest
import torch

from tardiff.diffusion import GaussianDiffusion, sqrt_linear_betas


@pytest.fixture
def diffusion():
    return GaussianDiffusion(200, 5e-4, 0.1, loss="l1")


def test_betas_endpoints_and_spacing():
    betas = sqrt_linear_betas(200, 5e-4, 0.1)
    assert betas[0].item() == pytest.approx(5e-4, rel=1e-9)
    assert betas[-1].item() == pytest.approx(0.1, rel=1e-9)
    roots = betas.sqrt()
    steps = roots[1:] - roots[:-1]
    assert torch.allclose(steps, steps[0].expand_as(steps), rtol=1e-9)


def test_alphas_cumprod_is_product_of_one_minus_betas(diffusion):
    expected = math.prod(1.0 - b for b in sqrt_linear_betas(200, 5e-4, 0.1)[:51].tolist())
    assert diffusion.alphas_cumprod[50].item() == pytest.approx(expected, rel=1e-5)
    assert torch.all(diffusion.alphas_cumprod[1:] < diffusion.alphas_cumprod[:-1])
    # The schedule ends close to pure noise: about 3e-5 of the signal variance remains.
    assert diffusion.alphas_cumprod[-1].item() < 1e-3


def test_q_sample_matches_closed_form(diffusion):
    x0 = torch.randn(3, 2, 8)
    noise = torch.randn(3, 2, 8)
    t = torch.tensor([0, 77, 199])
    x_t = diffusion.q_sample(x0, t, noise)
    for i, step in enumerate(t.tolist()):
        abar = diffusion.alphas_cumprod[step]
        assert torch.allclose(x_t[i], abar.sqrt() * x0[i] + (1 - abar).sqrt() * noise[i], atol=1e-6)


def test_predict_x0_inverts_q_sample(diffusion):
    x0 = torch.randn(4, 3, 8)
    noise = torch.randn(4, 3, 8)
    t = torch.tensor([5, 50, 120, 199])
    x_t = diffusion.q_sample(x0, t, noise)
    assert torch.allclose(diffusion.predict_x0(x_t, t, noise), x0, atol=1e-3)


def test_ddim_step_with_exact_noise_is_deterministic_path(diffusion):
    # With eta = 0 and the true noise, one DDIM step lands exactly on q_sample at t_prev.
    x0 = torch.randn(2, 3, 8)
    eps = torch.randn(2, 3, 8)
    t, t_prev = 150, 100
    x_t = diffusion.q_sample(x0, torch.full((2,), t), eps)
    out = diffusion.ddim_step(eps, t, t_prev, x_t, eta=0.0)
    assert torch.allclose(out.pred_x0, x0, atol=1e-4)
    assert torch.allclose(out.prev_sample, diffusion.q_sample(x0, torch.full((2,), t_prev), eps), atol=1e-4)


def test_ddim_last_step_returns_pred_x0(diffusion):
    x0 = torch.randn(2, 3, 8)
    eps = torch.randn(2, 3, 8)
    x_t = diffusion.q_sample(x0, torch.full((2,), 10), eps)
    out = diffusion.ddim_step(eps, 10, -1, x_t, eta=1.0, noise=torch.randn(2, 3, 8))
    assert torch.allclose(out.prev_sample, out.pred_x0)


def test_ddim_eta_one_matches_ddpm_posterior_variance(diffusion):
    # For consecutive steps, eta = 1 noise has the DDPM posterior variance beta_tilde_t.
    t = 120
    x_t = torch.zeros(1, 1, 1)
    eps = torch.zeros(1, 1, 1)
    noise = torch.ones(1, 1, 1)
    with_noise = diffusion.ddim_step(eps, t, t - 1, x_t, eta=1.0, noise=noise).prev_sample
    without = diffusion.ddim_step(eps, t, t - 1, x_t, eta=1.0, noise=torch.zeros(1, 1, 1)).prev_sample
    abar_t, abar_prev = diffusion.alphas_cumprod[t], diffusion.alphas_cumprod[t - 1]
    beta_tilde = (1 - abar_prev) / (1 - abar_t) * diffusion.betas[t]
    assert (with_noise - without).item() == pytest.approx(beta_tilde.sqrt().item(), rel=1e-4)


def test_ddim_timesteps_uniform_and_descending(diffusion):
    steps = diffusion.ddim_timesteps(20)
    assert steps == list(range(190, -1, -10))
    assert diffusion.ddim_timesteps(200) == list(range(199, -1, -1))
    with pytest.raises(ValueError, match="num_steps"):
        diffusion.ddim_timesteps(201)


def test_training_loss_kinds(diffusion):
    model = lambda x_t, t, y: torch.zeros_like(x_t)  # noqa: E731 - predicts zero noise
    x0 = torch.randn(64, 2, 8)
    y = torch.zeros(64, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)
    l1 = diffusion.training_loss(model, x0, y, generator)
    l2 = GaussianDiffusion(200, 5e-4, 0.1, loss="l2").training_loss(model, x0, y, torch.Generator().manual_seed(0))
    # For standard normal noise, E|e| = sqrt(2 / pi) and E e^2 = 1.
    assert l1.item() == pytest.approx(math.sqrt(2 / math.pi), abs=0.05)
    assert l2.item() == pytest.approx(1.0, abs=0.1)
