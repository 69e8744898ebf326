"""Cost of the Jacobian measurements on the real ddpm-cifar10-32 architecture (random weights, CPU).

python -m benchmarks.jacobian [--threads 1] [--quick] [--device cpu|cuda]

Prints human-readable lines, then one JSON line. Every cost is given in forward-pass equivalents
(time / time of one batch-1 forward pass measured in the same run), so ratios survive a busy machine.
(a) one power-iteration step (JΦ then JΦᵀ) per vector: ours (reused vjp closure + double-vjp or
    linearized JVPs, vmapped over vectors) vs the naive torch.autograd.functional jvp + vjp with the
    primal recomputed every call;
(b) all 256 block norms (M = 16) at one point: vmapped block power iteration vs a Python loop over
    blocks (same reused closures), vs a paper-style loop (torch.func.jvp/vjp per call, primal
    recomputed), and the exact dense route (3072 vmapped VJPs); timed on a subset and extrapolated;
(c) the paper presets' plans as the stages compose them (benchmarks.plan, shared with benchmarks.projection):
    forward equivalents per point with the config's costs and with this run's, and the CPU time they imply;
(d) the Gaussian oracle's vmapped JVPs (the default run's model): grouped 1x1 convolutions vs batched matmuls;
(e) points of several seeds at one step measured one at a time vs stacked through the model's batch dimension;
(f) the exact route at n = 3072 (all n VJP rows, every quantity exact, the paper's estimators replayed on the
    stored Jacobian) against the rows alone.
--device cuda runs every product on the GPU (the same JSON keys); each timed call ends with
torch.cuda.synchronize(), so a time is the kernels' time, not the launch's.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from pipeline.errors import PipelineError
from pipeline.jacobian import MeasureConfig, ScoreLinearization, StepJacobian
from pipeline.jacobian.patches import embed_patches, patch_index, take_patches

CIFAR_UNET = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    layers_per_block=2,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=None,
    norm_eps=1e-6,
    norm_num_groups=32,
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
    center_input_sample=False,
    time_embedding_type="positional",
    act_fn="silu",
    mid_block_scale_factor=1,
)


def build_model(device: torch.device | str = "cpu"):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    model = UNet2DModel(**CIFAR_UNET).eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    from pipeline.models.attention import install_math_attention  # forward-mode AD through attention

    procs = install_math_attention(model)
    return model, procs


def attention_resolutions(model, procs, device="cpu") -> dict[str, int]:
    """Token count of every attention layer (16x16 = 256 expected for ddpm-cifar10-32)."""
    from pipeline.models.attention import recording

    with torch.no_grad(), recording(procs) as rec:
        model(torch.zeros(1, 3, 32, 32, device=device), 10)
    return {name: int(ws[-1].shape[-1]) for name, ws in rec.weights.items()}


def _no_sync() -> None:
    return None


def synchronizer(device: torch.device):
    """What ends a timed call: torch.cuda.synchronize on CUDA (kernels run asynchronously), else nothing."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else _no_sync


def resolve_benchmark_device(name: str) -> torch.device:
    """cpu / cuda / cuda:N; a CUDA device on a machine without CUDA is a PipelineError with the fix."""
    from pipeline.models.base import resolve_device

    try:
        return resolve_device(name)
    except (RuntimeError, PipelineError) as e:
        raise PipelineError(
            f"--device {name} cannot be used ({e}) — run on a machine with a CUDA GPU, or use --device cpu"
        ) from e


