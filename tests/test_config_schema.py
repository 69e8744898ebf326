"""The config schema (pipeline.schema): composition refuses an unknown key or a wrongly typed value in every
group; params_file is checked like the command line; every value is ranged before any work; the tracking
store's failures are one line each. Every refusal is checked through stages.cli_errors, the guard of the
command line: one line naming the key."""

from __future__ import annotations

import configparser
import dataclasses
import os
import shutil
import sqlite3
import subprocess
import sys
import threading

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from pipeline import schema
from pipeline.errors import ConfigError
from pipeline.settings import prepare_config
from pipeline.tracking import TrackingError, check_store
from stages import cli_errors
from tests.conftest import CONF, ROOT, compose_config

SMOKE = ["experiment=smoke", "tracking.enabled=false"]


def _line(exc: BaseException) -> str:
    """The one line the command line prints for ``exc`` (a bug, None, fails the caller's asserts)."""
    line = cli_errors.one_line(exc)
    assert line is not None, f"{type(exc).__name__} would print a traceback: {exc}"
    assert "\n" not in line and " — " in line, line
    return line


# ------------------------------------------------------------------------------------------------
# composition: a wrong type or an unknown key, in every group and node

# (primary config, group choices, a typed key of that group's schema, a value of the wrong type)
WRONG_TYPE = [
    ("config", [], "num_seeds", "abc"),
    ("config", [], "seed", "1.5"),
    ("config", [], "torch_threads", "many"),
    ("config", [], "force", "maybe"),
    ("config", ["dataset=cifar10"], "dataset.num_images", "abc"),
    ("config", ["dataset=celebahq"], "dataset.num_workers", "two"),
    ("config", ["dataset=natural_crops"], "dataset.scale", "[a,b]"),
    ("config", ["dataset=gaussian"], "dataset.coupling", "abc"),
    ("config", ["model=unet"], "model.allow_resolution_change", "maybe"),
    ("config", ["model=gaussian_oracle"], "model.block_size", "abc"),
    ("config", ["schedule=linear"], "schedule.beta_start", "abc"),
    ("config", ["schedule=cosine"], "schedule.s_off", "abc"),
    ("config", ["sampler=ddim50"], "sampler.steps_offset", "abc"),
    ("config", ["sampler=ddim49"], "sampler.stride", "abc"),
    ("config", ["sampler=full"], "sampler.final_alpha_bar", "abc"),
    ("config", [], "patch.size", "abc"),
    ("config", [], "measure.frob_probes", "abc"),
    ("config", ["measure=paper"], "measure.power_iters", "abc"),
    ("config", [], "points.max_seeds", "abc"),
    ("config", [], "points.steps", "[a]"),
    ("config", [], "proxy.images", "abc"),
    ("config", [], "covariance.full_cov", "maybe"),
    ("config", [], "trajectories.batch_size", "abc"),
    ("config", [], "analysis.compare", "5"),
    ("config", [], "tracking.enabled", "maybe"),
    ("config", [], "paths.outputs", "[a,b]"),
    ("train", [], "train.steps", "abc"),
    ("train", ["train=collage"], "train.mu_reg", "abc"),
    ("train", [], "device", "[cpu]"),
]
NODES = sorted({k.split(".")[0] for _, _, k, _ in WRONG_TYPE if "." in k})


def test_the_cases_cover_every_node_and_every_shape():
    assert set(NODES) == set(schema.GROUPS) | {"covariance", "trajectories", "points", "proxy", "analysis"}
    covered = {
        OmegaConf.get_type(compose_config(choices, config_name=name)[key.split(".")[0]])
        for name, choices, key, _ in WRONG_TYPE
        if "." in key
    }
    assert {cls for shapes in schema.GROUPS.values() for cls in shapes.values()} <= covered


@pytest.mark.parametrize(
    ("config_name", "choices", "key", "value"), WRONG_TYPE, ids=[c[2] for c in WRONG_TYPE]
)
def test_a_wrongly_typed_value_is_refused_when_the_config_is_composed(config_name, choices, key, value):
    with pytest.raises(ConfigCompositionException) as err:
        compose_config([*choices, f"{key}={value}"], config_name=config_name)
    line = _line(err.value)
    assert line.startswith(f"{key}={value}"), line
    assert f"{key}" in line.split(" — ")[1], line


