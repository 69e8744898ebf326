"""Does torch.compile lower the cost of one Jacobian product? Measured on the ddpm-cifar10-32 architecture.

python -m benchmarks.compile [--threads 1] [--vectors 8] [--small]

The exact route's product is the VJP w ↦ Jε̂ᵀ w, applied to a chunk of vectors through `torch.func.vmap`
(pipeline.jacobian.operators). Compiling vmap around a JVP fails upstream, so what can be compiled is the
product function itself. Variants, each timed on the same chunk, best of a few rounds, interleaved:
  eager      the engine's product: the reused `torch.func.vjp` closure, vmapped (no primal per call)
  fwd        torch.compile(model) inside the same eager vjp + vmap (the forward graph compiled; functorch
             transforms then run over the compiled module)
  whole      torch.compile of the whole product function w ↦ vmap(vjp(f, x)[1])(w) (primal inside)
  batch      torch.compile of the model's own batch dimension: x repeated B times, one forward and one
             backward with the B cotangents (autograd.grad), the primal recomputed per call
Prints the cost per product in forward-pass equivalents (one eager batch-1 forward measured in the same
run), the compile time of each variant, and whether it failed; then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch


def _time(fn, rounds: int) -> float:
    best = math.inf
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vectors", type=int, default=8, help="vectors per product call (the vmap chunk)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--small", action="store_true", help="a 2-level test UNet instead of ddpm-cifar10-32")
    ap.add_argument(
        "--variants", default="eager,fwd,whole,batch", help="comma-separated subset (eager is always timed)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from diffusers import UNet2DModel

    from benchmarks.jacobian import CIFAR_UNET
    from pipeline.models.attention import install_math_attention

    torch.manual_seed(0)
    arch = dict(CIFAR_UNET)
    if args.small:
        arch.update(
            block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            layers_per_block=1,
        )
    model = UNet2DModel(**arch).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    install_math_attention(model)
    t = torch.full((1,), 500, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 32, 32, generator=g)
    B = args.vectors
    W = torch.randn(B, 1, 3, 32, 32, generator=g)

    def f(z):
        return model(z, t).sample

    with torch.no_grad():
        t_fwd = _time(lambda: f(x), args.rounds + 2)
    _, vjp_fn = torch.func.vjp(f, x)
    eager = torch.func.vmap(lambda w: vjp_fn(w)[0])
    ref = eager(W)
    out: dict = {"threads": args.threads, "vectors": B, "forward_ms": round(1e3 * t_fwd, 1), "variants": {}}

    def fwd_variant():
        cf = torch.compile(f)
        _, cvjp = torch.func.vjp(cf, x)
        return torch.func.vmap(lambda w: cvjp(w)[0])

    def whole_variant():
        return torch.compile(lambda Wb: torch.func.vmap(lambda w: torch.func.vjp(f, x)[1](w)[0])(Wb))

    def batch_variant():
        tb = torch.full((B,), 500, dtype=torch.long)

        def prod(Wb):
            xr = x.expand(B, 3, 32, 32).clone().requires_grad_(True)
            with torch.enable_grad():
                y = model(xr, tb).sample
                return torch.autograd.grad(y, xr, Wb.reshape(B, 3, 32, 32))[0].reshape(B, 1, 3, 32, 32)

        return torch.compile(prod)

    variants = {"eager": lambda: eager, "fwd": fwd_variant, "whole": whole_variant, "batch": batch_variant}
    wanted = {"eager", *args.variants.split(",")}
    variants = {k: v for k, v in variants.items() if k in wanted}
    built = {}
    for name, make in variants.items():
        t0 = time.perf_counter()
        try:
            fn = make()
            y = fn(W)  # the first call compiles
            err = float((y - ref).abs().max() / ref.abs().max())
            built[name] = fn
            out["variants"][name] = {
                "compile_s": round(time.perf_counter() - t0, 1),
                "max_rel_diff": float(f"{err:.1e}"),
            }
        except Exception as e:  # noqa: BLE001 - a failing variant is a result, reported
            out["variants"][name] = {"failed": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
    best = {name: math.inf for name in built}
    for _ in range(args.rounds):  # interleaved: load changes hit every variant alike
        for name, fn in built.items():
            best[name] = min(best[name], _time(lambda fn=fn: fn(W), 1))
    for name, tb in best.items():
        out["variants"][name]["per_product_forward_equivalents"] = round(tb / B / t_fwd, 3)
    base = out["variants"]["eager"]["per_product_forward_equivalents"]
    for name, v in out["variants"].items():
        if "per_product_forward_equivalents" in v:
            v["vs_eager"] = round(v["per_product_forward_equivalents"] / base, 3)
        print(f"{name:6s} {v}")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
