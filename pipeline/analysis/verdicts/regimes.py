"""P3 (§7.4: κ̂_t grows progressively; the block decomposition resolves it; coupling tracks attention entropy)
and P4 (§7.5: (PC) violated in Regime I and satisfied in Regime II; low-variance patches release first;
ρ(λ_k, κ̂^diag) reverses sign), read from Tables 4-6, 8, 9 and the release times."""

from __future__ import annotations

from pipeline.analysis import paper_values as pv

from .scale import (
    FAILS,
    HOLDS,
    NOT_TESTABLE,
    STRUCTURAL,
    UNDECIDED,
    Part,
    Verdict,
    fmt,
    significance,
    verdict,
)

P3_RULE = (
    "(a) holds when Spearman ρ(t, κ̂_t) < 0 at p < 0.05 and no pair t_a > t_b has κ̂ falling significantly "
    "going down the chain (paired t over seeds, Benjamini–Hochberg over all pairs); fails when such a fall "
    "exists or ρ > 0 significantly; (b) κ̂^diag ≤ κ̂ ≤ κ̂^pc is a theorem for exact norms (eq. 19): "
    "structural, not counted; (c) holds when H(A_t) and δ̂^cross are negatively associated beyond their "
    "shared time course (within-t deviations, or partial rank correlation given t) at p < 0.05, fails when "
    "positively, undecided otherwise"
)
P4_RULE = (
    "(a)/(b) per (t, k) cell a one-sample t-test of the (PC) slack over seeds, Benjamini–Hochberg over all "
    "cells: Regime I holds when every cell is significantly violated, fails when one is significantly "
    "satisfied; Regime II the reverse; (c) holds when Spearman ρ(λ_k, t_rel) < 0 at p < 0.05, fails when > 0, "
    "undecided otherwise or when the release times are degenerate; (d) holds when a significantly negative "
    "ρ(λ_k, κ̂^diag) is followed down the chain by a significantly positive one (BH over t), fails when the "
    "significant values never change sign that way, undecided when none is significant"
)


def p3(tables: dict) -> Verdict:
    t4, t5, t6 = tables.get("table_4"), tables.get("table_5"), tables.get("table_6")
    parts = []
    if t4 is not None:
        s = t4.summary
        trend = significance(s.trend_rho, s.trend_p)
        if s.n_sig_falls:
            outcome, why = FAILS, f"not progressive: {s.largest_fall}"
        elif trend == FAILS:
            outcome, why = FAILS, "κ̂_t falls as t falls"
        elif trend == HOLDS and s.fall_test.startswith("not run"):
            outcome, why = UNDECIDED, f"reversals not testable ({s.fall_test})"
        else:
            outcome, why = trend, "" if trend == HOLDS else "no significant trend"
        parts.append(
            Part(
                "(a) κ̂_t grows progressively down the chain",
                outcome,
                f"Spearman ρ(t, κ̂_t) over the measured t; {s.fall_test}",
                f"{s.n_steps} t, {s.n_seeds} seeds",
                f"ρ(t, κ̂) = {fmt(s.trend_rho)} {s.trend_interval}, p = {fmt(s.trend_p)}; "
                f"{s.n_sig_falls} significant falls",
                f"Benjamini–Hochberg over {s.n_pairs} pairs",
                why,
            )
        )
    if t5 is not None:
        parts.append(
            Part(
                "(b) the block decomposition resolves κ̂_t",
                STRUCTURAL,
                "norm bounds of eq. 19",
                f"{t5.summary.n_points} points",
                t5.summary.bounds,
            )
        )
    if t6 is not None:
        s6 = t6.summary
        outcome = significance(s6.detrended_rho, s6.detrended_p)
        parts.append(
            Part(
                "(c) δ̂^cross tracks H(A_t) beyond the shared time trend",
                outcome,
                s6.detrended_method,
                str(s6.detrended_n),
                f"detrended ρ = {fmt(s6.detrended_rho)}, p = {fmt(s6.detrended_p)} (raw ρ across t = "
                f"{fmt(s6.spearman_rho)}, permutation p = {fmt(s6.permutation_p)}: the shared trend)",
                "none (one test)",
                "" if outcome != UNDECIDED else "no association beyond what t explains",
            )
        )
    if not any(p.counted for p in parts):
        return Verdict(
            "P3", pv.PREDICTIONS["P3"], NOT_TESTABLE, "needs Tables 4 and 6 (global norms, attention)"
        )
    if t6 is None:
        parts.append(
            Part(
                "(c) δ̂^cross tracks H(A_t)",
                UNDECIDED,
                "not measured",
                "0",
                "attention.csv missing",
                why="no attention entropy",
            )
        )
    return verdict("P3", pv.PREDICTIONS["P3"], parts, P3_RULE)


