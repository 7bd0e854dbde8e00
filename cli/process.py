"""Settings of the ``sparsesim`` process itself, made only when the console script runs (not when
a notebook or a test calls the Python API or ``cli.main.main(argv)``): they change how fast the
command starts and ends, never what it computes or writes.

* Freed memory kept for reuse (``simulate``). glibc's malloc gives a block over its mapping
  threshold its own mapping and returns it to the kernel when it is freed, and trims the heap's
  free top over its trim threshold; the next array of that size gets fresh pages that the
  kernel zero-fills again on first touch. glibc starts the thresholds at 128 KiB and raises
  them only as mapped blocks are freed (to the freed block's size, the trim threshold to twice
  that), up to 32 MiB. A simulation makes and drops arrays of a few MB to tens of MB per GEMM:
  a ResNet-50 step took about 200 000 page faults, 0.55 s of system time. Starting at the end
  of glibc's own range (``MMAP_BYTES``, ``TRIM_BYTES``) halves that (about 100 000, 0.3 s),
  its peak resident memory 2 % higher (420 MB): freed space is reused, not mapped anew. A block over
  32 MiB keeps its own mapping, as in glibc's default: with 1 GiB instead, the faults of the
  ResNet-50 step fell to 70 000 but a 2048x2048x64 layer's peak rose from 0.8 to 1.1 GiB.
  Other platforms and other C libraries keep their own behaviour.
* No garbage collection at exit (every command). After the command has returned, CPython's
  finalization runs full collections over every object the imports made (numba, pandas):
  about 0.3 s of CPU that frees nothing the process needs, right before the process ends. The
  objects left are frozen (``gc.freeze``) at exit, so those collections skip them. Outputs do
  not depend on it: they are written, closed and renamed before the command returns, and the
  interpreter flushes stdout and stderr at exit whatever the collector does.
* No garbage collection during the start-up (``simulate``). Its imports (numba, and pandas
  until ``simulate`` stopped importing it: these figures are from then) made
  about 160 000 objects that live as long as the process; CPython's collector, started every
  700 allocations, went over them some 370 times, twice in full, and freed about 3 500 objects:
  0.15 s of CPU on the ResNet-50 step. The collector is off from ``tune`` until the command
  calls ``started`` (after its imports); then what the start-up made is frozen (``gc.freeze``:
  later collections skip it) and the collector runs as before (0.06 s on that step, in the
  collections after it). Nothing the command computes or writes depends on when cyclic
  garbage is freed.
"""

from __future__ import annotations

import atexit
import gc
import sys

#: the largest block malloc serves from its heap, and the free heap top it keeps (bytes): where
#: glibc's own thresholds stop rising (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit, twice that)
MMAP_BYTES = 32 << 20
TRIM_BYTES = 2 * MMAP_BYTES
_M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc's malloc.h)
_M_MMAP_THRESHOLD = -3
_COMMANDS_KEEPING_MEMORY = ("simulate",)
_COMMANDS_QUIET_START = ("simulate",)  # each calls ``started`` when its start-up is over

_done = False
_held = False  # the collector is off until ``started``


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to reuse freed memory instead of returning it to the kernel (the
    module docstring); True when it took both settings, False elsewhere (not Linux, another C
    library, no ``ctypes``)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # the mapping threshold first: setting either one stops glibc's own threshold from moving
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_BYTES)
    )


def tune(command: str) -> None:
    """The process settings of the module docstring for the console script's ``command``
    (a subcommand name); once per process."""
    global _done, _held
    if _done:
        return
    _done = True
    atexit.register(gc.freeze)
    if command in _COMMANDS_KEEPING_MEMORY:
        keep_freed_memory()
    if command in _COMMANDS_QUIET_START and gc.isenabled():
        gc.disable()
        _held = True


def started() -> None:
    """The command's start-up (its imports) is over: freeze what it made and turn the collector
    back on, when ``tune`` turned it off (the module docstring); else nothing (the Python API)."""
    global _held
    if _held:
        _held = False
        gc.freeze()
        gc.enable()
