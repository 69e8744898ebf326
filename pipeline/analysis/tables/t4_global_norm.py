"""Table 4 (§7.4): the global norm κ̂_t per DDIM step (converged value, the paper's power iteration beside
it), ŝ = ∏_t κ̂_t per seed with the outlier rule, and the tests of "κ̂_t grows progressively" (P3)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pipeline.analysis import inference as inf
from pipeline.analysis import paper_values as pv
from pipeline.analysis import stats
from pipeline.analysis.context import AnalysisContext, groups, mean_std, nanmax, nanmin
from pipeline.analysis.evidence import Tolerance
from pipeline.analysis.inputs import AnalysisInputs, has_values
from pipeline.analysis.plotting import ONE_LABEL, FigureResult, count_t, new_figure, result, time_axis
from pipeline.analysis.tables.kappa import converged_kappa, pi_short
from pipeline.analysis.tables.spec import FigureSpec, TableResult, TableSpec, paper_rows, paper_scalar, scored

FDR = 0.05


@dataclass
class Table4Summary:
    kappa_route: str = ""
    n_seeds: int = 0
    n_steps: int = 0
    n_pi_points: int = 0
    n_pi_short: int = 0  # (seed, step) points where the paper's power iteration is short of the converged κ̂
    median_s_hat: float = math.nan
    median_s_hat_unflagged: float = math.nan
    flagged_seeds: list[int] = field(default_factory=list)
    kappa_max_mean: float = math.nan
    kappa_min_mean: float = math.nan
    # P3: does κ̂_t grow as t falls?
    trend_rho: float = math.nan  # Spearman ρ(t, seed-mean κ̂_t): < 0 means κ̂ grows down the chain
    trend_p: float = math.nan
    trend_interval: str = ""
    n_pairs: int = 0
    n_sig_falls: int = 0  # pairs t_a > t_b where κ̂ falls significantly going down the chain
    largest_fall: str = ""
    fall_test: str = ""


def _seed_table(G, col: str, steps_all) -> tuple[list[dict], list[str], set[int]]:
    seeds = np.unique(G["seed"][np.isfinite(G["seed"])]).astype(int)
    rows = []
    for s in seeds:
        m = G["seed"] == s
        k = G[col][m]
        complete = len(np.unique(G["step"][m])) == len(steps_all) and bool(np.all(np.isfinite(k)))
        s_hat = float(np.prod(k[np.isfinite(k)])) if np.any(np.isfinite(k)) else math.nan
        rows.append(
            {
                "seed": int(s),
                "n_steps": int(np.count_nonzero(np.isfinite(k))),
                "complete": complete,
                "s_hat": s_hat,
            }
        )
    notes, flagged = [], set()
    s_vals = np.array([r["s_hat"] for r in rows])
    if len(rows) >= 3 and np.all(s_vals > 0):
        out = stats.flag_log_outliers(s_vals)
        for r, z, fl in zip(rows, out.modified_z, out.flagged, strict=True):
            r.update(log_s_hat=float(np.log(r["s_hat"])), modified_z=float(z), outlier=bool(fl))
            if fl:
                flagged.add(r["seed"])
        notes.append("Outlier rule: " + stats.OutlierResult.rule)
    else:
        for r in rows:
            r.update(
                log_s_hat=float(np.log(r["s_hat"])) if r["s_hat"] > 0 else math.nan,
                modified_z=math.nan,
                outlier=False,
            )
        notes.append("Outlier rule not applied: it needs >= 3 seeds with s_hat > 0.")
    if not all(r["complete"] for r in rows):
        notes.append("Some seeds lack steps or values: their s_hat is the product over the steps present.")
    return rows, notes, flagged


def _step_rows(G, ctx, route, short, flagged) -> list[dict]:
    rows = []
    for (step,), idx in groups(G, ("step",)):
        t = float(np.nanmedian(G["t"][idx]))
        k = G["kappa"][idx]
        keep = np.array([int(s) not in flagged for s in G["seed"][idx]])
        mean, std, n = mean_std(k)
        mean_x, std_x, n_x = mean_std(k[keep])
        row = {
            "step": int(step),
            "t": int(t),
            "regime": ctx.regime(t),
            "n_seeds": n,
            "mean": mean,
            "std": std,
            "min": nanmin(k),
            "max": nanmax(k),
            "n_seeds_unflagged": n_x,
            "mean_unflagged": mean_x,
            "std_unflagged": std_x,
            "route": "+".join(sorted(set(route[idx]) - {""})),
        }
        if has_values(G, "lanczos_residual"):
            lr = G["lanczos_residual"][idx][route[idx] == "lanczos"]
            row["lanczos_residual_max"] = nanmax(lr) if len(lr) else math.nan
        if has_values(G, "kappa_pi"):
            row["mean_pi"] = mean_std(G["kappa_pi"][idx])[0]
            row["n_pi_short"] = int(np.count_nonzero(short[idx]))
        rows.append(row)
    return rows


def growth_tests(G, rows: list[dict], s: Table4Summary) -> None:
    """κ̂_t grows down the chain: Spearman ρ(t, κ̂_t) over the measured t, and every pair t_a > t_b tested
    for a significant fall κ̂(t_b) < κ̂(t_a) (paired over seeds, BH over all pairs)."""
    t = np.array([r["t"] for r in rows], dtype=float)
    rc = inf.spearman_with_interval(t, [r["mean"] for r in rows])
    s.trend_rho, s.trend_p, s.trend_interval = rc.rho, rc.p_value, rc.interval.text()
    seeds = np.unique(G["seed"][np.isfinite(G["seed"])]).astype(int)
    K = np.full((len(rows), len(seeds)), math.nan)
    by_t = {r["t"]: i for i, r in enumerate(rows)}
    for i in range(len(G["t"])):
        ti, seed = by_t.get(int(G["t"][i])), G["seed"][i]
        if ti is not None and math.isfinite(seed):
            K[ti, np.searchsorted(seeds, int(seed))] = G["kappa"][i]
    order = np.argsort(-t)  # down the chain: t decreasing
    K, t = K[order], t[order]
    a, b = np.triu_indices(len(t), k=1)  # a before b in the chain: t_a > t_b
    D = K[b] - K[a]  # growth going down the chain, per seed
    s.n_pairs = len(a)
    if len(seeds) < 2 or not len(a):
        s.fall_test = f"not run: needs >= 2 seeds (has {len(seeds)})"
        return
    tt = inf.t_test(D, axis=-1)
    q = inf.benjamini_hochberg(tt.p_value)
    falls = np.flatnonzero(np.isfinite(q) & (q < FDR) & (tt.mean < 0))
    s.n_sig_falls = len(falls)
    s.fall_test = (
        f"paired t-test over {len(seeds)} seeds of κ̂(t_b) − κ̂(t_a) for every pair t_a > t_b "
        f"({len(a)} pairs), Benjamini–Hochberg q < {FDR}"
    )
    if len(falls):
        j = falls[np.argmin(tt.mean[falls])]
        i_a, i_b = a[j], b[j]
        s.largest_fall = (
            f"κ̂ falls from {np.nanmean(K[i_a]):.4g} at t = {t[i_a]:g} to {np.nanmean(K[i_b]):.4g} at t = "
            f"{t[i_b]:g} (q = {q[j]:.2g})"
        )


def table_4(inp: AnalysisInputs, ctx: AnalysisContext) -> TableResult | None:
    """κ̂_t per DDIM step (mean, std over seeds), ŝ per seed, outlier flags (§7.4)."""
    conv = converged_kappa(inp.global_)
    if conv is None:
        return None
    G = dict(inp.global_)
    G["kappa"], route, route_txt = conv
    short = pi_short(G, G["kappa"])
    steps_all = np.unique(G["step"][np.isfinite(G["step"])]).astype(int)
    seed_rows, notes, flagged = _seed_table(G, "kappa", steps_all)
    rows = _step_rows(G, ctx, route, short, flagged)
    s_vals = np.array([r["s_hat"] for r in seed_rows])
    fin = s_vals[np.isfinite(s_vals)]
    unfl = np.array([r["s_hat"] for r in seed_rows if not r["outlier"] and math.isfinite(r["s_hat"])])
    s = Table4Summary(
        kappa_route=route_txt,
        n_seeds=len(seed_rows),
        n_steps=len(steps_all),
        n_pi_points=int(np.count_nonzero(np.isfinite(G["kappa_pi"]))) if has_values(G, "kappa_pi") else 0,
        n_pi_short=int(np.count_nonzero(short)),
        median_s_hat=float(np.median(fin)) if len(fin) else math.nan,
        median_s_hat_unflagged=float(np.median(unfl)) if len(unfl) else math.nan,
        flagged_seeds=sorted(flagged),
        kappa_max_mean=nanmax([r["mean"] for r in rows]),
        kappa_min_mean=nanmin([r["mean"] for r in rows]),
    )
    growth_tests(G, rows, s)
    res = TableResult.of_rows(
        "table_4",
        "Global spectral norm kappa_t per DDIM step; s_hat = prod_t kappa_t per seed",
        f"jacobian/global.csv: converged kappa_t per (seed, step) ({route_txt}); kappa_pi beside it",
        rows,
        s,
        notes=notes,
        paper=pv.TABLE_4,
    )
    notes.append(
        "mean/std/min/max and s_hat use the converged kappa_t: the dense SVD of J Phi_t where it was built "
        "(exact), else Golub-Kahan-Lanczos (lanczos_residual_max: its Ritz value lies within that of a "
        "singular value), else power iteration. mean_pi is the paper's protocol (PowerIter, K_PI steps, "
        "§7.1), a lower bound; n_pi_short counts seeds where it falls short of the converged value by more "
        "than its own stated tolerance (relative last-step change kappa_pi_change)."
    )
    res.extra["table_4_seeds"] = seed_rows
    cmp = paper_rows(
        pv.TABLE_4,
        "mean",
        rows,
        "mean_unflagged",
        label="mean kappa",
        tolerance=lambda p: Tolerance(abs=max(2 * p["std"], 0.005), why="2 paper std or 0.005"),
    )
    product, quantity = "the per-step kappa_t (a product of them)", "median s_hat (unflagged seeds)"
    ours = s.median_s_hat_unflagged
    cmp.append(paper_scalar(pv.TABLE_4, "median_s_hat", ours, Tolerance(rel=0.5), product, quantity=quantity))
    res.comparison = scored(cmp, ctx)
    return res


@FigureSpec.of_table("table_4", "kappa_t")
def fig_kappa_t(t4: TableResult, ctx, inp) -> FigureResult | None:
    G = dict(inp.global_)
    G["kappa"] = converged_kappa(G)[0]
    flagged = set(t4.summary.flagged_seeds)
    fig = new_figure((7, 4))
    ax = fig.add_subplot()
    for seed in np.unique(G["seed"]).astype(int):
        m = G["seed"] == seed
        ax.plot(
            G["t"][m],
            G["kappa"][m],
            lw=0.8,
            alpha=0.5,
            ls="--" if seed in flagged else "-",
            label=f"seed {seed} (flagged outlier)" if seed in flagged else None,
        )
    t = np.array([r["t"] for r in t4.rows])
    mean = np.array([r["mean"] for r in t4.rows])
    std = np.nan_to_num(np.array([r["std"] for r in t4.rows]))
    ax.plot(t, mean, "ko-", ms=3, lw=2, label="converged κ̂_t, mean over seeds")
    ax.fill_between(t, mean - std, mean + std, color="k", alpha=0.15, label="± std")
    pi = np.array([r.get("mean_pi", math.nan) for r in t4.rows], dtype=float)
    if np.isfinite(pi).any():
        ax.plot(t, pi, "C1x:", ms=4, label="paper protocol: K_PI power iteration (mean)")
    ax.axhline(1.0, color="r", lw=0.8, ls=":", label=ONE_LABEL)
    ax.set_ylabel(r"$\hat\kappa_t=\|J_x\Phi_t\|_2$")
    ax.set_title(f"Global spectral norm per step ({t4.summary.kappa_route})")
    time_axis(ax)
    ax.legend(fontsize=8)
    return result(
        "kappa_t",
        "κ̂_t vs t",
        f"Converged global per-step spectral norm κ̂_t ({t4.summary.kappa_route}) at {count_t(len(t))}, per "
        f"seed and mean ± std over {t4.summary.n_seeds} seeds (Table 4); crosses: the paper's K_PI power "
        "iteration beside it (a lower bound). Dashed: seeds flagged by the outlier rule (kept in the mean). "
        "Dotted red: κ̂ = 1.",
        fig,
    )


SPEC = TableSpec(
    table_4,
    "global κ̂_t per step",
    "jacobian/global.csv with kappa_dense, kappa_lanczos or kappa_pi",
)
