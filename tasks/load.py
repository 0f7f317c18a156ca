"""Loaders for the checkpoints that one stage writes and later stages read."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from tardiff.classifier import GRUClassifier, GRUClassifierConfig
from tardiff.config import DiffusionConfig
from tardiff.diffusion import GaussianDiffusion
from tardiff.errors import CorruptFileError
from tardiff.io import load_checkpoint
from tardiff.unet import UNet1D, UNetConfig


def _tuples(raw: dict) -> dict:
    return {key: tuple(value) if isinstance(value, list) else value for key, value in raw.items()}


def load_diffuser(path: Path, use_ema: bool, device: torch.device) -> tuple[UNet1D, GaussianDiffusion]:
    """Load the U-Net (EMA or raw weights) and its noise schedule from a train_diffuser checkpoint."""
    payload = load_checkpoint(path, required=("unet_config", "diffusion", "model", "ema_model"))
    try:
        model = UNet1D(UNetConfig(**_tuples(payload["unet_config"])))
        model.load_state_dict(payload["ema_model" if use_ema else "model"])
        config = DiffusionConfig(**_tuples(payload["diffusion"]))
    except (TypeError, RuntimeError) as exc:
        raise CorruptFileError(f"checkpoint {path} does not match the U-Net code ({exc}); re-run train_diffuser") from exc
    diffusion = GaussianDiffusion(config.timesteps, config.beta_start, config.beta_end, config.loss)
    return model.to(device).eval(), diffusion


def load_classifier(path: Path, device: torch.device) -> GRUClassifier:
    """Load the guidance classifier from a train_classifier checkpoint, in eval mode."""
    payload = load_checkpoint(path, required=("config", "model"))
    try:
        model = GRUClassifier(GRUClassifierConfig(**payload["config"]))
        model.load_state_dict(payload["model"])
    except (TypeError, RuntimeError) as exc:
        raise CorruptFileError(
            f"checkpoint {path} does not match the classifier code ({exc}); re-run train_classifier"
        ) from exc
    return model.to(device).eval()


def classifier_payload(model: GRUClassifier) -> dict:
    """Return what :func:`load_classifier` needs, for ``save_checkpoint``."""
    return {"config": dataclasses.asdict(model.config), "model": model.state_dict()}
