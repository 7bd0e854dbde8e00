"""Write an output directory under a temporary name and rename it into place when complete."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from common.errors import InputError


def _absolute(p: str | os.PathLike) -> Path:
    """``p`` made absolute with ``..`` and ``.`` removed (symbolic links are kept)."""
    return Path(os.path.abspath(p))


def _resolved(p: str | os.PathLike) -> Path:
    """``p`` with every symbolic link followed (as far as the links exist)."""
    return Path(os.path.realpath(p))


def _same_or_inside(inner: str | os.PathLike, outer: str | os.PathLike) -> bool:
    """Whether ``inner`` is ``outer`` or lies inside it, by resolved path and, where both
    exist, by file identity (``os.path.samefile``: hard links, bind mounts, case-insensitive
    file systems)."""
    a, b = _resolved(inner), _resolved(outer)
    if a == b or b in a.parents:
        return True
    for candidate in (a, *a.parents):
        try:
            if os.path.samefile(candidate, b):
                return True
        except OSError:
            continue
    return False


def check_regular_file(path: str | os.PathLike, what: str = "a file",
                       error: type[InputError] = InputError) -> None:
    """Refuse a path that is not a regular file before it is opened: a FIFO or a device would
    block the reader or stream forever. A missing file is left to the reader's own message."""
    try:
        st = os.stat(path)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise error(str(path), None, f"cannot read: it is a directory, expected {what}")
    if not stat.S_ISREG(st.st_mode):
        raise error(str(path), None, f"cannot read: not a regular file (a FIFO, socket or "
                                     f"device), expected {what}")


def check_output_dir(out: str | os.PathLike, force: bool, flag: str = "-o",
                     inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse an output path that exists and is not an empty directory (unless ``force``), that
    is or contains the current directory, or that is or contains one of ``inputs`` (``--force``
    would delete it)."""
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise InputError(flag, None, f"{out} is a symbolic link to {os.readlink(out)}, which "
                                     "does not exist; name a directory, not a dangling link")
    if _same_or_inside(os.getcwd(), out):
        raise InputError(flag, None, f"{out} is (or contains) the current directory; name a "
                                     "directory to create")
    for src in inputs:
        if _same_or_inside(src, out):
            raise InputError(flag, None, f"{out} is (or contains) the input {src}: the output "
                                         "would replace it; choose another directory")
    if out.exists() and not out.is_dir():
        raise InputError(flag, None, f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(flag, None, f"{out} exists and is not empty; choose another directory "
                                     "or pass --force to replace it")
    ancestor = _absolute(out).parent
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


#: errors of a full disk or quota: the message names the file being written
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _shown_file(err: OSError, tmp: Path, shown: str | os.PathLike) -> str:
    """The file an error names, as the user will see it (inside ``shown``, not the temporary
    directory)."""
    name = err.filename
    if not name:
        return str(shown)
    try:
        return str(Path(shown) / Path(os.fspath(name)).relative_to(tmp))
    except ValueError:
        return os.fspath(name)


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
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if err.errno in NO_SPACE:
            raise InputError(flag, None, f"cannot write {_shown_file(err, tmp, shown)}: "
                                         f"{err.strerror or err}; nothing was replaced") from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        if not force and not out.is_symlink():
            # exclusive: rename(2) replaces at most an empty directory, so of two runs into one
            # new output only the first succeeds; the second is refused, not silently kept
            os.rename(tmp, out)
        else:
            if out.exists() or out.is_symlink():
                old = out.with_name(f".{out.name}.old-{os.getpid()}")
                os.replace(out, old)
            os.replace(tmp, out)
    except OSError as err:
        if old is not None and not out.exists():
            os.replace(old, out)  # put the previous output back
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        if err.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise InputError(flag, None, f"{shown} was written by another run meanwhile; it "
                                         "is kept as it is (pass --force to replace it)") from None
        raise InputError(flag, None, f"cannot replace {shown}: {err.strerror or err}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
