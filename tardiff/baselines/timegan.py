"""TimeGAN (Yoon, Jarrett and van der Schaar, "Time-series Generative Adversarial Networks",
NeurIPS 2019), written for PyTorch.

Five recurrent networks (GRU stacks, each followed by a linear layer):

- embedder ``E``: series ``x`` -> embeddings ``h`` (sigmoid);
- recovery ``R``: ``h`` -> series (sigmoid, so data are min-max scaled to ``[0, 1]``);
- generator ``G``: uniform noise ``z`` -> embeddings ``e_hat`` (sigmoid);
- supervisor ``S``: embeddings -> next-step embeddings (sigmoid, one GRU layer fewer);
- discriminator ``D``: embeddings -> one real/fake logit per time step.

Synthetic series are ``R(S(G(z)))``. Training has three phases, as in the
authors' code:

1. autoencoder: ``E`` and ``R`` minimise ``10 sqrt(MSE(x, R(E(x))))``;
2. supervised: ``S`` minimises ``L_S = MSE(h[:, 1:], S(h)[:, :-1])``;
3. joint: each iteration takes two generator steps, each followed by an
   embedder step, then one discriminator step.

   - generator step: ``G`` and ``S`` minimise ``BCE(D(S(e_hat)), 1) +
     gamma BCE(D(e_hat), 1) + 100 sqrt(L_S) + 100 L_V``. ``L_V`` is the mean
     absolute gap between the batch standard deviations of real and synthetic
     series plus that between their batch means.
   - embedder step: ``E`` and ``R`` minimise ``10 sqrt(MSE) + 0.1 L_S``.
   - discriminator step: ``D`` minimises ``BCE(D(h), 1) + BCE(D(S(e_hat)), 0) +
     gamma BCE(D(e_hat), 0)``, but only while that loss exceeds
     ``discriminator_threshold``.

Every update has its own Adam optimiser, as every solver has in the authors'
code. Their defaults, which the ``paper`` profile sets: hidden size 24, 3 GRU
layers, batch 128, 50,000 iterations in each phase, gamma 1, Adam with learning
rate 1e-3.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tardiff.baselines.common import MinMaxScaler, PerClassResult, check_training_set, generate_per_class
from tardiff.config import TimeGANConfig
from tardiff.errors import TardiffInputError

logger = logging.getLogger(__name__)

# Loss weights of the authors' code (not tuned here).
RECONSTRUCTION_WEIGHT = 10.0  # on sqrt(MSE) of the autoencoder
SUPERVISED_WEIGHT_GENERATOR = 100.0  # on sqrt(L_S) in the generator loss
MOMENT_WEIGHT = 100.0  # on L_V in the generator loss
SUPERVISED_WEIGHT_EMBEDDER = 0.1  # on L_S in the joint embedder loss
GENERATOR_STEPS_PER_ITERATION = 2
MOMENT_EPS = 1e-6  # inside the square root of the batch variance
LOG_EVERY = 50  # iterations per entry of the loss history


class RecurrentNet(nn.Module):
    """A GRU stack over ``(batch, time, features)`` followed by a linear layer per time step."""

    def __init__(self, in_dim: int, hidden_dim: int, num_layers: int, out_dim: int, sigmoid: bool):
        super().__init__()
        self.gru = nn.GRU(in_dim, hidden_dim, num_layers=num_layers, batch_first=True)
        self.out = nn.Linear(hidden_dim, out_dim)
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.out(self.gru(x)[0])
        return torch.sigmoid(output) if self.sigmoid else output


class TimeGAN(nn.Module):
    """The five networks of TimeGAN for series with ``n_channels`` channels scaled to ``[0, 1]``."""

    def __init__(self, n_channels: int, config: TimeGANConfig):
        super().__init__()
        hidden, layers = config.hidden_dim, config.num_layers
        self.n_channels = n_channels
        self.embedder = RecurrentNet(n_channels, hidden, layers, hidden, sigmoid=True)
        self.recovery = RecurrentNet(hidden, hidden, layers, n_channels, sigmoid=True)
        self.generator = RecurrentNet(n_channels, hidden, layers, hidden, sigmoid=True)  # noise has n_channels dims
        self.supervisor = RecurrentNet(hidden, hidden, layers - 1, hidden, sigmoid=True)
        self.discriminator = RecurrentNet(hidden, hidden, layers, 1, sigmoid=False)

    def synthesise(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(e_hat, h_hat, x_hat)`` for noise ``z (batch, time, channels)``."""
        e_hat = self.generator(z)
        h_hat = self.supervisor(e_hat)
        return e_hat, h_hat, self.recovery(h_hat)


