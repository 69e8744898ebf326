"""Run lifecycle faults: output folders that cannot hurt anything else, resume that cannot mix,
outputs that are what they claim, one writer per folder, signals, and no pickle ever executed.

Stages run in-process through their ``run(cfg)`` with Hydra's compose API on the smoke preset; the
two kill tests start the stage as a subprocess and send it a real SIGKILL / SIGTERM.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import io
from pipeline.errors import PipelineError
from pipeline.runkeys import run_spec
from pipeline.runs import lock_path, run_stage, upstream_dir
from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ["experiment=smoke", "tracking.enabled=false", "progress=false"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PIFS_SWEEP_ID", "PIFS_PARENT_RUN_ID")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(HF_HUB_OFFLINE="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    return env


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _toy_cfg(root: Path, **kw) -> dict:
    cfg = {
        "dataset": {"name": "d", "resolution": 8},
        "patch": {"size": 4},
        "covariance": {},
        "tracking": {"enabled": False},
        "paths": {"outputs": str(root / "outputs")},
        "run_key": "toy",
        "seed": 0,
    }
    cfg.update(kw)
    return cfg


# --- output folders that cannot hurt anything else -------------------------------------------------


@pytest.mark.parametrize("key", [".", "..", "/abs", "a/b", "../victim", "-x", ".hidden", "a b"])
def test_a_run_key_that_is_not_a_plain_name_is_refused_before_any_work(project, key):
    from stages import covariance

    victim = project / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("four years of work")
    other = project / "outputs" / "covariance" / "someone-else"
    other.mkdir(parents=True)
    (other / "notes.txt").write_text("keep")
    before = _snapshot(project)
    if key == "/abs":
        key = str(victim)
    with pytest.raises(PipelineError, match=r"run_key=.* is not a plain folder name — "):
        covariance.run(compose_config([*SMOKE, f"run_key={key}"]))
    assert _snapshot(project) == before  # nothing written, nothing removed


def test_a_folder_that_is_not_an_output_of_the_stage_is_never_replaced(project):
    from stages import covariance

    mine = project / "outputs" / "covariance" / "mine"
    mine.mkdir(parents=True)
    (mine / "thesis.tex").write_text("not an output")
    before = _snapshot(project)
    with pytest.raises(
        PipelineError, match="is not a completed output of the covariance stage.*left untouched"
    ):
        covariance.run(compose_config([*SMOKE, "run_key=mine"]))
    assert _snapshot(project) == before
    # another stage's output is not this stage's either
    io.write_json(mine / "meta.json", {"stage": "jacobian"})
    with pytest.raises(PipelineError, match="not a completed output of the covariance stage"):
        run_stage(run_spec("covariance", _toy_cfg(project, run_key="mine")), lambda ctx: None)
    assert (mine / "thesis.tex").read_text() == "not an output"


def test_train_out_dir_naming_a_folder_that_is_not_a_model_folder_is_refused(project):
    from stages.train import run

    target = project / "my-folder"
    target.mkdir()
    (target / "data.csv").write_text("1,2,3\n")
    before = _snapshot(project)
    cfg = compose_config(
        ["train=smoke", "tracking.enabled=false", "progress=false", f"train.out_dir={target}"],
        config_name="train",
    )
    with pytest.raises(PipelineError, match=r"not a completed output of the train stage.*train\.out_dir"):
        run(cfg)
    assert _snapshot(project) == before


def test_outputs_get_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        res = run_stage(
            run_spec("covariance", _toy_cfg(tmp_path)), lambda ctx: io.write_text(ctx.out_dir / "a.txt", "a")
        )
    finally:
        os.umask(old)
    assert res.out_dir.stat().st_mode & 0o777 == 0o755
    assert (res.out_dir / "a.txt").stat().st_mode & 0o777 == 0o644


# --- one writer per folder ------------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    cfg = _toy_cfg(tmp_path)
    final = tmp_path / "outputs" / "covariance" / "toy"
    lock = lock_path(final)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pipeline import io\n"
            f"with io.writer_lock({str(lock)!r}, 'x'):\n"
            "    print('held', flush=True); time.sleep(120)",
        ],
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        calls = []
        with pytest.raises(
            io.FolderBusyError, match=rf"being written by another run \(host .*, pid {holder.pid},"
        ):
            run_stage(run_spec("covariance", cfg), lambda ctx: calls.append(1))
        assert calls == [] and not final.exists()
    finally:
        holder.kill()
        holder.wait()
    # the kernel freed the lock with its holder: the next writer goes ahead
    res = run_stage(run_spec("covariance", cfg), lambda ctx: io.write_text(ctx.out_dir / "a.txt", "a"))
    assert (res.out_dir / "a.txt").read_text() == "a"


def test_the_lock_file_goes_with_its_holder_and_a_removed_file_is_never_a_second_lock(tmp_path):
    lock = tmp_path / ".lock-x"
    with io.writer_lock(lock, "x"):
        assert lock.is_file()
        with pytest.raises(io.FolderBusyError):
            with io.writer_lock(lock, "x"):
                pass
        assert lock.is_file()  # the refused writer did not take the holder's file away
    assert not lock.exists()
    # a writer that opened the file just before its holder removed it must not count as holding the
    # lock: the path no longer names that file, so it opens the path again
    import fcntl

    stale = os.open(lock, os.O_RDWR | os.O_CREAT)
    os.unlink(lock)
    with io.writer_lock(lock, "x"):
        fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the unlinked file is free: not the lock
        with pytest.raises(io.FolderBusyError):
            with io.writer_lock(lock, "x"):
                pass
    os.close(stale)


def test_stale_scratch_and_resumeless_work_folders_are_cleaned_when_their_lock_is_free(tmp_path):
    from pipeline.workspace import SCRATCH_RECORD, WORK_RECORD

    parent = tmp_path / "outputs" / "covariance"
    names = (".partial-killed", ".partial-killed.old", ".work-empty", ".work-resumable", ".partial-busy")
    for name in (*names, ".partial-someones", ".work-someones"):
        (parent / name).mkdir(parents=True)
    # what runs of the stage made says so (the killed run's scratch, a work folder's record)
    io.write_json(parent / ".partial-killed" / SCRATCH_RECORD, {"stage": "covariance"})
    io.write_json(parent / ".work-resumable" / WORK_RECORD, {"stage": "covariance", "unit_digest": "u"})
    io.write_text(parent / ".work-resumable" / "unit.npz", "a unit a later run can resume")
    io.write_json(parent / ".partial-busy" / SCRATCH_RECORD, {"stage": "covariance"})
    io.write_text(parent / ".partial-busy" / "x", "being written")
    # hidden folders no run of the stage made are someone's data
    io.write_text(parent / ".partial-someones" / "draft.tex", "draft")
    io.write_text(parent / ".work-someones" / "unit.npz", "not a run's")
    with io.writer_lock(parent / ".lock-busy", "busy"):
        run_stage(run_spec("covariance", _toy_cfg(tmp_path)), lambda ctx: None)
        left = sorted(p.name for p in parent.iterdir() if not p.name.startswith(".lock-"))
    assert left == [".partial-busy", ".partial-someones", ".work-resumable", ".work-someones", "toy"]


# --- resume that cannot mix -----------------------------------------------------------------------


def test_work_units_of_another_config_are_discarded_not_merged(tmp_path, caplog):
    """A failed run leaves units; a rerun under the same run key with another config must not use them."""

    def failing(ctx):
        io.write_text(ctx.work_dir / "unit-0.txt", "made with seed 0")
        raise RuntimeError("preempted")

    with pytest.raises(RuntimeError):
        run_stage(run_spec("covariance", _toy_cfg(tmp_path)), failing)
    seen = []

    def body(ctx):
        seen.extend(sorted(p.name for p in ctx.work_dir.iterdir()))

    with caplog.at_level(logging.WARNING, logger="pifs"):
        run_stage(run_spec("covariance", _toy_cfg(tmp_path, patch={"size": 2})), body)
    assert seen == ["work.json"]
    assert "discarding 1 resumable file(s)" in caplog.text and "never mixed" in caplog.text
    # under an unchanged config the units are kept
    with pytest.raises(RuntimeError):
        run_stage(run_spec("covariance", _toy_cfg(tmp_path, run_key="again")), failing)
    seen.clear()
    run_stage(run_spec("covariance", _toy_cfg(tmp_path, run_key="again")), body)
    assert seen == ["unit-0.txt", "work.json"]


class _RecordingTracker:
    """Stands in for the MLflow run (the subprocess SIGTERM test uses a real store)."""

    run_id = tracking_uri = None

    def __init__(self) -> None:
        self.status, self.tags = None, {}

    def log_params(self, params) -> None:
        pass

    def log_dict(self, data, artifact_file) -> None:
        pass

    def set_tags(self, tags) -> None:
        self.tags.update(tags)

    def finish(self, status: str) -> None:
        self.status = status


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_body_stops_cleanly_keeps_work_and_marks_the_run_killed(project, monkeypatch, sig):
    from pipeline import runs
    from pipeline.runs import StageInterrupted

    tracker = _RecordingTracker()
    monkeypatch.setattr(runs.Tracker, "start", classmethod(lambda cls, **kw: tracker))
    # what the process had before the run (SIG_IGN when a shell started it in the background)
    own = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def body(ctx):
        io.write_text(ctx.work_dir / "unit-0.txt", "done")
        io.write_text(ctx.out_dir / "half.csv", "half")
        os.kill(os.getpid(), sig)
        time.sleep(5)  # the handler raises here
        pytest.fail("the signal did not stop the body")

    with pytest.raises(StageInterrupted) as info:
        run_stage(run_spec("covariance", _toy_cfg(project)), body)
    assert info.value.code == 128 + sig
    parent = project / "outputs" / "covariance"
    assert sorted(p.name for p in parent.iterdir()) == [".work-toy"]  # no scratch, no output, no lock
    assert (parent / ".work-toy" / "unit-0.txt").read_text() == "done"
    assert tracker.status == "KILLED" and f"stopped by signal {int(sig)}" in tracker.tags["error"]
    # the handlers are the process's own again afterwards
    assert {s: signal.getsignal(s) for s in own} == own


@pytest.mark.integration
def test_a_trajectory_rerun_after_a_schedule_change_reuses_no_old_seed(project, monkeypatch):
    import pipeline.sampler as sampler
    from stages import covariance, trajectories

    common = [*SMOKE, "run_key=fixed", "num_seeds=3", "trajectories.batch_size=1"]
    covariance.run(compose_config(common))
    real = sampler.ddim_sample
    calls = []

    def preempted_after_one(*a, **k):
        if calls:
            raise RuntimeError("preempted")
        calls.append(1)
        return real(*a, **k)

    with monkeypatch.context() as m, pytest.raises(RuntimeError, match="preempted"):
        m.setattr(sampler, "ddim_sample", preempted_after_one)
        trajectories.run(compose_config(common))
    assert len(list(project.glob("outputs/trajectories/.work-fixed/seed-*.npz"))) == 1
    calls.clear()
    monkeypatch.setattr(sampler, "ddim_sample", lambda *a, **k: calls.append(1) or real(*a, **k))
    res = trajectories.run(compose_config([*common, "schedule=cosine"]))
    assert len(calls) == 3 and res.metrics["seeds_resumed"] == 0
    # every seed is the new schedule's: equal to a run that never saw the old one
    cov = project / "outputs" / "covariance"
    shutil.copytree(cov / "fixed", cov / "ref")
    ref = trajectories.run(
        compose_config([*SMOKE, "run_key=ref", "num_seeds=3", "trajectories.batch_size=1", "schedule=cosine"])
    )
    for s in range(3):
        a, b = io.load_npz(res.out_dir / f"seed-{s}.npz"), io.load_npz(ref.out_dir / f"seed-{s}.npz")
        assert all(np.array_equal(a[k], b[k]) for k in ("t", "x", "eps"))


def _kill_when(
    proc: subprocess.Popen, pattern_root: Path, pattern: str, n: int, sig: int, meanwhile=None
) -> int:
    """Send ``sig`` once ``n`` unit files exist (calling ``meanwhile()`` once the first one does)."""
    deadline = time.time() + 300
    while time.time() < deadline:
        done = len(list(pattern_root.glob(pattern)))
        if done >= 1 and meanwhile is not None:
            meanwhile()
            meanwhile = None
            continue
        if done >= n:
            os.killpg(proc.pid, sig)
            break
        if proc.poll() is not None:
            pytest.fail(
                f"the stage ended (rc {proc.returncode}) before it could be stopped: {proc.stderr.read()}"
            )
        time.sleep(0.01)
    else:
        pytest.fail("the stage did not reach the point where it is stopped")
    proc.wait(timeout=120)
    return len(list(pattern_root.glob(pattern)))


@pytest.mark.integration
def test_sigkill_mid_jacobian_then_a_changed_setting_gives_a_table_of_the_new_config_only(
    tmp_path, monkeypatch
):
    from stages import covariance, jacobian, trajectories

    base = [*SMOKE, "points.steps=null", "measure.blocks=off", "proxy.images=0", "run_key=dvc"]
    monkeypatch.chdir(tmp_path)
    covariance.run(compose_config(base))
    trajectories.run(compose_config(base))
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.jacobian", *base, "measure.power_iters=8"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    done = _kill_when(proc, tmp_path / "outputs/jacobian", ".work-dvc/seed-*/step-*.json", 6, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL and 0 < done < 20
    assert not (tmp_path / "outputs/jacobian/dvc").exists()

    changed = [*base, "measure.power_iters=5"]
    res = jacobian.run(compose_config(changed))
    assert not res.skipped
    mixed = io.read_csv(res.out_dir / "global.csv")
    # the uninterrupted run of the new config, on copies of the same upstream folders
    for stage in ("covariance", "trajectories"):
        shutil.copytree(tmp_path / "outputs" / stage / "dvc", tmp_path / "ref" / stage / "dvc")
    ref = jacobian.run(compose_config([*changed, f"paths.outputs={tmp_path / 'ref'}"]))
    assert mixed == io.read_csv(ref.out_dir / "global.csv") and len(mixed) == 20
    assert json.loads((res.out_dir / "meta.json").read_text())["config"]["measure"]["power_iters"] == 5


@pytest.mark.integration
def test_sigterm_marks_the_mlflow_run_killed_and_the_rerun_resumes(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from stages import covariance, trajectories

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = [
        "experiment=smoke",
        "progress=false",
        f"tracking.uri={uri}",
        "tracking.experiment=t",
        # far more seeds than are written before the signal: the first run must still be writing while the
        # second one starts (with 8 a fast machine could finish them all in the second run's start-up)
        "num_seeds=64",
        "trajectories.batch_size=1",
        "sampler.num_steps=200",
    ]
    monkeypatch.chdir(tmp_path)
    covariance.run(compose_config([*common, "tracking.enabled=false"]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.trajectories", *common],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    refused = []

    def second_writer():
        # a second run on the same folder while the first is writing it is refused, naming the first
        with pytest.raises(
            io.FolderBusyError, match=rf"being written by another run \(host .*, pid {proc.pid},"
        ):
            trajectories.run(compose_config(common))
        refused.append(1)

    done = _kill_when(
        proc,
        tmp_path / "outputs/trajectories",
        ".work-*/seed-*.npz.unit.json",  # a seed is finished once its sealed unit record is written
        2,
        signal.SIGTERM,
        meanwhile=second_writer,
    )
    assert refused == [1]
    output = proc.stdout.read()
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "Traceback" not in output and "stopped by signal 15" in output
    root = tmp_path / "outputs/trajectories"
    assert not list(root.glob(".partial-*")) and not [p for p in root.iterdir() if not p.name.startswith(".")]
    assert 0 < done < 64 and list(root.glob(".work-*"))  # scratch gone, work kept
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert [r.info.status for r in runs] == ["KILLED"]

    res = trajectories.run(compose_config(common))
    assert res.metrics["seeds_resumed"] == done and not list(root.glob(".work-*"))
    assert client.get_run(res.run_id).info.status == "FINISHED"


# --- outputs that are what they claim -------------------------------------------------------------


def test_an_edited_output_is_detected_recomputed_and_refused_downstream(tmp_path, caplog):
    calls = []

    def body(ctx):
        calls.append(1)
        io.write_csv(ctx.out_dir / "global.csv", [{"t": 1, "kappa": 0.5}])

    cfg = _toy_cfg(tmp_path)
    res = run_stage(run_spec("covariance", cfg), body)
    meta = json.loads((res.out_dir / "meta.json").read_text())
    assert meta["outputs"] == {"global.csv": io.sha256_file(res.out_dir / "global.csv")}
    assert run_stage(run_spec("covariance", cfg), body).skipped and len(calls) == 1
    # a hand edit: the downstream stage refuses it, naming the file and the command to rerun
    (res.out_dir / "global.csv").write_text("t,kappa\n1,0.9\n")
    with pytest.raises(
        PipelineError, match=r"global\.csv differs from the sha256.*python -m stages\.covariance"
    ):
        upstream_dir(run_spec("covariance", cfg), needed_by="jacobian")
    # the stage itself recomputes it, and says why
    with caplog.at_level(logging.INFO, logger="pifs"):
        again = run_stage(run_spec("covariance", cfg), body)
    assert not again.skipped and len(calls) == 2 and "global.csv differs from the sha256" in caplog.text
    assert io.read_csv(again.out_dir / "global.csv") == [{"t": "1", "kappa": "0.5"}]
    # a file slipped into the folder is noticed too
    (again.out_dir / "extra.csv").write_text("x\n")
    with pytest.raises(PipelineError, match="extra.csv is not one of the outputs"):
        upstream_dir(run_spec("covariance", cfg), needed_by="jacobian")


def test_a_changed_input_file_makes_the_folder_recompute(tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(b"a")
    calls = []
    cfg = _toy_cfg(tmp_path)
    res = run_stage(run_spec("covariance", cfg), lambda ctx: calls.append(1), inputs={"dataset": [data]})
    hashes = json.loads((res.out_dir / "meta.json").read_text())["input_hashes"]
    # keyed by a portable name (below the files' common folder), never by an absolute path
    assert hashes["dataset"]["files"] == {"data.bin": io.sha256_file(data)}
    where = json.loads((res.out_dir / "run.json").read_text())["inputs"]
    assert where["dataset"] == [str(data)]  # where it lay on this machine: an execution detail
    assert run_stage(
        run_spec("covariance", cfg), lambda ctx: calls.append(1), inputs={"dataset": [data]}
    ).skipped
    data.write_bytes(b"b")
    assert not run_stage(
        run_spec("covariance", cfg), lambda ctx: calls.append(1), inputs={"dataset": [data]}
    ).skipped
    assert len(calls) == 2


# --- no pickle ever executed ----------------------------------------------------------------------


class _Planted:
    """Unpickling this creates the marker file: proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_planted_training_checkpoint_never_executes(project, monkeypatch):
    import torch

    import pipeline.training as training
    import pipeline.training_run as training_run
    from stages.train import run

    overrides = [
        "train=smoke",
        "tracking.enabled=false",
        "progress=false",
        "dataset.resolution=8",
        "dataset.num_images=16",
        "patch.size=4",
        "train.eval_images=4",
    ]

    # a run preempted after some work leaves its keyed work folder; a checkpoint is then planted in it
    def preempted(*a, **k):
        for work in (project / "outputs" / "train").glob(".work-*"):
            (work / "log.txt").write_text("some steps done")
        raise RuntimeError("preempted")

    with monkeypatch.context() as m, pytest.raises(RuntimeError, match="preempted"):
        m.setattr(training_run, "train", preempted)
        run(compose_config(overrides, config_name="train"))
    (work,) = (project / "outputs" / "train").glob(".work-*")
    marker = project / "pwned"
    torch.save({"step": 1, "evil": _Planted(marker)}, work / training.CHECKPOINT)
    with pytest.raises(PipelineError, match=r"checkpoint\.pt.*not a plain weights checkpoint"):
        run(compose_config(overrides, config_name="train"))
    assert not marker.exists()


