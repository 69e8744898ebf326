"""Every statistic of the analysis against a hand-worked small case, plus an independent cross-check."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from pipeline import geometry as g
from pipeline.analysis import paper_values as pv
from pipeline.analysis import stats
from pipeline.analysis.measured_chain import MeasuredChain, moran_solution
from tests import stats_reference


# ------------------------------------------------------------------------------------------- ranks
def test_rank_average_gives_ties_the_mean_of_their_ranks():
    # 20 occupies ranks 2, 3, 4 -> 3 each.
    assert stats.rank_average([10, 20, 20, 30, 20]).tolist() == [1.0, 3.0, 3.0, 5.0, 3.0]


# ---------------------------------------------------------------------------------------- Spearman
def test_spearman_with_ties_hand_worked():
    # x ranks (1, 2.5, 2.5, 4), y ranks (1, 3, 2, 4): centred products sum 4.5, sums of squares 4.5 and 5,
    # so rho = 4.5 / sqrt(22.5) = 3/sqrt(10). With n - 2 = 2 df, t = rho sqrt(2/(1-rho^2)) = 3 sqrt(2) and
    # the t(2) tail is P(|T| > t) = 1 - t/sqrt(t^2 + 2) = 1 - 3/sqrt(10).
    r = stats.spearman([1, 2, 2, 3], [1, 3, 2, 4])
    assert r.rho == pytest.approx(3 / math.sqrt(10), abs=1e-15)
    assert r.p_value == pytest.approx(1 - 3 / math.sqrt(10), rel=1e-12)
    assert r.n == 4


def test_spearman_matches_scipy_on_tied_random_data():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 5, 40).astype(float)
    y = x + rng.integers(0, 4, 40)
    r = stats.spearman(x, y)
    ref = sps.spearmanr(x, y)
    assert r.rho == pytest.approx(ref.statistic, abs=1e-12)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-9)


def test_spearman_is_undefined_for_a_constant_variable_and_drops_nan_pairs():
    # S = 0 on every patch (the Gaussian oracle): no ranking, so no correlation.
    r = stats.spearman([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0])
    assert math.isnan(r.rho) and math.isnan(r.p_value)
    r2 = stats.spearman([1, 2, np.nan, 3, 4], [1, 2, 5, 3, 4])
    assert r2.n == 4 and r2.rho == 1.0 and r2.p_value == 0.0
    with pytest.raises(ValueError, match="equal length"):
        stats.spearman([1, 2, 3], [1, 2])


# ---------------------------------------------------------------------------- permutation p, n = 8
def test_exact_permutation_p_perfect_ranking_n8():
    # Only the identity and the reversal reach |rho| = 1 among 8! orderings.
    r = stats.spearman_permutation_test(np.arange(8), np.arange(8) * 2.0)
    assert r.exact and r.n_permutations == 40320
    assert r.p_value == pytest.approx(2 / 40320, abs=1e-18)
    assert r.rho == 1.0


def test_exact_permutation_p_one_adjacent_swap_n8_hand_counted():
    # rho = 1 - 6*2/(8*63) = 0.97619. |rho_perm| >= that iff sum d^2 <= 2 (or its mirror): the identity and
    # the 7 adjacent transpositions, times 2 for the reversed orderings = 16 of 8! = 40320.
    y = np.arange(8.0)
    y[[2, 3]] = y[[3, 2]]
    r = stats.spearman_permutation_test(np.arange(8), y)
    assert r.rho == pytest.approx(1 - 12 / 504, abs=1e-15)
    assert r.p_value == pytest.approx(16 / 40320, abs=1e-18)


def test_exact_permutation_p_matches_scipy_permutation_test_with_ties():
    # Independent route: scipy's exact permutation test (all 8! pairings) on the statistic |rho|.
    x = np.array([1.0, 2.0, 2.0, 3.0, 5.0, 5.0, 7.0, 8.0])
    y = np.array([2.0, 1.0, 4.0, 4.0, 3.0, 8.0, 6.0, 7.0])
    rx = sps.rankdata(x)

    def abs_rho(yy, axis=-1):
        ry = sps.rankdata(yy, axis=axis)
        dx, dy = rx - rx.mean(), ry - ry.mean(axis=axis, keepdims=True)
        return np.abs((dy * dx).sum(axis=axis) / np.sqrt((dx * dx).sum() * (dy * dy).sum(axis=axis)))

    ref = sps.permutation_test(
        (y,), abs_rho, permutation_type="pairings", n_resamples=np.inf, alternative="greater", vectorized=True
    )
    r = stats.spearman_permutation_test(x, y)
    assert r.exact
    assert r.p_value == pytest.approx(ref.pvalue, abs=1e-12)
    assert 0.0 < r.p_value < 1.0


def test_monte_carlo_permutation_p_is_seeded_and_never_zero():
    x = np.arange(12.0)
    a = stats.spearman_permutation_test(x, x, n_resamples=5000, seed=1)
    b = stats.spearman_permutation_test(x, x, n_resamples=5000, seed=1)
    assert not a.exact and a.p_value == b.p_value
    # P(|rho| = 1 by chance) = 2/12! ~ 4e-9: no random permutation hits, so p = 1/(B + 1).
    assert a.p_value == pytest.approx(1 / 5001)


# --------------------------------------------------------------------------------------------- OLS
def test_ols_hand_worked_with_t_interval():
    # x = 0..3, y = (1, 3, 2, 5): Sxx = 5, Sxy = 5.5 -> slope 1.1, intercept 1.1; residuals
    # (-0.1, 0.8, -1.3, 0.6), SSE = 2.7, s^2 = 1.35, se(slope) = sqrt(0.27); SST = 8.75,
    # R^2 = Sxy^2/(Sxx SST) = 30.25/43.75. t(2) quantile in closed form: (2q - 1)/sqrt(2q(1 - q)).
    fit = stats.ols_fit([0, 1, 2, 3], [1, 3, 2, 5])
    q = 0.975
    t975 = (2 * q - 1) / math.sqrt(2 * q * (1 - q))
    assert fit.slope == pytest.approx(1.1, abs=1e-14)
    assert fit.intercept == pytest.approx(1.1, abs=1e-14)
    assert fit.slope_se == pytest.approx(math.sqrt(0.27), rel=1e-13)
    assert fit.slope_ci[0] == pytest.approx(1.1 - t975 * math.sqrt(0.27), rel=1e-12)
    assert fit.slope_ci[1] == pytest.approx(1.1 + t975 * math.sqrt(0.27), rel=1e-12)
    assert fit.r2 == pytest.approx(30.25 / 43.75, rel=1e-13)
    # H0 slope = 1: t = 0.1/sqrt(0.27); t(2) two-sided p = 1 - |t|/sqrt(t^2 + 2).
    t = 0.1 / math.sqrt(0.27)
    assert fit.p_slope_vs(1.0) == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-12)
    assert fit.p_slope_vs(1.0, "less") + fit.p_slope_vs(1.0, "greater") == pytest.approx(1.0)


def test_ols_matches_scipy_linregress():
    rng = np.random.default_rng(0)
    x = rng.random(30)
    y = 2 - 0.7 * x + 0.1 * rng.standard_normal(30)
    fit, ref = stats.ols_fit(x, y), sps.linregress(x, y)
    assert fit.slope == pytest.approx(ref.slope, rel=1e-12)
    assert fit.intercept == pytest.approx(ref.intercept, rel=1e-12)
    assert fit.slope_se == pytest.approx(ref.stderr, rel=1e-10)
    assert fit.intercept_se == pytest.approx(ref.intercept_stderr, rel=1e-10)
    assert fit.r2 == pytest.approx(ref.rvalue**2, rel=1e-12)


def test_ols_refuses_degenerate_input():
    with pytest.raises(ValueError, match="at least 3"):
        stats.ols_fit([1, 2], [1, 2])
    with pytest.raises(ValueError, match="distinct x"):
        stats.ols_fit([1, 1, 1], [1, 2, 3])


def test_ols_on_the_papers_printed_table_10_reproduces_its_slope_and_intercept():
    # §7.6: slope 0.95, intercept 3.10 for t >= 800. (The printed CI [0.88, 1.02] and R^2 = 0.994 are NOT
    # what these printed means give: [0.928, 0.982] and 0.999.)
    rows = [r for r in pv.TABLE_10.records() if r["t"] >= 800]
    fit = stats.ols_fit(np.log([r["sqrt_alpha_bar"] for r in rows]), np.log([r["proxy"] for r in rows]))
    assert round(fit.slope, 2) == 0.95
    assert round(fit.intercept, 2) == 3.10
    assert fit.n == 9


# --------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_fixed_seed_is_reproducible_and_seed_dependent():
    data = np.array([0.2, 0.9, 0.4, 0.7, 0.1, 0.5])
    a = stats.bootstrap_ci(data, n_resamples=2000, seed=7)
    b = stats.bootstrap_ci(data, n_resamples=2000, seed=7)
    c = stats.bootstrap_ci(data, n_resamples=2000, seed=8)
    assert a == b
    assert a.ci != c.ci
    assert a.estimate == pytest.approx(data.mean())


def test_bootstrap_against_the_exact_bootstrap_distribution():
    # Data (1, 2, 4): the 27 equally likely resamples give mean 1 and mean 4 each with probability 1/27 > 2.5%,
    # so the exact 95% percentile interval is [1, 4]; the exact bootstrap SE is the plug-in sd / sqrt(3):
    # plug-in variance ((4/3)^2 + (1/3)^2 + (5/3)^2)/3 = 14/9 -> SE = sqrt(14/27).
    data = np.array([1.0, 2.0, 4.0])
    exact = np.array([np.mean(data[list(i)]) for i in itertools.product(range(3), repeat=3)])
    assert exact.std() == pytest.approx(math.sqrt(14 / 27))
    r = stats.bootstrap_ci(data, n_resamples=40_000, seed=0)
    assert r.ci == (1.0, 4.0)
    assert r.se == pytest.approx(math.sqrt(14 / 27), rel=0.02)


def test_bootstrap_resamples_whole_rows():
    # Rows are trajectories: a row-wise statistic must see intact rows (row sums are 0 or 2 only).
    data = np.array([[0.0, 0.0], [1.0, 1.0]])
    r = stats.bootstrap_ci(data, lambda d: float(np.mean(d.sum(axis=1) % 2)), n_resamples=500, seed=0)
    assert r.ci == (0.0, 0.0)


# ------------------------------------------------------------------------------------ outlier rule
def test_outlier_rule_on_the_papers_table_4_seeds_flags_only_seed_8():
    # §7.1 / Table 4: seeds 1-7 have s_hat 61, 48, 89, 45, 77, 17, 92 and seed 8 has 3386 (excluded by the paper).
    s = list(pv.TABLE_4.scalars["s_hat_seeds_1_to_7"]) + [pv.TABLE_4.scalars["excluded_seed_s_hat"]]
    out = stats.flag_log_outliers(s)
    assert out.flagged.tolist() == [False] * 7 + [True]
    # Hand: median of the 8 logs = (ln 61 + ln 77)/2; the MAD is the mean of the 4th and 5th absolute
    # deviations, those of 92 and 48, = (ln 92 - ln 48)/2. z = 0.6745 (ln 3386 - median)/MAD.
    med = (math.log(61) + math.log(77)) / 2
    mad = (math.log(92) - math.log(48)) / 2
    assert out.median_log == pytest.approx(med, rel=1e-14)
    assert out.mad_log == pytest.approx(mad, rel=1e-14)
    assert out.modified_z[-1] == pytest.approx(0.6745 * (math.log(3386) - med) / mad, rel=1e-13)
    # seed 6 (s_hat = 17) is low but inside the rule: |z| = 0.6745 (med - ln 17)/MAD ~ 2.9 < 3.5.
    assert abs(out.modified_z[5]) == pytest.approx(0.6745 * (med - math.log(17)) / mad, rel=1e-13)
    assert abs(out.modified_z[5]) < 3.5


def test_outlier_rule_refuses_non_positive_values():
    with pytest.raises(ValueError, match="positive"):
        stats.flag_log_outliers([1.0, 0.0, 2.0])


def test_significance_marks():
    assert [stats.significance_stars(p) for p in (0.001, 0.0099, 0.01, 0.049, 0.05, math.nan)] == [
        "**",
        "**",
        "*",
        "*",
        "n.s.",
        "undefined",
    ]


# ------------------------------------------------------------------------------------ sign flip
def test_sign_flip_on_the_papers_table_9_is_between_120_and_100():
    rows = pv.TABLE_9.records()
    f = stats.sign_flip([r["t"] for r in rows], [r["rho"] for r in rows])
    assert f["sign_flip_t"] == 110.0  # the paper: "sign flip near t ~ 110"
    # Linear zero between (120, -0.065) and (100, +0.438): 120 - 20 * 0.065 / 0.503.
    assert f["sign_flip_t_interp"] == pytest.approx(120 - 20 * 0.065 / 0.503)
    assert f["n_flips"] == 1


def test_sign_flip_absent_and_last_of_several():
    assert stats.sign_flip([30, 20, 10], [0.5, 0.6, 0.7])["sign_flip_t"] is None
    f = stats.sign_flip([50, 40, 30, 20, 10], [-0.5, 0.2, -0.1, np.nan, 0.3])
    assert f["n_flips"] == 2 and f["sign_flip_t"] == 20.0  # NaN at t=20 is skipped: crossing 30 -> 10


# ----------------------------------------------------------------------- measured chain / Moran
def _paper_chain():
    """The paper's 50-step chain: cosine s_off = 0.008, trailing grid t = 1000, ..., 20 -> ᾱ = 1."""
    sched = g.schedule_from_config(
        {"name": "cosine", "kind": "cosine", "num_train_timesteps": 1000, "s_off": 0.008, "max_beta": None}
    )
    return g.chain_from_config(
        sched,
        {"name": "ddim50", "num_steps": 50, "spacing": "trailing", "steps_offset": 0, "final_alpha_bar": 1.0},
    )


