"""Hydra callback that groups a multirun sweep: one sweep id, one MLflow parent run, job records.

Registered in conf/config.yaml under ``hydra.callbacks``. In a multirun (``-m``):

- ``on_multirun_start`` (the submitting process) draws a sweep id, opens an MLflow parent run
  tagged ``sweep_id``/``pifs.role=sweep``, exports ``PIFS_SWEEP_ID`` and ``PIFS_PARENT_RUN_ID``
  (pipeline.runs tags every stage run with the first and nests it under the second), and
  writes ``<hydra.sweep.dir>/sweep.json``.
- ``on_job_start`` (inside each job, wherever the launcher runs it) sets the same variables
  from the callback's own state. Hydra pickles the callbacks together with the launcher, so
  this holds on SLURM nodes even where sbatch does not pass the environment on
  (``SBATCH_EXPORT=NONE``), and jobs log to the parent's MLflow store.
- ``on_job_end`` (inside each job) writes ``<job dir>/pifs_job.json`` (status, overrides,
  output folder, MLflow run id, error) and tags the job's MLflow run with its Hydra job
  number and overrides. A job whose result folder already existed (reused, no new run)
  gets a small child run pointing at the reused one, so the sweep in MLflow is complete.
- ``on_multirun_end`` closes the parent: FINISHED when every job finished, FAILED otherwise.
  Hydra skips it when a job raised; an atexit hook then closes the parent as FAILED.

pipeline.sweeps lists a sweep's runs from either record.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pipeline.io import write_json
from pipeline.outputs import UnreadableMetaError, read_meta, read_run_info
from pipeline.provenance import git_revision
from pipeline.runkeys import STAGES, stage_dir
from pipeline.settings import prepare_config
from pipeline.sweeps import runs_from_mlflow
from pipeline.tracking import Tracker, retry_on_lock, system_tags

log = logging.getLogger("pifs")

SWEEP_ENV = "PIFS_SWEEP_ID"
PARENT_ENV = "PIFS_PARENT_RUN_ID"
JOB_RECORD = "pifs_job.json"
SWEEP_RECORD = "sweep.json"


def new_sweep_id() -> str:
    """Readable and unique: start time plus 6 random hex digits."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def _tracking(config: DictConfig) -> dict[str, Any]:
    node = OmegaConf.select(config, "tracking", default=None)
    return OmegaConf.to_container(node, resolve=True) if node is not None else {"enabled": False}


def overlapping_seeds(ranges: list[tuple[int, int]]) -> list[tuple[int, int, list[int]]]:
    """Pairs (i, j, shared seeds) of seed ranges [seed, seed + num_seeds) that share seeds."""
    sets = [set(range(int(s), int(s) + int(n))) for s, n in ranges]
    return [
        (i, j, sorted(sets[i] & sets[j]))
        for i in range(len(sets))
        for j in range(i + 1, len(sets))
        if sets[i] & sets[j]
    ]


def fixed_key_sweep(run_key: Any, overrides: list[str]) -> str | None:
    """Why a sweep cannot run: several jobs that would all write one fixed run_key folder (each job
    would replace the one before, all COMPLETED); None when every job gets its own folder."""
    swept = [o for o in OverridesParser.create().parse_overrides(overrides) if o.is_sweep_override()]
    keyed = [o for o in swept if o.key_or_group == "run_key"]
    others = [o.input_line for o in swept if o.key_or_group != "run_key"]
    if not others or (not keyed and run_key in (None, "")):
        return None  # one job, only run_key swept, or every job derives its own folder name
    fixed = keyed[0].input_line if keyed else f"run_key={run_key}"
    return (
        f"{fixed} is fixed while this sweep varies {', '.join(others)}: its jobs would write the same "
        "output folder — drop run_key (each job then derives its own folder name from its config)"
    )


def _swept_values(overrides: list[str], key: str, default: Any) -> list[Any]:
    """The values a sweep gives ``key`` (its sweep override, or the single configured value)."""
    for o in OverridesParser.create().parse_overrides(overrides):
        if o.key_or_group == key:
            return list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
    return [default]


