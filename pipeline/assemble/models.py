"""The configured noise predictor ε̂(x, t) and its sampler chain: the one place that turns model.kind into a
model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.lineage import InputSpec
from pipeline.outputs import META, CovarianceFolder
from pipeline.runkeys import TRAIN_STAGE, run_spec
from pipeline.runs import finished_record, upstream_dir

from .sources import image_shape

MODEL_KINDS = ("gaussian_oracle", "unet")


def covariance_folder(cfg: Mapping[str, Any], needed_by: str) -> CovarianceFolder:
    """The covariance stage's finished, unaltered folder for this config (verified once per run)."""
    return CovarianceFolder(upstream_dir(run_spec("covariance", cfg), needed_by))


@dataclass
class BuiltModel:
    """The configured noise predictor ε̂(x, t), its sampler chain, and the inputs its numbers come from."""

    model: Any
    chain: Any  # pipeline.geometry.Chain on the model's ᾱ_t
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    covariance: CovarianceFolder | None = None  # the folder a Gaussian oracle is fitted from


def build_model(
    cfg: Mapping[str, Any], needed_by: str, covariance: CovarianceFolder | None = None
) -> BuiltModel:
    """The configured noise predictor and its sampler chain; fails before any work on a bad path, an offline
    hub id, or a model/data shape mismatch. A Gaussian oracle is fitted from ``covariance`` (resolved when
    None). The one place that turns model.kind into a model, and the schedule and sampler groups into a
    chain: on the model's own ᾱ_t (a checkpoint's scheduler config, the oracle's schedule) where it has one,
    else on the configured schedule."""
    # torch, scipy (pipeline.models, .geometry) only when a model is built: importing a stage stays light
    from pipeline.geometry import sampling_from_config, schedule_from_alpha_bar
    from pipeline.models import gaussian_oracle_from_fit, load_unet
    from pipeline.models.base import resolve_device

    mcfg = cfg["model"]
    kind = mcfg["kind"]
    if kind not in MODEL_KINDS:
        raise ConfigError(f"model.kind={kind!r} is not known — use one of {', '.join(MODEL_KINDS)}")
    sampling = sampling_from_config(cfg["schedule"], cfg["sampler"])
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
            schedule=sampling.schedule,
            **common,
        )
        # the oracle is the P-independent fit alone: a patch-size change of the covariance stage leaves it
        inputs: dict[str, InputSpec] = {"model": cov.gaussian_fit}
    else:
        cov = None
        model = load_unet(
            mcfg["path"],
            allow_resolution_change=bool(mcfg["allow_resolution_change"]),
            local_files_only=mcfg["local_files_only"],
            revision=mcfg["revision"],
            # the schedule group is used only by checkpoints without a scheduler config of their own
            schedule=sampling.schedule,
            **common,
        )
        inputs = dict(model.input_files())
        folder = inputs.get("model")
        if isinstance(folder, Path) and (folder / META).is_file():
            # a train stage's folder: its record vouches for the weights only while they are the ones it hashed
            fix = "retrain it (python -m stages.train) or point model.path at an unaltered copy"
            finished_record(folder, TRAIN_STAGE, needed_by, fix)
    if getattr(model, "alpha_bar", None) is not None:
        schedule = schedule_from_alpha_bar(model.alpha_bar, name=str(mcfg["name"]))
    else:
        schedule = sampling.schedule
    return BuiltModel(model, sampling.sampler.chain(schedule), inputs, cov)
