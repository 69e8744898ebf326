"""Largest singular value of a matrix-free operator: power iteration on AᵀA and Golub-Kahan-Lanczos.

Both take ``matvec`` / ``rmatvec`` acting on a batch of vectors [B, *shape] (B independent
problems: B = 1 for the global norm κ̂_t = ‖JΦ_t‖_op of Table 4, B = M² for the block norms of
eq. 16-18). Scalars are accumulated in float64 whatever the operator's dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

Operator = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PowerIterationResult:
    """σ_max estimates of B independent operators after `iterations` power steps on AᵀA."""

    value: np.ndarray  # [B] sqrt(‖AᵀA v‖) at the last normalised iterate v (a lower bound on σ_max)
    relative_change: np.ndarray  # [B] |σ_K − σ_{K−1}| / σ_K over the last two iterations
    residual: np.ndarray  # [B] ‖AᵀAv − ⟨v,AᵀAv⟩v‖ / ‖AᵀAv‖: sine of the angle between v and AᵀAv
    iterations: int
    matvecs: int  # applications of A plus applications of Aᵀ, summed over the B problems
    history: np.ndarray  # [iterations, B]
    vector: torch.Tensor = field(repr=False)  # [B, *shape] final right-singular-vector estimates


def _norms(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v.reshape(v.shape[0], -1).double(), dim=1)


def _scale(v: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return v * s.to(v.dtype).reshape(-1, *([1] * (v.dim() - 1)))


def random_start(shape: tuple[int, ...], generator: torch.Generator, dtype, device) -> torch.Tensor:
    """Standard-normal start vectors drawn on the CPU in float64, so CPU and CUDA runs start identically."""
    v = torch.randn(shape, generator=generator, dtype=torch.float64)
    return v.to(device=device, dtype=dtype)


def power_iteration(
    matvec: Operator, rmatvec: Operator, start: torch.Tensor, iters: int
) -> PowerIterationResult:
    """K power steps v ← AᵀAv/‖AᵀAv‖ on each of start.shape[0] problems (the paper's PowerIter(JΦ, K_PI), §7.1)."""
    if iters < 1:
        raise ValueError(f"power iteration needs iters >= 1, got {iters}")
    B = start.shape[0]
    norms = _norms(start)
    if bool((norms == 0).any()):
        raise ValueError("a power-iteration start vector is zero; draw it from a seeded normal generator")
    v = _scale(start, 1.0 / norms)
    history = np.zeros((iters, B))
    residual = np.zeros(B)
    for i in range(iters):
        z = rmatvec(matvec(v))
        zn = _norms(z)
        history[i] = np.sqrt(zn.cpu().numpy())
        coef = (v.reshape(B, -1).double() * z.reshape(B, -1).double()).sum(1)
        perp = z.reshape(B, -1).double() - coef[:, None] * v.reshape(B, -1).double()
        safe = torch.where(zn > 0, zn, torch.ones_like(zn))
        residual = torch.where(zn > 0, torch.linalg.vector_norm(perp, dim=1) / safe, torch.zeros_like(zn))
        residual = residual.cpu().numpy()
        # A zero block (AᵀAv = 0) keeps its vector: its norm is exactly 0 and stays so.
        v = torch.where((zn > 0).reshape(-1, *([1] * (v.dim() - 1))), _scale(z, 1.0 / safe), v)
    value = history[-1]
    prev = history[-2] if iters > 1 else np.zeros(B)
    with np.errstate(divide="ignore", invalid="ignore"):
        change = np.where(value > 0, np.abs(value - prev) / value, 0.0)
    if iters == 1:
        change = np.full(B, np.nan)
    return PowerIterationResult(
        value=value,
        relative_change=change,
        residual=residual,
        iterations=iters,
        matvecs=2 * iters * B,
        history=history,
        vector=v,
    )


@dataclass
class LanczosResult:
    """σ_max of B independent operators from k Golub-Kahan steps each (run as one batch)."""

    value: np.ndarray  # [B] largest singular value of the k x k bidiagonal B_k (a lower bound on σ_max)
    residual: (
        np.ndarray
    )  # [B] β_k |x_k| = ‖Aᵀu − σv‖ of the Ritz triplet: some singular value of A lies within it
    relative_change: np.ndarray  # [B] |σ(B_k) − σ(B_{k−1})| / σ(B_k)
    iterations: int
    matvecs: int  # applications of A plus applications of Aᵀ, summed over the B problems


def golub_kahan(matvec: Operator, rmatvec: Operator, start: torch.Tensor, iters: int) -> LanczosResult:
    """k-step Golub-Kahan-Lanczos bidiagonalisation A V_k = U_k B_k (full reorthogonalisation, float64) on
    each of start.shape[0] independent problems at once (one global norm per point, or all M² patch blocks).

    The budget is k applications of A and k of Aᵀ per problem, the same as k power steps; σ_max(B_k) → ‖A‖
    much faster than power iteration when σ_1 and σ_2 are close (high noise). A problem whose Krylov space
    is exhausted (α or β ≈ 0: a zero block, or an invariant subspace) stops contributing: its later
    vectors are zero, so its bidiagonal only gains zero rows and columns.
    """
    if iters < 1:
        raise ValueError(f"Lanczos needs iters >= 1, got {iters}")
    B = start.shape[0]
    shape = start.shape
    norms = _norms(start)
    if bool((norms == 0).any()):
        raise ValueError("a Lanczos start vector is zero; draw it from a seeded normal generator")
    v = _scale(start, 1.0 / norms).reshape(B, -1).double()
    V, U = [v], []
    alphas = np.zeros((B, iters))
    betas = np.zeros((B, iters))
    active = torch.ones(B, dtype=torch.bool)
    scale = None
    tiny = 1e-13

    def op(fn, w):
        return fn(w.to(start.dtype).reshape(shape)).reshape(B, -1).double()

    def orth(p, basis):
        if not basis:
            return p
        Q = torch.stack(basis, dim=1)  # [B, j, n]
        for _ in range(2):
            p = p - torch.einsum("bjn,bj->bn", Q, torch.einsum("bjn,bn->bj", Q, p))
        return p

    p = op(matvec, v)
    matvecs = B
    for j in range(iters):
        p = orth(p, U)
        alpha = torch.linalg.vector_norm(p, dim=1)
        if scale is None:
            scale = torch.clamp(alpha, min=1.0)
        active &= alpha > tiny * scale
        alpha = torch.where(active, alpha, torch.zeros_like(alpha))
        u = torch.where(active[:, None], p / torch.where(active, alpha, 1.0)[:, None], torch.zeros_like(p))
        U.append(u)
        alphas[:, j] = alpha.cpu().numpy()
        r = orth(op(rmatvec, u) - alpha[:, None] * V[-1], V)
        matvecs += B
        beta = torch.where(active, torch.linalg.vector_norm(r, dim=1), torch.zeros_like(alpha))
        betas[:, j] = beta.cpu().numpy()
        active &= beta > tiny * scale
        v = torch.where(active[:, None], r / torch.where(active, beta, 1.0)[:, None], torch.zeros_like(r))
        V.append(v)
        if j + 1 < iters:
            p = op(matvec, v) - beta[:, None] * u
            matvecs += B
    k = iters
    Bk = np.zeros((B, k, k))
    Bk[:, np.arange(k), np.arange(k)] = alphas
    if k > 1:
        Bk[:, np.arange(k - 1), np.arange(1, k)] = betas[:, : k - 1]
    X, s, _ = np.linalg.svd(Bk)
    value = s[:, 0]
    residual = np.abs(betas[:, k - 1] * X[:, k - 1, 0])
    if k > 1:
        prev = np.linalg.svd(Bk[:, : k - 1, : k - 1], compute_uv=False)[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            change = np.where(value > 0, np.abs(value - prev) / value, 0.0)
    else:
        change = np.full(B, np.nan)
    return LanczosResult(
        value=value, residual=residual, relative_change=change, iterations=k, matvecs=matvecs
    )
