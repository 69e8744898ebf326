"""Provenance recorded in every meta.json: versions, git revision, machine."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

_PACKAGES = ("torch", "numpy", "scipy", "diffusers", "hydra-core", "omegaconf", "mlflow", "dvc")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def git_revision(root: str | Path = ".") -> str:
    """HEAD's commit, suffixed with '-dirty' when tracked files differ; 'unknown' outside git."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, str]:
    import os

    import torch

    info = {"host": platform.node(), "platform": platform.platform(), "processor": platform.machine()}
    info["cpus"] = str(os.cpu_count())
    try:
        if torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name(0)
    except (RuntimeError, AssertionError):  # a broken CUDA driver must not fail the run's meta.json
        pass
    return info
