"""The contract every parser keeps on hostile input, and the strategies the fuzz tests share.

The contract (issue 17, DESIGN.md "Bad input"): an input either reads, or is refused with one
``InputError`` whose message is one line; never another exception (a traceback), never a hang,
never an output left behind by a refusal, never an input replaced.

Each test runs ``EXAMPLES`` generated inputs (``SPARSESIM_FUZZ_EXAMPLES``, default ``DEFAULT``
per test; a nightly run sets e.g. 2000). ``TALLY`` counts outcomes per parser; the session's
summary prints them (``write_summary``, from ``tests/conftest.py``, which also sums the tallies
of pytest-xdist's workers) and, with ``SPARSESIM_FUZZ_TALLY=FILE``, writes them as JSON.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from common.errors import InputError

DEFAULT = 300
EXAMPLES = int(os.environ.get("SPARSESIM_FUZZ_EXAMPLES", DEFAULT))
#: seconds one generated input may take (the issue's bar for a small file: 30 s)
HANG_SECONDS = float(os.environ.get("SPARSESIM_FUZZ_HANG_SECONDS", 30))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)

#: parser -> outcome -> count, over the session
TALLY: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
#: (peak RSS in bytes, command) of every subcommand run in a child (``test_memory``)
PEAK_RSS: list[tuple[int, str]] = []


class Hang(BaseException):
    """A generated input ran past ``HANG_SECONDS`` (a BaseException: no ``except Exception`` in
    the code under test may swallow it)."""


def _loaded(seconds: float) -> float:
    """``seconds`` of an idle machine as wall time now: stretched by how many runnable
    processes share each core (the one-minute load average), never shortened."""
    return seconds * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


@contextlib.contextmanager
def no_hang(seconds: float = HANG_SECONDS) -> Iterator[None]:
    """Raise ``Hang`` in the body after ``seconds`` of an idle machine (SIGALRM, wall time
    stretched by the load: a blocked read hangs without using the CPU; main thread only)."""
    seconds = _loaded(seconds)

    def ring(signum: int, frame: Any) -> None:
        raise Hang(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def outcome(parser: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """Run ``fn``; ("accepted", its value) or ("refused", the error). Anything else than an
    ``InputError`` with a one-line message fails the test (and is tallied as such)."""
    try:
        with no_hang():
            value = fn(*args, **kwargs)
    except InputError as err:
        text = str(err)
        if len(text.splitlines()) != 1 or not text.strip():
            TALLY[parser]["two-line error"] += 1
            raise AssertionError(f"not one line: {text!r}") from None
        TALLY[parser]["refused"] += 1
        return "refused", err
    except Hang:
        TALLY[parser]["hang"] += 1
        raise
    except BaseException:
        TALLY[parser]["traceback"] += 1
        raise
    TALLY[parser]["accepted"] += 1
    return "accepted", value


def write_summary(tr: Any) -> None:
    """Print the session's fuzz outcomes per parser on the terminal reporter ``tr`` and, with
    ``SPARSESIM_FUZZ_TALLY=FILE``, write them to FILE as JSON; nothing when no fuzz test ran."""
    if not TALLY:
        return
    tr.section(f"fuzz outcomes ({EXAMPLES} examples per test)")
    total = 0
    for parser in sorted(TALLY):
        counts = TALLY[parser]
        total += sum(counts.values())
        shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        tr.write_line(f"{parser:<16} {sum(counts.values()):>7}  {shown}")
    tr.write_line(f"{'total':<16} {total:>7}")
    if PEAK_RSS:
        rss, what = max(PEAK_RSS)
        tr.write_line(
            f"peak RSS of {len(PEAK_RSS)} subcommands in children: {rss / 2**20:.0f} MiB ({what})"
        )
    path = os.environ.get("SPARSESIM_FUZZ_TALLY")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            out = {p: dict(c) for p, c in TALLY.items()}
            if PEAK_RSS:
                out["peak_rss"] = [{"bytes": r, "command": w} for r, w in sorted(PEAK_RSS)]
            json.dump(out, f, indent=1, sort_keys=True)


# ------------------------------------------------------------------------------------------------
# values a user (or a damaged file) may write where a number, a name or a section belongs
# ------------------------------------------------------------------------------------------------
HUGE_INTS = [
    0,
    -1,
    1,
    2,
    3,
    7,
    64,
    65,
    65536,
    65537,
    100_000,
    2**24 + 1,
    2**31,
    2**32,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    10**30,
    10**308,
    10**400,
    -(2**63),
]
ODD_FLOATS = [
    0.0,
    -0.0,
    0.5,
    1.0,
    1e-300,
    5e-324,
    1e9,
    1e300,
    1.8e308,
    float("inf"),
    -float("inf"),
    float("nan"),
]
ODD_TEXT = [
    "",
    " ",
    "2:4",
    "²:⁴",
    "1:²",
    "١٢",
    "１２",
    "0x10",
    "0b11",
    "1e999",
    "-0",
    "nan",
    "inf",
    "true",
    "~",
    "os",
    "ws",
    "is",
    "\x07",
    "a\tb",
    "é",
    "名前",
    "../x",
    "/dev/null",
    "1" * 30,
    "9" * 5000,
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(HUGE_INTS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(ODD_FLOATS),
    st.text(max_size=12),
    st.sampled_from(ODD_TEXT),
)
#: values near the valid range (so that many generated files read and reach the model)
plausible = st.one_of(
    st.integers(0, 300),
    st.floats(0, 1000, allow_nan=False),
    st.sampled_from(
        [
            1,
            2,
            4,
            8,
            16,
            32,
            64,
            128,
            0.5,
            "os",
            "ws",
            "is",
            "2:4",
            "1:8",
            True,
            False,
            None,
        ]
    ),
    # fresh containers each draw: a shared ``[]``/``{}`` set at two paths of one document
    # became a cycle, and stayed mutated for the next examples
    st.builds(list),
    st.builds(dict),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)


def nested(depth: int, leaf: Any = 1, kind: str = "list") -> Any:
    """``depth`` levels of lists (or mappings) around ``leaf``."""
    for _ in range(depth):
        leaf = [leaf] if kind == "list" else {"k": leaf}
    return leaf


def yaml_bomb(levels: int, width: int) -> str:
    """A 'billion laughs' document: ``width ** levels`` values from a few hundred bytes."""
    lines = ["a0: &a0 [lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def deep_yaml(depth: int, flow: bool) -> str:
    if flow:
        return "x: " + "[" * depth + "1" + "]" * depth + "\n"
    return "".join(f"{' ' * i}k{i}:\n" for i in range(depth)) + " " * depth + "v: 1\n"


#: whole-file texts any YAML parser must survive (each with the reason it is here)
HOSTILE_YAML = st.one_of(
    st.builds(yaml_bomb, st.integers(3, 12), st.integers(2, 10)),  # alias expansion
    st.builds(deep_yaml, st.integers(50, 3000), st.booleans()),  # nesting depth
    st.sampled_from(
        [
            "x: " + "9" * 5000 + "\n",  # an integer over Python's 4300-digit limit
            "x: 1e999\n",
            "x: .nan\n",
            "x: -.inf\n",
            "x: \x07\n",
            "x: \x00\n",
            "\ufeffx: 1\n",
            "x: !!python/object:os.system ls\n",
            "x: &a [*a]\n",
            "x: *nope\n",
            "a: 1\na: 2\n",
            "<<: {a: 1}\n",
            "- 1\n- 2\n",
            "---\n---\n",
            "",
            "\n",
            "[",
            "{",
            "x: [1, 2",
            "x: '",
            "x: !!binary AAAA\n",
            "? [1]\n: 2\n",
        ]
    ),
    st.text(max_size=200),
)
