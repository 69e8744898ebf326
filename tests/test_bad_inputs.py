"""Bad inputs on the five entry points: each is one line ``error: <what> — <fix>``, exit 2, nothing written.

Every case runs in-process through stages.cli_errors.call, the guard each stage's ``__main__`` uses
(run_cli), on a copy of a project that already holds the smoke preset's outputs of all four stages;
afterwards those earlier outputs must be byte-identical and no new output folder may exist. A few
cases run as real subprocesses to prove the command-line path (exit status, one stderr line, no
traceback).
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from stages import cli_errors
from tests.conftest import ROOT, compose_config

SMOKE = ["experiment=smoke", "progress=false", "tracking.enabled=false"]
LEARNED = [
    "experiment=learned16",
    "progress=false",
    "tracking.enabled=false",
    "sampler.num_steps=5",
    "num_seeds=1",
    "dataset.num_images=64",
]
CELEBA = [*SMOKE, "dataset=celebahq", "dataset.resolution=16", "dataset.num_images=4", "dataset.root=imgs"]
CIFAR = [
    *SMOKE,
    "dataset=cifar10",
    "dataset.resolution=32",
    "dataset.num_images=10",
    "dataset.root=c",
    "patch.size=8",
    "model.block_size=8",
]
TRAIN = ["train=smoke", "progress=false", "tracking.enabled=false", "dataset.num_images=64"]
ASSET = ROOT / "pipeline" / "assets" / "pifs_ddpm16"
WEIGHTS = "diffusion_pytorch_model.safetensors"


# ------------------------------------------------------------------------------------------------
# earlier outputs (one smoke run of the four stages per session) and per-case project copies


@pytest.fixture(scope="session")
def smoke_project(tmp_path_factory) -> Path:
    from stages import analysis, covariance, jacobian, trajectories

    root = tmp_path_factory.mktemp("bad_inputs_base")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        cfg = compose_config(SMOKE)
        for stage in (covariance, trajectories, jacobian, analysis):
            stage.run(cfg)
    finally:
        os.chdir(cwd)
    return root


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under outputs/ (hidden ones included) with its bytes."""
    out = root / "outputs"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _output_folders(root: Path) -> set[str]:
    """Stage folders under outputs/<stage>/ (a failed run may leave only its hidden .work-* folder)."""
    out = root / "outputs"
    if not out.is_dir():
        return set()
    return {
        str(p.relative_to(root))
        for stage in out.iterdir()
        if stage.is_dir()
        for p in stage.iterdir()
        if not p.name.startswith(".work-")
    }


def _first(root: Path, pattern: str) -> Path:
    return sorted(root.glob(pattern))[0]


# ------------------------------------------------------------------------------------------------
# inputs the cases plant


def _pngs(folder: Path, n: int = 4) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")


def _checkpoint(root: Path, mutate: Callable[[Path], None]) -> None:
    ck = root / "ck"
    shutil.copytree(ASSET, ck)
    mutate(ck)


