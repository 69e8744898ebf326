"""Checks of where a run will write and track, made before any work starts (each fails as one line)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError


class OutputLocationError(PipelineError):
    """An output location is a file, or cannot be written."""


def check_output_location(path: str | Path, key: str) -> None:
    """Refuse an output folder that is a file, lies under a file, or whose nearest existing folder is not writable.

    Nothing is created: the run makes its folders itself once every check has passed.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise OutputLocationError(
            f"{key}={path} is a file, not a folder — point {key} at a folder (or move the file away)"
        )
    probe = target.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputLocationError(
            f"{key}={path} lies under {probe}, which is a file — point {key} at a folder (or move the file away)"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputLocationError(
            f"{key}={path}: {probe} is not writable (read-only or another user's) — "
            f"set {key}=<a writable folder> or fix its permissions"
        )


def check_tracking(cfg: Mapping[str, Any]) -> None:
    """An http(s) MLflow server must answer within seconds; a SQLite store's folder must be writable."""
    tcfg = cfg.get("tracking") or {}
    if not tcfg.get("enabled", True):
        return
    from pipeline.tracking import check_reachable, default_tracking_uri

    uri = str(tcfg.get("uri") or default_tracking_uri())
    check_reachable(uri)
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :].split("?", 1)[0])
        check_output_location(db.parent, "tracking.uri")


def preflight(cfg: Mapping[str, Any]) -> None:
    """Every check that needs no data and no model: output location and tracking store."""
    check_output_location(Path((cfg.get("paths") or {}).get("outputs", "outputs")), "paths.outputs")
    check_tracking(cfg)