def timeit(fn, reps: int = 3, warmup: int = 1, sync=_no_sync) -> float:
    """Best of reps (after warmup): on a shared machine load only ever slows a run down."""
    for _ in range(warmup):
        fn()
    sync()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def race(fns: dict, rounds: int = 3, sync=_no_sync) -> dict:
    """Best-of-rounds times of several functions, interleaved so that load changes hit all alike."""
    for f in fns.values():
        f()
    sync()
    best = {k: math.inf for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            sync()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared machine 2 contending threads are ~5-10x slower)",
    )
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]; the JSON keys are the same")
    args = ap.parse_args(argv)
    try:
        dev = resolve_benchmark_device(args.device)
    except PipelineError as e:
        print(f"error: {e}")
        raise SystemExit(2) from None
    sync = synchronizer(dev)
    torch.set_num_threads(args.threads)
    reps = 1 if args.quick else 3
    t_start = time.perf_counter()
    out: dict = {"threads": args.threads}

    model, procs = build_model(dev)
    nparams = sum(p.numel() for p in model.parameters())
    attn = attention_resolutions(model, procs, dev)
    print(
        f"model: ddpm-cifar10-32 architecture, random weights, {nparams / 1e6:.1f}M parameters, on {dev}; "
        f"attention tokens per layer: {attn}"
    )
    out["params_millions"] = round(nparams / 1e6, 2)
    out["attention_tokens"] = sorted(set(attn.values()))
    # DDPM (Ho et al. 2020) puts self-attention at 16x16 (plus the 4x4 middle block).
    assert all(v == 256 for k, v in attn.items() if not k.startswith("mid_block")), attn
    t = 500
    eps_fn = lambda z: model(z[None], t).sample[0]  # noqa: E731
    g = torch.Generator().manual_seed(0)

    def randn(*shape):  # drawn on the CPU (same numbers on every device), then moved
        return torch.randn(*shape, generator=g).to(dev)

    x = randn(3, 32, 32)
    r, b = 1.02, -0.05
    shape = (3, 32, 32)

    fwd = torch.no_grad()(lambda: eps_fn(x))
    t_fwd = timeit(fwd, reps=3, sync=sync)
    with torch.no_grad():
        xb = randn(8, 3, 32, 32)
        xb16 = randn(16, 3, 32, 32)
        tf = race(
            {"b1": fwd, "b8": lambda: model(xb, t).sample, "b16": lambda: model(xb16, t).sample},
            rounds=reps,
            sync=sync,
        )
    t_fwd8 = tf["b8"] / 8
    # No batching of the same products (vmap or the model's own batch dimension) can beat the gain of
    # a batched forward pass over batch 1: the ceiling for (b)'s vmapped-vs-loop ratio on this machine.
    batch_ceiling = tf["b1"] / (tf["b16"] / 16)
    print(
        f"forward pass: {1e3 * t_fwd:.0f} ms at batch 1, {1e3 * t_fwd8:.0f} ms per image at batch 8, "
        f"{1e3 * tf['b16'] / 16:.0f} at batch 16 (batching gain {batch_ceiling:.2f}x; {args.threads} thread(s))"
    )
    out["forward_batch16_gain"] = round(batch_ceiling, 2)

    # ---------------- (a) one power-iteration step ----------------
    u = randn(*shape)

    def naive_step():
        _, jv = torch.autograd.functional.jvp(eps_fn, x, u)
        _, vj = torch.autograd.functional.vjp(eps_fn, x, r * u + b * jv)
        return vj

    # the tangent maps are built at the first JVP (a measurement without JVPs never pays for them): time the
    # construction together with that first JVP, less one JVP's cost (measured below)
    t0 = time.perf_counter()
    score = ScoreLinearization(eps_fn, x, jvp_method="double_vjp", chunk_size=16)
    score.jvp(u)
    sync()
    c_setup_dv = (time.perf_counter() - t0) / t_fwd
    step = StepJacobian(score, r, b)
    t0 = time.perf_counter()
    lin = ScoreLinearization(eps_fn, x, jvp_method="linearize", chunk_size=16)
    lin.jvp(u)
    sync()
    c_trace = (time.perf_counter() - t0) / t_fwd
    lstep = StepJacobian(lin, r, b)
    U8 = randn(8, *shape)
    U16 = randn(16, *shape)
    ta = race(
        {
            "fwd": fwd,
            "naive": naive_step,
            "dv1": lambda: step.gram(u),
            "dv8": lambda: step.gram(U8),
            "lin1": lambda: lstep.gram(u),
            "lin8": lambda: lstep.gram(U8),
        },
        rounds=reps,
        sync=sync,
    )
    tp = race(
        {
            "fwd": fwd,
            "vjp1": lambda: score.vjp(u),
            "vjp16": lambda: score.vjp(U16),
            "jvp_dv1": lambda: score.jvp(u),
            "jvp_lin1": lambda: lin.jvp(u),
            "jvp_lin16": lambda: lin.jvp(U16),
        },
        rounds=reps,
        sync=sync,
    )
    fa, fp = ta["fwd"], tp["fwd"]
    c_naive = ta["naive"] / fa
    c_step1 = ta["dv1"] / fa
    c_step1_lin = ta["lin1"] / fa
    c_step8_dv = ta["dv8"] / fa / 8
    c_step8_lin = ta["lin8"] / fa / 8
    c_vjp1, c_vjp16 = tp["vjp1"] / fp, tp["vjp16"] / fp / 16
    c_jvp1_dv, c_jvp1_lin, c_jvp16_lin = tp["jvp_dv1"] / fp, tp["jvp_lin1"] / fp, tp["jvp_lin16"] / fp / 16
    c_setup_dv, c_trace = max(0.0, c_setup_dv - c_jvp1_dv), max(0.0, c_trace - c_jvp1_lin)
    print(
        "(a) one power-iteration step JΦᵀJΦv, forward-pass equivalents per vector (best of "
        f"{reps}, interleaved):"
    )
    print(f"    naive autograd.functional jvp+vjp (primal recomputed): {c_naive:.2f}")
    print(
        f"    ours, batch 1, double-vjp JVP + reused vjp closure:    {c_step1:.2f}   (setup {c_setup_dv:.2f})"
    )
    print(
        f"    ours, batch 1, linearized JVP + reused vjp closure:    {c_step1_lin:.2f}   (trace {c_trace:.0f})"
    )
    print(f"    ours, 8 vectors vmapped, double-vjp:                   {c_step8_dv:.2f}")
    print(f"    ours, 8 vectors vmapped, linearized:                   {c_step8_lin:.2f}")
    print(
        f"    parts: vjp {c_vjp1:.2f} (x16 vmapped {c_vjp16:.2f}); jvp double-vjp {c_jvp1_dv:.2f}; "
        f"jvp linearized {c_jvp1_lin:.2f} (x16 vmapped {c_jvp16_lin:.2f})"
    )
    best_batched = min(c_step8_dv, c_step8_lin)
    best_b1 = min(c_step1, c_step1_lin)
    out.update(
        forward_ms=round(1e3 * t_fwd, 1),
        forward_b8_per_image_ms=round(1e3 * t_fwd8, 1),
        pi_step_forward_equivalents=round(best_batched, 3),
        pi_step_forward_equivalents_b1_double_vjp=round(c_step1, 3),
        pi_step_forward_equivalents_b1_linearized=round(c_step1_lin, 3),
        pi_step_forward_equivalents_b8_double_vjp=round(c_step8_dv, 3),
        pi_step_forward_equivalents_b8_linearized=round(c_step8_lin, 3),
        naive_pi_step_forward_equivalents=round(c_naive, 3),
        pi_speedup_vs_naive=round(c_naive / best_batched, 2),
        pi_speedup_vs_naive_b1=round(c_naive / best_b1, 2),
        cost_vjp_b1=round(c_vjp1, 3),
        cost_vjp_vmapped=round(c_vjp16, 3),
        cost_jvp_double_vjp=round(c_jvp1_dv, 3),
        cost_jvp_linearized_b1=round(c_jvp1_lin, 3),
        cost_jvp_linearized_vmapped=round(c_jvp16_lin, 3),
        cost_linearize_trace=round(c_trace, 1),
        cost_setup_double_vjp=round(c_setup_dv, 2),
    )

    # ---------------- (b) all 256 blocks at one point ----------------
    P = 8
    index = patch_index(shape, P, device=dev)
    M, nk = index.shape
    K = 10
    nsub = 16  # block problems per timed vmapped batch (one power step each), extrapolated to 256 x K
    nloop = 4
    kk = torch.arange(M, device=dev).repeat_interleave(M)[:nsub]
    jj = torch.arange(M, device=dev).repeat(M)[:nsub]
    w0 = randn(nsub, nk)

    def vmapped_iteration():
        y = take_patches(lstep.matvec(embed_patches(w0, index, shape, jj)), index, kk)
        return take_patches(lstep.rmatvec(embed_patches(y, index, shape, kk)), index, jj)

    def loop_iteration():  # the same reused closures, one block vector at a time
        for i in range(nloop):
            tang = embed_patches(w0[i : i + 1], index, shape, jj[i : i + 1])[0]
            yk = lstep.matvec(tang).reshape(-1)[index[kk[i]]]
            cot = torch.zeros(3 * 32 * 32, device=dev)
            cot[index[kk[i]]] = yk
            lstep.rmatvec(cot.reshape(shape))

    def paper_loop_iteration():  # torch.func.jvp + a fresh vjp per block step: primal recomputed twice
        tang = embed_patches(w0[:1], index, shape, jj[:1])[0]
        _, jv = torch.func.jvp(eps_fn, (x,), (tang,))
        yk = (r * tang + b * jv).reshape(-1)[index[kk[0]]]
        cot = torch.zeros(3 * 32 * 32, device=dev)
        cot[index[kk[0]]] = yk
        _, vjp_fn = torch.func.vjp(eps_fn, x)
        return vjp_fn(cot.reshape(shape))[0]

    rows = index[0][:16]
    cot16 = torch.zeros(len(rows), 3 * 32 * 32, device=dev)
    cot16[torch.arange(len(rows), device=dev), rows] = 1
    cot16 = cot16.reshape(-1, *shape)
    tb = race({"fwd": fwd, "vm": vmapped_iteration, "loop": loop_iteration}, rounds=reps, sync=sync)
    tc = race(
        {"fwd": fwd, "paper": paper_loop_iteration, "dense": lambda: score.vjp(cot16)},
        rounds=max(1, reps - 1),
        sync=sync,
    )
    c_vm_step = tb["vm"] / nsub / tb["fwd"]
    c_loop_step = tb["loop"] / nloop / tb["fwd"]
    c_paper_step = tc["paper"] / tc["fwd"]
    c_row = tc["dense"] / len(rows) / tc["fwd"]
    n = 3 * 32 * 32
    cost_vm = K * M * M * c_vm_step + c_trace
    cost_loop = K * M * M * c_loop_step + c_trace
    cost_paper = K * M * M * c_paper_step
    cost_dense = n * c_row
    print(
        f"(b) all {M * M} block norms at one point, K = {K} (timed: {nsub} vmapped block steps, {nloop} looped, "
        "1 paper-style, 16 dense rows; extrapolated), forward-pass equivalents:"
    )
    print(
        f"    vmapped block power iteration:        {cost_vm:7.0f}  ({c_vm_step:.2f} per block step + trace; "
        "block Golub-Kahan-Lanczos costs the same)"
    )
    print(
        f"    Python loop over blocks (same ops):   {cost_loop:7.0f}  ({c_loop_step:.2f} per block step + trace)"
    )
    print(f"    paper-style loop (primal recomputed): {cost_paper:7.0f}  ({c_paper_step:.2f} per block step)")
    print(f"    exact dense Jacobian ({n} VJP rows): {cost_dense:7.0f}  ({c_row:.2f} per row)")
    print(
        f"    vmapped block PI vs loop {cost_loop / cost_vm:.2f}x (ceiling: the batched forward's gain "
        f"{batch_ceiling:.2f}x); the engine's choice at n = {n} (measure.blocks=auto -> dense, vmapped VJPs) vs "
        f"loop {cost_loop / cost_dense:.2f}x, vs paper-style loop {cost_paper / cost_dense:.2f}x"
    )
    crossover_M16 = (K * M * M * c_vm_step + c_trace) / c_row
    print(
        f"    dense-vs-block crossover: dense costs ≈ {c_row:.2f}·n, block power ≈ {K * c_vm_step:.1f}·M² "
        f"(+ trace); at M = 16 dense is cheaper below n ≈ {crossover_M16:.0f} (CIFAR-10 n = 3072: dense; "
        "CelebA-HQ 64x64 n = 12288: block power); at fixed 8x8 patches block power cost grows as n² and "
        "dense always wins"
    )
    out.update(
        block_vmap_speedup_vs_loop=round(cost_loop / cost_vm, 2),
        block_vmap_speedup_vs_paper_loop=round(cost_paper / cost_vm, 2),
        block_dense_speedup_vs_paper_loop=round(cost_paper / cost_dense, 2),
        block_dense_speedup_vs_loop=round(cost_loop / cost_dense, 2),
        block_forward_equivalents_vmapped=round(cost_vm),
        block_forward_equivalents_loop=round(cost_loop),
        block_forward_equivalents_dense=round(cost_dense),
        block_forward_equivalents_paper_loop=round(cost_paper),
        dense_vs_block_crossover_n_at_M16=round(crossover_M16),
    )

    # ---------------- (c) the paper presets' plans ----------------
    costs = dict(
        cost_vjp=c_vjp16,
        cost_jvp_double_vjp=c_jvp1_dv,
        cost_jvp_linearized=c_jvp16_lin,
        cost_linearize_trace=c_trace,
    )
    out["measured_costs"] = {k: round(v, 3) for k, v in costs.items()}
    out["protocol_plans"] = protocol_plans(costs, t_fwd, dev.type, args.threads)
    out.update(exact_route(model, t, r, b, reps, dev, sync, t_fwd, full=dev.type == "cuda"))
    out.update(seed_batching(model, t, r, b, reps, dev, sync))
    out.update(oracle_products(reps, dev, sync))
    out["benchmark_seconds"] = round(time.perf_counter() - t_start, 1)
    print(f"total benchmark time {out['benchmark_seconds']:.0f} s")
    print(json.dumps(out))
    return out