def _measured(chain, keep=slice(None)) -> MeasuredChain:
    steps = np.arange(len(chain))[keep]
    return MeasuredChain(
        "measured",
        chain.timesteps[keep],
        chain.alpha_bar_t[keep],
        chain.alpha_bar_prev[keep],
        step=steps,
    )


def test_measured_chain_is_a_geometry_chain_with_its_step_indices():
    chain = _paper_chain()
    m = _measured(chain, slice(10, 40, 3))
    assert isinstance(m, g.Chain) and len(m) == 10
    assert m.step.tolist() == list(range(10, 40, 3)) and m.t.tolist() == chain.timesteps[10:40:3].tolist()
    np.testing.assert_array_equal(g.expansion_function(m, 20.0), g.expansion_function(chain, 20.0)[10:40:3])
    with pytest.raises(ValueError, match="step indices"):
        MeasuredChain("x", chain.timesteps[:3], chain.alpha_bar_t[:3], chain.alpha_bar_prev[:3], step=[0, 1])


def test_moran_solution_reproduces_section_7_4():
    # §7.4 prints lambda** on the DDIM chain t = 980, ..., 20 -> alpha_bar = 1 (the 50-step chain without
    # its t = 1000 step); with that step, exact arithmetic gives 1.050702 (our value, not printed).
    chain = _paper_chain()
    sol49 = moran_solution(_measured(chain, slice(1, None)))
    assert sol49.status == "root"
    assert f"{sol49.value:.6f}" == pv.SCHEDULE_GEOMETRY["sec74_lambda_starstar"]
    sol50 = moran_solution(_measured(chain))
    assert sol50.value == pytest.approx(g.moran_threshold(chain).lambda_starstar, abs=1e-9)
    assert f"{sol50.value:.6f}" == "1.050702"


