"""Patch-block structure of JΦ_t: Rayleigh quotients (eq. 32), block norms ‖[JΦ_t]_kj‖ (eq. 15-18).

Block (k, j) = rows of patch k, columns of patch j: [JΦ_t]_kk = r_t I + b_t [Jε̂]_kk and
[JΦ_t]_kj = b_t [Jε̂]_kj for k ≠ j (eq. 15). Two ways to get the M² operator norms:

- dense (exact): the rows of Jε̂ from n vmapped VJPs (one cotangent per pixel, one block row at a
  time so only n_k x n numbers are held), then an SVD per block. Cost ≈ n VJPs.
- block power iteration: K power steps on all M² blocks at once, each step one vmapped batch of
  M² JVPs (tangent = the block's vector embedded in patch j, output read in patch k) and M² VJPs.
  Cost ≈ 2 K M² matvecs. Frobenius norms then come from a Hutchinson estimate (M JVPs per probe).
  Block Golub-Kahan-Lanczos uses the same batched products and budget, and converges much faster.

Dense wins when n < 2 K M² (CIFAR-10 with 8x8 patches: 3072 < 5120 at K = 10).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .operators import StepJacobian
from .patches import embed_patches, take_patches
from .spectral import golub_kahan_batched, power_iteration


@dataclass
class BlockNorms:
    """Operator and Frobenius norms of all M² blocks of JΦ_t at one point."""

    op: np.ndarray  # [M, M] ‖[JΦ_t]_kj‖_op
    frob: np.ndarray  # [M, M] ‖[JΦ_t]_kj‖_F (exact for dense, Hutchinson estimate for power)
    method: str  # "dense" or "power"
    relative_change: np.ndarray  # [M, M] last-step relative change (0 for dense)
    iterations: int  # power steps per block (0 for dense)
    matvecs: int
    frob_probes: int  # Hutchinson probes (0 for dense: exact)
    dense: torch.Tensor | None = None  # the n x n JΦ_t (pixel order) when kept


def patch_rayleigh(
    step: StepJacobian, v1: torch.Tensor, index: torch.Tensor, *, via: str = "vjp"
) -> np.ndarray:
    """⟨v_k, [JΦ_t]_kk v_k⟩ / ⟨v_k, v_k⟩ for every patch k (eq. 32) from one vmapped batch of M products.

    ⟨v, B v⟩ = ⟨Bᵀ v, v⟩, so the VJP (cheaper, no tangent map needed) gives the same number as the
    paper's directional JVP; ``via="jvp"`` uses the JVP.
    On a stacked linearisation (S points, pipeline.jacobian.points) every point gets the same M
    vectors in one stacked batch and the result is [S, M].
    """
    M = index.shape[0]
    stacked = len(step.image_shape) == 4
    S = step.image_shape[0] if stacked else 1
    image = tuple(step.image_shape[-3:])
    v = v1.to(device=step.score.x.device, dtype=step.score.x.dtype)
    rows = torch.arange(M, device=v.device)
    T = embed_patches(v, index, image, rows)
    if stacked:
        T = T[:, None].expand(M, S, *image).contiguous()
    if via == "vjp":
        Y = step.rmatvec(T)
    elif via == "jvp":
        Y = step.matvec(T)
    else:
        raise ValueError(f"via={via!r} is unknown; use 'vjp' or 'jvp'")
    Yk = take_patches(Y.reshape(M * S, *image), index, rows.repeat_interleave(S)).double().reshape(M, S, -1)
    vd = v.double()[:, None, :]
    q = ((Yk * vd).sum(-1) / (vd * vd).sum(-1)).T.cpu().numpy()  # [S, M]
    return q if stacked else q[0]


def dense_step_jacobian_rows(step: StepJacobian, rows_idx: torch.Tensor) -> torch.Tensor:
    """Rows rows_idx of JΦ_t ([len, n], pixel order) from len vmapped VJPs."""
    n = step.n
    x = step.score.x
    cot = torch.zeros(len(rows_idx), n, dtype=x.dtype, device=x.device)
    cot[torch.arange(len(rows_idx)), rows_idx] = 1
    return step.rmatvec(cot.reshape(-1, *step.image_shape)).reshape(len(rows_idx), n)


def dense_block_norms(
    step: StepJacobian, index: torch.Tensor, *, keep_dense: bool = False, progress: bool = False
) -> BlockNorms:
    """Exact ‖[JΦ_t]_kj‖_op and ‖·‖_F for all blocks, one block row (n_k VJPs) at a time."""
    M, nk = index.shape
    op = np.zeros((M, M))
    frob = np.zeros((M, M))
    dense = None
    if keep_dense:
        dense = torch.zeros(step.n, step.n, dtype=torch.float64)
    it = range(M)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="dense block rows", leave=False)
    for k in it:
        rows = dense_step_jacobian_rows(step, index[k])  # [n_k, n]
        if dense is not None:
            dense[index[k].cpu()] = rows.double().cpu()
        blocks = rows[:, index].permute(1, 0, 2).double()  # [M(j), n_k, n_k]
        op[k] = torch.linalg.matrix_norm(blocks, ord=2).cpu().numpy()
        frob[k] = torch.linalg.matrix_norm(blocks, ord="fro").cpu().numpy()
    return BlockNorms(
        op=op,
        frob=frob,
        method="dense",
        relative_change=np.zeros((M, M)),
        iterations=0,
        matvecs=step.n,
        frob_probes=0,
        dense=dense,
    )


def block_problems(M: int, diag_only: bool, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row patch k and column patch j of every block problem: the M diagonal ones or all M² (row-major)."""
    if diag_only:
        k_of = torch.arange(M, device=device)
        return k_of, k_of
    return torch.arange(M, device=device).repeat_interleave(M), torch.arange(M, device=device).repeat(M)


