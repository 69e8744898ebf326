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

import logging
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from pipeline.assemble import dataset_inputs
from pipeline.runkeys import TRAIN_STAGE, run_key
from pipeline.runs import StageContext, check_replaceable, outputs_root, run_stage
from pipeline.settings import check_output_location, prepare_config
from stages.cli_errors import in_job, run_cli

log = logging.getLogger("pifs")


def output_folder(cfg: dict) -> Path:
    """train.out_dir, or outputs/train/<train.name>-<digest of dataset + schedule + train>."""
    tcfg = cfg["train"]
    if tcfg.get("out_dir"):
        return Path(tcfg["out_dir"])
    return outputs_root(cfg) / TRAIN_STAGE / run_key(TRAIN_STAGE, cfg)


def model_card(summary: dict) -> str:
    """MODEL_CARD.md text from the run summary."""
    t = summary["train"]
    ds = summary["dataset"]
    held = "\n".join(f"| {k} | {m:.4f} ± {s:.4f} |" for k, (m, s) in summary["heldout_dsm"].items())
    return f"""# {t.get("name", "model")}: a small DDPM trained by pifs-repro

- Architecture: diffusers UNet2DModel, block_out_channels {t["block_out_channels"]}, layers_per_block
  {t["layers_per_block"]}, blocks {t["down_block_types"]} / {t["up_block_types"]}, attention head dim
  {t["attention_head_dim"]}; {summary["num_parameters"]:,} parameters ({summary["weights_bytes"] / 1e6:.2f} MB
  safetensors), {t.get("prediction_type", "epsilon")} output (converted to the ε̂ of eq. (4) on load:
  pipeline/models/prediction.py).
- Data: {ds["num_images"]} seeded crops ({ds["resolution"]}x{ds["resolution"]}, RGB, [-1, 1]) of scikit-image's
  photographs {ds.get("photographs")} (dataset natural_crops, seed {ds.get("seed")}, scale {ds.get("scale")}).
- Schedule: {summary["scheduler_config"]["beta_schedule"]} β, T = {summary["scheduler_config"]["num_train_timesteps"]}
  (scheduler_config.json; paper t = diffusers index + 1).
- Objective: DSM ‖ε̂ − ε‖²/n, t ~ U{{1..T}} (paper §2.1), weighted as the prediction type's own MSE
  (pipeline.training.dsm_loss), Min-SNR γ = {t["min_snr_gamma"]};
  collage regulariser μ_reg = {t["mu_reg"]} (Theorem 15; scheme {t["reg_scheme"]}, {t["reg_probes"]} probe(s) on
  {t["reg_batch"]} samples per batch).
- Optimiser: AdamW lr {t["lr"]} (warm-up {t["warmup_steps"]}, cosine to 10 %), batch {t["batch_size"]},
  grad clip {t["grad_clip"]}, EMA {t["ema_decay"]} (the weights shipped are the EMA); seed {t["seed"]}.
- Steps: {summary["steps"]} (LR cosine horizon {t["steps"]} steps, stop_at {t["stop_at"]});
  wall time {summary["wall_s"] / 60:.1f} min on {summary["machine"]}
  ({summary["threads"]} torch thread(s)).
- Final running DSM loss: {summary["final"]["dsm"]:.4f}.

Held-out DSM loss ‖ε̂ − ε‖²/n per paper t ({summary["eval_images"]} crops of another seed, fixed noise;
mean ± standard error):

| t | held-out DSM |
|---|---|
{held}

Figures: `loss_curve.png` (running-mean training loss), `samples.png` ({summary["sample_count"]} DDIM samples,
{summary["sample_steps"]} steps, seeds 0..{summary["sample_count"] - 1}).
"""


