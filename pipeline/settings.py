"""Config preparation, shared by every stage: resolve the composed config, apply ``params_file``, refuse what
cannot work (one line naming the key and the fix), and check where the run will write and track — all
before any work starts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.errors import ConfigError, PipelineError
from pipeline.runkeys import POOL, check_run_key

# Keys a params file (dvc.yaml's params.yaml) never overrides: they choose where and how a
# run executes, not what it computes, and dvc.yaml sets them on the command line.
_RUNTIME_KEYS = frozenset({"run_key", "params_file", "force", "progress"})


def image_resolution(cfg: Mapping[str, Any]) -> int:
    ds = cfg.get("dataset") or {}
    res = ds.get("resolution")
    if res is None:
        raise ConfigError(f"dataset '{ds.get('name')}' has no 'resolution'; set dataset.resolution=<pixels>")
    return int(res)


def validate_config(cfg: Mapping[str, Any]) -> None:
    """Refuse configs that cannot work, naming the key and the fix (before any work starts)."""
    res = image_resolution(cfg)
    p = cfg.get("patch", {}).get("size")
    if not isinstance(p, int) or isinstance(p, bool) or p <= 0:
        raise ConfigError(
            f"patch.size={p!r} — set patch.size to a positive integer that divides the image size"
        )
    if res % p != 0:
        divisors = [d for d in range(1, res + 1) if res % d == 0]
        raise ConfigError(
            f"patch.size={p} does not divide the image size {res}x{res} (dataset.resolution={res}) — "
            f"choose patch.size from {divisors}"
        )
    model = cfg.get("model") or {}
    block = model.get("block_size")
    if model.get("kind") == "gaussian_oracle" and block is not None and res % int(block) != 0:
        raise ConfigError(
            f"model.block_size={block} does not divide the image size {res} — "
            f"set model.block_size to a divisor of {res} (usually equal to patch.size)"
        )
    if cfg.get("run_key") is not None and cfg.get("run_key") != "":
        check_run_key(cfg["run_key"])
    seed_batch = (cfg.get("points") or {}).get("seed_batch")
    if (
        seed_batch is not None
        and seed_batch != "auto"
        and (isinstance(seed_batch, bool) or not isinstance(seed_batch, int) or seed_batch < 1)
    ):
        raise ConfigError(
            f"points.seed_batch={seed_batch} — set it to a positive number of seeds measured together "
            "(1 = one point at a time), or auto (chosen from free device memory)"
        )
    _check_shard(cfg.get("points") or {})
    if int(cfg.get("num_seeds", 1)) < 1:
        raise ConfigError(f"num_seeds={cfg.get('num_seeds')} — set num_seeds to at least 1")


def _is_count(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _check_shard(points: Mapping[str, Any]) -> None:
    """points.shards: into how many shards the protocol's points split; points.shard: which one this run is."""
    shards, shard = points.get("shards", 1), points.get("shard", 0)
    if shards is not None and not _is_count(shards, 1):
        raise ConfigError(
            f"points.shards={shards!r} — set it to the number of jobs the protocol's points are split over "
            "(1 = one run measures them all)"
        )
    if shard == POOL and int(shards or 1) > 1:
        return
    if shard is not None and (not _is_count(shard, 0) or shard >= int(shards or 1)):
        raise ConfigError(
            f"points.shard={shard!r} is not one of 0..{int(shards or 1) - 1} (points.shards={shards}) — "
            f"sweep points.shard over 0..N-1 together with points.shards=N ({POOL}: pool the N shards)"
        )


def prepare_config(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Resolve the composed config to a plain dict, apply params_file, and validate it."""
    if isinstance(cfg, DictConfig):
        # The hydra node (present under compose(return_hydra_config=True)) holds values that
        # only resolve inside a running job; stages never read it.
        cfg = {
            k: (OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k])
            for k in cfg
            if k != "hydra"
        }
    cfg = {k: v for k, v in dict(cfg).items() if k != "hydra"}
    params_file = cfg.get("params_file")
    if params_file:
        path = Path(params_file)
        if not path.is_file():
            raise ConfigError(
                f"params_file={params_file} does not exist — run from the project root (or fix the path)"
            )
        try:
            loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}
        except Exception as e:  # yaml's ParserError/ScannerError, OmegaConf's errors
            raise ConfigError(
                f"params_file={params_file} is not valid YAML ({type(e).__name__}) — fix the file "
                "(or regenerate params.yaml: python -m stages.params)"
            ) from e
        for k, v in loaded.items():
            if k not in _RUNTIME_KEYS and k != "hydra":
                cfg[k] = v
    validate_config(cfg)
    preflight(cfg)
    if cfg.get("torch_threads"):
        import torch

        torch.set_num_threads(int(cfg["torch_threads"]))
    return cfg


class OutputLocationError(PipelineError):
    """An output location is a file, or cannot be written."""


def check_output_location(path: str | Path, key: str) -> None:
    """Refuse an output folder that is a file, lies under a file, or whose nearest existing folder is not writable.

    Nothing is created: the run makes its folders itself once every check has passed.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise OutputLocationError(
            f"{key}={path} is a file, not a folder — point {key} at a folder (or move the file away)"
        )
    probe = target.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputLocationError(
            f"{key}={path} lies under {probe}, which is a file — point {key} at a folder (or move the file away)"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputLocationError(
            f"{key}={path}: {probe} is not writable (read-only or another user's) — "
            f"set {key}=<a writable folder> or fix its permissions"
        )


def check_tracking(cfg: Mapping[str, Any]) -> None:
    """An http(s) MLflow server must answer within seconds; a SQLite store's folder must be writable."""
    tcfg = cfg.get("tracking") or {}
    if not tcfg.get("enabled", True):
        return
    from pipeline.tracking import check_reachable, default_tracking_uri

    uri = str(tcfg.get("uri") or default_tracking_uri())
    check_reachable(uri)
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :].split("?", 1)[0])
        check_output_location(db.parent, "tracking.uri")


def preflight(cfg: Mapping[str, Any]) -> None:
    """Every check that needs no data and no model: output location and tracking store."""
    check_output_location(Path((cfg.get("paths") or {}).get("outputs", "outputs")), "paths.outputs")
    check_tracking(cfg)
