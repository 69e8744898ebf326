"""Data-loss risks and interrupted runs: a run owns only what it made. A recompute never deletes a user's
file (refuse, or move it aside with a warning naming it); hidden folders the run did not make stay; a
sweep under one fixed run key cannot let one job overwrite another's result; a killed run resumes to
the numbers of a clean run, and a hand-edited resumable unit is never trusted."""

from __future__ import annotations

import signal

from benchmarks.bad_inputs import evidence as ev
from benchmarks.bad_inputs import plants
from benchmarks.bad_inputs.runner import KEY
from benchmarks.bad_inputs.spec import EITHER, LINEAGE, RESULT, Case, Interrupt, Run

K = f"run_key={KEY}"
UNIT = "outputs/jacobian/.work-*/seed-0/step-*.json"
STAGES = ("covariance", "trajectories", "jacobian", "analysis")


def _own(
    id, args, names, setup, expect=EITHER, wrong=None, lost=None, base="smoke", category="ownership", note=""
):
    if wrong is None and expect != "line" and base == "smoke" and args[0] in STAGES:
        wrong = ev.same_as_base(args[0])  # refused, or recomputed to a clean run's numbers
    return Case(
        id,
        category,
        args,
        expect=expect,
        names=names,
        setup=tuple(setup),
        wrong=wrong,
        lost=lost,
        owner=LINEAGE,
        base=base,
        note=note,
    )


def _kill_then_edit_unit() -> tuple:
    return (
        Interrupt(("jacobian", "force=true"), UNIT, signal.SIGKILL),
        plants.edit_json(UNIT, plants.unit_edit(2.0)),
    )


CASES = [
    # a user's file inside a completed output folder, then a recompute
    *(
        _own(
            f"user_file_in_{stage}_folder_then_force",
            (stage, "force=true"),
            ("notes.txt",),
            [plants.inside(stage)],
        )
        for stage in ("covariance", "trajectories", "jacobian", "analysis")
    ),
    _own(
        "user_file_in_covariance_folder_then_rerun",
        ("covariance",),
        ("notes.txt",),
        [plants.inside("covariance")],
        note="no force: the extra file alone makes the folder 'changed'",
    ),
    _own(
        "user_file_in_keyed_folder_then_other_config",
        ("covariance", K, "dataset.num_images=512"),
        ("notes.txt",),
        [plants.inside("covariance")],
        wrong=ev.same_as_reference("cov512", [("covariance", "dataset.num_images=512")], "covariance"),
        base="keyed",
    ),
    # hidden folders beside the run folders that the run did not make
    _own(
        "user_partial_folder_of_another_key",
        ("covariance", "force=true"),
        (".partial-mine",),
        [plants.beside("covariance", ".partial-mine/keep.txt")],
    ),
    _own(
        "user_partial_folder_of_this_key",
        ("covariance", "force=true"),
        (".partial-",),
        [plants.beside("covariance", ".partial-{key}/keep.txt")],
    ),
    _own(
        "user_work_folder_of_this_key",
        ("covariance", "force=true"),
        (".work-",),
        [plants.beside("covariance", ".work-{key}/keep.txt")],
    ),
    _own(
        "user_work_folder_of_another_key",
        ("covariance", "force=true"),
        (".work-mine",),
        [plants.beside("covariance", ".work-mine/keep.txt")],
    ),
    _own(
        "work_path_is_a_user_file",
        ("covariance", "force=true"),
        (".work-",),
        [plants.beside("covariance", ".work-{key}")],
        expect="line",
    ),
    _own(
        "partial_path_is_a_user_file",
        ("covariance", "force=true"),
        (".partial-",),
        [plants.beside("covariance", ".partial-{key}")],
    ),
    _own(
        "lock_path_is_a_user_folder",
        ("covariance", "force=true"),
        (".lock-",),
        [plants.beside("covariance", ".lock-{key}/keep.txt")],
    ),
    _own(
        "user_notes_beside_run_folders",
        ("covariance", "force=true"),
        (),
        [plants.beside("covariance", "README.txt")],
        expect=RESULT,
        wrong=ev.same_as_base("covariance"),
    ),
    _own(
        "run_folder_is_a_symlink_to_user_data",
        ("covariance", "force=true"),
        ("covariance",),
        [plants.link_run_folder("covariance", "mydata")],
        expect="line",
    ),
    _own(
        "run_key_names_a_user_folder",
        ("covariance", "run_key=mine"),
        ("mine",),
        [plants.write("outputs/covariance/mine/data.txt", "the user's data\n")],
        expect="line",
    ),
    _own(
        "outputs_into_a_user_folder_with_files",
        ("covariance", "paths.outputs=mine"),
        (),
        [plants.write("mine/thesis.tex", "\\documentclass{article}\n")],
        expect=RESULT,
    ),
    _own(
        "train_out_dir_is_a_user_folder",
        ("train", "train.out_dir=mine"),
        ("train.out_dir",),
        [plants.write("mine/thesis.tex", "\\documentclass{article}\n")],
        expect="line",
    ),
    # a sweep under one fixed run key
    _own(
        "multirun_fixed_run_key_over_seeds",
        ("trajectories", "-m", K, "seed=0,5"),
        ("run_key",),
        [Run(("covariance", K))],
        lost=ev.both_results("trajectories", "seed", [0, 5]),
        base="empty",
        note="job 2 must not overwrite job 1's folder (refuse, or one folder per job)",
    ),
    _own(
        "multirun_fixed_run_key_over_patch_sizes",
        ("covariance", "-m", K, "patch.size=4,8"),
        ("run_key",),
        [],
        lost=ev.both_results("covariance", "patch.size", [4, 8]),
        base="empty",
    ),
    # interrupted runs
    _own(
        "hand_edited_unit_after_sigkill",
        ("jacobian", "force=true"),
        ("step-",),
        _kill_then_edit_unit(),
        wrong=ev.same_as_base("jacobian"),
        category="interrupted",
        note="a resumable unit left by a killed run, edited by hand, must not reach global.csv",
    ),
    _own(
        "resume_after_sigterm",
        ("jacobian", "force=true"),
        (),
        [Interrupt(("jacobian", "force=true"), UNIT, signal.SIGTERM)],
        expect=RESULT,
        wrong=ev.same_as_base("jacobian"),
        category="interrupted",
    ),
    _own(
        "resume_after_sigkill",
        ("jacobian", "force=true"),
        (),
        [Interrupt(("jacobian", "force=true"), UNIT, signal.SIGKILL)],
        expect=RESULT,
        wrong=ev.same_as_base("jacobian"),
        category="interrupted",
    ),
    _own(
        "rerun_after_sigint_in_trajectories",
        ("trajectories", "force=true"),
        (),
        [
            Interrupt(
                ("trajectories", "force=true", "num_seeds=2"), "outputs/trajectories/.work-*/*", signal.SIGINT
            )
        ],
        expect=RESULT,
        wrong=ev.same_as_base("trajectories"),
        category="interrupted",
    ),
    _own(
        "rerun_after_sigkill_in_covariance",
        ("covariance", "force=true"),
        (),
        [Interrupt(("covariance", "force=true"), "outputs/covariance/.lock-*", signal.SIGKILL)],
        expect=RESULT,
        wrong=ev.same_as_base("covariance"),
        category="interrupted",
    ),
    _own(
        "a_live_writer_holds_the_folder",
        ("covariance", "force=true"),
        ("being written by another run",),
        [plants.writer_holding("covariance")],
        expect="line",
        category="interrupted",
    ),
]
