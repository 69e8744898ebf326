"""An attention processor for diffusers' ``Attention`` that forward-mode AD can pass through and that can
report its softmax weights (paper §4.4, Theorem 23: A_kj = softmax_j(q_k·k_j / √d))."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch


@dataclass
class AttentionRecord:
    """Softmax attention weights per attention layer, one tensor [B, heads, L_query, L_key] per forward call.

    Layer names are the Attention modules' names in the model (e.g. ``down_blocks.1.attentions.0``);
    L is the number of spatial tokens (H'·W') of that layer, tokens row-major over the feature map.
    """

    weights: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def last(self) -> dict[str, torch.Tensor]:
        """The weights of the most recent forward call, per layer."""
        return {name: ws[-1] for name, ws in self.weights.items()}

    def _add(self, name: str, probs: torch.Tensor) -> None:
        if torch._C._functorch.is_functorch_wrapped_tensor(probs):
            raise RuntimeError(
                "attention weights cannot be recorded inside torch.func transforms (jvp/vjp/vmap); "
                "record them in a plain forward call at the same point"
            )
        self.weights.setdefault(name, []).append(probs.detach())


class MathAttnProcessor:
    """softmax(Q Kᵀ · scale) V written out, for diffusers' ``Attention`` modules (UNet2DModel blocks).

    Why not diffusers' default ``AttnProcessor2_0``: its F.scaled_dot_product_attention picks fused
    (flash / memory-efficient) kernels that have no forward-mode AD (pytorch#98164, #117629), and it
    never materialises the weights. Here the softmax is explicit, so jvp/linearize work and the weights
    can be recorded. The softmax runs in the input dtype (float32 or float64, no up/downcast); only
    half-precision inputs are upcast to float32 for it. The output is made contiguous because the
    GroupNorm of the next ResNet block has no forward AD for non-contiguous input.
    """

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.record: AttentionRecord | None = None

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)

        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        # [B, heads, L, d]
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        scores = torch.matmul(query, key.transpose(-1, -2)) * attn.scale
        if attention_mask is not None:
            scores = scores + attention_mask
        if scores.dtype in (torch.float16, torch.bfloat16):
            probs = scores.float().softmax(dim=-1).to(scores.dtype)
        else:
            probs = scores.softmax(dim=-1)
        if self.record is not None:
            self.record._add(self.name, probs)
        hidden_states = torch.matmul(probs, value)

        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        hidden_states = hidden_states / attn.rescale_output_factor
        return hidden_states.contiguous()


def install_math_attention(module: torch.nn.Module) -> dict[str, MathAttnProcessor]:
    """Replace every attention processor of a diffusers model with a MathAttnProcessor; returns them by name."""
    procs: dict[str, MathAttnProcessor] = {}
    # UNet2DModel has no set_attn_processor (not an AttentionMixin), so walk its Attention modules.
    for name, sub in module.named_modules():
        if callable(getattr(sub, "set_processor", None)) and hasattr(sub, "processor"):
            procs[name] = MathAttnProcessor(name)
            sub.set_processor(procs[name])
    return procs


@contextlib.contextmanager
def recording(processors: dict[str, MathAttnProcessor]) -> Iterator[AttentionRecord]:
    """Record softmax weights of every processor for the duration of the block."""
    record = AttentionRecord()
    for p in processors.values():
        p.record = record
    try:
        yield record
    finally:
        for p in processors.values():
            p.record = None
