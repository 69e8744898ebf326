"""Jacobian engine on the Gaussian oracle (Theorem 17's setting), where every quantity has a closed form.

ε*(x) = √v (ᾱΣ + vI)^{-1} (x − √ᾱ μ) is the exact noise predictor of N(μ, Σ), so
JΦ_t = r I + b √v (ᾱΣ + vI)^{-1} has eigenvalue f_t(μ_i) (eq. 26) along Σ's i-th eigenvector.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.jacobian import (
    MeasureConfig,
    PointsStep,
    ScoreLinearization,
    StepJacobian,
    golub_kahan,
    measure_points,
    patch_index,
    patch_rayleigh,
    plan_measurement,
    power_iteration,
)

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (3, 8, 8)
P = 4


def alpha_bar_linear(T: int = 1000) -> np.ndarray:
    """Paper-indexed ᾱ[0..T] of the linear schedule (β from 1e-4 to 0.02), ᾱ_0 = 1."""
    betas = np.linspace(1e-4, 0.02, T, dtype=np.float64)
    return np.concatenate([[1.0], np.cumprod(1.0 - betas)])


def step_coeffs(a: float, p: float) -> tuple[float, float]:
    """r_t and b_t of eq. (4)-(5) for a step ᾱ_t = a -> ᾱ_prev = p."""
    r = math.sqrt(p / a)
    b = math.sqrt(1 - p) - math.sqrt(p) * math.sqrt(1 - a) / math.sqrt(a)
    return r, b


def f_t(lam, a: float, p: float) -> np.ndarray:
    """Diagonal expansion function eq. (26)."""
    r, b = step_coeffs(a, p)
    v = 1 - a
    return r - abs(b) * math.sqrt(v) / (np.asarray(lam) * a + v)


def gaussian_eps(mean: np.ndarray, cov: np.ndarray, a: float):
    """Closed-form ε* of N(mean, cov) at ᾱ_t = a (float64), on one image [C,H,W] or a batch [S,C,H,W]."""
    n = cov.shape[0]
    v = 1 - a
    A = torch.as_tensor(math.sqrt(v) * np.linalg.inv(a * cov + v * np.eye(n)))
    mu = torch.as_tensor(math.sqrt(a) * mean)

    def eps(x):
        flat = x.reshape(-1, n) - mu
        return (flat @ A.T).reshape(x.shape)

    return eps


def measure_one(eps, x, r, b, patch_size, *, seed=0, **kwargs):
    """The engine on one point (a batch of one)."""
    return measure_points(eps, x[None], r, b, patch_size, [seed], **kwargs)[0]


def block_diagonal_gaussian(
    rng: np.random.Generator, lam: np.ndarray, n_k: int, low: float = 0.01, high: float = 0.2
):
    """Block-diagonal Σ (pixel order) with patch-k top eigenvalue lam[k]; returns (Σ, eigvals [M,n_k], eigvecs)."""
    idx = patch_index(SHAPE, P).numpy()
    n = idx.size
    cov = np.zeros((n, n))
    eigvals, eigvecs = [], []
    for k, lk in enumerate(lam):
        Q, _ = np.linalg.qr(rng.standard_normal((n_k, n_k)))
        mu = np.concatenate([[lk], np.sort(rng.uniform(low, high, n_k - 1))[::-1]])
        cov[np.ix_(idx[k], idx[k])] = (Q * mu) @ Q.T
        eigvals.append(mu)
        eigvecs.append(Q)
    return cov, np.array(eigvals), np.array(eigvecs)


@pytest.fixture(scope="module")
def step_100():
    ab = alpha_bar_linear()
    a, p = ab[100], ab[80]
    return a, p, *step_coeffs(a, p)


@pytest.fixture(scope="module")
def block_oracle(step_100):
    a, p, r, b = step_100
    rng = np.random.default_rng(0)
    n_k = 48
    lam = np.array([4.0, 2.0, 1.0, 0.6])
    cov, mus, Qs = block_diagonal_gaussian(rng, lam, n_k, low=0.001, high=0.01)
    mean = rng.uniform(-0.5, 0.5, cov.shape[0])
    eps = gaussian_eps(mean, cov, a)
    x = torch.as_tensor(rng.standard_normal(SHAPE))
    v1 = torch.as_tensor(Qs[:, :, 0])
    return dict(eps=eps, x=x, lam=lam, mus=mus, Qs=Qs, v1=v1, f_lam=f_t(lam, a, p), a=a, p=p, r=r, b=b)


def test_block_diagonal_oracle_dense_is_exact(block_oracle):
    o = block_oracle
    cfg = MeasureConfig(blocks="dense", power_iters=20)
    m = measure_one(o["eps"], o["x"], o["r"], o["b"], P, v1=o["v1"], expansion=o["f_lam"], config=cfg, seed=3)
    assert m.block_method == "dense"
    # Theorem 17: ‖[JΦ_t]_kk‖ = f_t(λ_k); cross blocks vanish; S_k,t = 0 along v_k.
    np.testing.assert_allclose(m.diag_norm, o["f_lam"], rtol=1e-10)
    off = m.op_norm[~np.eye(4, dtype=bool)]
    assert np.max(np.abs(off)) < 1e-10
    assert np.max(np.abs(m.coupling)) < 1e-10
    assert np.max(np.abs(m.suppression)) < 1e-8
    np.testing.assert_allclose(m.rayleigh, o["f_lam"], rtol=1e-12)
    # Frobenius of the diagonal block = sqrt(Σ_i f_t(μ_k,i)²) (symmetric block with those eigenvalues)
    fro = np.sqrt((f_t(o["mus"], o["a"], o["p"]) ** 2).sum(1))
    np.testing.assert_allclose(np.diag(m.frob_norm), fro, rtol=1e-10)
    top = f_t(o["mus"], o["a"], o["p"]).max()
    assert m.kappa_dense == pytest.approx(top, rel=1e-10)
    assert m.kappa_diag == pytest.approx(top, rel=1e-10)
    assert m.delta_cross < 1e-10
    np.testing.assert_allclose(m.pc_slack, 1 - o["f_lam"], atol=1e-10)


def test_block_diagonal_oracle_block_power(block_oracle):
    o = block_oracle
    # Slowest block: f(0.01)/f(0.6) ~ 0.84, so 40 steps reach ~1e-12 (error ~ ratio^(4K)).
    cfg = MeasureConfig(
        blocks="power", block_power_iters=40, frob_probes=64, power_iters=5, global_lanczos=False
    )
    m = measure_one(o["eps"], o["x"], o["r"], o["b"], P, v1=o["v1"], expansion=o["f_lam"], config=cfg, seed=1)
    assert m.block_method == "power"
    np.testing.assert_allclose(m.diag_norm, o["f_lam"], rtol=1e-6)
    off = m.op_norm[~np.eye(4, dtype=bool)]
    assert np.max(np.abs(off)) < 1e-10
    assert np.max(m.frob_norm[~np.eye(4, dtype=bool)]) < 1e-10
    fro = np.sqrt((f_t(o["mus"], o["a"], o["p"]) ** 2).sum(1))
    # Hutchinson with 64 Rademacher probes on a 48x48 block: a few per cent.
    np.testing.assert_allclose(np.diag(m.frob_norm), fro, rtol=0.1)


def test_block_diagonal_oracle_block_lanczos(block_oracle):
    o = block_oracle
    cfg = MeasureConfig(
        blocks="lanczos", block_power_iters=12, frob_probes=0, power_iters=3, global_lanczos=False
    )
    m = measure_one(o["eps"], o["x"], o["r"], o["b"], P, v1=o["v1"], expansion=o["f_lam"], config=cfg, seed=2)
    assert m.block_method == "lanczos"
    np.testing.assert_allclose(m.diag_norm, o["f_lam"], rtol=1e-6)
    assert np.max(np.abs(m.op_norm[~np.eye(4, dtype=bool)])) < 1e-10
    assert np.max(np.abs(m.coupling)) < 1e-10


def test_rayleigh_along_every_eigenvector_is_f_of_eigenvalue(block_oracle):
    o = block_oracle
    score = ScoreLinearization(o["eps"], o["x"][None], stacked=True)
    op = PointsStep(StepJacobian(score, o["r"], o["b"]), patch_index(SHAPE, P))
    for i in (0, 5, 47):
        vi = torch.as_tensor(o["Qs"][:, :, i])
        for via in ("vjp", "jvp"):
            rq = patch_rayleigh(op, vi, via=via)[0]
            np.testing.assert_allclose(rq, f_t(o["mus"][:, i], o["a"], o["p"]), rtol=1e-12)


def test_full_covariance_global_norm_is_max_f(step_100):
    a, p, r, b = step_100
    rng = np.random.default_rng(7)
    n = int(np.prod(SHAPE))
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    mu = np.concatenate([[3.0], rng.uniform(0.0, 0.05, n - 1)])
    cov = (Q * mu) @ Q.T
    eps = gaussian_eps(np.zeros(n), cov, a)
    x = torch.as_tensor(rng.standard_normal(SHAPE))
    cfg = MeasureConfig(blocks="dense", power_iters=30, lanczos_iters=30, rayleigh=False)
    m = measure_one(eps, x, r, b, P, config=cfg, seed=0)
    expected = f_t(mu, a, p).max()
    assert m.kappa_dense == pytest.approx(expected, rel=1e-10)
    assert m.kappa_lanczos == pytest.approx(expected, rel=1e-10)
    assert m.lanczos_residual < 1e-8
    # power iteration: gap f(0.05)/f(3) ~ 0.87, error ~ n·0.87^(4·30) ~ 1e-5
    assert m.kappa_pi == pytest.approx(expected, rel=1e-4)
    assert m.kappa_pi <= expected * (1 + 1e-12)  # a lower bound by construction
    assert m.kappa_lanczos <= expected * (1 + 1e-12)


def test_lanczos_beats_power_iteration_on_the_same_budget(step_100):
    a, p, r, b = step_100
    rng = np.random.default_rng(11)
    n = int(np.prod(SHAPE))
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    mu = np.concatenate([[1.0, 0.9], rng.uniform(0.0, 0.8, n - 2)])  # tight gap: high-noise-like
    cov = (Q * mu) @ Q.T
    score = ScoreLinearization(gaussian_eps(np.zeros(n), cov, a), torch.as_tensor(rng.standard_normal(SHAPE)))
    step = StepJacobian(score, r, b)
    expected = f_t(mu, a, p).max()
    start = torch.as_tensor(rng.standard_normal(SHAPE))[None]
    pi = power_iteration(step.matvec, step.rmatvec, start, 20)
    gk = golub_kahan(step.matvec, step.rmatvec, start, 20)
    assert gk.matvecs == pi.matvecs == 40
    err_pi = abs(pi.value[0] - expected) / expected
    err_gk = abs(gk.value[0] - expected) / expected
    assert err_gk < err_pi / 10
    assert abs(gk.value[0] - expected) <= gk.residual[0] + 1e-12


def test_same_seed_same_numbers_and_config_choices(block_oracle):
    o = block_oracle
    cfg = MeasureConfig(blocks="power", block_power_iters=3, frob_probes=2, power_iters=4)
    kw = dict(v1=o["v1"], expansion=o["f_lam"], config=cfg)
    m1 = measure_one(o["eps"], o["x"], o["r"], o["b"], P, seed=5, **kw)
    m2 = measure_one(o["eps"], o["x"], o["r"], o["b"], P, seed=5, **kw)
    m3 = measure_one(o["eps"], o["x"], o["r"], o["b"], P, seed=6, **kw)
    assert m1.kappa_pi == m2.kappa_pi and m1.kappa_lanczos == m2.kappa_lanczos
    np.testing.assert_array_equal(m1.op_norm, m2.op_norm)
    assert m1.kappa_pi != m3.kappa_pi
    # counters: 4 PI + 4 GK JVPs, 4 PI + 4 GK + M Rayleigh VJPs, then the block work
    assert m1.vjps == 8 + 4 + 3 * 16
    assert m1.jvps == 8 + 3 * 16 + 2 * 4


def test_plan_picks_dense_for_cifar_and_power_for_celebahq():
    cfg = MeasureConfig(block_power_iters=10)
    assert plan_measurement(3072, 16, cfg, True).blocks == "dense"  # 3072 VJPs < 2·10·256 matvecs
    plan = plan_measurement(12288, 16, cfg, True)  # CelebA-HQ at 64x64, 16x16 patches
    assert plan.blocks == "lanczos" and plan.jvp_method == "linearize"
    assert plan_measurement(3072, 16, MeasureConfig(blocks="off"), True).jvp_method == "double_vjp"
    with pytest.raises(ValueError, match="dense_max_n"):
        plan_measurement(50000, 16, MeasureConfig(blocks="dense"), True)


def _measure_group(name: str) -> dict:
    """The measure group option as composed (paper extends default), without the group's own keys."""
    from omegaconf import OmegaConf

    from tests.conftest import compose_config

    raw = OmegaConf.load(ROOT / "conf" / "measure" / f"{name}.yaml")
    composed = OmegaConf.to_container(compose_config([f"measure={name}"]).measure, resolve=True)
    base = OmegaConf.load(ROOT / "conf" / "measure" / "default.yaml")
    return {k: v for k, v in composed.items() if k in base or k in raw}


