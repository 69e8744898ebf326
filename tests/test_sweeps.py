"""Hydra multirun sweeps: one run-key folder and one MLflow run per job, grouped per sweep.

The integration test runs the real covariance stage on the smoke preset through
hydra-submitit-launcher's local executor (separate processes, the pickled job function that
SLURM also gets), with one job that fails at config validation, and checks both records
that pipeline.sweeps reads: MLflow (sweep_id tag, parent run) and the sweep folder.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.sweeps import latest_sweep_id, parent_run, runs_from_mlflow, runs_from_sweep_dir, sweep_table
from stages.callbacks import PARENT_ENV, SWEEP_ENV, SweepTracking, new_sweep_id

ROOT = Path(__file__).resolve().parent.parent


def test_sweep_ids_are_unique_and_readable():
    ids = {new_sweep_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i.split("-")) == 3 and i[:8].isdigit() for i in ids)


def test_callback_state_survives_pickling_and_reaches_a_job_without_the_environment(monkeypatch):
    """The launcher pickles callbacks with itself: a job needs no inherited environment."""
    from omegaconf import OmegaConf

    cb = SweepTracking()
    cb.sweep_id, cb.parent_run_id, cb.tracking_uri = "s-1", "abc123", "sqlite:////x/mlflow.db"
    clone = pickle.loads(pickle.dumps(cb))
    for var in (SWEEP_ENV, PARENT_ENV, "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    clone.on_job_start(config=OmegaConf.create({"tracking": {"uri": None}}))
    assert os.environ[SWEEP_ENV] == "s-1"
    assert os.environ[PARENT_ENV] == "abc123"
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:////x/mlflow.db"
    # an explicit tracking.uri in the job's config wins over the parent's store
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    clone.on_job_start(config=OmegaConf.create({"tracking": {"uri": "http://127.0.0.1:5000"}}))
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_a_sweep_without_tracking_still_gets_an_id_and_leaves_the_environment_as_it_was(
    tmp_path, monkeypatch
):
    from omegaconf import OmegaConf

    monkeypatch.delenv(SWEEP_ENV, raising=False)
    monkeypatch.setenv(PARENT_ENV, "outer")
    cfg = OmegaConf.create(
        {
            "tracking": {"enabled": False},
            "hydra": {
                "sweep": {"dir": str(tmp_path / "sw")},
                "overrides": {"task": ["seed=0,1"]},
                "job": {"name": "covariance"},
            },
        }
    )
    cb = SweepTracking()
    cb.on_multirun_start(config=cfg)
    record = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert record["sweep_id"] == cb.sweep_id == os.environ[SWEEP_ENV] and record["parent_run_id"] is None
    assert record["overrides"] == ["seed=0,1"]
    cb.on_multirun_end(config=cfg)
    assert SWEEP_ENV not in os.environ and os.environ[PARENT_ENV] == "outer"


def test_a_single_run_is_not_a_sweep(monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.delenv(SWEEP_ENV, raising=False)
    SweepTracking().on_job_start(config=OmegaConf.create({}))
    assert SWEEP_ENV not in os.environ


@pytest.mark.parametrize("preset, dataclass_name", [("slurm", "SlurmQueueConf"), ("local", "LocalQueueConf")])
def test_launcher_presets_compose_with_released_keys_only(preset, dataclass_name, monkeypatch):
    """hydra-submitit-launcher 1.2.0 rejects unknown keys (srun_args, python are unreleased)."""
    import dataclasses

    from hydra_plugins.hydra_submitit_launcher import config as launcher_config

    from tests.conftest import compose_config

    monkeypatch.setenv("PIFS_SLURM_PARTITION", "gpu-test")
    cfg = compose_config([f"hydra/launcher={preset}"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    fields = {f.name for f in dataclasses.fields(getattr(launcher_config, dataclass_name))}
    assert set(launcher) <= fields
    assert launcher.submitit_folder == f"{cfg.hydra.sweep.dir}/.submitit/%j"  # fresh per sweep
    if preset == "slurm":
        assert launcher.partition == "gpu-test"  # from the environment
        assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (1, 1, 1)
        assert launcher.timeout_min > 0 and launcher.mem_gb > 0 and launcher.cpus_per_task > 0
    else:
        assert launcher.gpus_per_node == 0


def test_a_jacobian_sweep_feeds_the_analysis_compare_list(tmp_path):
    """Finished jobs' folders, in job order, round-trip through a Hydra override."""
    from pipeline.io import write_json
    from pipeline.sweeps import completed_out_dirs, hydra_list
    from tests.conftest import compose_config

    write_json(tmp_path / "sweep.json", {"sweep_id": "s"})
    for num, status in ((1, "COMPLETED"), (0, "COMPLETED"), (2, "FAILED")):
        write_json(
            tmp_path / str(num) / "pifs_job.json",
            {
                "sweep_id": "s",
                "job_num": num,
                "stage": "jacobian",
                "status": status,
                "out_dir": None
                if status == "FAILED"
                else f"outputs/jacobian/natural_crops-P{4 * (num + 1)}-ab12",
                "overrides": [f"patch.size={4 * (num + 1)}"],
            },
        )
    dirs = completed_out_dirs(runs_from_sweep_dir(tmp_path), stage="jacobian")
    assert dirs == ["outputs/jacobian/natural_crops-P4-ab12", "outputs/jacobian/natural_crops-P8-ab12"]
    cfg = compose_config([f"analysis.compare={hydra_list(dirs)}"])
    assert list(cfg.analysis.compare) == dirs


