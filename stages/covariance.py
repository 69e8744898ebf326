"""Stage 1: per-patch covariance Σ_k, λ_k, v_k⁽¹⁾ (and Σ₀) of the dataset.

python -m stages.covariance [overrides]   → outputs/covariance/<run-key>/
  patches.csv, patch_stats.npz, gaussian_fit.npz (full Σ₀), gaussian_fit.sha256, lambda_k.png, meta.json
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from pipeline.assemble.sources import dataset, dataset_inputs
from pipeline.outputs import CovarianceFolder
from pipeline.runkeys import run_spec
from pipeline.runs import StageContext, StageResult, run_stage
from pipeline.settings import prepare_config
from stages.cli_errors import in_job, run_cli


def run(cfg: DictConfig | dict) -> StageResult:
    cfg = prepare_config(cfg)
    # scipy, PIL (pipeline.covariance) only once the stage runs: --help and the config check stay fast
    from pipeline.covariance import compute_patch_statistics, summary_metrics, write_covariance_outputs

    # Opening the source checks the data (root, archive, counts) before a run folder exists.
    source = dataset(cfg)
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
        ctx.metrics.update(summary_metrics(stats))

    return run_stage(
        run_spec("covariance", cfg),
        body,
        artifacts=(CovarianceFolder.PATCHES, CovarianceFolder.LAMBDA_FIGURE),
        inputs=dataset_inputs(source),
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> StageResult:
    # returned so Hydra/submitit callers get the output folder and MLflow run id
    return in_job(run, cfg)


if __name__ == "__main__":
    run_cli(main)
