"""Independent, hand-written statistics the scipy-backed pipeline.analysis.stats is checked against.

These are the loops the analysis used before it called scipy.stats (average ranks by a sort-and-scan,
Pearson on ranks, exact permutation enumeration, OLS normal equations, percentile bootstrap by explicit
index draws). They share no code with scipy.stats beyond the t distribution's tail, so agreement
between the two is a real cross-check.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import stats as _sps


def rank_average(x) -> np.ndarray:
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


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    da, db = a - a.mean(), b - b.mean()
    den = math.sqrt(float(da @ da) * float(db @ db))
    return math.nan if den == 0.0 else float(np.clip((da @ db) / den, -1.0, 1.0))


def spearman(x, y) -> tuple[float, float]:
    """(rho, two-sided p from t = rho sqrt((n-2)/(1-rho^2))) on finite pairs."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    rho = pearson(rank_average(x), rank_average(y)) if n >= 3 else math.nan
    if math.isnan(rho):
        return math.nan, math.nan
    if abs(rho) >= 1.0:
        return rho, 0.0
    t = rho * math.sqrt((n - 2) / (1.0 - rho * rho))
    return rho, float(2.0 * _sps.t.sf(abs(t), n - 2))


def permutation_p_exact(x, y) -> float:
    """P(|rho_perm| >= |rho_obs|) over all n! orderings of y's ranks."""
    rx, ry = rank_average(x), rank_average(y)
    dx, dy = rx - rx.mean(), ry - ry.mean()
    obs = abs(float(dx @ dy)) * (1.0 - 1e-12)
    n = len(rx)
    perms = np.array(list(itertools.permutations(range(n))), dtype=np.int16)
    return float(np.mean(np.abs(dy[perms] @ dx) >= obs))


def ols(x, y, alpha: float = 0.05) -> dict[str, float]:
    """OLS of y on x with an intercept from the normal equations; t-based slope interval."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    slope = float(((x - xm) * (y - ym)).sum() / sxx)
    intercept = float(ym - slope * xm)
    resid = y - (intercept + slope * x)
    s2 = float(resid @ resid) / (n - 2)
    slope_se = math.sqrt(s2 / sxx)
    q = float(_sps.t.ppf(1.0 - alpha / 2.0, n - 2))
    return {
        "slope": slope,
        "intercept": intercept,
        "slope_se": slope_se,
        "intercept_se": math.sqrt(s2 * (1.0 / n + xm * xm / sxx)),
        "ci_lo": slope - q * slope_se,
        "ci_hi": slope + q * slope_se,
        "r2": 1.0 - float(resid @ resid) / float(((y - ym) ** 2).sum()),
    }


def bootstrap_percentile(data, statistic, n_resamples: int, seed: int, alpha: float = 0.05):
    """(estimate, (lo, hi), se): rows drawn as rng.integers(0, n, (B, n)) from default_rng(seed)."""
    data = np.asarray(data, dtype=np.float64)
    n = data.shape[0]
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    reps = np.array([float(statistic(data[i])) for i in idx])
    lo, hi = np.quantile(reps, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(statistic(data)), (float(lo), float(hi)), float(reps.std(ddof=1))
