"""A resolved config checked against the schema after composition (what `+key=` and params_file can add),
and one line for OmegaConf's type and key errors, from composition or from a merge."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.errors import ConfigError, first_line

from .nodes import (
    GROUPS,
    PRIMARY,
    SHAPE_KEYS,
    Analysis,
    Covariance,
    Points,
    Proxy,
    StageConfig,
    TrainEntryConfig,
    Trajectories,
    names,
    show,
)
from .ranges import check_ranges

# ----------------------------------------------------------------------------------------------------
# typing a plain config (after composition: `+key=` additions, params_file sections)


def shape_of(group: str, node: Mapping[str, Any]) -> type:
    """The dataclass a group's node must match (by its shape key for a group of several shapes)."""
    shapes = GROUPS[group]
    if group not in SHAPE_KEYS or not isinstance(node, Mapping):  # not a mapping: typed_node says so
        return next(iter(shapes.values()))
    key, by_value = SHAPE_KEYS[group]
    value = node.get(key)
    if value not in by_value:
        raise ConfigError(
            f"{group}.{key}={show(value)} is not a {group} kind this project knows — use one of "
            f"{', '.join(by_value)} (or pick an option: {group}=<option>)"
        )
    return shapes[by_value[value]]


def typed_node(cls: type, node: Any, key: str = "", base: DictConfig | None = None) -> DictConfig:
    """``node`` merged over ``base`` (default: the bare schema ``cls``); an unknown key or a wrong type is refused."""
    if not isinstance(node, (Mapping, DictConfig)):
        raise ConfigError(
            f"{key or 'the config'}={show(node)} is not a mapping — give {key or 'it'} as key: value pairs"
        )
    try:
        return OmegaConf.merge(OmegaConf.structured(cls) if base is None else base, node)
    except OmegaConfBaseException as exc:
        raise ConfigError(explain(exc, prefix=key) or f"{key}: {first_line(exc)} — check conf/") from None


def typed_config(plain: Mapping[str, Any]) -> DictConfig:
    """The resolved config ``plain`` checked against its schema: every node typed, nothing unknown, nothing missing."""
    primary = TrainEntryConfig if "train" in plain else StageConfig
    nodes = {g: typed_node(shape_of(g, plain[g] or {}), plain[g], g) for g in GROUPS if g in plain}
    root = typed_node(primary, {k: v for k, v in plain.items() if k not in nodes})
    for group, node in nodes.items():
        root[group] = node
    check_complete(root)
    return root


def checked_node(group: str, node: Any) -> dict[str, Any]:
    """One group's node checked on its own (its kind's keys and types, every value set, ranges) as a plain dict."""
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)
    typed = typed_node(shape_of(group, node), node, group)
    check_complete(typed, prefix=f"{group}.")
    out = plain(typed)
    check_ranges({group: out})
    return out


def check_complete(cfg: DictConfig, prefix: str = "", context: str = "") -> None:
    """Refuse a key without a value (a conf/ file, or a params_file section, that does not set a key its schema has)."""
    missing = [prefix + k for k in sorted(OmegaConf.missing_keys(cfg))]
    if missing:
        others = (
            f" (nor {', '.join(missing[1:4])}{', ...' if len(missing) > 4 else ''})" if missing[1:] else ""
        )
        raise ConfigError(
            f"{context}{missing[0]} has no value{others} — set it (every key of a node needs a value; "
            "conf/ shows each option's keys)"
        )


