"""The checks of a block-diagonal oracle run, each a row of data: every RAW estimator the stage ran against
its closed form (the dense and JVP routes exactly, the iterative ones as lower bounds within a tolerance
relative to |f_t − 1|, Hutchinson within its stated accuracy), and what the tables re-derive from them."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as _sps

from pipeline.analysis.context import AnalysisContext, f_t_matrix, patch_matrix
from pipeline.analysis.evidence import Kind
from pipeline.analysis.inputs import AnalysisInputs, Table, has_values
from pipeline.analysis.oracle import closed_forms as cf
from pipeline.analysis.oracle.checks import PAPER_PROTOCOL, OracleCheckRow, Rule, judge, shortfall_note
from pipeline.analysis.tables.t7_coupling_distance import hutchinson_rel_se
from pipeline.geometry import expansion_function


def rules(ctx: AnalysisContext) -> tuple[Rule, Rule, Rule]:
    """(exact, iterative lower bound, structural zero) for this run's float floor."""
    floor = 10 * ctx.roundoff
    return (
        Rule(1e-3, floor),
        Rule(0.1, floor, bound="lower"),
        Rule(0.0, floor, trivial="0"),
    )


def _methods(G: Table | None, T: Table) -> np.ndarray:
    """global.csv's block_method of each row's (seed, t) ('' where unknown)."""
    if G is None or "block_method" not in G:
        return np.full(len(T["t"]), "", dtype=object)
    by = {(int(s), int(t)): str(m) for s, t, m in zip(G["seed"], G["t"], G["block_method"], strict=True)}
    seeds = T["seed"] if "seed" in T else np.zeros(len(T["t"]))
    return np.array([by.get((int(s), int(t)), "") for s, t in zip(seeds, T["t"], strict=True)], dtype=object)


def patch_rows(inp: AnalysisInputs, ctx: AnalysisContext) -> list[OracleCheckRow]:
    P = inp.patches
    if P is None or not ctx.lambda_k or ctx.chain is None:
        return []
    exact, _, zero = rules(ctx)
    f = cf.f_per_row(ctx, P)
    out = []
    if has_values(P, "rayleigh"):
        out.append(
            judge(
                "⟨v_k,[JΦ_t]_kk v_k⟩ (eq. 32)",
                "f_t(λ_k)",
                "patches.csv rayleigh",
                P["rayleigh"],
                f,
                1.0,
                exact,
            )
        )
    if has_values(P, "suppression"):
        out.append(
            judge(
                "S_k,t (eq. 30)",
                "0 exactly (the score IS the surrogate)",
                "patches.csv suppression",
                P["suppression"],
                0.0,
                f - 1.0,
                exact,
                Kind.REDERIVED,
                derived_from="rayleigh (S = f_t − rayleigh)",
            )
        )
    if has_values(P, "f_t"):
        out.append(
            judge(
                "f_t column",
                "eq. (26) on the chain's ᾱ",
                "patches.csv f_t",
                P["f_t"],
                f,
                1.0,
                exact,
                Kind.IDENTITY,
                derived_from="pipeline.geometry.expansion_function on both sides",
            )
        )
    out += _diag_norm_rows(inp, ctx, f)
    if has_values(P, "diag_norm_pi"):
        out.append(
            _paper_estimator(
                "‖[JΦ_t]_kk‖_op by block power iteration (K = 10, §7.4)",
                "patches.csv diag_norm_pi",
                P["diag_norm_pi"],
                f,
                P["t"],
                ctx,
            )
        )
    if has_values(P, "coupling"):
        out.append(
            judge(
                "C_k,t (eq. 16)",
                "0 (cross blocks vanish)",
                "patches.csv coupling",
                P["coupling"],
                0.0,
                0.0,
                zero,
                Kind.STRUCTURAL,
                diagnostic=f"measured at {len(np.unique(P['t'][np.isfinite(P['coupling'])]))} t",
            )
        )
    if has_values(P, "pc_slack"):
        out.append(
            judge(
                "(PC) slack",
                "1 − f_t(λ_k)",
                "patches.csv pc_slack",
                P["pc_slack"],
                1.0 - f,
                0.0,
                exact,
                Kind.REDERIVED,
                derived_from="diag_norm and coupling",
            )
        )
    return out


def _diag_norm_rows(inp: AnalysisInputs, ctx: AnalysisContext, f: np.ndarray) -> list[OracleCheckRow]:
    """patches.csv diag_norm: exact where the blocks were dense; elsewhere the stored value is max(Krylov, |ρ|),
    which on the oracle is the exact Rayleigh quotient again: re-derived (the raw Krylov norms are in blocks)."""
    P = inp.patches
    if not has_values(P, "diag_norm"):
        return []
    exact, _, _ = rules(ctx)
    out: list[OracleCheckRow] = []
    dense = _methods(inp.global_, P) == "dense"
    if dense.any():
        out.append(
            judge(
                "‖[JΦ_t]_kk‖_op, dense blocks",
                "f_t(λ_k)",
                "patches.csv diag_norm",
                np.where(dense, P["diag_norm"], np.nan),
                f,
                1.0,
                exact,
            )
        )
    if (~dense).any():
        out.append(
            judge(
                "‖[JΦ_t]_kk‖_op, stored (max of block Krylov and |ρ|)",
                "f_t(λ_k)",
                "patches.csv diag_norm",
                np.where(~dense, P["diag_norm"], np.nan),
                f,
                1.0,
                exact,
                Kind.REDERIVED,
                derived_from="rayleigh (max(Krylov, |ρ|) = |ρ| on the oracle)",
            )
        )
    return out


