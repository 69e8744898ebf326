"""Upstream folders as a stage reads them: made from one another's current outputs, and a trajectories
folder holding every seed of the run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import InputMissingError, PipelineError
from pipeline.lineage import stale_problem
from pipeline.outputs import TrajectoriesFolder

from .sources import seeds_of


def check_not_stale(folders: Mapping[str, tuple[Path, Mapping[str, Any]]], needed_by: str) -> None:
    """Refuse upstream folders that were made from other outputs than the ones beside them now
    (a covariance recomputed after the trajectories or the jacobian ran)."""
    problem = stale_problem(folders, needed_by)
    if problem is not None:
        raise PipelineError(problem)


def trajectories_with_all_seeds(path: Path, cfg: Mapping[str, Any]) -> TrajectoriesFolder:
    """The verified trajectories folder at ``path``, refused when it lacks a seed of this run."""
    folder = TrajectoriesFolder(path)
    # a finished folder missing a seed would be measured on fewer seeds without a word
    missing = folder.missing_seeds(seeds_of(cfg))
    if missing:
        raise InputMissingError(
            f"{folder.path} lacks the trajectories of seed(s) {missing} — rerun the trajectories stage with force=true"
        )
    return folder
