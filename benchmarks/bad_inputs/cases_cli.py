"""The command line itself: `pifs <every subcommand> --help`, Hydra's override syntax, sweeps whose jobs
fail, and the pifs subcommands' own arguments."""

from __future__ import annotations

from benchmarks.bad_inputs import evidence as ev
from benchmarks.bad_inputs import plants
from benchmarks.bad_inputs.spec import CLI, EITHER, RESULT, SCHEMA, Case

SUBCOMMANDS = (
    "covariance",
    "trajectories",
    "jacobian",
    "analysis",
    "train",
    "params",
    "geometry",
    "report",
    "sweeps",
    "pair",
)


def _cli(id, args, names=(), expect="line", wrong=None, setup=(), base="smoke", note=""):
    return Case(
        id,
        "cli",
        args,
        expect=expect,
        names=names,
        wrong=wrong,
        setup=tuple(setup),
        owner=CLI,
        base=base,
        note=note,
    )


HELP = [
    _cli(
        f"pifs_{name}_help", ("pifs", name, "--help"), expect=RESULT, wrong=ev.stdout_has(name), base="empty"
    )
    for name in SUBCOMMANDS
]

CASES = [
    *HELP,
    _cli(
        "pifs_without_command",
        ("pifs",),
        expect=RESULT,
        wrong=ev.stdout_has("covariance", "report"),
        base="empty",
    ),
    _cli("pifs_unknown_command", ("pifs", "nope"), ("nope",), base="empty"),
    _cli("pifs_report_unknown_run", ("pifs", "report", "nope"), ("nope",)),
    _cli("pifs_pair_missing_folders", ("pifs", "pair", "nope1", "nope2"), ("nope1",)),
    _cli("pifs_sweeps_none_yet", ("pifs", "sweeps", "--dirs"), ("sweep",), expect=EITHER, base="empty"),
    _cli("pifs_params_unknown_key", ("pifs", "params", "nope=1"), ("nope",), base="empty"),
    _cli("pifs_params_check_out_of_date", ("pifs", "params", "--check"), ("params.yaml",), base="empty"),
    _cli(
        "pifs_geometry_out_under_a_file",
        ("pifs", "geometry", "--out", "afile/g.csv"),
        ("afile",),
        setup=(plants.write("afile", "x"),),
    ),
    _cli("pifs_geometry_unknown_option", ("pifs", "geometry", "--nope"), ("--nope",), base="empty"),
    # Hydra's override grammar
    _cli("override_without_value", ("covariance", "num_seeds"), ("num_seeds",)),
    _cli("override_unclosed_list", ("covariance", "points.steps=[1000,"), ("points.steps",)),
    _cli("override_unknown_key", ("covariance", "nope=1"), ("nope",)),
    _cli("override_unknown_group_option", ("covariance", "dataset=nope"), ("dataset",)),
    _cli("override_unknown_experiment", ("covariance", "experiment=nope"), ("experiment",)),
    _cli("override_append_existing_key", ("covariance", "+num_seeds=3"), ("num_seeds",)),
    Case(
        "override_delete_needed_section",
        "cli",
        ("covariance", "~covariance", "force=true"),
        names=("covariance",),
        owner=SCHEMA,
        note="a section the stage needs, deleted on the command line: refused by the config's schema",
    ),
    _cli("sweep_value_without_multirun", ("covariance", "patch.size=4,8"), ("patch.size",)),
    _cli(
        "multirun_flag_between_overrides",
        ("covariance", "patch.size=4,8", "-m", "dataset.num_images=1024"),
        ("-m",),
        expect=EITHER,
        wrong=ev.both_results("covariance", "patch.size", [4, 8]),
    ),
    _cli(
        "cfg_job_prints_the_config",
        ("covariance", "--cfg", "job"),
        expect=RESULT,
        wrong=ev.stdout_has("num_seeds"),
    ),
    # sweeps whose jobs fail
    _cli("multirun_one_job_fails", ("covariance", "-m", "patch.size=4,5"), ("patch.size=5",)),
    _cli("multirun_every_job_fails", ("covariance", "-m", "patch.size=5,6"), ("patch.size",)),
    _cli("multirun_job_without_upstream", ("jacobian", "-m", "seed=0,10"), ("trajectories",)),
    _cli("multirun_bad_sweep_syntax", ("covariance", "-m", "patch.size=range(4"), ("patch.size",)),
]
