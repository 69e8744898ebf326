"""The block-diagonal Gaussian oracle's closed forms, per row of the stage's tables (Theorem 17, 25).

JΦ_t = r_t I + b_t √v_t (ᾱ_t Σ + v_t I)⁻¹ has, on patch k's diagonal block, the eigenvalues f_t(μ_k,i) over
Σ_k's eigenvalues μ_k,i (eq. 26); so ‖[JΦ_t]_kk‖_op = f_t(λ_k) (f_t increasing, Thm 17(d)), ‖[JΦ_t]_kk‖_F =
sqrt(Σ_i f_t(μ_k,i)²), ⟨v_k,[JΦ_t]_kk v_k⟩ = f_t(λ_k), cross blocks 0, κ_t = max_k f_t(λ_k).
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.analysis.context import AnalysisContext
from pipeline.analysis.inputs import AnalysisInputs, Table
from pipeline.geometry import expansion_function, representative_timesteps, step_coefficients
from pipeline.io import load_npz
from pipeline.outputs import CovarianceFolder
from pipeline.patches import patch_indices


def step_index(ctx: AnalysisContext, t_col) -> np.ndarray:
    """Index into ctx.chain of each row's t (-1 where the t is not a measured step)."""
    where = {float(t): i for i, t in enumerate(ctx.chain.t)}
    return np.array([where.get(float(t), -1) for t in np.asarray(t_col, dtype=np.float64)])


