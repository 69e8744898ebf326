"""Stage 4: tables, figures and the report, beside the paper's numbers.

python -m stages.analysis [overrides]   → outputs/analysis/<run-key>/
  schedule_geometry.csv, table_<N>.csv, figures (*.png), report.html, report.md,
  metrics.json (headline κ̂, δ̂^cross, verdict counts: `dvc metrics show`) and plots/by_t.csv (`dvc plots`)
Reads whatever upstream outputs exist for this config and says what is missing. With points.shards=N it
reads the pooled jacobian run of a split protocol (python -m stages.jacobian -m points.shards=N
points.shard=0,...,N-1 pools them when the last shard finishes): the unsplit run's folder and tables.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from pipeline.analysis.build import analysis_body
from pipeline.assemble import analysis_upstream
from pipeline.errors import ConfigError, InputMissingError
from pipeline.outputs import META, AnalysisFolder, read_meta
from pipeline.runkeys import POOL, run_spec, shard_of, stage_dir, unsharded, with_shard
from pipeline.runs import StageResult, run_stage
from pipeline.settings import prepare_config
from stages.cli_errors import in_job, run_cli


def pooled(cfg: dict) -> dict:
    """The unsplit config of a split protocol, whose jacobian folder holds its pooled shards; one line
    naming the unfinished shards, or the pooling command, when that folder does not exist yet."""
    whole = unsharded(cfg)
    if (stage_dir("jacobian", whole) / META).is_file():
        return whole
    _, shards = shard_of(cfg)
    todo = [
        i for i in range(shards) if not (stage_dir("jacobian", with_shard(cfg, i, shards)) / META).is_file()
    ]
    if todo:
        listed = ",".join(map(str, todo))
        fix = f"run them: python -m stages.jacobian -m <the same overrides> points.shard={listed} (the last pools them)"
        raise InputMissingError(f"analysis: jacobian shard(s) {listed} of {shards} are not finished — {fix}")
    raise InputMissingError(
        f"analysis: the {shards} jacobian shards are finished but not pooled into {stage_dir('jacobian', whole)} "
        f"— pool them: python -m stages.jacobian <the same overrides> points.shard={POOL}"
    )


def run(cfg: DictConfig | dict) -> StageResult:
    cfg = prepare_config(cfg)
    if shard_of(cfg)[1] > 1:
        cfg = pooled(cfg)
    for folder in cfg["analysis"].get("compare") or []:
        if read_meta(Path(folder)) is None:
            raise ConfigError(
                f"analysis.compare lists {folder}, which is not a finished jacobian run folder — "
                "list outputs/jacobian/ for the run keys and fix analysis.compare"
            )
    upstream = analysis_upstream(cfg)

    return run_stage(
        run_spec("analysis", cfg),
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
