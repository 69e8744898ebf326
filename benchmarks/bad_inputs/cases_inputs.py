"""Missing or corrupt inputs, bad paths and tracking stores: each a refusal in one line naming the file
or key, with nothing half-written and nothing earlier touched."""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks.bad_inputs import evidence as ev
from benchmarks.bad_inputs import plants
from benchmarks.bad_inputs.spec import CLI, EITHER, RESULT, SCHEMA, Case, Plant

CELEBA = ("dataset=celebahq", "dataset.resolution=16", "dataset.num_images=4", "dataset.root=imgs")
CIFAR = (
    "dataset=cifar10",
    "dataset.resolution=32",
    "dataset.num_images=10",
    "dataset.root=c",
    "patch.size=8",
)
LEARNED = ("model=pifs_ddpm16", "model.path=myckpt", "sampler.num_steps=5", "num_seeds=1")
WEIGHTS = "diffusion_pytorch_model.safetensors"


def _input(id, args, names, setup=(), owner=CLI, expect="line", wrong=None, category="inputs", base="smoke"):
    return Case(
        id,
        category,
        args,
        expect=expect,
        names=names,
        setup=tuple(setup),
        wrong=wrong,
        owner=owner,
        base=base,
    )


def _truncate(name: str, keep: int):
    def mutate(ck: Path) -> None:
        (ck / name).write_bytes((ck / name).read_bytes()[:keep])

    return mutate


def _rewrite(name: str, data: str):
    return lambda ck: (ck / name).write_text(data)


def _unlink(name: str):
    return lambda ck: (ck / name).unlink()


def _schema_version(db: Path) -> None:
    import sqlite3

    with sqlite3.connect(db) as con:
        con.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")


def _truncate_file(keep: int):
    return lambda path: path.write_bytes(path.read_bytes()[:keep])


def _artifacts_file(root: Path) -> None:
    shutil.rmtree(root / "mlartifacts")
    (root / "mlartifacts").write_text("x\n")


def _db_folder(root: Path) -> None:
    (root / "mlflow.db").unlink()
    (root / "mlflow.db").mkdir()
    (root / "mlflow.db" / "keep.txt").write_text("x\n")


