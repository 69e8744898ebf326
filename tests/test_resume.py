"""A stage killed half-way (SIGKILL) resumes from its per-unit checkpoints; outputs equal an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import io
from tests.conftest import ROOT, compose_config

# every step of the 10-step smoke chain, global norm and Rayleigh quotients only: 20 (seed, step) units
OVERRIDES = [
    "experiment=smoke",
    "progress=false",
    "tracking.enabled=false",
    "points.steps=null",
    "measure.blocks=off",
]


def _run_upstream(root: Path) -> None:
    from stages import covariance, trajectories

    cwd = os.getcwd()
    os.chdir(root)
    try:
        cfg = compose_config(OVERRIDES)
        covariance.run(cfg)
        trajectories.run(cfg)
    finally:
        os.chdir(cwd)


@pytest.mark.integration
def test_jacobian_stage_killed_half_way_resumes_to_identical_outputs(tmp_path):
    _run_upstream(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "stages.jacobian", *OVERRIDES]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.time() + 300
    units = []
    while time.time() < deadline and proc.poll() is None:
        units = list(tmp_path.glob("outputs/jacobian/.work-*/seed-*/step-*.json"))
        if len(units) >= 10:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the stage finished before it could be killed: {proc.stderr.read()!r}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    done_before = len(list(tmp_path.glob("outputs/jacobian/.work-*/seed-*/step-*.json")))
    assert 0 < done_before < 20
    # killed: no final folder, only the work folder
    assert [p.name for p in (tmp_path / "outputs/jacobian").iterdir() if not p.name.startswith(".")] == []

    # resume in-process, counting the units that are measured again
    from pipeline.jacobian import loop as measurement
    from stages import jacobian

    calls = []
    original = measurement._measure_group

    def counting(*a, **k):
        calls.append(1)
        return original(*a, **k)

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        measurement._measure_group = counting
        resumed = jacobian.run(compose_config(OVERRIDES))
        measurement._measure_group = original
        resumed_tables = {n: io.read_csv(resumed.out_dir / n) for n in ("global.csv", "patches.csv")}
        fresh = jacobian.run(compose_config([*OVERRIDES, "force=true"]))
    finally:
        measurement._measure_group = original
        os.chdir(cwd)
    assert len(calls) == 20 - done_before
    print(
        f"killed after {done_before}/20 units; resume recomputed {len(calls)} "
        f"({len(calls) / 20:.0%}), reused {done_before / 20:.0%}"
    )
    # resumed == uninterrupted (the forced rerun recomputes every unit from scratch)
    for name in ("global.csv", "patches.csv"):
        a = resumed_tables[name]
        b = io.read_csv(fresh.out_dir / name)
        drop = {"seconds"}  # wall-clock timing column
        assert [{k: v for k, v in r.items() if k not in drop} for r in a] == [
            {k: v for k, v in r.items() if k not in drop} for r in b
        ]


@pytest.mark.integration
def test_a_unit_edited_by_hand_is_measured_again_not_reused(tmp_path, monkeypatch):
    """A resumable unit carries the sha256 of its own JSON: one edited after a stopped run is measured again
    (with a warning), so the hand-made number never reaches global.csv."""
    import json

    from pipeline.jacobian import loop as measurement
    from stages import jacobian

    _run_upstream(tmp_path)
    monkeypatch.chdir(tmp_path)
    original = measurement._measure_group
    calls = []

    def stop_after_five(*a, **k):
        if len(calls) == 5:
            raise RuntimeError("stopped")
        calls.append(1)
        return original(*a, **k)

    monkeypatch.setattr(measurement, "_measure_group", stop_after_five)
    with pytest.raises(RuntimeError, match="stopped"):
        jacobian.run(compose_config(OVERRIDES))
    units = sorted(tmp_path.glob("outputs/jacobian/.work-*/seed-*/step-*.json"))
    assert len(units) == 5
    edited = json.loads(units[0].read_text())
    edited["global"]["kappa_pi"] = 2 * edited["global"]["kappa_pi"]
    units[0].write_text(json.dumps(edited))

    calls.clear()
    monkeypatch.setattr(
        measurement, "_measure_group", lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    )
    resumed = io.read_csv(jacobian.run(compose_config(OVERRIDES)).out_dir / "global.csv")
    assert len(calls) == 20 - 5 + 1  # the 15 never measured and the edited one
    monkeypatch.setattr(measurement, "_measure_group", original)
    fresh = io.read_csv(jacobian.run(compose_config([*OVERRIDES, "force=true"])).out_dir / "global.csv")
    drop = {"seconds"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed] == [
        {k: v for k, v in r.items() if k not in drop} for r in fresh
    ]
