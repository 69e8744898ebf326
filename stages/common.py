"""Plumbing shared by the four stage apps: config preparation, run folders, meta.json, MLflow."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline import io
from pipeline.errors import InputMissingError, PipelineError
from pipeline.invocation import dvc_invocation
from pipeline.provenance import git_revision, machine, package_versions
from pipeline.runkeys import check_run_key, config_digest, key_sections, run_key
from pipeline.tracking import Tracker, system_tags
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
    if cfg.get("run_key") is not None and cfg.get("run_key") != "":
        check_run_key(cfg["run_key"])
    seed_batch = (cfg.get("measure") or {}).get("seed_batch")
    if (
        seed_batch is not None
        and seed_batch != "auto"
        and (isinstance(seed_batch, bool) or not isinstance(seed_batch, int) or seed_batch < 1)
    ):
        raise ConfigError(
            f"measure.seed_batch={seed_batch} — set it to a positive number of seeds measured together "
            "(1 = one point at a time), or auto (chosen from free device memory)"
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


# Entries beside a run folder <parent>/<name> that belong to its run. Run keys never start with a
# dot and each prefix differs from the others in its first letter, so no two runs' entries collide.
def lock_path(final: Path) -> Path:
    return final.parent / f".lock-{final.name}"


def work_path(final: Path) -> Path:
    return final.parent / f".work-{final.name}"


def scratch_path(final: Path) -> Path:
    return final.parent / f".partial-{final.name}"


_WORK_RECORD = "work.json"


def read_meta(folder: Path) -> dict[str, Any] | None:
    """The folder's meta.json, or None when it has none (or an unreadable one)."""
    meta = folder / "meta.json"
    if not meta.is_file():
        return None
    try:
        obj = json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def check_replaceable(final: Path, stage: str, what: str = "run_key") -> None:
    """Refuse before any work when ``final`` exists and is not a completed output of ``stage``.

    Only a folder whose meta.json says it is this stage's output (or an empty folder) may be
    replaced; anything else is somebody's data and stays untouched.
    """
    if not final.exists() and not final.is_symlink():
        return
    if final.is_symlink() or not final.is_dir():
        raise ConfigError(
            f"{final} exists and is not a folder; it is left untouched — move it away or choose another {what}"
        )
    if not any(final.iterdir()):
        return
    meta = read_meta(final)
    if meta is None or meta.get("stage") != stage:
        raise ConfigError(
            f"{final} exists but is not a completed output of the {stage} stage (its meta.json does not say so); "
            f"it is left untouched — move it away or choose another {what}"
        )


def verify_outputs(folder: Path, meta: Mapping[str, Any]) -> str | None:
    """None when every output file matches the sha256 meta.json recorded, else what differs."""
    recorded = meta.get("outputs")
    if not isinstance(recorded, dict):
        return "its meta.json records no output hashes (written by an older version)"
    actual = io.tree_sha256(folder, exclude=("meta.json",))
    for name, sha in sorted(recorded.items()):
        if name not in actual:
            return f"{folder / name} is missing"
        if actual[name] != sha:
            return f"{folder / name} differs from the sha256 in its meta.json (edited or corrupt)"
    extra = sorted(set(actual) - set(recorded))
    if extra:
        return f"{folder / extra[0]} is not one of the outputs its meta.json records"
    return None


def upstream_dir(stage: str, cfg: Mapping[str, Any], needed_by: str) -> Path:
    """The completed, unaltered output folder of an upstream stage, or a clear error saying what to run."""
    folder = stage_dir(stage, cfg)
    meta = read_meta(folder)
    if meta is None and folder.is_dir() and any(folder.iterdir()):
        raise InputMissingError(
            f"{needed_by} cannot use {folder}: its meta.json is missing or unreadable, so it is not a finished "
            f"{stage} run — rerun `python -m stages.{stage}` with the same overrides (or `dvc repro`)"
        )
    if meta is None:
        raise InputMissingError(
            f"{needed_by} needs the {stage} stage's outputs at {folder}, which do not exist — run "
            f"`python -m stages.{stage}` with the same overrides first (or `dvc repro`)"
        )
    problem = verify_outputs(folder, meta)
    if problem is not None:
        raise PipelineError(
            f"{needed_by} cannot use {folder}: {problem} — rerun `python -m stages.{stage}` with the same "
            "overrides (it recomputes a folder whose files changed), or `dvc repro`"
        )
    return folder


