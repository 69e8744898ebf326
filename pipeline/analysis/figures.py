"""Report figures as PNG bytes (matplotlib's Agg canvas directly: no pyplot, no global backend state)."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from pipeline.analysis.inputs import AnalysisInputs
from pipeline.analysis.tables import AnalysisContext, TableResult, patch_matrix
from pipeline.geometry import cosine_schedule, expansion_threshold, full_chain, linear_schedule
from pipeline.io import load_npz

DPI = 100


@dataclass
class FigureResult:
    name: str
    title: str
    caption: str
    png: bytes
    # the drawn matplotlib Figure, kept so tests can read its axes (labels, ticks, colour norms)
    figure: Figure | None = field(default=None, repr=False, compare=False)


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # No Software/date metadata: identical inputs give identical bytes (DVC sees no change on rerun).
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


T_LABEL = "paper timestep t (sampling runs right to left)"
ONE_LABEL = "1: contraction boundary"


def _time_axis(ax) -> None:
    ax.set_xlabel(T_LABEL)
    ax.grid(alpha=0.3)


def _result(name: str, title: str, caption: str, fig: Figure) -> FigureResult:
    return FigureResult(name, title, caption, _png(fig), fig)


def _cell_edges(ts: np.ndarray, log: bool) -> np.ndarray:
    """Column edges halfway between neighbouring measured t (geometric halfway on a log axis), so each
    column is centred on its t and as wide as the gaps around it."""
    x = np.log(ts) if log else ts.astype(np.float64)
    if len(x) == 1:
        half = np.array([0.25 if log else 0.5])
    else:
        gaps = np.diff(x)
        half = np.concatenate([[gaps[0]], gaps]) / 2
    mid = (x[:-1] + x[1:]) / 2
    edges = np.concatenate([[x[0] - half[0]], mid, [x[-1] + (np.diff(x)[-1] / 2 if len(x) > 1 else half[0])]])
    return np.exp(edges) if log else edges


def use_log_t(ts: np.ndarray) -> bool:
    """Log t axis when the measured t span over a decade with very uneven gaps (e.g. 1000, 500, 200, ...,
    20), where a linear axis would squeeze the low-noise end; evenly spaced t stay linear."""
    ts = np.sort(np.asarray(ts, dtype=np.float64))
    if len(ts) < 3 or ts[0] <= 0 or ts[-1] / ts[0] <= 10:
        return False
    gaps = np.diff(ts)
    return bool(gaps.max() / gaps.min() > 4)


def time_ticks(ax, ts: np.ndarray, max_labels: int = 12) -> None:
    """Major ticks at exactly the measured t (labelled; every k-th label when crowded), no minor ticks."""
    ts = np.sort(np.asarray(ts, dtype=np.float64))
    every = max(1, math.ceil(len(ts) / max_labels))
    keep = set(range(0, len(ts), every)) | {len(ts) - 1}
    ax.xaxis.set_major_locator(FixedLocator(ts))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:g}" if i in keep else "" for i, t in enumerate(ts)], fontsize=7)


def fig_kappa_t(tables, ctx, inp) -> FigureResult | None:
    t4: TableResult | None = tables.get("table_4")
    if t4 is None:
        return None
    G = inp.global_
    col = t4.summary["kappa_source"]
    flagged = set(t4.summary.get("flagged_seeds") or [])
    fig = Figure(layout="constrained", figsize=(7, 4))
    ax = fig.add_subplot()
    for s in np.unique(G["seed"]).astype(int):
        m = G["seed"] == s
        ax.plot(
            G["t"][m],
            G[col][m],
            lw=0.8,
            alpha=0.5,
            ls="--" if s in flagged else "-",
            label=f"seed {s} (flagged outlier)" if s in flagged else None,
        )
    t = np.array([r["t"] for r in t4.rows])
    mean = np.array([r["mean"] for r in t4.rows])
    std = np.nan_to_num(np.array([r["std"] for r in t4.rows]))
    ax.plot(t, mean, "ko-", ms=3, lw=2, label="mean over seeds")
    ax.fill_between(t, mean - std, mean + std, color="k", alpha=0.15, label="± std")
    ax.axhline(1.0, color="r", lw=0.8, ls=":", label=ONE_LABEL)
    ax.set_ylabel(r"$\hat\kappa_t=\|J_x\Phi_t\|_2$")
    ax.set_title(f"Global spectral norm per step ({col})")
    _time_axis(ax)
    ax.legend(fontsize=8)
    return _result(
        "kappa_t",
        "κ̂_t vs t",
        f"Global per-step spectral norm κ̂_t ({col}) at each measured t (dots), per seed and mean ± std "
        "(Table 4). Dashed: seeds flagged by the outlier rule (kept in the mean). Dotted red: κ̂ = 1.",
        fig,
    )


def fig_block(tables, ctx, inp) -> FigureResult | None:
    t5 = tables.get("table_5")
    if t5 is None:
        return None
    t = np.array([r["t"] for r in t5.rows])
    fig = Figure(layout="constrained", figsize=(10, 4))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for q, lab in (
        ("kappa_diag", r"$\hat\kappa^{diag}_t$"),
        ("kappa_global", r"global $\hat\kappa_t$"),
        ("kappa_pc", r"$\hat\kappa^{pc}_t$"),
        ("f_t_lambda_max", r"$f_t(\lambda_{max})$ (Gaussian)"),
    ):
        y = np.array([r.get(q, math.nan) for r in t5.rows], dtype=float)
        if np.isfinite(y).any():
            ax1.plot(t, y, marker="o", ms=4, label=lab, ls=":" if q == "f_t_lambda_max" else "-")
    ax1.axhline(1.0, color="r", lw=0.8, ls=":", label=ONE_LABEL)
    ax1.set_title("diagonal and global norms")
    ax1.set_ylabel("spectral norm")
    ax1.legend(fontsize=8)
    _time_axis(ax1)
    y = np.array([r["delta_cross"] for r in t5.rows], dtype=float)
    ys = np.nan_to_num(np.array([r["delta_cross_std"] for r in t5.rows], dtype=float))
    ax2.errorbar(t, y, yerr=ys, fmt="C3o-", ms=4, capsize=3, label=r"$\hat\delta^{cross}_t$ (mean ± std)")
    ax2.axhline(0.0, color="k", lw=0.6, label="0: no coupling")
    ax2.set_title("cross-patch coupling")
    ax2.set_ylabel(r"$\hat\delta^{cross}_t$")
    ax2.legend(fontsize=8)
    _time_axis(ax2)
    n = len(t)
    return _result(
        "block_decomposition",
        "κ̂^diag and δ̂^cross vs t",
        f"Block decomposition (Table 5) at {n} measured t{'' if n > 1 else ' (one point)'}: diagonal norm, "
        "global norm, κ̂^pc and the Gaussian f_t(λ_max) (left, dotted red: 1); cross-patch coupling δ̂^cross, "
        "mean ± std over seeds (right).",
        fig,
    )


def _heatmap(ctx, P, col, title, name, caption, cmap, bar_label) -> FigureResult | None:
    """Patch × t map with t on its true scale (log when the measured t span over a decade): each column is
    centred on its measured t and ticked there. Signed values on a diverging map centred on 0 (white = 0)."""
    ts, ks, mat, lam = patch_matrix(ctx, P, col)
    ts = np.asarray(ts, dtype=np.float64)
    t_order = np.argsort(ts)
    ts = ts[t_order]
    order = np.argsort(lam)
    mat = mat[t_order][
        :, order
    ].T  # rows = patches sorted by lambda_k (bottom = smallest), columns = t ascending
    log = use_log_t(ts)
    fig = Figure(layout="constrained", figsize=(9, 4.5))
    ax = fig.add_subplot()
    fin = mat[np.isfinite(mat)]
    vlim = float(np.max(np.abs(fin))) if fin.size else 0.0
    vlim = vlim if vlim > 0 else 1.0  # all zero (the oracle's S = 0): one white map
    mesh = ax.pcolormesh(
        _cell_edges(ts, log),
        np.arange(len(ks) + 1) - 0.5,
        np.ma.masked_invalid(mat),
        cmap=cmap,
        norm=Normalize(vmin=-vlim, vmax=vlim),
        shading="flat",
    )
    if log:
        ax.set_xscale("log")
    time_ticks(ax, ts)
    ax.set_yticks(range(len(ks)))
    ax.set_yticklabels([f"k={int(ks[i])} λ={lam[i]:.3g}" for i in order], fontsize=6)
    ax.set_ylabel("patch k, sorted by λ_k (top = largest)")
    ax.set_xlabel(T_LABEL + (", log scale" if log else ""))
    ax.set_title(title)
    fig.colorbar(mesh, ax=ax, label=bar_label)
    scale = "log scale" if log else "linear scale"
    return _result(
        name,
        title,
        f"{caption} Columns sit at the {len(ts)} measured t on a {scale} (ticks = measured t).",
        fig,
    )


def fig_suppression(tables, ctx, inp) -> FigureResult | None:
    if "table_3" not in tables:
        return None
    S = patch_matrix(ctx, inp.patches, "suppression")[2]
    fin = S[np.isfinite(S)]
    share = float(np.mean(fin > 0)) if fin.size else math.nan
    what = (
        "every cell is 0 (white), the oracle's closed form S = 0"
        if fin.size and not np.any(fin)
        else f"S > 0 at {share:.0%} of cells"
    )
    return _heatmap(
        ctx,
        inp.patches,
        "suppression",
        "Suppression field S_k,t (patch × t)",
        "suppression_heatmap",
        "Directional suppression S_k,t (eq. 30), seed mean, on a diverging map centred on 0: red = S > 0 "
        f"(suppression), blue = S < 0, white = 0; {what}.",
        "RdBu_r",
        "S_k,t",
    )


def fig_slack(tables, ctx, inp) -> FigureResult | None:
    if "table_8" not in tables:
        return None
    P = inp.patches
    if "pc_slack" not in P:
        P = dict(P)
        P["pc_slack"] = 1.0 - P["diag_norm"] - P["coupling"]
    M = patch_matrix(ctx, P, "pc_slack")[2]
    fin = M[np.isfinite(M)]
    share = float(np.mean(fin < 0)) if fin.size else math.nan
    return _heatmap(
        ctx,
        P,
        "pc_slack",
        "(PC) slack 1 − κ̂_k^diag − C_k,t (patch × t)",
        "pc_slack_heatmap",
        "Per-patch (PC) slack (Table 8), seed mean, on a diverging map centred on 0: blue = satisfied "
        f"(slack > 0), red = violated (< 0), white = 0; violated at {share:.0%} of cells.",
        "RdBu",
        "(PC) slack",
    )


def _geometry_curves() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """lambda*(t) (eq. 27) of the paper's schedules over their full chains, from pipeline.geometry."""
    curves = []
    for name, sched in (
        ("linear (DDPM), full chain", linear_schedule(1000)),
        ("cosine s=0, full chain", cosine_schedule(1000, s_off=0.0)),
        ("cosine s=0.008, full chain", cosine_schedule(1000, s_off=0.008)),
    ):
        chain = full_chain(sched)
        curves.append((name, np.asarray(chain.timesteps), np.asarray(expansion_threshold(chain))))
    return curves
    return curves


