"""Per-patch release time t_k^rel (Definition 20, eq. 33) against λ_k, and eq. (36)'s predicted spread (§7.5):
"low-variance patches release first" (P4), with the degenerate cases said in words."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.analysis import inference as inf
from pipeline.analysis import paper_values as pv
from pipeline.analysis import stats
from pipeline.analysis.context import AnalysisContext, groups, nanmax, nanmin, patch_values
from pipeline.analysis.evidence import Comparison, Kind, Tolerance
from pipeline.analysis.inputs import AnalysisInputs, has_values
from pipeline.analysis.plotting import FigureResult, new_figure, result
from pipeline.analysis.tables.spec import FigureSpec, TableResult, TableSpec, scored


@dataclass
class ReleaseSummary:
    spearman_lambda_vs_t_rel: float = math.nan
    spearman_p: float = math.nan
    spearman_interval: str = ""
    n_patches: int = 0
    n_released: int = 0
    degenerate: str = ""  # why the release order cannot be read (all at one t, none released, ...)
    observed_spread: float = math.nan
    delta_lambda: float = math.nan
    dgamma_dlambda: float = math.nan
    dgamma_dt: float = math.nan
    predicted_spread_eq36: float = math.nan
    window: tuple[float, float] | None = None


def _gamma(P):
    if has_values(P, "suppression") and has_values(P, "f_t"):
        P = dict(P)
        P["gamma"] = P["suppression"] - (P["f_t"] - 1.0)
        return P, "gamma = suppression - (f_t - 1) (eq. 31)"
    if has_values(P, "rayleigh"):
        P = dict(P)
        P["gamma"] = 1.0 - P["rayleigh"]
        return P, "gamma = 1 - rayleigh (eq. 31-32)"
    return None, ""


def _patch_rows(ctx, P, GM) -> list[dict]:
    per_seed: dict[int, list[float]] = {}
    for (_seed, k), idx in groups(P, ("seed", "k")):
        g, t = P["gamma"][idx], P["t"][idx]
        rel = t[np.isfinite(g) & (g <= 0)]
        per_seed.setdefault(int(k), []).append(float(rel.max()) if len(rel) else math.nan)
    ts = GM.ts
    rows = []
    for j, k in enumerate(GM.ks):
        g = GM.mean[:, j]
        released = ts[np.isfinite(g) & (g <= 0)]
        t_pers = math.nan  # the largest t from which γ stays <= 0 at every smaller measured t
        for t, gv in sorted(zip(ts, g, strict=True)):
            if math.isfinite(gv) and gv <= 0:
                t_pers = float(t)
            else:
                break
        r, c = ctx.grid.get(int(k), (math.nan, math.nan))
        ps = np.array(per_seed.get(int(k), []), dtype=float)
        rows.append(
            {
                "k": int(k),
                "row": r,
                "col": c,
                "lambda_k": float(GM.lam[j]),
                "t_rel": float(released.max()) if len(released) else math.nan,
                "t_rel_persistent": t_pers,
                "t_rel_seed_median": float(np.nanmedian(ps)) if np.any(np.isfinite(ps)) else math.nan,
                "gamma_min": nanmin(g),
                "gamma_max": nanmax(g),
            }
        )
    return rows


def degeneracy(t_rel: np.ndarray, ts: np.ndarray) -> str:
    """Why the release order cannot be read from these release times ('' when it can)."""
    ok = np.isfinite(t_rel)
    if not ok.any():
        return "no patch is released at any measured t (γ_k,t > 0 throughout)"
    if ok.sum() < 3:
        return f"only {int(ok.sum())} patches are released at a measured t: too few to rank"
    if np.all(t_rel[ok] == t_rel[ok][0]):
        where = "the first measured step" if t_rel[ok][0] == ts.max() else f"t = {t_rel[ok][0]:g}"
        return f"every released patch has t_rel at {where} (t = {t_rel[ok][0]:g}): no order to read"
    return ""


def _eq36(GM, lam, t_rel, s: ReleaseSummary) -> None:
    """eq. (36): derivatives estimated in the observed release window (all measured t if it is degenerate)."""
    ts, ok = GM.ts, np.isfinite(t_rel)
    s.observed_spread = float(t_rel[ok].max() - t_rel[ok].min()) if ok.any() else math.nan
    lo, hi = (t_rel[ok].min(), t_rel[ok].max()) if ok.any() else (ts.min(), ts.max())
    win = (ts >= lo) & (ts <= hi)
    if win.sum() < 2:
        win = np.ones_like(ts, dtype=bool)
    G = GM.mean
    dl = [
        stats.ols_fit(lam, G[i]).slope
        for i in np.flatnonzero(win)
        if np.isfinite(G[i]).sum() >= 3 and np.ptp(lam[np.isfinite(G[i])]) > 0
    ]
    dt = [
        stats.ols_fit(ts[win], G[win, j]).slope
        for j in range(G.shape[1])
        if np.isfinite(G[win, j]).sum() >= 3
    ]
    s.dgamma_dlambda = abs(float(np.median(dl))) if dl else math.nan
    s.dgamma_dt = abs(float(np.median(dt))) if dt else math.nan
    s.delta_lambda = nanmax(lam) - nanmin(lam)
    if math.isfinite(s.dgamma_dt) and s.dgamma_dt > 0:
        s.predicted_spread_eq36 = s.delta_lambda * s.dgamma_dlambda / s.dgamma_dt
    s.window = (float(lo), float(hi))


def release_times(inp: AnalysisInputs, ctx: AnalysisContext) -> TableResult | None:
    """Per-patch release time t_k^rel (Definition 20) vs λ_k and eq. (36)'s predicted spread."""
    P = inp.patches
    if P is None or not ctx.lambda_k:
        return None
    P, how = _gamma(P)
    if P is None:
        return None
    GM = patch_values(ctx, P, "gamma")
    rows = _patch_rows(ctx, P, GM)
    lam = GM.lam
    t_rel = np.array([r["t_rel"] for r in rows])
    ok = np.isfinite(t_rel)
    s = ReleaseSummary(n_patches=len(rows), n_released=int(ok.sum()), degenerate=degeneracy(t_rel, GM.ts))
    if not s.degenerate:
        rc = inf.spearman_with_interval(lam[ok], t_rel[ok])
        s.spearman_lambda_vs_t_rel, s.spearman_p, s.spearman_interval = rc.rho, rc.p_value, rc.interval.text()
    _eq36(GM, lam, t_rel, s)
    res = TableResult(
        "release_times",
        "Per-patch release time t_k^rel (Def. 20) vs lambda_k, and eq. (36)",
        f"jacobian/patches.csv: {how}; seed-mean per (t, k)",
        list(rows[0].keys()),
        rows,
        s,
    )
    res.notes += [
        "Release rule (Definition 20, eq. 33): t_rel = the largest measured t with seed-mean "
        "gamma_k,t <= 0; t_rel_persistent = the largest t from which gamma stays <= 0 at every "
        "smaller measured t; NaN = never released at a measured t."
        + (f" Degenerate: {s.degenerate}." if s.degenerate else ""),
        "eq. (36): |d gamma/d lambda| = |median over window t of the OLS slope of gamma on lambda_k|; "
        "|d gamma/d t| = |median over patches of the OLS slope of gamma on t in the window|; window = "
        "[min t_rel, max t_rel] (all measured t when that holds < 2 timesteps).",
    ]
    rs = pv.RELEASE_SPREAD
    cmp = [
        Comparison(
            "Release (eq. 36)",
            "delta lambda",
            rs["delta_lambda"],
            s.delta_lambda,
            tolerance=Tolerance(rel=0.5),
        ),
        Comparison(
            "Release (eq. 36)",
            "|d gamma/d lambda|",
            rs["dgamma_dlambda"],
            s.dgamma_dlambda,
            tolerance=Tolerance(rel=0.5),
        ),
        Comparison(
            "Release (eq. 36)", "|d gamma/d t|", rs["dgamma_dt"], s.dgamma_dt, tolerance=Tolerance(rel=0.5)
        ),
        Comparison(
            "Release (eq. 36)",
            "predicted spread (eq. 36)",
            rs["predicted_spread_steps"],
            s.predicted_spread_eq36,
            Kind.REDERIVED,
            Tolerance(rel=0.5),
            "delta lambda and the two slopes above",
        ),
        Comparison(
            "Release (eq. 36)",
            "observed spread",
            rs["observed_release_window"][0] - rs["observed_release_window"][1],
            s.observed_spread,
            tolerance=Tolerance(rel=0.5),
            note=s.degenerate,
        ),
    ]
    res.comparison = scored(cmp, ctx)
    return res


