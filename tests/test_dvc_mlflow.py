"""MLflow as its users expect under DVC: one parent run per dvc invocation with the stage runs nested,
the parent always left final, MLflow's standard system tags, and a git revision that DVC's own
rewrites (dvc.lock, params files) do not mark dirty."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline import invocation
from pipeline.invocation import DvcInvocation, dvc_invocation
from pipeline.provenance import git_revision
from pipeline.tracking import Tracker, system_tags

ROOT = Path(__file__).resolve().parent.parent


def _fake_proc(tmp_path: Path, procs: dict[int, tuple[int, str, list[str]]]) -> Path:
    """/proc stand-in: pid -> (ppid, start time, argv)."""
    proc = tmp_path / "proc"
    for pid, (ppid, start, argv) in procs.items():
        d = proc / str(pid)
        d.mkdir(parents=True)
        # field 2 may hold spaces and ')'; starttime is field 22
        rest = ["S", str(ppid)] + ["0"] * 17 + [start]
        (d / "stat").write_text(f"{pid} (odd name) x) " + " ".join(rest) + "\n")
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    return proc


def _tree(tmp_path, dvc_start="5000"):
    return _fake_proc(
        tmp_path,
        {
            100: (90, "6000", ["python", "-m", "stages.jacobian", "run_key=dvc"]),
            90: (80, "5990", ["/bin/sh", "-c", "python -m stages.jacobian run_key=dvc"]),
            80: (1, dvc_start, ["/venv/bin/python", "-m", "dvc", "exp", "run", "-S", "patch.size=2"]),
        },
    )


def test_the_invocation_is_the_nearest_dvc_ancestor(tmp_path):
    proc = _tree(tmp_path)
    inv = dvc_invocation({"DVC_STAGE": "jacobian", "DVC_EXP_NAME": "fuzzy-cat"}, pid=100, proc=proc)
    assert inv == DvcInvocation(80, "5000", "dvc exp run -S patch.size=2", "fuzzy-cat")
    assert inv.key.endswith("-80-5000-fuzzy-cat")
    # the same pid started later is another invocation
    other = dvc_invocation({"DVC_STAGE": "x"}, pid=100, proc=_tree(tmp_path / "b", dvc_start="7000"))
    assert other.key != inv.key
    # outside dvc (no DVC_STAGE) there is no invocation, whatever the ancestors
    assert dvc_invocation({}, pid=100, proc=proc) is None


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating its schema is the slow part); tests use own experiments."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _start(uri, stage, inv, experiment):
    return Tracker.start(
        enabled=True,
        uri=uri,
        experiment=experiment,
        run_name=stage,
        tags={"stage": stage, **system_tags(stage, f"stages.{stage}", "abc123-dirty")},
        invocation=inv,
        project_root=Path(uri.removeprefix("sqlite:///")).parent,
    )


def test_stages_of_one_invocation_nest_under_one_parent_that_ends_final(tmp_path, store, monkeypatch):
    uri, exp = store, "nesting"
    monkeypatch.setattr(invocation, "PROC", _tree(tmp_path))  # orphans are judged against the stand-in
    inv = DvcInvocation(80, "5000", "dvc repro", None)
    first = _start(uri, "covariance", inv, exp)
    parent_id = first.parent.run_id
    client = _client(uri)
    assert client.get_run(parent_id).info.status == "RUNNING"
    first.finish("FINISHED")
    assert client.get_run(parent_id).info.status == "FINISHED"  # final between stages too
    second = _start(uri, "trajectories", inv, exp)
    assert second.parent.run_id == parent_id
    assert client.get_run(parent_id).info.status == "RUNNING"  # reopened while the stage runs
    second.finish("FINISHED")
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["pifs.role"] == "dvc" and parent.data.tags["mlflow.runName"] == "dvc repro"
    assert parent.data.tags["mlflow.source.git.commit"] == "abc123"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(c.data.tags["stage"] for c in children) == ["covariance", "trajectories"]
    # a failed stage leaves the parent FAILED
    third = _start(uri, "jacobian", inv, exp)
    third.finish("FAILED")
    assert client.get_run(parent_id).info.status == "FAILED"


def test_a_parent_whose_dvc_process_died_is_closed_as_killed(tmp_path, store, monkeypatch):
    uri, exp = store, "orphans"
    monkeypatch.setattr(invocation, "PROC", _tree(tmp_path))
    dead = DvcInvocation(80, "4000", "dvc repro", None)  # pid 80 now runs with another start time
    t = _start(uri, "covariance", dead, exp)
    dead_parent = t.parent.run_id  # the stage was SIGKILLed: nobody finishes it
    live = _start(uri, "covariance", DvcInvocation(80, "5000", "dvc repro", None), exp)
    assert live.parent.run_id != dead_parent
    assert _client(uri).get_run(dead_parent).info.status == "KILLED"
    assert _client(uri).get_run(live.parent.run_id).info.status == "RUNNING"


def test_system_tags_name_the_bare_commit():
    tags = system_tags("jacobian:dvc", "stages.jacobian", "0123abcd-dirty")
    assert tags["mlflow.source.git.commit"] == "0123abcd"
    assert tags["mlflow.source.name"] == "stages.jacobian" and tags["mlflow.runName"] == "jacobian:dvc"
    assert tags["mlflow.source.type"] in ("LOCAL", "JOB") and "mlflow.user" in tags
    assert "mlflow.source.git.commit" not in system_tags("x", "y", "unknown")


def _git(args, cwd):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"}
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def test_dvc_rewrites_do_not_make_the_revision_dirty_but_code_edits_do(tmp_path):
    for name in ("dvc.lock", "params.yaml", "params_learned.yaml", "code.py"):
        (tmp_path / name).write_text("v1\n")
    _git(["init", "-q"], tmp_path)
    _git(["add", "."], tmp_path)
    _git(["commit", "-qm", "x"], tmp_path)
    for name in ("dvc.lock", "params.yaml", "params_learned.yaml"):
        (tmp_path / name).write_text("rewritten by dvc\n")
    rev = git_revision(tmp_path)
    assert len(rev) == 40 and not rev.endswith("-dirty")
    (tmp_path / "code.py").write_text("v2\n")
    assert git_revision(tmp_path) == rev + "-dirty"


@pytest.mark.integration
@pytest.mark.slow
def test_dvc_repro_nests_its_stages_under_one_parent(tmp_path):
    """Real dvc: two stages, each a separate process, find the same invocation and nest under one run."""
    (tmp_path / "stage.py").write_text(
        textwrap.dedent(
            """
            import sys
            from pipeline.invocation import dvc_invocation
            from pipeline.tracking import Tracker
            t = Tracker.start(True, None, "e", sys.argv[1], {"stage": sys.argv[1]}, invocation=dvc_invocation())
            t.finish("FINISHED")
            open(sys.argv[1] + ".out", "w").write(t.parent.run_id)
            """
        )
    )
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  a:\n    cmd: python stage.py a\n    outs: [a.out]\n"
        "  b:\n    cmd: python stage.py b\n    deps: [a.out]\n    outs: [b.out]\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "PIFS_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        DVC_NO_ANALYTICS="1",
    )
    for args in (["init", "--no-scm", "-q"], ["repro", "-q"]):
        proc = subprocess.run(
            [sys.executable, "-m", "dvc", *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    parent_a, parent_b = (tmp_path / "a.out").read_text(), (tmp_path / "b.out").read_text()
    assert parent_a == parent_b
    parent = _client(env["MLFLOW_TRACKING_URI"]).get_run(parent_a)
    assert parent.info.status == "FINISHED" and parent.data.tags["dvc_command"] == "dvc repro -q"