def _paper_estimator(quantity, name, measured, closed, t, ctx) -> OracleCheckRow:
    """A paper-protocol power iteration: a lower bound, judged within 0.1·|f − 1|; short = a finding."""
    _, it, _ = rules(ctx)
    row = judge(quantity, "the closed form", name, measured, closed, 1.0, it, role=PAPER_PROTOCOL)
    row.diagnostic = shortfall_note(measured, closed, t)
    return row


def block_rows(inp: AnalysisInputs, ctx: AnalysisContext) -> list[OracleCheckRow]:
    """blocks.csv: the raw block norms (k = j against f_t(λ_k) and the Frobenius closed form, k ≠ j against 0)."""
    B = inp.blocks
    if B is None or ctx.chain is None or not ctx.lambda_k:
        return []
    exact, it, zero = rules(ctx)
    diag, off = B["k"] == B["j"], B["k"] != B["j"]
    f = cf.f_per_row(ctx, B)
    method = _methods(inp.global_, B)
    out = []
    if has_values(B, "op_norm"):
        for label, m, rule in (
            ("dense", method == "dense", exact),
            ("block Krylov (K steps)", method != "dense", it),
        ):
            sel = diag & m
            if sel.any():
                out.append(
                    judge(
                        f"raw ‖[JΦ_t]_kk‖_op, {label}",
                        "f_t(λ_k)",
                        "blocks.csv op_norm (k = j)",
                        np.where(sel, B["op_norm"], np.nan),
                        f,
                        1.0,
                        rule,
                        diagnostic=_iters(inp.global_) if rule is it else "",
                    )
                )
        out.append(
            judge(
                "‖[JΦ_t]_kj‖_op, k ≠ j",
                "0",
                "blocks.csv op_norm (k ≠ j)",
                np.where(off, B["op_norm"], np.nan),
                0.0,
                0.0,
                zero,
                Kind.STRUCTURAL,
            )
        )
    frob = cf.frobenius_per_row(ctx, inp, B)
    triv = cf.identity_frobenius(inp)
    if has_values(B, "frob_norm"):
        if frob is not None and (diag & (method == "dense")).any():
            sel = diag & (method == "dense")
            out.append(
                judge(
                    "‖[JΦ_t]_kk‖_F, dense",
                    "sqrt(Σ_i f_t(μ_k,i)²)",
                    "blocks.csv frob_norm (k = j)",
                    np.where(sel, B["frob_norm"], np.nan),
                    frob,
                    triv,
                    exact,
                )
            )
        out.append(
            judge(
                "‖[JΦ_t]_kj‖_F, k ≠ j",
                "0",
                "blocks.csv frob_norm (k ≠ j)",
                np.where(off, B["frob_norm"], np.nan),
                0.0,
                0.0,
                zero,
                Kind.STRUCTURAL,
            )
        )
    if has_values(B, "op_norm_pi"):
        out.append(
            _paper_estimator(
                "raw ‖[JΦ_t]_kk‖_op by block power iteration (K = 10, §7.4)",
                "blocks.csv op_norm_pi (k = j)",
                np.where(diag, B["op_norm_pi"], np.nan),
                f,
                B["t"],
                ctx,
            )
        )
    if has_values(B, "frob_norm_hutch") and frob is not None:
        out.append(_hutchinson(inp, B, diag, frob, triv, ctx))
    return out


def _hutchinson(inp, B, diag, frob, triv, ctx) -> OracleCheckRow:
    """Hutchinson ‖·‖_F with p probes, within its stated accuracy: z·sqrt(1/(2p))·closed per row, z the
    two-sided 0.1 % Bonferroni quantile over the rows compared."""
    p = float((inp.jacobian_config.get("measure") or {}).get("frob_probes") or math.nan)
    G = inp.global_
    if G is not None and has_values(G, "block_frob_probes"):
        probes = G["block_frob_probes"][np.isfinite(G["block_frob_probes"]) & (G["block_frob_probes"] > 0)]
        p = float(np.min(probes)) if len(probes) else p
    n = int(np.count_nonzero(diag & np.isfinite(B["frob_norm_hutch"])))
    se = hutchinson_rel_se(p) if math.isfinite(p) and p > 0 else math.nan
    z = float(_sps.norm.isf(0.001 / (2 * max(n, 1))))
    rule = Rule(
        0.0,
        10 * ctx.roundoff,
        explicit=f"{z:.2f} × sqrt(1/(2p)) = {z * se:.1%} of the closed form (p = {p:g} probes; "
        f"0.1 % family-wise over {n} blocks)",
    )
    return judge(
        "‖[JΦ_t]_kk‖_F by Hutchinson (paper protocol)",
        "sqrt(Σ_i f_t(μ_k,i)²)",
        "blocks.csv frob_norm_hutch (k = j)",
        np.where(diag, B["frob_norm_hutch"], np.nan),
        frob,
        triv,
        rule,
        role=PAPER_PROTOCOL,
        tolerance=z * se * np.abs(frob),
    )


