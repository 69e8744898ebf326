"""One line per expected failure: ``error: <what> — <fix>`` on stderr, exit status 2, no traceback.

Every stage's ``__main__`` runs its Hydra app through :func:`run_cli`; tests call :func:`call` (the same
guard) on a stage's ``run`` in-process. Expected failures are ``PipelineError`` (raised at the source
with a "<what> — <fix>" message) and a short list of raw errors that reach the entry point from
libraries (file system, archives, JSON, safetensors, MLflow, Hydra composition); :func:`one_line`
turns those into the same form, naming the path. Anything else is a bug: its traceback is shown.
``HYDRA_FULL_ERROR=1`` or ``PIFS_DEBUG=1`` shows the traceback of every failure.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import json
import os
import sys
import traceback
import zipfile
from collections.abc import Callable
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, OverrideParseException
from hydra.types import RunMode
from omegaconf.errors import OmegaConfBaseException

from pipeline.errors import PipelineError, first_line
from pipeline.schema import explain
from pipeline.tracking import mlflow_failure

EXIT_EXPECTED = 2
EXIT_BUG = 1
DEBUG_ENVS = ("HYDRA_FULL_ERROR", "PIFS_DEBUG")

_OUTPUT_FIX = "free space there or set paths.outputs=<folder on another disk>"
_ERRNO_TEXT = {
    errno.ENOSPC: ("no space left on the device holding {path}", _OUTPUT_FIX),
    errno.EDQUOT: ("disk quota exceeded writing {path}", _OUTPUT_FIX),
    errno.EROFS: (
        "{path} is on a read-only file system",
        "set paths.outputs=<a writable folder> (or train.out_dir for training)",
    ),
    errno.EACCES: (
        "permission denied for {path}",
        "make it readable/writable for this user (chmod) or point the config at another location",
    ),
    errno.EPERM: (
        "operation not permitted on {path}",
        "make it writable for this user or point the config at another location",
    ),
    errno.ENOTDIR: (
        "a part of {path} is a file where a folder is expected",
        "point the config key at a folder (paths.outputs, dataset.root, model.path) or move the file away",
    ),
    errno.EISDIR: ("{path} is a folder where a file is expected", "point the config key at the file itself"),
    errno.EEXIST: ("{path} already exists", "move it away or write somewhere else"),
    errno.ENOENT: ("{path} does not exist", "check the path in the config (run from the project root)"),
}


def debug_requested() -> bool:
    return any(os.environ.get(k, "").strip() not in ("", "0") for k in DEBUG_ENVS)


def _flat(text: str) -> str:
    return " ".join(str(text).split())


def _with_fix(message: str, fix: str) -> str:
    return message if " — " in message else f"{message} — {fix}"


def _hydra_line(exc: BaseException) -> str | None:
    """Hydra's own composition errors (unknown key, unknown group option) kept with their options list."""
    if not isinstance(exc, (HydraException, OmegaConfBaseException)):
        return None
    # a value the config schema refuses (wrong type, unknown key): the key, its value and the fix
    if line := explain(exc):
        return line
    if isinstance(exc, OverrideParseException):
        return (
            f"cannot read the command-line override {first_line(exc).split(': ', 1)[-1]!r} — quote a value "
            "holding spaces, non-ASCII letters or other special characters (key='value'); run_key takes "
            "letters, digits, '.', '_' and '-' only"
        )
    lines = [ln.strip() for ln in str(exc).splitlines()]
    # "Config search path:" and what follows is Hydra's debugging aid, not part of the message.
    if "Config search path:" in lines:
        lines = lines[: lines.index("Config search path:")]
    lines = [ln for ln in lines if ln]
    if not lines:
        return f"{type(exc).__name__} — check the command-line overrides"
    head, rest = lines[0], lines[1:]
    cause = exc.__cause__
    if isinstance(cause, OmegaConfBaseException):
        rest.append(first_line(str(cause)))
    if head.lower().startswith("could not override") or "not in struct" in " ".join(rest):
        return f"{head} {' '.join(rest[1:])} — {rest[0] if rest else 'check the key name'}".replace("  ", " ")
    options = [ln for ln in rest if not ln.endswith(":")]
    if options and any(ln.lower().startswith("available options") for ln in rest):
        return f"{head} — choose one of: {', '.join(options)}"
    return f"{head} — {' '.join(rest) or 'check the command-line overrides'}"


def _override_line(exc: BaseException) -> str | None:
    """An override Hydra's grammar cannot read: name it, say why in words, and how to write it."""
    if not isinstance(exc, OverrideParseException):
        return None
    lines = [ln.strip() for ln in str(exc.message).splitlines()]
    skip = ("See https://", "Error parsing override")
    reason = "; ".join(ln for ln in lines if ln and ln != "^" and not ln.startswith(skip)) or "a syntax error"
    if reason.startswith("LexerNoViableAltException"):
        reason = "a character the override grammar does not accept unquoted"
    return (
        f"cannot read the override {exc.override!r} ({reason}) — write it as key=value and quote a value that "
        "holds spaces, brackets, commas or non-ASCII letters (key='value'); a sweep is -m key=a,b"
    )


def _os_line(exc: OSError) -> str | None:
    code = exc.errno
    path = exc.filename
    if code is None or code not in _ERRNO_TEXT:
        return None
    if path is None:
        path = "a file this run needs"
    what, fix = _ERRNO_TEXT[code]
    if code == errno.EEXIST and os.path.isfile(path):  # a folder was to be made where a file is
        what, fix = _ERRNO_TEXT[errno.ENOTDIR]
    extra = f" (and {exc.filename2})" if getattr(exc, "filename2", None) else ""
    return f"{what.format(path=path)}{extra} — {fix}"


