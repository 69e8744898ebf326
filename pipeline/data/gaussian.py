"""Synthetic Gaussian images N(μ, Σ₀) with prescribed patch spectra (Theorem 17's setting, §4.1).

Patch k has covariance Σ_k = V_k diag(μ_k,1 ≥ ... ≥ μ_k,n_k) V_kᵀ with top eigenvalue λ_k = μ_k,1 and
μ_k,i = λ_k · i^(-decay) (a power law, as in natural images); V_k is a seeded random orthogonal matrix.
With coupling ρ = 0, Σ₀ = diag(Σ_1, ..., Σ_M) in patch coordinates (independent patches, Theorem 17).
With 0 < ρ < 1 the patches are correlated while every diagonal block stays exactly Σ_k:
    Σ₀ = L C Lᵀ,  L = diag(L_k), L_k = V_k diag(√μ_k),  C = (1-ρ) I + ρ Q Qᵀ,  Q = [U_1; ...; U_M]
with U_k random orthogonal, so C has identity diagonal blocks and is positive definite. Images are
drawn as x_k = m_k + L_k (√(1-ρ) z_k + √ρ U_k w), z_k, w standard normal: no n×n factorisation is
needed. Values are NOT clipped to [-1, 1].
"""

from __future__ import annotations

import numpy as np

from ..patches import assemble_patches, check_patch_size, patch_grid, patch_indices
from .base import DatasetError, ImageSource

NOISE_BLOCK = 1024  # images per noise draw; image i depends only on (seed, i), not on chunking


def random_orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    """Haar-distributed orthogonal n×n matrix (QR of a Gaussian matrix with the sign fix)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def fix_eigenvector_signs(vecs: np.ndarray) -> np.ndarray:
    """Flip eigenvectors (columns, axis -2 holds entries) so each one's largest-|.| entry is positive."""
    cols = np.swapaxes(vecs, -1, -2)  # one eigenvector per row, so the search runs along memory
    cols = np.ascontiguousarray(cols)
    idx = np.argmax(np.abs(cols), axis=-1)
    picked = np.take_along_axis(cols, idx[..., None], axis=-1)[..., 0]
    return vecs * np.where(picked < 0, -1.0, 1.0)[..., None, :]


def power_law_spectra(lambdas: np.ndarray, n_k: int, decay: float) -> np.ndarray:
    """[M, n_k] descending eigenvalues μ_k,i = λ_k · i^(-decay), i = 1..n_k."""
    return np.asarray(lambdas, dtype=np.float64)[:, None] * np.arange(1, n_k + 1, dtype=np.float64)[None] ** (
        -float(decay)
    )


