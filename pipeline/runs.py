"""The run lifecycle every stage goes through: one writer per folder, resumable work, reuse, meta.json,
signals, MLflow — ``run_stage(spec, body, ...)``.

A stage is an adapter: it assembles its objects and its run spec (pipeline.assemble's modules, pipeline.runkeys)
and hands a body to run_stage, which owns everything around it. The lifecycle never reads the config:
the spec is the config resolved into what names, keys and records a run. The entries beside a run
folder (lock, work, scratch) and what a run may remove are pipeline.workspace's; what its record holds
is pipeline.lineage's. A run folder holds its outputs, meta.json (the record: deterministic, hashed by
DVC) and run.json (how this execution went: wall time, host, absolute paths, MLflow run, versions;
.dvcignore leaves it out).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import io
from pipeline.errors import ConfigError, InputMissingError, PipelineError
from pipeline.invocation import dvc_invocation
from pipeline.lineage import (
    UNHASHED,
    InputSpec,
    input_record,
    key_differences,
    lineage_problem,
    record_problem,
    rerun_hint,
    seal,
    where_inputs_are,
)
from pipeline.outputs import META, RUN, UnreadableMetaError, read_meta, read_run_info
from pipeline.provenance import git_revision, machine, package_versions
from pipeline.runkeys import RunSpec
from pipeline.tracking import Tracker, system_tags
from pipeline.workspace import (
    claim_scratch,
    clean_stale,
    drop_unitless_work,
    foreign_files,
    lock_path,
    mark_scratch,
    prepare_work,
    scratch_path,
    unmark_scratch,
    work_path,
)

log = logging.getLogger("pifs")


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
    actual = io.tree_sha256(folder, exclude=UNHASHED)
    for name, sha in sorted(recorded.items()):
        if name not in actual:
            return f"{folder / name} is missing"
        if actual[name] != sha:
            return f"{folder / name} differs from the sha256 in its meta.json (edited or corrupt)"
    extra = sorted(set(actual) - set(recorded))
    if extra:
        return f"{folder / extra[0]} is not one of the outputs its meta.json records"
    return None


def finished_record(
    folder: Path, stage: str, needed_by: str, fix: str, altered_fix: str | None = None
) -> dict[str, Any]:
    """The record of ``folder`` when it is a finished, unaltered ``stage`` output (its meta.json intact
    and every file matching the hash it records); else a one-line error ending in ``fix`` (``altered_fix``
    when the folder is a finished run whose files or record were altered)."""
    try:
        meta = read_meta(folder)
    except UnreadableMetaError as e:
        raise InputMissingError(
            f"{needed_by} cannot use {folder}: its meta.json is unreadable, so it is not a finished "
            f"{stage} run — {fix}"
        ) from e
    if meta is None and folder.is_dir() and any(folder.iterdir()):
        raise InputMissingError(
            f"{needed_by} cannot use {folder}: its meta.json is missing, so it is not a finished {stage} run — {fix}"
        )
    if meta is None:
        raise InputMissingError(
            f"{needed_by} needs the {stage} stage's outputs at {folder}, which do not exist — {fix}"
        )
    if meta.get("stage") != stage:
        raise PipelineError(
            f"{needed_by} cannot use {folder}: its meta.json says it is a {meta.get('stage')!r} output, "
            f"not a {stage} one — {fix}"
        )
    problem = record_problem(meta) or verify_outputs(folder, meta)
    if problem is not None:
        raise PipelineError(f"{needed_by} cannot use {folder}: {problem} — {altered_fix or fix}")
    return meta


def verified_upstream(upstream: RunSpec, needed_by: str) -> tuple[Path, dict[str, Any]]:
    """The completed, unaltered output folder of an upstream stage made under this run's values of
    every key both stages depend on, with its record; else a one-line error saying what to run.
    ``upstream``: the upstream stage's run spec under this run's config."""
    stage, folder = upstream.stage, upstream.final
    rerun = f"rerun `python -m stages.{stage}` with the same overrides (or `dvc repro`)"
    if not folder.is_dir() or not any(folder.iterdir()):
        raise InputMissingError(
            f"{needed_by} needs the {stage} stage's outputs at {folder}, which do not exist — run "
            f"`python -m stages.{stage}` with the same overrides first (or `dvc repro`)"
        )
    meta = finished_record(folder, stage, needed_by, rerun, rerun_hint(stage))
    problem = lineage_problem(stage, folder, meta, upstream.values, needed_by)
    if problem is not None:
        raise PipelineError(problem)
    return folder, meta


def upstream_dir(upstream: RunSpec, needed_by: str) -> Path:
    """The upstream folder of :func:`verified_upstream`, without its record."""
    return verified_upstream(upstream, needed_by)[0]


def _input_digests(inputs: Mapping[str, InputSpec]) -> dict[str, dict[str, Any]]:
    return {label: input_record(v) for label, v in sorted(inputs.items())}


def _reuse_problem(final: Path, meta: Mapping[str, Any] | None, digest: str, inputs: Mapping) -> str | None:
    """None when ``final`` can be reused as this run's result, else why it cannot."""
    if meta is None:
        return "no completed output"
    problem = record_problem(meta)
    if problem is not None:
        return problem
    if meta.get("config_digest") != digest:
        return f"it was made with another config (digest {meta.get('config_digest')}, now {digest})"
    recorded = {k: (v or {}).get("sha256") for k, v in (meta.get("input_hashes") or {}).items()}
    now = {k: v["sha256"] for k, v in inputs.items()}
    if recorded != now:
        changed = sorted(k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k))
        return f"its inputs changed ({', '.join(changed)})"
    return verify_outputs(final, meta)


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
    key: str
    out_dir: Path  # scratch folder; becomes final_dir atomically when the body returns
    final_dir: Path
    work_dir: Path  # survives failures: per-unit checkpoints for resume
    tracker: Tracker
    progress: bool = True  # progress bars on long work (the config's `progress`)
    metrics: dict[str, float] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)


