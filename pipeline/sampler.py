"""Deterministic DDIM sampling along a geometry Chain: x_{s+1} = Φ_{t_s}(x_s) = r_s x_s + b_s ε̂(x_s, t_s) (eq. 4, 5).

Trajectories store every point x_s and every prediction ε̂(x_s, t_s), so the measurement stage
evaluates Jacobians exactly at the points the sampler visited. No clipping, no thresholding, no
noise (η = 0): the chain is the operator Φ = Φ_{t_S} ∘ ... ∘ Φ_{t_1} the geometry module describes.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.errors import InputFileError, NonFiniteError, SettingError
from pipeline.io import load_npz, read_sealed_json, save_npz, sha256_file, write_bytes, write_sealed_json
from pipeline.models.base import ModelError, NoisePredictor
from pipeline.models.prediction import eps_from_prediction
from pipeline.outputs import TrajectoriesFolder

__all__ = [
    "Trajectory",
    "ddim_sample",
    "initial_noise",
    "noise_batch",
    "check_chain_fits_model",
    "save_trajectory",
    "load_trajectory",
    "seed_path",
    "sample_seeds",
    "save_sample_grid",
]


@dataclass
class Trajectory:
    """One DDIM run over a batch of seeds.

    t: int64 [S] paper timesteps of the steps; x: [S+1, B, C, H, W] with x[0] = x_T and x[s+1] = Φ_{t_s}(x[s])
    (x[S] is the sample); eps: [S, B, C, H, W] with eps[s] = ε̂(x[s], t[s]). Tensors live on the CPU.
    """

    t: np.ndarray
    x: torch.Tensor
    eps: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.x.shape[1])

    @property
    def samples(self) -> torch.Tensor:
        """The final points x_0 = Φ(x_T), [B, C, H, W]."""
        return self.x[-1]

    def select(self, b: int) -> Trajectory:
        """The trajectory of batch member b (batch axis kept, size 1)."""
        return Trajectory(self.t.copy(), self.x[:, b : b + 1].clone(), self.eps[:, b : b + 1].clone())


def initial_noise(seed: int, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """x_T ~ N(0, I) of one seed, drawn on the CPU in float64 and cast to ``dtype``.

    A fresh CPU generator per seed makes a seed's x_T independent of batch composition and of the
    device the chain later runs on; drawing in float64 gives float32 and float64 runs the same x_T
    up to rounding.
    """
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(tuple(int(s) for s in shape), generator=g, dtype=torch.float64).to(dtype)


def noise_batch(
    seeds: Iterable[int], shape: Sequence[int], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Stack initial_noise(seed, shape) over seeds -> [B, *shape]."""
    return torch.stack([initial_noise(s, shape, dtype) for s in seeds])


class NonFiniteTrajectory(NonFiniteError):
    """x or ε̂ of some batch members became NaN/inf at one step of the chain."""

    def __init__(self, message: str, members: list[int], step: int, t: int) -> None:
        super().__init__(message)
        self.members, self.step, self.t = members, step, t


_NONFINITE_FIX = (
    "the model's output overflows or its weights are broken; check model.path's weights, try "
    "model.dtype=float64, or a schedule whose ᾱ_t stays away from 0"
)


def _check_finite(x: torch.Tensor, eps: torch.Tensor, step: int, t: int) -> None:
    ok = torch.isfinite(x).flatten(1).all(1) & torch.isfinite(eps).flatten(1).all(1)
    if not bool(ok.all()):
        members = [int(i) for i in torch.nonzero(~ok).flatten()]
        raise NonFiniteTrajectory(
            f"the DDIM trajectory of batch member(s) {members} is NaN/inf after step {step} (paper t={t}) — "
            + _NONFINITE_FIX,
            members,
            step,
            t,
        )