def test_moran_solution_reports_where_the_root_is_not():
    chain = _measured(_paper_chain(), slice(1, None))
    # lambda** ~ 1.05: a bracket above it has G > 1 at its lower end, one below it G < 1 at its upper end
    below = moran_solution(chain, bracket=(2.0, 10.0))
    assert below.status == "below_bracket" and math.isnan(below.value) and below.log_G_lo > 0
    assert "threshold is < 2" in below.describe()
    above = moran_solution(chain, bracket=(0.5, 1.0))
    assert above.status == "above_bracket" and above.log_G_hi < 0


def test_corrected_moran_reports_no_root_instead_of_the_bracket_end():
    # Suppression so strong that no lambda in the bracket expands: the answer is "above the bracket",
    # never the bracket's upper end (the paper's lambda*** = 500 may be exactly that artefact).
    chain = _measured(_paper_chain(), slice(1, None))
    a, ap = chain.alpha_bar_t, chain.alpha_bar_prev
    # S_t >= r_t - 1 + 0.001 keeps every corrected factor f_t(lambda) - S_t < r_t - S_t < 1 for all lambda.
    S = np.repeat((np.sqrt(ap / a) - 1.0 + 0.001)[:, None], 3, axis=1)
    lam_k = np.array([40.0, 100.0, 230.0])
    sol = moran_solution(chain, suppression=S, lambda_k=lam_k, bracket=(1.0, 500.0))
    assert sol.status == "above_bracket" and math.isnan(sol.value)
    assert "threshold is > 500" in sol.describe()
    assert sol.log_G_hi < 0
    # Zero suppression reduces to the Gaussian lambda**.
    sol0 = moran_solution(chain, suppression=np.zeros((len(chain), 3)), lambda_k=lam_k)
    assert f"{sol0.value:.6f}" == pv.SCHEDULE_GEOMETRY["sec74_lambda_starstar"]
    # A suppression that drives some factor to <= 0 at small lambda: -inf there counts as G < 1, and the
    # root (solved through the -inf region) still satisfies the corrected Moran equation.
    S_mid = np.repeat((0.5 * (np.sqrt(ap / a) - 1.0))[:, None], 3, axis=1)
    S_mid[-1] = [2.0, 0.0, 0.0]  # at the finest step f_t < 1.01 < S_t(lambda) for lambda up to ~70
    sol_mid = moran_solution(chain, suppression=S_mid, lambda_k=lam_k, bracket=(1.0, 1.0e4))
    assert sol_mid.factor_nonpositive and sol_mid.status == "root"
    assert sol_mid.residual < 1e-8 and "NOTE" in sol_mid.describe()