def _regime_part(name: str, cells, want_violated: bool, onset) -> Part | None:
    if cells is None or not cells.n_cells:
        return None
    good, bad = (
        (cells.n_sig_violated, cells.n_sig_satisfied)
        if want_violated
        else (cells.n_sig_satisfied, cells.n_sig_violated)
    )
    if bad:
        outcome, why = FAILS, f"{bad} cells significantly {'satisfy' if want_violated else 'violate'} (PC)"
    elif good == cells.n_cells:
        outcome, why = HOLDS, ""
    else:
        outcome, why = UNDECIDED, f"{cells.n_cells - good} of {cells.n_cells} cells not significant"
    return Part(
        name,
        outcome,
        "one-sample t-test of the (PC) slack over seeds per (t, k) cell",
        f"{cells.n_cells} cells",
        f"{cells.n_violated} of {cells.n_cells} cells violated (seed mean); {cells.n_sig_violated} significantly "
        f"violated, {cells.n_sig_satisfied} significantly satisfied; this model's own (PC) onset: "
        f"{onset if onset is not None else 'none (violated at the last measured t)'}",
        "Benjamini–Hochberg over all measured cells",
        why,
    )


def p4(tables: dict) -> Verdict:
    t8, t9, rel = tables.get("table_8"), tables.get("table_9"), tables.get("release_times")
    parts = []
    if t8 is not None:
        s8 = t8.summary
        for name, cells, viol in (
            ("(a) (PC) violated throughout Regime I", s8.regime_I, True),
            ("(b) (PC) satisfied in Regime II", s8.regime_II, False),
        ):
            p = _regime_part(name, cells, viol, s8.pc_onset_t)
            if p is not None:
                parts.append(p)
    if rel is not None:
        sr = rel.summary
        outcome = UNDECIDED if sr.degenerate else significance(sr.spearman_lambda_vs_t_rel, sr.spearman_p)
        parts.append(
            Part(
                "(c) low-variance patches release first",
                outcome,
                "Spearman ρ(λ_k, t_k^rel) across released patches",
                f"{sr.n_released} of {sr.n_patches} patches released",
                f"ρ = {fmt(sr.spearman_lambda_vs_t_rel)} {sr.spearman_interval}, p = {fmt(sr.spearman_p)}",
                "none (one test)",
                sr.degenerate or ("" if outcome != UNDECIDED else "not significant"),
            )
        )
    if t9 is not None:
        s9 = t9.summary
        n_sig = s9.n_sig_positive + s9.n_sig_negative
        outcome = HOLDS if s9.sign_flip_t is not None else FAILS if n_sig else UNDECIDED
        parts.append(
            Part(
                "(d) ρ(λ_k, κ̂^diag) reverses sign (− to + down the chain)",
                outcome,
                "Spearman ρ across patches per t; flip only between significant values",
                f"{s9.n_timesteps} t × patches",
                f"{s9.n_sig_negative} t significantly negative, {s9.n_sig_positive} positive; flip at t = "
                f"{fmt(s9.sign_flip_t)}; {s9.n_raw_sign_changes} sign changes of the raw ρ (not evidence)",
                s9.correction,
                {FAILS: "the significant values keep one sign", UNDECIDED: "no t significant"}.get(
                    outcome, ""
                ),
            )
        )
    if not parts:
        return Verdict("P4", pv.PREDICTIONS["P4"], NOT_TESTABLE, "needs Tables 8, 9 and release times")
    return verdict("P4", pv.PREDICTIONS["P4"], parts, P4_RULE)