@dataclass
class StageResult:
    stage: str
    out_dir: Path
    run_id: str | None
    skipped: bool
    metrics: dict[str, float]
    wall_time_s: float


def run_stage(
    spec: RunSpec,
    body: Callable[[StageContext], None],
    artifacts: tuple[str, ...] = (),
    inputs: Mapping[str, InputSpec] | None = None,
) -> StageResult:
    """Run ``body`` for ``spec.stage`` with an atomic output folder, meta.json and an MLflow run.

    One writer per folder (an OS lock beside it). A complete folder is reused when its config,
    its inputs' sha256 and its own files' sha256 all still match (unless ``force``); otherwise it
    is recomputed and the log says why. Resumable units live in a work folder keyed to the config
    sections and inputs that determine them; units of another key are discarded, never merged.
    A failed or interrupted run leaves no output folder, only its work folder. ``inputs``: files,
    folders or upstream stage folders whose content the outputs depend on. ``spec``: the run under
    its config (pipeline.runkeys.run_spec), its folder <paths.outputs>/<stage>/<run_key> or train.out_dir.
    """
    check_replaceable(spec.final, spec.stage, spec.what)
    spec.final.parent.mkdir(parents=True, exist_ok=True)
    with io.writer_lock(lock_path(spec.final), str(spec.final)):
        return _run_locked(spec, body, artifacts, inputs or {})


# where a run was started from (a SLURM job, a DVC experiment, a Hydra sweep): MLflow tags and run.json
_ENV_TAGS = (
    ("SLURM_JOB_ID", "slurm_job_id"),
    ("SLURM_ARRAY_JOB_ID", "slurm_array_job_id"),
    ("DVC_EXP_NAME", "dvc_experiment"),
    ("PIFS_SWEEP_ID", "sweep_id"),
)


