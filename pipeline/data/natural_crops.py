"""Seeded random crops of the colour photographs bundled with scikit-image (the embedded default's data).

The photographs are read straight from the files installed with scikit-image (its ``data`` folder);
nothing is fetched, so this works offline. A crop of side ``resolution·s`` (s drawn log-uniformly from
``scale``) is taken at a random position of a random photograph and resized to ``resolution`` with
Pillow's antialiasing filter: s > 1 makes crops that look like CIFAR thumbnails (a whole object at low
resolution) rather than blown-up texture. Crop i depends only on (seed, i).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from .base import DatasetError, ImageSource, SquareImages, uint8_to_unit

# Colour photographs shipped inside the scikit-image wheel (checked on 0.26): name -> file.
PHOTOGRAPHS = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
    "retina": "retina.jpg",
}
DEFAULT_PHOTOGRAPHS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left")
_PARAM_BLOCK = 1024


def skimage_data_dir() -> Path:
    # skimage only to find its bundled photographs: the other datasets import without it
    import skimage

    return Path(os.path.dirname(skimage.__file__)) / "data"


@cache
def _load_photograph(name: str, channels: int) -> np.ndarray:
    path = skimage_data_dir() / PHOTOGRAPHS[name]
    if not path.is_file():
        raise DatasetError(
            f"{path} is missing from this scikit-image installation — reinstall scikit-image or drop "
            f"{name!r} from dataset.photographs."
        )
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB" if channels == 3 else "L"), dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    arr.setflags(write=False)
    return arr


class NaturalCropsSource(SquareImages, ImageSource):
    """``num_images`` seeded crops [C, resolution, resolution] of scikit-image's colour photographs."""

    name = "natural_crops"
    quantized = True

    def __init__(
        self,
        num_images: int = 4096,
        resolution: int = 32,
        channels: int = 3,
        seed: int = 0,
        photographs: tuple[str, ...] | list[str] | None = None,
        scale: tuple[float, float] | list[float] = (1.0, 4.0),
    ) -> None:
        photographs = tuple(photographs or DEFAULT_PHOTOGRAPHS)
        unknown = [p for p in photographs if p not in PHOTOGRAPHS]
        if unknown:
            raise DatasetError(
                f"dataset.photographs has unknown names {unknown} — choose from {sorted(PHOTOGRAPHS)}"
            )
        if channels not in (1, 3):
            raise DatasetError(f"dataset.channels={channels} — use 3 (RGB) or 1 (grayscale)")
        if int(num_images) < 1 or int(resolution) < 1:
            raise DatasetError(
                f"dataset.num_images={num_images}, dataset.resolution={resolution} — set both to at least 1"
            )
        lo, hi = (float(s) for s in scale)
        if not 0 < lo <= hi:
            raise DatasetError(f"dataset.scale={list(scale)} — set it to [min, max] with 0 < min <= max")
        self.photographs, self.scale = photographs, (lo, hi)
        self.resolution, self.channels, self.seed = int(resolution), int(channels), int(seed)
        self._n = int(num_images)
        shapes = [_load_photograph(p, self.channels).shape[1:] for p in photographs]
        smallest = min(min(s) for s in shapes)
        if round(self.resolution * lo) > smallest:
            raise DatasetError(
                f"crops of {round(self.resolution * lo)} pixels do not fit the smallest photograph "
                f"({smallest} pixels) — lower dataset.resolution or dataset.scale"
            )
        # Every crop's parameters are drawn up front in fixed blocks seeded by (seed, block), so crop i
        # depends on neither the chunking of the stream nor on how many crops are asked for.
        photo_idx, log_s, u = [], [], []
        for j in range(-(-self._n // _PARAM_BLOCK)):
            rng = np.random.default_rng([self.seed, j])
            photo_idx.append(rng.integers(0, len(photographs), size=_PARAM_BLOCK))
            log_s.append(rng.uniform(np.log(lo), np.log(hi), size=_PARAM_BLOCK))
            u.append(rng.uniform(size=(_PARAM_BLOCK, 2)))
        self._photo = np.concatenate(photo_idx)[: self._n]
        s = np.exp(np.concatenate(log_s)[: self._n])
        u = np.concatenate(u)[: self._n]
        self._side = np.empty(self._n, dtype=np.int64)
        self._y = np.empty(self._n, dtype=np.int64)
        self._x = np.empty(self._n, dtype=np.int64)
        for i in range(self._n):
            h, w = shapes[self._photo[i]]
            side = int(min(max(round(self.resolution * s[i]), 1), h, w))
            self._side[i] = side
            self._y[i] = int(u[i, 0] * (h - side + 1))
            self._x[i] = int(u[i, 1] * (w - side + 1))

    def input_files(self) -> list[Path]:
        return [skimage_data_dir() / PHOTOGRAPHS[name] for name in self.photographs]

    def __len__(self) -> int:
        return self._n

    def describe(self) -> dict:
        return {
            **super().describe(),
            "seed": self.seed,
            "photographs": list(self.photographs),
            "scale": list(self.scale),
        }

    def crop_parameters(self, i: int) -> dict:
        """Where crop i comes from: photograph name, top-left (y, x) and side in photograph pixels."""
        return {
            "photograph": self.photographs[self._photo[i]],
            "y": int(self._y[i]),
            "x": int(self._x[i]),
            "side": int(self._side[i]),
        }

    def read_uint8(self, start: int, stop: int) -> np.ndarray:
        r = self.resolution
        out = np.empty((stop - start, self.channels, r, r), dtype=np.uint8)
        for j, i in enumerate(range(start, stop)):
            photo = _load_photograph(self.photographs[self._photo[i]], self.channels)
            y, x, side = self._y[i], self._x[i], self._side[i]
            crop = photo[:, y : y + side, x : x + side]
            if side != r:
                hwc = crop[0] if self.channels == 1 else crop.transpose(1, 2, 0)
                img = Image.fromarray(np.ascontiguousarray(hwc))
                arr = np.asarray(img.resize((r, r), Image.Resampling.BICUBIC), dtype=np.uint8)
                crop = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
            out[j] = crop
        return out

    def _read(self, start: int, stop: int) -> np.ndarray:
        return uint8_to_unit(self.read_uint8(start, stop))