def check_chain_fits_model(model: NoisePredictor, chain) -> None:
    """Refuse a chain whose ᾱ do not come from the model's own schedule (a silent mismatch would be wrong Φ_t)."""
    ab = getattr(model, "alpha_bar", None)
    if ab is None:
        return
    ts = np.asarray(chain.timesteps)
    if ts.max() >= len(ab):
        raise ModelError(
            f"chain {chain.name!r} reaches t={int(ts.max())} but the model's schedule has T={len(ab) - 1}; "
            "build the chain from the model's schedule (Schedule(alpha_bar=model.alpha_bar))"
        )
    if not np.allclose(np.asarray(chain.alpha_bar_t), ab[ts], rtol=1e-3, atol=0.0):
        raise ModelError(
            f"chain {chain.name!r} has ᾱ_t that differ from the model's own schedule at its timesteps; build "
            "the chain from the model's schedule (model.alpha_bar), not from the config's schedule group"
        )


def ddim_sample(
    model: NoisePredictor,
    chain,
    x_T: torch.Tensor,
    progress: bool = True,
    callback: Callable[[int, int, torch.Tensor, torch.Tensor], None] | None = None,
    update: str = "exact",
) -> Trajectory:
    """Run the deterministic DDIM chain from x_T [B, C, H, W]; returns the full Trajectory.

    Step s applies Φ_{t_s}(x) = r_s x + b_s ε̂(x, t_s) with (r_s, b_s) = step_coefficients(chain)
    (eq. 4, 5), in the model's dtype on the model's device. ``callback(s, t_s, x_next, eps)`` is
    called after each step (CPU tensors). ``update="diffusers_float32"`` instead replays diffusers'
    DDIMScheduler.step (η = 0) arithmetic for a diffusers checkpoint: ᾱ rounded to float32 and its square
    roots taken in float32 (see diffusers_float32_update); the stored eps is still the model's ε̂.
    """
    # scipy (via pipeline.geometry) only when a chain is sampled: importing the sampler stays without it
    from pipeline.geometry import step_coefficients

    if update not in UPDATES:
        raise SettingError(f"trajectories.update={update!r} is unknown — use one of {', '.join(UPDATES)}")
    if update == "diffusers_float32" and not hasattr(model, "raw"):
        raise ModelError(
            "update='diffusers_float32' replays diffusers' DDIMScheduler and needs a diffusers "
            "checkpoint (model kind=unet); use update='exact' for this model"
        )

    if x_T.ndim != 4 or tuple(x_T.shape[1:]) != tuple(model.image_shape):
        raise ModelError(
            f"x_T must be [B, {', '.join(map(str, model.image_shape))}] for this model, got {tuple(x_T.shape)}"
        )
    check_chain_fits_model(model, chain)
    coef = step_coefficients(chain)
    # Φ_t(x) = r x + b ε̂ is applied as x + ((r - 1) x + b ε̂): same operator, but in float32 a rounded
    # r ≈ 1 + 1e-4 (stride-1 chains) would carry a ~1e-3 relative error in its expansion r - 1 at
    # every step; rounding the small increment instead keeps one rounding of x per step.
    r_minus_1 = np.asarray(coef.r, dtype=np.float64) - 1.0
    b = np.asarray(coef.b, dtype=np.float64)
    ts = np.asarray(chain.timesteps, dtype=np.int64)
    S = len(ts)
    dtype, device = model.dtype, model.device
    xs = torch.empty((S + 1, *x_T.shape), dtype=dtype)
    eps_all = torch.empty((S, *x_T.shape), dtype=dtype)
    x = x_T.to(device=device, dtype=dtype)
    xs[0] = x.cpu()
    compat = None
    if update == "diffusers_float32":
        # scipy (via pipeline.geometry) only when a chain is sampled, as above
        from pipeline.geometry import schedule_from_diffusers_config

        sched_cfg = getattr(model, "scheduler_config", None)
        ab32 = schedule_from_diffusers_config(sched_cfg, float32=True).alpha_bar if sched_cfg else None
        compat = diffusers_float32_update(chain, model.alpha_bar, ab32)
    with torch.no_grad():
        for s in tqdm(range(S), desc=f"DDIM {getattr(chain, 'name', '')}", disable=not progress, leave=False):
            if compat is None:
                eps = model(x, int(ts[s]))
                x = x + (float(r_minus_1[s]) * x + float(b[s]) * eps)
            else:
                out = model.raw(x, int(ts[s]))
                eps = eps_from_prediction(out, x, float(model.alpha_bar[int(ts[s])]), model.prediction_type)
                x = compat(s, x, out, model.prediction_type)
            # a NaN never recovers: stop here, naming the step, rather than write a NaN trajectory
            _check_finite(x, eps, s, int(ts[s]))
            xs[s + 1] = x.cpu()
            eps_all[s] = eps.cpu()
            if callback is not None:
                callback(s, int(ts[s]), xs[s + 1], eps_all[s])
    return Trajectory(t=ts.copy(), x=xs, eps=eps_all)


