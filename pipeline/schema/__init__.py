"""The config schema: which keys each config node has and their types (dataclasses registered in Hydra's
ConfigStore, so composition itself refuses an unknown key or a wrongly typed value), and the range of every
value, checked once before any stage starts.

Values live in conf/*.yaml only; a dataclass says which keys a node has and their types (every field
MISSING). Each option file names its schema first in its defaults list (``- /schema_<group>_<shape>@_here_``),
each primary config its own (``- /schema_config@_here_``). A group with several shapes (dataset, model,
schedule, sampler) has one dataclass per shape, chosen by one key (SHAPE_KEYS).
Adding a key to a node: one line in its dataclass (nodes.py), its value in the YAML, and its range in
ranges.RANGES if it has one (docs/configuration.md).
"""

from .checks import check_complete, checked_node, explain, plain, shape_of, typed_config, typed_node
from .nodes import CARRIED_BY_TRAIN, GROUPS, PRIMARY, SHAPE_KEYS, names, register
from .ranges import POOL, RANGES, RULES, check_ranges

__all__ = [
    "CARRIED_BY_TRAIN",
    "GROUPS",
    "POOL",
    "PRIMARY",
    "RANGES",
    "RULES",
    "SHAPE_KEYS",
    "check_complete",
    "check_ranges",
    "checked_node",
    "explain",
    "names",
    "plain",
    "register",
    "shape_of",
    "typed_config",
    "typed_node",
]