def test_config_files_and_refusals():
    for name in ("default", "paper"):
        cfg = MeasureConfig.from_dict(_measure_group(name))
        assert cfg.power_iters >= 1
    paper = MeasureConfig.from_dict(_measure_group("paper"))
    # §7.1, §7.4: K_PI = 20 and K = 10 per block, on the cheapest exact route (replayed there), Table 7's probes
    assert (paper.power_iters, paper.block_power_iters, paper.blocks, paper.frob_probes) == (
        20,
        10,
        "auto",
        200,
    )
    assert plan_measurement(3072, 16, paper, True).blocks == "dense"
    with pytest.raises(TypeError, match="power_iter"):  # composition refuses it first (test_config_schema.py)
        MeasureConfig.from_dict({"power_iter": 3})
    with pytest.raises(ValueError, match="blocks"):
        MeasureConfig(blocks="exact")


def test_bad_inputs_are_refused(block_oracle):
    o = block_oracle
    with pytest.raises(ValueError, match="v1 must be"):
        measure_one(
            o["eps"], o["x"], o["r"], o["b"], P, v1=o["v1"][:, :10], config=MeasureConfig(blocks="off")
        )
    with pytest.raises(ValueError, match="patch"):
        measure_one(o["eps"], o["x"], o["r"], o["b"], 3, config=MeasureConfig(blocks="off"))
    with pytest.raises(ValueError, match="one image"):
        ScoreLinearization(o["eps"], o["x"][None])
