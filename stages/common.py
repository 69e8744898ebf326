"""Plumbing shared by the four stage apps: config preparation, run folders, meta.json, MLflow."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline import io
from pipeline.errors import InputMissingError, PipelineError, reading
from pipeline.provenance import git_revision, machine, package_versions
from pipeline.runkeys import config_digest, key_sections, run_key
from pipeline.tracking import Tracker
from stages.preflight import preflight

log = logging.getLogger("pifs")

# Keys a params file (dvc.yaml's params.yaml) never overrides: they choose where and how a
# run executes, not what it computes, and dvc.yaml sets them on the command line.
_RUNTIME_KEYS = frozenset({"run_key", "params_file", "force", "progress"})


class ConfigError(PipelineError):
    """A configuration that cannot produce a valid run; raised before any work starts."""


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
    seed_batch = (cfg.get("measure") or {}).get("seed_batch")
    if seed_batch is not None and (
        isinstance(seed_batch, bool) or not isinstance(seed_batch, int) or seed_batch < 1
    ):
        raise ConfigError(
            f"measure.seed_batch={seed_batch} — set it to a positive number of seeds measured together "
            "(1 = one point at a time)"
        )
    if int(cfg.get("num_seeds", 1)) < 1:
        raise ConfigError(f"num_seeds={cfg.get('num_seeds')} — set num_seeds to at least 1")


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


def outputs_root(cfg: Mapping[str, Any]) -> Path:
    return Path(cfg.get("paths", {}).get("outputs", "outputs"))


def stage_dir(stage: str, cfg: Mapping[str, Any]) -> Path:
    """outputs/<stage>/<run-key>/ for this config."""
    return outputs_root(cfg) / stage / run_key(stage, cfg)


def read_meta(folder: Path) -> dict[str, Any] | None:
    meta = folder / "meta.json"
    if not meta.is_file():
        return None
    import json

    with reading(meta, f"delete {folder} and rerun the stage that wrote it"):
        return json.loads(meta.read_text())


def upstream_dir(stage: str, cfg: Mapping[str, Any], needed_by: str) -> Path:
    """The completed output folder of an upstream stage, or a clear error saying what to run."""
    folder = stage_dir(stage, cfg)
    if read_meta(folder) is None:
        raise InputMissingError(
            f"{needed_by} needs the {stage} stage's outputs at {folder}, which do not exist — run "
            f"`python -m stages.{stage}` with the same overrides first (or `dvc repro`)"
        )
    return folder


@dataclass
class StageContext:
    """What a stage body gets: where to write, where to keep resumable work, the tracker."""

    stage: str
    cfg: dict[str, Any]
    key: str
    out_dir: Path  # scratch folder; becomes final_dir atomically when the body returns
    final_dir: Path
    work_dir: Path  # survives failures: per-unit checkpoints for resume
    tracker: Tracker
    metrics: dict[str, float] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def progress(self) -> bool:
        return bool(self.cfg.get("progress", True))


@dataclass
class StageResult:
    stage: str
    out_dir: Path
    run_id: str | None
    skipped: bool
    metrics: dict[str, float]
    wall_time_s: float


def run_stage(
    stage: str,
    cfg: Mapping[str, Any],
    body: Callable[[StageContext], None],
    artifacts: tuple[str, ...] = (),
) -> StageResult:
    """Run ``body`` for ``stage`` with an atomic output folder, meta.json and an MLflow run.

    A complete folder for the same config is reused unless ``force``; a failed run leaves
    no output folder, only its resumable work folder.
    """
    cfg = dict(cfg)
    key = run_key(stage, cfg)
    final = outputs_root(cfg) / stage / key
    digest = config_digest(cfg, key_sections(stage))
    meta = read_meta(final)
    if meta is not None and meta.get("config_digest") == digest and not cfg.get("force"):
        log.info("%s: %s is complete for this config; reusing it (force=true recomputes)", stage, final)
        return StageResult(
            stage, final.absolute(), meta.get("mlflow_run_id"), True, meta.get("metrics", {}), 0.0
        )

    work = final.parent / f".work-{key}"
    work.mkdir(parents=True, exist_ok=True)
    tcfg = cfg.get("tracking", {})
    rev = git_revision()
    tags = {
        "stage": stage,
        "run_key": key,
        "git_revision": rev,
        "config_digest": digest,
        "host": socket.gethostname(),
    }
    for env, tag in (
        ("SLURM_JOB_ID", "slurm_job_id"),
        ("SLURM_ARRAY_JOB_ID", "slurm_array_job_id"),
        ("DVC_EXP_NAME", "dvc_experiment"),
        ("PIFS_SWEEP_ID", "sweep_id"),
    ):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    tracker = Tracker.start(
        enabled=bool(tcfg.get("enabled", True)),
        uri=tcfg.get("uri"),
        experiment=tcfg.get("experiment", "pifs-repro"),
        run_name=f"{stage}:{key}",
        tags=tags,
        artifact_location=tcfg.get("artifact_location"),
        parent_run_id=os.environ.get("PIFS_PARENT_RUN_ID") or None,
    )
    t0 = time.time()
    try:
        tracker.log_params(cfg)
        with io.atomic_dir(final) as tmp:
            ctx = StageContext(stage, cfg, key, tmp, final, work, tracker)
            body(ctx)
            wall = time.time() - t0
            io.write_json(
                tmp / "meta.json",
                {
                    "stage": stage,
                    "run_key": key,
                    "config_digest": digest,
                    "config": cfg,
                    "inputs": ctx.inputs,
                    "metrics": ctx.metrics,
                    "versions": package_versions(),
                    "git_revision": rev,
                    "machine": machine(),
                    "wall_time_s": wall,
                    "mlflow_run_id": tracker.run_id,
                    "mlflow_tracking_uri": tracker.tracking_uri,
                    "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                },
            )
        tracker.log_metrics({**ctx.metrics, "wall_time_s": wall})
        for name in ("meta.json", *artifacts):
            path = final / name
            if path.exists():
                tracker.log_artifact(path)
        tracker.finish("FINISHED")
    except BaseException as exc:
        tracker.set_tags({"error": "".join(traceback.format_exception_only(type(exc), exc)).strip()[:4000]})
        tracker.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    shutil.rmtree(work, ignore_errors=True)
    log.info("%s: wrote %s in %.1f s (MLflow run %s)", stage, final, wall, tracker.run_id)
    return StageResult(stage, final.absolute(), tracker.run_id, False, ctx.metrics, wall)


def image_shape(cfg: Mapping[str, Any]) -> tuple[int, int, int]:
    res = image_resolution(cfg)
    return (int(cfg["dataset"].get("channels", 3)), res, res)


def build_model(cfg: Mapping[str, Any], needed_by: str):
    """The configured noise predictor ε̂(x, t) and the covariance folder it was fitted from (or None).

    Fails before any work on a bad path, an offline hub id, or a model/data shape mismatch.
    """
    from pipeline.geometry import schedule_from_config
    from pipeline.models import model_from_config
    from pipeline.models.base import resolve_device

    mcfg = cfg["model"]
    common = dict(image_shape=image_shape(cfg), device=resolve_device(cfg.get("device")))
    if mcfg.get("kind") == "gaussian_oracle":
        cov_dir = upstream_dir("covariance", cfg, needed_by)
        if not (cov_dir / "gaussian_fit.npz").is_file():
            raise ConfigError(
                f"model=gaussian_oracle needs the full Gaussian fit {cov_dir / 'gaussian_fit.npz'} — "
                "rerun the covariance stage with covariance.full_cov=true"
            )
        schedule = schedule_from_config(cfg["schedule"])
        return model_from_config(
            mcfg, schedule=schedule, gaussian=cov_dir / "gaussian_fit.npz", **common
        ), cov_dir
    if mcfg.get("kind") == "unet":
        # the schedule group is used only by checkpoints without a scheduler config of their own
        schedule = schedule_from_config(cfg["schedule"]) if cfg.get("schedule") else None
        return model_from_config(mcfg, schedule=schedule, **common), None
    raise ConfigError(f"model.kind={mcfg.get('kind')!r} is not known; use gaussian_oracle or unet")


def build_chain(cfg: Mapping[str, Any], model):
    """The sampler chain on the model's own ᾱ_t (its scheduler config) or the configured schedule."""
    from pipeline.geometry import chain_from_config, schedule_from_alpha_bar, schedule_from_config

    if getattr(model, "alpha_bar", None) is not None:
        schedule = schedule_from_alpha_bar(model.alpha_bar, name=str(cfg["model"].get("name", "model")))
    else:
        schedule = schedule_from_config(cfg["schedule"])
    return chain_from_config(schedule, cfg["sampler"])
