"""Preemption and resume (issue 8): a stage killed half-way resumes from its per-unit
checkpoints, recomputes only what was missing, and ends with the outputs of an uninterrupted run.

The stage runs as a subprocess that gets SIGKILL (what a node failure or a SLURM time limit
does, no chance to clean up) as soon as half of its unit files exist in
outputs/<stage>/.work-<run-key>/. The rerun happens in-process with the unit function wrapped
to count calls, so the fraction of work not recomputed is measured, not inferred. The
uninterrupted reference runs under another outputs root with the same upstream folders.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The smoke preset; trajectories: 6 seeds of a 200-step chain sampled one per batch (6 units);
# jacobian: every step of the smoke 10-step chain for its 2 seeds (20 (seed, step) units).
COMMON = ["experiment=smoke", "tracking=off", "progress=false"]
JACOBIAN = ["measure.steps=null"]
TRAJECTORIES = ["num_seeds=6", "trajectories.batch_size=1", "sampler.num_steps=200"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PIFS_SWEEP_ID", "PIFS_PARENT_RUN_ID")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    return env


def _run_in_process(stage: str, overrides: list[str]):
    import importlib

    return importlib.import_module(f"stages.{stage}").run(compose_config(overrides))


def _kill_half_way(stage: str, overrides: list[str], cwd: Path, pattern: str, total: int) -> int:
    """Start the stage, SIGKILL it once >= total/2 unit files exist; return how many existed."""
    proc = subprocess.Popen([sys.executable, "-m", f"stages.{stage}", *overrides], cwd=cwd, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    work = cwd / "outputs" / stage
    deadline = time.time() + 300
    done = 0
    try:
        while time.time() < deadline:
            done = len(list(work.glob(pattern)))
            if done >= total // 2:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            if proc.poll() is not None:
                pytest.fail(f"{stage} ended (rc {proc.returncode}) before half-way ({done}/{total} units): "
                            f"{proc.stderr.read()[-3000:]}")
            time.sleep(0.01)
        else:
            pytest.fail(f"{stage} did not reach half-way ({done}/{total} units) in 300 s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = len(list(work.glob(pattern)))  # units finished between the check and the kill count too
    assert done < total, f"{stage} finished all {total} units before the kill landed; make units longer"
    return done


# Columns that hold measured wall times: different on every run by nature.
TIMING_COLUMNS = {"seconds"}


def _same_files(a: Path, b: Path, names: list[str]) -> None:
    """Arrays equal exactly; CSV tables equal cell by cell (as written) except timing columns."""
    import csv

    for name in names:
        if name.endswith(".npz"):
            with np.load(a / name) as za, np.load(b / name) as zb:
                assert sorted(za.files) == sorted(zb.files)
                for k in za.files:
                    assert np.array_equal(za[k], zb[k]), f"{name}:{k} differs after resume"
            continue
        with open(a / name, newline="") as fa, open(b / name, newline="") as fb:
            ra, rb = list(csv.reader(fa)), list(csv.reader(fb))
        assert ra[0] == rb[0] and len(ra) == len(rb), f"{name}: header or row count differs after resume"
        keep = [j for j, col in enumerate(ra[0]) if col not in TIMING_COLUMNS]
        for n, (x, y) in enumerate(zip(ra[1:], rb[1:], strict=True)):
            assert [x[j] for j in keep] == [y[j] for j in keep], f"{name} row {n} differs after resume"


def test_killed_stages_resume_to_the_uninterrupted_outputs(tmp_path, monkeypatch):
    import pipeline.measurement as measurement
    import pipeline.sampler as sampler

    ref, run = tmp_path / "ref", tmp_path / "run"
    ref.mkdir()
    run.mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    # Reference: covariance, trajectories and jacobian uninterrupted (in-process).
    monkeypatch.chdir(ref)
    _run_in_process("covariance", COMMON)
    traj_ref = _run_in_process("trajectories", COMMON + TRAJECTORIES).out_dir
    smoke_traj = _run_in_process("trajectories", COMMON).out_dir
    jac_ref = _run_in_process("jacobian", COMMON + JACOBIAN).out_dir
    shutil.copytree(ref / "outputs" / "covariance", run / "outputs" / "covariance")
    shutil.copytree(smoke_traj, run / "outputs" / "trajectories" / smoke_traj.name)
    monkeypatch.chdir(run)

    # --- trajectories: 6 seeds, one per batch (unit = seed) -----------------------------------
    killed = _kill_half_way("trajectories", COMMON + TRAJECTORIES, run, ".work-*/seed-*.npz", 6)
    assert (run / "outputs" / "trajectories" / traj_ref.name).exists() is False  # nothing published
    calls = []
    real_sample = sampler.ddim_sample
    monkeypatch.setattr(sampler, "ddim_sample", lambda *a, **k: calls.append(1) or real_sample(*a, **k))
    res = _run_in_process("trajectories", COMMON + TRAJECTORIES)
    assert res.out_dir.name == traj_ref.name and not res.skipped
    assert len(calls) == 6 - killed and res.metrics["seeds_resumed"] == killed
    _same_files(traj_ref, res.out_dir, [f"seed-{s}.npz" for s in range(6)])
    print(f"\ntrajectories: killed after {killed}/6 seeds; resume recomputed {len(calls)}/6 "
          f"({killed / 6:.0%} not recomputed); outputs equal")

    # --- jacobian: 2 seeds x 10 steps = 20 (seed, step) units ---------------------------------
    total = 20
    killed = _kill_half_way("jacobian", COMMON + JACOBIAN, run, ".work-*/seed-*/step-*.json", total)
    calls.clear()
    real_measure = measurement._measure_one
    monkeypatch.setattr(measurement, "_measure_one", lambda *a, **k: calls.append(1) or real_measure(*a, **k))
    res = _run_in_process("jacobian", COMMON + JACOBIAN)
    assert res.out_dir.name == jac_ref.name and not res.skipped
    assert len(calls) == total - killed
    tables = sorted(p.name for p in jac_ref.glob("*.csv"))
    assert "global.csv" in tables
    _same_files(jac_ref, res.out_dir, tables)
    print(f"jacobian: killed after {killed}/{total} units; resume recomputed {len(calls)}/{total} "
          f"({killed / total:.0%} not recomputed); {', '.join(tables)} equal but for wall times")
    # a finished run leaves no work folder behind
    assert not list((run / "outputs" / "jacobian").glob(".work-*"))
