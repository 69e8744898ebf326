"""One measurement of the DDIM step Jacobian JΦ_t = r_t I + b_t Jε̂ (eq. 7) at one trajectory point.

`measure_step` is what the jacobian stage calls per (seed, step): global norm κ̂_t (Table 4) by
power iteration and by Golub-Kahan-Lanczos on the same budget, the directional Rayleigh
quotients and suppression field S_k,t (eq. 30-32, §7.2-7.3), the block decomposition
κ̂_k,t^diag, C_k,t, δ̂^cross, κ̂^pc, per-patch (PC) slack (eq. 15-19, Tables 5 and 8) and the
Frobenius block norms behind C̄_kj (Table 7).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.errors import SettingError

from .blocks import BlockNorms, block_power_norms, dense_block_norms, patch_rayleigh
from .operators import JVP_METHODS, ScoreLinearization, StepJacobian
from .patches import patch_index
from .spectral import golub_kahan, power_iteration, random_start

BLOCK_METHODS = ("auto", "dense", "power", "lanczos", "diag", "off")


@dataclass
class MeasureConfig:
    """Settings of `measure_step`; mirrors conf/measure/<name>.yaml (keys under `measure`)."""

    power_iters: int = 20  # K_PI of the global power iteration (paper §7.1: 20)
    lanczos_iters: int | None = None  # Golub-Kahan steps; None = power_iters (same matvec budget)
    global_power: bool = True
    global_lanczos: bool = True
    rayleigh: bool = True  # Rayleigh quotients along v_k and S_k,t (needs v1)
    rayleigh_via: str = "vjp"  # "vjp" or "jvp": ⟨v, Bv⟩ = ⟨Bᵀv, v⟩, same number
    blocks: str = "auto"  # auto | dense | power | lanczos | diag (diagonal blocks only, Lanczos) | off
    block_power_iters: int = 10  # K per block, power or Lanczos (paper Table 5: 10; Table 8: 30)
    frob_probes: int = 200  # Hutchinson probes (power/Lanczos blocks; 0: skip): relative SE <= sqrt(1/(2p))
    keep_block_matrices: bool = True  # return the [M, M] op / Frobenius matrices
    dense_max_n: int = 16384  # never build the dense Jacobian above this n
    dense_global_max_n: int = 4096  # exact ‖JΦ‖ from the dense matrix (an n x n SVD) up to this n
    chunk_size: int | None = 16  # vectors per vmapped call (memory bound; CPU cost per vector flat in it)
    jvp_method: str = "auto"  # auto | linearize | double_vjp | forward (see operators.py)
    # Costs in forward-pass equivalents per vector (benchmarks/jacobian.py measures them); only
    # the automatic choices of block method and JVP method use them.
    cost_vjp: float = 0.8
    cost_jvp_double_vjp: float = 2.0
    cost_jvp_linearized: float = 0.8
    cost_linearize_trace: float = 80.0

    def __post_init__(self):
        if self.blocks not in BLOCK_METHODS:
            raise SettingError(f"measure.blocks={self.blocks!r} is unknown — use one of {BLOCK_METHODS}")
        if self.jvp_method not in ("auto",) + JVP_METHODS:
            raise SettingError(
                f"measure.jvp_method={self.jvp_method!r} is unknown — use auto or one of {JVP_METHODS}"
            )
        if self.rayleigh_via not in ("vjp", "jvp"):
            raise SettingError(f"measure.rayleigh_via={self.rayleigh_via!r} is unknown — use 'vjp' or 'jvp'")
        for name in ("power_iters", "block_power_iters"):
            if int(getattr(self, name)) < 1:
                raise SettingError(f"measure.{name}={getattr(self, name)} — set measure.{name} to at least 1")

    @property
    def lanczos_steps(self) -> int:
        return int(self.lanczos_iters if self.lanczos_iters is not None else self.power_iters)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> MeasureConfig:
        """From the Hydra `measure` node (keys checked by the config schema, pipeline.schema); drops `name`."""
        cfg = dict(cfg or {})
        cfg.pop("name", None)
        return cls(**cfg)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StepMeasurement:
    """Everything measured about JΦ_t at one point x_t (the CSV columns it fills are documented in docs/)."""

    r: float
    b: float
    n: int
    num_patches: int
    kappa_pi: float = math.nan
    kappa_pi_change: float = math.nan
    kappa_pi_residual: float = math.nan
    pi_iters: int = 0
    kappa_lanczos: float = math.nan
    lanczos_residual: float = math.nan
    lanczos_change: float = math.nan
    lanczos_iters: int = 0
    kappa_dense: float = math.nan
    rayleigh: np.ndarray | None = None
    expansion: np.ndarray | None = None
    diag_norm: np.ndarray | None = None  # ‖[JΦ_t]_kk‖_op: exact (dense) or the best of two lower bounds
    coupling: np.ndarray | None = None
    block_op: np.ndarray | None = None
    block_frob: np.ndarray | None = None
    block_method: str = "off"
    block_iters: int = 0
    block_change: np.ndarray | None = None
    block_frob_probes: int = 0
    jvp_method: str = ""
    jvps: int = 0
    vjps: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    # ---- derived quantities (paper names) ----
    @property
    def suppression(self) -> np.ndarray | None:
        """S_k,t = f_t(λ_k) − ⟨v_k, [JΦ_t]_kk v_k⟩ (eq. 30 via eq. 32)."""
        if self.rayleigh is None or self.expansion is None:
            return None
        return self.expansion - self.rayleigh

    @property
    def margin(self) -> np.ndarray | None:
        """γ_k,t = S_k,t − (f_t(λ_k) − 1) = 1 − Rayleigh quotient (eq. 31)."""
        s = self.suppression
        return None if s is None else s - (self.expansion - 1.0)

    @property
    def pc_slack(self) -> np.ndarray | None:
        """(1 − ‖[JΦ_t]_kk‖_op) − C_k,t: per-patch slack of condition (17)."""
        if self.diag_norm is None or self.coupling is None:
            return None
        return (1.0 - self.diag_norm) - self.coupling

    @property
    def pc_slack_rayleigh(self) -> np.ndarray | None:
        """(1 − κ̂_k,t^diag) − C_k,t with κ̂_k,t^diag the Rayleigh quotient of eq. 32 (Table 8's δ^loc)."""
        if self.rayleigh is None or self.coupling is None:
            return None
        return (1.0 - self.rayleigh) - self.coupling

    @property
    def kappa_diag(self) -> float:
        """κ̂_t^diag = max_k ‖[JΦ_t]_kk‖_op (eq. 18 at this x)."""
        return float(np.max(self.diag_norm)) if self.diag_norm is not None else math.nan

    @property
    def delta_cross(self) -> float:
        """δ̂_t^cross = max_k C_k,t (eq. 18 at this x)."""
        return float(np.max(self.coupling)) if self.coupling is not None else math.nan

    @property
    def kappa_pc(self) -> float:
        """κ̂_t^pc = κ̂_t^diag + δ̂_t^cross (eq. 19)."""
        return self.kappa_diag + self.delta_cross

    @property
    def kappa_pc_blockmax(self) -> float:
        """max_k (‖[JΦ_t]_kk‖ + C_k,t): the tighter per-patch form of condition (17)."""
        if self.diag_norm is None or self.coupling is None:
            return math.nan
        return float(np.max(self.diag_norm + self.coupling))

    # ---- long-format rows ----
    def global_row(self) -> dict[str, Any]:
        row = {
            "r": self.r,
            "b": self.b,
            "n": self.n,
            "M": self.num_patches,
            "kappa_pi": self.kappa_pi,
            "kappa_pi_change": self.kappa_pi_change,
            "kappa_pi_residual": self.kappa_pi_residual,
            "pi_iters": self.pi_iters,
            "kappa_lanczos": self.kappa_lanczos,
            "lanczos_residual": self.lanczos_residual,
            "lanczos_change": self.lanczos_change,
            "lanczos_iters": self.lanczos_iters,
            "kappa_dense": self.kappa_dense,
            "kappa_diag": self.kappa_diag,
            "delta_cross": self.delta_cross,
            "kappa_pc": self.kappa_pc,
            "kappa_pc_blockmax": self.kappa_pc_blockmax,
            "rayleigh_max": _max(self.rayleigh),
            "suppression_min": _min(self.suppression),
            "suppression_mean": _mean(self.suppression),
            "pc_slack_min": _min(self.pc_slack),
            "pc_violated": _count_neg(self.pc_slack),
            "pc_slack_rayleigh_min": _min(self.pc_slack_rayleigh),
            "pc_violated_rayleigh": _count_neg(self.pc_slack_rayleigh),
            "block_method": self.block_method,
            "block_iters": self.block_iters,
            "block_change_max": _max(self.block_change),
            "block_frob_probes": self.block_frob_probes,
            "jvp_method": self.jvp_method,
            "jvps": self.jvps,
            "vjps": self.vjps,
            "seconds": float(sum(self.seconds.values())),
        }
        return row

    def patch_rows(self) -> list[dict[str, Any]]:
        M = self.num_patches
        cols = {
            "rayleigh": self.rayleigh,
            "expansion": self.expansion,
            "suppression": self.suppression,
            "margin": self.margin,
            "diag_norm": self.diag_norm,
            "coupling": self.coupling,
            "pc_slack": self.pc_slack,
            "pc_slack_rayleigh": self.pc_slack_rayleigh,
        }
        rows = []
        for k in range(M):
            row = {"k": k}
            for name, arr in cols.items():
                row[name] = float(arr[k]) if arr is not None else math.nan
            rows.append(row)
        return rows

    def block_rows(self, grid: tuple[int, int] | None = None) -> list[dict[str, Any]]:
        """One row per ordered block (k, j): op and Frobenius norms of [JΦ_t]_kj, Chebyshev distance."""
        if self.block_op is None:
            return []
        M = self.num_patches
        if grid is None:
            side = int(round(math.sqrt(M)))
            grid = (side, M // side)
        cols = grid[1]
        rows = []
        for k in range(M):
            for j in range(M):
                d = max(abs(k // cols - j // cols), abs(k % cols - j % cols))
                rows.append(
                    {
                        "k": k,
                        "j": j,
                        "distance": d,
                        "op": float(self.block_op[k, j]),
                        "frob": float(self.block_frob[k, j]) if self.block_frob is not None else math.nan,
                    }
                )
        return rows


def _max(a):
    return float(np.max(a)) if a is not None else math.nan


def _min(a):
    return float(np.min(a)) if a is not None else math.nan


def _mean(a):
    return float(np.mean(a)) if a is not None else math.nan


def _count_neg(a):
    return int(np.sum(a < 0)) if a is not None else -1


def measurement_seed(seed: int, step: int) -> int:
    """Seed of the start vectors at (trajectory seed, chain step): distinct and stable across runs."""
    return int(seed) * 1_000_003 + int(step) + 7919


@dataclass
class Plan:
    """Which block method and JVP method one measurement uses, and the estimated cost (forward passes)."""

    blocks: str
    jvp_method: str
    estimated_cost: float
    costs: dict[str, float]


def plan_measurement(n: int, M: int, cfg: MeasureConfig, have_v1: bool) -> Plan:
    """Choose dense vs block power iteration and the JVP method from the estimated costs."""
    K = cfg.power_iters if cfg.global_power else 0
    L = cfg.lanczos_steps if cfg.global_lanczos else 0
    global_jvps, global_vjps = K + L, K + L
    ray = M if (cfg.rayleigh and have_v1) else 0

    def jvp_cost(count: int) -> tuple[str, float]:
        if cfg.jvp_method != "auto":
            per = {
                "linearize": cfg.cost_jvp_linearized,
                "double_vjp": cfg.cost_jvp_double_vjp,
                "forward": 2 * cfg.cost_jvp_double_vjp,
            }[cfg.jvp_method]
            extra = cfg.cost_linearize_trace if cfg.jvp_method == "linearize" else 0.0
            return cfg.jvp_method, count * per + extra
        dv = count * cfg.cost_jvp_double_vjp
        lin = count * cfg.cost_jvp_linearized + cfg.cost_linearize_trace
        return ("linearize", lin) if lin < dv else ("double_vjp", dv)

    ray_jvps = ray if cfg.rayleigh_via == "jvp" else 0
    ray_vjps = ray - ray_jvps
    costs: dict[str, tuple[str, float]] = {}
    base_vjp = (global_vjps + ray_vjps) * cfg.cost_vjp
    method, c = jvp_cost(global_jvps + ray_jvps)
    costs["off"] = (method, c + base_vjp)
    Kb = cfg.block_power_iters
    p_jvps = Kb * M * M + cfg.frob_probes * M
    method, c = jvp_cost(global_jvps + ray_jvps + p_jvps)
    costs["power"] = (method, c + base_vjp + Kb * M * M * cfg.cost_vjp)
    costs["lanczos"] = costs["power"]
    method, c = jvp_cost(global_jvps + ray_jvps + Kb * M)
    costs["diag"] = (method, c + base_vjp + Kb * M * cfg.cost_vjp)
    method, c = jvp_cost(global_jvps + ray_jvps)
    costs["dense"] = (method, c + base_vjp + n * cfg.cost_vjp) if n <= cfg.dense_max_n else (method, math.inf)
    if cfg.blocks == "auto":
        # Lanczos costs what power iteration costs and converges much faster, so auto never picks power.
        blocks = "dense" if costs["dense"][1] <= costs["lanczos"][1] else "lanczos"
    else:
        blocks = cfg.blocks
    if blocks == "dense" and n > cfg.dense_max_n:
        raise SettingError(
            f"measure.blocks=dense needs the {n}x{n} Jacobian, above measure.dense_max_n={cfg.dense_max_n} — "
            "use measure.blocks=power (or auto), or raise dense_max_n"
        )
    method, cost = costs[blocks]
    return Plan(
        blocks=blocks, jvp_method=method, estimated_cost=cost, costs={k: v[1] for k, v in costs.items()}
    )


def checked_expansion(expansion, M: int) -> np.ndarray:
    """f_t(λ_k) of eq. (26) as float64 [M], refused if it does not have one value per patch."""
    f = np.asarray(expansion, dtype=np.float64).reshape(-1)
    if f.shape[0] != M:
        raise ValueError(f"expansion has {f.shape[0]} values but the image has M={M} patches")
    return f


def checked_v1(v1, index: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The patch covariances' top eigenvectors as a tensor [M, n_k], refused if the shape is not the patch grid's."""
    v = torch.as_tensor(np.asarray(v1) if not torch.is_tensor(v1) else v1)
    if tuple(v.shape) != tuple(index.shape):
        raise ValueError(
            f"v1 must be [M, n_k] = {tuple(index.shape)} for patch size {patch_size}, got {tuple(v.shape)}"
        )
    return v


def block_krylov_method(blocks: str) -> str:
    """Krylov method of the block modes: diagonal blocks have clustered spectra (Thm 17: f_t(μ_k,i)
    all near 1), where K power steps fall visibly short and Golub-Kahan does not."""
    return "power" if blocks == "power" else "lanczos"


def record_blocks(out: StepMeasurement, bn: BlockNorms, blocks: str, cfg: MeasureConfig) -> None:
    """Diagonal norms, coupling C_k,t (eq. 17) and block matrices of one point into ``out``."""
    out.block_method = bn.method if blocks != "diag" else "diag"
    out.block_iters = bn.iterations
    out.block_frob_probes = bn.frob_probes
    out.diag_norm = np.diag(bn.op).copy()
    if out.rayleigh is not None and bn.method != "dense":
        # Both the K-step Krylov value and |⟨v_k,[JΦ_t]_kk v_k⟩| are lower bounds of ‖[JΦ_t]_kk‖;
        # keep the better one (v_k is Σ_k's top direction, exact for the Gaussian score, Thm 17).
        out.diag_norm = np.maximum(out.diag_norm, np.abs(out.rayleigh))
    if blocks != "diag":
        off = bn.op.copy()
        np.fill_diagonal(off, 0.0)
        out.coupling = off.sum(1)
    if cfg.keep_block_matrices:
        out.block_op = bn.op
        out.block_frob = bn.frob
    out.block_change = bn.relative_change


def measure_step(
    eps_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    r: float,
    b: float,
    patch_size: int,
    v1: np.ndarray | torch.Tensor | None = None,
    expansion: np.ndarray | None = None,
    config: MeasureConfig | None = None,
    seed: int = 0,
    progress: bool = False,
) -> StepMeasurement:
    """Measure JΦ_t = r I + b Jε̂ (eq. 7) at x: global norm, Rayleigh/suppression, block decomposition.

    eps_fn: [C,H,W] -> [C,H,W], the noise predictor at the step's paper timestep t (autodiff-able).
    x: the trajectory point x_t [C,H,W]. r, b: the step coefficients of eq. (4)-(5).
    v1: [M, n_k] top eigenvectors of the patch covariances (patch-vector order); expansion: [M]
    f_t(λ_k) of eq. (26) for this step (pipeline.geometry.expansion_function). seed: start vectors.
    """
    cfg = config or MeasureConfig()
    x = x.detach()
    image_shape = tuple(x.shape)
    index = patch_index(image_shape, patch_size, device=x.device)
    M = index.shape[0]
    n = x.numel()
    have_v1 = v1 is not None
    plan = plan_measurement(n, M, cfg, have_v1)
    gen = torch.Generator().manual_seed(int(seed))
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    score = ScoreLinearization(eps_fn, x, jvp_method=plan.jvp_method, chunk_size=cfg.chunk_size)
    step = StepJacobian(score, r, b)
    seconds["linearize"] = time.perf_counter() - t0
    out = StepMeasurement(r=float(r), b=float(b), n=n, num_patches=M, jvp_method=plan.jvp_method)

    # Both start vectors are drawn before any optional part runs, so turning a part off does not
    # change the others' numbers.
    start_pi = random_start((1, *image_shape), gen, x.dtype, x.device)
    start_gk = random_start(image_shape, gen, x.dtype, x.device)
    block_gen = torch.Generator().manual_seed(int(seed) + 1)

    if cfg.global_power:
        t0 = time.perf_counter()
        res = power_iteration(step.matvec, step.rmatvec, start_pi, cfg.power_iters)
        out.kappa_pi = float(res.value[0])
        out.kappa_pi_change = float(res.relative_change[0])
        out.kappa_pi_residual = float(res.residual[0])
        out.pi_iters = res.iterations
        seconds["power"] = time.perf_counter() - t0
    if cfg.global_lanczos:
        t0 = time.perf_counter()
        gk = golub_kahan(step.matvec, step.rmatvec, start_gk, cfg.lanczos_steps)
        out.kappa_lanczos = gk.value
        out.lanczos_residual = gk.residual
        out.lanczos_change = gk.relative_change
        out.lanczos_iters = gk.iterations
        seconds["lanczos"] = time.perf_counter() - t0

    if expansion is not None:
        out.expansion = checked_expansion(expansion, M)
    if cfg.rayleigh and have_v1:
        t0 = time.perf_counter()
        out.rayleigh = patch_rayleigh(step, checked_v1(v1, index, patch_size), index, via=cfg.rayleigh_via)
        seconds["rayleigh"] = time.perf_counter() - t0

    if plan.blocks != "off":
        t0 = time.perf_counter()
        if plan.blocks == "dense":
            keep = n <= cfg.dense_global_max_n
            bn: BlockNorms = dense_block_norms(step, index, keep_dense=keep, progress=progress)
            if bn.dense is not None:
                out.kappa_dense = float(torch.linalg.matrix_norm(bn.dense, ord=2))
        else:
            bn = block_power_norms(
                step,
                index,
                cfg.block_power_iters,
                block_gen,
                frob_probes=cfg.frob_probes if plan.blocks != "diag" else 0,
                diag_only=plan.blocks == "diag",
                method=block_krylov_method(plan.blocks),
            )
        record_blocks(out, bn, plan.blocks, cfg)
        seconds["blocks"] = time.perf_counter() - t0

    out.jvps = score.counter.jvp
    out.vjps = score.counter.vjp
    out.seconds = seconds
    return out
