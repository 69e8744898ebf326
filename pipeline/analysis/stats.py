"""Statistics used by the reproduced tables, in float64, each checked against hand-worked cases.

Spearman's rho with average ranks for ties (two-sided p from the t approximation, as the paper's
tables use), the exact permutation p-value for small n (Table 6), OLS with a t-based confidence
interval (Table 10) and the percentile bootstrap with an explicit seed (Table 11) go through
scipy.stats (spearmanr, permutation_test, linregress, bootstrap); tests/stats_reference.py holds
independent hand-written versions they are checked against. The outlier rule for the per-seed
products s_hat (Table 4) and the sign-flip rule (Table 9) are the project's own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats as _sps

# Above this n, enumerating n! permutations is too slow; a seeded Monte Carlo estimate is used.
EXACT_PERMUTATION_MAX_N = 10
OUTLIER_Z = 3.5


def rank_average(x) -> np.ndarray:
    """1-based ranks with ties given the mean of the ranks they span (scipy.stats.rankdata, 'average')."""
    return _sps.rankdata(np.asarray(x, dtype=np.float64), method="average")


@dataclass(frozen=True)
class SpearmanResult:
    rho: float
    p_value: float
    n: int


def _paired_finite(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"spearman needs paired samples of equal length, got {x.shape} and {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def _constant(v: np.ndarray) -> bool:
    return bool(np.all(v == v[0]))


def spearman(x, y) -> SpearmanResult:
    """Spearman's rho (average ranks for ties) and its two-sided p from t = rho sqrt((n-2)/(1-rho^2)).

    scipy.stats.spearmanr on the finite pairs. rho is NaN when either variable is constant (ranks carry
    no order): the expected outcome for S_k,t on the Gaussian oracle, where S = 0 exactly; checked here
    rather than left to scipy's ConstantInputWarning.
    """
    x, y = _paired_finite(x, y)
    n = len(x)
    if n < 3 or _constant(x) or _constant(y):
        return SpearmanResult(math.nan, math.nan, n)
    r = _sps.spearmanr(x, y)
    rho = float(np.clip(r.statistic, -1.0, 1.0))
    return SpearmanResult(rho, 0.0 if abs(rho) >= 1.0 else float(r.pvalue), n)


@dataclass(frozen=True)
class PermutationResult:
    rho: float
    p_value: float
    n: int
    exact: bool
    n_permutations: int


def spearman_permutation_test(
    x, y, *, exact_max_n: int = EXACT_PERMUTATION_MAX_N, n_resamples: int = 200_000, seed: int = 0
) -> PermutationResult:
    """Two-sided permutation p-value of Spearman's rho: P(|rho_perm| >= |rho_obs|) under H0.

    scipy.stats.permutation_test (pairings) on the statistic |sum of centred rank products|: exact over all
    n! orderings for n <= exact_max_n, otherwise ``n_resamples`` permutations drawn from default_rng(seed),
    counted as (hits + 1)/(n_resamples + 1) so the p-value is never 0.
    """
    x, y = _paired_finite(x, y)
    n = len(x)
    if n < 2 or _constant(x) or _constant(y):
        return PermutationResult(math.nan, math.nan, n, False, 0)
    rx, ry = rank_average(x), rank_average(y)
    dx = rx - rx.mean()

    def abs_cov(ry_perm, axis=-1):
        # |rho| up to the permutation-invariant factor sqrt(Sxx Syy): the same ordering of the null
        return np.abs(((ry_perm - ry_perm.mean(axis=axis, keepdims=True)) * dx).sum(axis=axis))

    exact = n <= exact_max_n
    res = _sps.permutation_test(
        (ry,),
        abs_cov,
        permutation_type="pairings",
        n_resamples=np.inf if exact else n_resamples,
        alternative="greater",
        vectorized=True,
        batch=500_000,
        rng=np.random.default_rng(seed),
    )
    rho = float(np.clip(_sps.spearmanr(x, y).statistic, -1.0, 1.0))
    return PermutationResult(rho, float(res.pvalue), n, exact, math.factorial(n) if exact else n_resamples)


@dataclass(frozen=True)
class OLSResult:
    """y = intercept + slope * x, with t-based (1 - alpha) intervals."""

    slope: float
    intercept: float
    slope_se: float
    intercept_se: float
    slope_ci: tuple[float, float]
    r2: float
    n: int
    alpha: float

    def p_slope_vs(self, value: float, alternative: str = "two-sided") -> float:
        """p-value of H0: slope = value (alternative: 'two-sided', 'less' or 'greater')."""
        if not self.slope_se > 0:
            return math.nan
        t = (self.slope - value) / self.slope_se
        df = self.n - 2
        if alternative == "two-sided":
            return float(2.0 * _sps.t.sf(abs(t), df))
        if alternative == "less":
            return float(_sps.t.cdf(t, df))
        if alternative == "greater":
            return float(_sps.t.sf(t, df))
        raise ValueError(f"alternative must be 'two-sided', 'less' or 'greater', got {alternative!r}")


def ols_fit(x, y, alpha: float = 0.05) -> OLSResult:
    """Ordinary least squares of y on x with an intercept (scipy.stats.linregress); needs n >= 3 pairs."""
    x, y = _paired_finite(x, y)
    n = len(x)
    if n < 3:
        raise ValueError(f"OLS needs at least 3 finite (x, y) pairs for a confidence interval, got {n}")
    if _constant(x):
        raise ValueError("OLS needs at least two distinct x values; all x are equal")
    r = _sps.linregress(x, y)
    slope, se = float(r.slope), float(r.stderr)
    q = float(_sps.t.ppf(1.0 - alpha / 2.0, n - 2))
    r2 = float(r.rvalue) ** 2 if not _constant(y) else math.nan
    return OLSResult(
        slope,
        float(r.intercept),
        se,
        float(r.intercept_stderr),
        (slope - q * se, slope + q * se),
        r2,
        n,
        alpha,
    )


@dataclass(frozen=True)
class BootstrapResult:
    estimate: float
    ci: tuple[float, float]
    se: float
    n_resamples: int
    seed: int
    alpha: float


def bootstrap_ci(
    data,
    statistic: Callable[[np.ndarray], float] = np.mean,
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
    alpha: float = 0.05,
) -> BootstrapResult:
    """Percentile bootstrap over the first axis of ``data`` (rows resampled with replacement).

    Rows are the independent units (e.g. trajectories): a statistic over an [n_traj, M] array
    resamples whole trajectories. scipy.stats.bootstrap resamples row indices drawn from
    default_rng(seed), so same data + seed => same interval, bit for bit.
    """
    data = np.asarray(data, dtype=np.float64)
    n = data.shape[0]
    if n < 1:
        raise ValueError("bootstrap needs at least one observation")
    estimate = float(statistic(data))
    if n == 1:  # every resample is the one row; scipy refuses a single observation
        return BootstrapResult(estimate, (estimate, estimate), 0.0, n_resamples, seed, alpha)
    res = _sps.bootstrap(
        (np.arange(n),),
        lambda i: float(statistic(data[np.asarray(i, dtype=np.intp)])),
        n_resamples=n_resamples,
        confidence_level=1.0 - alpha,
        method="percentile",
        vectorized=False,
        rng=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return BootstrapResult(
        estimate, (float(ci.low), float(ci.high)), float(res.standard_error), n_resamples, seed, alpha
    )


@dataclass(frozen=True)
class OutlierResult:
    """Robust z-scores of log values; ``flagged`` marks |z| > threshold (never dropped)."""

    log_values: np.ndarray
    modified_z: np.ndarray
    flagged: np.ndarray
    median_log: float
    mad_log: float
    threshold: float

    rule = (
        "modified z-score on log s_hat (Iglewicz & Hoaglin 1993): z = 0.6745 (log s - median log s) / "
        "MAD(log s); a seed is flagged when |z| > 3.5. Flagged seeds are reported, never dropped."
    )


def flag_log_outliers(values, threshold: float = OUTLIER_Z) -> OutlierResult:
    """Flag outliers of positive values (s_hat = prod_t kappa_t) by the modified z-score of their logs.

    Logs, because s_hat is a product of per-step factors: one fast-growing seed is far out on the
    multiplicative scale the paper reports (17-92 vs 3386, §7.1), while the median and MAD are not
    moved by that one seed.
    """
    v = np.asarray(values, dtype=np.float64)
    if np.any(~(v > 0)):
        raise ValueError("outlier rule works on logs and needs positive finite values (s_hat > 0)")
    lv = np.log(v)
    med = float(np.median(lv))
    mad = float(np.median(np.abs(lv - med)))
    if mad == 0.0:
        z = np.where(lv == med, 0.0, np.inf)
    else:
        z = 0.6745 * (lv - med) / mad
    return OutlierResult(lv, z, np.abs(z) > threshold, med, mad, threshold)


def significance_stars(p: float) -> str:
    """The paper's marks (Tables 3 and 9): ** p < 0.01, * p < 0.05, n.s. otherwise."""
    if p is None or not np.isfinite(p):
        return "undefined"
    return "**" if p < 0.01 else "*" if p < 0.05 else "n.s."