InputSpec = Path | str | Sequence[Path]


def input_record(value: InputSpec) -> dict[str, Any]:
    """{"path", "sha256"[, "files"]} of one input: a stage folder (its recorded output hashes, checked),
    a file, a folder, a list of files, or a plain string (e.g. a resolved hub revision)."""
    if isinstance(value, str) and not Path(value).exists():
        return {"value": value, "sha256": io.digest_of(value)}
    if isinstance(value, (str, Path)):
        path = Path(value)
        meta = read_meta(path) if path.is_dir() else None
        if meta is not None and isinstance(meta.get("outputs"), dict) and meta.get("stage"):
            return {"path": str(path), "stage": meta["stage"], "sha256": io.digest_of(meta["outputs"])}
        if path.is_dir():
            files = io.tree_sha256(path)
            return {"path": str(path), "sha256": io.digest_of(files), "files": files}
        return {"path": str(path), "sha256": io.sha256_file(path)}
    files = {str(Path(p)): io.sha256_file(p) for p in value}
    return {"sha256": io.digest_of(files), "files": files}


def _input_digests(inputs: Mapping[str, InputSpec]) -> dict[str, dict[str, Any]]:
    return {label: input_record(v) for label, v in sorted(inputs.items())}


def _reuse_problem(final: Path, meta: Mapping[str, Any] | None, digest: str, inputs: Mapping) -> str | None:
    """None when ``final`` can be reused as this run's result, else why it cannot."""
    if meta is None:
        return "no completed output"
    if meta.get("config_digest") != digest:
        return f"it was made with another config (digest {meta.get('config_digest')}, now {digest})"
    recorded = {k: (v or {}).get("sha256") for k, v in (meta.get("input_hashes") or {}).items()}
    now = {k: v["sha256"] for k, v in inputs.items()}
    if recorded != now:
        changed = sorted(k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k))
        return f"its inputs changed ({', '.join(changed)})"
    return verify_outputs(final, meta)


def _drop_unitless_work(work: Path) -> None:
    """A failed run that finished no unit leaves nothing to resume: its work folder goes with it."""
    if work.is_dir() and not any(p.is_file() and p.name != _WORK_RECORD for p in work.rglob("*")):
        io.remove_path(work)


def _prepare_work(work: Path, stage: str, unit_digest: str) -> None:
    """Keep the work folder's resumable units only if they were made for exactly this run's units."""
    record = work / _WORK_RECORD
    if work.is_dir() and any(work.iterdir()):
        try:
            held = json.loads(record.read_text()).get("unit_digest")
        except (OSError, ValueError, AttributeError):
            held = None
        if held != unit_digest:
            n = sum(1 for p in work.rglob("*") if p.is_file() and p.name != _WORK_RECORD)
            log.warning(
                "%s: discarding %d resumable file(s) in %s: they were made for another config or other "
                "inputs (unit digest %s, this run %s); units are never mixed",
                stage,
                n,
                work,
                held,
                unit_digest,
            )
            io.remove_path(work)
        elif any(p.name != _WORK_RECORD for p in work.iterdir()):
            log.info("%s: resuming from the units in %s", stage, work)
    work.mkdir(parents=True, exist_ok=True)
    io.write_json(record, {"stage": stage, "unit_digest": unit_digest})


@contextlib.contextmanager
def _held_if_free(lock: Path) -> Iterator[bool]:
    """Hold ``lock`` for the block when no writer holds it; yield whether it is held."""
    try:
        with io.writer_lock(lock, str(lock)):
            yield True
    except io.FolderBusyError:
        yield False


def clean_stale(parent: Path) -> list[Path]:
    """Remove scratch left by killed runs, and work folders no run can resume, where no writer holds the lock.

    Scratch (``.partial-<key>``, and its ``.old``) is never resumable. A work folder is removed when
    it holds no units, or when the complete output beside it was made from the same units.
    """
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for entry in sorted(parent.iterdir()):
        name = entry.name
        for prefix in (".partial-", ".work-"):
            if not name.startswith(prefix):
                continue
            key = name[len(prefix) :].removesuffix(".old")
            if prefix == ".work-":
                units = [p for p in entry.rglob("*") if p.is_file() and p.name != _WORK_RECORD]
                meta = read_meta(parent / key)
                try:
                    held = json.loads((entry / _WORK_RECORD).read_text()).get("unit_digest")
                except (OSError, ValueError, AttributeError):
                    held = None
                if units and not (meta and held and meta.get("unit_digest") == held):
                    continue
            with _held_if_free(parent / f".lock-{key}") as held_lock:
                if held_lock and entry.exists():
                    io.remove_path(entry)
                    removed.append(entry)
    for path in removed:
        log.info("removed %s (left by a run that has ended)", path)
    return removed


