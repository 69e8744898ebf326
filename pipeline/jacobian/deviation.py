"""Score deviation from the Gaussian surrogate (§4.1.1, §7.6, Table 10).

- `GaussianSurrogate`: ε^N(x, t) = √v_t (ᾱ_tΣ₀ + v_tI)^{-1}(x − √ᾱ_t μ₀), the exact noise predictor of
  N(μ₀, Σ₀) built from the covariance stage's full Σ₀ (one eigendecomposition, reused at every t), and
  the Rayleigh quotients ⟨v_k, [JΦ_t^N]_kk v_k⟩ of its DDIM step in closed form. The paper writes the
  surrogate as N(0, Σ₀); we centre it on the data mean μ₀ (pass zeros for the paper's literal form).
- Exact deviation Δ_t = ε̂ − ε^N (eq. 28) at trajectory points (no model call: the trajectory stores ε̂)
  and the exact directional suppression |b_t|⟨v_k, [∇Δ_t]_kk v_k⟩ (eq. 30) = ρ_k^N − ρ_k, where ρ_k and
  ρ_k^N are the Rayleigh quotients of JΦ_t and JΦ_t^N. With block-diagonal Σ₀ and v_k an eigenvector
  of Σ_k, ρ_k^N = f_t(λ_k) and this equals the f_t(λ_k) − ρ_k of eq. 32 the engine measures.
- The paired-difference proxy of eq. (65): ε̂(√ᾱ x₀ + √v ε) − ε̂(√v ε), same ε.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pipeline.covariance import read_gaussian_fit
from pipeline.outputs import CovarianceFolder

from .patches import patch_index
from .run_settings import ProxySettings


class GaussianSurrogate:
    """Exact ε of N(mean, cov) at any ᾱ_t (eq. 28's ε^N), from one eigendecomposition of cov [n, n]."""

    def __init__(self, mean: np.ndarray, cov: np.ndarray, image_shape: tuple[int, int, int]):
        cov = np.asarray(cov, dtype=np.float64)
        n = int(np.prod(image_shape))
        if cov.shape != (n, n):
            raise ValueError(
                f"the surrogate needs the full covariance Σ₀ [{n}, {n}] in (C,H,W) order, got {cov.shape}; "
                "run the covariance stage with covariance.full_cov=true"
            )
        mean = np.zeros(n) if mean is None else np.asarray(mean, dtype=np.float64).reshape(-1)
        if mean.shape != (n,):
            raise ValueError(f"mean must have n = {n} entries, got {mean.shape}")
        evals, evecs = np.linalg.eigh(0.5 * (cov + cov.T))
        self.eigvals = np.clip(evals, 0.0, None)  # Σ₀ is PSD; round-off negatives are zero variance
        self.eigvecs = torch.as_tensor(evecs)
        self.mean = torch.as_tensor(mean)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.n = n

    def eps(self, x: torch.Tensor, alpha_bar: float) -> torch.Tensor:
        """ε^N(x) for x [..., C, H, W] (float64 result on x's device)."""
        a, v = float(alpha_bar), 1.0 - float(alpha_bar)
        U = self.eigvecs.to(x.device)
        flat = x.reshape(-1, self.n).double() - math.sqrt(a) * self.mean.to(x.device)
        scale = torch.as_tensor(math.sqrt(v) / (a * self.eigvals + v), device=x.device)
        out = ((flat @ U) * scale) @ U.T
        return out.reshape(x.shape)

    def rayleigh(self, alpha_bar: float, r: float, b: float, v1: np.ndarray, patch_size: int) -> np.ndarray:
        """⟨v_k, [JΦ_t^N]_kk v_k⟩ = r + b √v Σ_i (U^T E_k v_k)_i² / (ᾱμ_i + v), per patch k ([M])."""
        a, v = float(alpha_bar), 1.0 - float(alpha_bar)
        idx = patch_index(self.image_shape, patch_size).numpy()
        v1 = np.asarray(v1, dtype=np.float64)
        U = self.eigvecs.numpy()
        out = np.zeros(idx.shape[0])
        for k in range(idx.shape[0]):
            w = U[idx[k]].T @ v1[k]  # coordinates of E_k v_k in Σ₀'s eigenbasis
            out[k] = r + b * math.sqrt(v) * np.sum(w * w / (a * self.eigvals + v)) / np.dot(v1[k], v1[k])
        return out


def score_deviation(
    eps_hat: torch.Tensor, x: torch.Tensor, surrogate: GaussianSurrogate, alpha_bar: float
) -> np.ndarray:
    """‖Δ_t(x)‖₂ = ‖ε̂(x, t) − ε^N(x, t)‖₂ (eq. 28) for x, eps_hat [..., C, H, W]; returns [...]."""
    d = eps_hat.double() - surrogate.eps(x, alpha_bar)
    return torch.linalg.vector_norm(d.reshape(*x.shape[:-3], -1), dim=-1).cpu().numpy()


def exact_suppression(rayleigh_hat: np.ndarray, rayleigh_surrogate: np.ndarray) -> np.ndarray:
    """|b_t|⟨v_k, [∇Δ_t]_kk v_k⟩ (eq. 30 with the true surrogate) = ρ_k^N − ρ_k."""
    return np.asarray(rayleigh_surrogate, dtype=np.float64) - np.asarray(rayleigh_hat, dtype=np.float64)


def score_deviation_proxy(
    predict: Callable[[torch.Tensor, int], torch.Tensor],
    x0: torch.Tensor,
    t: int,
    alpha_bar_t: float,
    generator: torch.Generator,
    *,
    batch_size: int = 32,
) -> np.ndarray:
    """‖ε̂(x_real, t) − ε̂(x_noise, t)‖₂ per image (eq. 65): x_real = √ᾱ x₀ + √v ε, x_noise = √v ε.

    predict(x [B,C,H,W], t) is the noise predictor (paper timestep t); x0: [N, C, H, W] real images in
    [-1, 1]; ε is drawn from ``generator`` on the CPU (image by image in order, so results do not depend
    on batch_size).
    """
    a = float(alpha_bar_t)
    sa, sv = math.sqrt(a), math.sqrt(1.0 - a)
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device, x0.dtype)
    out = []
    with torch.no_grad():
        for i in range(0, x0.shape[0], batch_size):
            e = noise[i : i + batch_size]
            xr = sa * x0[i : i + batch_size] + sv * e
            xn = sv * e
            d = predict(torch.cat([xr, xn]), t).double()
            diff = d[: len(e)] - d[len(e) :]
            out.append(torch.linalg.vector_norm(diff.reshape(len(e), -1), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def measure_proxy(model, alpha_bar: np.ndarray, x0, timesteps, seed: int, surrogate=None) -> list[dict]:
    """Table 10: the eq. 65 paired-difference proxy E‖ε̂(x_t^real) − ε̂(x_t^noise)‖ over real images, and,
    where the Gaussian surrogate exists, the exact ‖Δ_t‖ = ‖ε̂ − ε^N‖ (eq. 28) at the same x_t^real."""
    x0 = torch.as_tensor(x0, dtype=model.dtype, device=model.device)
    rows = []
    for t in timesteps:
        t = int(t)
        a = float(alpha_bar[t])
        gen = torch.Generator().manual_seed(int(seed) * 100003 + t)
        proxy = score_deviation_proxy(model, x0, t, a, gen)
        row = {
            "t": t,
            "sqrt_alpha_bar": math.sqrt(a),
            "proxy": float(proxy.mean()),
            "proxy_std": float(proxy.std(ddof=1)) if len(proxy) > 1 else math.nan,
            "exact_deviation": math.nan,
            "exact_deviation_std": math.nan,
            "num_images": len(proxy),
        }
        if surrogate is not None:
            gen = torch.Generator().manual_seed(int(seed) * 100003 + t)  # the same ε as the proxy's x_real
            eps = torch.randn(x0.shape, generator=gen, dtype=torch.float32).to(x0.device, x0.dtype)
            xr = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
            with torch.no_grad():
                dev = np.concatenate(
                    [
                        score_deviation(model(xr[i : i + 64], t), xr[i : i + 64], surrogate, a)
                        for i in range(0, len(xr), 64)
                    ]
                )
            row["exact_deviation"] = float(dev.mean())
            row["exact_deviation_std"] = float(dev.std(ddof=1)) if len(dev) > 1 else math.nan
        rows.append(row)
    return rows


def proxy_table(model, source, covariance_dir: Path, proxy: ProxySettings) -> list[dict]:
    """Table 10's rows on the first ``proxy.images`` images of ``source`` at ``proxy.timesteps`` (those on
    the model's schedule), with the exact ‖Δ_t‖ where the covariance stage fitted Σ₀."""
    n = proxy.images
    x0 = np.concatenate(list(source.iter_chunks(n)))[:n]
    surrogate = None
    if CovarianceFolder(covariance_dir).has_gaussian_fit():
        fit = read_gaussian_fit(covariance_dir)
        surrogate = GaussianSurrogate(fit.mean, fit.cov, model.image_shape)
    T = len(model.alpha_bar) - 1
    ts = [int(t) for t in proxy.timesteps if 1 <= int(t) <= T]
    return measure_proxy(model, model.alpha_bar, x0, ts, proxy.seed, surrogate)
