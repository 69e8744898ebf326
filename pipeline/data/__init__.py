"""Image datasets behind one interface (ImageSource): float32 [C, H, W] images, streamed in chunks."""

from __future__ import annotations

from pipeline.schema import checked_node

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


def dataset_from_config(cfg) -> ImageSource:
    """Build the ImageSource described by a ``dataset`` node (a dict or DictConfig with every key of its kind).

    The node is checked against the config schema (pipeline.schema: its kind's keys, their types and ranges);
    the values come from the node alone (conf/dataset/*.yaml holds them).
    """
    ds = checked_node("dataset", cfg)
    name = ds["name"]
    if name == "cifar10":
        return Cifar10Source(
            root=ds["root"],
            split=ds["split"],
            num_images=ds["num_images"],
            version=ds["version"],
            download=ds["download"],
        )
    if name == "celebahq":
        return ImageFolderSource(
            root=ds["root"],
            num_images=ds["num_images"],
            resolution=ds["resolution"],
            channels=ds["channels"],
            resample=ds["resample"],
            num_workers=ds["num_workers"],
        )
    if name == "natural_crops":
        return NaturalCropsSource(
            num_images=ds["num_images"],
            resolution=ds["resolution"],
            channels=ds["channels"],
            seed=ds["seed"],
            photographs=ds["photographs"],
            scale=ds["scale"],
        )
    r = ds["resolution"]
    return GaussianSource(
        num_images=ds["num_images"],
        image_shape=(ds["channels"], r, r),
        patch_size=ds["patch_size"],
        lambda_min=ds["lambda_min"],
        lambda_max=ds["lambda_max"],
        lambdas=ds["lambdas"],
        decay=ds["decay"],
        coupling=ds["coupling"],
        mean_scale=ds["mean_scale"],
        seed=ds["seed"],
    )
