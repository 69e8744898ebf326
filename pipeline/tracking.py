"""MLflow tracking of stage runs through an explicit client (no fluent global run state)."""

from __future__ import annotations

import contextlib
import getpass
import logging
import math
import os
import random
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import PipelineError, first_line
from pipeline.invocation import open_parent

# MLflow caps a batch at 1000 metrics / 100 params / 100 tags.
_PARAM_BATCH = 100
_METRIC_BATCH = 1000
_DEFAULT_PARAM_LEN = 500
# SQLite lets one writer in at a time; a write that finds the file locked for longer than the
# driver's busy timeout fails (and is rolled back), so it is retried for up to this long.
_LOCK_RETRY_S = 60.0
# A tracking server that does not answer within this many seconds is treated as down.
REACH_TIMEOUT_S = 3.0
# MLflow's own HTTP retries default to 7 with exponential backoff (minutes against a dead server);
# these bound a transient failure mid-run to seconds. A value the user exported wins.
_HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


class TrackingError(PipelineError):
    """The configured MLflow tracking store cannot be reached or opened."""


def _is_http(uri: str) -> bool:
    return urlsplit(uri).scheme in ("http", "https")


def check_reachable(uri: str, timeout: float = REACH_TIMEOUT_S) -> None:
    """Refuse an http(s) tracking URI whose server does not answer within ``timeout`` seconds.

    Any HTTP answer (even an error status: a proxy, an auth wall) counts as reachable; only a
    connection that cannot be made is refused. Other stores (sqlite, file) need no network.
    """
    if not _is_http(uri):
        return
    # urllib.request (http, ssl, email) only for an http store: importing tracking stays fast
    import urllib.error
    import urllib.request

    parts = urlsplit(uri)
    health = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if parts.scheme == "https" else 80)
        raise TrackingError(
            f"the MLflow server at {uri} does not answer ({reason}) — start it "
            f"(`mlflow server --host {host} --port {port}`), point tracking.uri at a running one, "
            "or run without tracking: tracking.enabled=false"
        ) from None


def bound_http_retries() -> None:
    """Short MLflow HTTP retries and timeouts unless the user set their own (see _HTTP_ENV)."""
    for key, value in _HTTP_ENV.items():
        os.environ.setdefault(key, value)


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


def system_tags(run_name: str, source_name: str, git_revision: str) -> dict[str, str]:
    """MLflow's standard system tags (the UI's run name, source, user and commit columns).

    ``git_revision`` is provenance's HEAD commit, '-dirty' suffixed when tracked code differs;
    MLflow's commit column takes the bare commit, the suffix stays in the ``git_revision`` tag.
    """
    tags = {
        "mlflow.runName": run_name,
        "mlflow.source.name": source_name,
        "mlflow.source.type": "JOB" if os.environ.get("SLURM_JOB_ID") else "LOCAL",
    }
    try:
        tags["mlflow.user"] = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid (some containers)
        pass
    commit = git_revision.removesuffix("-dirty")
    if commit and commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    return tags


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


# A SQLite store another process keeps locked for longer than this is refused before the run starts (a
# stage's own writes hold it for milliseconds; a long hold is an open shell or a stuck process).
STORE_LOCK_TIMEOUT_S = 10.0
_STORE_FIX = (
    "point tracking.uri at another store (sqlite:///<file>) or run without tracking: tracking.enabled=false"
)


def store_failure(exc: BaseException, path: Path, waited: float = STORE_LOCK_TIMEOUT_S) -> str | None:
    """One line for a SQLite store that cannot be used (sqlite3's or SQLAlchemy's error); None for others."""
    kind = f"{type(exc).__module__}.{type(exc).__name__}"
    if not kind.startswith(("sqlite3.", "sqlalchemy.")):
        return None
    text = str(exc).lower()
    if _is_lock_error(exc):
        return (
            f"the MLflow store {path} stayed locked for {waited:g} s (another process holds it: a stage "
            f"writing, an open sqlite3 shell, a stuck job) — end that process and rerun, or {_STORE_FIX}"
        )
    if "not a database" in text or "malformed" in text or "file is encrypted" in text:
        return (
            f"the MLflow store {path} is corrupt or not an SQLite database — move it aside (a new store is "
            f"created; `sqlite3 {path.name} .recover` may save its runs), or {_STORE_FIX}"
        )
    if path.is_dir():
        return f"the MLflow store {path} is a folder, not an SQLite file — move it away, or {_STORE_FIX}"
    return f"the MLflow store {path} cannot be opened ({first_line(exc)}) — {_STORE_FIX}"


def check_store(uri: str, timeout: float = STORE_LOCK_TIMEOUT_S) -> None:
    """Refuse a SQLite tracking store that is a folder, not an SQLite file, or locked for ``timeout`` seconds.

    A missing or empty file is fine (MLflow creates the store); other stores are not checked here.
    """
    path = _sqlite_path(uri)
    if path is None or not path.exists():
        return
    if path.is_dir():
        raise TrackingError(
            f"the MLflow store {path} is a folder, not an SQLite file — move it away, or {_STORE_FIX}"
        )
    with open(path, "rb") as fh:
        head = fh.read(16)
    try:
        if head and head != b"SQLite format 3\x00":
            raise sqlite3.DatabaseError("file is not a database")
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise TrackingError(store_failure(exc, path, timeout) or str(exc)) from None


