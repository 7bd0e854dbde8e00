"""Write an output directory under a temporary name and rename it into place when complete."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from traces.errors import InputError


def check_output_dir(out: Path, force: bool, flag: str = "-o") -> None:
    """Refuse an output path that exists and is not an empty directory, unless ``force``."""
    if out.exists() and not out.is_dir():
        raise InputError(flag, None, f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(flag, None, f"{out} exists and is not empty; choose another directory "
                                     "or pass --force to replace it")
    ancestor = out.resolve().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(flag, None, f"{ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK):
        raise InputError(flag, None, f"directory {ancestor} is not writable")


@contextmanager
def atomic_output_dir(out: str | os.PathLike, force: bool = False,
                      flag: str = "-o") -> Iterator[Path]:
    """Yield a temporary sibling of ``out`` to fill; on success it replaces ``out``.

    On any exception the temporary directory is removed and ``out`` is left as it was.
    """
    out = Path(out)
    check_output_dir(out, force, flag)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
