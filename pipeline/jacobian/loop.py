"""Measurement of a whole set of trajectories: loops pipeline.jacobian.measure_step over (seed, step).

Writes the long-format tables of the jacobian stage (one row per seed and paper timestep t,
per patch k, per block (k, j)); each (seed, step) is checkpointed so a killed run resumes.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import io
from pipeline.errors import InputMissingError, NonFiniteError, PipelineError
from pipeline.jacobian.shards import Shard, ShardRecord, shard_stacks, stack_points
from pipeline.outputs import CovarianceFolder, JacobianFolder, TrajectoriesFolder
from pipeline.sampler import read_trajectory_arrays

# The `points` config node: which (seed, step) points are measured (pipeline.jacobian.MeasureConfig says how).
POINT_KEYS = ("steps", "max_seeds", "block_steps", "light_blocks", "seed_batch", "shards", "shard")


@dataclass
class MeasurementSummary:
    metrics: dict[str, float] = field(default_factory=dict)
    # metric name -> {paper t: value}, for per-timestep MLflow series
    series: dict[str, dict[int, float]] = field(default_factory=dict)


def selected_steps(timesteps: np.ndarray, steps: Any, key: str = "points.steps") -> list[int]:
    """Chain step indices to measure: all (None), or those whose paper t is listed."""
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


def _measure_one(model, x, t, r, b, patch_size, v1, f_t, config, seed, step):
    import torch

    from pipeline.jacobian.measure import measure_step, measurement_seed

    def eps_fn(z):
        return model(z[None], t)[0]

    x = torch.as_tensor(x, dtype=model.dtype, device=model.device)
    return measure_step(
        eps_fn,
        x,
        r,
        b,
        patch_size,
        v1=v1,
        expansion=f_t,
        config=config,
        seed=measurement_seed(seed, step),
    )


def _measure_group(model, xs, t, r, b, patch_size, v1, f_t, config, seeds, step):
    import torch

    from pipeline.jacobian.measure import measurement_seed
    from pipeline.jacobian.points import measure_points

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


def _memory_plan(model, chain, trajectories_dir: Path, selection: dict, chunk_size):
    """Resolve measure.chunk_size / points.seed_batch = auto: calibrated at the first selected point."""
    import torch

    from pipeline.jacobian.memory import calibrate, plan_for_device
    from pipeline.jacobian.operators import ScoreLinearization, StepJacobian

    seeds = _seed_files(trajectories_dir)
    if selection["max_seeds"]:
        seeds = seeds[: int(selection["max_seeds"])]
    ts = np.asarray(chain.timesteps)
    i = selected_steps(ts, selection["steps"])[0]
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

    return plan_for_device(calibrate_here, model.device, len(seeds), chunk_size, selection["seed_batch"])


def measure_trajectories(
    model,
    chain,
    covariance_dir: Path,
    trajectories_dir: Path,
    patch_size: int,
    measure_cfg: Mapping[str, Any],
    points_cfg: Mapping[str, Any],
    out_dir: Path,
    work_dir: Path,
    progress: bool = True,
) -> MeasurementSummary:
    """Measure JΦ_t at every selected (seed, step) of the saved trajectories; write the CSV tables."""
    from tqdm.auto import tqdm

    from pipeline.covariance import read_patch_stats
    from pipeline.geometry import expansion_function, step_coefficients
    from pipeline.jacobian.measure import MeasureConfig
    from pipeline.patches import patch_grid

    mcfg = dict(measure_cfg)
    selection = {k: (points_cfg or {}).get(k) for k in POINT_KEYS}
    memory = None
    if mcfg.get("chunk_size") == "auto" or selection["seed_batch"] == "auto":
        # chunk size and seed batch from the device's free memory (pipeline.jacobian.memory)
        memory = _memory_plan(model, chain, Path(trajectories_dir), selection, mcfg.get("chunk_size"))
        mcfg["chunk_size"], selection["seed_batch"] = memory.chunk_size, memory.seed_batch
    config = MeasureConfig.from_dict(mcfg)
    stats = read_patch_stats(covariance_dir, with_full=False)
    if int(stats.patch_size) != int(patch_size):
        raise ValueError(
            f"patch.size={patch_size} but {covariance_dir} holds statistics for P={stats.patch_size}; "
            "rerun the covariance stage with this patch.size"
        )
    if tuple(stats.image_shape) != tuple(model.image_shape):
        raise ValueError(
            f"covariance image shape {tuple(stats.image_shape)} != model's {tuple(model.image_shape)}"
        )
    grid = patch_grid(model.image_shape[1], model.image_shape[2], patch_size)
    lam = np.asarray(stats.lambda_k, dtype=np.float64)
    v1 = np.asarray(stats.v1, dtype=np.float64)
    coeffs = step_coefficients(chain)
    f = expansion_function(chain, lam)  # [S, M]
    ts = np.asarray(chain.timesteps)
    t_prev = np.append(ts[1:], 0)
    steps = selected_steps(ts, selection["steps"])
    # The full M² block decomposition is the expensive part: measure it at block_steps only and
    # the diagonal blocks everywhere else (null = the configured method at every step).
    block_steps = set(
        steps
        if selection["block_steps"] is None
        else selected_steps(ts, selection["block_steps"], "points.block_steps")
    )
    # light_blocks and seed_batch were range-checked with the config, before the run (pipeline.schema)
    light_blocks = selection["light_blocks"]
    light = replace(config, blocks=light_blocks) if config.blocks not in ("off", "diag") else config
    seeds = _seed_files(Path(trajectories_dir))
    if selection["max_seeds"]:
        seeds = seeds[: int(selection["max_seeds"])]

    attention_rows: list[dict] = []
    global_rows: list[dict] = []
    patch_rows: list[dict] = []
    block_rows: list[dict] = []
    seed_batch = int(selection["seed_batch"])
    # the stacks of points this run measures: all of them, or one shard's (pipeline.jacobian.shards)
    shard = Shard.from_points(points_cfg)
    stacks = shard_stacks([s for s, _ in seeds], steps, seed_batch, shard)
    mine = set(stack_points(stacks))

    def unit_file_of(seed: int, i: int) -> Path:
        return work_dir / f"seed-{seed}" / f"step-{i:04d}.json"

    def write_unit(m, seed: int, i: int, x_point) -> dict:
        t = int(ts[i])
        head = {
            "seed": seed,
            "step": i,
            "t": t,
            "t_prev": int(t_prev[i]),
            "alpha_bar_t": float(chain.alpha_bar_t[i]),
            "alpha_bar_prev": float(chain.alpha_bar_prev[i]),
            "r_t": float(coeffs.r[i]),
            "b_t": float(coeffs.b[i]),
        }
        g = m.global_row()
        # the estimators that ran at this step: the full setting at block steps, the light one elsewhere
        _check_measured(g, config if i in block_steps else light, seed, i, t)
        g["matvecs"] = int(g.get("jvps", 0)) + int(g.get("vjps", 0))
        # wall-clock time is not a measurement: kept out of the tables (byte-identical reruns)
        seconds = float(g.pop("seconds", math.nan))
        prow = []
        for row in m.patch_rows():
            k = int(row["k"])
            prow.append(
                {
                    "seed": seed,
                    "step": i,
                    "t": t,
                    "k": k,
                    "row": k // grid.cols,
                    "col": k % grid.cols,
                    "lambda_k": float(lam[k]),
                    "f_t": float(f[i, k]),
                    **row,
                }
            )
        brow = [
            {
                "seed": seed,
                "step": i,
                "t": t,
                "k": r["k"],
                "j": r["j"],
                "chebyshev": r["distance"],
                "op_norm": r["op"],
                "frob_norm": r["frob"],
            }
            for r in m.block_rows((grid.rows, grid.cols))
        ]
        unit = {
            "global": {**head, **g},
            "patches": prow,
            "blocks": brow,
            "seconds": seconds,
            "attention": _attention_row(model, x_point, t, head),
        }
        io.write_text(unit_file_of(seed, i), json.dumps(unit))
        return unit

    if seed_batch > 1:
        # Points of several seeds at one step share t, r_t, b_t: measure them as one stack through the
        # model's batch dimension (pipeline.jacobian.points), then the loop below only reads the units.
        needed = {seed for seed, _ in mine}
        trajs = {seed: read_trajectory_arrays(path)["x"] for seed, path in seeds if seed in needed}
        groups = [(i, [seed for seed in stack if not unit_file_of(seed, i).exists()]) for i, stack in stacks]
        groups = [(i, group) for i, group in groups if group]
        # Every stack has one size, b: CPU kernels are chosen by batch size (~1e-7 relative in float32),
        # so a short group is padded with copies of its last point and a point's numbers depend on
        # (seed, step, b) only, not on which seeds a resume left to share its stack.
        b = min(seed_batch, len(seeds))
        for i, group in tqdm(groups, desc=f"jacobian (step, {b} seeds)", unit="group", disable=not progress):
            padded = group + [group[-1]] * (b - len(group))
            xs = np.stack([trajs[seed][i] for seed in padded])
            ms = _measure_group(
                model,
                xs,
                int(ts[i]),
                float(coeffs.r[i]),
                float(coeffs.b[i]),
                patch_size,
                v1,
                f[i],
                config if i in block_steps else light,
                padded,
                i,
            )[: len(group)]
            for seed, m in zip(group, ms, strict=True):
                write_unit(m, seed, i, trajs[seed][i])
        trajs.clear()

    # Exact S against the full-Σ₀ Gaussian surrogate (eq. 29-30): ρ_k^N − ρ_k, where the covariance stage
    # fitted Σ₀. ρ^N depends on the step only (the surrogate's Jacobian is constant in x).
    rho_surrogate = surrogate_rayleigh(
        Path(covariance_dir), model.image_shape, chain, coeffs, steps, v1, patch_size
    )

    units = [(s, p, i) for s, p in seeds for i in steps if (s, i) in mine]
    bar = tqdm(units, desc="jacobian (seed, step)", unit="pt", disable=not progress or seed_batch > 1)
    cache: dict[int, np.ndarray] = {}
    measure_seconds: list[float] = []
    for seed, path, i in bar:
        unit_file = unit_file_of(seed, i)
        if unit_file.exists():
            unit = json.loads(unit_file.read_text())
        else:
            if seed not in cache:
                cache.clear()
                cache[seed] = read_trajectory_arrays(path)["x"]
            x_traj = cache[seed]
            m = _measure_one(
                model,
                x_traj[i],
                int(ts[i]),
                float(coeffs.r[i]),
                float(coeffs.b[i]),
                patch_size,
                v1,
                f[i],
                config if i in block_steps else light,
                seed,
                i,
            )
            unit = write_unit(m, seed, i, x_traj[i])
        global_rows.append(unit["global"])
        measure_seconds.append(float(unit.get("seconds", math.nan)))
        patch_rows.extend(with_exact_suppression(unit["patches"], rho_surrogate))
        block_rows.extend(unit["blocks"])
        if unit.get("attention"):
            attention_rows.append(unit["attention"])

    out = JacobianFolder(out_dir)
    out.write_table(out.GLOBAL, global_rows)
    out.write_table(out.PATCHES, patch_rows)
    if block_rows:
        out.write_table(out.BLOCKS, block_rows)
    if attention_rows:
        out.write_table(out.ATTENTION, attention_rows)
    if shard.split:  # exponents need whole trajectories: pipeline.jacobian.pool writes them for all shards
        record = ShardRecord.of(
            shard, [s for s, _ in seeds], steps, len(ts), seed_batch, config.chunk_size, mine
        )
        io.write_json(out / out.SHARD, record.to_json())
    elif len(steps) == len(ts):  # exponents are averages over the whole chain
        out.write_table(out.LYAPUNOV, lyapunov_rows(patch_rows, lam, f))
    summary = _summarise(global_rows, patch_rows, len(seeds), len(steps))
    if memory is not None:
        summary.metrics.update(chunk_size=float(memory.chunk_size), seed_batch=float(memory.seed_batch))
    finite = [v for v in measure_seconds if math.isfinite(v)]
    if finite:
        summary.metrics["seconds_per_point_mean"] = float(np.mean(finite))
        summary.metrics["seconds_measuring_total"] = float(np.sum(finite))
    return summary


def surrogate_rayleigh(covariance_dir: Path, image_shape, chain, coeffs, steps, v1, patch_size):
    """{chain step: [M] ⟨v_k, [JΦ_t^N]_kk v_k⟩} of the full-Σ₀ Gaussian surrogate, or None without Σ₀."""
    if not CovarianceFolder(covariance_dir).has_gaussian_fit():
        return None
    from pipeline.covariance import read_gaussian_fit
    from pipeline.jacobian.deviation import GaussianSurrogate

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


def _check_measured(g: Mapping[str, Any], config, seed: int, step: int, t: int) -> None:
    """Stop on a NaN/inf estimate of an enabled estimator: a table must never hold one as a measurement."""
    enabled = (
        ("kappa_pi", config.global_power),
        ("kappa_lanczos", config.global_lanczos),
        ("rayleigh_max", config.rayleigh),
        ("kappa_diag", config.blocks != "off"),
    )
    bad = [k for k, on in enabled if on and g.get(k) is not None and not math.isfinite(float(g[k]))]
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
    import torch

    from pipeline.jacobian.attention import attention_entropy

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


def lyapunov_rows(patch_rows: list[dict], lam: np.ndarray, f: np.ndarray) -> list[dict]:
    """Per (seed, k): Λ̂_k = mean_t log|ρ_k,t| (eq. 49 with eq. 32's quotient) beside the Gaussian
    Λ(λ_k) = mean_t log f_t(λ_k) over the same chain (§5.1), column lyap_gauss. The suppression-corrected
    Λ_pred of eq. 48-49 is not written here: Table 11 computes it from patches.csv's S_k,t."""
    from pipeline.jacobian.lyapunov import rayleigh_exponents

    lyap_gauss = np.log(f).mean(axis=0)  # [M] Gaussian Λ(λ_k); the corrected Λ_pred of eq. 49 is Table 11's
    by_seed: dict[int, dict[tuple[int, int], float]] = defaultdict(dict)
    for r in patch_rows:
        by_seed[int(r["seed"])][(int(r["step"]), int(r["k"]))] = float(r["rayleigh"])
    rows = []
    M = len(lam)
    for seed, d in sorted(by_seed.items()):
        steps = sorted({s for s, _ in d})
        rq = np.array([[d[(s, k)] for k in range(M)] for s in steps])
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
                }
            )
    return rows


