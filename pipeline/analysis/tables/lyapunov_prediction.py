"""The suppression-corrected exponents Λ_pred,k of eqs. (48)-(49) from a measured S_k,t, on the run's whole
sampler chain: from S at every measured step, from S at the §7.7 representative steps only (the paper's
sparse protocol), or from S against the full-Σ₀ Gaussian surrogate (eq. 30)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.analysis.context import AnalysisContext
from pipeline.analysis.inputs import AnalysisInputs, Table, has_values, n_rows
from pipeline.analysis.measured_chain import MeasuredChain
from pipeline.geometry import (
    Chain,
    chain_from_config,
    expansion_function,
    representative_timesteps,
    schedule_from_config,
    suppressed_lyapunov_exponents,
)

REPRESENTATIVE_COUNT = 20  # §7.7: "at 20 representative timesteps, and interpolated to the full chain"


def sampler_chain(inp: AnalysisInputs, ctx: AnalysisContext) -> tuple[MeasuredChain | None, str]:
    """The whole DDIM chain of the run (the sum of eq. 49 runs over it) and where it came from.

    Rebuilt from the run's schedule and sampler config through pipeline.geometry and used only when its
    ᾱ agrees with every measured step of global.csv (a model with its own scheduler may differ);
    otherwise the measured steps themselves.
    """
    if ctx.chain is None:
        return None, "no chain (global.csv lacks alpha_bar columns)"
    cfg = inp.jacobian_config or inp.any_config()
    try:
        ch = chain_from_config(schedule_from_config(cfg["schedule"]), cfg["sampler"])
    except Exception:  # noqa: BLE001 - no or unreadable schedule/sampler config: the measured steps
        return (
            ctx.chain,
            f"the {len(ctx.chain)} measured steps (the run's sampler chain could not be rebuilt)",
        )
    where = {int(t): i for i, t in enumerate(ch.timesteps)}
    for t, a, ap in zip(ctx.chain.t, ctx.chain.alpha_bar_t, ctx.chain.alpha_bar_prev, strict=True):
        i = where.get(int(t))
        if i is None or not (
            math.isclose(ch.alpha_bar_t[i], a, rel_tol=1e-9)
            and math.isclose(ch.alpha_bar_prev[i], ap, rel_tol=1e-9)
        ):
            return ctx.chain, f"the {len(ctx.chain)} measured steps (the config's chain differs from them)"
    full = MeasuredChain(
        "sampler",
        np.asarray(ch.timesteps, dtype=np.int64),
        np.asarray(ch.alpha_bar_t, dtype=np.float64),
        np.asarray(ch.alpha_bar_prev, dtype=np.float64),
        step=np.arange(len(ch.timesteps)),
    )
    return full, f"the run's {len(full)}-step sampler chain ({len(ctx.chain)} of its steps measured)"


@dataclass
class CorrectedExponents:
    """Λ_pred,k of eq. (48)-(49) per patch, and what went into it."""

    k: np.ndarray  # [M'] patches with S measured at >= 1 (seed, t)
    lambda_k: np.ndarray  # [M']
    pred: np.ndarray  # [M'] mean over chain steps and seeds of log g_k,t; NaN if some g_k,t <= 0
    per_seed: dict[int, np.ndarray]  # seed -> [M'] mean over chain steps of log g_k,t (NaN: no S / g <= 0)
    n_seeds: np.ndarray  # [M'] trajectories with S for patch k
    n_timesteps: np.ndarray  # [M'] measured t with S for patch k (largest over seeds)
    nonpositive: (
        np.ndarray
    )  # [M'] (seed, chain step) pairs with g_k,t <= 0, where eq. (49)'s log is undefined
    S_chain: np.ndarray  # [S, M'] seed-mean of the interpolated S_k,t on the chain (for λ***)
    covers_chain: (
        bool  # S measured at every chain step for every (seed, patch) used: g = the Rayleigh quotient
    )


def corrected_exponents(
    P: Table | None,
    chain: MeasuredChain,
    lambda_k: dict[int, float],
    column: str = "suppression",
    keep_t: set[int] | None = None,
) -> CorrectedExponents | None:
    """Λ_pred,k = (1/S) Σ_t E_seeds[log g_k,t], g_k,t = f_t(λ_k) − S_k,t(x_t) (eq. 48-49).

    The expectation over x_t ~ q(x_t) is the mean over the measured trajectories (seeds); the log is taken
    per seed and step, never of a seed mean. S is used only where measured (and, with ``keep_t``, only at
    those t): per (seed, k) the finite S_k,t are interpolated linearly in t onto every chain step (held at
    the nearest measured value beyond the measured range, as §7.7 interpolates 20 measured steps onto the
    49-step chain). A patch without S on a trajectory leaves that trajectory out of its mean; a patch with
    no S anywhere has no Λ_pred (it is not filled with the Gaussian value).
    """
    if P is None or not has_values(P, column):
        return None
    ks = np.unique(P["k"][np.isfinite(P["k"])]).astype(int)
    seed_col = P["seed"] if "seed" in P else np.zeros(n_rows(P))
    seeds = np.unique(seed_col[np.isfinite(seed_col)]).astype(int)
    lam = np.array([lambda_k.get(int(k), math.nan) for k in ks])
    F = expansion_function(chain, lam)  # [S, M']
    gchain = Chain("measured", chain.t.astype(np.int64), chain.alpha_bar_t, chain.alpha_bar_prev)
    chain_t = chain.t.astype(np.float64)
    logs = np.full((len(seeds), len(ks)), math.nan)
    S_sum, S_cnt = np.zeros((len(chain_t), len(ks))), np.zeros(len(ks))
    n_t, nonpos = np.zeros(len(ks), dtype=int), np.zeros(len(ks), dtype=int)
    keep = np.isfinite(P[column]) & np.isfinite(P["t"])
    if keep_t is not None:
        keep &= np.isin(P["t"], sorted(keep_t))
    covers = True
    for i, s in enumerate(seeds):
        for j, k in enumerate(ks):
            m = (seed_col == s) & (P["k"] == k) & keep
            if not m.any():
                continue
            t, S = P["t"][m], P[column][m]
            order = np.argsort(t)
            S_c = np.interp(chain_t, t[order], S[order])
            covers &= set(chain_t.tolist()) <= set(t.tolist())
            n_t[j] = max(n_t[j], len(np.unique(t)))
            S_sum[:, j] += S_c
            S_cnt[j] += 1
            bad = int(np.count_nonzero(~(F[:, j] - S_c > 0)))
            nonpos[j] += bad
            if not bad:  # eq. (48)-(49) for this trajectory: pipeline.geometry's one implementation
                logs[i, j] = float(suppressed_lyapunov_exponents(gchain, lam[j : j + 1], S_c[:, None])[0])
    used = S_cnt > 0
    if not used.any():
        return None
    with np.errstate(invalid="ignore"):
        pred = np.where(
            (nonpos == 0) & (np.sum(np.isfinite(logs), axis=0) > 0), np.nanmean(logs, axis=0), np.nan
        )
    return CorrectedExponents(
        k=ks[used],
        lambda_k=lam[used],
        pred=pred[used],
        per_seed={int(s): logs[i][used] for i, s in enumerate(seeds)},
        n_seeds=S_cnt[used].astype(int),
        n_timesteps=n_t[used],
        nonpositive=nonpos[used],
        S_chain=S_sum[:, used] / S_cnt[used],
        covers_chain=bool(covers),
    )


def representative_subset(P: Table, chain: MeasuredChain) -> tuple[set[int], str]:
    """The §7.7 representative steps of the run's chain that were measured, and a sentence saying so
    (pipeline.geometry.representative_timesteps: the one definition the measurement side uses too)."""
    rep = representative_timesteps(chain.t, REPRESENTATIVE_COUNT)
    measured = {int(t) for t in P["t"][np.isfinite(P["suppression"])]}
    got = sorted(set(rep) & measured, reverse=True)
    return set(got), (
        f"S at {len(got)} of the {len(rep)} representative steps of the {len(chain)}-step chain "
        f"(t = {', '.join(map(str, got[:6]))}{', …' if len(got) > 6 else ''}; "
        "pipeline.geometry.representative_timesteps), interpolated onto the chain"
    )