# ------------------------------------------------------- scipy.stats vs the hand-written reference
# pipeline.analysis.stats calls scipy.stats; tests/stats_reference.py is the analysis's earlier hand-written
# code (sort-and-scan ranks, explicit enumeration, normal equations, explicit index draws). Same numbers.
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spearman_and_ols_equal_the_hand_written_reference(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, 15).astype(float)  # ties
    y = 0.5 * x + rng.standard_normal(15)
    y[3] = np.nan  # dropped pair
    r = stats.spearman(x, y)
    rho, p = stats_reference.spearman(x, y)
    assert r.rho == pytest.approx(rho, abs=1e-14) and r.p_value == pytest.approx(p, rel=1e-12)
    ok = np.isfinite(y)
    fit, want = stats.ols_fit(x, y), stats_reference.ols(x[ok], y[ok])
    for got, key in (
        (fit.slope, "slope"),
        (fit.intercept, "intercept"),
        (fit.slope_se, "slope_se"),
        (fit.intercept_se, "intercept_se"),
        (fit.slope_ci[0], "ci_lo"),
        (fit.slope_ci[1], "ci_hi"),
        (fit.r2, "r2"),
    ):
        assert got == pytest.approx(want[key], rel=1e-11, abs=1e-14), key


def test_exact_permutation_p_equals_the_hand_written_enumeration():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 5, 8).astype(float)
    y = x + rng.integers(0, 4, 8)
    r = stats.spearman_permutation_test(x, y)
    assert r.exact and r.n_permutations == 40320
    assert r.p_value == pytest.approx(stats_reference.permutation_p_exact(x, y), abs=1e-15)
    assert r.rho == pytest.approx(stats_reference.spearman(x, y)[0], abs=1e-14)


