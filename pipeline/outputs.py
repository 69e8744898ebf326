"""The contract between stages: one class per stage's output folder, owning its file names, its table
columns and its record (meta.json).

Writers and readers (the stages, the jacobian loop, the sampler, the analysis, the synthetic fixtures,
sweeps, companions) name a stage's files only through these classes, so a file name or a column list
has one home. docs/outputs-and-columns.md describes the same files and columns for people; a test keeps
the two in step.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar

from pipeline import io
from pipeline.errors import InputFileError

META = "meta.json"


class UnreadableMetaError(InputFileError):
    """A folder's meta.json exists but is not a JSON object (edited, truncated, or not ours)."""


def read_meta(folder: str | Path) -> dict[str, Any] | None:
    """``folder``'s meta.json: None when the folder has none; an UnreadableMetaError when it has one
    that is not a JSON object (a broken record is never read as "no record")."""
    path = Path(folder) / META
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UnreadableMetaError(
            f"{path} is unreadable ({type(e).__name__}) — delete {Path(folder)} and rerun the stage that wrote it"
        ) from e
    if not isinstance(obj, dict):
        raise UnreadableMetaError(
            f"{path} is not a JSON object — delete {Path(folder)} and rerun the stage that wrote it"
        )
    return obj


class StageFolder:
    """A stage's output folder ``outputs/<stage>/<run-key>/`` (or any folder holding its files)."""

    stage: ClassVar[str] = ""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def meta_path(self) -> Path:
        return self.path / META

    def read_meta(self) -> dict[str, Any] | None:
        """The folder's meta.json (None when absent; UnreadableMetaError when broken)."""
        return read_meta(self.path)

    def is_nonempty_dir(self) -> bool:
        return self.path.is_dir() and any(self.path.iterdir())


class CovarianceFolder(StageFolder):
    """covariance: per-patch statistics (λ_k, v_k⁽¹⁾, Σ_k) and the optional full Gaussian fit Σ₀."""

    stage = "covariance"
    PATCH_STATS = "patch_stats.npz"
    PATCHES = "patches.csv"
    GAUSSIAN_FIT = "gaussian_fit.npz"
    # the fit's sha256 (or "none"): written by every run, so DVC's trajectories stage can depend on it
    FIT_DIGEST = "gaussian_fit.sha256"
    LAMBDA_FIGURE = "lambda_k.png"
    PATCH_COLUMNS = (
        "k", "row", "col", "y0", "x0", "n_k", "count", "lambda_k", "lambda_2", "trace", "top_fraction",
        "effective_rank",
    )  # fmt: skip

    @property
    def patch_stats(self) -> Path:
        return self.path / self.PATCH_STATS

    @property
    def gaussian_fit(self) -> Path:
        return self.path / self.GAUSSIAN_FIT

    def has_gaussian_fit(self) -> bool:
        return self.gaussian_fit.is_file()


_SEED_FILE = re.compile(r"seed-(\d+)\.npz")


