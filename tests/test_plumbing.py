"""Atomic outputs, meta.json, reuse and MLflow logging of the shared stage runner."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline import io
from pipeline.runkeys import run_spec
from pipeline.runs import StageContext, run_stage
from pipeline.tracking import flatten


def test_save_npz_is_byte_deterministic_and_roundtrips(tmp_path):
    a = {"x": np.arange(6.0).reshape(2, 3), "k": np.array([1, 2], dtype=np.int64)}
    io.save_npz(tmp_path / "a.npz", **a)
    first = (tmp_path / "a.npz").read_bytes()
    io.save_npz(tmp_path / "a.npz", **a)
    assert (tmp_path / "a.npz").read_bytes() == first
    back = io.load_npz(tmp_path / "a.npz")
    assert np.array_equal(back["x"], a["x"]) and back["k"].dtype == np.int64


def test_atomic_dir_leaves_nothing_on_failure_and_keeps_the_old_result(tmp_path):
    final = tmp_path / "out"
    with io.atomic_dir(final) as d:
        (d / "a.txt").write_text("complete")
    with pytest.raises(RuntimeError):
        with io.atomic_dir(final) as d:
            (d / "a.txt").write_text("half")
            raise RuntimeError("boom")
    assert (final / "a.txt").read_text() == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_csv_keeps_full_float_precision(tmp_path):
    v = 1.0 / 3.0
    io.write_csv(tmp_path / "t.csv", [{"a": v, "b": 2}])
    row = io.read_csv(tmp_path / "t.csv")[0]
    assert float(row["a"]) == v and row["b"] == "2"


def _cfg(tmp_path, **kw):
    cfg = {
        "dataset": {"name": "d", "resolution": 8},
        "patch": {"size": 4},
        "covariance": {},
        "tracking": {"enabled": True, "uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "t"},
        "paths": {"outputs": str(tmp_path / "outputs")},
        "run_key": None,
        "seed": 0,
    }
    cfg.update(kw)
    return cfg


def test_run_stage_writes_meta_logs_mlflow_and_reuses(project):
    tmp_path = project  # the MLflow artifacts folder is cwd-relative: keep it out of the repo
    calls = []

    def body(ctx: StageContext):
        calls.append(1)
        io.write_text(ctx.out_dir / "x.txt", "x")
        ctx.metrics["answer"] = 42.0

    cfg = _cfg(tmp_path)
    r1 = run_stage(run_spec("covariance", cfg), body, artifacts=("x.txt",))
    meta = json.loads((r1.out_dir / "meta.json").read_text())
    assert meta["metrics"]["answer"] == 42.0 and meta["config"]["patch"]["size"] == 4
    # how the run went (its MLflow run, versions) is run.json's, outside the record DVC hashes
    info = json.loads((r1.out_dir / "run.json").read_text())
    assert info["mlflow_run_id"] == r1.run_id and info["versions"]["torch"]
    assert info["record_sha256"] == meta["record_sha256"] and "mlflow_run_id" not in meta
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cfg["tracking"]["uri"])
    run = client.get_run(r1.run_id)
    assert run.data.metrics["answer"] == 42.0
    assert run.data.params["patch.size"] == "4"
    assert run.data.tags["stage"] == "covariance" and run.info.status == "FINISHED"
    r2 = run_stage(run_spec("covariance", cfg), body)
    assert r2.skipped and len(calls) == 1 and r2.run_id == r1.run_id
    r3 = run_stage(run_spec("covariance", {**cfg, "force": True}), body)
    assert not r3.skipped and len(calls) == 2


def test_failed_stage_marks_the_run_failed_and_keeps_work(project):
    tmp_path = project  # the MLflow artifacts folder is cwd-relative: keep it out of the repo

    def body(ctx):
        io.write_text(ctx.work_dir / "checkpoint", "unit 1 done")
        raise ValueError("bad")

    cfg = _cfg(tmp_path)
    with pytest.raises(ValueError):
        run_stage(run_spec("covariance", cfg), body)
    stage_root = tmp_path / "outputs" / "covariance"
    names = sorted(p.name for p in stage_root.iterdir())
    # only the resumable work folder: the lock file goes with the run that held it
    assert len(names) == 1 and names[0].startswith(".work-")
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(cfg["tracking"]["uri"]).search_runs(
        [MlflowClient(cfg["tracking"]["uri"]).get_experiment_by_name("t").experiment_id]
    )
    assert [r.info.status for r in runs] == ["FAILED"]


def test_flatten_gives_dotted_keys():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": None}


def test_cuda_device_without_cuda_is_refused_with_the_fix():
    import torch

    from pipeline.models.base import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available on this machine: nothing to refuse")
    with pytest.raises(ValueError, match="CUDA is not available — use device=cpu or device=auto"):
        resolve_device("cuda:0")
