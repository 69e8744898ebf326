"""Headline figures of an analysis run for DVC, taken from the tables the report shows: metrics.json
(`dvc metrics show`, `dvc exp show`) and plots/by_t.csv (`dvc plots`), so DVC carries the report's numbers.

κ̂_t is the converged global norm of Table 4 (its `mean` over seeds at each t); the paper's K_PI power
iteration stands beside it under its own name (`kappa_pi`); κ̂^diag_t and δ̂^cross_t = max_k C_k,t are
Table 5's. Definitions: pipeline.analysis.definitions.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

from pipeline.analysis import paper_values as pv

PLOT_COLUMNS = ("t", "kappa", "kappa_pi", "kappa_diag", "delta_cross", "num_seeds")


def _paper_ts(table: pv.PaperTable) -> list[int]:
    i = table.columns.index("t")
    return [int(r[i]) for r in table.rows]


def by_t_rows(tables: dict) -> list[dict[str, object]]:
    """One row per measured paper t (descending, as the chain runs): Table 4's converged κ̂_t and the paper's
    power iteration beside it, Table 5's κ̂^diag_t and δ̂^cross_t."""
    t4, t5 = tables.get("table_4"), tables.get("table_5")
    rows: dict[int, dict[str, object]] = {}
    for r in t4.rows if t4 is not None else []:
        rows[int(r["t"])] = {
            "t": int(r["t"]),
            "kappa": r["mean"],
            "kappa_pi": r.get("mean_pi", math.nan),
            "num_seeds": r["n_seeds"],
        }
    for r in t5.rows if t5 is not None else []:
        d = rows.setdefault(
            int(r["t"]),
            {"t": int(r["t"]), "kappa": math.nan, "kappa_pi": math.nan, "num_seeds": r["n_seeds"]},
        )
        d.update(kappa_diag=r["kappa_diag"], delta_cross=r["delta_cross"])
    out = []
    for t in sorted(rows, reverse=True):
        d = rows[t]
        out.append({c: d.get(c, math.nan) for c in PLOT_COLUMNS})
    return out


def _status_key(status: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", status.lower()).strip("_")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(float(v))


def _at_paper_t(by_t: dict, column: str, paper: pv.PaperTable) -> dict[str, object]:
    out: dict[str, object] = {
        f"t{t}": float(by_t[t][column]) for t in _paper_ts(paper) if t in by_t and _finite(by_t[t][column])
    }
    if by_t:
        finest = min(by_t)
        if _finite(by_t[finest][column]):
            out.update(finest=float(by_t[finest][column]), finest_t=finest)
        vals = [float(r[column]) for r in by_t.values() if _finite(r[column])]
        if vals:
            out["max"] = max(vals)
    return out


def headline_metrics(
    rows: list[dict[str, object]], verdict_statuses: Iterable[str], oracle=None
) -> dict[str, object]:
    """Nested metrics: κ̂ (converged), κ̂ by the paper's K_PI power iteration and δ̂^cross at the paper's printed
    t (Tables 4, 5), at the finest measured t and their maxima; claim verdict counts; the oracle's count
    of independent checks. Only the paper's t that the run measured appear."""
    by_t = {int(r["t"]): r for r in rows}
    out: dict[str, object] = {}
    for name, col, paper in (
        ("kappa", "kappa", pv.TABLE_4),
        ("kappa_pi", "kappa_pi", pv.TABLE_4),
        ("delta_cross", "delta_cross", pv.TABLE_5),
    ):
        vals = _at_paper_t({t: r for t, r in by_t.items() if col in r}, col, paper)
        if name == "delta_cross":
            c_rows = [r for r in rows if _finite(r.get("delta_cross"))]
            if c_rows:
                peak = max(c_rows, key=lambda r: float(r["delta_cross"]))
                if float(peak["delta_cross"]) > 0:  # where the coupling peaks; none when it is 0 throughout
                    vals["argmax_t"] = int(peak["t"])
        if vals:
            out[name] = vals
    counts = Counter(_status_key(s) for s in verdict_statuses)
    out["claims"] = {k: counts[k] for k in sorted(counts)}
    if oracle is not None:
        c = oracle.count
        out["oracle"] = {
            "independent": c.independent,
            "agree": c.agree,
            "differ": c.differ,
            "not_converged": c.not_converged,
        }
    return out
