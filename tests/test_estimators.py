"""The common checks every registered estimator passes (pipeline.jacobian.estimators.REGISTRY), and the
exact route's replays against the matrix-free estimators.

On the block-diagonal Gaussian oracle (Theorem 17) JΦ_t is block diagonal and symmetric with eigenvalues
f_t(μ_k,i) (eq. 26) in block k, so every quantity has a closed form: ‖JΦ_t‖ = max f, ‖[JΦ_t]_kk‖ =
max_i f(μ_k,i), ‖[JΦ_t]_kk‖_F = (Σ_i f(μ_k,i)²)^½, cross blocks 0, ⟨v_k,[JΦ_t]_kk v_k⟩ = f(λ_k). Each
estimator runs alone (its ``settings``), at three points, and must be finite, equal to the closed form
within its own stated accuracy (``tolerance``), give at a batch of three what it gives at batches of one,
use exactly the products the planner counts, and give the same numbers for the same seeds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.jacobian import MeasureConfig, measure_points, patch_index, plan_measurement
from pipeline.jacobian.blocks import hutchinson_frobenius, hutchpp_frobenius
from pipeline.jacobian.dense import DenseStep
from pipeline.jacobian.estimators import REGISTRY, Estimator
from tests.test_jacobian import (
    SHAPE,
    P,
    alpha_bar_linear,
    block_diagonal_gaussian,
    f_t,
    gaussian_eps,
    step_coeffs,
)

SEEDS = [1, 2, 3]
# every estimator off, budgets where the Krylov bounds are tight on the oracle below
BASE = dict(
    global_power=False,
    global_lanczos=False,
    rayleigh=False,
    blocks="off",
    frob_probes=0,
    power_iters=60,
    lanczos_iters=40,
    block_power_iters=40,
    jvp_method="forward",
    chunk_size=8,
)


@pytest.fixture(scope="module")
def oracle():
    ab = alpha_bar_linear()
    a, p = ab[40], ab[20]
    r, b = step_coeffs(a, p)
    # one dominant patch and well separated tops: σ₂/σ₁ = 0.83 globally, at most 0.78 within a block
    lam = np.array([4.0, 0.03, 0.02, 0.01])
    cov, mus, Qs = block_diagonal_gaussian(np.random.default_rng(0), lam, 48, low=1e-5, high=1e-4)
    mean = np.random.default_rng(1).uniform(-0.5, 0.5, cov.shape[0])
    eps = gaussian_eps(mean, cov, a)
    xs = torch.as_tensor(np.random.default_rng(2).standard_normal((len(SEEDS), *SHAPE)))
    F = f_t(mus, a, p)  # [M, n_k] eigenvalues of the diagonal blocks, all positive here
    M = len(lam)
    top = np.sort(F.reshape(-1))[::-1]
    block_sorted = np.sort(F, axis=1)[:, ::-1]
    closed = {
        "global_norm": top[0],
        "block_op": np.diag(F.max(1)),
        "diag_op": F.max(1),
        "block_frob": np.diag(np.sqrt((F**2).sum(1))),
        "rayleigh": f_t(lam, a, p),
    }
    gaps = {
        "global_norm": top[1] / top[0],
        "block_op": float(np.max(block_sorted[:, 1] / block_sorted[:, 0])),
        "diag_op": float(np.max(block_sorted[:, 1] / block_sorted[:, 0])),
        "block_frob": 1.0,
        "rayleigh": 1.0,
    }
    dims = {"global_norm": cov.shape[0], "block_op": 48, "diag_op": 48, "block_frob": 48, "rayleigh": 48}
    return dict(
        eps=eps,
        xs=xs,
        r=r,
        b=b,
        v1=torch.as_tensor(Qs[:, :, 0]),
        f_lam=f_t(lam, a, p),
        M=M,
        n=cov.shape[0],
        closed=closed,
        gaps=gaps,
        dims=dims,
    )


def solo(est: Estimator) -> MeasureConfig:
    return MeasureConfig(**{**BASE, **est.settings})


_RUNS: dict = {}


def run(o, est: Estimator, seeds=SEEDS, idx=None, fresh=False):
    """The engine with only ``est`` switched on, at the oracle's points ``idx`` (cached: runs are pure)."""
    idx = list(range(len(seeds))) if idx is None else idx
    key = (est.name, tuple(seeds), tuple(idx))
    if fresh or key not in _RUNS:
        _RUNS[key] = measure_points(
            o["eps"],
            o["xs"][idx],
            o["r"],
            o["b"],
            P,
            seeds,
            v1=o["v1"],
            expansion=o["f_lam"],
            config=solo(est),
        )
    return _RUNS[key]


