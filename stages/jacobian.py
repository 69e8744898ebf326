"""Stage 3: Jacobian measurements of Φ_t at trajectory points (eq. 7, 16-19, 26, 30).

python -m stages.jacobian [overrides]   → outputs/jacobian/<run-key>/
  global.csv   one row per (seed, step): κ̂_t by power iteration and Lanczos with diagnostics,
               κ̂^diag, δ̂^cross, κ̂^pc
  patches.csv  one row per (seed, step, patch k): λ_k, f_t(λ_k), Rayleigh quotient, S_k,t,
               ‖[JΦ_t]_kk‖, C_k,t, PC slack
  blocks.csv   one row per (seed, step, k, j) when block norms are measured
Timesteps are the paper's t (1-based). Resumable per (seed, step).
With points.shards=N, points.shard=i measures shard i of the points into <run-key>-shard<i>of<N>/; the shard
that finishes last pools all N into <run-key>/, the unsplit run's tables byte for byte (points.shard=pool
pools them on request).
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from pipeline.assemble.jacobian import PoolSetup, jacobian_job, pool_setup
from pipeline.assemble.shards import unfinished_shards
from pipeline.io import FolderBusyError
from pipeline.jacobian.loop import measurement_body
from pipeline.jacobian.pool import pool_body
from pipeline.outputs import JacobianFolder
from pipeline.runs import StageResult, run_stage
from pipeline.settings import prepare_config
from stages.cli_errors import in_job, run_cli

log = logging.getLogger("pifs")


def pool(job: PoolSetup) -> StageResult:
    """The shards of a split protocol pooled into the unsplit run's folder (pipeline.jacobian.pool)."""
    return run_stage(job.run, pool_body(job.shards), artifacts=(JacobianFolder.GLOBAL,), inputs=job.inputs)


def run(cfg: DictConfig | dict) -> StageResult:
    cfg = prepare_config(cfg)
    job = jacobian_job(cfg)
    if isinstance(job, PoolSetup):
        return pool(job)
    body = measurement_body(job, job.settings)
    result = run_stage(job.run, body, artifacts=(JacobianFolder.GLOBAL,), inputs=job.inputs)
    if job.run.shards > 1 and not unfinished_shards(cfg):
        try:  # every shard is finished: this one (the last to finish) pools them
            pool(pool_setup(cfg))
        except FolderBusyError:
            log.info("jacobian: another job is pooling the %d shards; leaving it to that one", job.run.shards)
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> StageResult:
    # returned so Hydra/submitit callers get the output folder and MLflow run id
    return in_job(run, cfg)


if __name__ == "__main__":
    run_cli(main)
