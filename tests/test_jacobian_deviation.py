"""Gaussian surrogate, exact score deviation and suppression, the eq. (65) proxy, attention entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.jacobian import MeasureConfig, PointsStep, ScoreLinearization, StepJacobian, patch_index
from pipeline.jacobian.attention import attention_entropy, patch_attention
from pipeline.jacobian.deviation import (
    GaussianSurrogate,
    exact_suppression,
    score_deviation,
    score_deviation_proxy,
)
from tests.test_jacobian import (
    SHAPE,
    P,
    alpha_bar_linear,
    block_diagonal_gaussian,
    f_t,
    gaussian_eps,
    measure_one,
    step_coeffs,
)


@pytest.fixture(scope="module")
def gaussians():
    rng = np.random.default_rng(5)
    n = int(np.prod(SHAPE))
    A = rng.standard_normal((n, n)) / math.sqrt(n)
    cov = A @ A.T + 0.05 * np.eye(n)  # full Σ₀
    mean = rng.uniform(-0.4, 0.4, n)
    ab = alpha_bar_linear()
    a, p = ab[300], ab[250]
    r, b = step_coeffs(a, p)
    v1 = np.linalg.qr(rng.standard_normal((48, 4)))[0].T  # 4 unit vectors of length 48
    return dict(rng=rng, n=n, cov=cov, mean=mean, a=a, p=p, r=r, b=b, v1=v1)


def test_surrogate_is_the_gaussian_noise_predictor(gaussians):
    g = gaussians
    sur = GaussianSurrogate(g["mean"], g["cov"], SHAPE)
    x = torch.as_tensor(g["rng"].standard_normal((2, *SHAPE)))
    for a in (0.01, g["a"], 0.99):
        ref = gaussian_eps(g["mean"], g["cov"], a)
        torch.testing.assert_close(sur.eps(x, a), torch.stack([ref(x[0]), ref(x[1])]), rtol=1e-10, atol=1e-12)
    # its DDIM-step Rayleigh quotients match a matrix-free measurement of the same operator
    score = ScoreLinearization(gaussian_eps(g["mean"], g["cov"], g["a"]), x[:1], stacked=True)
    from pipeline.jacobian import patch_rayleigh

    ref = patch_rayleigh(
        PointsStep(StepJacobian(score, g["r"], g["b"]), patch_index(SHAPE, P)), torch.as_tensor(g["v1"])
    )[0]
    np.testing.assert_allclose(sur.rayleigh(g["a"], g["r"], g["b"], g["v1"], P), ref, rtol=1e-10)


def test_surrogate_rayleigh_is_f_of_lambda_for_block_diagonal_covariance(gaussians):
    g = gaussians
    lam = np.array([2.0, 1.0, 0.5, 0.25])
    cov, mus, Qs = block_diagonal_gaussian(np.random.default_rng(1), lam, 48)
    sur = GaussianSurrogate(np.zeros(g["n"]), cov, SHAPE)
    rq = sur.rayleigh(g["a"], g["r"], g["b"], Qs[:, :, 0], P)
    np.testing.assert_allclose(rq, f_t(lam, g["a"], g["p"]), rtol=1e-10)


def test_exact_deviation_and_suppression(gaussians):
    g = gaussians
    sur = GaussianSurrogate(g["mean"], g["cov"], SHAPE)
    x = torch.as_tensor(g["rng"].standard_normal(SHAPE))
    # the "trained" model is another Gaussian: Σ' = Σ₀ shrunk, so its Jacobian differs in every block
    cov2 = 0.6 * g["cov"] + 0.1 * np.eye(g["n"])
    model = gaussian_eps(g["mean"], cov2, g["a"])
    dev = score_deviation(model(x), x, sur, g["a"])
    assert float(dev) == pytest.approx(
        float(torch.linalg.vector_norm(model(x) - sur.eps(x, g["a"]))), rel=1e-12
    )
    assert float(score_deviation(sur.eps(x, g["a"]), x, sur, g["a"])) < 1e-12
    m = measure_one(
        model, x, g["r"], g["b"], P, v1=g["v1"], config=MeasureConfig(blocks="off", power_iters=2)
    )
    S = exact_suppression(m.rayleigh, sur.rayleigh(g["a"], g["r"], g["b"], g["v1"], P))
    # definition (30): |b| ⟨v_k, [∇Δ]_kk v_k⟩ with ∇Δ = Jε̂ − Jε^N, from dense closed forms
    n, v = g["n"], 1 - g["a"]
    JD = math.sqrt(v) * (
        np.linalg.inv(g["a"] * cov2 + v * np.eye(n)) - np.linalg.inv(g["a"] * g["cov"] + v * np.eye(n))
    )
    idx = patch_index(SHAPE, P).numpy()
    ref = [abs(g["b"]) * g["v1"][k] @ JD[np.ix_(idx[k], idx[k])] @ g["v1"][k] for k in range(4)]
    np.testing.assert_allclose(S, ref, rtol=1e-9, atol=1e-12)
    assert np.max(np.abs(S)) > 1e-4


def test_paired_difference_proxy_on_a_linear_predictor():
    # ε̂(x) = c x  =>  ε̂(x_real) − ε̂(x_noise) = c √ᾱ x₀ exactly, whatever the noise draw
    c, a = 0.7, 0.3
    x0 = torch.randn(5, *SHAPE, generator=torch.Generator().manual_seed(2))
    out = score_deviation_proxy(
        lambda x, t: c * x, x0, 600, a, torch.Generator().manual_seed(0), batch_size=2
    )
    expected = c * math.sqrt(a) * torch.linalg.vector_norm(x0.reshape(5, -1), dim=1).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    calls = []
    score_deviation_proxy(lambda x, t: calls.append(t) or x, x0, 600, a, torch.Generator().manual_seed(0))
    assert calls == [600]


def test_attention_entropy_and_patch_attention():
    L = 16  # a 4x4 token grid over an 8x8 image: stride 2
    uniform = torch.full((1, 2, L, L), 1.0 / L)
    eye = torch.eye(L).expand(1, 2, L, L)
    ent = attention_entropy({"a": uniform, "b": eye, "c": torch.full((1, 1, 4, 4), 0.25)})
    assert ent.per_layer["a"] == pytest.approx(math.log(16))
    assert ent.per_layer["b"] == 0.0
    assert ent.max_entropy["c"] == pytest.approx(math.log(4))
    assert ent.mean == pytest.approx((math.log(16) + math.log(4)) / 3)
    assert ent.token_weighted == pytest.approx((16 * math.log(16) + 4 * math.log(4)) / 36)
    A = patch_attention(uniform, (8, 8), 4)  # 2x2 patches, 4 tokens each
    torch.testing.assert_close(A, torch.full((1, 4, 4), 0.25, dtype=torch.float64))
    torch.testing.assert_close(patch_attention(eye, (8, 8), 4), torch.eye(4, dtype=torch.float64)[None])
    with pytest.raises(ValueError, match="straddle"):
        patch_attention(torch.full((1, 1, 4, 4), 0.25), (8, 8), 2)
