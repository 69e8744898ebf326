"""Table 11 (§7.7): the suppression-corrected exponents Λ_pred,k (eqs. 48-49) against the measured Λ̂_k, scored
on the comparisons that can fail — the paper's sparse protocol (S at 20 representative steps, interpolated)
and the eq. 30 full-Σ₀ surrogate — with the tautological one (S at every step, so Λ_pred ≡ Λ̂) shown as an
identity; each patch's sign with its significance; λ** and λ*** with λ***'s extrapolation flagged."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.analysis import inference as inf
from pipeline.analysis import paper_values as pv
from pipeline.analysis.context import AnalysisContext, mean_std, nanmax, nanmin
from pipeline.analysis.evidence import EXTRAPOLATED, UNDECIDABLE, Comparison, Kind, Tolerance
from pipeline.analysis.inputs import AnalysisInputs, has_values
from pipeline.analysis.measured_chain import moran_solution
from pipeline.analysis.tables.lyapunov_prediction import (
    corrected_exponents,
    representative_subset,
    sampler_chain,
)
from pipeline.analysis.tables.spec import TableResult, TableSpec, scored
from pipeline.geometry import expansion_function

FDR = 0.05
# predictions of Λ_k, by the S they use: (column suffix, patches.csv column, what it is)
PREDICTIONS = (
    ("", "suppression", "S measured at every measured step"),
    ("_sparse", "suppression", "the paper's sparse protocol"),
    ("_surrogate", "exact_suppression", "S against the full-Sigma_0 Gaussian surrogate (eq. 30)"),
)


@dataclass
class Table11Summary:
    n_patches: int = 0
    n_traj: int = 0
    n_hat_significant: int = 0  # patches whose Λ̂_k sign is significant (t-test over trajectories, BH)
    hat_test: str = ""
    # sign agreement with Λ̂ per prediction (fraction of patches) and its kind
    sign_agreement: float | None = None  # Λ_pred from S at every step
    identity: bool = False  # ... which is Λ̂ by construction
    max_abs_pred_minus_hat: float = math.nan
    sign_agreement_sparse: float | None = None
    sign_agreement_sparse_significant: float | None = None  # over the patches whose Λ̂ sign is significant
    sparse_protocol: str = ""
    sign_agreement_surrogate: float | None = None
    sign_agreement_surrogate_significant: float | None = None
    sign_agreement_gauss: float | None = None
    # median over patches of |Λ_pred − Λ̂| / |Λ̂|: how far each prediction's magnitude is from the measurement
    magnitude_error_sparse: float | None = None
    magnitude_error_surrogate: float | None = None
    per_traj_agreement: float | None = None  # sparse protocol, per trajectory
    per_traj_interval: str = ""
    per_traj_ci_lo: float = math.nan
    per_traj_ci_hi: float = math.nan
    lambda_double_star: float = math.nan
    lambda_triple_star: float = math.nan
    lambda_triple_star_status: str = ""
    lambda_triple_star_extrapolated: str = ""
    lambda_min: float = math.nan
    lambda_max: float = math.nan


def _hat_by_patch(L, ks) -> dict[int, dict]:
    """Λ̂_k per patch over trajectories: mean, std, n, two-sided t-test p of Λ̂ = 0, BH over patches."""
    out = {}
    if L is None or not has_values(L, "lyap_hat"):
        return out
    for k in ks:
        v = L["lyap_hat"][L["k"] == k]
        m, sd, n = mean_std(v)
        out[k] = {"lyap_hat": m, "lyap_hat_std": sd, "n_traj": n, "p": float(inf.t_test(v).p_value)}
    q = inf.benjamini_hochberg([out[k]["p"] for k in out])
    for k, qi in zip(out, q, strict=True):
        out[k]["lyap_hat_p_adj"] = float(qi)
        sig = math.isfinite(qi) and qi < FDR
        out[k]["lyap_hat_sign"] = ("negative" if out[k]["lyap_hat"] < 0 else "positive") if sig else "n.s."
    return out


def _agree(a: float, b: float) -> bool | None:
    return bool(np.sign(a) == np.sign(b)) if math.isfinite(a * b) else None


def _share(rows, col) -> float | None:
    v = [r[col] for r in rows if r.get(col) is not None]
    return sum(v) / len(v) if v else None


def _rows(ctx, inp, chain, lam_by_k, s: Table11Summary) -> tuple[list[dict], dict]:
    P, L = inp.patches, inp.lyapunov
    preds, cxs = {}, {}
    no_s = P is None or chain is None or not has_values(P, "suppression")
    rep, rep_txt = (set(), "") if no_s else representative_subset(P, chain)
    for suffix, col, _ in PREDICTIONS:
        keep = rep if suffix == "_sparse" else None
        if suffix == "_sparse" and (not rep or cxs.get("") is None or rep >= set(int(t) for t in P["t"])):
            continue  # no representative subset short of every measured step: nothing sparse to test
        cx = corrected_exponents(P, chain, lam_by_k, col, keep) if chain is not None else None
        if cx is not None:
            cxs[suffix] = cx
            preds[suffix] = {int(k): float(v) for k, v in zip(cx.k, cx.pred, strict=True)}
    s.sparse_protocol = rep_txt if "_sparse" in preds else ""
    ks = sorted(
        set().union(*[set(p) for p in preds.values()])
        | (set(np.unique(L["k"]).astype(int).tolist()) if L is not None else set())
    )
    hats = _hat_by_patch(L, ks)
    gauss = (
        np.log(expansion_function(chain, np.array([lam_by_k.get(k, math.nan) for k in ks]))).mean(axis=0)
        if chain is not None
        else None
    )
    rows = []
    for j, k in enumerate(ks):
        h = hats.get(k, {"lyap_hat": math.nan, "lyap_hat_std": math.nan, "n_traj": 0})
        row = {"k": int(k), "lambda_k": lam_by_k.get(k, math.nan)}
        for suffix in preds:
            row["lyap_pred" + suffix] = preds[suffix].get(k, math.nan)
        row["lyap_gauss"] = (
            float(np.nanmean(L["lyap_gauss"][L["k"] == k]))
            if L is not None and has_values(L, "lyap_gauss")
            else (float(gauss[j]) if gauss is not None else math.nan)
        )
        row.update({c: h.get(c, math.nan) for c in ("lyap_hat", "lyap_hat_std", "n_traj", "lyap_hat_p_adj")})
        row["lyap_hat_sign"] = h.get("lyap_hat_sign", "")
        for suffix in preds:
            row["sign_agree" + suffix] = _agree(row["lyap_hat"], row["lyap_pred" + suffix])
        row["sign_agree_gauss"] = _agree(row["lyap_hat"], row["lyap_gauss"])
        cx = cxs.get("")
        cj = int(np.flatnonzero(cx.k == k)[0]) if cx is not None and k in preds.get("", {}) else None
        row.update(
            n_S_seeds=int(cx.n_seeds[cj]) if cj is not None else 0,
            n_S_timesteps=int(cx.n_timesteps[cj]) if cj is not None else 0,
            g_nonpositive=int(cx.nonpositive[cj]) if cj is not None else 0,
        )
        rows.append(row)
    rows.sort(key=lambda r: -r["lambda_k"] if math.isfinite(r["lambda_k"]) else 0)
    s.n_hat_significant = sum(r["lyap_hat_sign"] in ("negative", "positive") for r in rows)
    s.n_traj = max([r["n_traj"] for r in rows] or [0])
    s.hat_test = (
        f"one-sample t-test of Λ̂_k over the {s.n_traj} trajectories per patch, "
        f"Benjamini–Hochberg over {len(rows)} patches"
    )
    return rows, cxs


def _per_trajectory(inp, cx, rows, s: Table11Summary) -> None:
    """Per-trajectory sign agreement of the sparse protocol's Λ_pred with each trajectory's Λ̂ (the paper's
    bootstrap object), with its exact bootstrap interval and degeneracy."""
    L = inp.lyapunov
    if L is None or not has_values(L, "lyap_hat") or "seed" not in L:
        return
    pred = {r["k"]: r.get("lyap_pred_sparse", math.nan) for r in rows}
    seeds = np.unique(L["seed"][np.isfinite(L["seed"])]).astype(int)
    per = []
    for sd in seeds:
        m = L["seed"] == sd
        a = [_agree(v, pred.get(int(k), math.nan)) for k, v in zip(L["k"][m], L["lyap_hat"][m], strict=True)]
        a = [x for x in a if x is not None]
        if a:
            per.append(sum(a) / len(a))
    if not per:
        return
    bs = inf.exact_bootstrap(np.array(per))
    s.per_traj_agreement = bs.estimate
    s.per_traj_ci_lo, s.per_traj_ci_hi = bs.interval.lo, bs.interval.hi
    s.per_traj_interval = bs.interval.text()


def _moran(chain, cx, s: Table11Summary) -> str:
    gauss = moran_solution(chain)
    corr = moran_solution(chain, suppression=cx.S_chain, lambda_k=cx.lambda_k)
    s.lambda_double_star, s.lambda_triple_star, s.lambda_triple_star_status = (
        gauss.value,
        corr.value,
        corr.status,
    )
    s.lambda_min, s.lambda_max = nanmin(cx.lambda_k), nanmax(cx.lambda_k)
    v = corr.value
    if math.isfinite(v) and not (s.lambda_min <= v <= s.lambda_max):
        side = s.lambda_max if v > s.lambda_max else s.lambda_min
        s.lambda_triple_star_extrapolated = (
            f"λ*** = {v:.4g} lies outside the measured λ range [{s.lambda_min:.4g}, {s.lambda_max:.4g}] "
            f"({v / side:.3g}× its {'upper' if v > s.lambda_max else 'lower'} end), where S_t(λ) is held "
            "constant: an extrapolation, not a measurement"
        )
    elif corr.status != "root":
        s.lambda_triple_star_extrapolated = corr.describe()
    return corr.describe()


def table_11(inp: AnalysisInputs, ctx: AnalysisContext) -> TableResult | None:
    """Λ_pred (eq. 48-49) vs Λ̂ per patch beside the Gaussian Λ(λ_k): sign agreement on the comparisons
    that can fail, each patch's sign with its significance, λ** and λ*** (§7.7)."""
    L = inp.lyapunov
    chain, chain_src = sampler_chain(inp, ctx)
    lam_by_k = dict(ctx.lambda_k)
    if L is not None and has_values(L, "lambda_k"):
        for k, v in zip(L["k"], L["lambda_k"], strict=True):
            lam_by_k.setdefault(int(k), float(v))
    s = Table11Summary()
    rows, cxs = _rows(ctx, inp, chain, lam_by_k, s)
    if not rows:
        return None
    s.n_patches = len(rows)
    s.sign_agreement = _share(rows, "sign_agree")
    s.sign_agreement_sparse = _share(rows, "sign_agree_sparse")
    s.sign_agreement_surrogate = _share(rows, "sign_agree_surrogate")
    for suffix in ("_sparse", "_surrogate"):
        rel = [
            abs(r["lyap_pred" + suffix] - r["lyap_hat"]) / abs(r["lyap_hat"])
            for r in rows
            if math.isfinite(r.get("lyap_pred" + suffix, math.nan)) and r["lyap_hat"]
        ]
        setattr(s, "magnitude_error" + suffix, float(np.median(rel)) if rel else None)
    sig_rows = [r for r in rows if r["lyap_hat_sign"] in ("negative", "positive")]
    s.sign_agreement_sparse_significant = _share(sig_rows, "sign_agree_sparse")
    s.sign_agreement_surrogate_significant = _share(sig_rows, "sign_agree_surrogate")
    s.sign_agreement_gauss = _share(rows, "sign_agree_gauss")
    d = [
        abs(r["lyap_pred"] - r["lyap_hat"])
        for r in rows
        if math.isfinite(r.get("lyap_pred", math.nan) - r["lyap_hat"])
    ]
    s.max_abs_pred_minus_hat = max(d) if d else math.nan
    # identity by construction: S at every chain step makes g the measured Rayleigh quotient, so Λ_pred is
    # Λ̂ up to round-off; confirmed on the numbers, not assumed (Λ̂ may come from elsewhere)
    scale = max([abs(r["lyap_hat"]) for r in rows if math.isfinite(r["lyap_hat"])] or [0.0])
    s.identity = bool(
        "" in cxs and cxs[""].covers_chain and s.max_abs_pred_minus_hat <= 1e-9 * max(scale, 1e-3)
    )
    if "_sparse" in cxs:
        _per_trajectory(inp, cxs["_sparse"], rows, s)
    moran_txt = _moran(chain, cxs[""], s) if "" in cxs else ""
    res = TableResult.of_rows(
        "table_11",
        "Suppression-corrected Lyapunov exponents: Lambda_pred vs Lambda_hat per patch, beside the Gaussian Lambda",
        "jacobian/patches.csv: suppression and exact_suppression per (seed, t, k) -> lyap_pred* (eq. 48-49); "
        "jacobian/lyapunov.csv: lyap_hat per (seed, k) (mean_t log|<v_k,[J Phi_t]_kk v_k>|), "
        "lyap_gauss = Lambda(lambda_k) = mean_t log f_t(lambda_k)",
        rows,
        s,
        paper=pv.TABLE_11,
    )
    _notes(res, chain_src, moran_txt)
    _comparisons(res, ctx)
    return res