UPDATES = ("exact", "diffusers_float32")


def diffusers_float32_update(
    chain, alpha_bar: np.ndarray | None = None, alpha_bar_float32: np.ndarray | None = None
) -> Callable[[int, torch.Tensor, torch.Tensor, str], torch.Tensor]:
    """DDIMScheduler.step (η = 0, no clipping) as diffusers computes it: √ᾱ_t, √(1−ᾱ_t), √ᾱ_prev, √(1−ᾱ_prev)
    from float32 ᾱ in float32, x̂_0 and ε from the raw output by the prediction type, x_prev = √ᾱ_prev x̂_0 +
    √(1−ᾱ_prev) ε. On a 1000-step chain these float32 roundings alone move x_0 by ~1e-5 to 1e-4 from the
    exact operator of eq. (4) (tests/test_sampler.py), so this exists to reproduce diffusers, not the paper.

    ``alpha_bar`` (the chain's float64 schedule [T+1]) and ``alpha_bar_float32`` (diffusers' float32 cumprod of
    the same schedule, schedule_from_diffusers_config(float32=True)) replace each chain ᾱ by diffusers' own
    float32 value; without them the chain's ᾱ are rounded to float32.
    """
    at, ap = (
        np.asarray(chain.alpha_bar_t, dtype=np.float64),
        np.asarray(chain.alpha_bar_prev, dtype=np.float64),
    )
    if alpha_bar is not None and alpha_bar_float32 is not None:
        index = {float(v): t for t, v in enumerate(np.asarray(alpha_bar, dtype=np.float64))}
        ab32 = np.asarray(alpha_bar_float32, dtype=np.float64)
        at, ap = (
            np.array([ab32[index[float(v)]] if float(v) in index else v for v in arr]) for arr in (at, ap)
        )
    a = torch.tensor(at, dtype=torch.float32)
    p = torch.tensor(ap, dtype=torch.float32)
    sa, sb, sp, sbp = (v.to(torch.float64).numpy() for v in (a**0.5, (1 - a) ** 0.5, p**0.5, (1 - p) ** 0.5))

    def step(s: int, x: torch.Tensor, out: torch.Tensor, prediction_type: str) -> torch.Tensor:
        if prediction_type == "epsilon":
            x0, eps = (x - float(sb[s]) * out) / float(sa[s]), out
        elif prediction_type == "v_prediction":
            x0, eps = float(sa[s]) * x - float(sb[s]) * out, float(sa[s]) * out + float(sb[s]) * x
        else:  # "sample"
            x0, eps = out, (x - float(sa[s]) * out) / float(sb[s])
        return float(sp[s]) * x0 + float(sbp[s]) * eps

    return step


def seed_path(out_dir: str | Path, seed: int) -> Path:
    return TrajectoriesFolder(out_dir).seed_file(seed)


def save_trajectory(path: str | Path, traj: Trajectory, b: int = 0) -> None:
    """Write batch member b as seed-<s>.npz: t [S] (paper t), x [S+1, C, H, W], eps [S, C, H, W] (atomic)."""
    save_npz(
        path,
        t=np.asarray(traj.t, dtype=np.int64),
        x=traj.x[:, b].numpy(),
        eps=traj.eps[:, b].numpy(),
    )


