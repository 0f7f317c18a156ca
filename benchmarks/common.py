"""Loading a finished pipeline run for the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tardiff.classifier import GRUClassifier
from tardiff.config import Params, load_params
from tardiff.data.cohort import PreparedCohort, load_prepared
from tardiff.diffusion import GaussianDiffusion
from tardiff.io import load_checkpoint
from tardiff.training import resolve_device
from tardiff.unet import UNet1D
from tasks.load import load_classifier, load_diffuser


@dataclass
class TrainedRun:
    """The parameters, cohort and trained models of one pipeline run."""

    params: Params
    device: torch.device
    cohort: PreparedCohort
    classifier: GRUClassifier
    unet: UNet1D | None
    diffusion: GaussianDiffusion | None


def load_trained_run(outputs: str | Path, with_diffuser: bool = True) -> TrainedRun:
    """Load the preprocess, classifier and (optionally) diffuser outputs of ``outputs/<cohort>``.

    The parameters are those of the cohort that names the folder.
    """
    outputs = Path(outputs)
    params = load_params(cohort=outputs.name)
    device = resolve_device(params.device)
    cohort = load_prepared(outputs / "preprocess")
    classifier = load_classifier(outputs / "train_classifier/model.pt", device)
    unet = diffusion = None
    if with_diffuser:
        unet, diffusion = load_diffuser(outputs / "train_diffuser/model.pt", params.generate.use_ema, device)
    return TrainedRun(params, device, cohort, classifier, unet, diffusion)


def load_unit_vector(outputs: str | Path, device: torch.device, required: tuple[str, ...]) -> tuple[torch.Tensor, dict]:
    """Return the precomputed guidance vector rescaled to unit norm, and its checkpoint payload."""
    payload = load_checkpoint(Path(outputs) / "precompute_ihvp/vector.pt", required=("vector", *required))
    vector = payload["vector"].to(device)
    return vector / vector.norm(), payload