def _notes(res: TableResult, chain_src: str, moran_txt: str) -> None:
    s: Table11Summary = res.summary
    res.notes += [
        "lyap_pred = Lambda_pred,k of eq. (48)-(49): the mean over the chain steps of E[log g_k,t], g_k,t = "
        f"f_t(lambda_k) - S_k,t(x_t), the log taken per trajectory and step and then averaged over trajectories; "
        f"chain: {chain_src}. S_k,t is interpolated linearly in t between its measured steps and held beyond "
        "them; a patch without S has no lyap_pred (NaN), never the Gaussian value; g_nonpositive counts "
        "(trajectory, step) pairs with g <= 0, where eq. (49)'s log is undefined.",
        (
            "IDENTITY: S_k,t is measured at every chain step, so g_k,t = f_t - S_k,t IS the measured Rayleigh "
            f"quotient (eq. 32) and lyap_pred equals Lambda_hat by construction (max |difference| = "
            f"{s.max_abs_pred_minus_hat:.1e}); its sign agreement cannot fail and is not scored."
            if s.identity
            else "lyap_pred uses S where it was measured, interpolated between: it is a prediction of Lambda_hat."
        ),
        "Scored against Lambda_hat: lyap_pred_sparse, "
        + (s.sparse_protocol or "not available (the chain has no more than 20 steps or S is not measured)")
        + "; lyap_pred_surrogate, S_k,t = rho_k^N - rho_k against the full-Sigma_0 Gaussian surrogate (eq. 30, "
        "patches.csv exact_suppression), where the covariance stage wrote Sigma_0.",
        f"lyap_hat_sign: {s.hat_test}; {s.n_hat_significant} of {s.n_patches} patches have a significant sign "
        "(n.s.: the trajectories cannot tell the sign of Lambda_hat).",
    ]
    mags = [
        f"{name}: median |Lambda_pred - Lambda_hat| / |Lambda_hat| = {v:.2g}"
        for name, v in (
            ("sparse protocol", s.magnitude_error_sparse),
            ("eq. 30 surrogate", s.magnitude_error_surrogate),
        )
        if v is not None
    ]
    if mags:
        res.notes.append("Magnitudes (shown, not scored: the paper scores signs): " + "; ".join(mags) + ".")
    if s.per_traj_interval:
        res.notes.append(
            f"Per-trajectory sign agreement (sparse protocol): {s.per_traj_agreement:.3g}, {s.per_traj_interval}."
        )
    if moran_txt:
        res.notes.append(
            "lambda*** solves prod_t (f_t(lambda) - S_t(lambda)) = 1 with S from every measured step; S_t(lambda) "
            f"interpolated in lambda across the patches, constant beyond them. {moran_txt}."
            + (
                f" EXTRAPOLATED: {s.lambda_triple_star_extrapolated}."
                if s.lambda_triple_star_extrapolated
                else ""
            )
        )


