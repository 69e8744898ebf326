"""Run-keys: output folder names derived from the config values that matter to a stage."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

STAGES = ("covariance", "trajectories", "jacobian", "analysis")

# The config sections whose values change a stage's numbers, upstream stages' included, so
# a sweep over any knob never overwrites another run. Trajectories leave out `patch`: a
# patch-size sweep reuses the (expensive) trajectories of one model.
_KEY_SECTIONS: dict[str, tuple[str, ...]] = {
    "covariance": ("dataset", "covariance", "patch"),
    "trajectories": (
        "dataset",
        "covariance",
        "model",
        "schedule",
        "sampler",
        "seed",
        "num_seeds",
        "trajectories",
    ),
    "jacobian": (
        "dataset",
        "covariance",
        "patch",
        "model",
        "schedule",
        "sampler",
        "seed",
        "num_seeds",
        "trajectories",
        "measure",
    ),
}


def key_sections(stage: str) -> tuple[str, ...]:
    """Config sections that determine ``stage``'s outputs (its own and its upstream's)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
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


def run_key(stage: str, cfg: Mapping[str, Any]) -> str:
    """Folder name under outputs/<stage>/: ``cfg['run_key']`` if set, else a readable digest."""
    fixed = cfg.get("run_key")
    if fixed:
        return str(fixed)
    dataset = (cfg.get("dataset") or {}).get("name", "data")
    patch = (cfg.get("patch") or {}).get("size", "?")
    model = (cfg.get("model") or {}).get("name", "model")
    sampler = sampler_label(cfg.get("sampler") or {})
    seeds = f"s{cfg.get('seed', 0)}x{cfg.get('num_seeds', 1)}"
    label = {
        "covariance": f"{dataset}-P{patch}",
        "trajectories": f"{dataset}-{model}-{sampler}-{seeds}",
    }.get(stage, f"{dataset}-P{patch}-{model}-{sampler}-{seeds}")
    return f"{label}-{config_digest(cfg, key_sections(stage))}"
