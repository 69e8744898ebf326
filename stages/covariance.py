"""Stage 1: per-patch covariance Σ_k, λ_k, v_k⁽¹⁾ (and Σ₀) of the dataset.

python -m stages.covariance [overrides]   → outputs/covariance/<run-key>/
  patches.csv, patch_stats.npz, gaussian_fit.npz (full Σ₀), lambda_k.png, meta.json
"""

from __future__ import annotations

import hashlib

import hydra
from omegaconf import DictConfig

from pipeline import io
from stages.cli_errors import in_job, run_cli
from stages.common import StageContext, StageResult, dataset_inputs, prepare_config, run_stage


def run(cfg: DictConfig | dict) -> StageResult:
    cfg = prepare_config(cfg)
    from pipeline.covariance import compute_patch_statistics, summary_metrics, write_covariance_outputs
    from pipeline.data import dataset_from_config

    # Opening the source checks the data (root, archive, counts) before a run folder exists.
    source = dataset_from_config(cfg["dataset"])
    ccfg = cfg["covariance"]

    def body(ctx: StageContext) -> None:
        stats = compute_patch_statistics(
            source,
            cfg["patch"]["size"],
            chunk_size=int(ccfg["chunk_size"]),
            full_cov=bool(ccfg["full_cov"]),
            checkpoint_path=ctx.work_dir / "accumulator.npz",
            progress=ctx.progress,
        )
        write_covariance_outputs(ctx.out_dir, stats)
        # The DVC chain's trajectories stage depends on this marker, not on gaussian_fit.npz: the marker
        # exists for every preset (celebahq_paper has no full Σ₀) and changes exactly when the fit does.
        fit = ctx.out_dir / "gaussian_fit.npz"
        digest = (
            hashlib.sha256(fit.read_bytes()).hexdigest()
            if fit.is_file()
            else "none (covariance.full_cov=false)"
        )
        io.write_text(ctx.out_dir / "gaussian_fit.sha256", digest + "\n")
        ctx.metrics.update(summary_metrics(stats))

    return run_stage(
        "covariance", cfg, body, artifacts=("patches.csv", "lambda_k.png"), inputs=dataset_inputs(source)
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> StageResult:
    # returned so Hydra/submitit callers get the output folder and MLflow run id
    return in_job(run, cfg)


if __name__ == "__main__":
    run_cli(main)