def _comparisons(res: TableResult, ctx: AnalysisContext) -> None:
    s: Table11Summary = res.summary
    sc = pv.TABLE_11.scalars
    paper_share = sc["sign_agreement"][0] / sc["sign_agreement"][1]
    sig = f"{s.n_hat_significant} of {s.n_patches} Lambda_hat signs significant"
    cmp = []
    if s.sign_agreement is not None:
        cmp.append(
            Comparison(
                "Table 11",
                "sign agreement: Lambda_pred (S at every measured step) vs Lambda_hat",
                paper_share,
                s.sign_agreement,
                Kind.IDENTITY if s.identity else Kind.INDEPENDENT,
                Tolerance(abs=0.1),
                note="Lambda_pred = Lambda_hat by construction" if s.identity else sig,
            )
        )
    for attr, label in (
        (
            "sign_agreement_sparse",
            "sign agreement: sparse protocol (S at the representative steps) vs Lambda_hat",
        ),
        ("sign_agreement_surrogate", "sign agreement: eq. 30 full-Sigma_0 surrogate vs Lambda_hat"),
    ):
        if getattr(s, attr) is None:
            continue
        # only a significant sign of Lambda_hat can agree or disagree with a prediction
        c = Comparison(
            "Table 11",
            label + " (patches with a significant Lambda_hat sign)",
            paper_share,
            getattr(s, attr + "_significant"),
            tolerance=Tolerance(abs=0.1),
            note=f"{sig}; over all patches {getattr(s, attr):.3g}",
        )
        if not s.n_hat_significant:
            c.ours = getattr(s, attr)
            c.status = UNDECIDABLE
            c.note = f"{sig} ({s.n_traj} trajectories): the signs cannot be compared; over all patches {c.ours:.3g}"
        cmp.append(c)
    if s.per_traj_interval:
        lo, hi = sc["bootstrap_ci95_per_trajectory_agreement"]
        for q, p, o in (("low", lo, s.per_traj_ci_lo), ("high", hi, s.per_traj_ci_hi)):
            cmp.append(
                Comparison(
                    "Table 11",
                    f"bootstrap CI {q} (per-trajectory agreement, sparse protocol)",
                    p,
                    o,
                    Kind.REDERIVED,
                    Tolerance(abs=0.15),
                    "the sparse protocol's sign agreement",
                    s.per_traj_interval,
                )
            )
    lam = Comparison(
        "Table 11",
        "lambda***",
        sc["lambda_triple_star"],
        s.lambda_triple_star,
        tolerance=Tolerance(rel=0.5),
        note=s.lambda_triple_star_extrapolated or "the paper's 500 may be a bracket end",
    )
    if s.lambda_triple_star_extrapolated:
        lam.status = EXTRAPOLATED
    cmp.append(lam)
    res.comparison = scored(cmp, ctx)


SPEC = TableSpec(
    table_11,
    "suppression-corrected Lyapunov Λ",
    "jacobian/lyapunov.csv, or patches.csv suppression plus global.csv chain columns",
)