def _edit_weights(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    def mutate(ck: Path) -> None:
        from safetensors.torch import load_file, save_file

        sd = load_file(ck / WEIGHTS)
        fn(sd)
        save_file(sd, ck / WEIGHTS)

    return mutate


def _nan_weight(sd: dict) -> None:
    sd["conv_out.bias"] = sd["conv_out.bias"].clone()
    sd["conv_out.bias"][0] = float("nan")


def _drop_weight(sd: dict) -> None:
    del sd["conv_out.bias"]


def _extra_weight(sd: dict) -> None:
    import torch

    sd["bogus.weight"] = torch.zeros(2)


def _reshape_weight(sd: dict) -> None:
    import torch

    sd["conv_out.bias"] = torch.zeros(7)


def _cifar_batches(root: Path, short: str | None = None) -> None:
    folder = root / "c" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        size = 3073 * 20 - (5 if name == short else 0)
        (folder / name).write_bytes(bytes(size))


def _cifar_python_garbage(root: Path) -> None:
    folder = root / "c" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(b"not a pickle")


def _nan_trajectory(root: Path) -> None:
    f = _first(root, "outputs/trajectories/*/seed-0.npz")
    with np.load(f) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["x"] = arrays["x"].copy()
    arrays["x"][3] = np.nan
    from pipeline import io

    io.save_npz(f, **arrays)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fail_writes(code: int):
    """Make the next atomic file write fail with ``code`` (a full or read-only disk), naming the file."""

    def patch(monkeypatch) -> None:
        from pipeline import io

        def refuse(data: bytes, path: Path) -> None:
            raise OSError(code, os.strerror(code), str(path))

        monkeypatch.setattr(io, "_replace_atomically", refuse)

    return patch


def _fail_scratch(code: int):
    """The run's scratch folder (``.partial-<key>``, or a temp folder) cannot be created."""

    def patch(monkeypatch) -> None:
        from pipeline import io

        def refuse(*args, dir=None, **kwargs):
            raise OSError(code, os.strerror(code), str(dir))

        monkeypatch.setattr(io.tempfile, "mkdtemp", refuse)
        real_mkdir = Path.mkdir

        def mkdir(self, *args, **kwargs):
            if self.name.startswith(".partial-"):
                raise OSError(code, os.strerror(code), str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)

    return patch


@dataclass
class Case:
    id: str
    stage: str
    overrides: list[str]
    expect: tuple[str, ...]  # substrings of the message: the key or file, and the fix
    setup: Callable[[Path], None] | None = None
    patch: Callable[..., None] | None = None
    forced: bool = field(default=False)


def _write(rel: str, text: str | bytes) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text if isinstance(text, bytes) else text.encode())

    return setup


def _as_recorded(stage: str, plant: Callable[[Path], None]) -> Callable[[Path], None]:
    """Plant a fault and record it in the stage folder's meta.json hashes, as if the stage had written it.

    A hand edit is caught by the hashes first (tests/test_run_lifecycle.py); this reaches the checks
    behind them, which guard against a stage that wrote such a file itself.
    """

    def plant_recorded(root: Path) -> None:
        import json

        from pipeline import io
        from pipeline.lineage import UNHASHED, seal

        plant(root)
        folder = _first(root, f"outputs/{stage}/*/meta.json").parent
        meta = json.loads((folder / "meta.json").read_text())
        meta["outputs"] = io.tree_sha256(folder, exclude=UNHASHED)
        # sealed again, as the stage would have: the record hash is one of the hashes that catch a hand edit
        (folder / "meta.json").write_text(json.dumps(seal(meta)))

    return plant_recorded


def _corrupt(pattern: str, data: bytes = b"garbage") -> Callable[[Path], None]:
    return lambda root: _first(root, pattern).write_bytes(data)


def _copy_edited(stage: str, dest: str, name: str) -> Callable[[Path], None]:
    """A finished stage folder copied to ``dest`` (a valid run in another place), then one of its files
    edited by hand, its meta.json left as the run wrote it."""

    def setup(root: Path) -> None:
        shutil.copytree(_first(root, f"outputs/{stage}/*/meta.json").parent, root / dest)
        with open(root / dest / name, "ab") as f:
            f.write(b" ")

    return setup


def _trained_then_edited(root: Path) -> None:
    """A train stage's folder (the shipped model with the record a train run writes), then its model card
    edited by hand: the record no longer vouches for the folder."""
    import json

    from pipeline import io
    from pipeline.lineage import UNHASHED, seal

    def as_trained(ck: Path) -> None:
        record = {"stage": "train", "outputs": io.tree_sha256(ck, exclude=UNHASHED)}
        (ck / "meta.json").write_text(json.dumps(seal(record)))
        with open(ck / "MODEL_CARD.md", "a") as f:
            f.write("edited\n")

    _checkpoint(root, as_trained)


