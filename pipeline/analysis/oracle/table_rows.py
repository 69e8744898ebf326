"""The reproduced tables as the report shows them, against the block-diagonal closed forms (S = 0, C = 0,
⟨v_k,[JΦ_t]_kk v_k⟩ = f_t(λ_k)): Tables 3, 8, 9 and 11 re-derive from the measured columns, so their rows
are checks of the table code, counted apart from the measurement's own; Table 3's exact S (eq. 30) is a
measurement of its own, checked against an independent linear solve."""

from __future__ import annotations

import numpy as np

from pipeline.analysis import stats
from pipeline.analysis.context import AnalysisContext
from pipeline.analysis.evidence import Kind
from pipeline.analysis.inputs import AnalysisInputs, has_values
from pipeline.analysis.oracle import closed_forms as cf
from pipeline.analysis.oracle.checks import OracleCheckRow, Rule, judge
from pipeline.analysis.oracle.rows import f_at, rules
from pipeline.analysis.tables import sampler_chain, table_3, table_8, table_9, table_11
from pipeline.geometry import expansion_function


def table_rows(inp: AnalysisInputs, ctx: AnalysisContext) -> list[OracleCheckRow]:
    if not ctx.lambda_k or ctx.chain is None:
        return []
    exact, _, _ = rules(ctx)
    out: list[OracleCheckRow] = []
    t3 = table_3(inp, ctx)
    if t3 is not None:
        v = [r[c] for r in t3.rows for c in ("S_mean", "S_min", "S_max")]
        f1 = [abs(f_at(ctx, r["t"]) - 1).max() for r in t3.rows for _ in range(3)]
        out.append(
            judge(
                "Table 3 S_mean, S_min, S_max",
                "0 (S_k,t = 0, Thm. 17)",
                "table_3",
                v,
                0.0,
                f1,
                exact,
                Kind.REDERIVED,
                derived_from="patches.csv suppression",
            )
        )
    out += exact_suppression_rows(inp, ctx)
    t8 = table_8(inp, ctx)
    if t8 is not None and t8.summary.slack_reading == "rayleigh":
        got, want = [], []
        for r in t8.rows:
            f = f_at(ctx, r["t"])
            got += [r["mean_slack"], r["min_slack"], r["kappa_diag_min"], r["kappa_diag_max"]]
            want += [np.mean(1.0 - f), np.min(1.0 - f), np.min(f), np.max(f)]
        triv = [0.0, 0.0, 1.0, 1.0] * len(t8.rows)
        out.append(
            judge(
                "Table 8 mean/min slack, κ^diag min/max (Rayleigh reading)",
                "mean_k / min_k (1 − f_t(λ_k)); min_k / max_k f_t(λ_k) (C = 0)",
                "table_8",
                got,
                want,
                triv,
                exact,
                Kind.REDERIVED,
                derived_from="patches.csv rayleigh and coupling",
            )
        )
    out += _table_9(inp, ctx)
    out += _table_11(inp, ctx)
    return out


def _table_9(inp, ctx) -> list[OracleCheckRow]:
    t9 = table_9(inp, ctx)
    if t9 is None or t9.summary.kappa_diag_reading != "rayleigh":
        return []
    lam = [ctx.lambda_k[k] for k in sorted(ctx.lambda_k)]
    got, want, skipped = [], [], 0
    for r in t9.rows:
        f = f_at(ctx, r["t"])
        gaps = np.diff(np.sort(f))
        # ranks of f_t(λ_k) closer than round-off are not measurable: such t are left out
        if len(gaps) and np.min(gaps) <= 100 * ctx.roundoff * max(1.0, float(np.max(np.abs(f)))):
            skipped += 1
            continue
        got.append(r["rho"])
        want.append(stats.spearman(lam, f).rho)
    row = judge(
        "Table 9 ρ(λ_k, κ^diag_k,t) (Rayleigh reading)",
        "Spearman ρ(λ_k, f_t(λ_k)) = 1 (f_t increasing, Thm. 17(d))",
        "table_9",
        got,
        want,
        0.0,
        Rule(0.0, 1e-12, trivial="0"),
        Kind.REDERIVED,
        derived_from="patches.csv rayleigh",
    )
    row.diagnostic = f"{skipped} t left out: f_t(λ_k) ties within round-off" if skipped else ""
    return [row]


def _table_11(inp, ctx) -> list[OracleCheckRow]:
    t11 = table_11(inp, ctx)
    chain, _ = sampler_chain(inp, ctx)
    if t11 is None or chain is None:
        return []
    lam = np.array([r["lambda_k"] for r in t11.rows])
    closed = np.log(expansion_function(chain, lam)).mean(axis=0)
    exact = Rule(1e-3, 10 * ctx.roundoff, trivial="0")
    kinds = {
        "lyap_pred": (Kind.REDERIVED, "patches.csv suppression"),
        "lyap_pred_sparse": (Kind.REDERIVED, "patches.csv suppression at the representative steps"),
        "lyap_gauss": (Kind.IDENTITY, "pipeline.geometry.expansion_function on both sides"),
        "lyap_hat": (Kind.REDERIVED, "lyapunov.csv lyap_hat"),
    }
    out = []
    for col, (kind, src) in kinds.items():
        if col not in t11.columns:
            continue
        v = np.array([r[col] for r in t11.rows], dtype=np.float64)
        if np.isfinite(v).any():
            out.append(
                judge(
                    f"Table 11 {col}",
                    "Λ(λ_k) = mean_t log f_t(λ_k) (S = 0: g_k,t = f_t, eq. 48-49)",
                    "table_11",
                    v,
                    closed,
                    0.0,
                    exact,
                    kind,
                    derived_from=src,
                )
            )
    return out


def exact_suppression_rows(inp: AnalysisInputs, ctx: AnalysisContext) -> list[OracleCheckRow]:
    """patches.csv exact_suppression (Table 3's rho_exact input) against a linear solve with Σ₀."""
    P = inp.patches
    if P is None or not has_values(P, "exact_suppression"):
        return []
    expected = cf.exact_suppression(ctx, inp)
    if expected is None:
        return []
    want = np.array(
        [
            expected[float(t)][int(k)] if float(t) in expected else np.nan
            for t, k in zip(P["t"], P["k"], strict=True)
        ]
    )
    exact, _, _ = rules(ctx)
    row = judge(
        "exact S_k,t vs the full-Σ₀ surrogate (eq. 29-30; Table 3 rho_exact)",
        "ρ_k^N(full Σ₀) − f_t(λ_k), by a linear solve",
        "patches.csv exact_suppression",
        P["exact_suppression"],
        want,
        0.0,
        Rule(exact.rel, exact.floor, trivial="0 (the block surrogate)"),
    )
    row.diagnostic = f"checked at {len(expected)} of {len(ctx.chain)} t (one n × n solve each)"
    return [row]
