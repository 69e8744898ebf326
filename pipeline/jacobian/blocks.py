"""Patch-block estimators of JΦ_t: Rayleigh quotients (eq. 32), block norms ‖[JΦ_t]_kj‖ (eq. 15-18).

Block (k, j) = rows of patch k, columns of patch j: [JΦ_t]_kk = r_t I + b_t [Jε̂]_kk and
[JΦ_t]_kj = b_t [Jε̂]_kj for k ≠ j (eq. 15). Every function takes an operator of S stacked points with the
access patterns of `pipeline.jacobian.operators.PointsStep` (matrix-free: model products) or
`pipeline.jacobian.dense.DenseStep` (the stored Jacobian: a replay, no model product), and returns one
result per point. Costs per point, in single-vector products:

- block power iteration / Golub-Kahan-Lanczos: K steps on all M² blocks (or the M diagonal ones) at once,
  each step one batch of M² JVPs (tangent = the block's vector embedded in patch j, output read in patch
  k) and M² VJPs: 2 K M² products;
- Hutchinson Frobenius norms: one JVP with a probe embedded in patch j yields [JΦ_t]_kj z for every k, so
  a probe costs M JVPs; Hutch++ adds a sketch (M JVPs per sketch vector) and its exact part (M² VJPs per
  sketch vector);
- the exact route (pipeline.jacobian.dense): n VJPs, after which all of the above are replays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .spectral import golub_kahan, power_iteration


def block_problems(M: int, diag_only: bool, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row patch k and column patch j of every block problem: the M diagonal ones or all M² (row-major)."""
    if diag_only:
        k_of = torch.arange(M, device=device)
        return k_of, k_of
    return torch.arange(M, device=device).repeat_interleave(M), torch.arange(M, device=device).repeat(M)


def interleave(per_point: Sequence[torch.Tensor]) -> torch.Tensor:
    """S tensors [B, ...] -> [B·S, ...] in problem-major order (problem b of point s at row b·S + s)."""
    stacked = torch.stack(list(per_point), dim=1)
    return stacked.reshape(-1, *stacked.shape[2:])


def patch_rayleigh(op, v1: torch.Tensor, *, via: str = "vjp") -> np.ndarray:
    """⟨v_k, [JΦ_t]_kk v_k⟩ / ⟨v_k, v_k⟩ for every point and patch k (eq. 32): [S, M], from M products.

    ⟨v, B v⟩ = ⟨Bᵀ v, v⟩, so the VJP (cheaper, no tangent map needed) gives the same number as the
    paper's directional JVP; ``via="jvp"`` uses the JVP.
    """
    if via not in ("vjp", "jvp"):
        raise ValueError(f"via={via!r} is unknown; use 'vjp' or 'jvp'")
    M, S = op.M, op.S
    v = v1.to(device=op.device, dtype=torch.float64)
    w = v[:, None, :].expand(M, S, v.shape[1])
    Y = (op.rows(w) if via == "vjp" else op.columns(w)).double()  # [M, S, M, n_k]
    k = torch.arange(M, device=Y.device)
    own = Y[k, :, k]  # [M, S, n_k]: patch k's part of the product with v_k
    q = (own * v[:, None, :]).sum(-1) / (v * v).sum(1)[:, None]
    return q.T.cpu().numpy()


def block_krylov(op, start: torch.Tensor, iters: int, method: str, diag_only: bool):
    """Top singular value of every block of every point: K power steps or K Golub-Kahan steps.

    start: [B·S, n_k] problem-major start vectors (B = M² blocks, or M with ``diag_only``).
    Returns (value [B, S], last relative change [B, S], the problems' k and j).
    """
    k_of, j_of = block_problems(op.M, diag_only, op.device)
    matvec, rmatvec = op.block_ops(k_of, j_of)
    start = start.to(op.device, op.dtype)
    if method == "power":
        res = power_iteration(matvec, rmatvec, start, iters)
    elif method == "lanczos":
        res = golub_kahan(matvec, rmatvec, start, iters)
    else:
        raise ValueError(f"block method {method!r} is unknown; use 'power' or 'lanczos'")
    B = len(k_of)
    value = np.asarray(res.value).reshape(B, op.S)
    change = np.asarray(res.relative_change).reshape(B, op.S)
    return value, change, k_of.cpu().numpy(), j_of.cpu().numpy()


