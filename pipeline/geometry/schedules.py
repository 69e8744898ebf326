"""Noise schedules ᾱ_t, t = 0..T, indexed by the paper's 1-based t with ᾱ_0 = 1 (paper §2.1).

Every schedule is a float64 array ``alpha_bar`` of length T+1. diffusers' 0-based scheduler index
i corresponds to paper t = i + 1, so ``alpha_bar[1:]`` equals a diffusers ``alphas_cumprod``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import SettingError


@dataclass(frozen=True, eq=False)
class Schedule:
    """A strictly decreasing cumulative schedule ᾱ_0 = 1 > ᾱ_1 > ... > ᾱ_T ≥ 0 (paper eq. 1)."""

    name: str
    alpha_bar: np.ndarray
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ab = np.array(self.alpha_bar, dtype=np.float64, copy=True).reshape(-1)
        if ab.size < 2:
            raise ValueError(
                f"schedule {self.name!r}: alpha_bar needs length T+1 >= 2 (got {ab.size}); "
                "pass ᾱ_0..ᾱ_T with ᾱ_0 = 1, or use schedule_from_alpha_bar for ᾱ_1..ᾱ_T"
            )
        if not np.all(np.isfinite(ab)):
            raise ValueError(f"schedule {self.name!r}: alpha_bar has non-finite values; fix the schedule")
        if ab[0] != 1.0:
            raise ValueError(
                f"schedule {self.name!r}: alpha_bar[0] must be 1 (paper convention ᾱ_0 = 1), got {ab[0]!r}; "
                "use schedule_from_alpha_bar(...) to prepend it"
            )
        if np.any(ab < 0.0):
            raise ValueError(f"schedule {self.name!r}: alpha_bar must be >= 0; fix the schedule values")
        d = np.diff(ab)
        if np.any(d >= 0.0):
            bad = int(np.argmax(d >= 0.0)) + 1
            raise ValueError(
                f"schedule {self.name!r}: alpha_bar must be strictly decreasing (Prop. 3 needs it), but "
                f"ᾱ_{bad} = {ab[bad]!r} >= ᾱ_{bad - 1} = {ab[bad - 1]!r}; check betas are in (0, 1]"
            )
        ab.setflags(write=False)
        object.__setattr__(self, "alpha_bar", ab)
        object.__setattr__(self, "meta", dict(self.meta))

    @property
    def T(self) -> int:
        return int(self.alpha_bar.size - 1)

    @property
    def v(self) -> np.ndarray:
        """Residual noise variance v_t = 1 - ᾱ_t, t = 0..T (paper §2.1)."""
        return 1.0 - self.alpha_bar

    @property
    def betas(self) -> np.ndarray:
        """β_t = 1 - ᾱ_t / ᾱ_{t-1}, t = 1..T (length T)."""
        return 1.0 - self.alpha_bar[1:] / self.alpha_bar[:-1]

    @property
    def log_snr(self) -> np.ndarray:
        """logSNR_t = log(ᾱ_t / (1 - ᾱ_t)) eq. (3), t = 0..T (+inf at t = 0)."""
        with np.errstate(divide="ignore"):
            return np.log(self.alpha_bar) - np.log1p(-self.alpha_bar)

    def __repr__(self) -> str:
        return f"Schedule(name={self.name!r}, T={self.T}, alpha_bar_T={self.alpha_bar[-1]:.3e})"


def schedule_from_alpha_bar(alpha_bar: np.ndarray, name: str = "explicit", **meta: Any) -> Schedule:
    """Schedule from ᾱ_1..ᾱ_T (length T, e.g. diffusers' alphas_cumprod) or ᾱ_0..ᾱ_T (leading 1)."""
    ab = np.asarray(alpha_bar, dtype=np.float64).reshape(-1)
    if ab.size == 0:
        raise ValueError("schedule_from_alpha_bar: empty alpha_bar; pass ᾱ_1..ᾱ_T")
    # A leading exact 1 is ᾱ_0: no real diffusion step has ᾱ_1 = 1 (that would be a no-op step).
    if ab[0] != 1.0:
        ab = np.concatenate([[1.0], ab])
    return Schedule(name=name, alpha_bar=ab, meta=meta)


def schedule_from_betas(betas: np.ndarray, name: str = "betas", **meta: Any) -> Schedule:
    """Schedule from per-step β_1..β_T: ᾱ_t = Π_{s<=t} (1 - β_s) (paper §2.1)."""
    b = np.asarray(betas, dtype=np.float64).reshape(-1)
    if b.size == 0 or np.any(b <= 0.0) or np.any(b > 1.0):
        raise ValueError(
            f"schedule {name!r}: betas must be non-empty and in (0, 1]; got range "
            f"[{b.min() if b.size else 'n/a'}, {b.max() if b.size else 'n/a'}]"
        )
    return Schedule(name=name, alpha_bar=np.concatenate([[1.0], np.cumprod(1.0 - b)]), meta=meta)


def linear_schedule(
    T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, name: str = "linear"
) -> Schedule:
    """Linear-β schedule of Ho et al. (2020), paper §2.1: β_t linear from β_1 = beta_start to β_T = beta_end."""
    _check_T(T)
    betas = np.linspace(beta_start, beta_end, T, dtype=np.float64)
    return schedule_from_betas(betas, name=name, kind="linear", beta_start=beta_start, beta_end=beta_end)


def cosine_schedule(
    T: int = 1000, s_off: float = 0.008, max_beta: float | None = None, name: str | None = None
) -> Schedule:
    """Cosine schedule eq. (2): ᾱ_t = f(t)/f(0), f(t) = cos²((t/T + s_off)/(1 + s_off) · π/2).

    max_beta=None evaluates eq. (2) directly (ᾱ_T = cos²(π/2) ≈ 3.7e-33 in float64, not 0): this
    reproduces Table 1 and §7.4. max_beta=0.999 clips β_t = 1 - ᾱ_t/ᾱ_{t-1} like Nichol & Dhariwal and
    diffusers' "squaredcos_cap_v2" (only ᾱ_T changes, to ≈ 2.4e-9).
    """
    _check_T(T)
    if s_off < 0:
        raise ValueError(f"cosine_schedule: s_off must be >= 0 (paper eq. 2), got {s_off}")
    t = np.arange(T + 1, dtype=np.float64)
    f = np.cos((t / T + s_off) / (1.0 + s_off) * (math.pi / 2.0)) ** 2
    ab = f / f[0]
    ab[0] = 1.0
    if name is None:
        name = f"cosine_s{s_off:g}" + ("" if max_beta is None else f"_clip{max_beta:g}")
    meta = {"kind": "cosine", "s_off": s_off, "max_beta": max_beta}
    if max_beta is None:
        return Schedule(name=name, alpha_bar=ab, meta=meta)
    if not 0.0 < max_beta <= 1.0:
        raise ValueError(f"cosine_schedule: max_beta must be in (0, 1] or None, got {max_beta}")
    betas = np.minimum(1.0 - ab[1:] / ab[:-1], max_beta)
    return schedule_from_betas(betas, name=name, **meta)


def shifted_schedule(schedule: Schedule, shift: float, name: str | None = None) -> Schedule:
    """logSNR-shifted schedule (§6.5.2, eq. 61): logSNR'_t = logSNR_t + shift, i.e. SNR'_t = e^shift · SNR_t.

    For a resolution change d_base -> d use shift = 2·log(d_base/d) (eq. 61). ᾱ'_t = sigmoid(logSNR'_t),
    evaluated with numpy's logistic form so that ᾱ'_0 = 1 exactly.
    """
    ls = schedule.log_snr[1:] + float(shift)
    ab = np.concatenate([[1.0], 0.5 * (1.0 + np.tanh(0.5 * ls))])
    if name is None:
        name = f"{schedule.name}_shift{shift:+.4g}"
    return Schedule(name=name, alpha_bar=ab, meta={**schedule.meta, "logsnr_shift": float(shift)})


def _check_T(T: int) -> None:
    if int(T) != T or T < 1:
        raise ValueError(f"T (num_train_timesteps) must be a positive integer, got {T!r}")


def _diffusers_betas(cfg: Mapping[str, Any], float32: bool) -> np.ndarray:
    T = int(cfg.get("num_train_timesteps", 1000))
    kind = cfg.get("beta_schedule", "linear")
    b0 = float(cfg.get("beta_start", 1e-4))
    b1 = float(cfg.get("beta_end", 0.02))
    if cfg.get("trained_betas") is not None:
        return np.asarray(list(cfg["trained_betas"]), dtype=np.float32 if float32 else np.float64)
    if float32:
        # Replay diffusers' own float32 torch ops so ᾱ matches DDIMScheduler.alphas_cumprod bit for bit.
        import torch  # torch only for the float32 replay: pipeline.geometry stays torch-free

        if kind == "linear":
            return torch.linspace(b0, b1, T, dtype=torch.float32).numpy()
        if kind == "scaled_linear":
            return (torch.linspace(b0**0.5, b1**0.5, T, dtype=torch.float32) ** 2).numpy()
        if kind == "sigmoid":
            x = torch.linspace(-6, 6, T)
            return (torch.sigmoid(x) * (b1 - b0) + b0).numpy()
    if kind == "linear":
        return np.linspace(b0, b1, T, dtype=np.float64)
    if kind == "scaled_linear":
        return np.linspace(b0**0.5, b1**0.5, T, dtype=np.float64) ** 2
    if kind == "sigmoid":
        x = np.linspace(-6, 6, T)
        return 1.0 / (1.0 + np.exp(-x)) * (b1 - b0) + b0
    if kind == "squaredcos_cap_v2":
        # diffusers' betas_for_alpha_bar: offset 0.008 and max_beta 0.999 are hard-coded there.
        def fn(x: float) -> float:
            return math.cos((x + 0.008) / 1.008 * math.pi / 2) ** 2

        b = [min(1 - fn((i + 1) / T) / fn(i / T), 0.999) for i in range(T)]
        return np.asarray(b, dtype=np.float32 if float32 else np.float64)
    raise ValueError(
        f"diffusers beta_schedule {kind!r} is not supported; use one of linear, scaled_linear, "
        "squaredcos_cap_v2, sigmoid, or pass trained_betas"
    )


def schedule_from_diffusers_config(
    config: Mapping[str, Any], name: str | None = None, float32: bool = False
) -> Schedule:
    """Schedule from a diffusers scheduler config dict (scheduler_config.json of a checkpoint).

    Reads num_train_timesteps, beta_schedule, beta_start, beta_end, trained_betas and
    rescale_betas_zero_snr. diffusers builds betas and alphas_cumprod in float32; float32=True replays
    that (bit-identical ᾱ to DDIMScheduler.alphas_cumprod, then widened to float64), float32=False
    computes the same formulas in float64 (differences ~1e-7 relative).
    """
    cfg = dict(config)
    betas = _diffusers_betas(cfg, float32)
    if cfg.get("rescale_betas_zero_snr", False):
        betas = _rescale_zero_terminal_snr(betas.astype(np.float64)).astype(betas.dtype)
    if float32:
        # torch only for the float32 replay: pipeline.geometry stays torch-free
        import torch  # diffusers' own cumprod order in float32, so ᾱ matches it bit for bit

        ab = torch.cumprod(1.0 - torch.from_numpy(np.asarray(betas, dtype=np.float32)), dim=0).numpy()
        ab = ab.astype(np.float64)
    else:
        ab = np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))
    nm = name or str(cfg.get("_name", None) or f"diffusers_{cfg.get('beta_schedule', 'linear')}")
    sched = schedule_from_alpha_bar(ab, name=nm)
    return Schedule(
        name=sched.name,
        alpha_bar=sched.alpha_bar,
        meta={"kind": "diffusers", **{k: v for k, v in cfg.items() if k != "trained_betas"}},
    )