def _tags(run: RunSpec, rev: str) -> dict[str, str]:
    tags = {
        "stage": run.stage,
        "run_key": run.key,
        "git_revision": rev,
        "config_digest": run.digest,
        "host": socket.gethostname(),
        **system_tags(f"{run.stage}:{run.key}", f"stages.{run.stage}", rev),
    }
    for env, tag in _ENV_TAGS:
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def _start_tracker(run: RunSpec, rev: str) -> Tracker:
    tracker = Tracker.start(
        enabled=run.tracking.enabled,
        uri=run.tracking.uri,
        experiment=run.tracking.experiment,
        run_name=f"{run.stage}:{run.key}",
        tags=_tags(run, rev),
        artifact_location=run.tracking.artifact_location,
        parent_run_id=os.environ.get("PIFS_PARENT_RUN_ID") or None,
        invocation=dvc_invocation(),  # under `dvc repro`: nest in the invocation's parent run
    )
    # params: the sections that determine this stage's outputs; the whole config as an artifact
    tracker.log_params(run.values)
    tracker.log_dict(json.loads(run.config_json), "config.yaml")
    return tracker


# Metrics that describe how a run went, not what it computed (throughput, resumed units, sizes the
# memory model chose for this device): MLflow and run.json hold them, the record never does.
EXECUTION_METRICS = frozenset(
    {
        "seeds_resumed",
        "images_per_s",
        "seconds_per_point_mean",
        "seconds_measuring_total",
        "chunk_size",
        "seed_batch",
        "wall_s",
    }
)


def _record(run: RunSpec, ctx: StageContext, digests: dict[str, Any]) -> dict[str, Any]:
    """meta.json: what the outputs are and what made them, sealed; the same bytes on any machine."""
    return seal(
        {
            "stage": run.stage,
            "run_key": run.key,
            "config_digest": run.digest,
            "unit_digest": digests["unit"],
            "config": run.values,
            "input_hashes": digests["inputs"],
            "outputs": io.tree_sha256(ctx.out_dir, exclude=UNHASHED),
            "metrics": {k: v for k, v in sorted(ctx.metrics.items()) if k not in EXECUTION_METRICS},
        }
    )


def _run_info(
    run: RunSpec, ctx: StageContext, record: Mapping[str, Any], where: dict[str, Any], rev: str, wall: float
) -> dict:
    """run.json: how this execution went, for the record it produced (never hashed by DVC)."""
    return {
        "record_sha256": record["record_sha256"],
        "stage": run.stage,
        "run_key": run.key,
        "folder": str(run.final.absolute()),
        "inputs": {**where, **ctx.inputs},
        "config": json.loads(run.config_json),
        "metrics": {k: v for k, v in sorted(ctx.metrics.items()) if k in EXECUTION_METRICS},
        "versions": package_versions(),
        "git_revision": rev,
        "machine": machine(),
        "wall_time_s": wall,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mlflow_run_id": ctx.tracker.run_id,
        "mlflow_tracking_uri": ctx.tracker.tracking_uri,
        "mlflow_experiment": run.tracking.experiment if run.tracking.enabled else None,
        **{tag: os.environ[env] for env, tag in _ENV_TAGS if os.environ.get(env)},
    }


def _refuse_replacing_a_sibling_job(run: RunSpec, meta: Mapping[str, Any] | None) -> None:
    """A sweep's job never replaces the result another job of the same sweep wrote under other values
    (a fixed run_key over ``seed=0,5``): that job's folder is its result, not stale output."""
    sweep = os.environ.get("PIFS_SWEEP_ID")
    if not sweep or meta is None or meta.get("config_digest") == run.digest:
        return
    if (read_run_info(run.final) or {}).get("sweep_id") != sweep:
        return
    diffs = key_differences(run.stage, meta, run.values, run.stage)
    what = f" ({diffs[0][0]}={diffs[0][1]!r} there, {diffs[0][2]!r} here)" if diffs else ""
    raise ConfigError(
        f"run_key={run.key}: {run.final} holds the result of another job of this sweep ({sweep}) made under "
        f"other values{what} — drop run_key so that each job derives its own folder name"
    )


