"""Lyapunov and score-deviation tables of the jacobian stage against the oracle's closed forms."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pipeline import io
from tests.conftest import compose_config


def _run(root, overrides):
    from stages import covariance, jacobian, trajectories

    cwd = os.getcwd()
    os.chdir(root)
    try:
        cfg = compose_config(["experiment=smoke", "progress=false", "tracking.enabled=false", *overrides])
        covariance.run(cfg)
        trajectories.run(cfg)
        return jacobian.run(cfg).out_dir
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def block_oracle_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("blk"), ["points.steps=null", "measure.blocks=off"])


def test_lyapunov_exponents_of_the_block_oracle_equal_the_gaussian_prediction(block_oracle_run):
    """Thm 17: ρ_k,t = f_t(λ_k) at every step, so Λ̂_k = (1/S) Σ_t log f_t(λ_k) = Λ(λ_k) (§5.1)."""
    rows = io.read_csv(block_oracle_run / "lyapunov.csv")
    assert len(rows) == 2 * 16  # 2 seeds x 16 patches (16x16 image, 4x4 patches)
    hat = np.array([float(r["lyap_hat"]) for r in rows])
    pred = np.array([float(r["lyap_gauss"]) for r in rows])
    np.testing.assert_allclose(hat, pred, rtol=0, atol=1e-10)
    # all patches expand under the Gaussian baseline here (λ_k far above λ**)
    assert np.all(pred > 0) and all(int(r["steps"]) == 10 for r in rows)


def test_proxy_table_has_the_papers_timesteps(block_oracle_run):
    rows = io.read_csv(block_oracle_run / "proxy.csv")
    ts = [int(r["t"]) for r in rows]
    assert ts == [999, 990, 980, 960, 940, 920, 900, 850, 800, 700, 600, 500, 400, 300]
    proxy = np.array([float(r["proxy"]) for r in rows])
    # the proxy grows with sqrt(ᾱ_t) (Thm 16, §7.6): monotone as t decreases, for the exact Gaussian score
    assert np.all(np.diff(proxy) > 0)
    # the block-diagonal oracle differs from the full-Σ₀ surrogate by its dropped cross-patch covariance
    assert all(float(r["exact_deviation"]) > 0 for r in rows)


def test_exact_deviation_vanishes_when_the_model_is_the_surrogate(tmp_path):
    """model.structure=full: ε̂ = ε^N exactly, so ‖Δ_t‖ = ‖ε̂ − ε^N‖ (eq. 28) and ρ_k^N − ρ_k are round-off."""
    out = _run(
        tmp_path,
        [
            "model.structure=full",
            "points.steps=[1000]",
            "measure.blocks=off",
            "measure.global_lanczos=false",
            "measure.power_iters=2",
        ],
    )
    rows = io.read_csv(out / "proxy.csv")
    dev = np.array([float(r["exact_deviation"]) for r in rows])
    assert np.max(dev) < 1e-9
    # and the exact suppression ρ_k^N − ρ_k (eq. 30, Table 3's rho_exact) is round-off on every patch
    patches = io.read_csv(out / "patches.csv")
    exact = np.array([float(r["exact_suppression"]) for r in patches])
    assert len(exact) == 2 * 16 and np.max(np.abs(exact)) < 1e-10


def test_seed_batch_gives_the_tables_of_one_point_at_a_time(tmp_path, monkeypatch):
    """points.seed_batch=2 stacks the seeds' points per step (pipeline.jacobian.points): same tables.
    Three seeds: the second stack of each step holds one point, padded to two."""
    from pipeline.jacobian import loop

    stacks = []
    original = loop.measure_points

    def counted(eps_fn, xs, *args, **kwargs):
        stacks.append(int(xs.shape[0]))
        return original(eps_fn, xs, *args, **kwargs)

    monkeypatch.setattr(loop, "measure_points", counted)
    common = ["points.steps=[1000,500,100]", "proxy.images=0", "num_seeds=3"]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = _run(tmp_path / "one", [*common, "points.seed_batch=1"])
    assert stacks == [1] * 9  # one point at a time is a batch of one
    stacks.clear()
    two = _run(tmp_path / "two", [*common, "points.seed_batch=2"])
    assert stacks == [2] * 6  # two stacks per measured step, the short one padded
    for table in ("global.csv", "patches.csv", "blocks.csv"):
        a, b = io.read_csv(one / table), io.read_csv(two / table)
        assert len(a) == len(b) > 0, table
        assert [list(r) for r in a] == [list(r) for r in b]
        for ra, rb in zip(a, b, strict=True):
            for key, va in ra.items():
                try:
                    x, y = float(va), float(rb[key])
                except ValueError:
                    assert va == rb[key], (table, key)
                    continue
                assert (np.isnan(x) and np.isnan(y)) or y == pytest.approx(x, rel=1e-9, abs=1e-12), (
                    table,
                    key,
                    ra,
                )
    seeds = {int(r["seed"]) for r in io.read_csv(two / "global.csv")}
    assert seeds == {0, 1, 2}


def test_the_sparse_table_11_protocol_measures_20_steps_and_interpolates(tmp_path):
    """measure.tables=[table_11] (§7.7): only the Rayleigh quotients, at the 20 representative steps of a
    30-step chain, no proxy, no blocks; lyapunov.csv interpolates S_k,t onto the chain. On the block oracle
    S = 0 at every step, so the interpolated Λ̂_k is the Gaussian Λ(λ_k) over the whole chain (closed form)."""
    from pipeline.geometry import representative_timesteps, schedule_from_config
    from pipeline.geometry.design import chain_from_config

    ov = ["measure.tables=[table_11]", "points.steps=null", "sampler.num_steps=30"]
    out = _run(tmp_path, ov)
    cfg = compose_config(["experiment=smoke", *ov])
    chain = chain_from_config(schedule_from_config(cfg.schedule), cfg.sampler).timesteps
    g = io.read_csv(out / "global.csv")
    measured = sorted({int(r["t"]) for r in g}, reverse=True)
    assert measured == representative_timesteps(chain, 20) and len(measured) == 20
    assert all(np.isnan(float(r["kappa_pi"])) and int(r["jvps"]) == 0 and int(r["vjps"]) == 16 for r in g)
    assert not (out / "blocks.csv").exists() and not (out / "proxy.csv").exists()
    rows = io.read_csv(out / "lyapunov.csv")
    assert {(int(r["steps"]), int(r["measured_steps"])) for r in rows} == {(30, 20)}
    hat = np.array([float(r["lyap_hat"]) for r in rows])
    np.testing.assert_allclose(hat, [float(r["lyap_gauss"]) for r in rows], rtol=0, atol=1e-10)
