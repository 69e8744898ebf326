"""Projected wall time of the paper protocols (cifar10_paper, celebahq_paper) on one GPU and on this CPU.

python -m benchmarks.projection [--gpu-tflops 19.5] [--efficiency 0.35] [--launch-ms 10] [--cpu-forward-ms 199]

PROJECTIONS, not measurements. Inputs:
  measured here:  the forward pass's floating-point operations of each architecture (torch's FlopCounterMode
                  on one batch-1 forward: an operation count, the same on any device), and the forward-pass
                  equivalents per point of the paper's measurement (pipeline.jacobian.plan_measurement with
                  the per-product costs benchmarks.jacobian measured on a CPU, conf/measure/paper.yaml);
  assumed:        the GPU's sustained float32 throughput (--gpu-tflops x --efficiency: products run as vmapped
                  chunks of >= 64 vectors, where a UNet is compute-bound) and a per-call launch floor
                  (--launch-ms per vmapped call of `chunk` vectors, for calls too small to fill the device);
                  the forward-pass equivalents per product are taken to be the CPU's.
GPU time of a protocol = points x (forward equivalents per point + 1) x max(FLOPs / throughput,
launch floor / chunk) + its trajectories and proxy forwards. Once a GPU is lent, `python -m benchmarks.jacobian
--device cuda` measures the per-product costs and `benchmarks/gpu_check.sh` the rehearsal; those replace this.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = {
    # preset: (architecture, resolution, patch size, seeds, chain steps, proxy images x timesteps)
    "cifar10_paper": ("ddpm-cifar10-32", 32, 8, 8, 50, 200 * 14),
    "celebahq_paper": ("ddpm-celebahq-256", 64, 16, 8, 49, 200 * 14),
}


def forward_flops(arch: str, resolution: int) -> float:
    """Floating-point operations of one batch-1 forward pass (FlopCounterMode; meta tensors: no compute)."""
    import torch
    from diffusers import UNet2DModel
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.rehearsal.fixtures import CELEBAHQ_UNET, CIFAR10_UNET

    cfg = CIFAR10_UNET if arch == "ddpm-cifar10-32" else CELEBAHQ_UNET
    with torch.device("meta"):
        model = UNet2DModel(**{k: v for k, v in cfg.items() if not k.startswith("_")}).eval()
        x = torch.zeros(1, 3, resolution, resolution)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, 500)
    return float(counter.get_total_flops())


def paper_cost_per_point(n: int, M: int) -> tuple[str, float]:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from pipeline.jacobian import MeasureConfig, plan_measurement

    # the measure group as the paper preset composes it (conf/measure/paper.yaml extends default.yaml)
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        measure = compose("config", overrides=["measure=paper"]).measure
    keys = set(MeasureConfig.__dataclass_fields__)
    cfg = {k: v for k, v in OmegaConf.to_container(measure, resolve=True).items() if k in keys}
    plan = plan_measurement(n, M, MeasureConfig.from_dict(cfg), True)
    return plan.blocks, float(plan.estimated_cost)


def project(
    gpu_tflops: float, efficiency: float, launch_ms: float, cpu_forward_ms: float, chunk: int = 64
) -> dict:
    out = {
        "assumed": {
            "gpu_fp32_tflops": gpu_tflops,
            "efficiency": efficiency,
            "launch_ms_per_call": launch_ms,
            "vectors_per_call": chunk,
            "cpu_forward_ms_cifar10": cpu_forward_ms,
        }
    }
    cifar_flops = None
    for preset, (arch, res, P, seeds, steps, proxy) in PROTOCOLS.items():
        flops = forward_flops(arch, res)
        cifar_flops = cifar_flops or flops
        n, M = 3 * res * res, (res // P) ** 2
        blocks, fe = paper_cost_per_point(n, M)
        points = seeds * steps
        per_fwd_gpu = max(flops / (gpu_tflops * 1e12 * efficiency), launch_ms / 1e3 / chunk)
        forwards = points * (fe + 1) + seeds * steps + proxy
        gpu_h = forwards * per_fwd_gpu / 3600
        # CPU: the measured CIFAR-10 forward time, scaled by the operation count for the other architecture
        cpu_h = forwards * cpu_forward_ms / 1e3 * (flops / cifar_flops) / 3600
        out[preset] = {
            "n": n,
            "M": M,
            "blocks": blocks,
            "forward_gflops": round(flops / 1e9, 2),
            "forward_equivalents_per_point": round(fe),
            "points": points,
            "forwards_total": round(forwards),
            "gpu_ms_per_forward_equivalent": round(per_fwd_gpu * 1e3, 3),
            "gpu_hours_projected": round(gpu_h, 2),
            "gpu_hours_per_seed_projected": round(gpu_h / seeds, 2),
            "cpu_hours_projected": round(cpu_h, 1),
        }
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu-tflops", type=float, default=19.5, help="float32 peak (A100: 19.5, H100 SXM: 67)")
    ap.add_argument("--efficiency", type=float, default=0.35, help="sustained fraction of the peak")
    ap.add_argument("--launch-ms", type=float, default=10.0, help="floor per vmapped call (kernel launches)")
    ap.add_argument("--cpu-forward-ms", type=float, default=199.0, help="measured batch-1 forward on the CPU")
    args = ap.parse_args(argv)
    out = project(args.gpu_tflops, args.efficiency, args.launch_ms, args.cpu_forward_ms)
    for preset in PROTOCOLS:
        r = out[preset]
        print(
            f"{preset}: n = {r['n']}, M = {r['M']}, blocks {r['blocks']}, {r['forward_gflops']} GFLOP per forward, "
            f"{r['forward_equivalents_per_point']} forward equivalents per point x {r['points']} points: "
            f"PROJECTED {r['gpu_hours_projected']} h on one GPU ({r['gpu_hours_per_seed_projected']} h per seed), "
            f"{r['cpu_hours_projected']} h on the CPU"
        )
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
