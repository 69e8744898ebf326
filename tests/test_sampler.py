"""The DDIM sampler is eq. (4) over a geometry Chain: agreement with diffusers' DDIMScheduler, with the paper's
x̂_0 form of the update, bit-identical reruns, per-seed resumability and the trajectory file contract."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # never reach the network from tests

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from pipeline.geometry import (  # noqa: E402
    full_chain,
    linear_schedule,
    schedule_from_alpha_bar,
    schedule_from_diffusers_config,
    strided_chain,
)
from pipeline.io import load_npz, save_npz  # noqa: E402
from pipeline.models import GaussianOracle, ModelError, load_unet  # noqa: E402
from pipeline.sampler import (  # noqa: E402
    Trajectory,
    ddim_sample,
    initial_noise,
    load_trajectory,
    noise_batch,
    sample_grid,
    sample_seeds,
    save_sample_grid,
    save_trajectory,
)
from tests.test_models_unet import save_tiny_unet  # noqa: E402


@pytest.fixture(scope="module")
def ckpt_mild(tmp_path_factory):
    # Linear β from 1e-4 to 2e-3: ᾱ_T ≈ 0.35. A random-weight UNet does not denoise, so with DDPM's
    # ᾱ_T ≈ 4e-5 its x_0 reaches |x| ~ 600, where one float32 ulp (6e-5) is already above the 1e-5 we
    # check; here x_0 stays at |x| ~ 7. The DDPM schedule itself is checked relative to |x_0| below.
    return save_tiny_unet(tmp_path_factory.mktemp("mild"), beta_end=2e-3)


@pytest.fixture(scope="module")
def ckpt_ddpm(tmp_path_factory):
    return save_tiny_unet(tmp_path_factory.mktemp("ddpm"), beta_end=0.02)


# (our chain, the DDIMScheduler settings that step through exactly the same ᾱ_t -> ᾱ_prev pairs)
CHAINS = {
    "ddim50_trailing": (
        dict(num_steps=50, spacing="trailing", final_alpha_bar=1.0),
        dict(timestep_spacing="trailing", steps_offset=0, set_alpha_to_one=True),
    ),
    "ddim50_leading_offset1": (
        dict(num_steps=50, spacing="leading", final_alpha_bar=1.0, steps_offset=1),
        dict(timestep_spacing="leading", steps_offset=1, set_alpha_to_one=True),
    ),
    # set_alpha_to_one=False ends on ᾱ_1 (final_alpha_bar=None); with steps_offset=0 the last step would be
    # t=1 -> ᾱ_1, a no-op that geometry refuses, so this convention goes with steps_offset=1.
    "ddim50_leading_offset1_final_alpha1": (
        dict(num_steps=50, spacing="leading", final_alpha_bar=None, steps_offset=1),
        dict(timestep_spacing="leading", steps_offset=1, set_alpha_to_one=False),
    ),
    "ddim50_linspace_diffusers_prev": (
        dict(num_steps=50, spacing="linspace", final_alpha_bar=1.0, prev="diffusers"),
        dict(timestep_spacing="linspace", steps_offset=0, set_alpha_to_one=True),
    ),
    "stride1_full": (None, dict(timestep_spacing="leading", steps_offset=0, set_alpha_to_one=True)),
}


def _chain(schedule, spec):
    return full_chain(schedule) if spec is None else strided_chain(schedule, **spec)


def _diffusers_ddim(ckpt, sched_cfg, dd_kwargs, num_steps, x_T, dtype):
    """diffusers' own loop: DDIMScheduler.step(eta=0, no clipping) on UNet2DModel with its default attention."""
    from diffusers import DDIMScheduler, UNet2DModel

    unet = UNet2DModel.from_pretrained(str(ckpt), torch_dtype=dtype, low_cpu_mem_usage=False).eval()
    sched = DDIMScheduler.from_config(sched_cfg, clip_sample=False, thresholding=False, **dd_kwargs)
    sched.set_timesteps(num_steps)
    x = x_T.clone()
    with torch.no_grad():
        for i in sched.timesteps:
            x = sched.step(unet(x, i).sample, i, x, eta=0.0).prev_sample
    return sched.timesteps.numpy(), x


