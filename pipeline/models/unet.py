"""diffusers UNet2DModel checkpoints (hub id or local folder) as paper-t noise predictors ε̂(x, t)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from pipeline.errors import first_line
from pipeline.models.attention import AttentionRecord, MathAttnProcessor, install_math_attention, recording
from pipeline.models.prediction import PREDICTION_TYPES, check_prediction_type, eps_from_prediction

from .assets import PKG_PREFIX, resolve_asset_path
from .base import ModelError, check_alpha_bar, check_input, check_timestep, parse_dtype, resolve_device

# owner/name as the hub spells repository ids (no leading dot or slash, exactly one slash).
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SCHEDULER_FILES = ("scheduler/scheduler_config.json", "scheduler_config.json")
_HUB_PATTERNS = [
    "config.json",
    "scheduler_config.json",
    "model_index.json",
    "diffusion_pytorch_model*",
    "unet/*",
    "scheduler/*",
]


class CheckpointNotFoundError(ModelError, FileNotFoundError):
    """model.path names no usable checkpoint (missing folder, unreachable hub id, wrong files)."""


class DiffusersNoisePredictor:
    """ε̂(x, t) of a diffusers UNet2DModel at the paper's 1-based t: the UNet is called with index t - 1.

    ``alpha_bar`` is the checkpoint's own schedule (from its scheduler config) in the project
    convention (float64 [T+1], alpha_bar[0] = 1). The UNet's attention runs through
    MathAttnProcessor, so torch.func.jvp / linearize / vjp pass through; parameters are frozen.
    A v- or x_0-prediction network (scheduler ``prediction_type``) is converted to ε̂ (pipeline.models.prediction).
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        alpha_bar: np.ndarray,
        image_shape: tuple[int, int, int],
        source: str = "",
        scheduler_config: dict | None = None,
        prediction_type: str = "epsilon",
        checkpoint_dir: Path | None = None,
    ) -> None:
        self.checkpoint_dir = checkpoint_dir
        self.prediction_type = check_prediction_type(prediction_type, source)
        self.unet = unet.eval().requires_grad_(False)
        self.alpha_bar = check_alpha_bar(alpha_bar, what="the checkpoint's alpha_bar")
        self.image_shape = tuple(int(s) for s in image_shape)
        self.source = source
        self.scheduler_config = dict(scheduler_config or {})
        self.attention_processors: dict[str, MathAttnProcessor] = install_math_attention(self.unet)
        p = next(self.unet.parameters())
        self.dtype = p.dtype
        self.device = p.device

    def input_files(self) -> dict[str, Path | str]:
        """What this model's numbers come from: its checkpoint folder, and for a hub snapshot
        (<cache>/models--org--name/snapshots/<commit>) the commit it resolved to."""
        if self.checkpoint_dir is None:
            return {}
        out: dict[str, Path | str] = {"model": self.checkpoint_dir}
        if self.checkpoint_dir.parent.name == "snapshots":
            out["model_revision"] = self.checkpoint_dir.name
        return out

    def __call__(self, x: torch.Tensor, t: int) -> torch.Tensor:
        check_input(x, self.image_shape, "DiffusersNoisePredictor")
        t = check_timestep(t, self.alpha_bar)
        return eps_from_prediction(self.raw(x, t), x, self.alpha_bar[t], self.prediction_type)

    def raw(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """The network's own output (ε, v or x̂_0 by ``prediction_type``) at paper t (UNet index t − 1)."""
        check_input(x, self.image_shape, "DiffusersNoisePredictor")
        t = check_timestep(t, self.alpha_bar)
        index = torch.tensor(t - 1, dtype=torch.long, device=x.device)
        return self.unet(x, index, return_dict=False)[0]

    @contextlib.contextmanager
    def record_attention(self) -> Iterator[AttentionRecord]:
        """``with model.record_attention() as rec: model(x, t)`` -> rec.last(): {layer: [B, heads, L, L]}."""
        with recording(self.attention_processors) as rec:
            yield rec

    def to(self, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None):
        if dtype is not None:
            self.unet.to(dtype=parse_dtype(dtype))
        if device is not None:
            self.unet.to(device=resolve_device(device))
        p = next(self.unet.parameters())
        self.dtype, self.device = p.dtype, p.device
        return self


def _hub_offline(local_files_only: bool | None) -> bool:
    if local_files_only is not None:
        return bool(local_files_only)
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    try:
        # huggingface_hub only for a hub id: importing the models stays without it
        from huggingface_hub import constants

        return env or bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - huggingface_hub ships with diffusers
        return env


def resolve_checkpoint_dir(
    path_or_hub_id: str | os.PathLike,
    *,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
) -> Path:
    """A local folder holding the checkpoint: the folder itself, or the hub snapshot (cache first)."""
    raw = str(path_or_hub_id).strip()
    if not raw:
        raise CheckpointNotFoundError("model.path is empty — set it to a local checkpoint folder or a hub id")
    p = Path(raw).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise CheckpointNotFoundError(
            f"model.path={raw} is a file — point it at the checkpoint folder (the one holding config.json)"
        )
    if not _HUB_ID.match(raw):
        raise CheckpointNotFoundError(
            f"model.path={raw} is neither an existing directory nor a hub id of the form owner/name — "
            "fix the path or use e.g. google/ddpm-cifar10-32"
        )
    offline = _hub_offline(local_files_only)
    download_hint = (
        f"download it once where there is network (`hf download {raw} --local-dir <dir>`) "
        f"and set model.path=<dir>"
    )
    # huggingface_hub only for a hub id: importing the models stays without it
    from huggingface_hub import snapshot_download

    try:
        snap = snapshot_download(
            raw,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=offline,
            allow_patterns=_HUB_PATTERNS,
        )
    except Exception as e:  # the hub client raises many types (offline, HTTP, connection, missing repo)
        if offline:
            raise CheckpointNotFoundError(
                f"model.path={raw} looks like a hub id, but it is not in the local Hugging Face cache and the "
                f"hub is offline (HF_HUB_OFFLINE / local_files_only), and no local folder {raw!r} exists — "
                f"{download_hint}"
            ) from e
        raise CheckpointNotFoundError(
            f"could not fetch hub id {raw} ({type(e).__name__}: {first_line(e)}) — if this machine has no network, "
            f"{download_hint}"
        ) from e
    return Path(snap)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"{path} is not valid JSON ({e}) — re-download or re-save the checkpoint") from e
    if not isinstance(data, dict):
        raise ModelError(
            f"{path} holds a JSON {type(data).__name__}, not an object — re-download or re-save the checkpoint"
        )
    return data


