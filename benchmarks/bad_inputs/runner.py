"""Run one case as a real subprocess on a fresh copy of a prepared smoke project, and classify what
happened from evidence: exit status, stderr, every file's bytes before and after, and the case's own
checks of the result."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bad_inputs import spec
from benchmarks.bad_inputs.spec import Background, Case, Interrupt, Plant, Run

REPO = Path(__file__).resolve().parents[2]
STAGE_NAMES = ("covariance", "trajectories", "jacobian", "analysis", "train")
BASE_OVERRIDES = ("experiment=smoke", "progress=false")
TRAIN_OVERRIDES = ("train=smoke", "progress=false", "dataset.num_images=64")
KEY = "k"  # the fixed run key of the `keyed` project (what params_file=… and DVC use)
# Written by runs and trackers as they go; compared only where a case planted them.
_VOLATILE = (".hydra_runs/", "multirun/", "mlartifacts/", "mlruns/", "mlflow.db", ".pifs/")
_WROTE = re.compile(r"\bwrote (\S+) in [0-9.]+ s")
_REUSED = re.compile(r"\b(\S+) is complete for this config and inputs; reusing it")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every command: this checkout first, no tracking or debug settings of the
    caller's, one thread, offline."""
    drop = ("MLFLOW_", "HYDRA_FULL_ERROR", "PIFS_", "DVC_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        MPLBACKEND="Agg",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


def command(args: Sequence[str]) -> list[str]:
    """``(stage, override, ...)`` → python -m stages.<stage> on the smoke preset; ``("pifs", …)`` → the
    project's command line (python -m stages.cli, the same as the installed `pifs`)."""
    head, rest = args[0], list(args[1:])
    if head == "pifs":
        return [sys.executable, "-m", "stages.cli", *rest]
    if head not in STAGE_NAMES:
        raise ValueError(f"unknown command head {head!r}")
    flags = [a for a in rest[:1] if a in ("-m", "--multirun")]  # Hydra wants -m before the overrides
    base = TRAIN_OVERRIDES if head == "train" else BASE_OVERRIDES
    if any(a.startswith("params_file=") for a in rest):
        # the file is the composed config (written from experiment=smoke): a preset beside it is refused
        base = tuple(o for o in base if not o.startswith("experiment="))
    return [sys.executable, "-m", f"stages.{head}", *flags, *base, *rest[len(flags) :]]


def shown(args: Sequence[str]) -> str:
    return " ".join(("pifs", *args[1:]) if args[0] == "pifs" else ("pifs", *args))


# ------------------------------------------------------------------------------------------------
# files


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (hidden ones included); a symlink by its target."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
                continue
            try:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as exc:  # a file the case made unreadable
                out[rel] = f"unreadable:{exc.errno}"
    return out


def _volatile(rel: str) -> bool:
    return any(rel == v.rstrip("/") or rel.startswith(v) for v in _VOLATILE)


def copy_project(base: Path, dest: Path) -> None:
    """A fresh copy of a prepared project; its MLflow store is re-pointed at the copy's artifact folder."""
    shutil.copytree(base, dest, symlinks=True)
    db = dest / "mlflow.db"
    if not db.is_file():
        return
    with contextlib.closing(sqlite3.connect(db)) as con:
        for table, col in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
            con.execute(f"UPDATE {table} SET {col} = replace({col}, ?, ?)", (str(base), str(dest)))
        con.commit()


# ------------------------------------------------------------------------------------------------
# processes


@dataclass
class Finished:
    code: int | None  # None: killed at the time limit
    stdout: str
    stderr: str
    seconds: float


_LIVE: set[subprocess.Popen] = set()


def _start(argv: list[str], **kwargs) -> subprocess.Popen:
    """A child in its own process group, killed with its group if the harness itself stops."""
    proc = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL, **kwargs)
    _LIVE.add(proc)
    return proc


