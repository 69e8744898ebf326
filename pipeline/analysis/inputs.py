"""Load whatever stage outputs exist (covariance, trajectories, jacobian) into plain columnar tables.

Every input is optional: a folder that is None or absent, or an optional file that is missing, is
recorded in ``AnalysisInputs.missing`` with the tables it would have fed, and the analysis renders
what it can. A file that exists but lacks its key columns is an error (the producer is broken).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import InputFileError
from pipeline.io import read_csv
from pipeline.outputs import CovarianceFolder, JacobianFolder, TrajectoriesFolder, read_meta

Table = dict[str, np.ndarray]

# file -> (required columns, what it feeds)
J, C = JacobianFolder, CovarianceFolder
JACOBIAN_FILES: dict[str, tuple[tuple[str, ...], str]] = {
    J.GLOBAL: (("seed", "step", "t"), "Tables 4, 5 and the kappa figures"),
    J.PATCHES: (("seed", "step", "t", "k"), "Tables 3, 8, 9, release times, heatmaps"),
    J.BLOCKS: (("seed", "t", "k", "j"), "Table 7 (coupling vs Chebyshev distance)"),
    J.LYAPUNOV: (("k",), "Table 11 (Lyapunov exponents)"),
    J.ATTENTION: (("t", "entropy"), "Table 6 (attention entropy vs cross coupling)"),
    J.PROXY: (("t", "proxy"), "Table 10 and Figure 1 (score-deviation proxy)"),
}
COVARIANCE_FILES: dict[str, tuple[tuple[str, ...], str]] = {
    C.PATCHES: (("k", "lambda_k"), "lambda_k on the patch grid"),
}


def _to_column(values: list[str]) -> np.ndarray:
    """Numeric column (empty cells -> NaN) when every non-empty cell parses as a float, else strings."""
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        v = v.strip()
        if v == "" or v.lower() in ("nan", "none", "null"):
            out[i] = math.nan
            continue
        try:
            out[i] = float(v)
        except ValueError:
            return np.asarray(values, dtype=object)
    return out


def read_table(path: str | Path, required: tuple[str, ...] = ()) -> Table:
    """Read a CSV with a header into {column: array}; refuse a file without the required columns."""
    rows = read_csv(path)
    with open(path, newline="") as f:
        header = f.readline().strip().split(",")
    header = [h.strip() for h in header if h.strip()]
    missing = [c for c in required if c not in header]
    if missing:
        raise InputFileError(
            f"{path}: missing column(s) {missing} (has {header}); the producing stage wrote an "
            f"incompatible table — rerun that stage with the current code"
        )
    return {c: _to_column([r.get(c) or "" for r in rows]) for c in header}


def n_rows(table: Table | None) -> int:
    if not table:
        return 0
    return len(next(iter(table.values())))


def has_values(table: Table | None, column: str) -> bool:
    """True when the column exists and holds at least one finite number."""
    if not table or column not in table:
        return False
    col = table[column]
    return col.dtype != object and bool(np.isfinite(col).any())


@dataclass
class TrajectoryInfo:
    seed: int
    path: Path


@dataclass
class AnalysisInputs:
    """Plain tables from the stage folders; None where a folder or file is absent (see ``missing``)."""

    covariance_dir: Path | None = None
    trajectories_dir: Path | None = None
    jacobian_dir: Path | None = None
    covariance_meta: dict | None = None
    trajectories_meta: dict | None = None
    jacobian_meta: dict | None = None
    covariance_patches: Table | None = None
    patch_stats_path: Path | None = None
    trajectories: list[TrajectoryInfo] = field(default_factory=list)
    global_: Table | None = None
    patches: Table | None = None
    blocks: Table | None = None
    lyapunov: Table | None = None
    attention: Table | None = None
    proxy: Table | None = None
    missing: list[str] = field(default_factory=list)

    @property
    def jacobian_config(self) -> dict:
        return (self.jacobian_meta or {}).get("config") or {}

    def any_config(self) -> dict:
        """The first resolved config found (jacobian, then trajectories, then covariance)."""
        for meta in (self.jacobian_meta, self.trajectories_meta, self.covariance_meta):
            if meta and meta.get("config"):
                return meta["config"]
        return {}


def _folder(path: str | Path | None, stage: str, missing: list[str]) -> Path | None:
    if path is None:
        missing.append(f"{stage} stage output (no folder given)")
        return None
    p = Path(path)
    if not p.exists():
        missing.append(f"{stage} stage output ({p} does not exist; run `python -m stages.{stage}` first)")
        return None
    if not p.is_dir():
        raise InputFileError(
            f"{p} is a file — pass the {stage} stage's run folder (outputs/{stage}/<run-key>/)"
        )
    return p


def load_stage_outputs(
    covariance_dir: str | Path | None = None,
    trajectories_dir: str | Path | None = None,
    jacobian_dir: str | Path | None = None,
) -> AnalysisInputs:
    """Read any subset of the three upstream stage folders into an ``AnalysisInputs``."""
    missing: list[str] = []
    inp = AnalysisInputs(missing=missing)

    cov = _folder(covariance_dir, "covariance", missing)
    if cov is not None:
        inp.covariance_dir = cov
        inp.covariance_meta = read_meta(cov)
        for name, (req, feeds) in COVARIANCE_FILES.items():
            p = cov / name
            if p.exists():
                inp.covariance_patches = read_table(p, req)
            else:
                missing.append(f"covariance/{name} ({feeds})")
        ps = CovarianceFolder(cov).patch_stats
        inp.patch_stats_path = ps if ps.exists() else None

    traj = _folder(trajectories_dir, "trajectories", missing)
    if traj is not None:
        inp.trajectories_dir = traj
        inp.trajectories_meta = read_meta(traj)
        found = [TrajectoryInfo(seed, p) for seed, p in TrajectoriesFolder(traj).seed_files()]
        inp.trajectories = found
        if not found:
            missing.append(f"trajectories/{TrajectoriesFolder.SEED_PATTERN} (sample images figure)")

    jac = _folder(jacobian_dir, "jacobian", missing)
    if jac is not None:
        inp.jacobian_dir = jac
        inp.jacobian_meta = read_meta(jac)
        attr = {
            J.GLOBAL: "global_",
            J.PATCHES: "patches",
            J.BLOCKS: "blocks",
            J.LYAPUNOV: "lyapunov",
            J.ATTENTION: "attention",
            J.PROXY: "proxy",
        }
        for name, (req, feeds) in JACOBIAN_FILES.items():
            p = jac / name
            if p.exists():
                table = read_table(p, req)
                setattr(inp, attr[name], table if n_rows(table) else None)
                if not n_rows(table):
                    missing.append(f"jacobian/{name} is empty ({feeds})")
            else:
                missing.append(f"jacobian/{name} ({feeds})")
    return inp
