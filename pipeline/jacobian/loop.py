"""Measurement of a whole set of trajectories: the engine (pipeline.jacobian.points) over (seed, step).

Writes the long-format tables of the jacobian stage (one row per seed and paper timestep t,
per patch k, per block (k, j)); each (seed, step) is checkpointed so a killed run resumes.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline import io
from pipeline.covariance import read_gaussian_fit, read_patch_stats
from pipeline.errors import ConfigError, InputMissingError, NonFiniteError, PipelineError
from pipeline.geometry import expansion_function, representative_timesteps, step_coefficients
from pipeline.jacobian import rows
from pipeline.jacobian.attention import attention_entropy
from pipeline.jacobian.deviation import GaussianSurrogate, proxy_table
from pipeline.jacobian.estimators import non_finite, series_columns
from pipeline.jacobian.lyapunov import rayleigh_exponents
from pipeline.jacobian.measure import MeasureConfig, measurement_seed
from pipeline.jacobian.memory import calibrate, plan_for_device
from pipeline.jacobian.operators import ScoreLinearization, StepJacobian
from pipeline.jacobian.plan import plan_measurement
from pipeline.jacobian.points import measure_points
from pipeline.jacobian.protocol import REPRESENTATIVE_STEPS, steps_for_tables
from pipeline.jacobian.run_settings import MeasurementSettings, PointSelection
from pipeline.jacobian.shards import Shard, ShardRecord, shard_stacks, stack_points
from pipeline.outputs import CovarianceFolder, JacobianFolder, TrajectoriesFolder
from pipeline.patches import patch_grid
from pipeline.sampler import read_trajectory_arrays

log = logging.getLogger("pifs")


@dataclass
class MeasurementSummary:
    metrics: dict[str, float] = field(default_factory=dict)
    # metric name -> {paper t: value}, for per-timestep MLflow series
    series: dict[str, dict[int, float]] = field(default_factory=dict)


def selected_steps(
    timesteps: np.ndarray, steps: Any, key: str = "points.steps", tables: list[str] | None = None
) -> list[int]:
    """Chain step indices to measure: all (None; with measure.tables, the steps those tables need), §7.7's
    20 representative steps ("representative"), or those whose paper t is listed."""
    if steps is None and tables is not None:
        steps = steps_for_tables(tables, timesteps)
    if steps == "representative":
        steps = representative_timesteps(timesteps, REPRESENTATIVE_STEPS)
    if steps is None or steps == "all":
        return list(range(len(timesteps)))
    wanted = {int(t) for t in steps}
    chosen = [i for i, t in enumerate(timesteps) if int(t) in wanted]
    missing = sorted(wanted - {int(timesteps[i]) for i in chosen})
    if missing:
        raise PipelineError(
            f"{key} lists paper timesteps {missing} that are not in the sampler chain "
            f"({int(timesteps[0])}..{int(timesteps[-1])}, {len(timesteps)} steps) — pick t from the chain"
        )
    return chosen


def _seed_files(trajectories_dir: Path) -> list[tuple[int, Path]]:
    files = TrajectoriesFolder(trajectories_dir).seed_files()
    if not files:
        raise InputMissingError(
            f"no {TrajectoriesFolder.SEED_PATTERN} trajectories in {trajectories_dir} — run the trajectories stage"
        )
    return files


def _measure_group(model, xs, t, r, b, patch_size, v1, f_t, config, seeds, step):
    """The engine (pipeline.jacobian.points) on the points of ``seeds`` at one chain step, batched."""
    xs = torch.as_tensor(xs, dtype=model.dtype, device=model.device)
    return measure_points(
        lambda z: model(z, t),
        xs,
        r,
        b,
        patch_size,
        [measurement_seed(s, step) for s in seeds],
        v1=v1,
        expansion=f_t,
        config=config,
    )


def _memory_plan(
    model, chain, trajectories_dir: Path, points: PointSelection, measure: MeasureConfig, patch_size: int
):
    """Resolve measure.chunk_size / points.seed_batch = auto: calibrated at the first selected point; on the
    exact route each point also holds its n x n Jacobian (float64) while it is measured."""
    C, H, W = model.image_shape
    n, M = C * H * W, (H // patch_size) * (W // patch_size)
    cfg = replace(measure, chunk_size=16)
    stored = 8.0 * n * n if plan_measurement(n, M, cfg, True).blocks == "dense" else 0.0

    seeds = _seed_files(trajectories_dir)
    if points.max_seeds:
        seeds = seeds[: int(points.max_seeds)]
    ts = np.asarray(chain.timesteps)
    i = selected_steps(ts, points.steps, tables=measure.tables)[0]
    t = int(ts[i])

    def calibrate_here():
        x = torch.as_tensor(io.load_npz(seeds[0][1])["x"][i], dtype=model.dtype, device=model.device)

        def products(c: int):
            score = ScoreLinearization(
                lambda z: model(z[None], t)[0], x, jvp_method="double_vjp", chunk_size=c
            )
            return StepJacobian(score, 1.0, -1.0).gram(
                torch.randn(c, *x.shape, dtype=x.dtype, device=x.device)
            )

        return calibrate(products, model.device)

    return plan_for_device(
        calibrate_here,
        model.device,
        len(seeds),
        measure.chunk_size,
        points.seed_batch,
        stored_bytes_per_point=stored,
    )


@dataclass
class _RunPlan:
    """What a run measures, resolved once: the settings, the chain's arrays, the points and the patch data."""

    config: Any  # MeasureConfig at block steps
    light: Any  # MeasureConfig at the other measured steps
    chain: Any
    ts: np.ndarray
    coeffs: Any
    lam: np.ndarray
    v1: np.ndarray
    f: np.ndarray  # [S, M] f_t(λ_k) on the chain
    grid: Any
    steps: list[int]
    block_steps: set[int]
    seeds: list[tuple[int, Path]]
    seed_batch: int
    shard: Shard  # this run's share of the protocol's stacks of points (pipeline.jacobian.shards)
    stacks: list  # the stacks of points this run measures: all of them, or one shard's
    mine: set  # their (seed, step) points
    memory: Any = None

    def config_at(self, i: int):
        return self.config if i in self.block_steps else self.light


