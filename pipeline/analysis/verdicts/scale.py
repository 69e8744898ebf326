"""The verdict scale and how a rule's parts combine into it.

Scale: supported / partly supported / not supported / inconclusive (the data cannot decide, and why:
spread, n, power) — plus not testable (an input is missing), and on the Gaussian oracle its closed-form
signature or "not applicable" for claims about learned models.

A verdict is made of parts, one per clause of the paper's prediction. Each part states its test, n, the
effect with its interval, the correction for testing many t, and an outcome: holds, fails, mixed (both
directions significant), undecided (with why), or structural (true by construction: shown, not counted).
Combination: every counted part holds -> supported; some hold and some fail or are mixed/undecided ->
partly supported; none holds and some fail -> not supported; all undecided -> inconclusive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SUPPORTED = "supported"
PARTLY = "partly supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"
NOT_TESTABLE = "not testable"
ORACLE = "oracle: closed form reproduced"
ORACLE_BAD = "oracle: closed form NOT reproduced"
NOT_APPLICABLE = "not applicable (oracle run)"
SCALE = (SUPPORTED, PARTLY, NOT_SUPPORTED, INCONCLUSIVE)

HOLDS, FAILS, MIXED, UNDECIDED, STRUCTURAL = "holds", "fails", "mixed", "undecided", "structural"
ALPHA = 0.05


@dataclass
class Part:
    """One clause of a prediction, tested."""

    name: str
    outcome: str
    test: str
    n: str
    effect: str
    correction: str = "none (one test)"
    why: str = ""

    @property
    def counted(self) -> bool:
        return self.outcome != STRUCTURAL

    def text(self) -> str:
        s = f"{self.name}: {self.outcome.upper()} — {self.test}; n = {self.n}; {self.effect}"
        s += f"; correction: {self.correction}"
        return s + (f"; {self.why}" if self.why else "")


@dataclass
class Verdict:
    key: str
    claim: str
    status: str
    evidence: str
    parts: list[Part] = field(default_factory=list)
    rule: str = ""

    def as_dict(self) -> dict[str, object]:
        """verdicts.json's entry: the scalars, then the parts."""
        plain = {k: getattr(self, k) for k in ("key", "claim", "status", "evidence", "rule")}
        return {**plain, "parts": [p.__dict__ for p in self.parts]}


def combine(parts: list[Part]) -> str:
    outcomes = [p.outcome for p in parts if p.counted]
    if not outcomes:
        return NOT_TESTABLE
    if all(o == HOLDS for o in outcomes):
        return SUPPORTED
    if HOLDS in outcomes:
        return PARTLY
    if FAILS in outcomes and MIXED not in outcomes:
        return NOT_SUPPORTED
    if MIXED in outcomes:
        return PARTLY
    return INCONCLUSIVE


def verdict(key: str, claim: str, parts: list[Part], rule: str) -> Verdict:
    status = combine(parts)
    evidence = " | ".join(p.text() for p in parts) + f". Rule: {rule}"
    return Verdict(key, claim, status, evidence, parts, rule)


def fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def significance(rho: float, p: float, alpha: float = ALPHA) -> str:
    """holds / fails / undecided for a one-directional prediction rho < 0 (pass -rho for rho > 0)."""
    if not (math.isfinite(rho) and math.isfinite(p)):
        return UNDECIDED
    if p < alpha:
        return HOLDS if rho < 0 else FAILS
    return UNDECIDED
