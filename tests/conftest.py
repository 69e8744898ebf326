"""Shared fixtures: Hydra compose API against conf/, and an isolated project directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"

# Tests never reach for the network: hub lookups fail fast and offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# The suite's models are tiny: one intra-op thread avoids OpenMP threads spinning against each
# other (and other jobs) on a 2-core machine, where small ops otherwise run up to ~100x slower.
torch.set_num_threads(1)


def compose_config(
    overrides: list[str] | None = None, return_hydra_config: bool = False, config_name: str = "config"
):
    """Compose conf/<config_name>.yaml (config: the four stages; train: stages.train) with overrides."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            config_name=config_name, overrides=list(overrides or []), return_hydra_config=return_hydra_config
        )


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A scratch working directory with its own outputs/ and MLflow store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PIFS_PARENT_RUN_ID", raising=False)
    return tmp_path