UNKNOWN = [("config", g) for g in ["", *NODES] if g != "train"] + [("train", "train")]


@pytest.mark.parametrize(("config_name", "node"), UNKNOWN, ids=[n or "top-level" for _, n in UNKNOWN])
def test_an_unknown_key_is_refused_when_the_config_is_composed(config_name, node):
    key = f"{node}.nosuchkey" if node else "nosuchkey"
    with pytest.raises(ConfigCompositionException) as err:
        compose_config([f"{key}=1"], config_name=config_name)
    line = _line(err.value)
    assert line.startswith(f"unknown key {key} — "), line
    assert f"the keys of {node or 'the config'}: " in line


def test_a_misspelt_key_is_named_with_the_key_it_resembles():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["measure.frob_probe=3"])
    assert "did you mean measure.frob_probes?" in _line(err.value)
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["dataset.version=auto"])  # a key of another dataset kind
    assert "dataset.version exists only where dataset.name is cifar10" in _line(err.value)


def test_a_preset_with_an_unknown_key_is_refused_when_composed(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "experiment" / "typo.yaml").write_text("# @package _global_\npach:\n  size: 4\n")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises(ConfigCompositionException) as err:
            compose(config_name="config", overrides=["experiment=typo"])
    line = _line(err.value)
    assert line.startswith("unknown key pach — did you mean patch?") and "conf/experiment/typo.yaml" in line


def test_an_added_key_is_refused_before_any_work(project):
    # `+key=value` opens the node to new keys during composition; the schema check in prepare_config refuses it
    with pytest.raises(ConfigError) as err:
        prepare_config(compose_config([*SMOKE, "+dataset.foo=1"]))
    assert _line(err.value).startswith("unknown key dataset.foo — ")
    assert not (project / "outputs").exists()


def test_every_option_gives_every_key_of_its_schema_a_value():
    for group, shapes in schema.GROUPS.items():
        name = "train" if group == "train" else "config"
        for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
            node = compose_config([f"{group}={option}"], config_name=name)[group]
            assert OmegaConf.get_type(node) in shapes.values(), f"{group}/{option} names no schema"
            assert not OmegaConf.missing_keys(node), f"{group}/{option}: {OmegaConf.missing_keys(node)}"


def test_every_range_names_a_key_of_the_schema():
    n = schema.nodes
    owners = {g: list(shapes.values()) for g, shapes in schema.GROUPS.items()}
    owners |= {"covariance": [n.Covariance], "trajectories": [n.Trajectories], "points": [n.Points]}
    owners |= {"proxy": [n.Proxy], "analysis": [n.Analysis], "": [n.StageConfig, n.TrainEntryConfig]}
    for key in schema.RANGES:
        node, _, leaf = key.rpartition(".")
        assert any(leaf in schema.names(c) for c in owners[node]), f"RANGES has {key}, which no schema has"


def test_the_measure_and_train_schemas_are_the_library_configs_keys():
    from pipeline.jacobian.measure import MeasureConfig
    from pipeline.training import TrainConfig

    measure = [f.name for f in dataclasses.fields(MeasureConfig)]
    assert schema.names(schema.nodes.Measure) == ["name", *measure], "add the key to pipeline/schema/nodes.py"
    train = {f.name for f in dataclasses.fields(TrainConfig)}
    assert train <= set(schema.names(schema.nodes.Train)), sorted(
        train - set(schema.names(schema.nodes.Train))
    )
    # MeasureConfig's own defaults serve direct callers of the engine; a run takes conf/measure/default.yaml's
    conf = OmegaConf.to_container(OmegaConf.load(CONF / "measure" / "default.yaml"))
    assert {k: conf[k] for k in measure} == dataclasses.asdict(MeasureConfig())


def test_configs_compose_to_the_same_values_and_order_as_the_yaml_alone():
    """The schema adds types, never values: params.yaml's text is what conf/'s YAML alone composes to."""
    from stages.params import PARAMS_FILES, composed_params

    for name, overrides in PARAMS_FILES.items():
        assert (ROOT / name).read_text() == composed_params(overrides), f"{name}: python -m stages.params"


# ------------------------------------------------------------------------------------------------
# params_file: checked like the command line; the command line wins


@pytest.fixture
def files(project):
    def write(name: str, text: str) -> str:
        (project / name).write_text(text)
        return name

    return write