@pytest.mark.parametrize(
    "name",
    # the stride-1 case runs 2 x 1000 UNet evaluations (~15 s CPU): marked slow, still in the default run
    [pytest.param(n, marks=pytest.mark.slow) if n == "stride1_full" else n for n in CHAINS],
)
def test_float32_ddim_matches_diffusers_ddimscheduler(ckpt_mild, name):
    spec, dd_kwargs = CHAINS[name]
    model = load_unet(ckpt_mild)  # float32
    chain = _chain(schedule_from_alpha_bar(model.alpha_bar), spec)
    x_T = noise_batch([0, 1], model.image_shape, torch.float32)
    # 50-step chains: the exact operator of eq. (4). On the 1000-step chain diffusers' float32 √ᾱ roundings
    # add up to more than 1e-5 (see the next test), so there its own arithmetic is replayed.
    update = "diffusers_float32" if name == "stride1_full" else "exact"
    ours = ddim_sample(model, chain, x_T, progress=False, update=update)
    steps, ref = _diffusers_ddim(ckpt_mild, model.scheduler_config, dd_kwargs, len(chain), x_T, torch.float32)
    assert np.array_equal(steps + 1, chain.timesteps)  # same grid, paper t = index + 1
    scale = max(1.0, ref.abs().max().item())
    assert (ours.samples - ref).abs().max().item() <= 1e-5 * scale


@pytest.mark.slow
def test_stride1_chain_on_the_shipped_model_and_where_diffusers_departs_from_eq4():
    """The shipped v-prediction model (samples O(1), |x_0| < 1): on the stride-1 chain diffusers' DDIMScheduler
    takes √ᾱ and √(1−ᾱ) in float32 at every step, and over 1000 steps those roundings alone move x_0 by more than
    1e-5, in float64 samples as much as in float32. Replaying them (update='diffusers_float32') reproduces
    diffusers to float64 round-off; our exact sampler in float32 stays within 1e-5 of the exact float64 chain."""
    from pipeline.models.assets import resolve_asset_path

    ckpt = resolve_asset_path("pkg://pipeline/assets/pifs_ddpm16")
    spec, dd_kwargs = CHAINS["stride1_full"]
    m32, m64 = load_unet(ckpt), load_unet(ckpt, dtype="float64")
    chain = _chain(schedule_from_alpha_bar(m64.alpha_bar), spec)
    x_T = noise_batch([0], m32.image_shape, torch.float64)
    exact64 = ddim_sample(m64, chain, x_T, progress=False).samples
    replay64 = ddim_sample(m64, chain, x_T, progress=False, update="diffusers_float32").samples
    _, ref64 = _diffusers_ddim(ckpt, m64.scheduler_config, dd_kwargs, len(chain), x_T, torch.float64)
    assert exact64.abs().max().item() < 2.0
    assert (replay64 - ref64).abs().max().item() <= 1e-12
    coefficient_gap = (exact64 - ref64).abs().max().item()
    assert coefficient_gap > 1e-5  # diffusers' own rounding, not sampling precision: both runs are float64
    x32 = x_T.float()
    exact32 = ddim_sample(m32, chain, x32, progress=False).samples
    replay32 = ddim_sample(m32, chain, x32, progress=False, update="diffusers_float32").samples
    _, ref32 = _diffusers_ddim(ckpt, m32.scheduler_config, dd_kwargs, len(chain), x32, torch.float32)
    assert (replay32 - ref32).abs().max().item() <= 1e-5
    assert (exact32.double() - exact64).abs().max().item() <= 1e-5


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_v_and_x0_prediction_checkpoints_step_like_diffusers(tmp_path, prediction_type):
    """A v- or x_0-prediction network enters eq. (4) through its ε̂ (pipeline.models.prediction); diffusers'
    DDIMScheduler converts the same output its own way (pred_original_sample first): same chain, ≤ 1e-5."""
    ckpt = save_tiny_unet(tmp_path, beta_end=2e-3, prediction_type=prediction_type)
    spec, dd_kwargs = CHAINS["ddim50_trailing"]
    model = load_unet(ckpt)
    assert model.prediction_type == prediction_type
    chain = _chain(schedule_from_alpha_bar(model.alpha_bar), spec)
    x_T = noise_batch([0, 1], model.image_shape, torch.float32)
    ours = ddim_sample(model, chain, x_T, progress=False).samples
    _, ref = _diffusers_ddim(ckpt, model.scheduler_config, dd_kwargs, 50, x_T, torch.float32)
    assert (ours - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())
    # and the conversion is the closed form: ε̂ = √ᾱ v̂ + √(1−ᾱ) x, or (x − √ᾱ x̂_0)/√(1−ᾱ)
    x, t = x_T[:1], 700
    raw = model.unet(x, torch.tensor(t - 1), return_dict=False)[0].double()
    a, s = np.sqrt(model.alpha_bar[t]), np.sqrt(1 - model.alpha_bar[t])
    expect = a * raw + s * x.double() if prediction_type == "v_prediction" else (x.double() - a * raw) / s
    assert torch.allclose(model(x, t).double(), expect, rtol=1e-5, atol=1e-6)