INPUTS = [
    # upstream outputs
    _input("jacobian_without_trajectories", ("jacobian", "num_seeds=3"), ("trajectories",)),
    _input("trajectories_without_covariance", ("trajectories", "paths.outputs=fresh"), ("covariance",)),
    _input(
        "trajectory_npz_corrupt",
        ("jacobian", "force=true"),
        ("seed-0.npz",),
        [plants.damage("outputs/trajectories/*/seed-0.npz")],
    ),
    _input(
        "trajectory_seed_deleted",
        ("jacobian", "force=true"),
        ("seed-1.npz",),
        [plants.delete("outputs/trajectories/*/seed-1.npz")],
    ),
    _input(
        "patch_stats_corrupt",
        ("jacobian", "force=true"),
        ("patch_stats.npz",),
        [plants.damage("outputs/covariance/*/patch_stats.npz")],
    ),
    _input(
        "gaussian_fit_corrupt",
        ("trajectories", "force=true"),
        ("gaussian_fit.npz",),
        [plants.damage("outputs/covariance/*/gaussian_fit.npz")],
    ),
    _input(
        "covariance_meta_corrupt",
        ("trajectories", "force=true"),
        ("meta.json",),
        [plants.damage("outputs/covariance/*/meta.json", b"{bad")],
    ),
    _input(
        "covariance_meta_deleted",
        ("trajectories", "force=true"),
        ("meta.json",),
        [plants.delete("outputs/covariance/*/meta.json")],
    ),
    _input(
        "jacobian_meta_corrupt",
        ("analysis", "force=true"),
        ("meta.json",),
        [plants.damage("outputs/jacobian/*/meta.json", b"{bad")],
    ),
    _input(
        "jacobian_meta_is_a_list",
        ("analysis", "force=true"),
        ("meta.json",),
        [plants.damage("outputs/jacobian/*/meta.json", b"[1, 2]")],
    ),
    _input(
        "global_csv_edited",
        ("analysis", "force=true"),
        ("global.csv",),
        [plants.damage("outputs/jacobian/*/global.csv", b"x,y\n1,2\n")],
    ),
    _input(
        "covariance_folder_emptied",
        ("trajectories", "force=true"),
        ("covariance",),
        [
            plants.delete("outputs/covariance/*/patch_stats.npz"),
            plants.delete("outputs/covariance/*/meta.json"),
        ],
    ),
    # datasets
    _input("celeba_root_missing", ("covariance", *CELEBA[:-1], "dataset.root=nope"), ("nope",)),
    _input("celeba_empty_folder", ("covariance", *CELEBA), ("imgs",), [plants.mkdir("imgs")]),
    _input(
        "celeba_corrupt_png",
        ("covariance", *CELEBA),
        ("001.png",),
        [plants.pngs("imgs", extra={"001.png": b"\x89PNG\r\n\x1a\nxxxx"})],
    ),
    _input(
        "celeba_truncated_png",
        ("covariance", *CELEBA),
        ("002.png",),
        [plants.pngs("imgs"), plants.truncate_png("imgs/002.png")],
    ),
    _input(
        "celeba_too_few_images",
        ("covariance", *CELEBA[:-2], "dataset.num_images=10", "dataset.root=imgs"),
        ("dataset.num_images",),
        [plants.pngs("imgs")],
    ),
    _input(
        "celeba_stray_file",
        ("covariance", *CELEBA),
        ("notes.txt",),
        [plants.pngs("imgs", extra={"notes.txt": b"x"})],
    ),
    _input("cifar_root_missing", ("covariance", *CIFAR[:-2], "dataset.root=nope", "patch.size=8"), ("nope",)),
    _input(
        "cifar_archive_corrupt",
        ("covariance", *CIFAR),
        ("cifar-10-binary.tar.gz",),
        [plants.write("c/cifar-10-binary.tar.gz", b"garbage")],
    ),
    # checkpoints
    _input(
        "checkpoint_missing",
        ("trajectories", *LEARNED[:1], "model.path=no/such/dir", *LEARNED[2:]),
        ("model.path",),
    ),
    _input(
        "checkpoint_config_corrupt",
        ("trajectories", *LEARNED),
        ("config.json",),
        [plants.checkpoint(_rewrite("config.json", "{bad"))],
    ),
    _input(
        "checkpoint_weights_missing",
        ("trajectories", *LEARNED),
        ("myckpt",),
        [plants.checkpoint(_unlink(WEIGHTS))],
    ),
    _input(
        "checkpoint_weights_truncated",
        ("trajectories", *LEARNED),
        (WEIGHTS,),
        [plants.checkpoint(_truncate(WEIGHTS, 5000))],
    ),
    _input(
        "checkpoint_scheduler_corrupt",
        ("trajectories", *LEARNED),
        ("scheduler_config.json",),
        [plants.checkpoint(_rewrite("scheduler_config.json", "[]"))],
    ),
    _input(
        "hub_id_offline",
        ("trajectories", *LEARNED[:1], "model.path=google/ddpm-nope-32", *LEARNED[2:]),
        ("google/ddpm-nope-32",),
    ),
]

