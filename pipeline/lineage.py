"""Lineage: what made an output folder, and whether a downstream stage may use it.

A stage's record (its meta.json) holds the config values its outputs depend on (the sections
pipeline.runkeys declares per stage), a content hash of every input (an upstream folder or file by
stage and run key, any other file by a portable name), its own files' hashes, and ``record_sha256``
over all of it, so that a hand edit shows. Nothing in it describes the execution (times, host,
absolute paths, run ids, versions: those are in run.json beside it), so the same config and inputs
give the same bytes on any machine and DVC can vouch for the folder.

A downstream stage uses an upstream folder only when its record is intact, its files are the ones
recorded, it was made under this run's values of every key both stages depend on, and it was made
from the same upstream outputs as the other folders this run reads (a covariance recomputed after
the jacobian ran makes that jacobian stale).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline import io
from pipeline.outputs import META, RUN, UnreadableMetaError, read_meta
from pipeline.runkeys import key_sections, plain_values

RECORD_HASH = "record_sha256"

InputSpec = Path | str | Sequence[Path]


def seal(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` with its ``record_sha256``: the hash of everything else in it."""
    body = {k: v for k, v in record.items() if k != RECORD_HASH}
    return {**body, RECORD_HASH: io.digest_of(plain_values(body))}


def record_problem(meta: Mapping[str, Any]) -> str | None:
    """None when the record is intact, else what is wrong with it (edited, or an older format)."""
    recorded = meta.get(RECORD_HASH)
    if not isinstance(recorded, str):
        return "its meta.json has no record_sha256 (written by an older version)"
    if seal(meta)[RECORD_HASH] != recorded:
        return "its meta.json was edited after the run (it no longer matches its record_sha256)"
    return None


def _meta_or_none(folder: Path) -> dict[str, Any] | None:
    try:
        return read_meta(folder)
    except UnreadableMetaError:
        return None


def portable_name(path: str | Path) -> str:
    """A path as the record keeps it: relative to the working directory (the project root under DVC)
    when it lies inside it, else its last component (an absolute path differs between machines)."""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return p.name


def _stage_of(folder: Path) -> dict[str, Any] | None:
    meta = _meta_or_none(folder) if folder.is_dir() else None
    if meta is not None and isinstance(meta.get("outputs"), dict) and meta.get("stage"):
        return meta
    return None


def input_record(value: InputSpec) -> dict[str, Any]:
    """The content hash of one input, keyed by a portable name: an upstream stage folder (its recorded
    output hashes) or a file in one (by stage and run key), another folder or file (by name), a list
    of files (by their paths below their common folder), or a plain string (e.g. a hub revision)."""
    if isinstance(value, str) and not Path(value).exists():
        return {"value": value, "sha256": io.digest_of(value)}
    if isinstance(value, (str, Path)):
        path = Path(value)
        meta = _stage_of(path)
        if meta is not None:
            return {"stage": meta["stage"], "run_key": path.name, "sha256": io.digest_of(meta["outputs"])}
        owner = _stage_of(path.parent) if path.is_file() else None
        if owner is not None and path.name in owner["outputs"]:
            return {
                "stage": owner["stage"],
                "run_key": path.parent.name,
                "file": path.name,
                "sha256": io.sha256_file(path),
            }
        if path.is_dir():
            files = io.tree_sha256(path)
            return {"name": portable_name(path), "sha256": io.digest_of(files), "files": files}
        return {"name": portable_name(path), "sha256": io.sha256_file(path)}
    paths = [Path(p) for p in value]
    root = Path(os.path.commonpath([p.absolute().parent for p in paths])) if paths else Path()
    files = {p.absolute().relative_to(root).as_posix(): io.sha256_file(p) for p in paths}
    return {"sha256": io.digest_of(files), "files": files}


def where_inputs_are(inputs: Mapping[str, InputSpec]) -> dict[str, Any]:
    """Where each input lay on this machine (for run.json: absolute paths are an execution detail)."""
    out: dict[str, Any] = {}
    for label, value in sorted(inputs.items()):
        if isinstance(value, (str, Path)):
            out[label] = str(Path(value).absolute()) if Path(value).exists() else str(value)
        else:
            out[label] = [str(Path(p).absolute()) for p in value]
    return out


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}"))
        return out
    return {prefix: value}


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def key_differences(
    stage: str, meta: Mapping[str, Any], values: Mapping[str, Any], needed_by: str
) -> list[tuple[str, Any, Any]]:
    """(key, value the upstream ``stage`` was made with, this run's value) for every key that both
    ``needed_by`` and ``stage`` depend on and that differs, in config order. ``values``: this run's
    record values of (at least) those sections (pipeline.runkeys.RunSpec.values)."""
    made = meta.get("config") or {}
    try:
        shared = [s for s in key_sections(needed_by) if s in key_sections(stage)]
    except ValueError:  # not a stage (e.g. pooling a split protocol's shards): every key of the upstream
        shared = list(key_sections(stage))
    theirs: dict[str, Any] = {}
    ours: dict[str, Any] = {}
    for s in shared:
        theirs.update(_flat(made.get(s), s))
        ours.update(_flat(values.get(s), s))
    keys = list(dict.fromkeys([*ours, *theirs]))
    return [(k, theirs.get(k), ours.get(k)) for k in keys if theirs.get(k) != ours.get(k)]


def rerun_hint(stage: str) -> str:
    return (
        f"rerun `python -m stages.{stage}` with this run's overrides (it recomputes the folder), "
        "or `dvc repro`"
    )


def lineage_problem(
    stage: str, folder: Path, meta: Mapping[str, Any], values: Mapping[str, Any], needed_by: str
) -> str | None:
    """None when ``folder`` was made under this run's values of every key both stages depend on,
    else a one-line "<what> — <fix>" naming the first differing key and both values."""
    diffs = key_differences(stage, meta, values, needed_by)
    if not diffs:
        return None
    key, theirs, ours = diffs[0]
    more = f" (and {len(diffs) - 1} more: {', '.join(d[0] for d in diffs[1:4])})" if len(diffs) > 1 else ""
    moved = ""
    if meta.get("run_key") not in (None, folder.name):
        moved = f" (a complete {stage} output of run_key={meta.get('run_key')} put in its place)"
    return (
        f"{needed_by} cannot use {folder}{moved}: it was made with {key}={_show(theirs)}, this run has "
        f"{key}={_show(ours)}{more} — {rerun_hint(stage)}"
    )


def stale_problem(folders: Mapping[str, tuple[Path, Mapping[str, Any]]], needed_by: str) -> str | None:
    """None when every folder was made from the upstream outputs this run reads now, else a one-line
    "<what> — <fix>" naming the stale folder and the upstream that changed after it was made.

    ``folders``: stage -> (folder, its verified record), the upstream folders of one run.
    """
    for stage, (folder, meta) in folders.items():
        for label, entry in sorted((meta.get("input_hashes") or {}).items()):
            upstream = (entry or {}).get("stage")
            if upstream not in folders or upstream == stage:
                continue
            up_folder, up_meta = folders[upstream]
            outputs = up_meta.get("outputs") or {}
            now = outputs.get(entry["file"]) if "file" in entry else io.digest_of(outputs)
            if now != entry.get("sha256"):
                return (
                    f"{needed_by} cannot use {folder}: it was made from other {upstream} outputs than those in "
                    f"{up_folder} now ({label}: {upstream} changed after {stage} ran) — {rerun_hint(stage)}"
                )
    return None


# Files of a run folder that its record does not hash: the record itself and the execution record.
UNHASHED = (META, RUN)
