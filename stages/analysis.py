"""Stage 4: tables, figures and the report, beside the paper's numbers.

python -m stages.analysis [overrides]   → outputs/analysis/<run-key>/
  schedule_geometry.csv, table_<N>.csv, figures (*.png), report.html, report.md,
  metrics.json (headline κ̂, δ̂^cross, verdict counts: `dvc metrics show`) and plots/by_t.csv (`dvc plots`)
Reads whatever upstream outputs exist for this config and says what is missing.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from pipeline.analysis.build import analysis_body
from pipeline.errors import ConfigError
from pipeline.outputs import AnalysisFolder, read_meta
from pipeline.runs import StageResult, run_stage, stage_dir, upstream_dir
from pipeline.settings import prepare_config
from stages.cli_errors import in_job, run_cli


def run(cfg: DictConfig | dict) -> StageResult:
    cfg = prepare_config(cfg)
    for folder in cfg["analysis"].get("compare") or []:
        if read_meta(Path(folder)) is None:
            raise ConfigError(
                f"analysis.compare lists {folder}, which is not a finished jacobian run folder — "
                "list outputs/jacobian/ for the run keys and fix analysis.compare"
            )
    upstream = {}
    for s in ("covariance", "trajectories", "jacobian"):
        # an upstream folder that exists must still hold the files its meta.json hashed
        # (a folder whose meta.json is unreadable is refused, never read as absent)
        d = stage_dir(s, cfg)
        upstream[s] = upstream_dir(s, cfg, needed_by="analysis") if d.is_dir() and any(d.iterdir()) else None

    return run_stage(
        "analysis",
        cfg,
        analysis_body(cfg, upstream),
        artifacts=(
            AnalysisFolder.REPORT_HTML,
            AnalysisFolder.REPORT_MD,
            AnalysisFolder.METRICS,
            "figures",
            "plots",
        ),
        inputs={k: v for k, v in upstream.items() if v is not None},
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> StageResult:
    # returned so Hydra/submitit callers get the output folder and MLflow run id
    return in_job(run, cfg)


if __name__ == "__main__":
    run_cli(main)