def protocol_plans(
    costs: dict | None = None, t_fwd: float | None = None, device: str = "cpu", threads: int = 1
) -> dict:
    """(c) The plans of the paper presets as the stages compose them (benchmarks.plan.preset_plan, the function
    benchmarks.projection calls too): forward equivalents per point with the config's per-product costs, and,
    given ``costs``, with this run's measured ones; beside them cifar10_paper with the paper's matrix-free
    block power iteration (measure.blocks=power) for contrast."""
    from benchmarks.plan import PRESETS, describe, preset_plan

    result = {}
    variants = [(p, ()) for p in PRESETS] + [("cifar10_paper", ("measure.blocks=power",))]
    for preset, extra in variants:
        plan = preset_plan(preset, extra)
        name = preset + ("+" + ",".join(extra) if extra else "")
        row = {
            "blocks": plan.full.blocks,
            "points": plan.points,
            "forward_equivalents_per_point": round(plan.forward_equivalents_per_point),
        }
        line = f"(c) {describe(preset, plan)}" + (f" [{', '.join(extra)}]" if extra else "")
        if costs is not None:
            over = tuple(f"measure.{k}={v:.4f}" for k, v in costs.items())
            measured = preset_plan(preset, extra + over)
            row["forward_equivalents_per_point_measured_costs"] = round(
                measured.forward_equivalents_per_point
            )
            if t_fwd is not None:
                hours = measured.forward_equivalents_total * t_fwd / 3600
                row["cpu_hours"] = round(hours, 1)
                line += (
                    f"; with this run's costs {measured.forward_equivalents_per_point:.0f} per point, "
                    f"≈ {hours:.1f} h on this {device} ({threads} thread(s))"
                )
        print(line)
        result[name] = row
    return result


