"""The jacobian stage's settings as typed values: the ``patch``, ``measure``, ``points`` and ``proxy`` groups
resolved once, when the stage's body is built; the measurement loop reads these, never the config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .measure import MeasureConfig
from .protocol import runs_proxy


def _ints(values: Any) -> tuple[int, ...] | Any:
    """A list of paper timesteps as a tuple of ints; None or a name ("representative", "all") as given."""
    return tuple(int(v) for v in values) if isinstance(values, (list, tuple)) else values


@dataclass(frozen=True)
class PointSelection:
    """Which trajectory points a run measures and how many seeds at once (``points``). Which shard of a split
    protocol it measures (points.shard, points.shards) is the run's place, carried by its run spec
    (pipeline.runkeys.shard_of), not a measurement setting."""

    steps: tuple[int, ...] | str | None
    max_seeds: int | None
    block_steps: tuple[int, ...] | str | None
    light_blocks: str
    seed_batch: int | str  # a positive integer or "auto" (from the device's free memory)

    @classmethod
    def from_config(cls, points: Mapping[str, Any]) -> PointSelection:
        """From a composed ``points`` node: every key is there (conf/config.yaml holds the values, the schema
        their types and ranges), so nothing here defaults one."""
        seed_batch = points["seed_batch"]
        return cls(
            steps=_ints(points["steps"]),
            max_seeds=None if points["max_seeds"] is None else int(points["max_seeds"]),
            block_steps=_ints(points["block_steps"]),
            light_blocks=str(points["light_blocks"]),
            seed_batch=seed_batch if seed_batch == "auto" else int(seed_batch),
        )


@dataclass(frozen=True)
class ProxySettings:
    """Table 10's diffusion-proxy measurement (``proxy``): images, paper timesteps, noise seed."""

    images: int
    timesteps: tuple[int, ...]
    seed: int

    @classmethod
    def from_config(cls, proxy: Mapping[str, Any]) -> ProxySettings:
        """From a composed ``proxy`` node (every key there; no default here)."""
        return cls(images=int(proxy["images"]), timesteps=_ints(proxy["timesteps"]), seed=int(proxy["seed"]))


@dataclass(frozen=True)
class MeasurementSettings:
    """Everything the measurement loop is configured by: the patch size P, the estimators (``measure``;
    chunk_size may still be "auto"), the points and Table 10's proxy."""

    patch_size: int
    measure: MeasureConfig
    points: PointSelection
    proxy: ProxySettings

    def proxy_images(self, shard: int) -> int:
        """How many images Table 10's proxy measures in shard ``shard`` of the run: proxy.images where the
        proxy runs (for Table 10, or every table when measure.tables is unset) and, of a split protocol, in
        shard 0 alone (it is not a point measurement); else 0."""
        return self.proxy.images if shard == 0 and runs_proxy(self.measure.tables) else 0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> MeasurementSettings:
        return cls(
            patch_size=int(cfg["patch"]["size"]),
            measure=MeasureConfig.from_dict(cfg["measure"]),
            points=PointSelection.from_config(cfg["points"]),
            proxy=ProxySettings.from_config(cfg["proxy"]),
        )
