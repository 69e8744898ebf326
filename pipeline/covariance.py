"""Streaming per-patch mean and covariance Σ_k, their eigendecomposition (λ_k, v_k⁽¹⁾, μ_k,i), optional full Σ₀.

The paper's λ_k = ‖Σ_k‖_op is the top eigenvalue of patch k's covariance (Theorem 17, eq. 26-27) and
v_k⁽¹⁾ its unit eigenvector (§7.1: estimated from 50,000 CIFAR-10 training images, 8x8 patches). The
covariance is the centred, unbiased sample covariance (ddof = 1, as np.cov), accumulated in float64
over chunks so memory does not grow with N: with a fixed shift c (the first chunk's mean, which keeps
the sums well conditioned), S1 = Σ (x - c) and S2 = Σ (x - c)(x - c)ᵀ give
    mean = c + S1/N,   Σ = (S2 - S1 S1ᵀ/N) / (N - 1).
S2 is updated with one BLAS syrk per patch per chunk (symmetric rank-b update, half a matmul's flops).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data.base import DatasetError, ImageSource
from .data.gaussian import fix_eigenvector_signs
from .io import load_npz, save_npz, write_csv
from .patches import PatchGrid, check_patch_size, patch_blocks_from_full, patch_grid, patch_indices

try:
    from scipy.linalg.blas import dsyrk as _dsyrk
except ImportError:  # pragma: no cover - scipy is a dependency; plain matmul keeps it working without
    _dsyrk = None

CHECKPOINT_FORMAT = 1


@dataclass
class PatchStats:
    """Per-patch statistics of an image collection (all float64).

    mean [M, n_k]; cov [M, n_k, n_k] (ddof=1); eigvals [M, n_k] descending (the spectrum μ_k,i);
    eigvecs [M, n_k, n_k] with eigvecs[k, :, i] the unit eigenvector of eigvals[k, i], its largest-|.|
    entry positive; full_mean [n] and full_cov [n, n] (ddof=1) in (C, H, W) image order when requested.
    """

    count: int
    patch_size: int
    image_shape: tuple[int, int, int]
    mean: np.ndarray
    cov: np.ndarray
    eigvals: np.ndarray
    eigvecs: np.ndarray
    full_mean: np.ndarray | None = None
    full_cov: np.ndarray | None = None
    source: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)

    @property
    def lambda_k(self) -> np.ndarray:
        """λ_k [M]: top eigenvalue of each patch covariance (Theorem 17)."""
        return self.eigvals[:, 0]

    @property
    def v1(self) -> np.ndarray:
        """v_k⁽¹⁾ [M, n_k]: unit top eigenvector of each patch covariance."""
        return self.eigvecs[:, :, 0]

    @property
    def trace(self) -> np.ndarray:
        return np.trace(self.cov, axis1=1, axis2=2)

    @property
    def grid(self) -> PatchGrid:
        return patch_grid(self.image_shape[1], self.image_shape[2], self.patch_size)

    @property
    def num_patches(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_k(self) -> int:
        return int(self.mean.shape[1])


def eigendecompose(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues [..., n] descending and eigenvectors [..., n, n] (columns, sign-fixed) of symmetric cov."""
    w, v = np.linalg.eigh(cov)
    return w[..., ::-1].copy(), fix_eigenvector_signs(v[..., ::-1])


# ----------------------------------------------------------------------------------------------------------
# Accumulator


def _syrk_update(acc_f: np.ndarray, x: np.ndarray) -> None:
    """acc_f += xᵀx (upper triangle of the Fortran-ordered acc_f) for a C-ordered x [b, n]."""
    if _dsyrk is None:
        acc_f += x.T @ x
        return
    # x.T is Fortran-ordered [n, b], so syrk computes (x.T)(x.T)ᵀ = xᵀx in place without a copy.
    out = _dsyrk(1.0, x.T, beta=1.0, c=acc_f, trans=0, lower=0, overwrite_c=1)
    if not np.shares_memory(out, acc_f):  # pragma: no cover - scipy writes in place for F-ordered c
        acc_f[...] = out


def _symmetrize_from_upper_f(acc: np.ndarray) -> np.ndarray:
    """Full symmetric matrices from arrays whose [..., i, j] (C order) hold the F-order upper triangle."""
    lower = np.tril(acc)  # F-order upper triangle = C-order lower triangle
    return lower + np.swapaxes(np.tril(acc, -1), -1, -2)


