"""Stage 2: deterministic DDIM trajectories x_t and ε̂(x_t, t) for every step and seed (eq. 4).

python -m stages.trajectories [overrides]   → outputs/trajectories/<run-key>/
  seed-<s>.npz (t [S] paper timesteps, x [S+1,C,H,W], eps [S,C,H,W]), samples.png, meta.json
Resumable: each finished seed is kept in the work folder and not sampled again.
"""

from __future__ import annotations

import shutil

import hydra
import numpy as np
from omegaconf import DictConfig

from stages.cli_errors import in_job, run_cli
from stages.common import (
    StageContext,
    StageResult,
    build_chain,
    build_model,
    model_inputs,
    prepare_config,
    run_stage,
)


def seeds_of(cfg: dict) -> list[int]:
    return [int(cfg["seed"]) + i for i in range(int(cfg["num_seeds"]))]


def run(cfg: DictConfig | dict) -> StageResult:
    cfg = prepare_config(cfg)
    # Build model and chain first: bad model paths and shape mismatches fail before any work.
    model, cov_dir = build_model(cfg, needed_by="trajectories")
    chain = build_chain(cfg, model)

    def body(ctx: StageContext) -> None:
        from pipeline.sampler import sample_seeds, save_sample_grid

        seeds = seeds_of(cfg)
        resumed = sum((ctx.work_dir / f"seed-{s}.npz").exists() for s in seeds)
        paths = sample_seeds(
            model,
            chain,
            seeds,
            ctx.work_dir,
            batch_size=int(cfg["trajectories"]["batch_size"]),
            progress=ctx.progress,
            update=str(cfg["trajectories"].get("update") or "exact"),
        )
        finals = []
        for path in paths:
            shutil.copy2(path, ctx.out_dir / path.name)
            with np.load(path) as z:
                finals.append(z["x"][-1])
        x0 = np.stack(finals)
        save_sample_grid(x0, ctx.out_dir / "samples.png")
        if cov_dir is not None:
            ctx.inputs["covariance"] = str(cov_dir)
        ctx.metrics.update(
            num_seeds=float(len(seeds)),
            num_steps=float(len(chain)),
            x0_mean=float(x0.mean()),
            x0_std=float(x0.std()),
            x0_abs_max=float(np.abs(x0).max()),
            seeds_resumed=float(resumed),
        )

    return run_stage("trajectories", cfg, body, artifacts=("samples.png",), inputs=model_inputs(cfg, cov_dir))


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> StageResult:
    # returned so Hydra/submitit callers get the output folder and MLflow run id
    return in_job(run, cfg)


if __name__ == "__main__":
    run_cli(main)
