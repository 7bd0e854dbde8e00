"""numba's ``njit`` whose on-disk cache also works on a read-only install.

Every kernel is compiled with ``cache=True``. numba keeps that cache in the ``__pycache__`` beside
the source or, failing that, in the user's cache directory (``~/.cache/numba``); where neither can
be written (a system-wide or container install run by another user with a read-only home) it
refuses to decorate the function at all: ``RuntimeError: cannot cache function ... no locator
available``. Here, before the first kernel is decorated, the module checks those two places for
each source folder; when neither works and ``NUMBA_CACHE_DIR`` is not set, the cache goes to a
private folder in the temporary directory instead, and when even that cannot be made the
kernels are compiled without a disk cache (slower to start, same results).

numba checks a cached kernel against its own source file only, but the machine code it keeps
includes the kernels of other modules that it calls (the engine's run kernel calls the DRAM
model's): after such a module changes, the stale code would run against the new one's data and
corrupt memory. So each kernel's cache stamp here also holds the source of every other module
whose kernels it reaches, directly or through them (``_callee_files``): a change there makes
numba compile it again.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from numba import njit as _njit
from numba.core import config, event
from numba.core.caching import InTreeCacheLocator, UserWideCacheLocator

_checked: dict[str, bool] = {}  # source folder -> may its kernels use cache=True


def _probe() -> None:  # a stand-in function for numba's locators (only its line number is read)
    pass


def _private_temp_dir() -> str | None:
    """``$TMPDIR/sparsesim-numba-UID``, made and owned by this user (mode 0700), or None."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    path = Path(tempfile.gettempdir()) / f"sparsesim-numba-{uid if uid is not None else 'user'}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = path.stat()
        if uid is not None and (st.st_uid != uid or st.st_mode & 0o022):
            return None  # someone else's folder: never load compiled code from it
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return None
    return str(path)


def cache_usable(py_file: str) -> bool:
    """Whether kernels defined in ``py_file`` can be cached on disk, pointing numba's cache at a
    private temporary folder when the usual places cannot be written."""
    folder = os.path.dirname(os.path.abspath(py_file))
    if folder not in _checked:
        ok = bool(config.CACHE_DIR)  # the user chose a folder: numba's own message if it fails
        if not ok:
            ok = any(loc.from_function(_probe, py_file) is not None
                     for loc in (InTreeCacheLocator, UserWideCacheLocator))
        if not ok:
            tmp = _private_temp_dir()
            if tmp is not None:
                config.CACHE_DIR = tmp
                ok = True
        _checked[folder] = ok
    return _checked[folder]


_kernels: list[Any] = []  # every cached kernel decorated so far


def njit(*args: Any, **kwargs: Any) -> Callable[..., Any]:
    """``numba.njit(cache=True)`` for the calling module, as described above; used as
    ``@njit(cache=True)``."""
    if not kwargs.get("cache"):
        return _njit(*args, **kwargs)
    kwargs["cache"] = cache_usable(sys._getframe(1).f_code.co_filename)
    decorate = _njit(*args, **kwargs)

    def register(fn: Callable[..., Any]) -> Any:
        kernel = decorate(fn)
        _stamp_callees(kernel, fn)
        _kernels.append(kernel)
        return kernel

    return register


def _code_names(code: types.CodeType) -> set[str]:
    """The global and attribute names a function's code (and code nested in it) uses."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _callees(fn: Callable[..., Any]) -> list[Callable[..., Any]]:
    """The Python functions of the numba kernels ``fn`` names: as globals, or as attributes
    of modules it names (``kx.popcount64``)."""
    found = []
    g = getattr(fn, "__globals__", {})
    names = _code_names(fn.__code__)
    for name in names:
        obj = g.get(name)
        objs = ([getattr(obj, a, None) for a in names] if isinstance(obj, types.ModuleType)
                else [obj])
        found += [o.py_func for o in objs if callable(getattr(o, "py_func", None))]
    return found


def _callee_files(fn: Callable[..., Any]) -> list[str]:
    """Source files, other than ``fn``'s own, of the kernels ``fn`` reaches through calls."""
    own = inspect.getfile(fn)
    seen, files, todo = set(), set(), [fn]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for callee in _callees(f):
            files.add(inspect.getfile(callee))
            todo.append(callee)
    files.discard(own)
    return sorted(files)


def _stamp_callees(kernel: Any, fn: Callable[..., Any]) -> None:
    """Make ``kernel``'s cache stamp hold the source of the other modules it calls into (the
    module docstring), so that a change there recompiles it."""
    cache_file = getattr(getattr(kernel, "_cache", None), "_cache_file", None)
    if cache_file is None or not hasattr(cache_file, "_source_stamp"):
        return  # no disk cache
    deps = []
    for path in _callee_files(fn):
        try:
            deps.append((os.path.basename(path), hashlib.sha256(Path(path).read_bytes())
                         .hexdigest()))
        except OSError:
            deps.append((os.path.basename(path), None))
    if deps:
        cache_file._source_stamp = (cache_file._source_stamp, tuple(deps))


#: the seconds numba spent compiling in this process (its "numba:compile" events, a kernel
#: compiled inside another's compilation counted once), from the first ``compile_mark`` on
_compiling: event.TimingListener | None = None
_compiled_at: dict[float, float] = {}  # a mark -> the seconds compiled before it


def _compile_seconds() -> float:
    return _compiling.duration if _compiling is not None and _compiling.done else 0.0


def compile_mark() -> float:
    """A mark taken before a run, for ``compiled_since`` and ``compiled_note`` after it."""
    global _compiling
    if _compiling is None:
        _compiling = event.TimingListener()
        event.register("numba:compile", _compiling)
    mark = time.time()
    _compiled_at[mark] = _compile_seconds()
    return mark


def compiled_since(mark: float) -> int:
    """How many of the cached kernels loaded so far were compiled and written to numba's cache
    since ``mark`` (their cache index is newer): what made this run slower than the next.
    Kernels the run never called stay uncompiled and do not count."""
    done = 0
    for kernel in _kernels:
        cache = getattr(kernel, "_cache", None)
        index = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
        try:
            done += index is not None and os.stat(index).st_mtime >= mark
        except OSError:  # never compiled
            pass
    return done


def compiled_note(mark: float) -> str | None:
    """The line a command prints after a run that compiled kernels (``compile_mark()`` taken
    before it), or None: the first run is slower, and says why. It goes with the command's
    results (stdout), never among its error messages."""
    done = compiled_since(mark)
    if not done:
        return None
    took = _compile_seconds() - _compiled_at.get(mark, 0.0)
    return (f"  (this first run compiled {done} of the simulator's {len(_kernels)} numba kernels "
            f"in {took:.0f} s; later runs load them from numba's cache)")