def fig_lambda_star(tables, ctx, inp) -> FigureResult | None:
    if ctx.chain is None and not ctx.lambda_k:
        return None
    fig = Figure(layout="constrained", figsize=(7, 4.5))
    ax = fig.add_subplot()
    for name, t, ls in _geometry_curves():
        ax.plot(t[1:-1], ls[1:-1], lw=1, label=name)
    if ctx.chain is not None:
        ls = expansion_threshold(ctx.chain)
        ax.plot(ctx.chain.t, ls, "ko-", ms=3, lw=1.2, label=f"this run's chain ({len(ctx.chain)} steps)")
    if ctx.lambda_k:
        lam = np.array(list(ctx.lambda_k.values()))
        ax.axhspan(
            lam.min(), lam.max(), color="C2", alpha=0.25, label=f"λ_k band [{lam.min():.3g}, {lam.max():.3g}]"
        )
    ax.set_yscale("log")
    ax.set_ylabel(r"$\lambda^*(t)$ (eq. 27)")
    ax.set_title("Expansion threshold per schedule and the patch eigenvalue band")
    _time_axis(ax)
    ax.legend(fontsize=7)
    return _result(
        "lambda_star",
        "λ*(t) per schedule with the λ_k band",
        "Patch expansion threshold λ*(t) (eq. 27, log scale): patches above the curve are Gaussian-"
        "expanding at that step. Paper schedules from pipeline.geometry.",
        fig,
    )