ESTIMATORS = [pytest.param(e, id=e.name) for e in REGISTRY]


def test_every_estimator_keeps_the_contract():
    names = [e.name for e in REGISTRY]
    assert len(set(names)) == len(names)
    for e in REGISTRY:
        assert e.name and e.paper and e.columns, e.name
        assert {c.table for c in e.columns} <= {"global", "patches", "blocks"}, e.name
        assert set(e.finite) <= {c.name for c in e.columns}, e.name
        assert set(e.series) <= {c.name for c in e.columns if c.table == "global"}, e.name


@pytest.mark.parametrize("est", ESTIMATORS)
def test_finite_and_equal_to_the_oracle_closed_form(oracle, est):
    o = oracle
    cfg = solo(est)
    plan = plan_measurement(o["n"], o["M"], cfg, True)
    assert est.enabled(cfg, plan.blocks, True), f"{est.name}'s settings do not turn it on"
    checked = 0
    for m in run(o, est):
        assert est.non_finite(m) == [], est.name
        for col in est.columns:
            value = m.column(col.name)
            if col.quantity is None or value is None:
                continue
            expected = o["closed"][col.quantity]
            tol = est.tolerance(cfg, o["gaps"][col.quantity], o["dims"][col.quantity])
            scale = float(np.max(np.abs(expected)))
            np.testing.assert_allclose(
                np.asarray(value, dtype=float),
                expected,
                rtol=tol,
                atol=tol * scale,
                err_msg=f"{est.name}: {col.name} (stated accuracy {tol:.2g})",
            )
            checked += 1
    if any(c.quantity for c in est.columns) and est.name != "derived":
        assert checked, f"{est.name} filled none of its closed-form columns"


@pytest.mark.parametrize("est", ESTIMATORS)
def test_batch_of_one_equals_batch_of_three(oracle, est):
    together = run(oracle, est)
    for s, seed in enumerate(SEEDS):
        alone = run(oracle, est, seeds=[seed], idx=[s])[0]
        for col in est.columns:
            a, b = alone.column(col.name), together[s].column(col.name)
            assert (a is None) == (b is None), (est.name, col.name)
            if a is not None and not isinstance(a, str):
                np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-13, err_msg=f"{est.name}: {col.name}")


@pytest.mark.parametrize("est", ESTIMATORS)
def test_products_are_the_planners_count(oracle, est):
    o = oracle
    cfg = solo(est)
    plan = plan_measurement(o["n"], o["M"], cfg, True)
    m = run(o, est)[0]
    assert (m.jvps, m.vjps) == (plan.jvps, plan.vjps), est.name
    assert plan.products[est.name] == est.products(o["n"], o["M"], cfg, plan.blocks)


@pytest.mark.parametrize("est", ESTIMATORS)
def test_same_seed_same_numbers(oracle, est):
    a, b = run(oracle, est), run(oracle, est, fresh=True)
    for ma, mb in zip(a, b, strict=True):
        for col in est.columns:
            va, vb = ma.column(col.name), mb.column(col.name)
            if va is not None and not isinstance(va, str):
                np.testing.assert_array_equal(va, vb, err_msg=f"{est.name}: {col.name}")


# ---------------------------------------------------------------------------------------------------
# The exact route replays the paper's estimators from the matrix-free route's start vectors


