"""The analysis stage's job from a prepared config: the run it reports on (a split protocol's pooled run)
and the upstream folders that exist, each verified once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.lineage import InputSpec
from pipeline.outputs import read_meta
from pipeline.runkeys import STAGES, RunSpec, chain_specs, run_spec, shard_of
from pipeline.runs import finished_record, verified_upstream

from .shards import pooled_config
from .upstream import check_not_stale


def analysis_upstream(cfg: Mapping[str, Any]) -> dict[str, Path | None]:
    """The upstream folders the analysis reads: each one that exists verified once (its record, its
    files, the config keys it was made under), and all made from one another's current outputs."""
    found = {}
    for stage, spec in chain_specs("jacobian", cfg).items():
        # a folder whose meta.json is unreadable is refused, never read as absent
        if spec.final.is_dir() and any(spec.final.iterdir()):
            found[stage] = verified_upstream(spec, needed_by="analysis")
    check_not_stale(found, "analysis")
    return {stage: found[stage][0] if stage in found else None for stage in STAGES[:-1]}


@dataclass
class AnalysisSetup:
    """What the analysis reads: the config of the run it reports on (a split protocol's pooled run), the
    upstream folders that exist (each verified once), and its own run spec."""

    run: RunSpec
    cfg: Mapping[str, Any]
    upstream: dict[str, Path | None]
    inputs: dict[str, InputSpec]


def analysis_job(cfg: Mapping[str, Any]) -> AnalysisSetup:
    """The analysis of ``cfg``'s run (of a split protocol: its pooled run). Every analysis.compare folder must
    be a finished, unaltered jacobian run and every analysis.companions folder that exists a finished,
    unaltered analysis; both are inputs of the run (a recomputed or edited one is never reused)."""
    if shard_of(cfg)[1] > 1:
        cfg = pooled_config(cfg)
    inputs: dict[str, InputSpec] = {}
    for i, folder in enumerate(cfg["analysis"]["compare"]):
        if read_meta(Path(folder)) is None:
            raise ConfigError(
                f"analysis.compare lists {folder}, which is not a finished jacobian run folder — "
                "list outputs/jacobian/ for the run keys and fix analysis.compare"
            )
        fix = "rerun the jacobian stage that made it, or take it out of analysis.compare"
        finished_record(Path(folder), "jacobian", "analysis", fix)
        inputs[f"compare-{i}"] = Path(folder)
    for i, folder in enumerate(cfg["analysis"].get("companions") or []):
        if Path(folder).exists():
            fix = "rerun the analysis that made it (`dvc repro`), or take it out of analysis.companions"
            finished_record(Path(folder), "analysis", "analysis", fix)
            inputs[f"companion-{i}"] = Path(folder)
        else:  # the report says it is missing; its appearance later makes this a changed input
            inputs[f"companion-{i}"] = f"absent: {folder}"
    upstream = analysis_upstream(cfg)
    inputs.update({k: v for k, v in upstream.items() if v is not None})
    return AnalysisSetup(run_spec("analysis", cfg), cfg, upstream, inputs)
