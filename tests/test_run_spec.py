"""The config is resolved once at the stage's edge: a run spec for the lifecycle, typed settings for the
measurement loop. Neither keeps a reference into the config it was resolved from."""

from __future__ import annotations

import copy
import json
from dataclasses import MISSING as MISSING_FIELD
from dataclasses import FrozenInstanceError, fields
from pathlib import Path

import pytest

from pipeline.assemble.sources import dataset
from pipeline.jacobian.loop import measurement_body
from pipeline.jacobian.run_settings import MeasurementSettings, PointSelection, ProxySettings
from pipeline.runkeys import POOL, chain_specs, config_digest, key_sections, run_key, run_spec, shard_of
from pipeline.schema import nodes
from pipeline.settings import prepare_config
from tests.conftest import compose_config

# the points keys a run spec carries (RunSpec.shard, .shards), not the typed measurement settings
RUN_PLACE = {"shard", "shards"}


@pytest.fixture(scope="module")
def smoke() -> dict:
    return prepare_config(compose_config(["experiment=smoke", "tracking.enabled=false"]))


def test_a_run_spec_names_keys_and_records_the_run_as_the_config_does(smoke):
    spec = run_spec("jacobian", smoke)
    assert spec.final == Path(smoke["paths"]["outputs"]) / "jacobian" / run_key("jacobian", smoke)
    assert spec.key == spec.final.name and spec.what == "run_key"
    assert spec.digest == config_digest(smoke, key_sections("jacobian"))
    # the record holds exactly the key sections, as JSON reads them back
    assert list(spec.values) == [s for s in key_sections("jacobian") if s in smoke]
    assert spec.values == json.loads(json.dumps({s: smoke[s] for s in spec.values}, default=str))
    assert json.loads(spec.config_json) == json.loads(json.dumps(smoke, default=str))
    assert (spec.force, spec.progress, spec.tracking.enabled) == (
        bool(smoke["force"]),
        bool(smoke["progress"]),
        False,
    )


def test_a_run_spec_is_the_config_at_resolve_time(smoke):
    cfg = copy.deepcopy(smoke)
    spec = run_spec("jacobian", cfg)
    before = copy.deepcopy(spec.values)
    cfg["patch"]["size"] = 99  # a later edit of the config cannot reach the record
    cfg["measure"]["power_iters"] = 1
    assert spec.values == before
    with pytest.raises(FrozenInstanceError):
        spec.key = "other"  # type: ignore[misc]


def test_the_chain_specs_are_each_stages_own_under_one_config(smoke):
    specs = chain_specs("jacobian", smoke)
    assert list(specs) == ["covariance", "trajectories", "jacobian"]
    for stage, spec in specs.items():
        assert spec == run_spec(stage, smoke)
    # trajectories leave out `patch`: a patch-size sweep shares them
    assert "patch" not in specs["trajectories"].values and "patch" in specs["covariance"].values


def test_a_chosen_output_folder_names_the_run(tmp_path, smoke):
    spec = run_spec("train", {**smoke, "train": {"name": "t"}}, final=tmp_path / "my-model")
    assert (spec.key, spec.final, spec.what) == ("my-model", tmp_path / "my-model", "train.out_dir")


def test_measurement_settings_are_typed_values_of_the_four_groups():
    cfg = prepare_config(
        compose_config(
            [
                "experiment=smoke",
                "points.steps=[9,5]",
                "points.seed_batch=auto",
                "measure.chunk_size=auto",
                "measure.tables=[table_4]",
            ]
        )
    )
    s = MeasurementSettings.from_config(cfg)
    assert s.patch_size == cfg["patch"]["size"]
    assert s.points == PointSelection(
        steps=(9, 5),
        max_seeds=cfg["points"]["max_seeds"],
        block_steps=None if cfg["points"]["block_steps"] is None else tuple(cfg["points"]["block_steps"]),
        light_blocks=cfg["points"]["light_blocks"],
        seed_batch="auto",
    )
    assert s.proxy == ProxySettings(
        int(cfg["proxy"]["images"]), tuple(cfg["proxy"]["timesteps"]), int(cfg["proxy"]["seed"])
    )
    # chunk_size=auto waits for the device; measure.tables already chose the estimators
    assert s.measure.chunk_size == "auto" and s.measure.tables == ["table_4"]


