"""Inference the verdicts and tables state with every number: tests with their n, effects with intervals valid
for that n, and the corrections for testing many timesteps at once.

- Benjamini–Hochberg adjusted p-values (the false-discovery correction over the measured t or cells).
- One-sample and paired t-tests over trajectories (seeds are the independent units; t steps and patches
  of one trajectory are not).
- Spearman's ρ with a Fisher-z interval (Bonett–Wright standard error) for n ≥ 10; below that the exact
  bootstrap of the pairs, enumerated, with its degeneracy stated.
- The exact bootstrap: every distinct resample (multiset) of n ≤ EXACT_BOOTSTRAP_MAX_N units weighted by its
  multinomial probability, instead of random draws, and how much mass sits on the interval's ends.
- Association beyond a shared trend: partial rank correlation given t, and a permutation test within
  strata (each t) that removes any time trend two series share.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats as _sps

from pipeline.analysis.stats import rank_average, spearman

# Up to this many units the bootstrap distribution is enumerated (C(2n-1, n) multisets: 92,378 at n = 10).
EXACT_BOOTSTRAP_MAX_N = 8
# Spearman's Fisher-z interval is used from this n up; below it the enumerated bootstrap of the pairs.
FISHER_MIN_N = 10
ALPHA = 0.05


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values) of the finite entries; NaN stays NaN.

    q_(i) = min_{j >= i} (m / j) p_(j), capped at 1, with m the number of finite p-values: a test is
    significant at false-discovery rate α when q <= α.
    """
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, math.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return out
    flat = p[ok]
    order = np.argsort(flat, kind="mergesort")
    ranked = flat[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    adj = np.empty(m)
    adj[order] = np.minimum(q, 1.0)
    out[ok] = adj
    return out


@dataclass(frozen=True)
class TTest:
    """Mean over the units (seeds), its t-interval and the two-sided p of H0: mean = mu (NaN for n < 2)."""

    mean: np.ndarray
    ci_lo: np.ndarray
    ci_hi: np.ndarray
    p_value: np.ndarray
    n: np.ndarray


def t_test(values, mu: float = 0.0, axis: int = -1, alpha: float = ALPHA) -> TTest:
    """One-sample t-test along ``axis`` (NaN entries dropped per test): df = n − 1, two-sided p."""
    x = np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1)
    ok = np.isfinite(x)
    n = ok.sum(axis=-1)
    xs = np.where(ok, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = xs.sum(axis=-1) / n
        dev = np.where(ok, x - mean[..., None], 0.0)
        sd = np.sqrt((dev**2).sum(axis=-1) / (n - 1))
        se = sd / np.sqrt(n)
        df = np.maximum(n - 1, 1)
        q = _sps.t.ppf(1.0 - alpha / 2.0, df)
        tstat = (mean - mu) / se
        p = 2.0 * _sps.t.sf(np.abs(tstat), df)
    small = n < 2
    # zero spread: every unit equal; the mean is exact and differs from mu or not without doubt
    exact = ~small & (sd == 0)
    p = np.where(exact, np.where(mean == mu, 1.0, 0.0), p)
    lo = np.where(exact, mean, mean - q * se)
    hi = np.where(exact, mean, mean + q * se)
    nan = np.full(mean.shape, math.nan)
    return TTest(
        mean,
        np.where(small, nan, lo),
        np.where(small, nan, hi),
        np.where(small, nan, p),
        n,
    )


@dataclass(frozen=True)
class Interval:
    """An effect's interval and how it was obtained (method states the n it is valid for)."""

    lo: float
    hi: float
    method: str
    degenerate: str = ""

    def text(self, digits: int = 3) -> str:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            return f"no interval ({self.method})"
        s = f"[{self.lo:.{digits}g}, {self.hi:.{digits}g}] ({self.method})"
        return s + (f"; {self.degenerate}" if self.degenerate else "")


@dataclass(frozen=True)
class ExactBootstrap:
    """The bootstrap distribution of a statistic over n units, enumerated (or sampled above the limit)."""

    estimate: float
    interval: Interval
    n: int
    n_distinct: int
    mass_at_lo: float
    mass_at_hi: float
    exact: bool


def _multisets(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every multiset of n indices from range(n) [R, n] and its multinomial probability n!/(prod c_i!) / n^n."""
    idx = np.array(list(itertools.combinations_with_replacement(range(n), n)), dtype=np.intp)
    counts = np.stack([np.count_nonzero(idx == i, axis=1) for i in range(n)], axis=1)
    lgam = np.array([math.lgamma(c + 1) for c in range(n + 1)])
    logw = math.lgamma(n + 1) - lgam[counts].sum(axis=1) - n * math.log(n)
    return idx, np.exp(logw)


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values, kind="mergesort")
    v, w = values[order], weights[order]
    cum = np.cumsum(w) / w.sum()
    return float(v[min(int(np.searchsorted(cum, q - 1e-12)), len(v) - 1)])


def mean_rows(batch: np.ndarray) -> np.ndarray:
    """The mean of each resample [R, n] (the vectorised statistic of the exact bootstrap)."""
    return batch.mean(axis=1)


def spearman_rows(batch: np.ndarray) -> np.ndarray:
    """Spearman ρ of each resample of (x, y) pairs [R, n, 2] (average ranks; NaN where a side is constant)."""
    rx = _sps.rankdata(batch[..., 0], axis=1)
    ry = _sps.rankdata(batch[..., 1], axis=1)
    dx = rx - rx.mean(axis=1, keepdims=True)
    dy = ry - ry.mean(axis=1, keepdims=True)
    den = np.sqrt((dx * dx).sum(axis=1) * (dy * dy).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (dx * dy).sum(axis=1) / den, np.nan)


def exact_bootstrap(
    data, statistic: Callable[[np.ndarray], np.ndarray] = mean_rows, *, alpha: float = ALPHA, seed: int = 0
) -> ExactBootstrap:
    """Percentile bootstrap over the rows of ``data``, ``statistic`` vectorised over resamples (batch [R, n,
    ...] -> [R]): every distinct resample enumerated for n <= EXACT_BOOTSTRAP_MAX_N (exact), else 20,000
    resamples from default_rng(seed).

    States the degeneracy a small n brings: how much of the distribution sits exactly on each end of the
    interval (with 4 trajectories, 1/256 of the resamples repeat one trajectory four times).
    """
    data = np.asarray(data, dtype=np.float64)
    n = data.shape[0]
    if n == 0:
        nan = Interval(math.nan, math.nan, "no units")
        return ExactBootstrap(math.nan, nan, 0, 0, math.nan, math.nan, True)
    est = float(statistic(data[None])[0])
    if n <= EXACT_BOOTSTRAP_MAX_N:
        idx, weights = _multisets(n)
        exact = True
    else:
        idx = np.random.default_rng(seed).integers(0, n, size=(20_000, n))
        weights, exact = np.ones(len(idx)), False
    values = np.asarray(statistic(data[idx]), dtype=np.float64)
    ok = np.isfinite(values)
    values, weights = values[ok], weights[ok]
    if not len(values):
        nan = Interval(math.nan, math.nan, "statistic undefined on every resample")
        return ExactBootstrap(est, nan, n, 0, math.nan, math.nan, exact)
    lo = _weighted_quantile(values, weights, alpha / 2)
    hi = _weighted_quantile(values, weights, 1 - alpha / 2)
    total = weights.sum()
    m_lo = float(weights[values == lo].sum() / total)
    m_hi = float(weights[values == hi].sum() / total)
    how = (
        f"exact bootstrap, all {len(idx)} distinct resamples of n = {n}"
        if exact
        else f"bootstrap, 20000 resamples of n = {n}, seed {seed}"
    )
    degenerate = ""
    if max(m_lo, m_hi) > alpha:
        degenerate = (
            f"degenerate at n = {n}: {m_hi:.1%} of the bootstrap mass equals the upper end and {m_lo:.1%} "
            "the lower end, so the percentile interval is not a 95% interval"
        )
    elif n < 5:
        degenerate = f"n = {n} units: a percentile interval understates the uncertainty"
    return ExactBootstrap(
        est, Interval(lo, hi, how, degenerate), n, len(np.unique(values)), m_lo, m_hi, exact
    )


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman's ρ across n pairs, its two-sided p (t approximation) and an interval valid for n."""

    rho: float
    p_value: float
    n: int
    interval: Interval


def spearman_with_interval(x, y, *, alpha: float = ALPHA) -> RankCorrelation:
    """ρ, p, and a (1 − α) interval: Fisher z with the Bonett–Wright SE sqrt((1 + ρ²/2)/(n − 3)) for n >=
    FISHER_MIN_N; the enumerated bootstrap of the pairs below that (stated as degenerate where it is)."""
    sp = spearman(x, y)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    if not math.isfinite(sp.rho):
        return RankCorrelation(sp.rho, sp.p_value, n, Interval(math.nan, math.nan, "ρ undefined"))
    if n >= FISHER_MIN_N and abs(sp.rho) < 1.0:
        z = math.atanh(sp.rho)
        se = math.sqrt((1.0 + sp.rho**2 / 2.0) / (n - 3))
        q = float(_sps.norm.ppf(1 - alpha / 2))
        iv = Interval(math.tanh(z - q * se), math.tanh(z + q * se), f"Fisher z, Bonett–Wright SE, n = {n}")
        return RankCorrelation(sp.rho, sp.p_value, n, iv)
    if abs(sp.rho) >= 1.0:
        return RankCorrelation(
            sp.rho, sp.p_value, n, Interval(math.nan, math.nan, f"ρ = ±1 at n = {n}: no Fisher-z interval")
        )
    pairs = np.stack([x[ok], y[ok]], axis=1)
    iv = exact_bootstrap(pairs, spearman_rows, alpha=alpha).interval
    return RankCorrelation(sp.rho, sp.p_value, n, iv)


@dataclass(frozen=True)
class Association:
    """Association of two series after removing what they share with a third (time)."""

    rho: float
    p_value: float
    n: int
    method: str
    raw_rho: float


def partial_spearman(x, y, z) -> Association:
    """Rank correlation of x and y given z: the Pearson correlation of the residuals of rank(x) and rank(y)
    on rank(z); two-sided p from t with n − 3 degrees of freedom."""
    x, y, z = (np.asarray(a, dtype=np.float64) for a in (x, y, z))
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    n = int(ok.sum())
    raw = spearman(x, y).rho
    if n < 4:
        return Association(math.nan, math.nan, n, "partial Spearman given t (needs n >= 4)", raw)
    rx, ry, rz = (rank_average(a[ok]) for a in (x, y, z))
    A = np.stack([np.ones(n), rz], axis=1)

    def resid(v):
        return v - A @ np.linalg.lstsq(A, v, rcond=None)[0]

    ex, ey = resid(rx), resid(ry)
    den = math.sqrt(float(ex @ ex) * float(ey @ ey))
    if den == 0:
        return Association(
            math.nan, math.nan, n, "partial Spearman given t (a series is a function of t)", raw
        )
    r = float(np.clip(ex @ ey / den, -1, 1))
    df = n - 3
    p = 0.0 if abs(r) >= 1 else float(2 * _sps.t.sf(abs(r) * math.sqrt(df / (1 - r * r)), df))
    return Association(r, p, n, f"partial Spearman given t, t-test with {df} df", raw)


def within_strata_association(x, y, strata, *, n_resamples: int = 10_000, seed: int = 0) -> Association:
    """Spearman ρ of x and y after each is centred within its stratum (each t): what the two series share
    beyond any common time course. Two-sided p by permuting y within strata (seeded Monte Carlo,
    (hits + 1)/(n_resamples + 1))."""
    x, y, s = (np.asarray(a, dtype=np.float64) for a in (x, y, strata))
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(s)
    x, y, s = x[ok], y[ok], s[ok]
    raw = spearman(x, y).rho
    groups = [np.flatnonzero(s == v) for v in np.unique(s)]
    groups = [g for g in groups if len(g) >= 2]
    idx = np.concatenate(groups) if groups else np.array([], dtype=int)
    n = len(idx)
    method = (
        f"Spearman of within-t deviations over {n} (seed, t) points in {len(groups)} t, within-t permutation"
    )
    if n < 4:
        return Association(math.nan, math.nan, n, method + " (needs >= 2 seeds at >= 2 t)", raw)
    cx, cy = x.copy(), y.copy()
    for g in groups:
        cx[g] -= cx[g].mean()
        cy[g] -= cy[g].mean()
    obs = spearman(cx[idx], cy[idx]).rho
    if not math.isfinite(obs):
        return Association(math.nan, math.nan, n, method, raw)
    rng = np.random.default_rng(seed)
    rx = rank_average(cx[idx])
    dx = rx - rx.mean()
    perm = np.tile(cy[idx], (n_resamples, 1))
    start = 0
    for g in groups:  # idx lists the strata one after another: permute each block of columns per row
        perm[:, start : start + len(g)] = rng.permuted(perm[:, start : start + len(g)], axis=1)
        start += len(g)
    ry = _sps.rankdata(perm, axis=1)
    dy = ry - ry.mean(axis=1, keepdims=True)
    r = (dy @ dx) / np.sqrt(float(dx @ dx) * np.einsum("ij,ij->i", dy, dy))
    hits = int(np.count_nonzero(np.abs(r) >= abs(obs) - 1e-12))
    return Association(obs, (hits + 1) / (n_resamples + 1), n, method, raw)


def clopper_pearson(k: int, n: int, alpha: float = ALPHA) -> Interval:
    """Exact binomial interval for a proportion k/n."""
    if n == 0:
        return Interval(math.nan, math.nan, "no units")
    lo = 0.0 if k == 0 else float(_sps.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(_sps.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return Interval(lo, hi, f"Clopper–Pearson, n = {n}")
