"""Lyapunov exponents on the Gaussian oracle along a short DDIM chain (Theorems 25-27, Table 11).

With block-diagonal Σ every JΦ_s = r_s I + b_s √v_s (ᾱ_sΣ + v_sI)^{-1} shares Σ's eigenvectors, so the
chain product has eigenvalue Π_s f_s(μ_i) along eigenvector i and Λ(μ) = (1/S) Σ_s log f_s(μ) (Thm 25).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.jacobian import patch_index
from pipeline.jacobian.lyapunov import (
    benettin_spectrum,
    ky_dimension_partial,
    rayleigh_exponents,
    trajectory_rayleigh,
)
from tests.test_jacobian import (
    SHAPE,
    P,
    alpha_bar_linear,
    block_diagonal_gaussian,
    f_t,
    gaussian_eps,
    step_coeffs,
)


@pytest.fixture(scope="module")
def chain_oracle():
    ab = alpha_bar_linear()
    ts = [500, 400, 300, 200, 100, 50]
    a = np.array([ab[t] for t in ts])
    p = np.array([ab[t] for t in ts[1:]] + [ab[20]])
    rng = np.random.default_rng(3)
    lam = np.array([3.0, 1.5, 0.8, 0.3])
    cov, mus, Qs = block_diagonal_gaussian(rng, lam, 48, low=0.001, high=0.05)
    mean = rng.uniform(-0.3, 0.3, cov.shape[0])
    eps = [gaussian_eps(mean, cov, float(ai)) for ai in a]
    coeffs = [step_coeffs(float(ai), float(pi)) for ai, pi in zip(a, p, strict=True)]
    xs = torch.as_tensor(rng.standard_normal((len(ts) + 1, *SHAPE)))

    def Lam(mu):  # Theorem 25: Λ(μ) = (1/S) Σ_s log f_s(μ)
        return np.mean([np.log(f_t(mu, float(ai), float(pi))) for ai, pi in zip(a, p, strict=True)], axis=0)

    return dict(
        a=a,
        p=p,
        cov=cov,
        mus=mus,
        Qs=Qs,
        eps=eps,
        r=[c[0] for c in coeffs],
        b=[c[1] for c in coeffs],
        xs=xs,
        Lam=Lam,
    )


def test_patch_rayleigh_exponents_equal_gaussian_lyapunov_exponents(chain_oracle):
    o = chain_oracle
    dirs = torch.as_tensor(np.transpose(o["Qs"], (0, 2, 1)))  # [M, q = n_k, n_k]: every eigenvector
    rq = trajectory_rayleigh(lambda s: o["eps"][s], o["xs"], o["r"], o["b"], dirs, P)
    assert rq.shape == (6, 4, 48)
    res = rayleigh_exponents(rq)
    np.testing.assert_allclose(res.exponents, o["Lam"](o["mus"]), rtol=1e-6, atol=1e-12)
    assert res.nonpositive_steps.sum() == 0 and res.steps == 6
    # along v_k alone: Λ(λ_k)
    rq1 = trajectory_rayleigh(lambda s: o["eps"][s], o["xs"], o["r"], o["b"], dirs[:, 0], P)
    np.testing.assert_allclose(rayleigh_exponents(rq1).exponents, o["Lam"](o["mus"][:, 0]), rtol=1e-6)
    # several trajectories: step axis 1
    multi = rayleigh_exponents(np.stack([rq1, rq1]), step_axis=1)
    assert multi.exponents.shape == (2, 4)


def _eigvecs_pixel_order(o, which):
    idx = patch_index(SHAPE, P).numpy()
    vecs = []
    for k, i in which:
        v = np.zeros(idx.size)
        v[idx[k]] = o["Qs"][k][:, i]
        vecs.append(v.reshape(SHAPE))
    return torch.as_tensor(np.array(vecs))


def test_benettin_started_on_eigenvectors_is_exact(chain_oracle):
    o = chain_oracle
    which = [(0, 0), (1, 0), (2, 0), (3, 0), (0, 5)]
    start = _eigvecs_pixel_order(o, which)
    res = benettin_spectrum(lambda s: o["eps"][s], o["xs"], o["r"], o["b"], len(which), start=start)
    expected = [o["Lam"](o["mus"][k, i]) for k, i in which]
    np.testing.assert_allclose(res.exponents, expected, rtol=1e-6, atol=1e-12)
    assert res.jvps == 6 * len(which)


def test_benettin_matches_qr_of_the_dense_product(chain_oracle):
    o = chain_oracle
    n = int(np.prod(SHAPE))
    prod = np.eye(n)
    for a, r, b in zip(o["a"], o["r"], o["b"], strict=True):
        v = 1 - a
        J = r * np.eye(n) + b * math.sqrt(v) * np.linalg.inv(a * o["cov"] + v * np.eye(n))
        prod = J @ prod
    g = torch.Generator().manual_seed(4)
    res = benettin_spectrum(lambda s: o["eps"][s], o["xs"], o["r"], o["b"], 4, g)
    Z0 = torch.randn(4, n, generator=torch.Generator().manual_seed(4), dtype=torch.float64).numpy()
    Q0, _ = np.linalg.qr(Z0.T)
    _, R = np.linalg.qr(prod @ Q0)
    np.testing.assert_allclose(res.exponents, np.log(np.abs(np.diag(R))) / 6, rtol=1e-8)
    # with p = n the exponents sum to (1/S) log|det Π JΦ_s| = Σ_i Λ(μ_i)
    full = benettin_spectrum(lambda s: o["eps"][s], o["xs"], o["r"], o["b"], n, g)
    assert full.exponents.sum() == pytest.approx(o["Lam"](o["mus"]).sum(), rel=1e-8)


def test_kaplan_yorke_from_partial_spectrum():
    from pipeline.geometry import ky_dimension

    ell = np.array([0.3, 0.1, -0.2, -0.5, -1.0])
    est = ky_dimension_partial(ell)
    assert est.determined and est.j_star == 3
    assert est.dimension == pytest.approx(3 + (0.3 + 0.1 - 0.2) / 0.5)
    assert est.dimension == pytest.approx(ky_dimension(ell).dimension)
    top = ky_dimension_partial(ell[:4], n=100)  # partial sums turn negative at the 4th: determined
    assert top.determined and top.dimension == pytest.approx(est.dimension)
    low = ky_dimension_partial(ell[:2], n=100)
    assert not low.determined and low.dimension == 2.0
    assert ky_dimension_partial(np.array([-0.1, -0.2])).dimension == 0.0
