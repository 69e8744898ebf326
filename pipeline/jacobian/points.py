"""`measure_step` on S trajectory points at once, batched through the model's own batch dimension.

The points of several seeds at one chain step share t, r_t and b_t, and ε̂ treats images of a batch
independently, so ε̂ on the stack [S,C,H,W] has the block-diagonal Jacobian diag(Jε̂(x_1), …, Jε̂(x_S)).
One stacked product therefore applies every point's JΦ_t to that point's own vector, and each
estimator of `measure_step` runs on S points for the matvecs of one: power iteration and
Golub-Kahan get one problem per point, block problems become (block, point) pairs, dense rows one
stacked cotangent per pixel. Start vectors come from each point's own generator in the same order
as `measure_step`, so the numbers are those of S separate calls up to floating-point rounding
(tests/test_jacobian_points.py: 1e-10 in float64). On a GPU this fills the device that a batch-1
UNet leaves idle; on a CPU it gains what a batched forward pass gains over batch 1
(benchmarks/jacobian.py prints both).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .blocks import BlockNorms, block_krylov, block_problems, patch_rayleigh
from .measure import (
    MeasureConfig,
    StepMeasurement,
    block_krylov_method,
    checked_expansion,
    checked_v1,
    plan_measurement,
    record_blocks,
)
from .operators import ScoreLinearization, StepJacobian
from .patches import embed_patches, patch_index, take_patches
from .spectral import golub_kahan_batched, power_iteration, random_start


def _per_point_chunk(chunk_size: int | None, S: int) -> int | None:
    """vmap chunk of stacked vectors so that one call still holds about chunk_size images."""
    return None if chunk_size is None else max(1, int(chunk_size) // S)


def _problem_operators(step: StepJacobian, index: torch.Tensor, k_of: torch.Tensor, j_of: torch.Tensor):
    """[JΦ_t]_{k j} of every (problem, point) pair, vectors [B·S, n_k] in problem-major order."""
    S, C, H, W = step.image_shape
    B = len(k_of)
    k_rep, j_rep = k_of.repeat_interleave(S), j_of.repeat_interleave(S)

    def matvec(u):
        img = embed_patches(u, index, (C, H, W), j_rep).reshape(B, S, C, H, W)
        return take_patches(step.matvec(img).reshape(B * S, C, H, W), index, k_rep)

    def rmatvec(w):
        img = embed_patches(w, index, (C, H, W), k_rep).reshape(B, S, C, H, W)
        return take_patches(step.rmatvec(img).reshape(B * S, C, H, W), index, j_rep)

    return matvec, rmatvec


def _interleave(per_point: list[torch.Tensor]) -> torch.Tensor:
    """S tensors [B, ...] -> [B·S, ...] in problem-major order."""
    stacked = torch.stack(per_point, dim=1)
    return stacked.reshape(-1, *stacked.shape[2:])


def stacked_dense_block_norms(
    step: StepJacobian, index: torch.Tensor, *, keep_dense: bool = False
) -> list[BlockNorms]:
    """`dense_block_norms` for every point: one stacked cotangent per pixel gives that row at all S points."""
    S, C, H, W = step.image_shape
    M, nk = index.shape
    n = C * H * W
    op = np.zeros((S, M, M))
    frob = np.zeros((S, M, M))
    dense = torch.zeros(S, n, n, dtype=torch.float64) if keep_dense else None
    x = step.score.x
    for k in range(M):
        cot = torch.zeros(nk, S, n, dtype=x.dtype, device=x.device)
        cot[torch.arange(nk), :, index[k]] = 1
        rows = step.rmatvec(cot.reshape(nk, S, C, H, W)).reshape(nk, S, n).transpose(0, 1)  # [S, n_k, n]
        if dense is not None:
            dense[:, index[k].cpu()] = rows.double().cpu()
        blocks = rows[:, :, index].permute(0, 2, 1, 3).double()  # [S, M(j), n_k, n_k]
        op[:, k] = torch.linalg.matrix_norm(blocks, ord=2).cpu().numpy()
        frob[:, k] = torch.linalg.matrix_norm(blocks, ord="fro").cpu().numpy()
    return [
        BlockNorms(
            op=op[s],
            frob=frob[s],
            method="dense",
            relative_change=np.zeros((M, M)),
            iterations=0,
            matvecs=n,
            frob_probes=0,
            dense=None if dense is None else dense[s],
        )
        for s in range(S)
    ]


def stacked_block_krylov_norms(
    step: StepJacobian,
    index: torch.Tensor,
    iters: int,
    generators: Sequence[torch.Generator],
    *,
    frob_probes: int,
    diag_only: bool,
    method: str,
) -> list[BlockNorms]:
    """`block_power_norms` for every point: the M² (or M) block problems of all S points in one batch."""
    S = step.image_shape[0]
    M, nk = index.shape
    x = step.score.x
    k_of, j_of = block_problems(M, diag_only, x.device)
    B = len(k_of)
    matvec, rmatvec = _problem_operators(step, index, k_of, j_of)
    start = _interleave([torch.randn(B, nk, generator=g, dtype=torch.float64) for g in generators]).to(
        x.device, x.dtype
    )
    res = block_krylov(matvec, rmatvec, start, iters, method)
    value = np.asarray(res.value).reshape(B, S)
    change = np.asarray(res.relative_change).reshape(B, S)
    kk, jj = k_of.cpu().numpy(), j_of.cpu().numpy()
    frob = np.full((S, M, M), np.nan)
    if frob_probes > 0:
        frob = stacked_hutchinson_frobenius(step, index, frob_probes, generators)
    out = []
    for s in range(S):
        op = np.full((M, M), np.nan)
        ch = np.full((M, M), np.nan)
        op[kk, jj] = value[:, s]
        ch[kk, jj] = change[:, s]
        out.append(
            BlockNorms(
                op=op,
                frob=frob[s],
                method=method,
                relative_change=ch,
                iterations=iters,
                matvecs=res.matvecs // S + frob_probes * M,
                frob_probes=frob_probes,
            )
        )
    return out


def stacked_hutchinson_frobenius(
    step: StepJacobian, index: torch.Tensor, probes: int, generators: Sequence[torch.Generator]
) -> np.ndarray:
    """`hutchinson_block_frobenius` for every point ([S, M, M]), each point's probes from its own generator."""
    S, C, H, W = step.image_shape
    M, nk = index.shape
    x = step.score.x
    acc = torch.zeros(S, M, M, dtype=torch.float64)
    cols = torch.arange(M, device=x.device).repeat_interleave(S)
    for _ in range(probes):
        z = _interleave([(torch.randint(0, 2, (M, nk), generator=g) * 2 - 1) for g in generators]).to(
            x.device, x.dtype
        )
        Y = step.matvec(embed_patches(z, index, (C, H, W), cols).reshape(M, S, C, H, W))  # [M(j), S, C, H, W]
        Yp = Y.reshape(M, S, -1)[:, :, index].double()  # [j, s, k, n_k]
        acc += (Yp * Yp).sum(-1).permute(1, 2, 0).cpu()  # [s, k, j]
    return (acc / probes).sqrt().numpy()


