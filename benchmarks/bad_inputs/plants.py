"""What a user does to a project before a command: plant files, damage or hand-edit outputs, move folders
about, hold a lock, start a server. Each returns a setup step for a case."""

from __future__ import annotations

import functools
import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from benchmarks.bad_inputs.spec import Background, Plant

READY = ".harness-ready"


def run_folder(root: Path, stage: str, key: str | None = None) -> Path:
    """The completed run folder of ``stage`` (the one named ``key``, else the only one)."""
    if key is not None:
        return root / "outputs" / stage / key
    found = sorted(p.parent for p in (root / "outputs" / stage).glob("*/meta.json"))
    if len(found) != 1:
        raise AssertionError(f"expected one {stage} run folder, found {found}")
    return found[0]


def write(rel: str, data: str | bytes) -> Plant:
    """A new file of the user's (or a folder's worth of text, for params files)."""

    def fn(root: Path) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())

    return Plant(fn)


_COMPOSING = threading.Lock()


@functools.lru_cache(maxsize=1)
def _smoke_params() -> str:
    """params.yaml of experiment=smoke, composed once: Hydra's composition is one global per process, and the
    harness's worker threads plant these files at the same time."""
    from stages.params import composed_params

    with _COMPOSING:
        return composed_params(["experiment=smoke"])


def params_over_smoke(rel: str, text: str) -> Plant:
    """A params file as a user edits one: the smoke chain's composed config (what `pifs params
    experiment=smoke` writes) with ``text``'s mapping merged into it, key by key. A preset cannot stand
    beside params_file, so the smoke values travel in the file. Text that is not a mapping (a list, a
    scalar, broken YAML, nothing) is written as it is: that file is the case."""

    def fn(root: Path) -> None:
        import yaml

        try:
            edit = yaml.safe_load(text)
        except yaml.YAMLError:
            edit = None
        path = root / rel
        if not isinstance(edit, dict):
            path.write_text(text)
            return

        def merge(into: dict, over: dict) -> dict:
            for k, v in over.items():
                into[k] = (
                    merge(dict(into[k]), v) if isinstance(v, dict) and isinstance(into.get(k), dict) else v
                )
            return into

        base = yaml.safe_load(_smoke_params())
        path.write_text(yaml.safe_dump(merge(base, edit), sort_keys=False))

    return Plant(fn)


def mkdir(rel: str) -> Plant:
    return Plant(lambda root: (root / rel).mkdir(parents=True, exist_ok=True))


def beside(stage: str, name: str, data: str = "the user's notes\n", key: str | None = None) -> Plant:
    """A user's file next to the run folders of ``stage``: ``name`` may name a hidden folder/file, with
    ``{key}`` standing for the run folder's name."""

    def fn(root: Path) -> None:
        folder = run_folder(root, stage, key)
        path = folder.parent / name.format(key=folder.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data)

    return Plant(fn)


def inside(stage: str, name: str = "notes.txt", key: str | None = None) -> Plant:
    """A user's file inside a completed run folder."""

    def fn(root: Path) -> None:
        (run_folder(root, stage, key) / name).write_text("the user's notes, kept next to the results\n")

    return Plant(fn)


def damage(pattern: str, data: bytes = b"garbage", protect: bool = False) -> Plant:
    """Overwrite an existing file: a damaged output is still the pipeline's to recompute; a damaged
    store the user keeps (``protect``, a plain path) must survive the command as it is."""

    def fn(root: Path) -> None:
        found = sorted(root.glob(pattern))
        if not found:
            raise AssertionError(f"nothing matches {pattern}")
        found[0].write_bytes(data)

    return Plant(fn, protect=(pattern,) if protect else ())


def delete(pattern: str) -> Plant:
    def fn(root: Path) -> None:
        for p in sorted(root.glob(pattern))[:1]:
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    return Plant(fn)


def edit_json(pattern: str, edit: Callable[[dict], None]) -> Plant:
    """Hand-edit a JSON file (meta.json, a resumable unit) in place."""

    def fn(root: Path) -> None:
        found = sorted(root.glob(pattern))
        if not found:
            raise AssertionError(f"nothing matches {pattern}")
        data = json.loads(found[0].read_text())
        edit(data)
        found[0].write_text(json.dumps(data, indent=1))

    return Plant(fn)


