"""The jacobian stage's settings as typed values: the ``patch``, ``measure``, ``points`` and ``proxy`` groups
resolved once, when the stage's body is built; the measurement loop reads these, never the config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.schema import POOL

from .measure import MeasureConfig


def _ints(values: Any) -> tuple[int, ...] | Any:
    """A list of paper timesteps as a tuple of ints; None or a name ("representative", "all") as given."""
    return tuple(int(v) for v in values) if isinstance(values, (list, tuple)) else values


@dataclass(frozen=True)
class PointSelection:
    """Which trajectory points a run measures, how many seeds at once, and which shard (``points``)."""

    steps: tuple[int, ...] | str | None = None
    max_seeds: int | None = None
    block_steps: tuple[int, ...] | str | None = None
    light_blocks: str = "diag"
    seed_batch: int | str = 1  # a positive integer or "auto" (from the device's free memory)
    shards: int = 1
    shard: int | str = 0  # 0 .. shards-1, or pool

    @classmethod
    def from_config(cls, points: Mapping[str, Any] | None) -> PointSelection:
        points = points or {}
        seed_batch = points.get("seed_batch", 1)
        return cls(
            steps=_ints(points.get("steps")),
            max_seeds=None if points.get("max_seeds") is None else int(points["max_seeds"]),
            block_steps=_ints(points.get("block_steps")),
            light_blocks=str(points.get("light_blocks", "diag")),
            seed_batch=seed_batch if seed_batch == "auto" else int(seed_batch or 1),
            shards=int(points.get("shards") or 1),
            shard=POOL if points.get("shard") == POOL else int(points.get("shard") or 0),
        )


@dataclass(frozen=True)
class ProxySettings:
    """Table 10's diffusion-proxy measurement (``proxy``): images, paper timesteps, noise seed."""

    images: int = 0
    timesteps: tuple[int, ...] = ()
    seed: int = 0

    @classmethod
    def from_config(cls, proxy: Mapping[str, Any] | None) -> ProxySettings:
        proxy = proxy or {}
        return cls(
            images=int(proxy.get("images") or 0),
            timesteps=_ints(proxy.get("timesteps") or ()),
            seed=int(proxy.get("seed") or 0),
        )


@dataclass(frozen=True)
class MeasurementSettings:
    """Everything the measurement loop is configured by: the patch size P, the estimators (``measure``;
    chunk_size may still be "auto"), the points and Table 10's proxy."""

    patch_size: int
    measure: MeasureConfig
    points: PointSelection
    proxy: ProxySettings

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> MeasurementSettings:
        return cls(
            patch_size=int(cfg["patch"]["size"]),
            measure=MeasureConfig.from_dict(cfg["measure"]),
            points=PointSelection.from_config(cfg.get("points")),
            proxy=ProxySettings.from_config(cfg.get("proxy")),
        )
