"""The console script's parser: built without the numerics (``--help`` and usage errors answer at
once), its choices those of ``traces.synth``, ``--version`` the package's."""

from __future__ import annotations

import os
import subprocess
import sys

from cli import main as cli_main
from traces import synth

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def test_parser_choices_are_synth_s():
    assert cli_main.SYNTH_METHODS == synth.METHODS
    assert cli_main.SYNTH_DENSITY_KINDS == synth.DENSITY_KINDS


def test_building_the_parser_loads_no_numerics():
    code = (
        "import sys\nfrom cli.main import build_parser\nbuild_parser()\n"
        "print(sorted(m for m in ('numpy', 'numba', 'traces.synth') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_version_is_the_package_s():
    r = subprocess.run(
        [sys.executable, "-m", "cli.main", "--version"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert r.returncode == 0
    assert r.stdout == f"sparsesim {synth.version()}\n"
