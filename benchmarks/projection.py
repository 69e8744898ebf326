"""Projected wall time of the paper protocols (cifar10_paper, celebahq_paper) on one GPU and on this CPU.

python -m benchmarks.projection [--gpu-tflops 19.5] [--efficiency 0.35] [--launch-ms 10] [--cpu-forward-ms 199]

PROJECTIONS, not measurements. What goes in:
  composed:  each preset exactly as the stages compose it (`experiment=<preset>`, benchmarks.plan.preset_plan,
             the same function `benchmarks.jacobian` prints): its points (seeds x measured steps), and per point
             the products of every estimator that runs (pipeline.jacobian.plan) and the forward-pass equivalents
             the config's per-product costs give them;
  counted:   the floating-point operations of one batch-1 forward pass, one VJP and one forward-mode JVP of each
             architecture (torch's FlopCounterMode on meta tensors: an operation count, the same on any device);
             the exact route's post-processing (JΦᵀJΦ, its eigenvalues, M² block SVDs, the replays) as ~4 n³;
  assumed:   the GPU's sustained throughput (--gpu-tflops x --efficiency, float32 products in vmapped chunks where
             a UNet is compute-bound; float64 post-processing at the same rate) and a floor per vmapped call of
             `chunk` vectors (--launch-ms), for calls too small to fill the device.
GPU time = Σ products x FLOPs per product / throughput (floored) + trajectories and proxy forwards. Once a GPU
is lent, `benchmarks/gpu_check.sh` measures the route on CUDA; its figures replace these.
"""

from __future__ import annotations

import argparse
import json

from benchmarks.plan import PRESETS, compose_preset, describe, preset_plan

ARCH = {"ddpm_cifar10": "CIFAR10_UNET", "ddpm_celebahq": "CELEBAHQ_UNET"}