def _run_locked(run: RunSpec, body, artifacts, inputs) -> StageResult:
    check_replaceable(
        run.final, run.stage, run.what
    )  # again under the lock: another writer may have been first
    claim_scratch(run.final, run.stage)  # a killed run's scratch; nobody else can be writing it now
    if run.what == "run_key":  # <paths.outputs>/<stage>/ holds only runs' folders; a chosen out_dir's may not
        clean_stale(run.final.parent, run.stage)
    input_hashes = _input_digests(inputs)
    meta = _meta_or_none(run.final)
    _refuse_replacing_a_sibling_job(run, meta)
    why = _reuse_problem(run.final, meta, run.digest, input_hashes)
    if why is None and not run.force:
        log.info(
            "%s: %s is complete for this config and inputs; reusing it (force=true recomputes)",
            run.stage,
            run.final,
        )
        info = read_run_info(run.final) or {}
        metrics = {**meta.get("metrics", {}), **info.get("metrics", {})}
        return StageResult(run.stage, run.final.absolute(), info.get("mlflow_run_id"), True, metrics, 0.0)
    foreign = foreign_files(run.final, meta)
    if foreign:
        raise ConfigError(
            f"{run.final} holds {', '.join(foreign[:5])}{' …' if len(foreign) > 5 else ''}, which no "
            f"{run.stage} run wrote (not among the outputs its meta.json records), and recomputing replaces "
            "the whole folder — move them out of it, then rerun"
        )
    if meta is not None:
        log.info("%s: recomputing %s: %s", run.stage, run.final, "force=true" if why is None else why)

    # everything that determines the resumable units: the config sections and the inputs' content
    unit_digest = io.digest_of(
        {
            "stage": run.stage,
            "config": run.unit_config,
            "inputs": input_hashes,
        }
    )
    prepare_work(work_path(run.final), run.stage, unit_digest)
    digests = {
        "unit": unit_digest,
        "inputs": input_hashes,
        "where": where_inputs_are(inputs),
    }
    return _execute(run, body, artifacts, digests)


def _execute(run: RunSpec, body, artifacts, digests: dict[str, Any]) -> StageResult:
    """Run the body in scratch, publish it atomically with its meta.json, and close the MLflow run."""
    rev = git_revision()
    work = work_path(run.final)
    t0 = time.time()
    signals = _SignalsAsExit()
    tracker = Tracker()  # a no-op until the run exists
    try:
        with signals:
            tracker = _start_tracker(run, rev)
            with io.atomic_dir(run.final, scratch=scratch_path(run.final)) as tmp:
                mark_scratch(tmp, run.stage)  # so that only a run of this stage ever removes it
                ctx = StageContext(run.stage, run.key, tmp, run.final, work, tracker, run.progress)
                body(ctx)
                unmark_scratch(tmp)
                wall = time.time() - t0
                record = _record(run, ctx, digests)
                io.write_json(tmp / META, record)
                io.write_json(tmp / RUN, _run_info(run, ctx, record, digests["where"], rev, wall))
                # the result is complete: a signal from here on waits until it is published
                signals.defer()
            tracker.log_metrics({**ctx.metrics, "wall_time_s": wall})
            for name in (META, RUN, *artifacts):
                path = run.final / name
                if path.exists():
                    tracker.log_artifact(path)
            tracker.finish("FINISHED")
    except StageInterrupted as exc:
        drop_unitless_work(work)
        tracker.set_tags(
            {"error": f"stopped by signal {exc.signum}; the work folder {work} is kept for resume"}
        )
        tracker.finish("KILLED")
        log.error(
            "%s: stopped by signal %d; scratch removed, resumable work kept in %s (rerun the same command "
            "to resume)",
            run.stage,
            exc.signum,
            work,
        )
        raise
    except BaseException as exc:
        tracker.set_tags({"error": "".join(traceback.format_exception_only(type(exc), exc)).strip()[:4000]})
        tracker.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        drop_unitless_work(work)
        raise
    io.remove_path(work)
    log.info("%s: wrote %s in %.1f s (MLflow run %s)", run.stage, run.final, wall, tracker.run_id)
    if signals.pending is not None:
        raise StageInterrupted(signals.pending)  # asked to stop while publishing: stop now, result complete
    return StageResult(run.stage, run.final.absolute(), tracker.run_id, False, ctx.metrics, wall)
