"""The SimPy model of the accelerator: a DMA reader, the PE array and a write-back engine around
double-buffered on-chip SRAM, over one shared DRAM.

One process per hardware unit, one event per buffer tile (``dataflows.tiles``), never per cycle:

* ``reader`` (DMA): for each tile, waits for a free input half-buffer, fetches the tile's fresh
  A, B and partial-sum words from DRAM (the service time comes from the numba timing model in
  ``simulator.dram``) and hands the tile to the array;
* ``pe_array``: takes the next loaded tile, waits for a free output half-buffer, computes for the
  tile's cycles (closed form, plus any SRAM-port shortfall), then frees the input half and queues
  the results;
* ``writer`` (DMA): writes finished outputs and spilled partial sums back to DRAM and frees the
  output half.

Transfers overlap compute. Every cycle the array is not computing while a GEMM is in flight is a
stall, attributed to a cause (``docs/metrics.md``): waiting for a read is split into *DRAM
bandwidth* (the part the transfer would take at peak bandwidth) and *DRAM latency/bank* (the
rest); waiting for the output buffer to drain is split the same way from the writes; a shortfall
of SRAM ports is *SRAM bank conflict*; the very first fill and the last drain are *fill/drain*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import simpy

from dataflows.tiles import TILE_FIELDS, TileSchedule
from simulator.dram import Dram, DramTiming

STALL_CAUSES = ("dram_bandwidth", "dram_latency", "sram_conflict", "fill_drain")
_I = {name: i for i, name in enumerate(TILE_FIELDS)}
# base addresses of the operand regions of one GEMM (bytes); each region wraps at 1 GiB
_REGION = 1 << 30


@dataclass
class GemmTiming:
    """What the model measured for one GEMM (cycles are accelerator cycles)."""

    compute: int = 0
    stalls: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STALL_CAUSES, 0.0))
    start: float = 0.0
    end: float = 0.0
    dram_read_bytes: dict[str, int] = field(default_factory=lambda: {"A": 0, "B": 0, "C": 0})
    dram_write_bytes: int = 0
    dram_moved_bytes: int = 0
    row_hits: int = 0
    row_misses: int = 0
    row_conflicts: int = 0

    @property
    def stall_total(self) -> float:
        return sum(self.stalls.values())

    @property
    def cycles(self) -> float:
        return self.compute + self.stall_total


def sram_extra_cycles(tile_row, compute: int, ports: tuple[float, float, float]) -> int:
    """Cycles a tile takes beyond ``compute`` because the array wants more SRAM words per cycle
    than the banks × ports × width of some buffer deliver."""
    need = 0.0
    for col, bw in zip(("a_sram", "b_sram", "c_sram"), ports, strict=True):
        need = max(need, tile_row[_I[col]] / bw)
    return max(0, math.ceil(need - 1e-9) - compute)


def simulate_tiles(schedules: list[TileSchedule], arch) -> list[GemmTiming]:
    """Replay the tile schedules of consecutive GEMMs on ``arch`` with the SimPy model."""
    env = simpy.Environment()
    dram = Dram(DramTiming.from_spec(arch.dram, arch.clock_ghz))
    wb = (arch.word_bytes["ifmap"], arch.word_bytes["filter"], arch.word_bytes["ofmap"])
    ports = tuple(float(arch.sram[b].words_per_cycle) for b in ("ifmap", "filter", "ofmap"))
    timings = [GemmTiming() for _ in schedules]
    in_slots = simpy.Container(env, capacity=2, init=2)
    out_slots = simpy.Container(env, capacity=2, init=2)
    ready = simpy.Store(env)
    to_write = simpy.Store(env)
    state = {"write_ratio": 1.0, "last_compute_end": 0.0, "done": False}
    offsets = [0, 0, 0]  # running offsets into the A, B, C regions (bytes)

    def transfer(now: float, region: int, nbytes: int, write: bool, tm: GemmTiming):
        base = region * _REGION + offsets[region] % _REGION
        offsets[region] += nbytes
        res = dram.transfer(now, base, nbytes, write=write)
        tm.dram_moved_bytes += res.bytes_moved
        tm.row_hits += res.row_hits
        tm.row_misses += res.row_misses
        tm.row_conflicts += res.row_conflicts
        return res

    def reader():
        for gi, sch in enumerate(schedules):
            tm = timings[gi]
            for row in sch.tiles:
                yield in_slots.get(1)
                now = env.now
                finish, ideal = now, 0.0
                for region, col, w in ((0, "a_dram", wb[0]), (1, "b_dram", wb[1]),
                                       (2, "c_read", wb[2])):
                    nbytes = int(row[_I[col]]) * w
                    if nbytes:
                        res = transfer(now, region, nbytes, False, tm)
                        tm.dram_read_bytes["ABC"[region]] += nbytes
                        finish = max(finish, res.finish)
                        ideal += res.ideal_cycles
                took = finish - now
                if took > 0:
                    yield env.timeout(took)
                ready.put((gi, row, took, ideal))

    def pe_array():
        first = True
        for gi, sch in enumerate(schedules):
            tm = timings[gi]
            tm.start = env.now
            for _ in range(len(sch)):
                t0 = env.now
                _, row, took, ideal = yield ready.get()
                wait = env.now - t0
                if wait > 0:
                    if first:
                        tm.stalls["fill_drain"] += wait
                    else:
                        bw = wait * (min(ideal, took) / took if took > 0 else 1.0)
                        tm.stalls["dram_bandwidth"] += bw
                        tm.stalls["dram_latency"] += wait - bw
                first = False
                t1 = env.now
                yield out_slots.get(1)
                wait = env.now - t1
                if wait > 0:
                    bw = wait * state["write_ratio"]
                    tm.stalls["dram_bandwidth"] += bw
                    tm.stalls["dram_latency"] += wait - bw
                compute = int(row[_I["compute"]])
                extra = sram_extra_cycles(row, compute, ports)
                tm.compute += compute
                tm.stalls["sram_conflict"] += extra
                yield env.timeout(compute + extra)
                in_slots.put(1)
                to_write.put((gi, row))
            tm.end = env.now
            state["last_compute_end"] = env.now
        state["done"] = True

    def writer():
        total = sum(len(s) for s in schedules)
        for _ in range(total):
            gi, row = yield to_write.get()
            tm = timings[gi]
            nbytes = int(row[_I["c_write"]]) * wb[2]
            if nbytes:
                now = env.now
                res = transfer(now, 2, nbytes, True, tm)
                tm.dram_write_bytes += nbytes
                took = res.finish - now
                state["write_ratio"] = min(res.ideal_cycles, took) / took if took > 0 else 1.0
                if took > 0:
                    yield env.timeout(took)
            out_slots.put(1)

    env.process(reader())
    env.process(pe_array())
    env.process(writer())
    env.run()
    if timings:
        drain = env.now - state["last_compute_end"]
        timings[-1].stalls["fill_drain"] += drain
        timings[-1].end = env.now
    return timings
