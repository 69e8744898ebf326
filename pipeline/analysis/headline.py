"""Headline figures of an analysis run for DVC: metrics.json (`dvc metrics show`, `dvc exp show`)
and plots/by_t.csv (`dvc plots diff`: κ̂_t and δ̂^cross_t against the paper's t).

κ̂_t is the power-iteration estimate of ‖JΦ_t‖₂ (eq. 7, Table 4), δ̂^cross_t = κ̂_t − κ̂_t^diag the
cross-patch coupling (eq. 30, Table 5), both averaged over seeds at each paper timestep t.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np

from pipeline.analysis import paper_values as pv

PLOT_COLUMNS = ("t", "kappa", "kappa_diag", "delta_cross", "num_seeds")


def _paper_ts(table: pv.PaperTable) -> list[int]:
    i = table.columns.index("t")
    return [int(r[i]) for r in table.rows]


def _mean_by_t(table: Mapping[str, np.ndarray], column: str) -> dict[int, float]:
    """Seed mean of a column at each paper timestep t (finite values only)."""
    if column not in table or table[column].dtype == object:
        return {}
    ts = np.asarray(table["t"], dtype=float)
    vals = np.asarray(table[column], dtype=float)
    out = {}
    for t in np.unique(ts[np.isfinite(ts)]):
        v = vals[(ts == t) & np.isfinite(vals)]
        if v.size:
            out[int(t)] = float(v.mean())
    return out


def by_t_rows(global_table: Mapping[str, np.ndarray] | None) -> list[dict[str, object]]:
    """One row per measured paper t (descending, as the chain runs): κ̂_t, κ̂_t^diag, δ̂^cross_t."""
    if not global_table or "t" not in global_table:
        return []
    kappa = _mean_by_t(global_table, "kappa_pi") or _mean_by_t(global_table, "kappa_lanczos")
    diag = _mean_by_t(global_table, "kappa_diag")
    cross = _mean_by_t(global_table, "delta_cross")
    ts = np.asarray(global_table["t"], dtype=float)
    seeds = np.asarray(global_table.get("seed", np.zeros_like(ts)), dtype=float)
    rows = []
    for t in sorted(set(kappa) | set(cross), reverse=True):
        rows.append(
            {
                "t": t,
                "kappa": kappa.get(t, math.nan),
                "kappa_diag": diag.get(t, math.nan),
                "delta_cross": cross.get(t, math.nan),
                "num_seeds": int(np.unique(seeds[ts == t]).size),
            }
        )
    return rows


def _status_key(status: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", status.lower()).strip("_")


def headline_metrics(rows: list[dict[str, object]], verdict_statuses: Iterable[str]) -> dict[str, object]:
    """Nested metrics: κ̂ and δ̂^cross at the paper's printed t (Tables 4, 5) and claim verdict counts.

    Only the paper's t that the run measured appear (a 10-step smoke chain has fewer); ``finest``
    is the smallest measured t, where the paper's headline κ̂_20 = 1.3969 sits (Table 4).
    """

    def finite(v) -> bool:
        return isinstance(v, (int, float)) and math.isfinite(float(v))

    by_t = {int(r["t"]): r for r in rows}
    out: dict[str, object] = {}
    kappa = {f"t{t}": float(by_t[t]["kappa"]) for t in _paper_ts(pv.TABLE_4) if t in by_t}
    cross = {f"t{t}": float(by_t[t]["delta_cross"]) for t in _paper_ts(pv.TABLE_5) if t in by_t}
    kappa = {k: v for k, v in kappa.items() if math.isfinite(v)}
    cross = {k: v for k, v in cross.items() if math.isfinite(v)}
    if rows:
        finest = min(by_t)
        k_vals = [float(r["kappa"]) for r in rows if finite(r["kappa"])]
        c_rows = [r for r in rows if finite(r["delta_cross"])]
        if finite(by_t[finest]["kappa"]):
            kappa.update(finest=float(by_t[finest]["kappa"]), finest_t=finest)
        if k_vals:
            kappa["max"] = max(k_vals)
        if c_rows:
            peak = max(c_rows, key=lambda r: float(r["delta_cross"]))
            cross["max"] = float(peak["delta_cross"])
            if (
                cross["max"] > 0
            ):  # where the coupling peaks (Table 5: t = 360); no peak when it is 0 throughout
                cross["argmax_t"] = int(peak["t"])
    if kappa:
        out["kappa"] = kappa
    if cross:
        out["delta_cross"] = cross
    counts = Counter(_status_key(s) for s in verdict_statuses)
    out["claims"] = {k: counts[k] for k in sorted(counts)}
    return out
