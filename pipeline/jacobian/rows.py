"""One measured point as long-format table rows, the columns taken from the estimator registry.

global.csv gets one row per point, patches.csv one per patch k, blocks.csv one per ordered block (k, j);
a column no estimator filled at this point gets its default (NaN for measurements). The jacobian stage
adds the point's own columns (seed, step, t, ...) in front.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .estimators import column_names, columns_of

if TYPE_CHECKING:  # types only: StepMeasurement builds its rows through this module
    from .measure import StepMeasurement

__all__ = ["column_names", "global_row", "patch_rows", "block_rows"]


def _scalar(v) -> Any:
    if isinstance(v, (np.floating, float)):
        return float(v)
    if isinstance(v, (np.integer, bool)):
        return int(v)
    return v


def global_row(m: StepMeasurement) -> dict[str, Any]:
    """global.csv's measured columns at this point (HEAD, the registry's, TAIL)."""
    fixed = {"r": m.r, "b": m.b, "n": m.n, "M": m.num_patches}
    return {c.name: _scalar(fixed[c.name] if c.name in fixed else c.value(m)) for c in columns_of("global")}


def patch_rows(m: StepMeasurement) -> list[dict[str, Any]]:
    """patches.csv's measured columns, one row per patch k."""
    cols = {c.name: c.value(m) for c in columns_of("patches")}
    rows = []
    for k in range(m.num_patches):
        row: dict[str, Any] = {"k": k}
        for name, arr in cols.items():
            row[name] = float(arr[k]) if isinstance(arr, np.ndarray) else math.nan
        rows.append(row)
    return rows


def block_rows(m: StepMeasurement, grid: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """One row per ordered block (k, j) with its Chebyshev distance on the patch grid; none without op_norm."""
    if m.block.get("op_norm") is None:
        return []
    M = m.num_patches
    if grid is None:
        side = int(round(math.sqrt(M)))
        grid = (side, M // side)
    ncols = grid[1]
    cols = {c.name: c.value(m) for c in columns_of("blocks")}
    rows = []
    for k in range(M):
        for j in range(M):
            row: dict[str, Any] = {
                "k": k,
                "j": j,
                "distance": max(abs(k // ncols - j // ncols), abs(k % ncols - j % ncols)),
            }
            for name, arr in cols.items():
                row[name] = float(arr[k, j]) if isinstance(arr, np.ndarray) else math.nan
            rows.append(row)
    return rows