def _plan_run(
    model, chain, covariance_dir, trajectories_dir, settings: MeasurementSettings, shard: Shard
) -> _RunPlan:
    """Resolve the settings (chunk size / seed batch = auto from the device), check the patch statistics
    against the model, and select the points (of a split protocol: shard ``shard``'s)."""
    patch_size = settings.patch_size
    points, config = settings.points, settings.measure
    memory = None
    if config.chunk_size == "auto" or points.seed_batch == "auto":
        # chunk size and seed batch from the device's free memory (pipeline.jacobian.memory)
        memory = _memory_plan(model, chain, Path(trajectories_dir), points, config, int(patch_size))
        config = replace(config, chunk_size=memory.chunk_size)
        points = replace(points, seed_batch=memory.seed_batch)
    stats = read_patch_stats(covariance_dir, with_full=False)
    if int(stats.patch_size) != int(patch_size):
        raise ConfigError(
            f"patch.size={patch_size} but {covariance_dir} holds statistics for P={stats.patch_size} — "
            "rerun the covariance stage with this patch.size (force=true)"
        )
    if tuple(stats.image_shape) != tuple(model.image_shape):
        raise ConfigError(
            f"{covariance_dir} holds statistics of {tuple(stats.image_shape)} images, the model makes "
            f"{tuple(model.image_shape)} — rerun the covariance stage with this dataset (force=true)"
        )
    lam = np.asarray(stats.lambda_k, dtype=np.float64)
    ts = np.asarray(chain.timesteps)
    steps = selected_steps(ts, points.steps, tables=config.tables)
    # The full M² block decomposition is the expensive part: measure it at block_steps only and
    # the diagonal blocks everywhere else (null = the configured method at every step).
    block_steps = set(
        steps if points.block_steps is None else selected_steps(ts, points.block_steps, "points.block_steps")
    )
    # light_blocks and seed_batch were range-checked with the config, before the run (pipeline.schema)
    light_blocks = points.light_blocks
    seeds = _seed_files(Path(trajectories_dir))
    if points.max_seeds:
        seeds = seeds[: int(points.max_seeds)]
    seed_batch = int(points.seed_batch)
    # the stacks of points this run measures: all of them, or one shard's (pipeline.jacobian.shards)
    stacks = shard_stacks([s for s, _ in seeds], steps, seed_batch, shard)
    return _RunPlan(
        config=config,
        light=replace(config, blocks=light_blocks) if config.blocks not in ("off", "diag") else config,
        chain=chain,
        ts=ts,
        coeffs=step_coefficients(chain),
        lam=lam,
        v1=np.asarray(stats.v1, dtype=np.float64),
        f=expansion_function(chain, lam),
        grid=patch_grid(model.image_shape[1], model.image_shape[2], patch_size),
        steps=steps,
        block_steps=block_steps,
        seeds=seeds,
        seed_batch=seed_batch,
        shard=shard,
        stacks=stacks,
        mine=set(stack_points(stacks)),
        memory=memory,
    )