_RERUN = "rerun the trajectories stage with force=true"


def read_trajectory_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """t, x, eps of a seed-<s>.npz, checked: keys, consistent shapes, finite values (else one line naming it)."""
    d = load_npz(path)
    missing = {"t", "x", "eps"} - set(d)
    if missing:
        raise InputFileError(f"{path} lacks {sorted(missing)}; it is not a trajectory file — {_RERUN}")
    t, x, eps = d["t"], d["x"], d["eps"]
    if (
        x.ndim < 2
        or x.shape[0] != t.shape[0] + 1
        or eps.shape[0] != t.shape[0]
        or x.shape[1:] != eps.shape[1:]
    ):
        raise InputFileError(
            f"{path}: inconsistent shapes t {t.shape}, x {x.shape}, eps {eps.shape} — {_RERUN}"
        )
    for name, arr in (("x", x), ("eps", eps)):
        bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
        if bad.any():
            i = int(np.argmax(bad))
            where = (
                "x_T"
                if name == "x" and i == 0
                else f"step {i - (name == 'x')} (paper t={int(t[i - (name == 'x')])})"
            )
            raise NonFiniteError(f"{path}: {name} is NaN/inf at {where} — {_RERUN}")
    return {"t": t, "x": x, "eps": eps}


def load_trajectory(path: str | Path) -> Trajectory:
    """Read a seed-<s>.npz back as a batch-of-one Trajectory."""
    d = read_trajectory_arrays(path)
    t, x, eps = d["t"], d["x"], d["eps"]
    return Trajectory(
        t=t.astype(np.int64), x=torch.from_numpy(x)[:, None], eps=torch.from_numpy(eps)[:, None]
    )


def _unit_record(path: Path) -> Path:
    """The sealed record beside a seed file of a resumable run: which seed it is and the sha256 it was
    written with, so a unit edited, swapped or copied in while the run was away is sampled again."""
    return path.with_name(path.name + ".unit.json")


def _seal_unit(path: Path, seed: int) -> None:
    write_sealed_json(_unit_record(path), {"seed": seed, "sha256": sha256_file(path)})


def _sealed(path: Path, seed: int) -> bool:
    """A seed file written by a run, unchanged since (a unit killed between the file and its seal is not)."""
    return path.is_file() and read_sealed_json(_unit_record(path)) == {
        "seed": seed,
        "sha256": sha256_file(path),
    }


def _complete(path: Path, seed: int, chain, image_shape: tuple[int, ...]) -> bool:
    if not _sealed(path, seed):
        return False
    try:
        d = load_npz(path)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile):  # a truncated or foreign file: redo the seed
        return False
    S = len(chain.timesteps)
    return (
        set(d) >= {"t", "x", "eps"}
        and np.array_equal(d["t"], np.asarray(chain.timesteps))
        and d["x"].shape == (S + 1, *image_shape)
        and d["eps"].shape == (S, *image_shape)
        and bool(np.isfinite(d["x"]).all() and np.isfinite(d["eps"]).all())
    )