def product_flops(model_name: str, resolution: int) -> dict[str, float]:
    """FLOPs of one batch-1 forward pass, one VJP (the backward of a reused linearisation) and one JVP
    (the tangent part of forward-mode AD) of the preset's architecture (FlopCounterMode; meta tensors)."""
    import torch
    from diffusers import UNet2DModel
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.rehearsal import fixtures
    from pipeline.models.attention import install_math_attention

    cfg = getattr(fixtures, ARCH[model_name])
    with torch.device("meta"):
        model = UNet2DModel(**{k: v for k, v in cfg.items() if not k.startswith("_")}).eval()
        x = torch.zeros(1, 3, resolution, resolution)
        t = torch.full((1,), 500, dtype=torch.long)
    for p in model.parameters():
        p.requires_grad_(False)
    install_math_attention(model)

    def f(z):
        return model(z, t).sample

    def count(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        return float(counter.get_total_flops())

    forward = count(lambda: f(x))
    out, vjp_fn = torch.func.vjp(f, x)
    vjp = count(lambda: vjp_fn(torch.zeros_like(out)))
    jvp_with_primal = count(lambda: torch.func.jvp(f, (x,), (torch.zeros_like(x),)))
    return {"forward": forward, "vjp": vjp, "jvp": jvp_with_primal - forward}


def project_preset(
    preset: str,
    gpu_tflops: float,
    efficiency: float,
    launch_ms: float,
    cpu_forward_ms: float,
    chunk: int,
    cifar_forward: float | None,
) -> dict:
    cfg = compose_preset(preset)
    plan = preset_plan(preset)
    flops = product_flops(cfg["model"]["name"], int(cfg["dataset"]["resolution"]))
    rate = gpu_tflops * 1e12 * efficiency
    floor = launch_ms / 1e3 / chunk  # seconds per vector in a vmapped call too small to fill the device

    def per_vector(f: float) -> float:
        return max(f / rate, floor)

    nb, nl = len(plan.block_steps), len(plan.steps) - len(plan.block_steps)
    seconds_per_point = {}
    for name, p in (("full", plan.full), ("light", plan.light)):
        dense = 4.0 * plan.n**3 if p.blocks == "dense" else 0.0
        seconds_per_point[name] = (
            p.jvps * per_vector(flops["jvp"])
            + p.vjps * per_vector(flops["vjp"])
            + per_vector(flops["forward"])
            + dense / rate
        )
    measure_s = plan.seeds * (nb * seconds_per_point["full"] + nl * seconds_per_point["light"])
    around_s = (plan.trajectory_forwards + plan.proxy_forwards) * per_vector(flops["forward"])
    gpu_s = measure_s + around_s
    tflop_per_point = (plan.full.jvps * flops["jvp"] + plan.full.vjps * flops["vjp"]) / 1e12
    fe = plan.forward_equivalents_per_point
    cpu_h = (
        plan.forward_equivalents_total
        * cpu_forward_ms
        / 1e3
        * (flops["forward"] / (cifar_forward or flops["forward"]))
        / 3600
    )
    return {
        "plan": describe(preset, plan),
        "n": plan.n,
        "M": plan.M,
        "blocks": plan.full.blocks,
        "points": plan.points,
        "steps": len(plan.steps),
        "jvps_per_point": plan.full.jvps,
        "vjps_per_point": plan.full.vjps,
        "forward_gflops": round(flops["forward"] / 1e9, 2),
        "vjp_gflops": round(flops["vjp"] / 1e9, 2),
        "jvp_gflops": round(flops["jvp"] / 1e9, 2),
        "tflop_per_point": round(tflop_per_point, 2),
        "forward_equivalents_per_point": round(fe),
        "forwards_total": round(plan.forward_equivalents_total),
        "gpu_minutes_projected": round(gpu_s / 60, 1),
        "gpu_hours_projected": round(gpu_s / 3600, 3),
        "gpu_minutes_per_seed_projected": round(gpu_s / 60 / plan.seeds, 2),
        "cpu_hours_projected": round(cpu_h, 1),
    }


def project(
    gpu_tflops: float, efficiency: float, launch_ms: float, cpu_forward_ms: float, chunk: int = 64
) -> dict:
    out: dict = {
        "assumed": {
            "gpu_fp32_tflops": gpu_tflops,
            "efficiency": efficiency,
            "launch_ms_per_call": launch_ms,
            "vectors_per_call": chunk,
            "cpu_forward_ms_cifar10": cpu_forward_ms,
            "dense_postprocessing_flops": "4 n^3 per point at the same throughput",
        }
    }
    cifar_forward = None
    for preset in PRESETS:
        r = project_preset(preset, gpu_tflops, efficiency, launch_ms, cpu_forward_ms, chunk, cifar_forward)
        cifar_forward = cifar_forward or r["forward_gflops"] * 1e9
        out[preset] = r
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu-tflops", type=float, default=19.5, help="float32 peak (A100: 19.5, H100 SXM: 67)")
    ap.add_argument("--efficiency", type=float, default=0.35, help="sustained fraction of the peak")
    ap.add_argument("--launch-ms", type=float, default=10.0, help="floor per vmapped call (kernel launches)")
    ap.add_argument("--cpu-forward-ms", type=float, default=199.0, help="measured batch-1 forward on the CPU")
    args = ap.parse_args(argv)
    out = project(args.gpu_tflops, args.efficiency, args.launch_ms, args.cpu_forward_ms)
    a = out["assumed"]
    print(
        f"ASSUMED: {a['gpu_fp32_tflops']} TFLOP/s x {a['efficiency']} sustained, a floor of "
        f"{a['launch_ms_per_call']} ms per vmapped call of {a['vectors_per_call']} vectors, the exact route's "
        f"post-processing as 4 n³ FLOPs; CPU column from a {a['cpu_forward_ms_cifar10']} ms CIFAR-10 forward "
        "pass scaled by FLOPs"
    )
    for preset in PRESETS:
        r = out[preset]
        print(r["plan"])
        print(
            f"  counted: {r['forward_gflops']} GFLOP per forward, {r['vjp_gflops']} per VJP, {r['jvp_gflops']} "
            f"per JVP; {r['tflop_per_point']} TFLOP of products per point; PROJECTED {r['gpu_minutes_projected']} "
            f"min on one GPU ({r['gpu_minutes_per_seed_projected']} min per seed), {r['cpu_hours_projected']} h "
            "on the CPU"
        )
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
