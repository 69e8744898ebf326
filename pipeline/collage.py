"""PIFS collage regulariser of Theorem 15: μ_reg Σ_{k, j≠k} ‖[J_x ε̂]_kj‖_F², estimated with patch-supported probes.

The off-diagonal Frobenius mass is never materialised. For a probe w supported on a set S of patches,
the VJP g = J^T w (one reverse pass, differentiable in θ through ``create_graph``) restricted to the
patches outside S has E_σ ‖P_{∉S} J^T w‖² = Σ_{k∈S, j∉S} ‖J_kj‖_F² for Rademacher signs σ on S, so
averaging over a random S with the right scale gives every off-diagonal block exactly once:

- ``scheme="partition"``: each patch joins S independently with probability 1/2; a pair (k, j≠k) has
  k ∈ S, j ∉ S with probability 1/4, hence estimate = 4 ‖P_{∉S} J^T w‖². One VJP covers all M(M-1)
  blocks (lowest variance per VJP; the default).
- ``scheme="patch"``: S = {k} for a uniform k; estimate = M ‖P_{≠k} J^T w‖² (the single-patch probe).

Both are unbiased. With B_S = J[rows in S, columns outside S] and Q = B_S B_Sᵀ, the conditional
variance over the Rademacher signs is c² · 2 Σ_{l≠l'} Q_{ll'}² (c = 4 or M), and the total variance is
E_S[c² (2 Σ_{l≠l'} Q_{ll'}² + tr(Q)²)] − (Σ_{k≠j}‖J_kj‖²)²; ``exact_moments`` evaluates it from a
dense Jacobian (the tests compare the estimators with it). ``probes`` independent probes divide it by ``probes``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

SCHEMES = ("partition", "patch")


def patch_labels(image_shape: tuple[int, int, int], patch_size: int) -> torch.Tensor:
    """Patch index k (row-major P×P tiles) of every pixel: LongTensor [C, H, W]."""
    C, H, W = (int(s) for s in image_shape)
    P = int(patch_size)
    if P <= 0 or H % P or W % P:
        raise ValueError(
            f"patch_size={patch_size} must divide the image size {H}x{W}; choose a divisor (patch.size)"
        )
    rows = torch.arange(H) // P
    cols = torch.arange(W) // P
    k = rows[:, None] * (W // P) + cols[None, :]
    return k.expand(C, H, W).clone()


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"collage scheme={scheme!r} is unknown; use one of {SCHEMES}")


def draw_probe(
    labels: torch.Tensor, batch: int, scheme: str, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(w [B,C,H,W] Rademacher on S, outside-S pixel mask [B,C,H,W] bool, scale c) for one probe per sample."""
    _check_scheme(scheme)
    M = int(labels.max()) + 1
    if scheme == "partition":
        in_s = torch.rand((batch, M), generator=generator) < 0.5
        scale = 4.0
    else:
        k = torch.randint(0, M, (batch,), generator=generator)
        in_s = torch.zeros((batch, M), dtype=torch.bool)
        in_s[torch.arange(batch), k] = True
        scale = float(M)
    pix_in_s = in_s[:, labels]  # [B, C, H, W]
    signs = torch.randint(0, 2, (batch, *labels.shape), generator=generator).to(torch.float32) * 2 - 1
    w = signs * pix_in_s
    return w, ~pix_in_s, scale


def collage_penalty(
    eps: torch.Tensor,
    x: torch.Tensor,
    patch_size: int,
    generator: torch.Generator,
    *,
    probes: int = 1,
    scheme: str = "partition",
    create_graph: bool = True,
) -> torch.Tensor:
    """Unbiased per-sample estimate [B] of Σ_{k, j≠k} ‖[J_x ε̂]_kj‖_F² at x (Theorem 15's collage term).

    ``eps`` must have been computed from ``x`` (x.requires_grad) by a per-sample network (no batch
    coupling: GroupNorm, attention within an image). With create_graph=True the result is
    differentiable w.r.t. the network parameters (double backward), so it can be trained through.
    """
    if not x.requires_grad:
        raise ValueError("collage_penalty needs eps computed from x with x.requires_grad_(True)")
    if probes < 1:
        raise ValueError(f"probes={probes} must be >= 1")
    labels = patch_labels(tuple(x.shape[1:]), patch_size)
    B = x.shape[0]
    total = torch.zeros(B, dtype=eps.dtype, device=eps.device)
    for p in range(probes):
        w, outside, scale = draw_probe(labels, B, scheme, generator)
        w, outside = w.to(device=eps.device, dtype=eps.dtype), outside.to(eps.device)
        (g,) = torch.autograd.grad(
            eps, x, grad_outputs=w, create_graph=create_graph, retain_graph=create_graph or p < probes - 1
        )
        total = total + scale * (g * outside).pow(2).flatten(1).sum(1)
    return total / probes