def _rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    # Lin et al. (2024) Algorithm 1, as in diffusers.rescale_zero_terminal_snr.
    ab_sqrt = np.sqrt(np.cumprod(1.0 - betas))
    a0, aT = ab_sqrt[0], ab_sqrt[-1]
    ab_sqrt = (ab_sqrt - aT) * a0 / (a0 - aT)
    ab = ab_sqrt**2
    alphas = np.concatenate([ab[:1], ab[1:] / ab[:-1]])
    return 1.0 - alphas


KINDS = ("linear", "cosine", "explicit", "diffusers")


def _check_config(cfg: Mapping[str, Any], kind: Any) -> None:
    """The `schedule` group's numbers that a schedule cannot be built from, named by key."""
    if kind not in ("linear", "cosine"):
        return
    T = int(cfg["num_train_timesteps"])
    if T < 1:
        raise SettingError(
            f"schedule.num_train_timesteps={T} — set it to a positive number of steps (e.g. 1000)"
        )
    if kind == "linear":
        for key in ("beta_start", "beta_end"):
            beta = float(cfg[key])
            if not 0.0 < beta <= 1.0:
                raise SettingError(
                    f"schedule.{key}={beta} — set it in (0, 1] (the paper's linear: 1e-4 to 0.02)"
                )
    if kind == "cosine":
        if float(cfg["s_off"]) < 0:
            raise SettingError(f"schedule.s_off={cfg['s_off']} — set it to at least 0 (eq. 2; 0.008 usual)")
        mb = cfg["max_beta"]
        if mb is not None and not 0.0 < float(mb) <= 1.0:
            raise SettingError(f"schedule.max_beta={mb} — set it in (0, 1], or null for no clipping")


