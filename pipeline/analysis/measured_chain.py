"""The DDIM chain a run measured, and the Moran thresholds on it with bracket diagnostics (§7.4, §7.7).

Every formula comes from pipeline.geometry (f_t eq. 26, λ*(t) eq. 27, the Moran solver of eq. 45);
this module only adds what the analysis needs around them: the run's step index beside each step, and
a Moran answer that reports "no root in the bracket" as such instead of raising or returning an end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.geometry import Chain, expansion_function, moran_root

__all__ = ["MeasuredChain", "MoranSolution", "moran_solution"]

# §7.7 searches λ*** in a bracket it does not print; this one contains every λ the paper reports.
DEFAULT_BRACKET = (1.0, 1.0e4)


@dataclass(frozen=True, eq=False)
class MeasuredChain(Chain):
    """A geometry Chain on the measured steps, plus each step's index in the run's chain (``step``)."""

    step: np.ndarray = None

    def __post_init__(self) -> None:
        super().__post_init__()
        step = np.array(self.step, dtype=np.int64, copy=True).reshape(-1)
        if step.size != len(self):
            raise ValueError(f"chain {self.name!r}: {step.size} step indices for {len(self)} steps")
        step.setflags(write=False)
        object.__setattr__(self, "step", step)

    @property
    def t(self) -> np.ndarray:
        """Paper timesteps of the measured steps (the tables' t column)."""
        return self.timesteps


@dataclass(frozen=True)
class MoranSolution:
    """Root of prod_t g_t(lambda) = 1 on a bracket, with the diagnostics needed to trust it.

    status: 'root' (sign change found and solved), 'above_bracket' (G < 1 up to the bracket's upper
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
                f"{self.iterations} Brent iterations){extra}"
            )
        if self.status == "above_bracket":
            return (
                f"no root in [{lo:g}, {hi:g}]: G < 1 on the whole bracket (log G(hi) = {self.log_G_hi:.3g}), "
                f"so the threshold is > {hi:g}; reporting the bracket end would be wrong"
            )
        return (
            f"no root in [{lo:g}, {hi:g}]: G > 1 already at the lower end "
            f"(log G(lo) = {self.log_G_lo:.3g}), so the threshold is < {lo:g}"
        )


def _log_G_fn(chain: Chain, suppression: np.ndarray | None, lambda_k: np.ndarray | None):
    """log G(λ) = Σ_t log(f_t(λ) - S_t(λ)) (eq. 45 with S = 0, §7.7's corrected product otherwise)."""
    if suppression is None:
        S_of = None
    else:
        if lambda_k is None:
            raise ValueError("suppression-corrected Moran threshold needs lambda_k for its patches")
        order = np.argsort(lambda_k)
        lam_sorted = np.asarray(lambda_k, dtype=np.float64)[order]
        S_sorted = np.asarray(suppression, dtype=np.float64)[:, order]

        def S_of(lam: float) -> np.ndarray:
            # S_k,t linearly interpolated across patches in λ, constant beyond the measured range
            return np.array([np.interp(lam, lam_sorted, row) for row in S_sorted])

    def log_G(lam: float) -> float:
        f = expansion_function(chain, lam)
        if S_of is not None:
            f = f - S_of(lam)
        if np.any(~(f > 0)):
            return -math.inf
        return float(np.log(f).sum())

    return log_G


def moran_solution(
    chain: Chain,
    suppression: np.ndarray | None = None,
    lambda_k: np.ndarray | None = None,
    bracket: tuple[float, float] = DEFAULT_BRACKET,
) -> MoranSolution:
    """Solve prod_t (f_t(lambda) - S_t(lambda)) = 1 on a bracket, eq. (45) / (48).

    With suppression None this is the Gaussian lambda** of eq. (45). With suppression [S, M] and the
    patches' lambda_k [M], S_t(lambda) is S_k,t linearly interpolated across patches in lambda
    (constant beyond the measured range): the suppression-corrected lambda*** of §7.7. The root is
    found by pipeline.geometry.moran_root, the solver of every Moran threshold.
    """
    log_G = _log_G_fn(chain, suppression, lambda_k)
    lo, hi = float(bracket[0]), float(bracket[1])
    g_lo, g_hi = log_G(lo), log_G(hi)
    vals = np.array([log_G(x) for x in np.geomspace(lo, hi, 65)])
    nonpos = bool(np.any(np.isneginf(vals))) or math.isinf(g_lo) or math.isinf(g_hi)
    changes = int(np.count_nonzero(np.diff(np.sign(vals)) != 0))
    if g_lo > 0:
        return MoranSolution(math.nan, "below_bracket", (lo, hi), g_lo, g_hi, math.nan, 0, changes, nonpos)
    if g_hi < 0:
        return MoranSolution(math.nan, "above_bracket", (lo, hi), g_lo, g_hi, math.nan, 0, changes, nonpos)
    root, iterations, _ = moran_root(log_G, lo, hi, g_lo, g_hi, name=chain.name)
    res = abs(log_G(root))
    return MoranSolution(root, "root", (lo, hi), g_lo, g_hi, res, iterations, changes, nonpos)
