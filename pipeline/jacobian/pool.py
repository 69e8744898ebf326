"""The shards of one protocol pooled into the unsplit run's tables, byte for byte.

``pool_tables(folders, out_dir)`` checks that the folders are the shards of one protocol (one split, every
shard once, the same config but the shard index, the same upstream inputs, the same stack size and vmap
chunk, every point in exactly one shard) and writes the unsplit run's tables: each point's rows verbatim
from the shard that measured it, in the unsplit run's row order (by seed, then chain step; a point's own
rows in the order its shard wrote them); Lyapunov exponents, which need whole trajectories, computed from
the pooled rows by the code the unsplit run uses; Table 10's proxy from the shard that measured it.
"""

from __future__ import annotations

import csv
import io as textio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import io
from pipeline.errors import InputFileError, InputMissingError, PipelineError
from pipeline.jacobian.loop import lyapunov_rows
from pipeline.jacobian.shards import ShardRecord
from pipeline.outputs import JacobianFolder, read_meta, read_run_info
from pipeline.runkeys import config_digest, key_sections, unsharded

J = JacobianFolder
# tables with one row per point (per patch k, per block (k, j)): merged by (seed, step)
POINT_TABLES = (J.GLOBAL, J.PATCHES, J.BLOCKS, J.ATTENTION)


class ShardMismatchError(PipelineError):
    """Folders that are not the shards of one protocol, each exactly once."""


@dataclass(frozen=True)
class ShardFolder:
    folder: JacobianFolder
    record: ShardRecord
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"shard {self.record.shard} of {self.record.shards} ({self.folder.path})"


@dataclass(frozen=True)
class PoolResult:
    shards: int
    points: int
    tables: list[str]


