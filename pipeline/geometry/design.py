"""The three design criteria of §6.4 and their instances in §6.5 (cosine offset, resolution shift,
Min-SNR, optimal N-step allocation of Theorem 35)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.optimize import brentq

from .chains import Chain, chain_from_timesteps, full_chain, stride_chain, strided_chain
from .coefficients import contraction_threshold, expansion_function
from .moran import moran_threshold
from .schedules import Schedule, cosine_schedule, schedule_from_config, shifted_schedule

# ---------------------------------------------------------------- §6.4 criteria


def lyapunov_contributions(chain: Chain, lambda_starstar: float | None = None) -> np.ndarray:
    """Per-step Lyapunov contribution log f_t(λ**) (§6.4 criterion 2); sums to 0 by eq. (45)."""
    lss = moran_threshold(chain).lambda_starstar if lambda_starstar is None else float(lambda_starstar)
    return np.log(expansion_function(chain, lss))


def step_loads(schedule: Schedule, timesteps: np.ndarray) -> np.ndarray:
    """Contraction workload of each step (Thm 35 proof): Σ over the training steps it covers of
    D = 1/L*_t (stride-1 L*), divided by T; steps (t_{s+1}, t_s], the last one covering (0, t_S]."""
    ts = np.asarray(timesteps, dtype=np.int64)
    inv = np.concatenate([[0.0], np.cumsum(1.0 / contraction_threshold(full_chain(schedule))[::-1])])
    lower = np.concatenate([ts[1:], [0]])
    return (inv[ts] - inv[lower]) / schedule.T


@dataclass(frozen=True)
class DesignCriteria:
    """§6.4: (1) weakest link min_t L*_t, (2) Var_t log f_t(λ**), (3) CV of the per-step workload."""

    chain: str
    weakest_L: float  # criterion 1: min_t L*_t (≈ ½√v_1 at the finest step, eq. 58)
    weakest_t: int
    var_log_f: float  # criterion 2: Var_t log f_t(λ**)
    lambda_starstar: float
    workload_cv: float  # criterion 3: CV over steps of step_loads (nan if no schedule given)


def design_criteria(chain: Chain, schedule: Schedule | None = None) -> DesignCriteria:
    """Evaluate the three §6.4 criteria on one chain (pass its schedule for criterion 3)."""
    L = contraction_threshold(chain)
    i = int(np.argmin(L))
    mr = moran_threshold(chain)
    contrib = lyapunov_contributions(chain, mr.lambda_starstar)
    cv = float("nan")
    if schedule is not None:
        loads = step_loads(schedule, chain.timesteps)
        cv = float(loads.std() / loads.mean())
    return DesignCriteria(
        chain.name, float(L[i]), int(chain.timesteps[i]), float(contrib.var()), mr.lambda_starstar, cv
    )


# ---------------------------------------------------------------- §6.5.4 Theorem 35


def optimal_step_density(schedule: Schedule) -> np.ndarray:
    """ρ*_t ∝ 1/L*_t on t = 1..T, eq. (64), normalised to sum 1 (index 0 is t = 1)."""
    inv = 1.0 / contraction_threshold(full_chain(schedule))[::-1]
    return inv / inv.sum()


def optimal_chain(
    schedule: Schedule, num_steps: int, final_alpha_bar: float | None = 1.0, name: str | None = None
) -> Chain:
    """N-step chain with step density ρ ∝ 1/L*, eq. (64) (Thm 35): every step covers an equal share of
    Σ_t 1/L*_t, so the per-step workload is equalised; the coarsest step starts at t = T."""
    T = schedule.T
    if not 1 <= num_steps <= T:
        raise ValueError(f"num_steps must be in [1, T={T}], got {num_steps}")
    mass = np.cumsum(optimal_step_density(schedule))  # mass[t-1] = share of steps 1..t
    levels = np.arange(1, num_steps + 1) / num_steps
    t = np.searchsorted(mass, levels - 1e-12) + 1  # smallest t whose cumulative share reaches the level
    t = np.minimum(t, T)
    t[-1] = T
    # Enforce distinct steps: at least one training step per DDIM step, keeping t_N = T.
    for j in range(1, num_steps):
        t[j] = max(t[j], t[j - 1] + 1)
    for j in range(num_steps - 1, -1, -1):
        t[j] = min(t[j], T - (num_steps - 1 - j))
    return chain_from_timesteps(
        schedule, t[::-1].copy(), final_alpha_bar, name=name or f"{schedule.name}_optimal{num_steps}"
    )


# ---------------------------------------------------------------- §6.5.1 cosine offset


@dataclass(frozen=True)
class CosineOffset:
    """§6.5.1 at one offset: v_1 eq. (59), exact L*_1 eq. (10) with ᾱ_0 = 1, and ½√v_1 eq. (58)."""

    s_off: float
    T: int
    v1: float
    L1: float
    L1_approx: float


def cosine_offset_L1(s_off: float, T: int = 1000) -> CosineOffset:
    """Weakest link L*_1 of the cosine schedule with offset s_off (§6.5.1, eqs. 58-59)."""
    x = (1.0 / T + s_off) / (1.0 + s_off) * (math.pi / 2)
    x0 = s_off / (1.0 + s_off) * (math.pi / 2)
    # 1 - cos²x/cos²x0 = (sin²x - sin²x0)/cos²x0 = sin(x-x0) sin(x+x0)/cos²x0, without cancellation.
    v1 = math.sin(x - x0) * math.sin(x + x0) / math.cos(x0) ** 2
    L1 = float(contraction_threshold(full_chain(cosine_schedule(T, s_off)))[-1])
    return CosineOffset(float(s_off), int(T), v1, L1, 0.5 * math.sqrt(v1))


def cosine_offset_ratio(s_off: float = 0.008, s_base: float = 0.0, T: int = 1000) -> float:
    """L*_1(s_off) / L*_1(s_base), exact (§6.5.1 prints ≈ 4.05 for 0.008 vs 0)."""
    return cosine_offset_L1(s_off, T).L1 / cosine_offset_L1(s_base, T).L1


# ---------------------------------------------------------------- §6.5.2 resolution shift


def resolution_shift(d: float, d_base: float = 64.0) -> float:
    """logSNR shift c = 2 log(d_base/d) of eq. (61) for resolution d against reference d_base."""
    if d <= 0 or d_base <= 0:
        raise ValueError(f"resolutions must be positive, got d={d}, d_base={d_base}")
    return 2.0 * math.log(d_base / d)


def expansion_function_snr(chain: Chain, lam: np.ndarray | float, shift: float = 0.0) -> np.ndarray:
    """Eq. (62) with SNR_t -> e^shift SNR_t but the step ratios √(ᾱ_prev/ᾱ_t), √(v_prev/v_t) kept — the
    frozen-ratio operator of eq. (63): equals f_t(e^shift λ); shift = 0 is eq. (26). Shape [S, *lam.shape]."""
    lam = np.asarray(lam, dtype=np.float64)
    shape = (len(chain),) + (1,) * lam.ndim
    a = chain.alpha_bar_t.reshape(shape)
    p = chain.alpha_bar_prev.reshape(shape)
    snr = math.exp(shift) * a / (1.0 - a)
    return (np.sqrt(p / a) * lam * snr + np.sqrt((1.0 - p) / (1.0 - a))) / (lam * snr + 1.0)


@dataclass(frozen=True)
class ShiftCheck:
    """Prop. 33 on one schedule: predicted e^{-c} λ** vs the frozen-ratio and the real shifted schedule."""

    shift: float
    lambda_base: float
    predicted: float  # e^{-c} λ**(base)
    lambda_frozen: float  # root of Π_t f_t^{(63)}(λ) = 1 with frozen step ratios: = predicted
    lambda_shifted: float  # λ** of the actual logSNR-shifted schedule (eq. 61)


def moran_shift_check(schedule: Schedule, shift: float) -> ShiftCheck:
    """Compare Prop. 33's λ**(shifted) = e^{-c} λ** with the actual shifted schedule's λ** (full chains)."""
    base = full_chain(schedule)
    lb = moran_threshold(base).lambda_starstar
    pred = math.exp(-shift) * lb

    def g(lam: float) -> float:
        return float(np.sum(np.log(expansion_function_snr(base, lam, shift))))

    lo, hi = pred / 4.0, pred * 4.0
    lam_frozen = brentq(g, lo, hi, xtol=1e-14, rtol=4.5 * np.finfo(float).eps)
    ls = moran_threshold(full_chain(shifted_schedule(schedule, shift))).lambda_starstar
    return ShiftCheck(float(shift), lb, pred, float(lam_frozen), ls)


# ---------------------------------------------------------------- §6.5.3 Min-SNR


def min_snr_weights(schedule: Schedule, gamma: float = 5.0) -> np.ndarray:
    """Min-SNR-γ loss weights w_t = min(SNR_t, γ)/SNR_t for t = 1..T (§6.5.3, Prop. 34)."""
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    snr = schedule.alpha_bar[1:] / (1.0 - schedule.alpha_bar[1:])
    return np.minimum(snr, gamma) / snr


@dataclass(frozen=True)
class SNRCrossing:
    """Where SNR_t falls through γ (§6.5.3: cosine, γ = 5 -> t ≈ 260 with L*_t ≈ 0.41)."""

    gamma: float
    t: int  # largest t with SNR_t >= γ (the clamp is active for t <= this)
    L_star: float  # stride-1 L*_t at that t
    sqrt_v: float  # √v_t (Cor. 30: L*_t ≈ √v_t)


def snr_crossing(schedule: Schedule, gamma: float = 5.0) -> SNRCrossing:
    """Regime I/II transition proxy of Prop. 34: the step where SNR_t crosses the Min-SNR clamp γ."""
    ab = schedule.alpha_bar[1:]
    snr = ab / (1.0 - ab)
    above = np.nonzero(snr >= gamma)[0]
    if above.size == 0:
        raise ValueError(f"SNR_t < γ={gamma} at every step of {schedule.name!r}; lower gamma")
    t = int(above[-1]) + 1
    L = contraction_threshold(full_chain(schedule))[::-1][t - 1]
    return SNRCrossing(float(gamma), t, float(L), float(math.sqrt(1.0 - ab[t - 1])))


@dataclass(frozen=True)
class SamplerSpec:
    """The Hydra `sampler` group read once: which timesteps a chain takes, laid on a schedule by ``chain``.

    num_steps null or spacing=full gives the full stride-1 chain (num_steps = T with any spacing and
    steps_offset 0 gives the same timesteps). spacing=explicit takes `timesteps` (paper t, decreasing).
    spacing=stride takes `stride` and `start` (paper t; default T) — see stride_chain. spacing=optimal builds
    the Theorem 35 allocation chain. spacing, num_steps and final_alpha_bar are always read, and steps_offset
    for the diffusers grids (leading | trailing | linspace): the schema's nodes set them (conf/sampler/);
    ``prev`` (the grid's ᾱ_prev rule, default grid) is a library option the config does not offer.
    """

    spacing: str
    num_steps: int | None
    final_alpha_bar: float | None
    name: str | None = None
    steps_offset: int | None = None  # the diffusers grids' only
    timesteps: tuple[int, ...] | None = None  # spacing=explicit
    stride: int | None = None  # spacing=stride, with start
    start: int | None = None
    prev: str = "grid"

    @property
    def full(self) -> bool:
        return self.spacing == "full" or self.num_steps is None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> SamplerSpec:
        cfg = dict(cfg)
        spacing, n = cfg["spacing"], cfg["num_steps"]
        spec = cls(spacing, None if n is None else int(n), cfg["final_alpha_bar"], cfg.get("name"))
        if spec.full or spacing == "optimal":
            return spec
        if spacing == "explicit":
            if cfg.get("timesteps") is None:
                raise ValueError("sampler spacing=explicit needs `timesteps` (decreasing paper t)")
            return replace(spec, timesteps=tuple(cfg["timesteps"]))
        if spacing == "stride":
            if cfg.get("stride") is None:
                raise ValueError("sampler spacing=stride needs `stride` (and optionally `start`, paper t)")
            return replace(spec, stride=int(cfg["stride"]), start=cfg.get("start"))
        return replace(spec, steps_offset=int(cfg["steps_offset"]), prev=cfg.get("prev", "grid"))

    def chain(self, schedule: Schedule) -> Chain:
        """The chain these timesteps make on ``schedule``, named <schedule>_<sampler>."""
        full_name = f"{schedule.name}_{self.name}" if self.name else None
        final = self.final_alpha_bar
        if self.full:
            ch = full_chain(schedule)
            return Chain(full_name or ch.name, ch.timesteps, ch.alpha_bar_t, ch.alpha_bar_prev)
        if self.spacing == "explicit":
            return chain_from_timesteps(schedule, list(self.timesteps or ()), final, name=full_name)
        if self.spacing == "stride":
            return stride_chain(
                schedule, int(self.stride or 0), self.start, self.num_steps, final, name=full_name
            )
        if self.spacing == "optimal":
            return optimal_chain(schedule, int(self.num_steps), final_alpha_bar=final, name=full_name)
        return strided_chain(
            schedule,
            int(self.num_steps),
            spacing=self.spacing,
            final_alpha_bar=final,
            steps_offset=int(self.steps_offset or 0),
            prev=self.prev,
            name=full_name,
        )


def chain_from_config(schedule: Schedule, cfg: Mapping[str, Any]) -> Chain:
    """Chain from the Hydra `sampler` group on ``schedule`` (see SamplerSpec)."""
    return SamplerSpec.from_config(cfg).chain(schedule)


@dataclass(frozen=True)
class Sampling:
    """The `schedule` and `sampler` groups read: the configured ᾱ_t and the timesteps a chain takes."""

    schedule: Schedule
    sampler: SamplerSpec


def sampling_from_config(schedule_cfg: Mapping[str, Any], sampler_cfg: Mapping[str, Any]) -> Sampling:
    """Both sampling groups read at once (a model's own ᾱ_t may replace the schedule: SamplerSpec.chain)."""
    return Sampling(schedule_from_config(schedule_cfg), SamplerSpec.from_config(sampler_cfg))
