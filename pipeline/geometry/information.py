"""Information gain IG_t and per-step KY growth Δd_t, eqs. (54)-(57) (Def. 31, Thm 32, Table 2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from .chains import Chain
from .coefficients import expansion_function
from .moran import moran_threshold


def _patches(lambdas: np.ndarray, n_k: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    lam = np.asarray(lambdas, dtype=np.float64).reshape(-1)
    n = np.broadcast_to(np.asarray(n_k, dtype=np.float64), lam.shape).copy()
    if lam.size == 0 or np.any(lam <= 0) or np.any(n < 1):
        raise ValueError("need patch variances λ_k > 0 and patch sizes n_k >= 1 (one per patch)")
    return lam, n


def information_gain(
    chain: Chain, lambdas: np.ndarray, n_k: np.ndarray | int, kind: str = "approx"
) -> np.ndarray:
    """IG_t per step, float64 [S]: kind="approx" is eq. (55) Σ_k n_k (log f_t(λ_k))²;
    kind="exact" is the Gaussian KL of Def. 31, Σ_k n_k/2 (e^{2ε_k} - 1 - 2ε_k), ε_k = log(σ_{t-1,k}/σ_{t,k}),
    σ²_{t,k} = ᾱ_t λ_k + v_t (eq. 54)."""
    lam, n = _patches(lambdas, n_k)
    if kind == "approx":
        return (n * np.log(expansion_function(chain, lam)) ** 2).sum(axis=1)
    if kind == "exact":
        a = chain.alpha_bar_t[:, None]
        p = chain.alpha_bar_prev[:, None]
        two_eps = np.log((p * lam + 1.0 - p) / (a * lam + 1.0 - a))
        return (0.5 * n * np.expm1(two_eps) - 0.5 * n * two_eps).sum(axis=1)
    raise ValueError(f"kind must be 'approx' (eq. 55) or 'exact' (eq. 54 KL), got {kind!r}")


def ky_growth(
    chain: Chain, lambdas: np.ndarray, n_k: np.ndarray | int, lambda_starstar: float | None = None
) -> np.ndarray:
    """Δd_t ≈ Σ_{k: λ_k > λ**} n_k log f_t(λ_k), eq. (56), float64 [S] (λ** of this chain by default)."""
    lam, n = _patches(lambdas, n_k)
    lss = moran_threshold(chain).lambda_starstar if lambda_starstar is None else float(lambda_starstar)
    keep = lam > lss
    return (n[keep] * np.log(expansion_function(chain, lam[keep]))).sum(axis=1)


def cs_bound(
    chain: Chain, lambdas: np.ndarray, n_k: np.ndarray | int, lambda_starstar: float | None = None
) -> np.ndarray:
    """Right side of eq. (57): √N++ · √IG_t, float64 [S] (Thm 32: Δd_t <= this)."""
    lam, n = _patches(lambdas, n_k)
    lss = moran_threshold(chain).lambda_starstar if lambda_starstar is None else float(lambda_starstar)
    return np.sqrt(n[lam > lss].sum()) * np.sqrt(information_gain(chain, lam, n))


@dataclass(frozen=True)
class InformationEqualisation:
    """Table 2 columns for one chain and patch spectrum."""

    chain: str
    cv_ig: float  # CV(IG_t), population std / mean over the chain's steps
    cv_abs_dd: float  # CV(|Δd_t|)
    spearman_rho: float  # Spearman ρ(IG_t, |Δd_t|)
    ratio_over_theory: float  # mean_t(IG_t / Δd_t²) · N++  (= 1 at Cauchy-Schwarz equality)
    cv_ratio: float  # CV of IG_t / Δd_t² (§6.3 prints 3.4% linear, 2.5% cosine)
    n_plusplus: int
    lambda_starstar: float


def information_equalisation(
    chain: Chain, lambdas: np.ndarray, n_k: np.ndarray | int, kind: str = "approx"
) -> InformationEqualisation:
    """Table 2 / §6.3 statistics of IG_t (eq. 55) and |Δd_t| (eq. 56) across the chain's steps."""
    lam, n = _patches(lambdas, n_k)
    lss = moran_threshold(chain).lambda_starstar
    ig = information_gain(chain, lam, n, kind)
    dd = ky_growth(chain, lam, n, lss)
    add = np.abs(dd)
    npp = int(n[lam > lss].sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = ig / dd**2
    ok = np.isfinite(ratio)
    rho = float(spearmanr(ig, add).statistic) if ig.size > 2 else float("nan")
    return InformationEqualisation(
        chain=chain.name,
        cv_ig=float(ig.std() / ig.mean()),
        cv_abs_dd=float(add.std() / add.mean()) if add.mean() > 0 else float("nan"),
        spearman_rho=rho,
        ratio_over_theory=float(ratio[ok].mean() * npp) if ok.any() and npp else float("nan"),
        cv_ratio=float(ratio[ok].std() / ratio[ok].mean()) if ok.any() else float("nan"),
        n_plusplus=npp,
        lambda_starstar=lss,
    )
