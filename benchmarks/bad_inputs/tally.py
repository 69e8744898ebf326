"""Run a selection of cases on parallel workers and report: one line per case, then the tally by outcome,
by category and the failing cases by owner, then one JSON line with the counts."""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from benchmarks.bad_inputs import spec
from benchmarks.bad_inputs.runner import Outcome, Projects, run_case, shown
from benchmarks.bad_inputs.spec import Background, Case, Interrupt, Run

_STAGE_COST = {"analysis": 14, "jacobian": 10, "trajectories": 6, "train": 6, "covariance": 5}


def cost(case: Case) -> float:
    """A rough expected duration, so the longest cases start first and the workers finish together."""
    steps = sum(12 for s in case.setup if isinstance(s, (Run, Interrupt)))
    helpers = sum(2 for s in case.setup if isinstance(s, Background))
    return steps + helpers + _STAGE_COST.get(case.stage or "", 2) + (10 if "-m" in case.args else 0)


def line(o: Outcome) -> str:
    mark = "pass" if o.passed else "FAIL"
    owner = f" [{o.case.owner}]" if not o.passed else ""
    notes = f" ({'; '.join(o.notes)})" if o.notes else ""
    detail = " ".join(o.detail.split())
    return (
        f"{mark} {o.kind:<12} {o.case.category}/{o.case.id}{owner} · expect {o.case.expect} · "
        f"{o.seconds:.0f}s · {shown(o.case.args)} → {detail[:260]}{notes}"
    )


@dataclass
class Report:
    outcomes: list[Outcome]
    wall_s: float
    prepare_s: float
    jobs: int

    def counts(self) -> dict[str, int]:
        c = Counter(o.kind for o in self.outcomes)
        return {k: c.get(k, 0) for k in spec.OUTCOMES}

    def failing(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {owner: [] for owner in spec.OWNERS}
        for o in self.outcomes:
            if not o.passed:
                out[o.case.owner].append(o.case.id)
        return out

    def by_category(self) -> dict[str, dict[str, int]]:
        table: dict[str, Counter] = {c: Counter() for c in spec.CATEGORIES}
        for o in self.outcomes:
            table[o.case.category][o.kind] += 1
        return {c: dict(v) for c, v in table.items() if v}

    def debris(self) -> list[str]:
        return [o.case.id for o in self.outcomes if o.notes]

    def summary(self) -> dict:
        return {
            "cases": len(self.outcomes),
            "outcomes": self.counts(),
            "failing": sum(not o.passed for o in self.outcomes),
            "failing_by_owner": self.failing(),
            "by_category": self.by_category(),
            "debris": self.debris(),
            "wall_s": round(self.wall_s, 1),
            "prepare_s": round(self.prepare_s, 1),
            "jobs": self.jobs,
        }

    def write(self, out: TextIO) -> None:
        counts = self.counts()
        parts = [f"{counts[k]} {spec.LABELS[k]}" for k in spec.OUTCOMES if counts[k] or k != spec.SETUP]
        failing = sum(not o.passed for o in self.outcomes)
        print(f"\ntally ({len(self.outcomes)} cases): " + ", ".join(parts), file=out)
        print(
            f"{failing} cases do not do what they should; {len(self.debris())} left a half-written output",
            file=out,
        )
        print("by category:", file=out)
        for cat, row in self.by_category().items():
            cells = ", ".join(f"{row[k]} {k}" for k in spec.OUTCOMES if row.get(k))
            print(f"  {cat:<12} {spec.CATEGORIES[cat]:<38} {sum(row.values()):>3}: {cells}", file=out)
        print("failing, by whose fix they wait on:", file=out)
        for owner, ids in self.failing().items():
            print(f"  {owner:<8} {len(ids):>3}: {', '.join(ids) or '-'}", file=out)
        print(
            f"wall time {self.wall_s:.0f} s ({self.prepare_s:.0f} s preparing the projects), {self.jobs} workers",
            file=out,
        )
        print(json.dumps(self.summary(), sort_keys=True), file=out)


def _folder_name(i: int, case: Case) -> str:
    return f"{i:03d}-{re.sub(r'[^A-Za-z0-9._-]+', '_', case.id)[:60]}"


def run_all(
    cases: Sequence[Case],
    jobs: int = 2,
    work: Path | None = None,
    keep: bool = False,
    out: TextIO | None = None,
) -> Report:
    """Prepare the projects the cases copy, run every case on ``jobs`` workers, return the report."""
    out = out or sys.stdout
    own_work = work is None
    work = Path(tempfile.mkdtemp(prefix="pifs-bad-inputs-")) if work is None else work
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    projects = Projects(work)
    projects.prepare(sorted({c.base for c in cases}), jobs)
    prepare_s = time.monotonic() - t0
    print(
        f"prepared {', '.join(sorted(projects.bases))} in {prepare_s:.0f} s under {work}",
        file=out,
        flush=True,
    )
    order = sorted(range(len(cases)), key=lambda i: -cost(cases[i]))
    lock = threading.Lock()
    outcomes: dict[int, Outcome] = {}

    def one(i: int) -> Outcome:
        where = work / "cases" / _folder_name(i, cases[i])
        o = run_case(cases[i], projects, where)
        if not keep:
            shutil.rmtree(where, ignore_errors=True)
        return o

    try:
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            futures = {pool.submit(one, i): i for i in order}
            for fut in as_completed(futures):
                o = fut.result()
                outcomes[futures[fut]] = o
                with lock:
                    print(line(o), file=out, flush=True)
    finally:
        if own_work and not keep:
            shutil.rmtree(work, ignore_errors=True)
    report = Report([outcomes[i] for i in range(len(cases))], time.monotonic() - t0, prepare_s, jobs)
    report.write(out)
    return report
