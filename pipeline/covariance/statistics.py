"""Streaming per-patch mean and covariance Σ_k, their eigendecomposition (λ_k, v_k⁽¹⁾, μ_k,i), optional full Σ₀.

The paper's λ_k = ‖Σ_k‖_op is the top eigenvalue of patch k's covariance (Theorem 17, eq. 26-27) and
v_k⁽¹⁾ its unit eigenvector (§7.1: estimated from 50,000 CIFAR-10 training images, 8x8 patches). The
covariance is the centred, unbiased sample covariance (ddof = 1, as np.cov), accumulated over chunks so
memory does not grow with N: with a shift c, S1 = Σ (x - c) and S2 = Σ (x - c)(x - c)ᵀ give
    mean = c + S1/N,   Σ = (S2 - S1 S1ᵀ/N) / (N - 1).
S2 is updated with one BLAS syrk per patch per chunk (symmetric rank-b update, half a matmul's flops).

Two arithmetic paths:
- float (any float images): c = the first chunk's mean (keeps the sums well conditioned), float64 syrk.
- exact (sources whose images are u/127.5 - 1 of uint8 pixels u: CIFAR-10, image folders, photograph
  crops): c = 128 in pixel units, so x - c are integers in [-128, 127]. A float32 syrk over at most
  1024 images is then exact (every product is an integer ≤ 2^14 and every partial sum ≤ 2^24, which
  float32 represents exactly), and the float64 running sums stay exact integers (< 2^53). S1 and S2 are
  therefore the exact integer sums, whatever the chunking or image order (bit-identical results),
  at float32 speed (twice float64's); the mean and Σ of x = u/127.5 - 1 follow by one exact rescaling.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.base import DatasetError, ImageSource
from ..data.gaussian import fix_eigenvector_signs
from ..io import load_npz, save_npz
from ..patches import PatchGrid, check_patch_size, patch_blocks_from_full, patch_grid, patch_indices

try:
    from scipy.linalg.blas import dsyrk as _dsyrk
    from scipy.linalg.blas import ssyrk as _ssyrk
except ImportError:  # pragma: no cover - scipy is a dependency; plain matmul keeps it working without
    _dsyrk = _ssyrk = None

CHECKPOINT_FORMAT = 2
EXACT_BLOCK = 1024  # images per float32 syrk: 1024 * 128^2 = 2^24, the float32 exact-integer limit
_U8_SHIFT = 128.0
_U8_SCALE = 127.5  # x = u / 127.5 - 1 = (u - 128) / 127.5 + 1/255


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


def _syrk_add(acc_f: np.ndarray, x: np.ndarray, buf_f: np.ndarray | None = None) -> None:
    """acc_f += xᵀx on the upper triangle of the Fortran-ordered float64 acc_f, for a C-ordered x [b, n].

    float64 x: updated in place by dsyrk. float32 x: ssyrk into the float32 scratch buf_f, then added.
    """
    if x.dtype == np.float64:
        if _dsyrk is None:
            acc_f += x.T @ x
            return
        # x.T is Fortran-ordered [n, b], so syrk computes (x.T)(x.T)ᵀ = xᵀx without a copy.
        out = _dsyrk(1.0, x.T, beta=1.0, c=acc_f, trans=0, lower=0, overwrite_c=1)
        if not np.shares_memory(out, acc_f):  # pragma: no cover - scipy writes in place for F-ordered c
            acc_f[...] = out
        return
    if _ssyrk is None:
        acc_f += (x.T @ x).astype(np.float64)
        return
    out = _ssyrk(1.0, x.T, beta=0.0, c=buf_f, trans=0, lower=0, overwrite_c=1)
    acc_f += out


def _symmetrize_from_upper_f(acc: np.ndarray) -> np.ndarray:
    """Full symmetric matrices from arrays whose [..., i, j] (C order) hold the F-order upper triangle."""
    lower = np.tril(acc)  # F-order upper triangle = C-order lower triangle
    return lower + np.swapaxes(np.tril(acc, -1), -1, -2)


class PatchCovarianceAccumulator:
    """Running sums for per-patch (or full) mean and covariance.

    Feed float chunks with update(), or (exact=True) uint8 chunks with update_uint8(); see the module
    docstring for the two arithmetic paths.
    """

    def __init__(
        self, image_shape: tuple[int, int, int], patch_size: int, full_cov: bool = False, exact: bool = False
    ) -> None:
        self.image_shape = tuple(int(s) for s in image_shape)
        check_patch_size(self.image_shape, patch_size)
        self.patch_size = int(patch_size)
        self.full_cov = bool(full_cov)
        self.exact = bool(exact)
        self.grid = patch_grid(self.image_shape[1], self.image_shape[2], self.patch_size)
        c = self.image_shape[0]
        self.n = c * self.image_shape[1] * self.image_shape[2]
        self.m, self.n_k = self.grid.num_patches, c * self.patch_size**2
        self.count = 0
        # Shift [n] in image order; the exact path's is fixed at 128 (pixel units) from the start.
        self.shift: np.ndarray | None = np.full(self.n, _U8_SHIFT) if self.exact else None
        # S1 is kept in image order [n] when full or exact (the exact path sums the raw uint8 pixels,
        # contiguously, which is faster than summing the patch-ordered copy), else in patch order.
        self.sum = np.zeros(self.n) if (self.full_cov or self.exact) else np.zeros((self.m, self.n_k))
        if self.full_cov:
            self.sumsq = np.zeros((self.n, self.n))  # .T is the Fortran-ordered syrk target
        else:
            self.sumsq = np.zeros((self.m, self.n_k, self.n_k))
        self._buf: np.ndarray | None = None

    def _check(self, x: np.ndarray) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"expected a chunk [b, {', '.join(map(str, self.image_shape))}], got {x.shape}")

    def _shifted_patches(self, x: np.ndarray, shift: np.ndarray, dtype) -> np.ndarray:
        """[M, b, n_k] of x - shift in ``dtype``, built in one strided pass from [b, C, H, W]."""
        b = x.shape[0]
        c = self.image_shape[0]
        p, r, q = self.patch_size, self.grid.rows, self.grid.cols
        src = x.reshape(b, c, r, p, q, p).transpose(2, 4, 0, 1, 3, 5)  # [R, Q, b, C, P, P]
        sh = (
            shift.reshape(c, r, p, q, p).transpose(1, 3, 0, 2, 4)[:, :, None].astype(dtype)
        )  # [R, Q, 1, C, P, P]
        out = np.empty((self.m, b, self.n_k), dtype=dtype)
        np.subtract(src, sh, out=out.reshape(r, q, b, c, p, p), casting="unsafe")
        return out

    def _scratch(self, n: int) -> np.ndarray:
        if self._buf is None or self._buf.shape != (n, n):
            self._buf = np.zeros((n, n), dtype=np.float32, order="F")
        return self._buf

    def update(self, x: np.ndarray) -> None:
        """Add a chunk of float images [b, C, H, W] (accumulated in float64)."""
        if self.exact:
            raise ValueError("this accumulator is exact (uint8 pixels): use update_uint8")
        x = np.asarray(x)
        self._check(x)
        b = x.shape[0]
        if b == 0:
            return
        if self.shift is None:
            self.shift = x.reshape(b, -1).mean(axis=0, dtype=np.float64)
        if self.full_cov:
            xs = x.reshape(b, -1) - self.shift
            self.sum += xs.sum(axis=0)
            _syrk_add(self.sumsq.T, xs)
        else:
            xs = self._shifted_patches(x, self.shift, np.float64)
            self.sum += xs.sum(axis=1)
            for k in range(self.m):
                _syrk_add(self.sumsq[k].T, xs[k])
        self.count += b

    def update_uint8(self, u: np.ndarray) -> None:
        """Add a chunk of uint8 pixels [b, C, H, W] in exact integer arithmetic (exact=True)."""
        if not self.exact:
            raise ValueError("this accumulator is not exact: use update with float images")
        u = np.asarray(u)
        self._check(u)
        if u.dtype != np.uint8:
            raise TypeError(f"update_uint8 expects uint8 pixels, got {u.dtype}")
        for s in range(0, u.shape[0], EXACT_BLOCK):
            blk = u[s : s + EXACT_BLOCK]
            b = blk.shape[0]
            self.sum += blk.reshape(b, -1).sum(axis=0, dtype=np.int64) - int(_U8_SHIFT) * b
            if self.full_cov:
                v = np.subtract(blk.reshape(b, -1), np.float32(_U8_SHIFT), dtype=np.float32)
                _syrk_add(self.sumsq.T, v, self._scratch(self.n))
            else:
                v = self._shifted_patches(blk, self.shift, np.float32)
                buf = self._scratch(self.n_k)
                for k in range(self.m):
                    _syrk_add(self.sumsq[k].T, v[k], buf)
            self.count += b

    # -- checkpoint state ------------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        return {
            "count": np.int64(self.count),
            "shift": np.zeros(self.n) if self.shift is None else self.shift,
            "has_shift": np.bool_(self.shift is not None),
            "exact": np.bool_(self.exact),
            "sum": self.sum,
            "sumsq": self.sumsq,
        }

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        if state["sum"].shape != self.sum.shape or state["sumsq"].shape != self.sumsq.shape:
            raise ValueError("checkpoint arrays do not match this accumulator's shapes")
        if bool(state["exact"]) != self.exact:
            raise ValueError("checkpoint was written by the other arithmetic path")
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
        idx = patch_indices(self.image_shape, self.patch_size)
        if self.full_cov:
            shift = self.shift
            cov = (s2 - n_img * np.outer(d, d)) / (n_img - 1)
        else:
            shift = self.shift[idx]
            if d.ndim == 1:  # image-ordered S1 (exact path)
                d = d[idx]
            cov = (s2 - n_img * d[:, :, None] * d[:, None, :]) / (n_img - 1)
        mean = shift + d
        if self.exact:  # pixel units -> x = u / 127.5 - 1
            mean = mean / _U8_SCALE - 1.0
            cov = cov / _U8_SCALE**2
        if self.full_cov:
            return mean[idx], patch_blocks_from_full(cov, self.image_shape, self.patch_size), mean, cov
        return mean, cov, None, None


# ----------------------------------------------------------------------------------------------------------
# The entry point


def _fingerprint(source: ImageSource, patch_size: int, full_cov: bool, exact: bool) -> str:
    return json.dumps(
        {
            "format": CHECKPOINT_FORMAT,
            "source": source.describe(),
            "image_shape": list(source.image_shape),
            "num_images": len(source),
            "patch_size": int(patch_size),
            "full_cov": bool(full_cov),
            "exact": bool(exact),
        },
        sort_keys=True,
        default=str,
    )


def _state_seal(fingerprint: str, state: dict[str, np.ndarray]) -> str:
    """sha256 of a checkpoint's inputs and running sums: an edited checkpoint is not resumed from."""
    h = hashlib.sha256(fingerprint.encode())
    for name in sorted(state):
        a = np.ascontiguousarray(state[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _save_checkpoint(path: Path, fingerprint: str, acc: PatchCovarianceAccumulator) -> None:
    state = acc.state()
    seal = np.array(_state_seal(fingerprint, state))
    save_npz(path, fingerprint=np.array(fingerprint), sealed_sha256=seal, **state)


def _load_checkpoint(path: Path, fingerprint: str, acc: PatchCovarianceAccumulator) -> bool:
    try:
        state = load_npz(path)
        if str(state["fingerprint"]) != fingerprint:
            warnings.warn(
                f"checkpoint {path} was written for different inputs; ignoring it and starting over",
                stacklevel=4,
            )
            return False
        sums = {k: v for k, v in state.items() if k not in ("fingerprint", "sealed_sha256")}
        if str(state.get("sealed_sha256", "")) != _state_seal(fingerprint, sums):
            warnings.warn(
                f"checkpoint {path} does not match its seal (edited, or written by an older version); "
                "ignoring it and starting over",
                stacklevel=4,
            )
            return False
        acc.load_state(state)
        return True
    except (OSError, KeyError, ValueError) as e:
        warnings.warn(f"checkpoint {path} is unreadable ({e}); ignoring it and starting over", stacklevel=4)
        return False


def compute_patch_statistics(
    source: ImageSource,
    patch_size: int,
    *,
    chunk_size: int = 4096,
    full_cov: bool = False,
    checkpoint_path: str | Path | None = None,
    checkpoint_interval_s: float = 60.0,
    progress: bool = True,
    blas_threads: int | None = None,
    exact: bool | None = None,
) -> PatchStats:
    """Stream ``source`` once and return per-patch mean, covariance and eigendecomposition.

    full_cov=True also accumulates the full n×n Σ₀ (the Gaussian surrogate; the patch blocks are then
    read off its diagonal, costing no extra pass). exact (None: whenever source.quantized) selects the
    exact integer path for uint8-pixel sources. With checkpoint_path, the running sums are saved
    atomically every ``checkpoint_interval_s`` seconds; a later call with the same inputs resumes from
    the saved image index (a checkpoint for other inputs is ignored with a warning), and the checkpoint
    is deleted once the statistics are complete or the data turn out to be unreadable.
    blas_threads caps BLAS/LAPACK threads for this call (None: the library default). On a machine
    shared with other jobs, 1 is much faster than OpenBLAS's default of one thread per core, whose
    spinning workers stall when the cores are oversubscribed.
    """
    if exact is None:
        exact = bool(getattr(source, "quantized", False))
    elif exact and not getattr(source, "quantized", False):
        raise ValueError(f"exact=True needs a source of uint8 pixels; {type(source).__name__} has none")
    with _blas_limit(blas_threads):
        return _compute_patch_statistics(
            source, patch_size, chunk_size, full_cov, checkpoint_path, checkpoint_interval_s, progress, exact
        )


def _blas_limit(n: int | None):
    if n is None:
        return contextlib.nullcontext()
    try:
        # optional, and only when blas_threads is set: without it the except below warns
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is optional
        warnings.warn(
            "threadpoolctl is not installed; blas_threads is ignored (set OPENBLAS_NUM_THREADS)", stacklevel=3
        )
        return contextlib.nullcontext()
    return threadpool_limits(limits=int(n), user_api="blas")


def _compute_patch_statistics(
    source, patch_size, chunk_size, full_cov, checkpoint_path, checkpoint_interval_s, progress, exact
) -> PatchStats:
    shape = tuple(source.image_shape)
    check_patch_size(shape, patch_size)
    total = len(source)
    acc = PatchCovarianceAccumulator(shape, patch_size, full_cov=full_cov, exact=exact)
    fingerprint = _fingerprint(source, patch_size, full_cov, exact)
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    if ckpt is not None and ckpt.exists():
        _load_checkpoint(ckpt, fingerprint, acc)
    start = acc.count
    t0 = time.perf_counter()
    last_save = time.monotonic()
    bar = tqdm(total=total, initial=start, disable=not progress, unit="img", desc="patch covariance")
    chunks = (
        source.iter_uint8_chunks(chunk_size, start=start)
        if exact
        else source.iter_chunks(chunk_size, start=start)
    )
    update = acc.update_uint8 if exact else acc.update
    try:
        for chunk in chunks:
            update(chunk)
            bar.update(chunk.shape[0])
            if (
                ckpt is not None
                and acc.count < total
                and time.monotonic() - last_save >= checkpoint_interval_s
            ):
                _save_checkpoint(ckpt, fingerprint, acc)
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
            "exact": exact,
        },
    )
