"""Only trainers/ may import torch: importing anything else must leave torch unloaded."""

from __future__ import annotations

import subprocess
import sys

import pytest

MODULES = [
    "traces", "traces.format", "traces.synth", "traces.models", "traces.topology",
    "traces.patterns", "traces.density", "traces.summary", "dataflows", "simulator", "reports",
    "common", "pipeline.sweep", "pipeline.sweepfile", "cli.main",
]


@pytest.mark.parametrize("module", MODULES)
def test_import_does_not_load_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_synth_command_does_not_load_torch(tmp_path):
    code = (
        "import sys; from cli.main import main; "
        f"rc = main(['synth', '--model', 'lenet5', '--sparsity', '0.5', '--batch', '1', "
        f"'-q', '-o', {str(tmp_path / 't')!r}]); "
        "print('torch' in sys.modules, rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False 0"
