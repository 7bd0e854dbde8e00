"""Write an output directory under a temporary name and rename it into place when complete."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from common.errors import InputError


def _absolute(p: str | os.PathLike) -> Path:
    """``p`` made absolute with ``..`` and ``.`` removed (symbolic links are kept)."""
    return Path(os.path.abspath(p))


def check_output_dir(out: str | os.PathLike, force: bool, flag: str = "-o",
                     inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse an output path that exists and is not an empty directory (unless ``force``), that
    is or contains the current directory, or that is or contains one of ``inputs`` (``--force``
    would delete it)."""
    out = Path(out)
    target = _absolute(out)
    here = _absolute(os.getcwd())
    if target == here or target in here.parents:
        raise InputError(flag, None, f"{out} is (or contains) the current directory; name a "
                                     "directory to create")
    for src in inputs:
        s = _absolute(src)
        if s == target or target in s.parents:
            raise InputError(flag, None, f"{out} is (or contains) the input {src}: the output "
                                         "would replace it; choose another directory")
    if out.exists() and not out.is_dir():
        raise InputError(flag, None, f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(flag, None, f"{out} exists and is not empty; choose another directory "
                                     "or pass --force to replace it")
    ancestor = target.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(flag, None, f"{ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK):
        raise InputError(flag, None, f"directory {ancestor} is not writable")


def pid_alive(pid: int) -> bool:
    """Whether a process runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale(out: Path) -> None:
    """Remove ``.NAME.partial-PID`` / ``.NAME.old-PID`` siblings of ``out`` left by a process
    that was killed (its PID no longer runs)."""
    if not out.parent.is_dir():
        return
    for kind in ("partial", "old"):
        for p in out.parent.glob(f".{out.name}.{kind}-*"):
            pid = p.name.rsplit("-", 1)[1]
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)


@contextmanager
def atomic_output_dir(out: str | os.PathLike, force: bool = False, flag: str = "-o",
                      inputs: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary sibling of ``out`` to fill; on success it replaces ``out``.

    On any exception (or SIGTERM, which the command line turns into one) the temporary
    directory is removed and ``out`` is left as it was.
    """
    shown = out
    check_output_dir(out, force, flag, inputs)
    out = _absolute(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out)
        tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as err:
        raise InputError(flag, None, f"cannot create {shown}: {err.strerror or err}") from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
    except OSError as err:
        if old is not None and not out.exists():
            os.replace(old, out)  # put the previous output back
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(flag, None, f"cannot replace {shown}: {err.strerror or err}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
