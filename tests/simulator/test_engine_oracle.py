"""The SimPy engine with modeled memory against a recurrence worked out by hand.

On a DRAM with no latency, no row timing and one channel (a FIFO server of one 64-byte burst a
cycle; transfers here are whole bursts),
with reads only until the last tile's write-back, the engine's rules (two input and two output
half-buffers, a read DMA, the PE array, a write DMA; ``simulator/engine.py``) give each tile:

    read_start(i) = max(read_end(i−1), pe_end(i−2))      (an input half-buffer is free)
    read_end(i)   = read_start(i) + bytes read(i) / 64
    pe_start(i)   = max(pe_end(i−1), read_end(i))
    pe_end(i)     = pe_start(i) + compute(i) + SRAM-port cycles(i)

and the last write-back follows the last tile: end = pe_end(last) + bytes written / 64. The
PE array's wait before the first tile is fill, the later ones DRAM bandwidth (no latency), the
write-back after the last tile drain. Every exact comparison elsewhere uses ideal memory, which
bypasses SimPy; this one runs it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.gemm import Gemm
from dataflows.systolic import map_dense
from dataflows.tiles import TILE_FIELDS, TileSchedule
from simulator.arch import load_arch
from simulator.engine import simulate_tiles

PEAK = 64.0
DRAM = {"channels": 1, "bandwidth_gbps": PEAK, "latency_cycles": 0, "tRCD": 0, "tCL": 0,
        "tRP": 0, "burst_bytes": 64, "row_buffer_bytes": 1 << 24, "banks_per_channel": 1}


def _arch(ports_words: int):
    # word_bytes 1 (scalesim-32): bytes = words; SRAM words/cycle = banks x ports x width
    return load_arch("scalesim-32").with_overrides(
        {"dram": DRAM, "sram.ifmap.banks": ports_words, "sram.filter.banks": ports_words,
         "sram.ofmap.banks": ports_words, "sram.ifmap.kib": 64, "sram.filter.kib": 64,
         "sram.ofmap.kib": 64})


def _schedule(rows: list[tuple]) -> TileSchedule:
    g = Gemm("g", "fwd", 1, 1, 1)
    t = np.array([[r[TILE_FIELDS.index(f)] if i < len(r) else 0 for i, f in
                   enumerate(TILE_FIELDS)] for r in rows], dtype=np.int64)
    return TileSchedule(g, map_dense(g, 32, 32, "os"), t)


def oracle(gemms: list[list[tuple]], ports: int):
    """(end, per GEMM: compute, fill/drain, DRAM bandwidth, SRAM-conflict cycles)."""
    tiles = [(gi, t) for gi, rows in enumerate(gemms) for t in rows]
    read_end = pe_end = 0.0
    pe_ends: list[float] = []
    out = [dict(compute=0, fill=0.0, bw=0.0, sram=0) for _ in gemms]
    for i, (gi, t) in enumerate(tiles):
        a, b, cr, _cw, comp, asr, bsr, csr = t[:8]
        slot = pe_ends[i - 2] if i >= 2 else 0.0
        start = max(read_end, slot)
        nbytes = a + b + cr
        read_end = start + nbytes / PEAK
        extra = max(0, math.ceil(max(asr, bsr, csr) / ports - 1e-9) - comp)
        pe_start = max(pe_end, read_end)
        wait = pe_start - pe_end
        if i == 0:
            out[gi]["fill"] += wait
        else:
            out[gi]["bw"] += wait
        pe_end = pe_start + comp + extra
        pe_ends.append(pe_end)
        out[gi]["compute"] += comp
        out[gi]["sram"] += extra
    last_write = tiles[-1][1][3]
    end = pe_end + last_write / PEAK
    out[-1]["fill"] += end - pe_end
    return end, out


# the DRAM moves whole 64-byte bursts: sizes in bursts keep every transfer aligned
burst_st = st.integers(0, 12).map(lambda n: 64 * n)
tile_st = st.tuples(*(burst_st for _ in range(3)), st.just(0),
                    st.integers(1, 200), *(st.integers(0, 3000) for _ in range(3)))


@settings(deadline=None, max_examples=150, derandomize=True)
@given(gemms=st.lists(st.lists(tile_st, min_size=1, max_size=6), min_size=1, max_size=3),
       last_write=burst_st, ports=st.sampled_from([4, 16, 64]))
def test_modeled_memory_equals_the_recurrence(gemms, last_write, ports):
    gemms[-1][-1] = gemms[-1][-1][:3] + (last_write,) + gemms[-1][-1][4:]
    timings = simulate_tiles([_schedule(rows) for rows in gemms], _arch(ports))
    end, want = oracle(gemms, ports)
    assert timings[-1].end == pytest.approx(end, abs=1e-9)
    for tm, w in zip(timings, want, strict=True):
        assert tm.compute == w["compute"]
        assert tm.stalls["sram_conflict"] == w["sram"]
        assert tm.stalls["fill_drain"] == pytest.approx(w["fill"], abs=1e-9)
        assert tm.stalls["dram_bandwidth"] == pytest.approx(w["bw"], abs=1e-9)
        assert tm.stalls["dram_latency"] == pytest.approx(0.0, abs=1e-9)
    assert sum(tm.cycles for tm in timings) == pytest.approx(end, abs=1e-9)


def test_hand_worked_chain():
    """Three tiles worked by hand: 640 B read (10 cycles) then 100 cycles of compute each,
    the second and third reads hidden behind compute except the third's slot wait, 128 B
    written at the end (2 cycles)."""
    t = [(640, 0, 0, 0, 100, 0, 0, 0), (640, 0, 0, 0, 100, 0, 0, 0),
         (640, 0, 0, 128, 100, 0, 0, 0)]
    (tm,) = simulate_tiles([_schedule(t)], _arch(64))
    # read 0: 0-10; PE 0: 10-110; read 1: 10-20; PE 1: 110-210; read 2 waits for a slot
    # until PE 0 ends (110): 110-120; PE 2: 210-310; write: 310-312
    assert tm.end == 312.0
    assert tm.compute == 300 and tm.stalls["fill_drain"] == 10.0 + 2.0
    assert tm.stalls["dram_bandwidth"] == 0.0


@settings(deadline=None, max_examples=40, derandomize=True)
@given(gemms=st.lists(st.lists(tile_st, min_size=1, max_size=4), min_size=1, max_size=2),
       topk=st.lists(st.integers(1, 500), max_size=3))
def test_topk_unit_runs_after_the_write_back(gemms, topk):
    """The top-K unit's jobs start when the last write-back ends and follow each other; they
    change nothing of the GEMMs' timings."""
    from array import array

    from simulator.results import EVENT_FIELDS, OVERHEAD

    scheds = [_schedule(rows) for rows in gemms]
    log = array("d")
    timings = simulate_tiles(scheds, _arch(16), log, topk=topk)
    assert timings == simulate_tiles(scheds, _arch(16))
    end, _ = oracle(gemms, 16)
    ev = np.array(log).reshape(-1, len(EVENT_FIELDS))
    over = ev[ev[:, 0] == OVERHEAD]
    assert over[:, 1].tolist() == [len(gemms) + i for i in range(len(topk))]
    starts = end + np.concatenate([[0.0], np.cumsum(topk)[:-1]]) if topk else []
    assert over[:, 2] == pytest.approx(starts, abs=1e-9)
    assert (over[:, 3] - over[:, 2]).tolist() == [float(c) for c in topk]