def _at(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    out = np.full(len(idx), math.nan)
    ok = idx >= 0
    out[ok] = values[idx[ok]]
    return out


def f_per_row(ctx: AnalysisContext, T: Table) -> np.ndarray:
    """f_t(λ_k) of each (t, k) row (eq. 26), from the chain's ᾱ and the covariance's λ_k."""
    ks = sorted(ctx.lambda_k)
    F = expansion_function(ctx.chain, np.array([ctx.lambda_k[k] for k in ks]))  # [S, M]
    ki = {k: j for j, k in enumerate(ks)}
    idx = step_index(ctx, T["t"])
    kk = np.array([ki.get(int(k), -1) for k in T["k"]])
    out = np.full(len(idx), math.nan)
    ok = (idx >= 0) & (kk >= 0)
    out[ok] = F[idx[ok], kk[ok]]
    return out


def fmax_per_row(ctx: AnalysisContext, G: Table) -> np.ndarray:
    """max_k f_t(λ_k) of each global.csv row, matched by its step index."""
    lam = np.array(sorted(ctx.lambda_k.values()))
    fmax = expansion_function(ctx.chain, lam).max(axis=1)
    by_step = dict(zip(ctx.chain.step.tolist(), fmax, strict=True))
    return np.array([by_step.get(int(s), math.nan) for s in G["step"]])


def coefficients_per_row(ctx: AnalysisContext, G: Table) -> tuple[np.ndarray, np.ndarray]:
    """(r_t, b_t) of eqs. (4)-(5) per global.csv row."""
    coef = step_coefficients(ctx.chain)
    pos = {int(s): i for i, s in enumerate(ctx.chain.step)}
    idx = np.array([pos.get(int(s), -1) for s in G["step"]])
    return _at(np.asarray(coef.r), idx), _at(np.asarray(coef.b), idx)


def frobenius_per_row(ctx: AnalysisContext, inp: AnalysisInputs, B: Table) -> np.ndarray | None:
    """‖[JΦ_t]_kk‖_F = sqrt(Σ_i f_t(μ_k,i)²) per diagonal blocks.csv row, from patch_stats.npz eigvals."""
    if inp.patch_stats_path is None:
        return None
    eig = np.asarray(load_npz(inp.patch_stats_path).get("eigvals"), dtype=np.float64)
    if eig.ndim != 2:
        return None
    idx = step_index(ctx, B["t"])
    out = np.full(len(idx), math.nan)
    cache: dict[int, np.ndarray] = {}
    for r, (i, k) in enumerate(zip(idx, B["k"], strict=True)):
        k = int(k)
        if i < 0 or not 0 <= k < len(eig):
            continue
        if k not in cache:
            cache[k] = expansion_function(ctx.chain, np.clip(eig[k], 0.0, None))  # [S, n_k]
        out[r] = float(np.sqrt(np.sum(cache[k][i] ** 2)))
    return out


def identity_frobenius(inp: AnalysisInputs) -> float:
    """‖I_{n_k}‖_F = sqrt(n_k): the trivial answer of a diagonal block's Frobenius norm."""
    if inp.patch_stats_path is None:
        return math.nan
    eig = np.asarray(load_npz(inp.patch_stats_path).get("eigvals"), dtype=np.float64)
    return math.sqrt(eig.shape[1]) if eig.ndim == 2 else math.nan


# the exact-S check solves one n × n system per t: at this many t of the chain (both ends included)
EXACT_S_TIMESTEPS = 8


def exact_suppression(ctx: AnalysisContext, inp: AnalysisInputs) -> dict[float, np.ndarray] | None:
    """t -> [M] exact S_k,t on the block oracle: ρ_k^N − f_t(λ_k), with the full-Σ₀ surrogate's
    ρ_k^N = r_t + b_t √v_t e_kᵀ(ᾱ_t Σ₀ + v_t I)⁻¹e_k / |v_k|², e_k = v_k embedded in patch k (a linear solve,
    independent of the stage's eigendecomposition), at EXACT_S_TIMESTEPS t spread evenly over the chain."""
    if inp.covariance_dir is None or inp.patch_stats_path is None or ctx.chain is None:
        return None
    fit_path = CovarianceFolder(inp.covariance_dir).gaussian_fit
    if not fit_path.exists():
        return None
    fit = load_npz(fit_path)
    cov = np.asarray(fit["cov"], dtype=np.float64)
    v1 = np.asarray(load_npz(inp.patch_stats_path)["v1"], dtype=np.float64)
    image = tuple(int(x) for x in fit["image_shape"])
    M, nk = v1.shape
    idx = patch_indices(image, int(round(math.sqrt(nk / image[0]))))
    E = np.zeros((cov.shape[0], M))
    for k in range(M):
        E[idx[k], k] = v1[k]
    lam = np.array([ctx.lambda_k[k] for k in range(M)])
    coeffs = step_coefficients(ctx.chain)
    F = expansion_function(ctx.chain, lam)
    out = {}
    chosen = set(representative_timesteps(ctx.chain.t, EXACT_S_TIMESTEPS))
    for i, (t, a) in enumerate(zip(ctx.chain.t, ctx.chain.alpha_bar_t, strict=True)):
        if int(t) not in chosen:
            continue
        A = a * cov
        A[np.diag_indices_from(A)] += 1.0 - a
        X = np.linalg.solve(A, E)
        rho_n = coeffs.r[i] + coeffs.b[i] * math.sqrt(1.0 - a) * np.sum(E * X, axis=0) / np.sum(
            v1 * v1, axis=1
        )
        out[float(t)] = rho_n - F[i]
    return out


def full_sigma_fmax(ctx: AnalysisContext, inp: AnalysisInputs, G: Table) -> np.ndarray | None:
    """max_i |f_t(μ_i)| over the full Σ₀'s eigenvalues per global.csv row (full-Σ oracle's κ_t)."""
    path = CovarianceFolder(inp.covariance_dir).gaussian_fit if inp.covariance_dir else None
    if ctx.chain is None or path is None or not path.exists():
        return None
    cov = load_npz(path).get("cov")
    if cov is None:
        return None
    # eigenvalues of a covariance are >= 0; eigvalsh's round-off below 0 is clipped (f_t needs λ >= 0)
    mu = np.clip(np.linalg.eigvalsh(np.asarray(cov, dtype=np.float64)), 0.0, None)
    fm = np.abs(expansion_function(ctx.chain, mu)).max(axis=1)
    by_step = dict(zip(ctx.chain.step.tolist(), fm, strict=True))
    return np.array([by_step.get(int(s), math.nan) for s in G["step"]])
