"""The estimators of the jacobian stage, each one object with one contract, in one registry.

An `Estimator` says what it is (``name``, the ``paper`` place), when it runs (``enabled`` by the config and
the block route the planner chose), what it costs (``products``: single-vector JVPs and VJPs per point;
0 where it replays on the stored Jacobian of the exact route), what it writes (``columns`` of the three
tables), what must come out finite (``finite``), what the run summary follows per t (``series``), how
accurate it is (``tolerance``, the stated accuracy the common checks hold it to on the Gaussian oracle)
and how to run it on a batch of S points (``run``). `REGISTRY` lists them in run order; the planner
(pipeline.jacobian.plan), the CSV columns (`global_columns` ...), the finiteness check (`non_finite`),
the summaries (`series_columns`) and the common checks (tests/test_estimators.py) all iterate over it.

Adding an estimator: a subclass here (its algorithm in blocks.py / spectral.py if it is new), its entry
in REGISTRY, its config key in MeasureConfig and conf/measure/default.yaml, its columns in
docs/outputs-and-columns.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .blocks import block_krylov, hutchinson_frobenius, hutchpp_frobenius, patch_rayleigh
from .dense import dense_step
from .spectral import golub_kahan, power_iteration

if TYPE_CHECKING:  # types only: StepMeasurement's own rows come from this registry (pipeline.jacobian.rows)
    from .measure import MeasureConfig, StepMeasurement

ROUTES = ("off", "diag", "lanczos", "power", "dense")  # block routes: what runs beside the global estimators
FULL_BLOCK_ROUTES = ("lanczos", "power", "dense")  # routes with all M² blocks


@dataclass(frozen=True)
class Column:
    """One output column: its table, the value written where nothing filled it, and, for the common
    checks, the closed-form quantity it estimates on the Gaussian oracle (None: a diagnostic)."""

    name: str
    table: str  # "global" | "patches" | "blocks"
    default: Any = math.nan
    quantity: str | None = None  # global_norm | block_op | diag_op | block_frob | rayleigh
    derive: Callable[[StepMeasurement], Any] | None = field(default=None, compare=False)

    def value(self, m: StepMeasurement):
        v = self.derive(m) if self.derive is not None else m.column(self.name)
        return self.default if v is None else v


@dataclass(frozen=True)
class Products:
    """Single-vector products per point."""

    jvps: int = 0
    vjps: int = 0

    def __add__(self, other: Products) -> Products:
        return Products(self.jvps + other.jvps, self.vjps + other.vjps)


@dataclass
class Batch:
    """S points of one chain step, the operator the estimators apply, and the start vectors.

    ``op`` is the matrix-free operator (pipeline.jacobian.operators.PointsStep) until the exact route has
    stored the Jacobian, then that Jacobian (pipeline.jacobian.dense.DenseStep): the estimators after it
    replay on it. The start vectors are drawn once, in a fixed order, before any estimator runs, so
    turning one off never changes another's numbers.
    """

    op: Any
    cfg: MeasureConfig
    route: str
    outs: list[StepMeasurement]
    start_pi: torch.Tensor  # [S, C, H, W] float64, the global power iteration's (one per point)
    start_gk: torch.Tensor  # [S, C, H, W] float64, the global Golub-Kahan's
    block_start: torch.Tensor | None  # [B·S, n_k] float64, problem-major (B = M, or M² on the full routes)
    block_generators: Sequence[torch.Generator]  # per point, after block_start: the probes' draws
    v1: torch.Tensor | None = None
    progress: bool = False

    @property
    def S(self) -> int:
        return len(self.outs)


class Estimator:
    """The contract every estimator of the jacobian stage keeps (see the module docstring)."""

    name = ""
    paper = ""
    columns: tuple[Column, ...] = ()
    finite: tuple[str, ...] = ()
    series: tuple[str, ...] = ()
    settings: dict[str, Any] = {}  # the measure keys that turn it on (the common checks' solo runs)

    def enabled(self, cfg: MeasureConfig, route: str, have_v1: bool) -> bool:
        raise NotImplementedError

    def products(self, n: int, M: int, cfg: MeasureConfig, route: str) -> Products:
        return Products()

    def tolerance(self, cfg: MeasureConfig, gap: float, dim: int) -> float:
        """Stated relative accuracy on an operator whose relevant singular values have ratio σ₂/σ₁ = gap."""
        return 1e-9

    def run(self, batch: Batch) -> None:
        raise NotImplementedError

    def non_finite(self, m: StepMeasurement) -> list[str]:
        """The ``finite`` columns that it filled with a NaN/inf."""
        bad = []
        for name in self.finite:
            v = m.column(name)
            if v is not None and not np.all(np.isfinite(np.asarray(v, dtype=np.float64))):
                bad.append(name)
        return bad


def _krylov_tolerance(K: int, gap: float, dim: int) -> float:
    """A Krylov lower bound after K steps on AᵀA from a Gaussian start: relative error ≲ dim·(σ₂/σ₁)^(2K)."""
    return dim * gap ** (2 * K) + 1e-9


# ---------------------------------------------------------------------------------------------------
# The exact route


class ExactRows(Estimator):
    name = "exact_rows"
    paper = "eq. 15-18 and Table 4 exactly: all n rows of JΦ_t by vmapped VJPs"
    columns = (
        Column("kappa_dense", "global", quantity="global_norm"),
        Column("op_norm", "blocks", quantity="block_op"),
        Column("frob_norm", "blocks", quantity="block_frob"),
        Column("diag_norm", "patches", quantity="diag_op"),
    )
    finite = ("kappa_dense", "op_norm", "frob_norm")
    settings = {"blocks": "dense"}

    def enabled(self, cfg, route, have_v1):
        return route == "dense"

    def products(self, n, M, cfg, route):
        return Products(vjps=n)

    def run(self, batch):
        self.finish(batch, dense_step(batch.op, progress=batch.progress))

    @staticmethod
    def finish(batch: Batch, dense) -> None:
        """Everything exact from the stored Jacobian, which the estimators after this one then replay on."""
        op, fro = dense.block_norms()
        norm = dense.global_norm() if dense.n <= batch.cfg.dense_global_max_n else None
        for s, out in enumerate(batch.outs):
            out.block_method = "dense"
            out.block["op_norm"], out.block["frob_norm"] = op[s], fro[s]
            out.patch["diag_norm"] = np.diag(op[s]).copy()
            out.values.update(block_iters=0, block_change_max=0.0, block_frob_probes=0)
            if norm is not None:
                out.values["kappa_dense"] = float(norm[s])
        batch.op = dense  # every estimator after this one replays on the stored Jacobian


# ---------------------------------------------------------------------------------------------------
# Global norm κ̂_t (Table 4)


# A global Krylov estimator's columns by role: the field of its result, the column's keywords beside its name
_KRYLOV_COLUMNS = {
    "value": ("value", {"quantity": "global_norm"}),
    "change": ("relative_change", {}),
    "residual": ("residual", {}),
    "iters": ("iterations", {"default": 0}),
}


class _GlobalKrylov(Estimator):
    """κ̂_t = σ₁(JΦ_t) by a Krylov method on JΦ_tᵀJΦ_t from a fixed start (Table 4). The global power
    iteration and Golub-Kahan-Lanczos differ only in the method, the MeasureConfig attribute with its step
    count, the Batch field with its start vectors and the column names; the key that turns one on is its
    name."""

    steps = ""
    start = ""
    names: dict[str, str] = {}  # role (a key of _KRYLOV_COLUMNS) -> column name, in column order

    @staticmethod
    def method(apply, apply_t, start, steps):
        raise NotImplementedError

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.columns = tuple(
            Column(name, "global", **_KRYLOV_COLUMNS[role][1]) for role, name in cls.names.items()
        )
        cls.finite = cls.series = (cls.names["value"],)
        cls.settings = {cls.name: True}

    def enabled(self, cfg, route, have_v1):
        return getattr(cfg, self.name)

    def products(self, n, M, cfg, route):
        K = getattr(cfg, self.steps)
        return Products() if route == "dense" else Products(K, K)

    def tolerance(self, cfg, gap, dim):
        return _krylov_tolerance(getattr(cfg, self.steps), gap, dim)

    def run(self, batch):
        op = batch.op
        start = getattr(batch, self.start).to(op.device, op.dtype)
        res = self.method(op.apply, op.apply_t, start, getattr(batch.cfg, self.steps))
        for s, out in enumerate(batch.outs):
            for role, name in self.names.items():
                f = _KRYLOV_COLUMNS[role][0]
                out.values[name] = res.iterations if f == "iterations" else float(getattr(res, f)[s])


class GlobalPower(_GlobalKrylov):
    name, steps, start, method = "global_power", "power_iters", "start_pi", staticmethod(power_iteration)
    paper = "§7.1, Table 4: κ̂_t = PowerIter(JΦ_t, K_PI)"
    names = dict(value="kappa_pi", change="kappa_pi_change", residual="kappa_pi_residual", iters="pi_iters")


class GlobalLanczos(_GlobalKrylov):
    name, steps, start, method = "global_lanczos", "lanczos_steps", "start_gk", staticmethod(golub_kahan)
    paper = "κ̂_t by Golub-Kahan-Lanczos on the power iteration's budget (not in the paper)"
    names = dict(
        value="kappa_lanczos", residual="lanczos_residual", change="lanczos_change", iters="lanczos_iters"
    )


# ---------------------------------------------------------------------------------------------------
# Directional Rayleigh quotients (eq. 32) and with them S_k,t (eq. 30)


class Rayleigh(Estimator):
    name = "rayleigh"
    paper = "eq. 32, §7.2-7.3, §7.7: ⟨v_k, [JΦ_t]_kk v_k⟩ along Σ_k's top eigenvector"
    columns = (
        Column("rayleigh", "patches", quantity="rayleigh"),
        Column("rayleigh_max", "global", derive=lambda m: _agg(np.max, m.rayleigh)),
    )
    finite = ("rayleigh",)
    settings = {"rayleigh": True}

    def enabled(self, cfg, route, have_v1):
        return cfg.rayleigh and have_v1

    def products(self, n, M, cfg, route):
        if route == "dense":
            return Products()
        return Products(jvps=M) if cfg.rayleigh_via == "jvp" else Products(vjps=M)

    def run(self, batch):
        q = patch_rayleigh(batch.op, batch.v1, via=batch.cfg.rayleigh_via)
        for s, out in enumerate(batch.outs):
            out.patch["rayleigh"] = q[s]


# ---------------------------------------------------------------------------------------------------
# Block operator norms ‖[JΦ_t]_kj‖ (eq. 15-18, Tables 5, 8, 9)


def _with_rayleigh(diag: np.ndarray, out: StepMeasurement) -> np.ndarray:
    """Both a K-step Krylov value and |⟨v_k,[JΦ_t]_kk v_k⟩| are lower bounds of ‖[JΦ_t]_kk‖: the better one
    (v_k is Σ_k's top direction, exact for the Gaussian score, Thm 17)."""
    return diag if out.rayleigh is None else np.maximum(diag, np.abs(out.rayleigh))


def _block_matrix(value: np.ndarray, kk: np.ndarray, jj: np.ndarray, M: int, s: int) -> np.ndarray:
    mat = np.full((M, M), np.nan)
    mat[kk, jj] = value[:, s]
    return mat


# The block norms a matrix-free block route reports as this run's, and what they cost
_BLOCK_COLUMNS = (
    Column("op_norm", "blocks", quantity="block_op"),
    Column("diag_norm", "patches", quantity="diag_op"),
    Column("block_iters", "global", default=0),
    Column("block_change_max", "global"),
)


class _BlockKrylov(Estimator):
    """A Krylov method per block [JΦ_t]_kj with K = block_power_iters steps (eq. 15-18): block_krylov's
    ``method``, on all M² blocks or the M diagonal ones."""

    method = ""

    def tolerance(self, cfg, gap, dim):
        return _krylov_tolerance(cfg.block_power_iters, gap, dim)

    def blocks(self, batch: Batch, diag_only: bool):
        """The M×M block norm matrix per point (NaN where not measured) and the relative changes [B, S]."""
        op = batch.op
        value, change, kk, jj = block_krylov(
            op, batch.block_start, batch.cfg.block_power_iters, self.method, diag_only=diag_only
        )
        return [_block_matrix(value, kk, jj, op.M, s) for s in range(batch.S)], change

    @staticmethod
    def report(batch: Batch, out: StepMeasurement, mat: np.ndarray, change: np.ndarray) -> None:
        """This run's block norms from a matrix-free route, diag_norm with the Rayleigh bound."""
        out.block_method = batch.route
        out.block["op_norm"] = mat
        out.patch["diag_norm"] = _with_rayleigh(np.diag(mat).copy(), out)
        out.values.update(block_iters=batch.cfg.block_power_iters, block_change_max=float(np.nanmax(change)))


class BlockPower(_BlockKrylov):
    name = "block_power"
    paper = "§7.4, Table 5: power iteration per block with K = block_power_iters (the paper's protocol)"
    method = "power"
    columns = (
        Column("op_norm_pi", "blocks", quantity="block_op"),
        Column("diag_norm_pi", "patches", quantity="diag_op"),
        *_BLOCK_COLUMNS,
    )
    finite = ("op_norm_pi",)
    settings = {"blocks": "power"}

    def enabled(self, cfg, route, have_v1):
        return route in ("power", "dense")

    def products(self, n, M, cfg, route):
        K = cfg.block_power_iters
        return Products() if route == "dense" else Products(K * M * M, K * M * M)

    def run(self, batch):
        mats, change = self.blocks(batch, diag_only=False)
        for s, (out, pi) in enumerate(zip(batch.outs, mats, strict=True)):
            out.block["op_norm_pi"], out.patch["diag_norm_pi"] = pi, np.diag(pi).copy()
            if batch.route == "power":  # matrix-free: the paper's value is the block norm this run has
                self.report(batch, out, pi, change[:, s])


class BlockLanczos(_BlockKrylov):
    name = "block_lanczos"
    paper = "eq. 15-18 by Golub-Kahan-Lanczos per block on the power iteration's budget (not in the paper)"
    method = "lanczos"
    columns = _BLOCK_COLUMNS
    finite = ("diag_norm",)
    settings = {"blocks": "lanczos"}

    def enabled(self, cfg, route, have_v1):
        return route in ("lanczos", "diag")

    def products(self, n, M, cfg, route):
        K, B = cfg.block_power_iters, (M if route == "diag" else M * M)
        return Products(K * B, K * B)

    def run(self, batch):
        mats, change = self.blocks(batch, diag_only=batch.route == "diag")
        for s, (out, mat) in enumerate(zip(batch.outs, mats, strict=True)):
            self.report(batch, out, mat, change[:, s])


# ---------------------------------------------------------------------------------------------------
# Frobenius block norms (Table 7)


class Hutchinson(Estimator):
    name = "hutchinson"
    paper = "Table 7's ‖[JΦ_t]_kj‖_F by Hutchinson's estimator with frob_probes Rademacher probes"
    columns = (
        Column("frob_norm_hutch", "blocks", quantity="block_frob"),
        Column("frob_norm", "blocks", quantity="block_frob"),
        Column("block_frob_probes", "global", default=0),
    )
    finite = ("frob_norm_hutch",)
    settings = {"blocks": "lanczos", "frob_probes": 64}

    def enabled(self, cfg, route, have_v1):
        if cfg.frob_probes <= 0:
            return False
        return route == "dense" or (route in ("power", "lanczos") and cfg.frob_method == "hutchinson")

    def products(self, n, M, cfg, route):
        return Products() if route == "dense" else Products(jvps=cfg.frob_probes * M)

    def tolerance(self, cfg, gap, dim):
        return 5 * math.sqrt(1 / (2 * cfg.frob_probes))  # five standard errors of the norm

    def run(self, batch):
        p = batch.cfg.frob_probes
        fro = hutchinson_frobenius(batch.op, p, batch.block_generators)
        for s, out in enumerate(batch.outs):
            out.block["frob_norm_hutch"] = fro[s]
            if batch.route != "dense":  # matrix-free: the estimate is this run's Frobenius norm
                out.block["frob_norm"] = fro[s]
                out.values["block_frob_probes"] = p


class HutchPlusPlus(Estimator):
    name = "hutchpp"
    paper = "Table 7's ‖[JΦ_t]_kj‖_F by Hutch++ (error ∝ 1/budget instead of 1/√budget)"
    columns = (
        Column("frob_norm", "blocks", quantity="block_frob"),
        Column("block_frob_probes", "global", default=0),
    )
    finite = ("frob_norm",)
    settings = {"blocks": "lanczos", "frob_method": "hutchpp", "frob_probes": 8, "frob_sketch": 8}

    def enabled(self, cfg, route, have_v1):
        return cfg.frob_probes > 0 and cfg.frob_method == "hutchpp" and route in ("power", "lanczos")

    def products(self, n, M, cfg, route):
        s = min(cfg.frob_sketch, n // M)
        return Products(jvps=(s + cfg.frob_probes) * M, vjps=s * M * M)

    def tolerance(self, cfg, gap, dim):
        return 5 * math.sqrt(2 / (cfg.frob_probes * min(cfg.frob_sketch, dim)))

    def run(self, batch):
        cfg = batch.cfg
        fro = hutchpp_frobenius(batch.op, cfg.frob_probes, cfg.frob_sketch, batch.block_generators)
        for s, out in enumerate(batch.outs):
            out.block["frob_norm"] = fro[s]
            out.values["block_frob_probes"] = cfg.frob_probes


# ---------------------------------------------------------------------------------------------------
# Quantities derived from the above (eq. 16-19, 30-31): no products


def _agg(fn, a):
    return float(fn(a)) if a is not None else math.nan


def _count_negative(a) -> int:
    return int(np.sum(a < 0)) if a is not None else -1


class Derived(Estimator):
    name = "derived"
    paper = "eq. 16-19 (κ̂^diag, δ̂^cross, κ̂^pc, (PC) slack) and eq. 30-31 (S_k,t, γ_k,t) from the above"
    columns = (
        Column("kappa_diag", "global", derive=lambda m: m.kappa_diag),
        Column("delta_cross", "global", derive=lambda m: m.delta_cross),
        Column("kappa_pc", "global", derive=lambda m: m.kappa_pc),
        Column("kappa_pc_blockmax", "global", derive=lambda m: m.kappa_pc_blockmax),
        Column("suppression_min", "global", derive=lambda m: _agg(np.min, m.suppression)),
        Column("suppression_mean", "global", derive=lambda m: _agg(np.mean, m.suppression)),
        Column("pc_slack_min", "global", derive=lambda m: _agg(np.min, m.pc_slack)),
        Column("pc_violated", "global", default=-1, derive=lambda m: _count_negative(m.pc_slack)),
        Column("pc_slack_rayleigh_min", "global", derive=lambda m: _agg(np.min, m.pc_slack_rayleigh)),
        Column(
            "pc_violated_rayleigh",
            "global",
            default=-1,
            derive=lambda m: _count_negative(m.pc_slack_rayleigh),
        ),
        Column("expansion", "patches", derive=lambda m: m.expansion),
        Column("suppression", "patches", derive=lambda m: m.suppression),
        Column("margin", "patches", derive=lambda m: m.margin),
        Column("coupling", "patches", derive=lambda m: m.coupling),
        Column("pc_slack", "patches", derive=lambda m: m.pc_slack),
        Column("pc_slack_rayleigh", "patches", derive=lambda m: m.pc_slack_rayleigh),
    )
    series = ("kappa_diag", "delta_cross", "kappa_pc", "suppression_mean")

    def enabled(self, cfg, route, have_v1):
        return True

    def run(self, batch):
        return None


REGISTRY: tuple[Estimator, ...] = (
    ExactRows(),
    GlobalPower(),
    GlobalLanczos(),
    Rayleigh(),
    BlockPower(),
    BlockLanczos(),
    Hutchinson(),
    HutchPlusPlus(),
    Derived(),
)

# The stage's own columns of every global row: the point and the route, and what it cost.
HEAD = (Column("r", "global"), Column("b", "global"), Column("n", "global"), Column("M", "global"))
TAIL = (
    Column("block_method", "global", derive=lambda m: m.block_method),
    Column("jvp_method", "global", derive=lambda m: m.jvp_method),
    Column("jvps", "global", derive=lambda m: m.jvps),
    Column("vjps", "global", derive=lambda m: m.vjps),
)


def columns_of(table: str) -> list[Column]:
    """The columns of one table ("global", "patches", "blocks") in registry order, each once."""
    seen: dict[str, Column] = {}
    pool = (
        (HEAD + tuple(c for e in REGISTRY for c in e.columns) + TAIL)
        if table == "global"
        else tuple(c for e in REGISTRY for c in e.columns)
    )
    for c in pool:
        if c.table == table and c.name not in seen:
            seen[c.name] = c
    return list(seen.values())


def column_names(table: str) -> list[str]:
    return [c.name for c in columns_of(table)]


def series_columns() -> list[str]:
    """global.csv columns whose mean per t the run summary follows (MLflow series)."""
    return [c for e in REGISTRY for c in e.series]


def estimator(name: str) -> Estimator:
    for e in REGISTRY:
        if e.name == name:
            return e
    raise KeyError(f"no estimator named {name!r}; registered: {[e.name for e in REGISTRY]}")


def non_finite(m: StepMeasurement, cfg: MeasureConfig, route: str, have_v1: bool) -> list[str]:
    """The finite-by-contract columns of the estimators that ran at this point which hold a NaN/inf."""
    return [c for e in REGISTRY if e.enabled(cfg, route, have_v1) for c in e.non_finite(m)]
