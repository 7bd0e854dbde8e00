"""Runs of tiles (``simulator.engine._run_kernel``) against the per-tile SimPy processes.

The per-tile processes define the engine; a run advances the units through many tiles in one
numba call and must leave exactly what they leave: the same event log, byte for byte (every
record, in the same order: the DRAM calls happen in the same order, so their times agree too),
and the same timings. Each case is replayed with runs off (the definition) and on, keeping
every record (``dram_only=False``) and only the transfers (``dram_only=True``: the waits then go
through a buffer per GEMM), with top-K jobs after the GEMMs.

The generated schedules are stretches of equal tiles (steady patterns: compute-bound,
DRAM-bound, write-bound), with zero-byte reads and writes, zero-cycle computes, SRAM-port
shortfalls, tiny and long GEMMs; on a DRAM whose transfers take whole cycles (one channel, no
latency) many events fall on the same cycle, so SimPy's tie order (the order events were
scheduled) decides which unit's DRAM call comes first.
"""

from __future__ import annotations

import json
from array import array

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataflows.gemm import Gemm
from dataflows.systolic import map_dense
from dataflows.tiles import TILE_FIELDS, TileSchedule
from simulator.arch import load_arch
from simulator.engine import Replays, replay
from simulator.run import _plan
from traces.models import get_model

#: a FIFO of one 64-byte burst a cycle: every transfer takes whole cycles, so ties abound
WHOLE = {"channels": 1, "bandwidth_gbps": 64.0, "latency_cycles": 0, "tRCD": 0, "tCL": 0,
         "tRP": 0, "burst_bytes": 64, "row_buffer_bytes": 1 << 24, "banks_per_channel": 1}
ARCHS = {
    "whole": load_arch("scalesim-32").with_overrides({"dram": WHOLE, "sram.ifmap.banks": 4},
                                                     source="test"),
    "scalesim-32": load_arch("scalesim-32"),
    "tensordash": load_arch("tensordash"),
}


def _schedule(rows: list[tuple]) -> TileSchedule:
    """A GEMM's tiles from rows of (A, B, C read, C written words, compute cycles, A SRAM
    words)."""
    g = Gemm("g", "fwd", 1, 1, 1)
    t = np.zeros((len(rows), len(TILE_FIELDS)), dtype=np.int64)
    for i, f in enumerate(("a_dram", "b_dram", "c_read", "c_write", "compute", "a_sram")):
        t[:, TILE_FIELDS.index(f)] = [r[i] for r in rows]
    return TileSchedule(g, map_dense(g, 32, 32, "os"), t)


def _both(schedules, arch, dram_only, topk):
    """(log bytes, timings as JSON, share of tiles in runs) with runs off, then on."""
    out = []
    for runs in (False, True):
        log = array("d")
        timings, share = replay(schedules, arch, log, dram_only=dram_only, topk=topk, runs=runs)
        out.append((log.tobytes(), json.dumps([t.__dict__ for t in timings], sort_keys=True,
                                              default=str), share))
    return out


def _check(schedules, arch, topk=(3, 0, 5)) -> float:
    """Asserts the run path leaves the per-tile processes' log and timings; the share of
    tiles that went through runs (with every record kept)."""
    shares = []
    for dram_only in (False, True):
        (log0, tm0, share0), (log1, tm1, share1) = _both(schedules, arch, dram_only, list(topk))
        assert share0 == 0.0
        assert log1 == log0, f"event log differs (dram_only={dram_only})"
        assert tm1 == tm0, f"timings differ (dram_only={dram_only})"
        shares.append(share1)
    return shares[0]


words = st.sampled_from([0, 0, 1, 40, 64, 128, 200, 640, 4096])
cycles = st.sampled_from([0, 1, 2, 3, 4, 8, 10, 64, 150])
tile = st.tuples(words, words, words, words, cycles, st.sampled_from([0, 0, 50, 3000]))
stretch = st.tuples(tile, st.integers(1, 40))  # a tile repeated: a steady pattern


@st.composite
def gemms(draw):
    out = []
    for _ in range(draw(st.integers(1, 4))):
        rows = [t for t, n in draw(st.lists(stretch, min_size=1, max_size=5)) for _ in range(n)]
        out.append(_schedule(rows))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gemms(), st.sampled_from(sorted(ARCHS)))
