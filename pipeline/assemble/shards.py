"""The shards of a split protocol (points.shards): which are unfinished, the finished ones verified
against the upstream folders they measured, and the unsplit run they pool into."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import InputMissingError, PipelineError
from pipeline.lineage import input_record
from pipeline.outputs import META, JacobianFolder
from pipeline.runkeys import POOL, RunSpec, run_spec, shard_of, stage_dir, unsharded, with_shard
from pipeline.runs import upstream_dir

from .upstream import trajectories_with_all_seeds


def unfinished_shards(cfg: Mapping[str, Any]) -> list[int]:
    """The shards of this config's split protocol (points.shards) whose jacobian folder is not finished."""
    _, shards = shard_of(cfg)
    folders = [stage_dir("jacobian", with_shard(cfg, i, shards)) for i in range(shards)]
    return [i for i, f in enumerate(folders) if not (f / META).is_file()]


def jacobian_shards(
    cfg: Mapping[str, Any], needed_by: str, specs: Mapping[str, RunSpec]
) -> tuple[list[JacobianFolder], dict[str, Path]]:
    """The finished, unaltered folders of every jacobian shard of this config's protocol (points.shards),
    each verified as an upstream, and the covariance and trajectories folders (``specs``', verified) that
    every one of them measured; a missing shard is one line naming it."""
    _, shards = shard_of(cfg)
    missing = unfinished_shards(cfg)
    if missing:
        listed = ",".join(map(str, missing))
        raise InputMissingError(
            f"{needed_by} needs all {shards} jacobian shards of this protocol, but shard(s) {listed} are not "
            f"finished — run them: python -m stages.jacobian -m <the same overrides> points.shard={listed}"
        )
    found = [
        JacobianFolder(upstream_dir(run_spec("jacobian", with_shard(cfg, i, shards)), needed_by))
        for i in range(shards)
    ]
    # every shard measured the trajectories and covariance this config reads now (not an older run's)
    upstream = {
        "covariance": upstream_dir(specs["covariance"], needed_by),
        "trajectories": trajectories_with_all_seeds(upstream_dir(specs["trajectories"], needed_by), cfg).path,
    }
    for name, path in upstream.items():
        now = input_record(path)["sha256"]
        for i, folder in enumerate(found):
            held = ((folder.read_meta() or {}).get("input_hashes") or {}).get(name) or {}
            if held.get("sha256") != now:
                raise PipelineError(
                    f"jacobian shard {i} ({folder.path}) was measured on other {name} than {path} "
                    f"holds now — rerun the shards with force=true: python -m stages.jacobian -m "
                    f"points.shards={shards} points.shard={','.join(map(str, range(shards)))} force=true"
                )
    return found, upstream


def pooled_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The unsplit config of a split protocol, whose jacobian folder holds its pooled shards; one line naming
    the unfinished shards, or the pooling command, when that folder does not exist yet."""
    whole = unsharded(cfg)
    if (stage_dir("jacobian", whole) / META).is_file():
        return whole
    _, shards = shard_of(cfg)
    todo = unfinished_shards(cfg)
    if todo:
        listed = ",".join(map(str, todo))
        fix = f"run them: python -m stages.jacobian -m <the same overrides> points.shard={listed} (the last pools them)"
        raise InputMissingError(f"analysis: jacobian shard(s) {listed} of {shards} are not finished — {fix}")
    raise InputMissingError(
        f"analysis: the {shards} jacobian shards are finished but not pooled into {stage_dir('jacobian', whole)} "
        f"— pool them: python -m stages.jacobian <the same overrides> points.shard={POOL}"
    )
