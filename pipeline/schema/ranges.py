"""The range of every typed value (RANGES, per key, applied where the key exists) and the rules across keys
(RULES): checked once, before any stage starts, each failure one line naming the key and the fix."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.errors import ConfigError

from .nodes import show

# ----------------------------------------------------------------------------------------------------
# ranges: what a typed value may be, per key (applied where the key exists), then the rules across keys


@dataclass(frozen=True)
class Range:
    ok: Callable[[Any], bool]
    fix: str  # the fix, with {key} for the key's name


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def at_least(n: int, *, null: str = "") -> Range:
    """An integer >= n (``null``: also null, meaning what the string says)."""
    return Range(
        lambda v: (bool(null) and v is None) or (_int(v) and v >= n),
        f"set {{key}} to an integer of at least {n}" + (f", or null ({null})" if null else ""),
    )


def above(x: float, *, null: str = "", upto: float | None = None) -> Range:
    """A number > x (and <= upto)."""
    bound = f" and at most {upto}" if upto is not None else ""
    return Range(
        lambda v: (bool(null) and v is None) or (_num(v) and v > x and (upto is None or v <= upto)),
        f"set {{key}} to a number above {x}{bound}" + (f", or null ({null})" if null else ""),
    )


def within(lo: float, hi: float) -> Range:
    """A number in [lo, hi)."""
    return Range(lambda v: _num(v) and lo <= v < hi, f"set {{key}} to a number in [{lo}, {hi})")


def one_of(*values: Any) -> Range:
    shown = [show(v) for v in values]
    choice = " or ".join(shown) if len(shown) == 2 else "one of " + ", ".join(shown)
    return Range(lambda v: v in values, f"use {choice}")


def each(r: Range, *, null: str = "", empty: bool = False) -> Range:
    """A list whose every item satisfies ``r``."""
    return Range(
        lambda v: (
            (bool(null) and v is None)
            or (isinstance(v, list) and (empty or bool(v)) and all(r.ok(x) for x in v))
        ),
        f"give {{key}} as a {'' if empty else 'non-empty '}list whose items satisfy: {r.fix.replace('{key}', 'each')}"
        + (f"; or null ({null})" if null else ""),
    )


# points.shard=pool: the pooled shards of a split protocol (pipeline.runkeys names their folder)
POOL = "pool"
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
RANGES: dict[str, Range] = {
    # first: model.block_size and dataset.patch_size default to ${patch.size}, so its value is named as it is
    "patch.size": Range(
        lambda v: _int(v) and v >= 1, "set {key} to a positive integer that divides the image size"
    ),
    "seed": at_least(0),
    "num_seeds": at_least(1),
    "device": Range(lambda v: bool(DEVICE.fullmatch(str(v))), "use auto, cpu, cuda, cuda:<index> or mps"),
    "torch_threads": at_least(1, null="torch's default"),
    "covariance.chunk_size": at_least(1),
    "trajectories.batch_size": at_least(1),
    "trajectories.update": one_of("exact", "diffusers_float32"),
    "points.steps": each(at_least(1), null="every step"),
    "points.max_seeds": at_least(1, null="every seed"),
    "points.block_steps": each(at_least(1), null="every measured step", empty=True),  # [] = blocks nowhere
    "points.light_blocks": one_of("diag", "off"),
    "points.seed_batch": Range(
        lambda v: v == "auto" or (_int(v) and v >= 1),
        "set {key} to a positive number of seeds measured together (1 = one point at a time), or auto",
    ),
    "points.shards": Range(
        lambda v: _int(v) and v >= 1,
        "set {key} to the number of jobs the protocol's points are split over (1 = one run measures them all)",
    ),
    "proxy.images": at_least(0),
    "proxy.timesteps": each(at_least(1), empty=True),
    "proxy.seed": at_least(0),
    "dataset.num_images": at_least(1, null="the whole dataset"),
    "dataset.resolution": at_least(1),
    "dataset.channels": Range(lambda v: v in (1, 3), "use 3 (RGB) or 1 (grayscale)"),
    "dataset.seed": at_least(0),
    "dataset.split": one_of("train", "test", None),
    "dataset.version": one_of("auto", "binary", "python"),
    "dataset.resample": one_of("bicubic", "lanczos", "bilinear", "box"),
    "dataset.num_workers": at_least(1),
    "dataset.scale": Range(
        lambda v: len(v) == 2 and 0 < v[0] <= v[1], "set {key} to [min, max] with 0 < min <= max"
    ),
    "dataset.photographs": each(Range(lambda v: bool(v), "a photograph name")),
    "dataset.patch_size": at_least(1),
    "dataset.lambda_min": above(0),
    "dataset.lambda_max": above(0),
    "dataset.lambdas": each(above(0), null="spread over [lambda_min, lambda_max]"),
    "dataset.decay": Range(lambda v: v >= 0, "set {key} to a number >= 0"),
    "dataset.coupling": within(0, 1),
    "dataset.mean_scale": Range(lambda v: v >= 0, "set {key} to a number >= 0"),
    "model.dtype": one_of("float32", "float64"),
    "model.structure": one_of("block_diagonal", "full"),
    "model.block_size": at_least(1),
    "schedule.num_train_timesteps": at_least(2),
    "schedule.beta_start": above(0, upto=1),
    "schedule.beta_end": above(0, upto=1),
    "schedule.s_off": Range(lambda v: v >= 0, "set {key} to a number >= 0"),
    "schedule.max_beta": above(0, upto=1, null="no clipping"),
    "sampler.num_steps": at_least(1, null="the full chain"),
    "sampler.steps_offset": at_least(0),
    "sampler.stride": at_least(1),
    "sampler.start": at_least(1, null="T"),
    "sampler.final_alpha_bar": above(0, upto=1),
    "measure.power_iters": at_least(1),
    "measure.lanczos_iters": at_least(1, null="measure.power_iters"),
    "measure.rayleigh_via": one_of("vjp", "jvp"),
    "measure.blocks": one_of("auto", "dense", "power", "lanczos", "diag", "off"),
    "measure.block_power_iters": at_least(1),
    "measure.frob_probes": at_least(0),
    "measure.frob_method": one_of("hutchinson", "hutchpp"),
    "measure.frob_sketch": at_least(1),
    "measure.tables": each(Range(lambda v: bool(v), "a table name"), null="the switches as set"),
    "measure.dense_max_n": at_least(1),
    "measure.dense_global_max_n": at_least(0),
    "measure.chunk_size": Range(
        lambda v: v is None or v == "auto" or (_int(v) and v >= 1),
        "set {key} to a positive number of vectors per vmapped call, auto (from free device memory), "
        "or null (all at once)",
    ),
    "measure.jvp_method": one_of("auto", "linearize", "double_vjp", "forward"),
    "measure.cost_vjp": above(0),
    "measure.cost_jvp_double_vjp": above(0),
    "measure.cost_jvp_linearized": above(0),
    "measure.cost_linearize_trace": above(0),
    "tracking.experiment": Range(lambda v: bool(str(v).strip()), "set {key} to an experiment name"),
    "paths.outputs": Range(lambda v: bool(str(v).strip()), "set {key} to a folder"),
    "train.threads": at_least(1),
    "train.steps": at_least(1),
    "train.batch_size": at_least(1),
    "train.lr": above(0),
    "train.warmup_steps": at_least(0),
    "train.weight_decay": Range(lambda v: v >= 0, "set {key} to a number >= 0"),
    "train.grad_clip": Range(lambda v: v >= 0, "set {key} to a number >= 0 (0 = no clipping)"),
    "train.ema_decay": within(0, 1),
    "train.min_snr_gamma": above(0, null="plain DSM"),
    "train.prediction_type": one_of("epsilon", "v_prediction", "sample"),
    "train.mu_reg": Range(lambda v: v >= 0, "set {key} to a number >= 0 (0 turns the collage term off)"),
    "train.reg_probes": at_least(1),
    "train.reg_scheme": one_of("partition", "patch"),
    "train.reg_batch": at_least(1, null="the whole batch"),
    "train.patch_size": at_least(1),
    "train.seed": at_least(0),
    "train.checkpoint_every": at_least(1),
    "train.log_every": at_least(1),
    "train.max_wall_s": above(0, null="no limit"),
    "train.stop_at": at_least(1, null="at train.steps"),
    "train.block_out_channels": each(at_least(1)),
    "train.layers_per_block": at_least(1),
    "train.attention_head_dim": at_least(1),
    "train.norm_num_groups": at_least(1),
    "train.eval_images": at_least(1),
    "train.eval_timesteps": each(at_least(1)),
    "train.sample_count": at_least(1),
    "train.sample_steps": at_least(1),
}


def _get(cfg: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def check_ranges(cfg: Mapping[str, Any]) -> None:
    """Refuse the first value outside its range (RANGES), then the first broken rule across keys (RULES)."""
    for key, rng in RANGES.items():
        present, value = _get(cfg, key)
        if present and not rng.ok(value):
            raise ConfigError(f"{key}={show(value)} — {rng.fix.format(key=key)}")
    for rule in RULES:
        problem = rule(cfg) if all(isinstance(cfg.get(s), Mapping) for s in _NEEDS[rule]) else None
        if problem:
            raise ConfigError(problem)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _patch_divides(cfg: Mapping[str, Any]) -> str | None:
    res, p = cfg["dataset"]["resolution"], cfg["patch"]["size"]
    if p <= 0 or res % p:
        return (
            f"patch.size={p} does not divide the image size {res}x{res} (dataset.resolution={res}) — "
            f"choose patch.size from {_divisors(res)}"
        )
    return None


def _blocks_divide(cfg: Mapping[str, Any]) -> str | None:
    res = cfg["dataset"]["resolution"]
    for key, node in (("model.block_size", cfg["model"]), ("dataset.patch_size", cfg["dataset"])):
        size = node.get(key.split(".")[1])
        if size is not None and res % size:
            return (
                f"{key}={size} does not divide the image size {res} — set {key} to a divisor of {res} "
                f"({_divisors(res)}; usually equal to patch.size)"
            )
    return None


def _dataset_rules(cfg: Mapping[str, Any]) -> str | None:
    ds = cfg["dataset"]
    if ds["name"] == "cifar10" and (ds["resolution"], ds["channels"]) != (32, 3):
        return (
            f"CIFAR-10 images are 32x32 RGB; got dataset.resolution={ds['resolution']}, "
            f"dataset.channels={ds['channels']} — set dataset.resolution=32, dataset.channels=3"
        )
    if ds["name"] == "celebahq" and ds["download"]:
        return (
            "dataset.download=true is not supported for CelebA-HQ (no official single-file release with a "
            "checksum) — download the images yourself and set dataset.root to their folder"
        )
    if ds["name"] == "gaussian" and ds["lambda_min"] > ds["lambda_max"]:
        return f"dataset.lambda_min={ds['lambda_min']} > dataset.lambda_max={ds['lambda_max']} — swap them"
    return None


def _model_rules(cfg: Mapping[str, Any]) -> str | None:
    model = cfg["model"]
    if model["kind"] == "unet" and not model["path"]:
        return "model kind=unet needs model.path — set it to a local checkpoint folder or a hub id"
    return None


def _schedule_rules(cfg: Mapping[str, Any]) -> str | None:
    s = cfg["schedule"]
    if s["kind"] == "linear" and s["beta_start"] > s["beta_end"]:
        return f"schedule.beta_start={s['beta_start']} > schedule.beta_end={s['beta_end']} — swap them"
    return None


def _points_rules(cfg: Mapping[str, Any]) -> str | None:
    points = cfg["points"]
    if points["steps"] is not None and points["block_steps"] is not None:
        extra = sorted(set(points["block_steps"]) - set(points["steps"]))
        if extra:
            return (
                f"points.block_steps lists t={extra}, which points.steps does not measure — "
                "add them to points.steps or drop them from points.block_steps"
            )
    return None


def _proxy_rules(cfg: Mapping[str, Any]) -> str | None:
    """The eq. 65 proxy's timesteps are the paper's t in 1..T (T = schedule.num_train_timesteps)."""
    T = cfg["schedule"]["num_train_timesteps"]
    beyond = sorted(t for t in cfg["proxy"]["timesteps"] if t > T)
    if beyond:
        return (
            f"proxy.timesteps lists t={beyond}, beyond the schedule's T={T} (schedule.num_train_timesteps) — "
            f"choose timesteps from 1 to {T}"
        )
    return None


def _shard_rules(cfg: Mapping[str, Any]) -> str | None:
    shard, shards = cfg["points"]["shard"], cfg["points"]["shards"]
    if (shard == POOL and shards > 1) or (_int(shard) and 0 <= shard < shards):
        return None
    return (
        f"points.shard={show(shard)} is not one of 0..{shards - 1} (points.shards={shards}) — "
        f"sweep points.shard over 0..N-1 together with points.shards=N ({POOL}: pool the N shards)"
    )


def _measure_rules(cfg: Mapping[str, Any]) -> str | None:
    measure = cfg["measure"]
    if measure["frob_probes"] < 1 and measure["blocks"] in ("auto", "power", "lanczos"):
        return (
            f"measure.frob_probes={measure['frob_probes']} with measure.blocks={measure['blocks']} leaves the "
            "Frobenius block norms (Table 7) unmeasured — set measure.frob_probes to at least 1 "
            "(or measure.blocks=dense, exact without probes)"
        )
    return None


def _train_rules(cfg: Mapping[str, Any]) -> str | None:
    t = cfg["train"]
    lengths = {len(t[k]) for k in ("block_out_channels", "down_block_types", "up_block_types")}
    if len(lengths) > 1:
        return (
            "train.block_out_channels, down_block_types and up_block_types have different lengths — "
            "give them equal lengths"
        )
    if t["stop_at"] is not None and t["stop_at"] > t["steps"]:
        return (
            f"train.stop_at={t['stop_at']} is after train.steps={t['steps']} — set it to at most {t['steps']}"
        )
    return None


# each rule across keys, with the sections it reads (a rule is skipped where one is absent)
_NEEDS: dict[Callable[[Mapping[str, Any]], str | None], tuple[str, ...]] = {
    _patch_divides: ("dataset", "patch"),
    _blocks_divide: ("dataset", "model"),
    _dataset_rules: ("dataset",),
    _model_rules: ("model",),
    _schedule_rules: ("schedule",),
    _points_rules: ("points",),
    _proxy_rules: ("proxy", "schedule"),
    _shard_rules: ("points",),
    _measure_rules: ("measure",),
    _train_rules: ("train",),
}
RULES = list(_NEEDS)
