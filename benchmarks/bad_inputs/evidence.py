"""Checks of a finished command's result against evidence: the numbers of a clean run under the asked
config, what the files themselves hold (seeds, steps, patches, NaNs), and what meta.json claims.

Each builder returns a check: ``check(outcome) -> None`` when the result is right, else what is wrong.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmarks.bad_inputs.runner import Outcome

Check = Callable[[Outcome], "str | None"]

# The files whose numbers each stage's result is compared on.
NUMBERS = {
    "covariance": ("patch_stats.npz",),
    "trajectories": ("seed-*.npz",),
    "jacobian": ("global.csv", "patches.csv"),
    "analysis": ("metrics.json", "table_4.csv"),
}
_ROW_KEYS = ("seed", "step", "t", "k", "j", "row", "col")


def _rows(path: Path) -> dict[tuple, dict[str, str]]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [k for k in _ROW_KEYS if rows and k in rows[0]]
    return {tuple(r[k] for k in keys) if keys else (i,): r for i, r in enumerate(rows)}


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _csv_differs(got: Path, want: Path) -> str | None:
    g, w = _rows(got), _rows(want)
    if set(g) != set(w):
        extra, missing = sorted(set(g) - set(w))[:3], sorted(set(w) - set(g))[:3]
        return f"{got.name} has rows {extra} a clean run lacks and lacks {missing}"
    for key, row in w.items():
        for col, text in row.items():
            a, b = _num(g[key].get(col, "")), _num(text)
            if b is not None and (a is None or not _close(a, b)):
                return f"{got.name} row {key} {col} = {g[key].get(col)}, a clean run gives {text}"
    return None


def _flat_json(obj, prefix: str = "") -> dict[str, float]:
    if isinstance(obj, dict):
        out: dict[str, float] = {}
        for k, v in obj.items():
            out.update(_flat_json(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: float(obj)} if isinstance(obj, (int, float)) and not isinstance(obj, bool) else {}


def _file_differs(got: Path, want: Path) -> str | None:
    if not got.is_file():
        return f"{got.name} is missing"
    if want.suffix == ".csv":
        return _csv_differs(got, want)
    if want.suffix == ".json":
        g, w = _flat_json(json.loads(got.read_text())), _flat_json(json.loads(want.read_text()))
        for k, v in w.items():
            if k not in g or not _close(g[k], v):
                return f"{got.name} {k} = {g.get(k)}, a clean run gives {v}"
        return None
    with np.load(got) as zg, np.load(want) as zw:
        for name in zw.files:
            if name not in zg.files or zg[name].shape != zw[name].shape:
                return f"{got.name}:{name} has another shape than a clean run's"
            if not np.allclose(zg[name], zw[name], rtol=1e-6, atol=1e-9, equal_nan=True):
                diff = float(np.nanmax(np.abs(zg[name].astype(float) - zw[name].astype(float))))
                return f"{got.name}:{name} differs from a clean run's by up to {diff:.3g}"
    return None


def folder_differs(got: Path, want: Path, stage: str) -> str | None:
    """What differs between a stage folder and a clean run's folder of the same config (None: same)."""
    for pattern in NUMBERS[stage]:
        wanted = sorted(want.glob(pattern))
        if len(sorted(got.glob(pattern))) != len(wanted):
            return f"{got.name} holds {len(sorted(got.glob(pattern)))} {pattern}, a clean run {len(wanted)}"
        for w in wanted:
            problem = _file_differs(got / w.name, w)
            if problem:
                return problem
    return None


def _produced_one(outcome: Outcome, stage: str) -> Path | str:
    found = outcome.produced(stage)
    if not found:
        return f"exit 0 but no {stage} folder was written or reused (per its log)"
    return found[-1]


def same_as_base(stage: str, base: str = "smoke") -> Check:
    """The result equals the prepared ``base`` project's clean run of the same (smoke) config."""

    def check(outcome: Outcome) -> str | None:
        got = _produced_one(outcome, stage)
        if isinstance(got, str):
            return got
        want = sorted((outcome.base(base) / "outputs" / stage).glob("*/meta.json"))[0].parent
        problem = folder_differs(got, want, stage)
        return f"{stage} result differs from a clean run of the asked config: {problem}" if problem else None

    return check


def same_as_reference(name: str, commands: Sequence[tuple[str, ...]], stage: str) -> Check:
    """The result equals a clean run of ``commands`` (the asked config) in an empty project."""

    def check(outcome: Outcome) -> str | None:
        got = _produced_one(outcome, stage)
        if isinstance(got, str):
            return got
        ref = outcome.reference(name, commands)
        want = sorted((ref / "outputs" / stage).glob("*/meta.json"))[0].parent
        problem = folder_differs(got, want, stage)
        return f"{stage} result differs from a clean run of the asked config: {problem}" if problem else None

    return check