def offdiag_frobenius_exact(
    jac: np.ndarray | torch.Tensor, image_shape: tuple[int, int, int], patch_size: int
) -> float:
    """Σ_{k, j≠k} ‖J_kj‖_F² of a dense Jacobian J [n_out, n_in] (pixels flattened as [C, H, W])."""
    J = np.asarray(jac, dtype=np.float64)
    lab = patch_labels(image_shape, patch_size).flatten().numpy()
    off = lab[:, None] != lab[None, :]
    return float((J**2)[off].sum())


@dataclass(frozen=True)
class EstimatorMoments:
    """Mean and variance of one probe of the collage estimator, and the exact off-diagonal sum."""

    exact: float
    mean: float
    variance: float

    def std_of_mean(self, num_probes: int) -> float:
        return float(np.sqrt(self.variance / num_probes))


def exact_moments(
    jac: np.ndarray | torch.Tensor,
    image_shape: tuple[int, int, int],
    patch_size: int,
    scheme: str = "partition",
) -> EstimatorMoments:
    """Exact E and Var of one probe from a dense J (enumerates the subsets S: only for small M)."""
    _check_scheme(scheme)
    J = np.asarray(jac, dtype=np.float64)
    lab = patch_labels(image_shape, patch_size).flatten().numpy()
    M = int(lab.max()) + 1
    if scheme == "partition":
        if M > 16:
            raise ValueError(f"exact_moments enumerates 2^M subsets; M={M} is too many (use M <= 16)")
        subsets = [np.array(s, dtype=bool) for s in itertools.product([False, True], repeat=M)]
        probs = np.full(len(subsets), 2.0**-M)
        c = 4.0
    else:
        subsets = [np.arange(M) == k for k in range(M)]
        probs = np.full(M, 1.0 / M)
        c = float(M)
    m1 = m2 = 0.0
    for s, p in zip(subsets, probs, strict=True):
        rows = s[lab]
        B = J[np.ix_(rows, ~rows)]
        Q = B @ B.T
        tr = float(np.trace(Q))
        off2 = float((Q**2).sum() - (np.diag(Q) ** 2).sum())
        m1 += p * c * tr
        m2 += p * c * c * (2.0 * off2 + tr * tr)
    return EstimatorMoments(
        exact=offdiag_frobenius_exact(J, image_shape, patch_size), mean=m1, variance=m2 - m1 * m1
    )


def collage_profile(
    unet: torch.nn.Module,
    x0: torch.Tensor,
    alpha_bar: np.ndarray,
    timesteps: list[int] | tuple[int, ...],
    patch_size: int,
    *,
    probes: int = 2,
    seed: int = 0,
    batch_size: int = 64,
) -> dict[int, tuple[float, float]]:
    """Σ_{k, j≠k} ‖[J_x ε̂]_kj‖_F² / n at x_t = √ᾱ_t x_0 + √v_t ε per paper t -> {t: (mean, standard error)}.

    The regulariser's own quantity on held-out images (seeded noise and probes); ``unet`` is a diffusers
    UNet2DModel called with index t − 1.
    """
    ab = np.asarray(alpha_bar, dtype=np.float64)
    n = float(np.prod(x0.shape[1:]))

    def penalty(t: int, xb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        noise = torch.randn(xb.shape, generator=g, dtype=xb.dtype)
        xt = (float(np.sqrt(ab[t])) * xb + float(np.sqrt(1 - ab[t])) * noise).requires_grad_(True)
        idx = torch.full((xb.shape[0],), t - 1, dtype=torch.long)
        eps = unet(xt, idx, return_dict=False)[0]
        return collage_penalty(eps, xt, patch_size, g, probes=probes, create_graph=False).detach() / n

    return heldout_per_t(x0, timesteps, penalty, seed=seed, batch_size=batch_size)


def heldout_per_t(
    x0: torch.Tensor,
    timesteps: list[int] | tuple[int, ...],
    per_image: Callable[[int, torch.Tensor, torch.Generator], torch.Tensor],
    *,
    seed: int,
    batch_size: int,
) -> dict[int, tuple[float, float]]:
    """{t: (mean, standard error)} over the held-out images x0 of per_image(t, batch, generator) -> [B].

    Each t draws from its own generator seeded by (seed, t), batch after batch in image order, so a
    value depends on the seed and t alone, not on which other timesteps are evaluated.
    """
    out = {}
    for t in timesteps:
        g = torch.Generator().manual_seed(int(seed) * 100003 + int(t))
        vals = [per_image(int(t), x0[i : i + batch_size], g) for i in range(0, x0.shape[0], batch_size)]
        v = torch.cat(vals).double().numpy()
        out[int(t)] = (float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))))
    return out
