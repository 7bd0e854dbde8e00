"""Reading JSON a user (or a damaged file) hands us: bounded in depth and in integer size.

``json.loads`` recurses once per nesting level and raises ``RecursionError`` a few hundred
levels down, and refuses an integer of more than 4 300 digits with a bare ``ValueError``;
``load_json`` turns both, and every other decoding problem, into one ``InputError`` line, and
refuses a document nested deeper than ``MAX_DEPTH`` (the code that walks it recurses too).
"""

from __future__ import annotations

import json
from typing import Any

from common.errors import InputError

MAX_DEPTH = 64  # levels of nested objects and lists (a manifest or step index nests 5)


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deeply ``value`` nests dicts and lists (a scalar is 0), counted without recursion;
    stops counting past ``limit``."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            kids = v.values()
        elif isinstance(v, list):
            kids = v
        else:
            continue
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        stack.extend((k, d + 1) for k in kids if isinstance(k, (dict, list)))
    return deepest


def load_json(
    data: bytes | str, source: str, field: str | None = None, error: type[InputError] = InputError
) -> Any:
    """The decoded JSON of ``data`` (UTF-8 bytes or text), or ``error(source, field, ...)``
    naming what is wrong on one line."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(text)
    except UnicodeDecodeError as err:
        raise error(source, field, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise error(
            source, field, f"not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
        ) from None
    except RecursionError:
        raise error(
            source, field, f"not readable JSON: nested deeper than {MAX_DEPTH} levels (the limit)"
        ) from None
    except ValueError as err:  # an integer of more than 4300 digits
        raise error(source, field, f"not readable JSON: {' '.join(str(err).split())}") from None
    if depth(value) > MAX_DEPTH:
        raise error(source, field, f"nested deeper than {MAX_DEPTH} levels (the limit)")
    return value