def _prepared(overrides: list[str]) -> dict:
    """As a stage prepares it, with Hydra's record of the command line (return_hydra_config)."""
    return prepare_config(compose_config(["tracking.enabled=false", *overrides], return_hydra_config=True))


def test_a_params_file_section_with_a_typo_is_refused(files):
    pf = files("typo.yaml", "pach:\n  size: 8\n")
    with pytest.raises(ConfigError) as err:
        _prepared([f"params_file={pf}"])
    assert _line(err.value).startswith(f"params_file={pf}: unknown key pach — did you mean patch?")


def test_a_params_file_value_of_the_wrong_type_is_refused(files):
    pf = files("bad.yaml", "dataset:\n  num_images: abc\n")
    with pytest.raises(ConfigError) as err:
        _prepared([f"params_file={pf}"])
    assert _line(err.value).startswith(f"params_file={pf}: dataset.num_images=abc: 'abc' is not an integer")


def test_a_partial_section_changes_only_its_keys(files):
    base = _prepared([])
    pf = files("partial.yaml", "patch:\n  size: 2\ndataset:\n  num_images: 100\n")
    got = _prepared([f"params_file={pf}"])
    assert got["patch"] == {"size": 2} and got["dataset"]["num_images"] == 100
    assert {k: v for k, v in got["dataset"].items() if k != "num_images"} == {
        k: v for k, v in base["dataset"].items() if k != "num_images"
    }
    assert {k: got[k] for k in got if k not in ("patch", "dataset", "params_file")} == {
        k: base[k] for k in base if k not in ("patch", "dataset", "params_file")
    }


def test_a_section_of_another_kind_replaces_its_group_and_must_be_complete(files, project):
    from stages.params import composed_params

    pf = files("cifar.yaml", composed_params(["experiment=cifar10_paper"]))
    got = _prepared([f"params_file={pf}"])
    assert (got["dataset"]["name"], got["model"]["kind"], got["sampler"]["spacing"]) == (
        "cifar10",
        "unet",
        "leading",
    )
    assert "photographs" not in got["dataset"]
    half = files("half.yaml", "dataset:\n  name: cifar10\n  root: data\n")
    with pytest.raises(ConfigError) as err:
        _prepared([f"params_file={half}"])
    assert (
        "changes the kind of dataset, so its section must give every key: dataset.channels has no value"
        in (_line(err.value))
    )


def test_a_params_file_that_is_not_a_mapping_is_one_line(files):
    pf = files("list.yaml", "- patch\n- dataset\n")
    with pytest.raises(ConfigError) as err:
        _prepared([f"params_file={pf}"])
    assert _line(err.value).startswith(f"params_file={pf} holds a list, not a mapping of config keys")


def test_the_command_line_wins_over_the_params_file(files, project):
    pf = files(
        "p.yaml", "paths:\n  outputs: from_file\ntracking:\n  enabled: true\npatch:\n  size: 2\nrun_key: x\n"
    )
    got = _prepared([f"params_file={pf}", "paths.outputs=from_cli", "tracking.enabled=false"])
    assert got["paths"]["outputs"] == "from_cli" and got["tracking"]["enabled"] is False
    assert got["patch"]["size"] == 2  # not on the command line: the file's
    assert got["run_key"] is None  # a run-time key is never taken from the file
    # a group choice on the command line: that group's whole node
    got = _prepared([f"params_file={pf}", "tracking=off"])
    assert got["tracking"]["enabled"] is False


def test_a_preset_beside_a_params_file_is_refused(files):
    pf = files("p.yaml", "patch:\n  size: 2\n")
    with pytest.raises(ConfigError) as err:
        _prepared([f"params_file={pf}", "experiment=smoke"])
    line = _line(err.value)
    assert line.startswith(f"params_file={pf} with experiment=smoke on the command line")
    assert "python -m stages.params experiment=smoke" in line


# ------------------------------------------------------------------------------------------------
# values checked at the boundary, before any work

