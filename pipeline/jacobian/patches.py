"""Patch index maps between images [C,H,W] and patch vectors [M, n_k] (row-major tiles, (C,P,P) flattened)."""

from __future__ import annotations

import torch

from pipeline.patches import patch_indices


def patch_index(image_shape: tuple[int, int, int], patch_size: int, device=None) -> torch.Tensor:
    """Flat pixel indices [M, n_k] of each patch (pipeline.patches.patch_indices as a torch tensor)."""
    return torch.as_tensor(patch_indices(tuple(int(s) for s in image_shape), int(patch_size)), device=device)


def embed_patches(vectors: torch.Tensor, index: torch.Tensor, image_shape, patch_of_row: torch.Tensor):
    """Images [B, C, H, W], zero except patch patch_of_row[i] of image i, which holds vectors[i] ([B, n_k])."""
    B = vectors.shape[0]
    n = int(index.numel())
    out = vectors.new_zeros(B, n)
    out.scatter_(1, index[patch_of_row], vectors)
    return out.reshape(B, *image_shape)


def take_patches(images: torch.Tensor, index: torch.Tensor, patch_of_row: torch.Tensor) -> torch.Tensor:
    """Rows [B, n_k]: patch patch_of_row[i] of image i ([B, C, H, W])."""
    flat = images.reshape(images.shape[0], -1)
    return torch.gather(flat, 1, index[patch_of_row])