def _find_unet_dir(root: Path) -> Path:
    for cand in (root, root / "unet"):
        cfg = cand / "config.json"
        if cfg.is_file():
            cls = _read_json(cfg).get("_class_name")
            if cls == "UNet2DModel":
                return cand
            if cand == root and (root / "unet" / "config.json").is_file():
                continue
            raise CheckpointNotFoundError(
                f"{cfg} describes a {cls!r}, not a diffusers UNet2DModel — point model.path at a UNet2DModel "
                "checkpoint (save_pretrained output or a DDPM pipeline folder)"
            )
    raise CheckpointNotFoundError(
        f"no UNet2DModel config.json in {root} or {root / 'unet'} — point model.path at the folder that "
        "save_pretrained wrote (or a DDPM pipeline folder with unet/ and scheduler/)"
    )


def find_scheduler_config(root: Path, unet_dir: Path | None = None) -> dict | None:
    """The checkpoint's own scheduler config (scheduler/scheduler_config.json or scheduler_config.json)."""
    cands = [root / f for f in _SCHEDULER_FILES]
    if unet_dir is not None and unet_dir != root:
        cands.append(unet_dir / "scheduler_config.json")
    for c in cands:
        if c.is_file():
            return _read_json(c)
    return None


def alpha_bar_from_scheduler_config(cfg: dict) -> np.ndarray:
    """ᾱ_t (float64 [T+1], paper t) of a diffusers scheduler config, via pipeline.geometry."""
    # scipy (via pipeline.geometry) only for a checkpoint's schedule: importing the models stays without it
    from pipeline.geometry import schedule_from_diffusers_config

    return np.asarray(schedule_from_diffusers_config(dict(cfg)).alpha_bar, dtype=np.float64)


