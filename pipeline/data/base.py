"""The ImageSource interface every dataset implements, and shared helpers."""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError


class DatasetError(PipelineError):
    """A dataset cannot be read as configured; the message names the file or key and the fix."""


# uint8 -> [-1, 1] through a table so every reader (binary, python, PNG) maps a byte to the same float32.
U8_TO_UNIT = (np.arange(256, dtype=np.float64) / 127.5 - 1.0).astype(np.float32)


def uint8_to_unit(x: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [-1, 1] (0 -> -1, 255 -> 1)."""
    if x.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {x.dtype}")
    return U8_TO_UNIT[x]


class ImageSource(abc.ABC):
    """A finite, ordered collection of images, float32 channels-first [C, H, W], streamed in chunks.

    Image i is the same array however the collection is chunked (sources are deterministic given
    their config and seed), which is what makes streaming statistics chunk-size independent and
    resumable from an image index.
    """

    name: str = "source"
    #: True when every image is U8_TO_UNIT[u] of uint8 pixels u that read_uint8 returns; statistics
    #: can then be accumulated in exact integer arithmetic (pipeline.covariance).
    quantized: bool = False

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @property
    @abc.abstractmethod
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""

    @abc.abstractmethod
    def _read(self, start: int, stop: int) -> np.ndarray:
        """Images start..stop-1 as float32 [stop-start, C, H, W]."""

    def describe(self) -> dict:
        """JSON-serialisable identity of this source (goes into meta.json and checkpoint fingerprints)."""
        return {"name": self.name, "num_images": len(self), "image_shape": list(self.image_shape)}

    def input_files(self) -> list[Path]:
        """The files this source reads (their sha256 goes into meta.json); none for generated sources."""
        return []

    def iter_chunks(self, chunk_size: int, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Yield float32 [b, C, H, W] chunks of images start..stop-1 in order (b <= chunk_size)."""
        for i, j in self._chunk_bounds(chunk_size, start, stop):
            yield self._read(i, j)

    def _chunk_bounds(self, chunk_size: int, start: int, stop: int | None) -> list[tuple[int, int]]:
        """[(i, j), ...] covering images start..stop-1 in chunks of at most chunk_size (validated)."""
        if chunk_size < 1:
            raise DatasetError(
                f"chunk_size={chunk_size} (covariance.chunk_size) — set it to at least 1 image per chunk"
            )
        stop = len(self) if stop is None else stop
        if not 0 <= start <= stop <= len(self):
            raise ValueError(f"image range {start}..{stop} is outside 0..{len(self)}")
        return [(i, min(i + chunk_size, stop)) for i in range(start, stop, chunk_size)]

    def read_uint8(self, start: int, stop: int) -> np.ndarray:
        """uint8 pixels [stop-start, C, H, W] of images start..stop-1 (quantized sources only)."""
        raise NotImplementedError(f"{type(self).__name__} has no uint8 pixels (quantized is False)")

    def iter_uint8_chunks(
        self, chunk_size: int, start: int = 0, stop: int | None = None
    ) -> Iterator[np.ndarray]:
        """Like iter_chunks, but yields the uint8 pixels (quantized sources only)."""
        for i, j in self._chunk_bounds(chunk_size, start, stop):
            yield self.read_uint8(i, j)

    def get(self, start: int, stop: int) -> np.ndarray:
        """Images start..stop-1 as one float32 array."""
        return self._read(start, stop)

    def load_all(self) -> np.ndarray:
        """Every image in one float32 [N, C, H, W] array (small sources only)."""
        return self._read(0, len(self))


class SquareImages:
    """A mixin for sources of square images: ``channels`` planes of ``resolution`` × ``resolution``."""

    channels: int
    resolution: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.resolution, self.resolution)


class FileSource(ImageSource):
    """A source that reads the image files ``files`` under the folder ``root``: those files are its inputs."""

    root: Path
    files: list[Path]

    def input_files(self) -> list[Path]:
        return list(self.files)

    def describe(self) -> dict:
        return {**super().describe(), "root": str(self.root)}


def resolve_count(requested: int | None, available: int, what: str, key: str = "dataset.num_images") -> int:
    """Number of images to use: all when requested is None, else requested (refused if too many)."""
    if requested is None:
        return available
    requested = int(requested)
    if requested < 1:
        raise DatasetError(f"{key}={requested} — ask for at least one image (or null for all {available})")
    if requested > available:
        raise DatasetError(
            f"{key}={requested} but {what} holds only {available} images — set {key}={available} "
            f"(or null for all) or point the dataset at a larger collection"
        )
    return requested


class ArraySource(ImageSource):
    """Images already in memory: float [N, C, H, W], or uint8 pixels [N, C, H, W] (then quantized).

    Float chunks keep the array's dtype (float64 stays float64) rather than the float32 other sources
    yield; uint8 arrays yield float32 U8_TO_UNIT[u] like the file readers, and their raw pixels.
    """

    name = "array"

    def __init__(self, images: np.ndarray, name: str = "array") -> None:
        images = np.asarray(images)
        if not (np.issubdtype(images.dtype, np.floating) or images.dtype == np.uint8):
            raise ValueError(
                f"ArraySource expects float images in [-1, 1] or uint8 pixels, got {images.dtype}"
            )
        if images.ndim != 4:
            raise ValueError(f"ArraySource expects [N, C, H, W], got shape {images.shape}")
        self.images = images
        self.name = name
        self.quantized = images.dtype == np.uint8
        self._digest: str | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[1:])

    def describe(self) -> dict:
        # The content hash ties a resume checkpoint to these exact pixels (computed once: the array is
        # taken to be immutable while the source is in use).
        if self._digest is None:
            self._digest = hashlib.sha256(
                memoryview(np.ascontiguousarray(self.images)).cast("B")
            ).hexdigest()[:16]
        return {**super().describe(), "dtype": str(self.images.dtype), "sha256_16": self._digest}

    def read_uint8(self, start: int, stop: int) -> np.ndarray:
        if not self.quantized:
            return super().read_uint8(start, stop)
        return self.images[start:stop]

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self.quantized:
            return uint8_to_unit(self.images[start:stop])
        return self.images[start:stop]
