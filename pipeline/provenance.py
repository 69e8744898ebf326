"""Provenance recorded in every meta.json: versions, git revision, machine."""

from __future__ import annotations

import importlib.metadata
import os
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


# Files DVC itself rewrites during `dvc repro` / `dvc exp run` (the lock after each stage; the params
# files that `dvc exp run -S` composes). They record parameters, which meta.json holds in full, not
# code, so they alone do not make the code that ran differ from the commit.
DVC_WRITTEN = ("dvc.lock", "params.yaml", "params_learned.yaml")


def git_revision(root: str | Path | None = None) -> str:
    """HEAD's commit, suffixed with '-dirty' when tracked files other than DVC_WRITTEN differ from it;
    'unknown' outside git. ``root`` defaults to the checkout this code was imported from, not the
    working directory (a run from another folder still names the code that ran)."""
    root = Path(__file__).resolve().parent.parent if root is None else root
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ":(top)",
                *(f":(top,exclude){f}" for f in DVC_WRITTEN),
            ],
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
    # torch only when the machine is described: importing provenance stays torch-free
    import torch

    info = {"host": platform.node(), "platform": platform.platform(), "processor": platform.machine()}
    info["cpus"] = str(os.cpu_count())
    try:
        if torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name(0)
    except (RuntimeError, AssertionError):  # a broken CUDA driver must not fail the run's meta.json
        pass
    return info
