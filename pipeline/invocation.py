"""One MLflow parent run per `dvc repro` / `dvc exp run`, with that invocation's stage runs nested in it.

DVC runs each stage as its own process (and sets DVC_STAGE in its environment), so the stages of one
invocation share no memory. What they share is the dvc process that started them: the nearest
ancestor whose command line is dvc, named by its pid and kernel start time (a pid alone is reused),
plus DVC_EXP_NAME for experiments. The first stage of an invocation creates the parent run tagged
with that key; later stages find it by the tag and nest under it. Each stage, when it ends, leaves the
parent final (FINISHED while every stage so far finished, else FAILED/KILLED); the next stage of the
same invocation reopens it, so after the last stage the parent holds the invocation's outcome. A
parent left RUNNING by a dvc process that no longer exists (killed outright) is closed as KILLED the
next time a parent is opened on the same host.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("pifs")

ROLE_TAG = "pifs.role"
ROLE = "dvc"
KEY_TAG = "pifs.invocation"
PID_TAG = "pifs.invocation_pid"
START_TAG = "pifs.invocation_start"
HOST_TAG = "host"
# where process ancestry and liveness are read (Linux); tests point it at a stand-in tree
PROC = Path("/proc")


@dataclass(frozen=True)
class DvcInvocation:
    """The dvc process that runs this stage: ``key`` is unique per invocation on this host."""

    pid: int
    start: str  # kernel start time of the process (clock ticks since boot)
    command: str  # e.g. "dvc repro" or "dvc exp run -S patch.size=2"
    experiment: str | None  # DVC_EXP_NAME for `dvc exp run`

    @property
    def key(self) -> str:
        exp = f"-{self.experiment}" if self.experiment else ""
        return f"{socket.gethostname()}-{self.pid}-{self.start}{exp}"


def _stat(pid: int, proc: Path) -> tuple[int, str] | None:
    """(parent pid, start time) from /proc/<pid>/stat; the name field may hold spaces and ')'."""
    try:
        fields = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[19]


def _argv(pid: int, proc: Path) -> list[str]:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _is_dvc(argv: list[str]) -> int | None:
    """Index where dvc's own arguments start, or None when ``argv`` is not a dvc command."""
    for i, a in enumerate(argv[:4]):
        if Path(a).name == "dvc":
            return i + 1
        if a == "-m" and i + 1 < len(argv) and argv[i + 1] == "dvc":
            return i + 2
    return None


def dvc_invocation(
    environ: Mapping[str, str] | None = None, pid: int | None = None, proc: str | Path | None = None
) -> DvcInvocation | None:
    """The dvc invocation running this process, or None outside dvc (or where /proc is absent)."""
    environ = os.environ if environ is None else environ
    if not environ.get("DVC_STAGE"):
        return None  # DVC sets it for every stage command it runs
    proc = PROC if proc is None else Path(proc)
    current = os.getpid() if pid is None else pid
    for _ in range(64):  # ancestors: the stage's shell, dvc, ...
        stat = _stat(current, proc)
        if stat is None:
            return None
        ppid, _start = stat
        if ppid <= 1:
            return None
        argv = _argv(ppid, proc)
        start = _is_dvc(argv)
        pstat = _stat(ppid, proc)
        if start is not None and pstat is not None:
            return DvcInvocation(
                ppid,
                pstat[1],
                " ".join(["dvc", *map(shlex.quote, argv[start:])]),
                environ.get("DVC_EXP_NAME"),
            )
        current = ppid
    return None


def _alive(pid: int, start: str, proc: Path) -> bool:
    stat = _stat(pid, proc)
    return stat is not None and stat[1] == start


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


@dataclass
class ParentRun:
    """The invocation's parent run in an MLflow store; ``retry`` wraps each store call (SQLite locks)."""

    client: Any
    run_id: str
    retry: Callable[..., Any] = _call

    def reopen(self) -> None:
        self.retry(self.client.update_run, self.run_id, status="RUNNING")

    def close_after(self, stage_status: str) -> None:
        """Leave the parent final: FINISHED only while every child run so far finished."""
        retry_on_lock = self.retry
        run = retry_on_lock(self.client.get_run, self.run_id)
        children = retry_on_lock(
            self.client.search_runs,
            [run.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.run_id}'",
        )
        statuses = [c.info.status for c in children] + [stage_status]
        bad = [s for s in statuses if s not in ("FINISHED", "RUNNING")]
        status = "KILLED" if "KILLED" in bad else ("FAILED" if bad else "FINISHED")
        retry_on_lock(self.client.set_terminated, self.run_id, status=status)


def open_parent(
    client: Any,
    experiment_id: str,
    invocation: DvcInvocation,
    tags: Mapping[str, str],
    lock: Callable[[], Any],
    retry: Callable[..., Any] = _call,
) -> ParentRun:
    """Find this invocation's parent run (tag ``pifs.invocation``) or create it; reopen it for a stage."""
    retry_on_lock = retry
    with lock():
        found = retry_on_lock(
            client.search_runs,
            [experiment_id],
            filter_string=f"tags.`{KEY_TAG}` = '{invocation.key}'",
            max_results=1,
        )
        if found:
            parent = ParentRun(client, found[0].info.run_id, retry)
        else:
            _close_orphans(client, experiment_id, PROC, retry)
            name = (
                f"{invocation.command} ({invocation.experiment})"
                if invocation.experiment
                else invocation.command
            )
            all_tags = {
                **tags,
                "mlflow.runName": name,
                ROLE_TAG: ROLE,
                KEY_TAG: invocation.key,
                PID_TAG: str(invocation.pid),
                START_TAG: invocation.start,
                HOST_TAG: socket.gethostname(),
                "dvc_command": invocation.command[:5000],
            }
            if invocation.experiment:
                all_tags["dvc_experiment"] = invocation.experiment
            run = retry_on_lock(client.create_run, experiment_id, run_name=name, tags=all_tags)
            parent = ParentRun(client, run.info.run_id, retry)
            log.info("MLflow parent run %s for `%s`", parent.run_id, invocation.command)
    parent.reopen()
    return parent


def _close_orphans(client: Any, experiment_id: str, proc: Path, retry_on_lock: Callable[..., Any]) -> None:
    """Parents on this host still RUNNING whose dvc process is gone were killed: say so."""
    stale = retry_on_lock(
        client.search_runs,
        [experiment_id],
        filter_string=(
            f"tags.`{ROLE_TAG}` = '{ROLE}' and attributes.status = 'RUNNING' "
            f"and tags.{HOST_TAG} = '{socket.gethostname()}'"
        ),
    )
    for run in stale:
        tags = run.data.tags
        try:
            pid = int(tags.get(PID_TAG, ""))
        except ValueError:
            continue
        if not _alive(pid, tags.get(START_TAG, ""), proc):
            retry_on_lock(client.set_terminated, run.info.run_id, status="KILLED")