def supervised_loss(model: TimeGAN, h: torch.Tensor) -> torch.Tensor:
    """Return ``MSE(h[:, 1:], S(h)[:, :-1])``: how well the supervisor predicts the next embedding."""
    return F.mse_loss(model.supervisor(h)[:, :-1], h[:, 1:])


def moment_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Return the mean absolute gap of batch standard deviations plus that of batch means, per step and channel."""
    std_gap = (torch.sqrt(x_hat.var(dim=0, unbiased=False) + MOMENT_EPS)
               - torch.sqrt(x.var(dim=0, unbiased=False) + MOMENT_EPS)).abs().mean()
    mean_gap = (x_hat.mean(dim=0) - x.mean(dim=0)).abs().mean()
    return std_gap + mean_gap


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


@dataclass
class TimeGANFit:
    """A trained TimeGAN with the scaler of its training data and its loss history (means over LOG_EVERY iterations)."""

    model: TimeGAN
    scaler: MinMaxScaler
    history: dict[str, list[float]] = field(default_factory=dict)


class _Trainer:
    """Batches, noise and the five Adam optimisers of one TimeGAN training run."""

    def __init__(self, model: TimeGAN, data: torch.Tensor, config: TimeGANConfig, seed: int, device):
        self.model, self.data, self.config, self.device = model, data, config, device
        self.generator = torch.Generator().manual_seed(seed)
        self.autoencoder_opt = self._adam(model.embedder, model.recovery)
        self.supervised_opt = self._adam(model.generator, model.supervisor)
        self.generator_opt = self._adam(model.generator, model.supervisor)
        self.embedder_opt = self._adam(model.embedder, model.recovery)
        self.discriminator_opt = self._adam(model.discriminator)
        self.history: dict[str, list[float]] = {}
        self._window: dict[str, list[float]] = {}

    def _adam(self, *nets: nn.Module) -> torch.optim.Adam:
        return torch.optim.Adam([p for net in nets for p in net.parameters()], lr=self.config.lr)

    def batch(self) -> torch.Tensor:
        """Return up to ``batch_size`` series drawn without replacement."""
        index = torch.randperm(self.data.shape[0], generator=self.generator)[: self.config.batch_size]
        return self.data[index].to(self.device)

    def noise(self, like: torch.Tensor) -> torch.Tensor:
        return torch.rand(like.shape, generator=self.generator).to(self.device)

    def record(self, iteration: int, last: bool, **losses: float) -> None:
        for key, value in losses.items():
            self._window.setdefault(key, []).append(value)
        if iteration % LOG_EVERY == 0 or last:
            for key, values in self._window.items():
                self.history.setdefault(key, []).append(float(np.mean(values)))
            self._window = {}

    @staticmethod
    def step(optimiser: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    def autoencoder_phase(self) -> None:
        model = self.model
        for iteration in range(1, self.config.embedding_iterations + 1):
            x = self.batch()
            mse = F.mse_loss(model.recovery(model.embedder(x)), x)
            self.step(self.autoencoder_opt, RECONSTRUCTION_WEIGHT * torch.sqrt(mse))
            self.record(iteration, iteration == self.config.embedding_iterations, embedding_mse=mse.item())

    def supervised_phase(self) -> None:
        model = self.model
        for iteration in range(1, self.config.supervised_iterations + 1):
            with torch.no_grad():
                h = model.embedder(self.batch())  # the embedder is not trained in this phase
            loss = supervised_loss(model, h)
            self.step(self.supervised_opt, loss)
            self.record(iteration, iteration == self.config.supervised_iterations, supervised_mse=loss.item())

    def joint_phase(self) -> None:
        model, config = self.model, self.config
        for iteration in range(1, config.joint_iterations + 1):
            last = iteration == config.joint_iterations
            for _ in range(GENERATOR_STEPS_PER_ITERATION):
                x = self.batch()
                z = self.noise(x)

                # Generator and supervisor; gradients pass through D and R, but only G and S are stepped.
                e_hat, h_hat, x_hat = model.synthesise(z)
                adversarial = _bce(model.discriminator(h_hat), 1.0)
                adversarial_e = _bce(model.discriminator(e_hat), 1.0)
                with torch.no_grad():
                    h = model.embedder(x)
                supervised = supervised_loss(model, h)
                moments = moment_loss(x_hat, x)
                generator_loss = (adversarial + config.gamma * adversarial_e
                                  + SUPERVISED_WEIGHT_GENERATOR * torch.sqrt(supervised) + MOMENT_WEIGHT * moments)
                self.step(self.generator_opt, generator_loss)

                # Embedder and recovery, on the same batch.
                h = model.embedder(x)
                mse = F.mse_loss(model.recovery(h), x)
                embedder_loss = (RECONSTRUCTION_WEIGHT * torch.sqrt(mse)
                                 + SUPERVISED_WEIGHT_EMBEDDER * supervised_loss(model, h))
                self.step(self.embedder_opt, embedder_loss)

            x = self.batch()
            z = self.noise(x)
            with torch.no_grad():
                h = model.embedder(x)
                e_hat, h_hat, _ = model.synthesise(z)
            discriminator_loss = (_bce(model.discriminator(h), 1.0) + _bce(model.discriminator(h_hat), 0.0)
                                  + config.gamma * _bce(model.discriminator(e_hat), 0.0))
            # The authors' rule: update the discriminator only while it does not yet separate well.
            if discriminator_loss.item() > config.discriminator_threshold:
                self.step(self.discriminator_opt, discriminator_loss)
            self.record(
                iteration, last, generator_adversarial=adversarial.item(), generator_moments=moments.item(),
                generator_supervised=supervised.item(), joint_embedding_mse=mse.item(),
                discriminator=discriminator_loss.item(),
            )


def train_timegan(x: np.ndarray, config: TimeGANConfig, seed: int, device: torch.device | str = "cpu") -> TimeGANFit:
    """Train one TimeGAN on ``x (n, time, channels)`` in the three phases; returns the model, scaler and losses."""
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[0] < 2 or x.shape[1] < 2 or not np.isfinite(x).all():
        raise TardiffInputError(
            f"TimeGAN training series have shape {x.shape} or contain NaN/inf; pass at least 2 finite "
            "(n, time, channels) series with at least 2 time steps"
        )
    torch.manual_seed(seed)  # initial weights
    scaler = MinMaxScaler.fit(x)
    model = TimeGAN(x.shape[2], config).to(device)
    # Training mode throughout: the networks have no dropout, and cuDNN's GRU runs backward in training mode only.
    model.train()
    trainer = _Trainer(model, torch.as_tensor(scaler.transform(x)), config, seed, device)
    trainer.autoencoder_phase()
    trainer.supervised_phase()
    trainer.joint_phase()
    model.eval()
    return TimeGANFit(model=model, scaler=scaler, history=trainer.history)


@torch.no_grad()
def sample_timegan(fit: TimeGANFit, n: int, seq_len: int, seed: int, batch_size: int = 4096) -> np.ndarray:
    """Return ``n`` series ``R(S(G(z)))`` with uniform noise ``z``: ``(n, seq_len, channels)`` float32 in data units."""
    fit.model.eval()
    device = next(fit.model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    z = torch.rand(n, seq_len, fit.model.n_channels, generator=generator)
    parts = [fit.model.synthesise(z[start : start + batch_size].to(device))[2].cpu() for start in range(0, n, batch_size)]
    return fit.scaler.inverse_transform(torch.cat(parts).numpy())


def generate_timegan(
    x: np.ndarray,
    y: np.ndarray,
    counts: dict[int, int],
    config: TimeGANConfig,
    seed: int,
    device: torch.device | str = "cpu",
) -> PerClassResult:
    """Train one TimeGAN per class and draw ``counts[label]`` series from each.

    Returns ``x (sum(counts), time, channels)`` float32 in the normalisation of
    ``x``, labels sorted ascending, and each class's loss history.
    """
    check_training_set(x, y)

    def fit_and_sample(x_class: np.ndarray, n: int, class_seed: int) -> tuple[np.ndarray, dict[str, list[float]]]:
        fit = train_timegan(x_class, config, class_seed, device)
        return sample_timegan(fit, n, x_class.shape[1], class_seed), fit.history

    return generate_per_class(x, y, counts, fit_and_sample, seed, "TimeGAN")
