"""Small synthetic stage outputs in the exact on-disk schemas, for tests and demos of the analysis.

``kind="gaussian_oracle"``: the closed forms of a block-diagonal Gaussian oracle (S = 0,
diag_norm = rayleigh = f_t(lambda_k), coupling = 0, Lambda_hat = Lambda(lambda_k)), no attention; with
``paper_estimators`` also the paper's estimators replayed on the exact route, as the jacobian stage writes them:
blocks.csv op_norm_pi (K-step block power iteration), frob_norm_hutch (Hutchinson, p probes), patches.csv
diag_norm_pi and global.csv kappa_pi, short of the closed form where the spectrum clusters near 1 (high noise).
The derived per-patch columns and lyapunov.csv are produced by the jacobian stage's own code
(StepMeasurement.patch_rows, pipeline.jacobian.loop.lyapunov_rows) from the made-up base quantities.
``kind="learned"``: made-up numbers with the paper's qualitative shape (S > 0 rising with lambda_k in
mid chain, a (PC) crossover, a sign flip of rho(lambda_k, kappa^diag), entropy falling as coupling
rises, proxy ~ sqrt(alpha_bar)^0.95 at high noise, one outlier seed). Nothing here is a measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.analysis import paper_values as pv
from pipeline.geometry import expansion_function, linear_schedule, step_coefficients, stride_chain
from pipeline.io import save_npz, write_csv, write_json
from pipeline.jacobian.loop import lyapunov_rows
from pipeline.jacobian.measure import StepMeasurement
from pipeline.outputs import META, TrajectoriesFolder
from pipeline.outputs import CovarianceFolder as C
from pipeline.outputs import JacobianFolder as J

T = 1000


def linear_schedule_node() -> dict:
    """The `schedule` config node of linear_schedule(T), the schedule of every synthetic run (§2.1)."""
    return {
        "name": "linear",
        "kind": "linear",
        "num_train_timesteps": T,
        "beta_start": 1e-4,
        "beta_end": 0.02,
    }


def _diagonal_block(seed, step, t, k, F, frob, diag_pi, paper_estimators, frob_se, rng) -> dict:
    row = {
        "seed": seed,
        "step": step,
        "t": t,
        "k": k,
        "j": k,
        "chebyshev": 0,
        "op_norm": float(F[step, k]),
        "frob_norm": float(frob[step, k]),
    }
    if paper_estimators:
        row["op_norm_pi"] = float(diag_pi[step, k])
        row["frob_norm_hutch"] = float(frob[step, k] * (1.0 + frob_se * rng.standard_normal()))
    return row


@dataclass(frozen=True)
class SyntheticRun:
    covariance_dir: Path
    trajectories_dir: Path
    jacobian_dir: Path


@dataclass(frozen=True)
class _Setup:
    """What every part of one synthetic run shares: the chain, λ_k on the grid and the kind."""

    root: Path
    kind: str
    seeds: tuple[int, ...]
    grid: int
    num_steps: int
    patch_size: int
    paper_estimators: bool
    frob_probes: int
    rng: np.random.Generator
    chain: object
    lam: np.ndarray
    config: dict

    @property
    def oracle(self) -> bool:
        return self.kind == "gaussian_oracle"

    @property
    def M(self) -> int:
        return self.grid * self.grid

    @property
    def nk(self) -> int:
        return 3 * self.patch_size * self.patch_size

    @property
    def F(self) -> np.ndarray:
        return expansion_function(self.chain, self.lam)  # [S, M]

    def position(self, k: int) -> tuple[int, int]:
        return divmod(int(k), self.grid)


def _setup(root, kind, seeds, grid, num_steps, patch_size, seed, paper_estimators, frob_probes) -> _Setup:
    rng = np.random.default_rng(seed)
    chain = stride_chain(
        linear_schedule(T), T // num_steps, num_steps=num_steps
    )  # t = 1000, ..., 20 -> ᾱ = 1
    M = grid * grid
    rows_, cols_ = np.divmod(np.arange(M), grid)
    edge = np.maximum(np.abs(rows_ - (grid - 1) / 2), np.abs(cols_ - (grid - 1) / 2)) / ((grid - 1) / 2)
    lo, hi = pv.PATCH_SPECTRUM["lambda_k_range"]  # the paper's CIFAR-10 patch range, §7.2
    lam = lo + (hi - lo) * (0.15 * edge + 0.85 * np.linspace(0, 1, M)[rng.permutation(M)] * edge)
    lam = np.round(lam + 0.01 * np.arange(M), 4)  # distinct values
    oracle = kind == "gaussian_oracle"
    config = {
        "model": {
            "name": kind,
            "kind": "gaussian_oracle" if oracle else "unet",
            "structure": "block_diagonal" if oracle else None,
            "block_size": patch_size if oracle else None,
            "dtype": "float64" if oracle else "float32",
        },
        "schedule": linear_schedule_node(),
        "sampler": {"name": "ddim50", "num_steps": num_steps, "spacing": "synthetic", "final_alpha_bar": 1.0},
        "measure": {"frob_probes": frob_probes, "power_iters": 20, "block_power_iters": 10},
        "patch": {"size": patch_size},
        "dataset": {"name": "synthetic", "resolution": grid * patch_size, "channels": 3},
        "seed": int(seeds[0]),
        "num_seeds": len(seeds),
    }
    return _Setup(
        Path(root),
        kind,
        tuple(seeds),
        grid,
        num_steps,
        patch_size,
        paper_estimators,
        frob_probes,
        rng,
        chain,
        lam,
        config,
    )


def write_synthetic_run(
    root: str | Path,
    kind: str = "gaussian_oracle",
    *,
    seeds: tuple[int, ...] = (0, 1, 2, 3),
    grid: int = 4,
    num_steps: int = 50,
    patch_size: int = 8,
    seed: int = 0,
    paper_estimators: bool = True,
    frob_probes: int = 200,
) -> SyntheticRun:
    """Write covariance/, trajectories/, jacobian/ folders under root and return their paths."""
    if kind not in ("gaussian_oracle", "learned"):
        raise ValueError(f"kind must be 'gaussian_oracle' or 'learned', got {kind!r}")
    su = _setup(root, kind, seeds, grid, num_steps, patch_size, seed, paper_estimators, frob_probes)
    return SyntheticRun(_write_covariance(su), _write_trajectories(su), _write_jacobian(su))


def _write_covariance(su: _Setup) -> Path:
    cov = su.root / "covariance"
    rows = []
    for k in range(su.M):
        r, c = su.position(k)
        rows.append({"k": k, "row": r, "col": c, "lambda_k": float(su.lam[k]), "trace": float(3 * su.lam[k])})
    write_csv(cov / C.PATCHES, rows)
    save_npz(
        cov / C.PATCH_STATS,
        mean=np.zeros((su.M, su.nk)),
        eigvals=su.lam[:, None] * 0.5 ** np.arange(su.nk)[None, :],  # [M, n_k], descending
        v1=np.tile(np.eye(1, su.nk), (su.M, 1)),
    )
    write_json(
        cov / META,
        {"config": su.config, "mlflow_run_id": "synthetic-cov", "wall_time_s": 1.5, "machine": "synthetic"},
    )
    return cov


def _write_trajectories(su: _Setup) -> Path:
    traj = su.root / "trajectories"
    H = su.grid * su.patch_size
    for s in su.seeds:
        g = np.random.default_rng(100 + s)
        x = g.standard_normal((su.num_steps + 1, 3, H, H)).astype(np.float32)
        x[-1] = np.tanh(x[-1])
        save_npz(
            TrajectoriesFolder(traj).seed_file(s),
            t=su.chain.timesteps.astype(np.int64),
            x=x,
            eps=g.standard_normal((su.num_steps, 3, H, H)).astype(np.float32),
        )
    write_json(traj / META, {"config": su.config, "mlflow_run_id": "synthetic-traj", "wall_time_s": 2.5})
    return traj


def _learned_fields(su: _Setup, noise: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(S, coupling) [S, M] of the learned kind: patch k releases (Rayleigh quotient >= 1) once t/T <= tau_k,
    low-λ patches first; deep in Regime II a term rising with λ restores the Gaussian ordering (sign flip
    near t ~ 110); coupling peaks mid chain."""
    F, frac, lam = su.F, su.chain.timesteps / T, su.lam
    lam_n = (lam - lam.min()) / (lam.max() - lam.min())
    tau = 0.1 + 0.15 * (1.0 - lam_n)[None, :]
    fr = frac[:, None]
    rq = np.where(
        fr > 0.8,
        1.0 - 0.0005 + 0.0 * tau,
        1.0 + 0.01 * (tau - fr) + 0.05 * np.clip(0.12 - fr, 0, None) * lam_n[None, :],
    )
    rq = rq + 0.0002 * noise.standard_normal(F.shape)
    coup = (0.0005 + 0.1 * np.exp(-(((frac - 0.45) / 0.15) ** 2)))[:, None] * (
        0.8 + 0.4 * noise.random((1, su.M))
    )
    return F - rq, coup


