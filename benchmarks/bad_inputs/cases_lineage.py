"""Upstream made under another config: under one fixed run key (what params_file=… and DVC use) a stage
finds an upstream folder that is complete and unaltered, but was made under other values of keys the
stage depends on, or changed after the stage ran. The right answer is a refusal naming the key."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.bad_inputs import evidence as ev
from benchmarks.bad_inputs import plants
from benchmarks.bad_inputs.runner import KEY, Outcome
from benchmarks.bad_inputs.spec import LINEAGE, RESULT, Case, Run

K = f"run_key={KEY}"
STEPS4 = ("sampler.num_steps=4", "points.steps=null")
REF_STEPS4 = [("covariance",), ("trajectories", STEPS4[0]), ("jacobian", *STEPS4)]


def _upstream_folder(outcome: Outcome, folder: Path, upstream: str) -> Path | None:
    """The upstream folder a result records as its input (its run.json or meta.json, either version)."""
    meta = outcome.meta(folder)
    run_info = folder / "run.json"
    where = json.loads(run_info.read_text()).get("inputs", {}) if run_info.is_file() else {}
    where = {**(meta.get("inputs") or {}), **where}
    record = (meta.get("input_hashes") or {}).get(upstream) or {}
    path = where.get(upstream) or record.get("path")
    if path is None and record.get("stage") and record.get("run_key"):
        path = f"outputs/{record['stage']}/{record['run_key']}"
    if path is None:
        return None
    return Path(path) if Path(path).is_absolute() else outcome.root / path


def upstream_made_under(stage: str, upstream: str, key: str, value) -> ev.Check:
    """The upstream folder the result records as its input was made under the asked value of ``key``
    (its own meta.json, written when it ran, says what it ran under)."""

    def check(outcome: Outcome) -> str | None:
        got = outcome.produced(stage)
        if not got:
            return f"exit 0 but no {stage} folder was written or reused"
        folder = _upstream_folder(outcome, got[-1], upstream)
        if folder is None:
            return None
        node = json.loads((folder / "meta.json").read_text()).get("config", {})
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node != value:
            return f"{stage} used {upstream} made under {key}={node!r}, asked {key}={value!r}"
        return None

    return check


def _on_4_steps() -> ev.Check:
    # The Gaussian oracle is linear in x, so its Jacobian does not see the points: the numbers can match
    # a clean 4-step run by chance; the trajectories' own record says which chain they come from.
    return ev.all_of(
        ev.same_as_reference("steps4", REF_STEPS4, "jacobian"),
        upstream_made_under("jacobian", "trajectories", "sampler.num_steps", 4),
    )


def _lineage(id: str, args, names, setup=(), wrong=None, expect=None, note="") -> Case:
    return Case(
        id,
        "lineage",
        args,
        expect=expect or "line",
        names=names,
        setup=tuple(setup),
        wrong=wrong,
        owner=LINEAGE,
        base="keyed",
        note=note,
    )


ON_4_STEPS = _on_4_steps()

CASES = [
    _lineage(
        "jacobian_on_10_step_trajectories_asked_4",
        ("jacobian", K, *STEPS4),
        ("sampler.num_steps",),
        wrong=ON_4_STEPS,
    ),
    _lineage(
        "jacobian_on_5_step_trajectories_asked_4",
        ("jacobian", K, *STEPS4),
        ("sampler.num_steps",),
        setup=[Run(("trajectories", K, "sampler.num_steps=5"))],
        wrong=ON_4_STEPS,
    ),
    _lineage(
        "analysis_on_jacobian_of_another_chain",
        ("analysis", K, "sampler.num_steps=4"),
        ("sampler.num_steps",),
        wrong=upstream_made_under("analysis", "jacobian", "sampler.num_steps", 4),
    ),
    _lineage(
        "trajectories_on_oracle_fitted_on_256",
        ("trajectories", K),
        ("dataset.num_images",),
        setup=[Run(("covariance", K, "dataset.num_images=256"))],
        wrong=ev.same_as_base("trajectories"),
        note="the covariance folder k was recomputed on 256 images; trajectories are asked under 1024",
    ),
    _lineage(
        "jacobian_on_upstream_of_256_images_asked_1024",
        ("jacobian", K),
        ("dataset.num_images",),
        setup=[
            Run(("covariance", K, "dataset.num_images=256")),
            Run(("trajectories", K, "dataset.num_images=256")),
        ],
        wrong=ev.same_as_base("jacobian"),
    ),
    _lineage(
        "jacobian_asked_2_seeds_finds_3",
        ("jacobian", K),
        ("num_seeds",),
        setup=[Run(("trajectories", K, "num_seeds=3"))],
        wrong=ev.all_of(ev.jacobian_seeds([0, 1]), ev.same_as_base("jacobian")),
    ),
    _lineage(
        "jacobian_asked_2_seeds_finds_1",
        ("jacobian", K),
        ("seed",),
        setup=[Run(("trajectories", K, "num_seeds=1"))],
    ),
    _lineage("jacobian_asked_seed_5_finds_0", ("jacobian", K, "seed=5", "force=true"), ("seed",)),
    _lineage(
        "jacobian_on_covariance_folder_of_patch_8",
        ("jacobian", K, "force=true"),
        ("patch.size",),
        setup=[
            Run(("covariance", "run_key=other", "patch.size=8")),
            plants.swap_folder("covariance", "other", KEY),
        ],
        wrong=ev.same_as_base("jacobian"),
        note="outputs/covariance/k replaced by a complete folder made under patch.size=8",
    ),
    _lineage(
        "jacobian_on_covariance_folder_of_256_images",
        ("jacobian", K, "force=true"),
        ("dataset.num_images",),
        setup=[
            Run(("covariance", "run_key=other", "dataset.num_images=256")),
            plants.swap_folder("covariance", "other", KEY),
        ],
        wrong=ev.same_as_base("jacobian"),
    ),
    _lineage(
        "trajectories_on_covariance_folder_of_256_images",
        ("trajectories", K, "force=true"),
        ("dataset.num_images",),
        setup=[
            Run(("covariance", "run_key=other", "dataset.num_images=256")),
            plants.swap_folder("covariance", "other", KEY),
        ],
        wrong=ev.same_as_base("trajectories"),
    ),
    _lineage(
        "analysis_after_covariance_recomputed_under_512",
        ("analysis", K, "dataset.num_images=512"),
        ("dataset.num_images",),
        setup=[Run(("covariance", K, "dataset.num_images=512"))],
        wrong=ev.all_of(
            upstream_made_under("analysis", "jacobian", "dataset.num_images", 512),
            upstream_made_under("analysis", "trajectories", "dataset.num_images", 512),
        ),
        note="the covariance is recomputed after the jacobian ran; the analysis reports on the old jacobian",
    ),
    _lineage(
        "analysis_after_covariance_replaced_same_config_asked",
        ("analysis", K, "force=true"),
        ("covariance",),
        setup=[Run(("covariance", K, "dataset.num_images=512"))],
        wrong=upstream_made_under("analysis", "covariance", "dataset.num_images", 1024),
        note="asked under 1024 images (what the jacobian ran on); the covariance folder now holds 512's",
    ),
    _lineage(
        "analysis_after_trajectories_resampled_from_seed_3",
        ("analysis", K, "force=true"),
        ("seed",),
        setup=[Run(("trajectories", K, "seed=3"))],
        wrong=upstream_made_under("analysis", "trajectories", "seed", 0),
    ),
    _lineage(
        "analysis_on_jacobian_of_other_power_iters",
        ("analysis", K),
        ("measure.power_iters",),
        setup=[Run(("jacobian", K, "measure.power_iters=4"))],
        wrong=upstream_made_under("analysis", "jacobian", "measure.power_iters", 8),
    ),
    _lineage(
        "jacobian_cosine_on_linear_trajectories",
        ("jacobian", K, "schedule=cosine"),
        ("schedule",),
        wrong=upstream_made_under("jacobian", "trajectories", "schedule.kind", "cosine"),
    ),
    _lineage(
        "trajectories_reused_under_other_block_size",
        ("jacobian", K, "model.block_size=8"),
        ("model.block_size",),
        wrong=upstream_made_under("jacobian", "trajectories", "model.block_size", 8),
    ),
    # controls: consistent upstreams under the fixed key are used, and the numbers are a clean run's
    _lineage(
        "jacobian_recomputed_on_consistent_upstream",
        ("jacobian", K, "force=true"),
        (),
        expect=RESULT,
        wrong=ev.same_as_base("jacobian"),
    ),
    _lineage(
        "chain_rerun_after_config_change_and_back",
        ("jacobian", K),
        (),
        setup=[Run(("trajectories", K, "num_seeds=3")), Run(("trajectories", K))],
        expect=RESULT,
        wrong=ev.same_as_base("jacobian"),
        note="trajectories k went to 3 seeds and back to 2: the jacobian's inputs are as when it ran",
    ),
]
