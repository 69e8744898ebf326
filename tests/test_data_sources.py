"""Image folder (CelebA-HQ), scikit-image photograph crops, synthetic Gaussian images, dataset_from_config."""

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from pipeline.data import (
    DatasetError,
    GaussianSource,
    ImageFolderSource,
    NaturalCropsSource,
    dataset_from_config,
)
from pipeline.data.natural_crops import PHOTOGRAPHS, skimage_data_dir
from pipeline.patches import extract_patches, patch_blocks_from_full, patch_indices


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    import socket

    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)


# ---------------------------------------------------------------------------------------------------------
# Image folder


def _save(path: Path, arr: np.ndarray):
    Image.fromarray(arr).save(path)


@pytest.fixture
def face_folder(tmp_path):
    d = tmp_path / "faces"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i, ext in enumerate(["png", "jpg", "png", "PNG", "jpeg"]):
        _save(d / f"{i:05d}.{ext}", rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    return d


def test_folder_order_first_n_shape_and_range(face_folder):
    src = ImageFolderSource(face_folder, num_images=4, resolution=32)
    assert [p.name for p in src.files] == ["00000.png", "00001.jpg", "00002.png", "00003.PNG"]
    x = src.load_all()
    assert x.shape == (4, 3, 32, 32) and x.dtype == np.float32
    assert x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(np.concatenate(list(src.iter_chunks(3))), x)


def test_folder_exact_values_and_antialiasing(tmp_path):
    d = tmp_path / "f"
    d.mkdir()
    _save(d / "a.png", np.full((64, 64, 3), (255, 0, 51), dtype=np.uint8))  # constant colour
    checker = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    _save(d / "b.png", np.repeat(checker[:, :, None], 3, axis=2))  # 1-pixel checkerboard
    x = ImageFolderSource(d, resolution=16, num_workers=1).load_all()
    np.testing.assert_allclose(x[0, :, 5, 5], [1.0, -1.0, 51 / 127.5 - 1], atol=1e-6)
    # Antialiased 4x reduction averages the checkerboard to mid-grey; point sampling would keep ±1.
    assert np.abs(x[1]).max() < 0.05


def test_folder_non_square_is_centre_cropped(tmp_path):
    d = tmp_path / "f"
    d.mkdir()
    img = np.zeros((40, 80, 3), dtype=np.uint8)
    img[:, 20:60] = 255  # the centre square is white, the side bands black
    _save(d / "wide.png", img)
    x = ImageFolderSource(d, resolution=40).load_all()
    assert np.all(x == 1.0)


def test_non_image_file_is_named(face_folder):
    (face_folder / "list_attr.txt").write_text("not an image")
    with pytest.raises(DatasetError, match=r"list_attr\.txt is not an image file"):
        ImageFolderSource(face_folder)


def test_corrupted_image_is_named(face_folder):
    (face_folder / "00001.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(DatasetError, match=r"00001\.jpg is not a readable image"):
        ImageFolderSource(face_folder)


def test_missing_folder_and_too_many_images(face_folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*dataset.root"):
        ImageFolderSource(tmp_path / "nope")
    with pytest.raises(DatasetError, match=r"num_images=6 but .* holds only 5 images"):
        ImageFolderSource(face_folder, num_images=6)


def test_hidden_files_and_subfolders_are_skipped(face_folder):
    (face_folder / ".DS_Store").write_bytes(b"\x00")
    (face_folder / "thumbs").mkdir()
    assert len(ImageFolderSource(face_folder)) == 5


# ---------------------------------------------------------------------------------------------------------
# Photograph crops


def test_photographs_ship_with_scikit_image():
    for name, file in PHOTOGRAPHS.items():
        assert (skimage_data_dir() / file).is_file(), name


def test_crops_are_seeded_and_chunk_independent():
    a = NaturalCropsSource(num_images=50, seed=3)
    x = a.load_all()
    assert x.shape == (50, 3, 32, 32) and x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(NaturalCropsSource(num_images=50, seed=3).load_all(), x)
    np.testing.assert_array_equal(np.concatenate(list(a.iter_chunks(7))), x)
    # Crop i does not depend on how many crops are drawn after it.
    np.testing.assert_array_equal(NaturalCropsSource(num_images=80, seed=3).get(0, 50), x)
    assert not np.array_equal(NaturalCropsSource(num_images=50, seed=4).load_all(), x)


def test_unscaled_crop_is_the_photograph_slice():
    from skimage import io as skio

    src = NaturalCropsSource(num_images=5, resolution=24, seed=1, scale=(1.0, 1.0))
    for i in range(5):
        p = src.crop_parameters(i)
        photo = skio.imread(skimage_data_dir() / PHOTOGRAPHS[p["photograph"]])  # independent decoder
        y, x = p["y"], p["x"]
        expect = photo[y : y + 24, x : x + 24].transpose(2, 0, 1).astype(np.float64) / 127.5 - 1
        np.testing.assert_allclose(src.get(i, i + 1)[0], expect, atol=1e-6)


def test_crop_options_are_checked():
    with pytest.raises(DatasetError, match="unknown names"):
        NaturalCropsSource(photographs=["lena"])
    with pytest.raises(DatasetError, match="do not fit"):
        NaturalCropsSource(resolution=256, scale=(2.0, 2.0))
    g = NaturalCropsSource(num_images=4, channels=1, resolution=16)
    assert g.load_all().shape == (4, 1, 16, 16)


# ---------------------------------------------------------------------------------------------------------
# Gaussian


def test_gaussian_truth_has_the_prescribed_patch_spectra():
    src = GaussianSource(
        num_images=10, image_shape=(3, 16, 16), patch_size=8, lambdas=[5, 10, 20, 40], decay=1.5
    )
    assert src.lambda_k.tolist() == [5, 10, 20, 40]
    for k in range(4):
        w = np.linalg.eigvalsh(src.true_patch_cov[k])[::-1]
        np.testing.assert_allclose(w, src.lambda_k[k] * np.arange(1, 193) ** -1.5, rtol=1e-10, atol=1e-12)
        v = src.true_patch_eigvecs[k, :, 0]
        np.testing.assert_allclose(src.true_patch_cov[k] @ v, src.lambda_k[k] * v, atol=1e-10)
    full = src.true_cov()
    blocks = np.stack([full[np.ix_(i, i)] for i in patch_indices((3, 16, 16), 8)])
    np.testing.assert_allclose(blocks, src.true_patch_cov, atol=1e-12)
    assert np.count_nonzero(np.abs(full) > 1e-14) <= 4 * 192 * 192  # block-diagonal


def test_gaussian_coupling_keeps_blocks_and_is_positive_definite():
    src = GaussianSource(num_images=10, image_shape=(1, 8, 8), patch_size=4, coupling=0.6, seed=2)
    full = src.true_cov()
    np.testing.assert_allclose(patch_blocks_from_full(full, (1, 8, 8), 4), src.true_patch_cov, atol=1e-12)
    assert np.linalg.eigvalsh(full).min() > 0
    idx = patch_indices((1, 8, 8), 4)
    off = full[np.ix_(idx[0], idx[1])]
    assert np.abs(off).max() > 0.1  # patches really are coupled


def test_gaussian_images_depend_only_on_seed_and_index():
    a = GaussianSource(num_images=2500, image_shape=(1, 8, 8), patch_size=4, seed=5)
    x = a.load_all()
    np.testing.assert_array_equal(np.concatenate(list(a.iter_chunks(333))), x)
    np.testing.assert_array_equal(GaussianSource(num_images=1200, image_shape=(1, 8, 8), patch_size=4, seed=5)
                                  .load_all(), x[:1200])  # fmt: skip
    # Second moments of the draws match the truth (exact test in test_covariance.py).
    p = extract_patches(x.astype(np.float64), 4)
    assert np.abs(np.cov(p[:, 0].T) - a.true_patch_cov[0]).max() < 0.25 * a.lambda_k.max()


# ---------------------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize("name", ["natural_crops", "gaussian", "celebahq", "cifar10"])
def test_conf_files_build_their_source(name, face_folder, tmp_path):
    from tests.conftest import compose_config

    # as a run sees the group (gaussian's block size is ${patch.size})
    cfg = OmegaConf.create(OmegaConf.to_container(compose_config([f"dataset={name}"]).dataset, resolve=True))
    assert set(cfg) >= {"name", "root", "num_images", "resolution", "channels", "split", "seed", "download"}
    assert cfg.name == name
    cfg.num_images = 5
    if name == "celebahq":
        cfg.root = str(face_folder)
    if name == "cifar10":
        from tests.test_data_cifar10 import build_binary, make_images

        build_binary(tmp_path / "c", *make_images(0))
        cfg.root = str(tmp_path / "c")
    src = dataset_from_config(cfg)
    assert len(src) == 5 and src.name == name
    assert src.load_all().shape == (5, *src.image_shape)


def test_config_errors_name_the_key():
    """A dataset node is checked against its kind's schema: the key, and the fix, in one line."""
    from pipeline.errors import ConfigError
    from tests.conftest import compose_config

    def node(name: str) -> dict:
        return OmegaConf.to_container(compose_config([f"dataset={name}"]).dataset, resolve=True)

    crops = node("natural_crops")
    with pytest.raises(ConfigError, match="dataset.name=imagenet is not a dataset kind"):
        dataset_from_config({**crops, "name": "imagenet"})
    with pytest.raises(ConfigError, match="unknown key dataset.resolutoin — did you mean dataset.resolution"):
        dataset_from_config({**crops, "resolutoin": 32})
    with pytest.raises(ConfigError, match="dataset.channels has no value"):
        dataset_from_config({k: v for k, v in crops.items() if k != "channels"})
    with pytest.raises(ConfigError, match="download=true is not supported"):
        dataset_from_config({**node("celebahq"), "root": "x", "download": True})
