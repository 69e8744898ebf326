"""The Gaussian oracle: the exact optimal noise predictor ε* of N(μ, Σ) (paper §2.1, Theorem 17)."""

from __future__ import annotations

import numpy as np
import torch

from .base import ModelError, check_alpha_bar, check_input, check_timestep, parse_dtype, resolve_device


def patch_permutation(image_shape: tuple[int, int, int], patch_size: int) -> np.ndarray:
    """perm[k·n_k + j] = flat image index of element j of patch vector k (project patch order).

    Patches are non-overlapping P×P tiles in row-major order k = 0..M-1; a patch vector is its
    (C, P, P) block flattened channel-major, then row, then column (pipeline.patches conventions), so
    ``x.reshape(n)[perm].reshape(M, n_k)`` equals pipeline.patches.extract_patches(x, P)[0].
    """
    C, H, W = (int(s) for s in image_shape)
    P = int(patch_size)
    if P < 1 or H % P or W % P:
        raise ModelError(
            f"patch size {P} must divide the image size {H}x{W} — pick a divisor (patch.size=...)"
        )
    idx = np.arange(C * H * W, dtype=np.int64).reshape(C, H // P, P, W // P, P)
    # (C, R, P, Q, P) -> (R, Q, C, P, P): patch (row r, col q) major, then its (C, P, P) block.
    return np.ascontiguousarray(idx.transpose(1, 3, 0, 2, 4)).reshape(-1)


def _eigh_sorted(cov: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Eigendecomposition of stacked symmetric PSD matrices [..., m, m]: values descending, vectors signed."""
    scale = max(float(np.max(np.abs(cov))), np.finfo(np.float64).tiny)
    asym = float(np.max(np.abs(cov - np.swapaxes(cov, -1, -2))))
    if asym > 1e-8 * scale:
        raise ModelError(f"{what} is not symmetric (max |Σ - Σᵀ| = {asym:.3g}) — pass a covariance matrix")
    lam, vec = np.linalg.eigh(0.5 * (cov + np.swapaxes(cov, -1, -2)))
    lam, vec = lam[..., ::-1], vec[..., ::-1]
    if float(lam.min()) < -1e-8 * scale:
        raise ModelError(
            f"{what} is not positive semi-definite (smallest eigenvalue {float(lam.min()):.3g}) — "
            "estimate it from more images or add a ridge"
        )
    lam = np.clip(lam, 0.0, None)
    # Sign convention of the project: each eigenvector's largest-|.| entry is positive.
    pivot = np.take_along_axis(vec, np.abs(vec).argmax(axis=-2)[..., None, :], axis=-2)
    vec = vec * np.where(pivot < 0, -1.0, 1.0)
    return np.ascontiguousarray(lam), np.ascontiguousarray(vec)


def _full_gaussian(mean, cov, image_shape, who: str, hint: str = ""):
    """(image_shape, mean [n], cov [n, n]) as float64, or a ModelError naming the expected shapes."""
    image_shape = tuple(int(s) for s in image_shape)
    n = int(np.prod(image_shape))
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    cov = np.asarray(cov, dtype=np.float64)
    if mean.shape != (n,) or cov.shape != (n, n):
        raise ModelError(
            f"{who} needs the full mean [n] and cov [n, n] with n = C·H·W = {n} for image_shape "
            f"{image_shape}; got mean {mean.shape}, cov {cov.shape}{hint}"
        )
    return image_shape, mean, cov


class GaussianOracle:
    """ε*(x, t) = √v_t (ᾱ_t Σ + v_t I)⁻¹ (x − √ᾱ_t μ), v_t = 1 − ᾱ_t: the exact ε* = −√v_t ∇log p_t of N(μ, Σ).

    Σ = U diag(λ) Uᵀ is diagonalised once, so a call costs two (block) matmuls:
    ε* = U diag(√v_t / (ᾱ_t λ + v_t)) Uᵀ (x − √ᾱ_t μ). With a block-diagonal Σ (Theorem 17's
    setting) the blocks are the P×P patches and every quantity of the measurement stage has a
    closed form: ‖[JΦ_t]_kk‖ = f_t(λ_k), cross blocks 0.

    Attributes: ``eigvals`` float64 [G, m] (descending), ``eigvecs`` float64 [G, m, m] (columns),
    where G = 1, m = n for full Σ and G = M patches, m = n_k for block-diagonal Σ (patch order).
    """

    def __init__(
        self,
        mean: np.ndarray,
        cov: np.ndarray,
        alpha_bar: np.ndarray,
        image_shape: tuple[int, int, int],
        dtype: str | torch.dtype = torch.float64,
        device: str | torch.device | None = "cpu",
    ) -> None:
        image_shape, mean, cov = _full_gaussian(mean, cov, image_shape, "GaussianOracle")
        self._setup(mean[None], cov[None], None, None, alpha_bar, image_shape, dtype, device)

    @classmethod
    def block_diagonal(
        cls,
        mean: np.ndarray,
        cov: np.ndarray,
        patch_size: int,
        alpha_bar: np.ndarray,
        image_shape: tuple[int, int, int],
        dtype: str | torch.dtype = torch.float64,
        device: str | torch.device | None = "cpu",
    ) -> GaussianOracle:
        """Keep only Σ's diagonal P×P patch blocks (Theorem 17's independent-patch Gaussian)."""
        image_shape, mean, cov = _full_gaussian(
            mean,
            cov,
            image_shape,
            "block_diagonal",
            hint=" (for per-patch blocks [M, n_k, n_k] use GaussianOracle.from_patch_blocks)",
        )
        perm = patch_permutation(image_shape, patch_size)
        n_k = image_shape[0] * patch_size * patch_size
        groups = perm.reshape(-1, n_k)
        blocks = cov[groups[:, :, None], groups[:, None, :]]
        return cls.from_patch_blocks(mean, blocks, patch_size, alpha_bar, image_shape, dtype, device)

    @classmethod
    def from_patch_blocks(
        cls,
        mean: np.ndarray,
        cov_blocks: np.ndarray,
        patch_size: int,
        alpha_bar: np.ndarray,
        image_shape: tuple[int, int, int],
        dtype: str | torch.dtype = torch.float64,
        device: str | torch.device | None = "cpu",
    ) -> GaussianOracle:
        """Block-diagonal Σ = diag(Σ_1..Σ_M) from per-patch blocks [M, n_k, n_k] (patch_stats.npz ``cov``).

        ``mean`` is the image mean [n] / [C, H, W] or the per-patch means [M, n_k] (patch_stats ``mean``).
        """
        image_shape = tuple(int(s) for s in image_shape)
        perm = patch_permutation(image_shape, patch_size)
        n_k = image_shape[0] * patch_size * patch_size
        M = perm.size // n_k
        cov_blocks = np.asarray(cov_blocks, dtype=np.float64)
        if cov_blocks.shape != (M, n_k, n_k):
            raise ModelError(
                f"cov_blocks must be [M, n_k, n_k] = [{M}, {n_k}, {n_k}] for image {image_shape} and P={patch_size}, "
                f"got {cov_blocks.shape}; check patch.size matches the covariance stage's patch size"
            )
        mean = np.asarray(mean, dtype=np.float64)
        if mean.shape == (M, n_k):
            mean_p = mean
        elif mean.size == perm.size:
            mean_p = mean.reshape(-1)[perm].reshape(M, n_k)
        else:
            raise ModelError(f"mean must be [n]={perm.size} or [M, n_k]=[{M}, {n_k}], got {mean.shape}")
        self = cls.__new__(cls)
        self._setup(mean_p, cov_blocks, perm, int(patch_size), alpha_bar, image_shape, dtype, device)
        return self

    def _setup(self, mean_g, cov_g, perm, patch_size, alpha_bar, image_shape, dtype, device) -> None:
        self.image_shape = image_shape
        self.alpha_bar = check_alpha_bar(alpha_bar)
        self.dtype = parse_dtype(dtype)
        self.device = resolve_device(device)
        self.patch_size = patch_size
        self.structure = "full" if perm is None else "block_diagonal"
        self.eigvals, self.eigvecs = _eigh_sorted(cov_g, "Σ" if perm is None else "a patch block of Σ")
        self.mean_groups = mean_g  # float64 [G, m], in group (patch) order
        tt = dict(dtype=self.dtype, device=self.device)
        U = torch.as_tensor(self.eigvecs, **tt)
        G, m = self.eigvals.shape
        # The per-group products Uᵀy and Uz as grouped 1x1 convolutions, not batched matmuls: under
        # torch.func.vmap a matmul with an unbatched [G, m, m] operand copies it once per vector (92 ms for
        # 16 vectors at n = 3072 on one core), while conv1d folds the vmapped vectors into its batch (3.8 ms).
        self._w_project = U.transpose(1, 2).reshape(G * m, m, 1).contiguous()
        self._w_back = U.reshape(G * m, m, 1).contiguous()
        self._mean = torch.as_tensor(mean_g, **tt).reshape(G * m)
        self._lam = self.eigvals
        if perm is None:
            self._perm = self._inv_perm = None
        else:
            self._perm = torch.as_tensor(perm, device=self.device)
            self._inv_perm = torch.as_tensor(np.argsort(perm), device=self.device)

    @property
    def n(self) -> int:
        return int(np.prod(self.image_shape))

    def _scale(self, t: int) -> torch.Tensor:
        a = self.alpha_bar[t]
        v = 1.0 - a
        return torch.as_tensor(np.sqrt(v) / (a * self._lam + v), dtype=self.dtype, device=self.device)

    def __call__(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """ε*(x, t) for x [B, C, H, W] at paper timestep t (1..T)."""
        check_input(x, self.image_shape, "GaussianOracle")
        t = check_timestep(t, self.alpha_bar)
        B = x.shape[0]
        G, m = self._lam.shape
        y = x.to(dtype=self.dtype).reshape(B, -1)
        if self._perm is not None:
            y = y[:, self._perm]
        # [B, G·m, 1] in group (patch) order: ε* = U diag(scale) Uᵀ (y − √ᾱ μ) one group at a time
        y = (y - float(np.sqrt(self.alpha_bar[t])) * self._mean)[:, :, None]
        z = torch.nn.functional.conv1d(y, self._w_project, groups=G) * self._scale(t).reshape(G * m, 1)
        out = torch.nn.functional.conv1d(z, self._w_back, groups=G)[:, :, 0]
        if self._inv_perm is not None:
            out = out[:, self._inv_perm]
        return out.reshape(B, *self.image_shape)

    def score_jacobian(self, t: int) -> np.ndarray:
        """Dense J_x ε*(·, t) = √v_t (ᾱ_t Σ + v_t I)⁻¹ in image order, float64 [n, n] (constant in x; small n only)."""
        t = check_timestep(t, self.alpha_bar)
        a = self.alpha_bar[t]
        v = 1.0 - a
        s = np.sqrt(v) / (a * self._lam + v)
        blocks = np.einsum("gik,gk,gjk->gij", self.eigvecs, s, self.eigvecs)
        n = self.n
        if self._perm is None:
            return blocks[0]
        J = np.zeros((n, n))
        perm = self._perm.cpu().numpy().reshape(blocks.shape[0], -1)
        for g, idx in enumerate(perm):
            J[np.ix_(idx, idx)] = blocks[g]
        return J

    def covariance(self) -> np.ndarray:
        """Σ in image order, float64 [n, n] (block-diagonal Σ re-assembled; small n only)."""
        blocks = np.einsum("gik,gk,gjk->gij", self.eigvecs, self.eigvals, self.eigvecs)
        if self._perm is None:
            return blocks[0]
        n = self.n
        S = np.zeros((n, n))
        perm = self._perm.cpu().numpy().reshape(blocks.shape[0], -1)
        for g, idx in enumerate(perm):
            S[np.ix_(idx, idx)] = blocks[g]
        return S

    def mean(self) -> np.ndarray:
        """μ in image order, float64 [C, H, W]."""
        flat = self.mean_groups.reshape(-1)
        if self._perm is not None:
            flat = flat[np.argsort(self._perm.cpu().numpy())]
        return flat.reshape(self.image_shape)
