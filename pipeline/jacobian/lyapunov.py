"""Lyapunov exponents along a DDIM trajectory (§5.1-5.3, §7.7, Table 11).

- Per-patch Rayleigh-quotient exponents Λ̂_k = (1/S) Σ_s log|⟨v_k, [JΦ_s]_kk v_k⟩| (the "signed Rayleigh
  quotient estimator" of §7.7: the per-step factor g_k,t = f_t(λ_k) − S_k,t of eq. 48 is measured as the
  Rayleigh quotient of eq. 32, and Λ_eff,k of eq. 49 is its mean log). Steps with a non-positive
  quotient (where eq. 49's log is undefined; Thm 27 assumes S_k,t < f_t(λ_k)) are counted and reported.
- Top-p spectrum of the chain product J = JΦ_{t_S} ⋯ JΦ_{t_1} by Benettin's QR re-orthonormalisation:
  Q ← qr(JΦ_s Q), ℓ_i = (1/S) Σ_s log|R_s,ii|, with the p JVPs of a step in one vmapped batch.
  This is the finite-time estimate of eq. (43) (exact when Q_0 spans the top-p singular subspace of a
  product of commuting symmetric factors, e.g. the Gaussian oracle started on Σ's eigenvectors).
- Kaplan-Yorke dimension (eq. 44) from a full spectrum or from its top p, with a flag saying whether the
  top p determine it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from .operators import ScoreLinearization, StepJacobian
from .patches import embed_patches, patch_index, take_patches

EpsAt = Callable[[int], Callable[[torch.Tensor], torch.Tensor]]


@dataclass
class PatchExponents:
    """Per-patch Rayleigh-quotient Lyapunov exponents of one or more trajectories."""

    exponents: np.ndarray  # [..., M(, q)] (1/S) Σ_s log|ρ_k,s|
    nonpositive_steps: np.ndarray  # [..., M(, q)] number of steps with ρ_k,s <= 0
    steps: int


def rayleigh_exponents(rayleigh: np.ndarray, step_axis: int = 0) -> PatchExponents:
    """Λ̂_k = mean over the step axis of log|ρ_k,s| (eq. 49 with g_k,t measured as eq. 32's quotient).

    rayleigh: e.g. [S, M] for one trajectory (step_axis=0), [N, S, M] for N trajectories (step_axis=1),
    or [S, M, q] for q directions per patch.
    """
    rq = np.asarray(rayleigh, dtype=np.float64)
    if rq.ndim < 2:
        raise ValueError(f"rayleigh must be at least [S, M] (steps, patches), got shape {rq.shape}")
    with np.errstate(divide="ignore"):
        logs = np.log(np.abs(rq))
    return PatchExponents(
        exponents=logs.mean(axis=step_axis),
        nonpositive_steps=(rq <= 0).sum(axis=step_axis),
        steps=rq.shape[step_axis],
    )


def trajectory_rayleigh(
    eps_at: EpsAt,
    xs: torch.Tensor,
    r: Sequence[float],
    b: Sequence[float],
    directions: torch.Tensor,
    patch_size: int,
    *,
    chunk_size: int | None = 64,
    progress: bool = False,
) -> np.ndarray:
    """⟨u, [JΦ_s]_kk u⟩ for every step s and every patch direction u, one vmapped VJP batch per step.

    eps_at(s) returns the noise predictor of step s (its paper timestep); xs: [S(+1), C, H, W] trajectory
    points x_{t_s} (a trailing final image is ignored); directions: [M, n_k] (v_k) or [M, q, n_k]
    (q unit directions per patch, e.g. all eigenvectors of Σ_k). Returns [S, M] or [S, M, q].
    """
    S = len(r)
    if len(b) != S or xs.shape[0] < S:
        raise ValueError(f"need S = len(r) = len(b) <= len(xs); got {len(r)}, {len(b)}, {xs.shape[0]}")
    d = torch.as_tensor(directions)
    squeeze = d.dim() == 2
    if squeeze:
        d = d[:, None, :]
    M, q, nk = d.shape
    image_shape = tuple(xs.shape[1:])
    index = patch_index(image_shape, patch_size, device=xs.device)
    if tuple(index.shape) != (M, nk):
        raise ValueError(
            f"directions must be [M, (q,) n_k] with M, n_k = {tuple(index.shape)}; got {tuple(d.shape)}"
        )
    flat = d.reshape(M * q, nk).to(xs.device, xs.dtype)
    rows = torch.arange(M, device=xs.device).repeat_interleave(q)
    T = embed_patches(flat, index, image_shape, rows)
    out = np.zeros((S, M, q))
    it = range(S)
    if progress:
        it = tqdm(it, desc="Rayleigh quotients along trajectory", leave=False)
    for s in it:
        score = ScoreLinearization(eps_at(s), xs[s], chunk_size=chunk_size)
        Y = StepJacobian(score, r[s], b[s]).rmatvec(T)
        Yk = take_patches(Y, index, rows).double()
        fd = flat.double()
        out[s] = ((Yk * fd).sum(1) / (fd * fd).sum(1)).reshape(M, q).cpu().numpy()
    return out[..., 0] if squeeze else out


@dataclass
class BenettinResult:
    """Top-p Lyapunov exponents of the chain product by QR re-orthonormalisation (Benettin et al. 1980)."""

    exponents: np.ndarray  # [p] (1/S) Σ_s log|R_s,ii|, descending order of the QR columns
    log_growth: np.ndarray  # [S, p] log|R_s,ii| per step
    steps: int
    jvps: int
    basis: torch.Tensor = field(repr=False)  # [p, C, H, W] final orthonormal vectors


def benettin_spectrum(
    eps_at: EpsAt,
    xs: torch.Tensor,
    r: Sequence[float],
    b: Sequence[float],
    p: int,
    generator: torch.Generator | None = None,
    *,
    start: torch.Tensor | None = None,
    chunk_size: int | None = 64,
    jvp_method: str = "forward",
    progress: bool = False,
) -> BenettinResult:
    """ℓ_1..ℓ_p of J = JΦ_{t_S}⋯JΦ_{t_1} along the trajectory xs (chain order, x_{t_1} = x_T first).

    Each step costs p JVPs (one vmapped batch; the default `forward` method needs no reverse graph) and a
    thin QR in float64. ``start`` [p, C, H, W] replaces the seeded random orthonormal start.
    """
    S = len(r)
    if len(b) != S or xs.shape[0] < S:
        raise ValueError(f"need S = len(r) = len(b) <= len(xs); got {len(r)}, {len(b)}, {xs.shape[0]}")
    image_shape = tuple(xs.shape[1:])
    n = int(np.prod(image_shape))
    if not 1 <= p <= n:
        raise ValueError(f"p must be in [1, n={n}], got {p}")
    if start is None:
        if generator is None:
            raise ValueError("benettin_spectrum needs a seeded generator (or an explicit start basis)")
        start = torch.randn(p, n, generator=generator, dtype=torch.float64)
    Z = torch.as_tensor(start, dtype=torch.float64).reshape(p, n).cpu()
    Q, _ = torch.linalg.qr(Z.T)  # [n, p]
    log_growth = np.zeros((S, p))
    jvps = 0
    it = range(S)
    if progress:
        it = tqdm(it, desc="Benettin QR", leave=False)
    for s in it:
        score = ScoreLinearization(
            eps_at(s), xs[s], jvp_method=jvp_method, chunk_size=chunk_size, with_vjp=jvp_method != "forward"
        )
        V = Q.T.reshape(p, *image_shape).to(xs.device, xs.dtype)
        Y = StepJacobian(score, r[s], b[s]).matvec(V).reshape(p, n).double().cpu()
        jvps += p
        Q, R = torch.linalg.qr(Y.T)
        diag = torch.diagonal(R)
        # Keep a continuous basis: flip columns so that R has a positive diagonal.
        sign = torch.where(diag < 0, -1.0, 1.0).to(Q.dtype)
        Q = Q * sign
        log_growth[s] = torch.log(diag.abs()).numpy()
    return BenettinResult(
        exponents=log_growth.mean(0),
        log_growth=log_growth,
        steps=S,
        jvps=jvps,
        basis=Q.T.reshape(p, *image_shape),
    )


@dataclass
class KYEstimate:
    """Kaplan-Yorke dimension (eq. 44) from a possibly truncated spectrum."""

    dimension: float  # d_KY, or the lower bound p when the top p do not determine it
    j_star: int
    determined: bool  # the partial sums turn negative within the given exponents (or the spectrum is full)
    n: int


def ky_dimension_partial(exponents: np.ndarray, n: int | None = None) -> KYEstimate:
    """d_KY = j* + Σ_{i<=j*} ℓ_i / |ℓ_{j*+1}| (eq. 44) from the top exponents; n = full dimension.

    Only ℓ_1..ℓ_{j*+1} enter eq. (44), so the top p determine d_KY whenever Σ_{i<=p} ℓ_i < 0. Otherwise
    d_KY >= p (returned with determined = False), or = n when the spectrum is complete.
    """
    ell = np.sort(np.asarray(exponents, dtype=np.float64).reshape(-1))[::-1]
    if ell.size == 0 or not np.all(np.isfinite(ell)):
        raise ValueError("ky_dimension_partial: need a non-empty, finite list of Lyapunov exponents")
    n = ell.size if n is None else int(n)
    csum = np.cumsum(ell)
    neg = np.nonzero(csum < 0)[0]
    if neg.size == 0:
        full = ell.size == n
        return KYEstimate(dimension=float(ell.size), j_star=int(ell.size), determined=full, n=n)
    j = int(neg[0])  # first index where the partial sum is negative: j* = j (0-based count)
    if j == 0:
        return KYEstimate(dimension=0.0, j_star=0, determined=True, n=n)
    return KYEstimate(dimension=float(j + csum[j - 1] / abs(ell[j])), j_star=j, determined=True, n=n)
