"""Checkpoints shipped inside the package: ``pkg://pipeline/assets/<name>`` paths."""

from __future__ import annotations

from pathlib import Path

import pipeline
from pipeline.errors import InputMissingError, SettingError

PKG_PREFIX = "pkg://"


def resolve_asset_path(path: str | Path) -> Path:
    """``pkg://pipeline/assets/<name>`` -> the folder inside the installed package; other paths unchanged."""
    s = str(path)
    if not s.startswith(PKG_PREFIX):
        return Path(s)
    rel = s[len(PKG_PREFIX) :].strip("/")
    parts = rel.split("/")
    if not parts or parts[0] != "pipeline":
        raise SettingError(
            f"{s}: a pkg:// path outside the package — start it with pkg://pipeline/ (e.g. pkg://pipeline/assets/...)"
        )
    folder = Path(pipeline.__file__).resolve().parent.joinpath(*parts[1:])
    if not folder.exists():
        raise InputMissingError(
            f"{s} resolves to {folder}, which does not exist — check the model preset's path (model.path)"
        )
    return folder
