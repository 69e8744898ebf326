"""Table 9 (§7.5): Spearman ρ(λ_k, κ̂^diag_k,t) per t, κ̂^diag the Rayleigh quotient of eq. (32) (Theorem
22(b)), with Benjamini–Hochberg over the t, and the sign flip between significant values only (P4)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.analysis import inference as inf
from pipeline.analysis import paper_values as pv
from pipeline.analysis import stats
from pipeline.analysis.context import AnalysisContext, f_t_matrix, nanmax, nanmin, patch_values
from pipeline.analysis.evidence import Tolerance
from pipeline.analysis.inputs import AnalysisInputs, has_values
from pipeline.analysis.tables.spec import TableResult, TableSpec, paper_rows, paper_scalar, scored
from pipeline.analysis.tables.t8_pc_slack import kappa_diag_reading, kappa_diag_result

FDR = 0.05


@dataclass
class Table9Summary:
    kappa_diag_reading: str = ""
    n_timesteps: int = 0
    n_sig_positive: int = 0
    n_sig_negative: int = 0
    correction: str = ""
    # the flip the paper reads: significant negative ρ, then significant positive ρ further down the chain
    sign_flip_t: float | None = None
    n_flips: int = 0
    # sign changes of the raw ρ (insignificant values included): not evidence of a flip
    n_raw_sign_changes: int = 0
    sign_flip_t_op: float | None = None


def table_9(inp: AnalysisInputs, ctx: AnalysisContext) -> TableResult | None:
    """Spearman ρ(λ_k, κ̂^diag_k,t) per t and the sign flip (§7.5); the operator-norm reading beside it."""
    P = inp.patches
    if P is None or not ctx.lambda_k:
        return None
    ray = "rayleigh" if has_values(P, "rayleigh") else None
    op = "diag_norm" if has_values(P, "diag_norm") else None
    primary = ray or op
    if primary is None:
        return None
    K = patch_values(ctx, P, primary)
    KO = patch_values(ctx, P, op).mean if op and op != primary else None
    F = f_t_matrix(ctx, K.ts, K.lam)
    rows = []
    for i, t in enumerate(K.ts):
        r = stats.spearman(K.lam, K.mean[i])
        row = {
            "t": int(t),
            "regime": ctx.regime(t),
            "rho": r.rho,
            "p_value": r.p_value,
            "sig": stats.significance_stars(r.p_value),
            "n_patches": r.n,
            "n_seeds": K.n_seeds,
        }
        if KO is not None:
            ro = stats.spearman(K.lam, KO[i])
            row.update(rho_op=ro.rho, p_op=ro.p_value)
        row["f_spread"] = (nanmax(F[i]) - nanmin(F[i])) if F is not None else math.nan
        rows.append(row)
    q = inf.benjamini_hochberg([r["p_value"] for r in rows])
    for r, qi in zip(rows, q, strict=True):
        r["p_adj"] = float(qi)
    sig = [math.isfinite(r["p_adj"]) and r["p_adj"] < FDR for r in rows]
    flip = stats.sign_flip(K.ts, [r["rho"] for r in rows], sig)
    raw = stats.sign_flip(K.ts, [r["rho"] for r in rows])
    s = Table9Summary(
        kappa_diag_reading="rayleigh" if primary == ray else "op_norm",
        n_timesteps=len(rows),
        n_sig_positive=sum(ok and r["rho"] > 0 for ok, r in zip(sig, rows, strict=True)),
        n_sig_negative=sum(ok and r["rho"] < 0 for ok, r in zip(sig, rows, strict=True)),
        correction=f"Benjamini–Hochberg over the {len(rows)} measured t (q < {FDR})",
        sign_flip_t=flip["sign_flip_t"],
        n_flips=flip["n_flips"],
        n_raw_sign_changes=raw["n_flips"],
    )
    if KO is not None:
        qo = inf.benjamini_hochberg([r["p_op"] for r in rows])
        s.sign_flip_t_op = stats.sign_flip(K.ts, [r["rho_op"] for r in rows], np.isfinite(qo) & (qo < FDR))[
            "sign_flip_t"
        ]
    reading = kappa_diag_reading(primary, ray)
    res = kappa_diag_result(
        "table_9",
        "Spearman rho(lambda_k, kappa_k,t^diag) per timestep and the sign flip",
        primary,
        ray,
        "; diag_norm = ||[J Phi_t]_kk||_op beside it (rho_op)" if KO is not None else "",
        rows,
        s,
        cols="rho, p_value, sig and the sign flip",
        op_cols="rho_op, p_op",
    )
    res.notes += [
        "Sign-flip rule: the midpoint of the last pair of consecutive SIGNIFICANT values (p_adj: "
        f"{s.correction}) going down the chain with rho < 0 then rho > 0; a sign change between two "
        f"insignificant values is not a flip ({s.n_raw_sign_changes} raw sign changes of rho, "
        f"{s.n_flips} between significant values).",
        "f_spread = f_t(lambda_max) - f_t(lambda_min), the Gaussian spread across patches (eq. 26).",
    ]
    cmp = paper_rows(
        pv.TABLE_9,
        "rho",
        rows,
        tolerance=lambda _: Tolerance(abs=0.2),
        note=f"kappa^diag read as the {reading}",
    )
    flip = s.sign_flip_t if s.sign_flip_t is not None else math.nan
    between = "the paper's 110 lies between two insignificant values (t = 120: p = 0.812; t = 100: p = 0.090)"
    quantity = "sign-flip t (between significant rho)"
    cmp.append(
        paper_scalar(pv.TABLE_9, "sign_flip_t", flip, Tolerance(abs=30), quantity=quantity, note=between)
    )
    res.comparison = scored(cmp, ctx)
    return res


SPEC = TableSpec(
    table_9,
    "ρ(λ_k, κ̂^diag) sign flip",
    "jacobian/patches.csv with rayleigh or diag_norm, and lambda_k",
)