def _unit(run: _RunPlan, model, m, seed: int, i: int, x_point) -> dict:
    """One measured point as its rows of the three tables (and its attention row and wall time)."""
    t, ts, grid = int(run.ts[i]), run.ts, run.grid
    head = {
        "seed": seed,
        "step": i,
        "t": t,
        "t_prev": int(ts[i + 1]) if i + 1 < len(ts) else 0,
        "alpha_bar_t": float(run.chain.alpha_bar_t[i]),
        "alpha_bar_prev": float(run.chain.alpha_bar_prev[i]),
        "r_t": float(run.coeffs.r[i]),
        "b_t": float(run.coeffs.b[i]),
    }
    # the estimators that ran at this step: the full setting at block steps, the light one elsewhere
    _check_measured(m, run.config_at(i), seed, i, t)
    g = rows.global_row(m)
    g["matvecs"] = int(g.get("jvps", 0)) + int(g.get("vjps", 0))
    point = {"seed": seed, "step": i, "t": t}
    prow = [
        {
            **point,
            "k": int(r["k"]),
            "row": int(r["k"]) // grid.cols,
            "col": int(r["k"]) % grid.cols,
            "lambda_k": float(run.lam[int(r["k"])]),
            "f_t": float(run.f[i, int(r["k"])]),
            **r,
        }
        for r in rows.patch_rows(m)
    ]
    blocks = rows.block_rows(m, (grid.rows, grid.cols)) if run.config.keep_block_matrices else []
    brow = [{**point, "k": r.pop("k"), "j": r.pop("j"), "chebyshev": r.pop("distance"), **r} for r in blocks]
    return {
        "global": {**head, **g},
        "patches": prow,
        "blocks": brow,
        # wall-clock time is not a measurement: kept out of the tables (byte-identical reruns)
        "seconds": float(sum(m.seconds.values())),
        "attention": _attention_row(model, x_point, t, head),
    }


def _unit_file(work_dir: Path, seed: int, i: int) -> Path:
    return Path(work_dir) / f"seed-{seed}" / f"step-{i:04d}.json"


def _unit_ready(work_dir: Path, seed: int, i: int) -> bool:
    """A unit is reused only as written: one that was edited or damaged since is measured again."""
    path = _unit_file(work_dir, seed, i)
    if not path.exists():
        return False
    if io.read_sealed_json(path) is None:
        log.warning(
            "jacobian: %s does not match the seal written with it (edited or damaged); measuring it again",
            path,
        )
        return False
    return True


def _measure_missing(run: _RunPlan, model, patch_size: int, work_dir: Path, progress: bool) -> None:
    """Measure every selected point without a unit file, seed_batch points of one step per engine call."""
    needed = {seed for seed, _ in run.mine}
    trajs = {seed: read_trajectory_arrays(path)["x"] for seed, path in run.seeds if seed in needed}
    groups = [(i, [seed for seed in stack if not _unit_ready(work_dir, seed, i)]) for i, stack in run.stacks]
    groups = [(i, group) for i, group in groups if group]
    # Every stack has one size, b: CPU kernels are chosen by batch size (~1e-7 relative in float32),
    # so a short group is padded with copies of its last point and a point's numbers depend on
    # (seed, step, b) only, not on which seeds a resume left to share its stack.
    b = min(run.seed_batch, len(run.seeds))
    for i, group in tqdm(groups, desc=f"jacobian (step, {b} seed(s))", unit="group", disable=not progress):
        padded = group + [group[-1]] * (b - len(group))
        xs = np.stack([trajs[seed][i] for seed in padded])
        r_t, b_t = float(run.coeffs.r[i]), float(run.coeffs.b[i])
        ms = _measure_group(
            model, xs, int(run.ts[i]), r_t, b_t, patch_size, run.v1, run.f[i], run.config_at(i), padded, i
        )[: len(group)]
        for seed, m in zip(group, ms, strict=True):
            unit = _unit(run, model, m, seed, i, trajs[seed][i])
            io.write_sealed_json(_unit_file(work_dir, seed, i), unit)


