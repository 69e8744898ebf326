"""Real SLURM: a one-node cluster on localhost (tests/cluster/slurm_up.sh), then
(a) a direct submitit job and (b) a two-job Hydra multirun through hydra-submitit-launcher,
both running the real covariance stage on the smoke preset, and (c) the smoke protocol's jacobian
split over a 4-task array (points.shards=4), pooled and analysed into the unsplit run's tables.

Success is judged by what comes back (the job's return value, Hydra's exit code) and by the
result files and MLflow runs, never by SLURM's job state: Hydra catches a job's exception, so
SLURM says COMPLETED for a failed job. Every wait has its own deadline (a job killed by a time
limit can make submitit wait forever). Each test uses a fresh submitit folder, so result
files of an earlier job with a reused id are never picked up.

The cluster comes up once per session (about 35 s cold on 2 cores, a no-op when it is already
up) and is stopped again at the end if this session started it (PIFS_SLURM_KEEP=1 keeps it).
The tests skip, with the reason, only where SLURM cannot be installed (not root, no apt-get,
packages unavailable); any other failure to start is a test failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UP = ROOT / "tests" / "cluster" / "slurm_up.sh"
DOWN = ROOT / "tests" / "cluster" / "slurm_down.sh"
CANNOT_INSTALL = 3  # slurm_up.sh's exit code for "SLURM cannot be installed here"
JOB_DEADLINE_S = 420

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="session")
def slurm_partition():
    """Bring the local cluster up (idempotent); yield its partition name."""
    if not shutil.which("bash"):
        pytest.skip("SLURM cannot be installed: no bash")
    t0 = time.time()
    proc = subprocess.run(["bash", str(UP)], capture_output=True, text=True, timeout=900)
    cold = time.time() - t0
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode == CANNOT_INSTALL:
        pytest.skip(f"SLURM cannot be installed on this machine: {out.splitlines()[-1]}")
    assert proc.returncode == 0, f"slurm_up.sh failed ({proc.returncode}):\n{out}"
    started_here = "already running" not in out
    print(f"\n{out}\n(slurm_up.sh wall time {cold:.1f} s)")
    partition = os.environ.get("PIFS_SLURM_PARTITION", "pifs")
    yield partition
    if started_here and os.environ.get("PIFS_SLURM_KEEP") != "1":
        subprocess.run(["bash", str(DOWN)], capture_output=True, text=True, timeout=120)


@pytest.fixture
def job_env(monkeypatch, tmp_path):
    """Jobs inherit the submitting environment (sbatch --export=ALL): make the project
    importable there, and start from no inherited sweep or tracking store."""
    monkeypatch.chdir(tmp_path)
    for var in ("MLFLOW_TRACKING_URI", "PIFS_SWEEP_ID", "PIFS_PARENT_RUN_ID", "SLURM_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


def covariance_job(outputs: str, uri: str):
    """Runs ON the SLURM node: the real covariance stage, smoke preset; returns its StageResult."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from stages import covariance

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "experiment=smoke",
                "progress=false",
                f"paths.outputs={outputs}",
                f"tracking.uri={uri}",
            ],
        )
    return covariance.run(cfg)


def _wait(job, deadline_s: float):
    t0 = time.time()
    while not job.done():
        if time.time() - t0 > deadline_s:
            job.cancel(check=False)
            pytest.fail(
                f"SLURM job {job.job_id} not done after {deadline_s} s (state {job.state}); "
                f"logs: {job.paths.stdout}, {job.paths.stderr}"
            )
        time.sleep(1)
    return job.result()