def exact_route(model, t: int, r: float, b: float, reps: int, dev, sync, t_fwd: float, full: bool) -> dict:
    """(f) The exact route at n = 3072, one point: the n VJP rows, then every exact quantity (JΦᵀJΦ's top
    eigenvalue, the 256 block SVDs) and the paper's estimators replayed (K_PI = 20 power iteration, 20 Lanczos
    steps, 16 Rayleigh quotients, K = 10 block power iteration, 200 Hutchinson probes), against the rows alone.
    The rows are timed on one block row (192 of the 3072; all of them with ``full``) and scaled; the rest in
    full on a stored Jacobian of the same size."""
    from pipeline.jacobian import PointsStep
    from pipeline.jacobian.dense import DenseStep, dense_step
    from pipeline.jacobian.estimators import REGISTRY, Batch, ExactRows
    from pipeline.jacobian.measure import StepMeasurement
    from pipeline.jacobian.points import _draws

    shape = (3, 32, 32)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, *shape, generator=g).to(dev)
    index = patch_index(shape, 8, device=dev)
    M, nk = index.shape
    n = M * nk
    score = ScoreLinearization(
        lambda z: model(z, t).sample, x, jvp_method="double_vjp", chunk_size=16, stacked=True
    )
    points = PointsStep(StepJacobian(score, r, b), index)
    if full:
        t0 = time.perf_counter()
        dense = dense_step(points)
        sync()
        rows_s = time.perf_counter() - t0
    else:
        cot = torch.zeros(nk, 1, n, device=dev)
        cot[torch.arange(nk), :, index[0]] = 1
        one = timeit(
            lambda: points.apply_t(cot.reshape(nk, 1, *shape)), reps=max(1, reps - 2), warmup=0, sync=sync
        )
        rows_s = one * M
        J = torch.randn(1, M, nk, M, nk, generator=g, dtype=torch.float64) * (b / n**0.5)
        J = J + r * torch.eye(n, dtype=torch.float64).reshape(1, M, nk, M, nk)
        dense = DenseStep(J.to(dev), index, shape)
    cfg = MeasureConfig(blocks="dense")
    v1 = torch.nn.functional.normalize(torch.randn(M, nk, generator=g, dtype=torch.float64), dim=1)

    def post():
        outs = [StepMeasurement(r, b, n, M)]
        start_pi, start_gk, block_start, gens = _draws([3], shape, "dense", M, nk)
        batch = Batch(dense, cfg, "dense", outs, start_pi, start_gk, block_start, gens, v1)
        ExactRows.finish(batch, dense)
        for est in REGISTRY:
            if est.name != "exact_rows" and est.enabled(cfg, "dense", True):
                est.run(batch)
        sync()
        return outs[0]

    post_s = timeit(post, reps=max(1, reps - 2), warmup=0, sync=sync)
    ratio = (rows_s + post_s) / rows_s
    how = "all rows timed" if full else f"one block row timed, x{M}"
    print(
        f"(f) the exact route at n = {n}, one point: {n} VJP rows {rows_s:.1f} s ({how}; "
        f"{rows_s / n / t_fwd:.2f} forward equivalents per row), every exact quantity + the paper's estimators "
        f"replayed {post_s:.2f} s: {ratio:.3f} x the rows alone"
    )
    return {
        "exact_route_rows_s": round(rows_s, 2),
        "exact_route_replay_s": round(post_s, 3),
        "exact_route_vs_rows": round(ratio, 4),
        "exact_route_rows_timed": "all" if full else "one block row, scaled",
    }


