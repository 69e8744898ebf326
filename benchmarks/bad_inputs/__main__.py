"""python -m benchmarks.bad_inputs [--jobs 2] [--only TEXT ...] [--category NAME ...] [--owner AREA ...]
[--list] [--keep DIR]: the bad-input harness (see the package docstring)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from benchmarks.bad_inputs.catalogue import all_cases, select
from benchmarks.bad_inputs.runner import kill_live, shown
from benchmarks.bad_inputs.spec import CATEGORIES, OWNERS
from benchmarks.bad_inputs.tally import run_all


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bad_inputs", description=__doc__)
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    ap.add_argument("--only", nargs="*", help="run the cases whose id contains one of these")
    ap.add_argument("--category", nargs="*", choices=sorted(CATEGORIES), help="run these categories")
    ap.add_argument("--owner", nargs="*", choices=OWNERS, help="run the cases whose fix is this area's")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep every case's project copy")
    a = ap.parse_args(argv)
    cases = select(all_cases(), a.only, a.category, a.owner)
    if a.list:
        for c in cases:
            print(f"{c.category}/{c.id} · expect {c.expect} · owner {c.owner} · {shown(c.args)}")
        print(f"{len(cases)} cases")
        return 0
    if not cases:
        print("error: no case matches — see --list", file=sys.stderr)
        return 2
    # SIGTERM ends the harness like Ctrl-C: the children running in their own sessions are killed
    signal.signal(signal.SIGTERM, lambda *_: (kill_live(), os._exit(143)))
    try:
        report = run_all(cases, jobs=a.jobs, work=a.keep, keep=a.keep is not None)
    except KeyboardInterrupt:
        kill_live()
        os._exit(130)  # the workers' threads would otherwise wait for commands that no longer run
    return 0 if not report.summary()["failing"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