def fig_proxy(tables, ctx, inp) -> FigureResult | None:
    t10 = tables.get("table_10")
    if t10 is None:
        return None
    rows = t10.rows
    t = np.array([r["t"] for r in rows], dtype=float)
    y = np.array([r["proxy"] for r in rows], dtype=float)
    ys = np.nan_to_num(np.array([r["proxy_std"] for r in rows], dtype=float))
    x = np.array([r["sqrt_alpha_bar"] for r in rows], dtype=float)
    fit = np.array([r["in_fit"] for r in rows], dtype=bool)
    fig = Figure(layout="constrained", figsize=(10, 4))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax1.errorbar(t, y, yerr=ys, fmt="o-", ms=3)
    ex = np.array([r["exact_deviation"] for r in rows], dtype=float)
    if np.isfinite(ex).any():
        ax1.plot(t, ex, "s--", ms=3, label="exact Δ_t")
        ax1.legend(fontsize=8)
    ax1.axvline(0.8 * ctx.T, color="k", ls="--", lw=0.8, label="t = 0.8T: fit window starts")
    ax1.legend(fontsize=8)
    ax1.set_ylabel(r"$E\|\hat\Delta_t\|_2$")
    ax1.set_title("proxy vs t")
    _time_axis(ax1)
    ok = (x > 0) & (y > 0)
    ax2.loglog(x[ok & fit], y[ok & fit], "ko", ms=4, label="t ≥ 0.8T (fit)")
    ax2.loglog(x[ok & ~fit], y[ok & ~fit], "o", color="0.6", ms=4, label="t < 0.8T")
    s = t10.summary
    if "ols_slope" in s and ok.any():
        xx = np.geomspace(x[ok].min(), x[ok].max(), 50)
        ax2.loglog(
            xx,
            np.exp(s["ols_intercept"]) * xx ** s["ols_slope"],
            "r-",
            label=f"OLS slope {s['ols_slope']:.3f} [{s['ols_ci_lo']:.3f}, {s['ols_ci_hi']:.3f}]",
        )
    ax2.set_xlabel(r"$\sqrt{\bar\alpha_t}$")
    ax2.set_ylabel(r"$E\|\hat\Delta_t\|_2$")
    ax2.set_title("log-log with OLS on the high-noise points")
    ax2.grid(alpha=0.3, which="both")
    ax2.legend(fontsize=8)
    return _result(
        "proxy_loglog",
        "Figure 1: proxy vs t and log-log fit",
        "Paired-difference proxy E‖Δ̂_t‖₂ (eq. 65; Table 10, the paper's Figure 1), mean ± std. Right: OLS "
        "of log proxy on log √ᾱ_t over t ≥ 0.8 T (black points); slope 1 is P5's O(√ᾱ_t).",
        fig,
    )


