"""Kernels still compile and cache where numba's usual cache folders cannot be written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter with the temporary folder set to $TEMP_FOLDER: every numba cache
# folder outside it behaves as read-only (numba probes a folder by making it and writing a
# temporary file in it), as on a system-wide install run by a user with a read-only home. Then
# the first kernel is decorated and called.
SCRIPT = """
import os, sys, tempfile
from numba.core import caching

tempfile.tempdir = os.environ["TEMP_FOLDER"]
allowed = os.path.realpath(tempfile.tempdir)

def ensure_cache_path(self):
    path = os.path.realpath(self.get_cache_path())
    if not path.startswith(allowed + os.sep):
        raise PermissionError(13, "Read-only file system", path)
    os.makedirs(path, exist_ok=True)
    tempfile.TemporaryFile(dir=path).close()

caching._CacheLocator.ensure_cache_path = ensure_cache_path
import numpy as np
from common import jit
from dataflows import kernels
from simulator import dram  # a second source folder
import json
print(json.dumps([kernels.popcount64(np.uint64(0b1011)), sorted(jit._checked.values()),
                  jit.config.CACHE_DIR]))
"""


def _run(tmpdir: Path) -> list:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(TEMP_FOLDER=str(tmpdir), PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="per-user folder named by uid")
def test_read_only_install_caches_in_a_private_temp_folder(tmp_path):
    count, checked, cache_dir = _run(tmp_path)
    assert count == 3
    assert len(checked) >= 2 and all(checked)  # dataflows/, simulator/ (and traces/)
    folder = tmp_path / f"sparsesim-numba-{os.getuid()}"
    assert Path(cache_dir) == folder
    assert folder.stat().st_mode & 0o777 == 0o700
    assert any(p.suffix == ".nbi" for p in folder.rglob("*"))  # the kernel's cache index
    assert _run(tmp_path)[0] == 3  # a second process loads it


def test_no_writable_folder_at_all_compiles_without_a_cache(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    count, checked, cache_dir = _run(blocker / "tmp")  # the temp folder cannot be made
    assert count == 3
    assert len(checked) >= 2 and not any(checked)
    assert cache_dir == ""


COLD = """
import importlib, json, sys, time
sys.path.insert(0, sys.argv[1])
from common import jit
mod = importlib.import_module("cold_probe")
mark = jit.compile_mark()
t0 = time.perf_counter()
mod.twice(3)
wall = time.perf_counter() - t0
print(json.dumps([jit.compiled_since(mark), jit.compiled_note(mark), wall,
                  jit._compile_seconds() - jit._compiled_at[mark]]))
"""


def test_a_run_counts_the_kernels_it_compiled(tmp_path):
    """A kernel compiled by the run counts (the note says so); a fresh interpreter then loads
    it from disk and the note is gone; a kernel the run never calls never counts."""
    (tmp_path / "cold_probe.py").write_text(
        "from common.jit import njit\n\n\n@njit(cache=True)\ndef twice(x):\n    return 2 * x\n"
        "\n\n@njit(cache=True)\ndef thrice(x):\n    return 3 * x\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_CACHE_DIR": str(tmp_path / "nb")}
    run = [sys.executable, "-c", COLD, str(tmp_path)]
    first = json.loads(subprocess.run(run, env=env, capture_output=True, text=True,
                                      check=True).stdout)
    again = json.loads(subprocess.run(run, env=env, capture_output=True, text=True,
                                      check=True).stdout)
    assert first[0] == 1 and "compiled 1 of" in first[1]
    # the seconds it says are numba's compile time of that call: some, at most the call's
    took, wall = first[3], first[2]
    assert 0 < took <= wall and f"in {took:.0f} s" in first[1]
    assert again[:2] == [0, None] and again[3] == 0


CALLER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import probe_caller
print(json.dumps(probe_caller.outer(1)))
"""


def test_a_kernel_is_recompiled_when_a_kernel_it_calls_in_another_module_changes(tmp_path):
    """numba checks a cached kernel against its own file only, yet keeps the code of the
    other modules' kernels it calls: without the callees in its stamp, a changed callee runs
    stale (the engine's run kernel kept an old DRAM kernel and corrupted memory)."""
    callee = ("from common.jit import njit\n\n\n@njit(cache=True)\ndef inner(x):\n"
              "    return x + {}\n")
    (tmp_path / "probe_callee.py").write_text(callee.format(10))
    (tmp_path / "probe_caller.py").write_text(
        "from common.jit import njit\nimport probe_callee\nfrom probe_callee import inner\n\n\n"
        "@njit(cache=True)\ndef outer(x):\n    return inner(x) + probe_callee.inner(x)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_CACHE_DIR": str(tmp_path / "nb"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    run = [sys.executable, "-c", CALLER, str(tmp_path)]

    def outer() -> int:
        out = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout)

    assert outer() == 22
    assert outer() == 22  # from the cache
    (tmp_path / "probe_callee.py").write_text(callee.format(200))
    assert outer() == 402  # not the cached 22