# (overrides, the start of the one line)
OUT_OF_RANGE = [
    (["num_seeds=-1"], "num_seeds=-1 — set num_seeds to an integer of at least 1"),
    (["num_seeds=0"], "num_seeds=0 — set num_seeds to an integer of at least 1"),
    (["seed=-3"], "seed=-3 — set seed to an integer of at least 0"),
    (["dataset.num_images=-5"], "dataset.num_images=-5 — set dataset.num_images to an integer of at least 1"),
    (["points.max_seeds=-1"], "points.max_seeds=-1 — set points.max_seeds to an integer of at least 1"),
    (["points.max_seeds=0"], "points.max_seeds=0 — set points.max_seeds"),
    (["points.seed_batch=0"], "points.seed_batch=0 — set points.seed_batch to a positive number"),
    (["points.seed_batch=abc"], "points.seed_batch=abc — set points.seed_batch to a positive number"),
    (["points.light_blocks=none"], "points.light_blocks=none — use diag or off"),
    (["points.block_steps=[7]"], "points.block_steps lists t=[7], which points.steps does not measure"),
    (["proxy.timesteps=[5000]"], "proxy.timesteps lists t=[5000], beyond the schedule's T=1000"),
    # patch.size first: model.block_size and dataset.patch_size interpolate it
    (["patch.size=0"], "patch.size=0 — set patch.size to a positive integer that divides the image size"),
    (["measure.frob_probes=0"], "measure.frob_probes=0 with measure.blocks=power leaves the Frobenius"),
    (["measure.chunk_size=0"], "measure.chunk_size=0 — set measure.chunk_size to a positive number"),
    (["measure.chunk_size=abc"], "measure.chunk_size=abc — set measure.chunk_size to a positive number"),
    (["measure.blocks=exact"], "measure.blocks=exact — use one of auto, dense, power, lanczos, diag, off"),
    (["device=nope"], "device=nope — use auto, cpu, cuda, cuda:<index> or mps"),
    (["torch_threads=-1"], "torch_threads=-1 — set torch_threads to an integer of at least 1, or null"),
    (
        ["covariance.chunk_size=0"],
        "covariance.chunk_size=0 — set covariance.chunk_size to an integer of at least 1",
    ),
    (["trajectories.batch_size=0"], "trajectories.batch_size=0 — set trajectories.batch_size"),
    (["sampler.num_steps=0"], "sampler.num_steps=0 — set sampler.num_steps to an integer of at least 1"),
    (["proxy.images=-1"], "proxy.images=-1 — set proxy.images to an integer of at least 0"),
    (
        ["schedule.beta_end=2"],
        "schedule.beta_end=2.0 — set schedule.beta_end to a number above 0 and at most 1",
    ),
    (["patch.size=5"], "patch.size=5 does not divide the image size 16x16"),
    (["model.block_size=3"], "model.block_size=3 does not divide the image size 16"),
    (
        ["dataset=gaussian", "dataset.coupling=1.5"],
        "dataset.coupling=1.5 — set dataset.coupling to a number in",
    ),
    (["model=unet"], "model kind=unet needs model.path"),
]


@pytest.mark.parametrize(("overrides", "start"), OUT_OF_RANGE, ids=[" ".join(o) for o, _ in OUT_OF_RANGE])
def test_a_value_out_of_range_is_one_line_naming_the_key_before_any_work(overrides, start, project):
    cfg = compose_config([*SMOKE, *overrides])  # composes: the type is right, the value is not
    code = cli_errors.call(prepare_config, cfg)
    assert code == cli_errors.EXIT_EXPECTED
    with pytest.raises(ConfigError) as err:
        prepare_config(cfg)
    assert _line(err.value).startswith(start), _line(err.value)
    assert not (project / "outputs").exists()


TRAIN_OUT_OF_RANGE = [
    (["train.steps=0"], "train.steps=0 — set train.steps to an integer of at least 1"),
    (["train.lr=-1"], "train.lr=-1.0 — set train.lr to a number above 0"),
    (["train.ema_decay=1"], "train.ema_decay=1.0 — set train.ema_decay to a number in [0, 1)"),
    (["train.stop_at=10"], "train.stop_at=10 is after train.steps=4"),
    (["train.prediction_type=x0"], "train.prediction_type=x0 — use one of epsilon, v_prediction, sample"),
]


@pytest.mark.parametrize(
    ("overrides", "start"), TRAIN_OUT_OF_RANGE, ids=[o[0] for o, _ in TRAIN_OUT_OF_RANGE]
)
def test_a_training_value_out_of_range_is_one_line(overrides, start, project):
    cfg = compose_config(["train=smoke", "tracking.enabled=false", *overrides], config_name="train")
    with pytest.raises(ConfigError) as err:
        prepare_config(cfg)
    assert _line(err.value).startswith(start), _line(err.value)