CASES = [
    # --- configuration ---------------------------------------------------------------------------
    Case(
        "patch_size_not_divisor",
        "covariance",
        [*SMOKE, "patch.size=5"],
        ("patch.size=5", "choose patch.size"),
    ),
    Case("num_seeds_zero", "trajectories", [*SMOKE, "num_seeds=0"], ("num_seeds", "set num_seeds")),
    Case(
        "num_images_zero",
        "covariance",
        [*SMOKE, "dataset.num_images=0"],
        ("dataset.num_images=0", "at least 1"),
    ),
    Case(
        "unknown_photograph",
        "covariance",
        [*SMOKE, "dataset.photographs=[nope]"],
        ("dataset.photographs", "choose from"),
    ),
    Case("channels_two", "covariance", [*SMOKE, "dataset.channels=2"], ("dataset.channels=2", "use 3")),
    Case(
        "block_size_not_divisor",
        "trajectories",
        [*SMOKE, "model.block_size=5"],
        ("model.block_size=5", "divisor"),
    ),
    Case("seed_batch_zero", "jacobian", [*SMOKE, "points.seed_batch=0"], ("points.seed_batch=0", "positive")),
    Case(
        "seed_batch_negative",
        "jacobian",
        [*SMOKE, "points.seed_batch=-2"],
        ("points.seed_batch=-2", "positive"),
    ),
    Case("unknown_key", "covariance", [*SMOKE, "foo=1"], ("unknown key foo", "the keys of the config")),
    Case("unknown_group_option", "covariance", [*SMOKE, "dataset=nope"], ("dataset/nope", "natural_crops")),
    Case(
        "params_file_missing",
        "covariance",
        [*SMOKE, "params_file=nope.yaml"],
        ("params_file=nope.yaml", "run from"),
    ),
    Case(
        "params_file_corrupt",
        "covariance",
        [*SMOKE, "params_file=bad.yaml"],
        ("bad.yaml", "fix"),
        _write("bad.yaml", "a: [1,\n"),
    ),
    Case("device_cuda_missing", "trajectories", [*SMOKE, "device=cuda"], ("device=cuda", "device=cpu")),
    Case("dtype_half", "trajectories", [*SMOKE, "model.dtype=float16"], ("float16", "float32 or float64")),
    Case("num_steps_zero", "trajectories", [*SMOKE, "sampler.num_steps=0"], ("sampler.num_steps", "")),
    Case("measure_step_not_in_chain", "jacobian", [*SMOKE, "points.steps=[7]"], ("points.steps", "pick t")),
    Case("blocks_unknown", "jacobian", [*SMOKE, "measure.blocks=nope"], ("measure.blocks", "")),
    Case(
        "power_iters_zero",
        "jacobian",
        [*SMOKE, "measure.power_iters=0"],
        ("measure.power_iters=0", "at least 1"),
    ),
    Case(
        "chunk_size_zero",
        "covariance",
        [*SMOKE, "covariance.chunk_size=0", "force=true"],
        ("covariance.chunk_size", "at least 1"),
    ),
    Case("structure_unknown", "trajectories", [*SMOKE, "model.structure=nope"], ("model.structure", "use")),
    # --- where outputs go ----------------------------------------------------------------------
    Case(
        "outputs_is_a_file",
        "covariance",
        [*SMOKE, "paths.outputs=afile"],
        ("paths.outputs=afile", "is a file", "point paths.outputs"),
        _write("afile", "x"),
    ),
    Case(
        "outputs_under_a_file",
        "jacobian",
        [*SMOKE, "paths.outputs=afile/out"],
        ("afile", "point paths.outputs"),
        _write("afile", "x"),
    ),
    Case(
        "outputs_read_only",
        "covariance",
        [*SMOKE, "force=true"],
        ("read-only", "paths.outputs"),
        patch=_fail_scratch(errno.EROFS),
    ),
    Case(
        "disk_full",
        "covariance",
        [*SMOKE, "force=true"],
        ("no space left", "outputs/covariance", "free space"),
        patch=_fail_writes(errno.ENOSPC),
    ),
    Case(
        "train_out_dir_is_a_file",
        "train",
        [*TRAIN, "train.out_dir=afile"],
        ("train.out_dir=afile", "is a file"),
        _write("afile", "x"),
    ),
    # --- MLflow ---------------------------------------------------------------------------------
    Case(
        "mlflow_server_down",
        "covariance",
        [*SMOKE, "tracking.enabled=true", "tracking.uri=http://127.0.0.1:{port}", "force=true"],
        ("MLflow server at http://127.0.0.1", "mlflow server", "tracking.enabled=false"),
    ),
    Case(
        "train_mlflow_server_down",
        "train",
        [*TRAIN, "tracking.enabled=true", "tracking.uri=http://127.0.0.1:{port}"],
        ("MLflow server", "tracking.enabled=false"),
    ),
    Case(
        "mlflow_unknown_scheme",
        "covariance",
        [*SMOKE, "tracking.enabled=true", "tracking.uri=nope://x", "force=true"],
        ("nope", "tracking.enabled=false"),
    ),
    Case(
        "mlflow_sqlite_under_a_file",
        "covariance",
        [*SMOKE, "tracking.enabled=true", "tracking.uri=sqlite:///afile/m.db", "force=true"],
        ("afile", "tracking.uri"),
        _write("afile", "x"),
    ),
    # --- datasets -------------------------------------------------------------------------------
    Case("celeba_root_missing", "covariance", [*CELEBA[:-1], "dataset.root=nope"], ("nope", "dataset.root")),
    Case(
        "celeba_root_is_a_file",
        "covariance",
        [*CELEBA[:-1], "dataset.root=afile"],
        ("dataset.root=afile", "is a file"),
        _write("afile", "x"),
    ),
    Case("celeba_empty", "covariance", CELEBA, ("no image files", "imgs"), lambda r: (r / "imgs").mkdir()),
    Case(
        "celeba_stray_file",
        "covariance",
        CELEBA,
        ("notes.txt", "move it out"),
        lambda r: (_pngs(r / "imgs"), (r / "imgs" / "notes.txt").write_text("x")),
    ),
    Case(
        "celeba_corrupt_image",
        "covariance",
        CELEBA,
        ("001.png", "replace it or remove it"),
        lambda r: (_pngs(r / "imgs"), (r / "imgs" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\nxxxx")),
    ),
    Case(
        "celeba_truncated_image",
        "covariance",
        CELEBA,
        ("001.png", "replace it or remove it"),
        lambda r: (
            _pngs(r / "imgs"),
            (r / "imgs" / "001.png").write_bytes((r / "imgs" / "001.png").read_bytes()[:60]),
        ),
    ),
    Case(
        "celeba_too_few_images",
        "covariance",
        [*CELEBA, "dataset.num_images=10"],
        ("dataset.num_images=10", "holds only 4"),
        lambda r: _pngs(r / "imgs"),
    ),
    Case(
        "celeba_decompression_bomb",
        "covariance",
        CELEBA,
        ("009.png", "decompression bomb", "remove it"),
        lambda r: (_pngs(r / "imgs", 3), _bomb(r / "imgs" / "009.png")),
    ),
    Case("cifar_root_missing", "covariance", [*CIFAR[:-3], "dataset.root=nope"], ("nope", "dataset.root")),
    Case(
        "cifar_root_is_a_file",
        "covariance",
        [*CIFAR[:-3], "dataset.root=afile"],
        ("dataset.root=afile", "is a file"),
        _write("afile", "x"),
    ),
    Case(
        "cifar_archive_corrupt",
        "covariance",
        CIFAR,
        ("cifar-10-binary.tar.gz", "download it again"),
        _write("c/cifar-10-binary.tar.gz", b"garbage"),
    ),
    Case(
        "cifar_batch_truncated",
        "covariance",
        CIFAR,
        ("data_batch_3.bin", "re-extract"),
        lambda r: _cifar_batches(r, short="data_batch_3.bin"),
    ),
    Case(
        "cifar_python_batch_corrupt", "covariance", CIFAR, ("data_batch_1", "extract"), _cifar_python_garbage
    ),
    Case(
        "cifar_empty_root",
        "covariance",
        CIFAR,
        ("no CIFAR-10 batches", "dataset.root"),
        lambda r: (r / "c").mkdir(),
    ),
    # --- models ---------------------------------------------------------------------------------
    Case(
        "unet_path_missing",
        "trajectories",
        [*LEARNED, "model.path=no/such/dir"],
        ("model.path=no/such/dir", "fix"),
    ),
    Case(
        "unet_path_is_a_file",
        "trajectories",
        [*LEARNED, "model.path=afile"],
        ("model.path=afile", "checkpoint folder"),
        _write("afile", "x"),
    ),
    Case(
        "unet_trained_folder_edited",
        "trajectories",
        [*LEARNED, "model.path=ck"],
        ("ck", "MODEL_CARD.md", "retrain"),
        _trained_then_edited,
    ),
    Case(
        "unet_config_missing",
        "trajectories",
        [*LEARNED, "model.path=ck"],
        ("config.json", "point model.path"),
        lambda r: _checkpoint(r, lambda ck: (ck / "config.json").unlink()),
    ),
    Case(
        "unet_config_corrupt",
        "trajectories",
        [*LEARNED, "model.path=ck"],
        ("config.json", "re-download"),
        lambda r: _checkpoint(r, lambda ck: (ck / "config.json").write_text("{bad")),
    ),
    Case(
        "unet_scheduler_config_corrupt",
        "trajectories",
        [*LEARNED, "model.path=ck"],
        ("scheduler_config.json", "re-download"),
        lambda r: _checkpoint(r, lambda ck: (ck / "scheduler_config.json").write_text("{bad")),
    ),
    Case(
        "unet_weights_missing",
        "trajectories",
        [*LEARNED, "model.path=ck"],
        ("holds no weights", "re-download"),
        lambda r: _checkpoint(r, lambda ck: (ck / WEIGHTS).unlink()),
    ),
    Case(
        "unet_weights_corrupt",
        "trajectories",
        [*LEARNED, "model.path=ck"],
        (WEIGHTS, "re-download"),
        lambda r: _checkpoint(
            r, lambda ck: (ck / WEIGHTS).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00garbage")
        ),
    ),
    Case(
        "unet_weights_truncated",
        "trajectories",
        [*LEARNED, "model.path=ck"],
        (WEIGHTS, "re-download"),
        lambda r: _checkpoint(r, lambda ck: (ck / WEIGHTS).write_bytes((ck / WEIGHTS).read_bytes()[:5000])),
    ),
    Case(
        "unet_weights_nan",
        "trajectories",
        [*LEARNED, "model.path=ck"],
        ("conv_out.bias", "non-finite", "another checkpoint"),
        lambda r: _checkpoint(r, _edit_weights(_nan_weight)),
    ),
    Case(
        "unet_weights_missing_key",
        "trajectories",
        [*LEARNED, "model.path=ck"],
        ("lacks 1 weight", "conv_out.bias", "re-download"),
        lambda r: _checkpoint(r, _edit_weights(_drop_weight)),
    ),
    Case(
        "unet_weights_unexpected_key",
        "trajectories",
        [*LEARNED, "model.path=ck"],
        ("bogus.weight", "config.json saved with these weights"),
        lambda r: _checkpoint(r, _edit_weights(_extra_weight)),
    ),
    Case(
        "unet_weights_wrong_shape",
        "trajectories",
        [*LEARNED, "model.path=ck"],
        ("conv_out.bias is [7]", "config.json saved with these weights"),
        lambda r: _checkpoint(r, _edit_weights(_reshape_weight)),
    ),
    Case(
        "unet_hub_id_offline",
        "trajectories",
        [*LEARNED, "model.path=google/ddpm-nope-32"],
        ("google/ddpm-nope-32", "hf download"),
    ),
    Case(
        "unet_wrong_resolution",
        "trajectories",
        [*LEARNED, "dataset.resolution=32"],
        ("dataset.resolution=16", "allow_resolution_change"),
    ),
    Case(
        "unet_packaged_path_missing",
        "trajectories",
        [*LEARNED, "model.path=pkg://pipeline/assets/nope"],
        ("pkg://pipeline/assets/nope", "model preset"),
    ),
    # --- upstream outputs -----------------------------------------------------------------------
    Case(
        "trajectories_without_covariance",
        "trajectories",
        [*SMOKE, "paths.outputs=fresh"],
        ("covariance", "run"),
    ),
    Case("jacobian_without_trajectories", "jacobian", [*SMOKE, "num_seeds=3"], ("trajectories", "run")),
    Case(
        "jacobian_trajectory_corrupt",
        "jacobian",
        [*SMOKE, "force=true"],
        ("seed-0.npz", "rerun"),
        _corrupt("outputs/trajectories/*/seed-0.npz"),
    ),
    Case(
        "jacobian_trajectory_not_finite",
        "jacobian",
        [*SMOKE, "force=true"],
        ("seed-0.npz", "NaN", "step 2", "rerun the trajectories stage"),
        _as_recorded("trajectories", _nan_trajectory),
    ),
    Case(
        "jacobian_trajectory_seed_missing",
        "jacobian",
        [*SMOKE, "force=true"],
        ("seed(s) [1]", "rerun the trajectories stage"),
        _as_recorded("trajectories", lambda r: _first(r, "outputs/trajectories/*/seed-1.npz").unlink()),
    ),
    Case(
        "trajectories_gaussian_fit_missing",
        "trajectories",
        [*SMOKE, "force=true"],
        ("gaussian_fit.npz", "covariance.full_cov=true"),
        _as_recorded("covariance", lambda r: _first(r, "outputs/covariance/*/gaussian_fit.npz").unlink()),
    ),
    Case(
        "jacobian_patch_stats_corrupt",
        "jacobian",
        [*SMOKE, "force=true"],
        ("patch_stats.npz", "rerun"),
        _corrupt("outputs/covariance/*/patch_stats.npz"),
    ),
    Case(
        "trajectories_gaussian_fit_corrupt",
        "trajectories",
        [*SMOKE, "force=true"],
        ("gaussian_fit.npz", "rerun"),
        _corrupt("outputs/covariance/*/gaussian_fit.npz"),
    ),
    Case(
        "trajectories_upstream_meta_corrupt",
        "trajectories",
        [*SMOKE, "force=true"],
        ("meta.json", "rerun"),
        _corrupt("outputs/covariance/*/meta.json", b"{bad"),
    ),
    Case(
        "analysis_global_csv_foreign",
        "analysis",
        [*SMOKE, "force=true"],
        ("global.csv", "missing column", "rerun"),
        _as_recorded("jacobian", _corrupt("outputs/jacobian/*/global.csv", b"x,y\n1,2\n")),
    ),
    Case(
        "analysis_upstream_meta_corrupt",
        "analysis",
        [*SMOKE, "force=true"],
        ("meta.json", "rerun"),
        _corrupt("outputs/jacobian/*/meta.json", b"{bad"),
    ),
    Case(
        "analysis_compare_is_a_file",
        "analysis",
        [*SMOKE, "force=true", "analysis.compare=[afile]"],
        ("analysis.compare lists afile", "fix analysis.compare"),
        _write("afile", "x"),
    ),
    Case(
        "analysis_compare_missing",
        "analysis",
        [*SMOKE, "force=true", "analysis.compare=[nope]"],
        ("nope", "analysis.compare"),
    ),
    Case(
        "analysis_compare_edited",
        "analysis",
        [*SMOKE, "force=true", "analysis.compare=[cmpjac]"],
        ("cmpjac", "global.csv", "analysis.compare"),
        _copy_edited("jacobian", "cmpjac", "global.csv"),
    ),
    Case(
        "analysis_companion_edited",
        "analysis",
        [*SMOKE, "force=true", "analysis.companions=[compan]"],
        ("compan", "summary.json", "analysis.companions"),
        _copy_edited("analysis", "compan", "summary.json"),
    ),
    Case(
        "analysis_outputs_is_a_file",
        "analysis",
        [*SMOKE, "paths.outputs=afile"],
        ("paths.outputs=afile", "is a file"),
        _write("afile", "x"),
    ),
    # --- training -------------------------------------------------------------------------------
    Case("train_steps_zero", "train", [*TRAIN, "train.steps=0"], ("train.steps", "")),
    Case("train_prediction_type", "train", [*TRAIN, "train.prediction_type=nope"], ("prediction_type", "")),
    Case("train_reg_scheme", "train", [*TRAIN, "train.reg_scheme=nope"], ("train.reg_scheme", "partition")),
    Case("train_batch_zero", "train", [*TRAIN, "train.batch_size=0"], ("train.batch_size", "")),
    Case(
        "train_dataset_missing",
        "train",
        [*TRAIN, "dataset=celebahq", "dataset.root=nope", "dataset.resolution=16"],
        ("nope", "dataset.root"),
    ),
]


def _bomb(path: Path) -> None:
    from PIL import Image

    Image.new("L", (20000, 20000)).save(path, optimize=True)


def _stage_run(stage: str) -> Callable:
    import importlib

    return importlib.import_module(f"stages.{stage}").run


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_touches_nothing(case, smoke_project, tmp_path, monkeypatch, capsys):
    root = tmp_path / "project"
    shutil.copytree(smoke_project, root)
    monkeypatch.chdir(root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for k in cli_errors.DEBUG_ENVS:
        monkeypatch.delenv(k, raising=False)
    if case.setup:
        case.setup(root)
    if case.patch:
        case.patch(monkeypatch)
    overrides = [o.format(port=_free_port()) if "{port}" in o else o for o in case.overrides]
    before, folders = _snapshot(root), _output_folders(root)
    capsys.readouterr()

    t0 = time.monotonic()
    config_name = "train" if case.stage == "train" else "config"
    code = cli_errors.call(lambda: _stage_run(case.stage)(compose_config(overrides, config_name=config_name)))
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err

    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == cli_errors.EXIT_EXPECTED, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("error: ") and " — " in line, line
    for text in case.expect:
        assert text in line, f"{text!r} not in {line!r}"
    assert elapsed < 60, f"{case.id} took {elapsed:.0f} s to fail"
    # nothing half-written, nothing earlier touched
    assert not list(root.rglob("*.partial")), "a scratch folder was left behind"
    assert _output_folders(root) == folders
    assert _snapshot(root) == before


def test_a_dead_mlflow_server_fails_within_seconds(tmp_path, monkeypatch):
    from pipeline.tracking import TrackingError, check_reachable

    t0 = time.monotonic()
    with pytest.raises(TrackingError, match="tracking.enabled=false"):
        check_reachable(f"http://127.0.0.1:{_free_port()}")
    assert time.monotonic() - t0 < 5


def test_sixteen_bit_images_are_read_at_their_depth(tmp_path):
    """A 16-bit grey PNG keeps its values (v / 65535 → [-1, 1]) instead of clipping at 255."""
    from PIL import Image

    from pipeline.data import ImageFolderSource

    values = np.array([[0, 1000, 30000, 65535]] * 4, dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a.png")
    src = ImageFolderSource(tmp_path, resolution=4, channels=3, num_workers=1)
    assert not src.quantized and src.describe()["bit_depth"] == 16
    img = src.load_all()[0]
    expected = values.astype(np.float64) / 65535 * 2 - 1
    np.testing.assert_allclose(img[0], expected, atol=1e-6)
    np.testing.assert_array_equal(img[0], img[2])  # grey → identical RGB channels
    # the 8-bit reading of the same file: every value above 255 would read as white (1.0)
    assert (img[0] < 0.99).sum() == 12


def test_nan_trajectory_stops_with_the_seed_and_step():
    import torch

    from pipeline.errors import NonFiniteError
    from pipeline.geometry import chain_from_config, schedule_from_config
    from pipeline.sampler import sample_seeds

    class Overflow:
        image_shape = (1, 2, 2)
        alpha_bar = None
        dtype = torch.float64
        device = torch.device("cpu")

        def __call__(self, x, t):
            return torch.where(torch.full_like(x, t < 500, dtype=torch.bool), x * float("nan"), x)

    sched = schedule_from_config(
        {"kind": "linear", "num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02}
    )
    chain = chain_from_config(
        sched, {"num_steps": 10, "spacing": "trailing", "steps_offset": 0, "final_alpha_bar": 1.0}
    )
    with pytest.raises(NonFiniteError, match=r"seed\(s\) \[3, 4\].*step 6 \(paper t=400\)"):
        sample_seeds(Overflow(), chain, [3, 4], Path("unused"), batch_size=2, progress=False)


def test_overlapping_seed_sweep_is_warned_about(caplog):
    from omegaconf import OmegaConf

    from stages.callbacks import overlapping_seeds, warn_overlapping_seed_sweep

    assert overlapping_seeds([(0, 2), (1, 2)]) == [(0, 1, [1])]
    assert overlapping_seeds([(0, 2), (2, 2)]) == []
    cfg = OmegaConf.create({"seed": 0, "num_seeds": 2})
    with caplog.at_level("WARNING", logger="pifs"):
        warn_overlapping_seed_sweep(cfg, ["seed=0,1", "num_seeds=2"])
    assert "share seeds [1]" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="pifs"):
        warn_overlapping_seed_sweep(cfg, ["seed=0,2"])  # num_seeds=2 from the config: disjoint ranges
        warn_overlapping_seed_sweep(cfg, ["seed=range(0,6,2)", "model=unet"])
    assert caplog.text == ""


# ------------------------------------------------------------------------------------------------
# the command line itself (a few real subprocesses)

CLI_CASES = [
    ("covariance", [*SMOKE, "patch.size=5"], "patch.size=5"),
    ("jacobian", [*SMOKE, "points.seed_batch=0"], "points.seed_batch=0"),
    ("train", [*TRAIN, "paths.outputs=afile"], "paths.outputs=afile"),
    # a failed sweep job: Hydra's own "Error executing job" line is held back, the job named instead
    ("covariance", ["-m", *SMOKE, "patch.size=5"], "sweep job experiment=smoke"),
    # an override the grammar cannot read: named, with how to write it (not a URL)
    ("covariance", [*SMOKE, "run_key=ünï"], "the override 'run_key=ünï'"),
]


@pytest.mark.parametrize(
    ("stage", "overrides", "named"), CLI_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CLI_CASES)]
)
def test_command_line_prints_one_line_and_exits_2(stage, overrides, named, tmp_path):
    (tmp_path / "afile").write_text("x")
    env = {k: v for k, v in os.environ.items() if k not in cli_errors.DEBUG_ENVS}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run(
        [sys.executable, "-m", f"stages.{stage}", *overrides, f"hydra.run.dir={tmp_path}/.hydra"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], r.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_multirun_flag_between_overrides_still_sweeps(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in cli_errors.DEBUG_ENVS}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run(
        [sys.executable, "-m", "stages.covariance", *SMOKE, "patch.size=5", "-m", "dataset.num_images=8"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Hydra ran the sweep (its one job is refused for its patch size), not an argparse usage dump
    assert r.returncode == 2 and "usage:" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: sweep job") and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_debug_flag_shows_the_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "stages.covariance", *SMOKE, "patch.size=5", f"hydra.run.dir={tmp_path}/.h"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0 and "Traceback" in r.stderr and "patch.size=5" in r.stderr


def test_expected_error_mapping_names_the_path():
    assert cli_errors.one_line(OSError(errno.ENOSPC, "No space left", "/x/y.csv")).startswith(
        "no space left on the device holding /x/y.csv — "
    )
    assert "read-only" in cli_errors.one_line(OSError(errno.EROFS, "Read-only", "/x"))
    assert cli_errors.one_line(RuntimeError("a bug")) is None


def test_loading_a_checkpoint_prints_no_accelerate_warning(capfd, caplog):
    from pipeline.models import load_unet

    with caplog.at_level("INFO"):
        load_unet(ASSET)
    out, err = capfd.readouterr()
    assert "accelerate" not in (out + err + caplog.text).lower()


def test_every_folder_and_file_a_run_reads_is_one_of_its_inputs(smoke_project, monkeypatch):
    """The folders an analysis compares or embeds and the images the jacobian's proxy reads are inputs of
    the run, so a recomputed or edited one makes the run's record differ (never reused); a companion that
    does not exist yet is recorded as absent, so its appearance does too."""
    from pipeline.assemble.analysis import analysis_job
    from pipeline.assemble.jacobian import jacobian_job
    from pipeline.lineage import input_record
    from pipeline.settings import prepare_config

    monkeypatch.chdir(smoke_project)
    jac = _first(smoke_project, "outputs/jacobian/*/meta.json").parent
    ana = _first(smoke_project, "outputs/analysis/*/meta.json").parent
    overrides = [*SMOKE, f"analysis.compare=[{jac}]", f"analysis.companions=[{ana},nowhere]"]
    job = analysis_job(prepare_config(compose_config(overrides)))
    assert job.inputs["compare-0"] == jac and job.inputs["companion-0"] == ana
    assert input_record(job.inputs["companion-1"])["value"] == "absent: nowhere"
    measure = jacobian_job(prepare_config(compose_config(SMOKE)))
    assert measure.proxy_source is not None  # experiment=smoke measures Table 10's proxy on 16 images
    files = measure.inputs["proxy_images"]
    assert files and sorted(map(Path, files)) == sorted(map(Path, measure.proxy_source.input_files()))
