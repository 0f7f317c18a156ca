"""TimeVAE (Desai, Freeman, Wang and Beaver, "TimeVAE: A Variational Auto-Encoder for
Multivariate Time Series Generation", arXiv:2111.08095, 2021), written for PyTorch.

Encoder: stride-2 convolutions (kernel 3, ReLU) over time, flattened, then two
linear maps to the mean and log-variance of a Gaussian latent ``z``.
Decoder: the sum of interpretable blocks, each a function of ``z``:

- level: one value per channel, constant over time;
- trend: a polynomial ``sum_p a_p(z) (t / T)^p`` per channel, ``p = 1..trend_poly``;
- seasonality (optional): per block ``(num_seasons, steps_per_season)``, one value
  per season and channel, season ``(t // steps_per_season) % num_seasons`` at step ``t``;
- residual: a linear layer and transposed convolutions mirroring the encoder,
  then a linear map to ``time x channels``.

Loss per series: ``reconstruction_weight * (sum_{t,c} (x - x_hat)^2 + sum_t
(mean_c x - mean_c x_hat)^2) + KL(q(z | x) || N(0, I))``, as in the authors'
code. Training follows their code too: Adam, the learning rate halved after
``lr_patience`` epochs without improvement, early stopping after
``early_stopping_patience``. Inputs are min-max scaled per channel to ``[0, 1]``
by the model and mapped back on sampling, as the authors scale their data.

The authors' defaults, which the ``paper`` profile sets: latent size 8, filters
(50, 100, 200), reconstruction weight 3, batch 16, up to 1,000 epochs with early
stopping. Their configuration file turns the trend block off (``trend_poly: 0``);
here it defaults to 2 (linear and quadratic), the interpretable variant of the paper.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tardiff.baselines.common import MinMaxScaler, PerClassResult, check_training_set, generate_per_class
from tardiff.config import TimeVAEConfig
from tardiff.errors import TardiffInputError

logger = logging.getLogger(__name__)

CONV_KERNEL = 3  # kernel size of every (transposed) convolution, as in the authors' code


class _Encoder(nn.Module):
    """Stride-2 convolutions, then the mean and log-variance of ``q(z | x)``."""

    def __init__(self, seq_len: int, n_channels: int, config: TimeVAEConfig):
        super().__init__()
        layers: list[nn.Module] = []
        width, length = n_channels, seq_len
        for filters in config.hidden_sizes:
            layers += [nn.Conv1d(width, filters, CONV_KERNEL, stride=2, padding=1), nn.ReLU()]
            width, length = filters, (length + 1) // 2  # "same" padding with stride 2 halves, rounding up
        self.conv = nn.Sequential(*layers)
        self.encoded_length = length
        self.flat_dim = width * length
        self.z_mean = nn.Linear(self.flat_dim, config.latent_dim)
        self.z_log_var = nn.Linear(self.flat_dim, config.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.conv(x.transpose(1, 2)).flatten(1)  # (batch, filters * encoded_length)
        return self.z_mean(hidden), self.z_log_var(hidden)


class _ResidualDecoder(nn.Module):
    """Mirror of the encoder: linear, transposed stride-2 convolutions, then a linear map to ``(time, channels)``."""

    def __init__(self, seq_len: int, n_channels: int, encoder: _Encoder, config: TimeVAEConfig):
        super().__init__()
        self.seq_len, self.n_channels = seq_len, n_channels
        self.encoded_length = encoder.encoded_length
        self.top_filters = config.hidden_sizes[-1]
        self.dense = nn.Linear(config.latent_dim, encoder.flat_dim)
        layers: list[nn.Module] = []
        width = self.top_filters
        for filters in (*reversed(config.hidden_sizes[:-1]), n_channels):
            # padding 1 with output_padding 1 doubles the length, like Keras' "same" transposed convolution
            layers += [nn.ConvTranspose1d(width, filters, CONV_KERNEL, stride=2, padding=1, output_padding=1), nn.ReLU()]
            width = filters
        self.deconv = nn.Sequential(*layers)
        upsampled = encoder.encoded_length * 2 ** len(config.hidden_sizes)
        self.out = nn.Linear(n_channels * upsampled, seq_len * n_channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(self.dense(z)).view(-1, self.top_filters, self.encoded_length)
        return self.out(self.deconv(hidden).flatten(1)).view(-1, self.seq_len, self.n_channels)


class TimeVAE(nn.Module):
    """TimeVAE over ``(batch, time, channels)`` series scaled to ``[0, 1]``."""

    def __init__(self, seq_len: int, n_channels: int, config: TimeVAEConfig):
        super().__init__()
        self.config = config
        self.seq_len, self.n_channels = seq_len, n_channels
        latent, channels, poly = config.latent_dim, n_channels, config.trend_poly
        self.encoder = _Encoder(seq_len, n_channels, config)

        self.level = nn.Sequential(nn.Linear(latent, channels), nn.ReLU(), nn.Linear(channels, channels))
        self.trend = (
            nn.Sequential(nn.Linear(latent, channels * poly), nn.ReLU(), nn.Linear(channels * poly, channels * poly))
            if poly > 0 else None
        )
        # Powers (t / T)^p for p = 1..trend_poly: (trend_poly, time).
        steps = torch.arange(seq_len, dtype=torch.float32) / seq_len
        self.register_buffer("poly_space", torch.stack([steps ** (p + 1) for p in range(poly)]) if poly > 0
                             else torch.zeros(0, seq_len), persistent=False)
        self.seasons = nn.ModuleList(nn.Linear(latent, channels * num) for num, _ in config.seasons)
        for index, (num, steps_per_season) in enumerate(config.seasons):
            season_of_step = (torch.arange(seq_len) // steps_per_season) % num
            self.register_buffer(f"season_index_{index}", season_of_step, persistent=False)
        self.residual = _ResidualDecoder(seq_len, n_channels, self.encoder, config) if config.use_residual else None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Return the series ``(batch, time, channels)`` for latent codes ``z (batch, latent_dim)``."""
        batch = z.shape[0]
        out = self.level(z).unsqueeze(1).expand(batch, self.seq_len, self.n_channels)
        if self.trend is not None:
            coefficients = self.trend(z).view(batch, self.n_channels, -1)  # (batch, channels, trend_poly)
            out = out + (coefficients @ self.poly_space).transpose(1, 2)
        for index, (num, _) in enumerate(self.config.seasons):
            per_season = self.seasons[index](z).view(batch, self.n_channels, num)
            season_index = getattr(self, f"season_index_{index}")
            out = out + per_season[:, :, season_index].transpose(1, 2)
        if self.residual is not None:
            out = out + self.residual(z)
        return out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the reconstruction of ``x`` from a sampled ``z``, and the mean and log-variance of ``q(z | x)``."""
        z_mean, z_log_var = self.encoder(x)
        z = z_mean + torch.exp(0.5 * z_log_var) * torch.randn_like(z_mean)
        return self.decode(z), z_mean, z_log_var


@dataclass
class TimeVAELoss:
    total: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


def timevae_loss(
    x: torch.Tensor, x_hat: torch.Tensor, z_mean: torch.Tensor, z_log_var: torch.Tensor, reconstruction_weight: float
) -> TimeVAELoss:
    """Return the TimeVAE loss per series (mean over the batch) and its two parts."""
    squared = ((x - x_hat) ** 2).sum(dim=(1, 2))
    # The authors add the error of the per-step mean over channels to the element-wise error.
    squared_channel_mean = ((x.mean(dim=2) - x_hat.mean(dim=2)) ** 2).sum(dim=1)
    reconstruction = (squared + squared_channel_mean).mean()
    kl = (-0.5 * (1 + z_log_var - z_mean**2 - z_log_var.exp()).sum(dim=1)).mean()
    return TimeVAELoss(reconstruction_weight * reconstruction + kl, reconstruction, kl)


@dataclass
class TimeVAEFit:
    """A trained TimeVAE with the scaler of its training data and its per-epoch losses."""

    model: TimeVAE
    scaler: MinMaxScaler
    history: dict[str, list[float]] = field(default_factory=dict)


def train_timevae(x: np.ndarray, config: TimeVAEConfig, seed: int, device: torch.device | str = "cpu") -> TimeVAEFit:
    """Train one TimeVAE on ``x (n, time, channels)``; returns the model, its scaler and per-epoch losses."""
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[0] < 2 or not np.isfinite(x).all():
        raise TardiffInputError(
            f"TimeVAE training series have shape {x.shape} or contain NaN/inf; pass at least 2 finite "
            "(n, time, channels) series"
        )
    torch.manual_seed(seed)  # weights and the reparameterisation noise
    generator = torch.Generator().manual_seed(seed)  # batch order
    scaler = MinMaxScaler.fit(x)
    data = torch.as_tensor(scaler.transform(x))
    model = TimeVAE(x.shape[1], x.shape[2], config).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, mode="min", factor=0.5, patience=config.lr_patience)

    history: dict[str, list[float]] = {"loss": [], "reconstruction": [], "kl": []}
    best, epochs_since_best = float("inf"), 0
    model.train()
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(data.shape[0], generator=generator)
        sums = {key: 0.0 for key in history}
        for start in range(0, data.shape[0], config.batch_size):
            batch = data[order[start : start + config.batch_size]].to(device)
            x_hat, z_mean, z_log_var = model(batch)
            loss = timevae_loss(batch, x_hat, z_mean, z_log_var, config.reconstruction_weight)
            optimiser.zero_grad(set_to_none=True)
            loss.total.backward()
            optimiser.step()
            for key, value in (("loss", loss.total), ("reconstruction", loss.reconstruction), ("kl", loss.kl)):
                sums[key] += value.item() * batch.shape[0]
        for key, values in history.items():
            values.append(sums[key] / data.shape[0])
        epoch_loss = history["loss"][-1]
        if not np.isfinite(epoch_loss):
            raise FloatingPointError(f"TimeVAE loss became {epoch_loss} in epoch {epoch}; lower baselines.timevae.lr")
        plateau.step(epoch_loss)
        if epoch_loss < best - config.early_stopping_min_delta:
            best, epochs_since_best = epoch_loss, 0
        else:
            epochs_since_best += 1
        if epochs_since_best >= config.early_stopping_patience:
            logger.info("TimeVAE stopped early after epoch %d (best loss %.4f)", epoch, best)
            break
    model.eval()
    return TimeVAEFit(model=model, scaler=scaler, history=history)


@torch.no_grad()
def sample_timevae(fit: TimeVAEFit, n: int, seed: int, batch_size: int = 4096) -> np.ndarray:
    """Decode ``n`` draws of ``z ~ N(0, I)``; returns ``(n, time, channels)`` float32 in the training data's units."""
    fit.model.eval()
    device = next(fit.model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, fit.model.config.latent_dim, generator=generator)
    parts = [fit.model.decode(z[start : start + batch_size].to(device)).cpu() for start in range(0, n, batch_size)]
    return fit.scaler.inverse_transform(torch.cat(parts).numpy())


def generate_timevae(
    x: np.ndarray,
    y: np.ndarray,
    counts: dict[int, int],
    config: TimeVAEConfig,
    seed: int,
    device: torch.device | str = "cpu",
) -> PerClassResult:
    """Train one TimeVAE per class and draw ``counts[label]`` series from each.

    Returns ``x (sum(counts), time, channels)`` float32 in the normalisation of
    ``x``, labels sorted ascending, and each class's per-epoch losses.
    """
    check_training_set(x, y)

    def fit_and_sample(x_class: np.ndarray, n: int, class_seed: int) -> tuple[np.ndarray, dict[str, list[float]]]:
        fit = train_timevae(x_class, config, class_seed, device)
        return sample_timevae(fit, n, class_seed), fit.history

    return generate_per_class(x, y, counts, fit_and_sample, seed, "TimeVAE")
