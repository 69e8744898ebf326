"""Table 10 (§7.6, Figure 1): the score deviation against √ᾱ_t — the paper's paired-difference proxy (eq. 65)
and, where the covariance stage wrote Σ₀, the exact ‖Δ_t‖ of eq. 28 — with OLS on log-log over t >= 0.8 T (P5)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.analysis import paper_values as pv
from pipeline.analysis import stats
from pipeline.analysis.context import AnalysisContext, groups, nanmax, nanmin
from pipeline.analysis.evidence import Comparison, Kind, Tolerance
from pipeline.analysis.inputs import AnalysisInputs, has_values
from pipeline.analysis.plotting import FigureResult, count_t, new_figure, result, time_axis
from pipeline.analysis.tables.spec import FigureSpec, TableResult, TableSpec, paper_rows, scored
from pipeline.geometry import schedule_from_config


@dataclass
class Fit:
    """OLS of log(value) on log √ᾱ_t over the fit window, with its 95% t-interval."""

    slope: float
    ci_lo: float
    ci_hi: float
    r2: float
    intercept: float
    n: int
    p_slope_lt_1: float
    p_slope_eq_1: float
    slope_high_noise_half: float = math.nan  # the same fit on the noisier half of the window


@dataclass
class Table10Summary:
    fit_t_min: float = math.nan
    proxy: Fit | None = None
    exact: Fit | None = None
    proxy_over_exact_min: float = math.nan  # in the fit window: does the proxy approximate Δ_t there?
    proxy_over_exact_max: float = math.nan


def alpha_bar_lookup(inp: AnalysisInputs, ctx: AnalysisContext):
    """t -> ᾱ_t from the measured chain, or the run's schedule via pipeline.geometry."""
    lut: dict[int, float] = {}
    if ctx.chain is not None:
        lut.update({int(t): float(a) for t, a in zip(ctx.chain.t, ctx.chain.alpha_bar_t, strict=True)})
    sched = (inp.jacobian_config or inp.any_config()).get("schedule")
    ab_full = None
    if sched:
        try:
            ab_full = np.asarray(schedule_from_config(sched).alpha_bar, dtype=np.float64)
        except (ValueError, KeyError, TypeError):  # a schedule config it cannot read: fall back to the lut
            ab_full = None

    def lookup(t: int) -> float:
        if t in lut:
            return lut[t]
        if ab_full is not None and 0 <= t < len(ab_full):
            return float(ab_full[t])
        return math.nan

    return lookup


def _fit(rows: list[dict], name: str) -> Fit | None:
    pts = [
        (r["t"], r["sqrt_alpha_bar"], r[name])
        for r in rows
        if r["in_fit"] and r["sqrt_alpha_bar"] > 0 and r[name] > 0
    ]
    if len(pts) < 3:
        return None
    t, x, y = np.array(pts).T
    f = stats.ols_fit(np.log(x), np.log(y))
    out = Fit(
        f.slope,
        f.slope_ci[0],
        f.slope_ci[1],
        f.r2,
        f.intercept,
        f.n,
        f.p_slope_vs(1.0, "less"),
        f.p_slope_vs(1.0),
    )
    hi = t >= np.median(t)
    if hi.sum() >= 3 and np.ptp(x[hi]) > 0:
        out.slope_high_noise_half = stats.ols_fit(np.log(x[hi]), np.log(y[hi])).slope
    return out


def table_10(inp: AnalysisInputs, ctx: AnalysisContext) -> TableResult | None:
    """Score-deviation proxy vs t; OLS of log proxy (and log exact ‖Δ_t‖) on log √ᾱ_t over t >= 0.8 T (§7.6)."""
    X = inp.proxy
    if X is None:
        return None
    lookup = alpha_bar_lookup(inp, ctx)
    fit_min = 0.8 * ctx.T
    rows = []
    for (t,), idx in sorted(groups(X, ("t",)), key=lambda g: -g[0][0]):
        if has_values(X, "sqrt_alpha_bar"):
            sab = float(np.nanmean(X["sqrt_alpha_bar"][idx]))
        elif has_values(X, "alpha_bar_t"):
            sab = float(np.sqrt(np.nanmean(X["alpha_bar_t"][idx])))
        else:
            sab = math.sqrt(lookup(int(t))) if math.isfinite(lookup(int(t))) else math.nan
        exact = float(np.nanmean(X["exact_deviation"][idx])) if has_values(X, "exact_deviation") else math.nan
        rows.append(
            {
                "t": int(t),
                "regime": ctx.regime(t),
                "sqrt_alpha_bar": sab,
                "proxy": float(np.nanmean(X["proxy"][idx])),
                "proxy_std": float(np.nanmean(X["proxy_std"][idx]))
                if has_values(X, "proxy_std")
                else math.nan,
                "exact_deviation": exact,
                "proxy_over_exact": float(np.nanmean(X["proxy"][idx])) / exact if exact > 0 else math.nan,
                "in_fit": bool(t >= fit_min),
            }
        )
    s = Table10Summary(fit_t_min=fit_min, proxy=_fit(rows, "proxy"), exact=_fit(rows, "exact_deviation"))
    ratio = [r["proxy_over_exact"] for r in rows if r["in_fit"]]
    s.proxy_over_exact_min, s.proxy_over_exact_max = nanmin(ratio), nanmax(ratio)
    res = TableResult(
        "table_10",
        "Score-deviation proxy E||Delta_t||_2 (eq. 65) and the exact Delta_t (eq. 28)",
        "jacobian/proxy.csv: t, proxy, proxy_std, exact_deviation; sqrt(alpha_bar_t) from the file, "
        "the measured chain or the run's schedule",
        list(rows[0].keys()),
        rows,
        s,
        paper=pv.TABLE_10,
    )
    for name, f in (("proxy", s.proxy), ("exact_deviation", s.exact)):
        if f is None:
            res.notes.append(f"OLS for {name}: fewer than 3 positive points with t >= {fit_min:g}; no fit.")
    res.notes.append(
        f"OLS fit: log(value) on log(sqrt(alpha_bar_t)) over t >= {fit_min:g} (0.8 T), 95% t-interval."
    )
    if math.isfinite(s.proxy_over_exact_max):
        res.notes.append(
            f"In the fit window the proxy is {s.proxy_over_exact_min:.3g}–{s.proxy_over_exact_max:.3g} times the "
            "exact ||Delta_t|| of eq. 28 (the paper assumes the proxy approximates Delta_t there)."
        )
    _comparisons(res, rows, ctx)
    return res