def _seed_rows(su: _Setup, si: int, s: int, frob: np.ndarray) -> tuple[list[dict], list[dict], list[dict]]:
    """global.csv, patches.csv and blocks.csv rows of one trajectory."""
    noise = np.random.default_rng(1000 + s)
    F, ts, frac = su.F, su.chain.timesteps, su.chain.timesteps / T
    S, coup = (np.zeros_like(F), np.zeros_like(F)) if su.oracle else _learned_fields(su, noise)
    rq = F - S
    diag = rq + (0.0 if su.oracle else 0.0005)
    factor = 1.0 if su.oracle else (1.15 if si == len(su.seeds) - 1 else 1.0 + 0.002 * si)
    kappa = (F.max(1) if su.oracle else np.maximum(diag.max(1), 1.0) + coup.max(1)) * factor
    # the paper's power iteration captures only part of the excess over 1 where the spectrum clusters near 1
    # (high noise): 1 + (f - 1)(1 - 0.5 t/T), a lower bound short of the closed form
    short = 1.0 - 0.5 * frac
    kappa_pi = 1.0 + (kappa - 1.0) * short if su.oracle and su.paper_estimators else kappa
    diag_pi = 1.0 + (F - 1.0) * short[:, None]
    coef = step_coefficients(su.chain)
    H = su.grid * su.patch_size
    g_rows, p_rows = [], []
    for i, t in enumerate(ts):
        # the derived columns (suppression, margin, (PC) slacks, κ^diag, δ^cross, κ^pc) from the stage's code
        unit = StepMeasurement(
            r=float(coef.r[i]),
            b=float(coef.b[i]),
            n=3 * H * H,
            num_patches=su.M,
            kappa_pi=float(kappa_pi[i]),
            kappa_pi_change=1e-9,
            kappa_lanczos=float(kappa[i]),
            lanczos_residual=1e-10,
            rayleigh=rq[i],
            expansion=F[i],
            diag_norm=diag[i],
            coupling=coup[i],
            block_method="dense",
        )
        g = unit.global_row()
        g.pop("seconds")
        g_rows.append(
            {
                "seed": s,
                "step": i,
                "t": int(t),
                "t_prev": int(ts[i + 1]) if i + 1 < len(ts) else 0,
                "alpha_bar_t": float(su.chain.alpha_bar_t[i]),
                "alpha_bar_prev": float(su.chain.alpha_bar_prev[i]),
                "r_t": float(coef.r[i]),
                "b_t": float(coef.b[i]),
                **g,
                "matvecs": 40,
            }
        )
        for row in unit.patch_rows():
            k = row["k"]
            r, c = su.position(k)
            p_rows.append(
                {
                    "seed": s,
                    "step": i,
                    "t": int(t),
                    "k": k,
                    "row": r,
                    "col": c,
                    "lambda_k": float(su.lam[k]),
                    "f_t": float(F[i, k]),
                    **row,
                }
            )
            if su.oracle and su.paper_estimators:
                p_rows[-1]["diag_norm_pi"] = float(diag_pi[i, k])
    return g_rows, p_rows, _block_rows(su, s, coup, frob, diag_pi, noise)