def run(cfg: DictConfig | dict) -> Path:
    """Train (resuming from the work folder), then publish the model folder through the stage lifecycle."""
    cfg = prepare_config(cfg)
    if cfg["train"].get("out_dir"):
        check_output_location(cfg["train"]["out_dir"], "train.out_dir")
    # an output folder that is not a finished model of this stage is refused before any work
    final = output_folder(cfg)
    check_replaceable(final, TRAIN_STAGE, "train.out_dir")
    from pipeline import io
    from pipeline.data import dataset_from_config
    from pipeline.geometry import schedule_from_config, schedule_from_diffusers_config, strided_chain
    from pipeline.provenance import git_revision, machine
    from pipeline.training import (
        TrainConfig,
        diffusers_scheduler_config,
        heldout_dsm,
        plot_loss_curve,
        save_model,
        train,
    )

    tcfg = dict(cfg["train"])
    threads = int(tcfg.get("threads") or 1)
    torch.set_num_threads(threads)
    tc = TrainConfig.from_dict(tcfg)
    if tc.patch_size != int(cfg["patch"]["size"]):
        log.info(
            "train.patch_size=%d (collage blocks) differs from patch.size=%d",
            tc.patch_size,
            cfg["patch"]["size"],
        )
    schedule = schedule_from_config(cfg["schedule"])
    sched_json = diffusers_scheduler_config(cfg["schedule"], tc.prediction_type)
    # the checkpoint must carry exactly the ᾱ_t it was trained with
    diff = np.abs(schedule_from_diffusers_config(sched_json).alpha_bar - schedule.alpha_bar).max()
    if diff > 1e-6:
        raise ValueError(
            f"scheduler_config.json would give ᾱ_t off by {diff:.2e} from schedule={cfg['schedule']}"
        )
    dcfg = dict(cfg["dataset"])
    source = dataset_from_config(dcfg)
    eval_n = int(tcfg.get("eval_images", 512))

    def body(ctx: StageContext) -> None:
        data = torch.from_numpy(np.ascontiguousarray(source.load_all(), dtype=np.float32))
        held = dataset_from_config({**dcfg, "seed": int(dcfg.get("seed", 0)) + 1000, "num_images": eval_n})
        held = torch.from_numpy(np.ascontiguousarray(held.load_all(), dtype=np.float32))
        tracker = ctx.tracker
        state = train(
            tc,
            data,
            schedule.alpha_bar,
            ctx.work_dir,
            progress=ctx.progress,
            log_fn=lambda step, m: tracker.log_metrics({f"train/{k}": v for k, v in m.items()}, step),
        )
        eval_ts = [int(t) for t in tcfg.get("eval_timesteps", [1, 10, 50, 100, 250, 500, 750, 1000])]
        held_res = heldout_dsm(
            state.ema, held, schedule.alpha_bar, eval_ts, seed=0, prediction_type=tc.prediction_type
        )
        for t, (m, _) in held_res.items():
            tracker.log_metrics({"heldout_dsm": m}, step=t)
        tmp = ctx.out_dir
        save_model(state.ema, tmp, sched_json)
        from pipeline.models import load_unet
        from pipeline.sampler import ddim_sample, initial_noise, save_sample_grid

        model = load_unet(tmp, dtype="float32", device="cpu")
        n_s, s_steps = int(tcfg.get("sample_count", 64)), int(tcfg.get("sample_steps", 50))
        chain = strided_chain(schedule, s_steps, spacing="leading")
        xT = torch.cat([initial_noise(s, (1, *data.shape[1:])) for s in range(n_s)])
        x0 = ddim_sample(model, chain, xT, progress=False).x[-1]
        save_sample_grid(x0, tmp / "samples.png", nrow=8)
        plot_loss_curve(
            state.history,
            tmp / "loss_curve.png",
            title=f"{tc_name(tcfg)}: μ_reg={tc.mu_reg}, {state.step} steps",
        )
        weights = tmp / "diffusion_pytorch_model.safetensors"
        summary = {
            "train": {**tc.to_dict(), "name": tc_name(tcfg)},
            "dataset": dcfg,
            "scheduler_config": sched_json,
            "steps": state.step,
            "wall_s": state.wall_s,
            "threads": threads,
            "machine": f"{machine().get('platform')}, {machine().get('cpus')} CPUs (shared)",
            "num_parameters": sum(p.numel() for p in state.ema.parameters()),
            "weights_bytes": weights.stat().st_size,
            "final": state.history[-1] if state.history else {},
            "history": state.history,
            "heldout_dsm": {str(k): v for k, v in held_res.items()},
            "eval_images": eval_n,
            "sample_count": n_s,
            "sample_steps": s_steps,
            "sample_stats": {
                "mean": float(x0.mean()),
                "std": float(x0.std()),
                "abs_max": float(x0.abs().max()),
            },
            "git_revision": git_revision(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "mlflow_run_id": tracker.run_id,
        }
        io.write_json(tmp / "train_summary.json", summary)
        io.write_text(tmp / "MODEL_CARD.md", model_card(summary))
        ctx.metrics.update(wall_s=state.wall_s, steps=float(state.step))
        log.info("train: %d steps in %.1f min", state.step, state.wall_s / 60)

    result = run_stage(
        TRAIN_STAGE,
        cfg,
        body,
        artifacts=("samples.png", "loss_curve.png", "MODEL_CARD.md", "train_summary.json"),
        inputs=dataset_inputs(source),
        final=final,
    )
    return result.out_dir


def tc_name(tcfg: dict) -> str:
    return str(tcfg.get("name", "train"))


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    in_job(run, cfg)


if __name__ == "__main__":
    run_cli(main)