def _comparisons(res: TableResult, rows, ctx) -> None:
    s: Table10Summary = res.summary
    sc = pv.TABLE_10.scalars
    f = s.proxy
    get = (lambda a: getattr(f, a)) if f is not None else (lambda a: math.nan)
    fit = "the proxy's OLS slope fit"
    cmp = [
        Comparison("Table 10", "OLS slope", sc["ols_slope"], get("slope"), tolerance=Tolerance(abs=0.1)),
        *(
            Comparison(
                "Table 10", f"OLS slope CI {end}", paper, get(a), Kind.REDERIVED, Tolerance(abs=0.1), fit
            )
            for end, paper, a in zip(("low", "high"), sc["ols_ci95"], ("ci_lo", "ci_hi"), strict=True)
        ),
        Comparison("Table 10", "OLS R^2", sc["ols_r2"], get("r2"), Kind.REDERIVED, Tolerance(abs=0.02), fit),
    ]
    cmp += paper_rows(
        pv.TABLE_10,
        "proxy",
        rows,
        tolerance=lambda p: Tolerance(abs=2 * p["proxy_std"], why="2 paper std"),
    )
    res.comparison = scored(cmp, ctx)


@FigureSpec.of_table("table_10", "proxy_loglog")
def fig_proxy(t10: TableResult, ctx, inp) -> FigureResult | None:
    rows = t10.rows
    t = np.array([r["t"] for r in rows], dtype=float)
    y = np.array([r["proxy"] for r in rows], dtype=float)
    ys = np.nan_to_num(np.array([r["proxy_std"] for r in rows], dtype=float))
    x = np.array([r["sqrt_alpha_bar"] for r in rows], dtype=float)
    ex = np.array([r["exact_deviation"] for r in rows], dtype=float)
    fit = np.array([r["in_fit"] for r in rows], dtype=bool)
    fig = new_figure((10, 4))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.errorbar(t, y, yerr=ys, fmt="o-", ms=3, label="proxy E‖Δ̂_t‖ (eq. 65)")
    if np.isfinite(ex).any():
        ax1.plot(t, ex, "s--", ms=3, label="exact ‖Δ_t‖ (eq. 28)")
    ax1.axvline(0.8 * ctx.T, color="k", ls="--", lw=0.8, label="t = 0.8T: fit window starts")
    ax1.legend(fontsize=8)
    ax1.set_ylabel(r"$E\|\hat\Delta_t\|_2$")
    ax1.set_title("proxy vs t")
    time_axis(ax1)
    s: Table10Summary = t10.summary
    for vals, f, lab, c in ((y, s.proxy, "proxy", "k"), (ex, s.exact, "exact", "C1")):
        ok = (x > 0) & (vals > 0)
        if not ok.any():
            continue
        ax2.loglog(x[ok & fit], vals[ok & fit], "o", color=c, ms=4, label=f"{lab}, t ≥ 0.8T (fit)")
        ax2.loglog(x[ok & ~fit], vals[ok & ~fit], "o", color=c, alpha=0.35, ms=4, label=f"{lab}, t < 0.8T")
        if f is not None:
            xx = np.geomspace(x[ok].min(), x[ok].max(), 50)
            ax2.loglog(
                xx,
                np.exp(f.intercept) * xx**f.slope,
                "-",
                color=c,
                lw=1,
                label=f"OLS slope {f.slope:.3f} [{f.ci_lo:.3f}, {f.ci_hi:.3f}]",
            )
    ax2.set_xlabel(r"$\sqrt{\bar\alpha_t}$")
    ax2.set_ylabel(r"$E\|\hat\Delta_t\|_2$")
    ax2.set_title("log-log with OLS on the high-noise points")
    ax2.grid(alpha=0.3, which="both")
    ax2.legend(fontsize=7)
    return result(
        "proxy_loglog",
        "Figure 1: proxy vs t and log-log fit",
        f"Paired-difference proxy E‖Δ̂_t‖₂ (eq. 65; Table 10, the paper's Figure 1) at {count_t(len(t))}, mean ± "
        "std, and the exact ‖Δ_t‖ of eq. 28 where measured. Right: OLS of the log value on log √ᾱ_t over t ≥ "
        "0.8 T (dark points); slope 1 is P5's O(√ᾱ_t).",
        fig,
    )


SPEC = TableSpec(
    table_10,
    "score-deviation slope",
    "jacobian/proxy.csv",
)
