"""The console script's process settings (``cli.process``): what each one changes, and that the
Python API (``main(argv)``) is left alone."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from cli import main as cli_main
from cli import process

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}
GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _python(code: str, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
        check=True,
    )
    return out.stdout.strip()


#: a child that makes and frees a bytearray of 8, 9, ... 15 MiB (over glibc's starting threshold,
#: under ``MMAP_BYTES``) and prints its page faults: without the settings each one gets a fresh
#: mapping, every page faulted in (92 MiB: 23 552 pages); with them the heap reuses the freed
#: block and grows by the difference (15 MiB in all: 3 840 pages)
FAULTS = """
import resource, sys
from cli import process
if sys.argv[1] == "1":
    print(process.keep_freed_memory(), end=" ")
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for mib in range(8, 16):
    a = bytearray(mib << 20)
    del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = sum(range(8, 16)) << 20 >> 12


def _faults(keep: bool) -> str:
    return _python(FAULTS, "1" if keep else "0")


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc settings")
def test_kept_memory_is_reused_not_faulted_in_again():
    plain = int(_faults(False))
    took, kept = _faults(True).split()
    assert took == "True"
    assert plain >= 0.9 * PAGES  # each block maps fresh pages (so the check below can fail)
    assert int(kept) < 0.25 * PAGES


@pytest.mark.skipif(GLIBC, reason="the settings exist on glibc only")
def test_elsewhere_memory_settings_are_left_alone():
    assert _python("from cli import process; print(process.keep_freed_memory())") == "False"


def test_tune_freezes_the_collector_at_exit():
    # atexit runs handlers last in, first out: one registered before tune() runs after its freeze
    code = (
        "import atexit, gc\nfrom cli import process\n"
        "atexit.register(lambda: print(gc.get_freeze_count() > 0))\n"
        "process.tune('info')\nprint(gc.get_freeze_count() > 0)"
    )
    assert _python(code).split() == ["False", "True"]


def test_the_console_script_tunes_and_the_api_does_not(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(process, "tune", seen.append)
    assert cli_main.main(["info", "lenet5"]) == 0
    assert seen == []
    monkeypatch.setattr(sys, "argv", ["sparsesim", "info", "lenet5"])
    assert cli_main.main() == 0
    assert seen == ["info"]
    capsys.readouterr()


#: a child that tunes the process for ``argv[1]``, reports whether the collector is on, calls
#: ``started`` and reports again, with whether anything was frozen
START = """
import gc, sys
from cli import process
if sys.argv[1] != "-":
    process.tune(sys.argv[1])
before = gc.isenabled()
process.started()
print(before, gc.isenabled(), gc.get_freeze_count() > 0)
"""


def test_simulate_holds_the_collector_off_until_its_start_up_is_over():
    assert _python(START, "simulate").split() == ["False", "True", "True"]


def test_other_commands_and_the_api_keep_the_collector_running():
    assert _python(START, "info").split() == ["True", "True", "False"]
    assert _python(START, "-").split() == ["True", "True", "False"]  # started() without tune


#: the console script's ``simulate`` on a two-layer topology, then whether the collector is on
SIMULATE = """
import gc, sys
from cli import main
sys.argv = ["sparsesim", "simulate", sys.argv[1], "--arch", "scalesim-32", "--memory",
            "ideal", "-o", sys.argv[2]]
code = main.main()
print(code, gc.isenabled(), gc.get_freeze_count() > 0)
"""


def test_simulate_turns_the_collector_back_on(tmp_path):
    topo = tmp_path / "net.csv"
    topo.write_text(
        "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, "
        "Channels, Num Filter, Strides,\nconv1,18,18,3,3,4,16,1,\n"
    )
    out = _python(SIMULATE, str(topo), str(tmp_path / "res")).splitlines()[-1]
    assert out.split() == ["0", "True", "True"]
