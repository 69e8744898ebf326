"""The global norm κ̂_t and the block quantities per (seed, step), shared by Tables 4, 5 and 6, the DVC
headline and the figures: one definition of "the converged κ̂_t" and of the paper-protocol estimate
beside it."""

from __future__ import annotations

import math

import numpy as np

from pipeline.analysis.context import groups, nanmax
from pipeline.analysis.inputs import Table, has_values, n_rows

ROUTE_NAMES = {"kappa_dense": "dense", "kappa_lanczos": "lanczos", "kappa_pi": "power"}


def converged_kappa(G: Table | None) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Per global.csv row: the converged global norm κ̂_t and the route it came from.

    Dense SVD of the n × n JΦ_t where it was built (exact), else Golub-Kahan-Lanczos (lanczos_residual
    bounds the distance of its Ritz value to a singular value), else the paper-protocol power iteration.
    """
    if G is None or not any(has_values(G, c) for c in ROUTE_NAMES):
        return None
    n = n_rows(G)
    val = np.full(n, math.nan)
    src = np.full(n, "", dtype=object)
    for c in ("kappa_pi", "kappa_lanczos", "kappa_dense"):  # later routes override earlier ones
        if has_values(G, c):
            ok = np.isfinite(G[c])
            val[ok] = G[c][ok]
            src[ok] = ROUTE_NAMES[c]
    used = sorted(set(src[src != ""]))
    return val, src, "+".join(used)


def pi_short(G: Table, ours: np.ndarray) -> np.ndarray:
    """Power iteration short of the converged value by more than its own stated tolerance (its last-step
    relative change kappa_pi_change, §7.1 protocol): (ours − kappa_pi)/ours > kappa_pi_change."""
    if not has_values(G, "kappa_pi"):
        return np.zeros(n_rows(G), dtype=bool)
    tol = G["kappa_pi_change"] if has_values(G, "kappa_pi_change") else np.zeros(n_rows(G))
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = (ours - G["kappa_pi"]) / ours
    return np.isfinite(gap) & (gap > np.where(np.isfinite(tol), np.abs(tol), 0.0))


def block_per_seed_step(G: Table | None, P: Table | None) -> dict[str, object] | None:
    """κ̂^diag, δ̂^cross, the converged global κ̂, κ̂^pc per (seed, step), with the source of each.

    δ̂^cross_t = max_k C_k,t = max_k Σ_{j≠k} ‖[JΦ_t]_kj‖_op (eqs. 16, 18): global.csv's delta_cross, else
    the max over patches.csv's coupling. κ̂^pc = κ̂^diag + δ̂^cross (eq. 19)."""
    if G is None and P is None:
        return None
    out: dict[tuple[int, int], dict[str, float]] = {}
    src: dict[str, str] = {}
    if G is not None:
        _from_global(G, out, src)
    if P is not None:
        for (seed, step), idx in groups(P, ("seed", "step")):
            d = out.setdefault((int(seed), int(step)), {"t": float(P["t"][idx][0])})
            for name, col in (("kappa_diag", "diag_norm"), ("delta_cross", "coupling")):
                v = nanmax(P[col][idx]) if name not in d and has_values(P, col) else math.nan
                if math.isfinite(v):  # a step where the column was not measured stays absent, not NaN
                    d[name] = v
                    src.setdefault(name, f"patches.csv: max_k {col}")
    for d in out.values():
        if "kappa_pc" not in d and "kappa_diag" in d and "delta_cross" in d:
            d["kappa_pc"] = d["kappa_diag"] + d["delta_cross"]
            src.setdefault("kappa_pc", "kappa_diag + delta_cross")
    if not any("kappa_diag" in d or "delta_cross" in d for d in out.values()):
        return None
    return {"values": out, "source": src}


def _from_global(G: Table, out: dict, src: dict) -> None:
    conv = converged_kappa(G)
    kc, short_all, route_txt = None, None, ""
    if conv is not None:
        G = dict(G)
        G["kappa_converged"], _, route_txt = conv
        kc = "kappa_converged"
        short_all = pi_short(G, G[kc])
    for i in range(n_rows(G)):
        key = (int(G["seed"][i]), int(G["step"][i]))
        d = out.setdefault(key, {"t": float(G["t"][i])})
        for name, c in (
            ("kappa_diag", "kappa_diag"),
            ("delta_cross", "delta_cross"),
            ("kappa_pc", "kappa_pc"),
            ("kappa_global", kc),
        ):
            if c is not None and has_values(G, c) and math.isfinite(G[c][i]):
                d[name] = float(G[c][i])
                src[name] = f"global.csv:{c}" if c != kc else f"global.csv: converged kappa ({route_txt})"
        if has_values(G, "kappa_pi") and math.isfinite(G["kappa_pi"][i]):
            d["kappa_global_pi"] = float(G["kappa_pi"][i])
            d["pi_short"] = float(short_all[i])