def sign_flip(ts_desc, rho, significant=None) -> dict[str, object]:
    """Negative-to-positive crossings of rho going down the chain (t decreasing).

    Stated rule: a flip lies between consecutive considered t_a > t_b with rho(t_a) < 0 < rho(t_b)
    (non-finite rho skipped); the reported sign-flip time is the midpoint (t_a + t_b)/2 of the LAST
    such crossing (smallest t), as the paper's 't ~ 110' between t = 120 and 100; the linearly
    interpolated zero of rho is given beside it. With ``significant`` (a mask beside rho) only the
    significant values are considered: a sign change between two insignificant values is not a flip.
    """
    sig = [True] * len(rho) if significant is None else [bool(x) for x in significant]
    pts = [
        (float(t), float(r)) for t, r, ok in zip(ts_desc, rho, sig, strict=True) if math.isfinite(r) and ok
    ]
    pts.sort(key=lambda p: -p[0])
    flips = []
    for (ta, ra), (tb, rb) in zip(pts, pts[1:], strict=False):
        if ra < 0 < rb:
            flips.append((ta, tb, ta + (tb - ta) * (0 - ra) / (rb - ra)))
    if not flips:
        return {"sign_flip_t": None, "sign_flip_t_interp": None, "n_flips": 0, "flips": []}
    ta, tb, z = flips[-1]
    return {
        "sign_flip_t": 0.5 * (ta + tb),
        "sign_flip_t_interp": z,
        "n_flips": len(flips),
        "flips": [(a, b) for a, b, _ in flips],
    }
