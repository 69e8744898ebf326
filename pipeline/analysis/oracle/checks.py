"""One oracle check as data: measured values against their closed form, with a tolerance that separates the
answer from the trivial one, the kind of evidence it is, and whether the estimator is the paper's protocol.

A row is decidable where its tolerance is below half the distance between the closed form and the trivial
answer (1 for a norm or a Rayleigh quotient: the identity map; 0 for an exponent): there a measurement
within tolerance cannot be the trivial answer. Where |f_t − 1| is below the route's float floor (t near T
on a float64 oracle: f_t ≈ 1 + 2e-4) no tolerance can tell f_t from 1, and those rows are counted apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.analysis.evidence import Kind

AGREES, DIFFERS, NO_DATA = "agrees", "differs", "no data"
NOT_CONVERGED = "not converged"
CANNOT_SEPARATE = "cannot separate from the trivial answer"
PAPER_PROTOCOL = "paper protocol"


@dataclass
class OracleCheckRow:
    """status: 'agrees' / 'differs' / 'not converged' (an iterative estimate on its correct side of the
    closed form, as power iteration and Lanczos must be, but beyond tolerance) / 'cannot separate ...' /
    'no data' for independent and re-derived rows; identity and structural rows carry their kind as status
    when they hold ('differs' when they do not: a broken identity is a bug)."""

    quantity: str
    closed_form: str
    measured: str
    kind: Kind
    tolerance: str
    n: int
    n_decidable: int
    max_abs_error: float
    max_rel_error: float  # max |error| / |closed form − trivial answer| over decidable rows
    status: str
    derived_from: str = ""
    role: str = ""  # PAPER_PROTOCOL for the paper's own estimators (a finding about the method)
    diagnostic: str = ""
    n_over: int = 0  # rows beyond their tolerance

    def as_row(self) -> dict[str, object]:
        return {
            "quantity": self.quantity,
            "closed_form": self.closed_form,
            "measured": self.measured,
            "kind": self.kind.value + (f" (from {self.derived_from})" if self.derived_from else ""),
            "n": self.n,
            "n_decidable": self.n_decidable,
            "n_over": self.n_over,
            "max_abs_error": self.max_abs_error,
            "max_rel_error": self.max_rel_error,
            "tolerance": self.tolerance,
            "status": self.status + (f" ({self.role})" if self.role else ""),
            "diagnostic": self.diagnostic,
        }


@dataclass(frozen=True)
class Rule:
    """How a measured column is judged: tolerance = max(rel·|closed − trivial|, floor), or an explicit
    per-row tolerance; ``bound`` 'lower'/'upper' for estimates that can only err to one side."""

    rel: float
    floor: float
    trivial: str = "1 (the identity map)"
    bound: str | None = None
    explicit: str = ""  # description when the caller passes per-row tolerances (stated accuracy)

    def text(self) -> str:
        if self.explicit:
            return self.explicit
        return f"max({self.rel:g}·|closed − {self.trivial.split(' ')[0]}|, {self.floor:.0e})"


def judge(
    quantity: str,
    closed_form: str,
    measured_name: str,
    measured,
    closed,
    trivial,
    rule: Rule,
    kind: Kind = Kind.INDEPENDENT,
    *,
    derived_from: str = "",
    role: str = "",
    diagnostic: str = "",
    tolerance=None,
) -> OracleCheckRow:
    """Compare measured values with their closed form row by row (NaN rows dropped)."""
    m = np.asarray(measured, dtype=np.float64).ravel()
    c = np.broadcast_to(np.asarray(closed, dtype=np.float64), m.shape).ravel()
    z = np.broadcast_to(np.asarray(trivial, dtype=np.float64), m.shape).ravel()
    ok = np.isfinite(m) & np.isfinite(c)
    m, c, z = m[ok], c[ok], z[ok]
    scale = np.abs(c - z)
    if tolerance is None:
        tol = np.maximum(rule.rel * scale, rule.floor)
    else:
        tol = np.broadcast_to(np.asarray(tolerance, dtype=np.float64), ok.shape).ravel()[ok]
    err = m - c
    decidable = tol < scale / 2
    base = dict(derived_from=derived_from, role=role, diagnostic=diagnostic)
    if not len(m):
        return OracleCheckRow(
            quantity, closed_form, measured_name, kind, rule.text(), 0, 0, math.nan, math.nan, NO_DATA, **base
        )
    over = np.abs(err) > tol
    with np.errstate(invalid="ignore", divide="ignore"):
        rel_err = np.abs(err) / scale
    max_rel = float(np.max(rel_err[decidable])) if decidable.any() else math.nan
    if not over.any():
        status = (
            kind.value
            if kind in (Kind.IDENTITY, Kind.STRUCTURAL)
            else AGREES
            if decidable.any()
            else CANNOT_SEPARATE
        )
    elif rule.bound is not None and _one_sided(err[over], rule.bound):
        status = NOT_CONVERGED
    else:
        status = DIFFERS
    return OracleCheckRow(
        quantity,
        closed_form,
        measured_name,
        kind,
        rule.text(),
        int(len(m)),
        int(decidable.sum()),
        float(np.max(np.abs(err))),
        max_rel,
        status,
        **base,
        n_over=int(over.sum()),
    )


def _one_sided(err: np.ndarray, bound: str) -> bool:
    """Every out-of-tolerance error on the side an iterative lower (upper) bound may err to."""
    return bool(np.all(err < 0)) if bound == "lower" else bool(np.all(err > 0))


def shortfall_note(measured, closed, t) -> str:
    """Where a lower-bound estimator falls short: the t range and |f − 1| there (for the paper-protocol finding)."""
    m, c, t = (np.asarray(a, dtype=np.float64).ravel() for a in (measured, closed, t))
    ok = np.isfinite(m) & np.isfinite(c) & np.isfinite(t)
    if not ok.any():
        return ""
    gap = c[ok] - m[ok]
    worst = int(np.argmax(gap))
    return (
        f"largest shortfall {gap[worst]:.2e} at t = {t[ok][worst]:g}, where the closed form is {c[ok][worst]:.6g} "
        f"(|closed − 1| = {abs(c[ok][worst] - 1):.1e})"
    )
