"""Moran solver, KY dimension, IG_t / Δd_t, §6.4-6.5 design functions, the geometry table and its CLI."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.geometry import (
    COLUMNS,
    Chain,
    MoranNoRootError,
    chain_from_config,
    contraction_threshold,
    cosine_schedule,
    default_geometry_rows,
    design_criteria,
    expansion_function,
    expansion_threshold,
    full_chain,
    geometry_table,
    information_equalisation,
    information_gain,
    ky_dimension,
    ky_growth,
    linear_schedule,
    lyapunov_exponent,
    min_snr_weights,
    moran_threshold,
    optimal_chain,
    optimal_step_density,
    resolution_shift,
    schedule_from_diffusers_config,
    step_loads,
    strided_chain,
)


def _bisect(ch, lo, hi, n=200):
    g = lambda x: np.sum(np.log(expansion_function(ch, x)))  # noqa: E731
    for _ in range(n):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if g(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


def test_single_step_chain_root_is_its_threshold():
    ch = Chain("one", np.array([7]), np.array([0.6]), np.array([0.8]))
    assert moran_threshold(ch).lambda_starstar == pytest.approx(expansion_threshold(ch)[0], abs=1e-12)


@pytest.mark.parametrize(
    "chain", [full_chain(linear_schedule()), strided_chain(cosine_schedule(), 50, "trailing")]
)
def test_brent_matches_independent_bisection_to_1e_12(chain):
    r = moran_threshold(chain)
    ref = _bisect(chain, 1.0, 2.0)
    assert abs(r.lambda_starstar - ref) <= 2e-12
    assert r.bracket[0] <= r.min_lambda_star and r.xtol == 1e-12


def test_no_root_in_bracket_raises_instead_of_returning_an_end():
    ch = full_chain(linear_schedule())
    with pytest.raises(MoranNoRootError, match="no root .*Widen the bracket"):
        moran_threshold(ch, bracket=(1.5, 3.0))
    with pytest.raises(ValueError, match="0 < lo < hi"):
        moran_threshold(ch, bracket=(2.0, 1.0))
    r = moran_threshold(ch, bracket=(1.0, 1.5))
    assert 1.0 < r.lambda_starstar < 1.5


def test_zero_terminal_snr_schedule_is_handled():
    # ᾱ_T = 0 exactly: λ*(T) = inf and f_T ≡ √(1 - ᾱ_{T-1}); the auto bracket must still find the root.
    s = schedule_from_diffusers_config({"beta_schedule": "linear", "rescale_betas_zero_snr": True})
    assert s.alpha_bar[-1] == 0.0
    ch = full_chain(s)
    assert np.isinf(expansion_threshold(ch)[0])
    assert expansion_function(ch, 3.0)[0] == pytest.approx(math.sqrt(1 - s.alpha_bar[-2]))
    r = moran_threshold(ch)
    assert abs(r.log_G) < 1e-12 and np.isfinite(r.lambda_starstar)


def test_lyapunov_exponent_normalisation():
    ch = strided_chain(linear_schedule(), 50, "trailing")
    tot = lyapunov_exponent(ch, 30.0, normalize="none")
    assert lyapunov_exponent(ch, 30.0) == pytest.approx(tot / 50)
    with pytest.raises(ValueError, match="normalize"):
        lyapunov_exponent(ch, 30.0, normalize="T")


@pytest.mark.parametrize(
    "spec, d, j, sat",
    [
        ([1.0, -2.0], 1.5, 1, False),
        ([-1.0, -2.0], 0.0, 0, False),
        ([1.0, 1.0], 2.0, 2, True),
        ([-3.0, 2.0, -1.0], 2 + 1 / 3, 2, False),
    ],
)
def test_ky_dimension_eq44_closed_forms(spec, d, j, sat):
    r = ky_dimension(np.array(spec))
    assert r.dimension == pytest.approx(d) and r.j_star == j and r.saturated is sat


def test_information_gain_closed_forms():
    ch = full_chain(linear_schedule())
    lam = np.array([2.0])
    np.testing.assert_allclose(information_gain(ch, lam, 3), 3 * np.log(expansion_function(ch, 2.0)) ** 2)
    exact = information_gain(ch, lam, 3, kind="exact")
    a, p = ch.alpha_bar_t, ch.alpha_bar_prev
    e2 = np.log((2 * p + 1 - p) / (2 * a + 1 - a))
    np.testing.assert_allclose(exact, 1.5 * (np.exp(e2) - 1 - e2), rtol=1e-9)


def test_information_equalisation_uniform_spectrum_is_cs_equality():
    # All patches equal: log f_t constant across patches, so IG_t/Δd_t² = 1/N++ exactly (Thm 32 equality).
    ch = full_chain(cosine_schedule())
    r = information_equalisation(ch, np.full(16, 30.0), 192)
    assert r.n_plusplus == 3072
    assert r.ratio_over_theory == pytest.approx(1.0, rel=1e-12)
    assert r.spearman_rho > 0.999
    np.testing.assert_allclose(
        ky_growth(ch, np.full(16, 30.0), 192), 3072 * np.log(expansion_function(ch, 30.0)), rtol=1e-12
    )


def test_optimal_chain_theorem35():
    s = linear_schedule()
    ch = optimal_chain(s, 50)
    assert len(ch) == 50 and ch.timesteps[0] == 1000 and ch.alpha_bar_prev[-1] == 1.0
    assert np.all(np.diff(ch.timesteps) < 0)
    uni = strided_chain(s, 50, "trailing")
    assert (ch.timesteps <= 500).sum() > (uni.timesteps <= 500).sum()  # steps concentrate where L* is small
    cv = lambda x: x.std() / x.mean()  # noqa: E731
    assert cv(step_loads(s, ch.timesteps)) < cv(step_loads(s, uni.timesteps))
    rho = optimal_step_density(s)
    assert rho.sum() == pytest.approx(1.0) and np.argmax(rho) == 0  # largest at t = 1 (L*_1 ≈ ½√v_1)
    assert step_loads(s, np.arange(1000, 0, -1)).sum() == pytest.approx(
        np.sum(1 / contraction_threshold(full_chain(s))) / 1000
    )
    ch2 = chain_from_config(s, {"name": "opt", "num_steps": 20, "spacing": "optimal", "final_alpha_bar": 1.0})
    assert len(ch2) == 20


def test_design_criteria_and_min_snr():
    s = cosine_schedule()
    d = design_criteria(full_chain(s), s)
    assert d.weakest_t == 1 and d.weakest_L == pytest.approx(contraction_threshold(full_chain(s))[-1])
    w = min_snr_weights(s, 5.0)
    snr = s.alpha_bar[1:] / (1 - s.alpha_bar[1:])
    np.testing.assert_allclose(w, np.where(snr > 5, 5 / snr, 1.0))
    assert resolution_shift(128, 64) == pytest.approx(-2 * math.log(2))


def test_geometry_table_inputs():
    ch = strided_chain(linear_schedule(), 10, "leading")
    rows = geometry_table([ch, ("label", ch, "literal")])
    assert rows[0]["schedule"] == ch.name and rows[1]["formula"] == "literal"
    assert set(COLUMNS) <= set(rows[0])


def test_default_rows_and_cli(tmp_path: Path):
    from pipeline.geometry.__main__ import main
    from pipeline.io import read_csv

    rows = default_geometry_rows()
    assert len(rows) == 8
    out = tmp_path / "g.csv"
    assert main(["--out", str(out)]) == 0
    back = read_csv(out)
    assert [r["schedule"] for r in back] == [r["schedule"] for r in rows]
    assert float(back[0]["mean_L"]) == rows[0]["mean_L"]
    root = Path(__file__).resolve().parents[1]
    # --csv prints the file's full-precision CSV (the default is the aligned, readable table)
    res = subprocess.run(
        [sys.executable, "-m", "pipeline.geometry", "--csv"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = res.stdout.strip().splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 9
