"""Every comparison and check as a row of data: what is compared, with which tolerance, and what KIND of
evidence it is, so that a headline counts only what could have failed.

Kinds (validation rung 5):
- independent: our side is measured or computed apart from what it is compared with, and could differ.
- re-derived: our side is recomputed from a quantity already compared elsewhere (``derived_from`` names
  it); it agrees or not with that one, so it adds no evidence of its own.
- identity: both sides are the same function of the same inputs (Λ_pred from S measured at every step vs
  Λ̂): it cannot fail, is never scored "agrees", and is shown as such.
- structural: true by construction of the model or the estimator (a zero cross block of a block-diagonal
  oracle, a norm bound that is a theorem): it tests plumbing, not the claim.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum


class Kind(str, Enum):
    INDEPENDENT = "independent"
    REDERIVED = "re-derived"
    IDENTITY = "identity"
    STRUCTURAL = "structural"


# Statuses a row can have. Only independent rows are "agrees"/"differs"; identity/structural rows carry
# their kind as status, re-derived rows say what they follow.
AGREES, DIFFERS, NO_DATA, NO_PAPER = "agrees", "differs", "no data", "no paper value"
NOT_CONVERGED = "not converged"
UNDECIDABLE = "cannot separate"
EXTRAPOLATED = "extrapolated"
REFERENCE_ORACLE = "reference (oracle run)"


@dataclass(frozen=True)
class Tolerance:
    """|ours − reference| <= abs or <= rel·|reference|; either may be None. ``why`` says where it comes from."""

    abs: float | None = None
    rel: float | None = None
    why: str = ""

    def allows(self, diff: float, reference: float) -> bool:
        return (self.abs is not None and abs(diff) <= self.abs) or (
            self.rel is not None and math.isfinite(reference) and abs(diff) <= self.rel * abs(reference)
        )

    def text(self) -> str:
        parts = []
        if self.abs is not None:
            parts.append(f"|diff| ≤ {self.abs:.3g}")
        if self.rel is not None:
            parts.append(f"|diff| ≤ {self.rel:.0%} of paper")
        return " or ".join(parts) + (f" ({self.why})" if self.why else "")


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


@dataclass
class Comparison:
    """One paper | ours row of a reproduced table, with its kind and tolerance (rows are data, not code)."""

    table: str
    quantity: str
    paper: object
    ours: object
    kind: Kind = Kind.INDEPENDENT
    tolerance: Tolerance = field(default_factory=Tolerance)
    derived_from: str = ""
    note: str = ""
    status: str = ""
    difference: float | None = None

    def as_row(self) -> dict[str, object]:
        """The row as comparison.csv and the report show it."""
        return {
            "table": self.table,
            "quantity": self.quantity,
            "paper": self.paper,
            "ours": self.ours,
            "difference": self.difference,
            "kind": self.kind.value + (f" (from {self.derived_from})" if self.derived_from else ""),
            "tolerance": self.tolerance.text(),
            "status": self.status,
            "note": self.note,
        }


def score(c: Comparison, oracle: bool) -> Comparison:
    """Fill status and difference. Identity and structural rows are never 'agrees'; on the Gaussian oracle the
    paper's numbers (measured on learned models) are shown for reference and never scored."""
    p, o = _num(c.paper), _num(c.ours)
    c.difference = o - p if math.isfinite(o) and math.isfinite(p) else None
    if c.kind in (Kind.IDENTITY, Kind.STRUCTURAL):
        c.status = f"{c.kind.value}: not evidence"
        return c
    if c.status in (EXTRAPOLATED, UNDECIDABLE):  # set by the builder, with its reason in the note
        return c
    if not math.isfinite(o):
        c.status = NO_DATA
    elif oracle:
        c.status = REFERENCE_ORACLE
    elif c.difference is None:
        c.status = NO_PAPER
    else:
        c.status = AGREES if c.tolerance.allows(c.difference, p) else DIFFERS
    return c


@dataclass(frozen=True)
class EvidenceCount:
    """A table's or check's headline: scored independent rows, and what the rest are."""

    agree: int
    differ: int
    independent: int
    other: dict[str, int]

    def text(self) -> str:
        head = (
            f"{self.agree} of {self.independent} independent agree"
            if self.independent
            else "none independent"
        )
        rest = ", ".join(f"{n} {k}" for k, n in self.other.items() if n)
        return head + (f"; not counted: {rest}" if rest else "")


def count_evidence(rows: list[Comparison]) -> EvidenceCount:
    """Counts over rows: independent rows with agrees/differs are scored; the others are named by kind or
    status (re-derived, identity, structural, no data, extrapolated, reference)."""
    scored = [r for r in rows if r.kind is Kind.INDEPENDENT and r.status in (AGREES, DIFFERS)]
    agree = sum(r.status == AGREES for r in scored)
    other: Counter[str] = Counter()
    for r in rows:
        if r in scored:
            continue
        if r.kind is not Kind.INDEPENDENT:
            other[r.kind.value] += 1
        else:
            other[r.status.split(" (")[0]] += 1
    return EvidenceCount(agree, len(scored) - agree, len(scored), dict(sorted(other.items())))
