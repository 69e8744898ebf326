"""The DVC graph cannot go stale: each stage's code deps are exactly the project modules it imports,
dvc.lock records the tree as it is, and an edit of a module reruns exactly the stages importing it.

When test_dvc_lock_matches_the_tree fails after a code change, regenerate dvc.lock with
`dvc repro` (or, where the outputs are already current, `dvc commit -f`) and commit it.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.runkeys import STAGES, key_sections

ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("pipeline", "stages")


def _module_file(root: Path, name: str) -> Path | None:
    p = root.joinpath(*name.split("."))
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    if p.with_suffix(".py").is_file():
        return p.with_suffix(".py")
    return None


def _imported_names(path: Path, module: str) -> list[str]:
    """Every module name an import statement in ``path`` may load (function-level imports included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1] + ([node.module] if node.module else [])
                target = ".".join(base)
            else:
                target = node.module or ""
            # `from pkg import name` loads pkg and, when name is a submodule, pkg.name
            names += [target] + [f"{target}.{a.name}" for a in node.names]
    return names


def import_closure(root: Path, module: str) -> set[str]:
    """Files (relative posix paths) of the project modules ``module`` imports, transitively, itself included."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        parts = todo.pop().split(".")
        if parts[0] not in PROJECT_PACKAGES:
            continue
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            name = ".".join(parts[:i])
            f = _module_file(root, name)
            if f is not None and name not in seen:
                seen[name] = f
                todo += _imported_names(f, name)
    return {f.relative_to(root).as_posix() for f in seen.values()}


def _stages(root: Path = ROOT) -> dict[str, dict]:
    """dvc.yaml's stages as DVC itself resolves them (``foreach`` over the two chains): ``<stage>@<chain>``
    -> its deps (paths), params ({params file: keys}) and outs."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        out = {}
        for s in repo.index.stages:
            params = {d.def_path: list(d.params) for d in s.deps if hasattr(d, "params")}
            deps = [d.def_path for d in s.deps if not hasattr(d, "params")]
            out[s.addressing] = {"deps": deps, "params": params, "outs": [o.def_path for o in s.outs]}
        return out


def _script(name: str) -> str:
    return name.split("@")[0]


def _code_deps(stage: dict) -> list[str]:
    return [d for d in stage.get("deps", []) if str(d).split("/")[0] in PROJECT_PACKAGES]


def _py_files(rel: str) -> set[str]:
    """The modules a dep covers; .dvcignore leaves out bytecode and __main__.py (never imported)."""
    p = ROOT / rel
    if p.is_file():
        return {rel} if p.suffix == ".py" else set()
    return {
        f.relative_to(ROOT).as_posix()
        for f in p.rglob("*.py")
        if "__pycache__" not in f.parts and f.name != "__main__.py"
    }


def test_dvcignore_leaves_out_what_no_stage_imports_and_how_a_run_executed():
    ignored = {line.strip() for line in (ROOT / ".dvcignore").read_text().splitlines()}
    assert {"__pycache__/", "*.pyc", "__main__.py"} <= ignored
    assert "/outputs/*/*/run.json" in ignored  # execution details never reach a DVC hash


def test_no_dep_is_an_empty_file():
    """DVC warns "'<file>' is empty." for every stage and every run that lists one (a package's bare
    __init__.py): each module a stage imports says what it is in a docstring."""
    empty = sorted(
        {
            d
            for st in _stages().values()
            for d in st["deps"]
            if (ROOT / d).is_file() and not (ROOT / d).stat().st_size
        }
    )
    assert empty == []


@pytest.mark.parametrize("name", sorted(_stages()))
def test_stage_deps_are_exactly_the_modules_it_imports(name):
    stage = _stages()[name]
    script = _script(name)
    imported = import_closure(ROOT, f"stages.{script}")
    assert f"stages/{script}.py" in imported
    deps = _code_deps(stage)
    missing_paths = [d for d in deps if not (ROOT / d).exists()]
    assert not missing_paths, f"{name}: deps that do not exist: {missing_paths}"
    # a folder dep holding no module is data the stage reads (the shipped model), not an import
    declared = set().union(*(_py_files(d) for d in deps))
    assert imported - declared == set(), (
        f"{name}: imports not in dvc.yaml deps: {sorted(imported - declared)}"
    )
    assert declared - imported == set(), (
        f"{name}: dvc.yaml deps that the stage never imports: {sorted(declared - imported)}"
    )