def test_stall_split_by_hand():
    """``attribute_stalls`` on records written by hand: the first wait is fill; a 10-cycle
    wait for a read that took 8 cycles, 2 of them at peak bandwidth, is 2.5 bandwidth and 7.5
    latency; a 4-cycle wait for an output half while a write of useful share 0.25 is in
    flight is 1 + 3; the drain (z = 1) is fill/drain."""
    from array import array

    from simulator.engine import GemmTiming, attribute_stalls
    from simulator.results import COMPUTE, WAIT_READ, WAIT_WRITE

    log = array("d", [WAIT_READ, 0, 0, 5, 5.0, 5.0, 1.0,  # the first fill
                      COMPUTE, 0, 5, 10, 5, 0, 0,
                      WAIT_READ, 1, 10, 20, 8.0, 2.0, 0.0,
                      WAIT_WRITE, 1, 20, 24, 0.25, 0.0, 0.0,
                      WAIT_WRITE, 1, 30, 36, 0.0, 0.0, 1.0])  # the drain
    timings = [GemmTiming(), GemmTiming()]
    attribute_stalls(log, timings)
    assert timings[0].stalls == {"dram_bandwidth": 0.0, "dram_latency": 0.0,
                                 "sram_conflict": 0.0, "fill_drain": 5.0}
    assert timings[1].stalls == {"dram_bandwidth": 3.5, "dram_latency": 10.5,
                                 "sram_conflict": 0.0, "fill_drain": 6.0}
    assert list(log[4:7]) == [0.0, 0.0, 5.0]
    assert list(log[18:21]) == [2.5, 7.5, 0.0] and list(log[25:28]) == [1.0, 3.0, 0.0]