def test_direct_submitit_job_runs_a_real_stage(slurm_partition, job_env):
    import submitit
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{job_env / 'mlflow.db'}"
    executor = submitit.AutoExecutor(folder=job_env / "submitit" / "%j", cluster="slurm")
    executor.update_parameters(
        slurm_partition=slurm_partition, timeout_min=10, cpus_per_task=1, mem_gb=2, name="pifs-direct"
    )
    t0 = time.time()
    job = executor.submit(covariance_job, str(job_env / "outputs"), uri)
    result = _wait(job, JOB_DEADLINE_S)
    print(f"\ndirect submitit job {job.job_id}: {time.time() - t0:.1f} s from submit to result")

    assert not result.skipped
    folder = Path(result.out_dir)
    assert folder.parent == job_env / "outputs" / "covariance"
    info = json.loads((folder / "run.json").read_text())
    assert info["mlflow_run_id"] == result.run_id
    assert (folder / "patches.csv").is_file() and (folder / "patch_stats.npz").is_file()
    run = MlflowClient(tracking_uri=uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["slurm_job_id"] == str(job.job_id)  # it really ran as that SLURM job
    assert run.data.metrics["num_images"] == 1024


def test_hydra_multirun_through_the_slurm_launcher_runs_two_jobs(slurm_partition, job_env):
    from mlflow.tracking import MlflowClient

    from pipeline.sweeps import parent_run, runs_from_mlflow, runs_from_sweep_dir

    sweep_dir = job_env / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "stages.covariance",
        "-m",
        "hydra/launcher=slurm",
        f"hydra.launcher.partition={slurm_partition}",
        "hydra.launcher.gpus_per_node=0",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2",
        "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={sweep_dir}",
        "experiment=smoke",
        "progress=false",
        "patch.size=2,4",
    ]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=job_env, capture_output=True, text=True, timeout=JOB_DEADLINE_S + 60)
    print(f"\nHydra multirun via SLURM: {time.time() - t0:.1f} s end to end")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    files = runs_from_sweep_dir(sweep_dir)
    assert [(r.job_num, r.status) for r in files] == [(0, "COMPLETED"), (1, "COMPLETED")]
    uri = f"sqlite:///{job_env / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    runs = runs_from_mlflow(files[0].sweep_id, uri)
    assert [(r.job_num, r.status) for r in runs] == [(0, "FINISHED"), (1, "FINISHED")]
    array_ids = set()
    for r, f, p in zip(runs, files, (2, 4), strict=True):
        assert r.mlflow_run_id == f.mlflow_run_id
        folder = Path(f.out_dir)
        assert folder.parent == job_env / "outputs" / "covariance"
        assert (folder / "patches.csv").is_file() and (folder / "meta.json").is_file()
        assert r.params["patch.size"] == str(p)
        tags = client.get_run(r.mlflow_run_id).data.tags
        assert tags["slurm_job_id"] == f.slurm_job_id
        array_ids.add(tags["slurm_array_job_id"])
    assert len(array_ids) == 1  # hydra-submitit-launcher sends the sweep as ONE array job
    # ... with its own submitit folder under this sweep: <array id>, <array id>_<task>
    (array_id,) = array_ids
    assert sorted(p.name for p in (sweep_dir / ".submitit").iterdir() if p.is_dir()) == [
        array_id,
        f"{array_id}_0",
        f"{array_id}_1",
    ]
    assert parent_run(files[0].sweep_id, uri).info.status == "FINISHED"


def test_a_protocol_split_over_a_four_task_array_gives_the_unsplit_analysis_tables(slurm_partition, job_env):
    """The smoke protocol's points split over a 4-task SLURM array (points.shards=4 points.shard=0,1,2,3
    through hydra-submitit-launcher, one array job); the task that finishes last pools the shards, and the
    analysis of the pooled run writes the unsplit run's tables byte for byte (the unsplit run is computed
    here, in-process, beforehand)."""
    import filecmp
    import shutil

    from pipeline.runkeys import stage_dir, with_shard
    from pipeline.settings import prepare_config
    from pipeline.sweeps import runs_from_sweep_dir
    from stages import analysis, covariance, jacobian, trajectories
    from tests.conftest import compose_config

    smoke = ["experiment=smoke", "progress=false", "tracking.enabled=false"]
    cfg = compose_config(smoke)
    covariance.run(cfg)
    trajectories.run(cfg)
    whole_jac, whole_ana = jacobian.run(cfg).out_dir, analysis.run(cfg).out_dir
    unsplit = job_env / "unsplit"
    shutil.move(whole_jac, unsplit / "jacobian")
    shutil.move(whole_ana, unsplit / "analysis")

    sweep_dir = job_env / "sweep"
    cmd = [
        sys.executable,
        "-m",
        "stages.jacobian",
        "-m",
        "hydra/launcher=slurm",
        f"hydra.launcher.partition={slurm_partition}",
        "hydra.launcher.gpus_per_node=0",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2",
        "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={sweep_dir}",
        *smoke,
        "points.shards=4",
        "points.shard=0,1,2,3",
    ]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=job_env, capture_output=True, text=True, timeout=JOB_DEADLINE_S + 60)
    print(f"\n4-shard jacobian array via SLURM: {time.time() - t0:.1f} s end to end")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = runs_from_sweep_dir(sweep_dir)
    assert [(r.job_num, r.status) for r in jobs] == [(i, "COMPLETED") for i in range(4)]
    whole_cfg = prepare_config(cfg)
    assert [Path(r.out_dir) for r in jobs] == [
        stage_dir("jacobian", with_shard(whole_cfg, i, 4)).absolute() for i in range(4)
    ]
    (array_id,) = {p.name for p in (sweep_dir / ".submitit").iterdir() if "_" not in p.name}
    assert sorted(p.name for p in (sweep_dir / ".submitit").iterdir() if p.is_dir()) == [
        array_id,
        *(f"{array_id}_{i}" for i in range(4)),
    ]  # ONE array job of four tasks
    pooled = Path(whole_jac)
    assert (pooled / "meta.json").is_file(), "no task pooled the shards"

    t0 = time.time()
    result = analysis.run(compose_config([*smoke, "points.shards=4"]))
    print(f"analysis of the pooled shards: {time.time() - t0:.1f} s")
    assert Path(result.out_dir) == Path(whole_ana)
    for table in ("global.csv", "patches.csv", "blocks.csv", "proxy.csv"):
        assert filecmp.cmp(unsplit / "jacobian" / table, pooled / table, shallow=False), table
    tables = sorted(p.name for p in (unsplit / "analysis").glob("*.csv"))
    assert {"release_times.csv", "comparison.csv", "table_4.csv", "table_9.csv"} <= set(tables)
    differ = [
        t
        for t in tables
        if not filecmp.cmp(unsplit / "analysis" / t, Path(result.out_dir) / t, shallow=False)
    ]
    assert differ == []
