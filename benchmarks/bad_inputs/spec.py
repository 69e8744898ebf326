"""What a bad-input case is: the command, what happens before it, what it should do, and the evidence
that tells a right answer from a wrong one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the run context is built by the runner; cases only read it
    from benchmarks.bad_inputs.runner import Outcome

# Outcome classes, in the order the tally prints them.
ONE_LINE = "one-line"  # exit != 0 and exactly one stderr line `error: <what> — <fix>` naming the key/file
AFTER_LINES = "after-lines"  # the clear message is there, but after a traceback or other lines
RAW = "raw"  # a failure whose output never names the key or file (a library's text, a traceback)
OK = "ok"  # exit 0 and the evidence says the result is right
WRONG = "wrong"  # exit 0 and the evidence says the result is not what was asked
LOST = "lost"  # a file the run did not make is gone or changed (whatever the exit status)
HANG = "hang"  # still running at the case's time limit
SETUP = "setup-failed"  # the case's own preparation failed: a harness defect, never a pipeline result
OUTCOMES = (ONE_LINE, AFTER_LINES, RAW, OK, WRONG, LOST, HANG, SETUP)
LABELS = {
    ONE_LINE: "one clear line",
    AFTER_LINES: "clear after other lines",
    RAW: "raw",
    OK: "fine (exit 0, right result)",
    WRONG: "silently wrong",
    LOST: "data lost",
    HANG: "hang",
    SETUP: "harness setup failed",
}

# What a case expects: a refusal in one line, a right result with exit 0, or either of the two.
LINE = "line"
RESULT = "result"
EITHER = "line-or-result"

# Whose fix a failing case waits on.
LINEAGE = "lineage"  # upstream checked against the config it is used under; a run owns only what it made
SCHEMA = "schema"  # typed, ranged values; params_file validated like the command line; tracking stores
CLI = "cli"  # one line at the entry points (source-level messages, Hydra's sweep lines, --help)
OWNERS = (LINEAGE, SCHEMA, CLI)

CATEGORIES = {
    "lineage": "upstream made under another config",
    "params_file": "params_file problems",
    "values": "bad values",
    "ownership": "data-loss risks",
    "tracking": "tracking stores",
    "inputs": "missing or corrupt inputs",
    "paths": "bad paths",
    "interrupted": "interrupted runs",
    "cli": "command line and sweeps",
}


@dataclass(frozen=True)
class Run:
    """A pipeline command the setup runs (it must exit with ``code``); what it writes is the pipeline's."""

    args: tuple[str, ...]
    code: int = 0


@dataclass(frozen=True)
class Plant:
    """A user's own edit of the project: files it creates are the user's and must survive the case's
    command; files it changes stay the pipeline's (a damaged output may be recomputed)."""

    fn: Callable[[Path], Any]
    users: bool = True  # False: it moves the pipeline's own files about (they stay the pipeline's)
    protect: tuple[str, ...] = ()  # existing files it changes that are the user's from then on


@dataclass(frozen=True)
class Interrupt:
    """Start a pipeline command, send ``sig`` once a file matching ``when`` (a glob under the project)
    exists, and wait for it to end (what it leaves is the pipeline's)."""

    args: tuple[str, ...]
    when: str
    sig: int


@dataclass(frozen=True)
class Background:
    """A helper process that lives while the case's command runs (a lock holder, a server); it creates
    the file ``ready`` (relative to the project) once it is in place, holding the text that replaces
    ``{port}`` in the case's arguments."""

    code: str
    ready: str


Step = Run | Plant | Interrupt | Background
Check = Callable[["Outcome"], "str | None"]


@dataclass(frozen=True)
class Case:
    """One bad input: ``args`` is ``(stage, override, ...)`` (run as ``python -m stages.<stage>`` on the
    smoke preset) or ``("pifs", subcommand, ...)``.

    ``names``: what a clear message must contain (the key, the file). ``wrong``: on exit 0, the
    evidence that the result is not what was asked (None: right). ``lost``: evidence that something
    the run did not make is gone, beyond the generic before/after comparison. ``owner``: whose fix a
    failure of this case waits on.
    """

    id: str
    category: str
    args: tuple[str, ...]
    expect: str = LINE
    names: tuple[str, ...] = ()
    setup: tuple[Step, ...] = ()
    wrong: Check | None = None
    lost: Check | None = None
    owner: str = CLI
    base: str = "smoke"  # smoke | keyed (the smoke chain under run_key=k) | empty
    timeout: float = 240.0
    note: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def stage(self) -> str | None:
        return self.args[0] if self.args and self.args[0] != "pifs" else None

    def passes(self, outcome: str) -> bool:
        if self.expect == LINE:
            return outcome == ONE_LINE
        if self.expect == RESULT:
            return outcome == OK
        return outcome in (ONE_LINE, OK)