def _kill(proc: subprocess.Popen) -> None:
    """Kill the group of a child still running (a finished child's group id may already be reused)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    _LIVE.discard(proc)


@atexit.register
def kill_live() -> None:
    """Kill every child still running (the harness is stopping)."""
    for proc in list(_LIVE):
        _kill(proc)


def execute(argv: list[str], cwd: Path, timeout: float, env: dict[str, str]) -> Finished:
    """Run ``argv`` in its own process group; at the time limit the whole group is killed."""
    t0 = time.monotonic()
    proc = _start(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace"
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        _kill(proc)
        out, err = proc.communicate()
        code = None
    _LIVE.discard(proc)
    return Finished(code, out, err, time.monotonic() - t0)


def interrupt(step: Interrupt, cwd: Path, env: dict[str, str], timeout: float = 300.0) -> Finished:
    """Start ``step.args`` and signal it once ``step.when`` exists; the command must not finish first."""
    t0 = time.monotonic()
    proc = _start(
        command(step.args), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    while proc.poll() is None and not list(cwd.glob(step.when)):
        if time.monotonic() - t0 > timeout:
            break
        time.sleep(0.05)
    if proc.poll() is not None:
        out = proc.communicate()[0]
        raise SetupError(
            f"{shown(step.args)} ended (exit {proc.returncode}) before {step.when} appeared: {out}"
        )
    os.kill(proc.pid, step.sig)
    try:
        out = proc.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        _kill(proc)
        out = proc.communicate()[0]
    _kill(proc)
    return Finished(proc.returncode, out, "", time.monotonic() - t0)


class SetupError(RuntimeError):
    """A case's preparation did not go as planned: a defect of the harness, reported as such."""


