"""The noise-predictor interface ε̂(x, t) shared by the oracle and the learned UNets (paper §2.1)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from pipeline.errors import PipelineError


class ModelError(PipelineError):
    """A model could not be built or does not fit the data it is asked to run on."""


@runtime_checkable
class NoisePredictor(Protocol):
    """ε̂(x, t): noise prediction at the paper's 1-based timestep t (diffusers index i = t - 1).

    ``alpha_bar`` is the model's own schedule (float64 [T+1], alpha_bar[0] = 1) or None when the
    model carries none, in which case the caller supplies a Schedule.
    """

    image_shape: tuple[int, int, int]
    alpha_bar: np.ndarray | None
    dtype: torch.dtype
    device: torch.device

    def __call__(self, x: torch.Tensor, t: int) -> torch.Tensor: ...


def check_alpha_bar(alpha_bar: np.ndarray, *, what: str = "alpha_bar") -> np.ndarray:
    """Validate a schedule array in the project convention: float64 [T+1], alpha_bar[0] = 1, decreasing."""
    a = np.asarray(getattr(alpha_bar, "alpha_bar", alpha_bar), dtype=np.float64)
    if a.ndim != 1 or a.shape[0] < 2:
        raise ModelError(f"{what} must be a 1-D array of length T+1 >= 2, got shape {a.shape}")
    if a[0] != 1.0:
        raise ModelError(
            f"{what}[0] must be 1 (paper convention ᾱ_0 = 1, index = paper t), got {a[0]!r} — "
            "prepend 1.0 to a diffusers alphas_cumprod array (pipeline.geometry.schedule_from_alpha_bar does)"
        )
    if not np.all(np.isfinite(a)) or np.any(a[1:] <= 0) or np.any(np.diff(a) >= 0):
        raise ModelError(
            f"{what} is not finite, positive and strictly decreasing in t — fix the scheduler config or schedule"
        )
    return a


def check_timestep(t: int, alpha_bar: np.ndarray) -> int:
    """Refuse t outside 1..T: ε̂ is undefined at t = 0 (v_0 = 0)."""
    if isinstance(t, torch.Tensor):
        if t.numel() != 1:
            raise ModelError(f"t must be a single paper timestep, got a tensor of shape {tuple(t.shape)}")
        t = t.item()
    if isinstance(t, (float, np.floating)) and float(t) != int(t):
        raise ModelError(f"t must be an integer paper timestep, got {t!r}")
    t = int(t)
    T = len(alpha_bar) - 1
    if not 1 <= t <= T:
        raise ModelError(
            f"paper timestep t={t} is outside 1..T={T} (t is 1-based: diffusers index i = t - 1)"
        )
    return t


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """'float32' | 'float64' | torch dtype -> torch dtype (the only two the project computes in)."""
    if isinstance(dtype, torch.dtype):
        out = dtype
    else:
        out = {
            "float32": torch.float32,
            "fp32": torch.float32,
            "float": torch.float32,
            "float64": torch.float64,
            "fp64": torch.float64,
            "double": torch.float64,
        }.get(str(dtype))
        if out is None:
            raise ModelError(f"unknown dtype {dtype!r} (model.dtype) — use float32 or float64")
    if out not in (torch.float32, torch.float64):
        raise ModelError(f"dtype {out} is not supported (model.dtype) — use float32 or float64")
    return out


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None or 'auto' -> cuda when available, else cpu; a cuda device without CUDA is refused."""
    if device is None or str(device).lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = torch.device(device)
    if out.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            f"device={device} requested but CUDA is not available — use device=cpu or device=auto"
        )
    return out


def check_input(x: torch.Tensor, image_shape: tuple[int, int, int], who: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != tuple(image_shape):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ModelError(f"{who} expects x of shape [B, {', '.join(map(str, image_shape))}], got {shape}")