def sample_seeds(
    model: NoisePredictor,
    chain,
    seeds: Sequence[int],
    out_dir: str | Path,
    batch_size: int = 8,
    progress: bool = True,
    update: str = "exact",
) -> list[Path]:
    """Sample each seed's trajectory into out_dir/seed-<s>.npz, batched; seeds whose file is complete (and
    matches the sealed record written beside it) are skipped.

    Resumable per seed: a run killed mid-way keeps every finished seed (files are written
    atomically) and a rerun only samples the rest. A seed's x_T depends only on the seed. The
    UNet's CPU kernels are chosen by batch size, which moves float32 results by ~1e-7 relative,
    so every batch is run at the same size b = min(batch_size, len(seeds)) (a short last batch
    is padded by repeating its last seed): a seed's trajectory is then a function of the seed
    and b only, not of which other seeds share its batch or of how often the run was resumed.
    """
    if batch_size < 1:
        raise SettingError(
            f"trajectories.batch_size={batch_size} — set it to a positive number of seeds sampled together"
        )
    if update not in UPDATES:  # before any seed is sampled
        raise SettingError(f"trajectories.update={update!r} is unknown — use one of {', '.join(UPDATES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in seeds]
    if not seeds:
        return []
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    b = min(int(batch_size), len(seeds))
    todo = [s for s in seeds if not _complete(seed_path(out_dir, s), s, chain, tuple(model.image_shape))]
    batches = [todo[i : i + b] for i in range(0, len(todo), b)]
    for batch in tqdm(batches, desc="seed batches", disable=not progress or len(batches) < 2):
        padded = batch + [batch[-1]] * (b - len(batch))
        try:
            traj = ddim_sample(
                model,
                chain,
                noise_batch(padded, model.image_shape, model.dtype),
                progress=progress,
                update=update,
            )
        except NonFiniteTrajectory as e:
            bad = sorted({padded[i] for i in e.members})
            raise NonFiniteTrajectory(
                f"the DDIM trajectory of seed(s) {bad} is NaN/inf after step {e.step} (paper t={e.t}) — "
                + _NONFINITE_FIX,
                bad,
                e.step,
                e.t,
            ) from None
        for i, s in enumerate(batch):
            save_trajectory(seed_path(out_dir, s), traj, i)
            _seal_unit(seed_path(out_dir, s), s)
    return [seed_path(out_dir, s) for s in seeds]


def sample_grid(images: torch.Tensor | np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """[B, C, H, W] images in [-1, 1] -> uint8 grid [rows·(H+pad)+pad, cols·(W+pad)+pad, 3] (clipped for display)."""
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"sample grid needs [B, 1 or 3, H, W] images, got shape {x.shape}")
    B, C, H, W = x.shape
    cols = int(nrow or int(np.ceil(np.sqrt(B))))
    rows = int(np.ceil(B / cols))
    img = np.clip((x.astype(np.float64) + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
    if C == 1:
        img = np.repeat(img, 3, axis=1)
    grid = np.full((rows * (H + pad) + pad, cols * (W + pad) + pad, 3), 255, dtype=np.uint8)
    for i in range(B):
        r, c = divmod(i, cols)
        y0, x0 = pad + r * (H + pad), pad + c * (W + pad)
        grid[y0 : y0 + H, x0 : x0 + W] = img[i].transpose(1, 2, 0)
    return grid


def save_sample_grid(images: torch.Tensor | np.ndarray, path: str | Path, nrow: int | None = None) -> Path:
    """Write the final samples as one PNG grid (atomic); returns the path."""
    # PIL only when the grid is written: importing the trajectories stage stays without it
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(sample_grid(images, nrow)).save(buf, format="PNG")
    path = Path(path)
    write_bytes(path, buf.getvalue())
    return path


def publish_trajectories(
    model: NoisePredictor,
    chain,
    seeds: Sequence[int],
    work_dir: Path,
    out: TrajectoriesFolder,
    batch_size: int = 8,
    update: str = "exact",
    progress: bool = True,
) -> dict[str, float]:
    """The trajectories stage's outputs: every seed sampled into ``work_dir`` (resumable per seed), copied
    into ``out`` with the grid of final samples; returns the stage's metrics."""
    resumed = sum(_sealed(seed_path(work_dir, s), s) for s in seeds)
    paths = sample_seeds(
        model, chain, seeds, work_dir, batch_size=batch_size, progress=progress, update=update
    )
    finals = []
    for path in paths:
        shutil.copy2(path, out.path / path.name)
        with np.load(path) as z:
            finals.append(z["x"][-1])
    x0 = np.stack(finals)
    save_sample_grid(x0, out / out.SAMPLES)
    return {
        "num_seeds": float(len(seeds)),
        "num_steps": float(len(chain)),
        "x0_mean": float(x0.mean()),
        "x0_std": float(x0.std()),
        "x0_abs_max": float(np.abs(x0).max()),
        "seeds_resumed": float(resumed),
    }
