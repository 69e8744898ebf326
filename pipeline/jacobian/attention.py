"""Attention entropy H(A_t) (Table 6) and patch-level attention mass (Theorem 23) from recorded weights.

Input: softmax weights per attention layer, [B, heads, L_query, L_key] (what
pipeline.models.attention.recording collects in a plain forward pass at x_t). Averaging:
H of one query row = −Σ_j A_qj log A_qj (nats); a layer's entropy is the mean over batch, heads and
queries; `mean` is the unweighted mean over the selected layers (every layer counts once whatever its
token count); `token_weighted` weights layers by their query count. The paper does not say how it
averages (Table 6), so all three levels are returned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch


@dataclass
class AttentionEntropy:
    per_layer: dict[str, float]  # nats, mean over batch, heads, queries
    max_entropy: dict[str, float]  # log L_key: the uniform-attention value per layer
    mean: float  # unweighted mean over layers
    token_weighted: float  # layers weighted by their number of queries


def row_entropy(weights: torch.Tensor) -> torch.Tensor:
    """−Σ_j A_qj log A_qj over the last axis (0 log 0 = 0), float64."""
    w = weights.double()
    return -(torch.where(w > 0, w * torch.log(w), torch.zeros_like(w))).sum(-1)


def attention_entropy(
    weights: Mapping[str, torch.Tensor], layers: Sequence[str] | None = None
) -> AttentionEntropy:
    """Entropy of the attention rows of every (selected) layer; weights[name] is [B, heads, Lq, Lk]."""
    names = list(layers) if layers is not None else sorted(weights)
    if not names:
        raise ValueError("no attention layers given: record them with pipeline.models.attention.recording")
    per, mx, counts = {}, {}, {}
    for name in names:
        w = weights[name]
        if w.dim() != 4:
            raise ValueError(f"attention weights of {name} must be [B, heads, Lq, Lk], got {tuple(w.shape)}")
        per[name] = float(row_entropy(w).mean())
        mx[name] = math.log(w.shape[-1])
        counts[name] = w.shape[-2]
    total = sum(counts.values())
    return AttentionEntropy(
        per_layer=per,
        max_entropy=mx,
        mean=sum(per.values()) / len(per),
        token_weighted=sum(per[k] * counts[k] for k in per) / total,
    )


def patch_attention(weights: torch.Tensor, image_hw: tuple[int, int], patch_size: int) -> torch.Tensor:
    """Patch-level attention A_kj [B, M, M]: mean over heads and over the queries inside patch k of the
    attention mass on keys inside patch j (rows sum to 1). 1 − A_kk is Theorem 23's off-diagonal mass.

    The layer's tokens form an h x w grid over the H x W image (stride s = H/h); needs P % s == 0.
    """
    B, heads, L, L2 = weights.shape
    H, W = image_hw
    side = int(round(math.sqrt(L * W / H)))
    h, w = L // side, side
    if h * w != L or L != L2 or H % h or W % w or H // h != W // w:
        raise ValueError(f"cannot map {L} tokens onto a {H}x{W} image")
    s = H // h
    if patch_size % s:
        raise ValueError(f"token stride {s} does not divide patch size {patch_size}: tokens straddle patches")
    per = patch_size // s
    rows, cols = H // patch_size, W // patch_size
    tok_patch = ((torch.arange(h)[:, None] // per) * cols + (torch.arange(w)[None, :] // per)).reshape(-1)
    M = rows * cols
    onehot = torch.nn.functional.one_hot(tok_patch, M).double()  # [L, M]
    mass = weights.double().mean(1) @ onehot  # [B, Lq, M]: mass of each query on each patch
    counts = onehot.sum(0)  # queries per patch
    return (onehot.T @ mass) / counts[None, :, None]