def fig_lambda_grid(tables, ctx, inp) -> FigureResult | None:
    if not ctx.lambda_k:
        return None
    ks = sorted(ctx.lambda_k)
    if ctx.grid and all(k in ctx.grid for k in ks):
        pos = {k: ctx.grid[k] for k in ks}
    else:
        w = int(round(math.sqrt(len(ks))))
        if w * w != len(ks):
            return None
        pos = {k: divmod(i, w) for i, k in enumerate(ks)}
    nr = max(p[0] for p in pos.values()) + 1
    nc = max(p[1] for p in pos.values()) + 1
    grid = np.full((nr, nc), math.nan)
    for k, (r, c) in pos.items():
        grid[r, c] = ctx.lambda_k[k]
    fig = Figure(layout="constrained", figsize=(5, 4.5))
    ax = fig.add_subplot()
    im = ax.imshow(grid, cmap="magma")
    for k, (r, c) in pos.items():
        ax.text(
            c,
            r,
            f"k={k}\n{ctx.lambda_k[k]:.3g}",
            ha="center",
            va="center",
            fontsize=7,
            color="w" if grid[r, c] < np.nanmean(grid) else "k",
        )
    ax.set_xticks(range(nc))
    ax.set_yticks(range(nr))
    ax.set_xlabel("patch column")
    ax.set_ylabel("patch row")
    ax.set_title(r"$\lambda_k$ (top patch eigenvalue) on the patch grid")
    fig.colorbar(im, ax=ax, label=r"$\lambda_k$")
    return _result(
        "lambda_grid",
        "λ_k on the patch grid",
        "Leading eigenvalue λ_k of each patch covariance at its grid position (row-major k); brighter = larger.",
        fig,
    )


