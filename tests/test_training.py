"""DDPM training entry: DSM loss conventions, Min-SNR, EMA, bit-exact resume, the saved folder.

Expected values: the exact ε of x_t built from x_0 = 0 (a closed-form oracle module), explicit weight
formulas, and a straight run against an interrupted-and-resumed one.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.geometry import linear_schedule
from pipeline.models.assets import resolve_asset_path
from pipeline.training import (
    TrainConfig,
    diffusers_scheduler_config,
    dsm_loss,
    load_checkpoint,
    new_state,
    save_model,
    train,
    train_step,
)

SHAPE = (3, 8, 8)
AB = linear_schedule().alpha_bar.copy()


def tiny_cfg(**kw) -> TrainConfig:
    base = dict(
        steps=4,
        batch_size=4,
        warmup_steps=2,
        block_out_channels=(8, 16),
        attention_head_dim=8,
        norm_num_groups=4,
        checkpoint_every=2,
        log_every=1,
        ema_decay=0.9,
    )
    return TrainConfig(**{**base, **kw})


def tiny_data(n: int = 16) -> torch.Tensor:
    return torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(0)) * 2 - 1


class ZeroDataOracle(torch.nn.Module):
    """ε* for x_0 = 0: x_t = √v_t ε, so ε = x_t / √v_t — called with the diffusers index t − 1."""

    def forward(self, x, index, return_dict=False):
        v = torch.from_numpy(1 - AB)[index + 1].to(x.dtype).view(-1, 1, 1, 1)
        return (x / v.sqrt(),)


def test_dsm_loss_is_zero_for_the_exact_noise_at_paper_t():
    x0 = torch.zeros((6, *SHAPE), dtype=torch.float64)
    t = torch.tensor([1, 2, 10, 500, 999, 1000])
    noise = torch.randn(x0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    loss, _, xt = dsm_loss(ZeroDataOracle(), x0, t, noise, torch.from_numpy(AB))
    assert torch.allclose(loss, torch.zeros(6, dtype=torch.float64), atol=1e-20)
    torch.testing.assert_close(xt, torch.from_numpy(np.sqrt(1 - AB[t.numpy()])).view(-1, 1, 1, 1) * noise)


def test_min_snr_weight():
    class Zero(torch.nn.Module):
        def forward(self, x, index, return_dict=False):
            return (torch.zeros_like(x),)

    x0 = torch.zeros((3, *SHAPE), dtype=torch.float64)
    t = torch.tensor([1, 300, 1000])
    noise = torch.randn(x0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    plain, _, _ = dsm_loss(Zero(), x0, t, noise, torch.from_numpy(AB))
    gamma = 5.0
    weighted, _, _ = dsm_loss(Zero(), x0, t, noise, torch.from_numpy(AB), min_snr_gamma=gamma)
    snr = AB[t.numpy()] / (1 - AB[t.numpy()])
    torch.testing.assert_close(plain, noise.pow(2).flatten(1).mean(1))
    torch.testing.assert_close(weighted, plain * torch.from_numpy(np.minimum(snr, gamma) / snr))
    assert snr[0] > gamma > snr[2]  # one clamped, one unclamped weight


def test_ema_update_after_one_step():
    cfg = tiny_cfg(ema_decay=0.8)
    state = new_state(cfg, SHAPE)
    before = [p.detach().clone() for p in state.unet.parameters()]
    train_step(state, cfg, tiny_data(), torch.from_numpy(AB))
    for e, p0, p1 in zip(state.ema.parameters(), before, state.unet.parameters(), strict=True):
        torch.testing.assert_close(e, 0.8 * p0 + 0.2 * p1.detach())


@pytest.mark.parametrize("mu_reg", [0.0, 0.1])
def test_resume_continues_bit_for_bit(tmp_path, mu_reg):
    cfg = tiny_cfg(mu_reg=mu_reg, reg_batch=2)
    data = tiny_data()
    straight = train(cfg, data, AB, tmp_path / "a", progress=False)
    train(cfg, data, AB, tmp_path / "b", progress=False, stop_after=2)  # "killed" after 2 steps
    resumed = train(cfg, data, AB, tmp_path / "b", progress=False)
    assert straight.step == resumed.step == 4
    for (k, a), b in zip(straight.unet.state_dict().items(), resumed.unet.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    for a, b in zip(straight.ema.state_dict().values(), resumed.ema.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [h["dsm"] for h in straight.history] == [h["dsm"] for h in resumed.history]
    if mu_reg:
        assert all(h["collage"] > 0 for h in straight.history)
    # the checkpoint holds the finished state
    fresh = new_state(cfg, SHAPE)
    assert load_checkpoint(fresh, tmp_path / "b") and fresh.step == 4


def test_collage_term_changes_the_update():
    data = tiny_data()
    a, b = new_state(tiny_cfg(), SHAPE), new_state(tiny_cfg(mu_reg=1.0, reg_batch=2), SHAPE)
    train_step(a, tiny_cfg(), data, torch.from_numpy(AB))
    out = train_step(b, tiny_cfg(mu_reg=1.0, reg_batch=2), data, torch.from_numpy(AB))
    assert out["loss"] == pytest.approx(out["dsm"] + out["collage"], rel=1e-6)
    assert not all(torch.equal(p, q) for p, q in zip(a.unet.parameters(), b.unet.parameters(), strict=True))


def test_saved_folder_loads_as_a_noise_predictor_with_the_training_schedule(tmp_path):
    from pipeline.models import load_unet

    cfg = tiny_cfg()
    state = new_state(cfg, SHAPE)
    sched = diffusers_scheduler_config(
        {"kind": "linear", "num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02}
    )
    save_model(state.ema, tmp_path / "m", sched)
    model = load_unet(tmp_path / "m", dtype="float32", device="cpu")
    assert np.abs(model.alpha_bar - AB).max() < 1e-6
    x = torch.randn((2, *SHAPE), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = state.ema(x, torch.tensor(41)).sample
    torch.testing.assert_close(model(x, 42), want)  # paper t = 42 is diffusers index 41
    assert json.loads((tmp_path / "m" / "scheduler_config.json").read_text())["prediction_type"] == "epsilon"


def test_bad_configs_name_the_fix():
    with pytest.raises(ValueError, match="mu_reg"):
        TrainConfig(mu_reg=-1)
    # a misspelt recipe key is refused by the config schema when the train node is composed or checked
    from omegaconf import OmegaConf

    from pipeline.schema import checked_node
    from tests.conftest import compose_config

    node = OmegaConf.to_container(compose_config(["train=smoke"], config_name="train").train, resolve=True)
    with pytest.raises(ValueError, match="unknown key train.stepz — did you mean train.steps"):
        checked_node("train", {**node, "stepz": 3})
    with pytest.raises(ValueError, match="diffusers scheduler"):
        diffusers_scheduler_config({"kind": "explicit"})


def test_pkg_paths_resolve_inside_the_package(tmp_path):
    import pipeline

    assert resolve_asset_path("pkg://pipeline/models") == (
        __import__("pathlib").Path(pipeline.__file__).resolve().parent / "models"
    )
    assert str(resolve_asset_path(tmp_path)) == str(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_asset_path("pkg://pipeline/assets/nope")
    with pytest.raises(ValueError, match="pkg://pipeline/"):
        resolve_asset_path("pkg://other/x")


def test_train_entry_point_writes_a_loadable_model_folder(project):
    from pipeline.models import load_unet
    from stages.train import run
    from tests.conftest import compose_config

    cfg = compose_config(
        [
            "experiment=learned16",
            "train=smoke",
            "dataset.num_images=32",
            "dataset.resolution=8",
            "patch.size=4",
            "train.eval_images=8",
            "progress=false",
        ],
        config_name="train",
    )
    folder = run(cfg)
    names = {p.name for p in folder.iterdir()}
    assert {
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "scheduler_config.json",
        "samples.png",
        "loss_curve.png",
        "MODEL_CARD.md",
        "train_summary.json",
    } <= names
    summary = json.loads((folder / "train_summary.json").read_text())
    assert summary["steps"] == 4 and len(summary["history"]) == 2
    assert load_unet(folder, device="cpu").image_shape == (3, 8, 8)
    assert not (folder.parent / f".work-{folder.name}").exists()


def test_patch_covariance_distance_closed_forms():
    from pipeline.training import patch_covariance_distance

    data = np.random.default_rng(0).normal(0.1, 0.3, size=(500, *SHAPE))
    same = patch_covariance_distance(data, data, 4)
    assert same["cov_rel"] == pytest.approx(0, abs=1e-12) and same["var_ratio"] == pytest.approx(1.0)
    doubled = patch_covariance_distance(2 * data, data, 4)  # Σ -> 4Σ: ‖4Σ − Σ‖/‖Σ‖ = 3
    assert doubled["cov_rel"] == pytest.approx(3.0) and doubled["var_ratio"] == pytest.approx(4.0)
    shifted = patch_covariance_distance(data + 0.5, data, 4)
    assert shifted["cov_rel"] == pytest.approx(0, abs=1e-9) and shifted["mean_rel"] > 0
