"""diffusers UNet2DModel checkpoints as paper-t noise predictors: loading, forward-mode AD, attention weights, errors.

Every model is a tiny UNet2DModel with the real block types (DownBlock2D, AttnDownBlock2D, the attention
mid block, AttnUpBlock2D, UpBlock2D) built here and written with save_pretrained; nothing is downloaded.
"""

from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # never reach the network from tests

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from pipeline.assemble.models import build_model  # noqa: E402
from pipeline.errors import ConfigError  # noqa: E402
from pipeline.geometry import linear_schedule, schedule_from_diffusers_config  # noqa: E402
from pipeline.models import (  # noqa: E402
    CheckpointNotFoundError,
    DiffusersNoisePredictor,
    GaussianOracle,
    ModelError,
    gaussian_oracle_from_fit,
    load_unet,
)
from pipeline.schema import check_ranges  # noqa: E402
from tests.conftest import compose_config  # noqa: E402

CONF = os.path.join(os.path.dirname(__file__), "..", "conf", "model")


def tiny_unet(sample_size: int = 8, channels: int = 3, seed: int = 0):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=channels,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=8,
    )


def save_tiny_unet(
    path,
    layout: str = "flat",
    beta_end: float = 0.02,
    scheduler: bool = True,
    prediction_type: str = "epsilon",
    **kw,
):
    """Write a tiny checkpoint: 'flat' = config.json + scheduler_config.json in one folder (the layout of
    google/ddpm-cifar10-32); 'pipeline' = unet/ and scheduler/ subfolders (DDPMPipeline.save_pretrained)."""
    from diffusers import DDPMScheduler

    unet = tiny_unet(**kw)
    sched = DDPMScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=beta_end, prediction_type=prediction_type
    )
    if layout == "flat":
        unet.save_pretrained(path)
        if scheduler:
            sched.save_pretrained(path)
    else:
        unet.save_pretrained(os.path.join(path, "unet"))
        if scheduler:
            sched.save_pretrained(os.path.join(path, "scheduler"))
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny_unet(tmp_path_factory.mktemp("tiny_unet"))


def _reference_unet(path, dtype):
    from diffusers import UNet2DModel

    return UNet2DModel.from_pretrained(
        str(path), torch_dtype=dtype, low_cpu_mem_usage=False
    ).eval()  # diffusers' default processor


@pytest.mark.parametrize("layout", ["flat", "pipeline"])
def test_loads_both_layouts_with_the_checkpoints_own_alpha_bar(tmp_path, layout):
    from diffusers import DDPMScheduler

    save_tiny_unet(tmp_path, layout=layout, beta_end=0.012)
    m = load_unet(tmp_path, image_shape=(3, 8, 8))
    assert isinstance(m, DiffusersNoisePredictor)
    assert m.image_shape == (3, 8, 8) and m.dtype == torch.float32 and m.device.type == "cpu"
    # ᾱ_t of the checkpoint's scheduler (beta_end=0.012, not the DDPM default), index = paper t
    ref = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.012).alphas_cumprod.double()
    assert m.alpha_bar.shape == (1001,) and m.alpha_bar[0] == 1.0
    assert np.allclose(m.alpha_bar[1:], ref.numpy(), rtol=2e-6, atol=0)
    assert len(m.attention_processors) == 4  # down, mid, 2x up


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float64, 1e-12)])
def test_eps_is_the_unet_at_diffusers_index_t_minus_1(ckpt, dtype, tol):
    m = load_unet(ckpt, dtype=dtype)
    ref = _reference_unet(ckpt, dtype)
    x = torch.randn(3, 3, 8, 8, dtype=dtype, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for t in (1, 500, 1000):
            got = m(x, t)
            want = ref(x, t - 1).sample
            assert got.dtype == dtype
            assert torch.allclose(got, want, rtol=0, atol=tol * max(1.0, want.abs().max().item()))
            assert not torch.allclose(got, ref(x, t).sample, rtol=0, atol=tol)  # the index shift matters


def test_forward_mode_ad_passes_through_the_attention_processor(ckpt):
    """jvp equals a central difference, linearize equals jvp, vjp is its adjoint (float64)."""
    m = load_unet(ckpt, dtype="float64")
    g = torch.Generator().manual_seed(1)
    x, v, u = (torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=g) for _ in range(3))
    t = 300
    f = lambda z: m(z, t)  # noqa: E731
    out, jv = torch.func.jvp(f, (x,), (v,))
    h = 1e-5
    fd = (f(x + h * v) - f(x - h * v)) / (2 * h)
    assert torch.allclose(jv, fd, rtol=0, atol=1e-7 * jv.abs().max().item())
    _, lin = torch.func.linearize(f, x)
    assert torch.allclose(lin(v), jv, rtol=0, atol=1e-12)
    _, vjp = torch.func.vjp(f, x)
    (jtu,) = vjp(u)
    assert abs((u * jv).sum().item() - (jtu * v).sum().item()) < 1e-10 * (u * jv).abs().sum().item()
    # float32 too (the paper protocol's dtype)
    m32 = load_unet(ckpt, dtype="float32")
    _, jv32 = torch.func.jvp(lambda z: m32(z, t), (x.float(),), (v.float(),))
    assert torch.allclose(jv32.double(), jv, rtol=0, atol=1e-4 * jv.abs().max().item())


