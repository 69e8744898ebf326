"""CelebA-HQ (or any folder of face photographs) resized to a square resolution (paper §7.7: 200 images at 64x64).

The folder holds image files (png/jpg/jpeg/webp/bmp, any case); they are taken in sorted file-name order
(stable across machines), the first ``num_images`` are used, each is centre-cropped to a square if it is
not one, converted to RGB (or L for channels=1) and resized with Pillow's antialiasing filter.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .base import DatasetError, ImageSource, resolve_count, uint8_to_unit

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX,
}


def list_image_files(root: Path) -> list[Path]:
    """Image files directly in root, sorted by name; any other visible file is an error naming it."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"image folder {root} does not exist. Put the CelebA-HQ images (e.g. 00000.jpg ... from "
            f"the celeba_hq_256 or CelebAMask-HQ release) directly in one folder and set dataset.root to it "
            f"(or the CELEBAHQ_ROOT environment variable)."
        )
    files = []
    for p in sorted(root.iterdir(), key=lambda q: q.name):
        if p.name.startswith(".") or p.is_dir():
            continue  # hidden files (.DS_Store) and sub-folders are not part of the collection
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise DatasetError(
                f"{p} is not an image file (suffix {p.suffix!r}; expected one of {sorted(IMAGE_SUFFIXES)}): "
                f"dataset.root must hold only images. Move it out of {root}."
            )
        files.append(p)
    if not files:
        raise DatasetError(f"no image files in {root}; put the CelebA-HQ png/jpg files there.")
    return files


def load_image(path: Path, resolution: int, channels: int, resample: str = "bicubic") -> np.ndarray:
    """One image as uint8 [C, R, R]: centre square crop, RGB/L conversion, antialiased resize."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            w, h = im.size
            if w != h:
                s = min(w, h)
                im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            if im.size != (resolution, resolution):
                im = im.resize((resolution, resolution), RESAMPLE[resample], reducing_gap=None)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetError(
            f"{path} cannot be decoded as an image ({type(e).__name__}: {e}); it is corrupted or not an "
            f"image. Replace or remove it."
        ) from e
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


class ImageFolderSource(ImageSource):
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
            raise DatasetError(f"dataset.channels={channels}: use 3 (RGB) or 1 (grayscale).")
        if int(resolution) < 1:
            raise DatasetError(f"dataset.resolution={resolution} must be a positive integer.")
        if resample not in RESAMPLE:
            raise DatasetError(f"dataset.resample={resample!r}: use one of {sorted(RESAMPLE)}.")
        self.root = Path(root).expanduser()
        files = list_image_files(self.root)
        n = resolve_count(num_images, len(files), f"the image folder {self.root}")
        self.files = files[:n]
        self.resolution, self.channels, self.resample = int(resolution), int(channels), resample
        self.num_workers = max(1, int(num_workers))
        # Header check of every used file now, so a bad file fails the run before any statistics exist.
        for p in self.files:
            try:
                with Image.open(p) as im:
                    im.size  # noqa: B018 - opening parses the header
            except (UnidentifiedImageError, OSError, SyntaxError) as e:
                raise DatasetError(
                    f"{p} is not a readable image ({type(e).__name__}: {e}); replace or remove it."
                ) from e

    def __len__(self) -> int:
        return len(self.files)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.resolution, self.resolution)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "root": str(self.root),
            "resolution": self.resolution,
            "resample": self.resample,
            "first_file": self.files[0].name,
            "last_file": self.files[-1].name,
        }

    def read_uint8(self, start: int, stop: int) -> np.ndarray:
        paths = self.files[start:stop]

        def load(p: Path) -> np.ndarray:
            return load_image(p, self.resolution, self.channels, self.resample)

        if self.num_workers > 1 and len(paths) > 1:
            # Pillow releases the GIL while decoding and resizing, so threads give real parallelism.
            with ThreadPoolExecutor(self.num_workers) as ex:
                arrays = list(ex.map(load, paths))
        else:
            arrays = [load(p) for p in paths]
        if not arrays:
            return np.empty((0, *self.image_shape), dtype=np.uint8)
        return np.stack(arrays)

    def _read(self, start: int, stop: int) -> np.ndarray:
        return uint8_to_unit(self.read_uint8(start, stop))