def test_sweep_dir_listing_names_the_fix_for_a_wrong_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a sweep folder"):
        runs_from_sweep_dir(tmp_path)


def stage_env() -> dict[str, str]:
    """Environment for stage subprocesses: the project importable, no inherited sweep/store."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", SWEEP_ENV, PARENT_ENV)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("MPLBACKEND", "Agg")
    return env


@pytest.mark.slow
@pytest.mark.integration
def test_multirun_of_a_real_stage_gives_one_folder_and_one_mlflow_run_per_job(tmp_path):
    sweep_dir = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "stages.covariance",
        "-m",
        "hydra/launcher=local",
        "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={sweep_dir}",
        "experiment=smoke",
        "progress=false",
        "patch.size=2,4,3",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=stage_env(), capture_output=True, text=True, timeout=600)
    # patch.size=3 does not divide 16: that job fails, so the multirun as a whole reports failure
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "patch.size=3 does not divide" in proc.stderr

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_id = json.loads((sweep_dir / "sweep.json").read_text())["sweep_id"]
    assert latest_sweep_id(uri) == sweep_id

    files = runs_from_sweep_dir(sweep_dir)
    assert [(r.job_num, r.status) for r in files] == [(0, "COMPLETED"), (1, "COMPLETED"), (2, "FAILED")]
    assert "patch.size=3" in files[2].error
    good = files[:2]
    assert len({r.out_dir for r in good}) == 2
    for r, p in zip(good, (2, 4), strict=True):
        folder = Path(r.out_dir)
        assert folder.parent == tmp_path / "outputs" / "covariance"
        assert (folder / "patches.csv").is_file() and (folder / "meta.json").is_file()
        assert r.params["patch.size"] == str(p)
        assert r.metrics["num_images"] == 1024  # the smoke preset's dataset.num_images
        rows = (folder / "patches.csv").read_text().strip().splitlines()
        assert len(rows) - 1 == (16 // p) ** 2  # one row per P×P patch of a 16×16 image

    runs = runs_from_mlflow(sweep_id, uri)
    assert [(r.job_num, r.status, r.stage) for r in runs] == [
        (0, "FINISHED", "covariance"),
        (1, "FINISHED", "covariance"),
    ]
    assert [r.mlflow_run_id for r in runs] == [r.mlflow_run_id for r in good]
    assert [r.run_key for r in runs] == [Path(r.out_dir).name for r in good]
    assert runs[1].overrides == ["experiment=smoke", "progress=False", "patch.size=4"]

    from mlflow.tracking import MlflowClient

    parent = parent_run(sweep_id, uri)
    assert parent is not None and parent.info.status == "FAILED"  # one job failed
    client = MlflowClient(tracking_uri=uri)
    for r in runs:
        assert client.get_run(r.mlflow_run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id
    rows = sweep_table(runs, params=("patch.size",))
    assert [row["patch.size"] for row in rows] == ["2", "4"] and "lambda_max" in rows[0]

    # Rerunning a point reuses its folder; the sweep still lists it, as a child run pointing at it.
    sweep2 = tmp_path / "sweep2"
    cmd2 = cmd[:5] + [f"hydra.sweep.dir={sweep2}", "experiment=smoke", "progress=false", "patch.size=4"]
    proc = subprocess.run(cmd2, cwd=tmp_path, env=stage_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sid2 = json.loads((sweep2 / "sweep.json").read_text())["sweep_id"]
    (reused,) = runs_from_mlflow(sid2, uri)
    assert reused.reused_run_id == runs[1].mlflow_run_id and reused.status == "FINISHED"
    assert reused.params["patch.size"] == "4" and reused.run_key == runs[1].run_key
    assert parent_run(sid2, uri).info.status == "FINISHED"