def _block_rows(su: _Setup, s, coup, frob, diag_pi, noise) -> list[dict]:
    """blocks.csv at three steps: every (k, j); the oracle's diagonal blocks with their closed forms."""
    F, ts, M = su.F, su.chain.timesteps, su.M
    frob_se = math.sqrt(1.0 / (2.0 * su.frob_probes))  # Hutchinson's relative standard error with p probes
    rows = []
    for i in (0, su.num_steps // 2, su.num_steps - 1):
        for k in range(M):
            for j in range(M):
                if k == j:
                    if su.oracle:  # the diagonal block: op norm f_t(λ_k), Frobenius sqrt(Σ_i f_t(μ_k,i)²)
                        rows.append(
                            _diagonal_block(
                                s, i, int(ts[i]), k, F, frob, diag_pi, su.paper_estimators, frob_se, noise
                            )
                        )
                    continue
                (rk, ck), (rj, cj) = su.position(k), su.position(j)
                d = int(max(abs(rk - rj), abs(ck - cj)))
                v = (
                    0.0
                    if su.oracle
                    else float(
                        coup[i, k] / (M - 1) * (2.5 if d == 1 else 1.0) * (1 + 0.1 * noise.standard_normal())
                    )
                )
                rows.append(
                    {
                        "seed": s,
                        "step": i,
                        "t": int(ts[i]),
                        "k": k,
                        "j": j,
                        "chebyshev": d,
                        "op_norm": 0.7 * v,
                        "frob_norm": v,
                        **(
                            {"op_norm_pi": 0.0, "frob_norm_hutch": 0.0}
                            if su.oracle and su.paper_estimators
                            else {}
                        ),
                    }
                )
    return rows


def _write_jacobian(su: _Setup) -> Path:
    jac = su.root / "jacobian"
    F, ts, frac = su.F, su.chain.timesteps, su.chain.timesteps / T
    eig = su.lam[:, None] * 0.5 ** np.arange(su.nk)[None, :]
    frob = np.sqrt((expansion_function(su.chain, eig.ravel()).reshape(len(ts), su.M, su.nk) ** 2).sum(axis=2))
    g_rows, p_rows, b_rows = [], [], []
    for si, s in enumerate(su.seeds):
        g, p, b = _seed_rows(su, si, s, frob)
        g_rows += g
        p_rows += p
        b_rows += b
    write_csv(jac / J.GLOBAL, g_rows)
    write_csv(jac / J.PATCHES, p_rows)
    write_csv(jac / J.BLOCKS, b_rows)
    # Λ̂_k and the Gaussian Λ(λ_k) through the jacobian stage's own lyapunov_rows (Table 11 computes Λ_pred)
    write_csv(jac / J.LYAPUNOV, lyapunov_rows(p_rows, su.lam, F), J.LYAPUNOV_COLUMNS)
    ab = linear_schedule(T).alpha_bar
    px = []
    for t in [999, 990, 980, 960, 940, 920, 900, 850, 800, 700, 600, 500, 400, 300]:
        sab = math.sqrt(ab[t])
        base = math.exp(3.10) * sab**0.95 * (1.0 if t >= 800 else 1.0 + (800 - t) / 400)
        px.append(
            {
                "t": t,
                "alpha_bar_t": float(ab[t]),
                "proxy": base * (1 + 0.01 * su.rng.standard_normal()),
                "proxy_std": 0.22 * base,
                "exact_deviation": 0.0 if su.oracle else 0.8 * base,
            }
        )
    write_csv(jac / J.PROXY, px)
    if not su.oracle:
        # coupling rises as entropy falls for the synthetic ρ = −1
        att = [
            {
                "seed": s,
                "step": i,
                "t": int(t),
                "entropy": float(4.0 + 0.95 * frac[i] + 0.001 * np.random.default_rng(s).random()),
            }
            for s in su.seeds
            for i, t in enumerate(ts)
        ]
        write_csv(jac / J.ATTENTION, att)
    write_json(
        jac / META,
        {
            "config": su.config,
            "mlflow_run_id": f"synthetic-jac-{su.kind}",
            "wall_time_s": 12.0,
            "machine": "synthetic (2 cores)",
            "versions": {"numpy": np.__version__},
        },
    )
    return jac
