"""Train a small DDPM (diffusers UNet2DModel) on the configured dataset; not part of the DVC chain.

python -m stages.train [experiment=learned16] [train=default|collage|smoke] [train.out_dir=<folder>] ...
  → <train.out_dir or outputs/train/<name>-<digest>>/: config.json + diffusion_pytorch_model.safetensors
    + scheduler_config.json (a folder pipeline.models.load_unet reads), loss_curve.png, samples.png,
    train_summary.json (losses, held-out DSM per t, wall time), MODEL_CARD.md.
Runs through the stages' lifecycle (pipeline.runs.run_stage): meta.json with sha256 of inputs and outputs,
reuse of a complete folder, one writer per folder, and a resumable checkpoint in <parent>/.work-<name>/ (read
with weights_only=True) until the model folder is complete. train.out_dir may only name a new folder or a
model folder this stage wrote. Its primary config is conf/train.yaml.
Loss curves (every train.log_every steps), held-out DSM and the sample grid go to MLflow.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from pipeline.assemble.sources import dataset_inputs
from pipeline.runkeys import TRAIN_STAGE, run_spec, stage_dir
from pipeline.runs import check_replaceable, run_stage
from pipeline.settings import check_output_location, prepare_config
from pipeline.training_run import training_body, training_setup
from stages.cli_errors import in_job, run_cli


def run(cfg: DictConfig | dict) -> Path:
    """Train (resuming from the work folder), then publish the model folder through the stage lifecycle."""
    cfg = prepare_config(cfg)
    out_dir = cfg["train"]["out_dir"]
    if out_dir:
        check_output_location(out_dir, "train.out_dir")
    # train.out_dir, or outputs/train/<train.name>-<digest of dataset + schedule + train>; either way the
    # folder is named by train.out_dir in messages (training has no run_key)
    spec = run_spec(TRAIN_STAGE, cfg, final=Path(out_dir) if out_dir else stage_dir(TRAIN_STAGE, cfg))
    # an output folder that is not a finished model of this stage is refused before any work
    check_replaceable(spec.final, TRAIN_STAGE, "train.out_dir")
    setup = training_setup(cfg)
    result = run_stage(
        spec,
        training_body(setup),
        artifacts=("samples.png", "loss_curve.png", "MODEL_CARD.md", "train_summary.json"),
        inputs=dataset_inputs(setup.source),
    )
    return result.out_dir


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    in_job(run, cfg)


if __name__ == "__main__":
    run_cli(main)