def schedule_from_config(cfg: Mapping[str, Any]) -> Schedule:
    """Schedule from the Hydra `schedule` group: {name, kind: linear|cosine|explicit|diffusers, ...}.

    kind=linear: num_train_timesteps, beta_start, beta_end. kind=cosine: num_train_timesteps, s_off,
    max_beta (null = no clipping); each of these keys set (the schema's nodes; conf/schedule/ holds the values).
    Library kinds the config does not offer: kind=explicit: alpha_bar (list, ᾱ_1..ᾱ_T or ᾱ_0..ᾱ_T) or betas.
    kind=diffusers: a diffusers scheduler config under `config` (or inline keys), optional float32.
    Any kind accepts logsnr_shift (eq. 61) applied last.
    """
    cfg = dict(cfg)
    kind = cfg.get("kind")
    name = cfg.get("name") or str(kind)
    _check_config(cfg, kind)
    if kind == "linear":
        T = int(cfg["num_train_timesteps"])
        s = linear_schedule(T, float(cfg["beta_start"]), float(cfg["beta_end"]), name=name)
    elif kind == "cosine":
        mb = cfg["max_beta"]
        s = cosine_schedule(
            int(cfg["num_train_timesteps"]), float(cfg["s_off"]), None if mb is None else float(mb), name=name
        )
    elif kind == "explicit":
        if cfg.get("alpha_bar") is not None:
            s = schedule_from_alpha_bar(np.asarray(list(cfg["alpha_bar"]), dtype=np.float64), name=name)
        elif cfg.get("betas") is not None:
            s = schedule_from_betas(np.asarray(list(cfg["betas"]), dtype=np.float64), name=name)
        else:
            raise ValueError("schedule kind=explicit needs `alpha_bar` or `betas` (a list of floats)")
    elif kind == "diffusers":
        inner = cfg.get("config") or {k: v for k, v in cfg.items() if k not in ("name", "kind", "float32")}
        s = schedule_from_diffusers_config(inner, name=name, float32=bool(cfg.get("float32", False)))
    else:
        raise SettingError(
            f"schedule.kind={kind!r} is unknown — set schedule.kind to one of {', '.join(KINDS)} "
            "(or choose a preset: schedule=linear, schedule=cosine, ...)"
        )
    shift = cfg.get("logsnr_shift")
    if shift:
        s = shifted_schedule(s, float(shift), name=name)
    return s