def one_line(exc: BaseException) -> str | None:
    """``"<what> — <fix>"`` for an expected failure, None for a bug (whose traceback should be shown)."""
    if isinstance(exc, PipelineError):
        return _flat(str(exc))
    line = _override_line(exc) or _hydra_line(exc) or mlflow_failure(exc)
    if line:
        return line
    if isinstance(exc, OSError) and (line := _os_line(exc)):
        return line
    if isinstance(exc, zipfile.BadZipFile):
        return _with_fix(
            f"a .npz/zip file is corrupt ({first_line(str(exc))})",
            "delete the folder holding it and rerun the stage that wrote it",
        )
    if isinstance(exc, json.JSONDecodeError):
        return _with_fix(
            f"a JSON file is corrupt ({first_line(str(exc))})",
            "delete the folder holding it and rerun the stage that wrote it",
        )
    if type(exc).__name__ == "SafetensorError":
        return _with_fix(
            f"a safetensors weight file is unreadable ({first_line(str(exc))})",
            "re-download or re-save the checkpoint (model.path)",
        )
    if isinstance(exc, MemoryError):
        return (
            "out of memory — lower the sizes (dataset.num_images, covariance.chunk_size, "
            "trajectories.batch_size, measure.chunk_size, points.seed_batch) or use a larger machine"
        )
    return None


def report(exc: BaseException, stream=None, job: str | None = None) -> int:
    """Print an exception the way the command line shows it; return the exit status. ``job``: the
    overrides of the sweep job that failed, named at the start of the line."""
    stream = stream or sys.stderr
    line = one_line(exc)
    if line is None:
        if job:
            print(f"sweep job {job} failed:", file=stream)
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=stream)
        return EXIT_BUG
    print(f"error: {'sweep job ' + job + ': ' if job else ''}{line}", file=stream)
    return EXIT_EXPECTED


_HYDRA_JOB_LINE = "Error executing job with overrides: "
_MULTIRUN_FLAGS = ("-m", "--multirun")


class _HeldJobLine:
    """stderr while a Hydra app runs, without Hydra's own "Error executing job with overrides: [...]"
    line of a failed sweep job: the one line of the report names the job's overrides instead."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.job: str | None = None

    def write(self, text: str) -> int:
        if text.startswith(_HYDRA_JOB_LINE):
            overrides = text[len(_HYDRA_JOB_LINE) :].strip()
            with contextlib.suppress(ValueError, SyntaxError):
                overrides = " ".join(ast.literal_eval(overrides))
            self.job = self.job or overrides
            return len(text)
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class _JobFailed(BaseException):
    """Carries a single run's exception past Hydra (which would print its own lines) to run_cli."""

    def __init__(self, exc: Exception) -> None:
        super().__init__(str(exc))
        self.exc = exc


def _single_run() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.RUN
    except ValueError:  # not inside a Hydra job
        return False


def in_job(run: Callable[..., Any], *args: Any) -> Any:
    """Call a stage's ``run`` as the body of its Hydra task function.

    In a single run a failure bypasses Hydra's reporting (which adds its own lines) and reaches
    run_cli whole. In a multirun Hydra records each job's failure and runs the other jobs; run_cli
    then reports the first failure in one line.
    """
    try:
        return run(*args)
    except Exception as exc:
        if _single_run():
            raise _JobFailed(exc) from None
        raise


def _guarded(thunk: Callable[[], Any], debug: bool, held: _HeldJobLine | None = None) -> int:
    job = (lambda: held.job) if held is not None else (lambda: None)
    try:
        thunk()
    except _JobFailed as carried:
        if debug:
            raise carried.exc from None
        return report(carried.exc, job=job())
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        if debug:
            raise
        return report(exc, job=job())
    return 0


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Run ``fn`` under the guard: 0 on success, else the failure is printed and its status returned.

    With a debug variable set (HYDRA_FULL_ERROR=1, PIFS_DEBUG=1) every exception propagates unchanged.
    """
    return _guarded(lambda: fn(*args, **kwargs), debug_requested())


def run_cli(hydra_main: Callable[[], Any]) -> None:
    """Entry point of ``python -m stages.<name>``: the Hydra app under the one-line guard.

    Hydra prints its own shortened traceback for any exception unless HYDRA_FULL_ERROR is set, in
    which case it re-raises; so the guard sets it for the call and reports the exception itself. A
    failed sweep job's own "Error executing job" line is held back and its overrides named in the
    report's line.
    A debug request of the user's own (HYDRA_FULL_ERROR=1, PIFS_DEBUG=1) shows the full traceback.
    """
    debug = debug_requested()
    # -m between overrides would split Hydra's positional overrides (an argparse usage dump): it
    # means the same anywhere, so it goes first
    sweep = [a for a in sys.argv[1:] if a in _MULTIRUN_FLAGS]
    sys.argv = [sys.argv[0], *sweep, *(a for a in sys.argv[1:] if a not in _MULTIRUN_FLAGS)]
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    held = None if debug else _HeldJobLine(sys.stderr)
    if held is not None:
        sys.stderr = held
    try:
        code = _guarded(hydra_main, debug, held)
    finally:
        if held is not None:
            sys.stderr = held.stream
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved
    sys.exit(code)