def _iters(G) -> str:
    parts = []
    if G is not None and has_values(G, "block_iters"):
        parts.append(f"K = {int(np.nanmax(G['block_iters']))}")
    if G is not None and "block_method" in G:
        parts.append(
            "block_method = "
            + ",".join(sorted({str(m) for m in G["block_method"] if str(m) not in ("", "nan")}))
        )
    return ", ".join(parts)


def global_rows(inp: AnalysisInputs, ctx: AnalysisContext) -> list[OracleCheckRow]:
    G = inp.global_
    if G is None or ctx.chain is None or not ctx.lambda_k:
        return []
    exact, it, _ = rules(ctx)
    fmax = cf.fmax_per_row(ctx, G)
    out = []
    if has_values(G, "kappa_dense"):
        out.append(
            judge(
                "global κ_t, dense SVD",
                "max_k f_t(λ_k)",
                "global.csv kappa_dense",
                G["kappa_dense"],
                fmax,
                1.0,
                exact,
            )
        )
    if has_values(G, "kappa_lanczos"):
        row = judge(
            "global κ_t, Golub-Kahan-Lanczos",
            "max_k f_t(λ_k)",
            "global.csv kappa_lanczos",
            G["kappa_lanczos"],
            fmax,
            1.0,
            it,
        )
        row.diagnostic = _iter_text(G, "lanczos_iters", "lanczos_residual")
        out.append(row)
    if has_values(G, "kappa_pi"):
        row = _paper_estimator(
            "global κ_t by power iteration (K_PI, §7.1)",
            "global.csv kappa_pi",
            G["kappa_pi"],
            fmax,
            G["t"],
            ctx,
        )
        row.diagnostic = "; ".join(
            x for x in (_iter_text(G, "pi_iters", "kappa_pi_change"), row.diagnostic) if x
        )
        out.append(row)
    if has_values(G, "kappa_diag"):
        out.append(
            judge(
                "κ_t^diag (eq. 18)",
                "max_k f_t(λ_k)",
                "global.csv kappa_diag",
                G["kappa_diag"],
                fmax,
                1.0,
                exact,
                Kind.REDERIVED,
                derived_from="patches.csv diag_norm (max over k)",
            )
        )
    r, b = cf.coefficients_per_row(ctx, G)
    for col, ref in (("r_t", r), ("b_t", b)):
        if has_values(G, col):
            out.append(
                judge(
                    f"{col} (eqs. 4-5)",
                    "from ᾱ_t, ᾱ_prev",
                    f"global.csv {col}",
                    G[col],
                    ref,
                    0.0,
                    Rule(0.0, 1e-12, trivial="0"),
                    Kind.IDENTITY,
                    derived_from="pipeline.geometry.step_coefficients on both sides",
                )
            )
    return out


def _iter_text(G, iters: str, change: str) -> str:
    parts = []
    if has_values(G, iters):
        parts.append(f"K = {int(np.nanmax(G[iters]))}")
    if has_values(G, change):
        parts.append(f"max reported {change} = {np.nanmax(np.abs(G[change])):.2e}")
    return ", ".join(parts)


def lyapunov_rows(inp: AnalysisInputs, ctx: AnalysisContext) -> list[OracleCheckRow]:
    L = inp.lyapunov
    if L is None or ctx.chain is None or not has_values(L, "lambda_k"):
        return []
    closed = np.log(expansion_function(ctx.chain, L["lambda_k"])).mean(axis=0)
    exact = Rule(1e-3, 10 * ctx.roundoff, trivial="0")
    out = []
    if has_values(L, "lyap_gauss"):
        out.append(
            judge(
                "Λ(λ_k) (lyap_gauss)",
                "mean_t log f_t(λ_k) (Thm. 25)",
                "lyapunov.csv lyap_gauss",
                L["lyap_gauss"],
                closed,
                0.0,
                exact,
                Kind.IDENTITY,
                derived_from="pipeline.geometry.expansion_function on both sides",
            )
        )
    if has_values(L, "lyap_hat"):
        out.append(
            judge(
                "Λ̂_k (lyap_hat)",
                "mean_t log f_t(λ_k) (Thm. 25)",
                "lyapunov.csv lyap_hat",
                L["lyap_hat"],
                closed,
                0.0,
                exact,
                Kind.REDERIVED,
                derived_from="rayleigh (mean_t log ρ_k,t)",
            )
        )
    return out


def f_at(ctx: AnalysisContext, t: float) -> np.ndarray | None:
    ks = sorted(ctx.lambda_k)
    F = f_t_matrix(ctx, np.array([t]), np.array([ctx.lambda_k[k] for k in ks]))
    return None if F is None else F[0]


__all__ = ["block_rows", "f_at", "global_rows", "lyapunov_rows", "patch_matrix", "patch_rows", "rules"]