def test_float32_ddim_matches_diffusers_on_the_ddpm_schedule(ckpt_ddpm):
    spec, dd_kwargs = CHAINS["ddim50_trailing"]
    model = load_unet(ckpt_ddpm)
    chain = _chain(schedule_from_alpha_bar(model.alpha_bar), spec)
    x_T = noise_batch([0, 1], model.image_shape, torch.float32)
    ours = ddim_sample(model, chain, x_T, progress=False).samples
    _, ref = _diffusers_ddim(ckpt_ddpm, model.scheduler_config, dd_kwargs, 50, x_T, torch.float32)
    scale = ref.abs().max().item()
    assert scale > 100  # random weights do not denoise: |x_0| ~ |x_T| / √ᾱ_T; float32 error is relative
    assert (ours - ref).abs().max().item() <= 1e-5 * scale


def test_float64_ddim_matches_diffusers_to_its_float32_coefficients(ckpt_mild):
    """diffusers computes ᾱ and its square roots in float32 even for float64 samples; replaying its float32
    ᾱ (schedule_from_diffusers_config(float32=True)) leaves only those roundings: ≤ 1e-7 relative."""
    spec, dd_kwargs = CHAINS["ddim50_trailing"]
    model = load_unet(ckpt_mild, dtype="float64")
    chain = _chain(schedule_from_diffusers_config(model.scheduler_config, float32=True), spec)
    x_T = noise_batch([0, 1], model.image_shape, torch.float64)
    ours = ddim_sample(model, chain, x_T, progress=False).samples
    _, ref = _diffusers_ddim(ckpt_mild, model.scheduler_config, dd_kwargs, 50, x_T, torch.float64)
    assert (ours - ref).abs().max().item() <= 1e-7 * ref.abs().max().item()


def test_sampler_is_the_papers_ddim_update_with_the_oracle():
    """x_prev = √ᾱ_prev x̂_0 + √(1-ᾱ_prev) ε̂ with x̂_0 = (x − √(1-ᾱ_t) ε̂)/√ᾱ_t (§2.1), written out independently."""
    sched = linear_schedule(1000)
    rng = np.random.default_rng(0)
    A = rng.normal(size=(12, 12))
    oracle = GaussianOracle(rng.normal(size=12), A @ A.T / 12, sched.alpha_bar, (3, 2, 2))
    chain = strided_chain(sched, 25, "leading", final_alpha_bar=1.0)
    x_T = noise_batch([4, 5, 6], oracle.image_shape, torch.float64)
    traj = ddim_sample(oracle, chain, x_T, progress=False)
    x = x_T.clone()
    for s, t in enumerate(chain.timesteps):
        a, p = sched.alpha_bar[t], chain.alpha_bar_prev[s]
        eps = oracle(x, int(t))
        assert torch.equal(traj.eps[s], eps) if s == 0 else torch.allclose(traj.eps[s], eps, atol=1e-12)
        x0_hat = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
        x = np.sqrt(p) * x0_hat + np.sqrt(1 - p) * eps
        assert torch.allclose(traj.x[s + 1], x, rtol=0, atol=1e-12)
    assert traj.t.dtype == np.int64 and np.array_equal(traj.t, chain.timesteps)
    assert traj.x.shape == (26, 3, 3, 2, 2) and traj.eps.shape == (25, 3, 3, 2, 2)
    assert torch.equal(traj.x[0], x_T)