def measure_points(
    eps_fn: Callable[[torch.Tensor], torch.Tensor],
    xs: torch.Tensor,
    r: float,
    b: float,
    patch_size: int,
    seeds: Sequence[int],
    v1: np.ndarray | torch.Tensor | None = None,
    expansion: np.ndarray | None = None,
    config: MeasureConfig | None = None,
) -> list[StepMeasurement]:
    """`measure_step` at S points of one chain step (eq. 7), their products batched through eps_fn.

    eps_fn: [S,C,H,W] -> [S,C,H,W], the noise predictor at the step's paper timestep (the model's
    own batched call). xs: [S,C,H,W]. seeds: the S start-vector seeds (`measurement_seed`).
    """
    cfg = config or MeasureConfig()
    xs = xs.detach()
    if xs.dim() != 4 or xs.shape[0] != len(seeds):
        raise ValueError(f"xs must be [S,C,H,W] with S = len(seeds) = {len(seeds)}, got {tuple(xs.shape)}")
    S = int(xs.shape[0])
    image_shape = tuple(xs.shape[1:])
    index = patch_index(image_shape, patch_size, device=xs.device)
    M = index.shape[0]
    n = int(np.prod(image_shape))
    have_v1 = v1 is not None
    plan = plan_measurement(n, M, cfg, have_v1)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    score = ScoreLinearization(
        eps_fn, xs, jvp_method=plan.jvp_method, chunk_size=_per_point_chunk(cfg.chunk_size, S), stacked=True
    )
    step = StepJacobian(score, r, b)
    seconds["linearize"] = time.perf_counter() - t0
    outs = [
        StepMeasurement(r=float(r), b=float(b), n=n, num_patches=M, jvp_method=plan.jvp_method)
        for _ in range(S)
    ]

    # The same draws, in the same order, as measure_step's per point.
    start_pi = torch.cat([random_start((1, *image_shape), g, xs.dtype, xs.device) for g in gens])
    start_gk = torch.stack([random_start(image_shape, g, xs.dtype, xs.device) for g in gens])
    block_gens = [torch.Generator().manual_seed(int(s) + 1) for s in seeds]

    if cfg.global_power:
        t0 = time.perf_counter()
        res = power_iteration(step.matvec, step.rmatvec, start_pi, cfg.power_iters)
        for s, out in enumerate(outs):
            out.kappa_pi = float(res.value[s])
            out.kappa_pi_change = float(res.relative_change[s])
            out.kappa_pi_residual = float(res.residual[s])
            out.pi_iters = res.iterations
        seconds["power"] = time.perf_counter() - t0
    if cfg.global_lanczos:
        t0 = time.perf_counter()
        gk = golub_kahan_batched(step.matvec, step.rmatvec, start_gk, cfg.lanczos_steps)
        for s, out in enumerate(outs):
            out.kappa_lanczos = float(gk.value[s])
            out.lanczos_residual = float(gk.residual[s])
            out.lanczos_change = float(gk.relative_change[s])
            out.lanczos_iters = gk.iterations
        seconds["lanczos"] = time.perf_counter() - t0

    if expansion is not None:
        f = checked_expansion(expansion, M)
        for out in outs:
            out.expansion = f
    if cfg.rayleigh and have_v1:
        t0 = time.perf_counter()
        ray = patch_rayleigh(step, checked_v1(v1, index, patch_size), index, via=cfg.rayleigh_via)  # [S, M]
        for s, out in enumerate(outs):
            out.rayleigh = ray[s]
        seconds["rayleigh"] = time.perf_counter() - t0

    if plan.blocks != "off":
        t0 = time.perf_counter()
        if plan.blocks == "dense":
            keep = n <= cfg.dense_global_max_n
            bns = stacked_dense_block_norms(step, index, keep_dense=keep)
            for out, bn in zip(outs, bns, strict=True):
                if bn.dense is not None:
                    out.kappa_dense = float(torch.linalg.matrix_norm(bn.dense, ord=2))
                    bn.dense = None
        else:
            bns = stacked_block_krylov_norms(
                step,
                index,
                cfg.block_power_iters,
                block_gens,
                frob_probes=cfg.frob_probes if plan.blocks != "diag" else 0,
                diag_only=plan.blocks == "diag",
                method=block_krylov_method(plan.blocks),
            )
        for out, bn in zip(outs, bns, strict=True):
            record_blocks(out, bn, plan.blocks, cfg)
        seconds["blocks"] = time.perf_counter() - t0

    per_point = {k: v / S for k, v in seconds.items()}
    for out in outs:
        # one stacked product applies every point's operator once: the per-point counts of measure_step
        out.jvps = score.counter.jvp
        out.vjps = score.counter.vjp
        out.seconds = dict(per_point)
    return outs
