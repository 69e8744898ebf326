"""Table 6 (§7.4): mean attention entropy H(A_t) against the cross-patch coupling δ̂^cross_t, with the rank
correlation the paper prints and the same association after the shared time trend is removed (P3)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.analysis import inference as inf
from pipeline.analysis import paper_values as pv
from pipeline.analysis import stats
from pipeline.analysis.context import AnalysisContext, groups, mean_std
from pipeline.analysis.evidence import Comparison, Kind, Tolerance
from pipeline.analysis.inputs import AnalysisInputs
from pipeline.analysis.tables.kappa import block_per_seed_step
from pipeline.analysis.tables.spec import TableResult, TableSpec, paper_rows, scored

PERMUTATION_SEED = 0


@dataclass
class Table6Summary:
    spearman_rho: float = math.nan
    spearman_p_t_approx: float = math.nan
    permutation_p: float = math.nan
    permutation_exact: bool = False
    n: int = 0
    growth_factor: float = math.nan
    # the association beyond the time course both series share (what P3 tests)
    detrended_rho: float = math.nan
    detrended_p: float = math.nan
    detrended_n: int = 0
    detrended_method: str = ""


def _pairs(A, vals) -> tuple[list, list, list]:
    """(t, H, δ̂^cross) per (seed, t) where both exist (seedless attention rows pair with the seed mean)."""
    cross = {}
    for (seed, _), d in vals.items():
        if "delta_cross" in d:
            cross[(seed, int(round(d["t"])))] = d["delta_cross"]
    ts, hs, ds = [], [], []
    if "seed" in A:
        for i in range(len(A["t"])):
            key = (int(A["seed"][i]), int(A["t"][i])) if math.isfinite(A["seed"][i]) else None
            if key in cross and math.isfinite(A["entropy"][i]):
                ts.append(key[1])
                hs.append(float(A["entropy"][i]))
                ds.append(cross[key])
    return ts, hs, ds


def table_6(inp: AnalysisInputs, ctx: AnalysisContext) -> TableResult | None:
    """Mean H(A_t) vs δ̂^cross_t per t; Spearman with the exact permutation p (§7.4); detrended association."""
    A = inp.attention
    blk = block_per_seed_step(inp.global_, inp.patches)
    if A is None or blk is None:
        return None
    cross_by_t: dict[int, list[float]] = {}
    for d in blk["values"].values():
        if "delta_cross" in d:
            cross_by_t.setdefault(int(round(d["t"])), []).append(d["delta_cross"])
    rows = []
    for (t,), idx in sorted(groups(A, ("t",)), key=lambda g: -g[0][0]):
        if int(t) not in cross_by_t:
            continue
        h, hs, _ = mean_std(A["entropy"][idx])
        c, cs, n = mean_std(np.array(cross_by_t[int(t)]))
        rows.append(
            {
                "t": int(t),
                "regime": ctx.regime(t),
                "entropy_nats": h,
                "entropy_std": hs,
                "delta_cross": c,
                "delta_cross_std": cs,
                "n_seeds": n,
            }
        )
    if not rows:
        return None
    H = np.array([r["entropy_nats"] for r in rows])
    D = np.array([r["delta_cross"] for r in rows])
    sp = stats.spearman(H, D)
    perm = stats.spearman_permutation_test(H, D, seed=PERMUTATION_SEED)
    s = Table6Summary(
        spearman_rho=perm.rho,
        spearman_p_t_approx=sp.p_value,
        permutation_p=perm.p_value,
        permutation_exact=perm.exact,
        n=perm.n,
        growth_factor=float(D.max() / D.min()) if np.all(D > 0) else math.nan,
    )
    ts, hs, ds = _pairs(A, blk["values"])
    if len(ts) >= 4 and len(set(ts)) < len(ts):
        a = inf.within_strata_association(hs, ds, ts, seed=PERMUTATION_SEED)
    else:
        a = inf.partial_spearman(H, D, [r["t"] for r in rows])
    s.detrended_rho, s.detrended_p, s.detrended_n, s.detrended_method = a.rho, a.p_value, a.n, a.method
    res = TableResult.of_rows(
        "table_6",
        "Attention entropy H(A_t) vs cross-patch coupling delta_t^cross",
        "jacobian/attention.csv: entropy per (seed, t); delta_cross as in Table 5",
        rows,
        s,
        paper=pv.TABLE_6,
    )
    how = f"exact over all {perm.n_permutations} orderings" if perm.exact else "a seeded Monte Carlo estimate"
    res.notes += [
        f"Permutation p is {how} (two-sided: P(|rho_perm| >= |rho_obs|)).",
        "Both series move with t, so their rank correlation across t carries the time course they share. "
        f"Detrended: {a.method}: rho = {a.rho:.3g}, p = {a.p_value:.3g} (raw rho {a.raw_rho:.3g}).",
    ]
    cmp = paper_rows(pv.TABLE_6, "entropy_nats", rows, tolerance=lambda _: Tolerance(rel=0.05))
    cmp += paper_rows(
        pv.TABLE_6,
        "delta_cross",
        rows,
        tolerance=lambda _: Tolerance(rel=0.5),
        kind=Kind.REDERIVED,
        derived_from="Table 5's delta_cross",
    )
    sc = pv.TABLE_6.scalars
    cmp += [
        Comparison(
            "Table 6",
            "Spearman rho(H, delta_cross)",
            sc["spearman_rho"],
            perm.rho,
            tolerance=Tolerance(abs=0.2),
        ),
        Comparison(
            "Table 6",
            "permutation p",
            sc["permutation_p"],
            perm.p_value,
            Kind.REDERIVED,
            Tolerance(abs=0.01),
            "rho and n (the p of a perfect ranking on n points is 2/n!)",
            "paper's p does not equal the exact 2/8! = 4.96e-5",
        ),
    ]
    res.comparison = scored(cmp, ctx)
    return res


SPEC = TableSpec(
    table_6,
    "attention entropy vs δ̂^cross",
    "jacobian/attention.csv and delta_cross (global.csv or patches.csv)",
)
