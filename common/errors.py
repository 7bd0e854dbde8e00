"""Errors for bad user input.

Every input a user writes is checked at the boundary; a problem raises one of these with a message
that names the file, the field and what was expected. The CLI prints ``str(err)`` on one line and
exits with code 2; nothing else is printed, and no output is left half-written.
"""

from __future__ import annotations


class InputError(ValueError):
    """A user-supplied file, flag or value is not what it should be.

    ``source`` is the file (or flag) at fault, ``field`` the key inside it, ``reason`` what was
    expected. ``str(err)`` joins them into one line.
    """

    def __init__(self, source: str | None, field: str | None, reason: str) -> None:
        self.source = source
        self.field = field
        self.reason = reason
        super().__init__(self._line())

    def _line(self) -> str:
        where = ": ".join(str(p) for p in (self.source, self.field) if p)
        return _one_line(f"{where}: {self.reason}" if where else self.reason)


def _one_line(text: str) -> str:
    """``text`` with every character that is not printable (a newline, a control character,
    a Unicode line separator: a user's file name or value may hold any) written as its escape,
    so that the message is one line and cannot drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class TraceError(InputError):
    """A trace directory, manifest or step file is malformed."""


class TopologyError(InputError):
    """A SCALE-Sim topology CSV is malformed."""


class ConfigError(InputError):
    """A sparsity config, model name or other option is invalid."""