def check_unet_fits(
    config: dict,
    image_shape: tuple[int, int, int],
    *,
    allow_resolution_change: bool = False,
    source: str = "",
) -> None:
    """Refuse a checkpoint whose channels / sample size do not fit the dataset (before any sampling)."""
    C, H, W = image_shape
    where = f" ({source})" if source else ""
    cin, cout = int(config.get("in_channels", 3)), int(config.get("out_channels", 3))
    if cin != C or cout != C:
        raise ModelError(
            f"the UNet{where} maps {cin} -> {cout} channels but the dataset has {C} — choose a dataset with "
            f"{cin} channels (dataset.channels) or a checkpoint trained on {C}-channel images"
        )
    size = config.get("sample_size")
    sizes = (size, size) if isinstance(size, int) else tuple(size or (H, W))
    if (H, W) != tuple(sizes) and not allow_resolution_change:
        raise ModelError(
            f"the UNet{where} was trained at {sizes[0]}x{sizes[1]} but dataset.resolution gives {H}x{W} — set "
            f"dataset.resolution={sizes[0]}, or model.allow_resolution_change=true to run the fully "
            "convolutional UNet at another size (as the paper does for CelebA-HQ at 64x64, §7.7)"
        )
    factor = 2 ** (len(config.get("down_block_types", ())) - 1)
    if H % factor or W % factor:
        raise ModelError(
            f"the UNet{where} downsamples by {factor}; image size {H}x{W} is not a multiple of it "
            "— change dataset.resolution"
        )


_WEIGHTS = "diffusion_pytorch_model"
_LIST = 8  # key names shown in a message before "... and N more"


def _names(keys) -> str:
    keys = sorted(keys)
    more = f" … and {len(keys) - _LIST} more" if len(keys) > _LIST else ""
    return ", ".join(keys[:_LIST]) + more


def weights_files(unet_dir: Path) -> tuple[list[Path], bool]:
    """The checkpoint's weight files and whether they are safetensors (preferred over pickled .bin)."""
    single = unet_dir / f"{_WEIGHTS}.safetensors"
    if single.is_file():
        return [single], True
    index = unet_dir / f"{_WEIGHTS}.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
        return [unet_dir / s for s in shards], True
    if (unet_dir / f"{_WEIGHTS}.bin").is_file():
        return [unet_dir / f"{_WEIGHTS}.bin"], False
    raise CheckpointNotFoundError(
        f"{unet_dir} holds no weights ({_WEIGHTS}.safetensors or .bin) beside config.json — "
        "re-download the checkpoint, or save it with save_pretrained (which writes safetensors)"
    )


