"""Non-overlapping P×P patch partition of images (the PIFS partition R_1..R_M of the paper, §2.2, §7.1).

Convention (the project's, used by every stage): patches are tiles in row-major order k = 0..M-1; a patch vector is its
(C, P, P) block flattened channel-major, then row, then column, so n_k = C·P². Functions accept numpy
arrays or torch tensors and return the same kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PatchGrid:
    """The patch partition of an H×W image into P×P tiles, row-major."""

    height: int
    width: int
    patch_size: int

    @property
    def rows(self) -> int:
        return self.height // self.patch_size

    @property
    def cols(self) -> int:
        return self.width // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.rows * self.cols

    def row_col(self, k: int) -> tuple[int, int]:
        """Grid position (row, col) of patch k."""
        if not 0 <= k < self.num_patches:
            raise IndexError(f"patch index {k} out of range 0..{self.num_patches - 1}")
        return divmod(int(k), self.cols)

    def origin(self, k: int) -> tuple[int, int]:
        """Pixel coordinates (y0, x0) of patch k's top-left corner."""
        r, c = self.row_col(k)
        return r * self.patch_size, c * self.patch_size


def check_patch_size(image_shape: tuple[int, ...], patch_size: int) -> None:
    """Raise ValueError unless P divides both image sides (the partition must tile the image exactly)."""
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (C, H, W), got {tuple(image_shape)}")
    _, h, w = (int(s) for s in image_shape)
    p = int(patch_size) if isinstance(patch_size, (int, np.integer)) else patch_size
    if not isinstance(p, int) or p < 1:
        raise ValueError(f"patch size must be a positive integer, got {patch_size!r} (set patch.size=8, say)")
    if h % p or w % p:
        divisors = [d for d in range(1, min(h, w) + 1) if h % d == 0 and w % d == 0]
        raise ValueError(
            f"patch size P={p} does not divide the image size {h}x{w}: the P×P patches must tile the "
            f"image exactly. Choose patch.size from {divisors}, or change dataset.resolution."
        )


def patch_grid(height: int, width: int, patch_size: int) -> PatchGrid:
    """The row-major patch grid of an H×W image; raises ValueError if P does not divide H and W."""
    check_patch_size((1, height, width), patch_size)
    return PatchGrid(int(height), int(width), int(patch_size))


def _permute(x, axes):
    return x.permute(*axes) if hasattr(x, "permute") else x.transpose(axes)


def extract_patches(x, patch_size: int):
    """[N, C, H, W] images -> [N, M, n_k] patch vectors (row-major k; vector = (C, P, P) flattened)."""
    if x.ndim != 4:
        raise ValueError(f"extract_patches expects [N, C, H, W], got shape {tuple(x.shape)}")
    n, c, h, w = (int(s) for s in x.shape)
    grid = patch_grid(h, w, patch_size)
    p = grid.patch_size
    y = x.reshape(n, c, grid.rows, p, grid.cols, p)
    y = _permute(y, (0, 2, 4, 1, 3, 5))
    return y.reshape(n, grid.num_patches, c * p * p)


def assemble_patches(patches, patch_size: int, image_shape: tuple[int, int, int]):
    """Inverse of extract_patches: [N, M, n_k] -> [N, C, H, W]."""
    c, h, w = (int(s) for s in image_shape)
    grid = patch_grid(h, w, patch_size)
    p = grid.patch_size
    if patches.ndim != 3 or tuple(int(s) for s in patches.shape[1:]) != (grid.num_patches, c * p * p):
        raise ValueError(
            f"assemble_patches expects [N, {grid.num_patches}, {c * p * p}] for image shape {image_shape} "
            f"and P={p}, got {tuple(patches.shape)}"
        )
    n = int(patches.shape[0])
    y = patches.reshape(n, grid.rows, grid.cols, c, p, p)
    y = _permute(y, (0, 3, 1, 4, 2, 5))
    return y.reshape(n, c, h, w)


def patch_indices(image_shape: tuple[int, int, int], patch_size: int) -> np.ndarray:
    """int64 [M, n_k]: flat (C, H, W) pixel index of every entry of every patch vector.

    x.reshape(-1)[patch_indices(...)[k]] is patch k's vector, so a full n×n covariance Σ₀ in image
    order has patch block Σ_k = Σ₀[np.ix_(idx[k], idx[k])].
    """
    c, h, w = (int(s) for s in image_shape)
    flat = np.arange(c * h * w, dtype=np.int64).reshape(1, c, h, w)
    return np.ascontiguousarray(extract_patches(flat, patch_size)[0])


def patch_blocks_from_full(
    full_cov: np.ndarray, image_shape: tuple[int, int, int], patch_size: int
) -> np.ndarray:
    """Diagonal patch blocks [M, n_k, n_k] of a full covariance [n, n] given in (C, H, W) image order."""
    idx = patch_indices(image_shape, patch_size)
    return np.stack([full_cov[np.ix_(i, i)] for i in idx])


def full_from_patch_blocks(
    blocks: np.ndarray, image_shape: tuple[int, int, int], patch_size: int
) -> np.ndarray:
    """Block-diagonal covariance [n, n] in (C, H, W) image order from patch blocks [M, n_k, n_k]."""
    idx = patch_indices(image_shape, patch_size)
    if blocks.shape != (idx.shape[0], idx.shape[1], idx.shape[1]):
        raise ValueError(
            f"blocks must have shape {(idx.shape[0], idx.shape[1], idx.shape[1])}, got {blocks.shape}"
        )
    n = idx.size
    full = np.zeros((n, n), dtype=blocks.dtype)
    for k, i in enumerate(idx):
        full[np.ix_(i, i)] = blocks[k]
    return full