@pytest.mark.parametrize("shape", [(9,), (6, 3)])
def test_bootstrap_equals_the_hand_written_index_draws(shape):
    data = np.random.default_rng(9).random(shape)
    stat = np.mean if len(shape) == 1 else (lambda d: float(np.mean(d[:, 0] * d[:, 1])))
    got = stats.bootstrap_ci(data, stat, n_resamples=3000, seed=11)
    est, ci, se = stats_reference.bootstrap_percentile(data, stat, 3000, 11)
    assert got.estimate == est
    assert got.ci == pytest.approx(ci, rel=1e-13)
    assert got.se == pytest.approx(se, rel=1e-12)


# ------------------------------------------------------------------ inference (pipeline/analysis/inference.py)
def test_benjamini_hochberg_hand_worked():
    from pipeline.analysis.inference import benjamini_hochberg

    # sorted p 0.01, 0.03, 0.04, 0.5 (m = 4): m p_(i)/i = 0.04, 0.06, 0.0533, 0.5, then running minima from
    # the top: 0.04, 0.0533, 0.0533, 0.5; NaN stays NaN and is not counted in m
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.5, np.nan])
    np.testing.assert_allclose(q[:4], [0.04, 0.16 / 3, 0.16 / 3, 0.5])
    assert math.isnan(q[4])


