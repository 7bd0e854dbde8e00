"""A sweep's CPU estimate counts each point's steps and, when the points share their dense
baselines through a cache, each distinct baseline once (sparse features other than the
lowering do not change it); without a cache, one per point."""

from __future__ import annotations

from textwrap import dedent

import pytest

from pipeline.sweep import estimate_sweep
from pipeline.sweepfile import load_sweep
from simulator.arch import Architecture
from simulator.budget import estimate_network, estimate_synth
from traces.models import get_model

SWEEP = """\
arch: tensordash
memory: modeled
dataflow: os
synth: {model: lenet5, method: swat, batch: 1}
grid:
  sparsity: [0.5, 0.9]
  sparse.free_rows: [1, 2]
  sparse.lowering.k_order: [flat, channel_inner]
"""


@pytest.fixture
def sweep(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(dedent(SWEEP))
    return load_sweep(path)


def _parts(sw):
    """Per point: its steps alone, its steps with a baseline of its own, its baseline alone;
    and per distinct synthetic trace its building."""
    layers = get_model("lenet5").layers
    parts = []
    for p in sw.points:
        arch = Architecture.from_dict(p.arch, source=p.arch_source)
        parts.append(tuple(estimate_network(layers, 1, arch, "os", "train", **kw).cpu_s
                           for kw in (dict(steps=1, masked=True, baseline=False),
                                      dict(steps=1, masked=True, baseline=True),
                                      dict(startup=False))))
    synth = estimate_synth(layers, 1, 1).cpu_s * len({p.trace_key for p in sw.points})
    return parts, synth


def test_shared_baselines_count_once_per_distinct_baseline(sweep):
    parts, synth = _parts(sweep)
    assert len(sweep.points) == 8
    # two lowerings: two baselines; free_rows and the sparsity share them
    first = {p.arch["sparse"]["lowering"]["k_order"]: i for i, p in
             reversed(list(enumerate(sweep.points)))}
    assert len(first) == 2
    shared = estimate_sweep(sweep, shared=True)
    want = sum(s for s, _, _ in parts) + sum(parts[i][2] for i in first.values()) + synth
    assert shared.cpu_s == pytest.approx(want)
    assert shared.simulations == 8 + 2


def test_without_a_cache_every_point_simulates_its_own(sweep):
    parts, synth = _parts(sweep)
    alone = estimate_sweep(sweep, shared=False)
    assert alone.cpu_s == pytest.approx(sum(w for _, w, _ in parts) + synth)
    assert alone.simulations == 8 * 2
    assert estimate_sweep(sweep, shared=True).cpu_s < alone.cpu_s