def swap_folder(stage: str, source_key: str, target_key: str) -> Plant:
    """Replace one run folder by another complete run folder (a user's `mv`); the files stay the
    pipeline's own."""

    def fn(root: Path) -> None:
        parent = root / "outputs" / stage
        shutil.rmtree(parent / target_key)
        shutil.copytree(parent / source_key, parent / target_key)

    return Plant(fn, users=False)


def link_run_folder(stage: str, target: str) -> Plant:
    """The run folder is a symlink to a folder of the user's."""

    def fn(root: Path) -> None:
        folder = run_folder(root, stage)
        (root / target).mkdir(parents=True)
        (root / target / "data.txt").write_text("the user's data\n")
        shutil.rmtree(folder)
        folder.symlink_to(root / target)

    return Plant(fn)


def unit_edit(scale: float) -> Callable[[dict], None]:
    def edit(unit: dict) -> None:
        row = unit.get("global", unit)
        for key in ("kappa_pi", "kappa_lanczos"):
            if key in row:
                row[key] = float(row[key]) * scale

    return edit


def checkpoint(mutate: Callable[[Path], None]) -> Plant:
    """A copy of the shipped learned checkpoint at myckpt/, changed by ``mutate``."""

    def fn(root: Path) -> None:
        from benchmarks.bad_inputs.runner import REPO

        ck = root / "myckpt"
        shutil.copytree(REPO / "pipeline" / "assets" / "pifs_ddpm16", ck)
        mutate(ck)

    return Plant(fn)


def pngs(rel: str, n: int = 4, extra: dict[str, bytes] | None = None) -> Plant:
    """A folder of n small random PNGs (plus files by name)."""

    def fn(root: Path) -> None:
        import numpy as np
        from PIL import Image

        folder = root / rel
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(n):
            img = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(img).save(folder / f"{i:03d}.png")
        for name, data in (extra or {}).items():
            (folder / name).write_bytes(data)

    return Plant(fn)


def truncate_png(rel: str, keep: int = 60) -> Plant:
    def fn(root: Path) -> None:
        path = root / rel
        path.write_bytes(path.read_bytes()[:keep])

    return Plant(fn)


# ------------------------------------------------------------------------------------------------
# helper processes (Background steps); each writes READY with a temp name and a rename


def _ready(text: str) -> str:
    return (
        f"import os; open({READY!r} + '.tmp', 'w').write({text}); os.replace({READY!r} + '.tmp', {READY!r})"
    )


def edit_store(rel: str, edit: Callable[[Path], None]) -> Plant:
    """The user's tracking store, changed in place (truncated, another schema): it must survive as it is."""
    return Plant(lambda root: edit(root / rel), protect=(rel,))


def sqlite_locked(db: str = "mlflow.db") -> Background:
    """Another process holds an exclusive lock on the SQLite tracking store."""
    code = (
        "import sqlite3, time\n"
        f"c = sqlite3.connect({db!r}, isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE')\n"
        f"{_ready(repr('locked'))}\n"
        "time.sleep(3600)\n"
    )
    return Background(code, READY)


def http_server(status: int = 404) -> Background:
    """A web server that is not MLflow: every request answers ``status``."""
    code = (
        "import http.server, time\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def _answer(self):\n"
        f"        self.send_response({status}); self.end_headers(); self.wfile.write(b'<html>not mlflow</html>')\n"
        "    do_GET = do_POST = _answer\n"
        "    def log_message(self, *a): pass\n"
        "s = http.server.HTTPServer(('127.0.0.1', 0), H)\n"
        f"{_ready('str(s.server_address[1])')}\n"
        "s.serve_forever()\n"
    )
    return Background(code, READY)


def writer_holding(stage: str) -> Background:
    """A live run of ``stage`` holds the writer lock of its (only) run folder."""
    code = (
        "import time\n"
        "from pathlib import Path\n"
        "from pipeline import io\n"
        f"final = sorted(p.parent for p in Path('outputs/{stage}').glob('*/meta.json'))[0]\n"
        "with io.writer_lock(final.parent / ('.lock-' + final.name), str(final)):\n"
        f"    {_ready(repr('held'))}\n"
        "    time.sleep(3600)\n"
    )
    return Background(code, READY)
