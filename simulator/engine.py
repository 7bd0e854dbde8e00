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

Event log. ``simulate_tiles(..., log=buf)`` also appends, per tile, what each unit did and when,
as flat records of ``len(EVENT_FIELDS)`` numbers (``kind, gemm, start, end, x, y, z``; times in
cycles, ``gemm`` the schedule's index) — into an ``array.array("d")`` this costs 56 bytes a
record. ``x, y, z`` by kind (``EVENT_KINDS``):

* ``read``: bytes of A, B and C (partial sums) the reader DMA fetched for the tile;
* ``compute``: the tile's compute cycles and its SRAM-bank-conflict cycles (the array is busy
  ``end - start = x + y``);
* ``write``: bytes the writer DMA wrote back (``y = z = 0``);
* ``wait_read`` / ``wait_write``: the array stalled for a loaded tile / a free output half-buffer
  (and, as the last ``wait_write``, the final drain): the stall's DRAM-bandwidth,
  DRAM-latency/bank and fill/drain cycles (``x + y + z = end - start``).

``gemm`` and ``overhead`` records are added by ``simulator.run`` (one span per GEMM, and the
training overheads); the engine never writes them. With ``log=None`` nothing is recorded.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import simpy

from dataflows.tiles import TILE_FIELDS, TileSchedule
from simulator.dram import Dram, DramTiming
from simulator.results import COMPUTE, READ, WAIT_READ, WAIT_WRITE, WRITE

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


def sram_extra_cycles(tiles: np.ndarray, ports: tuple[float, float, float]) -> np.ndarray:
    """Per tile, the cycles beyond ``compute`` because the array wants more SRAM words per cycle
    than the banks × ports × width of some buffer deliver."""
    need = np.zeros(tiles.shape[0])
    for col, bw in zip(("a_sram", "b_sram", "c_sram"), ports, strict=True):
        need = np.maximum(need, tiles[:, _I[col]] / bw)
    extra = np.ceil(need - 1e-9) - tiles[:, _I["compute"]]
    return np.maximum(extra, 0).astype(np.int64)


class _Slots:
    """A counting semaphore with one waiting process: taking a free slot costs no event."""

    def __init__(self, env: simpy.Environment, n: int) -> None:
        self.env, self.n, self.waiter = env, n, None

    def take(self):
        """None when a slot was free (taken), else an event to wait on."""
        if self.n > 0:
            self.n -= 1
            return None
        self.waiter = self.env.event()
        return self.waiter

    def give(self) -> None:
        if self.waiter is not None:
            w, self.waiter = self.waiter, None
            w.succeed()  # the slot passes straight to the waiter
        else:
            self.n += 1


class _Queue:
    """A FIFO with one waiting consumer: getting a queued item costs no event."""

    def __init__(self, env: simpy.Environment) -> None:
        self.env, self.items, self.waiter = env, deque(), None

    def put(self, item) -> None:
        if self.waiter is not None:
            w, self.waiter = self.waiter, None
            w.succeed(item)
        else:
            self.items.append(item)

    def get(self):
        """(item, None) when one is queued, else (None, event whose value is the item)."""
        if self.items:
            return self.items.popleft(), None
        self.waiter = self.env.event()
        return None, self.waiter


class _Replay:
    """What the hardware units of one replay share: the clock, the DRAM, the double-buffer
    slots and queues between them, the per-GEMM tile plans and timings, the event log."""

    def __init__(self, schedules: list[TileSchedule], arch, log, dram_only: bool) -> None:
        self.env = simpy.Environment()
        self.dram = Dram(DramTiming.from_spec(arch.dram, arch.clock_ghz))
        self.peak = self.dram.timing.bytes_per_cycle
        self.timings = [GemmTiming() for _ in schedules]
        self.plans = _plans(schedules, arch)
        # two tiles in flight on each side: the input and output halves of the buffers
        self.in_slots, self.out_slots = _Slots(self.env, 2), _Slots(self.env, 2)
        self.ready, self.to_write = _Queue(self.env), _Queue(self.env)
        self.write_ratio = 1.0  # the last write's useful share of its DRAM time
        self.last_compute_end = 0.0
        self.offsets = [0, 0, 0]  # running offsets into the A, B, C regions (bytes)
        self.rec = None if log is None else log.extend
        self.prec = None if dram_only else self.rec  # the PE array's records

    def addr(self, region: int, nbytes: int) -> int:
        a = self.offsets[region]
        self.offsets[region] += nbytes
        return region * _REGION + a % _REGION

    @staticmethod
    def account(tm: GemmTiming, moved: int, hits: int, misses: int, conflicts: int) -> None:
        tm.dram_moved_bytes += moved
        tm.row_hits += hits
        tm.row_misses += misses
        tm.row_conflicts += conflicts


def _plans(schedules: list[TileSchedule], arch) -> list[list]:
    """Per GEMM, per tile: bytes read of A, B, C; bytes written; compute and SRAM-port
    cycles."""
    wb = (arch.word_bytes["ifmap"], arch.word_bytes["filter"], arch.word_bytes["ofmap"])
    ports = tuple(float(arch.sram[b].words_per_cycle) for b in ("ifmap", "filter", "ofmap"))
    plans = []
    for sch in schedules:
        t = sch.tiles
        plans.append(np.column_stack([
            t[:, _I["a_dram"]] * wb[0], t[:, _I["b_dram"]] * wb[1], t[:, _I["c_read"]] * wb[2],
            t[:, _I["c_write"]] * wb[2], t[:, _I["compute"]], sram_extra_cycles(t, ports),
        ]).tolist())
    return plans