def measure_proxy(model, alpha_bar: np.ndarray, x0, timesteps, seed: int, surrogate=None) -> list[dict]:
    """Table 10: the eq. 65 paired-difference proxy E‖ε̂(x_t^real) − ε̂(x_t^noise)‖ over real images, and,
    where the Gaussian surrogate exists, the exact ‖Δ_t‖ = ‖ε̂ − ε^N‖ (eq. 28) at the same x_t^real."""
    import math

    import torch

    from pipeline.jacobian.deviation import score_deviation, score_deviation_proxy

    x0 = torch.as_tensor(x0, dtype=model.dtype, device=model.device)
    rows = []
    for t in timesteps:
        t = int(t)
        a = float(alpha_bar[t])
        gen = torch.Generator().manual_seed(int(seed) * 100003 + t)
        proxy = score_deviation_proxy(model, x0, t, a, gen)
        row = {
            "t": t,
            "sqrt_alpha_bar": math.sqrt(a),
            "proxy": float(proxy.mean()),
            "proxy_std": float(proxy.std(ddof=1)) if len(proxy) > 1 else math.nan,
            "exact_deviation": math.nan,
            "exact_deviation_std": math.nan,
            "num_images": len(proxy),
        }
        if surrogate is not None:
            gen = torch.Generator().manual_seed(int(seed) * 100003 + t)  # the same ε as the proxy's x_real
            eps = torch.randn(x0.shape, generator=gen, dtype=torch.float32).to(x0.device, x0.dtype)
            xr = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
            with torch.no_grad():
                dev = np.concatenate(
                    [
                        score_deviation(model(xr[i : i + 64], t), xr[i : i + 64], surrogate, a)
                        for i in range(0, len(xr), 64)
                    ]
                )
            row["exact_deviation"] = float(dev.mean())
            row["exact_deviation_std"] = float(dev.std(ddof=1)) if len(dev) > 1 else math.nan
        rows.append(row)
    return rows


