"""MLflow tracking of stage runs through an explicit client (no fluent global run state)."""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# MLflow caps a batch at 1000 metrics / 100 params / 100 tags.
_PARAM_BATCH = 100
_METRIC_BATCH = 1000
_DEFAULT_PARAM_LEN = 500
# SQLite lets one writer in at a time; a write that finds the file locked for longer than the
# driver's busy timeout fails (and is rolled back), so it is retried for up to this long.
_LOCK_RETRY_S = 60.0


def default_tracking_uri(project_root: str | Path = ".") -> str:
    """$MLFLOW_TRACKING_URI if set, else the embedded SQLite store under the project."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(project_root).resolve() / 'mlflow.db'}"


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys; lists become their string form."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


@contextlib.contextmanager
def store_init_lock(uri: str) -> Iterator[None]:
    """Exclusive lock on ``<db>.lock`` beside a SQLite store; no-op for other stores.

    MLflow creates and migrates the SQLite schema on first access; several processes doing
    that at once on a fresh file fail ("table experiments already exists"), so sweep jobs
    starting together serialize their first access (and the experiment's creation) here.
    """
    path = _sqlite_path(uri)
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock available
        fcntl = None
    if path is None or fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "database is locked" in text or "database table is locked" in text


def retry_on_lock(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``, retrying with jittered backoff while SQLite reports the database locked."""
    deadline = time.monotonic() + _LOCK_RETRY_S
    delay = 0.05
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not _is_lock_error(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)


def _max_param_length() -> int:
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        return int(MAX_PARAM_VAL_LENGTH)
    except ImportError:  # older/newer layouts: fall back to the smallest limit ever used
        return _DEFAULT_PARAM_LEN


@dataclass
class Tracker:
    """One MLflow run; every method is a no-op when tracking is disabled (run_id None)."""

    client: Any = None
    run_id: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None
    _t0: float = field(default_factory=time.time)

    @classmethod
    def start(
        cls,
        enabled: bool,
        uri: str | None,
        experiment: str,
        run_name: str,
        tags: Mapping[str, str],
        artifact_location: str | None = None,
        parent_run_id: str | None = None,
        project_root: str | Path = ".",
    ) -> Tracker:
        if not enabled:
            return cls()
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        uri = uri or default_tracking_uri(project_root)
        with store_init_lock(uri):
            client = MlflowClient(tracking_uri=uri)  # creates/migrates a SQLite schema on first use
            exp = retry_on_lock(client.get_experiment_by_name, experiment)
            if exp is None:
                if artifact_location is None and uri.startswith("sqlite:"):
                    artifact_location = (Path(project_root).resolve() / "mlartifacts").as_uri()
                try:
                    exp_id = retry_on_lock(
                        client.create_experiment, experiment, artifact_location=artifact_location
                    )
                except MlflowException:
                    # another job created it concurrently (a non-SQLite store has no lock)
                    exp = client.get_experiment_by_name(experiment)
                    if exp is None:
                        raise
                    exp_id = exp.experiment_id
            else:
                exp_id = exp.experiment_id
        all_tags = dict(tags)
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = retry_on_lock(client.create_run, exp_id, run_name=run_name, tags=all_tags)
        return cls(client=client, run_id=run.info.run_id, experiment_id=exp_id, tracking_uri=uri)

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Param

        limit = _max_param_length()
        items = [Param(k, str(v)[:limit]) for k, v in flatten(params).items()]
        for i in range(0, len(items), _PARAM_BATCH):
            retry_on_lock(self.client.log_batch, self.run_id, params=items[i : i + _PARAM_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, int(step))
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        for i in range(0, len(items), _METRIC_BATCH):
            retry_on_lock(self.client.log_batch, self.run_id, metrics=items[i : i + _METRIC_BATCH])

    def log_metric_series(self, name: str, values: Mapping[int, float]) -> None:
        """One metric over steps (e.g. per paper timestep t)."""
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(name, float(v), now, int(s)) for s, v in values.items() if math.isfinite(float(v))]
        for i in range(0, len(items), _METRIC_BATCH):
            retry_on_lock(self.client.log_batch, self.run_id, metrics=items[i : i + _METRIC_BATCH])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if not self.enabled:
            return
        for k, v in tags.items():
            retry_on_lock(self.client.set_tag, self.run_id, k, str(v))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            retry_on_lock(self.client.log_artifact, self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        if self.enabled:
            retry_on_lock(self.client.set_terminated, self.run_id, status=status)
