"""A protocol's points split into shards, one job (one GPU) each: which stacks of points a shard measures.

The protocol's points are its seeds × selected chain steps. They are measured in stacks: at one step,
``seed_batch`` consecutive seeds together (pipeline.jacobian.points), the last stack of a step padded to
the same size. A stack is the unit of a shard, so a shard measures exactly the stacks the unsplit run
measures and every point's numbers are the unsplit run's (they depend on its seed, step and stack size
only). Shard i of N takes every N-th stack in step-major order: each shard gets about the same number
of stacks, spread over the whole chain (steps with the full block decomposition cost more).

Each shard writes a record beside its tables (JacobianFolder.SHARD) that pipeline.jacobian.pool checks
when it pools the shards back into the unsplit run's tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from pipeline.errors import PipelineError

Stack = tuple[int, tuple[int, ...]]  # (chain step index, seeds measured together at that step)


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0 of 1: the whole protocol in one run)."""

    index: int = 0
    count: int = 1

    @property
    def split(self) -> bool:
        return self.count > 1


def protocol_stacks(seeds: Sequence[int], steps: Sequence[int], seed_batch: int) -> list[Stack]:
    """Every stack of the protocol in canonical order: steps in chain order, at each step the seeds in
    groups of ``seed_batch`` (1: one point per stack)."""
    seeds = list(seeds)
    return [
        (int(i), tuple(seeds[a : a + seed_batch])) for i in steps for a in range(0, len(seeds), seed_batch)
    ]


def shard_stacks(seeds: Sequence[int], steps: Sequence[int], seed_batch: int, shard: Shard) -> list[Stack]:
    """The stacks shard ``shard`` measures: every ``shard.count``-th stack of the protocol, from its index."""
    stacks = protocol_stacks(seeds, steps, seed_batch)
    if shard.count > len(stacks):
        raise PipelineError(
            f"points.shards={shard.count} but the protocol has only {len(stacks)} stacks of points "
            f"({len(seeds)} seeds in stacks of points.seed_batch={seed_batch}, at {len(steps)} steps) — "
            f"use at most {len(stacks)} shards"
        )
    return stacks[shard.index :: shard.count]


def stack_points(stacks: Sequence[Stack]) -> list[tuple[int, int]]:
    """The (seed, step) points of some stacks in the order of the tables' rows: by seed, then step."""
    return sorted((seed, step) for step, seeds in stacks for seed in seeds)


@dataclass(frozen=True)
class ShardRecord:
    """What one shard measured, written beside its tables: the pooling checks the shards against it."""

    shard: int
    shards: int
    seeds: list[int]  # the whole protocol's seeds and selected chain steps
    steps: list[int]
    chain_steps: int  # steps of the sampler chain (Lyapunov exponents need every one measured)
    seed_batch: int  # the stack size and vmap chunk actually used (after "auto" is resolved):
    chunk_size: int  # a point's numbers depend on both, so every shard must have used the same
    points: list[list[int]]  # this shard's (seed, step) points
    # §7.7's sparse protocol (the representative steps of a longer chain): the chain's paper t and f_t(λ_k)
    # at every chain step, which lyapunov.csv interpolates onto; empty otherwise
    chain_t: tuple[int, ...] = ()
    chain_f: tuple[tuple[float, ...], ...] = ()

    @classmethod
    def of(
        cls,
        shard: Shard,
        seeds,
        steps,
        chain_steps: int,
        seed_batch: int,
        chunk_size,
        points,
        chain_t=(),
        chain_f=(),
    ) -> ShardRecord:
        return cls(
            shard.index, shard.count, [int(s) for s in seeds], [int(i) for i in steps], int(chain_steps),
            int(seed_batch), int(chunk_size or 0), [[int(s), int(i)] for s, i in sorted(points)],
            tuple(int(t) for t in chain_t), tuple(tuple(float(v) for v in row) for row in chain_f),
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ShardRecord:
        rec = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        return replace(rec, chain_t=tuple(rec.chain_t), chain_f=tuple(tuple(row) for row in rec.chain_f))

    @property
    def protocol(self) -> dict[str, Any]:
        """What every shard of one protocol has in common."""
        return {k: v for k, v in self.to_json().items() if k not in ("shard", "points")}