def rademacher(generators: Sequence[torch.Generator], M: int, nk: int) -> torch.Tensor:
    """One ±1 probe per column patch and point, each point's from its own generator: [M, S, n_k]."""
    z = interleave([(torch.randint(0, 2, (M, nk), generator=g) * 2 - 1) for g in generators])
    return z.reshape(M, len(generators), nk).double()


def hutchinson_frobenius(op, probes: int, generators: Sequence[torch.Generator]) -> np.ndarray:
    """‖[JΦ_t]_kj‖_F of every block and point ([S, M, M]) by Hutchinson's estimator (Hutchinson 1990):
    E‖B z‖² = ‖B‖_F² for Rademacher z, then the square root.

    One product with the probe embedded in patch j yields B_kj z for every k, so a probe costs M products.
    Accuracy: Var(‖Bz‖²) = 2(‖BᵀB‖_F² − Σ_i (BᵀB)_ii²) ≤ 2‖B‖_F⁴, so the relative standard error of the
    norm is at most √(1/(2p)) with p probes (5 % at 200), and much less for a block with a flat spectrum.
    """
    M, S, nk = op.M, op.S, op.nk
    acc = torch.zeros(S, M, M, dtype=torch.float64)
    for _ in range(probes):
        z = rademacher(generators, M, nk)
        Y = op.columns(z).double()  # [M(j), S, M(k), n_k]
        acc += (Y * Y).sum(-1).permute(1, 2, 0).cpu()  # [s, k, j]
    return (acc / probes).sqrt().numpy()


def hutchpp_frobenius(op, probes: int, sketch: int, generators: Sequence[torch.Generator]) -> np.ndarray:
    """‖[JΦ_t]_kj‖_F of every block and point ([S, M, M]) by Hutch++ (Meyer, Musco, Musco & Woodruff,
    "Hutch++: Optimal Stochastic Trace Estimation", SOSA 2021) applied to tr(B Bᵀ) = ‖B‖_F².

    Per block B = [JΦ_t]_kj: Q = orth(B G) for s Gaussian vectors G in patch j (a randomised range finder of
    B, Halko, Martinsson & Tropp 2011); then ‖B‖_F² = ‖Qᵀ B‖_F² (computed exactly, s VJPs per block) +
    ‖(I − QQᵀ) B‖_F² (Hutchinson with p probes on the deflated residual R). The residual's variance is
    2‖RᵀR‖_F²/p ≤ 2‖R‖_2²‖R‖_F²/p, and the range finder leaves ‖R‖_2² ≲ σ_{s/2}(B)² ≤ 2‖B‖_F²/s, so the
    relative error of ‖B‖_F² falls as 1/√(p s), i.e. as 1/m for a budget m split between sketch and
    probes, against Hutchinson's 1/√m. Cost per point: s·M JVPs (sketch), s·M² VJPs (exact part), p·M
    JVPs (probes). The draws follow the generators: the sketch first, then the probes.
    """
    M, S, nk = op.M, op.S, op.nk
    s = min(int(sketch), nk)
    G = torch.stack(
        [
            interleave([torch.randn(M, nk, generator=g, dtype=torch.float64) for g in generators])
            for _ in range(s)
        ]
    ).reshape(s, M, S, nk)
    Y = torch.stack([op.columns(G[i]).double() for i in range(s)])  # [s, M(j), S, M(k), n_k]
    Q = torch.linalg.qr(Y.permute(1, 2, 3, 4, 0)).Q  # [M(j), S, M(k), n_k, s]
    # exact part ‖Qᵀ B‖_F² = Σ_i ‖Bᵀ q_i‖², each block its own problem (problem-major (k, j), then point)
    k_of, j_of = block_problems(M, False, op.device)
    _, rmatvec = op.block_ops(k_of, j_of)
    Qp = Q.permute(2, 0, 1, 3, 4).reshape(M * M * S, nk, s)
    top = torch.zeros(M * M * S, dtype=torch.float64, device=Qp.device)
    for i in range(s):
        top += (rmatvec(Qp[:, :, i].to(op.dtype)).double() ** 2).sum(-1)
    top = top.reshape(M, M, S).permute(2, 0, 1).cpu()  # [s, k, j]
    rest = torch.zeros(S, M, M, dtype=torch.float64)
    for _ in range(probes):
        Yz = op.columns(rademacher(generators, M, nk)).double()  # [M(j), S, M(k), n_k]
        R = Yz - torch.einsum("jpkai,jpkbi,jpkb->jpka", Q, Q, Yz)
        rest += (R * R).sum(-1).permute(1, 2, 0).cpu()
    return (top + rest / max(probes, 1)).clamp(min=0).sqrt().numpy()
