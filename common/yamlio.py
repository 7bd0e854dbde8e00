"""The strict YAML reader of architecture and sweep files.

``StrictLoader`` is PyYAML's SafeLoader that refuses a key written twice in one mapping and reads
numbers as YAML 1.2 does (``1e9`` and ``2.5e-3`` are numbers, ``010`` is ten, an unquoted ``2:4``
is text, not the base-60 integer 124). It also refuses, before anything is built, a document
nested deeper than ``MAX_DEPTH``, one whose aliases expand to more than ``MAX_NODES`` values
(a "billion laughs" file of a few hundred bytes would otherwise never finish), and an integer of
more than ``MAX_INT_DIGITS`` digits. ``describe`` names a value in an error message;
``yaml_error_line`` turns any PyYAML error into one line.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping
from typing import Any

import yaml

MAX_FILE_BYTES = 1 << 20  # an architecture or sweep file is a few kB
MAX_DEPTH = 64  # levels of nested mappings and lists (a file nests 4; Python's stack ~ 500)
MAX_NODES = 100_000  # values once every alias is expanded (a file holds a few hundred)
MAX_INT_DIGITS = 4300  # Python's own limit on int <-> text (sys.get_int_max_str_digits)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last), a
    document nested deeper than ``MAX_DEPTH`` or expanding to more than ``MAX_NODES`` values."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels (the limit)",
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        node = super().compose_document()
        if node is not None:
            n = expanded_size(node)
            if n > MAX_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"its aliases expand to more than {MAX_NODES:,} values (the "
                                f"limit; a 'billion laughs' file?)", node.start_mark)
        return node


def expanded_size(node: yaml.Node, limit: int = MAX_NODES) -> int:
    """How many values ``node`` holds once every alias is written out in full (a node an alias
    names again counts again), counted without expanding: each node is sized once. A node that
    contains itself (``&a [*a]``) expands without end: more than ``limit``. Stops counting past
    ``limit``."""
    def kids(n: yaml.Node) -> list[yaml.Node]:
        if isinstance(n, yaml.MappingNode):
            return [x for pair in n.value for x in pair]
        return list(n.value) if isinstance(n, yaml.SequenceNode) else []

    sizes: dict[int, int] = {}
    entered: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:
        n, children_done = stack.pop()
        if children_done:  # a child not sized yet is an ancestor: a cycle
            sizes[id(n)] = min(limit + 1, 1 + sum(sizes.get(id(k), limit + 1) for k in kids(n)))
            continue
        if id(n) in entered:
            continue
        entered.add(id(n))
        stack.append((n, True))
        stack.extend((k, False) for k in kids(n) if id(k) not in entered)
    return sizes[id(node)]


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
    if len(digits) > MAX_INT_DIGITS:
        raise yaml.constructor.ConstructorError(
            None, None, f"an integer of {len(digits):,} digits (at most {MAX_INT_DIGITS} are "
                        "read)", node.start_mark)
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
    if isinstance(value, numbers.Integral) and abs(int(value)).bit_length() > 300:
        # str() of an int over 4300 digits raises; the size is what the reader needs
        return f"an integer of about {int(abs(int(value)).bit_length() * 0.30103) + 1:,} digits"
    if isinstance(value, numbers.Number):
        return str(value)
    return f"a {type(value).__name__}"


def float_value(value: Any) -> float | None:
    """``value`` as a float when it is a real number (not a boolean) that a float can hold,
    else None: ``float()`` of an integer beyond 1.8e308 raises OverflowError, and
    ``math.isfinite`` of one too."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def yaml_error_line(err: yaml.YAMLError) -> tuple[str | None, str]:
    """(where, what) of a PyYAML error, each on one line: ``line L, column C`` (or None) and
    the problem, with the control character or the context PyYAML puts on lines of their own
    joined in."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        what = " ".join(" ".join(str(p) for p in (err.context, err.problem) if p).split())
        return where, what or "parse error"
    if isinstance(err, yaml.reader.ReaderError):
        return (f"character {err.position + 1}",
                f"the character {err.character!r} is not allowed in YAML ({err.reason})")
    return None, " ".join(str(err).split())
