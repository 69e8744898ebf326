"""The rehearsal of the paper protocols (benchmarks/rehearsal, docs/rehearsal.md).

Fast: the fixtures are in the formats the loaders expect (a CIFAR-10 python archive the loader refuses under
the official md5 and extracts under the md5 of the file made; a CelebA-HQ folder), the architectures are the
checkpoints' (35.7M parameters for ddpm-cifar10-32, attention at 16x16), a tampered fixture is caught, the
presets are unchanged except for the rehearsal's overrides, and the shortened CIFAR-10 protocol runs
covariance -> trajectories -> jacobian in process at the true architecture.
Slow: `python -m benchmarks.rehearsal <protocol> --quick` through dvc exp run and the submitit_local multirun.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from benchmarks.rehearsal import fixtures as fx
from benchmarks.rehearsal.run import PROTOCOLS, ROOT, overrides
from pipeline.errors import PipelineError
from tests.conftest import compose_config


def test_cifar10_archive_is_refused_under_the_official_md5_and_extracted_under_its_own(tmp_path):
    from pipeline.data.cifar10 import ARCHIVES, Cifar10Source

    archive = fx.make_cifar10_archive(tmp_path, per_batch=10)
    with pytest.raises(PipelineError, match="checksum mismatch.*c58f30108f718f92721af3b95e74349a"):
        Cifar10Source(tmp_path)
    assert not (tmp_path / "cifar-10-batches-py").exists()  # nothing extracted from a refused archive
    md5 = fx.file_digests(archive)["md5"]
    assert md5 != ARCHIVES["python"].md5
    fx.extract_cifar10(tmp_path, md5)
    train, test = (
        Cifar10Source(tmp_path, num_images=None),
        Cifar10Source(tmp_path, split="test", num_images=None),
    )
    assert (len(train), len(test), train.version) == (50, 10, "python")
    pix = train.read_uint8(0, 50)
    assert pix.shape == (50, 3, 32, 32) and pix.dtype == np.uint8 and pix.std() > 10
    assert set(train.labels()) <= set(range(10))


def test_celebahq_folder_loads_as_the_loader_expects(tmp_path):
    from pipeline.data.celebahq import ImageFolderSource

    fx.make_celebahq_folder(tmp_path, n=3, size=64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.jpg", "00001.jpg", "00002.jpg"]
    src = ImageFolderSource(tmp_path, num_images=3, resolution=32)
    x = next(src.iter_chunks(3))
    assert x.shape == (3, 3, 32, 32) and -1 <= x.min() < x.max() <= 1


def test_architectures_are_the_checkpoints():
    from diffusers import UNet2DModel

    def build(cfg):
        with torch.device("meta"):
            return UNet2DModel(**{k: v for k, v in cfg.items() if not k.startswith("_")})

    cifar = build(fx.CIFAR10_UNET)
    # google/ddpm-cifar10-32: 35.7M parameters (model card; Ho et al. 2020, Table 1 CIFAR-10 model)
    assert round(sum(p.numel() for p in cifar.parameters()) / 1e6, 1) == 35.7
    celeb = build(fx.CELEBAHQ_UNET)
    assert len(celeb.down_blocks) == 6 and celeb.config.sample_size == 256
    # the attention blocks sit at 16x16 of a 256 input (Ho et al.'s 256-pixel models) = 4x4 at §7.7's 64x64
    assert [type(b).__name__ for b in celeb.down_blocks].index("AttnDownBlock2D") == 4
    for sched in (fx.CIFAR10_SCHEDULER, fx.CELEBAHQ_SCHEDULER):
        from pipeline.models.unet import alpha_bar_from_scheduler_config

        ab = alpha_bar_from_scheduler_config(sched)
        betas = 1 - ab[1:] / ab[:-1]
        assert len(ab) == 1001 and betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)


def test_a_tampered_fixture_is_caught(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"abc")
    fx.write_manifest(tmp_path, {"profile": "test"})
    assert fx.verify_manifest(tmp_path)["files"]["a/x.bin"]["bytes"] == 3
    (tmp_path / "a" / "x.bin").write_bytes(b"abd")
    with pytest.raises(PipelineError, match="sha256 .* does not match"):
        fx.verify_manifest(tmp_path)


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_presets_are_unchanged_except_the_rehearsal_overrides(name, tmp_path):
    from omegaconf import OmegaConf

    preset = _flat(
        OmegaConf.to_container(compose_config([f"experiment={PROTOCOLS[name].preset}"]), resolve=False)
    )
    rehearsed = _flat(
        OmegaConf.to_container(compose_config(overrides(name, tmp_path, False, "cpu", 1)), resolve=False)
    )
    changed = {k for k in preset if preset[k] != rehearsed.get(k)} | (set(rehearsed) - set(preset))
    allowed = {
        "dataset.root",
        "model.path",
        "num_seeds",
        "points.steps",
        "points.block_steps",
        "proxy.images",
        "proxy.timesteps",
        "device",
        "progress",
        "torch_threads",
    }
    assert changed <= allowed, changed - allowed
    assert {"dataset.root", "model.path", "num_seeds", "points.steps"} <= changed


@pytest.mark.integration
def test_shortened_cifar10_protocol_runs_at_the_true_architecture_in_process(tmp_path, monkeypatch):
    """The --quick overrides of cifar10_paper on a 600-image archive and the 35.7M-parameter UNet:
    covariance, trajectories and one measured point (14 s on the 2-core CPU at load average 1.3)."""
    from stages import covariance, jacobian, trajectories

    monkeypatch.chdir(tmp_path)
    fx.save_checkpoint(tmp_path / "ddpm-cifar10-32", fx.CIFAR10_UNET, fx.CIFAR10_SCHEDULER)
    archive = fx.make_cifar10_archive(tmp_path / "cifar10", per_batch=100)
    fx.extract_cifar10(tmp_path / "cifar10", fx.file_digests(archive)["md5"])
    ov = overrides("cifar10", tmp_path, True, "cpu", 1) + ["tracking=off", "proxy.images=0"]
    cfg = compose_config(ov)
    covariance.run(cfg)
    traj = trajectories.run(cfg).out_dir
    jac = jacobian.run(cfg).out_dir
    meta = json.loads((jac / "meta.json").read_text())
    assert meta["config"]["model"]["path"] == str(tmp_path / "ddpm-cifar10-32")
    with np.load(traj / "seed-0.npz") as z:
        assert z["x"].shape == (11, 3, 32, 32) and np.isfinite(z["x"]).all()
    rows = (jac / "global.csv").read_text().splitlines()
    head = rows[0].split(",")
    row = dict(zip(head, rows[1].split(","), strict=True))
    assert len(rows) == 2 and int(row["t"]) == 501 and int(row["n"]) == 3072 and int(row["M"]) == 16
    assert float(row["kappa_pi"]) > 0


@pytest.fixture(scope="module")
def quick_fixtures(tmp_path_factory):
    """One set of --quick fixtures (both checkpoints, ~600 MB) for both protocols' rehearsals."""
    return tmp_path_factory.mktemp("rehearsal") / "fixtures"


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_quick_rehearsal_through_dvc_and_the_submitit_multirun(name, tmp_path, quick_fixtures):
    """From a fresh clone of HEAD: dvc exp run and hydra/launcher=local, both checked by the runner."""
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.rehearsal", name, "--quick", "--threads", "1", "--json", str(out)]
        + ["--fixtures", str(quick_fixtures)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (res,) = json.loads(out.read_text())["results"]
    for route in ("dvc", "multirun"):
        assert res[route]["checks"]["n"] == (3072 if name == "cifar10" else 12288)
        assert set(res[route]["stages"]) >= {"covariance", "trajectories", "jacobian"}
