"""The measurement engine: JΦ_t = r_t I + b_t Jε̂ (eq. 7) at S points of one chain step, batched.

The points of several seeds at one chain step share t, r_t and b_t, and ε̂ treats the images of a batch
independently, so ε̂ on the stack [S,C,H,W] has the block-diagonal Jacobian diag(Jε̂(x_1), …, Jε̂(x_S)):
one stacked product applies every point's JΦ_t to that point's own vector. A single point is a batch of
one. The planner (pipeline.jacobian.plan) picks the block route, then every estimator of
`pipeline.jacobian.estimators.REGISTRY` that the config enables runs on the batch, in registry order:
on the exact route the first one stores all n rows of JΦ_t and the rest replay on them.

Start vectors come from each point's own generators (``seeds``), drawn once in a fixed order before any
estimator runs, so a point's numbers do not depend on the other points of its batch (to rounding:
tests/test_jacobian_points.py checks 1e-10 in float64) nor on which other estimators are switched on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .blocks import block_problems, interleave
from .estimators import REGISTRY, Batch
from .measure import MeasureConfig, StepMeasurement, checked_expansion
from .operators import PointsStep, ScoreLinearization, StepJacobian
from .patches import patch_index
from .plan import plan_measurement
from .spectral import random_start


def _per_point_chunk(chunk_size: int | None, S: int) -> int | None:
    """vmap chunk of stacked vectors so that one call still holds about chunk_size images."""
    return None if chunk_size is None else max(1, int(chunk_size) // S)


def checked_v1(v1, index: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The patch covariances' top eigenvectors as a float64 tensor [M, n_k], refused off the patch grid."""
    v = torch.as_tensor(np.asarray(v1) if not torch.is_tensor(v1) else v1).double()
    if tuple(v.shape) != tuple(index.shape):
        raise ValueError(
            f"v1 must be [M, n_k] = {tuple(index.shape)} for patch size {patch_size}, got {tuple(v.shape)}"
        )
    return v


def _draws(seeds: Sequence[int], image: tuple[int, ...], route: str, M: int, nk: int):
    """Every start vector of the batch, per point in a fixed order: the global power iteration's, then
    Golub-Kahan's (generator `seed`); the block problems' (generator `seed + 1`, whose later draws are
    the Frobenius probes)."""
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    start_pi = torch.cat([random_start((1, *image), g, torch.float64, "cpu") for g in gens])
    start_gk = torch.stack([random_start(image, g, torch.float64, "cpu") for g in gens])
    block_gens = [torch.Generator().manual_seed(int(s) + 1) for s in seeds]
    block_start = None
    if route != "off":
        B = len(block_problems(M, route == "diag")[0])
        block_start = interleave([torch.randn(B, nk, generator=g, dtype=torch.float64) for g in block_gens])
    return start_pi, start_gk, block_start, block_gens


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
    progress: bool = False,
) -> list[StepMeasurement]:
    """Measure JΦ_t = r I + b Jε̂ (eq. 7) at S points of one chain step: global norm, Rayleigh quotients
    and S_k,t, the block decomposition, as the config asks.

    eps_fn: [S,C,H,W] -> [S,C,H,W], the noise predictor at the step's paper timestep t (the model's own
    batched call; autodiff-able). xs: the trajectory points x_t [S,C,H,W]. r, b: the step coefficients of
    eq. (4)-(5). seeds: the S start-vector seeds (`pipeline.jacobian.measure.measurement_seed`).
    v1: [M, n_k] top eigenvectors of the patch covariances (patch-vector order); expansion: [M]
    f_t(λ_k) of eq. (26) for this step (pipeline.geometry.expansion_function).
    """
    cfg = config or MeasureConfig()
    xs = xs.detach()
    if xs.dim() != 4 or xs.shape[0] != len(seeds):
        raise ValueError(f"xs must be [S,C,H,W] with S = len(seeds) = {len(seeds)}, got {tuple(xs.shape)}")
    S = int(xs.shape[0])
    image = tuple(int(s) for s in xs.shape[1:])
    index = patch_index(image, patch_size, device=xs.device)
    M, nk = (int(s) for s in index.shape)
    n = int(np.prod(image))
    have_v1 = v1 is not None
    plan = plan_measurement(n, M, cfg, have_v1)
    f = checked_expansion(expansion, M) if expansion is not None else None
    v = checked_v1(v1, index, patch_size) if have_v1 else None

    t0 = time.perf_counter()
    score = ScoreLinearization(
        eps_fn, xs, jvp_method=plan.jvp_method, chunk_size=_per_point_chunk(cfg.chunk_size, S), stacked=True
    )
    points = PointsStep(StepJacobian(score, r, b), index)
    seconds = {"linearize": time.perf_counter() - t0}
    outs = [
        StepMeasurement(r=float(r), b=float(b), n=n, num_patches=M, expansion=f, jvp_method=plan.jvp_method)
        for _ in range(S)
    ]
    # the start vectors, drawn before any estimator runs, in Batch's field order
    batch = Batch(points, cfg, plan.blocks, outs, *_draws(seeds, image, plan.blocks, M, nk), v, progress)
    for est in REGISTRY:
        if est.enabled(cfg, plan.blocks, have_v1):
            t0 = time.perf_counter()
            est.run(batch)
            seconds[est.name] = time.perf_counter() - t0

    per_point = {k: val / S for k, val in seconds.items()}
    for out in outs:
        if out.block_method == "off" and plan.blocks != "off":
            out.block_method = plan.blocks
        # one stacked product applies every point's operator once: the per-point counts
        out.jvps = score.counter.jvp
        out.vjps = score.counter.vjp
        out.seconds = dict(per_point)
    return outs
