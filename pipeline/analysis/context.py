"""What every table builder needs besides the tables: model kind, T, the measured chain, λ_k and the patch
grid, and the seed-mean [t, k] matrices all per-patch statistics are taken on.

Averaging convention (stated once, used everywhere): per-patch quantities are first averaged over seeds at
each (t, k); statistics across patches are then taken on those seed means. All t are the paper's 1-based
timesteps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.analysis.inputs import AnalysisInputs, Table, has_values, n_rows
from pipeline.analysis.measured_chain import MeasuredChain
from pipeline.geometry import expansion_function

# Paper-vs-ours rows are matched to our nearest measured t within this many timesteps.
T_MATCH_TOL = 10


@dataclass
class AnalysisContext:
    """Model kind, T, the measured chain, λ_k, the patch grid, and the float floor of this run's numbers."""

    model_kind: str
    T: int
    chain: MeasuredChain | None
    lambda_k: dict[int, float]
    grid: dict[int, tuple[int, int]]
    # |values| below this are floating-point round-off of a zero (float64 vs float32 models)
    roundoff: float = 1e-10
    # images the covariance was estimated from (sampling error of λ_k: ≈ λ sqrt(2/N))
    num_images: int | None = None

    @property
    def reference_only(self) -> bool:
        """The paper's numbers are for learned DDPMs; on the Gaussian oracle they are shown for reference
        only and never scored as agreement or disagreement."""
        return self.model_kind == "gaussian_oracle"

    def regime(self, t: float) -> str:
        """Stated rule (paper §7.4 boundaries, scaled by T/1000): t >= 0.8T high-noise, >= 0.28T I, else II."""
        if t >= 0.8 * self.T:
            return "high-noise"
        if t >= 0.28 * self.T:
            return "I"
        return "II"


def groups(table: Table, by: tuple[str, ...]) -> list[tuple[tuple, np.ndarray]]:
    """Row indices per distinct key (keys sorted ascending)."""
    keys = np.stack([np.asarray(table[c], dtype=np.float64) for c in by], axis=1)
    ok = np.all(np.isfinite(keys), axis=1)
    uniq, inv = np.unique(keys[ok], axis=0, return_inverse=True)
    rows = np.flatnonzero(ok)
    inv = np.asarray(inv).ravel()
    return [(tuple(u.tolist()), rows[inv == i]) for i, u in enumerate(uniq)]


def nanmax(values) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(np.max(v[np.isfinite(v)])) if np.isfinite(v).any() else math.nan


def nanmin(values) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(np.min(v[np.isfinite(v)])) if np.isfinite(v).any() else math.nan


def mean_std(x) -> tuple[float, float, int]:
    """Mean, sample std (ddof 1; NaN for one value) and count of the finite values."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan, 0
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else math.nan, len(x)


def nearest(t_ours: np.ndarray, t: float) -> int | None:
    """Index of our measured t nearest the paper's t, within T_MATCH_TOL."""
    if len(t_ours) == 0:
        return None
    i = int(np.argmin(np.abs(t_ours - t)))
    return i if abs(t_ours[i] - t) <= T_MATCH_TOL else None


@dataclass(frozen=True)
class PatchMatrix:
    """A per-patch column as seed means [n_t, M] (t descending) and per seed [n_t, M, n_seeds]."""

    ts: np.ndarray
    ks: np.ndarray
    mean: np.ndarray
    per_seed: np.ndarray
    lam: np.ndarray
    seeds: np.ndarray

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)


