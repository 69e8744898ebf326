"""The entries beside a run folder ``<parent>/<key>`` and what a run may remove.

``.lock-<key>`` is the writer lock, ``.work-<key>/`` holds resumable units (kept across failures) and
``.partial-<key>/`` is scratch, renamed into place when the body returns. Run keys never start with a
dot and each prefix differs from the others in its first letter, so no two runs' entries collide.

A run owns only what a run of its stage made: a work folder holds ``work.json`` naming its stage,
scratch holds ``.scratch.json`` while it is written, a replaced output holds its meta.json. Anything
else (a user's file in an output folder, a hidden folder someone else made) is never removed: the
run refuses with one line naming it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline import io
from pipeline.errors import ConfigError
from pipeline.lineage import UNHASHED
from pipeline.outputs import UnreadableMetaError, read_meta

log = logging.getLogger("pifs")

WORK_RECORD = "work.json"
SCRATCH_RECORD = ".scratch.json"


def lock_path(final: Path) -> Path:
    return final.parent / f".lock-{final.name}"


def work_path(final: Path) -> Path:
    return final.parent / f".work-{final.name}"


def scratch_path(final: Path) -> Path:
    return final.parent / f".partial-{final.name}"


def _stage_in(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("stage")
    except (OSError, ValueError, AttributeError):
        return None


def made_by(entry: Path, stage: str) -> bool:
    """Whether a hidden entry beside a run folder was made by a run of ``stage`` (its record says so).
    An empty folder holds nothing anyone could lose."""
    if entry.is_symlink() or not entry.is_dir():
        return False
    if not any(entry.iterdir()):
        return True
    if stage in (_stage_in(entry / WORK_RECORD), _stage_in(entry / SCRATCH_RECORD)):
        return True
    with contextlib.suppress(UnreadableMetaError):
        return (read_meta(entry) or {}).get("stage") == stage  # an output being replaced (.old)
    return False


def _not_ours(entry: Path, stage: str, what: str) -> ConfigError:
    kind = "a file" if entry.exists() and not entry.is_dir() else "a folder no " + stage + " run made"
    return ConfigError(
        f"{entry} is {kind} where this run keeps its {what}; it is left untouched — move it away "
        "(or choose another run_key)"
    )


def claim_scratch(final: Path, stage: str) -> None:
    """Clear a killed run's scratch for ``final``, refusing an entry of that name no run of ``stage`` made."""
    scratch = scratch_path(final)
    if not scratch.exists() and not scratch.is_symlink():
        return
    if not made_by(scratch, stage):
        raise _not_ours(scratch, stage, "scratch")
    io.remove_path(scratch)


def mark_scratch(scratch: Path, stage: str) -> None:
    io.write_json(scratch / SCRATCH_RECORD, {"stage": stage})


def unmark_scratch(scratch: Path) -> None:
    (scratch / SCRATCH_RECORD).unlink(missing_ok=True)


def foreign_files(final: Path, meta: Mapping[str, Any] | None) -> list[str]:
    """Files in the output folder ``final`` that no run wrote: not among the outputs its record lists."""
    recorded = (meta or {}).get("outputs")
    if not final.is_dir() or not isinstance(recorded, dict):
        return []  # no folder, or one of an older version whose record cannot tell
    files = [rel for rel in io.tree_sha256(final, exclude=UNHASHED) if rel not in recorded]
    # a link to a folder is not hashed (nothing walks into it), and replacing the folder would delete it
    links = [
        p.relative_to(final).as_posix() for p in sorted(final.rglob("*")) if p.is_symlink() and p.is_dir()
    ]
    return files + links


def _held_unit_digest(work: Path) -> str | None:
    try:
        return json.loads((work / WORK_RECORD).read_text()).get("unit_digest")
    except (OSError, ValueError, AttributeError):
        return None


def _units(work: Path) -> list[Path]:
    return [p for p in work.rglob("*") if p.is_file() and p.name != WORK_RECORD]


def drop_unitless_work(work: Path) -> None:
    """A failed run that finished no unit leaves nothing to resume: its work folder goes with it."""
    if work.is_dir() and not _units(work):
        io.remove_path(work)


def prepare_work(work: Path, stage: str, unit_digest: str) -> None:
    """Keep the work folder's resumable units only if they were made for exactly this run's units."""
    if work.exists() or work.is_symlink():
        if not made_by(work, stage):
            raise _not_ours(work, stage, "resumable work")
        held = _held_unit_digest(work)
        if held != unit_digest and any(work.iterdir()):
            log.warning(
                "%s: discarding %d resumable file(s) in %s: they were made for another config or other "
                "inputs (unit digest %s, this run %s); units are never mixed",
                stage,
                len(_units(work)),
                work,
                held,
                unit_digest,
            )
            io.remove_path(work)
        elif _units(work):
            log.info("%s: resuming from the units in %s", stage, work)
    work.mkdir(parents=True, exist_ok=True)
    io.write_json(work / WORK_RECORD, {"stage": stage, "unit_digest": unit_digest})


@contextlib.contextmanager
def _held_if_free(lock: Path) -> Iterator[bool]:
    """Hold ``lock`` for the block when no writer holds it; yield whether it is held."""
    try:
        with io.writer_lock(lock, str(lock)):
            yield True
    except io.FolderBusyError:
        yield False


def _removable(entry: Path, prefix: str, key: str, stage: str) -> bool:
    if not made_by(entry, stage):
        return False  # someone else's: never ours to remove
    if prefix == ".partial-":
        return True  # scratch is never resumable
    units = _units(entry)
    with contextlib.suppress(UnreadableMetaError):
        meta = read_meta(entry.parent / key)
        held = _held_unit_digest(entry)
        return not units or bool(meta and held and meta.get("unit_digest") == held)
    return not units


def clean_stale(parent: Path, stage: str) -> list[Path]:
    """Remove what runs of ``stage`` left in ``parent`` and no run can use, where no writer holds the lock.

    Scratch (``.partial-<key>``, and its ``.old``) is never resumable. A work folder is removed when
    it holds no units, or when the complete output beside it was made from the same units. Entries no
    run of ``stage`` made are left alone.
    """
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for entry in sorted(parent.iterdir()):
        for prefix in (".partial-", ".work-"):
            if not entry.name.startswith(prefix):
                continue
            key = entry.name[len(prefix) :].removesuffix(".old")
            if not _removable(entry, prefix, key, stage):
                continue
            with _held_if_free(parent / f".lock-{key}") as held_lock:
                if held_lock and entry.exists():
                    io.remove_path(entry)
                    removed.append(entry)
    for path in removed:
        log.info("removed %s (left by a run that has ended)", path)
    return removed
