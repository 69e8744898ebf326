"""Discrete Moran equation Π_t f_t(λ**) = 1, eq. (45), and the mean Lyapunov exponent Λ(μ) (Thm 25)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from .chains import Chain
from .coefficients import _check_formula, expansion_function, expansion_threshold

XTOL = 1e-12


class MoranNoRootError(ValueError):
    """Raised when log G(λ) = Σ_t log f_t(λ) does not change sign on the search bracket."""


@dataclass(frozen=True)
class MoranResult:
    """Solution of eq. (45) for one chain, with the §6.2 / §7.4 companions min λ*(t) and the margin."""

    chain: str
    lambda_starstar: float  # λ**, root of Σ_t log f_t(λ) = 0
    log_G: float  # residual Σ_t log f_t(λ**) at the returned root
    bracket: tuple[float, float]  # the sign-changing bracket the solver refined
    iterations: int
    function_calls: int
    xtol: float
    min_lambda_star: float  # min_t λ*(t), eq. (27); Thm 25(c): < λ**
    argmin_t: int  # paper timestep of that minimum
    formula: str

    @property
    def margin(self) -> float:
        """λ** - min_t λ*(t) (§7.4 prints 1.80e-2 for the 50-step chain)."""
        return self.lambda_starstar - self.min_lambda_star


def _log_G_fn(chain: Chain, formula: str):
    # Precomputed per-step constants make each evaluation a handful of vector ops (benchmark goal < 10 ms).
    if formula == "literal":
        return lambda lam: float(np.sum(np.log(expansion_function(chain, lam, "literal"))))
    a, p = chain.alpha_bar_t, chain.alpha_bar_prev
    v = 1.0 - a
    num0 = np.sqrt((1.0 - p) * v)
    num1 = np.sqrt(p * a)

    def log_G(lam: float) -> float:
        return float(np.sum(np.log((lam * num1 + num0) / (lam * a + v))))

    return log_G


def log_moran_product(chain: Chain, lam: np.ndarray | float, formula: str = "stable") -> np.ndarray:
    """log G(λ) = Σ_t log f_t(λ) (log of the eq. (45) product), same shape as λ."""
    return np.sum(np.log(expansion_function(chain, lam, formula)), axis=0)


def lyapunov_exponent(
    chain: Chain, mu: np.ndarray | float, formula: str = "stable", normalize: str = "steps"
) -> np.ndarray:
    """Mean Lyapunov exponent Λ(μ) = (1/S) Σ_t log f_t(μ) (Thm 25), S = steps of the chain.

    normalize="steps" divides by the chain length (the paper's 1/T for the full chain), "none" returns
    the sum log G(μ), "T" is not offered since a strided chain has no other natural step count.
    """
    total = log_moran_product(chain, mu, formula)
    if normalize == "steps":
        return total / len(chain)
    if normalize == "none":
        return total
    raise ValueError(f"normalize must be 'steps' or 'none', got {normalize!r}")


def _auto_bracket(log_G, lam_star: np.ndarray) -> tuple[float, float]:
    finite = lam_star[np.isfinite(lam_star)]
    # Thm 25(c) proof: every f_t(min λ*) <= 1 and every f_t(max λ*) >= 1, so the root lies between them.
    lo = float(finite.min()) if finite.size else 1.0
    hi = float(finite.max()) if finite.size else 2.0
    lo = min(lo, 1.0)
    if hi <= lo:
        hi = lo * 2.0
    # A step with ᾱ_t = 0 has f_t ≡ √(1-ᾱ_prev) < 1 for all λ: widen until G crosses 1 or give up.
    while log_G(hi) <= 0.0 and hi < 1e300:
        hi *= 1e3
    return lo, hi


def moran_root(
    log_G, lo: float, hi: float, g_lo: float, g_hi: float, xtol: float = XTOL, name: str = ""
) -> tuple[float, int, int]:
    """Root of log G on [lo, hi] given its values at both ends (opposite signs): (root, iterations, calls).

    The one solver behind every Moran threshold: eq. (45)'s λ** here and the suppression-corrected
    λ*** of §7.7 in the analysis. Brent's method to xtol (absolute in λ); an exact zero at an end is
    returned as is. A log G of -inf (some factor <= 0) counts as G < 1: it is passed to Brent as the
    most negative float, so the bracket keeps its sign change and the method falls back to bisection.
    """
    if g_lo == 0.0:
        return lo, 0, 2
    if g_hi == 0.0:
        return hi, 0, 2
    lowest = -np.finfo(float).max

    def finite(lam: float) -> float:
        return max(float(log_G(lam)), lowest)

    root, info = brentq(finite, lo, hi, xtol=xtol, rtol=4.5 * np.finfo(float).eps, full_output=True)
    if not info.converged:
        raise MoranNoRootError(f"chain {name!r}: Brent did not converge ({info.flag})")
    return float(root), int(info.iterations), int(info.function_calls) + 2


def moran_threshold(
    chain: Chain,
    bracket: tuple[float, float] | None = None,
    xtol: float = XTOL,
    formula: str = "stable",
) -> MoranResult:
    """Global expansion threshold λ**: unique root of Π_t f_t(λ) = 1, eq. (45) (Thm 25), to xtol (abs.).

    bracket=None uses [min(1, min_t λ*(t)), max_t λ*(t)], which always brackets the root (Thm 25 proof).
    Raises MoranNoRootError (a ValueError) naming log G at both ends when the bracket has no sign change;
    the bracket end is never returned as a root.
    """
    _check_formula(formula)
    log_G = _log_G_fn(chain, formula)
    lam_star = expansion_threshold(chain)
    if bracket is None:
        lo, hi = _auto_bracket(log_G, lam_star)
    else:
        lo, hi = (float(bracket[0]), float(bracket[1]))
        if not (0.0 < lo < hi):
            raise ValueError(f"moran_threshold: bracket must satisfy 0 < lo < hi, got {bracket!r}")
    g_lo, g_hi = log_G(lo), log_G(hi)
    if not (np.isfinite(g_lo) and np.isfinite(g_hi)) or g_lo * g_hi > 0 or (g_lo == 0 and g_hi == 0):
        raise MoranNoRootError(
            f"chain {chain.name!r}: no root of Σ_t log f_t(λ) in [{lo!r}, {hi!r}] (log G = {g_lo!r} at lo, "
            f"{g_hi!r} at hi; formula={formula!r}). Widen the bracket (bracket=None searches the whole "
            "range), or check the chain: Thm 25 needs a strictly decreasing schedule with ᾱ_t > 0."
        )
    root, iters, calls = moran_root(log_G, lo, hi, g_lo, g_hi, xtol, chain.name)
    i = int(np.nanargmin(np.where(np.isfinite(lam_star), lam_star, np.inf)))
    return MoranResult(
        chain=chain.name,
        lambda_starstar=float(root),
        log_G=float(log_G(root)),
        bracket=(lo, hi),
        iterations=int(iters),
        function_calls=int(calls),
        xtol=float(xtol),
        min_lambda_star=float(lam_star[i]),
        argmin_t=int(chain.timesteps[i]),
        formula=formula,
    )
