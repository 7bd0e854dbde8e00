"""The strict YAML reader of architecture and sweep files.

``StrictLoader`` is PyYAML's SafeLoader that refuses a key written twice in one mapping and reads
numbers as YAML 1.2 does (``1e9`` and ``2.5e-3`` are numbers, ``010`` is ten, an unquoted ``2:4``
is text, not the base-60 integer 124). ``describe`` names a value in an error message.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping
from typing import Any

import yaml

MAX_FILE_BYTES = 1 << 20  # an architecture or sweep file is a few kB


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode) -> dict:
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
            continue
        if key_node.value in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
            )
        seen.add(key_node.value)
    return loader.construct_mapping(node, deep=True)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

# Numbers as YAML 1.2 reads them (PyYAML follows YAML 1.1): ``1e9`` and ``2.5e-3`` are floats
# (1.1 needs ``1.0e+9``), and ``2:4`` is text, not the base-60 integer 124.
_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_implicit_resolver(_FLOAT, re.compile(
    r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))
StrictLoader.add_implicit_resolver(_INT, re.compile(
    r"^(?:[-+]?0b[0-1_]+|[-+]?0x[0-9a-fA-F_]+|[-+]?[0-9][0-9_]*)$"), list("-+0123456789"))


def _construct_int(loader: StrictLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node).replace("_", "")
    sign, digits = (-1, text[1:]) if text[0] == "-" else (1, text.lstrip("+"))
    base = {"0b": 2, "0x": 16}.get(digits[:2], 10)
    return sign * int(digits[2:] if base != 10 else digits, base)  # 010 is ten, as in YAML 1.2


StrictLoader.add_constructor(_INT, _construct_int)


def describe(value: Any) -> str:
    """How a value read from a file reads in an error message ("the string '12'")."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()} (booleans are not numbers)"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, Mapping):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, (list, tuple)):
        return "a list" if value else "an empty list"
    if isinstance(value, numbers.Number):
        return str(value)
    return f"a {type(value).__name__}"