def jacobian_seeds(expected: Sequence[int]) -> Check:
    """global.csv measures exactly the asked seeds."""

    def check(outcome: Outcome) -> str | None:
        got = _produced_one(outcome, "jacobian")
        if isinstance(got, str):
            return got
        seeds = sorted({int(r["seed"]) for r in _rows(got / "global.csv").values()})
        if seeds != sorted(expected):
            return f"global.csv measures seeds {seeds}, asked {sorted(expected)}"
        return None

    return check


def finite(stage: str, table: str, base: str = "smoke") -> Check:
    """No NaN in a column that a clean run fills with numbers."""

    def check(outcome: Outcome) -> str | None:
        got = _produced_one(outcome, stage)
        if isinstance(got, str):
            return got
        want = sorted((outcome.base(base) / "outputs" / stage).glob(f"*/{table}"))[0]
        clean = next(iter(_rows(want).values()))
        for row in _rows(got / table).values():
            for col, text in row.items():
                b = _num(clean.get(col, ""))
                a = _num(text)
                if b is not None and not math.isnan(b) and (a is None or math.isnan(a)):
                    return f"{table} column {col} is {text} where a clean run has numbers"
        return None

    return check


def patch_count(stage: str, expected: int) -> Check:
    """The patch grid the result was computed on (patches.csv rows of one seed and step)."""

    def check(outcome: Outcome) -> str | None:
        got = _produced_one(outcome, stage)
        if isinstance(got, str):
            return got
        with (got / "patches.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        first = (rows[0].get("seed"), rows[0].get("step")) if rows else None
        n = (
            sum(1 for r in rows if (r.get("seed"), r.get("step")) == first)
            if "seed" in rows[0]
            else len(rows)
        )
        return (
            None if n == expected else f"patches.csv holds {n} patches, the asked patch size gives {expected}"
        )

    return check


def chain_steps(expected: int) -> Check:
    """The trajectories the result holds or was measured on run ``expected`` sampler steps."""

    def check(outcome: Outcome) -> str | None:
        got = _produced_one(outcome, "trajectories")
        if isinstance(got, str):
            return got
        with np.load(sorted(got.glob("seed-*.npz"))[0]) as z:
            n = len(z["t"])
        return None if n == expected else f"the trajectories hold {n} steps, asked {expected}"

    return check


def meta_records(stage: str, key: str, value) -> Check:
    """The result's meta.json records the asked value (claims vs asked)."""

    def check(outcome: Outcome) -> str | None:
        got = _produced_one(outcome, stage)
        if isinstance(got, str):
            return got
        node = outcome.meta(got).get("config", {})
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return None if node == value else f"asked {key}={value}; {got.name}/meta.json records {node!r}"

    return check


def written_under(folder: str) -> Check:
    """The run wrote where it was asked to (``folder`` relative to the project)."""

    def check(outcome: Outcome) -> str | None:
        if (outcome.root / folder).is_dir() and any((outcome.root / folder).rglob("meta.json")):
            return None
        written = [str(p.relative_to(outcome.root)) for p in outcome.produced(outcome.case.stage or "")]
        return f"asked to write under {folder}; wrote {written or 'nothing'}"

    return check


def text_lacks(stage: str, files: Sequence[str], marker: str) -> Check:
    """A value the run did not use (a hand-edited record) does not appear in its report."""

    def check(outcome: Outcome) -> str | None:
        got = _produced_one(outcome, stage)
        if isinstance(got, str):
            return got
        for name in files:
            if (got / name).is_file() and marker in (got / name).read_text(errors="replace"):
                return f"{name} reports {marker!r}, which only a hand-edited meta.json says"
        return None

    return check


def stdout_has(*texts: str) -> Check:
    """A command whose result is its printout (--help, listings): it printed these."""

    def check(outcome: Outcome) -> str | None:
        missing = [t for t in texts if t not in outcome.stdout]
        return f"stdout lacks {missing}" if missing else None

    return check


def all_of(*checks: Check) -> Check:
    def check(outcome: Outcome) -> str | None:
        for c in checks:
            problem = c(outcome)
            if problem:
                return problem
        return None

    return check


def kept(*paths: str) -> Check:
    """Data-loss evidence beyond the generic comparison: these files must still exist (anywhere the
    run moved them is fine only if their bytes survive, which the generic comparison checks)."""

    def check(outcome: Outcome) -> str | None:
        gone = [p for p in paths if not (outcome.root / p).exists()]
        return f"{', '.join(gone)} no longer exist" if gone else None

    return check


def both_results(stage: str, key: str, values: Sequence) -> Check:
    """A sweep over ``key`` left one result per value (none overwrote another)."""

    def check(outcome: Outcome) -> str | None:
        if outcome.code != 0:
            return None
        found = []
        for meta in (outcome.root / "outputs" / stage).glob("*/meta.json"):
            node = json.loads(meta.read_text()).get("config", {})
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            found.append(node)
        missing = [v for v in values if v not in found]
        return (
            f"the sweep reported every job done, but no {stage} result of {key}={missing} exists"
            if missing
            else None
        )

    return check
