"""P5 (§7.6): the score deviation ‖Δ_t‖ (eq. 28) scales as √ᾱ_t at high noise: OLS slope of log ‖Δ_t‖ on
log √ᾱ_t over t >= 0.8 T consistent with 1 — on the exact ‖Δ_t‖ where the run measured it (the quantity of
Theorem 16), else on the paper's eq. 65 proxy, saying which."""

from __future__ import annotations

from pipeline.analysis import paper_values as pv
from pipeline.analysis.tables.t10_score_deviation import Table10Summary

from .scale import FAILS, HOLDS, NOT_TESTABLE, UNDECIDED, Part, Verdict, fmt, verdict

# The slope is "consistent with 1" only when its interval also rules out the neighbouring powers
# ᾱ^(3/8) and ᾱ^(5/8) of √ᾱ: a wider interval cannot decide.
PRECISION = 0.25
P5_RULE = (
    "OLS of log ‖Δ_t‖ on log √ᾱ_t over t >= 0.8 T with a 95% t-interval: holds when the interval contains 1 and "
    f"lies within [1 − {PRECISION}, 1 + {PRECISION}]; fails when it excludes 1; undecided when it contains 1 "
    "but is wider. The exact ‖Δ_t‖ (eq. 28) is used where measured; the eq. 65 proxy otherwise"
)


def p5(tables: dict) -> Verdict:
    t10 = tables.get("table_10")
    s: Table10Summary | None = t10.summary if t10 is not None else None
    if s is None or (s.exact is None and s.proxy is None):
        return Verdict(
            "P5",
            pv.PREDICTIONS["P5"],
            NOT_TESTABLE,
            "needs jacobian/proxy.csv with >= 3 points at t >= 0.8 T",
        )
    f, what = (s.exact, "exact ‖Δ_t‖ (eq. 28)") if s.exact is not None else (s.proxy, "eq. 65 proxy")
    if f.ci_lo > 1.0 or f.ci_hi < 1.0:
        outcome = FAILS
        why = (
            "the slope exceeds 1 over the window: not the √ᾱ_t scaling"
            if f.ci_lo > 1
            else "the slope is below 1: the deviation shrinks slower than √ᾱ_t"
        ) + f" (slope on the noisier half of the window: {fmt(f.slope_high_noise_half)})"
    elif f.ci_lo >= 1 - PRECISION and f.ci_hi <= 1 + PRECISION:
        outcome, why = HOLDS, ""
    else:
        outcome, why = UNDECIDED, f"interval too wide to tell 1 from 1 ± {PRECISION} (n = {f.n} points)"
    effect = (
        f"slope {f.slope:.3f} [{f.ci_lo:.3f}, {f.ci_hi:.3f}], R² = {f.r2:.4f}; slope on the noisier half of the "
        f"window {fmt(f.slope_high_noise_half)}"
    )
    notes = []
    if s.exact is not None and s.proxy is not None:
        notes.append(
            f"the proxy's slope {s.proxy.slope:.3f} [{s.proxy.ci_lo:.3f}, {s.proxy.ci_hi:.3f}] is shown, not scored: "
            f"in the window it is {fmt(s.proxy_over_exact_min)}–{fmt(s.proxy_over_exact_max)}× the exact ‖Δ_t‖"
        )
    part = Part(
        f"‖Δ_t‖ ∝ √ᾱ_t at high noise ({what})",
        outcome,
        f"OLS of log value on log √ᾱ_t over t ≥ {s.fit_t_min:g}",
        f"{f.n} t",
        effect,
        "none (one fit)",
        "; ".join(x for x in (why, *notes) if x) if outcome != HOLDS or notes else "",
    )
    return verdict("P5", pv.PREDICTIONS["P5"], [part], P5_RULE)


__all__ = ["P5_RULE", "PRECISION", "UNDECIDED", "p5"]