@FigureSpec.of_table("release_times", "release_times")
def fig_release(rel: TableResult, ctx, inp) -> FigureResult | None:
    lam = np.array([r["lambda_k"] for r in rel.rows])
    tr = np.array([r["t_rel"] for r in rel.rows])
    tp = np.array([r["t_rel_persistent"] for r in rel.rows])
    s: ReleaseSummary = rel.summary
    fig = new_figure((6, 4))
    ax = fig.add_subplot()
    ax.plot(lam, tr, "o", label="t_rel (Def. 20)")
    ax.plot(lam, tp, "x", label="persistent release")
    ax.set_title(
        f"release time vs λ_k: observed spread {s.observed_spread:.3g}, eq. (36) {s.predicted_spread_eq36:.3g}"
        + ("\nDEGENERATE: " + s.degenerate if s.degenerate else ""),
        fontsize=8,
    )
    ax.set_xlabel(r"$\lambda_k$")
    ax.set_ylabel("release time t_k^rel")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return result(
        "release_times",
        "release time vs λ_k",
        f"Per-patch release time (largest t with γ_k,t ≤ 0) against λ_k for {s.n_released} of {s.n_patches} "
        "patches released at a measured t; Theorem 22(a) predicts lower-variance patches release at larger t."
        + (f" Degenerate: {s.degenerate}." if s.degenerate else ""),
        fig,
    )


SPEC = TableSpec(
    release_times,
    "release time vs λ_k",
    "jacobian/patches.csv with suppression and f_t (or rayleigh), and lambda_k",
)
