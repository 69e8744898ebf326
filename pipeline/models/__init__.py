"""Noise predictors ε̂(x, t) at the paper's 1-based t: the exact Gaussian oracle and diffusers UNet2DModels."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import reading
from pipeline.io import load_npz
from pipeline.models.attention import AttentionRecord, MathAttnProcessor, install_math_attention
from pipeline.models.base import ModelError, NoisePredictor
from pipeline.models.oracle import GaussianOracle, patch_permutation
from pipeline.models.unet import CheckpointNotFoundError, DiffusersNoisePredictor, load_unet

__all__ = [
    "NoisePredictor",
    "ModelError",
    "CheckpointNotFoundError",
    "GaussianOracle",
    "DiffusersNoisePredictor",
    "MathAttnProcessor",
    "AttentionRecord",
    "install_math_attention",
    "load_unet",
    "patch_permutation",
    "gaussian_oracle_from_fit",
]


def _gaussian_arrays(gaussian: Mapping[str, Any] | str | Path | None) -> tuple[np.ndarray, np.ndarray]:
    if gaussian is None:
        raise ModelError(
            "model kind=gaussian_oracle needs the Gaussian fit (mean, cov) of the covariance stage; pass "
            "gaussian=<gaussian_fit.npz or patch_stats.npz path, or a mapping with 'mean' and 'cov'>"
        )
    if isinstance(gaussian, (str, Path)):
        with reading(gaussian, "rerun the covariance stage with force=true"):
            gaussian = load_npz(gaussian)
    if "mean" not in gaussian or "cov" not in gaussian:
        raise ModelError(
            f"the Gaussian fit needs keys 'mean' and 'cov', got {sorted(gaussian)} — rerun the covariance stage "
            "with covariance.full_cov=true"
        )
    return np.asarray(gaussian["mean"], dtype=np.float64), np.asarray(gaussian["cov"], dtype=np.float64)


def gaussian_oracle_from_fit(
    gaussian: Mapping[str, Any] | str | Path | None,
    *,
    structure: str,
    block_size: int | None,
    schedule: Any,
    image_shape: tuple[int, int, int],
    dtype: str,
    device: str | None = None,
) -> GaussianOracle:
    """The exact Gaussian oracle (eq. 20) of the covariance stage's fit on the ᾱ_t of ``schedule``.

    ``gaussian`` holds the fit: a full mean [n] and cov [n, n] (gaussian_fit.npz), or per-patch mean [M, n_k]
    and cov [M, n_k, n_k] (patch_stats.npz, block_diagonal only). structure=full keeps Σ whole;
    structure=block_diagonal keeps its block_size patch blocks (Theorem 17's independent-patch Gaussian).
    """
    if schedule is None:
        raise ModelError("model kind=gaussian_oracle has no schedule of its own; pass schedule=<Schedule>")
    alpha_bar = getattr(schedule, "alpha_bar", schedule)
    mean, cov = _gaussian_arrays(gaussian)
    common = dict(alpha_bar=alpha_bar, image_shape=image_shape, dtype=dtype, device=device)
    if structure == "full":
        return GaussianOracle(mean, cov, **common)
    if structure != "block_diagonal":
        raise ModelError(f"model.structure={structure!r} is unknown — use block_diagonal or full")
    if block_size is None:
        raise ModelError(
            "model.structure=block_diagonal needs model.block_size — set it (usually to patch.size)"
        )
    P = int(block_size)
    if cov.ndim == 3:
        return GaussianOracle.from_patch_blocks(mean, cov, P, **common)
    return GaussianOracle.block_diagonal(mean, cov, P, **common)
