"""What a measurement costs before it runs: the block route, the JVP method and the products per point.

`plan_measurement` sums the products of the estimators of `pipeline.jacobian.estimators.REGISTRY` that
would run on each block route and picks the cheapest route (``measure.blocks=auto``) and JVP method
(``measure.jvp_method=auto``) from the per-product costs of the config (forward-pass equivalents that
`benchmarks.jacobian` measures). `protocol_plan` does the same for a whole run (seeds x measured steps),
the one plan that `benchmarks.projection` and `benchmarks.jacobian` both print.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from pipeline.errors import SettingError

from .estimators import REGISTRY, ROUTES, Products
from .measure import MeasureConfig
from .protocol import runs_proxy, steps_for_tables


@dataclass
class Plan:
    """Which block route and JVP method one measurement uses, its products and estimated cost."""

    blocks: str
    jvp_method: str
    estimated_cost: float  # forward-pass equivalents of the products (and the linearisation trace)
    costs: dict[str, float]  # the same for every route
    products: dict[str, Products] = field(default_factory=dict)  # per estimator that runs on the route

    @property
    def jvps(self) -> int:
        return sum(p.jvps for p in self.products.values())

    @property
    def vjps(self) -> int:
        return sum(p.vjps for p in self.products.values())

    @property
    def forward_equivalents(self) -> float:
        """Per point, with the primal evaluation that every measurement starts with."""
        return self.estimated_cost + 1.0


def route_products(n: int, M: int, cfg: MeasureConfig, route: str, have_v1: bool) -> dict[str, Products]:
    """Products per point of every estimator that runs on ``route``."""
    return {e.name: e.products(n, M, cfg, route) for e in REGISTRY if e.enabled(cfg, route, have_v1)}


def _jvp_cost(count: int, cfg: MeasureConfig) -> tuple[str, float]:
    """JVP method and cost of ``count`` JVPs; no JVP, no tangent map (it is built lazily)."""
    per = {
        "linearize": cfg.cost_jvp_linearized,
        "double_vjp": cfg.cost_jvp_double_vjp,
        "forward": 2 * cfg.cost_jvp_double_vjp,
    }
    if cfg.jvp_method != "auto":
        extra = cfg.cost_linearize_trace if cfg.jvp_method == "linearize" and count > 0 else 0.0
        return cfg.jvp_method, count * per[cfg.jvp_method] + extra
    if count == 0:
        return "double_vjp", 0.0
    lin = count * cfg.cost_jvp_linearized + cfg.cost_linearize_trace
    dv = count * cfg.cost_jvp_double_vjp
    return ("linearize", lin) if lin < dv else ("double_vjp", dv)


def plan_measurement(n: int, M: int, cfg: MeasureConfig, have_v1: bool) -> Plan:
    """Choose the block route (exact dense rows vs block Krylov) and the JVP method from the estimated costs."""
    options: dict[str, tuple[str, float, dict[str, Products]]] = {}
    for route in ROUTES:
        prods = route_products(n, M, cfg, route, have_v1)
        total = sum(prods.values(), Products())
        method, jcost = _jvp_cost(total.jvps, cfg)
        cost = jcost + total.vjps * cfg.cost_vjp
        if route == "dense" and n > cfg.dense_max_n:
            cost = math.inf
        options[route] = (method, cost, prods)
    if cfg.blocks == "auto":
        # Lanczos costs what power iteration costs and converges much faster, so auto never picks power.
        blocks = "dense" if options["dense"][1] <= options["lanczos"][1] else "lanczos"
    else:
        blocks = cfg.blocks
    if blocks == "dense" and n > cfg.dense_max_n:
        raise SettingError(
            f"measure.blocks=dense needs the {n}x{n} Jacobian, above measure.dense_max_n={cfg.dense_max_n} — "
            "use measure.blocks=lanczos (or auto), or raise dense_max_n"
        )
    method, cost, prods = options[blocks]
    return Plan(
        blocks=blocks,
        jvp_method=method,
        estimated_cost=cost,
        costs={k: v[1] for k, v in options.items()},
        products=prods,
    )


@dataclass
class ProtocolPlan:
    """The Jacobian measurement of a whole run: points, their plans, and the forward passes around them."""

    n: int
    M: int
    seeds: int
    steps: list[int]  # measured paper t
    block_steps: list[int]  # the measured t with the configured block route
    full: Plan  # the plan at block steps
    light: Plan  # the plan at the other measured steps
    trajectory_forwards: int  # seeds x chain steps
    proxy_forwards: int  # Table 10's proxy: 2 forwards per image and timestep

    @property
    def points(self) -> int:
        return self.seeds * len(self.steps)

    @property
    def forward_equivalents_per_point(self) -> float:
        """Mean over the measured points (each with its primal)."""
        nb = len(self.block_steps)
        total = nb * self.full.forward_equivalents + (len(self.steps) - nb) * self.light.forward_equivalents
        return total / max(len(self.steps), 1)

    @property
    def forward_equivalents_total(self) -> float:
        return (
            self.points * self.forward_equivalents_per_point + self.trajectory_forwards + self.proxy_forwards
        )


def protocol_plan(
    measure: dict,
    *,
    image_shape: tuple[int, int, int],
    patch_size: int,
    timesteps: list[int],
    seeds: int,
    steps: list[int] | None,
    block_steps: list[int] | None,
    light_blocks: str,
    proxy_images: int,
    proxy_timesteps: int,
) -> ProtocolPlan:
    """The plan of a run from its resolved settings (the `measure` group and the point selection).

    steps / block_steps: paper t, or None (every chain step; with measure.tables, the steps the tables need).
    """
    cfg = MeasureConfig.from_dict(
        {k: v for k, v in measure.items() if k in MeasureConfig.__dataclass_fields__}
    )
    C, H, W = image_shape
    n, M = C * H * W, (H // patch_size) * (W // patch_size)
    if steps is None and cfg.tables is not None:
        steps = steps_for_tables(cfg.tables, timesteps)
    chosen = [int(t) for t in (timesteps if steps is None else steps)]
    blocks_at = chosen if block_steps is None else [int(t) for t in block_steps if int(t) in chosen]
    light = replace(cfg, blocks=light_blocks) if cfg.blocks not in ("off", "diag") else cfg
    proxy = int(proxy_images) * int(proxy_timesteps) * 2 if runs_proxy(cfg.tables) else 0
    return ProtocolPlan(
        n=n,
        M=M,
        seeds=int(seeds),
        steps=chosen,
        block_steps=blocks_at,
        full=plan_measurement(n, M, cfg, True),
        light=plan_measurement(n, M, light, True),
        trajectory_forwards=int(seeds) * len(timesteps),
        proxy_forwards=proxy,
    )
