"""A verdict per prediction P1-P5 of §7 on the scale supported / partly supported / not supported /
inconclusive, each part with its test, n, effect and interval and the correction for testing many t.

Each rule reads only the tables it names in ``RULES``, through their typed summaries.
"""

from __future__ import annotations

from pipeline.analysis.context import AnalysisContext
from pipeline.analysis.tables import TableResult
from pipeline.analysis.verdicts.deviation import p5
from pipeline.analysis.verdicts.regimes import p3, p4
from pipeline.analysis.verdicts.scale import (
    INCONCLUSIVE,
    NOT_APPLICABLE,
    NOT_SUPPORTED,
    NOT_TESTABLE,
    ORACLE,
    ORACLE_BAD,
    PARTLY,
    SCALE,
    SUPPORTED,
    Part,
    Verdict,
)
from pipeline.analysis.verdicts.suppression import p1, p2

# prediction -> (the tables its rule reads, the rule)
RULES = {
    "P1": (("table_3",), lambda tabs, ctx: p1(tabs)),
    "P2": (("table_3",), lambda tabs, ctx: p2(tabs, ctx.roundoff)),
    "P3": (("table_4", "table_5", "table_6"), lambda tabs, ctx: p3(tabs)),
    "P4": (("table_8", "table_9", "release_times"), lambda tabs, ctx: p4(tabs)),
    "P5": (("table_10",), lambda tabs, ctx: p5(tabs)),
}
# What the block-diagonal Gaussian oracle itself predicts for the learned-model claims P3-P5.
ORACLE_EXPECTS = {
    "P3": "the oracle predicts delta^cross = 0 and kappa_t = max_k f_t(lambda_k) (no attention): P3 is a "
    "learned-model claim",
    "P4": "the oracle predicts kappa_k^diag = f_t(lambda_k), so (PC) fails wherever f_t(lambda_k) > 1 and "
    "rho(lambda_k, kappa^diag) = +1 at every t (no sign flip): P4 is a learned-model claim",
    "P5": "the oracle IS its own Gaussian surrogate (Delta_t = 0); the eq. 65 proxy is still shown but does "
    "not test P5",
}


def _for_oracle(v: Verdict, tables: dict[str, TableResult], ctx: AnalysisContext) -> Verdict:
    if v.status == NOT_TESTABLE:
        return v
    if v.key in ORACLE_EXPECTS:
        return Verdict(
            v.key,
            v.claim,
            NOT_APPLICABLE,
            f"{ORACLE_EXPECTS[v.key]}. Measured: {v.evidence}",
            v.parts,
            v.rule,
        )
    t3 = tables.get("table_3")
    zero = t3 is not None and t3.summary.max_abs_S <= ctx.roundoff
    sig = (
        "On the Gaussian oracle S = 0 exactly is the predicted signature (the score IS the Gaussian surrogate): "
        f"max |S| = {t3.summary.max_abs_S:.1e} against the float floor {ctx.roundoff:.0e}; S > 0 and (MM) are "
        "learned-model claims"
    )
    return Verdict(
        v.key, v.claim, ORACLE if zero else ORACLE_BAD, f"{sig}. Measured: {v.evidence}", v.parts, v.rule
    )


def all_verdicts(
    tables: dict[str, TableResult], ctx: AnalysisContext, inp=None, oracle=None
) -> list[Verdict]:
    """P1-P5 from the built tables (``inp`` is accepted for callers of the earlier signature)."""
    out = []
    for reads, rule in RULES.values():
        fed = {k: tables[k] for k in reads if k in tables}
        v = rule(fed, ctx)
        out.append(_for_oracle(v, tables, ctx) if oracle is not None else v)
    return out


__all__ = [
    "INCONCLUSIVE",
    "NOT_APPLICABLE",
    "NOT_SUPPORTED",
    "NOT_TESTABLE",
    "ORACLE",
    "ORACLE_BAD",
    "PARTLY",
    "RULES",
    "SCALE",
    "SUPPORTED",
    "Part",
    "Verdict",
    "all_verdicts",
]