def fig_release(tables, ctx, inp) -> FigureResult | None:
    rel = tables.get("release_times")
    if rel is None:
        return None
    lam = np.array([r["lambda_k"] for r in rel.rows])
    tr = np.array([r["t_rel"] for r in rel.rows])
    tp = np.array([r["t_rel_persistent"] for r in rel.rows])
    fig = Figure(layout="constrained", figsize=(6, 4))
    ax = fig.add_subplot()
    ax.plot(lam, tr, "o", label="t_rel (Def. 20)")
    ax.plot(lam, tp, "x", label="persistent release")
    s = rel.summary
    ax.set_title(
        f"release time vs λ_k: observed spread {s.get('observed_spread', math.nan):.3g}, "
        f"eq. (36) {s.get('predicted_spread_eq36', math.nan):.3g}",
        fontsize=9,
    )
    ax.set_xlabel(r"$\lambda_k$")
    ax.set_ylabel("release time t_k^rel")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _result(
        "release_times",
        "release time vs λ_k",
        "Per-patch release time (largest t with γ_k,t ≤ 0) against λ_k; Theorem 22(a) "
        "predicts lower-variance patches release at larger t.",
        fig,
    )


def fig_rho(tables, ctx, inp) -> FigureResult | None:
    t3, t9 = tables.get("table_3"), tables.get("table_9")
    if t3 is None and t9 is None:
        return None
    fig = Figure(layout="constrained", figsize=(7, 4))
    ax = fig.add_subplot()
    for tab, lab in (
        (t3, r"$\rho(\lambda_k, S_{k,t})$ (Table 3)"),
        (t9, r"$\rho(\lambda_k, \hat\kappa^{diag}_{k,t})$ (Table 9)"),
    ):
        if tab is not None:
            ax.plot([r["t"] for r in tab.rows], [r["rho"] for r in tab.rows], "o-", ms=3, label=lab)
    ax.axhline(0, color="k", lw=0.8, label="ρ = 0")
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("Spearman ρ across patches")
    _time_axis(ax)
    ax.legend(fontsize=8)
    return _result(
        "rho_vs_t",
        "Spearman ρ vs t (Tables 3 and 9)",
        "Rank correlations across patches per measured timestep (undefined points, e.g. S = 0 on the oracle, "
        "are not drawn).",
        fig,
    )


def fig_samples(tables, ctx, inp: AnalysisInputs) -> FigureResult | None:
    if not inp.trajectories:
        return None
    trajs = inp.trajectories[:8]
    fig = Figure(layout="constrained", figsize=(1.6 * len(trajs), 1.9))
    for i, tr in enumerate(trajs):
        x = load_npz(tr.path)["x"]
        img = np.asarray(x[-1], dtype=np.float64)
        if img.ndim == 4:
            img = img[0]
        img = np.clip((np.moveaxis(img, 0, -1) + 1.0) / 2.0, 0, 1)
        ax = fig.add_subplot(1, len(trajs), i + 1)
        ax.imshow(
            img[..., 0] if img.shape[-1] == 1 else img,
            cmap="gray" if img.shape[-1] == 1 else None,
            interpolation="nearest",  # upscaled: every model pixel a visible square, no smoothing
        )
        ax.set_title(f"seed {tr.seed}", fontsize=8)
        ax.axis("off")
    h, w = img.shape[:2]
    return _result(
        "samples",
        "final samples",
        f"Final DDIM samples x_0 of the trajectories stage (first {len(trajs)} seeds), {w}×{h} pixels each, "
        "upscaled with nearest-neighbour so each pixel is a visible square.",
        fig,
    )


FIGURES: list[Callable[..., FigureResult | None]] = [
    fig_kappa_t,
    fig_block,
    fig_suppression,
    fig_slack,
    fig_lambda_star,
    fig_proxy,
    fig_lambda_grid,
    fig_release,
    fig_rho,
    fig_samples,
]


def build_figures(tables, ctx: AnalysisContext, inp: AnalysisInputs) -> list[FigureResult]:
    out = []
    for fn in FIGURES:
        r = fn(tables, ctx, inp)
        if r is not None:
            out.append(r)
    return out
