"""Per-step DDIM coefficients and thresholds of a chain: r_t, b_t, L*_t, f_t(λ), λ*(t).

Write a = ᾱ_t, p = ᾱ_prev, v = 1 - a, w = 1 - p. The printed formulas subtract nearly equal numbers
(eq. 5 at small steps, eq. 26 when ᾱ_t -> 0), so the default ``formula="stable"`` uses algebraically
identical forms that only add positive terms, via p·v - a·w = p - a:

    b_t    = -(p - a) / (√a (√(p v) + √(a w)))               eq. (5)
    L*_t   = (√(p v) + √(a w)) / (√p + √a)                    eq. (10)
    f_t(λ) = (λ √(p a) + √(w v)) / (λ a + v)                  eq. (26) = eq. (62)
    λ*(t)  = √v (√p + √a) / ((√v + √w) √a)                    eq. (27)

``formula="literal"`` evaluates the equations exactly as printed. It loses all precision when
ᾱ_t ≲ 1e-16: for the unclipped cosine schedule's t = T step (ᾱ_T ≈ 3.7e-33) eq. (26) evaluates to
exactly 1.0 in float64 instead of √(1 - ᾱ_prev). The paper's §7.4 λ** = 1.049681 carries that artefact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .chains import Chain

FORMULAS = ("stable", "literal")


@dataclass(frozen=True)
class StepCoefficients:
    """DDIM step Φ_t(x) = r x + b ε̂(x, t), eq. (4): r = √(ᾱ_prev/ᾱ_t) > 1, b eq. (5) < 0 (Prop. 3)."""

    r: np.ndarray
    b: np.ndarray


def _check_formula(formula: str) -> None:
    if formula not in FORMULAS:
        raise ValueError(f"formula must be one of {FORMULAS}, got {formula!r}")


def _sqrt_terms(chain: Chain) -> tuple[np.ndarray, ...]:
    a, p = chain.alpha_bar_t, chain.alpha_bar_prev
    return np.sqrt(a), np.sqrt(p), np.sqrt(1.0 - a), np.sqrt(1.0 - p)


def step_coefficients(chain: Chain, formula: str = "stable") -> StepCoefficients:
    """r_t = √(ᾱ_prev/ᾱ_t) and b_t eq. (5) for every step of the chain (float64 [S])."""
    _check_formula(formula)
    a, p = chain.alpha_bar_t, chain.alpha_bar_prev
    sa, sp, sv, sw = _sqrt_terms(chain)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.sqrt(p / a)
        if formula == "literal":
            b = np.sqrt(1.0 - p) - np.sqrt(p) * np.sqrt(1.0 - a) / np.sqrt(a)
        else:
            b = -(p - a) / (sa * (sp * sv + sa * sw))
    return StepCoefficients(r=r, b=b)


def contraction_threshold(chain: Chain, formula: str = "stable") -> np.ndarray:
    """Contraction threshold L*_t = (√(ᾱ_prev/ᾱ_t) - 1)/|b_t|, eq. (10); float64 [S]."""
    _check_formula(formula)
    sa, sp, sv, sw = _sqrt_terms(chain)
    if formula == "literal":
        c = step_coefficients(chain, "literal")
        with np.errstate(divide="ignore", invalid="ignore"):
            return (np.sqrt(chain.alpha_bar_prev / chain.alpha_bar_t) - 1.0) / np.abs(c.b)
    return (sp * sv + sa * sw) / (sp + sa)


def expansion_function(chain: Chain, lam: np.ndarray | float, formula: str = "stable") -> np.ndarray:
    """Diagonal expansion function f_t(λ), eq. (26)/(62); returns float64 [S, *lam.shape]."""
    _check_formula(formula)
    lam = np.asarray(lam, dtype=np.float64)
    if np.any(lam < 0):
        raise ValueError("expansion_function: λ must be >= 0 (a covariance eigenvalue)")
    shape = (len(chain),) + (1,) * lam.ndim
    a = chain.alpha_bar_t.reshape(shape)
    p = chain.alpha_bar_prev.reshape(shape)
    if formula == "literal":
        v = 1.0 - a
        b = np.sqrt(1.0 - p) - np.sqrt(p) * np.sqrt(1.0 - a) / np.sqrt(a)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sqrt(p / a) - np.abs(b) * np.sqrt(v) / (lam * a + v)
    v, w = 1.0 - a, 1.0 - p
    return (lam * np.sqrt(p * a) + np.sqrt(w * v)) / (lam * a + v)


def expansion_threshold(chain: Chain, formula: str = "stable") -> np.ndarray:
    """Patch expansion threshold λ*(t) with f_t(λ*(t)) = 1, eq. (27)/(53); float64 [S] (+inf if ᾱ_t = 0)."""
    _check_formula(formula)
    sa, sp, sv, sw = _sqrt_terms(chain)
    with np.errstate(divide="ignore", invalid="ignore"):
        if formula == "literal":
            return sv * (sv - sw) / ((sp - sa) * sa)
        return sv * (sp + sa) / ((sv + sw) * sa)