def test_the_shard_has_one_reader_and_the_pooling_shard_is_kept_by_name(smoke):
    def shard(**points):
        return shard_of({**smoke, "points": {**smoke["points"], **points}})

    assert shard(shard=POOL, shards=4) == (POOL, 4)
    assert shard(shard="2", shards="4") == (2, 4)
    for key in ("shard", "shards"):  # read from the node, never defaulted
        with pytest.raises(KeyError, match=key):
            shard_of({**smoke, "points": {k: v for k, v in smoke["points"].items() if k != key}})


def test_the_proxy_runs_in_shard_zero_for_table_10_alone(smoke):
    """Table 10's proxy is not a point measurement: of a split protocol only shard 0 measures it, and with
    measure.tables only when Table 10 is among them (every table when unset)."""
    images = int(smoke["proxy"]["images"])
    assert images > 0

    def measured(shard: int, tables: list[str] | None) -> int:
        settings = MeasurementSettings.from_config(
            {**smoke, "measure": {**smoke["measure"], "tables": tables}}
        )
        return settings.proxy_images(shard)

    assert measured(0, None) == images and measured(0, ["table_10", "table_4"]) == images
    assert measured(1, None) == 0 and measured(1, ["table_10"]) == 0
    assert measured(0, ["table_4"]) == 0


def test_the_prepared_dataset_node_builds_its_source_with_a_derived_size(smoke):
    """A prepared config's dataset node (checked once, by prepare_config) builds its source directly; a change
    may only set a key the node has (a misspelt one would silently leave the size as configured)."""
    assert len(dataset(smoke, num_images=3)) == 3
    with pytest.raises(TypeError, match="num_image"):
        dataset(smoke, num_image=3)


def test_the_typed_settings_default_nothing(smoke):
    """The values come from the composed node alone (conf/ holds them): a node missing a key is refused,
    never filled with a second, code-side default."""
    for typed, node in ((PointSelection, smoke["points"]), (ProxySettings, smoke["proxy"])):
        assert all(f.default is MISSING_FIELD for f in fields(typed)), typed.__name__
        for key in set(node) - RUN_PLACE:
            with pytest.raises(KeyError, match=key):
                typed.from_config({k: v for k, v in node.items() if k != key})


def test_the_measurement_body_holds_no_config(smoke):
    """Everything the loop reads was resolved before the body exists: its closure holds the setup and the
    typed settings, never a mapping of config values."""
    settings = MeasurementSettings.from_config(smoke)
    body = measurement_body(object(), settings)
    held = [c.cell_contents for c in body.__closure__ or ()]
    assert settings in held
    assert not any(isinstance(v, dict) for v in held)


def test_the_typed_settings_have_every_key_of_their_config_node():
    """A key added to the `points` or `proxy` schema node and not to its typed settings would be accepted by
    the config and then ignored by the loop; the shard keys are the run's place (its run spec's)."""
    for typed, node in ((PointSelection, nodes.Points), (ProxySettings, nodes.Proxy)):
        wanted = [f.name for f in fields(node) if f.name not in RUN_PLACE]
        assert [f.name for f in fields(typed)] == wanted, typed.__name__


def test_a_jacobian_spec_knows_its_place_in_a_split_protocol(smoke):
    split = {**smoke, "points": {**smoke["points"], "shard": 2, "shards": 4}}
    specs = chain_specs("jacobian", split)
    assert (specs["jacobian"].shard, specs["jacobian"].shards) == (2, 4)
    assert specs["jacobian"].key == f"{run_key('jacobian', smoke)}-shard2of4"
    assert all((specs[s].shard, specs[s].shards) == (0, 1) for s in ("covariance", "trajectories"))
    pooled = run_spec("jacobian", {**split, "points": {**split["points"], "shard": POOL}})
    # the pooled result is the unsplit run's folder
    assert (pooled.shard, pooled.shards, pooled.key) == (POOL, 4, run_key("jacobian", smoke))
