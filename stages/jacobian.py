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

from pipeline import io
from pipeline.errors import InputMissingError
from pipeline.jacobian.loop import PROXY_COLUMNS, measure_proxy
from pipeline.jacobian.protocol import runs_proxy
from stages.cli_errors import in_job, run_cli
from stages.common import (
    StageContext,
    StageResult,
    build_chain,
    build_model,
    model_inputs,
    prepare_config,
    run_stage,
    upstream_dir,
)
from stages.trajectories import seeds_of


def _proxy(cfg: dict, model, cov_dir, n_images: int) -> list[dict]:
    """Table 10 on the first n real images of the configured dataset."""
    import numpy as np

    from pipeline.data import dataset_from_config
    from pipeline.jacobian.deviation import GaussianSurrogate

    source = dataset_from_config({**cfg["dataset"], "num_images": n_images})
    x0 = np.concatenate(list(source.iter_chunks(n_images)))[:n_images]
    surrogate = None
    if (cov_dir / "gaussian_fit.npz").is_file():
        from pipeline.covariance import read_gaussian_fit

        fit = read_gaussian_fit(cov_dir)
        surrogate = GaussianSurrogate(fit.mean, fit.cov, model.image_shape)
    T = len(model.alpha_bar) - 1
    ts = [int(t) for t in cfg["measure"]["proxy_timesteps"] if 1 <= int(t) <= T]
    return measure_proxy(
        model, model.alpha_bar, x0, ts, int(cfg["measure"].get("proxy_seed") or 0), surrogate
    )


def run(cfg: DictConfig | dict) -> StageResult:
    cfg = prepare_config(cfg)
    cov_dir = upstream_dir("covariance", cfg, needed_by="jacobian")
    traj_dir = upstream_dir("trajectories", cfg, needed_by="jacobian")
    # a finished trajectories folder missing a seed would be measured on fewer seeds without a word
    missing = [s for s in seeds_of(cfg) if not (traj_dir / f"seed-{s}.npz").is_file()]
    if missing:
        raise InputMissingError(
            f"{traj_dir} lacks the trajectories of seed(s) {missing} — rerun the trajectories stage with force=true"
        )
    model, _ = build_model(cfg, needed_by="jacobian")
    chain = build_chain(cfg, model)

    def body(ctx: StageContext) -> None:
        from pipeline.jacobian.loop import measure_trajectories

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
        # with measure.tables, Table 10's proxy runs only for Table 10 (pipeline/jacobian/protocol.py)
        n_proxy = (
            int(cfg["measure"].get("proxy_images") or 0) if runs_proxy(cfg["measure"].get("tables")) else 0
        )
        if n_proxy > 0:
            rows = _proxy(cfg, model, cov_dir, n_proxy)
            io.write_csv(ctx.out_dir / "proxy.csv", rows, PROXY_COLUMNS)
            ctx.tracker.log_metric_series("proxy_by_t", {r["t"]: r["proxy"] for r in rows})
        for name, series in summary.series.items():
            ctx.tracker.log_metric_series(name, series)

    inputs = {**model_inputs(cfg, cov_dir), "covariance": cov_dir, "trajectories": traj_dir}
    return run_stage("jacobian", cfg, body, artifacts=("global.csv",), inputs=inputs)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> StageResult:
    # returned so Hydra/submitit callers get the output folder and MLflow run id
    return in_job(run, cfg)


if __name__ == "__main__":
    run_cli(main)
