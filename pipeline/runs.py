"""The run lifecycle every stage goes through: one writer per folder, resumable work, reuse, meta.json,
signals, MLflow — ``run_stage(stage, cfg, body, ...)``.

A stage is an adapter: it assembles its objects (pipeline.assemble) and hands a body to run_stage,
which owns everything around it. Folder layout beside a run folder ``<parent>/<key>``:
``.lock-<key>`` (the writer lock), ``.work-<key>/`` (resumable units, kept across failures) and
``.partial-<key>/`` (scratch, renamed into place when the body returns).
"""

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

from pipeline import io
from pipeline.errors import ConfigError, InputMissingError, PipelineError
from pipeline.invocation import dvc_invocation
from pipeline.outputs import META, UnreadableMetaError, read_meta
from pipeline.provenance import git_revision, machine, package_versions
from pipeline.runkeys import config_digest, key_sections, run_key
from pipeline.tracking import Tracker, system_tags

log = logging.getLogger("pifs")


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


def _meta_or_none(folder: Path) -> dict[str, Any] | None:
    """meta.json where a broken one only means "not a finished run" (replace/clean decisions)."""
    try:
        return read_meta(folder)
    except UnreadableMetaError:
        return None


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
    meta = _meta_or_none(final)
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
    actual = io.tree_sha256(folder, exclude=(META,))
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
    try:
        meta = read_meta(folder)
    except UnreadableMetaError as e:
        raise InputMissingError(
            f"{needed_by} cannot use {folder}: its meta.json is unreadable, so it is not a finished "
            f"{stage} run — rerun `python -m stages.{stage}` with the same overrides (or `dvc repro`)"
        ) from e
    if meta is None and folder.is_dir() and any(folder.iterdir()):
        raise InputMissingError(
            f"{needed_by} cannot use {folder}: its meta.json is missing, so it is not a finished "
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
        meta = _meta_or_none(path) if path.is_dir() else None
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


def _held_unit_digest(work: Path) -> str | None:
    try:
        return json.loads((work / _WORK_RECORD).read_text()).get("unit_digest")
    except (OSError, ValueError, AttributeError):
        return None


def _prepare_work(work: Path, stage: str, unit_digest: str) -> None:
    """Keep the work folder's resumable units only if they were made for exactly this run's units."""
    if work.is_dir() and any(work.iterdir()):
        held = _held_unit_digest(work)
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
    io.write_json(work / _WORK_RECORD, {"stage": stage, "unit_digest": unit_digest})


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
                meta = _meta_or_none(parent / key)
                held = _held_unit_digest(entry)
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
        return _run_locked(_Run(stage, cfg, key, final, what), body, artifacts, inputs or {})


@dataclass
class _Run:
    """One execution of a stage: what it is asked to produce and where."""

    stage: str
    cfg: dict[str, Any]
    key: str
    final: Path
    what: str  # the config key that names the folder (for messages)

    @property
    def work(self) -> Path:
        return work_path(self.final)


def _tags(run: _Run, digest: str, rev: str) -> dict[str, str]:
    tags = {
        "stage": run.stage,
        "run_key": run.key,
        "git_revision": rev,
        "config_digest": digest,
        "host": socket.gethostname(),
        **system_tags(f"{run.stage}:{run.key}", f"stages.{run.stage}", rev),
    }
    for env, tag in (
        ("SLURM_JOB_ID", "slurm_job_id"),
        ("SLURM_ARRAY_JOB_ID", "slurm_array_job_id"),
        ("DVC_EXP_NAME", "dvc_experiment"),
        ("PIFS_SWEEP_ID", "sweep_id"),
    ):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def _start_tracker(run: _Run, digest: str, rev: str) -> Tracker:
    tcfg = run.cfg.get("tracking", {})
    tracker = Tracker.start(
        enabled=bool(tcfg.get("enabled", True)),
        uri=tcfg.get("uri"),
        experiment=tcfg.get("experiment", "pifs-repro"),
        run_name=f"{run.stage}:{run.key}",
        tags=_tags(run, digest, rev),
        artifact_location=tcfg.get("artifact_location"),
        parent_run_id=os.environ.get("PIFS_PARENT_RUN_ID") or None,
        invocation=dvc_invocation(),  # under `dvc repro`: nest in the invocation's parent run
    )
    # params: the sections that determine this stage's outputs; the whole config as an artifact
    tracker.log_params({s: run.cfg[s] for s in key_sections(run.stage) if s in run.cfg})
    tracker.log_dict(run.cfg, "config.yaml")
    return tracker


def _meta_record(run: _Run, ctx: StageContext, digests: dict[str, Any], rev: str, wall: float) -> dict:
    return {
        "stage": run.stage,
        "run_key": run.key,
        "config_digest": digests["config"],
        "unit_digest": digests["unit"],
        "config": run.cfg,
        "inputs": ctx.inputs,
        "input_hashes": digests["inputs"],
        "outputs": io.tree_sha256(ctx.out_dir, exclude=(META,)),
        "metrics": ctx.metrics,
        "versions": package_versions(),
        "git_revision": rev,
        "machine": machine(),
        "wall_time_s": wall,
        "mlflow_run_id": ctx.tracker.run_id,
        "mlflow_tracking_uri": ctx.tracker.tracking_uri,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _run_locked(run: _Run, body, artifacts, inputs) -> StageResult:
    check_replaceable(
        run.final, run.stage, run.what
    )  # again under the lock: another writer may have been first
    io.remove_path(scratch_path(run.final))  # a killed run's scratch; nobody else can be writing it now
    if run.what == "run_key":  # <paths.outputs>/<stage>/ holds only runs' folders; a chosen out_dir's may not
        clean_stale(run.final.parent)
    digest = config_digest(run.cfg, key_sections(run.stage))
    input_hashes = _input_digests(inputs)
    meta = _meta_or_none(run.final)
    why = _reuse_problem(run.final, meta, digest, input_hashes)
    if why is None and not run.cfg.get("force"):
        log.info(
            "%s: %s is complete for this config and inputs; reusing it (force=true recomputes)",
            run.stage,
            run.final,
        )
        return StageResult(
            run.stage, run.final.absolute(), meta.get("mlflow_run_id"), True, meta.get("metrics", {}), 0.0
        )
    if meta is not None:
        log.info("%s: recomputing %s: %s", run.stage, run.final, "force=true" if why is None else why)

    # everything that determines the resumable units: the config sections and the inputs' content
    unit_digest = io.digest_of(
        {
            "stage": run.stage,
            "config": {s: run.cfg.get(s) for s in key_sections(run.stage)},
            "inputs": input_hashes,
        }
    )
    _prepare_work(run.work, run.stage, unit_digest)
    digests = {"config": digest, "unit": unit_digest, "inputs": input_hashes}
    return _execute(run, body, artifacts, digests)


def _execute(run: _Run, body, artifacts, digests: dict[str, Any]) -> StageResult:
    """Run the body in scratch, publish it atomically with its meta.json, and close the MLflow run."""
    rev = git_revision()
    t0 = time.time()
    signals = _SignalsAsExit()
    tracker = Tracker()  # a no-op until the run exists
    try:
        with signals:
            tracker = _start_tracker(run, digests["config"], rev)
            with io.atomic_dir(run.final, scratch=scratch_path(run.final)) as tmp:
                ctx = StageContext(run.stage, run.cfg, run.key, tmp, run.final, run.work, tracker)
                body(ctx)
                wall = time.time() - t0
                io.write_json(tmp / META, _meta_record(run, ctx, digests, rev, wall))
                # the result is complete: a signal from here on waits until it is published
                signals.defer()
            tracker.log_metrics({**ctx.metrics, "wall_time_s": wall})
            for name in (META, *artifacts):
                path = run.final / name
                if path.exists():
                    tracker.log_artifact(path)
            tracker.finish("FINISHED")
    except StageInterrupted as exc:
        _drop_unitless_work(run.work)
        tracker.set_tags(
            {"error": f"stopped by signal {exc.signum}; the work folder {run.work} is kept for resume"}
        )
        tracker.finish("KILLED")
        log.error(
            "%s: stopped by signal %d; scratch removed, resumable work kept in %s (rerun the same command "
            "to resume)",
            run.stage,
            exc.signum,
            run.work,
        )
        raise
    except BaseException as exc:
        tracker.set_tags({"error": "".join(traceback.format_exception_only(type(exc), exc)).strip()[:4000]})
        tracker.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        _drop_unitless_work(run.work)
        raise
    io.remove_path(run.work)
    log.info("%s: wrote %s in %.1f s (MLflow run %s)", run.stage, run.final, wall, tracker.run_id)
    if signals.pending is not None:
        raise StageInterrupted(signals.pending)  # asked to stop while publishing: stop now, result complete
    return StageResult(run.stage, run.final.absolute(), tracker.run_id, False, ctx.metrics, wall)
