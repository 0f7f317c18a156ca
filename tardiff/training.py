"""Training loops for the diffusion model and the GRU classifier."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score
from tqdm.auto import tqdm

from tardiff.classifier import GRUClassifier, GRUClassifierConfig
from tardiff.config import ClassifierConfig, DiffusionConfig
from tardiff.diffusion import GaussianDiffusion
from tardiff.unet import UNet1D, UNetConfig

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """Return the torch device for ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device is 'cuda' in params.yaml but no CUDA device is visible; set device: auto or cpu")
    return torch.device(name)


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """Return a torch generator on ``device`` seeded with ``seed``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


class EMA:
    """Exponential moving average of a model's weights: ``w_ema <- d w_ema + (1 - d) w``."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - self.decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)


def build_unet(config: DiffusionConfig, in_channels: int) -> UNet1D:
    """Build the 1-D U-Net described by the ``diffusion`` section of ``params.yaml``."""
    return UNet1D(
        UNetConfig(
            in_channels=in_channels,
            base_channels=config.base_channels,
            channel_mult=config.channel_mult,
            num_res_blocks=config.num_res_blocks,
            attention_levels=config.attention_levels,
            num_heads=config.num_heads,
            dropout=config.dropout,
        )
    )


def build_diffusion(config: DiffusionConfig) -> GaussianDiffusion:
    """Build the noise schedule and loss described by the ``diffusion`` section."""
    return GaussianDiffusion(config.timesteps, config.beta_start, config.beta_end, config.loss)


@dataclass
class DiffuserTrainingResult:
    model: UNet1D
    ema_model: UNet1D
    losses: list[float] = field(default_factory=list)  # mean loss per logging window


def train_diffuser(
    x_train: np.ndarray,
    y_train: np.ndarray,
    config: DiffusionConfig,
    device: torch.device,
    seed: int,
    on_checkpoint: Callable[[int, UNet1D, UNet1D, float], None] | None = None,
    log_every: int = 50,
) -> DiffuserTrainingResult:
    """Train the label-conditional U-Net on ``x_train (n, time, channels)`` with labels ``y_train (n,)``.

    AdamW with linear warm-up, uniform timesteps, EMA of the weights.
    ``on_checkpoint(step, model, ema_model, recent_loss)`` is called every
    ``config.checkpoint_every`` steps and after the last step.
    """
    torch.manual_seed(seed)
    generator = seeded_generator(seed, device)
    x_all = torch.as_tensor(x_train, dtype=torch.float32, device=device).transpose(1, 2)  # (n, channels, time)
    y_all = torch.as_tensor(y_train, dtype=torch.long, device=device)
    model = build_unet(config, x_all.shape[1]).to(device)
    diffusion = build_diffusion(config)
    ema = EMA(model, config.ema_decay)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warmup = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min(1.0, (step + 1) / max(1, config.warmup_steps))
    )

    losses: list[float] = []
    window: list[float] = []
    model.train()
    progress = tqdm(range(1, config.train_steps + 1), desc="train_diffuser", mininterval=5, leave=False)
    for step in progress:
        index = torch.randint(0, x_all.shape[0], (config.batch_size,), device=device, generator=generator)
        loss = diffusion.training_loss(model, x_all[index], y_all[index], generator=generator)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"diffusion loss became {loss.item()} at step {step}; lower diffusion.lr (now {config.lr})"
            )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        warmup.step()
        ema.update(model)

        window.append(loss.item())
        if step % log_every == 0 or step == config.train_steps:
            losses.append(float(np.mean(window)))
            window = []
            progress.set_postfix(loss=f"{losses[-1]:.4f}")
        if on_checkpoint is not None and (step % config.checkpoint_every == 0 or step == config.train_steps):
            on_checkpoint(step, model, ema.model, losses[-1] if losses else float("nan"))
    model.eval()
    return DiffuserTrainingResult(model=model, ema_model=ema.model, losses=losses)


def build_classifier(config: ClassifierConfig, in_channels: int) -> GRUClassifier:
    """Build the bidirectional GRU classifier described by a classifier section."""
    return GRUClassifier(GRUClassifierConfig(in_channels, config.hidden_size, config.num_layers, config.dropout))


@torch.no_grad()
def predict_proba(model: GRUClassifier, x: np.ndarray | torch.Tensor, device: torch.device, batch_size: int = 2048) -> np.ndarray:
    """Return the predicted probability of class 1 for ``x (n, time, channels)``."""
    model.eval()
    x = torch.as_tensor(x, dtype=torch.float32)
    out = [torch.sigmoid(model(x[i : i + batch_size].to(device))).cpu() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out).numpy()


def binary_metrics(y_true: np.ndarray, y_score: np.ndarray) -> dict[str, float]:
    """Return AUROC and AUPRC; raises ``ValueError`` when ``y_true`` has one class only."""
    if len(np.unique(y_true)) < 2:
        raise ValueError(f"AUROC and AUPRC need both classes in the labels, got only {np.unique(y_true).tolist()}")
    return {
        "auroc": float(roc_auc_score(y_true, y_score)),
        "auprc": float(average_precision_score(y_true, y_score)),
    }


@dataclass
class ClassifierTrainingResult:
    model: GRUClassifier
    best_epoch: int
    history: list[dict[str, float]]  # per epoch: train loss and, when selecting, validation metrics


def train_classifier(
    x_train: np.ndarray,
    y_train: np.ndarray,
    config: ClassifierConfig,
    device: torch.device,
    seed: int,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    desc: str = "train_classifier",
) -> ClassifierTrainingResult:
    """Train the GRU classifier with binary cross-entropy and Adam.

    With a validation split, the weights of the epoch with the best validation
    AUPRC are returned; without one, those of the last epoch.
    """
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"training labels contain one class only ({np.unique(y_train).tolist()}); need both")
    torch.manual_seed(seed)
    generator = seeded_generator(seed)
    x_all = torch.as_tensor(x_train, dtype=torch.float32)
    y_all = torch.as_tensor(y_train, dtype=torch.float32)
    model = build_classifier(config, x_all.shape[-1]).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)

    history: list[dict[str, float]] = []
    best_state, best_epoch, best_auprc = None, config.epochs, -math.inf
    progress = tqdm(range(1, config.epochs + 1), desc=desc, mininterval=5, leave=False)
    for epoch in progress:
        model.train()
        order = torch.randperm(x_all.shape[0], generator=generator)
        total = 0.0
        for start in range(0, x_all.shape[0], config.batch_size):
            index = order[start : start + config.batch_size]
            logits = model(x_all[index].to(device))
            loss = F.binary_cross_entropy_with_logits(logits, y_all[index].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.item() * index.numel()
        record = {"epoch": epoch, "train_loss": total / x_all.shape[0]}
        if x_val is not None and y_val is not None:
            val = binary_metrics(y_val, predict_proba(model, x_val, device))
            record.update({"val_auroc": val["auroc"], "val_auprc": val["auprc"]})
            if val["auprc"] > best_auprc:
                best_auprc, best_epoch = val["auprc"], epoch
                best_state = copy.deepcopy(model.state_dict())
        history.append(record)
        progress.set_postfix(loss=f"{record['train_loss']:.4f}")
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return ClassifierTrainingResult(model=model, best_epoch=best_epoch, history=history)
