"""Local stand-ins for the paper's inputs, in their exact formats: the two checkpoints' architectures
(random weights) as diffusers folders, a CIFAR-10 python archive and a CelebA-HQ image folder.

python -m benchmarks.rehearsal.fixtures [--root data/rehearsal] [--quick]

Writes under root:
  ddpm-cifar10-32/     config.json + diffusion_pytorch_model.safetensors + scheduler_config.json
  ddpm-celebahq-256/   the same layout (the layout of the google/ddpm-* hub repositories)
  cifar10/cifar-10-python.tar.gz   cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
  celebahq/            00000.jpg ... (256x256, the file names of the celeba_hq_256 release)
  manifest.json        md5 and sha256 of every file written, checked by `verify_manifest` before use

The architectures are the hub checkpoints' own config.json values (UNet2DModel), as found in the hub
files of google/ddpm-cifar10-32 and google/ddpm-celebahq-256 (snapshot cd5c944777ea) and in the configs of
repositories fine-tuned from those snapshots (later diffusers versions only add keys at their defaults, e.g.
add_attention, resnet_time_scale_shift); 35.7M and 113.7M parameters.
Both scheduler_config.json: DDPMScheduler, linear β 1e-4..0.02, T = 1000, clip_sample true (variance_type
fixed_large for CIFAR-10, fixed_small for CelebA-HQ); no prediction_type key = epsilon.
Only ᾱ_t and the prediction type of the scheduler config enter the pipeline (eq. 4).

The pixels are synthetic (seeded smooth colour fields plus noise), so nothing here can reproduce a
paper number; what is real is every shape, dtype, file layout and code path. The CIFAR-10 archive is
NOT the official one, so its md5 differs from the official c58f30108f718f92721af3b95e74349a that
pipeline.data.cifar10 keeps: the loader refuses it by design, and the rehearsal extracts it through the
loader's own extraction code with the manifest's md5 instead (`extract_cifar10`).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pickle
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

# ---- the hub checkpoints' configurations (values of their config.json / scheduler_config.json) ----
CIFAR10_UNET = {
    "_class_name": "UNet2DModel",
    "act_fn": "silu",
    "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 32,
    "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}
CELEBAHQ_UNET = {
    **CIFAR10_UNET,
    "block_out_channels": [128, 128, 256, 256, 512, 512],
    "down_block_types": [
        "DownBlock2D",
        "DownBlock2D",
        "DownBlock2D",
        "DownBlock2D",
        "AttnDownBlock2D",
        "DownBlock2D",
    ],
    "sample_size": 256,
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"],
}
_DDPM_SCHEDULER = {
    "_class_name": "DDPMScheduler",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "clip_sample": True,
    "num_train_timesteps": 1000,
    "trained_betas": None,
}
CIFAR10_SCHEDULER = {**_DDPM_SCHEDULER, "variance_type": "fixed_large"}
CELEBAHQ_SCHEDULER = {**_DDPM_SCHEDULER, "variance_type": "fixed_small"}
# parameter counts of the two checkpoints (model cards / the loaded safetensors), in millions
PARAMS_MILLIONS = {"ddpm-cifar10-32": 35.75, "ddpm-celebahq-256": 113.67}

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_IMAGES_PER_BATCH = 10_000  # official; --quick writes fewer (the loader accepts equal smaller batches)
CELEBAHQ_IMAGES = 200  # §7.7's N
CELEBAHQ_SIZE = 256  # the celeba_hq_256 release


def file_digests(path: Path, block: int = 1 << 20) -> dict[str, str | int]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            md5.update(chunk)
            sha.update(chunk)
    return {"md5": md5.hexdigest(), "sha256": sha.hexdigest(), "bytes": path.stat().st_size}


# ---------------------------------------------------------------------------------------------------
# Models


def save_checkpoint(folder: Path, unet_config: dict, scheduler_config: dict, seed: int = 0) -> int:
    """UNet2DModel(**config) with seeded random weights, saved as the hub repositories lay it out."""
    import torch
    from diffusers import UNet2DModel

    kwargs = {k: v for k, v in unet_config.items() if not k.startswith("_")}
    torch.manual_seed(seed)
    model = UNet2DModel(**kwargs)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / "scheduler_config.json").write_text(json.dumps(scheduler_config, indent=2) + "\n")
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------------
# Pixels: seeded smooth colour fields (4x4 or 8x8 control grid, bilinear) plus pixel noise, so that the
# patch covariances have structure (decaying spectra, neighbour correlation) like photographs.


def smooth_images(rng: np.random.Generator, n: int, size: int, grid: int = 4) -> np.ndarray:
    """uint8 [n, 3, size, size]."""
    ctrl = rng.normal(0.0, 1.0, size=(n, 3, grid, grid)).astype(np.float32)
    pos = np.linspace(0, grid - 1, size, dtype=np.float32)
    i0 = np.clip(np.floor(pos).astype(int), 0, grid - 2)
    w = (pos - i0)[None, None, :]
    rows = ctrl[:, :, i0, :] * (1 - w[..., None]) + ctrl[:, :, i0 + 1, :] * w[..., None]  # [n,3,size,grid]
    img = rows[:, :, :, i0] * (1 - w[:, :, None, :]) + rows[:, :, :, i0 + 1] * w[:, :, None, :]
    img += rng.normal(0.0, 0.15, size=img.shape).astype(np.float32)
    return np.clip(127.5 + 50.0 * img, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# CIFAR-10, python version: pickled dicts {batch_label, labels, data uint8 [N, 3072], filenames}


def _cifar_batch(rng: np.random.Generator, n: int, label: str, start: int) -> bytes:
    data = smooth_images(rng, n, 32).reshape(n, 3072)
    labels = rng.integers(0, 10, size=n).tolist()
    obj = {
        "batch_label": label,
        "labels": labels,
        "data": data,
        "filenames": [f"synthetic_{start + i:05d}.png" for i in range(n)],
    }
    # Python 3 cannot write Python 2's str opcodes; protocol 4 holds the same dict of str, list and
    # uint8 array, which pipeline.data.cifar10's restricted unpickler reads like the official pickles.
    return pickle.dumps(obj, protocol=4)


def make_cifar10_archive(root: Path, per_batch: int = CIFAR10_IMAGES_PER_BATCH, seed: int = 0) -> Path:
    """root/cifar-10-python.tar.gz with the official member names (5 train batches + test batch)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    members = []
    for b in range(1, 6):
        members.append(
            (f"data_batch_{b}", _cifar_batch(rng, per_batch, f"training batch {b} of 5", (b - 1) * per_batch))
        )
    members.append(("test_batch", _cifar_batch(rng, per_batch, "testing batch 1 of 1", 5 * per_batch)))
    meta = {"num_cases_per_batch": per_batch, "label_names": CIFAR10_CLASSES, "num_vis": 3072}
    members.append(("batches.meta", pickle.dumps(meta, protocol=4)))
    members.append(
        ("readme.html", b"<html><body>Synthetic CIFAR-10 stand-in (pifs-repro rehearsal)</body></html>")
    )
    archive = root / "cifar-10-python.tar.gz"
    part = root / ".cifar-10-python.tar.gz.part"
    # compresslevel 1: the pixels are noisy, higher levels cost minutes for a few percent
    with tarfile.open(part, "w:gz", compresslevel=1) as tar:
        for name, payload in members:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            info.mtime = 1_262_304_000  # fixed: the same seed gives a byte-identical archive
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(payload))
    os.replace(part, archive)
    return archive


