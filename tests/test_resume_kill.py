"""Preemption and resume: the trajectories stage killed half-way resumes from its
per-seed checkpoints, recomputes only what was missing, and ends with the outputs of an
uninterrupted run (tests/test_resume.py does the same for the jacobian stage).

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

# The smoke preset with 6 seeds of a 200-step chain sampled one per batch: 6 units, each long
# enough (~0.1 s) to stop the stage between two of them.
COMMON = ["experiment=smoke", "tracking=off", "progress=false"]
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
    proc = subprocess.Popen(
        [sys.executable, "-m", f"stages.{stage}", *overrides],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
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
                pytest.fail(
                    f"{stage} ended (rc {proc.returncode}) before half-way ({done}/{total} units): "
                    f"{proc.stderr.read()[-3000:]}"
                )
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


def _same_files(a: Path, b: Path, names: list[str]) -> None:
    """Every array of every file exactly equal."""
    for name in names:
        with np.load(a / name) as za, np.load(b / name) as zb:
            assert sorted(za.files) == sorted(zb.files)
            for k in za.files:
                assert np.array_equal(za[k], zb[k]), f"{name}:{k} differs after resume"


def test_killed_trajectories_stage_resumes_to_the_uninterrupted_outputs(tmp_path, monkeypatch):
    """Unit = one seed (batch size 1). tests/test_resume.py does the same for the jacobian stage."""
    import pipeline.sampler as sampler

    ref, run = tmp_path / "ref", tmp_path / "run"
    ref.mkdir()
    run.mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    # Reference: covariance and trajectories uninterrupted (in-process).
    monkeypatch.chdir(ref)
    _run_in_process("covariance", COMMON)
    traj_ref = _run_in_process("trajectories", COMMON + TRAJECTORIES).out_dir
    shutil.copytree(ref / "outputs" / "covariance", run / "outputs" / "covariance")
    monkeypatch.chdir(run)

    total = 6
    # a seed is finished once its sealed unit record is written beside its file
    killed = _kill_half_way("trajectories", COMMON + TRAJECTORIES, run, ".work-*/seed-*.npz.unit.json", total)
    assert not (run / "outputs" / "trajectories" / traj_ref.name).exists()  # nothing published
    calls = []
    real_sample = sampler.ddim_sample
    monkeypatch.setattr(sampler, "ddim_sample", lambda *a, **k: calls.append(1) or real_sample(*a, **k))
    res = _run_in_process("trajectories", COMMON + TRAJECTORIES)
    assert res.out_dir.name == traj_ref.name and not res.skipped
    assert len(calls) == total - killed and res.metrics["seeds_resumed"] == killed
    _same_files(traj_ref, res.out_dir, [f"seed-{s}.npz" for s in range(total)])
    print(
        f"\ntrajectories: killed after {killed}/{total} seeds; resume recomputed {len(calls)}/{total} "
        f"({killed / total:.0%} not recomputed); outputs equal"
    )
    # a finished run leaves no work folder behind
    assert not list((run / "outputs" / "trajectories").glob(".work-*"))
