"""Shared fixtures: Hydra compose API against conf/, an isolated project directory, and the expensive
builds several test files read (session-scoped: built at most once per worker).

The README's test command runs the suite on two pytest-xdist workers with `--dist loadfile`: a file's
tests stay on one worker, so its module-scoped fixtures are built once. Every test writes under its own
tmp_path (outputs/, the MLflow SQLite store) and servers bind free ports, so workers never collide.
(`--dist loadgroup` would keep files that share a session fixture together, but it does not group
under pytest 9 with pytest-xdist 3.8: the group suffix it writes into the node id is ignored.)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import stages  # noqa: F401 - registers the config schema (pipeline.schema) that conf/ composes against

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"

# Tests never reach for the network: hub lookups fail fast and offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# The suite's models are tiny: one intra-op thread avoids OpenMP threads spinning against each
# other (and other jobs) on a 2-core machine, where small ops otherwise run up to ~100x slower.
torch.set_num_threads(1)


# Variables a stage or a Hydra sweep callback sets for the processes it starts (the tracking store, the
# sweep's parent run). An in-process sweep leaves them in os.environ; a later test in the same worker
# would then log into another test's store.
_RUN_ENV = ("MLFLOW_TRACKING_URI", "PIFS_SWEEP_ID", "PIFS_PARENT_RUN_ID", "HYDRA_FULL_ERROR")


@pytest.fixture(autouse=True)
def _restore_run_environment():
    saved = {k: os.environ.get(k) for k in _RUN_ENV}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """An in-process Hydra job configures logging (its job_logging puts a handler on the root logger, bound to
    the stream pytest captured for that test): a later test's records would reach it after the capture
    closed and print a 'Logging error' traceback on stderr. Hand the root logger back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers and not type(h).__module__.startswith("_pytest"):
            root.removeHandler(h)
    root.setLevel(level)


def compose_config(
    overrides: list[str] | None = None, return_hydra_config: bool = False, config_name: str = "config"
):
    """Compose conf/<config_name>.yaml (config: the four stages; train: stages.train) with overrides."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            config_name=config_name, overrides=list(overrides or []), return_hydra_config=return_hydra_config
        )


def _synthetic_report(tmp_path_factory, kind: str, run_info: dict):
    from pipeline.analysis import build_analysis, load_stage_outputs
    from pipeline.analysis.synthetic import write_synthetic_run

    root = tmp_path_factory.mktemp(kind)
    run = write_synthetic_run(root / "stages", kind)
    inp = load_stage_outputs(run.covariance_dir, run.trajectories_dir, run.jacobian_dir)
    return run, build_analysis(inp, root / "analysis", run_info)


# run_info of the synthetic oracle report (tests compare the rendered run information with it)
ORACLE_RUN_INFO = {"mlflow_run_id": "run-analysis-1", "machine": "test box", "wall_time_s": 3.5}


@pytest.fixture(scope="session")
def oracle_run(tmp_path_factory):
    """Synthetic Gaussian-oracle stage outputs and the analysis built on them: (SyntheticRun, result)."""
    return _synthetic_report(tmp_path_factory, "gaussian_oracle", dict(ORACLE_RUN_INFO))


@pytest.fixture(scope="session")
def learned_run(tmp_path_factory):
    """Synthetic learned-model stage outputs and the analysis built on them: (SyntheticRun, result)."""
    return _synthetic_report(tmp_path_factory, "learned", {"mlflow_run_id": "run-analysis-2"})


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A scratch working directory with its own outputs/ and MLflow store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PIFS_PARENT_RUN_ID", raising=False)
    return tmp_path


def run_measurement_stages(root: Path, overrides: list[str]) -> dict[str, Path]:
    """covariance → trajectories → jacobian, in-process in ``root``: the folders the stages wrote."""
    from stages import covariance, jacobian, trajectories

    cwd = os.getcwd()
    os.chdir(root)
    try:
        cfg = compose_config(["progress=false", "tracking.enabled=false", *overrides])
        return {m.__name__.split(".")[-1]: m.run(cfg).out_dir for m in (covariance, trajectories, jacobian)}
    finally:
        os.chdir(cwd)


# The oracle on the smoke preset, every step of its 10-step chain measured (global norms and Rayleigh
# quotients, so lyapunov.csv is written), the full block decomposition at three steps.
ORACLE_STAGE_OVERRIDES = [
    "experiment=smoke",
    "points.steps=null",
    "points.block_steps=[1000,500,100]",
    "points.light_blocks=off",
    "proxy.images=0",
]
# The shipped learned DDPM (pifs_ddpm16) on a 4-step chain, two trajectories, every step measured and
# the dense block decomposition at one step.
LEARNED_STAGE_OVERRIDES = [
    "experiment=learned16",
    "dataset.num_images=512",
    "sampler.num_steps=4",
    "num_seeds=2",
    "points.block_steps=[250]",
    "measure.power_iters=4",
    "measure.global_lanczos=false",
    "proxy.images=0",
]


@pytest.fixture(scope="session")
def oracle_stage_run(tmp_path_factory) -> dict[str, Path]:
    """Tables written by the real stages on the block-diagonal Gaussian oracle (run once per session)."""
    return run_measurement_stages(tmp_path_factory.mktemp("oracle_stages"), ORACLE_STAGE_OVERRIDES)


@pytest.fixture(scope="session")
def learned_stage_run(tmp_path_factory) -> dict[str, Path]:
    """Tables written by the real stages on the shipped learned model (run once per session)."""
    return run_measurement_stages(tmp_path_factory.mktemp("learned_stages"), LEARNED_STAGE_OVERRIDES)
