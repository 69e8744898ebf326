"""Config → objects, in one place: the dataset, the model, the sampler chain, the seeds, each upstream
folder (resolved and verified once) and the inputs whose content a stage's outputs depend on.

Stages call these and hand the objects, with the run spec (pipeline.runkeys.RunSpec), to
pipeline.runs.run_stage; nothing here writes outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, InputMissingError, PipelineError
from pipeline.lineage import InputSpec, input_record, stale_problem
from pipeline.outputs import META, CovarianceFolder, JacobianFolder, TrajectoriesFolder, read_meta
from pipeline.runkeys import (
    POOL,
    STAGES,
    RunSpec,
    chain_specs,
    run_spec,
    shard_of,
    stage_dir,
    unsharded,
    with_shard,
)
from pipeline.runs import upstream_dir, verified_upstream

MODEL_KINDS = ("gaussian_oracle", "unet")


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


def check_not_stale(folders: Mapping[str, tuple[Path, Mapping[str, Any]]], needed_by: str) -> None:
    """Refuse upstream folders that were made from other outputs than the ones beside them now
    (a covariance recomputed after the trajectories or the jacobian ran)."""
    problem = stale_problem(folders, needed_by)
    if problem is not None:
        raise PipelineError(problem)


def covariance_folder(cfg: Mapping[str, Any], needed_by: str) -> CovarianceFolder:
    """The covariance stage's finished, unaltered folder for this config (verified once per run)."""
    return CovarianceFolder(upstream_dir(run_spec("covariance", cfg), needed_by))


def _with_all_seeds(folder: TrajectoriesFolder, cfg: Mapping[str, Any]) -> TrajectoriesFolder:
    # a finished folder missing a seed would be measured on fewer seeds without a word
    missing = folder.missing_seeds(seeds_of(cfg))
    if missing:
        raise InputMissingError(
            f"{folder.path} lacks the trajectories of seed(s) {missing} — rerun the trajectories stage with force=true"
        )
    return folder


def analysis_upstream(cfg: Mapping[str, Any]) -> dict[str, Path | None]:
    """The upstream folders the analysis reads: each one that exists verified once (its record, its
    files, the config keys it was made under), and all made from one another's current outputs."""
    found = {}
    for stage, spec in chain_specs("jacobian", cfg).items():
        # a folder whose meta.json is unreadable is refused, never read as absent
        if spec.final.is_dir() and any(spec.final.iterdir()):
            found[stage] = verified_upstream(spec, needed_by="analysis")
    check_not_stale(found, "analysis")
    return {stage: found[stage][0] if stage in found else None for stage in STAGES[:-1]}


@dataclass
class BuiltModel:
    """The configured noise predictor ε̂(x, t) with the inputs its numbers come from."""

    model: Any
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    covariance: CovarianceFolder | None = None  # the folder a Gaussian oracle is fitted from


def build_model(
    cfg: Mapping[str, Any], needed_by: str, covariance: CovarianceFolder | None = None
) -> BuiltModel:
    """The configured noise predictor; fails before any work on a bad path, an offline hub id, or a
    model/data shape mismatch. A Gaussian oracle is fitted from ``covariance`` (resolved when None).
    The one place that turns model.kind into a model."""
    # torch, scipy (pipeline.models, .geometry) only when a model is built: importing a stage stays light
    from pipeline.geometry import schedule_from_config
    from pipeline.models import gaussian_oracle_from_fit, load_unet
    from pipeline.models.base import resolve_device

    mcfg = cfg["model"]
    kind = mcfg["kind"]
    common = dict(image_shape=image_shape(cfg), dtype=mcfg["dtype"], device=resolve_device(cfg["device"]))
    if kind == "gaussian_oracle":
        cov = covariance or covariance_folder(cfg, needed_by)
        if not cov.has_gaussian_fit():
            raise ConfigError(
                f"model=gaussian_oracle needs the full Gaussian fit {cov.gaussian_fit} — "
                "rerun the covariance stage with covariance.full_cov=true"
            )
        model = gaussian_oracle_from_fit(
            cov.gaussian_fit,
            structure=mcfg["structure"],
            block_size=mcfg["block_size"],
            schedule=schedule_from_config(cfg["schedule"]),
            **common,
        )
        # the oracle is the P-independent fit alone: a patch-size change of the covariance stage leaves it
        return BuiltModel(model, {"model": cov.gaussian_fit}, cov)
    if kind == "unet":
        model = load_unet(
            mcfg["path"],
            allow_resolution_change=bool(mcfg["allow_resolution_change"]),
            local_files_only=mcfg["local_files_only"],
            revision=mcfg["revision"],
            # the schedule group is used only by checkpoints without a scheduler config of their own
            schedule=schedule_from_config(cfg["schedule"]) if cfg.get("schedule") else None,
            **common,
        )
        return BuiltModel(model, dict(model.input_files()))
    raise ConfigError(f"model.kind={kind!r} is not known — use one of {', '.join(MODEL_KINDS)}")


