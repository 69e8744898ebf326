"""Run-keys: output folder names derived from the config values that matter to a stage, and the run spec —
a stage run's identity resolved from the config once (folder, digest, the values its record holds, flags)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.schema import POOL  # points.shard=pool: the pooled shards (the unsplit run's jacobian folder)

STAGES = ("covariance", "trajectories", "jacobian", "analysis")
# stages.train writes outputs/train/<run-key>/ through the same lifecycle; it is not part of the chain
TRAIN_STAGE = "train"

# One plain folder name: no separators, never `.` or `..`, never hidden (the runner's own scratch,
# work and lock entries beside a run folder all start with a dot, so they cannot collide with one).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MAX_NAME = 200


class RunKeyError(PipelineError):
    """A run key that is not one plain folder name."""


def check_run_key(name: object, what: str = "run_key") -> str:
    """``name`` if it is one plain folder name (``[A-Za-z0-9][A-Za-z0-9._-]*``), else a RunKeyError."""
    text = str(name)
    if not _PLAIN_NAME.fullmatch(text) or len(text) > _MAX_NAME:
        raise RunKeyError(
            f"{what}={text!r} is not a plain folder name — use letters, digits, '.', '_' and '-' only, "
            f"starting with a letter or digit (at most {_MAX_NAME} characters; no '/', no '.' or '..'); "
            "outputs always go to <paths.outputs>/<stage>/<run_key>/"
        )
    return text


def _safe_label(label: str) -> str:
    """A derived label made safe as a folder name (model names like org/model keep their parts)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-.") or "run"


# The config sections whose values change a stage's numbers, upstream stages' included: declared
# once per stage. They name its run key (a sweep over any knob never overwrites another run), key
# its resumable units, are what its record (meta.json) holds and what a downstream stage checks an
# upstream folder against (pipeline.lineage: the sections both depend on), and are its `params:` in
# dvc.yaml (tests/test_dvc_graph.py keeps the two equal). Trajectories leave out `patch`: sampling
# uses only the P-independent Gaussian fit, so a patch-size sweep reuses one model's trajectories.
_SAMPLING = ("model", "schedule", "sampler", "seed", "num_seeds", "trajectories")  # the trajectories' own
_KEY_SECTIONS: dict[str, tuple[str, ...]] = {
    "covariance": ("dataset", "covariance", "patch"),
    "trajectories": ("dataset", "covariance", *_SAMPLING),
    "jacobian": ("dataset", "covariance", "patch", *_SAMPLING, "measure", "points", "proxy"),
    TRAIN_STAGE: ("dataset", "schedule", "train"),
}


def key_sections(stage: str) -> tuple[str, ...]:
    """Config sections that determine ``stage``'s outputs (its own and its upstream's)."""
    if stage not in STAGES and stage != TRAIN_STAGE:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)} or {TRAIN_STAGE}")
    return _KEY_SECTIONS.get(stage, _KEY_SECTIONS["jacobian"] + ("analysis",))


