"""What the subcommands share: argument types, the exit code of bad input, the progress bar,
the printout of a written trace. ``cli.main`` and every ``*_cmd`` module import it; it imports
none of them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


def path_arg(text: str) -> Path:
    """argparse type of a path argument: an empty one is a usage error, not the current
    directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return Path(text)


def word_arg(text: str) -> str:
    """argparse type of a name argument (a preset, a dataflow): not empty."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a name, got an empty string")
    return text


def add_allow_huge(p: argparse.ArgumentParser) -> None:
    """The flag that confirms a run estimated over an hour of CPU or the memory cap
    (``simulator.budget``, docs/limits.md)."""
    p.add_argument("--allow-huge", action="store_true", dest="allow_huge",
                   help="run even when the up-front estimate is over an hour of CPU or "
                        "2 GiB of memory (without it such a run is refused before it "
                        "starts, with the estimate)")


class Progress:
    """A one-line progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()

    def __call__(self, done: int, total: int, what: str) -> None:
        if not self.enabled:
            return
        width = 30
        fill = int(width * done / max(total, 1))
        sys.stderr.write(f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] "
                         f"{done}/{total} {what[:30]:<30}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def print_trace_summary(path: Path) -> None:
    from traces.format import Trace
    from traces.summary import trace_summary

    trace = Trace(path)
    s = trace_summary(trace, first_step_only=True)
    m = trace.manifest
    print(f"trace written to {path}")
    print(f"  model {m.model}, method {m.method}, {len(m.layers)} layers, {len(trace)} step(s), "
          f"batch {m.batch_size}, {size(s['bytes'])} on disk")
    for phase, roles in s["density"].items():
        parts = ", ".join(f"{role} {d:.4f}" for role, d in roles.items())
        print(f"  {phase:<10} density: {parts}")


def size(nbytes: float) -> str:
    """A file size a person reads: ``18.3 kB``, ``4.2 MB``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} B"
