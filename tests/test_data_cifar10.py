"""CIFAR-10 readers on tiny archives built here in the official layouts (never the network)."""

import dataclasses
import hashlib
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.data import Cifar10Source, DatasetError, dataset_from_config, download_cifar10
from pipeline.data import cifar10 as cifar_mod
from pipeline.data.cifar10 import ARCHIVES, load_python_batch, write_binary_batch

PER_BATCH = 6  # the official files hold 10,000 images each; the layout is the same


# ---------------------------------------------------------------------------------------------------------
# Archive builders


def _sbs(s: bytes) -> bytes:
    """pickle SHORT_BINSTRING: how Python 2 wrote a str (the official batches were pickled by Python 2)."""
    return b"U" + bytes([len(s)]) + s


def _py2_ndarray_uint8(a: np.ndarray) -> bytes:
    """The opcodes Python 2 numpy emits for a C-contiguous uint8 ndarray (ndarray.__reduce__ protocol 2)."""
    shape = b"".join(b"J" + struct.pack("<i", d) for d in a.shape)
    raw = a.tobytes()
    return (
        b"cnumpy.core.multiarray\n_reconstruct\n"
        + b"cnumpy\nndarray\n"
        + b"K\x00\x85"  # (0,)
        + _sbs(b"b")
        + b"\x87R"  # TUPLE3, REDUCE
        + b"(K\x01"  # state: (1, shape, dtype, False, raw)
        + b"(" + shape + b"t"
        + b"cnumpy\ndtype\n" + _sbs(b"u1") + b"K\x00K\x01\x87R"
        + b"(K\x03" + _sbs(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        + b"\x89"  # False
        + b"T" + struct.pack("<I", len(raw)) + raw  # BINSTRING
        + b"tb"
    )  # fmt: skip


def py2_batch_pickle(pixels: np.ndarray, labels: np.ndarray, batch_label: bytes) -> bytes:
    """A data_batch_* file as the official archive stores it: a py2 dict {batch_label, labels, data, filenames}."""
    labels_op = b"](" + b"".join(b"K" + bytes([int(v)]) for v in labels) + b"e"
    names_op = b"](" + b"".join(_sbs(b"img_%05d.png" % i) for i in range(len(labels))) + b"e"
    return (
        b"\x80\x02}("
        + _sbs(b"batch_label") + _sbs(batch_label)
        + _sbs(b"labels") + labels_op
        + _sbs(b"data") + _py2_ndarray_uint8(pixels.reshape(len(labels), -1))
        + _sbs(b"filenames") + names_op
        + b"u."
    )  # fmt: skip


def make_images(seed: int):
    rng = np.random.default_rng(seed)
    train = rng.integers(0, 256, size=(5 * PER_BATCH, 3, 32, 32), dtype=np.uint8)
    test = rng.integers(0, 256, size=(PER_BATCH, 3, 32, 32), dtype=np.uint8)
    return train, rng.integers(0, 10, 5 * PER_BATCH), test, rng.integers(0, 10, PER_BATCH)


def build_binary(root: Path, train, train_labels, test, test_labels) -> Path:
    d = root / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    for i in range(5):
        s = slice(i * PER_BATCH, (i + 1) * PER_BATCH)
        write_binary_batch(d / f"data_batch_{i + 1}.bin", train[s], train_labels[s])
    write_binary_batch(d / "test_batch.bin", test, test_labels)
    (d / "batches.meta.txt").write_text("airplane\nautomobile\n")
    return d


def build_python(root: Path, train, train_labels, test, test_labels) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for i in range(5):
        s = slice(i * PER_BATCH, (i + 1) * PER_BATCH)
        blob = py2_batch_pickle(train[s], train_labels[s], b"training batch %d of 5" % (i + 1))
        (d / f"data_batch_{i + 1}").write_bytes(blob)
    (d / "test_batch").write_bytes(py2_batch_pickle(test, test_labels, b"testing batch 1 of 1"))
    return d


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    data = make_images(0)
    root_bin = tmp_path_factory.mktemp("bin")
    root_py = tmp_path_factory.mktemp("py")
    build_binary(root_bin, *data)
    build_python(root_py, *data)
    return root_bin, root_py, data


def _tar(path: Path, folder: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return path


# ---------------------------------------------------------------------------------------------------------
# Reading


def test_handwritten_py2_pickle_is_what_plain_pickle_reads(archives):
    """Guards the fixture: the trusted stdlib loader reads our official-layout bytes to the same arrays."""
    _, root_py, (train, labels, _, _) = archives
    with open(root_py / "cifar-10-batches-py" / "data_batch_2", "rb") as f:
        ref = pickle.load(f, encoding="latin1")  # our own file, written above
    assert sorted(ref) == ["batch_label", "data", "filenames", "labels"]
    np.testing.assert_array_equal(ref["data"], train[PER_BATCH : 2 * PER_BATCH].reshape(PER_BATCH, -1))
    data, lab = load_python_batch(root_py / "cifar-10-batches-py" / "data_batch_2")
    np.testing.assert_array_equal(data, ref["data"])
    np.testing.assert_array_equal(lab, labels[PER_BATCH : 2 * PER_BATCH])


@pytest.mark.parametrize("split", ["train", "test"])
def test_binary_and_python_readers_identical(archives, split):
    root_bin, root_py, (train, train_labels, test, test_labels) = archives
    a = Cifar10Source(root_bin, split=split)
    b = Cifar10Source(root_py, split=split)
    assert (a.version, b.version) == ("binary", "python")
    xa, xb = a.load_all(), b.load_all()
    assert xa.dtype == np.float32 and xa.shape == ((5 if split == "train" else 1) * PER_BATCH, 3, 32, 32)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(a.labels(), b.labels())
    u8, lab = (train, train_labels) if split == "train" else (test, test_labels)
    # Independent scaling: byte v -> v / 127.5 - 1, layout (C, H, W) = the record's R, G, B planes.
    np.testing.assert_array_equal(xa, (u8.astype(np.float64) / 127.5 - 1).astype(np.float32))
    np.testing.assert_array_equal(a.labels(), lab)
    assert xa.min() >= -1 and xa.max() <= 1


def test_binary_record_layout_byte_by_byte(tmp_path):
    """Record = label byte, then 1024 R, 1024 G, 1024 B bytes, each 32x32 row-major."""
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    rec = np.zeros((2, 3073), dtype=np.uint8)
    rec[1, 0] = 7
    rec[1, 1 + 1024 + 32 * 5 + 9] = 255  # image 1, green, row 5, col 9
    for name in ["test_batch.bin"]:
        (d / name).write_bytes(rec.tobytes())
    src = Cifar10Source(tmp_path, split="test")
    x = src.load_all()
    assert x[1, 1, 5, 9] == 1.0 and np.count_nonzero(x != -1.0) == 1
    assert src.labels().tolist() == [0, 7]


@pytest.mark.parametrize("which", [0, 1])
def test_chunks_across_batch_files_equal_one_read(archives, which):
    src = Cifar10Source(archives[which], split="train")
    full = src.load_all()
    for chunk in (1, 4, 7, 30, 100):
        np.testing.assert_array_equal(np.concatenate(list(src.iter_chunks(chunk))), full)
    np.testing.assert_array_equal(np.concatenate(list(src.iter_chunks(5, start=11))), full[11:])


def test_first_n_images_and_too_many(archives):
    src = Cifar10Source(archives[0], split="train", num_images=8)
    assert len(src) == 8
    np.testing.assert_array_equal(src.load_all(), Cifar10Source(archives[0]).load_all()[:8])
    with pytest.raises(DatasetError, match=r"num_images=31 but .* holds only 30 images"):
        Cifar10Source(archives[0], split="train", num_images=31)


def test_root_pointing_at_batches_folder(archives):
    src = Cifar10Source(archives[0] / "cifar-10-batches-bin", split="test")
    assert len(src) == PER_BATCH


def test_dataset_from_config(archives):
    from omegaconf import OmegaConf

    from pipeline.errors import ConfigError
    from tests.conftest import compose_config

    node = OmegaConf.to_container(compose_config(["dataset=cifar10"]).dataset, resolve=True)
    node.update(root=str(archives[1]), num_images=10, split="train")
    src = dataset_from_config(node)
    assert isinstance(src, Cifar10Source) and len(src) == 10 and src.image_shape == (3, 32, 32)
    with pytest.raises(ConfigError, match="32x32 RGB"):
        dataset_from_config({**node, "resolution": 64})


# ---------------------------------------------------------------------------------------------------------
# Bad input


def test_missing_root_tells_where_to_put_the_files(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        Cifar10Source(tmp_path / "nowhere")
    msg = str(e.value)
    for needle in (
        "does not exist",
        "cifar-10-batches-bin",
        "cifar-10-python.tar.gz",
        "dataset.root",
        "download",
    ):
        assert needle in msg
    with pytest.raises(FileNotFoundError, match="no CIFAR-10 batches found"):
        Cifar10Source(tmp_path)


def test_truncated_binary_file_is_named(archives, tmp_path):
    root = tmp_path / "r"
    build_binary(root, *make_images(1))
    f = root / "cifar-10-batches-bin" / "data_batch_3.bin"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(DatasetError, match=r"data_batch_3\.bin has .* truncated"):
        Cifar10Source(root)
    # A whole record missing: the batch sizes disagree.
    f.write_bytes((archives[0] / "cifar-10-batches-bin" / "data_batch_3.bin").read_bytes()[:-3073])
    with pytest.raises(DatasetError, match=r"data_batch_3\.bin holds 5 images .* truncated"):
        Cifar10Source(root)


def test_missing_batch_file_is_named(tmp_path):
    build_binary(tmp_path, *make_images(1))
    (tmp_path / "cifar-10-batches-bin" / "data_batch_5.bin").unlink()
    with pytest.raises(DatasetError, match=r"data_batch_5\.bin is missing"):
        Cifar10Source(tmp_path)


def test_truncated_or_corrupted_python_batch_is_named(tmp_path):
    build_python(tmp_path, *make_images(2))
    f = tmp_path / "cifar-10-batches-py" / "data_batch_4"
    blob = f.read_bytes()
    f.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetError, match=r"data_batch_4 is not a readable CIFAR-10 python batch"):
        Cifar10Source(tmp_path)
    f.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DatasetError, match=r"data_batch_4"):
        Cifar10Source(tmp_path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_python_reader_refuses_code_in_pickles(tmp_path):
    build_python(tmp_path, *make_images(3))
    f = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    f.write_bytes(pickle.dumps({"data": _Evil(), "labels": []}, protocol=2))
    with pytest.raises(DatasetError, match=r"data_batch_1 .*refusing to load global (posix|os)\.system"):
        Cifar10Source(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# Archive verification and download (file:// URLs and local files only)


@pytest.fixture
def tiny_binary_tar(tmp_path):
    src = tmp_path / "src"
    build_binary(src, *make_images(4))
    tar = _tar(tmp_path / "cifar-10-binary.tar.gz", src / "cifar-10-batches-bin")
    return tar, hashlib.md5(tar.read_bytes()).hexdigest()


def test_placed_archive_with_wrong_checksum_is_refused(tiny_binary_tar, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    placed = root / ARCHIVES["binary"].filename
    placed.write_bytes(tiny_binary_tar[0].read_bytes())  # not the official archive: md5 differs
    with pytest.raises(DatasetError) as e:
        Cifar10Source(root)
    assert "checksum mismatch" in str(e.value) and str(placed) in str(e.value)
    assert sorted(p.name for p in root.iterdir()) == [placed.name]  # nothing extracted, nothing left over


def test_placed_archive_with_right_checksum_is_extracted(tiny_binary_tar, tmp_path, monkeypatch):
    tar, md5 = tiny_binary_tar
    monkeypatch.setitem(cifar_mod.ARCHIVES, "binary", dataclasses.replace(ARCHIVES["binary"], md5=md5))
    root = tmp_path / "root"
    root.mkdir()
    (root / "cifar-10-binary.tar.gz").write_bytes(tar.read_bytes())
    src = Cifar10Source(root, split="test")
    assert src.version == "binary" and len(src) == PER_BATCH
    np.testing.assert_array_equal(src.read_uint8(0, PER_BATCH), make_images(4)[2])


def test_download_checks_md5_and_leaves_nothing_on_mismatch(tiny_binary_tar, tmp_path):
    tar, md5 = tiny_binary_tar
    root = tmp_path / "dl"
    with pytest.raises(DatasetError, match="checksum mismatch"):
        download_cifar10(root, "binary", url=tar.as_uri(), md5="0" * 32)
    assert list(root.iterdir()) == []
    folder = download_cifar10(root, "binary", url=tar.as_uri(), md5=md5)
    assert folder == root / "cifar-10-batches-bin"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ARCHIVES["binary"].train_files + ARCHIVES["binary"].test_files
    )


def test_offline_download_gives_one_clear_error(tmp_path):
    root = tmp_path / "dl"
    with pytest.raises(DatasetError) as e:
        download_cifar10(root, "binary", url=(tmp_path / "absent.tar.gz").as_uri())
    msg = str(e.value)
    assert "could not download" in msg and "offline" in msg and "cifar-10-batches-bin" in msg
    assert list(root.iterdir()) == []


def test_archive_without_the_batches_is_refused(tmp_path):
    junk = tmp_path / "junk" / "cifar-10-batches-bin"
    junk.mkdir(parents=True)
    (junk / "readme.html").write_text("x")
    tar = _tar(tmp_path / "a.tar.gz", junk)
    root = tmp_path / "dl"
    with pytest.raises(DatasetError, match="lacks"):
        download_cifar10(root, "binary", url=tar.as_uri(), md5=hashlib.md5(tar.read_bytes()).hexdigest())
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-binary.tar.gz"]  # the verified archive only


def test_no_socket_is_opened_by_the_readers(archives, monkeypatch):
    import socket

    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    Cifar10Source(archives[0]).load_all()
    Cifar10Source(archives[1]).load_all()