def test_t_test_equals_scipy_and_is_exact_for_zero_spread():
    from scipy import stats as sps

    from pipeline.analysis.inference import t_test

    x = np.array([[0.1, 0.3, 0.2, 0.5], [1.0, 1.0, 1.0, 1.0]])
    tt = t_test(x, axis=-1)
    ref = sps.ttest_1samp(x[0], 0.0)
    assert tt.p_value[0] == pytest.approx(ref.pvalue, rel=1e-12)
    lo, hi = ref.confidence_interval()
    assert (tt.ci_lo[0], tt.ci_hi[0]) == pytest.approx((lo, hi), rel=1e-12)
    assert tt.p_value[1] == 0.0 and tt.ci_lo[1] == tt.ci_hi[1] == 1.0  # four equal values: no doubt


def test_exact_bootstrap_equals_the_enumeration_of_all_n_to_the_n_draws():
    from pipeline.analysis.inference import exact_bootstrap

    data = np.array([1.0, 0.75, 0.75, 1.0])
    draws = np.array(
        [data[list(i)].mean() for i in itertools.product(range(4), repeat=4)]
    )  # 256, equally likely
    bs = exact_bootstrap(data)
    assert bs.exact and bs.estimate == pytest.approx(0.875)
    # the percentile interval of the 256 draws: the smallest value with cumulative share >= 2.5 % (97.5 %)
    srt = np.sort(draws)
    cum = np.arange(1, 257) / 256
    assert (
        bs.interval.lo == srt[np.searchsorted(cum, 0.025)]
        and bs.interval.hi == srt[np.searchsorted(cum, 0.975)]
    )
    assert bs.mass_at_hi == pytest.approx(np.mean(draws == bs.interval.hi))
    assert "degenerate" in bs.interval.degenerate  # 1/16 of the draws repeat 1.0 four times


def test_spearman_interval_is_fisher_z_with_the_bonett_wright_se():
    from pipeline.analysis.inference import spearman_with_interval

    rng = np.random.default_rng(3)
    x = rng.standard_normal(40)
    y = x + rng.standard_normal(40)
    rc = spearman_with_interval(x, y)
    se = math.sqrt((1 + rc.rho**2 / 2) / (40 - 3))
    assert (rc.interval.lo, rc.interval.hi) == pytest.approx(
        (
            math.tanh(math.atanh(rc.rho) - 1.959963984540054 * se),
            math.tanh(math.atanh(rc.rho) + 1.959963984540054 * se),
        )
    )


def test_partial_rank_correlation_removes_the_shared_trend():
    from pipeline.analysis.inference import partial_spearman

    t = np.arange(30.0)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(30), rng.standard_normal(30)
    x, y = t + 0.5 * a, -t + 0.5 * b  # both follow t, their noises are independent
    res = partial_spearman(x, y, t)
    assert res.raw_rho < -0.9 and abs(res.rho) < 0.4 and res.p_value > 0.05
    # hand: the first-order partial correlation formula on the ranks
    rx, ry, rt = (stats.rank_average(v) for v in (x, y, t))
    r = np.corrcoef([rx, ry, rt])
    hand = (r[0, 1] - r[0, 2] * r[1, 2]) / math.sqrt((1 - r[0, 2] ** 2) * (1 - r[1, 2] ** 2))
    assert res.rho == pytest.approx(hand, abs=1e-12)


def test_within_t_association_sees_only_what_goes_beyond_t():
    from pipeline.analysis.inference import within_strata_association

    rng = np.random.default_rng(1)
    t = np.repeat(np.arange(10.0), 4)
    e = rng.standard_normal(40)
    trend_only = within_strata_association(
        t + rng.standard_normal(40), -t + rng.standard_normal(40), t, n_resamples=2000
    )
    linked = within_strata_association(t + e, -t - e + 0.1 * rng.standard_normal(40), t, n_resamples=2000)
    assert trend_only.raw_rho < -0.8 and trend_only.p_value > 0.05
    assert linked.rho < -0.9 and linked.p_value < 0.01