def _block_operators(step: StepJacobian, index: torch.Tensor, diag_only: bool):
    M, nk = index.shape
    k_of, j_of = block_problems(M, diag_only, step.score.x.device)

    def matvec(u):  # [B, n_k] in patch j -> [B, n_k] in patch k
        return take_patches(step.matvec(embed_patches(u, index, step.image_shape, j_of)), index, k_of)

    def rmatvec(w):  # [B, n_k] in patch k -> [B, n_k] in patch j
        return take_patches(step.rmatvec(embed_patches(w, index, step.image_shape, k_of)), index, j_of)

    return k_of, j_of, matvec, rmatvec


def block_krylov(matvec, rmatvec, start: torch.Tensor, iters: int, method: str):
    """Top singular value of every block problem in the batch: K power steps or K Golub-Kahan steps."""
    if method == "power":
        return power_iteration(matvec, rmatvec, start, iters)
    if method == "lanczos":
        return golub_kahan_batched(matvec, rmatvec, start, iters)
    raise ValueError(f"block method {method!r} is unknown; use 'power' or 'lanczos'")


def block_power_norms(
    step: StepJacobian,
    index: torch.Tensor,
    iters: int,
    generator: torch.Generator,
    *,
    frob_probes: int = 8,
    diag_only: bool = False,
    method: str = "power",
) -> BlockNorms:
    """‖[JΦ_t]_kj‖_op of all M² blocks (or the M diagonal ones), every block's iteration run in one
    vmapped batch: K power steps (the paper's per-block protocol) or K Golub-Kahan steps
    (``method="lanczos"``: same matvec budget, far more accurate when singular values cluster)."""
    M, nk = index.shape
    x = step.score.x
    k_of, j_of, matvec, rmatvec = _block_operators(step, index, diag_only)
    start = torch.randn(len(k_of), nk, generator=generator, dtype=torch.float64).to(x.device, x.dtype)
    res = block_krylov(matvec, rmatvec, start, iters, method)
    op = np.full((M, M), np.nan)
    change = np.full((M, M), np.nan)
    op[k_of.cpu().numpy(), j_of.cpu().numpy()] = res.value
    change[k_of.cpu().numpy(), j_of.cpu().numpy()] = res.relative_change
    frob = np.full((M, M), np.nan)
    matvecs = res.matvecs
    if frob_probes > 0:
        frob = hutchinson_block_frobenius(step, index, frob_probes, generator)
        matvecs += frob_probes * M
    return BlockNorms(
        op=op,
        frob=frob,
        method=method,
        relative_change=change,
        iterations=iters,
        matvecs=matvecs,
        frob_probes=frob_probes,
    )


def hutchinson_block_frobenius(
    step: StepJacobian, index: torch.Tensor, probes: int, generator: torch.Generator
) -> np.ndarray:
    """Unbiased estimate of ‖[JΦ_t]_kj‖_F² (then sqrt) from Rademacher probes z: E‖B z‖² = ‖B‖_F².

    One JVP with the probe embedded in patch j yields B_kj z for every k, so a probe costs M JVPs.
    """
    M, nk = index.shape
    x = step.score.x
    acc = torch.zeros(M, M, dtype=torch.float64)
    cols = torch.arange(M, device=x.device)
    for _ in range(probes):
        z = (torch.randint(0, 2, (M, nk), generator=generator) * 2 - 1).to(x.device, x.dtype)
        Y = step.matvec(embed_patches(z, index, step.image_shape, cols))  # [M(j), C, H, W]
        Yp = Y.reshape(M, -1)[:, index].double()  # [j, k, n_k]
        acc += (Yp * Yp).sum(-1).T.cpu()  # [k, j]
    return (acc / probes).sqrt().numpy()