def test_training_carries_the_measurement_keys_of_a_preset_without_checking_them():
    cfg = prepare_config(
        compose_config(["experiment=learned16", "tracking.enabled=false"], config_name="train")
    )
    assert cfg["points"]["block_steps"] == [1000, 500, 200, 100, 60, 40, 20] and cfg["num_seeds"] == 4
    assert "covariance" not in cfg  # no preset set it: not carried as null


# ------------------------------------------------------------------------------------------------
# the tracking store


def test_a_tracking_store_that_is_a_folder_is_one_line(project):
    (project / "mlflow.db").mkdir()
    with pytest.raises(TrackingError) as err:
        prepare_config(compose_config(["experiment=smoke"]))
    assert "mlflow.db is a folder, not an SQLite file — move it away" in _line(err.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_tracking_store_is_one_line(project, damage):
    db = project / "mlflow.db"
    if damage == "garbage":
        db.write_bytes(b"not a database" * 100)
    else:
        with sqlite3.connect(db) as con:
            con.execute("CREATE TABLE t (x)")
            con.executemany("INSERT INTO t VALUES (?)", [(str(i) * 100,) for i in range(2000)])
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])
    with pytest.raises(TrackingError) as err:
        check_store(f"sqlite:///{db}")
    assert "mlflow.db is corrupt or not an SQLite database — move it aside" in _line(err.value)


def test_a_locked_tracking_store_is_one_line_after_the_timeout(project):
    db = project / "mlflow.db"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.commit()
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        con = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        con.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(30)
        con.rollback()
        con.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(10)
        with pytest.raises(TrackingError) as err:
            check_store(f"sqlite:///{db}", timeout=0.5)
    finally:
        release.set()
        holder.join()
    assert "mlflow.db stayed locked for 0.5 s (another process holds it" in _line(err.value)
    check_store(f"sqlite:///{db}", timeout=0.5)  # released: usable again


# ------------------------------------------------------------------------------------------------
# the command line and DVC's own composition (subprocesses)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in cli_errors.DEBUG_ENVS}
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.mark.parametrize(
    ("override", "start"),
    [
        ("num_seeds=abc", "error: num_seeds=abc: 'abc' is not an integer"),
        ("run_key=ключ", "error: cannot read"),
    ],
)
def test_the_command_line_prints_one_line_for_a_refused_override(override, start, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "stages.covariance", override, f"hydra.run.dir={tmp_path}/.hydra"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == cli_errors.EXIT_EXPECTED and len(lines) == 1, r.stderr
    assert lines[0].startswith(start) and "Traceback" not in r.stderr, r.stderr


def test_dvc_composition_finds_the_schema_through_the_hydra_plugin(tmp_path):
    """`dvc exp run -S` composes conf/ in DVC's own process, which finds the schema through stages/hydra_plugins/."""
    from stages.params import composed_params

    code = (
        "import sys\n"
        "from dvc.utils.hydra import compose_and_dump\n"
        "compose_and_dump(sys.argv[1], sys.argv[2], None, 'config', sys.argv[3], sys.argv[4:])\n"
    )
    env = {k: v for k, v in _env().items() if k != "PYTHONPATH"}  # DVC adds the plugins path itself
    dvc_config = configparser.ConfigParser()
    dvc_config.read(ROOT / ".dvc" / "config")
    plugins_path = ROOT / dvc_config["hydra"]["plugins_path"]  # as DVC joins it to the repository root

    def dvc_compose(*overrides: str) -> subprocess.CompletedProcess:
        out = tmp_path / "params.yaml"
        args = [sys.executable, "-c", code, str(out), str(CONF), str(plugins_path), *overrides]
        return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    r = dvc_compose("patch.size=4")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "params.yaml").read_text() == composed_params(["patch.size=4"])
    r = dvc_compose("num_seeds=abc")
    assert r.returncode != 0 and "could not be converted to Integer" in r.stderr


def test_writing_params_yaml_with_a_refused_override_is_one_line(capsys, project):
    from stages.params import main

    assert main(["num_seeds=abc"]) == cli_errors.EXIT_EXPECTED
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert err == ["error: num_seeds=abc: 'abc' is not an integer — set num_seeds to an integer"]
    assert not (project / "params.yaml").exists()