class TrajectoriesFolder(StageFolder):
    """trajectories: one ``seed-<s>.npz`` per seed (t [S], x [S+1,C,H,W], eps [S,C,H,W]) and a sample grid."""

    stage = "trajectories"
    SAMPLES = "samples.png"
    SEED_PATTERN = "seed-<s>.npz"

    @staticmethod
    def seed_name(seed: int) -> str:
        return f"seed-{int(seed)}.npz"

    def seed_file(self, seed: int) -> Path:
        return self.path / self.seed_name(seed)

    def seed_files(self) -> list[tuple[int, Path]]:
        """(seed, path) of every trajectory file in the folder, by seed."""
        found = []
        for p in self.path.glob("seed-*.npz"):
            m = _SEED_FILE.fullmatch(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def missing_seeds(self, seeds: list[int]) -> list[int]:
        return [s for s in seeds if not self.seed_file(s).is_file()]


class JacobianFolder(StageFolder):
    """jacobian: long-format tables, one row per (seed, t[, k[, j]]); columns in docs/outputs-and-columns.md."""

    stage = "jacobian"
    GLOBAL = "global.csv"
    PATCHES = "patches.csv"
    BLOCKS = "blocks.csv"
    LYAPUNOV = "lyapunov.csv"
    ATTENTION = "attention.csv"
    PROXY = "proxy.csv"
    TABLES = (GLOBAL, PATCHES, BLOCKS, LYAPUNOV, ATTENTION, PROXY)
    # a shard's record of what it measured (points.shards > 1; pipeline.jacobian.shards), never in a pooled run
    SHARD = "shard.json"

    # The columns the loop adds in front of a point's measurement (its place in the chain).
    POINT_COLUMNS = ("seed", "step", "t", "t_prev", "alpha_bar_t", "alpha_bar_prev", "r_t", "b_t")
    GLOBAL_COLUMNS = POINT_COLUMNS + (
        "r", "b", "n", "M",
        "kappa_pi", "kappa_pi_change", "kappa_pi_residual", "pi_iters",
        "kappa_lanczos", "lanczos_residual", "lanczos_change", "lanczos_iters", "kappa_dense",
        "kappa_diag", "delta_cross", "kappa_pc", "kappa_pc_blockmax",
        "rayleigh_max", "suppression_min", "suppression_mean",
        "pc_slack_min", "pc_violated", "pc_slack_rayleigh_min", "pc_violated_rayleigh",
        "block_method", "block_iters", "block_change_max", "block_frob_probes",
        "jvp_method", "jvps", "vjps", "matvecs",
    )  # fmt: skip
    PATCH_PREFIX = ("seed", "step", "t", "k", "row", "col", "lambda_k", "f_t")
    PATCH_COLUMNS = PATCH_PREFIX + (
        "rayleigh", "expansion", "suppression", "margin", "diag_norm", "diag_norm_pi", "coupling", "pc_slack",
        "pc_slack_rayleigh", "rayleigh_surrogate", "exact_suppression",
    )  # fmt: skip
    BLOCK_COLUMNS = (
        "seed", "step", "t", "k", "j", "chebyshev", "op_norm", "frob_norm", "op_norm_pi", "frob_norm_hutch",
    )  # fmt: skip
    ATTENTION_COLUMNS = ("seed", "step", "t", "entropy", "entropy_token_weighted", "max_entropy")
    LYAPUNOV_COLUMNS = (
        "seed", "k", "lambda_k", "lyap_hat", "lyap_gauss", "nonpositive_steps", "steps", "measured_steps",
    )  # fmt: skip
    PROXY_COLUMNS = (
        "t", "sqrt_alpha_bar", "proxy", "proxy_std", "exact_deviation", "exact_deviation_std", "num_images",
    )  # fmt: skip
    COLUMNS: ClassVar[dict[str, tuple[str, ...]]] = {
        GLOBAL: GLOBAL_COLUMNS,
        PATCHES: PATCH_COLUMNS,
        BLOCKS: BLOCK_COLUMNS,
        LYAPUNOV: LYAPUNOV_COLUMNS,
        ATTENTION: ATTENTION_COLUMNS,
        PROXY: PROXY_COLUMNS,
    }

    def write_table(self, name: str, rows: list[dict[str, Any]]) -> Path:
        """Write one of the folder's tables with exactly its schema's columns (an unknown key is an error)."""
        columns = self.COLUMNS[name]
        extra = sorted({k for row in rows for k in row} - set(columns))
        if extra:
            # a measurement that fills a column the schema does not declare: the schema (and the docs) lag
            raise ValueError(f"{name}: columns {extra} are not in JacobianFolder's schema for this table")
        path = self.path / name
        io.write_csv(path, rows, columns)
        return path


class AnalysisFolder(StageFolder):
    """analysis: tables, figures and the report; the files other runs read are named here."""

    stage = "analysis"
    SUMMARY = "summary.json"
    METRICS = "metrics.json"
    PLOTS_BY_T = "plots/by_t.csv"
    REPORT_HTML = "report.html"
    REPORT_MD = "report.md"
    SCHEDULE_GEOMETRY = "schedule_geometry.csv"


FOLDERS: dict[str, type[StageFolder]] = {
    cls.stage: cls for cls in (CovarianceFolder, TrajectoriesFolder, JacobianFolder, AnalysisFolder)
}


def folder_of(stage: str, path: str | Path) -> StageFolder:
    """The typed folder of ``stage`` at ``path`` (a plain StageFolder for stages without one, e.g. train)."""
    cls = FOLDERS.get(stage)
    if cls is None:
        folder = StageFolder(path)
        folder.stage = stage
        return folder
    return cls(path)
