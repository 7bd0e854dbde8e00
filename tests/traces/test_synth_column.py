"""``synth`` on a SCALE-Sim topology whose Sparsity column gives rows N:M: each such row's
weights drawn N:M, the other rows dense, and a flag that would set the densities another way
refused with the file and field named."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from common.errors import ConfigError
from traces.format import Trace
from traces.layers import Layer
from traces.synth import SynthConfig, plan, synthesize
from traces.topology import write_topology

# (rows, N:M): a fan-in that is not a multiple of M leaves a narrower last group
_LAYERS = (
    Layer("conv1", "conv2d", 3, 8, (3, 3), (1, 1), (1, 1), input_hw=(8, 8)),
    Layer("conv2", "conv2d", 8, 16, (3, 3), (1, 1), (1, 1), input_hw=(8, 8)),
    Layer("conv3", "conv2d", 16, 12, (1, 1), (1, 1), (0, 0), input_hw=(8, 8)),
    Layer("fc", "linear", 30, 10),
)
_COLUMN = (None, "2:4", "1:4", "3:8")


def _topology(tmp_path, column=_COLUMN) -> str:
    path = tmp_path / "net.csv"
    write_topology(path, _LAYERS, nm_sparsity=column)
    return str(path)


def _groups_hold(mask: np.ndarray, n: int, m: int) -> bool:
    """Every whole group of M consecutive weights along a filter's fan-in holds exactly N, a
    narrower last group at most N: counted directly, row by row."""
    for row in mask:
        for start in range(0, len(row), m):
            kept = int(row[start:start + m].sum())
            if kept != n if start + m <= len(row) else kept > n:
                return False
    return True


@pytest.mark.parametrize("method", ["static", "swat", "rigl"])
def test_each_row_is_drawn_with_its_own_n_m_and_rows_without_are_dense(tmp_path, method):
    out = tmp_path / "t"
    synthesize(SynthConfig(model=_topology(tmp_path), method=method, batch=2), out)
    trace = Trace(out)
    sparsity = trace.manifest.sparsity
    assert sparsity["pattern"] == "Sparsity column"
    assert sparsity["layer_pattern"] == list(_COLUMN)
    step = next(iter(trace))
    nominal = total = 0  # the column's densities N/M (a narrower last group aside)
    for layer, nm in zip(trace.manifest.layers, _COLUMN, strict=True):
        w = step.layers[layer.name]["fwd"]["filter"]
        if nm is None:
            assert w is None or w.unpack().all()
            nominal += layer.weight_numel
        else:
            n, m = (int(x) for x in nm.split(":"))
            assert _groups_hold(w.unpack().reshape(layer.out_channels, -1), n, m)
            nominal += Fraction(n, m) * layer.weight_numel
        total += layer.weight_numel
    assert sparsity["sparsity"] == pytest.approx(float(1 - nominal / total))


def test_a_topology_without_the_column_keeps_the_global_flags(tmp_path):
    p = plan(SynthConfig(model=_topology(tmp_path, column=None), method="static",
                         sparsity=0.5, pattern="2:4"))
    assert p.layer_patterns == ()
    assert str(p.pattern) == "2:4"


@pytest.mark.parametrize("kw, flag", [
    (dict(sparsity=0.5), "--sparsity"),
    (dict(pattern="2:4"), "--pattern 2:4"),
    (dict(density="uniform"), "--density"),
    (dict(layer_sparsity=(0.5,) * 4), "--layer-sparsity"),
    (dict(first_dense=False), "--no-first-dense"),
    (dict(method="dense"), "--method dense"),
    (dict(method="srigl", pattern="fanin"), "--method srigl"),
])
def test_a_flag_that_sets_the_densities_too_is_refused(tmp_path, kw, flag):
    topo = _topology(tmp_path)
    kw.setdefault("method", "static")
    with pytest.raises(ConfigError) as info:
        plan(SynthConfig(model=topo, **kw))
    text = str(info.value)
    assert text.startswith(f"{topo}: Sparsity: ") and flag in text


def test_the_cli_refuses_in_one_line_and_writes_nothing(tmp_path):
    topo = _topology(tmp_path)
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "cli.main", "synth", "--model", topo,
                          "--method", "static", "--sparsity", "0.9", "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Sparsity" in lines[0] and "--sparsity" in lines[0]
    assert not out.exists()