def test_attention_weights_are_recorded_per_layer_and_are_the_softmax_of_q_k(ckpt):
    m = load_unet(ckpt, dtype="float64")
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    name = "down_blocks.1.attentions.0"
    attn = dict(m.unet.named_modules())[name]
    seen = {}
    hook = attn.register_forward_pre_hook(lambda mod, args: seen.setdefault("h", args[0].detach()))
    with m.record_attention() as rec:
        eps = m(x, 40)
    hook.remove()
    w = rec.last()
    assert set(w) == {name, "mid_block.attentions.0", "up_blocks.0.attentions.0", "up_blocks.0.attentions.1"}
    for a in w.values():
        assert a.dtype == torch.float64 and a.shape == (2, 4, 16, 16)  # 32 ch / head dim 8, 4x4 tokens
        assert torch.allclose(a.sum(-1), torch.ones((), dtype=a.dtype), atol=1e-12) and (a >= 0).all()
    # independent recomputation of layer `name`: tokens = group-normed feature map, A = softmax(QKᵀ/√d)
    h = seen["h"]
    B, C, H, W = h.shape
    tok = attn.group_norm(h).reshape(B, C, H * W).transpose(1, 2)
    q = attn.to_q(tok).reshape(B, -1, 4, 8).transpose(1, 2)
    k = attn.to_k(tok).reshape(B, -1, 4, 8).transpose(1, 2)
    want = torch.softmax(q @ k.transpose(-1, -2) / np.sqrt(8), dim=-1)
    assert torch.allclose(w[name], want, rtol=0, atol=1e-12)
    # recording is off outside the block and does not change ε̂
    assert torch.equal(m(x, 40), eps)
    assert all(p.record is None for p in m.attention_processors.values())
    with m.record_attention():
        with pytest.raises(RuntimeError, match="plain forward"):
            torch.func.jvp(lambda z: m(z, 40), (x,), (x,))


def test_path_that_is_neither_directory_nor_hub_id_is_refused(tmp_path):
    for bad in (str(tmp_path / "missing" / "deeper" / "ckpt"), "./nope", "not a/hub id", ""):
        with pytest.raises(CheckpointNotFoundError, match="model.path"):
            load_unet(bad)
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(CheckpointNotFoundError, match="is a file"):
        load_unet(f)
    with pytest.raises(CheckpointNotFoundError, match="no UNet2DModel config.json"):
        load_unet(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(CheckpointNotFoundError, match="not a diffusers UNet2DModel"):
        load_unet(tmp_path / "other")


def test_hub_id_offline_gives_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointNotFoundError) as e:
        load_unet("google/ddpm-cifar10-32", cache_dir=tmp_path)
    msg = str(e.value)
    assert "offline" in msg and "hf download google/ddpm-cifar10-32" in msg and "model.path=<dir>" in msg
    with pytest.raises(CheckpointNotFoundError, match="not in the local Hugging Face cache"):
        load_unet("google/ddpm-celebahq-256", cache_dir=tmp_path, local_files_only=True)


def test_shape_mismatches_are_refused_before_sampling(ckpt):
    with pytest.raises(ModelError, match="maps 3 -> 3 channels but the dataset has 1"):
        load_unet(ckpt, image_shape=(1, 8, 8))
    with pytest.raises(ModelError, match="trained at 8x8 but dataset.resolution gives 16x16"):
        load_unet(ckpt, image_shape=(3, 16, 16))
    m = load_unet(ckpt, image_shape=(3, 16, 16), allow_resolution_change=True)  # §7.7: 256 model at 64x64
    assert m(torch.zeros(1, 3, 16, 16), 10).shape == (1, 3, 16, 16)
    with pytest.raises(ModelError, match="multiple of it"):
        load_unet(ckpt, image_shape=(3, 7, 7), allow_resolution_change=True)
    m = load_unet(ckpt)
    with pytest.raises(ModelError, match=r"expects x of shape \[B, 3, 8, 8\]"):
        m(torch.zeros(1, 3, 16, 16), 10)
    with pytest.raises(ModelError, match="outside 1..T=1000"):
        m(torch.zeros(1, 3, 8, 8), 0)


