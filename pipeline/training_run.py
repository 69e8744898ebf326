"""The train stage's work: check a training config, then train (resumable), evaluate, sample and publish
the model folder (weights, scheduler config, loss curve, sample grid, summary, model card)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline import io
from pipeline.data import dataset_from_config
from pipeline.errors import ConfigError
from pipeline.geometry import schedule_from_config, schedule_from_diffusers_config, strided_chain
from pipeline.models import load_unet
from pipeline.provenance import git_revision, machine
from pipeline.sampler import ddim_sample, initial_noise, save_sample_grid
from pipeline.training import (
    TrainConfig,
    diffusers_scheduler_config,
    heldout_dsm,
    plot_loss_curve,
    save_model,
    train,
)

log = logging.getLogger("pifs")


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


def tc_name(tcfg: Mapping[str, Any]) -> str:
    return str(tcfg["name"])


@dataclass
class TrainingSetup:
    """A checked training config and the objects it needs."""

    tc: TrainConfig
    tcfg: dict
    dcfg: dict
    schedule: Any
    sched_json: dict
    source: Any
    eval_n: int
    threads: int


def training_setup(cfg: Mapping[str, Any]) -> TrainingSetup:
    """Check the training config (before any work) and build the schedule and the data source."""
    tcfg = dict(cfg["train"])
    threads = int(tcfg["threads"])
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
        raise ConfigError(
            f"scheduler_config.json would give ᾱ_t off by {diff:.2e} from schedule={cfg['schedule']} — "
            "use a schedule diffusers can express (linear or squaredcos_cap_v2 betas)"
        )
    dcfg = dict(cfg["dataset"])
    return TrainingSetup(
        tc=tc,
        tcfg=tcfg,
        dcfg=dcfg,
        schedule=schedule,
        sched_json=sched_json,
        source=dataset_from_config(dcfg),
        eval_n=int(tcfg["eval_images"]),
        threads=threads,
    )


def training_body(s: TrainingSetup):
    """The train stage's body for pipeline.runs.run_stage."""

    def body(ctx) -> None:
        data = torch.from_numpy(np.ascontiguousarray(s.source.load_all(), dtype=np.float32))
        held = dataset_from_config({**s.dcfg, "seed": int(s.dcfg["seed"]) + 1000, "num_images": s.eval_n})
        held = torch.from_numpy(np.ascontiguousarray(held.load_all(), dtype=np.float32))
        tracker = ctx.tracker
        state = train(
            s.tc,
            data,
            s.schedule.alpha_bar,
            ctx.work_dir,
            progress=ctx.progress,
            log_fn=lambda step, m: tracker.log_metrics({f"train/{k}": v for k, v in m.items()}, step),
        )
        eval_ts = [int(t) for t in s.tcfg["eval_timesteps"]]
        held_res = heldout_dsm(
            state.ema, held, s.schedule.alpha_bar, eval_ts, seed=0, prediction_type=s.tc.prediction_type
        )
        for t, (m, _) in held_res.items():
            tracker.log_metrics({"heldout_dsm": m}, step=t)
        tmp = ctx.out_dir
        save_model(state.ema, tmp, s.sched_json)
        model = load_unet(tmp, dtype="float32", device="cpu")
        n_s, s_steps = int(s.tcfg["sample_count"]), int(s.tcfg["sample_steps"])
        chain = strided_chain(s.schedule, s_steps, spacing="leading")
        xT = torch.cat([initial_noise(s, (1, *data.shape[1:])) for s in range(n_s)])
        x0 = ddim_sample(model, chain, xT, progress=False).x[-1]
        save_sample_grid(x0, tmp / "samples.png", nrow=8)
        plot_loss_curve(
            state.history,
            tmp / "loss_curve.png",
            title=f"{tc_name(s.tcfg)}: μ_reg={s.tc.mu_reg}, {state.step} steps",
        )
        weights = tmp / "diffusion_pytorch_model.safetensors"
        summary = {
            "train": {**s.tc.to_dict(), "name": tc_name(s.tcfg)},
            "dataset": s.dcfg,
            "scheduler_config": s.sched_json,
            "steps": state.step,
            "wall_s": state.wall_s,
            "threads": s.threads,
            "machine": f"{machine().get('platform')}, {machine().get('cpus')} CPUs (shared)",
            "num_parameters": sum(p.numel() for p in state.ema.parameters()),
            "weights_bytes": weights.stat().st_size,
            "final": state.history[-1] if state.history else {},
            "history": state.history,
            "heldout_dsm": {str(k): v for k, v in held_res.items()},
            "eval_images": s.eval_n,
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

    return body
