"""The paper's printed schedule-geometry numbers, each to the digits it prints.

Conventions that reproduce them (see /work/notes/geometry.md): float64 linear betas; cosine eq. (2)
evaluated directly (no β clipping); CV = population std / mean; the 50-step chain is diffusers
"trailing" spacing (paper t = 1000, 980, ..., 20) whose last step lands on ᾱ = 1; the Moran numbers of
§7.4 / §7.7 use the same grid without its t = 1000 step (49 steps). Where the paper is inconsistent with
every convention, the test asserts what each convention gives instead.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import pytest

from pipeline.geometry import (
    contraction_threshold,
    cosine_offset_L1,
    cosine_offset_ratio,
    cosine_schedule,
    diffusers_timesteps,
    expansion_threshold,
    full_chain,
    geometry_row,
    linear_schedule,
    lyapunov_exponent,
    moran_threshold,
    snr_crossing,
    stride_chain,
    strided_chain,
)


def prints_as(value: float, printed: str) -> bool:
    """True when `value` rounds to `printed` at the printed number of significant decimals."""
    d = Decimal(printed)
    return Decimal(repr(float(value))).quantize(d, rounding=ROUND_HALF_EVEN) == d


def check(value: float, printed: str) -> None:
    assert prints_as(value, printed), f"{value!r} does not print as {printed}"


LIN = linear_schedule()
COS0 = cosine_schedule(s_off=0.0)
COS8 = cosine_schedule(s_off=0.008)


def ddim50(s):
    return strided_chain(s, 50, "trailing", final_alpha_bar=1.0)


# --------------------------------------------------------------------------------- Table 1 (§6.1)


@pytest.mark.parametrize(
    "chain, N, mean, cv, L_fin, t_fin",
    [
        (full_chain(LIN), 1000, "0.805", "0.341", "0.00500", 1),  # Linear (DDPM)
        (full_chain(COS0), 1000, "0.637", "0.483", "0.00079", 1),  # Cosine (orig., s_off=0)
        (full_chain(COS8), 1000, "0.641", "0.474", "0.00321", 1),  # Cosine (impr., s_off=0.008)
        (ddim50(COS0), 50, "0.637", "0.483", "0.01571", 20),  # 50-step DDIM (cosine): s_off=0
    ],
    ids=["linear", "cosine_s0", "cosine_s0.008", "ddim50_cosine"],
)
def test_table1_rows(chain, N, mean, cv, L_fin, t_fin):
    row = geometry_row("x", chain)
    assert row["N"] == N and row["finest_t"] == t_fin
    check(row["mean_L"], mean)
    check(row["cv_L"], cv)
    check(row["L_finest"], L_fin)


def test_table1_cv_is_population_cv():
    # Sample CV (ddof=1) of the original cosine prints 0.484, not Table 1's 0.483.
    L = contraction_threshold(full_chain(COS0))
    assert prints_as(L.std() / L.mean(), "0.483") and not prints_as(L.std(ddof=1) / L.mean(), "0.483")


def test_table1_row4_is_the_s0_cosine_not_the_s0008_one():
    # The caption says only "cosine"; s_off = 0.008 gives 0.641 / 0.474 / 0.02091 instead.
    row = geometry_row("x", ddim50(COS8))
    assert prints_as(row["mean_L"], "0.641") and prints_as(row["cv_L"], "0.474")
    check(row["L_finest"], "0.02091")


def test_table1_other_grids_do_not_reproduce_row4():
    # leading / linspace end at t = 1 (finest L* 0.00079), not at Table 1's t = 20.
    for spacing in ("leading", "linspace"):
        row = geometry_row("x", strided_chain(COS0, 50, spacing))
        assert row["finest_t"] == 1 and not prints_as(row["cv_L"], "0.483")


def test_table1_text_weakest_links():
    # §6.1 text: L*_1 = 0.00079 (orig. cosine) vs 0.00321 (improved).
    check(contraction_threshold(full_chain(COS0))[-1], "0.00079")
    check(contraction_threshold(full_chain(COS8))[-1], "0.00321")


# --------------------------------------------------------------------------------- §6.2 and §7.2


def _interior(schedule):
    ch = full_chain(schedule)
    ls = expansion_threshold(ch)
    m = (ch.timesteps >= 2) & (ch.timesteps <= schedule.T - 2)
    return ch.timesteps[m], ls[m]


@pytest.mark.parametrize(
    "schedule, lo, hi, t_min, lo4",
    [
        (LIN, "1.002", "1.19", 350, "1.0025"),
        (COS0, "1.002", "1.33", 500, "1.0016"),
        (COS8, "1.002", "1.25", 496, "1.0016"),
    ],
    ids=["linear", "cosine_s0", "cosine_s0.008"],
)
def test_sec62_interior_range_and_minimum(schedule, lo, hi, t_min, lo4):
    t, ls = _interior(schedule)
    check(ls.min(), lo)
    check(ls.min(), lo4)
    check(ls.max(), hi)
    assert t[np.argmin(ls)] == t_min


def test_sec62_interior_maxima_need_t_T_minus_1_excluded():
    # λ*(T-1) = 1.5 for both cosines (√ᾱ_t ∝ T - t near T), so the printed 1.33 / 1.25 exclude t = 999.
    for s in (COS0, COS8):
        assert expansion_threshold(full_chain(s))[1] == pytest.approx(1.5, abs=1e-5)


def test_sec62_linear_band_and_boundary():
    ch = full_chain(LIN)
    ls = expansion_threshold(ch)
    band = ls[(ch.timesteps >= 100) & (ch.timesteps <= 900)]
    check(band.min(), "1.002")
    check(band.max(), "1.005")
    check(ls[-1], "2")  # λ*(1) = v_1/(√ᾱ_1 (1 - √ᾱ_1)) ≈ 2


def test_sec72_linear_range_in_diffusers_indexing():
    # §7.2: "λ*(t) ∈ [1.002, 1.195] for t ∈ [1, 999], minimum λ*(349), maximum λ*(1)": diffusers' 0-based
    # index i = t - 1, so i ∈ [1, 999] is paper t ∈ [2, 1000].
    ch = full_chain(LIN)
    ls = expansion_threshold(ch)
    m = ch.timesteps >= 2
    check(ls[m].min(), "1.002")
    check(ls[m].max(), "1.195")
    assert ch.timesteps[m][np.argmin(ls[m])] - 1 == 349
    assert ch.timesteps[m][np.argmax(ls[m])] - 1 == 1


def ddim49(s):
    return stride_chain(s, 20, start=980, final_alpha_bar=1.0)


def test_sec62_ddim_chain_numbers():
    # §6.2: 50-step chain min λ*(t) = 1.032 below its Moran threshold λ** = 1.050 (the §7.4 values).
    check(moran_threshold(ddim50(COS8)).min_lambda_star, "1.032")
    check(moran_threshold(ddim49(COS8)).lambda_starstar, "1.050")
    # The 50-step chain itself, with its t = 1000 step, gives 1.0507 -> 1.051.
    check(moran_threshold(ddim50(COS8)).lambda_starstar, "1.051")


# --------------------------------------------------------------------------------- §7.4 / §7.7


def test_sec74_moran_numbers_from_the_49_step_chain():
    # §7.4: "bisection yields λ** = 1.049681, min λ*(t) = 1.031664, margin 1.80e-2" — reproduced by paper
    # t = 980, 960, ..., 20 -> ᾱ = 1 on the cosine s_off = 0.008 (exact arithmetic). §7.7 calls the same
    # chain "the 49-step DDIM schedule" with λ** = 1.0497.
    r = moran_threshold(ddim49(COS8))
    assert len(ddim49(COS8)) == 49
    check(r.lambda_starstar, "1.049681")
    check(r.lambda_starstar, "1.0497")
    check(r.min_lambda_star, "1.031664")
    check(r.margin, "0.0180")
    assert r.argmin_t == 500
    # β clipping only changes ᾱ_T, which this chain never visits.
    clipped = moran_threshold(ddim49(cosine_schedule(s_off=0.008, max_beta=0.999)))
    assert clipped.lambda_starstar == pytest.approx(r.lambda_starstar, abs=1e-12)


def test_sec74_with_the_t1000_step_exact_arithmetic_gives_1_050702():
    # With the 50-step chain's t = 1000 step, f_T(λ) = √(1 - ᾱ_980) ≈ 0.99951 and λ** = 1.050702
    # (margin 1.90e-2). Evaluating eq. (26) exactly as printed in float64 (ᾱ_T = cos²(π/2) ≈ 3.7e-33)
    # returns f_T = 1.0 exactly — the same as dropping the step — so 1.049681 also appears that way.
    from pipeline.geometry import expansion_function

    ch = ddim50(COS8)
    assert expansion_function(ch, 1.05)[0] == pytest.approx(np.sqrt(1 - COS8.alpha_bar[980]), rel=1e-12)
    exact = moran_threshold(ch)
    check(exact.lambda_starstar, "1.050702")
    check(exact.margin, "0.0190")
    check(exact.min_lambda_star, "1.031664")
    assert expansion_function(ch, 1.05, "literal")[0] == 1.0
    check(moran_threshold(ch, formula="literal").lambda_starstar, "1.049681")


def test_sec74_other_conventions_do_not_give_1_049681():
    # s_off = 0, the linear schedule of the paper's DDPM models, the clipped cosine with its t = T step,
    # and diffusers' leading grid all miss.
    got = {
        "s0": moran_threshold(ddim49(COS0)),
        "linear49": moran_threshold(ddim49(LIN)),
        "linear50": moran_threshold(ddim50(LIN)),
        "clipped50": moran_threshold(ddim50(cosine_schedule(s_off=0.008, max_beta=0.999))),
        "leading": moran_threshold(strided_chain(COS8, 50, "leading")),
    }
    for r in got.values():
        assert not prints_as(r.lambda_starstar, "1.049681")
    check(got["s0"].lambda_starstar, "1.049573")
    check(got["linear49"].lambda_starstar, "1.075703")
    check(got["linear49"].min_lambda_star, "1.051388")
    check(got["clipped50"].lambda_starstar, "1.050698")
    check(got["leading"].lambda_starstar, "1.049340")


def test_sec74_full_chain_lambda_starstar_is_not_1_0024_under_any_convention():
    # §7.4 prints λ** ≈ 1.0024 for "the full training chain"; we get 1.0038 (linear, the CIFAR-10 model's
    # schedule) and 1.00247 / 1.00250 (cosine s_off = 0 / 0.008), none of which rounds to 1.0024.
    got = {s.name: moran_threshold(full_chain(s)).lambda_starstar for s in (LIN, COS0, COS8)}
    check(got["linear"], "1.0038")
    check(got["cosine_s0"], "1.00247")
    check(got["cosine_s0.008"], "1.00250")
    assert not any(prints_as(v, "1.0024") for v in got.values())


def test_sec74_lyapunov_range_not_reproduced_by_printed_patch_range():
    # §7.4: Λ(λ_k) ∈ [+0.015, +0.024] for λ_k ∈ [18.7, 44.4]; the chain gives [0.0282, 0.0363]
    # (that range of Λ needs λ_k ≈ 4.8 .. 12.1).
    Lam = lyapunov_exponent(ddim50(COS8), np.array([18.7, 44.4]))
    check(Lam[0], "0.0282")
    check(Lam[1], "0.0363")
    Lam49 = lyapunov_exponent(ddim49(COS8), np.array([18.7, 44.4]))
    check(Lam49[0], "0.0288")
    check(Lam49[1], "0.0370")


def test_table4_step_labels_follow_diffusers_leading_grid():
    # Table 4: "1 of 50" = 980, ..., "49 of 50" = 20 — diffusers' 0-based leading grid (paper t = label + 1).
    grid = diffusers_timesteps(1000, 50, "leading")
    labels = {1: 980, 5: 900, 10: 800, 20: 600, 30: 400, 35: 300, 40: 200, 49: 20}
    assert all(grid[k - 1] == t for k, t in labels.items())


# --------------------------------------------------------------------------------- §6.5


def test_sec651_cosine_offset_values():
    o0, o8 = cosine_offset_L1(0.0), cosine_offset_L1(0.008)
    check(o0.v1, "2.5e-6")
    check((np.pi / 2000) ** 2, "2.5e-6")
    check(o0.L1, "7.9e-4")
    check(o0.L1_approx, "7.9e-4")
    check(o8.v1, "4.1e-5")
    check(o8.L1, "3.2e-3")
    check(o8.L1_approx, "3.2e-3")
    assert o0.L1 == pytest.approx(contraction_threshold(full_chain(COS0))[-1], rel=1e-12)


def test_sec651_ratio_printed_is_ratio_of_rounded_values():
    # Printed "≈ 4.05" = 3.2e-3 / 7.9e-4; the exact ratio L*_1(0.008)/L*_1(0) is 4.0905.
    check(cosine_offset_ratio(0.008, 0.0), "4.09")
    check(3.2e-3 / 7.9e-4, "4.05")
    assert not prints_as(cosine_offset_ratio(0.008, 0.0), "4.05")


def test_sec653_min_snr_transition():
    # §6.5.3: cosine, γ = 5: SNR rises above 5 around t ≈ 260, where L*_t ≈ 0.41.
    c = snr_crossing(COS8, 5.0)
    assert abs(c.t - 260) <= 5
    check(c.L_star, "0.41")


# --------------------------------------------------------------------------------- Table 2 (§6.3)


def test_table2_needs_the_measured_spectrum_and_printed_ordering_is_not_reached_in_printed_range():
    # Table 2 (CV(IG_t) linear 1.107, cosine 0.867; CV(|Δd_t|) 0.836 / 0.570) uses the CIFAR-10 patch
    # variances, which the paper does not list. With spectra inside the printed range λ_k ∈ [18.7, 44.4]
    # (n_k = 192, M = 16) eq. (55)/(56) give CV(IG) ≈ 1.00-1.05 (linear) and 1.06-1.30 (cosine): cosine is
    # the *less* IG-equalised schedule here, the opposite of Table 2's ordering.
    from pipeline.geometry import information_equalisation

    for lam in (np.full(16, 18.7), np.full(16, 44.4), np.linspace(18.7, 44.4, 16)):
        lin = information_equalisation(full_chain(LIN), lam, 192)
        cos = information_equalisation(full_chain(COS8), lam, 192)
        assert 1.0 < lin.cv_ig < 1.06 and 1.05 < cos.cv_ig < 1.31
        assert cos.cv_ig > lin.cv_ig
        assert lin.n_plusplus == cos.n_plusplus == 3072  # "all patches above λ**"