def build_chain(cfg: Mapping[str, Any], model):
    """The sampler chain on the model's own ᾱ_t (its scheduler config) or the configured schedule."""
    # scipy (via pipeline.geometry) only when a chain is built: importing a stage stays light
    from pipeline.geometry import chain_from_config, schedule_from_alpha_bar, schedule_from_config

    if getattr(model, "alpha_bar", None) is not None:
        schedule = schedule_from_alpha_bar(model.alpha_bar, name=str(cfg["model"]["name"]))
    else:
        schedule = schedule_from_config(cfg["schedule"])
    return chain_from_config(schedule, cfg["sampler"])


@dataclass
class JacobianSetup:
    """Everything the jacobian stage measures with, assembled from the config before any work."""

    run: RunSpec
    covariance: CovarianceFolder
    trajectories: TrajectoriesFolder
    model: Any
    chain: Any
    inputs: dict[str, InputSpec]
    proxy_source: Any = None  # the first proxy.images images of the dataset (Table 10), when on


def jacobian_setup(cfg: Mapping[str, Any], specs: Mapping[str, RunSpec], settings: Any) -> JacobianSetup:
    """Upstream folders (each verified once), the model and its chain, the proxy images, the inputs to hash,
    for the jacobian run of ``specs`` (chain_specs: this run's and its upstream stages') measuring with
    ``settings`` (pipeline.jacobian.run_settings.MeasurementSettings; typed Any so that the other stages'
    import closures stay free of the jacobian package)."""
    upstream = {s: verified_upstream(specs[s], needed_by="jacobian") for s in ("covariance", "trajectories")}
    check_not_stale(upstream, "jacobian")
    cov = CovarianceFolder(upstream["covariance"][0])
    traj = _with_all_seeds(TrajectoriesFolder(upstream["trajectories"][0]), cfg)
    built = build_model(cfg, needed_by="jacobian", covariance=cov)
    n_proxy = settings.proxy_images(specs["jacobian"].shard)
    return JacobianSetup(
        run=specs["jacobian"],
        covariance=cov,
        trajectories=traj,
        model=built.model,
        chain=build_chain(cfg, built.model),
        inputs={**built.inputs, "covariance": cov.path, "trajectories": traj.path},
        proxy_source=dataset(cfg, num_images=n_proxy) if n_proxy else None,
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


def jacobian_job(cfg: Mapping[str, Any], settings: Any) -> JacobianSetup | PoolSetup:
    """What one jacobian run does under ``cfg``: pool a split protocol's shards (points.shard=pool), or measure
    with ``settings`` (the run's MeasurementSettings)."""
    specs = chain_specs("jacobian", cfg)
    return pool_setup(cfg, specs) if specs["jacobian"].shard == POOL else jacobian_setup(cfg, specs, settings)


def unfinished_shards(cfg: Mapping[str, Any]) -> list[int]:
    """The shards of this config's split protocol (points.shards) whose jacobian folder is not finished."""
    _, shards = shard_of(cfg)
    folders = [stage_dir("jacobian", with_shard(cfg, i, shards)) for i in range(shards)]
    return [i for i, f in enumerate(folders) if not (f / META).is_file()]


def jacobian_shards(
    cfg: Mapping[str, Any], needed_by: str, specs: Mapping[str, RunSpec]
) -> tuple[list[JacobianFolder], dict[str, Path]]:
    """The finished, unaltered folders of every jacobian shard of this config's protocol (points.shards),
    each verified as an upstream, and the covariance and trajectories folders (``specs``', verified) that
    every one of them measured; a missing shard is one line naming it."""
    _, shards = shard_of(cfg)
    missing = unfinished_shards(cfg)
    if missing:
        listed = ",".join(map(str, missing))
        raise InputMissingError(
            f"{needed_by} needs all {shards} jacobian shards of this protocol, but shard(s) {listed} are not "
            f"finished — run them: python -m stages.jacobian -m <the same overrides> points.shard={listed}"
        )
    found = [
        JacobianFolder(upstream_dir(run_spec("jacobian", with_shard(cfg, i, shards)), needed_by))
        for i in range(shards)
    ]
    # every shard measured the trajectories and covariance this config reads now (not an older run's)
    upstream = {
        "covariance": upstream_dir(specs["covariance"], needed_by),
        "trajectories": _with_all_seeds(
            TrajectoriesFolder(upstream_dir(specs["trajectories"], needed_by)), cfg
        ).path,
    }
    for name, path in upstream.items():
        now = input_record(path)["sha256"]
        for i, folder in enumerate(found):
            held = ((folder.read_meta() or {}).get("input_hashes") or {}).get(name) or {}
            if held.get("sha256") != now:
                raise PipelineError(
                    f"jacobian shard {i} ({folder.path}) was measured on other {name} than {path} "
                    f"holds now — rerun the shards with force=true: python -m stages.jacobian -m "
                    f"points.shards={shards} points.shard={','.join(map(str, range(shards)))} force=true"
                )
    return found, upstream


def pooled_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The unsplit config of a split protocol, whose jacobian folder holds its pooled shards; one line naming
    the unfinished shards, or the pooling command, when that folder does not exist yet."""
    whole = unsharded(cfg)
    if (stage_dir("jacobian", whole) / META).is_file():
        return whole
    _, shards = shard_of(cfg)
    todo = unfinished_shards(cfg)
    if todo:
        listed = ",".join(map(str, todo))
        fix = f"run them: python -m stages.jacobian -m <the same overrides> points.shard={listed} (the last pools them)"
        raise InputMissingError(f"analysis: jacobian shard(s) {listed} of {shards} are not finished — {fix}")
    raise InputMissingError(
        f"analysis: the {shards} jacobian shards are finished but not pooled into {stage_dir('jacobian', whole)} "
        f"— pool them: python -m stages.jacobian <the same overrides> points.shard={POOL}"
    )


@dataclass
class AnalysisSetup:
    """What the analysis reads: the config of the run it reports on (a split protocol's pooled run), the
    upstream folders that exist (each verified once), and its own run spec."""

    run: RunSpec
    cfg: Mapping[str, Any]
    upstream: dict[str, Path | None]
    inputs: dict[str, InputSpec]


def analysis_job(cfg: Mapping[str, Any]) -> AnalysisSetup:
    """The analysis of ``cfg``'s run (of a split protocol: its pooled run); every analysis.compare folder must
    be a finished jacobian run."""
    if shard_of(cfg)[1] > 1:
        cfg = pooled_config(cfg)
    for folder in cfg["analysis"]["compare"]:
        if read_meta(Path(folder)) is None:
            raise ConfigError(
                f"analysis.compare lists {folder}, which is not a finished jacobian run folder — "
                "list outputs/jacobian/ for the run keys and fix analysis.compare"
            )
    upstream = analysis_upstream(cfg)
    inputs: dict[str, InputSpec] = {k: v for k, v in upstream.items() if v is not None}
    return AnalysisSetup(run_spec("analysis", cfg), cfg, upstream, inputs)