def measure_trajectories(
    model,
    chain,
    covariance_dir: Path,
    trajectories_dir: Path,
    settings: MeasurementSettings,
    shard: Shard,
    out_dir: Path,
    work_dir: Path,
    progress: bool = True,
) -> MeasurementSummary:
    """Measure JΦ_t at every selected (seed, step) of the saved trajectories (of a split protocol, shard
    ``shard``'s); write the CSV tables."""
    run = _plan_run(model, chain, covariance_dir, trajectories_dir, settings, shard)
    patch_size = settings.patch_size
    # Points of several seeds at one step share t, r_t, b_t: the engine measures them as one stack through
    # the model's batch dimension (points.seed_batch of them; 1 = one point at a time); each point is a
    # unit file, so a killed run resumes where it stopped.
    _measure_missing(run, model, patch_size, work_dir, progress)
    # Exact S against the full-Σ₀ Gaussian surrogate (eq. 29-30): ρ_k^N − ρ_k, where the covariance stage
    # fitted Σ₀. ρ^N depends on the step only (the surrogate's Jacobian is constant in x).
    rho_surrogate = surrogate_rayleigh(
        Path(covariance_dir), model.image_shape, chain, run.coeffs, run.steps, run.v1, patch_size
    )
    tables: dict[str, list[dict]] = {"global": [], "patches": [], "blocks": [], "attention": []}
    measure_seconds: list[float] = []
    for seed, i in [(s, i) for s, _ in run.seeds for i in run.steps if (s, i) in run.mine]:
        unit = io.read_sealed_json(_unit_file(work_dir, seed, i))
        if unit is None:
            raise PipelineError(
                f"the measured unit {_unit_file(work_dir, seed, i)} changed while this run wrote the tables — "
                "make sure one run at a time writes this folder, then rerun"
            )
        tables["global"].append(unit["global"])
        measure_seconds.append(float(unit.get("seconds", math.nan)))
        tables["patches"].extend(with_exact_suppression(unit["patches"], rho_surrogate))
        tables["blocks"].extend(unit["blocks"])
        if unit.get("attention"):
            tables["attention"].append(unit["attention"])
    _write_tables(run, JacobianFolder(out_dir), tables)
    summary = _summarise(tables["global"], tables["patches"], len(run.seeds), len(run.steps))
    if run.memory is not None:
        summary.metrics.update(
            chunk_size=float(run.memory.chunk_size), seed_batch=float(run.memory.seed_batch)
        )
    finite = [v for v in measure_seconds if math.isfinite(v)]
    if finite:
        summary.metrics["seconds_per_point_mean"] = float(np.mean(finite))
        summary.metrics["seconds_measuring_total"] = float(np.sum(finite))
    return summary


def _write_tables(run: _RunPlan, out: JacobianFolder, tables: dict[str, list[dict]]) -> None:
    out.write_table(out.GLOBAL, tables["global"])
    out.write_table(out.PATCHES, tables["patches"])
    if tables["blocks"]:
        out.write_table(out.BLOCKS, tables["blocks"])
    if tables["attention"]:
        out.write_table(out.ATTENTION, tables["attention"])
    # exponents are averages over the whole chain: every step measured, or (§7.7) the representative steps
    # with S_k,t interpolated between them
    ts, steps = run.ts, run.steps
    measured_t = [int(ts[i]) for i in steps]
    sparse = len(steps) < len(ts) and measured_t == representative_timesteps(ts, REPRESENTATIVE_STEPS)
    if (
        run.shard.split
    ):  # exponents need whole trajectories: pipeline.jacobian.pool writes them for all shards
        seeds = [s for s, _ in run.seeds]
        chain_t, chain_f = (ts, run.f) if sparse else ((), ())
        record = ShardRecord.of(
            run.shard,
            seeds,
            steps,
            len(ts),
            run.seed_batch,
            run.config.chunk_size,
            run.mine,
            chain_t,
            chain_f,
        )
        io.write_json(out / out.SHARD, record.to_json())
    elif len(steps) == len(ts) or (sparse and run.config.rayleigh):
        out.write_table(
            out.LYAPUNOV, lyapunov_rows(tables["patches"], run.lam, run.f, ts if sparse else None)
        )


