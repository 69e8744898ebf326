"""Memory of the vmapped Jacobian products, and the chunk size / seed batch that fit a device.

A vmapped call of ``chunk`` vectors at S stacked points (pipeline.jacobian.points) holds the primal's
saved activations once per point and one set of backward intermediates per vector in the call, so

    peak(chunk, S) ≈ S · base + chunk · per_vector                                   (linear model)

`MemoryModel.fit` reads base and per_vector off two measured calls (chunk 1 and 2); `peak` then predicts
any other chunk. On CUDA the measurement is exact (torch.cuda.max_memory_allocated); on CPU it is the
process's resident high-water mark (VmHWM, reset through /proc/self/clear_refs), with glibc told to
return large blocks at once so that freed memory is not counted twice. `choose_chunk_size` and
`choose_seed_batch` pick the largest settings whose predicted peak fits a fraction of the free device
memory (torch.cuda.mem_get_info). On a CPU the choice is the measured one instead: chunk 16 and one point
per call (batching gains at most 1.4x there; README, benchmarks.jacobian (b), (e)).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

CPU_CHUNK_SIZE = 16  # measured: CPU cost per vector is flat in the chunk size (benchmarks.jacobian)
CPU_SEED_BATCH = 1  # measured: stacking seeds gains 1.17x on a 2-core CPU; kept off there
MAX_CHUNK_SIZE = 1024


@dataclass(frozen=True)
class MemoryModel:
    """peak(chunk, S) = S·base_bytes + chunk·per_vector_bytes (bytes above what was live before the call)."""

    base_bytes: float
    per_vector_bytes: float

    def peak(self, chunk: int, points: int = 1) -> float:
        return points * self.base_bytes + chunk * self.per_vector_bytes

    @classmethod
    def fit(cls, chunks: list[int], peaks: list[float]) -> MemoryModel:
        """Least-squares line through (chunk, peak) at one point (two sizes determine it)."""
        if len(chunks) < 2 or len(set(chunks)) < 2:
            raise ValueError(f"a memory model needs peaks at two different chunk sizes, got {chunks}")
        n = len(chunks)
        mx, my = sum(chunks) / n, sum(peaks) / n
        sxx = sum((c - mx) ** 2 for c in chunks)
        slope = sum((c - mx) * (p - my) for c, p in zip(chunks, peaks, strict=True)) / sxx
        return cls(base_bytes=max(0.0, my - slope * mx), per_vector_bytes=max(1.0, slope))


# ---------------------------------------------------------------------------------------------------
# Measuring one call's peak


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


@contextlib.contextmanager
def _glibc_returns_large_blocks(threshold: int = 1 << 16):
    """Fix glibc's mmap threshold (it otherwise grows after frees and keeps freed blocks resident)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, threshold)
        libc.mallopt(M_TRIM_THRESHOLD, threshold)
        libc.malloc_trim(0)
    except OSError:
        pass
    yield


def cpu_peak_supported() -> bool:
    try:
        _status_kb("VmHWM")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_peak_bytes(fn: Callable[[], object], device: torch.device | str) -> float:
    """Bytes allocated at the peak of fn() above what was live when it started (CUDA exact; CPU VmHWM)."""
    device = torch.device(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del out
        return float(peak)
    with _glibc_returns_large_blocks():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        before = _status_kb("VmRSS")
        out = fn()
        peak = _status_kb("VmHWM") - before
        del out
        gc.collect()
    return float(peak) * 1024.0


def calibrate(
    products: Callable[[int], object], device: torch.device | str, chunks: tuple[int, int] = (2, 4)
) -> MemoryModel:
    """Fit the model from ``products(chunk)`` (one vmapped call of chunk vectors) at two chunk sizes."""
    products(chunks[0])  # warm-up: kernels, workspaces and lazy modules are not per-call memory
    peaks = [measure_peak_bytes(lambda c=c: products(c), device) for c in chunks]
    return MemoryModel.fit(list(chunks), peaks)


# ---------------------------------------------------------------------------------------------------
# Choosing settings


def free_device_memory(device: torch.device | str) -> int | None:
    """Free bytes on a CUDA device (torch.cuda.mem_get_info); None for a CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def choose_chunk_size(
    model: MemoryModel,
    free_bytes: float,
    points: int = 1,
    fraction: float = 0.7,
    max_chunk: int = MAX_CHUNK_SIZE,
) -> int:
    """The largest chunk (vectors per vmapped call, all points together) whose predicted peak fits
    ``fraction`` of the free memory; at least one vector per point, a multiple of the point count."""
    budget = fraction * free_bytes - points * model.base_bytes
    chunk = int(budget // model.per_vector_bytes) if budget > 0 else 0
    chunk = min(max_chunk, chunk) // points * points
    return max(points, chunk)


def choose_seed_batch(
    model: MemoryModel, free_bytes: float, num_seeds: int, fraction: float = 0.7, vectors_per_point: int = 8
) -> int:
    """The most points stacked per call (at most num_seeds) that still leave ``vectors_per_point`` vectors
    per point in a call (8: a Krylov block of the global norm per point) within ``fraction`` of free memory."""
    per_point = model.base_bytes + vectors_per_point * model.per_vector_bytes
    return int(max(1, min(num_seeds, (fraction * free_bytes) // per_point)))


@dataclass(frozen=True)
class DeviceMemoryPlan:
    chunk_size: int
    seed_batch: int
    free_bytes: int | None
    model: MemoryModel | None
    reason: str


def plan_for_device(
    calibrate_at: Callable[[], MemoryModel],
    device: torch.device | str,
    num_seeds: int,
    chunk_size: int | str | None,
    seed_batch: int | str | None,
    stored_bytes_per_point: float = 0.0,
) -> DeviceMemoryPlan:
    """Resolve measure.chunk_size / points.seed_batch values "auto" for this device (numbers pass through).

    stored_bytes_per_point: what a point keeps beside its products (the exact route's n x n Jacobian)."""
    device = torch.device(device)
    auto_chunk, auto_batch = chunk_size == "auto", seed_batch == "auto"
    if not (auto_chunk or auto_batch):
        return DeviceMemoryPlan(
            int(chunk_size or CPU_CHUNK_SIZE), int(seed_batch or 1), None, None, "as configured"
        )
    free = free_device_memory(device)
    if free is None:
        return DeviceMemoryPlan(
            CPU_CHUNK_SIZE if auto_chunk else int(chunk_size),
            CPU_SEED_BATCH if auto_batch else int(seed_batch),
            None,
            None,
            "cpu: the measured CPU choices",
        )
    mm = calibrate_at()
    mm = MemoryModel(mm.base_bytes + stored_bytes_per_point, mm.per_vector_bytes)
    S = choose_seed_batch(mm, free, num_seeds) if auto_batch else int(seed_batch or 1)
    chunk = choose_chunk_size(mm, free, points=S) if auto_chunk else int(chunk_size)
    return DeviceMemoryPlan(
        chunk,
        S,
        free,
        mm,
        f"{device}: {free / 2**30:.1f} GiB free, base {mm.base_bytes / 2**20:.0f} MiB per point, "
        f"{mm.per_vector_bytes / 2**20:.1f} MiB per vector",
    )