def test_runs_leave_the_per_tile_log_and_timings(schedules, arch):
    _check(schedules, ARCHS[arch])


small = st.sampled_from([0, 64, 128])
jumble = st.tuples(small, small, st.sampled_from([0, 64]), small, st.sampled_from([0, 1, 2, 3]),
                   st.sampled_from([0, 0, 100]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(jumble, min_size=1, max_size=300), min_size=1, max_size=3),
       st.sampled_from(sorted(ARCHS)))
def test_runs_in_a_jumble_of_short_tiles(gemms_rows, arch):
    """Tiles drawn one by one from a few short ones: the regime changes at any tile and
    same-cycle events are everywhere (runs start and roll back often)."""
    _check([_schedule(rows) for rows in gemms_rows], ARCHS[arch], topk=(2,))


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("regime", ["compute", "dram", "write", "alternate", "ties"])
def test_steady_stretches_go_through_runs(arch, regime):
    """The two main regimes (the PE array paces; the read DMA paces), a write-bound one and
    alternations between them go through runs almost whole, and leave the same log."""
    compute, dram, write = (64, 64, 0, 0, 400, 0), (4096, 4096, 640, 0, 8, 0), \
        (64, 64, 0, 8000, 20, 0)
    pattern = {"compute": [compute], "dram": [dram], "write": [write],
               "alternate": [compute] * 300 + [dram] * 300 + [write] * 300,
               "ties": [(64, 64, 0, 64, 2, 0), (128, 0, 0, 128, 4, 0)]}[regime]
    n = 1200 // len(pattern) + 1
    schedules = [_schedule((pattern * n)[:1200]), _schedule((pattern * n)[:900])]
    share = _check(schedules, ARCHS[arch])
    assert share > (0.6 if regime == "alternate" else 0.9), share


@pytest.mark.parametrize("pattern", [
    [(0, 0, 0, 64, 2, 0), (64, 0, 0, 64, 1, 0)],
    [(0, 0, 0, 64, 3, 0), (128, 0, 0, 64, 1, 0)],
    [(0, 0, 0, 128, 3, 0), (64, 0, 0, 128, 2, 0)],
])
def test_a_run_ends_on_a_tie(pattern):
    """Runs that end where another unit's timeout falls on the same cycle as the running
    unit's resumption: the running unit must come first (it was scheduled first), as a run
    that handed the clock back in the other order would not (its log differs)."""
    _check([_schedule(pattern * 60)], ARCHS["whole"])


def test_zero_time_start_and_empty_transfers():
    """Nothing to read or write and no cycles: time stays at 0, and no run starts there (a
    run starts only once time has advanced)."""
    rows = [(0, 0, 0, 0, 0, 0)] * 50 + [(0, 0, 0, 0, 3, 0)] * 50 + [(64, 0, 0, 0, 3, 0)] * 50
    _check([_schedule(rows), _schedule(rows[::-1])], ARCHS["whole"])


@pytest.mark.parametrize(("preset", "dataflow"), [("tensordash", "os"), ("scalesim-32", "ws"),
                                                  ("scalesim-32", "is")])
def test_real_schedules(preset, dataflow):
    """ResNet-18 layers as ``sparsesim simulate`` plans them: same log and timings, and most
    tiles in runs."""
    arch = load_arch(preset)
    layers = get_model("resnet18").layers[1:4]
    plan = _plan(layers, 2, arch, dataflow, "train", None, arch.features.baseline(),
                 frozenset(), True)
    share = _check([p.sched for p in plan], arch, topk=(7,))
    assert share > 0.5, share


def test_replays_keep_runs_out_of_the_key():
    """The replay cache is keyed on what the outputs depend on; runs do not change them."""
    arch = ARCHS["whole"]
    schedules = [_schedule([(64, 64, 0, 64, 8, 0)] * 200)]
    cache = Replays()
    a, b = array("d"), array("d")
    cache.simulate_tiles(schedules, arch, a, topk=[2])
    cache.simulate_tiles(schedules, arch, b, topk=[2])
    assert cache.hits == 1 and a.tobytes() == b.tobytes()
