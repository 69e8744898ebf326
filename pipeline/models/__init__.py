"""Noise predictors ε̂(x, t) at the paper's 1-based t: the exact Gaussian oracle and diffusers UNet2DModels."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import reading
from pipeline.io import load_npz
from pipeline.models.assets import resolve_asset_path
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
    "model_from_config",
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


def model_from_config(
    cfg: Mapping[str, Any],
    *,
    image_shape: tuple[int, int, int],
    schedule: Any = None,
    gaussian: Mapping[str, Any] | str | Path | None = None,
    device: str | None = None,
) -> NoisePredictor:
    """Build the noise predictor of a `model` config group (conf/model/*.yaml), without Hydra.

    kind=gaussian_oracle: ``schedule`` (Schedule or alpha_bar) is required; ``gaussian`` holds the fit:
    a full mean [n] and cov [n, n] (gaussian_fit.npz), or per-patch mean [M, n_k] and cov [M, n_k, n_k]
    (patch_stats.npz, block_diagonal only). structure=block_diagonal keeps Σ's block_size patch blocks.
    kind=unet: load_unet(cfg.path, ...); ``schedule`` is used only if the checkpoint has no scheduler config.
    """
    cfg = dict(cfg)
    kind = cfg.get("kind")
    dtype = cfg["dtype"]
    if kind == "gaussian_oracle":
        if schedule is None:
            raise ModelError(
                "model kind=gaussian_oracle has no schedule of its own; pass schedule=<Schedule>"
            )
        alpha_bar = getattr(schedule, "alpha_bar", schedule)
        mean, cov = _gaussian_arrays(gaussian)
        structure = cfg["structure"]
        common = dict(alpha_bar=alpha_bar, image_shape=image_shape, dtype=dtype, device=device)
        if structure == "full":
            return GaussianOracle(mean, cov, **common)
        if structure != "block_diagonal":
            raise ModelError(f"model.structure={structure!r} is unknown — use block_diagonal or full")
        if cfg.get("block_size") is None:
            raise ModelError(
                "model.structure=block_diagonal needs model.block_size — set it (usually to patch.size)"
            )
        P = int(cfg["block_size"])
        if cov.ndim == 3:
            return GaussianOracle.from_patch_blocks(mean, cov, P, **common)
        return GaussianOracle.block_diagonal(mean, cov, P, **common)
    if kind == "unet":
        if not cfg.get("path"):
            raise ModelError(
                "model kind=unet needs model.path — set it to a local checkpoint folder or a hub id"
            )
        path = cfg["path"]
        if str(path).startswith("pkg://"):  # a checkpoint shipped inside the package (model=pifs_ddpm16)
            path = str(resolve_asset_path(path))
        return load_unet(
            path,
            image_shape=image_shape,
            dtype=dtype,
            device=device,
            allow_resolution_change=bool(cfg["allow_resolution_change"]),
            schedule=schedule,
            local_files_only=cfg["local_files_only"],
            revision=cfg["revision"],
        )
    raise ModelError(f"model.kind={kind!r} is unknown — use gaussian_oracle or unet")