def surrogate_rayleigh(covariance_dir: Path, image_shape, chain, coeffs, steps, v1, patch_size):
    """{chain step: [M] ⟨v_k, [JΦ_t^N]_kk v_k⟩} of the full-Σ₀ Gaussian surrogate, or None without Σ₀."""
    if not CovarianceFolder(covariance_dir).has_gaussian_fit():
        return None
    fit = read_gaussian_fit(covariance_dir)
    if tuple(fit.image_shape) != tuple(image_shape):
        return None
    sur = GaussianSurrogate(fit.mean, fit.cov, tuple(image_shape))
    return {
        i: sur.rayleigh(float(chain.alpha_bar_t[i]), float(coeffs.r[i]), float(coeffs.b[i]), v1, patch_size)
        for i in steps
    }


def with_exact_suppression(rows: list[dict], rho_surrogate: dict | None) -> list[dict]:
    """Patch rows with rayleigh_surrogate = ρ_k^N and exact_suppression = ρ_k^N − ρ_k (eq. 30, Table 3);
    NaN where the surrogate or the measured quotient is missing."""
    out = []
    for r in rows:
        rn = math.nan if rho_surrogate is None else float(rho_surrogate[int(r["step"])][int(r["k"])])
        rq = float(r.get("rayleigh", math.nan))
        out.append({**r, "rayleigh_surrogate": rn, "exact_suppression": rn - rq})
    return out


def _check_measured(m, config, seed: int, step: int, t: int) -> None:
    """Stop on a NaN/inf estimate of an estimator that ran: a table must never hold one as a measurement."""
    bad = non_finite(m, config, m.block_method, m.rayleigh is not None)
    if bad:
        raise NonFiniteError(
            f"the Jacobian measurement {', '.join(bad)} is NaN/inf at seed {seed}, step {step} (paper t={t}) — "
            "the model's Jacobian overflows there; check the model's weights, try model.dtype=float64, or leave "
            "that step out (points.steps)"
        )


def _attention_row(model, x, t: int, head: dict) -> dict | None:
    """Mean attention entropy (nats) of one plain forward pass at x_t (Table 6); None without attention."""
    if not hasattr(model, "record_attention"):
        return None
    xt = torch.as_tensor(x, dtype=model.dtype, device=model.device)[None]
    with torch.no_grad(), model.record_attention() as rec:
        model(xt, t)
    weights = rec.last()
    if not weights:
        return None
    ent = attention_entropy(weights)
    return {
        "seed": head["seed"],
        "step": head["step"],
        "t": head["t"],
        "entropy": ent.mean,
        "entropy_token_weighted": ent.token_weighted,
        "max_entropy": max(ent.max_entropy.values()),
    }


def lyapunov_rows(
    patch_rows: list[dict], lam: np.ndarray, f: np.ndarray, chain_t: np.ndarray | None = None
) -> list[dict]:
    """Per (seed, k): Λ̂_k = mean_t log|ρ_k,t| (eq. 49 with eq. 32's quotient) beside the Gaussian
    Λ(λ_k) = mean_t log f_t(λ_k) over the same chain (§5.1), column lyap_gauss. The suppression-corrected
    Λ_pred of eq. 48-49 is not written here: Table 11 computes it from patches.csv's S_k,t.

    f: [S, M] f_t(λ_k) on the whole chain. Where only some steps were measured (§7.7: 20 representative
    steps of the 49; ``chain_t`` gives the chain's paper t), S_k,t = f_t(λ_k) − ρ_k,t is interpolated
    linearly in t onto every chain step (held at the nearest measured value beyond them), as the paper
    interpolates S, and ρ_k,t = f_t(λ_k) − S_k,t there; `measured_steps` says how many were measured."""
    lyap_gauss = np.log(f).mean(axis=0)  # [M] Gaussian Λ(λ_k); the corrected Λ_pred of eq. 49 is Table 11's
    by_seed: dict[int, dict[tuple[int, int], float]] = defaultdict(dict)
    for r in patch_rows:
        by_seed[int(r["seed"])][(int(r["step"]), int(r["k"]))] = float(r["rayleigh"])
    rows = []
    M = len(lam)
    for seed, d in sorted(by_seed.items()):
        steps = sorted({s for s, _ in d})
        rq = np.array([[d[(s, k)] for k in range(M)] for s in steps])
        if chain_t is not None and len(steps) < len(chain_t):
            t_meas = np.asarray(chain_t, dtype=np.float64)[steps]
            order = np.argsort(t_meas)
            S = f[steps] - rq  # [measured, M]
            S_chain = np.stack(
                [
                    np.interp(np.asarray(chain_t, dtype=np.float64), t_meas[order], S[order, k])
                    for k in range(M)
                ],
                1,
            )
            rq = f - S_chain
        ex = rayleigh_exponents(rq, step_axis=0)
        for k in range(M):
            rows.append(
                {
                    "seed": seed,
                    "k": k,
                    "lambda_k": float(lam[k]),
                    "lyap_hat": float(ex.exponents[k]),
                    "lyap_gauss": float(lyap_gauss[k]),
                    "nonpositive_steps": int(ex.nonpositive_steps[k]),
                    "steps": int(ex.steps),
                    "measured_steps": len(steps),
                }
            )
    return rows


