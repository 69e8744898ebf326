"""The configured image source, its input files, its image shape and the run's trajectory seeds."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.lineage import InputSpec


def seeds_of(cfg: Mapping[str, Any]) -> list[int]:
    """The trajectory seeds of a run: seed, seed+1, ..., seed+num_seeds-1."""
    return [int(cfg["seed"]) + i for i in range(int(cfg["num_seeds"]))]


def image_shape(cfg: Mapping[str, Any]) -> tuple[int, int, int]:
    """(channels, resolution, resolution) of the configured dataset: the shape the model sees."""
    data = cfg["dataset"]
    return (int(data["channels"]), int(data["resolution"]), int(data["resolution"]))


def dataset(cfg: Mapping[str, Any], **changes: Any):
    """The configured image source of a prepared config (``changes`` override dataset keys, e.g. num_images)."""
    # PIL (via pipeline.data) only when a dataset is built: importing a stage stays light
    from pipeline.data import dataset_from_checked

    node = cfg["dataset"]
    unknown = sorted(set(changes) - set(node))
    if unknown:  # a caller's slip, not a user's: the dataset node has no such key to change
        raise TypeError(f"dataset() got keys the {node['name']} dataset node does not have: {unknown}")
    # prepare_config checked the node against the schema once; a change is a value derived from a checked one
    return dataset_from_checked({**node, **changes})


def dataset_inputs(source) -> dict[str, InputSpec]:
    """The files a dataset source reads (hashed into meta.json); none for generated sources."""
    files = source.input_files()
    return {"dataset": [Path(f) for f in files]} if files else {}
