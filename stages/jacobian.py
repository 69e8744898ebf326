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

from pipeline.assemble import jacobian_setup, jacobian_shards, unfinished_shards
from pipeline.io import FolderBusyError
from pipeline.jacobian.loop import measurement_body
from pipeline.jacobian.pool import pool_body
from pipeline.outputs import JacobianFolder
from pipeline.runkeys import POOL, run_spec, shard_of, stage_dir, unsharded
from pipeline.runs import StageResult, run_stage
from pipeline.settings import prepare_config
from stages.cli_errors import in_job, run_cli

log = logging.getLogger("pifs")


def pool(cfg: dict) -> StageResult:
    """The shards of a split protocol pooled into the unsplit run's folder (pipeline.jacobian.pool)."""
    shards = [s.path for s in jacobian_shards(cfg, needed_by="pooling")]
    inputs = {f"shard-{i}": p for i, p in enumerate(shards)}
    inputs.update(covariance=stage_dir("covariance", cfg), trajectories=stage_dir("trajectories", cfg))
    body = pool_body(shards)
    whole = run_spec("jacobian", unsharded(cfg))
    return run_stage(whole, body, artifacts=(JacobianFolder.GLOBAL,), inputs=inputs)


def run(cfg: DictConfig | dict) -> StageResult:
    cfg = prepare_config(cfg)
    shard, shards = shard_of(cfg)
    if shard == POOL:
        return pool(cfg)
    setup = jacobian_setup(cfg)
    body = measurement_body(setup, cfg)
    result = run_stage(setup.run, body, artifacts=(JacobianFolder.GLOBAL,), inputs=setup.inputs)
    if shards > 1 and not unfinished_shards(cfg):
        try:  # every shard is finished: this one (the last to finish) pools them
            pool(cfg)
        except FolderBusyError:
            log.info("jacobian: another job is pooling the %d shards; leaving it to that one", shards)
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> StageResult:
    # returned so Hydra/submitit callers get the output folder and MLflow run id
    return in_job(run, cfg)


if __name__ == "__main__":
    run_cli(main)
