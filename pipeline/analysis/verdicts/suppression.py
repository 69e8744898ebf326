"""P1 (§7.2: every patch exceeds λ*(t); S_k,t > 0 at every step) and P2 (§7.3, (MM): S_k,t increasing in λ_k),
both read from Table 3's typed summary."""

from __future__ import annotations

from pipeline.analysis import paper_values as pv
from pipeline.analysis.tables.t3_suppression import FDR, S_NOISE_FLOOR, Table3Summary

from .scale import FAILS, HOLDS, MIXED, NOT_TESTABLE, UNDECIDED, Part, Verdict, fmt, verdict

P1_RULE = (
    "(a) holds when f_t(λ_k) > 1 (λ_k > λ*(t), eq. 27) at every measured (t, k), fails otherwise; (b) holds "
    "when S_k,t is significantly > 0 at every (t, k) cell except the paper's noise-floor exceptions "
    f"(−{S_NOISE_FLOOR:g} ≤ S < 0), fails when some cell is significantly below −{S_NOISE_FLOOR:g}, undecided "
    "otherwise; per cell a one-sample t-test over trajectories, Benjamini–Hochberg over all cells, q < 0.05"
)
P2_RULE = (
    "per t Spearman ρ(λ_k, S_k,t) across patches, Benjamini–Hochberg over the measured t: holds when some t "
    "has ρ > 0 significant and none ρ < 0, fails when some has ρ < 0 and none ρ > 0, mixed when both; "
    "inconclusive when no t is significant, when S is 0 within round-off, or when the λ_k spread is below "
    "the sampling error of λ_k (the patch order is noise)"
)


def p1(tables: dict) -> Verdict:
    t3 = tables.get("table_3")
    if t3 is None:
        return Verdict(
            "P1",
            pv.PREDICTIONS["P1"],
            NOT_TESTABLE,
            "needs jacobian/patches.csv with suppression and lambda_k",
        )
    s: Table3Summary = t3.summary
    n = s.n_cells
    window = Part(
        "(a) λ_k > λ*(t) at every (t, k)",
        HOLDS if s.n_cells_expanding == n and n else FAILS,
        "f_t(λ_k) > 1 per cell, closed form (eq. 26-27)",
        f"{n} (t, k) cells",
        f"{s.n_cells_expanding} of {n} cells expanding",
        "none (closed form, no sampling)",
    )
    exempt = s.n_cells_floor_negative
    need = n - exempt
    if s.n_seeds < 2:
        outcome, why = UNDECIDED, f"n = {s.n_seeds} trajectory: no test per cell"
    elif s.n_cells_sig_negative:
        outcome, why = FAILS, f"{s.n_cells_sig_negative} cells significantly below −{S_NOISE_FLOOR:g}"
    elif s.n_cells_sig_positive == need:
        outcome, why = HOLDS, ""
    else:
        outcome = UNDECIDED
        why = (
            f"{need - s.n_cells_sig_positive} of {need} cells not significantly positive "
            f"({s.n_cells_roundoff} are 0 within round-off; power: {s.n_seeds} trajectories per cell, df = "
            f"{s.n_seeds - 1})"
        )
    supp = Part(
        "(b) S_k,t > 0 at every step",
        outcome,
        s.cell_test,
        f"{n} cells × {s.n_seeds} trajectories",
        f"{s.n_cells_sig_positive} cells significantly > 0, {s.n_cells_sig_negative} significantly < "
        f"−{S_NOISE_FLOOR:g}, {exempt} noise-floor exceptions; seed-mean S > 0 at {s.share_S_positive:.1%} of "
        f"cells (round-off counted as 0); max |S| = {fmt(s.max_abs_S)}",
        f"Benjamini–Hochberg over {n} cells",
        why,
    )
    return verdict("P1", pv.PREDICTIONS["P1"], [window, supp], P1_RULE)


def p2(tables: dict, roundoff: float) -> Verdict:
    t3 = tables.get("table_3")
    if t3 is None:
        return Verdict("P2", pv.PREDICTIONS["P2"], NOT_TESTABLE, "needs Table 3 (S_k,t and lambda_k)")
    s: Table3Summary = t3.summary
    pos, neg = s.n_sig_positive, s.n_sig_negative
    why = ""
    if s.max_abs_S <= roundoff:
        outcome, why = (
            UNDECIDED,
            f"S_k,t is 0 within round-off (max |S| = {fmt(s.max_abs_S)}): nothing to rank",
        )
    elif s.lambda_resolved is False:
        outcome, why = UNDECIDED, s.lambda_resolution + ": the data cannot test (MM) either way"
    elif pos and neg:
        outcome = MIXED
    elif pos:
        outcome = HOLDS
    elif neg:
        outcome = FAILS
    else:
        outcome = UNDECIDED
        why = f"no t has a significant ρ after the correction ({s.n_timesteps} t, n = patches per t)"
    part = Part(
        "ρ(λ_k, S_k,t) > 0",
        outcome,
        "Spearman ρ across patches per t, two-sided p (t approximation)",
        f"{s.n_timesteps} t × patches",
        f"{pos} t with ρ > 0 and {neg} with ρ < 0 significant; peak ρ = {fmt(s.peak_rho)} at t = {s.peak_t} "
        f"{s.peak_rho_interval}; {s.n_rho_undefined} t undefined",
        s.correction or f"Benjamini–Hochberg over the measured t (q < {FDR})",
        why,
    )
    return verdict("P2", pv.PREDICTIONS["P2"], [part], P2_RULE)