def measurement_body(setup, settings: MeasurementSettings):
    """The jacobian stage's body for pipeline.runs.run_stage: the tables of every selected point, Table 10's
    proxy where it is on, and the per-t series for MLflow. ``setup``: pipeline.assemble.jacobian.JacobianSetup."""

    def body(ctx) -> None:
        ctx.inputs.update(covariance=str(setup.covariance.path), trajectories=str(setup.trajectories.path))
        summary = measure_trajectories(
            model=setup.model,
            chain=setup.chain,
            covariance_dir=setup.covariance.path,
            trajectories_dir=setup.trajectories.path,
            settings=settings,
            shard=Shard(int(setup.run.shard), setup.run.shards),
            out_dir=ctx.out_dir,
            work_dir=ctx.work_dir,
            progress=ctx.progress,
        )
        ctx.metrics.update(summary.metrics)
        if setup.proxy_source is not None:
            rows = proxy_table(setup.model, setup.proxy_source, setup.covariance.path, settings.proxy)
            out = JacobianFolder(ctx.out_dir)
            out.write_table(out.PROXY, rows)
            ctx.tracker.log_metric_series("proxy_by_t", {r["t"]: r["proxy"] for r in rows})
        for name, series in summary.series.items():
            ctx.tracker.log_metric_series(name, series)

    return body


def _finite(vals) -> list[float]:
    return [float(v) for v in vals if v is not None and math.isfinite(float(v))]


def _summarise(global_rows, patch_rows, num_seeds, num_steps) -> MeasurementSummary:
    out = MeasurementSummary()
    out.metrics.update(num_seeds=float(num_seeds), num_steps_measured=float(num_steps))
    by_t: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for g in global_rows:
        for name in series_columns():
            v = g.get(name)
            if v is not None and math.isfinite(float(v)):
                by_t[name][int(g["t"])].append(float(v))
    for name, d in by_t.items():
        out.series[f"{name}_by_t"] = {t: float(np.mean(v)) for t, v in d.items()}
    sup = _finite(r.get("suppression") for r in patch_rows)
    if sup:
        out.metrics["suppression_abs_max"] = float(np.max(np.abs(sup)))
        out.metrics["suppression_mean"] = float(np.mean(sup))
    dev = _finite(
        abs(float(r["diag_norm"]) - float(r["f_t"]))
        for r in patch_rows
        if r.get("diag_norm") is not None and math.isfinite(float(r["diag_norm"]))
    )
    if dev:
        out.metrics["diag_norm_minus_f_t_abs_max"] = float(np.max(dev))
    kap = _finite(g.get("kappa_pi") for g in global_rows)
    if kap:
        out.metrics["kappa_pi_max"] = float(np.max(kap))
        per_seed: dict[int, float] = defaultdict(float)
        for g in global_rows:
            if (
                g.get("kappa_pi") is not None
                and math.isfinite(float(g["kappa_pi"]))
                and float(g["kappa_pi"]) > 0
            ):
                per_seed[int(g["seed"])] += math.log(float(g["kappa_pi"]))
        out.metrics["log_s_hat_median"] = float(np.median(list(per_seed.values())))
    cross = _finite(g.get("delta_cross") for g in global_rows)
    if cross:
        out.metrics["delta_cross_max"] = float(np.max(cross))
    return out