class GaussianSource(ImageSource):
    """``num_images`` draws from N(μ, Σ₀) with known patch spectra; the truth is exposed as attributes.

    Attributes: true_patch_mean [M, n_k], true_patch_eigvals [M, n_k] (descending), true_patch_eigvecs
    [M, n_k, n_k] (columns), true_patch_cov [M, n_k, n_k]; true_mean() [n] and true_cov() [n, n] in
    (C, H, W) image order.
    """

    name = "gaussian"

    def __init__(
        self,
        num_images: int = 4096,
        image_shape: tuple[int, int, int] = (3, 32, 32),
        patch_size: int = 8,
        lambda_min: float = 2.0,
        lambda_max: float = 40.0,
        lambdas: list[float] | np.ndarray | None = None,
        decay: float = 1.0,
        coupling: float = 0.0,
        mean_scale: float = 0.0,
        seed: int = 0,
    ) -> None:
        image_shape = tuple(int(s) for s in image_shape)
        check_patch_size(image_shape, patch_size)
        if int(num_images) < 1:
            raise DatasetError(f"dataset.num_images={num_images} — set it to at least 1")
        if not 0.0 <= float(coupling) < 1.0:
            raise DatasetError(f"dataset.coupling={coupling} — set it in [0, 1) (0 = block-diagonal Σ₀)")
        self._shape = image_shape
        self.patch_size = int(patch_size)
        self.coupling = float(coupling)
        self.seed = int(seed)
        self.decay = float(decay)
        self._n = int(num_images)
        grid = patch_grid(image_shape[1], image_shape[2], patch_size)
        m, n_k = grid.num_patches, image_shape[0] * self.patch_size**2
        rng = np.random.default_rng([self.seed, 0])
        if lambdas is None:
            if not 0 < float(lambda_min) <= float(lambda_max):
                raise DatasetError(
                    f"dataset.lambda_min={lambda_min}, dataset.lambda_max={lambda_max} — "
                    "set 0 < lambda_min <= lambda_max"
                )
            lambdas = rng.permutation(np.linspace(float(lambda_min), float(lambda_max), m))
        lambdas = np.asarray(lambdas, dtype=np.float64)
        if lambdas.shape != (m,) or np.any(lambdas <= 0):
            raise DatasetError(
                f"dataset.lambdas has shape {lambdas.shape} — give {m} positive numbers (one per patch)"
            )
        self.true_patch_eigvals = power_law_spectra(lambdas, n_k, self.decay)
        self.true_patch_eigvecs = fix_eigenvector_signs(
            np.stack([random_orthogonal(n_k, rng) for _ in range(m)])
        )
        self._factor = self.true_patch_eigvecs * np.sqrt(self.true_patch_eigvals)[:, None, :]  # L_k
        self.true_patch_cov = np.einsum("kij,klj->kil", self._factor, self._factor)
        self.true_patch_mean = float(mean_scale) * rng.standard_normal((m, n_k))
        self._u = np.stack([random_orthogonal(n_k, rng) for _ in range(m)]) if self.coupling > 0 else None
        self._block: tuple[int, np.ndarray] | None = None

    @property
    def lambda_k(self) -> np.ndarray:
        """True top eigenvalue of every patch covariance, [M]."""
        return self.true_patch_eigvals[:, 0].copy()

    def __len__(self) -> int:
        return self._n

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self._shape

    def describe(self) -> dict:
        return {
            **super().describe(),
            "seed": self.seed,
            "patch_size": self.patch_size,
            "coupling": self.coupling,
            "decay": self.decay,
            "lambda_k": self.lambda_k.tolist(),
        }

    def true_mean(self) -> np.ndarray:
        """μ [n] in (C, H, W) image order."""
        mean = np.empty(int(np.prod(self._shape)))
        mean[patch_indices(self._shape, self.patch_size).reshape(-1)] = self.true_patch_mean.reshape(-1)
        return mean

    def true_cov(self) -> np.ndarray:
        """Σ₀ [n, n] in (C, H, W) image order (block-diagonal when coupling = 0)."""
        m, n_k = self.true_patch_mean.shape
        in_patch_order = np.zeros((m * n_k, m * n_k))
        for k in range(m):
            in_patch_order[k * n_k : (k + 1) * n_k, k * n_k : (k + 1) * n_k] = self.true_patch_cov[k]
        if self._u is not None:
            lu = np.einsum("kij,kjl->kil", self._factor, self._u).reshape(m * n_k, n_k)  # rows: L_k U_k
            cross = self.coupling * (lu @ lu.T)
            diag_blocks = np.zeros_like(cross)
            for k in range(m):
                s = slice(k * n_k, (k + 1) * n_k)
                diag_blocks[s, s] = cross[s, s]
            in_patch_order = in_patch_order + cross - diag_blocks
        order = patch_indices(self._shape, self.patch_size).reshape(-1)
        full = np.empty_like(in_patch_order)
        full[np.ix_(order, order)] = in_patch_order
        return full

    def _noise_block(self, j: int) -> np.ndarray:
        """Images NOISE_BLOCK·j .. NOISE_BLOCK·(j+1)-1 in patch coordinates, float64 [B, M, n_k]."""
        if self._block is not None and self._block[0] == j:
            return self._block[1]
        m, n_k = self.true_patch_mean.shape
        b = min(NOISE_BLOCK, self._n - j * NOISE_BLOCK)
        rng = np.random.default_rng([self.seed, 1, j])
        y = rng.standard_normal((b, m, n_k))
        if self._u is not None:
            w = rng.standard_normal((b, n_k))
            y = np.sqrt(1 - self.coupling) * y + np.sqrt(self.coupling) * np.einsum("kij,bj->bki", self._u, w)
        x = self.true_patch_mean[None] + np.einsum("kij,bkj->bki", self._factor, y)
        self._block = (j, x)
        return x

    def _read(self, start: int, stop: int) -> np.ndarray:
        parts = []
        i = start
        while i < stop:
            j = i // NOISE_BLOCK
            lo, hi = i - j * NOISE_BLOCK, min(stop, (j + 1) * NOISE_BLOCK) - j * NOISE_BLOCK
            parts.append(self._noise_block(j)[lo:hi])
            i += hi - lo
        patches = np.concatenate(parts) if parts else np.empty((0, *self.true_patch_mean.shape))
        return assemble_patches(patches, self.patch_size, self._shape).astype(np.float32)
