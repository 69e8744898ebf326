"""The covariance stage's files: patch_stats.npz, patches.csv, gaussian_fit.npz (+ its digest), lambda_k.png,
written with deterministic bytes and read back; and the stage's headline metrics."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import load_npz, save_npz, sha256_file, write_bytes, write_csv, write_text
from ..outputs import CovarianceFolder
from .statistics import PatchStats

# ----------------------------------------------------------------------------------------------------------
# Outputs


def patch_table(stats: PatchStats) -> list[dict]:
    """One row per patch: grid position, λ_k, second eigenvalue, trace, λ_k/trace, participation ratio."""
    grid = stats.grid
    rows = []
    for k in range(stats.num_patches):
        mu = stats.eigvals[k]
        r, c = grid.row_col(k)
        y0, x0 = grid.origin(k)
        tr = float(mu.sum())
        rows.append(
            {
                "k": k,
                "row": r,
                "col": c,
                "y0": y0,
                "x0": x0,
                "n_k": stats.n_k,
                "count": stats.count,
                "lambda_k": float(mu[0]),
                "lambda_2": float(mu[1]) if mu.size > 1 else float("nan"),
                "trace": tr,
                "top_fraction": float(mu[0]) / tr,
                "effective_rank": tr**2 / float(np.sum(mu**2)),
            }
        )
    return rows


def summary_metrics(stats: PatchStats) -> dict[str, float]:
    """Scalar figures for tracking (MLflow): λ range, mean trace, N, throughput."""
    lam = stats.lambda_k
    return {
        "num_images": float(stats.count),
        "lambda_min": float(lam.min()),
        "lambda_max": float(lam.max()),
        "lambda_mean": float(lam.mean()),
        "trace_mean": float(stats.trace.mean()),
        "images_per_s": float(stats.timing.get("images_per_s", float("nan"))),
    }


def write_covariance_outputs(out_dir: str | Path, stats: PatchStats, figure: bool = True) -> dict[str, Path]:
    """Write patch_stats.npz, patches.csv, lambda_k.png, (full Σ₀ only) gaussian_fit.npz and its digest
    gaussian_fit.sha256 into out_dir.

    patch_stats.npz keys: mean [M, n_k], cov [M, n_k, n_k], eigvals [M, n_k] (descending), eigvecs
    [M, n_k, n_k] (columns), v1 [M, n_k], lambda_k [M], count, patch_size, image_shape [3], grid [2].
    gaussian_fit.npz keys: mean [n], cov [n, n] (image order (C, H, W), ddof=1), image_shape, count.
    Every file is written atomically with deterministic bytes.
    """
    out = CovarianceFolder(out_dir)
    out.path.mkdir(parents=True, exist_ok=True)
    grid = stats.grid
    paths = {"patch_stats": out.patch_stats, "patches_csv": out / out.PATCHES}
    save_npz(
        paths["patch_stats"],
        mean=stats.mean,
        cov=stats.cov,
        eigvals=stats.eigvals,
        eigvecs=stats.eigvecs,
        v1=np.ascontiguousarray(stats.v1),
        lambda_k=np.ascontiguousarray(stats.lambda_k),
        count=np.int64(stats.count),
        patch_size=np.int64(stats.patch_size),
        image_shape=np.asarray(stats.image_shape, dtype=np.int64),
        grid=np.asarray([grid.rows, grid.cols], dtype=np.int64),
    )
    write_csv(paths["patches_csv"], patch_table(stats), columns=out.PATCH_COLUMNS)
    if stats.full_cov is not None:
        paths["gaussian_fit"] = out.gaussian_fit
        save_npz(
            paths["gaussian_fit"],
            mean=stats.full_mean,
            cov=stats.full_cov,
            image_shape=np.asarray(stats.image_shape, dtype=np.int64),
            count=np.int64(stats.count),
        )
    # The DVC chain's trajectories stage depends on this marker, not on gaussian_fit.npz: the marker exists
    # for every preset (celebahq_paper has no full Σ₀) and changes exactly when the fit does.
    digest = sha256_file(out.gaussian_fit) if out.has_gaussian_fit() else "none (covariance.full_cov=false)"
    paths["fit_digest"] = out / out.FIT_DIGEST
    write_text(paths["fit_digest"], digest + "\n")
    if figure:
        paths["figure"] = out / out.LAMBDA_FIGURE
        plot_lambda_grid(stats, paths["figure"])
    return paths


def read_patch_stats(path: str | Path, with_full: bool = True) -> PatchStats:
    """Read patch_stats.npz (a file or the folder holding it); gaussian_fit.npz beside it is read too."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    file = CovarianceFolder(path).patch_stats if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(
            f"{file} does not exist; run the covariance stage first (python -m stages.covariance)"
        )
    d = load_npz(file)
    full_mean = full_cov = None
    fit = CovarianceFolder(folder).gaussian_fit
    if with_full and fit.exists():
        g = load_npz(fit)
        full_mean, full_cov = g["mean"], g["cov"]
    return PatchStats(
        count=int(d["count"]),
        patch_size=int(d["patch_size"]),
        image_shape=tuple(int(s) for s in d["image_shape"]),
        mean=d["mean"],
        cov=d["cov"],
        eigvals=d["eigvals"],
        eigvecs=d["eigvecs"],
        full_mean=full_mean,
        full_cov=full_cov,
    )


@dataclass
class GaussianFit:
    """The Gaussian surrogate N(mean, cov) of the data (full Σ₀ in (C, H, W) image order)."""

    mean: np.ndarray
    cov: np.ndarray
    image_shape: tuple[int, int, int]
    count: int


def read_gaussian_fit(path: str | Path) -> GaussianFit:
    """Read gaussian_fit.npz (a file or the folder holding it)."""
    path = Path(path)
    file = CovarianceFolder(path).gaussian_fit if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(
            f"{file} does not exist; run the covariance stage with the full covariance enabled "
            f"(full_cov=true) to fit the Gaussian surrogate."
        )
    d = load_npz(file)
    return GaussianFit(d["mean"], d["cov"], tuple(int(s) for s in d["image_shape"]), int(d["count"]))


# ----------------------------------------------------------------------------------------------------------
# Figure


def plot_lambda_grid(stats: PatchStats, path: str | Path | None = None, title: str | None = None):
    """Heat map of λ_k over the patch grid, each cell annotated; saved as PNG when path is given.

    Uses the Agg canvas directly (no pyplot state), so it is safe in headless and parallel runs.
    """
    # matplotlib only when the λ grid is plotted: importing the covariance code stays without it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    grid = stats.grid
    lam = stats.lambda_k.reshape(grid.rows, grid.cols)
    fig = Figure(figsize=(1.2 + 0.6 * grid.cols, 0.9 + 0.6 * grid.rows), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(lam, cmap="viridis")
    if grid.num_patches <= 256:
        mid = 0.5 * (lam.min() + lam.max())
        for r in range(grid.rows):
            for c in range(grid.cols):
                ax.text(c, r, f"{lam[r, c]:.1f}", ha="center", va="center", fontsize=7,
                        color="black" if lam[r, c] > mid else "white")  # fmt: skip
    ax.set_xticks(range(grid.cols))
    ax.set_yticks(range(grid.rows))
    ax.set_xlabel("patch column")
    ax.set_ylabel("patch row")
    ax.set_title(title or f"λ_k, {stats.patch_size}×{stats.patch_size} patches, N={stats.count}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    if path is not None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
        write_bytes(path, buf.getvalue())
    return fig
