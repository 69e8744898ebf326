"""DDPM training of a small diffusers UNet2DModel: DSM loss (§2.1), Min-SNR weighting, EMA, resume, collage term.

The loss per sample is ‖ε̂_θ(x_t, t) − ε‖² / n with t ~ U{1..T} (paper t, UNet index t − 1) and
x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (eq. 1). Min-SNR-γ multiplies it by min(SNR_t, γ)/SNR_t (§6.5). With
``mu_reg > 0`` the PIFS collage term of Theorem 15, μ_reg Σ_{k, j≠k} ‖[J_x ε̂]_kj‖_F² / n, is added,
estimated at the same x_t by pipeline.collage (unbiased; one VJP per probe through double backward).
Both terms are divided by n, so μ_reg has the paper's meaning for L_PIFS / n.

Every random draw of step s comes from a generator seeded by (seed, s), so training resumed from a
checkpoint continues bit for bit as if it had not stopped.
"""

from __future__ import annotations

import copy
import io as _io
import json
import math
import pickle
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline import io
from pipeline.collage import collage_penalty, heldout_per_t
from pipeline.errors import PipelineError, SettingError
from pipeline.models.attention import install_math_attention
from pipeline.models.prediction import check_prediction_type, eps_from_prediction
from pipeline.patches import extract_patches


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (conf/train/*.yaml mirrors these keys)."""

    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    min_snr_gamma: float | None = None
    # what the UNet outputs (diffusers' scheduler key): epsilon | v_prediction | sample; the ε̂ of eq. (4) is
    # derived from it (pipeline.models.prediction), so the sampler and the measurement see the same operator
    prediction_type: str = "epsilon"
    mu_reg: float = 0.0
    reg_probes: int = 1
    reg_scheme: str = "partition"
    # samples of each batch that also carry the collage term (its double backward is the costly part)
    reg_batch: int | None = 16
    patch_size: int = 4
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 50
    # UNet2DModel architecture
    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    down_block_types: tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "UpBlock2D")
    attention_head_dim: int = 16
    norm_num_groups: int = 8
    max_wall_s: float | None = None
    # end the run at this step while the LR schedule still follows `steps` (a truncated cosine): lets a run be
    # shortened on resume without changing the update rule of the steps already taken
    stop_at: int | None = None

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        self.down_block_types = tuple(self.down_block_types)
        self.up_block_types = tuple(self.up_block_types)
        if not (len(self.block_out_channels) == len(self.down_block_types) == len(self.up_block_types)):
            raise SettingError(
                "train.block_out_channels, down_block_types and up_block_types have different lengths — "
                "give them equal lengths"
            )
        if self.steps < 1 or self.batch_size < 1:
            raise SettingError(
                f"train.steps={self.steps}, train.batch_size={self.batch_size} — set both to at least 1"
            )
        if self.mu_reg < 0:
            raise SettingError(f"train.mu_reg={self.mu_reg} — set it >= 0 (0 turns the collage term off)")
        check_prediction_type(self.prediction_type, "train")
        if self.reg_scheme not in ("partition", "patch"):
            raise SettingError(f"train.reg_scheme={self.reg_scheme!r} is unknown — use partition or patch")
        if self.min_snr_gamma is not None and self.min_snr_gamma <= 0:
            raise SettingError(
                f"train.min_snr_gamma={self.min_snr_gamma} — set it > 0, or null for plain DSM"
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> TrainConfig:
        # the `train` node's keys were checked against the config schema (pipeline.schema) at composition;
        # the entry point's own keys (name, out_dir, threads, eval_*, sample_*) are not the recipe's
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def build_unet(cfg: TrainConfig, image_shape: tuple[int, int, int]):
    """A fresh UNet2DModel for ``image_shape`` (seeded by cfg.seed)."""
    # diffusers only when a UNet is built: importing the trainer skips its slow import
    from diffusers import UNet2DModel

    C, H, W = image_shape
    if H != W:
        raise ValueError(f"square images only, got {H}x{W}")
    torch.manual_seed(int(cfg.seed))
    unet = UNet2DModel(
        sample_size=H,
        in_channels=C,
        out_channels=C,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        down_block_types=cfg.down_block_types,
        up_block_types=cfg.up_block_types,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
    )
    # written-out softmax attention: the collage term's double backward (and forward-mode AD) pass through it
    install_math_attention(unet)
    return unet


def diffusers_scheduler_config(
    schedule_cfg: Mapping[str, Any], prediction_type: str = "epsilon"
) -> dict[str, Any]:
    """scheduler_config.json (DDPMScheduler) for the `schedule` group, so load_unet recovers the same ᾱ_t.
    Reads the keys of the schema's linear / cosine nodes, every one set (conf/schedule/ holds the values)."""
    kind = schedule_cfg["kind"]
    if kind not in ("linear", "cosine"):
        raise ValueError(
            f"schedule kind={kind!r} has no diffusers scheduler equivalent here; train with schedule=linear or cosine"
        )
    base = {
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": int(schedule_cfg["num_train_timesteps"]),
        "prediction_type": check_prediction_type(prediction_type),
        "clip_sample": False,
    }
    if kind == "linear":
        return {
            **base,
            "beta_schedule": "linear",
            "beta_start": float(schedule_cfg["beta_start"]),
            "beta_end": float(schedule_cfg["beta_end"]),
        }
    # squaredcos_cap_v2 fixes s_off at 0.008: training_run refuses a config whose ᾱ_t it would not give back
    if schedule_cfg["max_beta"] in (None, 0.999):
        return {**base, "beta_schedule": "squaredcos_cap_v2"}
    raise ValueError(
        f"schedule max_beta={schedule_cfg['max_beta']} has no diffusers scheduler equivalent (squaredcos_cap_v2 "
        "clips at 0.999); train with max_beta null or 0.999, or schedule=linear"
    )


def dsm_loss(
    unet: torch.nn.Module,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    alpha_bar: torch.Tensor,
    min_snr_gamma: float | None = None,
    keep_input_grad: bool = False,
    prediction_type: str = "epsilon",
    weighted: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample DSM loss ‖ε̂(x_t, t) − ε‖²/n (§2.1), weighted for training; returns (loss, ε̂, x_t).

    ``t`` holds paper timesteps (1..T); ``alpha_bar`` is float [T+1] with alpha_bar[0] = 1. The network
    output is turned into ε̂ by its prediction type. With ``weighted`` the loss is the training objective:
    in x_0-error terms ‖x̂_0 − x_0‖² = ‖ε̂ − ε‖²/SNR_t, plain ε-prediction weighs it by SNR_t, v-prediction
    (the MSE of v̂) by SNR_t + 1, and Min-SNR-γ (§6.5) by min(SNR_t, γ) for either; ``weighted=False`` gives
    the bare ‖ε̂ − ε‖²/n (the held-out quality proxy, comparable across prediction types).
    """
    ab = alpha_bar[t].to(x0.dtype).view(-1, 1, 1, 1)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    if keep_input_grad:
        xt = xt.detach().requires_grad_(True)
    out = unet(xt, t - 1, return_dict=False)[0]
    eps = eps_from_prediction(out, xt, ab, prediction_type)
    loss = (eps - noise).pow(2).flatten(1).mean(1)
    if weighted:
        snr = (ab / (1 - ab)).flatten()
        if min_snr_gamma is not None:
            loss = loss * torch.clamp(snr, max=float(min_snr_gamma)) / snr
        elif prediction_type == "v_prediction":
            loss = loss * (snr + 1) / snr
        elif prediction_type == "sample":
            loss = loss / snr
    return loss, eps, xt


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of training step ``step``: every draw of a step depends only on (seed, step)."""
    return torch.Generator().manual_seed(
        int(np.random.SeedSequence([int(seed), int(step)]).generate_state(1)[0])
    )


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up then cosine decay to 10 % of lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


@dataclass
class TrainState:
    unet: torch.nn.Module
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0


def new_state(cfg: TrainConfig, image_shape: tuple[int, int, int]) -> TrainState:
    unet = build_unet(cfg, image_shape)
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return TrainState(unet, ema, opt)


CHECKPOINT = "checkpoint.pt"


def save_checkpoint(state: TrainState, folder: str | Path) -> Path:
    """Model, EMA, optimizer, step and loss history in folder/checkpoint.pt (atomic replace)."""
    buf = _io.BytesIO()
    torch.save(
        {
            "unet": state.unet.state_dict(),
            "ema": state.ema.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "step": state.step,
            "history": state.history,
            "wall_s": state.wall_s,
        },
        buf,
    )
    path = Path(folder) / CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_bytes(path, buf.getvalue())
    return path


def load_checkpoint(state: TrainState, folder: str | Path) -> bool:
    """Restore ``state`` from folder/checkpoint.pt if it exists; returns whether it did."""
    path = Path(folder) / CHECKPOINT
    if not path.is_file():
        return False
    # weights_only: tensors and plain containers only, so a planted pickle cannot run code
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise PipelineError(
            f"{path} is not a plain weights checkpoint ({str(e).splitlines()[0][:200]}) — delete {path.parent} "
            "to train from the start"
        ) from None
    state.unet.load_state_dict(ck["unet"])
    state.ema.load_state_dict(ck["ema"])
    state.optimizer.load_state_dict(ck["optimizer"])
    state.step, state.history, state.wall_s = (
        int(ck["step"]),
        list(ck["history"]),
        float(ck.get("wall_s", 0.0)),
    )
    return True


def train_step(
    state: TrainState, cfg: TrainConfig, data: torch.Tensor, alpha_bar: torch.Tensor
) -> dict[str, float]:
    """One optimizer step on a batch drawn with step_generator(seed, step); returns the logged values."""
    g = step_generator(cfg.seed, state.step)
    N = data.shape[0]
    T = alpha_bar.shape[0] - 1
    idx = torch.randint(0, N, (cfg.batch_size,), generator=g)
    t = torch.randint(1, T + 1, (cfg.batch_size,), generator=g)
    noise = torch.randn((cfg.batch_size, *data.shape[1:]), generator=g)
    x0 = data[idx]
    state.unet.train()
    use_reg = cfg.mu_reg > 0
    loss, eps, xt = dsm_loss(
        state.unet, x0, t, noise, alpha_bar, cfg.min_snr_gamma, prediction_type=cfg.prediction_type
    )
    total = loss.mean()
    out = {"dsm": float((eps.detach() - noise).pow(2).mean()), "objective": float(total.detach())}
    if use_reg:
        rb = min(cfg.reg_batch or cfg.batch_size, cfg.batch_size)
        # the collage term at the first rb samples' x_t: a separate forward keeps the double backward
        # (the costly part) on rb samples instead of the whole batch
        xr = xt[:rb].detach().requires_grad_(True)
        ab_r = alpha_bar[t[:rb]].to(xr.dtype).view(-1, 1, 1, 1)
        er = eps_from_prediction(
            state.unet(xr, t[:rb] - 1, return_dict=False)[0], xr, ab_r, cfg.prediction_type
        )
        pen = collage_penalty(er, xr, cfg.patch_size, g, probes=cfg.reg_probes, scheme=cfg.reg_scheme)
        n = float(np.prod(data.shape[1:]))
        reg = pen.mean() / n
        total = total + cfg.mu_reg * reg
        out["collage"] = float(reg.detach())
    for group in state.optimizer.param_groups:
        group["lr"] = lr_at(cfg, state.step)
    state.optimizer.zero_grad(set_to_none=True)
    total.backward()
    if cfg.grad_clip:
        out["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(state.unet.parameters(), cfg.grad_clip))
    state.optimizer.step()
    with torch.no_grad():
        d = cfg.ema_decay
        for pe, p in zip(state.ema.parameters(), state.unet.parameters(), strict=True):
            pe.mul_(d).add_(p.detach(), alpha=1 - d)
        for be, b in zip(state.ema.buffers(), state.unet.buffers(), strict=True):
            be.copy_(b)
    out["loss"] = float(total.detach())
    out["lr"] = state.optimizer.param_groups[0]["lr"]
    state.step += 1
    return out


def train(
    cfg: TrainConfig,
    data: torch.Tensor,
    alpha_bar: np.ndarray,
    work_dir: str | Path | None = None,
    *,
    progress: bool = True,
    log_fn: Callable[[int, dict[str, float]], None] | None = None,
    stop_after: int | None = None,
) -> TrainState:
    """Train (resuming from work_dir/checkpoint.pt when present) until cfg.steps (or ``stop_after`` steps).

    ``data``: float32 [N, C, H, W] in [-1, 1]. ``log_fn(step, means)`` gets the running means every
    cfg.log_every steps. A checkpoint is written every cfg.checkpoint_every steps and at the end.
    """
    if data.ndim != 4:
        raise ValueError(f"data must be [N, C, H, W], got {tuple(data.shape)}")
    ab = torch.from_numpy(np.array(alpha_bar, dtype=np.float64))
    if float(ab[0]) != 1.0:
        raise ValueError("alpha_bar must be the project's [T+1] array with alpha_bar[0] = 1")
    state = new_state(cfg, tuple(data.shape[1:]))
    if work_dir is not None:
        load_checkpoint(state, work_dir)
    target = cfg.steps if cfg.stop_at is None else min(cfg.steps, int(cfg.stop_at))
    if stop_after is not None:
        target = min(target, state.step + int(stop_after))
    acc: dict[str, list[float]] = {}
    t0 = time.time() - state.wall_s
    bar = tqdm(total=target, initial=state.step, desc="train", disable=not progress)
    while state.step < target:
        vals = train_step(state, cfg, data, ab)
        for k, v in vals.items():
            acc.setdefault(k, []).append(v)
        bar.update(1)
        if state.step % cfg.log_every == 0 or state.step == target:
            means = {k: float(np.mean(v)) for k, v in acc.items()}
            means["wall_s"] = time.time() - t0
            state.history.append({"step": state.step, **means})
            bar.set_postfix(dsm=f"{means['dsm']:.4f}")
            if log_fn is not None:
                log_fn(state.step, means)
            acc = {}
        state.wall_s = time.time() - t0
        if work_dir is not None and (state.step % cfg.checkpoint_every == 0 or state.step == target):
            save_checkpoint(state, work_dir)
        if cfg.max_wall_s is not None and state.wall_s > cfg.max_wall_s:
            if work_dir is not None:
                save_checkpoint(state, work_dir)
            break
    bar.close()
    return state


def save_model(ema: torch.nn.Module, folder: str | Path, scheduler_config: Mapping[str, Any]) -> Path:
    """save_pretrained (config.json + safetensors) + scheduler_config.json: a folder load_unet reads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ema.save_pretrained(str(folder), safe_serialization=True)
    io.write_text(folder / "scheduler_config.json", json.dumps(dict(scheduler_config), indent=2) + "\n")
    return folder


@torch.no_grad()
def heldout_dsm(
    unet: torch.nn.Module,
    x0: torch.Tensor,
    alpha_bar: np.ndarray,
    timesteps: list[int] | tuple[int, ...],
    seed: int = 0,
    batch_size: int = 256,
    prediction_type: str = "epsilon",
) -> dict[int, tuple[float, float]]:
    """Quality proxy: held-out DSM loss ‖ε̂ − ε‖²/n per paper t with fixed noise -> {t: (mean, std error)}."""
    ab = torch.from_numpy(np.array(alpha_bar, dtype=np.float64))
    unet.eval()

    def loss(t: int, xb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        noise = torch.randn(xb.shape, generator=g)
        tt = torch.full((xb.shape[0],), t, dtype=torch.long)
        return dsm_loss(unet, xb, tt, noise, ab, prediction_type=prediction_type, weighted=False)[0]

    return heldout_per_t(x0, timesteps, loss, seed=seed, batch_size=batch_size)


def plot_loss_curve(history: list[dict[str, float]], path: str | Path, title: str = "") -> Path:
    """Running-mean DSM (and collage) loss against step, log scale, as PNG."""
    # matplotlib only for the loss plot: training imports without it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(steps, [h["dsm"] for h in history], label="DSM ‖ε̂−ε‖²/n")
    if any("collage" in h for h in history):
        ax2 = ax.twinx()
        ax2.plot(steps, [h.get("collage", np.nan) for h in history], color="C1", label="collage / n")
        ax2.set_yscale("log")
        ax2.set_ylabel("collage Σ‖J_kj‖²/n")
        ax2.legend(loc="upper center", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("DSM loss")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    io.write_bytes(path, buf.getvalue())
    return Path(path)


def patch_covariance_distance(samples: np.ndarray, data: np.ndarray, patch_size: int) -> dict[str, float]:
    """Sample-quality proxy: per-patch mean and covariance of samples vs data (both [N, C, H, W]).

    Returns the mean over patches k of ‖Σ_k^samples − Σ_k^data‖_F / ‖Σ_k^data‖_F (``cov_rel``), of
    ‖μ_k^s − μ_k^d‖ / √tr Σ_k^d (``mean_rel``) and the ratio of total variances (``var_ratio``).
    """
    ps = extract_patches(np.asarray(samples, dtype=np.float64), patch_size)
    pd = extract_patches(np.asarray(data, dtype=np.float64), patch_size)
    cov_rel, mean_rel, var_s, var_d = [], [], 0.0, 0.0
    for k in range(ps.shape[1]):
        cs, cd = np.cov(ps[:, k].T), np.cov(pd[:, k].T)
        cov_rel.append(np.linalg.norm(cs - cd) / np.linalg.norm(cd))
        mean_rel.append(np.linalg.norm(ps[:, k].mean(0) - pd[:, k].mean(0)) / np.sqrt(np.trace(cd)))
        var_s += np.trace(cs)
        var_d += np.trace(cd)
    return {
        "cov_rel": float(np.mean(cov_rel)),
        "mean_rel": float(np.mean(mean_rel)),
        "var_ratio": var_s / var_d,
    }
