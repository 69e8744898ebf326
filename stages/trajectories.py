"""Stage 2: deterministic DDIM trajectories x_t and ε̂(x_t, t) for every step and seed (eq. 4).

python -m stages.trajectories [overrides]   → outputs/trajectories/<run-key>/
  seed-<s>.npz (t [S] paper timesteps, x [S+1,C,H,W], eps [S,C,H,W]), samples.png, meta.json
Resumable: each finished seed is kept in the work folder and not sampled again.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from pipeline.assemble.models import build_model
from pipeline.assemble.sources import seeds_of
from pipeline.outputs import TrajectoriesFolder
from pipeline.runkeys import run_spec
from pipeline.runs import StageContext, StageResult, run_stage
from pipeline.sampler import publish_trajectories
from pipeline.settings import prepare_config
from stages.cli_errors import in_job, run_cli


def run(cfg: DictConfig | dict) -> StageResult:
    cfg = prepare_config(cfg)
    # Build model and chain first: bad model paths and shape mismatches fail before any work.
    built = build_model(cfg, needed_by="trajectories")

    def body(ctx: StageContext) -> None:
        if built.covariance is not None:
            ctx.inputs["covariance"] = str(built.covariance.path)
        ctx.metrics.update(
            publish_trajectories(
                built.model,
                built.chain,
                seeds_of(cfg),
                work_dir=ctx.work_dir,
                out=TrajectoriesFolder(ctx.out_dir),
                batch_size=int(cfg["trajectories"]["batch_size"]),
                update=str(cfg["trajectories"]["update"]),
                progress=ctx.progress,
            )
        )

    spec = run_spec("trajectories", cfg)
    return run_stage(spec, body, artifacts=(TrajectoriesFolder.SAMPLES,), inputs=built.inputs)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> StageResult:
    # returned so Hydra/submitit callers get the output folder and MLflow run id
    return in_job(run, cfg)


if __name__ == "__main__":
    run_cli(main)