def test_data_files_beside_imported_modules_are_deps():
    """Templates or tables shipped inside an imported subpackage are read by it: they must rerun the stage."""
    for name, stage in _stages().items():
        imported = import_closure(ROOT, f"stages.{_script(name)}")
        packages = {Path(f).parent for f in imported if f.endswith("__init__.py") and len(Path(f).parts) > 2}
        deps = [ROOT / d for d in _code_deps(stage)]
        for pkg in packages:
            for f in (ROOT / pkg).rglob("*"):
                if not f.is_file() or f.suffix in (".py", ".pyc") or "__pycache__" in f.parts:
                    continue
                assert any(f == d or d in f.parents for d in deps), f"{name}: {f.relative_to(ROOT)} is no dep"


def test_both_chains_run_every_stage_on_their_own_params_file():
    chains = {"dvc": "params.yaml", "dvc_learned": "params_learned.yaml"}
    assert sorted(_stages()) == sorted(f"{s}@{c}" for s in STAGES for c in chains)
    for name, stage in _stages().items():
        chain = name.split("@")[1]
        assert list(stage["params"]) == [chains[chain]] and stage["outs"] == [
            f"outputs/{_script(name)}/{chain}"
        ]


@pytest.mark.parametrize("name", sorted(_stages()))
def test_stage_params_are_the_keys_its_outputs_depend_on(name):
    """dvc.yaml's params are pipeline.runkeys' table: what names run keys, keys the record and is
    checked against upstream folders (lineage); `patch.size` beside `patch` for DVC's run-cache."""
    (keys,) = _stages()[name]["params"].values()
    assert [k for k in keys if k != "patch.size"] == list(key_sections(_script(name)))
    assert ("patch.size" in keys) == ("patch" in keys)


def test_the_walk_follows_relative_and_function_level_imports(tmp_path):
    pkg = tmp_path / "pipeline"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .a import f\n")
    (pkg / "sub" / "a.py").write_text("def f():\n    from ..b import g\n    import numpy\n")
    (pkg / "b.py").write_text("import os\n")
    (pkg / "unused.py").write_text("")
    assert import_closure(tmp_path, "pipeline.sub") == {
        "pipeline/__init__.py",
        "pipeline/sub/__init__.py",
        "pipeline/sub/a.py",
        "pipeline/b.py",
    }


def _dvc(args: list[str], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    env["DVC_NO_ANALYTICS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"dvc {' '.join(args)}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc.stdout


def _changed_code(status: dict) -> dict[str, list[str]]:
    """Per stage, the changed deps and params that are not stage outputs (absent from a fresh clone)."""
    out: dict[str, list[str]] = {}
    for stage, entries in status.items():
        changed = []
        for entry in entries:
            if not isinstance(entry, dict):
                changed.append(str(entry))  # e.g. "changed command"
                continue
            for path, what in (entry.get("changed deps") or {}).items():
                if not path.startswith("outputs/"):
                    changed.append(f"{path}: {what}")
        if changed:
            out[stage] = changed
    return out


def test_dvc_lock_matches_the_tree():
    """dvc.lock's hashes of code and params equal the tree's (DVC's own hashing, `dvc status`)."""
    status = json.loads(_dvc(["status", "--json"], ROOT) or "{}")
    stale = {
        name: changed[:3] + ["..."] * (len(changed) > 3) for name, changed in _changed_code(status).items()
    }
    assert not stale, (
        f"dvc.lock is stale for {stale}; regenerate it with `dvc repro` (or `dvc commit -f` when the "
        "outputs are current) and commit dvc.lock"
    )


def test_editing_the_jacobian_loop_reruns_exactly_the_jacobian_stages(tmp_path):
    """In a copy of the project whose dvc.lock is freshly committed, touching pipeline/jacobian/loop.py
    leaves every stage up to date except the two jacobian stages (analysis reads their outputs only)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for d in ("pipeline", "stages"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=ignore)
    for f in ("dvc.yaml", "params.yaml", "params_learned.yaml", ".dvcignore"):
        shutil.copy(ROOT / f, tmp_path / f)
    _dvc(["init", "--no-scm", "-q"], tmp_path)
    for stage in _stages(tmp_path).values():  # stand-in outputs: the graph, not the numbers, is under test
        for out in stage["outs"]:
            (tmp_path / out).mkdir(parents=True, exist_ok=True)
            (tmp_path / out / "placeholder.txt").write_text(out)
    (tmp_path / "outputs/covariance/dvc/gaussian_fit.sha256").write_text("none\n")
    _dvc(["commit", "-f", "-q"], tmp_path)
    assert json.loads(_dvc(["status", "--json"], tmp_path) or "{}") == {}
    loop = tmp_path / "pipeline" / "jacobian" / "loop.py"
    loop.write_text(loop.read_text() + "\n# an edit\n")
    status = json.loads(_dvc(["status", "--json"], tmp_path) or "{}")
    assert sorted(status) == ["jacobian@dvc", "jacobian@dvc_learned"], status
    for name in status:
        assert _changed_code(status)[name] == ["pipeline/jacobian: modified"], status