def proxy_table(model, source, covariance_dir: Path, proxy_cfg: Mapping[str, Any]) -> list[dict]:
    """Table 10's rows on the first ``proxy.images`` images of ``source`` at ``proxy.timesteps`` (those on
    the model's schedule), with the exact ‖Δ_t‖ where the covariance stage fitted Σ₀."""
    from pipeline.covariance import read_gaussian_fit
    from pipeline.jacobian.deviation import GaussianSurrogate

    n = int(proxy_cfg["images"])
    x0 = np.concatenate(list(source.iter_chunks(n)))[:n]
    surrogate = None
    if CovarianceFolder(covariance_dir).has_gaussian_fit():
        fit = read_gaussian_fit(covariance_dir)
        surrogate = GaussianSurrogate(fit.mean, fit.cov, model.image_shape)
    T = len(model.alpha_bar) - 1
    ts = [int(t) for t in proxy_cfg["timesteps"] if 1 <= int(t) <= T]
    return measure_proxy(model, model.alpha_bar, x0, ts, int(proxy_cfg.get("seed") or 0), surrogate)


def measurement_body(setup, cfg: Mapping[str, Any]):
    """The jacobian stage's body for pipeline.runs.run_stage: the tables of every selected point, Table 10's
    proxy where it is on, and the per-t series for MLflow. ``setup``: pipeline.assemble.JacobianSetup."""

    def body(ctx) -> None:
        ctx.inputs.update(covariance=str(setup.covariance.path), trajectories=str(setup.trajectories.path))
        summary = measure_trajectories(
            model=setup.model,
            chain=setup.chain,
            covariance_dir=setup.covariance.path,
            trajectories_dir=setup.trajectories.path,
            patch_size=int(cfg["patch"]["size"]),
            measure_cfg=cfg["measure"],
            points_cfg=cfg["points"],
            out_dir=ctx.out_dir,
            work_dir=ctx.work_dir,
            progress=ctx.progress,
        )
        ctx.metrics.update(summary.metrics)
        if setup.proxy_source is not None:
            rows = proxy_table(setup.model, setup.proxy_source, setup.covariance.path, cfg["proxy"])
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
        for name in (
            "kappa_pi",
            "kappa_lanczos",
            "kappa_diag",
            "delta_cross",
            "kappa_pc",
            "suppression_mean",
        ):
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
