"""Synthetic runs built so that a prediction holds, fails or cannot be decided: in-memory stage outputs in the
jacobian stage's column schema, from which the control tests show every verdict rule and every table's
headline statistic able to give each of its outcomes. Nothing here is a measurement.

A ``ControlRun`` describes a run by the arrays its columns come from, each a function of the chain's
t/T [S], the normalised patch variance λ_n ∈ [0, 1] [M] and a seeded generator; the derived columns
(S_k,t = f_t(λ_k) − ρ_k,t, the (PC) slack, κ̂^diag, δ̂^cross) are computed the way the stage computes them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline.analysis.inputs import AnalysisInputs
from pipeline.analysis.synthetic import T, linear_schedule_node
from pipeline.geometry import expansion_function, linear_schedule, stride_chain

# the paper's proxy timesteps (Table 10)
PROXY_T = (999, 990, 980, 960, 940, 920, 900, 850, 800, 700, 600, 500, 400, 300)
Field = Callable[[np.ndarray, np.ndarray, np.random.Generator, int], np.ndarray]


def _columns(rows: list[dict]) -> dict[str, np.ndarray]:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return {k: np.array([r.get(k, math.nan) for r in rows], dtype=np.float64) for k in keys}


@dataclass
class ControlRun:
    """A synthetic learned-model run. Fields return arrays shaped [S, M, seeds] (per-patch), [S, seeds]
    (per step) or [M, seeds] (per patch); ``rayleigh`` wins over ``suppression`` when both are given."""

    seeds: int = 4
    steps: int = 20
    grid: int = 4
    lam_range: tuple[float, float] = (18.7, 44.4)  # the paper's CIFAR-10 λ_k range (§7.2)
    num_images: int | None = 50_000
    suppression: Field | None = None  # S_k,t
    rayleigh: Field | None = None  # ⟨v_k,[JΦ_t]_kk v_k⟩
    coupling: Field | None = None  # C_k,t
    kappa: Field | None = None  # global κ̂_t [S, seeds]
    entropy: Field | None = None  # H(A_t) [S, seeds]; called with δ̂^cross [S, seeds] in place of λ_n
    lyap_hat: Field | None = None  # Λ̂_k [M, seeds]
    deviation: Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]] | None = None
    seed: int = 0
    extra_config: dict = field(default_factory=dict)

    def chain(self):
        return stride_chain(linear_schedule(T), T // self.steps, num_steps=self.steps)

    def lam(self) -> np.ndarray:
        M = self.grid**2
        lo, hi = self.lam_range
        return lo + (hi - lo) * np.random.default_rng(self.seed).permutation(M) / (M - 1)

    def inputs(self) -> AnalysisInputs:
        """The run as AnalysisInputs (what load_stage_outputs would give for the same files)."""
        rng = np.random.default_rng(self.seed)
        chain = self.chain()
        ts, frac = chain.timesteps, chain.timesteps / T
        lam = self.lam()
        lam_n = (lam - lam.min()) / (lam.max() - lam.min())
        F = expansion_function(chain, lam)  # [S, M]
        M, n_s = len(lam), self.seeds
        if self.rayleigh is not None:
            R = self.rayleigh(frac, lam_n, rng, n_s)
        elif self.suppression is not None:
            R = F[..., None] - self.suppression(frac, lam_n, rng, n_s)
        else:
            R = np.repeat(F[..., None], n_s, axis=2)
        C = self.coupling(frac, lam_n, rng, n_s) if self.coupling is not None else np.zeros_like(R)
        inp = AnalysisInputs(jacobian_meta={"config": self.config()})
        inp.covariance_patches = _columns(
            [
                {
                    "k": k,
                    "row": k // self.grid,
                    "col": k % self.grid,
                    "lambda_k": lam[k],
                    "count": self.num_images or math.nan,
                }
                for k in range(M)
            ]
        )
        inp.patches = _columns(
            [
                {
                    "seed": s,
                    "step": i,
                    "t": int(t),
                    "k": k,
                    "lambda_k": lam[k],
                    "f_t": F[i, k],
                    "rayleigh": R[i, k, s],
                    "suppression": F[i, k] - R[i, k, s],
                    "diag_norm": abs(R[i, k, s]),
                    "coupling": C[i, k, s],
                    "pc_slack_rayleigh": 1.0 - R[i, k, s] - C[i, k, s],
                }
                for s in range(n_s)
                for i, t in enumerate(ts)
                for k in range(M)
            ]
        )
        inp.global_ = _columns(self._global_rows(chain, R, C, rng))
        if self.entropy is not None:
            H = self.entropy(frac, C.max(axis=1), rng, n_s)
            inp.attention = _columns(
                [
                    {"seed": s, "step": i, "t": int(t), "entropy": H[i, s]}
                    for s in range(n_s)
                    for i, t in enumerate(ts)
                ]
            )
        if self.lyap_hat is not None:
            Lh = self.lyap_hat(frac, lam_n, rng, n_s)
            gauss = np.log(F).mean(axis=0)
            inp.lyapunov = _columns(
                [
                    {"seed": s, "k": k, "lambda_k": lam[k], "lyap_hat": Lh[k, s], "lyap_gauss": gauss[k]}
                    for s in range(n_s)
                    for k in range(M)
                ]
            )
        if self.deviation is not None:
            ab = linear_schedule(T).alpha_bar
            sab = np.sqrt(np.array([ab[t] for t in PROXY_T]))
            proxy, exact = self.deviation(sab, rng)
            inp.proxy = _columns(
                [
                    {"t": t, "sqrt_alpha_bar": sab[j], "proxy": proxy[j], "exact_deviation": exact[j]}
                    for j, t in enumerate(PROXY_T)
                ]
            )
        return inp

    def _global_rows(self, chain, R, C, rng) -> list[dict]:
        K = self.kappa(chain.timesteps / T, None, rng, self.seeds) if self.kappa is not None else None
        rows = []
        for s in range(self.seeds):
            for i, t in enumerate(chain.timesteps):
                kd, dc = float(np.max(np.abs(R[i, :, s]))), float(np.max(C[i, :, s]))
                kappa = float(K[i, s]) if K is not None else kd + dc
                rows.append(
                    {
                        "seed": s,
                        "step": i,
                        "t": int(t),
                        "alpha_bar_t": chain.alpha_bar_t[i],
                        "alpha_bar_prev": chain.alpha_bar_prev[i],
                        "kappa_dense": kappa,
                        "kappa_pi": kappa * (1 - 1e-3),
                        "kappa_diag": kd,
                        "delta_cross": dc,
                    }
                )
        return rows

    def config(self) -> dict:
        return {
            "model": {"kind": "unet", "name": "control", "dtype": "float64"},
            "schedule": linear_schedule_node(),
            "sampler": {
                "name": "control",
                "num_steps": self.steps,
                "spacing": "synthetic",
                "final_alpha_bar": 1.0,
            },
            "patch": {"size": 4},
            "dataset": {"name": "synthetic", "num_images": self.num_images},
            **self.extra_config,
        }


def noise(scale: float, shape_of: str = "tms") -> Field:
    """A zero field plus seeded Gaussian noise of the given scale ([S, M, seeds] or [S, seeds])."""

    def f(frac, lam_n, rng, n_s):
        shape = (len(frac), len(lam_n), n_s) if shape_of == "tms" else (len(frac), n_s)
        return scale * rng.standard_normal(shape)

    return f


def tms(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], sd: float = 0.0) -> Field:
    """A per-patch field [S, M, seeds] from fn(t/T [S, 1], λ_n [1, M]) plus per-seed noise of sd."""

    def f(frac, lam_n, rng, n_s):
        base = np.broadcast_to(fn(frac[:, None], lam_n[None, :]), (len(frac), len(lam_n)))
        return base[..., None] + sd * rng.standard_normal((len(frac), len(lam_n), n_s))

    return f


def ts(fn: Callable[[np.ndarray], np.ndarray], sd: float = 0.0) -> Field:
    """A per-step field [S, seeds] from fn(t/T [S]) plus per-seed noise of sd."""

    def f(frac, lam_n, rng, n_s):
        return fn(frac)[:, None] + sd * rng.standard_normal((len(frac), n_s))

    return f


def ms(fn: Callable[[np.ndarray], np.ndarray], sd: float = 0.0) -> Field:
    """A per-patch field [M, seeds] from fn(λ_n [M]) plus per-seed noise of sd."""

    def f(frac, lam_n, rng, n_s):
        return fn(lam_n)[:, None] + sd * rng.standard_normal((len(lam_n), n_s))

    return f