def test_same_seed_gives_bit_identical_trajectories(ckpt_ddpm, tmp_path):
    model = load_unet(ckpt_ddpm)
    chain = strided_chain(schedule_from_alpha_bar(model.alpha_bar), 10, "trailing")
    a = ddim_sample(model, chain, noise_batch([3, 7], model.image_shape), progress=False)
    b = ddim_sample(model, chain, noise_batch([3, 7], model.image_shape), progress=False)
    assert torch.equal(a.x, b.x) and torch.equal(a.eps, b.eps)
    # a seed's x_T does not depend on the batch around it, nor (up to rounding) on the dtype
    assert torch.equal(initial_noise(7, (3, 8, 8)), noise_batch([1, 7, 9], (3, 8, 8))[1])
    assert torch.allclose(initial_noise(7, (3, 8, 8), torch.float64).float(), initial_noise(7, (3, 8, 8)))
    assert not torch.equal(initial_noise(7, (3, 8, 8)), initial_noise(8, (3, 8, 8)))
    # sample_seeds runs every batch at one size, so seed 4 is bit-identical however seeds are grouped
    p1 = sample_seeds(model, chain, [0, 1, 2, 3, 4], tmp_path / "r1", batch_size=2, progress=False)
    p2 = sample_seeds(model, chain, [4, 9], tmp_path / "r2", batch_size=2, progress=False)
    assert load_npz(p1[4])["x"].tobytes() == load_npz(p2[0])["x"].tobytes()
    assert p1[4].read_bytes() == p2[0].read_bytes()


class _Counting:
    """Wraps a model and counts the samples it evaluates."""

    def __init__(self, model):
        self.model, self.evaluated = model, 0
        self.image_shape, self.alpha_bar = model.image_shape, model.alpha_bar
        self.dtype, self.device = model.dtype, model.device

    def __call__(self, x, t):
        self.evaluated += x.shape[0]
        return self.model(x, t)


def test_sample_seeds_resumes_per_seed_and_writes_the_trajectory_contract(tmp_path):
    sched = linear_schedule(1000)
    rng = np.random.default_rng(1)
    A = rng.normal(size=(8, 8))
    oracle = GaussianOracle(np.zeros(8), A @ A.T / 8, sched.alpha_bar, (2, 2, 2), dtype="float32")
    chain = strided_chain(sched, 5, "trailing")
    model = _Counting(oracle)
    seeds = [10, 11, 12, 13, 14]
    paths = sample_seeds(model, chain, seeds, tmp_path, batch_size=2, progress=False)
    assert [p.name for p in paths] == [f"seed-{s}.npz" for s in seeds]
    assert model.evaluated == 6 * 5  # 3 batches of 2 (last padded) x 5 steps
    first = {p.name: p.read_bytes() for p in paths}
    d = load_npz(paths[1])
    assert set(d) == {"t", "x", "eps"}
    assert d["t"].dtype == np.int64 and np.array_equal(d["t"], chain.timesteps)
    assert d["x"].shape == (6, 2, 2, 2) and d["eps"].shape == (5, 2, 2, 2) and d["x"].dtype == np.float32
    assert np.array_equal(d["x"][0], initial_noise(11, (2, 2, 2)).numpy())

    # a rerun samples nothing; a lost and a truncated seed file are redone, and only those
    model.evaluated = 0
    sample_seeds(model, chain, seeds, tmp_path, batch_size=2, progress=False)
    assert model.evaluated == 0
    paths[1].unlink()
    paths[3].write_bytes(first[paths[3].name][:100])
    sample_seeds(model, chain, seeds, tmp_path, batch_size=2, progress=False)
    assert model.evaluated == 2 * 5
    assert {p.name: p.read_bytes() for p in paths} == first

    # a unit edited while the run was away (a valid file with other numbers), and two units swapped, are
    # sampled again, never resumed: each seed file is checked against the sealed record written beside it
    model.evaluated = 0
    d0 = load_npz(paths[0])
    save_npz(paths[0], t=d0["t"], x=d0["x"] * np.float32(1.001), eps=d0["eps"])
    b2, b4 = paths[2].read_bytes(), paths[4].read_bytes()
    paths[2].write_bytes(b4)
    paths[4].write_bytes(b2)
    sample_seeds(model, chain, seeds, tmp_path, batch_size=2, progress=False)
    assert model.evaluated == 4 * 5  # seeds 10, 12 and 14: two batches of 2 (the last padded)
    assert {p.name: p.read_bytes() for p in paths} == first

    traj = load_trajectory(paths[2])
    assert traj.x.shape == (6, 1, 2, 2, 2) and np.array_equal(traj.t, chain.timesteps)
    save_trajectory(tmp_path / "copy.npz", traj)
    assert (tmp_path / "copy.npz").read_bytes() == first[paths[2].name]


