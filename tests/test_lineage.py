"""Every result matches its lineage: a stage refuses an upstream folder made under other values of a key
both depend on, an edited record, a folder put in another's place, and an upstream that changed after
the folder beside it was made; a run removes only what a run of its stage made; and the record is the
same bytes for the same config and inputs, wherever and whenever it ran.

Stages run in-process on the smoke preset under one fixed run key (what `params_file=…` and DVC use),
through stages.cli_errors.call, the guard of every stage's ``__main__``: each refusal is checked as
the one line a user sees.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from pipeline import io
from pipeline.runkeys import key_sections
from stages import cli_errors
from tests.conftest import compose_config

BASE = ["experiment=smoke", "tracking.enabled=false", "progress=false", "run_key=fixed", "proxy.images=0"]

pytestmark = pytest.mark.integration


def _run(stage: str, *overrides: str):
    import importlib

    module = importlib.import_module(f"stages.{stage}")
    return module.run(compose_config([*BASE, *overrides]))


def _refusal(capsys, stage: str, *overrides: str) -> str:
    """The one line the stage prints when it refuses (the command line's guard, in-process)."""
    import importlib

    module = importlib.import_module(f"stages.{stage}")
    capsys.readouterr()
    code = cli_errors.call(lambda: module.run(compose_config([*BASE, *overrides])))
    err = capsys.readouterr().err
    assert code == cli_errors.EXIT_EXPECTED, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and " — " in lines[0], err
    return lines[0]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- a downstream stage refuses an upstream made under other values ------------------------------


def test_jacobian_refuses_trajectories_sampled_with_another_step_count(project, capsys):
    _run("covariance")
    _run("trajectories", "sampler.num_steps=5")
    line = _refusal(capsys, "jacobian", "sampler.num_steps=4", "points.steps=null")
    assert (
        "outputs/trajectories/fixed: it was made with sampler.num_steps=5, this run has sampler.num_steps=4"
        in line
    )
    assert "rerun `python -m stages.trajectories`" in line
    assert not (project / "outputs" / "jacobian" / "fixed").exists()


def test_stages_refuse_an_oracle_fitted_on_another_number_of_images(project, capsys):
    _run("covariance", "dataset.num_images=256")
    line = _refusal(capsys, "trajectories", "dataset.num_images=1024")
    assert "made with dataset.num_images=256, this run has dataset.num_images=1024" in line
    assert "outputs/covariance/fixed" in line and "`python -m stages.covariance`" in line
    _run("trajectories", "dataset.num_images=256")
    line = _refusal(capsys, "jacobian", "dataset.num_images=1024")
    assert "outputs/covariance/fixed: it was made with dataset.num_images=256" in line
    assert not (project / "outputs" / "jacobian").exists()


def test_jacobian_asked_for_two_seeds_refuses_a_folder_of_three(project, capsys):
    _run("covariance")
    _run("trajectories", "num_seeds=3")
    line = _refusal(capsys, "jacobian", "num_seeds=2")
    assert "it was made with num_seeds=3, this run has num_seeds=2" in line


def test_a_folder_of_another_config_put_in_place_is_refused_as_such(project, capsys):
    _run("covariance", "run_key=other", "dataset.num_images=256")
    _run("covariance")
    cov = project / "outputs" / "covariance"
    shutil.rmtree(cov / "fixed")
    shutil.copytree(cov / "other", cov / "fixed")
    line = _refusal(capsys, "trajectories")
    assert "(a complete covariance output of run_key=other put in its place)" in line
    assert "dataset.num_images=256, this run has dataset.num_images=1024" in line


def test_a_hand_edited_record_is_refused_downstream_and_recomputed_by_its_stage(project, capsys, caplog):
    res = _run("covariance")
    meta = json.loads((res.out_dir / "meta.json").read_text())
    meta["config"]["dataset"]["num_images"] = 4096  # the record now claims what did not run
    io.write_json(res.out_dir / "meta.json", meta)
    line = _refusal(capsys, "trajectories", "dataset.num_images=4096")
    assert "its meta.json was edited after the run" in line and "outputs/covariance/fixed" in line
    with caplog.at_level(logging.INFO, logger="pifs"):
        again = _run("covariance")
    assert not again.skipped and "meta.json was edited after the run" in caplog.text
    assert json.loads((again.out_dir / "meta.json").read_text())["config"]["dataset"]["num_images"] == 1024


def test_the_analysis_refuses_a_jacobian_whose_covariance_was_recomputed_since(project, capsys, monkeypatch):
    import pipeline.covariance as covariance

    for stage in ("covariance", "trajectories", "jacobian", "analysis"):
        _run(stage)
    real = covariance.write_covariance_outputs

    def changed(out_dir, stats, *a, **k):  # a code change that alters the covariance's tables
        paths = real(out_dir, stats, *a, **k)
        csv = Path(out_dir) / "patches.csv"
        csv.write_text(csv.read_text() + "\n")
        return paths

    monkeypatch.setattr(covariance, "write_covariance_outputs", changed)
    assert not _run("covariance", "force=true").skipped
    line = _refusal(capsys, "analysis")
    assert (
        "analysis cannot use outputs/jacobian/fixed: it was made from other covariance outputs than" in line
    )
    assert "rerun `python -m stages.jacobian`" in line
    # the Gaussian fit did not change: the trajectories (which use only the fit) are not stale
    assert "trajectories/fixed" not in line
    _run("jacobian")  # the jacobian recomputes on the new covariance; then the analysis goes ahead
    assert not _run("analysis").skipped


def test_a_patch_size_change_keeps_the_trajectories_which_use_only_the_fit(project):
    _run("covariance")
    traj = _run("trajectories")
    _run("covariance", "patch.size=2", "model.block_size=4")
    again = _run("trajectories", "patch.size=2", "model.block_size=4")
    assert again.skipped and again.out_dir == traj.out_dir
    assert not _run("jacobian", "patch.size=2", "model.block_size=4").skipped


def test_each_record_holds_exactly_the_keys_its_stage_depends_on(project):
    for stage in ("covariance", "trajectories"):
        meta = json.loads((_run(stage).out_dir / "meta.json").read_text())
        assert sorted(meta["config"]) == sorted(key_sections(stage))
    traj = json.loads((project / "outputs/trajectories/fixed/meta.json").read_text())
    model = traj["input_hashes"]["model"]
    assert (model["stage"], model["run_key"], model["file"]) == ("covariance", "fixed", "gaussian_fit.npz")


# --- a run owns only what it made ------------------------------------------------------------------


def test_a_recompute_never_deletes_a_file_it_did_not_write(project, capsys):
    res = _run("covariance")
    (res.out_dir / "notes.txt").write_text("my notes")
    before = _snapshot(project / "outputs")
    line = _refusal(capsys, "covariance", "dataset.num_images=256")
    assert "notes.txt, which no covariance run wrote" in line and "move them out of it" in line
    assert _snapshot(project / "outputs") == before


def test_a_recompute_never_deletes_a_link_to_a_folder_it_did_not_make(project, capsys):
    """A link to someone's folder inside an output folder is not hashed (nothing walks into it), so it is
    named as foreign like a file: replacing the folder would delete the link without a word."""
    res = _run("covariance")
    (project / "mine").mkdir()
    (project / "mine" / "data.txt").write_text("keep")
    (res.out_dir / "userlink").symlink_to(project / "mine", target_is_directory=True)
    line = _refusal(capsys, "covariance", "dataset.num_images=256")
    assert "userlink, which no covariance run wrote" in line and "move them out of it" in line
    assert (res.out_dir / "userlink").is_symlink() and (project / "mine" / "data.txt").read_text() == "keep"


def test_hidden_entries_no_run_of_the_stage_made_are_never_removed(project, capsys):
    parent = project / "outputs" / "covariance"
    mine = {".partial-notes": "draft", ".work-notes": "drafts", ".partial-x.old": "old"}
    for name, text in mine.items():
        (parent / name).mkdir(parents=True)
        (parent / name / "file.txt").write_text(text)
    _run("covariance")
    for name, text in mine.items():
        assert (parent / name / "file.txt").read_text() == text
    # an entry under this run's own scratch or work name that a run did not make is refused, not removed
    (parent / ".partial-fixed").mkdir()
    (parent / ".partial-fixed" / "thesis.tex").write_text("keep")
    line = _refusal(capsys, "covariance", "dataset.num_images=256")
    assert ".partial-fixed is a folder no covariance run made" in line
    assert (parent / ".partial-fixed" / "thesis.tex").read_text() == "keep"
    shutil.rmtree(parent / ".partial-fixed")
    (parent / ".work-fixed").write_text("a file")
    line = _refusal(capsys, "covariance", "dataset.num_images=256")
    assert ".work-fixed is a file where this run keeps its resumable work" in line
    assert (parent / ".work-fixed").read_text() == "a file"


def test_a_sweeps_job_never_replaces_another_jobs_result_under_one_fixed_run_key(
    project, capsys, monkeypatch
):
    from stages.callbacks import fixed_key_sweep

    monkeypatch.setenv("PIFS_SWEEP_ID", "sweep-1")  # what the sweep callback sets in every job
    _run("covariance")
    first = _run("trajectories", "seed=0")
    kept = _snapshot(first.out_dir)
    line = _refusal(capsys, "trajectories", "seed=5")
    assert "run_key=fixed:" in line and "another job of this sweep (sweep-1)" in line
    assert "(seed=0 there, 5 here)" in line and "drop run_key" in line
    assert _snapshot(first.out_dir) == kept
    # the sweep says so before its first job
    assert "drop run_key" in fixed_key_sweep("fixed", ["seed=0,5"])
    assert "run_key=a,b" in fixed_key_sweep(None, ["run_key=a,b", "seed=0,5"])
    assert fixed_key_sweep(None, ["seed=0,5"]) is None and fixed_key_sweep("x", ["seed=0"]) is None
    assert fixed_key_sweep(None, ["run_key=a,b"]) is None


# --- the same config gives the same bytes, wherever and whenever it ran --------------------------


def test_two_runs_of_one_config_in_other_folders_write_the_same_bytes(tmp_path, monkeypatch):
    """Everything DVC hashes (all but run.json) is byte-identical between two projects in different
    absolute paths, at different times, one tracked in MLflow and one not; no absolute path in it."""
    trees = {}
    for name, tracking in (("a", f"tracking.uri=sqlite:///{tmp_path / 'a' / 'mlflow.db'}"), ("b", None)):
        root = tmp_path / name / "deeper" if name == "b" else tmp_path / name
        root.mkdir(parents=True)
        monkeypatch.chdir(root)
        overrides = ["tracking.enabled=true", tracking] if tracking else []
        for stage in ("covariance", "trajectories", "jacobian", "analysis"):
            _run(stage, *overrides)
        outputs = root / "outputs"
        trees[name] = {k: v for k, v in _snapshot(outputs).items() if Path(k).name != "run.json"}
        for rel, data in trees[name].items():
            assert str(tmp_path).encode() not in data, f"{rel} holds an absolute path"
        info = json.loads((outputs / "jacobian" / "fixed" / "run.json").read_text())
        assert info["folder"] == str(outputs / "jacobian" / "fixed") and info["wall_time_s"] > 0
    assert trees["a"].keys() == trees["b"].keys()
    differing = [k for k in trees["a"] if trees["a"][k] != trees["b"][k]]
    assert differing == []