@contextlib.contextmanager
def background(step: Background, cwd: Path, env: dict[str, str]) -> Iterator[str]:
    proc = _start(
        [sys.executable, "-c", step.code], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        t0 = time.monotonic()
        while not (cwd / step.ready).exists():
            if proc.poll() is not None or time.monotonic() - t0 > 60:
                raise SetupError(f"background helper did not start: {proc.stderr.read().decode()[-500:]}")
            time.sleep(0.05)
        yield (cwd / step.ready).read_text().strip()
    finally:
        _kill(proc)
        proc.wait()
        with contextlib.suppress(FileNotFoundError):
            (cwd / step.ready).unlink()


# ------------------------------------------------------------------------------------------------
# the prepared projects and clean references


class Projects:
    """The prepared projects every case copies, and clean runs made on demand as references."""

    BASES = {
        "smoke": [(s,) for s in STAGE_NAMES[:4]],
        # no analysis: the keyed cases that run it make it themselves
        "keyed": [(s, f"run_key={KEY}") for s in STAGE_NAMES[:3]],
    }

    def __init__(self, work: Path) -> None:
        self.work = work
        self.bases: dict[str, Path] = {}
        self._refs: dict[str, Path] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def prepare(self, names: Sequence[str], jobs: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        todo = [n for n in names if n in self.BASES]
        with ThreadPoolExecutor(max(1, min(jobs, len(todo) or 1))) as pool:
            for name, path in zip(todo, pool.map(self._build_base, todo), strict=True):
                self.bases[name] = path
        empty = self.work / "bases" / "empty"
        empty.mkdir(parents=True, exist_ok=True)
        self.bases["empty"] = empty

    def _build_base(self, name: str) -> Path:
        root = self.work / "bases" / name
        root.mkdir(parents=True)
        for args in self.BASES[name]:
            done = execute(command(args), root, 600, child_env())
            if done.code != 0:
                raise SetupError(
                    f"preparing the {name} project: {shown(args)} failed:\n{done.stderr[-2000:]}"
                )
        shutil.rmtree(root / ".hydra_runs", ignore_errors=True)
        return root

    def reference(self, name: str, commands: Sequence[tuple[str, ...]]) -> Path:
        """A fresh project where ``commands`` ran (tracking off): the numbers of a clean run."""
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if name in self._refs:
                return self._refs[name]
            root = self.work / "refs" / name
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            for args in commands:
                done = execute(command((*args, "tracking.enabled=false")), root, 600, child_env())
                if done.code != 0:
                    raise SetupError(f"reference {name}: {shown(args)} failed:\n{done.stderr[-2000:]}")
            self._refs[name] = root
            return root


# ------------------------------------------------------------------------------------------------
# one case


@dataclass
class Outcome:
    """What one case did, with the evidence its checks read."""

    case: Case
    kind: str = spec.SETUP
    detail: str = ""
    code: int | None = None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    root: Path = Path()
    projects: Projects | None = None
    notes: list[str] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)  # files the command made or changed

    @property
    def passed(self) -> bool:
        return self.case.passes(self.kind)

    # -- evidence helpers for the cases' checks ---------------------------------------------------
    def first(self, pattern: str) -> Path | None:
        found = sorted(self.root.glob(pattern))
        return found[0] if found else None

    def produced(self, stage: str) -> list[Path]:
        """Folders of ``stage`` the command wrote (their meta.json or run.json is new or changed) or, when
        it wrote none, reused (its log line naming the folder; else the stage's only finished folder)."""
        written = sorted(
            {(self.root / rel).parent for rel in self.changed if _is_meta_of(rel, stage)},
            key=lambda p: (p / "meta.json").stat().st_mtime,
        )
        if written:
            return written
        text = self.stdout + self.stderr
        paths = [Path(p) for p in _WROTE.findall(text) + _REUSED.findall(text)]
        logged = [self.root / p for p in dict.fromkeys(paths) if len(p.parts) >= 2 and p.parts[-2] == stage]
        if logged:
            return logged
        finished = sorted((self.root / "outputs" / stage).glob("*/meta.json"))
        return [finished[0].parent] if len(finished) == 1 else []

    def meta(self, folder: Path) -> dict[str, Any]:
        return json.loads((folder / "meta.json").read_text())

    def base(self, name: str = "smoke") -> Path:
        assert self.projects is not None
        return self.projects.bases[name]

    def reference(self, name: str, commands: Sequence[tuple[str, ...]]) -> Path:
        assert self.projects is not None
        return self.projects.reference(name, commands)


def _is_meta_of(rel: str, stage: str) -> bool:
    """A run folder's record (meta.json) or its execution record (run.json, where a version has one)."""
    parts = rel.split("/")
    return len(parts) == 4 and parts[:2] == ["outputs", stage] and parts[3] in ("meta.json", "run.json")


def _apply(step, root: Path, env: dict[str, str], foreign: set[str]) -> None:
    before = snapshot(root)
    if isinstance(step, Run):
        done = execute(command(step.args), root, 600, env)
        if done.code != step.code:
            raise SetupError(f"setup `{shown(step.args)}` exited {done.code}: {done.stderr[-1500:]}")
    elif isinstance(step, Interrupt):
        interrupt(step, root, env)
    elif isinstance(step, Plant):
        step.fn(root)
        if step.users:
            after = snapshot(root)
            foreign.update(k for k in after if k not in before or k in step.protect)
            return
    after = snapshot(root)
    foreign.difference_update(k for k in before if before[k] != after.get(k))


def run_case(case: Case, projects: Projects, where: Path) -> Outcome:
    outcome = Outcome(case, root=where, projects=projects)
    env = child_env(case.extra_env)
    try:
        if case.base == "empty":
            where.mkdir(parents=True)
        else:
            copy_project(projects.bases[case.base], where)
        foreign: set[str] = set()
        helpers = [s for s in case.setup if isinstance(s, Background)]
        for step in case.setup:
            if not isinstance(step, Background):
                _apply(step, where, env, foreign)
        before = snapshot(where)
        with contextlib.ExitStack() as stack:
            port = ""
            for helper in helpers:
                port = stack.enter_context(background(helper, where, env)) or port
            args = tuple(a.replace("{port}", port) for a in case.args)
            done = execute(command(args), where, case.timeout, env)
        after = snapshot(where)
    except SetupError as exc:
        outcome.kind, outcome.detail = spec.SETUP, str(exc).splitlines()[0][:300]
        return outcome
    outcome.code, outcome.stdout, outcome.stderr, outcome.seconds = (
        done.code,
        done.stdout,
        done.stderr,
        done.seconds,
    )
    outcome.changed = {rel for rel, sha in after.items() if before.get(rel) != sha}
    outcome.kind, outcome.detail = classify(outcome, before, after, foreign)
    outcome.notes.extend(debris(case, before, after, done.code))
    return outcome


# ------------------------------------------------------------------------------------------------
# classification


def lost_files(case: Case, before: dict[str, str], after: dict[str, str], foreign: set[str]) -> str | None:
    """A user's file gone (its bytes nowhere in the project) or changed; or another stage's output touched."""
    contents = set(after.values())
    for rel in sorted(foreign):
        if after.get(rel) == before[rel]:
            continue
        if before[rel] in contents and rel not in after:
            continue  # moved aside, bytes intact
        return f"the user's file {rel} was {'changed' if rel in after else 'deleted'}"
    own = f"outputs/{case.stage}/" if case.stage else None
    for rel, sha in sorted(before.items()):
        if rel in foreign or _volatile(rel) or (own and rel.startswith(own)):
            continue
        if rel.startswith("outputs/") and after.get(rel) != sha:
            return f"{rel} (another stage's output) was {'changed' if rel in after else 'deleted'}"
    if "mlflow.db" in before and "mlflow.db" not in after and "mlflow.db" not in foreign:
        return "the tracking store mlflow.db was deleted"
    return None


def debris(case: Case, before: dict[str, str], after: dict[str, str], code: int | None) -> list[str]:
    """After a failure: a new run folder, or scratch, left behind (half-written output). A folder with its
    meta.json is a finished result (a sweep's job that succeeded before another failed), not debris."""
    if code == 0 or code is None:
        return []
    new = sorted(set(after) - set(before))
    left = {"/".join(rel.split("/")[:3]) for rel in new if rel.startswith("outputs/") and rel.count("/") >= 3}
    return [
        f"left outputs/…/{folder.split('/')[2]}"
        for folder in sorted(left)
        if not folder.split("/")[2].startswith((".work-", ".lock-")) and f"{folder}/meta.json" not in after
    ]


def message_kind(case: Case, stderr: str) -> tuple[str, str]:
    """one-line / after-lines / raw from stderr and the names a clear message must contain."""
    lines = [ln.rstrip() for ln in stderr.splitlines() if ln.strip()]
    if not lines:
        return spec.RAW, "failed with nothing on stderr"

    def names_all(line: str) -> bool:
        low = line.lower()
        return all(n.lower() in low for n in case.names)

    traceback_shown = any(ln.startswith("Traceback (most recent call last)") for ln in lines)
    line = lines[0]
    if len(lines) == 1 and line.startswith("error: ") and " — " in line and names_all(line):
        return spec.ONE_LINE, line
    clear = [ln for ln in lines if names_all(ln) and not ln.startswith(("  File ", "    "))]
    why = "after a traceback" if traceback_shown else f"in {len(lines)} lines"
    if clear and case.names:
        return spec.AFTER_LINES, f"{why}: {clear[-1].strip()}"
    last = lines[-1].strip()
    if len(lines) == 1 and line.startswith("error: "):
        return spec.RAW, f"one line that does not name {'/'.join(case.names)}: {line}"
    return spec.RAW, f"{why}, last: {last}"


def classify(outcome: Outcome, before: dict[str, str], after: dict[str, str], foreign: set[str]):
    case = outcome.case
    if outcome.code is None:
        return spec.HANG, f"still running after {case.timeout:.0f} s"
    loss = lost_files(case, before, after, foreign) or (case.lost(outcome) if case.lost else None)
    if loss:
        return spec.LOST, f"exit {outcome.code}; {loss}"
    missing = re.search(r"ModuleNotFoundError: No module named '([^']+)'", outcome.stderr)
    if missing:  # the environment changed under the run (a reinstall): not a result of the case
        return spec.SETUP, f"the environment lacks the module {missing.group(1)}"
    if outcome.code == 0:
        problem = case.wrong(outcome) if case.wrong else None
        if problem:
            return spec.WRONG, problem
        return spec.OK, "exit 0" + (f"; {_last_warning(outcome)}" if _last_warning(outcome) else "")
    kind, detail = message_kind(case, outcome.stderr)
    return kind, f"exit {outcome.code}; {detail}"


def _last_warning(outcome: Outcome) -> str:
    warns = [ln for ln in (outcome.stdout + outcome.stderr).splitlines() if "WARNING" in ln]
    return warns[-1].split(" - ", 1)[-1][:160] if warns else ""