@contextlib.contextmanager
def store_init_lock(uri: str) -> Iterator[None]:
    """Exclusive lock on ``<db>.lock`` beside a SQLite store; no-op for other stores.

    MLflow creates and migrates the SQLite schema on first access; several processes doing
    that at once on a fresh file fail ("table experiments already exists"), so sweep jobs
    starting together serialize their first access (and the experiment's creation) here.
    """
    path = _sqlite_path(uri)
    # MLflow announces a new SQLite store's tables on stderr (INFO): a stage's stderr is for what went wrong
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        import fcntl  # POSIX only: without it there is no lock, handled below
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


def mlflow_failure(exc: BaseException, uri: str | None = None) -> str | None:
    """One line for a failure MLflow raised (naming the store where it is known); None for any other."""
    # an MlflowException exists only once mlflow.exceptions is loaded: no import on an error path
    exceptions = sys.modules.get("mlflow.exceptions")
    if exceptions is None or not isinstance(exc, exceptions.MlflowException):
        return None
    first = first_line(str(getattr(exc, "message", exc)))[:200]
    what = (
        f"the MLflow tracking store {uri} refused this run ({first})"
        if uri
        else f"MLflow tracking failed: {first}"
    )
    return f"{what} — check tracking.uri (or MLFLOW_TRACKING_URI), or run without tracking: tracking.enabled=false"


@contextlib.contextmanager
def _store_errors(uri: str) -> Iterator[None]:
    """A SQLite store failing under MLflow (locked past the retries, corrupt) as one line naming the file."""
    path = _sqlite_path(uri)
    try:
        yield
    except Exception as exc:
        cause = exc.__cause__ or exc.__context__
        line = None if path is None else store_failure(exc, path, _LOCK_RETRY_S)
        if line is None and path is not None and cause is not None:
            line = store_failure(cause, path, _LOCK_RETRY_S)
        # any other refusal of the store (a server that is not MLflow, a file store MLflow 3 will not open, a
        # schema of another MLflow version): one line naming the store it is about
        line = line or mlflow_failure(exc, uri)
        if line is None:
            raise
        raise TrackingError(line) from None


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
        # mlflow only when a run is tracked: with tracking off nothing imports it
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
    parent: Any = None  # pipeline.invocation.ParentRun when nested under a dvc invocation's run
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
        invocation: Any = None,
    ) -> Tracker:
        """A new run; nested under ``parent_run_id`` if given, else under ``invocation``'s parent run
        (a pipeline.invocation.DvcInvocation: found or created here, closed again by ``finish``)."""
        if not enabled:
            return cls()
        # mlflow only when a run is tracked: with tracking off nothing imports it
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        uri = uri or default_tracking_uri(project_root)
        if _is_http(uri):
            bound_http_retries()
            check_reachable(uri)
        with store_init_lock(uri), _store_errors(uri):
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
        parent = None
        if not parent_run_id and invocation is not None:
            keep = ("mlflow.user", "mlflow.source.type", "mlflow.source.git.commit", "git_revision")
            parent = open_parent(
                client,
                exp_id,
                invocation,
                {k: all_tags[k] for k in keep if k in all_tags},
                lambda: store_init_lock(uri),
                retry_on_lock,
            )
            parent_run_id = parent.run_id
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = retry_on_lock(client.create_run, exp_id, run_name=run_name, tags=all_tags)
        return cls(
            client=client, run_id=run.info.run_id, experiment_id=exp_id, tracking_uri=uri, parent=parent
        )

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        # mlflow only when a run is tracked: with tracking off nothing imports it
        from mlflow.entities import Param

        limit = _max_param_length()
        items = [Param(k, str(v)[:limit]) for k, v in flatten(params).items()]
        for i in range(0, len(items), _PARAM_BATCH):
            retry_on_lock(self.client.log_batch, self.run_id, params=items[i : i + _PARAM_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        if not self.enabled:
            return
        # mlflow only when a run is tracked: with tracking off nothing imports it
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
        # mlflow only when a run is tracked: with tracking off nothing imports it
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
        """A file, or a folder as a folder of the same name (e.g. figures/)."""
        if not self.enabled:
            return
        path = Path(path)
        if path.is_dir():
            dest = f"{artifact_path}/{path.name}" if artifact_path else path.name
            retry_on_lock(self.client.log_artifacts, self.run_id, str(path), dest)
        else:
            retry_on_lock(self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """A whole mapping as one JSON/YAML artifact (e.g. the full resolved config)."""
        if self.enabled:
            retry_on_lock(self.client.log_dict, self.run_id, dict(data), artifact_file)

    def finish(self, status: str = "FINISHED") -> None:
        """End the run; a dvc invocation's parent is left final with the outcome so far."""
        if not self.enabled:
            return
        retry_on_lock(self.client.set_terminated, self.run_id, status=status)
        if self.parent is not None:
            self.parent.close_after(status)