def warn_overlapping_seed_sweep(config: DictConfig, overrides: list[str]) -> None:
    """Warn when jobs of a seed sweep share seeds (``seed=0,1`` with ``num_seeds=2`` samples seed 1 twice)."""
    try:
        seeds = _swept_values(overrides, "seed", OmegaConf.select(config, "seed", default=0))
        counts = _swept_values(overrides, "num_seeds", OmegaConf.select(config, "num_seeds", default=1))
        ranges = sorted({(int(s), int(n)) for s in seeds for n in counts})
    except Exception:  # a sweep syntax this check does not understand: Hydra validates it anyway
        return
    clashes = overlapping_seeds(ranges)
    if len(seeds) > 1 and clashes:
        i, j, shared = clashes[0]
        log.warning(
            "seed sweep: jobs seed=%d and seed=%d (num_seeds=%d and %d) share seeds %s, so their samples are not "
            "independent; sweep seeds num_seeds apart (e.g. seed=0,%d) or use one job with a larger num_seeds",
            ranges[i][0],
            ranges[j][0],
            ranges[i][1],
            ranges[j][1],
            shared,
            ranges[i][1],
        )


class SweepTracking(Callback):
    """Sweep id + MLflow parent run per multirun; per-job records. Picklable (strings only)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.sweep_id: str | None = None
        self.parent_run_id: str | None = None
        self.tracking_uri: str | None = None
        self.sweep_dir: str | None = None
        self._closed = False
        self._saved_env: dict[str, str | None] = {}

    # -- submitting process -------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # said before any job starts; Hydra turns a callback's exception into a warning and goes on, so
        # the refusal itself is the second job's (pipeline.runs: a sweep's job never replaces another's)
        problem = fixed_key_sweep(
            OmegaConf.select(config, "run_key", default=None),
            list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False)),
        )
        if problem is not None:
            log.warning(
                "%s", problem.replace(" — ", "; a job finding another job's result there is refused — ", 1)
            )
        if not self.enabled:
            return
        # an outer driver (e.g. a script running several sweeps as one) may fix the id
        self._saved_env = {k: os.environ.get(k) for k in (SWEEP_ENV, PARENT_ENV)}
        self.sweep_id = os.environ.get(SWEEP_ENV) or new_sweep_id()
        self.sweep_dir = str(Path(str(config.hydra.sweep.dir)).resolve())
        overrides = list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
        warn_overlapping_seed_sweep(config, overrides)
        tcfg = _tracking(config)
        if tcfg.get("enabled", True):
            run_name = f"sweep:{config.hydra.job.name}:{self.sweep_id}"
            rev = git_revision()
            tracker = Tracker.start(
                enabled=True,
                uri=tcfg.get("uri"),
                experiment=tcfg.get("experiment", "pifs-repro"),
                run_name=run_name,
                tags={
                    **system_tags(run_name, f"stages.{config.hydra.job.name}", rev),
                    "sweep_id": self.sweep_id,
                    "pifs.role": "sweep",
                    "stage": str(config.hydra.job.name),
                    "sweep_overrides": " ".join(overrides)[:5000],
                    "sweep_dir": self.sweep_dir,
                    "launcher": str(OmegaConf.select(config, "hydra.launcher._target_", default="")),
                    "git_revision": rev,
                },
                artifact_location=tcfg.get("artifact_location"),
            )
            self.parent_run_id = tracker.run_id
            self.tracking_uri = tracker.tracking_uri
            atexit.register(self._close_parent, "FAILED")
        os.environ[SWEEP_ENV] = self.sweep_id
        if self.parent_run_id:
            os.environ[PARENT_ENV] = self.parent_run_id
        write_json(
            Path(self.sweep_dir) / SWEEP_RECORD,
            {
                "sweep_id": self.sweep_id,
                "stage": str(config.hydra.job.name),
                "overrides": overrides,
                "parent_run_id": self.parent_run_id,
                "tracking_uri": self.tracking_uri,
                "experiment": tcfg.get("experiment") if tcfg.get("enabled", True) else None,
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        log.info(
            "sweep %s: parent MLflow run %s, records in %s", self.sweep_id, self.parent_run_id, self.sweep_dir
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        self._close_parent(None)
        # a later run in this process must not join this sweep
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def _close_parent(self, status: str | None) -> None:
        """Close the parent run once; status None: derive it from the children's statuses."""
        if self._closed or not self.parent_run_id:
            return
        self._closed = True
        try:
            # mlflow only when a tracked sweep closes: importing the callbacks stays fast
            from mlflow.tracking import MlflowClient

            runs = runs_from_mlflow(self.sweep_id, self.tracking_uri)
            failed = sum(r.status not in ("FINISHED",) for r in runs)
            client = MlflowClient(tracking_uri=self.tracking_uri)
            retry_on_lock(client.log_metric, self.parent_run_id, "num_runs", float(len(runs)))
            retry_on_lock(client.log_metric, self.parent_run_id, "num_not_finished", float(failed))
            if status is None:
                status = "FINISHED" if failed == 0 and runs else "FAILED"
            retry_on_lock(client.set_terminated, self.parent_run_id, status=status)
        except Exception as exc:  # closing must never mask the sweep's own outcome
            log.warning("sweep %s: could not close parent run %s: %s", self.sweep_id, self.parent_run_id, exc)

    # -- inside each job --------------------------------------------------------------------
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not (self.enabled and self.sweep_id):
            return  # a single run: nothing to group
        os.environ[SWEEP_ENV] = self.sweep_id
        if self.parent_run_id:
            os.environ[PARENT_ENV] = self.parent_run_id
        if self.tracking_uri and not OmegaConf.select(config, "tracking.uri", default=None):
            # jobs must write to the parent's store even where the environment is not passed on
            os.environ["MLFLOW_TRACKING_URI"] = self.tracking_uri

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if not (self.enabled and self.sweep_id):
            return
        try:
            self._record_job(config, job_return)
        except Exception as exc:  # a bookkeeping failure must not turn a good job into a failed one
            log.warning("sweep %s: could not record job: %s", self.sweep_id, exc)

    def _record_job(self, config: DictConfig, job_return: Any) -> None:
        stage = str(config.hydra.job.name)
        ok = job_return.status == JobStatus.COMPLETED
        record: dict[str, Any] = {
            "sweep_id": self.sweep_id,
            "job_num": int(config.hydra.job.num),
            "stage": stage,
            "overrides": list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False)),
            "status": "COMPLETED" if ok else "FAILED",
            "error": None if ok else repr(job_return._return_value)[:4000],
            "out_dir": None,
            "run_key": None,
            "mlflow_run_id": None,
            "reused": False,
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        meta = None
        info: dict[str, Any] = {}
        out_dir = self._output_folder(stage, config)
        if out_dir is not None:
            record["out_dir"] = str(out_dir.resolve())
            record["run_key"] = out_dir.name
            if ok:
                with contextlib.suppress(UnreadableMetaError):
                    meta = read_meta(out_dir)
                if meta is not None:
                    # how the job's result was made (its MLflow run) is in run.json, not the record
                    info = read_run_info(out_dir) or {}
                    record["mlflow_run_id"] = info.get("mlflow_run_id")
        if meta is not None and self.tracking_uri and record["mlflow_run_id"]:
            record["reused"], record["mlflow_run_id"] = self._tag_run(record, meta, info)
        write_json(Path(str(config.hydra.runtime.output_dir)) / JOB_RECORD, record)

    @staticmethod
    def _output_folder(stage: str, config: DictConfig) -> Path | None:
        if stage not in STAGES:
            return None
        try:
            # the config with its hydra node: prepare_config reads the job's command line from it
            return stage_dir(stage, prepare_config(config))
        except Exception:
            return None

    def _tag_run(
        self, record: dict[str, Any], meta: dict[str, Any], info: dict[str, Any]
    ) -> tuple[bool, str]:
        """Tag this job's run; a reused result gets a child run pointing at the original."""
        # mlflow only when a tracked job is tagged: importing the callbacks stays fast
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)
        run_id = record["mlflow_run_id"]
        reused = False
        try:
            reused = client.get_run(run_id).data.tags.get("sweep_id") != self.sweep_id
        except Exception:
            reused = True  # the original run is in another store
        if reused:
            tracker = Tracker.start(
                enabled=True,
                uri=self.tracking_uri,
                experiment=info.get("mlflow_experiment") or "pifs-repro",
                run_name=f"{record['stage']}:{record['run_key']} (reused)",
                tags={
                    "stage": record["stage"],
                    "run_key": record["run_key"],
                    "sweep_id": self.sweep_id,
                    "reused_run_id": run_id,
                    "config_digest": str(meta.get("config_digest")),
                },
                parent_run_id=self.parent_run_id,
            )
            tracker.log_metrics({**meta.get("metrics", {}), **info.get("metrics", {})})
            tracker.finish("FINISHED")
            run_id = tracker.run_id
        retry_on_lock(client.set_tag, run_id, "hydra_job_num", str(record["job_num"]))
        retry_on_lock(client.set_tag, run_id, "hydra_overrides", " ".join(record["overrides"])[:5000])
        return reused, run_id