def seed_batching(model, t: int, r: float, b: float, reps: int, dev, sync, S: int = 4) -> dict:
    """(e) The engine at S points of one step, one point per batch vs stacked through the model's batch
    dimension (points.seed_batch, pipeline.jacobian.points): global PI + Lanczos + Rayleigh, no blocks."""
    from pipeline.jacobian.points import measure_points

    g = torch.Generator().manual_seed(5)
    xs = torch.randn(S, 3, 32, 32, generator=g).to(dev)
    v1 = torch.nn.functional.normalize(torch.randn(16, 192, generator=g), dim=1).to(dev)
    cfg = MeasureConfig(blocks="off", power_iters=4, lanczos_iters=4, jvp_method="double_vjp")
    seeds = list(range(S))

    def one_at_a_time():
        return [
            measure_points(
                lambda z: model(z, t).sample, xs[s : s + 1], r, b, 8, [seeds[s]], v1=v1, config=cfg
            )[0]
            for s in range(S)
        ]

    def stacked():
        return measure_points(lambda z: model(z, t).sample, xs, r, b, 8, seeds, v1=v1, config=cfg)

    a, c = one_at_a_time(), stacked()
    worst = max(
        max(abs(p.kappa_pi / q.kappa_pi - 1), float(np.max(np.abs(p.rayleigh - q.rayleigh))))
        for p, q in zip(a, c, strict=True)
    )
    tt = race({"loop": one_at_a_time, "stacked": stacked}, rounds=max(1, reps - 1), sync=sync)
    print(
        f"(e) {S} seeds at one step (PI 4 + Lanczos 4 + 16 Rayleigh products each): one at a time "
        f"{tt['loop']:.1f} s, stacked {tt['stacked']:.1f} s ({tt['loop'] / tt['stacked']:.2f}x; "
        f"largest difference {worst:.1e}, float32)"
    )
    return {
        "seed_batch_points": S,
        "seed_batch_speedup": round(tt["loop"] / tt["stacked"], 2),
        "seed_batch_max_difference": float(f"{worst:.2e}"),
    }


