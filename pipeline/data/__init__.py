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
    "dataset_from_checked",
    "download_cifar10",
    "uint8_to_unit",
]


def dataset_from_config(cfg) -> ImageSource:
    """Build the ImageSource described by a ``dataset`` node (a dict or DictConfig with every key of its kind).

    The node is checked against the config schema (pipeline.schema: its kind's keys, their types and ranges);
    the values come from the node alone (conf/dataset/*.yaml holds them).
    """
    return dataset_from_checked(checked_node("dataset", cfg))


def dataset_from_checked(ds: dict) -> ImageSource:
    """The ImageSource of a ``dataset`` node the schema has already checked (a prepared stage config's, whose
    whole config pipeline.settings.prepare_config checked once): built without checking it a second time."""
    source, keys = _SOURCES[ds["name"]]
    if source is GaussianSource:
        r = ds["resolution"]
        return GaussianSource(image_shape=(ds["channels"], r, r), **{k: ds[k] for k in keys})
    return source(**{k: ds[k] for k in keys})


# dataset name -> its source and the node's keys its constructor takes under the same names
_SOURCES: dict[str, tuple[type[ImageSource], tuple[str, ...]]] = {
    "cifar10": (Cifar10Source, ("root", "split", "num_images", "version", "download")),
    "celebahq": (
        ImageFolderSource,
        ("root", "num_images", "resolution", "channels", "resample", "num_workers"),
    ),
    "natural_crops": (
        NaturalCropsSource,
        ("num_images", "resolution", "channels", "seed", "photographs", "scale"),
    ),
    "gaussian": (
        GaussianSource,
        (
            "num_images",
            "patch_size",
            "lambda_min",
            "lambda_max",
            "lambdas",
            "decay",
            "coupling",
            "mean_scale",
            "seed",
        ),
    ),
}