PATHS = [
    _input(
        "outputs_is_a_file",
        ("covariance", "paths.outputs=afile"),
        ("paths.outputs",),
        [plants.write("afile", "x")],
        category="paths",
    ),
    _input(
        "outputs_under_a_file",
        ("jacobian", "paths.outputs=afile/out"),
        ("paths.outputs",),
        [plants.write("afile", "x")],
        category="paths",
    ),
    _input(
        "outputs_on_a_read_only_file_system",
        ("covariance", "paths.outputs=/proc/pifs-out"),
        ("/proc",),
        category="paths",
    ),
    _input(
        "dataset_root_is_a_file",
        ("covariance", *CELEBA[:-1], "dataset.root=afile"),
        ("dataset.root",),
        [plants.write("afile", "x")],
        category="paths",
    ),
    _input(
        "model_path_is_a_file",
        ("trajectories", *LEARNED[:1], "model.path=afile", *LEARNED[2:]),
        ("model.path",),
        [plants.write("afile", "x")],
        category="paths",
    ),
    _input(
        "compare_folder_missing",
        ("analysis", "force=true", "analysis.compare=[nope]"),
        ("nope",),
        category="paths",
    ),
    _input(
        "compare_is_a_file",
        ("analysis", "force=true", "analysis.compare=[afile]"),
        ("afile",),
        [plants.write("afile", "x")],
        category="paths",
    ),
    _input(
        "hydra_run_dir_under_a_file",
        ("covariance", "hydra.run.dir=afile/x"),
        ("afile",),
        [plants.write("afile", "x")],
        category="paths",
    ),
    _input(
        "train_out_dir_is_a_file",
        ("train", "train.out_dir=afile"),
        ("train.out_dir",),
        [plants.write("afile", "x")],
        category="paths",
    ),
    _input(
        "outputs_folder_name_with_spaces",
        ("covariance", "paths.outputs=my outputs"),
        ("paths.outputs",),
        expect=EITHER,
        category="paths",
        wrong=ev.written_under("my outputs"),
    ),
]

TRACKING = [
    _input(
        "mlflow_db_corrupt",
        ("covariance", "force=true"),
        ("mlflow.db",),
        [plants.damage("mlflow.db", b"not a database" * 100, protect=True)],
        owner=SCHEMA,
        category="tracking",
    ),
    _input(
        "mlflow_db_truncated",
        ("covariance", "force=true"),
        ("mlflow.db",),
        [plants.edit_store("mlflow.db", _truncate_file(4096))],
        owner=SCHEMA,
        category="tracking",
    ),
    _input(
        "mlflow_db_is_a_folder",
        ("covariance", "force=true"),
        ("mlflow.db",),
        [Plant(_db_folder)],
        owner=SCHEMA,
        category="tracking",
    ),
    _input(
        "mlflow_db_locked",
        ("covariance", "force=true"),
        ("mlflow.db",),
        [plants.sqlite_locked()],
        owner=SCHEMA,
        category="tracking",
    ),
    _input(
        "mlflow_db_newer_schema",
        ("covariance", "force=true"),
        ("mlflow.db",),
        [plants.edit_store("mlflow.db", _schema_version)],
        owner=SCHEMA,
        category="tracking",
    ),
    _input(
        "mlflow_server_dead",
        ("covariance", "force=true", "tracking.uri=http://127.0.0.1:9"),
        ("tracking.uri",),
        owner=SCHEMA,
        category="tracking",
    ),
    _input(
        "mlflow_server_not_mlflow",
        ("covariance", "force=true", "tracking.uri=http://127.0.0.1:{port}"),
        ("127.0.0.1",),
        [plants.http_server(404)],
        owner=SCHEMA,
        category="tracking",
    ),
    _input(
        "mlflow_uri_unknown_scheme",
        ("covariance", "force=true", "tracking.uri=nope://x"),
        ("tracking.uri",),
        owner=SCHEMA,
        category="tracking",
    ),
    _input(
        "mlflow_file_store_is_a_file",
        ("covariance", "force=true", "tracking.uri=file:./afile"),
        ("afile",),
        [plants.write("afile", "x")],
        owner=SCHEMA,
        category="tracking",
    ),
    _input(
        "mlartifacts_is_a_file",
        ("covariance", "force=true"),
        ("mlartifacts",),
        [Plant(_artifacts_file)],
        owner=SCHEMA,
        category="tracking",
    ),
    _input(
        "mlflow_db_in_new_folder",
        ("covariance", "force=true", "tracking.uri=sqlite:///newdir/sub/m.db"),
        ("tracking.uri",),
        expect=EITHER,
        owner=SCHEMA,
        category="tracking",
        wrong=ev.same_as_base("covariance"),
    ),
    _input(
        "tracking_off_with_broken_store",
        ("covariance", "force=true", "tracking.enabled=false"),
        (),
        [plants.damage("mlflow.db", b"garbage", protect=True)],
        expect=RESULT,
        owner=SCHEMA,
        category="tracking",
        wrong=ev.same_as_base("covariance"),
    ),
]

CASES = [*INPUTS, *PATHS, *TRACKING]
