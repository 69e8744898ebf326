"""The report's figures: each table's own figures come from its spec in the registry
(pipeline.analysis.tables), beside the figures of the run as a whole (λ*(t) per schedule, λ_k on the grid,
the final samples). ``FIGURES`` is derived from the registry, never listed by hand."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from pipeline.analysis.context import AnalysisContext
from pipeline.analysis.inputs import AnalysisInputs
from pipeline.analysis.plotting import FigureResult, new_figure, result, time_axis
from pipeline.analysis.tables import FIGURES as TABLE_FIGURE_SPECS
from pipeline.geometry import cosine_schedule, expansion_threshold, full_chain, linear_schedule
from pipeline.io import load_npz


def _geometry_curves() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """lambda*(t) (eq. 27) of the paper's schedules over their full chains, from pipeline.geometry."""
    curves = []
    for name, sched in (
        ("linear (DDPM), full chain", linear_schedule(1000)),
        ("cosine s=0, full chain", cosine_schedule(1000, s_off=0.0)),
        ("cosine s=0.008, full chain", cosine_schedule(1000, s_off=0.008)),
    ):
        chain = full_chain(sched)
        curves.append((name, np.asarray(chain.timesteps), np.asarray(expansion_threshold(chain))))
    return curves


def fig_lambda_star(tables, ctx, inp) -> FigureResult | None:
    if ctx.chain is None and not ctx.lambda_k:
        return None
    fig = new_figure((7, 4.5))
    ax = fig.add_subplot()
    for name, t, ls in _geometry_curves():
        ax.plot(t[1:-1], ls[1:-1], lw=1, label=name)
    if ctx.chain is not None:
        ls = expansion_threshold(ctx.chain)
        ax.plot(ctx.chain.t, ls, "ko-", ms=3, lw=1.2, label=f"this run's chain ({len(ctx.chain)} steps)")
    if ctx.lambda_k:
        lam = np.array(list(ctx.lambda_k.values()))
        ax.axhspan(
            lam.min(), lam.max(), color="C2", alpha=0.25, label=f"λ_k band [{lam.min():.3g}, {lam.max():.3g}]"
        )
    ax.set_yscale("log")
    ax.set_ylabel(r"$\lambda^*(t)$ (eq. 27)")
    ax.set_title("Expansion threshold per schedule and the patch eigenvalue band")
    time_axis(ax)
    ax.legend(fontsize=7)
    return result(
        "lambda_star",
        "λ*(t) per schedule with the λ_k band",
        "Patch expansion threshold λ*(t) (eq. 27, log scale): patches above the curve are Gaussian-"
        "expanding at that step. Paper schedules from pipeline.geometry.",
        fig,
    )


def fig_lambda_grid(tables, ctx, inp) -> FigureResult | None:
    if not ctx.lambda_k:
        return None
    ks = sorted(ctx.lambda_k)
    if ctx.grid and all(k in ctx.grid for k in ks):
        pos = {k: ctx.grid[k] for k in ks}
    else:
        w = int(round(math.sqrt(len(ks))))
        if w * w != len(ks):
            return None
        pos = {k: divmod(i, w) for i, k in enumerate(ks)}
    nr = max(p[0] for p in pos.values()) + 1
    nc = max(p[1] for p in pos.values()) + 1
    grid = np.full((nr, nc), math.nan)
    for k, (r, c) in pos.items():
        grid[r, c] = ctx.lambda_k[k]
    fig = new_figure((5, 4.5))
    ax = fig.add_subplot()
    im = ax.imshow(grid, cmap="magma")
    for k, (r, c) in pos.items():
        ax.text(
            c,
            r,
            f"k={k}\n{ctx.lambda_k[k]:.3g}",
            ha="center",
            va="center",
            fontsize=7,
            color="w" if grid[r, c] < np.nanmean(grid) else "k",
        )
    ax.set_xticks(range(nc))
    ax.set_yticks(range(nr))
    ax.set_xlabel("patch column")
    ax.set_ylabel("patch row")
    ax.set_title(r"$\lambda_k$ (top patch eigenvalue) on the patch grid")
    fig.colorbar(im, ax=ax, label=r"$\lambda_k$")
    return result(
        "lambda_grid",
        "λ_k on the patch grid",
        "Leading eigenvalue λ_k of each patch covariance at its grid position (row-major k); brighter = larger.",
        fig,
    )


def fig_samples(tables, ctx, inp: AnalysisInputs) -> FigureResult | None:
    if not inp.trajectories:
        return None
    trajs = inp.trajectories[:8]
    fig = new_figure((1.6 * len(trajs), 1.9))
    for i, tr in enumerate(trajs):
        x = load_npz(tr.path)["x"]
        img = np.asarray(x[-1], dtype=np.float64)
        if img.ndim == 4:
            img = img[0]
        img = np.clip((np.moveaxis(img, 0, -1) + 1.0) / 2.0, 0, 1)
        ax = fig.add_subplot(1, len(trajs), i + 1)
        ax.imshow(
            img[..., 0] if img.shape[-1] == 1 else img,
            cmap="gray" if img.shape[-1] == 1 else None,
            interpolation="nearest",  # upscaled: every model pixel a visible square, no smoothing
        )
        ax.set_title(f"seed {tr.seed}", fontsize=8)
        ax.axis("off")
    h, w = img.shape[:2]
    return result(
        "samples",
        "final samples",
        f"Final DDIM samples x_0 of the trajectories stage (first {len(trajs)} seeds), {w}×{h} pixels each, "
        "upscaled with nearest-neighbour so each pixel is a visible square.",
        fig,
    )


# The run-wide figures, after the tables' own (in the registry's order).
RUN_FIGURES: list[Callable[..., FigureResult | None]] = [fig_lambda_star, fig_lambda_grid, fig_samples]
FIGURES: list[Callable[..., FigureResult | None]] = [*TABLE_FIGURE_SPECS, *RUN_FIGURES]


def build_figures(tables, ctx: AnalysisContext, inp: AnalysisInputs) -> list[FigureResult]:
    out = []
    for fn in FIGURES:
        r = fn(tables, ctx, inp)
        if r is not None:
            out.append(r)
    return out
