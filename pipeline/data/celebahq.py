"""CelebA-HQ (or any folder of face photographs) resized to a square resolution (paper §7.7: 200 images at 64x64).

The folder holds image files (png/jpg/jpeg/webp/bmp, any case); they are taken in sorted file-name order
(stable across machines), the first ``num_images`` are used, each is centre-cropped to a square if it is
not one, converted to RGB (or L for channels=1) and resized with Pillow's antialiasing filter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import InputMissingError

from .base import DatasetError, FileSource, SquareImages, resolve_count, uint8_to_unit

# Pillow modes of single-channel images deeper than 8 bits (16-bit PNG/TIFF): converting them to "L"
# clips every value above 255, so they are read at their own depth instead (ImageFolderSource.quantized
# is then False and statistics run in floating point).
DEEP_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
DEEP_MAX = 65535.0
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX,
}


def list_image_files(root: Path) -> list[Path]:
    """Image files directly in root, sorted by name; any other visible file is an error naming it."""
    if root.exists() and not root.is_dir():
        raise DatasetError(
            f"dataset.root={root} is a file, not a folder — set dataset.root to the folder holding the images"
        )
    if not root.is_dir():
        raise InputMissingError(
            f"image folder {root} does not exist — put the CelebA-HQ images (e.g. 00000.jpg ... from "
            f"the celeba_hq_256 or CelebAMask-HQ release) directly in one folder and set dataset.root to it "
            f"(or the CELEBAHQ_ROOT environment variable)."
        )
    files = []
    for p in sorted(root.iterdir(), key=lambda q: q.name):
        if p.name.startswith(".") or p.is_dir():
            continue  # hidden files (.DS_Store) and sub-folders are not part of the collection
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise DatasetError(
                f"{p} is not an image file (suffix {p.suffix!r}, expected one of {sorted(IMAGE_SUFFIXES)}); "
                f"dataset.root must hold only images — move it out of {root}"
            )
        files.append(p)
    if not files:
        raise DatasetError(f"no image files in {root} — put the CelebA-HQ png/jpg files there (dataset.root)")
    return files


def _bomb_error(path: Path, e: Exception) -> DatasetError:
    return DatasetError(
        f"{path} is a decompression bomb: its header declares more than {Image.MAX_IMAGE_PIXELS:,} pixels "
        f"({e}) — remove it from dataset.root (or downscale it yourself if it is a genuine image)"
    )


def _square_resized(im: Image.Image, resolution: int, resample: str) -> Image.Image:
    w, h = im.size
    if w != h:
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if im.size != (resolution, resolution):
        im = im.resize((resolution, resolution), RESAMPLE[resample], reducing_gap=None)
    return im


def _decode_error(path: Path, e: Exception) -> DatasetError:
    return DatasetError(
        f"{path} cannot be decoded as an image ({type(e).__name__}: {e}) — it is corrupted or not an "
        f"image; replace it or remove it from dataset.root"
    )


@contextlib.contextmanager
def _open_image(path: Path) -> Iterator[Image.Image]:
    """The image at ``path``, open; a file PIL cannot decode becomes one DatasetError naming it."""
    try:
        with Image.open(path) as im:
            yield im
    except Image.DecompressionBombError as e:
        raise _bomb_error(path, e) from e
    except DatasetError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise _decode_error(path, e) from e


def _uint8_array(im: Image.Image, resolution: int, channels: int, resample: str) -> np.ndarray:
    """An open 8-bit image as uint8 [C, R, R]: centre square crop, RGB/L conversion, antialiased resize."""
    arr = np.asarray(
        _square_resized(im.convert("RGB" if channels == 3 else "L"), resolution, resample), np.uint8
    )
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def load_image(path: Path, resolution: int, channels: int, resample: str = "bicubic") -> np.ndarray:
    """One 8-bit image as uint8 [C, R, R]: centre square crop, RGB/L conversion, antialiased resize."""
    with _open_image(path) as im:
        if im.mode in DEEP_MODES:
            raise DatasetError(
                f"{path} is a {im.mode} (16-bit) image; reading it as 8-bit would clip it — "
                "read it with load_image_unit (ImageFolderSource does)"
            )
        return _uint8_array(im, resolution, channels, resample)


def load_image_unit(path: Path, resolution: int, channels: int, resample: str = "bicubic") -> np.ndarray:
    """One image of any depth as float32 [C, R, R] in [-1, 1] (16-bit grey: v / 65535 scaled, not clipped)."""
    with _open_image(path) as im:
        if im.mode not in DEEP_MODES:
            return uint8_to_unit(_uint8_array(im, resolution, channels, resample))
        # "F" holds the 16-bit values exactly; crop and resize run in float like the 8-bit path.
        arr = np.asarray(_square_resized(im.convert("F"), resolution, resample), dtype=np.float64)
    unit = np.clip(arr / DEEP_MAX * 2.0 - 1.0, -1.0, 1.0).astype(np.float32)
    return np.repeat(unit[None], channels, axis=0)


class ImageFolderSource(SquareImages, FileSource):
    """First ``num_images`` images of a folder, sorted by file name, as [C, resolution, resolution]."""

    name = "celebahq"
    quantized = True

    def __init__(
        self,
        root: str | Path,
        num_images: int | None = None,
        resolution: int = 64,
        channels: int = 3,
        resample: str = "bicubic",
        num_workers: int = 2,
    ) -> None:
        if channels not in (1, 3):
            raise DatasetError(f"dataset.channels={channels} — use 3 (RGB) or 1 (grayscale)")
        if int(resolution) < 1:
            raise DatasetError(f"dataset.resolution={resolution} — set it to a positive integer")
        if resample not in RESAMPLE:
            raise DatasetError(f"dataset.resample={resample!r} — use one of {sorted(RESAMPLE)}")
        self.root = Path(root).expanduser()
        files = list_image_files(self.root)
        n = resolve_count(num_images, len(files), f"the image folder {self.root}")
        self.files = files[:n]
        self.resolution, self.channels, self.resample = int(resolution), int(channels), resample
        self.num_workers = max(1, int(num_workers))
        # Header check of every used file now, so a bad file fails the run before any statistics exist.
        modes = set()
        for p in self.files:
            try:
                with Image.open(p) as im:
                    modes.add(im.mode)
            except Image.DecompressionBombError as e:
                raise _bomb_error(p, e) from e
            except (UnidentifiedImageError, OSError, SyntaxError) as e:
                raise DatasetError(
                    f"{p} is not a readable image ({type(e).__name__}: {e}) — replace it or remove it "
                    f"from dataset.root"
                ) from e
        #: 16-bit images are read at their depth: then there are no uint8 pixels to accumulate exactly.
        self.bit_depth = 16 if modes & DEEP_MODES else 8
        self.quantized = self.bit_depth == 8

    def __len__(self) -> int:
        return len(self.files)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "resolution": self.resolution,
            "resample": self.resample,
            "first_file": self.files[0].name,
            "last_file": self.files[-1].name,
            "bit_depth": self.bit_depth,
        }

    def read_uint8(self, start: int, stop: int) -> np.ndarray:
        if not self.quantized:
            return super().read_uint8(start, stop)
        return self._load_many(start, stop, load_image, np.uint8)

    def _load_many(self, start: int, stop: int, loader, dtype) -> np.ndarray:
        paths = self.files[start:stop]

        def load(p: Path) -> np.ndarray:
            return loader(p, self.resolution, self.channels, self.resample)

        if self.num_workers > 1 and len(paths) > 1:
            # Pillow releases the GIL while decoding and resizing, so threads give real parallelism.
            with ThreadPoolExecutor(self.num_workers) as ex:
                arrays = list(ex.map(load, paths))
        else:
            arrays = [load(p) for p in paths]
        if not arrays:
            return np.empty((0, *self.image_shape), dtype=dtype)
        return np.stack(arrays)

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self.quantized:
            return uint8_to_unit(self.read_uint8(start, stop))
        return self._load_many(start, stop, load_image_unit, np.float32)
