"""The jacobian stage's job from a prepared config: measure (the upstream folders, the model and its
chain, the proxy images, the typed measurement settings) or pool a split protocol's shards."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.jacobian.pool import PROXY_INPUT
from pipeline.jacobian.run_settings import MeasurementSettings
from pipeline.lineage import InputSpec
from pipeline.outputs import CovarianceFolder, TrajectoriesFolder
from pipeline.runkeys import POOL, RunSpec, chain_specs, run_spec, unsharded
from pipeline.runs import verified_upstream

from .models import build_model
from .shards import jacobian_shards
from .sources import dataset, dataset_inputs
from .upstream import check_not_stale, trajectories_with_all_seeds


@dataclass
class JacobianSetup:
    """Everything the jacobian stage measures with, assembled from the config before any work."""

    run: RunSpec
    settings: MeasurementSettings
    covariance: CovarianceFolder
    trajectories: TrajectoriesFolder
    model: Any
    chain: Any
    inputs: dict[str, InputSpec]
    proxy_source: Any = None  # the first proxy.images images of the dataset (Table 10), when on


def jacobian_setup(cfg: Mapping[str, Any], specs: Mapping[str, RunSpec]) -> JacobianSetup:
    """Upstream folders (each verified once), the model and its chain, the typed measurement settings, the
    proxy images and the inputs to hash, for the jacobian run of ``specs`` (chain_specs: this run's and its
    upstream stages')."""
    settings = MeasurementSettings.from_config(cfg)
    upstream = {s: verified_upstream(specs[s], needed_by="jacobian") for s in ("covariance", "trajectories")}
    check_not_stale(upstream, "jacobian")
    cov = CovarianceFolder(upstream["covariance"][0])
    traj = trajectories_with_all_seeds(upstream["trajectories"][0], cfg)
    built = build_model(cfg, needed_by="jacobian", covariance=cov)
    n_proxy = settings.proxy_images(specs["jacobian"].shard)
    proxy = dataset(cfg, num_images=n_proxy) if n_proxy else None
    # the proxy's images are read by this run: their files are its inputs as much as the upstream folders
    files = dataset_inputs(proxy).get("dataset") if proxy is not None else None
    proxy_inputs = {PROXY_INPUT: files} if files else {}
    return JacobianSetup(
        run=specs["jacobian"],
        settings=settings,
        covariance=cov,
        trajectories=traj,
        model=built.model,
        chain=built.chain,
        inputs={**built.inputs, **proxy_inputs, "covariance": cov.path, "trajectories": traj.path},
        proxy_source=proxy,
    )


@dataclass
class PoolSetup:
    """A split protocol's finished shards and the unsplit run they pool into (points.shard=pool)."""

    run: RunSpec
    shards: list[Path]
    inputs: dict[str, InputSpec]


def pool_setup(cfg: Mapping[str, Any], specs: Mapping[str, RunSpec] | None = None) -> PoolSetup:
    """The shards of this config's protocol and the upstream folders they measured (each verified as an
    upstream), and the unsplit run's spec; ``specs``: chain_specs("jacobian", cfg) where already resolved."""
    specs = specs or chain_specs("jacobian", cfg)
    found, upstream = jacobian_shards(cfg, "pooling", specs)
    shards = [s.path for s in found]
    inputs: dict[str, InputSpec] = {f"shard-{i}": p for i, p in enumerate(shards)}
    inputs.update(upstream)
    return PoolSetup(run_spec("jacobian", unsharded(cfg)), shards, inputs)


def jacobian_job(cfg: Mapping[str, Any]) -> JacobianSetup | PoolSetup:
    """What one jacobian run does under ``cfg``: pool a split protocol's shards (points.shard=pool), or
    measure."""
    specs = chain_specs("jacobian", cfg)
    return pool_setup(cfg, specs) if specs["jacobian"].shard == POOL else jacobian_setup(cfg, specs)
