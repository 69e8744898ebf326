"""CIFAR-10 from the official archives (https://www.cs.toronto.edu/~kriz/cifar.html), binary or python version.

The paper's λ_k come from the 50,000 training images (§7.1). Binary version: every record is 1 label
byte then 3072 pixel bytes (1024 R, 1024 G, 1024 B, each 32×32 row-major), i.e. already (C, H, W).
Python version: pickled dicts {data: uint8 [10000, 3072] in the same layout, labels: list}; they are
read with an unpickler that can only rebuild numpy arrays, never import anything else, because a
pickle from an untrusted download can run arbitrary code under the plain loader.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import InputMissingError

from .base import DatasetError, FileSource, resolve_count, uint8_to_unit

IMAGE_SHAPE = (3, 32, 32)
PIXELS = 3 * 32 * 32
RECORD_BYTES = 1 + PIXELS
IMAGES_PER_BATCH = 10_000  # official batch size; smaller batches are accepted but must all be equal


@dataclass(frozen=True)
class ArchiveSpec:
    folder: str
    filename: str
    url: str
    md5: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]


def _archive(version: str, folder: str, suffix: str, md5: str) -> ArchiveSpec:
    """The Toronto distribution's naming: cifar-10-<version>.tar.gz unpacks to cifar-10-batches-<folder>/,
    five training batches and one test batch, each file name ending in <suffix>."""
    filename = f"cifar-10-{version}.tar.gz"
    return ArchiveSpec(
        folder=f"cifar-10-batches-{folder}",
        filename=filename,
        url=f"https://www.cs.toronto.edu/~kriz/{filename}",
        md5=md5,
        train_files=tuple(f"data_batch_{i}{suffix}" for i in range(1, 6)),
        test_files=(f"test_batch{suffix}",),
    )


ARCHIVES = {
    "binary": _archive("binary", "bin", ".bin", md5="c32a1d4ab5d03f1284b67883e8d87530"),
    "python": _archive("python", "py", "", md5="c58f30108f718f92721af3b95e74349a"),
}


def _instructions(root: Path) -> str:
    b, p = ARCHIVES["binary"], ARCHIVES["python"]
    return (
        f"Place CIFAR-10 under {root}: either the extracted folder {root / b.folder}/ "
        f"(data_batch_1.bin..data_batch_5.bin, test_batch.bin; binary version, preferred) or "
        f"{root / p.folder}/ (data_batch_1..5, test_batch; python version), or just the archive "
        f"{b.filename} (md5 {b.md5}) / {p.filename} (md5 {p.md5}) from "
        f"https://www.cs.toronto.edu/~kriz/cifar.html, which is verified and extracted on first use. "
        f"Set dataset.root (or the CIFAR10_ROOT environment variable) to that folder, or set "
        f"dataset.download=true on a machine with internet access."
    )


# ----------------------------------------------------------------------------------------------------------
# Safe unpickling of the python version


def _numpy_reconstruct():
    # numpy moved _reconstruct from numpy.core to numpy._core in 2.0; ask numpy where it lives now.
    return np.zeros(1).__reduce__()[0]


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that can only build what the official batches contain: dicts, lists, numpy arrays."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("builtins", "bytes"): bytes,
        ("builtins", "str"): str,
        ("builtins", "list"): list,
        ("builtins", "dict"): dict,
    }

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: an official CIFAR-10 batch only holds numpy arrays "
                f"and lists"
            ) from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not part of a CIFAR-10 batch")


def load_python_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one python-version batch safely: (pixels uint8 [n, 3072], labels int64 [n])."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            # latin1 is how py2 str pickles (array bytes included) round-trip into Python 3.
            obj = _CifarUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise
    except Exception as e:  # a damaged pickle can fail in any type (EOFError, KeyError, ValueError, ...)
        raise DatasetError(
            f"{path} is not a readable CIFAR-10 python batch ({type(e).__name__}: {e}); the file is truncated, "
            f"corrupted or not from the official archive — delete it and extract cifar-10-python.tar.gz again"
        ) from e
    if not isinstance(obj, dict):
        raise DatasetError(
            f"{path}: expected a pickled dict, got {type(obj).__name__} — re-extract the archive"
        )
    obj = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    data, labels = obj.get("data"), obj.get("labels")
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != PIXELS
        or labels is None
        or len(labels) != data.shape[0]
    ):
        raise DatasetError(
            f"{path}: expected 'data' uint8 [n, {PIXELS}] and n 'labels'; got data "
            f"{getattr(data, 'dtype', None)} {getattr(data, 'shape', None)}; the file is corrupted or not a "
            f"CIFAR-10 batch — re-extract cifar-10-python.tar.gz"
        )
    return np.ascontiguousarray(data), np.asarray(labels, dtype=np.int64)


def write_binary_batch(path: str | Path, pixels: np.ndarray, labels: np.ndarray) -> None:
    """Write uint8 [n, 3, 32, 32] images in the official binary record layout (benchmarks and tests)."""
    pixels = np.asarray(pixels, dtype=np.uint8).reshape(-1, PIXELS)
    rec = np.empty((pixels.shape[0], RECORD_BYTES), dtype=np.uint8)
    rec[:, 0] = np.asarray(labels, dtype=np.uint8)
    rec[:, 1:] = pixels
    Path(path).write_bytes(rec.tobytes())


# ----------------------------------------------------------------------------------------------------------
# Download and extraction


def md5_file(path: str | Path, block: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def verify_md5(path: Path, expected: str) -> None:
    got = md5_file(path)
    if got != expected.lower():
        raise DatasetError(
            f"checksum mismatch for {path}: md5 {got}, expected {expected} (the official archive); the file is "
            f"incomplete or not the official one — delete it and download it again from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html"
        )


def extract_archive(archive: Path, root: Path, spec: ArchiveSpec) -> Path:
    """Extract only the expected batch files of ``archive`` into root/<folder>, atomically."""
    wanted = {f"{spec.folder}/{name}" for name in spec.train_files + spec.test_files}
    target = root / spec.folder
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.folder}.", suffix=".partial", dir=root))
    try:
        found = set()
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    src = tar.extractfile(member)
                    with src, open(tmp / Path(member.name).name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    found.add(member.name)
        missing = sorted(wanted - found)
        if missing:
            raise DatasetError(
                f"{archive} lacks {missing}; it is not the official CIFAR-10 {spec.filename} — download it again"
            )
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DatasetError(f"cannot extract {archive} ({e}) — delete it and download it again") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def download_cifar10(
    root: str | Path, version: str = "binary", url: str | None = None, md5: str | None = None
) -> Path:
    """Fetch the official archive into root (md5-checked) and extract it; returns the batches folder.

    An archive already in root is verified, never overwritten. Nothing half-written is left behind.
    """
    spec = ARCHIVES[version]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    url, md5 = url or spec.url, md5 or spec.md5
    archive = root / spec.filename
    if not archive.exists():
        fd, part = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=root)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
                shutil.copyfileobj(resp, out, 1 << 20)
            verify_md5(Path(part), md5)
            os.replace(part, archive)
        except (urllib.error.URLError, OSError) as e:
            raise DatasetError(
                f"could not download {url} ({e}); this machine looks offline — " + _instructions(root)
            ) from e
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)
    verify_md5(archive, md5)
    return extract_archive(archive, root, spec)


# ----------------------------------------------------------------------------------------------------------
# The source


def _locate(root: Path, version: str) -> tuple[str, Path] | None:
    """(version, batches folder) of an extracted copy under root, or None."""
    versions = ["binary", "python"] if version == "auto" else [version]
    for v in versions:
        spec = ARCHIVES[v]
        for folder in (root / spec.folder, root):
            if (folder / spec.train_files[0]).exists() or (folder / spec.test_files[0]).exists():
                return v, folder
    return None


class Cifar10Source(FileSource):
    """The official CIFAR-10 train (50k) or test (10k) split, first ``num_images`` in file order."""

    name = "cifar10"
    quantized = True

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        num_images: int | None = None,
        version: str = "auto",
        download: bool = False,
    ) -> None:
        if split not in ("train", "test"):
            raise DatasetError(
                f"dataset.split={split!r} — CIFAR-10 has splits 'train' (50k) and 'test' (10k)"
            )
        if version not in ("auto", "binary", "python"):
            raise DatasetError(f"dataset.version={version!r} — use 'auto', 'binary' or 'python'")
        self.root = Path(root).expanduser()
        self.split = split
        found = _locate(self.root, version) if self.root.is_dir() else None
        if found is None:
            found = self._from_archive(version, download)
        self.version, self.folder = found
        spec = ARCHIVES[self.version]
        names = spec.train_files if split == "train" else spec.test_files
        self.files = [self.folder / n for n in names]
        for f in self.files:
            if not f.is_file():
                raise DatasetError(
                    f"{f} is missing: the {split} split needs {', '.join(names)} in {self.folder} — "
                    f"re-extract {spec.filename} there"
                )
        self._counts = [self._count(f) for f in self.files]
        if len(set(self._counts)) != 1:
            bad = min(zip(self._counts, self.files, strict=True))[1]
            raise DatasetError(
                f"{bad} holds {min(self._counts)} images but the other batches hold {max(self._counts)}: it is "
                f"truncated — re-extract {spec.filename}"
            )
        self._offsets = np.concatenate([[0], np.cumsum(self._counts)]).astype(np.int64)
        self._n = resolve_count(
            num_images, int(self._offsets[-1]), f"the CIFAR-10 {split} split at {self.folder}"
        )
        self._cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def _from_archive(self, version: str, download: bool) -> tuple[str, Path]:
        versions = ["binary", "python"] if version == "auto" else [version]
        for v in versions:
            if (self.root / ARCHIVES[v].filename).is_file():
                return v, download_cifar10(self.root, v)
        if download:
            v = versions[0]
            return v, download_cifar10(self.root, v)
        if not self.root.exists():
            raise InputMissingError(f"CIFAR-10 root {self.root} does not exist — " + _instructions(self.root))
        if not self.root.is_dir():
            raise DatasetError(
                f"dataset.root={self.root} is a file, not a folder — set dataset.root to the folder holding "
                "cifar-10-batches-bin/ (or the archive)"
            )
        raise InputMissingError(f"no CIFAR-10 batches found in {self.root} — " + _instructions(self.root))

    def _count(self, path: Path) -> int:
        if self.version == "binary":
            size = path.stat().st_size
            if size == 0 or size % RECORD_BYTES:
                raise DatasetError(
                    f"{path} has {size} bytes, not a whole number of {RECORD_BYTES}-byte records: it is truncated "
                    f"or corrupted — re-extract {ARCHIVES['binary'].filename}"
                )
            return size // RECORD_BYTES
        return load_python_batch(path)[0].shape[0]

    def __len__(self) -> int:
        return self._n

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return IMAGE_SHAPE

    def describe(self) -> dict:
        return {
            **super().describe(),
            "split": self.split,
            "version": self.version,
            "files": [f.name for f in self.files],
        }

    def _batch_records(self, b: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixels uint8 [hi-lo, 3072] and labels of records lo..hi-1 of batch file b."""
        path = self.files[b]
        if self.version == "binary":
            with open(path, "rb") as f:
                f.seek(lo * RECORD_BYTES)
                buf = f.read((hi - lo) * RECORD_BYTES)
            if len(buf) != (hi - lo) * RECORD_BYTES:
                raise DatasetError(
                    f"{path} ended early while reading: it is truncated — re-extract the archive"
                )
            rec = np.frombuffer(buf, dtype=np.uint8).reshape(hi - lo, RECORD_BYTES)
            return rec[:, 1:], rec[:, 0].astype(np.int64)
        if self._cache is None or self._cache[0] != b:
            data, labels = load_python_batch(path)
            data.setflags(write=False)  # slices of the cache are handed out as views
            self._cache = (b, data, labels)
        _, data, labels = self._cache
        return data[lo:hi], labels[lo:hi]

    def _records(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        pix, lab = [], []
        b = int(np.searchsorted(self._offsets, start, side="right") - 1)
        i = start
        while i < stop:
            lo = i - int(self._offsets[b])
            hi = min(stop, int(self._offsets[b + 1])) - int(self._offsets[b])
            p, l_ = self._batch_records(b, lo, hi)
            pix.append(p)
            lab.append(l_)
            i += hi - lo
            b += 1
        if len(pix) == 1:
            return pix[0], lab[0]
        return np.concatenate(pix), np.concatenate(lab)

    def _read(self, start: int, stop: int) -> np.ndarray:
        if stop <= start:
            return np.empty((0, *IMAGE_SHAPE), dtype=np.float32)
        pix, _ = self._records(start, stop)
        return uint8_to_unit(pix).reshape(-1, *IMAGE_SHAPE)

    def read_uint8(self, start: int, stop: int) -> np.ndarray:
        """Raw pixels uint8 [stop-start, 3, 32, 32] (a read-only view where possible: no copy)."""
        return self._records(start, stop)[0].reshape(-1, *IMAGE_SHAPE)

    def labels(self) -> np.ndarray:
        """Class labels int64 [N] of the images this source yields."""
        return self._records(0, self._n)[1].copy()