def test_planted_pickles_in_trajectory_and_covariance_work_units_never_execute(tmp_path):
    from pipeline.covariance import compute_patch_statistics
    from pipeline.data.base import ArraySource
    from pipeline.sampler import load_trajectory

    marker = tmp_path / "pwned"
    evil = np.array([_Planted(marker)], dtype=object)
    for name in ("accumulator.npz", "seed-0.npz"):
        with open(tmp_path / name, "wb") as f:
            np.savez(f, t=np.arange(2), x=evil, eps=evil, fingerprint=evil)
    with pytest.raises(ValueError, match="allow_pickle"):
        io.load_npz(tmp_path / "seed-0.npz")
    with pytest.raises(ValueError, match="allow_pickle"):
        load_trajectory(tmp_path / "seed-0.npz")
    # the covariance stage's resume reads its accumulator without pickles (and starts over)
    src = ArraySource(np.zeros((4, 1, 4, 4), dtype=np.float32))
    with pytest.warns(UserWarning):
        compute_patch_statistics(src, 2, chunk_size=2, checkpoint_path=tmp_path / "accumulator.npz")
    assert not marker.exists()


_CIFAR_UNPICKLER = Path("pipeline/data/cifar10.py")


def _unsafe_loads(path: Path) -> list[str]:
    """torch.load without weights_only=True, pickle loading, and allow_pickle=True in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        fn = node.func
        name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
        owner = fn.value.id if isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) else ""
        kw = {k.arg: k.value for k in node.keywords}
        where = f"{path}:{node.lineno}"
        if owner == "torch" and name == "load":
            wo = kw.get("weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                found.append(f"{where}: torch.load without weights_only=True")
        if owner in ("pickle", "cPickle", "dill", "joblib") and name in ("load", "loads", "Unpickler"):
            if path != _CIFAR_UNPICKLER:
                found.append(f"{where}: {owner}.{name} outside the restricted CIFAR unpickler")
        ap = kw.get("allow_pickle")
        if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
            found.append(f"{where}: allow_pickle other than False")
    return found


def test_no_code_in_the_tree_loads_pickles(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    files = [
        p
        for top in ("pipeline", "stages", "benchmarks", "tests")
        for p in Path(top).rglob("*.py")
        if p != Path("tests/test_run_lifecycle.py")
    ]
    assert len(files) > 50
    # the test's own fixtures read back what they wrote; everything else loads no pickles at all
    allowed_tests = {"tests/test_data_cifar10.py", "tests/test_sweeps.py"}
    found = [f for p in files for f in _unsafe_loads(p) if not (str(p) in allowed_tests and "pickle." in f)]
    assert found == []
    # and the checker catches each pattern it is meant to
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import pickle, torch, numpy as np\n"
        "torch.load('a')\ntorch.load('a', weights_only=False)\npickle.load(f)\nnp.load('a', allow_pickle=True)\n"
    )
    assert len(_unsafe_loads(probe)) == 4
