"""The measurement settings and the record of one measured point of JΦ_t = r_t I + b_t Jε̂ (eq. 7).

`MeasureConfig` mirrors conf/measure/<name>.yaml; `StepMeasurement` holds what the estimators of
`pipeline.jacobian.estimators` filled at one point x_t, column by column (the jacobian tables' columns;
docs/outputs-and-columns.md), plus the paper-named derived quantities (eq. 16-19, 30-32).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.errors import SettingError

from .operators import JVP_METHODS
from .protocol import TABLES, switches_for_tables
from .rows import global_row, patch_rows

BLOCK_METHODS = ("auto", "dense", "power", "lanczos", "diag", "off")
FROB_METHODS = ("hutchinson", "hutchpp")


@dataclass
class MeasureConfig:
    """Settings of `pipeline.jacobian.points.measure_points`; mirrors conf/measure/<name>.yaml (`measure`)."""

    power_iters: int = 20  # K_PI of the global power iteration (paper §7.1: 20)
    lanczos_iters: int | None = None  # Golub-Kahan steps; None = power_iters (same matvec budget)
    global_power: bool = True
    global_lanczos: bool = True
    rayleigh: bool = True  # Rayleigh quotients along v_k and S_k,t (needs v1)
    rayleigh_via: str = "vjp"  # "vjp" or "jvp": ⟨v, Bv⟩ = ⟨Bᵀv, v⟩, same number
    blocks: str = "auto"  # auto | dense | power | lanczos | diag (diagonal blocks only, Lanczos) | off
    block_power_iters: int = 10  # K per block, power or Lanczos (paper Table 5: 10; Table 8: 30)
    frob_probes: int = 200  # Hutchinson probes (power/Lanczos blocks; 0: skip): relative SE <= sqrt(1/(2p))
    frob_method: str = "hutchinson"  # Frobenius block norms off the exact route: hutchinson | hutchpp
    frob_sketch: int = 16  # Hutch++ sketch vectors per column patch (frob_method=hutchpp)
    tables: list[str] | None = (
        None  # reproduced tables to measure for (protocol.py); None = the switches above
    )
    keep_block_matrices: bool = True  # return the [M, M] op / Frobenius matrices
    dense_max_n: int = 16384  # never build the dense Jacobian above this n
    dense_global_max_n: int = 4096  # exact ‖JΦ‖ from the dense matrix (an n x n eigenproblem) up to this n
    chunk_size: int | None = 16  # vectors per vmapped call (memory bound; CPU cost per vector flat in it)
    jvp_method: str = "auto"  # auto | linearize | double_vjp | forward (see operators.py)
    # Costs in forward-pass equivalents per vector (benchmarks/jacobian.py measures them); only
    # the automatic choices of block method and JVP method, and the projections, use them.
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
        if self.frob_method not in FROB_METHODS:
            raise SettingError(
                f"measure.frob_method={self.frob_method!r} is unknown — use one of {FROB_METHODS}"
            )
        for name in ("power_iters", "block_power_iters", "frob_sketch"):
            if int(getattr(self, name)) < 1:
                raise SettingError(f"measure.{name}={getattr(self, name)} — set measure.{name} to at least 1")
        if self.lanczos_iters is not None and int(self.lanczos_iters) < 1:
            raise SettingError(
                f"measure.lanczos_iters={self.lanczos_iters} — set it to at least 1, or null (as many as "
                "measure.power_iters)"
            )
        if self.tables is not None:
            self.tables = [str(t) for t in self.tables]
            unknown = sorted(set(self.tables) - set(TABLES))
            if unknown:
                raise SettingError(
                    f"measure.tables lists {unknown}, which no protocol knows — use some of {sorted(TABLES)}, "
                    "or null to set the estimators one by one"
                )
            # The tables decide which estimators run; the numeric settings stay as configured.
            for key, value in switches_for_tables(self.tables, self.blocks, self.frob_probes).items():
                setattr(self, key, value)

    @property
    def lanczos_steps(self) -> int:
        return int(self.lanczos_iters if self.lanczos_iters is not None else self.power_iters)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> MeasureConfig:
        """From the Hydra `measure` node (keys checked by the config schema, pipeline.schema); drops `name`."""
        cfg = dict(cfg or {})
        cfg.pop("name", None)
        return cls(**cfg)


class StepMeasurement:
    """Everything measured about JΦ_t at one point x_t: the columns the estimators filled, by table.

    ``values`` holds global.csv's columns, ``patch`` patches.csv's ([M] each), ``block`` blocks.csv's
    ([M, M] each); a column no estimator filled is absent (its table default, NaN, is written). Every
    column reads as an attribute (``m.kappa_pi``, ``m.op_norm``), absent ones as None. Columns may also be
    given as keywords (scalars to ``values``, [M] arrays to ``patch``, [M, M] arrays to ``block``), which is
    how made-up measurements (pipeline.analysis.synthetic) go through the stage's own row code.
    """

    _ALIASES = {"block_op": "op_norm", "block_frob": "frob_norm"}

    def __init__(
        self,
        r: float,
        b: float,
        n: int,
        num_patches: int,
        *,
        expansion: np.ndarray | None = None,
        block_method: str = "off",
        jvp_method: str = "",
        jvps: int = 0,
        vjps: int = 0,
        seconds: dict[str, float] | None = None,
        **columns: Any,
    ):
        self.r, self.b, self.n, self.num_patches = float(r), float(b), int(n), int(num_patches)
        self.values: dict[str, Any] = {}
        self.patch: dict[str, np.ndarray] = {}
        self.block: dict[str, np.ndarray] = {}
        self.expansion = expansion  # f_t(λ_k) of eq. (26) as passed in
        self.block_method, self.jvp_method = block_method, jvp_method
        self.jvps, self.vjps = int(jvps), int(vjps)
        self.seconds: dict[str, float] = dict(seconds or {})
        for name, value in columns.items():
            if value is None:
                continue
            name = self._ALIASES.get(name, name)
            arr = np.asarray(value)
            store = self.values if arr.ndim == 0 else self.patch if arr.ndim == 1 else self.block
            store[name] = value if arr.ndim == 0 else arr

    def __getattr__(self, name: str):
        # only reached for names that are not attributes: the measured columns
        if name.startswith("__") or name in ("values", "patch", "block"):
            raise AttributeError(name)
        name = StepMeasurement._ALIASES.get(name, name)
        for store in (self.values, self.patch, self.block):
            if name in store:
                return store[name]
        return None

    def global_row(self) -> dict[str, Any]:
        """global.csv's measured columns (pipeline.jacobian.rows) plus the wall time, key ``seconds``."""
        return {**global_row(self), "seconds": float(sum(self.seconds.values()))}

    def patch_rows(self) -> list[dict[str, Any]]:
        """patches.csv's measured columns, one row per patch (pipeline.jacobian.rows)."""
        return patch_rows(self)

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
    def coupling(self) -> np.ndarray | None:
        """C_k,t = Σ_{j≠k} ‖[JΦ_t]_kj‖_op (eq. 16), from the full block matrix (None on the diagonal route)."""
        if "coupling" in self.patch:  # given as a column
            return self.patch["coupling"]
        op = self.block.get("op_norm")
        if op is None or self.block_method in ("diag", "off"):
            return None
        off = op.copy()
        np.fill_diagonal(off, 0.0)
        return off.sum(1)

    @property
    def kappa_diag(self) -> float:
        """κ̂_t^diag = max_k ‖[JΦ_t]_kk‖_op (eq. 18 at this x)."""
        return _max(self.diag_norm)

    @property
    def delta_cross(self) -> float:
        """δ̂_t^cross = max_k C_k,t (eq. 18 at this x)."""
        return _max(self.coupling)

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

    def column(self, name: str):
        """A column's value at this point (scalar, [M] or [M, M]), measured or derived; None if absent."""
        return getattr(self, name)


def _max(a) -> float:
    return float(np.max(a)) if a is not None else math.nan


def measurement_seed(seed: int, step: int) -> int:
    """Seed of the start vectors at (trajectory seed, chain step): distinct and stable across runs."""
    return int(seed) * 1_000_003 + int(step) + 7919


def checked_expansion(expansion, M: int) -> np.ndarray:
    """f_t(λ_k) of eq. (26) as float64 [M], refused if it does not have one value per patch."""
    f = np.asarray(expansion, dtype=np.float64).reshape(-1)
    if f.shape[0] != M:
        raise ValueError(f"expansion has {f.shape[0]} values but the image has M={M} patches")
    return f
