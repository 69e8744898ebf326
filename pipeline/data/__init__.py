"""Image datasets behind one interface (ImageSource): float32 [C, H, W] images, streamed in chunks."""

from __future__ import annotations

from collections.abc import Mapping

from .base import ArraySource, DatasetError, ImageSource, uint8_to_unit
from .celebahq import ImageFolderSource
from .cifar10 import Cifar10Source, download_cifar10
from .gaussian import GaussianSource
from .natural_crops import NaturalCropsSource

__all__ = [
    "ArraySource",
    "Cifar10Source",
    "DatasetError",
    "GaussianSource",
    "ImageFolderSource",
    "ImageSource",
    "NaturalCropsSource",
    "dataset_from_config",
    "download_cifar10",
    "uint8_to_unit",
]

# Keys every conf/dataset/*.yaml may carry; a dataset ignores the ones that mean nothing to it.
COMMON_KEYS = {
    "name",
    "root",
    "num_images",
    "resolution",
    "channels",
    "split",
    "seed",
    "download",
    "description",
}
SPECIFIC_KEYS = {
    "cifar10": {"version"},
    "celebahq": {"resample", "num_workers"},
    "natural_crops": {"photographs", "scale"},
    "gaussian": {"patch_size", "lambda_min", "lambda_max", "lambdas", "decay", "coupling", "mean_scale"},
}


def _plain(cfg) -> dict:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return dict(OmegaConf.to_container(cfg, resolve=True))
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise TypeError(f"dataset config must be a mapping, got {type(cfg).__name__}")


def dataset_from_config(cfg) -> ImageSource:
    """Build the ImageSource described by the Hydra ``dataset`` group (a dict or DictConfig)."""
    cfg = _plain(cfg)
    name = cfg.get("name")
    if name not in SPECIFIC_KEYS:
        raise DatasetError(f"dataset.name={name!r} — choose one of {sorted(SPECIFIC_KEYS)}")
    unknown = sorted(set(cfg) - COMMON_KEYS - SPECIFIC_KEYS[name])
    if unknown:
        raise DatasetError(
            f"unknown key(s) {unknown} for dataset {name!r} — allowed: {sorted(COMMON_KEYS | SPECIFIC_KEYS[name])}"
        )

    def get(key, default=None):
        v = cfg.get(key)
        return default if v is None else v

    if name == "cifar10":
        if get("resolution", 32) != 32 or get("channels", 3) != 3:
            raise DatasetError(
                f"CIFAR-10 images are 32x32 RGB; got dataset.resolution={cfg.get('resolution')}, "
                f"dataset.channels={cfg.get('channels')} — set dataset.resolution=32, dataset.channels=3"
            )
        if cfg.get("root") is None:
            raise DatasetError(
                "dataset.root is not set — point it at the folder holding CIFAR-10 (env CIFAR10_ROOT)"
            )
        return Cifar10Source(
            root=cfg["root"],
            split=get("split", "train"),
            num_images=cfg.get("num_images"),
            version=get("version", "auto"),
            download=bool(get("download", False)),
        )
    if name == "celebahq":
        if get("download", False):
            raise DatasetError(
                "dataset.download=true is not supported for CelebA-HQ (no official single-file release with a "
                "checksum) — download the images yourself and set dataset.root to their folder."
            )
        if cfg.get("root") is None:
            raise DatasetError("dataset.root is not set — point it at the folder of CelebA-HQ images")
        return ImageFolderSource(
            root=cfg["root"],
            num_images=cfg.get("num_images"),
            resolution=get("resolution", 64),
            channels=get("channels", 3),
            resample=get("resample", "bicubic"),
            num_workers=get("num_workers", 2),
        )
    if name == "natural_crops":
        return NaturalCropsSource(
            num_images=get("num_images", 4096),
            resolution=get("resolution", 32),
            channels=get("channels", 3),
            seed=get("seed", 0),
            photographs=cfg.get("photographs"),
            scale=get("scale", (1.0, 4.0)),
        )
    r = get("resolution", 32)
    return GaussianSource(
        num_images=get("num_images", 4096),
        image_shape=(get("channels", 3), r, r),
        patch_size=get("patch_size", 8),
        lambda_min=get("lambda_min", 2.0),
        lambda_max=get("lambda_max", 40.0),
        lambdas=cfg.get("lambdas"),
        decay=get("decay", 1.0),
        coupling=get("coupling", 0.0),
        mean_scale=get("mean_scale", 0.0),
        seed=get("seed", 0),
    )