def _dma_in(r: _Replay):
    """The read DMA: fetches each tile's A, B and C from DRAM into a free input half-buffer."""
    for gi, plan in enumerate(r.plans):
        tm = r.timings[gi]
        rd = tm.dram_read_bytes
        for ra, rb, rc, _w, _c, _x in plan:
            ev = r.in_slots.take()
            if ev is not None:
                yield ev
            now = r.env.now
            took = ideal = 0.0
            if ra or rb or rc:
                finish, moved, h, m, c = r.dram.transfer3(
                    now, r.addr(0, ra), ra, r.addr(1, rb), rb, r.addr(2, rc), rc)
                r.account(tm, moved, h, m, c)
                rd["A"] += ra
                rd["B"] += rb
                rd["C"] += rc
                took = finish - now
                ideal = (ra + rb + rc) / r.peak
                if r.rec is not None:
                    r.rec((READ, gi, now, finish, ra, rb, rc))
                if took > 0:
                    yield r.env.timeout(took)
            r.ready.put((took, ideal))


def _wait_read(r: _Replay, gi: int, stalls: dict, t0: float, item, first: bool) -> None:
    """Attribute the PE array's wait for a tile's data: fill before the first tile, else DRAM
    bandwidth for the transfer's share at peak rate and latency/bank for the rest."""
    took, ideal = item
    wait = r.env.now - t0
    if wait <= 0:
        return
    if first:
        stalls["fill_drain"] += wait
        if r.prec is not None:
            r.prec((WAIT_READ, gi, t0, r.env.now, 0.0, 0.0, wait))
        return
    bw = wait * (min(ideal, took) / took if took > 0 else 1.0)
    stalls["dram_bandwidth"] += bw
    stalls["dram_latency"] += wait - bw
    if r.prec is not None:
        r.prec((WAIT_READ, gi, t0, r.env.now, bw, wait - bw, 0.0))


def _pe_array(r: _Replay):
    """The PE array: computes each tile once its data is in and an output half-buffer is free,
    then hands the tile's results to the write DMA."""
    env, first = r.env, True
    for gi, plan in enumerate(r.plans):
        tm = r.timings[gi]
        stalls = tm.stalls
        tm.start = env.now
        for _ra, _rb, _rc, w, compute, extra in plan:
            t0 = env.now
            item, ev = r.ready.get()
            if ev is not None:
                item = yield ev
            _wait_read(r, gi, stalls, t0, item, first)
            first = False
            ev = r.out_slots.take()
            if ev is not None:
                t1 = env.now
                yield ev
                wait = env.now - t1
                bw = wait * r.write_ratio
                stalls["dram_bandwidth"] += bw
                stalls["dram_latency"] += wait - bw
                if r.prec is not None:
                    r.prec((WAIT_WRITE, gi, t1, env.now, bw, wait - bw, 0.0))
            tm.compute += compute
            stalls["sram_conflict"] += extra
            if r.prec is not None:
                r.prec((COMPUTE, gi, env.now, env.now + compute + extra, compute, extra, 0))
            yield env.timeout(compute + extra)
            r.in_slots.give()
            r.to_write.put((gi, w))
        tm.end = env.now
        r.last_compute_end = env.now


def _dma_out(r: _Replay):
    """The write DMA: writes each computed tile's results back to DRAM, freeing its output
    half-buffer."""
    for _ in range(sum(len(p) for p in r.plans)):
        item, ev = r.to_write.get()
        if ev is not None:
            item = yield ev
        gi, nbytes = item
        if nbytes:
            tm = r.timings[gi]
            now = r.env.now
            finish, moved, h, m, c = r.dram.transfer3(now, r.addr(2, nbytes), nbytes,
                                                      write=True)
            r.account(tm, moved, h, m, c)
            tm.dram_write_bytes += nbytes
            took = finish - now
            if r.rec is not None:
                r.rec((WRITE, gi, now, finish, nbytes, 0, 0))
            r.write_ratio = min(nbytes / r.peak, took) / took if took > 0 else 1.0
            if took > 0:
                yield r.env.timeout(took)
        r.out_slots.give()


def simulate_tiles(schedules: list[TileSchedule], arch, log=None,
                   dram_only: bool = False) -> list[GemmTiming]:
    """Replay the tile schedules of consecutive GEMMs on ``arch`` with the SimPy model: one
    process per hardware unit (read DMA, PE array, write DMA) over one timed DRAM.

    ``log``: None, or a flat sequence with ``extend`` (``array.array("d")``, a list) that
    receives the event records described in the module docstring; ``dram_only`` keeps just the
    ``read`` and ``write`` records (what the DRAM timeline needs)."""
    r = _Replay(schedules, arch, log, dram_only)
    for unit in (_dma_in, _pe_array, _dma_out):
        r.env.process(unit(r))
    r.env.run()
    timings = r.timings
    if timings:  # the drain after the last compute: the last write-backs
        drain = r.env.now - r.last_compute_end
        timings[-1].stalls["fill_drain"] += drain
        timings[-1].end = r.env.now
        if r.prec is not None and drain > 0:
            r.prec((WAIT_WRITE, len(timings) - 1, r.last_compute_end, r.env.now, 0.0, 0.0,
                    drain))
    return timings