def test_callback_sees_every_step():
    sched = linear_schedule(1000)
    oracle = GaussianOracle(np.zeros(4), np.eye(4), sched.alpha_bar, (1, 2, 2))
    chain = strided_chain(sched, 7, "trailing")
    seen = []
    traj = ddim_sample(
        oracle,
        chain,
        noise_batch([0], (1, 2, 2), torch.float64),
        progress=False,
        callback=lambda s, t, x, e: seen.append((s, t, x.clone())),
    )
    assert [s for s, _, _ in seen] == list(range(7)) and [t for _, t, _ in seen] == chain.timesteps.tolist()
    assert all(torch.equal(x, traj.x[s + 1]) for s, _, x in seen)


def test_bad_inputs_are_refused(tmp_path):
    sched = linear_schedule(1000)
    oracle = GaussianOracle(np.zeros(4), np.eye(4), sched.alpha_bar, (1, 2, 2))
    chain = strided_chain(sched, 5, "trailing")
    with pytest.raises(ModelError, match=r"x_T must be \[B, 1, 2, 2\]"):
        ddim_sample(oracle, chain, torch.zeros(1, 1, 4, 4), progress=False)
    from pipeline.geometry import cosine_schedule

    with pytest.raises(ModelError, match="model's own schedule"):
        ddim_sample(oracle, strided_chain(cosine_schedule(1000), 5, "trailing"), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="distinct"):
        sample_seeds(oracle, chain, [1, 1], tmp_path / "unused", progress=False)
    with pytest.raises(ValueError, match="update='fast' is unknown — use one of"):
        ddim_sample(oracle, chain, torch.zeros(1, 1, 2, 2), progress=False, update="fast")
    with pytest.raises(ModelError, match="needs a diffusers checkpoint.*update='exact'"):
        ddim_sample(oracle, chain, torch.zeros(1, 1, 2, 2), progress=False, update="diffusers_float32")
    with pytest.raises(ValueError, match="not a trajectory file"):
        from pipeline.io import save_npz

        save_npz("/tmp/_not_traj.npz", a=np.zeros(2))
        load_trajectory("/tmp/_not_traj.npz")


def test_sample_grid_png(tmp_path):
    imgs = torch.stack([torch.full((3, 4, 4), v) for v in (-1.0, 0.0, 1.0, 2.0, -3.0)])
    g = sample_grid(imgs, nrow=3, pad=1)
    assert g.shape == (2 * 5 + 1, 3 * 5 + 1, 3) and g.dtype == np.uint8
    assert g[1, 1, 0] == 0 and g[1, 6, 0] == 128 and g[1, 11, 0] == 255 and g[6, 1, 0] == 255  # clipped
    assert g[6, 6, 0] == 0 and g[0, 0, 0] == 255
    from PIL import Image

    path = save_sample_grid(imgs[:, :1].numpy(), tmp_path / "samples.png")
    assert Image.open(path).size == (3 * 6 + 2, 2 * 6 + 2)
    with pytest.raises(ValueError, match="1 or 3"):
        sample_grid(torch.zeros(2, 2, 4, 4))
    assert isinstance(
        Trajectory(np.zeros(0, np.int64), torch.zeros(1, 1, 1, 1, 1), torch.zeros(0)), Trajectory
    )
