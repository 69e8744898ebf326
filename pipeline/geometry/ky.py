"""Kaplan-Yorke dimension: eq. (44) from any Lyapunov spectrum, eq. (47) from patch spectra (Thm 26),
and the suppression-corrected eq. (48)-(50) (Thm 27)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .chains import Chain
from .coefficients import expansion_function
from .moran import lyapunov_exponent


@dataclass(frozen=True)
class KYResult:
    """Eq. (44): d_KY = j* + Σ_{i<=j*} ℓ_i / |ℓ_{j*+1}|; saturated when every partial sum is >= 0 (d = n)."""

    dimension: float
    j_star: int
    n: int
    saturated: bool


def ky_dimension(exponents: np.ndarray) -> KYResult:
    """Kaplan-Yorke dimension eq. (44) of a Lyapunov spectrum (any order; sorted decreasing here)."""
    ell = np.sort(np.asarray(exponents, dtype=np.float64).reshape(-1))[::-1]
    if ell.size == 0 or not np.all(np.isfinite(ell)):
        raise ValueError("ky_dimension: need a non-empty, finite Lyapunov spectrum")
    csum = np.cumsum(ell)
    nonneg = np.nonzero(csum >= 0.0)[0]
    # j* = max{j : Σ_{i<=j} ℓ_i >= 0}; once the (decreasing) partial sums turn negative they stay so.
    j = int(nonneg[-1]) + 1 if nonneg.size else 0
    if j == ell.size:
        return KYResult(float(ell.size), j, int(ell.size), True)
    head = float(csum[j - 1]) if j > 0 else 0.0
    return KYResult(j + head / abs(float(ell[j])), j, int(ell.size), False)


def _as_counts(n_k: np.ndarray | int, M: int) -> np.ndarray:
    n = np.broadcast_to(np.asarray(n_k, dtype=np.int64), (M,)).copy()
    if np.any(n < 1):
        raise ValueError("n_k (patch dimension C·P²) must be >= 1 for every patch")
    return n


def expanded_spectrum(exponents_k: np.ndarray, n_k: np.ndarray | int) -> np.ndarray:
    """The full Lyapunov spectrum of isotropic patches: Λ_k repeated n_k times (Thm 26)."""
    e = np.asarray(exponents_k, dtype=np.float64).reshape(-1)
    return np.repeat(e, _as_counts(n_k, e.size))


@dataclass(frozen=True)
class PatchKYResult:
    """Eq. (47) (or eq. (50) with Λ_eff): N+ + Σ_{k∈K+} n_k Λ_k / |Λ_{k*}|, or the Thm 26 lower bound."""

    dimension: float  # eq. (47)/(50) value; the paper's bound N+ + N+Λ+/|Λ_k*| when condition (46) fails
    exact: bool  # True when condition (46) holds (or no patch contracts, or none expands)
    condition_46: bool
    lower_bound: bool  # True when `dimension` is only Thm 26's stated lower bound (see valid_lower_bound)
    n_plus: int  # N+ = Σ_{k∈K+} n_k (expanding directions)
    k_star: int | None  # contracting patch with the largest λ_k (None when every patch expands)
    lambda_minus: float | None  # Λ_{k*} < 0
    expanding: np.ndarray  # bool [M]: Λ_k >= 0 (λ_k >= λ**, Thm 25a)
    exponents: np.ndarray  # Λ_k [M]
    dimension_44: float  # eq. (44) on the expanded spectrum (always exact under Thm 26's hypotheses)
    # When (46) fails, j* >= N+ + 1, so d_KY >= N+ + 1. Thm 26's stated bound N+ + N+Λ+/|Λ_k*| is NOT a
    # lower bound in general (it can exceed n, and eq. (44) itself): k* has the least negative exponent.
    valid_lower_bound: float


def _patch_ky(exps: np.ndarray, lambdas: np.ndarray, n: np.ndarray) -> PatchKYResult:
    # Λ_k = 0 exactly counts as expanding: eq. (44)'s j* = max{j : Σ ℓ_i >= 0} takes zero exponents in.
    expanding = exps >= 0.0
    n_plus = int(n[expanding].sum())
    d44 = ky_dimension(expanded_spectrum(exps, n)).dimension
    if not expanding.any():
        return PatchKYResult(0.0, True, True, False, 0, None, None, expanding, exps, d44, 0.0)
    if expanding.all():
        return PatchKYResult(
            float(n.sum()), True, True, False, n_plus, None, None, expanding, exps, d44, float(n.sum())
        )
    contracting = np.nonzero(~expanding)[0]
    # k* is the contracting patch of highest variance (Thm 26) — its exponent is the least negative one
    # when Λ is increasing in λ, which holds for the Gaussian exponents (f_t increasing, Thm 17c).
    k_star = int(contracting[np.argmax(lambdas[contracting])])
    lam_minus = float(exps[k_star])
    total = float(np.sum(n[expanding] * exps[expanding]))
    cond = total < abs(lam_minus)
    if cond:
        d = n_plus + total / abs(lam_minus)
        valid = d
    else:
        lam_plus = float(exps[expanding].min())
        d = n_plus + n_plus * lam_plus / abs(lam_minus)
        valid = float(n_plus + 1)
    return PatchKYResult(
        float(d), cond, cond, not cond, n_plus, k_star, lam_minus, expanding, exps, d44, float(valid)
    )


def patch_ky_dimension(
    chain: Chain, lambdas: np.ndarray, n_k: np.ndarray | int, formula: str = "stable"
) -> PatchKYResult:
    """KY dimension from patch variances λ_k and sizes n_k, eq. (47) with condition (46) (Thm 26).

    Λ_k = Λ(λ_k) on this chain. When (46) fails, `dimension` is the theorem's stated bound N+ + N+Λ+/|Λ_k*|
    (lower_bound=True) — which does not bound eq. (44) from below in general; use dimension_44 (exact) or
    valid_lower_bound (N+ + 1).
    """
    lam = np.asarray(lambdas, dtype=np.float64).reshape(-1)
    n = _as_counts(n_k, lam.size)
    return _patch_ky(lyapunov_exponent(chain, lam, formula), lam, n)


def suppressed_lyapunov_exponents(chain: Chain, lambdas: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Λ_eff,k = (1/S) Σ_t E[log g_k,t], g_k,t = f_t(λ_k) - S_k,t, eqs. (48)-(49).

    S: suppression field, shape [steps, M] or [samples, steps, M] (samples of x_t ~ q(x_t); the mean of
    log g over the sample axis is the expectation of eq. (49)). Requires S_k,t < f_t(λ_k) (Thm 27).
    """
    lam = np.asarray(lambdas, dtype=np.float64).reshape(-1)
    S = np.asarray(S, dtype=np.float64)
    if S.ndim == 2:
        S = S[None]
    if S.ndim != 3 or S.shape[1:] != (len(chain), lam.size):
        raise ValueError(
            f"S must have shape [steps={len(chain)}, M={lam.size}] or [samples, steps, M], got {S.shape}"
        )
    g = expansion_function(chain, lam)[None] - S
    if np.any(g <= 0.0):
        raise ValueError(
            "suppression reverses the sign of a diagonal factor (S_k,t >= f_t(λ_k)); Thm 27 assumes "
            "S_k,t < f_t(λ_k): check the S measurement or its timestep alignment with the chain"
        )
    return np.log(g).mean(axis=0).sum(axis=0) / len(chain)


def suppressed_ky_dimension(
    chain: Chain, lambdas: np.ndarray, n_k: np.ndarray | int, S: np.ndarray
) -> PatchKYResult:
    """Suppression-corrected KY dimension eq. (50) from Λ_eff,k (eqs. 48-49) (Thm 27).

    k** = the non-expanding patch of highest λ_k (as in the theorem); `exact` reports the analogue of
    condition (46); dimension_44 is eq. (44) on the expanded suppressed spectrum.
    """
    lam = np.asarray(lambdas, dtype=np.float64).reshape(-1)
    n = _as_counts(n_k, lam.size)
    return _patch_ky(suppressed_lyapunov_exponents(chain, lam, S), lam, n)
