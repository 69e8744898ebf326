"""Matrix-free Jacobian operators of ε̂(·, t) and of the DDIM step, JΦ_t = r_t I + b_t Jε̂ (eq. 7).

`ScoreLinearization` evaluates ε̂ once at a point and keeps what is needed to apply Jε̂ and Jε̂ᵀ
to many vectors without re-running the primal: the `torch.func.vjp` closure (reused for every
VJP) and one of three tangent maps:

- ``linearize``: `torch.func.linearize` traces the JVP graph once (on CPU ~100-200 forward
  passes for the CIFAR-10 UNet), after which a JVP costs ~1 forward pass (~0.75 vmapped).
  Pays off only for hundreds of JVPs at the same point (block power iteration).
- ``double_vjp``: J u is the VJP of the (linear) map w ↦ Jᵀw, so differentiating the reused
  VJP closure once more gives JVPs at ~1.6 forward passes with no trace; best for tens of JVPs
  (global power iteration, Lanczos).
- ``forward``: plain `torch.func.jvp` per call (primal recomputed); the reference.

Every map accepts one vector [C,H,W] or a batch [B,C,H,W]; batches go through `torch.func.vmap`
in chunks of ``chunk_size`` to bound memory.

``stacked=True`` linearises S points at once: x is [S,C,H,W], eps_fn is the model's own batched call,
and a "vector" is [S,C,H,W] (one vector per point; the Jacobian is block-diagonal over points), so
the S points ride the model's batch dimension and vmap adds the vectors on top (pipeline.jacobian.points).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import linearize, vjp, vmap

from .patches import embed_patches, take_patches

JVP_METHODS = ("linearize", "double_vjp", "forward")
EpsFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class MatvecCounter:
    """Number of single-vector Jε̂ (jvp) and Jε̂ᵀ (vjp) applications, and primal evaluations."""

    jvp: int = 0
    vjp: int = 0
    primal: int = 0

    @property
    def total(self) -> int:
        return self.jvp + self.vjp


class ScoreLinearization:
    """ε̂(·, t) linearised at x: ε̂(x) plus u ↦ Jε̂ u and w ↦ Jε̂ᵀ w (the score part of eq. 7)."""

    def __init__(
        self,
        eps_fn: EpsFn,
        x: torch.Tensor,
        *,
        jvp_method: str = "double_vjp",
        chunk_size: int | None = 64,
        with_vjp: bool = True,
        stacked: bool = False,
    ):
        if jvp_method not in JVP_METHODS:
            raise ValueError(f"jvp_method={jvp_method!r} is unknown; use one of {JVP_METHODS}")
        if stacked and x.dim() != 4:
            raise ValueError(f"stacked=True needs points [S,C,H,W], got shape {tuple(x.shape)}")
        if not stacked and x.dim() != 3:
            raise ValueError(
                f"x must be one image [C,H,W], got shape {tuple(x.shape)}; "
                "for several points use stacked=True with the model's batched call"
            )
        self.eps_fn = eps_fn
        self.x = x.detach()
        self.image_shape = tuple(self.x.shape)
        self.jvp_method = jvp_method
        self.chunk_size = chunk_size
        self.counter = MatvecCounter()
        if not with_vjp and jvp_method != "forward":
            raise ValueError(
                f"with_vjp=False only works with jvp_method='forward' ({jvp_method!r} needs the vjp closure)"
            )
        if with_vjp:
            eps, self._vjp_closure = vjp(eps_fn, self.x)
        else:  # JVP-only use (Benettin QR): no reverse-mode graph is kept
            with torch.no_grad():
                eps = eps_fn(self.x)
            self._vjp_closure = None
        self.counter.primal += 1
        if tuple(eps.shape) != self.image_shape:
            raise ValueError(
                f"eps_fn must map {'[S,C,H,W] -> [S,C,H,W]' if stacked else '[C,H,W] -> [C,H,W]'}; "
                f"got {tuple(eps.shape)} for input {self.image_shape}"
            )
        self.eps = eps.detach()
        self._vjp_single = lambda w: self._vjp_closure(w)[0]
        self._jvp_map = None  # built at the first JVP: a measurement that needs none never pays for it

    def _tangent_map(self):
        if self.jvp_method == "linearize":
            _, jvp_fn = linearize(self.eps_fn, self.x)
            self.counter.primal += 1
            return jvp_fn
        if self.jvp_method == "double_vjp":
            # w ↦ Jᵀw is linear, so its VJP at any w (zero here) is u ↦ J u.
            _, jvp_closure = vjp(self._vjp_single, torch.zeros_like(self.eps))
            return lambda u: jvp_closure(u)[0]
        x0, eps_fn = self.x, self.eps_fn
        return lambda u: torch.func.jvp(eps_fn, (x0,), (u,))[1]

    def _apply(self, fn, v: torch.Tensor) -> torch.Tensor:
        if tuple(v.shape) == self.image_shape:
            return fn(v)
        if tuple(v.shape[1:]) != self.image_shape or v.dim() != len(self.image_shape) + 1:
            raise ValueError(
                f"vectors must be {list(self.image_shape)} or [B, *{list(self.image_shape)}], "
                f"got {tuple(v.shape)}"
            )
        if v.shape[0] == 0:
            return v.clone()
        if v.shape[0] == 1:
            return fn(v[0])[None]
        return vmap(fn, chunk_size=self.chunk_size)(v)

    def _count(self, v: torch.Tensor) -> int:
        return 1 if v.dim() == len(self.image_shape) else int(v.shape[0])

    def jvp(self, u: torch.Tensor) -> torch.Tensor:
        """Jε̂ u for one tangent [C,H,W] or a batch [B,C,H,W]."""
        self.counter.jvp += self._count(u)
        if self._jvp_map is None:  # outside any vmap: the trace must see the real point
            self._jvp_map = self._tangent_map()
        return self._apply(self._jvp_map, u.to(self.x.dtype))

    def vjp(self, w: torch.Tensor) -> torch.Tensor:
        """Jε̂ᵀ w for one cotangent [C,H,W] or a batch [B,C,H,W]."""
        if self._vjp_closure is None:
            raise RuntimeError(
                "this linearisation was built with with_vjp=False; build it with with_vjp=True"
            )
        self.counter.vjp += self._count(w)
        return self._apply(self._vjp_single, w.to(self.x.dtype))


class StepJacobian:
    """JΦ_t = r_t I + b_t Jε̂ (eq. 7), applied to vectors without ever forming the n x n matrix."""

    def __init__(self, score: ScoreLinearization, r: float, b: float):
        self.score = score
        self.r = float(r)
        self.b = float(b)
        self.image_shape = score.image_shape

    @property
    def n(self) -> int:
        """Pixels of one point (of each point when stacked)."""
        c, h, w = self.image_shape[-3:]
        return c * h * w

    def matvec(self, u: torch.Tensor) -> torch.Tensor:
        """JΦ_t u."""
        return self.r * u + self.b * self.score.jvp(u)

    def rmatvec(self, w: torch.Tensor) -> torch.Tensor:
        """JΦ_tᵀ w."""
        return self.r * w + self.b * self.score.vjp(w)

    def gram(self, u: torch.Tensor) -> torch.Tensor:
        """JΦ_tᵀ JΦ_t u (one JVP and one VJP per vector)."""
        return self.rmatvec(self.matvec(u))


class PointsStep:
    """JΦ_t at S stacked points, matrix-free, with the patch-block access patterns every estimator uses.

    A point's vector is an image [C,H,W]; a batch of vectors for all points is [B,S,C,H,W] (one product of
    the stacked linearisation applies every point's operator to that point's own vector). Patch vectors are
    [.., n_k] in `patch_index` order. `pipeline.jacobian.dense.DenseStep` offers the same methods on a stored
    Jacobian, so an estimator runs unchanged on either (on the stored one it is a replay: no model products).
    """

    replay = False

    def __init__(self, step: StepJacobian, index: torch.Tensor):
        if len(step.image_shape) != 4:
            raise ValueError(f"PointsStep needs a stacked linearisation [S,C,H,W], got {step.image_shape}")
        self.step = step
        self.index = index
        self.S = int(step.image_shape[0])
        self.image = tuple(int(s) for s in step.image_shape[1:])
        self.M, self.nk = (int(s) for s in index.shape)
        self.n = step.n
        self.dtype = step.score.x.dtype
        self.device = step.score.x.device

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """JΦ_t v for vectors [S,C,H,W] or [B,S,C,H,W]."""
        return self.step.matvec(v)

    def apply_t(self, w: torch.Tensor) -> torch.Tensor:
        """JΦ_tᵀ w for vectors [S,C,H,W] or [B,S,C,H,W]."""
        return self.step.rmatvec(w)

    def block_ops(self, k_of: torch.Tensor, j_of: torch.Tensor):
        """[JΦ_t]_{k j} of every (problem, point) pair on vectors [B·S, n_k] in problem-major order."""
        S, (C, H, W), index = self.S, self.image, self.index
        B = len(k_of)
        k_rep, j_rep = k_of.repeat_interleave(S), j_of.repeat_interleave(S)

        def matvec(u):
            img = embed_patches(u, index, (C, H, W), j_rep).reshape(B, S, C, H, W)
            return take_patches(self.apply(img).reshape(B * S, C, H, W), index, k_rep)

        def rmatvec(w):
            img = embed_patches(w, index, (C, H, W), k_rep).reshape(B, S, C, H, W)
            return take_patches(self.apply_t(img).reshape(B * S, C, H, W), index, j_rep)

        return matvec, rmatvec

    def columns(self, z: torch.Tensor) -> torch.Tensor:
        """[JΦ_t]_{k j} z_j for every k: z [M(j), S, n_k] -> [M(j), S, M(k), n_k] (M products per point)."""
        return self._spread(z, self.apply)

    def rows(self, w: torch.Tensor) -> torch.Tensor:
        """[JΦ_t]_{k j}ᵀ w_k for every j: w [M(k), S, n_k] -> [M(k), S, M(j), n_k] (M products per point)."""
        return self._spread(w, self.apply_t)

    def _spread(self, z: torch.Tensor, fn) -> torch.Tensor:
        M, S = self.M, self.S
        own = torch.arange(M, device=self.device).repeat_interleave(S)
        img = embed_patches(z.reshape(M * S, -1).to(self.dtype), self.index, self.image, own)
        Y = fn(img.reshape(M, S, *self.image)).reshape(M, S, -1)
        return Y[:, :, self.index]
