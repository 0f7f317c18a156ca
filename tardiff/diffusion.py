"""Gaussian diffusion: noise schedule, forward process, training loss and DDIM steps.

Tensors are ``(batch, channels, time)`` inside this module, the layout of the
1-D U-Net. Timesteps are integers in ``[0, num_timesteps)``; step ``t`` has
noise level ``alphas_cumprod[t]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def sqrt_linear_betas(num_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """Return betas spaced linearly in square-root space: ``linspace(sqrt(b0), sqrt(b1), T) ** 2``.

    This is the schedule of the TarDiff paper (T = 200, b0 = 5e-4, b1 = 0.1).
    """
    return torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2


@dataclass
class DDIMStepOutput:
    """Result of one DDIM step."""

    prev_sample: torch.Tensor  # x_{t_prev}, (batch, channels, time)
    pred_x0: torch.Tensor  # predicted clean sample, (batch, channels, time)


class GaussianDiffusion:
    """Forward noising process, epsilon-prediction loss and the DDIM reverse step."""

    def __init__(self, num_timesteps: int, beta_start: float, beta_end: float, loss: str = "l1"):
        if loss not in ("l1", "l2"):
            raise ValueError(f"loss must be 'l1' or 'l2', got {loss!r}")
        self.num_timesteps = num_timesteps
        self.loss_type = loss

        # Schedules are computed in float64 once, then stored as float32.
        betas = sqrt_linear_betas(num_timesteps, beta_start, beta_end)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.betas = betas.float()
        self.alphas_cumprod = alphas_cumprod.float()
        self.sqrt_alphas_cumprod = alphas_cumprod.sqrt().float()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - alphas_cumprod).sqrt().float()

    def _gather(self, schedule: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Index ``schedule`` by ``t`` (batch,) and reshape to broadcast over ``like``."""
        values = schedule.to(like.device)[t]
        return values.view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample ``x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)``."""
        return self._gather(self.sqrt_alphas_cumprod, t, x0) * x0 + self._gather(
            self.sqrt_one_minus_alphas_cumprod, t, x0
        ) * noise

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Invert the forward process: ``x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``."""
        return (x_t - self._gather(self.sqrt_one_minus_alphas_cumprod, t, x_t) * eps) / self._gather(
            self.sqrt_alphas_cumprod, t, x_t
        )

    def training_loss(
        self, model: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Return the mean epsilon-prediction loss (L1 or L2) at uniformly drawn timesteps."""
        t = torch.randint(0, self.num_timesteps, (x0.shape[0],), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator)
        eps = model(self.q_sample(x0, t, noise), t, y)
        if self.loss_type == "l1":
            return F.l1_loss(eps, noise)
        return F.mse_loss(eps, noise)

    def ddim_timesteps(self, num_steps: int) -> list[int]:
        """Return ``num_steps`` uniformly spaced timesteps, from the noisiest down to 0."""
        if not 1 <= num_steps <= self.num_timesteps:
            raise ValueError(f"num_steps must be in [1, {self.num_timesteps}], got {num_steps}")
        stride = self.num_timesteps / num_steps
        steps = sorted({int(round(i * stride)) for i in range(num_steps)})
        return steps[::-1]

    def ddim_step(
        self,
        eps: torch.Tensor,
        t: int,
        t_prev: int,
        x_t: torch.Tensor,
        eta: float,
        noise: torch.Tensor | None = None,
    ) -> DDIMStepOutput:
        """Take one DDIM step from timestep ``t`` to ``t_prev`` (``-1`` means the clean sample).

        Follows Song et al. (2021), eq. 12, with no clipping of the predicted clean sample.
        """
        # 1. noise levels at t and t_prev; abar_{-1} = 1 is the clean sample.
        alpha_prod_t = self.alphas_cumprod[t].item()
        alpha_prod_prev = self.alphas_cumprod[t_prev].item() if t_prev >= 0 else 1.0

        # 2. predicted clean sample from the predicted noise
        pred_x0 = (x_t - (1.0 - alpha_prod_t) ** 0.5 * eps) / alpha_prod_t**0.5

        # 3. standard deviation of the added noise; eta = 1 matches the DDPM posterior variance
        variance = (1.0 - alpha_prod_prev) / (1.0 - alpha_prod_t) * (1.0 - alpha_prod_t / alpha_prod_prev)
        std_dev_t = eta * max(variance, 0.0) ** 0.5

        # 4. direction pointing to x_t, then the mean of x_{t_prev}
        direction = max(1.0 - alpha_prod_prev - std_dev_t**2, 0.0) ** 0.5 * eps
        prev_sample = alpha_prod_prev**0.5 * pred_x0 + direction

        # 5. fresh noise
        if std_dev_t > 0:
            if noise is None:
                noise = torch.randn_like(x_t)
            prev_sample = prev_sample + std_dev_t * noise
        return DDIMStepOutput(prev_sample=prev_sample, pred_x0=pred_x0)