class PatchCovarianceAccumulator:
    """Running float64 sums for per-patch (or full) mean and covariance; feed chunks with update()."""

    def __init__(self, image_shape: tuple[int, int, int], patch_size: int, full_cov: bool = False) -> None:
        self.image_shape = tuple(int(s) for s in image_shape)
        check_patch_size(self.image_shape, patch_size)
        self.patch_size = int(patch_size)
        self.full_cov = bool(full_cov)
        self.grid = patch_grid(self.image_shape[1], self.image_shape[2], self.patch_size)
        c = self.image_shape[0]
        self.n = c * self.image_shape[1] * self.image_shape[2]
        self.m, self.n_k = self.grid.num_patches, c * self.patch_size**2
        self.count = 0
        self.shift: np.ndarray | None = None  # [n] in image order
        if self.full_cov:
            self.sum = np.zeros(self.n)
            self.sumsq = np.zeros((self.n, self.n))  # .T is the Fortran-ordered syrk target
        else:
            self.sum = np.zeros((self.m, self.n_k))
            self.sumsq = np.zeros((self.m, self.n_k, self.n_k))

    def _shifted_patches(self, x: np.ndarray) -> np.ndarray:
        """float64 [M, b, n_k] of x - shift, built in one strided pass."""
        b = x.shape[0]
        c, h, w = self.image_shape
        p, r, q = self.patch_size, self.grid.rows, self.grid.cols
        src = x.reshape(b, c, r, p, q, p).transpose(2, 4, 0, 1, 3, 5)  # [R, Q, b, C, P, P]
        shift = self.shift.reshape(c, r, p, q, p).transpose(1, 3, 0, 2, 4)[:, :, None]  # [R, Q, 1, C, P, P]
        out = np.empty((self.m, b, self.n_k))
        np.subtract(src, shift, out=out.reshape(r, q, b, c, p, p))
        return out

    def update(self, x: np.ndarray) -> None:
        """Add a chunk of images [b, C, H, W] (any float dtype; accumulated in float64)."""
        x = np.asarray(x)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"expected a chunk [b, {', '.join(map(str, self.image_shape))}], got {x.shape}")
        b = x.shape[0]
        if b == 0:
            return
        if self.shift is None:
            self.shift = x.reshape(b, -1).mean(axis=0, dtype=np.float64)
        if self.full_cov:
            xs = x.reshape(b, -1) - self.shift
            self.sum += xs.sum(axis=0)
            _syrk_update(self.sumsq.T, xs)
        else:
            xs = self._shifted_patches(x)
            self.sum += xs.sum(axis=1)
            for k in range(self.m):
                _syrk_update(self.sumsq[k].T, xs[k])
        self.count += b

    # -- checkpoint state ------------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        return {
            "count": np.int64(self.count),
            "shift": np.zeros(self.n) if self.shift is None else self.shift,
            "has_shift": np.bool_(self.shift is not None),
            "sum": self.sum,
            "sumsq": self.sumsq,
        }

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        if state["sum"].shape != self.sum.shape or state["sumsq"].shape != self.sumsq.shape:
            raise ValueError("checkpoint arrays do not match this accumulator's shapes")
        self.count = int(state["count"])
        self.shift = state["shift"].astype(np.float64) if bool(state["has_shift"]) else None
        self.sum = state["sum"].astype(np.float64)
        self.sumsq = np.ascontiguousarray(state["sumsq"], dtype=np.float64)

    # -- results ---------------------------------------------------------------------------------------
    def finalize(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(patch mean [M, n_k], patch cov [M, n_k, n_k], full mean [n] | None, full cov [n, n] | None)."""
        n_img = self.count
        if n_img < 2:
            raise DatasetError(
                f"a covariance needs at least 2 images, got {n_img}; raise dataset.num_images."
            )
        d = self.sum / n_img
        s2 = _symmetrize_from_upper_f(self.sumsq)
        if self.full_cov:
            full_mean = self.shift + d
            full_cov = (s2 - n_img * np.outer(d, d)) / (n_img - 1)
            idx = patch_indices(self.image_shape, self.patch_size)
            mean = full_mean[idx]
            cov = patch_blocks_from_full(full_cov, self.image_shape, self.patch_size)
            return mean, cov, full_mean, full_cov
        shift = self.shift[patch_indices(self.image_shape, self.patch_size)]
        mean = shift + d
        cov = (s2 - n_img * d[:, :, None] * d[:, None, :]) / (n_img - 1)
        return mean, cov, None, None


# ----------------------------------------------------------------------------------------------------------
# The entry point


def _fingerprint(source: ImageSource, patch_size: int, full_cov: bool) -> str:
    return json.dumps(
        {
            "format": CHECKPOINT_FORMAT,
            "source": source.describe(),
            "image_shape": list(source.image_shape),
            "num_images": len(source),
            "patch_size": int(patch_size),
            "full_cov": bool(full_cov),
        },
        sort_keys=True,
        default=str,
    )


def _load_checkpoint(path: Path, fingerprint: str, acc: PatchCovarianceAccumulator) -> bool:
    try:
        state = load_npz(path)
        if str(state["fingerprint"]) != fingerprint:
            warnings.warn(
                f"checkpoint {path} was written for different inputs; ignoring it and starting over",
                stacklevel=3,
            )
            return False
        acc.load_state(state)
        return True
    except (OSError, KeyError, ValueError) as e:
        warnings.warn(f"checkpoint {path} is unreadable ({e}); ignoring it and starting over", stacklevel=3)
        return False


def compute_patch_statistics(
    source: ImageSource,
    patch_size: int,
    *,
    chunk_size: int = 2048,
    full_cov: bool = False,
    checkpoint_path: str | Path | None = None,
    checkpoint_interval_s: float = 60.0,
    progress: bool = True,
) -> PatchStats:
    """Stream ``source`` once and return per-patch mean, covariance and eigendecomposition.

    full_cov=True also accumulates the full n×n Σ₀ (the Gaussian surrogate; the patch blocks are then
    read off its diagonal, costing no extra pass). With checkpoint_path, the running sums are saved
    atomically every ``checkpoint_interval_s`` seconds; a later call with the same inputs resumes from
    the saved image index (a checkpoint for other inputs is ignored with a warning), and the checkpoint
    is deleted once the statistics are complete or the data turn out to be unreadable.
    """
    from tqdm.auto import tqdm

    shape = tuple(source.image_shape)
    check_patch_size(shape, patch_size)
    total = len(source)
    acc = PatchCovarianceAccumulator(shape, patch_size, full_cov=full_cov)
    fingerprint = _fingerprint(source, patch_size, full_cov)
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    if ckpt is not None and ckpt.exists():
        _load_checkpoint(ckpt, fingerprint, acc)
    start = acc.count
    t0 = time.perf_counter()
    last_save = time.monotonic()
    bar = tqdm(total=total, initial=start, disable=not progress, unit="img", desc="patch covariance")
    try:
        for chunk in source.iter_chunks(chunk_size, start=start):
            acc.update(chunk)
            bar.update(chunk.shape[0])
            if (
                ckpt is not None
                and acc.count < total
                and time.monotonic() - last_save >= checkpoint_interval_s
            ):
                save_npz(ckpt, fingerprint=np.array(fingerprint), **acc.state())
                last_save = time.monotonic()
    except DatasetError:
        # The data themselves are broken: a checkpoint of them is not worth resuming from.
        if ckpt is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(ckpt)
        raise
    finally:
        bar.close()
    stream_s = time.perf_counter() - t0
    if not (np.all(np.isfinite(acc.sum)) and np.all(np.isfinite(acc.sumsq))):
        raise DatasetError("the images contain NaN or infinite values; check the dataset files.")
    mean, cov, full_mean, full_cov_arr = acc.finalize()
    t1 = time.perf_counter()
    eigvals, eigvecs = eigendecompose(cov)
    eig_s = time.perf_counter() - t1
    if ckpt is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(ckpt)
    processed = acc.count - start
    return PatchStats(
        count=acc.count,
        patch_size=int(patch_size),
        image_shape=shape,
        mean=mean,
        cov=cov,
        eigvals=eigvals,
        eigvecs=eigvecs,
        full_mean=full_mean,
        full_cov=full_cov_arr,
        source=source.describe(),
        timing={
            "stream_s": stream_s,
            "eig_s": eig_s,
            "resumed_from": start,
            "images_per_s": processed / stream_s if stream_s > 0 else float("nan"),
        },
    )


# ----------------------------------------------------------------------------------------------------------
# Outputs


PATCHES_CSV_COLUMNS = [
    "k", "row", "col", "y0", "x0", "n_k", "count", "lambda_k", "lambda_2", "trace", "top_fraction",
    "effective_rank",
]  # fmt: skip


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
    """Write patch_stats.npz, patches.csv, lambda_k.png and (full Σ₀ only) gaussian_fit.npz into out_dir.

    patch_stats.npz keys: mean [M, n_k], cov [M, n_k, n_k], eigvals [M, n_k] (descending), eigvecs
    [M, n_k, n_k] (columns), v1 [M, n_k], lambda_k [M], count, patch_size, image_shape [3], grid [2].
    gaussian_fit.npz keys: mean [n], cov [n, n] (image order (C, H, W), ddof=1), image_shape, count.
    Every file is written atomically with deterministic bytes.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    grid = stats.grid
    paths = {"patch_stats": out / "patch_stats.npz", "patches_csv": out / "patches.csv"}
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
    write_csv(paths["patches_csv"], patch_table(stats), columns=PATCHES_CSV_COLUMNS)
    if stats.full_cov is not None:
        paths["gaussian_fit"] = out / "gaussian_fit.npz"
        save_npz(
            paths["gaussian_fit"],
            mean=stats.full_mean,
            cov=stats.full_cov,
            image_shape=np.asarray(stats.image_shape, dtype=np.int64),
            count=np.int64(stats.count),
        )
    if figure:
        paths["figure"] = out / "lambda_k.png"
        plot_lambda_grid(stats, paths["figure"])
    return paths


def read_patch_stats(path: str | Path, with_full: bool = True) -> PatchStats:
    """Read patch_stats.npz (a file or the folder holding it); gaussian_fit.npz beside it is read too."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    file = path / "patch_stats.npz" if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(
            f"{file} does not exist; run the covariance stage first (python -m stages.covariance)"
        )
    d = load_npz(file)
    full_mean = full_cov = None
    fit = folder / "gaussian_fit.npz"
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
    file = path / "gaussian_fit.npz" if path.is_dir() else path
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
        from .io import _replace_atomically  # the shared atomic writer; io exposes no public bytes writer yet

        _replace_atomically(buf.getvalue(), Path(path))
    return fig