class StageInterrupted(SystemExit):
    """SIGTERM/SIGINT reached a running stage: it unwinds (scratch removed, work kept) and exits 128+signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)


class _SignalsAsExit:
    """SIGTERM (SLURM preemption and time-out) and SIGINT raise StageInterrupted in the main thread.

    After ``defer()`` (the result is being published) a signal is only recorded in ``pending``, so
    it cannot cut the rename of a finished folder or its FINISHED status in half.
    """

    def __init__(self) -> None:
        self.pending: int | None = None
        self._deferred = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self._deferred:
            self.pending = signum
            return
        raise StageInterrupted(signum)

    def defer(self) -> None:
        self._deferred = True

    def __enter__(self) -> _SignalsAsExit:
        if threading.current_thread() is threading.main_thread():
            self._previous = {
                sig: signal.signal(sig, self._handler) for sig in (signal.SIGTERM, signal.SIGINT)
            }
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)


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
    inputs: Mapping[str, InputSpec] | None = None,
    final: Path | None = None,
) -> StageResult:
    """Run ``body`` for ``stage`` with an atomic output folder, meta.json and an MLflow run.

    One writer per folder (an OS lock beside it). A complete folder is reused when its config,
    its inputs' sha256 and its own files' sha256 all still match (unless ``force``); otherwise it
    is recomputed and the log says why. Resumable units live in a work folder keyed to the config
    sections and inputs that determine them; units of another key are discarded, never merged.
    A failed or interrupted run leaves no output folder, only its work folder. ``inputs``: files,
    folders or upstream stage folders whose content the outputs depend on. ``final``: the output
    folder when it is not <paths.outputs>/<stage>/<run_key> (train.out_dir).
    """
    cfg = dict(cfg)
    if final is None:
        key = run_key(stage, cfg)
        final = outputs_root(cfg) / stage / key
        what = "run_key"
    else:
        key = final.name
        what = f"{stage}.out_dir"
    check_replaceable(final, stage, what)
    final.parent.mkdir(parents=True, exist_ok=True)
    with io.writer_lock(lock_path(final), str(final)):
        return _run_locked(stage, cfg, body, artifacts, inputs or {}, final, key, what)


def _run_locked(stage, cfg, body, artifacts, inputs, final: Path, key: str, what: str) -> StageResult:
    check_replaceable(final, stage, what)  # again under the lock: another writer may have been first
    io.remove_path(scratch_path(final))  # a killed run's scratch; nobody else can be writing it now
    if (
        what == "run_key"
    ):  # <paths.outputs>/<stage>/ holds only runs' folders; a chosen out_dir's parent may not
        clean_stale(final.parent)
    digest = config_digest(cfg, key_sections(stage))
    input_hashes = _input_digests(inputs)
    meta = read_meta(final)
    why = _reuse_problem(final, meta, digest, input_hashes)
    if why is None and not cfg.get("force"):
        log.info(
            "%s: %s is complete for this config and inputs; reusing it (force=true recomputes)", stage, final
        )
        return StageResult(
            stage, final.absolute(), meta.get("mlflow_run_id"), True, meta.get("metrics", {}), 0.0
        )
    if meta is not None:
        log.info("%s: recomputing %s: %s", stage, final, "force=true" if why is None else why)

    # everything that determines the resumable units: the config sections and the inputs' content
    unit_digest = io.digest_of(
        {"stage": stage, "config": {s: cfg.get(s) for s in key_sections(stage)}, "inputs": input_hashes}
    )
    work = work_path(final)
    _prepare_work(work, stage, unit_digest)
    tcfg = cfg.get("tracking", {})
    rev = git_revision()
    tags = {
        "stage": stage,
        "run_key": key,
        "git_revision": rev,
        "config_digest": digest,
        "host": socket.gethostname(),
        **system_tags(f"{stage}:{key}", f"stages.{stage}", rev),
    }
    for env, tag in (
        ("SLURM_JOB_ID", "slurm_job_id"),
        ("SLURM_ARRAY_JOB_ID", "slurm_array_job_id"),
        ("DVC_EXP_NAME", "dvc_experiment"),
        ("PIFS_SWEEP_ID", "sweep_id"),
    ):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    t0 = time.time()
    signals = _SignalsAsExit()
    tracker = Tracker()  # a no-op until the run exists
    try:
        with signals:
            tracker = Tracker.start(
                enabled=bool(tcfg.get("enabled", True)),
                uri=tcfg.get("uri"),
                experiment=tcfg.get("experiment", "pifs-repro"),
                run_name=f"{stage}:{key}",
                tags=tags,
                artifact_location=tcfg.get("artifact_location"),
                parent_run_id=os.environ.get("PIFS_PARENT_RUN_ID") or None,
                invocation=dvc_invocation(),  # under `dvc repro`: nest in the invocation's parent run
            )
            # params: the sections that determine this stage's outputs; the whole config as an artifact
            tracker.log_params({s: cfg[s] for s in key_sections(stage) if s in cfg})
            tracker.log_dict(cfg, "config.yaml")
            with io.atomic_dir(final, scratch=scratch_path(final)) as tmp:
                ctx = StageContext(stage, cfg, key, tmp, final, work, tracker)
                body(ctx)
                wall = time.time() - t0
                io.write_json(
                    tmp / "meta.json",
                    {
                        "stage": stage,
                        "run_key": key,
                        "config_digest": digest,
                        "unit_digest": unit_digest,
                        "config": cfg,
                        "inputs": ctx.inputs,
                        "input_hashes": input_hashes,
                        "outputs": io.tree_sha256(tmp, exclude=("meta.json",)),
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
                # the result is complete: a signal from here on waits until it is published
                signals.defer()
            tracker.log_metrics({**ctx.metrics, "wall_time_s": wall})
            for name in ("meta.json", *artifacts):
                path = final / name
                if path.exists():
                    tracker.log_artifact(path)
            tracker.finish("FINISHED")
    except StageInterrupted as exc:
        _drop_unitless_work(work)
        tracker.set_tags(
            {"error": f"stopped by signal {exc.signum}; the work folder {work} is kept for resume"}
        )
        tracker.finish("KILLED")
        log.error(
            "%s: stopped by signal %d; scratch removed, resumable work kept in %s (rerun the same command "
            "to resume)",
            stage,
            exc.signum,
            work,
        )
        raise
    except BaseException as exc:
        tracker.set_tags({"error": "".join(traceback.format_exception_only(type(exc), exc)).strip()[:4000]})
        tracker.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        _drop_unitless_work(work)
        raise
    io.remove_path(work)
    log.info("%s: wrote %s in %.1f s (MLflow run %s)", stage, final, wall, tracker.run_id)
    if signals.pending is not None:
        raise StageInterrupted(signals.pending)  # asked to stop while publishing: stop now, result complete
    return StageResult(stage, final.absolute(), tracker.run_id, False, ctx.metrics, wall)


def dataset_inputs(source) -> dict[str, InputSpec]:
    """The files a dataset source reads (hashed into meta.json); none for synthetic sources."""
    files = getattr(source, "files", None) or getattr(source, "_files", None)
    if files:
        return {"dataset": [Path(f) for f in files]}
    photographs = getattr(source, "photographs", None)
    if photographs:
        from pipeline.data.natural_crops import PHOTOGRAPHS, skimage_data_dir

        return {"dataset": [skimage_data_dir() / PHOTOGRAPHS[name] for name in photographs]}
    return {}


def model_inputs(cfg: Mapping[str, Any], cov_dir: Path | None) -> dict[str, InputSpec]:
    """What the configured model's numbers come from: its checkpoint files (and the hub revision the
    id resolved to), or for the Gaussian oracle the covariance folder it is fitted from."""
    mcfg = cfg["model"]
    if mcfg.get("kind") != "unet":
        return {"model": cov_dir} if cov_dir is not None else {}
    path = str(mcfg.get("path"))
    if path.startswith("pkg://"):
        from pipeline.models.assets import resolve_asset_path

        return {"model": resolve_asset_path(path)}
    from pipeline.models.unet import resolve_checkpoint_dir

    # the model is built already, so a hub id resolves from the local cache (no network)
    folder = resolve_checkpoint_dir(path, local_files_only=True, revision=mcfg.get("revision"))
    out: dict[str, InputSpec] = {"model": folder}
    if folder.parent.name == "snapshots":  # a hub snapshot: <cache>/models--org--name/snapshots/<commit>
        out["model_revision"] = folder.name
    return out


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