def plain(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------
# one line for a composition error or a failed merge: the key, its value, what it must be


def _search(pattern: str, text: str) -> str | None:
    m = re.search(pattern, text, re.MULTILINE)
    return m.group(1) if m else None


def _schema_named(name: str) -> type | None:
    nodes = [*PRIMARY.values(), Covariance, Trajectories, Points, Proxy, Analysis]
    nodes += [cls for shapes in GROUPS.values() for cls in shapes.values()]
    return next((cls for cls in nodes if cls.__name__ == name), None)


def _unknown_key(key: str, schema: type | None) -> str:
    """``unknown key dataset.versoin — did you mean dataset.version? (the keys of dataset: ...)``."""
    node, _, leaf = key.rpartition(".")
    valid = names(schema) if schema else []
    close = difflib.get_close_matches(leaf, valid, n=1)
    hint = f"did you mean {(node + '.') if node else ''}{close[0]}? " if close else "check its spelling "
    if node in SHAPE_KEYS and not close:
        shape_key, by_value = SHAPE_KEYS[node]
        owners = [v for v, n in by_value.items() if leaf in names(GROUPS[node][n])]
        if owners:
            hint = f"{key} exists only where {node}.{shape_key} is {' or '.join(owners)} (pick one: {node}=<option>) "
    if key == "local":  # conf/local/default.yaml without its package line
        hint = "start conf/local/default.yaml with the line `# @package _global_` "
    return (
        f"unknown key {key} — {hint}(the keys of {node or 'the config'}: {', '.join(valid) or 'see conf/'})"
    )


_KINDS = {
    "Integer": "an integer",
    "Int": "an integer",
    "Float": "a number",
    "Boolean": "true or false",
    "Bool": "true or false",
    "String": "a string",
    "Str": "a string",
}


def explain(exc: BaseException, prefix: str = "") -> str | None:
    """``"<key>=<value> ... — <fix>"`` for Hydra's composition errors and OmegaConf's type/key errors.

    ``exc`` is a ConfigCompositionException (its cause the OmegaConf error) or an OmegaConf error from a
    merge of a node at ``prefix``. None for anything else.
    """
    cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else None
    inner = cause or exc
    if not isinstance(inner, OmegaConfBaseException) and "full_key:" not in str(exc):
        return None
    text, detail = str(exc), str(inner)
    key = getattr(inner, "full_key", None) or _search(r"full_key: (\S+)", text) or ""
    key = ".".join(k for k in (prefix, key) if k)
    override = _search(r"Error merging override (\S+)", text) or _search(
        r"Could not override '([^']+)'", text
    )
    origin = _search(r"^In '([^']+)'", text)
    where = f" (in conf/{origin}.yaml)" if origin else ""
    if m := re.search(r"Value '(.*)' of type '\w+' could not be converted to (\w+)", detail):
        want = _KINDS.get(m[2], m[2])
        shown = override or f"{key}={m[1]}"
        return f"{shown}{where}: {m[1]!r} is not {want} — set {key} to {want}"
    if m := re.search(r"Value '(.*)' is not a valid bool", detail):
        return f"{override or key + '=' + m[1]}{where} is not true or false — set {key} to true or false"
    if m := re.search(r"Key '([^']+)' not in '(\w+)'", detail):
        if not key.endswith(m[1]):
            key = ".".join(k for k in (key, m[1]) if k)
        return _unknown_key(key, _schema_named(m[2])) + where
    if m := re.search(r"Incompatible value '(.*)' for field of type '(\w+)'", detail):
        return f"{key}={m[1]}{where} is not {_KINDS.get(m[2].capitalize(), 'a ' + m[2])} — set {key} to one"
    if m := re.search(r"Invalid type assigned: (\w+) is not a subclass of (\w+)", detail):
        return f"{key or 'a node'}{where} is a {m[1]}, not a mapping — give it as key: value pairs"
    if re.search(r"is not a ListConfig, list or tuple|Cannot merge DictConfig with ListConfig", detail):
        return f"{override or key}{where} is not a list — give {key} as a list: {key}=[a,b]"
    if m := re.search(r"Cannot convert '(\w+)' to string", detail):
        return f"{override or key}{where} is a {m[1]}, not one value — give {key} a single string"
    if "is not Optional" in detail:
        return f"{key}=null{where} is not allowed here — set {key} to a value"
    if "does not support deletion" in detail:
        return f"{override or key} deletes a key the config needs — set {key} to another value instead"
    if "Missing mandatory value" in detail:
        return f"{key} has no value{where} — set it"
    return None