def extract_cifar10(root: Path, md5: str) -> Path:
    """Verify the archive against the manifest's md5 and extract it with the loader's own code."""
    from pipeline.data.cifar10 import download_cifar10

    # download_cifar10 verifies an archive already in root and never downloads it again
    return download_cifar10(root, "python", md5=md5)


# ---------------------------------------------------------------------------------------------------
# CelebA-HQ image folder


def make_celebahq_folder(
    root: Path, n: int = CELEBAHQ_IMAGES, size: int = CELEBAHQ_SIZE, seed: int = 1
) -> Path:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(0, n, 50):
        batch = smooth_images(rng, min(50, n - i), size, grid=8)
        for j, img in enumerate(batch):
            Image.fromarray(img.transpose(1, 2, 0)).save(root / f"{i + j:05d}.jpg", quality=95)
    return root


# ---------------------------------------------------------------------------------------------------
# Manifest


def write_manifest(root: Path, extra: dict) -> dict:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest = {
        **extra,
        "files": {str(p.relative_to(root)): file_digests(p) for p in files},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def verify_manifest(root: Path) -> dict:
    """Check every file listed in root/manifest.json against its sha256; returns the manifest."""
    from pipeline.errors import PipelineError

    path = root / "manifest.json"
    if not path.is_file():
        raise PipelineError(
            f"{path} does not exist — run `python -m benchmarks.rehearsal.fixtures --root {root}` first"
        )
    manifest = json.loads(path.read_text())
    for rel, want in manifest["files"].items():
        p = root / rel
        if not p.is_file():
            raise PipelineError(f"{p} is missing — rebuild the fixtures (remove {root} and rerun)")
        got = file_digests(p)
        if got["sha256"] != want["sha256"]:
            raise PipelineError(
                f"{p}: sha256 {got['sha256']} does not match the manifest's {want['sha256']} — rebuild the "
                f"fixtures (remove {root} and rerun)"
            )
    return manifest


def make_fixtures(root: Path, quick: bool = False, force: bool = False, log=print) -> dict:
    """Build every fixture under root (or reuse a complete set whose manifest verifies)."""
    root = Path(root)
    profile = "quick" if quick else "full"
    if (root / "manifest.json").is_file() and not force:
        manifest = verify_manifest(root)
        if manifest.get("profile") == profile:
            log(f"fixtures: {root} verified against its manifest ({len(manifest['files'])} files), reused")
            return manifest
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    per_batch = 100 if quick else CIFAR10_IMAGES_PER_BATCH
    n_celeb = 8 if quick else CELEBAHQ_IMAGES
    timings = {}
    t0 = time.perf_counter()
    params = {
        "ddpm-cifar10-32": save_checkpoint(tmp / "ddpm-cifar10-32", CIFAR10_UNET, CIFAR10_SCHEDULER),
        "ddpm-celebahq-256": save_checkpoint(tmp / "ddpm-celebahq-256", CELEBAHQ_UNET, CELEBAHQ_SCHEDULER),
    }
    timings["models_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    make_cifar10_archive(tmp / "cifar10", per_batch)
    timings["cifar10_archive_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    make_celebahq_folder(tmp / "celebahq", n_celeb)
    timings["celebahq_folder_s"] = round(time.perf_counter() - t0, 1)
    manifest = write_manifest(
        tmp,
        {
            "profile": profile,
            "cifar10_images": {"train": 5 * per_batch, "test": per_batch},
            "celebahq_images": n_celeb,
            "parameters": params,
            "official_cifar10_python_md5": _official_md5(),
            "timings": timings,
        },
    )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp.chmod(0o755)
    os.replace(tmp, root)
    # the archive is extracted after the manifest: its md5 is the one recorded for the file actually made
    extract_cifar10(root / "cifar10", manifest["files"]["cifar10/cifar-10-python.tar.gz"]["md5"])
    log(
        f"fixtures: wrote {root} ({profile}: {5 * per_batch} + {per_batch} CIFAR-10 images, {n_celeb} CelebA-HQ)"
    )
    return manifest


def _official_md5() -> str:
    from pipeline.data.cifar10 import ARCHIVES

    return ARCHIVES["python"].md5


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="data/rehearsal", help="output folder (default data/rehearsal)")
    ap.add_argument("--quick", action="store_true", help="100 CIFAR-10 images per batch, 8 CelebA-HQ images")
    ap.add_argument("--force", action="store_true", help="rebuild even if a verified set exists")
    args = ap.parse_args(argv)
    from pipeline.errors import PipelineError

    try:
        m = make_fixtures(Path(args.root), quick=args.quick, force=args.force)
    except PipelineError as e:
        print(f"error: {e}")
        return 2
    arch = m["files"]["cifar10/cifar-10-python.tar.gz"]
    print(
        f"cifar-10-python.tar.gz md5 {arch['md5']} ({arch['bytes'] / 1e6:.0f} MB; official {_official_md5()})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