@pytest.fixture(scope="module")
def unet():
    diffusers = pytest.importorskip("diffusers")
    from pipeline.models.attention import install_math_attention

    torch.manual_seed(0)
    m = (
        diffusers.UNet2DModel(
            sample_size=8,
            in_channels=3,
            out_channels=3,
            block_out_channels=(4, 8),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=2,
            attention_head_dim=4,
        )
        .double()
        .eval()
    )
    for p in m.parameters():
        p.requires_grad_(False)
    install_math_attention(m)
    xs = torch.randn(2, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return (lambda z: m(z, 500).sample), xs


def test_replayed_paper_estimators_equal_the_matrix_free_ones(unet):
    """float64: the K_PI = 20 power iteration replayed on the stored Jacobian is the matrix-free one to 1e-10,
    and so are the K = 10 block power iteration and Hutchinson's estimate (same start vectors, same probes)."""
    eps, xs = unet
    common = dict(power_iters=20, block_power_iters=10, frob_probes=3, global_lanczos=True, lanczos_iters=8)
    exact = measure_points(eps, xs, 1.05, -0.3, P, [11, 12], config=MeasureConfig(blocks="dense", **common))
    free = measure_points(
        eps,
        xs,
        1.05,
        -0.3,
        P,
        [11, 12],
        config=MeasureConfig(blocks="power", jvp_method="double_vjp", **common),
    )
    for e, f in zip(exact, free, strict=True):
        assert (e.jvps, e.vjps) == (
            0,
            192,
        ) and e.block_method == "dense"  # n VJP rows, every estimator replayed
        for name in ("kappa_pi", "kappa_pi_change", "kappa_pi_residual", "kappa_lanczos", "lanczos_residual"):
            assert e.column(name) == pytest.approx(f.column(name), rel=1e-10, abs=1e-13), name
        np.testing.assert_allclose(e.op_norm_pi, f.op_norm_pi, rtol=1e-10)
        np.testing.assert_allclose(e.diag_norm_pi, f.diag_norm_pi, rtol=1e-10)
        np.testing.assert_allclose(e.frob_norm_hutch, f.frob_norm_hutch, rtol=1e-10)
        # matrix-free: the paper's values are the run's block norms; exact route: exact values beside them
        np.testing.assert_array_equal(f.op_norm, f.op_norm_pi)
        np.testing.assert_array_equal(f.frob_norm, f.frob_norm_hutch)
        assert np.all(e.op_norm_pi <= e.op_norm * (1 + 1e-10))  # K power steps: lower bounds of the exact
        assert e.kappa_pi <= e.kappa_dense * (1 + 1e-12)
        assert np.max(np.abs(e.op_norm_pi / e.op_norm - 1)) > 1e-6  # K = 10 is short of the exact value here


# ---------------------------------------------------------------------------------------------------
# Hutch++ against Hutchinson on a matrix with a closed-form answer


def test_hutchpp_error_falls_as_one_over_the_budget():
    """JΦ = A with decaying block spectra (closed form: numpy's Frobenius norms of A's blocks). Hutch++'s mean
    relative error falls ~4x when sketch and probes both grow 4x (1/m); Hutchinson's ~2x for 4x the probes."""
    rng = np.random.default_rng(5)
    M, nk, S = 4, 48, 4
    idx = patch_index(SHAPE, P)
    U = rng.standard_normal((S, M, nk, M, nk)) * (np.arange(1, nk + 1) ** -1.0)[None, None, None, None, :]
    J = torch.as_tensor(U)
    exact = np.sqrt((U**2).sum(axis=(2, 4)))  # [S, M(k), M(j)]
    op = DenseStep(J, idx, SHAPE)

    def err(fro):
        return float(np.mean(np.abs(fro - exact) / exact))

    def gens(seed):
        return [torch.Generator().manual_seed(seed * 10 + s) for s in range(S)]

    hpp = {s: np.mean([err(hutchpp_frobenius(op, s, s, gens(k))) for k in range(3)]) for s in (3, 12)}
    hut = {p: np.mean([err(hutchinson_frobenius(op, p, gens(k))) for k in range(3)]) for p in (9, 36)}
    assert hpp[12] < hpp[3] / 3, hpp  # 1/m: 4x the budget, ~1/4 the error
    assert hut[36] > hut[9] / 3, hut  # 1/√m: 4x the budget, ~1/2 the error
    assert hpp[12] < hut[36] / 2, (hpp, hut)  # per-block budgets 36 vs 36: Hutch++ well ahead
    assert hpp[12] < 5 / np.sqrt(12 * 12) / 2  # within the stated accuracy (five standard errors)


def test_the_registry_fills_exactly_the_tables_schema():
    """pipeline.outputs.JacobianFolder declares each table's columns (the contract with the analysis); the
    registry's columns are those, less the ones the loop adds (the point's place, the surrogate's)."""
    from pipeline.jacobian.estimators import column_names
    from pipeline.outputs import JacobianFolder as J

    loop_adds = {
        "global": set(J.POINT_COLUMNS) | {"matvecs"},
        "patches": set(J.PATCH_PREFIX) | {"rayleigh_surrogate", "exact_suppression"},
        "blocks": {"seed", "step", "t", "k", "j", "chebyshev"},
    }
    for table, name in (("global", J.GLOBAL), ("patches", J.PATCHES), ("blocks", J.BLOCKS)):
        assert set(column_names(table)) == set(J.COLUMNS[name]) - loop_adds[table], table
