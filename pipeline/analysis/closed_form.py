"""Closed forms evaluated on the chain a run actually measured (its alpha_bar_t, alpha_bar_prev columns).

An independent route to the numbers the measurement stage writes (f_t, b_t), so the analysis can
check them, and a Moran solver that reports its bracket instead of returning the bracket's end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MeasuredChain:
    """Per DDIM step (sorted by step, i.e. decreasing t): paper t and the alpha_bar it maps between."""

    step: np.ndarray
    t: np.ndarray
    alpha_bar_t: np.ndarray
    alpha_bar_prev: np.ndarray

    def __len__(self) -> int:
        return len(self.t)


def step_coefficients(alpha_bar_t, alpha_bar_prev) -> tuple[np.ndarray, np.ndarray]:
    """r_t = sqrt(a_prev / a_t) and b_t = sqrt(1 - a_prev) - r_t sqrt(1 - a_t) (< 0), eqs. (4)-(5)."""
    a = np.asarray(alpha_bar_t, dtype=np.float64)
    ap = np.asarray(alpha_bar_prev, dtype=np.float64)
    r = np.sqrt(ap / a)
    return r, np.sqrt(1.0 - ap) - r * np.sqrt(1.0 - a)


def expansion_function(alpha_bar_t, alpha_bar_prev, lam) -> np.ndarray:
    """f_t(lambda) = r_t - |b_t| sqrt(v_t) / (lambda a_t + v_t), eq. (26); shape [S, *lam.shape].

    Evaluated as (lambda sqrt(a_prev a_t) + sqrt(v_prev v_t)) / (lambda a_t + v_t), the same quantity with
    no cancellation between r_t and the score term (which loses every digit as a_t -> 0).
    """
    a = np.asarray(alpha_bar_t, dtype=np.float64)
    ap = np.asarray(alpha_bar_prev, dtype=np.float64)
    lam = np.asarray(lam, dtype=np.float64)
    shape = (-1,) + (1,) * lam.ndim
    a, ap = a.reshape(shape), ap.reshape(shape)
    v, vp = 1.0 - a, 1.0 - ap
    return (lam[None, ...] * np.sqrt(ap * a) + np.sqrt(vp * v)) / (lam[None, ...] * a + v)


def expansion_threshold(alpha_bar_t, alpha_bar_prev) -> np.ndarray:
    """lambda*(t) = sqrt(v_t)(sqrt(v_t) - sqrt(v_prev)) / ((sqrt(a_prev) - sqrt(a_t)) sqrt(a_t)), eq. (27).

    Both differences equal (a_prev - a_t) / (sum of the square roots); cancelling that factor gives
    sqrt(v_t)(sqrt(a_prev) + sqrt(a_t)) / (sqrt(a_t)(sqrt(v_t) + sqrt(v_prev))), free of cancellation.
    """
    a = np.asarray(alpha_bar_t, dtype=np.float64)
    ap = np.asarray(alpha_bar_prev, dtype=np.float64)
    v, vp = 1.0 - a, 1.0 - ap
    with np.errstate(divide="ignore"):
        return np.sqrt(v) * (np.sqrt(ap) + np.sqrt(a)) / (np.sqrt(a) * (np.sqrt(v) + np.sqrt(vp)))


@dataclass(frozen=True)
class MoranSolution:
    """Root of prod_t g_t(lambda) = 1 on a bracket, with the diagnostics needed to trust it.

    status: 'root' (sign change found and bisected), 'above_bracket' (G < 1 up to the bracket's upper
    end: the threshold exceeds it, only a lower bound is known) or 'below_bracket' (G > 1 already at
    the lower end). Where some corrected factor g_t <= 0 (Theorem 27 assumes S_k,t < f_t), G is taken as
    below 1 and ``factor_nonpositive`` says so.
    """

    value: float
    status: str
    bracket: tuple[float, float]
    log_G_lo: float
    log_G_hi: float
    residual: float
    iterations: int
    sign_changes_on_grid: int
    factor_nonpositive: bool = False

    def describe(self) -> str:
        lo, hi = self.bracket
        warn = (
            "; NOTE: some corrected factor f_t - S_t <= 0 on the bracket (Theorem 27 assumes S < f), "
            "taken as G < 1 there"
            if self.factor_nonpositive
            else ""
        )
        return self._describe(lo, hi) + warn

    def _describe(self, lo: float, hi: float) -> str:
        if self.status == "root":
            extra = (
                ""
                if self.sign_changes_on_grid <= 1
                else (
                    f"; WARNING: log G changes sign {self.sign_changes_on_grid} times on a log grid (not monotone)"
                )
            )
            return (
                f"root {self.value:.6g} in bracket [{lo:g}, {hi:g}] (|log G| = {self.residual:.1e}, "
                f"{self.iterations} bisections){extra}"
            )
        if self.status == "above_bracket":
            return (
                f"no root in [{lo:g}, {hi:g}]: G < 1 on the whole bracket (log G(hi) = {self.log_G_hi:.3g}), "
                f"so the threshold is > {hi:g}; reporting the bracket end would be wrong"
            )
        if self.status == "below_bracket":
            return (
                f"no root in [{lo:g}, {hi:g}]: G > 1 already at the lower end "
                f"(log G(lo) = {self.log_G_lo:.3g}), so the threshold is < {lo:g}"
            )


def _log_G(lam: float, a, ap, lam_k_sorted, S_sorted) -> float:
    f = expansion_function(a, ap, np.array([lam]))[:, 0]
    if S_sorted is not None:
        s = np.array([np.interp(lam, lam_k_sorted, S_sorted[i]) for i in range(len(a))])
        f = f - s
    if np.any(~(f > 0)):
        return -math.inf
    return float(np.log(f).sum())


def moran_threshold(
    alpha_bar_t,
    alpha_bar_prev,
    suppression: np.ndarray | None = None,
    lambda_k: np.ndarray | None = None,
    bracket: tuple[float, float] = (1.0, 1.0e4),
    rtol: float = 1e-12,
) -> MoranSolution:
    """Solve prod_t (f_t(lambda) - S_t(lambda)) = 1 by bisection in log lambda, eq. (45) / (48).

    With suppression None this is the Gaussian lambda** of eq. (45). With suppression [S, M] and the
    patches' lambda_k [M], S_t(lambda) is S_k,t linearly interpolated across patches in lambda
    (constant beyond the measured range): the suppression-corrected lambda*** of §7.7.
    """
    a = np.asarray(alpha_bar_t, dtype=np.float64)
    ap = np.asarray(alpha_bar_prev, dtype=np.float64)
    lam_sorted = S_sorted = None
    if suppression is not None:
        if lambda_k is None:
            raise ValueError("suppression-corrected Moran threshold needs lambda_k for its patches")
        order = np.argsort(lambda_k)
        lam_sorted = np.asarray(lambda_k, dtype=np.float64)[order]
        S_sorted = np.asarray(suppression, dtype=np.float64)[:, order]
    lo, hi = float(bracket[0]), float(bracket[1])
    g_lo = _log_G(lo, a, ap, lam_sorted, S_sorted)
    g_hi = _log_G(hi, a, ap, lam_sorted, S_sorted)
    grid = np.geomspace(lo, hi, 65)
    vals = np.array([_log_G(x, a, ap, lam_sorted, S_sorted) for x in grid])
    nonpos = bool(np.any(np.isneginf(vals))) or math.isinf(g_lo) or math.isinf(g_hi)
    changes = int(np.count_nonzero(np.diff(np.sign(vals)) != 0))
    if g_lo > 0:
        return MoranSolution(math.nan, "below_bracket", (lo, hi), g_lo, g_hi, math.nan, 0, changes, nonpos)
    if g_hi < 0:
        return MoranSolution(math.nan, "above_bracket", (lo, hi), g_lo, g_hi, math.nan, 0, changes, nonpos)
    x0, x1 = math.log(lo), math.log(hi)
    it = 0
    while x1 - x0 > rtol and it < 200:
        mid = 0.5 * (x0 + x1)
        if _log_G(math.exp(mid), a, ap, lam_sorted, S_sorted) < 0:
            x0 = mid
        else:
            x1 = mid
        it += 1
    root = math.exp(0.5 * (x0 + x1))
    res = abs(_log_G(root, a, ap, lam_sorted, S_sorted))
    return MoranSolution(root, "root", (lo, hi), g_lo, g_hi, res, it, changes, nonpos)