def _check_safetensors_header(path: Path) -> None:
    """Open a safetensors file's header: a truncated or foreign file fails here, naming it."""
    if not path.is_file():
        raise CheckpointNotFoundError(f"weight shard {path} is missing — re-download the checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            list(f.keys())
    except Exception as e:  # SafetensorError (bad header) or OSError
        raise ModelError(
            f"{path} is not a readable safetensors file ({type(e).__name__}: {e}) — it is truncated or "
            "corrupt: re-download the checkpoint or save it again with save_pretrained"
        ) from e


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """Silence diffusers' loading warnings (missing keys are refused below with their names instead)."""
    logger = logging.getLogger("diffusers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _load_checked_weights(unet_dir: Path, dtype: torch.dtype) -> torch.nn.Module:
    """UNet2DModel.from_pretrained, refusing what diffusers would accept quietly.

    Missing keys (diffusers initialises them at random), unexpected keys, shape mismatches and
    non-finite weights are each a ModelError naming the keys. Safetensors are used whenever present;
    a pickled .bin is read by diffusers with torch.load(weights_only=True).
    """
    # diffusers only when a checkpoint is loaded: the oracle models import without it
    from diffusers import UNet2DModel

    files, safe = weights_files(unet_dir)
    if safe:
        for f in files:
            _check_safetensors_header(f)
    try:
        with _quiet_diffusers():
            # low_cpu_mem_usage=False: the fast path needs `accelerate`, which the project does not depend on.
            unet, info = UNet2DModel.from_pretrained(
                str(unet_dir),
                local_files_only=True,
                torch_dtype=dtype,
                low_cpu_mem_usage=False,
                use_safetensors=safe,
                output_loading_info=True,
            )
    except RuntimeError as e:
        mism = re.findall(
            r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[([^\]]*)\]\) from checkpoint, "
            r"the shape in current model is torch\.Size\(\[([^\]]*)\]\)",
            str(e),
        )
        if not mism:
            raise ModelError(
                f"{unet_dir}: the weights do not load into the UNet of its config.json ({str(e).splitlines()[0]}) — "
                "use the config.json saved with these weights"
            ) from e
        shown = "; ".join(f"{k} is [{a}] in the file but [{b}] in config.json" for k, a, b in mism[:_LIST])
        raise ModelError(
            f"{unet_dir}: weight shapes do not match config.json ({shown}) — the weights and config.json come "
            "from different models; use the config.json saved with these weights"
        ) from e
    except Exception as e:  # OSError, or safetensors' SafetensorError on a body cut short
        if not isinstance(e, OSError) and type(e).__name__ != "SafetensorError":
            raise
        raise ModelError(
            f"{unet_dir}: cannot read the weights ({str(e).splitlines()[0]}) — re-download the checkpoint"
        ) from e
    missing, unexpected = info.get("missing_keys") or [], info.get("unexpected_keys") or []
    if missing:
        raise ModelError(
            f"{files[0]} lacks {len(missing)} weight(s) the UNet of config.json needs: {_names(missing)} — "
            "the file is incomplete or from another architecture; re-download or re-save the checkpoint"
        )
    if unexpected:
        raise ModelError(
            f"{files[0]} holds {len(unexpected)} weight(s) the UNet of config.json does not have: "
            f"{_names(unexpected)} — use the config.json saved with these weights"
        )
    bad = [k for k, v in unet.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelError(
            f"{files[0]} holds non-finite (NaN/inf) values in {len(bad)} tensor(s): {_names(bad)} — the "
            "checkpoint is broken (a diverged training run?); use another checkpoint"
        )
    return unet


def load_unet(
    path_or_hub_id: str | os.PathLike,
    *,
    image_shape: tuple[int, int, int] | None = None,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device | None = "cpu",
    allow_resolution_change: bool = False,
    schedule: object | None = None,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
) -> DiffusersNoisePredictor:
    """Load a diffusers UNet2DModel (local folder or hub id) as a paper-t noise predictor.

    image_shape (C, H, W) is the dataset's; None means the checkpoint's own (in_channels, sample_size).
    ᾱ_t comes from the checkpoint's scheduler config; ``schedule`` (a Schedule or alpha_bar array)
    is used only when the checkpoint has none. Hub ids are looked up in the local cache first; with
    HF_HUB_OFFLINE=1 (or local_files_only=True) nothing touches the network.
    """
    # a checkpoint shipped inside the package (model=pifs_ddpm16); hub ids and folders pass unchanged
    if str(path_or_hub_id).startswith(PKG_PREFIX):
        path_or_hub_id = str(resolve_asset_path(path_or_hub_id))
    root = resolve_checkpoint_dir(
        path_or_hub_id, local_files_only=local_files_only, cache_dir=cache_dir, revision=revision
    )
    unet_dir = _find_unet_dir(root)
    config = _read_json(unet_dir / "config.json")
    source = str(path_or_hub_id)
    if image_shape is None:
        size = config.get("sample_size", 32)
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        image_shape = (int(config.get("in_channels", 3)), int(h), int(w))
    image_shape = tuple(int(s) for s in image_shape)
    check_unet_fits(config, image_shape, allow_resolution_change=allow_resolution_change, source=source)

    sched_cfg = find_scheduler_config(root, unet_dir)
    pred = "epsilon"
    if sched_cfg is not None:
        pred = sched_cfg.get("prediction_type", "epsilon")
        if pred not in PREDICTION_TYPES:
            raise ModelError(
                f"{source}: scheduler prediction_type={pred!r} cannot be turned into the ε̂ of eq. (4) — "
                f"use a checkpoint whose type is supported: {list(PREDICTION_TYPES)}"
            )
        alpha_bar = alpha_bar_from_scheduler_config(sched_cfg)
    elif schedule is not None:
        alpha_bar = np.asarray(getattr(schedule, "alpha_bar", schedule), dtype=np.float64)
    else:
        raise CheckpointNotFoundError(
            f"{source} has no scheduler config ({' or '.join(_SCHEDULER_FILES)}), so its ᾱ_t is unknown — add "
            "the scheduler_config.json it was trained with, or pass a schedule (config: schedule=<name>)"
        )

    unet = _load_checked_weights(unet_dir, parse_dtype(dtype))
    unet = unet.to(device=resolve_device(device))
    return DiffusersNoisePredictor(
        unet,
        alpha_bar,
        image_shape,
        source=source,
        scheduler_config=sched_cfg,
        prediction_type=pred,
        checkpoint_dir=root,
    )
