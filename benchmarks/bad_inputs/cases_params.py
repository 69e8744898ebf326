"""params_file problems: a file merged over the config (dvc.yaml passes params.yaml) must be validated like
the command line (unknown keys, types, partial sections), and overrides beside it apply or are refused.
A preset cannot stand beside params_file, so each case's file is the smoke chain's config with the case's
edit merged in (plants.params_over_smoke); the key-by-key merge of a partial section over the composed
config itself is tests/test_config_schema.py's. Also a hand-edited record: an upstream meta.json whose
config was edited by hand."""

from __future__ import annotations

from benchmarks.bad_inputs import evidence as ev
from benchmarks.bad_inputs import plants
from benchmarks.bad_inputs.spec import EITHER, LINEAGE, RESULT, SCHEMA, Case, Run

GENERATE = Run(("pifs", "params", "experiment=smoke"))  # params.yaml of the smoke chain, as DVC reads it


def _params(id, text, args, names, expect="line", wrong=None, setup=(), note="") -> Case:
    steps = (*setup, plants.params_over_smoke("p.yaml", text)) if text is not None else tuple(setup)
    return Case(
        id,
        "params_file",
        args,
        expect=expect,
        names=names,
        setup=steps,
        wrong=wrong,
        owner=SCHEMA,
        note=note,
    )


def _meta_config(key_path: tuple[str, ...], value):
    def edit(meta: dict) -> None:
        node = meta["config"]
        for part in key_path[:-1]:
            node = node[part]
        node[key_path[-1]] = value

    return edit