def patch_values(ctx: AnalysisContext, P: Table, value: str) -> PatchMatrix:
    """The [t, k] seed-mean matrix of a patches.csv column and the per-seed cube beneath it."""
    t_col = np.asarray(P["t"], dtype=np.float64)
    k_col = np.asarray(P["k"], dtype=np.float64)
    s_col = np.asarray(P["seed"], dtype=np.float64) if "seed" in P else np.zeros(n_rows(P))
    vals = np.asarray(P[value], dtype=np.float64)
    t_asc = np.unique(t_col[np.isfinite(t_col)])
    ts = t_asc[::-1]
    ks = np.unique(k_col[np.isfinite(k_col)]).astype(int)
    seeds = np.unique(s_col[np.isfinite(s_col)]).astype(int)
    cube = np.full((len(ts), len(ks), len(seeds)), math.nan)
    ok = np.isfinite(t_col) & np.isfinite(k_col) & np.isfinite(s_col) & np.isfinite(vals)
    ti = len(ts) - 1 - np.searchsorted(t_asc, t_col[ok])
    ki = np.searchsorted(ks, k_col[ok].astype(int))
    si = np.searchsorted(seeds, s_col[ok].astype(int))
    cube[ti, ki, si] = vals[ok]
    cnt = np.isfinite(cube).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(cnt > 0, np.nansum(cube, axis=2) / cnt, math.nan)
    lam = np.array([ctx.lambda_k.get(int(k), math.nan) for k in ks])
    return PatchMatrix(ts, ks, mean, cube, lam, seeds)


def patch_matrix(ctx: AnalysisContext, P: Table, value: str):
    """(ts desc, ks, seed-mean matrix [t, k], λ_k) of a patches.csv column (used by figures and checks)."""
    m = patch_values(ctx, P, value)
    return m.ts, m.ks, m.mean, m.lam


def f_t_matrix(ctx: AnalysisContext, ts: np.ndarray, lam: np.ndarray) -> np.ndarray | None:
    """Closed-form f_t(λ_k) at the measured t (eq. 26), from the chain's ᾱ columns."""
    if ctx.chain is None:
        return None
    idx = {float(t): i for i, t in enumerate(ctx.chain.t)}
    if any(float(t) not in idx for t in ts):
        return None
    sel = np.array([idx[float(t)] for t in ts])
    return expansion_function(ctx.chain, lam)[sel]


def _measured_chain(G: Table | None) -> MeasuredChain | None:
    if G is None or not (has_values(G, "alpha_bar_t") and has_values(G, "alpha_bar_prev")):
        return None
    steps, ts, a, ap = [], [], [], []
    for (step,), idx in groups(G, ("step",)):
        steps.append(int(step))
        ts.append(float(np.nanmedian(G["t"][idx])))
        a.append(float(np.nanmedian(G["alpha_bar_t"][idx])))
        ap.append(float(np.nanmedian(G["alpha_bar_prev"][idx])))
    return MeasuredChain("measured", np.array(ts), np.array(a), np.array(ap), step=np.array(steps))


def make_context(inp: AnalysisInputs) -> AnalysisContext:
    """Model kind, T, the measured chain and λ_k / grid positions from whichever inputs exist."""
    cfg = inp.jacobian_config or inp.any_config()
    kind = str(((cfg.get("model") or {}).get("kind")) or "unknown")
    T = int((cfg.get("schedule") or {}).get("num_train_timesteps") or 1000)
    lam: dict[int, float] = {}
    grid: dict[int, tuple[int, int]] = {}
    count = None
    C = inp.covariance_patches
    if C is not None:
        for i in range(n_rows(C)):
            k = int(C["k"][i])
            lam[k] = float(C["lambda_k"][i])
            if "row" in C and "col" in C:
                grid[k] = (int(C["row"][i]), int(C["col"][i]))
        if has_values(C, "count"):
            count = int(np.nanmin(C["count"]))
    P = inp.patches
    if P is not None:
        for (k,), idx in groups(P, ("k",)):
            if int(k) not in lam and has_values(P, "lambda_k"):
                lam[int(k)] = float(np.nanmean(P["lambda_k"][idx]))
            if int(k) not in grid and has_values(P, "row") and has_values(P, "col"):
                grid[int(k)] = (int(P["row"][idx][0]), int(P["col"][idx][0]))
    dtype = str((cfg.get("model") or {}).get("dtype") or "float32")
    if count is None:
        count = (cfg.get("dataset") or {}).get("num_images")
    return AnalysisContext(
        kind,
        T,
        _measured_chain(inp.global_),
        lam,
        grid,
        1e-10 if "64" in dtype else 1e-6,
        int(count) if count else None,
    )
