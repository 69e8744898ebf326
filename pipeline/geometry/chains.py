"""DDIM sampler chains: decreasing paper timesteps t_1 > ... > t_S and the ᾱ each step maps between.

Step s maps ᾱ(t_s) -> ᾱ_prev(s) = ᾱ(t_{s+1}); the last step maps to ``final_alpha_bar`` (1 unless
configured). All per-step quantities (b_t, L*_t, f_t, λ*(t)) are defined on the chain actually run.

diffusers correspondence (DDIMScheduler.set_timesteps, 0-based index i, paper t = i + 1), for
T = num_train_timesteps and N = num_inference_steps:

====================  ===========================================  ==========================================
our spacing           diffusers settings                           paper timesteps (T=1000, N=50)
====================  ===========================================  ==========================================
"trailing"            timestep_spacing="trailing", steps_offset=0  1000, 980, ..., 20   (0-based 999..19)
"leading"             timestep_spacing="leading", steps_offset=k   981+k, 961+k, ..., 1+k (0-based 980+k..k)
"linspace"            timestep_spacing="linspace"                  round(linspace(0, T-1, N)) + 1, reversed
====================  ===========================================  ==========================================

final_alpha_bar=1.0 is diffusers' set_alpha_to_one=True; set_alpha_to_one=False is final_alpha_bar=None
(the target becomes alphas_cumprod[0] = ᾱ_1). The paper's 50-step stride-20 chain (Table 1 row 4, §6.2)
is "trailing" with final_alpha_bar=1.0, i.e. DDIMScheduler(timestep_spacing="trailing", steps_offset=0,
set_alpha_to_one=True). Its Moran numbers (§7.4 λ** = 1.049681, §7.7 "49-step" λ** = 1.0497) come from
the same grid without the pure-noise step t = T: stride_chain(schedule, 20, start=980) = paper t
980, 960, ..., 20 -> ᾱ = 1, i.e. the trailing 50-step diffusers loop started at timesteps[1:].
diffusers' step() takes prev_timestep = t - T//N; that equals the
next grid point for "leading" and for "trailing" when N divides T, but not for "linspace" (diffusers#12633):
prev="diffusers" reproduces that rule instead of the grid's next point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.errors import SettingError

from .schedules import Schedule

SPACINGS = ("leading", "trailing", "linspace")


@dataclass(frozen=True, eq=False)
class Chain:
    """A DDIM chain: timesteps int64[S] (paper t, decreasing), alpha_bar_t f64[S], alpha_bar_prev f64[S]."""

    name: str
    timesteps: np.ndarray
    alpha_bar_t: np.ndarray
    alpha_bar_prev: np.ndarray

    def __post_init__(self) -> None:
        ts = np.array(self.timesteps, dtype=np.int64, copy=True).reshape(-1)
        a = np.array(self.alpha_bar_t, dtype=np.float64, copy=True).reshape(-1)
        p = np.array(self.alpha_bar_prev, dtype=np.float64, copy=True).reshape(-1)
        if not (ts.size == a.size == p.size) or ts.size == 0:
            raise ValueError(
                f"chain {self.name!r}: timesteps, alpha_bar_t and alpha_bar_prev must have the same "
                f"non-zero length (got {ts.size}, {a.size}, {p.size})"
            )
        if np.any(np.diff(ts) >= 0):
            raise ValueError(f"chain {self.name!r}: timesteps must be strictly decreasing, got {ts.tolist()}")
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(p))):
            raise ValueError(f"chain {self.name!r}: ᾱ values must be finite")
        if np.any(a < 0) or np.any(p > 1):
            raise ValueError(f"chain {self.name!r}: ᾱ values must lie in [0, 1]")
        if np.any(p <= a):
            s = int(np.argmax(p <= a))
            raise ValueError(
                f"chain {self.name!r}: step {s} (t={ts[s]}) does not move to a cleaner ᾱ "
                f"(ᾱ_prev={p[s]!r} <= ᾱ_t={a[s]!r}); a DDIM step needs ᾱ_prev > ᾱ_t. If this is the "
                "final step of a diffusers set_alpha_to_one=False chain ending at t=1, use final_alpha_bar=1.0"
            )
        for arr in (ts, a, p):
            arr.setflags(write=False)
        object.__setattr__(self, "timesteps", ts)
        object.__setattr__(self, "alpha_bar_t", a)
        object.__setattr__(self, "alpha_bar_prev", p)

    def __len__(self) -> int:
        return int(self.timesteps.size)

    @property
    def v_t(self) -> np.ndarray:
        return 1.0 - self.alpha_bar_t

    @property
    def v_prev(self) -> np.ndarray:
        return 1.0 - self.alpha_bar_prev

    def __repr__(self) -> str:
        return (
            f"Chain(name={self.name!r}, S={len(self)}, t={int(self.timesteps[0])}..{int(self.timesteps[-1])}, "
            f"final_alpha_bar={float(self.alpha_bar_prev[-1])!r})"
        )


def full_chain(schedule: Schedule, name: str | None = None) -> Chain:
    """Stride-1 chain t = T, T-1, ..., 1 with ᾱ_prev = ᾱ_{t-1} (the full training chain, ᾱ_0 = 1)."""
    T = schedule.T
    ts = np.arange(T, 0, -1, dtype=np.int64)
    ab = schedule.alpha_bar
    return Chain(name or f"{schedule.name}_full", ts, ab[ts], ab[ts - 1])


def diffusers_timesteps(
    T: int, num_steps: int, spacing: str = "leading", steps_offset: int = 0
) -> np.ndarray:
    """diffusers DDIMScheduler.set_timesteps grid as 0-based indices (decreasing), int64[num_steps]."""
    if not 1 <= num_steps <= T:
        raise SettingError(
            f"sampler.num_steps must be in [1, T={T}] (diffusers refuses num_inference_steps > num_train_timesteps) — "
            f"set sampler.num_steps between 1 and {T}; "
            f"got {num_steps}"
        )
    if spacing == "linspace":
        ts = np.linspace(0, T - 1, num_steps).round()[::-1].copy().astype(np.int64)
    elif spacing == "leading":
        step_ratio = T // num_steps
        ts = (np.arange(0, num_steps) * step_ratio).round()[::-1].copy().astype(np.int64) + int(steps_offset)
    elif spacing == "trailing":
        step_ratio = T / num_steps
        ts = np.round(np.arange(T, 0, -step_ratio)).astype(np.int64) - 1
    else:
        raise SettingError(
            f"sampler.spacing={spacing!r} is unknown — use one of {', '.join(SPACINGS)} "
            "(or spacing=explicit with sampler.timesteps)"
        )
    if ts.max() > T - 1 or ts.min() < 0:
        raise SettingError(
            f"sampler.spacing={spacing!r} with sampler.steps_offset={steps_offset} puts steps outside the "
            f"schedule's 1..{T} ({ts.min() + 1}..{ts.max() + 1}) — lower sampler.steps_offset"
        )
    return ts


def _final_target(schedule: Schedule, final_alpha_bar: float | None) -> float:
    # None mirrors diffusers' set_alpha_to_one=False: the last step lands on alphas_cumprod[0] = ᾱ_1.
    if final_alpha_bar is None:
        return float(schedule.alpha_bar[1])
    fa = float(final_alpha_bar)
    if not 0.0 < fa <= 1.0:
        raise ValueError(f"final_alpha_bar must be in (0, 1] or None (= ᾱ_1), got {final_alpha_bar!r}")
    return fa


def chain_from_timesteps(
    schedule: Schedule,
    timesteps: Sequence[int] | np.ndarray,
    final_alpha_bar: float | None = 1.0,
    name: str | None = None,
) -> Chain:
    """Chain on explicit decreasing paper timesteps; step s maps ᾱ(t_s) -> ᾱ(t_{s+1}), last -> final_alpha_bar."""
    ts = np.asarray(timesteps, dtype=np.int64).reshape(-1)
    if ts.size == 0 or ts.min() < 1 or ts.max() > schedule.T:
        raise ValueError(f"timesteps must be paper t in [1, T={schedule.T}], got {ts.tolist()[:8]}...")
    ab = schedule.alpha_bar
    prev = np.concatenate([ab[ts[1:]], [_final_target(schedule, final_alpha_bar)]])
    return Chain(name or f"{schedule.name}_explicit{ts.size}", ts, ab[ts], prev)


def strided_chain(
    schedule: Schedule,
    num_steps: int,
    spacing: str = "leading",
    final_alpha_bar: float | None = 1.0,
    steps_offset: int = 0,
    prev: str = "grid",
    name: str | None = None,
) -> Chain:
    """Strided DDIM chain on diffusers' grid (see the module table for the exact DDIMScheduler settings).

    spacing: "leading" | "trailing" | "linspace" (diffusers' timestep_spacing). steps_offset as diffusers'.
    final_alpha_bar: target of the last step (1.0 = set_alpha_to_one=True; None = ᾱ_1 = set_alpha_to_one=False).
    prev: "grid" (ᾱ_prev = ᾱ of the next grid timestep; the mathematically intended DDIM chain) or
    "diffusers" (ᾱ_prev at 0-based t - T//N as DDIMScheduler.step computes it; differs for "linspace").
    The paper's 50-step chain (Table 1, §7.4) is strided_chain(cosine, 50, "trailing", final_alpha_bar=1.0).
    """
    T = schedule.T
    idx = diffusers_timesteps(T, num_steps, spacing, steps_offset)
    paper_t = idx + 1
    if name is None:
        name = f"{schedule.name}_ddim{num_steps}_{spacing}" + (f"_off{steps_offset}" if steps_offset else "")
    if prev == "grid":
        return chain_from_timesteps(schedule, paper_t, final_alpha_bar, name=name)
    if prev == "diffusers":
        prev_idx = idx - T // num_steps
        final = _final_target(schedule, final_alpha_bar)
        ab = schedule.alpha_bar
        a_prev = np.where(prev_idx >= 0, ab[np.clip(prev_idx + 1, 0, T)], final)
        return Chain(name, paper_t, ab[paper_t], a_prev)
    raise ValueError(f"prev must be 'grid' or 'diffusers', got {prev!r}")


def stride_chain(
    schedule: Schedule,
    stride: int,
    start: int | None = None,
    num_steps: int | None = None,
    final_alpha_bar: float | None = 1.0,
    name: str | None = None,
) -> Chain:
    """Chain on paper t = start, start - stride, ... (> 0), optionally only its first num_steps steps.

    start=None is T: then it equals diffusers "trailing" when stride = T/N. stride=20, start=980 is the
    paper's 49-step Moran chain (§7.4, §7.7): the trailing 50-step grid without its t = T step; in diffusers,
    DDIMScheduler(timestep_spacing="trailing", set_alpha_to_one=True), set_timesteps(50), loop over
    timesteps[1:] (step() then takes prev_timestep = t - 20, the next grid point).
    """
    T = schedule.T
    start = T if start is None else int(start)
    if int(stride) != stride or stride < 1 or not 1 <= start <= T:
        raise ValueError(
            f"stride_chain needs an integer stride >= 1 and 1 <= start <= T={T}, got {stride}, {start}"
        )
    ts = np.arange(start, 0, -int(stride), dtype=np.int64)
    if num_steps is not None:
        if not 1 <= int(num_steps) <= ts.size:
            raise ValueError(
                f"num_steps={num_steps} exceeds the {ts.size} steps of stride {stride} from t={start}"
            )
        ts = ts[: int(num_steps)]
    return chain_from_timesteps(
        schedule, ts, final_alpha_bar, name=name or f"{schedule.name}_stride{stride}_from{start}_{ts.size}"
    )


def representative_timesteps(timesteps, count: int = 20) -> list[int]:
    """The §7.7 sparse protocol's "representative timesteps": ``count`` chain steps evenly spaced in step
    index, both ends included (the paper measures S_k,t at 20 of the 49 steps and interpolates).

    The paper does not say which 20; even spacing in step index is this project's convention. Returns
    paper t in chain order (decreasing); the whole chain when it has no more than ``count`` steps.
    """
    ts = np.asarray(timesteps, dtype=np.int64).reshape(-1)
    if int(count) < 2:
        raise ValueError(f"representative_timesteps needs count >= 2, got {count}")
    if ts.size <= int(count):
        return [int(t) for t in ts]
    idx = np.unique(np.round(np.linspace(0, ts.size - 1, int(count))).astype(np.int64))
    return [int(ts[i]) for i in idx]