CASES = [
    _params(
        "typo_section_ignored",
        "pach:\n  size: 8\n",
        ("covariance", "params_file=p.yaml", "force=true"),
        ("pach",),
        wrong=ev.patch_count("covariance", 4),
        note="the user meant patch.size=8 (4 patches of 16x16)",
    ),
    _params(
        "typo_key_in_section",
        "patch:\n  sise: 8\n",
        ("covariance", "params_file=p.yaml", "force=true"),
        ("sise",),
        wrong=ev.patch_count("covariance", 4),
    ),
    _params(
        "partial_sampler_section",
        "sampler:\n  num_steps: 4\n",
        ("trajectories", "params_file=p.yaml"),
        ("sampler",),
        expect=EITHER,
        wrong=ev.all_of(ev.chain_steps(4), ev.meta_records("trajectories", "sampler.spacing", "trailing")),
        note="either merged into the sampler section (4 trailing steps) or refused in one line",
    ),
    _params(
        "partial_dataset_section",
        "dataset:\n  num_images: 256\n",
        ("covariance", "params_file=p.yaml"),
        ("dataset",),
        expect=EITHER,
        wrong=ev.same_as_reference("cov256", [("covariance", "dataset.num_images=256")], "covariance"),
    ),
    _params(
        "partial_measure_section",
        "measure:\n  power_iters: 4\n",
        ("jacobian", "params_file=p.yaml", "force=true"),
        ("measure",),
        expect=EITHER,
        wrong=ev.all_of(
            ev.meta_records("jacobian", "measure.power_iters", 4),
            ev.meta_records("jacobian", "measure.frob_probes", 2),
        ),
    ),
    _params(
        "override_beside_params_file_ignored",
        None,
        ("trajectories", "params_file=params.yaml", "sampler.num_steps=4"),
        ("sampler.num_steps",),
        expect=EITHER,
        wrong=ev.all_of(ev.chain_steps(4), ev.meta_records("trajectories", "sampler.num_steps", 4)),
        setup=(GENERATE,),
    ),
    _params(
        "outputs_beside_params_file_ignored",
        None,
        ("covariance", "params_file=params.yaml", "paths.outputs=elsewhere"),
        ("paths.outputs",),
        expect=EITHER,
        wrong=ev.written_under("elsewhere"),
        setup=(GENERATE,),
    ),
    _params(
        "patch_beside_params_file_as_dvc_passes_it",
        None,
        ("covariance", "params_file=params.yaml", "run_key=dvc", "patch.size=8"),
        ("patch.size",),
        expect=EITHER,
        wrong=ev.patch_count("covariance", 4),
        setup=(GENERATE,),
        note="dvc.yaml passes patch.size on the command line beside params_file",
    ),
    _params("top_level_list", "- patch\n- size\n", ("covariance", "params_file=p.yaml"), ("p.yaml",)),
    _params("top_level_scalar", "42\n", ("covariance", "params_file=p.yaml"), ("p.yaml",)),
    _params(
        "section_is_a_scalar", "patch: 8\n", ("covariance", "params_file=p.yaml", "force=true"), ("patch",)
    ),
    _params("non_number_count", "num_seeds: abc\n", ("trajectories", "params_file=p.yaml"), ("num_seeds",)),
    _params("negative_count", "num_seeds: -1\n", ("trajectories", "params_file=p.yaml"), ("num_seeds",)),
    _params("unknown_top_level_key", "colour: red\n", ("covariance", "params_file=p.yaml"), ("colour",)),
    _params(
        "unknown_key_in_measure",
        "measure:\n  power_iter: 3\n",
        ("jacobian", "params_file=p.yaml", "force=true"),
        ("power_iter",),
    ),
    _params(
        "string_where_list",
        "points:\n  steps: abc\n",
        ("jacobian", "params_file=p.yaml", "force=true"),
        ("points.steps",),
    ),
    _params(
        "params_file_is_a_folder",
        None,
        ("covariance", "params_file=pdir"),
        ("pdir",),
        setup=(plants.mkdir("pdir"),),
    ),
    _params("params_file_missing", None, ("covariance", "params_file=nope.yaml"), ("nope.yaml",)),
    _params("params_file_not_yaml", "a: [1,\n", ("covariance", "params_file=p.yaml"), ("p.yaml",)),
    _params(
        "params_file_empty",
        "",
        ("covariance", "params_file=p.yaml"),
        ("p.yaml",),
        expect=EITHER,
        # nothing to merge: the command line's own composition (no preset beside a params file: the default)
        wrong=ev.meta_records("covariance", "dataset.num_images", 4096),
    ),
    # controls: a generated params.yaml runs exactly the chain it describes
    _params(
        "generated_params_runs_the_smoke_chain",
        None,
        ("covariance", "params_file=params.yaml", "run_key=dvc"),
        (),
        expect=RESULT,
        wrong=ev.same_as_base("covariance"),
        setup=(GENERATE,),
    ),
    _params(
        "runtime_keys_in_params_file",
        "force: true\nprogress: true\n",
        ("covariance", "params_file=p.yaml"),
        (),
        expect=RESULT,
        wrong=ev.same_as_base("covariance"),
    ),
    # a hand-edited record: the report must not print what never ran
    Case(
        "hand_edited_upstream_meta_config",
        "params_file",
        ("analysis", "force=true"),
        names=("meta.json",),
        expect=EITHER,
        setup=(
            plants.edit_json(
                "outputs/jacobian/*/meta.json", _meta_config(("model", "name"), "hand_edited_model")
            ),
            plants.edit_json(
                "outputs/trajectories/*/meta.json", _meta_config(("model", "name"), "hand_edited_model")
            ),
        ),
        wrong=ev.text_lacks("analysis", ("report.md", "report.html", "summary.json"), "hand_edited_model"),
        owner=LINEAGE,
    ),
    Case(
        "hand_edited_upstream_meta_num_steps",
        "params_file",
        ("analysis", "force=true"),
        names=("meta.json",),
        expect=EITHER,
        setup=(
            plants.edit_json("outputs/jacobian/*/meta.json", _meta_config(("sampler", "name"), "ddim777")),
        ),
        wrong=ev.text_lacks("analysis", ("report.md", "report.html", "summary.json"), "ddim777"),
        owner=LINEAGE,
    ),
]
