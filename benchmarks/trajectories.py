"""DDIM trajectory throughput for the google/ddpm-cifar10-32 architecture (random weights).

python -m benchmarks.trajectories [--steps 2] [--reps 3] [--device cpu|cuda] [--threads N]

Times ddim_sample (one batched UNet evaluation + the eq. (4) update per step) at batch 1 and 8 with
the project's forward-AD attention processor (MathAttnProcessor), and, as the in-run baseline, the
same weights under diffusers' default attention processor (F.scaled_dot_product_attention). Prints
human-readable lines, then one JSON line: steps_per_s_b1, steps_per_s_b8 (ours), the baseline's,
ratios ours/baseline, and trajectories_per_s_b8 for the paper's 50-step chain.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time

import numpy as np
import torch

# google/ddpm-cifar10-32 config.json (UNet2DModel, 35.7M parameters); weights are random here.
DDPM_CIFAR10_CONFIG = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    layers_per_block=2,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=None,
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
    mid_block_scale_factor=1,
    norm_eps=1e-6,
    norm_num_groups=32,
    act_fn="silu",
    center_input_sample=False,
    time_embedding_type="positional",
)


class _DefaultAttention:
    """The same UNet behind diffusers' default attention processor, as a NoisePredictor (baseline)."""

    def __init__(self, unet, alpha_bar, image_shape):
        self.unet, self.alpha_bar, self.image_shape = (
            unet.eval().requires_grad_(False),
            alpha_bar,
            image_shape,
        )
        p = next(unet.parameters())
        self.dtype, self.device = p.dtype, p.device

    def __call__(self, x, t):
        return self.unet(x, torch.tensor(t - 1, device=x.device), return_dict=False)[0]


def _time(model, chain, batch, device, reps):
    from pipeline.sampler import ddim_sample, noise_batch

    x_T = noise_batch(range(batch), model.image_shape, model.dtype)
    best = float("inf")
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        ddim_sample(model, chain, x_T, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return len(chain) / best


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2, help="DDIM steps per timed run")
    ap.add_argument("--reps", type=int, default=3, help="timed runs per setting (best is kept)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--batches", default="1,8")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffusers import UNet2DModel

    from pipeline.geometry import linear_schedule, strided_chain
    from pipeline.models.unet import DiffusersNoisePredictor

    device = torch.device(args.device)
    torch.manual_seed(0)
    unet = UNet2DModel(**DDPM_CIFAR10_CONFIG)
    n_params = sum(p.numel() for p in unet.parameters())
    sched = linear_schedule(1000)  # google/ddpm-cifar10-32's scheduler: linear β 1e-4..0.02, T = 1000
    chain = strided_chain(sched, 50, "trailing")
    chain = type(chain)(
        chain.name,
        chain.timesteps[: args.steps],
        chain.alpha_bar_t[: args.steps],
        chain.alpha_bar_prev[: args.steps],
    )
    ours = DiffusersNoisePredictor(copy.deepcopy(unet).to(device), sched.alpha_bar, (3, 32, 32))
    base = _DefaultAttention(copy.deepcopy(unet).to(device), sched.alpha_bar, (3, 32, 32))
    print(
        f"ddpm-cifar10-32 architecture, {n_params / 1e6:.1f}M parameters, random weights, float32, "
        f"device={device}, torch threads={torch.get_num_threads()}, {platform.processor() or platform.machine()}"
    )
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32, device=device)
        err = (ours(x, 500) - base(x, 500)).abs().max().item()
    print(f"max |ε̂ ours - ε̂ default attention| = {err:.2e}")
    batches = [int(s) for s in args.batches.split(",")]
    for b in batches:  # warm-up (allocator, oneDNN primitive caches for each batch size)
        _time(ours, chain, b, device, 1)
        _time(base, chain, b, device, 1)
    out: dict = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "steps_timed": args.steps,
        "eps_max_abs_diff_vs_default_attention": err,
    }
    for b in batches:
        # interleave ours and the baseline (best of reps each): other jobs on a shared machine hit both alike
        so = sb = 0.0
        for _ in range(args.reps):
            so = max(so, _time(ours, chain, b, device, 1))
            sb = max(sb, _time(base, chain, b, device, 1))
        print(
            f"batch {b}: ours {so:.2f} steps/s ({so * b:.1f} samples·steps/s), diffusers default "
            f"attention {sb:.2f} steps/s; ratio ours/default = {so / sb:.3f}; "
            f"50-step trajectories/s = {so * b / 50:.3f}"
        )
        out[f"steps_per_s_b{b}"] = so
        out[f"steps_per_s_b{b}_default_attention"] = sb
        out[f"ratio_b{b}_ours_vs_default"] = so / sb
        out[f"trajectories_per_s_b{b}"] = so * b / 50
    print(
        json.dumps(
            {k: (round(v, 6) if isinstance(v, float) and np.isfinite(v) else v) for k, v in out.items()}
        )
    )
    return out


if __name__ == "__main__":
    main()
