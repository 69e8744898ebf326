"""Atomic, deterministic file output shared by every stage (the output contract: temp name, then rename)."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import socket
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError, reading

# A fixed timestamp makes .npz bytes depend only on the arrays, so DVC sees an unchanged
# file when a stage reruns and produces the same numbers (downstream stages are skipped).
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (os.umask is process-wide)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes to ``path`` atomically (temp file in the same folder, then rename)."""
    _replace_atomically(data, Path(path))


def _replace_atomically(data: bytes, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; outputs are ordinary files, readable like any other.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Write arrays to an .npz file atomically, with bytes that depend only on the arrays."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            arr_buf = io.BytesIO()
            np.lib.format.write_array(arr_buf, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, arr_buf.getvalue())
    _replace_atomically(buf.getvalue(), Path(path))


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read every array of an .npz file into memory (no pickles)."""
    with reading(path, "delete it (or its folder) and rerun the stage that wrote it"):
        with np.load(Path(path), allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


def write_text(path: str | Path, text: str) -> None:
    _replace_atomically(text.encode("utf-8"), Path(path))


def write_json(path: str | Path, obj: object) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


SEAL_KEY = "sealed_sha256"


def write_sealed_json(path: str | Path, payload: Mapping[str, object]) -> None:
    """A resumable unit: its JSON with the sha256 of that JSON inside, so an edited unit is seen on resume."""
    text = json.dumps(dict(payload))
    write_text(path, json.dumps({**payload, SEAL_KEY: hashlib.sha256(text.encode()).hexdigest()}))


def read_sealed_json(path: str | Path) -> dict | None:
    """A unit written by `write_sealed_json`, or None when it is absent, unreadable or no longer matches its seal."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    seal = data.pop(SEAL_KEY, None)
    return data if seal == hashlib.sha256(json.dumps(data).encode()).hexdigest() else None


def write_csv(
    path: str | Path,
    rows: Sequence[Mapping[str, object]],
    columns: Sequence[str] | None = None,
) -> None:
    """Write rows (dicts) as a CSV with a header; floats keep full precision (repr)."""
    if columns is None:
        columns = list(rows[0].keys()) if rows else []
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(row.get(k, "")) for k in columns})
    write_text(path, buf.getvalue())


def _csv_cell(v: object) -> object:
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, np.integer):
        return int(v)
    return v


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def remove_path(path: str | Path) -> None:
    """Remove a file, link or folder tree if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_dir(final: str | Path, scratch: str | Path | None = None) -> Iterator[Path]:
    """Yield a scratch folder beside ``final``; on success it replaces ``final`` in one rename.

    On any error the scratch folder is removed, so a failed run never leaves a half-written
    output folder behind (an earlier complete ``final`` stays untouched). ``scratch``: a fixed
    scratch path (the stage runner's, which holds the folder's lock); default a fresh temp name.
    The caller decides whether ``final`` may be replaced at all.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if scratch is None:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    else:
        tmp = Path(scratch)
        remove_path(tmp)
        tmp.mkdir()
    # mkdtemp creates 0700; an output folder gets the user's umask like any other folder
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists() or final.is_symlink():
        old = tmp.with_name(f"{tmp.name}.old")
        remove_path(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        remove_path(old)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_sha256(folder: str | Path, exclude: Sequence[str] = ()) -> dict[str, str]:
    """{relative posix path: sha256} of every regular file under ``folder``, sorted (``exclude``: top-level names)."""
    folder = Path(folder)
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if rel in exclude or not path.is_file():
            continue
        out[rel] = sha256_file(path)
    return out


def digest_of(obj: object) -> str:
    """Hex sha256 of a JSON-able object in canonical form (sorted keys, no spaces)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class FolderBusyError(PipelineError):
    """Another process holds the writer lock of an output folder."""


def _lock_holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        if info:
            return f"host {info.get('host')}, pid {info.get('pid')}, since {info.get('since')}"
    return "holder unknown"


def _try_flock(fd: int) -> bool:
    try:
        import fcntl  # POSIX only: without it there is no OS lock, handled below
    except ImportError:  # not POSIX: no OS lock to take (the project's targets are Linux and SLURM)
        return True

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def writer_lock(lock_path: str | Path, what: str) -> Iterator[None]:
    """Hold the OS lock (flock) on ``lock_path`` while writing ``what``; a second writer is refused.

    The lock file records who holds it (host, pid, start), named in the refusal. The kernel frees
    the lock when the process ends, however it ends, so a killed run never leaves a stale lock. A
    finished holder removes the file while still holding it; a writer that locked the removed file
    meanwhile sees that the path no longer names its file and opens it again, so the one-writer rule
    holds and a refused or finished run leaves no lock file behind.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        if not _try_flock(fd):
            holder = _lock_holder(fd)
            os.close(fd)
            raise FolderBusyError(
                f"{what} is being written by another run ({holder}) — wait for that run to finish, "
                "or give this one another run_key"
            )
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)  # closing the descriptor releases the flock


def lock_is_free(lock_path: str | Path) -> bool:
    """Whether no process holds the writer lock at ``lock_path`` (a missing lock file is free)."""
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        return _try_flock(fd)
    finally:
        os.close(fd)