def oracle_products(reps: int, dev, sync) -> dict:
    """(d) The Gaussian oracle's 16 vmapped JVPs at the default size (n = 3072, 16 patch blocks of 192, float64):
    pipeline.models.GaussianOracle (grouped 1x1 convolutions) vs the same products as batched matmuls with the
    unbatched [G, m, m] eigenvectors, which vmap copies once per vector (the oracle's form before this change)."""
    from pipeline.geometry import linear_schedule
    from pipeline.models import GaussianOracle

    g = torch.Generator().manual_seed(0)
    G, m = 16, 192
    blocks = torch.randn(G, m, m, generator=g, dtype=torch.float64)
    cov = (blocks @ blocks.transpose(1, 2) / m + 0.1 * torch.eye(m, dtype=torch.float64)).numpy()
    mean = np.zeros((G, m))
    oracle = GaussianOracle.from_patch_blocks(
        mean, cov, 8, linear_schedule(1000).alpha_bar, (3, 32, 32), device=dev
    )
    U = torch.as_tensor(oracle.eigvecs, device=dev)
    scale = oracle._scale(500)
    perm, inv = oracle._perm, oracle._inv_perm

    def matmul_form(x):  # x [1, 3, 32, 32]
        y = x.reshape(1, -1)[:, perm].reshape(1, G, m).transpose(0, 1)
        z = torch.matmul(torch.matmul(y, U) * scale[:, None, :], U.transpose(1, 2))
        return z.transpose(0, 1).reshape(1, -1)[:, inv].reshape(1, 3, 32, 32)

    x0 = torch.randn(1, 3, 32, 32, generator=g, dtype=torch.float64).to(dev)
    tang = torch.randn(16, 1, 3, 32, 32, generator=g, dtype=torch.float64).to(dev)
    conv = torch.func.vmap(lambda v: torch.func.jvp(lambda z: oracle(z, 500), (x0,), (v,))[1])
    mm = torch.func.vmap(lambda v: torch.func.jvp(matmul_form, (x0,), (v,))[1])
    assert torch.allclose(conv(tang), mm(tang), rtol=1e-10, atol=1e-12)  # the same operator
    t = race({"conv": lambda: conv(tang), "matmul": lambda: mm(tang)}, rounds=max(2, reps), sync=sync)
    print(
        f"(d) Gaussian oracle, 16 vmapped JVPs at n = 3072: grouped conv {1e3 * t['conv']:.1f} ms, batched matmul "
        f"{1e3 * t['matmul']:.1f} ms ({t['matmul'] / t['conv']:.1f}x)"
    )
    return {
        "oracle_vmapped_jvp16_ms": round(1e3 * t["conv"], 2),
        "oracle_vmapped_jvp16_matmul_ms": round(1e3 * t["matmul"], 2),
        "oracle_conv_speedup": round(t["matmul"] / t["conv"], 1),
    }


if __name__ == "__main__":
    main()
