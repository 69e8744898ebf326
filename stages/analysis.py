"""Stage 4: tables, figures and the report, beside the paper's numbers.

python -m stages.analysis [overrides]   → outputs/analysis/<run-key>/
  schedule_geometry.csv, table_<N>.csv, figures (*.png), report.html, report.md,
  metrics.json (headline κ̂, δ̂^cross, verdict counts: `dvc metrics show`) and plots/by_t.csv (`dvc plots`)
Reads whatever upstream outputs exist for this config and says what is missing. With points.shards=N it
reads the pooled jacobian run of a split protocol (python -m stages.jacobian -m points.shards=N
points.shard=0,...,N-1 pools them when the last shard finishes): the unsplit run's folder and tables.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from pipeline.analysis.build import analysis_body
from pipeline.assemble.analysis import analysis_job
from pipeline.outputs import AnalysisFolder
from pipeline.runs import StageResult, run_stage
from pipeline.settings import prepare_config
from stages.cli_errors import in_job, run_cli


def run(cfg: DictConfig | dict) -> StageResult:
    cfg = prepare_config(cfg)
    job = analysis_job(cfg)
    return run_stage(
        job.run,
        analysis_body(job.cfg, job.upstream),
        artifacts=(
            AnalysisFolder.REPORT_HTML,
            AnalysisFolder.REPORT_MD,
            AnalysisFolder.METRICS,
            "figures",
            "plots",
        ),
        inputs=job.inputs,
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> StageResult:
    # returned so Hydra/submitit callers get the output folder and MLflow run id
    return in_job(run, cfg)


if __name__ == "__main__":
    run_cli(main)
