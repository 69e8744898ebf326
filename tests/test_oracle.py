"""The Gaussian oracle is the exact ε* of N(μ, Σ) (paper §2.1: ε* = −√v_t ∇log p_t; Theorem 17's setting)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.geometry import (
    expansion_function,
    full_chain,
    linear_schedule,
    step_coefficients,
    strided_chain,
)
from pipeline.models import GaussianOracle, ModelError, patch_permutation
from pipeline.sampler import ddim_sample, noise_batch

SCHED = linear_schedule(1000)
AB = SCHED.alpha_bar


def _gaussian(n: int, seed: int, lam_lo: float = 0.05, lam_hi: float = 1.5):
    """Random μ and Σ = Q diag(λ) Qᵀ with known spectrum in [lam_lo, lam_hi]."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    lam = np.geomspace(lam_lo, lam_hi, n)
    return 0.3 * rng.normal(size=n), (q * lam) @ q.T


def _block_mask(shape, P):
    """mask[i, j] = pixels i and j lie in the same P×P tile (computed pixel by pixel, no permutation)."""
    C, H, W = shape
    tile = np.array([(y // P) * (W // P) + (x // P) for c in range(C) for y in range(H) for x in range(W)])
    return tile[:, None] == tile[None, :]


def _autograd_eps(x, mu, cov, t):
    """−√v_t ∇_x log N(x; √ᾱ_t μ, ᾱ_t Σ + v_t I) by torch.autograd (Cholesky, no eigendecomposition)."""
    a = float(AB[t])
    v = 1.0 - a
    cov_t = torch.as_tensor(a * cov + v * np.eye(len(mu)))
    L = torch.linalg.cholesky(cov_t)
    xf = x.reshape(x.shape[0], -1).clone().requires_grad_(True)
    d = xf - math.sqrt(a) * torch.as_tensor(mu)
    z = torch.linalg.solve_triangular(L, d.T, upper=False)
    logp = -0.5 * (z**2).sum() - torch.log(torch.diagonal(L)).sum() * x.shape[0]
    (g,) = torch.autograd.grad(logp, xf)
    return (-math.sqrt(v) * g).reshape(x.shape)


@pytest.mark.parametrize("t", [1, 2, 20, 500, 999, 1000])
def test_full_oracle_equals_minus_sqrt_v_score_by_autograd(t):
    shape = (2, 4, 4)
    mu, cov = _gaussian(32, seed=1)
    oracle = GaussianOracle(mu, cov, AB, shape, dtype=torch.float64)
    x = torch.randn(5, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(t))
    ref = _autograd_eps(x, mu, cov, t)
    assert torch.allclose(oracle(x, t), ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("t", [1, 300, 1000])
def test_block_diagonal_oracle_is_the_score_of_the_patch_block_gaussian(t):
    shape, P = (2, 4, 4), 2
    mu, cov = _gaussian(32, seed=2)
    cov_blocks = np.where(_block_mask(shape, P), cov, 0.0)
    oracle = GaussianOracle.block_diagonal(mu, cov, P, AB, shape, dtype=torch.float64)
    assert oracle.structure == "block_diagonal"
    assert np.abs(oracle.covariance() - cov_blocks).max() < 1e-12
    assert np.abs(oracle.mean() - mu.reshape(shape)).max() == 0.0
    x = torch.randn(4, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(oracle(x, t), _autograd_eps(x, mu, cov_blocks, t), rtol=0, atol=1e-10)
    # the per-patch eigenvalues are those of Σ's diagonal tiles (Theorem 17's λ_k = eigvals[:, 0])
    perm = patch_permutation(shape, P).reshape(4, -1)
    for k, idx in enumerate(perm):
        lam = np.linalg.eigvalsh(cov[np.ix_(idx, idx)])[::-1]
        assert np.allclose(oracle.eigvals[k], lam, rtol=1e-12, atol=1e-14)


def test_from_patch_blocks_equals_block_diagonal_and_accepts_patch_means():
    shape, P = (3, 4, 4), 2
    mu, cov = _gaussian(48, seed=3)
    perm = patch_permutation(shape, P).reshape(4, -1)
    blocks = np.stack([cov[np.ix_(i, i)] for i in perm])
    a = GaussianOracle.block_diagonal(mu, cov, P, AB, shape)
    b = GaussianOracle.from_patch_blocks(mu[perm], blocks, P, AB, shape)
    x = torch.randn(3, *shape, dtype=torch.float64)
    assert torch.equal(a(x, 400), b(x, 400))


def test_patch_permutation_is_the_project_patch_order():
    shape, P = (3, 8, 8), 4
    x = np.arange(np.prod(shape)).reshape(shape)
    perm = patch_permutation(shape, P).reshape(4, 3 * P * P)
    # patch k = 1 is the top-right tile; its vector is (C, P, P) flattened channel-major.
    assert np.array_equal(perm[1], x[:, 0:4, 4:8].reshape(-1))
    assert np.array_equal(perm[2], x[:, 4:8, 0:4].reshape(-1))
    patches = pytest.importorskip("pipeline.patches")
    got = patches.extract_patches(x[None].astype(np.float64), P)[0]
    assert np.array_equal(got, x.reshape(-1)[perm])


def test_float32_oracle_matches_float64():
    shape = (1, 4, 4)
    mu, cov = _gaussian(16, seed=4)
    o64 = GaussianOracle(mu, cov, AB, shape, dtype="float64")
    o32 = GaussianOracle(mu, cov, AB, shape, dtype="float32")
    x = torch.randn(6, *shape, dtype=torch.float64)
    for t in (1, 500, 1000):
        e32 = o32(x.float(), t)
        assert e32.dtype == torch.float32
        assert torch.allclose(e32.double(), o64(x, t), rtol=1e-5, atol=1e-5)


def test_jvp_is_the_constant_score_jacobian_and_phi_has_eigenvalues_f_t():
    """J_x ε* = √v (ᾱΣ + vI)⁻¹ for every x, so JΦ_t = rI + bJ has eigenvalues f_t(μ_i) (eq. 26)."""
    shape = (2, 2, 2)
    mu, cov = _gaussian(8, seed=5)
    oracle = GaussianOracle(mu, cov, AB, shape)
    chain = strided_chain(SCHED, 50, "trailing")
    coef = step_coefficients(chain)
    x, v = torch.randn(2, 1, *shape, dtype=torch.float64)
    for s in (0, 25, 49):
        t = int(chain.timesteps[s])
        _, jv = torch.func.jvp(lambda z, t=t: oracle(z, t), (x,), (v,))
        J = oracle.score_jacobian(t)
        assert np.allclose(jv.reshape(-1).numpy(), J @ v.reshape(-1).numpy(), rtol=0, atol=1e-12)
        jphi = coef.r[s] * np.eye(8) + coef.b[s] * J
        got = np.sort(np.linalg.eigvalsh(0.5 * (jphi + jphi.T)))
        want = np.sort(expansion_function(chain, np.linalg.eigvalsh(cov))[s])
        assert np.allclose(got, want, rtol=1e-10, atol=1e-12)


def _ddim_law(oracle: GaussianOracle, chain):
    """Exact law of x_0 under the DDIM chain driven by ε* from x_T ~ N(0, I).

    In Σ's eigenbasis, y = Uᵀ(x − √ᾱ μ) obeys y_prev = f_t(λ) y per step (eq. 26 with the step's
    ᾱ_t, ᾱ_prev), so with F = Π_s f_{t_s}(λ) and a final target ᾱ = 1:
    x_0 = μ + U diag(F) Uᵀ (x_T − √ᾱ_T μ)  =>  mean μ − √ᾱ_T U F Uᵀ μ, cov U diag(F²) Uᵀ.
    """
    lam, U = oracle.eigvals[0], oracle.eigvecs[0]
    mu = oracle.mean().reshape(-1)
    F = np.prod(expansion_function(chain, lam), axis=0)
    aT = chain.alpha_bar_t[0]
    mean = mu - np.sqrt(aT) * (U * F) @ (U.T @ mu)
    return mean, (U * F**2) @ U.T


def _whitened_errors(samples: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> tuple[float, float]:
    """(N ‖L(m̂ − m)‖², ‖L Ŝ Lᵀ − I‖_F²) with L = cov^{-1/2}; see test docstring for their laws."""
    N = samples.shape[0]
    lam, U = np.linalg.eigh(cov)
    L = (U / np.sqrt(lam)) @ U.T
    m_hat = samples.mean(0)
    S_hat = np.cov(samples, rowvar=False)
    d = L @ (m_hat - mean)
    W = L @ S_hat @ L.T
    return float(N * d @ d), float(np.sum((W - np.eye(len(mean))) ** 2))


def _sample_final(oracle, chain, seeds, chunk=2000):
    out = []
    for i in range(0, len(seeds), chunk):
        x_T = noise_batch(seeds[i : i + chunk], oracle.image_shape, torch.float64)
        out.append(ddim_sample(oracle, chain, x_T, progress=False).x[-1].reshape(len(x_T), -1).numpy())
    return np.concatenate(out)


def test_ddim_samples_from_the_oracle_have_mean_and_covariance_of_the_gaussian():
    """N DDIM samples of the stride-1 chain vs (μ, Σ), within sampling error.

    Tolerance derivation. x_0 is an affine map of x_T ~ N(0, I), so the samples are exactly Gaussian
    with some (m, C). Whitening with L = C^{-1/2}: N‖L(m̂ − m)‖² ~ χ²_n (mean n, sd √(2n)); the sample
    covariance gives W = L Ŝ Lᵀ ≈ I + Wishart noise with Var W_ii = 2/N, Var W_ij = 1/N, so
    ‖W − I‖_F² has mean n(n+1)/N and sd 2√(n(n+1))/N. We accept 6 sd above the mean (the seeds are
    fixed, so the test is deterministic; 6 sd keeps it far from the edge for any seed choice).
    DDIM with finitely many steps does not sample (μ, Σ) exactly: the exact law (m, C) of x_0 follows
    from f_t (see _ddim_law); for the stride-1 chain its distance to (μ, Σ) is a small fraction of the
    sampling error at this N (asserted), and it is added to the tolerance. The 50-step chain's bias is
    large (F²/λ − 1 ≈ −7 % at λ = 1), so its samples must match (m, C) and must NOT match (μ, Σ):
    this shows the test can tell the two apart.
    """
    shape = (1, 4, 4)
    n = 16
    N = 6000
    mu, cov = _gaussian(n, seed=6, lam_lo=0.1, lam_hi=1.5)
    oracle = GaussianOracle(mu, cov, AB, shape, dtype=torch.float64)
    seeds = list(range(N))
    mean_tol = n + 6 * math.sqrt(2 * n)
    cov_mean, cov_sd = n * (n + 1) / N, 2 * math.sqrt(n * (n + 1)) / N

    full = full_chain(SCHED)
    m_full, C_full = _ddim_law(oracle, full)
    lamS, US = np.linalg.eigh(cov)
    LS = (US / np.sqrt(lamS)) @ US.T
    bias_F = float(np.linalg.norm(LS @ C_full @ LS.T - np.eye(n)))
    bias_mean = float(N * np.sum((LS @ (m_full - mu)) ** 2))
    assert bias_F < 0.5 * math.sqrt(cov_mean)  # the DDIM bias is below the sampling error at this N
    samples = _sample_final(oracle, full, seeds)
    t_mean, t_cov = _whitened_errors(samples, mu, cov)
    assert t_mean <= (math.sqrt(mean_tol) + math.sqrt(bias_mean)) ** 2
    assert t_cov <= (math.sqrt(cov_mean + 6 * cov_sd) + bias_F) ** 2

    ch50 = strided_chain(SCHED, 50, "trailing")
    m50, C50 = _ddim_law(oracle, ch50)
    s50 = _sample_final(oracle, ch50, seeds)
    t_mean, t_cov = _whitened_errors(s50, m50, C50)
    assert t_mean <= mean_tol and t_cov <= cov_mean + 6 * cov_sd
    assert _whitened_errors(s50, mu, cov)[1] > cov_mean + 6 * cov_sd


def test_bad_inputs_are_refused_with_the_fix():
    shape = (1, 4, 4)
    mu, cov = _gaussian(16, seed=8)
    with pytest.raises(ModelError, match="positive semi-definite"):
        GaussianOracle(mu, cov - 2.0 * np.eye(16), AB, shape)
    with pytest.raises(ModelError, match="symmetric"):
        GaussianOracle(mu, cov + np.triu(np.ones((16, 16)), 1), AB, shape)
    with pytest.raises(ModelError, match="n = C·H·W = 16"):
        GaussianOracle(mu[:8], cov, AB, shape)
    with pytest.raises(ModelError, match="alpha_bar\\[0\\] must be 1"):
        GaussianOracle(mu, cov, AB[1:], shape)
    with pytest.raises(ModelError, match="must divide"):
        GaussianOracle.block_diagonal(mu, cov, 3, AB, shape)
    with pytest.raises(ModelError, match="\\[M, n_k, n_k\\]"):
        GaussianOracle.from_patch_blocks(mu, np.zeros((4, 3, 3)), 2, AB, shape)
    with pytest.raises(ModelError, match="float32 or float64"):
        GaussianOracle(mu, cov, AB, shape, dtype="float16")
    oracle = GaussianOracle(mu, cov, AB, shape)
    x = torch.zeros(2, *shape, dtype=torch.float64)
    for t in (0, 1001):
        with pytest.raises(ModelError, match="outside 1..T=1000"):
            oracle(x, t)
    with pytest.raises(ModelError, match="expects x of shape"):
        oracle(torch.zeros(2, 1, 4, 5), 10)
