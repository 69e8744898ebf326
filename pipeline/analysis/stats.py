"""Statistics used by the reproduced tables, in float64, each checked against hand-worked cases.

Spearman's rho with average ranks for ties (two-sided p from the t approximation, as scipy and the
paper's tables use), the exact permutation p-value for small n (Table 6), OLS with a t-based
confidence interval (Table 10), percentile bootstrap with an explicit seed (Table 11), and the
outlier rule for the per-seed products s_hat (Table 4).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats as _sps

# Above this n, enumerating n! permutations is too slow; a seeded Monte Carlo estimate is used.
EXACT_PERMUTATION_MAX_N = 10
OUTLIER_Z = 3.5


def rank_average(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given the mean of the ranks they span."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    da, db = a - a.mean(), b - b.mean()
    den = math.sqrt(float(da @ da) * float(db @ db))
    if den == 0.0:
        return math.nan
    return float(np.clip((da @ db) / den, -1.0, 1.0))


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


def spearman(x, y) -> SpearmanResult:
    """Spearman's rho (average ranks for ties) and its two-sided p from t = rho sqrt((n-2)/(1-rho^2)).

    Pairs with a NaN are dropped. rho is NaN when either variable is constant (ranks carry no order):
    that is the expected outcome for S_k,t on the Gaussian oracle, where S = 0 exactly.
    """
    x, y = _paired_finite(x, y)
    n = len(x)
    if n < 3:
        return SpearmanResult(math.nan, math.nan, n)
    rho = _pearson(rank_average(x), rank_average(y))
    if math.isnan(rho):
        return SpearmanResult(math.nan, math.nan, n)
    if abs(rho) >= 1.0:
        return SpearmanResult(rho, 0.0, n)
    t = rho * math.sqrt((n - 2) / (1.0 - rho * rho))
    p = float(2.0 * _sps.t.sf(abs(t), n - 2))
    return SpearmanResult(rho, p, n)


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

    Exact (all n! orderings of y's ranks) for n <= exact_max_n; otherwise a Monte Carlo estimate from
    ``n_resamples`` seeded permutations, counted as (hits + 1)/(n_resamples + 1) so it is never 0.
    """
    x, y = _paired_finite(x, y)
    n = len(x)
    rx, ry = rank_average(x), rank_average(y)
    rho = _pearson(rx, ry)
    if n < 2 or math.isnan(rho):
        return PermutationResult(rho, math.nan, n, False, 0)
    dx = rx - rx.mean()
    dy = ry - ry.mean()
    den = math.sqrt(float(dx @ dx) * float(dy @ dy))
    # A relative tolerance keeps exact ties with the observed |rho| (e.g. its mirror image) counted.
    threshold = abs(rho) * den * (1.0 - 1e-12)
    if n <= exact_max_n:
        hits = 0
        total = 0
        perms = itertools.permutations(range(n))
        while True:
            chunk = np.fromiter(
                itertools.chain.from_iterable(itertools.islice(perms, 500_000)), dtype=np.int16
            )
            if chunk.size == 0:
                break
            idx = chunk.reshape(-1, n)
            num = dy[idx] @ dx
            hits += int(np.count_nonzero(np.abs(num) >= threshold))
            total += len(idx)
        return PermutationResult(rho, hits / total, n, True, total)
    rng = np.random.default_rng(seed)
    hits = 0
    done = 0
    while done < n_resamples:
        b = min(100_000, n_resamples - done)
        idx = rng.permuted(np.broadcast_to(np.arange(n), (b, n)), axis=1)
        hits += int(np.count_nonzero(np.abs(dy[idx] @ dx) >= threshold))
        done += b
    return PermutationResult(rho, (hits + 1) / (n_resamples + 1), n, False, n_resamples)


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
    """Ordinary least squares of y on x with an intercept; needs n >= 3 finite pairs."""
    x, y = _paired_finite(x, y)
    n = len(x)
    if n < 3:
        raise ValueError(f"OLS needs at least 3 finite (x, y) pairs for a confidence interval, got {n}")
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    if sxx == 0.0:
        raise ValueError("OLS needs at least two distinct x values; all x are equal")
    slope = float(((x - xm) * (y - ym)).sum() / sxx)
    intercept = float(ym - slope * xm)
    resid = y - (intercept + slope * x)
    sse = float(resid @ resid)
    sst = float(((y - ym) ** 2).sum())
    s2 = sse / (n - 2)
    slope_se = math.sqrt(s2 / sxx)
    intercept_se = math.sqrt(s2 * (1.0 / n + xm * xm / sxx))
    q = float(_sps.t.ppf(1.0 - alpha / 2.0, n - 2))
    r2 = 1.0 - sse / sst if sst > 0 else math.nan
    return OLSResult(
        slope, intercept, slope_se, intercept_se, (slope - q * slope_se, slope + q * slope_se), r2, n, alpha
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
    resamples whole trajectories. Same data + seed => same interval, bit for bit.
    """
    data = np.asarray(data, dtype=np.float64)
    n = data.shape[0]
    if n < 1:
        raise ValueError("bootstrap needs at least one observation")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    reps = np.array([float(statistic(data[i])) for i in idx])
    lo, hi = np.quantile(reps, [alpha / 2.0, 1.0 - alpha / 2.0])
    return BootstrapResult(
        float(statistic(data)), (float(lo), float(hi)), float(reps.std(ddof=1)), n_resamples, seed, alpha
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


def sign_flip(ts_desc, rho) -> dict[str, object]:
    """Negative-to-positive crossings of rho going down the chain (t decreasing).

    Stated rule: a flip lies between consecutive measured t_a > t_b with rho(t_a) < 0 < rho(t_b)
    (non-finite rho skipped); the reported sign-flip time is the midpoint (t_a + t_b)/2 of the LAST
    such crossing (smallest t), as the paper's 't ~ 110' between t = 120 and 100; the linearly
    interpolated zero of rho is given beside it.
    """
    pts = [(float(t), float(r)) for t, r in zip(ts_desc, rho, strict=True) if math.isfinite(r)]
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
