"""Config preparation, shared by every stage: resolve the composed config, check it against the schema
(pipeline.schema: keys, types, ranges), apply ``params_file``, and check where the run will write and track —
all before any work starts. Each refusal is one line naming the key and the fix."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline import schema
from pipeline.errors import ConfigError, PipelineError
from pipeline.runkeys import check_run_key
from pipeline.tracking import check_reachable, check_store, default_tracking_uri

# Keys a params file (dvc.yaml's params.yaml) never sets: they choose where and how a run executes, not
# what it computes, and dvc.yaml sets them on the command line.
_RUNTIME_KEYS = frozenset({"run_key", "params_file", "force", "progress"})


def validate_config(cfg: Mapping[str, Any]) -> None:
    """Refuse configs that cannot work, naming the key and the fix (before any work starts)."""
    if "train" in cfg:  # training checks what it reads, not the measurement keys a preset gave it
        cfg = {k: v for k, v in cfg.items() if k not in schema.CARRIED_BY_TRAIN}
    schema.check_ranges(cfg)
    if cfg.get("run_key") is not None and cfg.get("run_key") != "":
        check_run_key(cfg["run_key"])


def prepare_config(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Resolve the composed config to a plain dict, check it against the schema, apply params_file, validate."""
    overrides, choices = _command_line(cfg)
    resolved = _resolved(cfg)
    typed = schema.typed_config(resolved)
    if resolved.get("params_file"):
        typed = apply_params_file(typed, str(resolved["params_file"]), overrides, choices)
    out = schema.plain(typed)
    if "train" in out:
        out = {k: v for k, v in out.items() if not (k in schema.CARRIED_BY_TRAIN and v is None)}
    validate_config(out)
    preflight(out)
    if out.get("torch_threads"):
        # torch only when torch_threads is set: preparing a config stays torch-free
        import torch

        torch.set_num_threads(int(out["torch_threads"]))
    return out


def _resolved(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The config without Hydra's own node, interpolations resolved (that node only resolves inside a job)."""
    if isinstance(cfg, DictConfig):
        return {
            k: (OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k])
            for k in cfg
            if k != "hydra"
        }
    return {k: v for k, v in dict(cfg).items() if k != "hydra"}


def _command_line(cfg: DictConfig | Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The overrides this config was composed with and the group choices, where Hydra recorded them.

    From the config's own hydra node (compose(return_hydra_config=True), a sweep callback's config) or
    else from the running Hydra job; ([], {}) for a config composed without that record.
    """
    node = cfg.get("hydra")
    if node is None:
        if not HydraConfig.initialized():
            return [], {}
        node = HydraConfig.get()
    node = node if OmegaConf.is_config(node) else OmegaConf.create(node)
    overrides = OmegaConf.select(node, "overrides.task", default=None) or []
    choices = OmegaConf.select(node, "runtime.choices", default=None) or {}
    return list(overrides), dict(choices)


def _load_params_file(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"params_file={path} does not exist — run from the project root (or fix the path)")
    try:
        loaded = OmegaConf.to_container(OmegaConf.load(file), resolve=True)
    except Exception as e:  # yaml's ParserError/ScannerError, OmegaConf's errors
        raise ConfigError(
            f"params_file={path} is not valid YAML ({type(e).__name__}) — fix the file "
            "(or regenerate params.yaml: python -m stages.params)"
        ) from e
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"params_file={path} holds a {type(loaded).__name__}, not a mapping of config keys — give it "
            "key: value sections like params.yaml (regenerate it: python -m stages.params)"
        )
    return loaded


def apply_params_file(
    typed: DictConfig, path: str, overrides: list[str] | None = None, choices: Mapping[str, Any] | None = None
) -> DictConfig:
    """``typed`` with params_file's values merged in, checked like the command line; the command line wins.

    A section merges key by key (a file with only ``patch: {size: 8}`` changes only patch.size); a group
    section that names another kind of its group (dataset.name, model.kind, schedule.kind, sampler.spacing)
    replaces that group and must then give all its keys. Unknown keys and wrong types are refused. The
    run-time keys (run_key, params_file, force, progress) are never taken from the file. Every override on
    the command line applies over the file: key=value sets that key, a group choice (tracking=off) that
    group's whole node; a preset (experiment=...) beside params_file is refused (see _override_keys).
    """
    keys = _override_keys(path, overrides or [], choices or {})
    loaded = {k: v for k, v in _load_params_file(path).items() if k not in _RUNTIME_KEYS and k != "hydra"}
    merged = typed.copy()
    for key, value in loaded.items():
        if key in merged and OmegaConf.is_dict(merged[key]) and not isinstance(value, Mapping):
            raise ConfigError(
                f"params_file={path}: {key} is a section of the config, the file gives it {value!r} — "
                f"give {key} as a mapping of its keys (e.g. `{key}:` then its keys indented below)"
            )
    for group in [g for g in schema.GROUPS if g in loaded and g in merged]:
        section = loaded[group]
        current = OmegaConf.to_container(merged[group])
        kind = schema.shape_of(group, {**current, **section})
        if kind is not OmegaConf.get_type(merged[group]):
            node = schema.typed_node(kind, section, group)
            context = f"params_file={path} changes the kind of {group}, so its section must give every key: "
            schema.check_complete(node, prefix=f"{group}.", context=context)
            merged[group] = node
            del loaded[group]
    try:
        merged = OmegaConf.merge(merged, loaded)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"params_file={path}: {schema.explain(exc) or exc}") from None
    for key in keys:
        OmegaConf.update(merged, key, OmegaConf.select(typed, key), merge=False)
    return merged


def _override_keys(path: str, overrides: list[str], choices: Mapping[str, Any]) -> list[str]:
    """The config keys the command line sets (a group choice: that group's whole node), which win over the file.

    A choice of a group that sets keys all over the config (experiment, local) and a deletion are refused
    beside params_file: which of the file's values they should replace is not defined.
    """
    if not overrides:
        return []
    keys = []
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.key_or_group
        if key == "hydra" or key.startswith(("hydra.", "hydra/")) or key in _RUNTIME_KEYS:
            continue
        if (key in choices and key not in schema.GROUPS) or o.is_delete():
            raise ConfigError(
                f"params_file={path} with {o.input_line} on the command line: which of the file's values it "
                f"should replace is not defined — drop one of them, or write the file with it "
                f"(python -m stages.params {o.input_line}) and pass params_file alone"
            )
        keys.append(key)
    return keys


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
    """An http(s) MLflow server must answer within seconds; a SQLite store must be usable, its folder writable."""
    tcfg = cfg["tracking"]
    if not tcfg["enabled"]:
        return
    uri = str(tcfg["uri"] or default_tracking_uri())
    check_reachable(uri)
    check_store(uri)
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :].split("?", 1)[0])
        check_output_location(db.parent, "tracking.uri")


def preflight(cfg: Mapping[str, Any]) -> None:
    """Every check that needs no data and no model: output location and tracking store."""
    check_output_location(Path(cfg["paths"]["outputs"]), "paths.outputs")
    check_tracking(cfg)
