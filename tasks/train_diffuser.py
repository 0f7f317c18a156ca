"""Stage 2: train the label-conditional 1-D U-Net DDPM with EMA weights."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import mlflow

from tardiff.config import Params
from tardiff.data.cohort import load_prepared
from tardiff.io import save_checkpoint, write_json
from tardiff.training import resolve_device, train_diffuser
from tardiff.unet import UNet1D
from tasks import tracking
from tasks.common import metrics_path, run_stage, stage_dir

logger = logging.getLogger("tasks.train_diffuser")

SEED_OFFSET = 1  # each stage derives its own seed from params.seed


def main(params: Params, root: Path) -> None:
    cohort = load_prepared(stage_dir("preprocess"))
    device = resolve_device(params.device)
    out = stage_dir("train_diffuser")

    with tracking.stage_run("train_diffuser", params, root):

        def on_checkpoint(step: int, model: UNet1D, ema_model: UNet1D, loss: float) -> None:
            mlflow.log_metric("train_loss", loss, step=step)
            # One rolling snapshot: enough to inspect a run that died, without filling the DVC cache.
            save_checkpoint(
                out / "snapshot.pt",
                {"step": step, "model": model.state_dict(), "ema_model": ema_model.state_dict()},
            )

        result = train_diffuser(
            cohort.train.x, cohort.train.y, params.diffusion, device, params.seed + SEED_OFFSET, on_checkpoint
        )
        checkpoint = out / "model.pt"
        save_checkpoint(
            checkpoint,
            {
                "unet_config": dataclasses.asdict(result.model.config),
                "diffusion": dataclasses.asdict(params.diffusion),
                "model": result.model.state_dict(),
                "ema_model": result.ema_model.state_dict(),
                "steps": params.diffusion.train_steps,
            },
        )
        metrics = {
            "final_loss": result.losses[-1],
            "parameters": sum(p.numel() for p in result.model.parameters()),
            "steps": params.diffusion.train_steps,
        }
        write_json(metrics_path("train_diffuser"), metrics)
        write_json(out / "loss_curve.json", {"log_every": 50, "loss": result.losses})
        tracking.log_metrics({"final_loss": metrics["final_loss"], "parameters": metrics["parameters"]})
        mlflow.log_artifact(str(checkpoint), artifact_path="checkpoints")
        logger.info("trained diffuser on %s: %s", device, metrics)


if __name__ == "__main__":
    run_stage("train_diffuser", main)
