"""Every preset composes; bad configs are refused before any work starts."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from pipeline.errors import ConfigError
from pipeline.runkeys import run_key
from pipeline.settings import prepare_config
from tests.conftest import CONF, compose_config

PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_the_four_named_presets_exist():
    assert {"default", "smoke", "cifar10_paper", "celebahq_paper"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_validates(preset):
    cfg = compose_config([f"experiment={preset}"], return_hydra_config=True)
    plain = prepare_config(cfg)
    for group in ("dataset", "model", "schedule", "sampler", "patch", "measure", "tracking", "paths"):
        assert group in plain, f"{preset}: group {group} missing"
    assert plain["dataset"]["resolution"] % plain["patch"]["size"] == 0


def test_paper_presets_follow_the_paper_protocols():
    c = prepare_config(compose_config(["experiment=cifar10_paper"]))
    # §7.1: 50k CIFAR-10 train images, 8x8 patches, 50-step DDIM, K_PI = 20, 8 seeds
    assert (c["dataset"]["name"], c["dataset"]["num_images"], c["dataset"]["split"]) == (
        "cifar10",
        50000,
        "train",
    )
    assert c["patch"]["size"] == 8 and c["sampler"]["num_steps"] == 50
    assert c["sampler"]["spacing"] == "leading"  # Table 4 labels: 980, ..., 20 in diffusers numbering
    assert c["measure"]["power_iters"] == 20 and c["num_seeds"] == 8
    assert c["model"]["path"] == "google/ddpm-cifar10-32"
    h = prepare_config(compose_config(["experiment=celebahq_paper"]))
    # §7.7: 64x64, 16x16 patches, 200 images, 49-step DDIM, 8 trajectories
    assert (h["dataset"]["resolution"], h["patch"]["size"], h["dataset"]["num_images"]) == (64, 16, 200)
    assert h["sampler"]["num_steps"] == 49 and h["num_seeds"] == 8
    assert h["model"]["path"] == "google/ddpm-celebahq-256"


def test_default_is_the_offline_embedded_run():
    c = prepare_config(compose_config([]))
    assert c["dataset"]["name"] == "natural_crops" and c["dataset"]["resolution"] == 32
    assert c["model"]["kind"] == "gaussian_oracle" and c["patch"]["size"] == 8
    assert c["sampler"]["num_steps"] == 50


@pytest.mark.parametrize("bad", [5, 3, 7])
def test_patch_size_not_dividing_the_image_is_refused(bad):
    with pytest.raises(ConfigError, match=rf"patch.size={bad} does not divide the image size 32"):
        prepare_config(compose_config([f"patch.size={bad}"]))


def test_patch_size_is_refused_before_any_stage_work(project):
    from stages import covariance

    with pytest.raises(ConfigError, match="does not divide"):
        covariance.run(compose_config(["experiment=smoke", "patch.size=5", "tracking.enabled=false"]))
    assert not (project / "outputs").exists()


def test_params_yaml_is_in_sync_with_conf():
    from stages.params import PARAMS_FILES, composed_params

    for name, overrides in PARAMS_FILES.items():
        committed = OmegaConf.load(CONF.parent / name)
        assert committed == OmegaConf.create(composed_params(overrides)), (
            f"{name}: run `python -m stages.params`"
        )
    assert OmegaConf.load(CONF.parent / "params_learned.yaml").model.name == "pifs_ddpm16"


def test_params_file_overrides_sections_but_not_runtime_keys(tmp_path):
    pf = tmp_path / "params.yaml"
    pf.write_text("patch:\n  size: 4\nrun_key: null\n")
    c = prepare_config(compose_config([f"params_file={pf}", "run_key=dvc"]))
    assert c["patch"]["size"] == 4 and c["run_key"] == "dvc"


def test_run_keys_separate_sweeps_and_share_upstream():
    a = prepare_config(compose_config(["patch.size=8"]))
    b = prepare_config(compose_config(["patch.size=4"]))
    assert run_key("covariance", a) != run_key("covariance", b)
    assert run_key("jacobian", a) != run_key("jacobian", b)
    # the oracle's Σ blocks follow patch.size, so its trajectories are another model's ...
    assert run_key("trajectories", a) != run_key("trajectories", b)
    # ... while a patch-size sweep of a model that does not depend on P reuses one set of trajectories
    u8, u4 = (prepare_config(compose_config(["experiment=learned16", f"patch.size={p}"])) for p in (8, 4))
    assert run_key("jacobian", u8) != run_key("jacobian", u4)
    assert run_key("trajectories", u8) == run_key("trajectories", u4)
    pinned = prepare_config(compose_config(["patch.size=4", "model.block_size=8"]))
    assert run_key("trajectories", a) == run_key("trajectories", pinned)
    s1 = prepare_config(compose_config(["seed=1"]))
    assert run_key("trajectories", a) != run_key("trajectories", s1)
    assert run_key("covariance", a) == run_key("covariance", s1)


def test_run_keys_name_the_step_count_the_chain_runs():
    """A seed sweep of the 10-step smoke chain must not be filed under "ddim50"."""
    from pipeline.runkeys import sampler_label

    assert sampler_label({"name": "ddim50", "num_steps": 10, "spacing": "trailing"}) == "ddim10"
    assert sampler_label({"name": "ddim50_leading", "num_steps": 20}) == "ddim20_leading"
    assert sampler_label({"name": "ddim49", "num_steps": 49, "spacing": "stride"}) == "ddim49"
    assert sampler_label({"name": "full", "num_steps": None, "spacing": "full"}) == "full"
    assert sampler_label({"name": "optimal", "num_steps": 12}) == "optimal12"
    cfg = prepare_config(compose_config(["experiment=smoke", "sampler.num_steps=10"]))
    assert "-ddim10-" in run_key("trajectories", cfg)


def test_one_key_per_quantity_the_patch_size():
    # model.block_size (the oracle's Σ blocks) and dataset.patch_size (the Gaussian source's blocks) are
    # patch.size unless set on their own
    for P in (2, 4, 8):
        c = prepare_config(compose_config([f"patch.size={P}", "dataset=gaussian"]))
        assert c["model"]["block_size"] == c["dataset"]["patch_size"] == P
    c = prepare_config(compose_config(["patch.size=4", "model.block_size=8"]))
    assert (c["patch"]["size"], c["model"]["block_size"]) == (4, 8)


GROUPS = sorted(
    p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("experiment", "hydra", "local")
)


@pytest.mark.parametrize(
    "group, option",
    [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))],
)
def test_every_group_option_composes_and_holds_only_what_it_changes(group, option):
    # the train group belongs to training's own primary config (conf/train.yaml)
    name = "train" if group == "train" else "config"
    composed = OmegaConf.to_container(
        compose_config([f"{group}={option}"], config_name=name)[group], resolve=True
    )
    raw = OmegaConf.load(CONF / group / f"{option}.yaml")
    # the option's schema (pipeline.schema) comes first in its defaults list; its parent options follow
    parents = [d for d in raw.get("defaults", []) if d != "_self_" and not str(d).startswith("/schema_")]
    for parent in parents:
        base = OmegaConf.to_container(
            compose_config([f"{group}={parent}"], config_name=name)[group], resolve=True
        )
        own = {k for k in raw if k != "defaults"}
        # an option built on another states only the keys it changes, and changes every key it states
        assert {k for k in composed if composed.get(k) != base.get(k)} == own, f"{group}/{option}"
