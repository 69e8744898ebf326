"""The exact route: all n rows of JΦ_t = r_t I + b_t Jε̂ (eq. 7) from n vmapped VJPs, kept in float64.

One cotangent per pixel, one block row (n_k VJPs) at a time, gives JΦ_t at S stacked points for n VJPs per
point (no JVP, no linearisation trace). From the stored matrix every quantity of §7 is exact: the global
norm (Table 4), all M² block operator and Frobenius norms (eq. 15-18, Tables 5-8) and the Rayleigh quotients
(eq. 32). `DenseStep` also offers the access patterns of `pipeline.jacobian.operators.PointsStep`, so the
paper's own estimators (power iteration with K_PI steps, per-block power iteration, Hutchinson) replay on
it from the very start vectors the matrix-free route draws, for a few GFLOP at n = 3072 and no model
product: the paper's estimate and the converged value come from the one pass.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from .operators import PointsStep


class DenseStep:
    """JΦ_t at S points as a stored [S, M, n_k, M, n_k] float64 tensor (pixels in patch order)."""

    replay = True

    def __init__(self, blocks: torch.Tensor, index: torch.Tensor, image: tuple[int, int, int]):
        S, M, nk = blocks.shape[0], blocks.shape[1], blocks.shape[2]
        if tuple(blocks.shape) != (S, M, nk, M, nk) or tuple(index.shape) != (M, nk):
            raise ValueError(f"blocks must be [S, M, n_k, M, n_k] for index {tuple(index.shape)}")
        self.J = blocks
        self.index = index
        self.image = tuple(int(s) for s in image)
        self.S, self.M, self.nk = int(S), int(M), int(nk)
        self.n = self.M * self.nk
        self.dtype = blocks.dtype
        self.device = blocks.device
        self._perm = index.reshape(-1).to(blocks.device)

    @property
    def flat(self) -> torch.Tensor:
        """[S, n, n] in patch order (a permutation of pixel order: same singular values)."""
        return self.J.reshape(self.S, self.n, self.n)

    def _pixels_to_patch_order(self, v: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        lead = tuple(v.shape[:-3])
        flat = v.reshape(-1, self.S, self.n).to(self.device, self.dtype)
        return flat[..., self._perm], lead

    def _patch_to_pixels(self, y: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
        out = torch.empty_like(y)
        out[..., self._perm] = y
        return out.reshape(*lead, *self.image)

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """JΦ_t v for vectors [S,C,H,W] or [B,S,C,H,W] (float64)."""
        vp, lead = self._pixels_to_patch_order(v)
        return self._patch_to_pixels(torch.einsum("sab,psb->psa", self.flat, vp), lead)

    def apply_t(self, w: torch.Tensor) -> torch.Tensor:
        """JΦ_tᵀ w for vectors [S,C,H,W] or [B,S,C,H,W] (float64)."""
        wp, lead = self._pixels_to_patch_order(w)
        return self._patch_to_pixels(torch.einsum("sab,psa->psb", self.flat, wp), lead)

    def block_ops(self, k_of: torch.Tensor, j_of: torch.Tensor):
        """[JΦ_t]_{k j} of every (problem, point) pair on vectors [B·S, n_k] in problem-major order."""
        B = len(k_of)
        # advanced indices split by a slice go first: [B, S, n_k, n_k], problem-major as PointsStep's
        blk = self.J[:, k_of.to(self.device), :, j_of.to(self.device), :].reshape(
            B * self.S, self.nk, self.nk
        )

        def matvec(u):
            return torch.einsum("pab,pb->pa", blk, u.to(self.dtype))

        def rmatvec(w):
            return torch.einsum("pab,pa->pb", blk, w.to(self.dtype))

        return matvec, rmatvec

    def columns(self, z: torch.Tensor) -> torch.Tensor:
        """[JΦ_t]_{k j} z_j for every k: z [M(j), S, n_k] -> [M(j), S, M(k), n_k]."""
        return torch.einsum("skajb,jsb->jska", self.J, z.to(self.device, self.dtype))

    def rows(self, w: torch.Tensor) -> torch.Tensor:
        """[JΦ_t]_{k j}ᵀ w_k for every j: w [M(k), S, n_k] -> [M(k), S, M(j), n_k]."""
        return torch.einsum("skajb,ksa->ksjb", self.J, w.to(self.device, self.dtype))

    # ---- exact quantities ----
    def block_norms(self) -> tuple[np.ndarray, np.ndarray]:
        """‖[JΦ_t]_kj‖_op and ‖[JΦ_t]_kj‖_F of all blocks: two arrays [S, M, M]."""
        op = np.zeros((self.S, self.M, self.M))
        fro = np.zeros((self.S, self.M, self.M))
        for s in range(self.S):  # one point at a time bounds the SVDs' workspace
            blocks = self.J[s].permute(0, 2, 1, 3)  # [M(k), M(j), n_k, n_k]
            op[s] = torch.linalg.matrix_norm(blocks, ord=2).cpu().numpy()
            fro[s] = torch.linalg.matrix_norm(blocks, ord="fro").cpu().numpy()
        return op, fro

    def global_norm(self) -> np.ndarray:
        """‖JΦ_t‖_op per point [S]: the square root of the top eigenvalue of JΦᵀJΦ (a symmetric
        eigenproblem: cheaper than an SVD, and exact to rounding for the largest singular value)."""
        out = np.zeros(self.S)
        for s in range(self.S):
            A = self.flat[s]
            out[s] = float(torch.linalg.eigvalsh(A.T @ A)[-1].clamp(min=0).sqrt())
        return out

    def rayleigh(self, v1: torch.Tensor) -> np.ndarray:
        """⟨v_k, [JΦ_t]_kk v_k⟩ / ⟨v_k, v_k⟩ (eq. 32) per point and patch: [S, M]."""
        v = v1.to(self.device, self.dtype)
        k = torch.arange(self.M, device=self.device)
        diag = self.J[:, k, :, k, :]  # [M, S, n_k, n_k]
        q = torch.einsum("ka,ksab,kb->sk", v, diag, v) / (v * v).sum(1)
        return q.cpu().numpy()


def dense_step(points: PointsStep, progress: bool = False) -> DenseStep:
    """All n rows of JΦ_t at the S points of ``points`` from n stacked VJPs (one cotangent per pixel)."""
    S, n, M, nk = points.S, points.n, points.M, points.nk
    index = points.index
    C, H, W = points.image
    J = torch.zeros(S, M, nk, M, nk, dtype=torch.float64, device=points.device)
    perm = index.reshape(-1)
    it = range(M)
    if progress:
        it = tqdm(it, desc="dense block rows", leave=False)
    for k in it:
        cot = torch.zeros(nk, S, n, dtype=points.dtype, device=points.device)
        cot[torch.arange(nk), :, index[k]] = 1
        rows = points.apply_t(cot.reshape(nk, S, C, H, W)).reshape(nk, S, n).transpose(0, 1)  # [S, n_k, n]
        J[:, k] = rows[:, :, perm].double().reshape(S, nk, M, nk)
    return DenseStep(J, index, (C, H, W))
