"""A protocol's points split over shards (points.shards=N, points.shard=i) and pooled by the analysis give
the unsplit run's jacobian tables and analysis tables byte for byte; folders that are not every shard of one
protocol exactly once are refused in one line naming what is wrong.

The expected tables are those of one run measuring every point (the same code path the project has always
used); the shards are four separate in-process runs of the jacobian stage, as four SLURM array tasks would
be. tests/test_slurm.py runs the same split as a real 4-task array.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
from pathlib import Path

import pytest

from pipeline.errors import ConfigError, PipelineError
from pipeline.jacobian.pool import ShardMismatchError, pool_tables
from pipeline.jacobian.shards import Shard, protocol_stacks, shard_stacks, stack_points
from pipeline.outputs import JacobianFolder
from pipeline.runkeys import run_key, unsharded, with_shard
from stages import cli_errors
from tests.conftest import compose_config

SMOKE = ["experiment=smoke", "progress=false", "tracking.enabled=false"]
# every step of the 10-step chain (so the pooled run computes lyapunov.csv from whole trajectories),
# both seeds stacked (points.seed_batch=2): ten stacks over four shards
WHOLE_CHAIN = ["points.steps=null", "points.seed_batch=2", "measure.blocks=off", "proxy.images=0"]
SHARDS = 4


def split_and_unsplit(root: Path, overrides: list[str]) -> dict[str, Path]:
    """One protocol run twice in ``root``: unsplit (jacobian + analysis, moved to root/unsplit/), and as 4
    shards (run in the order 2, 0, 3, 1: the last to finish pools them into the unsplit run's folder)
    followed by the analysis given points.shards=4 (left in outputs/)."""
    from stages import analysis, covariance, jacobian, trajectories

    cwd = os.getcwd()
    os.chdir(root)
    try:
        cfg = compose_config([*SMOKE, *overrides])
        covariance.run(cfg)
        trajectories.run(cfg)
        whole_jac, whole_ana = jacobian.run(cfg).out_dir, analysis.run(cfg).out_dir
        (root / "unsplit").mkdir()
        shutil.move(whole_jac, root / "unsplit" / "jacobian")
        shutil.move(whole_ana, root / "unsplit" / "analysis")
        shards, pooled_after = {}, []
        for i in (2, 0, 3, 1):
            split = compose_config([*SMOKE, *overrides, f"points.shards={SHARDS}", f"points.shard={i}"])
            shards[i] = jacobian.run(split).out_dir
            pooled_after.append(Path(whole_jac).exists())
        pooled_ana = analysis.run(compose_config([*SMOKE, *overrides, f"points.shards={SHARDS}"])).out_dir
    finally:
        os.chdir(cwd)
    return {
        "root": root,
        "unsplit_jacobian": root / "unsplit" / "jacobian",
        "unsplit_analysis": root / "unsplit" / "analysis",
        "pooled_jacobian": Path(whole_jac),
        "pooled_analysis": Path(pooled_ana),
        "analysis_key_was": Path(whole_ana),
        "pooled_after": pooled_after,
        **{f"shard{i}": Path(p) for i, p in shards.items()},
    }


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return split_and_unsplit(tmp_path_factory.mktemp("smoke"), [])


@pytest.fixture(scope="module")
def whole_chain(tmp_path_factory):
    return split_and_unsplit(tmp_path_factory.mktemp("whole_chain"), WHOLE_CHAIN)


@pytest.fixture(params=["smoke", "whole_chain"])
def protocol(request):
    return request.param, request.getfixturevalue(request.param)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_pooled_jacobian_tables_are_the_unsplit_runs_byte_for_byte(protocol):
    name, run = protocol
    whole, pooled = run["unsplit_jacobian"], run["pooled_jacobian"]
    expected = {"smoke": ["blocks.csv", "global.csv", "meta.json", "patches.csv", "proxy.csv"]}.get(
        name, ["global.csv", "lyapunov.csv", "meta.json", "patches.csv"]
    )
    assert _files(whole) == expected  # the protocol writes what it should (lyapunov: whole chains only)
    assert _files(pooled) == expected  # no shard record in the pooled run
    for table in expected:
        if table != "meta.json":
            assert filecmp.cmp(whole / table, pooled / table, shallow=False), table
    assert run["pooled_after"] == [False, False, False, True]  # the shard that finished last pooled them
    # the pooled run is the unsplit run's folder: same run key and config digest, inputs are the shards
    meta_w = json.loads((whole / "meta.json").read_text())
    meta_p = json.loads((pooled / "meta.json").read_text())
    assert meta_p["run_key"] == meta_w["run_key"] and meta_p["config_digest"] == meta_w["config_digest"]
    assert sorted(k for k in meta_p["inputs"] if k.startswith("shard-")) == [
        f"shard-{i}" for i in range(SHARDS)
    ]


def test_pooled_analysis_tables_are_the_unsplit_runs_byte_for_byte(protocol):
    _, run = protocol
    whole, pooled = run["unsplit_analysis"], run["pooled_analysis"]
    assert pooled == run["analysis_key_was"]  # the analysis of the pooled shards has the unsplit run's key
    tables = [f for f in _files(whole) if f.endswith(".csv") and not f.startswith("plots/")]
    assert {"release_times.csv", "comparison.csv", "table_4.csv", "table_9.csv"} <= set(tables)
    assert [t for t in tables if not filecmp.cmp(whole / t, pooled / t, shallow=False)] == []


def test_every_point_is_measured_by_exactly_one_shard(protocol):
    name, run = protocol
    from pipeline import io

    whole = [(r["seed"], r["step"]) for r in io.read_csv(run["unsplit_jacobian"] / "global.csv")]
    per_shard = [
        [(r["seed"], r["step"]) for r in io.read_csv(run[f"shard{i}"] / "global.csv")] for i in range(4)
    ]
    # smoke: 2 seeds x 3 steps = 6 single-point stacks; whole chain: 10 steps, both seeds per stack
    sizes = {"smoke": [2, 2, 1, 1], "whole_chain": [6, 6, 4, 4]}[name]
    assert [len(p) for p in per_shard] == sizes
    assert sorted(p for shard in per_shard for p in shard) == sorted(whole) and len(set(whole)) == len(whole)
    for i in range(SHARDS):
        folder = run[f"shard{i}"]
        assert folder.name.endswith(f"-shard{i}of{SHARDS}")
        assert (folder / JacobianFolder.SHARD).is_file() and not (folder / "lyapunov.csv").exists()
        # Table 10's proxy is not a point measurement: shard 0 alone measures it
        assert (folder / "proxy.csv").is_file() == (name == "smoke" and i == 0)


# ------------------------------------------------------------------------------------------------
# which stacks a shard measures


def test_stacks_are_steps_in_chain_order_with_seeds_in_groups_of_seed_batch():
    assert protocol_stacks([0, 1, 2], [3, 7], 2) == [(3, (0, 1)), (3, (2,)), (7, (0, 1)), (7, (2,))]
    assert protocol_stacks([5, 6], [0], 1) == [(0, (5,)), (0, (6,))]
    assert stack_points([(7, (0, 1)), (3, (1,))]) == [(0, 7), (1, 3), (1, 7)]


@pytest.mark.parametrize(
    ("seeds", "steps", "batch", "count"), [(8, 50, 8, 4), (8, 50, 1, 4), (3, 5, 2, 7), (2, 3, 1, 6)]
)
def test_the_shards_partition_the_protocols_stacks_evenly(seeds, steps, batch, count):
    seeds, steps = list(range(seeds)), list(range(0, 2 * steps, 2))
    every = protocol_stacks(seeds, steps, batch)
    parts = [shard_stacks(seeds, steps, batch, Shard(i, count)) for i in range(count)]
    assert sorted(s for p in parts for s in p) == sorted(every)  # each stack in exactly one shard
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_more_shards_than_stacks_is_refused():
    with pytest.raises(PipelineError, match=r"points.shards=7 .* only 6 stacks .* at most 6 shards"):
        shard_stacks([0, 1], [0, 1, 2], 1, Shard(0, 7))


def test_a_shard_has_its_own_folder_and_the_pool_the_unsplit_ones():
    cfg = {"dataset": {"name": "d"}, "points": {"steps": None, "shards": 1, "shard": 0}, "seed": 0}
    shard = with_shard(cfg, 2, 4)
    assert run_key("jacobian", shard) == run_key("jacobian", cfg) + "-shard2of4"
    assert run_key("jacobian", unsharded(shard)) == run_key("jacobian", cfg)
    assert run_key("jacobian", {**shard, "run_key": "dvc"}) == "dvc-shard2of4"  # shards of a fixed key too
    assert run_key("covariance", shard) == run_key("covariance", cfg)  # upstream stages do not shard


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["points.shards=4", "points.shard=4"], "points.shard=4 is not one of 0..3"),
        (["points.shard=1"], "points.shard=1 is not one of 0..0"),
        (["points.shards=0"], "points.shards=0"),
    ],
)
def test_a_shard_outside_the_split_is_refused_before_any_work(overrides, message, tmp_path):
    from pipeline.settings import prepare_config

    with pytest.raises(ConfigError, match=message):
        prepare_config(compose_config([*SMOKE, f"paths.outputs={tmp_path}", *overrides]))


# ------------------------------------------------------------------------------------------------
# folders that are not every shard of one protocol exactly once


@pytest.fixture
def smoke_shards(smoke, tmp_path) -> list[Path]:
    return [Path(shutil.copytree(smoke[f"shard{i}"], tmp_path / f"s{i}")) for i in range(SHARDS)]


def test_a_shard_given_twice_is_refused(smoke_shards, tmp_path):
    s = smoke_shards
    with pytest.raises(ShardMismatchError, match=r"shard 1 of 4 is given twice: .*s1 and .*s1"):
        pool_tables([s[0], s[1], s[1], s[2], s[3]], tmp_path / "out")
    with pytest.raises(ShardMismatchError, match=r"shard\(s\) 2 of 4 are missing .* points.shard=2"):
        pool_tables([s[0], s[1], s[3]], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_shard_of_another_config_or_overlapping_points_is_refused(smoke_shards, tmp_path):
    s = smoke_shards
    original = (s[3] / "meta.json").read_bytes()
    meta = json.loads(original)
    meta["config"]["measure"]["power_iters"] += 1
    (s[3] / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ShardMismatchError, match=r"shard 3 of 4 .* differ in their config"):
        pool_tables(s, tmp_path / "out")
    (s[3] / "meta.json").write_bytes(original)
    record = json.loads((s[2] / JacobianFolder.SHARD).read_text())
    record["points"] = json.loads((s[1] / JacobianFolder.SHARD).read_text())["points"]
    (s[2] / JacobianFolder.SHARD).write_text(json.dumps(record))
    with pytest.raises(ShardMismatchError, match=r"point \(seed \d, step \d\) is in shard 1 and in shard 2"):
        pool_tables(s, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _call_in(root: Path, stage, overrides: list[str], capsys) -> tuple[int, list[str]]:
    cwd = os.getcwd()
    os.chdir(root)
    try:
        code = cli_errors.call(stage.run, compose_config([*SMOKE, f"points.shards={SHARDS}", *overrides]))
    finally:
        os.chdir(cwd)
    return code, capsys.readouterr().err.strip().splitlines()


def test_the_analysis_names_an_unfinished_shard_or_the_pooling_in_one_line(smoke, tmp_path, capsys):
    from stages import analysis, jacobian

    shutil.copytree(smoke["root"] / "outputs", tmp_path / "outputs")
    pooled = tmp_path / "outputs" / "jacobian" / smoke["pooled_jacobian"].name
    shard2 = tmp_path / "outputs" / "jacobian" / smoke["shard2"].name
    kept = tmp_path / "kept"
    shutil.move(shard2, kept)
    shutil.rmtree(pooled)
    code, err = _call_in(tmp_path, analysis, [], capsys)
    assert code == cli_errors.EXIT_EXPECTED and len(err) == 1, err
    assert err[0].startswith("error: analysis: jacobian shard(s) 2 of 4 are not finished — run them:")
    assert err[0].endswith("points.shard=2 (the last pools them)")
    # pooling on request names the same shard
    code, err = _call_in(tmp_path, jacobian, ["points.shard=pool"], capsys)
    assert code == cli_errors.EXIT_EXPECTED and len(err) == 1 and "shard(s) 2 are not finished" in err[0], err
    assert not pooled.exists()
    # every shard finished but none pooled (say, each job missed the others' folders): pool on request
    shutil.move(kept, shard2)
    code, err = _call_in(tmp_path, analysis, [], capsys)
    assert code == cli_errors.EXIT_EXPECTED and "finished but not pooled" in err[0], err
    assert err[0].endswith("points.shard=pool")
    assert _call_in(tmp_path, jacobian, ["points.shard=pool"], capsys)[0] == 0
    for table in ("global.csv", "patches.csv", "blocks.csv", "proxy.csv"):
        assert filecmp.cmp(pooled / table, smoke["unsplit_jacobian"] / table, shallow=False), table
    assert _call_in(tmp_path, analysis, [], capsys)[0] == 0


def test_the_sparse_table_11_protocol_pools_to_the_unsplit_run(tmp_path):
    """§7.7's protocol (measure.tables=[table_11]: the 20 representative steps of a 30-step chain): the
    shards' records carry the chain, so the pooled lyapunov.csv interpolates S_k,t exactly as the unsplit run."""
    sparse = ["measure.tables=[table_11]", "points.steps=null", "sampler.num_steps=30", "points.seed_batch=2"]
    run = split_and_unsplit(tmp_path, sparse)
    whole, pooled = run["unsplit_jacobian"], run["pooled_jacobian"]
    expected = ["global.csv", "lyapunov.csv", "meta.json", "patches.csv"]
    assert _files(whole) == _files(pooled) == expected
    for table in expected[:-2] + ["patches.csv"]:
        assert filecmp.cmp(whole / table, pooled / table, shallow=False), table
