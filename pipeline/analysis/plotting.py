"""Drawing helpers every report figure shares (matplotlib's Agg canvas directly: no pyplot, no global backend
state): PNG bytes, the time axis, and the patch × t heatmap that draws missing cells as missing and
round-off below the stated float floor as zero."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullLocator

from pipeline.analysis.context import AnalysisContext, patch_matrix

DPI = 100
T_LABEL = "paper timestep t (sampling runs right to left)"
ONE_LABEL = "1: contraction boundary"
MISSING_COLOUR = "0.82"


@dataclass
class FigureResult:
    name: str
    title: str
    caption: str
    png: bytes
    # the drawn matplotlib Figure, kept so tests can read its axes (labels, ticks, colour norms)
    figure: Figure | None = field(default=None, repr=False, compare=False)


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A report figure: constrained layout, ``figsize`` in inches."""
    return Figure(layout="constrained", figsize=figsize)


def png_bytes(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # No Software/date metadata: identical inputs give identical bytes (DVC sees no change on rerun).
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def result(name: str, title: str, caption: str, fig: Figure) -> FigureResult:
    return FigureResult(name, title, caption, png_bytes(fig), fig)


def time_axis(ax) -> None:
    ax.set_xlabel(T_LABEL)
    ax.grid(alpha=0.3)


def count_t(n: int) -> str:
    """'50 measured t' / 'one measured t' for captions built from the data."""
    return "one measured t" if n == 1 else f"{n} measured t"


def cell_edges(ts: np.ndarray, log: bool) -> np.ndarray:
    """Column edges halfway between neighbouring measured t (geometric halfway on a log axis), so each
    column is centred on its t and as wide as the gaps around it."""
    x = np.log(ts) if log else ts.astype(np.float64)
    if len(x) == 1:
        half = np.array([0.25 if log else 0.5])
    else:
        gaps = np.diff(x)
        half = np.concatenate([[gaps[0]], gaps]) / 2
    mid = (x[:-1] + x[1:]) / 2
    edges = np.concatenate([[x[0] - half[0]], mid, [x[-1] + (np.diff(x)[-1] / 2 if len(x) > 1 else half[0])]])
    return np.exp(edges) if log else edges


def use_log_t(ts: np.ndarray) -> bool:
    """Log t axis when the measured t span over a decade with very uneven gaps (e.g. 1000, 500, 200, ...,
    20), where a linear axis would squeeze the low-noise end; evenly spaced t stay linear."""
    ts = np.sort(np.asarray(ts, dtype=np.float64))
    if len(ts) < 3 or ts[0] <= 0 or ts[-1] / ts[0] <= 10:
        return False
    gaps = np.diff(ts)
    return bool(gaps.max() / gaps.min() > 4)


def time_ticks(ax, ts: np.ndarray, max_labels: int = 12) -> None:
    """Major ticks at exactly the measured t (labelled; every k-th label when crowded), no minor ticks."""
    ts = np.sort(np.asarray(ts, dtype=np.float64))
    every = max(1, math.ceil(len(ts) / max_labels))
    keep = set(range(0, len(ts), every)) | {len(ts) - 1}
    ax.xaxis.set_major_locator(FixedLocator(ts))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:g}" if i in keep else "" for i, t in enumerate(ts)], fontsize=7)


@dataclass(frozen=True)
class HeatmapStyle:
    name: str
    title: str
    caption: str
    cmap: str
    bar_label: str


def heatmap(ctx: AnalysisContext, P, col: str, style: HeatmapStyle) -> FigureResult:
    """Patch × t map with t on its true scale (log when the measured t span over a decade): each column is
    centred on its t and ticked there. Signed values on a diverging map centred on 0 (white = 0); cells
    never measured are grey and hatched (never white, which means 0); |value| at or below the run's float
    floor is drawn as 0. The caption counts what was measured."""
    ts, ks, mat, lam = patch_matrix(ctx, P, col)
    ts = np.asarray(ts, dtype=np.float64)
    t_order = np.argsort(ts)
    ts = ts[t_order]
    order = np.argsort(lam)
    # rows = patches sorted by λ_k (bottom = smallest), columns = t ascending
    mat = mat[t_order][:, order].T
    floor = ctx.roundoff
    rounded = np.isfinite(mat) & (np.abs(mat) <= floor) & (mat != 0)
    mat = np.where(rounded, 0.0, mat)
    log = use_log_t(ts)
    fig = new_figure((9, 4.5))
    ax = fig.add_subplot()
    ax.set_facecolor(MISSING_COLOUR)
    ax.patch.set_hatch("//")
    ax.patch.set_edgecolor("0.6")
    fin = mat[np.isfinite(mat)]
    vlim = float(np.max(np.abs(fin))) if fin.size else 0.0
    vlim = vlim if vlim > 0 else 1.0  # all zero (the oracle's S = 0): one white map
    mesh = ax.pcolormesh(
        cell_edges(ts, log),
        np.arange(len(ks) + 1) - 0.5,
        np.ma.masked_invalid(mat),
        cmap=style.cmap,
        norm=Normalize(vmin=-vlim, vmax=vlim),
        shading="flat",
    )
    if log:
        ax.set_xscale("log")
    time_ticks(ax, ts)
    ax.set_yticks(range(len(ks)))
    ax.set_yticklabels([f"k={int(ks[i])} λ={lam[i]:.3g}" for i in order], fontsize=6)
    ax.set_ylabel("patch k, sorted by λ_k (top = largest)")
    ax.set_xlabel(T_LABEL + (", log scale" if log else ""))
    ax.set_title(style.title)
    fig.colorbar(mesh, ax=ax, label=style.bar_label)
    measured_t = int(np.count_nonzero(np.isfinite(mat).any(axis=0)))
    missing = len(ts) - measured_t
    if missing:
        ax.legend(
            handles=[Patch(facecolor=MISSING_COLOUR, hatch="//", edgecolor="0.6", label="not measured")],
            fontsize=7,
            loc="upper left",
        )
    scale = "log scale" if log else "linear scale"
    if missing:
        where = (
            f"Columns sit at the {len(ts)} t of patches.csv on a {scale} (ticks = those t); measured at "
            f"{measured_t} of them, the other {missing} are grey and hatched (not measured, not 0)."
        )
    else:
        where = f"Columns sit at the {count_t(len(ts))} on a {scale} (ticks = measured t)."
    parts = [f"{style.caption} {where}"]
    if rounded.any():
        parts.append(
            f"{int(rounded.sum())} cells with 0 < |value| ≤ {floor:.0e} (this run's float floor) are drawn as 0."
        )
    return result(style.name, style.title, " ".join(parts), fig)
