"""A UNet's raw output under diffusers' `prediction_type` turned into the paper's noise prediction ε̂ (§2.1).

x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (eq. 1), so with a = √ᾱ_t and s = √(1−ᾱ_t):
  epsilon       ε̂ = out
  v_prediction  ε̂ = a·v̂ + s·x_t           (v = a ε − s x_0, Salimans & Ho 2022)
  sample        ε̂ = (x_t − a·x̂_0) / s
The DDIM operator of eq. (4) is then Φ_t(x) = r_t x + b_t ε̂(x, t) whatever the network predicts; its
Jacobian picks up the identity terms above (e.g. Jε̂ = a·Jv̂ + s·I), so off-diagonal blocks of Jε̂ are a·those of Jv̂.
"""

from __future__ import annotations

import math

import torch

from pipeline.models.base import ModelError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def check_prediction_type(prediction_type: str, source: str = "") -> str:
    if prediction_type not in PREDICTION_TYPES:
        where = f"{source}: " if source else ""
        raise ModelError(
            f"{where}prediction_type={prediction_type!r} is not supported — use one of {list(PREDICTION_TYPES)} "
            "(diffusers' scheduler_config.json key)"
        )
    return prediction_type


def eps_from_prediction(
    out: torch.Tensor, x: torch.Tensor, alpha_bar_t, prediction_type: str
) -> torch.Tensor:
    """ε̂ from the raw output ``out`` at x_t; ``alpha_bar_t`` a float or a tensor broadcastable to x."""
    if prediction_type == "epsilon":
        return out
    if isinstance(alpha_bar_t, torch.Tensor):
        a, s = alpha_bar_t.sqrt(), (1 - alpha_bar_t).sqrt()
    else:
        a, s = math.sqrt(float(alpha_bar_t)), math.sqrt(1.0 - float(alpha_bar_t))
    if prediction_type == "v_prediction":
        return a * out + s * x
    if prediction_type == "sample":
        return (x - a * out) / s
    raise ValueError(
        f"prediction_type={prediction_type!r} is not supported; use one of {list(PREDICTION_TYPES)}"
    )