def read_shard(path: str | Path) -> ShardFolder:
    """A jacobian shard folder with its record and meta.json, or one line saying why it is not one."""
    folder = JacobianFolder(path)
    record_path = folder / J.SHARD
    if not record_path.is_file():
        raise InputMissingError(
            f"{folder.path} is not a jacobian shard (it has no {J.SHARD}) — pool the folders written by "
            "python -m stages.jacobian points.shards=N points.shard=i"
        )
    try:
        record = ShardRecord.from_json(json.loads(record_path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputFileError(
            f"{record_path} is unreadable ({type(exc).__name__}) — rerun that shard with force=true"
        ) from exc
    return ShardFolder(folder, record, read_meta(folder.path) or {})


def check_shards(shards: Sequence[ShardFolder]) -> list[ShardFolder]:
    """The shards in index order when they are every shard of one protocol exactly once; else one line."""
    if not shards:
        raise ShardMismatchError("no jacobian shard folders to pool — list the shard folders of one protocol")
    first = shards[0]
    count = first.record.shards
    for s in shards[1:]:
        if s.record.shards != count:
            raise ShardMismatchError(
                f"{first.name} and {s.name} come from different splits — pool the shards of one points.shards"
            )
    by_index: dict[int, ShardFolder] = {}
    for s in shards:
        if s.record.shard in by_index:
            raise ShardMismatchError(
                f"shard {s.record.shard} of {count} is given twice: {by_index[s.record.shard].folder.path} "
                f"and {s.folder.path} — pool each shard once"
            )
        by_index[s.record.shard] = s
    missing = [i for i in range(count) if i not in by_index]
    if missing:
        raise ShardMismatchError(
            f"shard(s) {', '.join(map(str, missing))} of {count} are missing — run python -m stages.jacobian "
            f"with points.shards={count} points.shard={','.join(map(str, missing))} (the same other overrides)"
        )
    ordered = [by_index[i] for i in range(count)]
    _check_same_protocol(ordered)
    _check_points(ordered)
    return ordered


# the input label of the images Table 10's proxy reads: shard 0 alone reads them (run_settings.runs_proxy)
PROXY_INPUT = "proxy_images"


def _check_same_protocol(shards: Sequence[ShardFolder]) -> None:
    """Same config but the shard index, same upstream inputs, same stack size and vmap chunk."""
    first = shards[0]

    def config_of(s: ShardFolder) -> str | None:
        cfg = s.meta.get("config")
        return (
            None if not isinstance(cfg, Mapping) else config_digest(unsharded(cfg), key_sections("jacobian"))
        )

    def inputs_of(s: ShardFolder) -> dict:
        held = (s.meta.get("input_hashes") or {}).items()
        return {k: (v or {}).get("sha256") for k, v in held if k != PROXY_INPUT}

    for s in shards[1:]:
        for what, same in (
            ("config (other than points.shard)", config_of(s) == config_of(first)),
            ("upstream inputs (model, covariance, trajectories)", inputs_of(s) == inputs_of(first)),
            ("protocol (seeds, steps, seed_batch, chunk_size)", s.record.protocol == first.record.protocol),
        ):
            if not same:
                raise ShardMismatchError(
                    f"{s.name} and {first.name} differ in their {what}, so they are not shards of one run — "
                    "rerun every shard with the same overrides (set measure.chunk_size and points.seed_batch "
                    "to numbers, not auto)"
                )
    if config_of(first) is None:
        raise ShardMismatchError(f"{first.name} has no config in its meta.json — rerun it with force=true")


def _check_points(shards: Sequence[ShardFolder]) -> None:
    """Every point of the protocol (seeds × steps) in exactly one shard."""
    owner: dict[tuple[int, int], int] = {}
    for s in shards:
        for seed, step in s.record.points:
            if (seed, step) in owner:
                raise ShardMismatchError(
                    f"point (seed {seed}, step {step}) is in shard {owner[(seed, step)]} and in {s.name} — "
                    "rerun the shards with the same points.shards"
                )
            owner[(seed, step)] = s.record.shard
    rec = shards[0].record
    expected = {(seed, step) for seed in rec.seeds for step in rec.steps}
    lacking = sorted(expected - set(owner))
    if lacking or set(owner) - expected:
        seed, step = (lacking or sorted(set(owner) - expected))[0]
        raise ShardMismatchError(
            f"the shards {'lack' if lacking else 'hold a point outside'} the protocol's point (seed {seed}, "
            f"step {step}) — rerun the shards with the same overrides"
        )


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        return header, list(reader)


def _merge_table(name: str, shards: Sequence[ShardFolder], out: JacobianFolder) -> bool:
    """One point table of every shard, rows by (seed, step) as the unsplit run writes them; False if none."""
    columns = list(J.COLUMNS[name])
    keyed: list[tuple[tuple[int, int], list[str]]] = []
    found = False
    for s in shards:
        path = s.folder / name
        if not path.is_file():
            continue
        found = True
        header, rows = _read_rows(path)
        if header != columns:
            raise InputFileError(
                f"{path} has other columns than the {name} schema — rerun {s.name} with the current code"
            )
        points = {tuple(p) for p in s.record.points}
        seed_col, step_col = columns.index("seed"), columns.index("step")
        for row in rows:
            key = (int(row[seed_col]), int(row[step_col]))
            if key not in points:
                raise ShardMismatchError(
                    f"{path} holds a row of point (seed {key[0]}, step {key[1]}), which its {J.SHARD} does "
                    f"not list — rerun {s.name} with force=true"
                )
            keyed.append((key, row))
    if not found:
        return False
    keyed.sort(key=lambda kr: kr[0])  # stable: a point's own rows keep their shard's order
    buf = textio.StringIO()
    writer = csv.writer(buf, lineterminator="\n")  # pipeline.io.write_csv's dialect
    writer.writerow(columns)
    writer.writerows(row for _, row in keyed)
    io.write_text(out / name, buf.getvalue())
    return True


def _check_global_rows(shards: Sequence[ShardFolder]) -> None:
    """Each shard's global table has one row per point it lists (a shard that finished all its points)."""
    for s in shards:
        path = s.folder / J.GLOBAL
        if not path.is_file():
            raise InputMissingError(f"{path} does not exist — rerun {s.name} with force=true")
        got = sorted((int(r["seed"]), int(r["step"])) for r in io.read_csv(path))
        if got != sorted(tuple(p) for p in s.record.points):
            raise ShardMismatchError(
                f"{path} does not hold one row per point of its {J.SHARD} — rerun {s.name} with force=true"
            )


def pooled_lyapunov(patch_rows: list[dict[str, str]], steps: Sequence[int]) -> list[dict]:
    """lyapunov.csv's rows from whole trajectories' patch rows: λ_k and f_t(λ_k) as the rows hold them."""
    M = 1 + max(int(r["k"]) for r in patch_rows)
    lam = np.empty(M, dtype=np.float64)
    f = np.empty((len(steps), M), dtype=np.float64)
    position = {int(i): n for n, i in enumerate(steps)}
    for r in patch_rows:
        k = int(r["k"])
        lam[k] = float(r["lambda_k"])
        f[position[int(r["step"])], k] = float(r["f_t"])
    return lyapunov_rows(patch_rows, lam, f)


def pool_tables(folders: Sequence[str | Path], out_dir: str | Path) -> PoolResult:
    """Pool the shard folders of one protocol into ``out_dir``: the tables of the unsplit run."""
    shards = check_shards([read_shard(p) for p in folders])
    _check_global_rows(shards)
    out = JacobianFolder(out_dir)
    written = [name for name in POINT_TABLES if _merge_table(name, shards, out)]
    rec = shards[0].record
    if len(rec.steps) == rec.chain_steps:  # exponents are averages over the whole chain
        out.write_table(J.LYAPUNOV, pooled_lyapunov(io.read_csv(out / J.PATCHES), rec.steps))
        written.append(J.LYAPUNOV)
    elif rec.chain_t:  # §7.7's representative steps: S_k,t interpolated onto the chain, as the unsplit run
        rows = io.read_csv(out / J.PATCHES)
        lam = np.empty(len(rec.chain_f[0]), dtype=np.float64)
        for r in rows:
            lam[int(r["k"])] = float(r["lambda_k"])
        f = np.asarray(rec.chain_f, dtype=np.float64)
        out.write_table(J.LYAPUNOV, lyapunov_rows(rows, lam, f, np.asarray(rec.chain_t)))
        written.append(J.LYAPUNOV)
    proxies = [s for s in shards if (s.folder / J.PROXY).is_file()]
    if len(proxies) > 1:
        raise ShardMismatchError(
            f"{proxies[0].name} and {proxies[1].name} both hold {J.PROXY}; only shard 0 measures it — "
            "rerun the shards with the current code"
        )
    if proxies:
        io.write_bytes(out / J.PROXY, (proxies[0].folder / J.PROXY).read_bytes())
        written.append(J.PROXY)
    return PoolResult(len(shards), sum(len(s.record.points) for s in shards), written)


def pool_body(folders: Sequence[Path]):
    """The pooled jacobian run's body for pipeline.runs.run_stage: the unsplit run's tables from its shards."""

    def body(ctx) -> None:
        ctx.inputs.update({f"shard-{i}": str(p) for i, p in enumerate(folders)})
        result = pool_tables(folders, ctx.out_dir)
        # measuring time is how each shard's run went: its run.json, not its record
        seconds = [
            float((read_run_info(p) or {}).get("metrics", {}).get("seconds_measuring_total", np.nan))
            for p in folders
        ]
        ctx.metrics.update(shards=float(result.shards), num_points=float(result.points))
        if all(np.isfinite(seconds)):
            ctx.metrics["seconds_measuring_total"] = float(np.sum(seconds))

    return body