def test_scheduler_config_is_required_unless_a_schedule_is_given(tmp_path):
    save_tiny_unet(tmp_path, scheduler=False)
    with pytest.raises(CheckpointNotFoundError, match="no scheduler config"):
        load_unet(tmp_path)
    sched = linear_schedule(1000, 1e-4, 0.01)
    m = load_unet(tmp_path, schedule=sched)
    assert np.array_equal(m.alpha_bar, sched.alpha_bar)
    cfg = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "prediction_type": "x_start"}
    (tmp_path / "scheduler_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="prediction_type='x_start'.*supported"):
        load_unet(tmp_path)


def _model_preset(name: str) -> dict:
    """The model group as a run sees it (presets extend one another through their defaults lists)."""
    return OmegaConf.to_container(compose_config([f"model={name}"]).model, resolve=True)


def test_model_presets_and_factory(ckpt):
    presets = {p[:-5]: _model_preset(p[:-5]) for p in os.listdir(CONF)}
    assert presets["ddpm_cifar10"]["path"] == "google/ddpm-cifar10-32"
    assert presets["ddpm_cifar10"]["allow_resolution_change"] is False
    assert presets["ddpm_celebahq"]["path"] == "google/ddpm-celebahq-256"
    assert presets["ddpm_celebahq"]["allow_resolution_change"] is True  # run at 64x64, §7.7
    assert presets["gaussian_oracle"] == {
        "name": "gaussian_oracle",
        "kind": "gaussian_oracle",
        "block_size": 8,  # = patch.size of the default config
        "structure": "block_diagonal",
        "dtype": "float64",
    }
    assert presets["unet"]["kind"] == "unet"

    # a configured schedule other than the checkpoint's own (linear, as DDPM's): the chain must not use it
    sampling = OmegaConf.to_container(compose_config(["schedule=cosine"]), resolve=True)

    def build(model: dict, channels: int = 3):
        """What a stage builds from these config values (assemble: the one switch on model.kind)."""
        cfg = {"model": model, "dataset": {"channels": channels, "resolution": 8}, "device": "cpu"}
        return build_model({**cfg, "schedule": sampling["schedule"], "sampler": sampling["sampler"]}, "test")

    def built(model: dict, channels: int = 3):
        return build(model, channels).model

    unet = build({**presets["unet"], "path": str(ckpt)})
    assert isinstance(unet.model, DiffusersNoisePredictor)
    # the chain is laid on the checkpoint's own ᾱ_t (its scheduler config), at the sampler's timesteps
    np.testing.assert_array_equal(unet.chain.alpha_bar_t, unet.model.alpha_bar[unet.chain.timesteps])
    assert len(unet.chain.timesteps) == sampling["sampler"]["num_steps"]
    with pytest.raises(ConfigError, match="needs model.path"):  # refused with the config, before any stage
        check_ranges({"model": presets["unet"]})
    with pytest.raises(ModelError, match="maps 3 -> 3 channels"):
        built({**presets["ddpm_cifar10"], "path": str(ckpt)}, channels=1)
    with pytest.raises(ConfigError, match="model.kind='vae' is not known"):
        built({**presets["unet"], "kind": "vae"})

    rng = np.random.default_rng(0)
    A = rng.normal(size=(48, 48))
    fit = {"mean": rng.normal(size=48), "cov": A @ A.T / 48}
    sched = linear_schedule(1000)
    oracle = {k: presets["gaussian_oracle"][k] for k in ("structure", "block_size", "dtype")} | {
        "block_size": 2,
        "image_shape": (3, 4, 4),
    }
    o = gaussian_oracle_from_fit(fit, schedule=sched, **oracle)
    assert isinstance(o, GaussianOracle) and o.structure == "block_diagonal" and o.dtype == torch.float64
    full = gaussian_oracle_from_fit(fit, schedule=sched, **{**oracle, "structure": "full"})
    assert full.structure == "full"
    with pytest.raises(ModelError, match="pass schedule="):
        gaussian_oracle_from_fit(fit, schedule=None, **oracle)
    with pytest.raises(ModelError, match="needs the Gaussian fit"):
        gaussian_oracle_from_fit(None, schedule=sched, **oracle)
    with pytest.raises(ModelError, match="needs model.block_size"):
        gaussian_oracle_from_fit(fit, schedule=sched, **{**oracle, "block_size": None})


def test_alpha_bar_comes_from_geometry_reading_of_the_scheduler_config(ckpt):
    m = load_unet(ckpt)
    cfg = json.loads((ckpt / "scheduler_config.json").read_text())
    assert np.array_equal(m.alpha_bar, schedule_from_diffusers_config(cfg).alpha_bar)


@pytest.mark.parametrize("preset", ["pifs_ddpm16", "pifs_ddpm16_collage"])
def test_shipped_models_load_offline_from_their_presets(preset):
    from pipeline.models.assets import resolve_asset_path

    cfg = _model_preset(preset)
    m = load_unet(cfg["path"], image_shape=(3, 16, 16), dtype=cfg["dtype"], device="cpu")
    assert m.prediction_type == "v_prediction" and m.image_shape == (3, 16, 16)
    folder = resolve_asset_path(cfg["path"])
    assert (
        sum(p.stat().st_size for p in folder.iterdir()) < 10e6
    )  # a shipped model stays under 10 MB in the repo
    for name in ("MODEL_CARD.md", "samples.png", "loss_curve.png", "train_summary.json"):
        assert (folder / name).is_file()
    x = torch.zeros(1, 3, 16, 16)
    raw = m.raw(x, 1000)
    a = m.alpha_bar[1000]
    assert torch.allclose(m(x, 1000), np.sqrt(a) * raw, atol=1e-6)  # ε̂ = √ᾱ v̂ + √(1−ᾱ) x at x = 0
