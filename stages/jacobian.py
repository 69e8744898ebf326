"""Stage 3: Jacobian measurements of Φ_t at trajectory points (eq. 7, 16-19, 26, 30).

python -m stages.jacobian [overrides]   → outputs/jacobian/<run-key>/
  global.csv   one row per (seed, step): κ̂_t by power iteration and Lanczos with diagnostics,
               κ̂^diag, δ̂^cross, κ̂^pc
  patches.csv  one row per (seed, step, patch k): λ_k, f_t(λ_k), Rayleigh quotient, S_k,t,
               ‖[JΦ_t]_kk‖, C_k,t, PC slack
  blocks.csv   one row per (seed, step, k, j) when block norms are measured
Timesteps are the paper's t (1-based). Resumable per seed.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from stages.common import (
    StageContext,
    StageResult,
    build_chain,
    build_model,
    prepare_config,
    run_stage,
    upstream_dir,
)


def run(cfg: DictConfig | dict) -> StageResult:
    cfg = prepare_config(cfg)
    cov_dir = upstream_dir("covariance", cfg, needed_by="jacobian")
    traj_dir = upstream_dir("trajectories", cfg, needed_by="jacobian")
    model, _ = build_model(cfg, needed_by="jacobian")
    chain = build_chain(cfg, model)

    def body(ctx: StageContext) -> None:
        from pipeline.measurement import measure_trajectories

        ctx.inputs.update(covariance=str(cov_dir), trajectories=str(traj_dir))
        summary = measure_trajectories(
            model=model,
            chain=chain,
            covariance_dir=cov_dir,
            trajectories_dir=traj_dir,
            patch_size=int(cfg["patch"]["size"]),
            measure_cfg=cfg["measure"],
            out_dir=ctx.out_dir,
            work_dir=ctx.work_dir,
            progress=ctx.progress,
        )
        ctx.metrics.update(summary.metrics)
        for name, series in summary.series.items():
            ctx.tracker.log_metric_series(name, series)

    return run_stage("jacobian", cfg, body, artifacts=("global.csv",))


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> StageResult:
    # returned so Hydra/submitit callers get the output folder and MLflow run id
    return run(cfg)


if __name__ == "__main__":
    main()