def config_digest(cfg: Mapping[str, Any], sections: tuple[str, ...]) -> str:
    """Stable 10-hex-digit digest of the given top-level sections of a resolved config."""
    subset = {s: cfg.get(s) for s in sections}
    blob = json.dumps(subset, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def sampler_label(sampler: Mapping[str, Any]) -> str:
    """The sampler's name with the step count it really runs: `ddim50` at num_steps=10 is `ddim10`."""
    name = str(sampler.get("name") or "sampler")
    n = sampler.get("num_steps")
    if n is None or sampler.get("spacing") == "full":
        return name
    count = re.search(r"\d+", name)
    if count is None:
        return f"{name}{int(n)}"
    return f"{name[: count.start()]}{int(n)}{name[count.end() :]}"


def shard_of(cfg: Mapping[str, Any]) -> tuple[int | str, int]:
    """(points.shard, points.shards) of a jacobian config: which of how many shards it measures (or POOL).
    The one reader of the two keys (conf/config.yaml sets shard 0 of 1: the unsplit protocol); a jacobian
    run carries them in its run spec (RunSpec.shard, .shards)."""
    points = cfg["points"]
    shard = points["shard"]
    return (POOL if shard == POOL else int(shard)), int(points["shards"])


def with_shard(cfg: Mapping[str, Any], shard: int, shards: int) -> dict[str, Any]:
    """``cfg`` measuring shard ``shard`` of ``shards`` (``with_shard(cfg, 0, 1)``: the unsplit protocol)."""
    return {**cfg, "points": {**(cfg.get("points") or {}), "shard": int(shard), "shards": int(shards)}}


def unsharded(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The whole protocol a shard belongs to: its pooled result has the unsplit run's key and config."""
    return with_shard(cfg, 0, 1)


def run_key(stage: str, cfg: Mapping[str, Any]) -> str:
    """Folder name under outputs/<stage>/: ``cfg['run_key']`` if set, else a readable digest. A jacobian
    shard adds ``-shard<i>of<N>`` (so shards of one fixed run_key never share a folder); its pooled
    result (points.shard=pool) is the unsplit run's folder."""
    shard, shards = shard_of(cfg) if stage == "jacobian" else (0, 1)
    if shards > 1:
        whole = run_key(stage, unsharded(cfg))
        return whole if shard == POOL else check_run_key(f"{whole}-shard{shard}of{shards}")
    fixed = cfg.get("run_key")
    if fixed is not None and fixed != "":
        return check_run_key(fixed)
    dataset = (cfg.get("dataset") or {}).get("name", "data")
    patch = (cfg.get("patch") or {}).get("size", "?")
    model = (cfg.get("model") or {}).get("name", "model")
    sampler = sampler_label(cfg.get("sampler") or {})
    seeds = f"s{cfg.get('seed', 0)}x{cfg.get('num_seeds', 1)}"
    label = {
        "covariance": f"{dataset}-P{patch}",
        "trajectories": f"{dataset}-{model}-{sampler}-{seeds}",
        TRAIN_STAGE: str((cfg.get("train") or {}).get("name", "train")),
    }.get(stage, f"{dataset}-P{patch}-{model}-{sampler}-{seeds}")
    return check_run_key(f"{_safe_label(label)[:150]}-{config_digest(cfg, key_sections(stage))}")


def plain_values(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples become lists, Paths strings): what a record compares."""
    return json.loads(json.dumps(value, default=str))


def record_config(stage: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config values ``stage``'s outputs depend on (its key sections, upstream stages' included)."""
    return {s: plain_values(cfg[s]) for s in key_sections(stage) if s in cfg}


def outputs_root(cfg: Mapping[str, Any]) -> Path:
    return Path(cfg.get("paths", {}).get("outputs", "outputs"))


def stage_dir(stage: str, cfg: Mapping[str, Any]) -> Path:
    """outputs/<stage>/<run-key>/ for this config."""
    return outputs_root(cfg) / stage / run_key(stage, cfg)


@dataclass(frozen=True)
class TrackingSettings:
    """Where and whether a run is tracked in MLflow (the ``tracking`` group)."""

    enabled: bool = True
    uri: str | None = None
    experiment: str = "pifs-repro"
    artifact_location: str | None = None


@dataclass(frozen=True)
class RunSpec:
    """One stage run as the lifecycle (pipeline.runs) sees it: the config resolved once into what names,
    keys and records the run. The lifecycle reads nothing else of the config: ``values`` is the record's
    ``config`` (the key sections as JSON reads them back, what a downstream stage compares), and
    ``config_json`` is the whole config as text, archived in run.json and MLflow, never read."""

    stage: str
    key: str
    final: Path
    what: str  # the config key that names the folder (for messages)
    digest: str  # config_digest over the key sections: a reuse needs the same one
    values: dict[str, Any]
    config_json: str
    force: bool = False
    progress: bool = True
    tracking: TrackingSettings = TrackingSettings()
    # a jacobian run's place in a split protocol: points.shard (0 .. shards-1, or pool) of points.shards
    shard: int | str = 0
    shards: int = 1

    @property
    def unit_config(self) -> dict[str, Any]:
        """Every key section by name (None where the config has none): what keys the resumable units."""
        return {s: self.values.get(s) for s in key_sections(self.stage)}


def run_spec(stage: str, cfg: Mapping[str, Any], final: Path | None = None) -> RunSpec:
    """``stage``'s run under ``cfg``: <paths.outputs>/<stage>/<run_key>, or ``final`` (train.out_dir)."""
    if final is None:
        key, what = run_key(stage, cfg), "run_key"
        final = outputs_root(cfg) / stage / key
    else:
        key, what = final.name, f"{stage}.out_dir"
    track = cfg.get("tracking") or {}
    shard, shards = shard_of(cfg) if stage == "jacobian" else (0, 1)
    return RunSpec(
        stage=stage,
        key=key,
        final=Path(final),
        what=what,
        digest=config_digest(cfg, key_sections(stage)),
        values=record_config(stage, cfg),
        config_json=json.dumps(dict(cfg), default=str),
        force=bool(cfg.get("force")),
        progress=bool(cfg.get("progress", True)),
        tracking=TrackingSettings(
            enabled=bool(track.get("enabled", True)),
            uri=track.get("uri"),
            experiment=track.get("experiment", "pifs-repro"),
            artifact_location=track.get("artifact_location"),
        ),
        shard=shard,
        shards=shards,
    )


def chain_specs(stage: str, cfg: Mapping[str, Any]) -> dict[str, RunSpec]:
    """The run specs of ``stage`` and of every stage before it in the chain, under one config."""
    return {s: run_spec(s, cfg) for s in STAGES[: STAGES.index(stage) + 1]}
