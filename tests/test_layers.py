"""The import layers of pyproject.toml's [tool.importlinter] hold, and the contract can fail.

stages → pipeline; inside pipeline analysis → jacobian/sampler → covariance/models → data →
geometry/patches → io; models independent of training; no cycle between siblings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def test_import_contracts_are_kept():
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "4 kept, 0 broken" in proc.stdout


def test_an_upward_import_breaks_the_layers(tmp_path):
    """A copy of the tree where io (the bottom layer) reaches up into analysis fails the check."""
    for pkg in ("pipeline", "stages"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "assets"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    io_py = tmp_path / "pipeline" / "io.py"
    io_py.write_text(
        io_py.read_text() + "\n\ndef _upward():\n    from pipeline.analysis import paper_values\n"
    )
    proc = _lint(tmp_path)
    assert proc.returncode != 0
    assert "BROKEN" in proc.stdout and "pipeline.io -> pipeline.analysis" in proc.stdout, proc.stdout[-3000:]
