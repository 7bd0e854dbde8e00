"""The SimPy model of the accelerator: DMA engines, the PE array and the top-K unit around
double-buffered on-chip SRAM, over one shared DRAM unit.

One process per hardware unit, one event per buffer tile (``dataflows.tiles``), never per cycle;
time advances only by timeouts whose durations are computed elsewhere (closed forms, the numba
DRAM kernels):

* ``_dma_in`` (read DMA): for each tile, waits for a free input half-buffer, asks the DRAM unit
  for the tile's fresh A, B and partial-sum words and hands the tile to the array;
* ``_pe_array``: takes the next loaded tile, waits for a free output half-buffer, computes for the
  tile's cycles (closed form, plus any SRAM-port shortfall), then frees the input half and queues
  the results;
* ``_dma_out`` (write DMA): writes finished outputs and spilled partial sums back through the
  DRAM unit and frees the output half;
* ``DramUnit``: serves both DMAs' transfers on its channels and banks (``simulator.dram``), so a
  read and a write in flight together contend;
* ``_topk_unit``: once the GEMMs are written back, the step's top-K selections and mask updates.

Transfers overlap compute. Every cycle the array is not computing while a GEMM is in flight is a
stall, attributed to a cause (``docs/metrics.md``) after the run, from the event log
(``attribute_stalls``): waiting for a read is split into *DRAM bandwidth* (the part the transfer
would take at peak bandwidth) and *DRAM latency/bank* (the rest); waiting for the output buffer
to drain is split the same way from the write in flight; a shortfall of SRAM ports is *SRAM bank
conflict*; the very first fill and the last drain are *fill/drain*.

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
  DRAM-latency/bank and fill/drain cycles (``x + y + z = end - start``);
* ``overhead``: a top-K job (``x`` its cycles; ``gemm`` counts on after the GEMMs).

``gemm`` records are added by ``simulator.run`` (one span per GEMM). With ``log=None`` nothing
is returned, though the run keeps its own log for the stall attribution.
"""

from __future__ import annotations

import copy
import hashlib
import json
from array import array
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import simpy
from simpy.events import NORMAL as _NORMAL
from simpy.events import PENDING as _PENDING

from dataflows.tiles import TILE_FIELDS, TileSchedule
from simulator.dram import Dram, DramTiming, _serve_kernel, serve_state
from simulator.results import (
    COMPUTE,
    EVENT_FIELDS,
    OVERHEAD,
    READ,
    WAIT_READ,
    WAIT_WRITE,
    WRITE,
)

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


class _Wake:
    """One reusable SimPy event for a unit that waits on one thing at a time: ``after(d)`` is
    ``env.timeout(d)`` and ``succeed(v)`` is a fresh event's ``succeed(v)`` (the same priority
    and the same place in the event queue), without building an event object per tile. Safe
    because a unit yields the event and resumes from it before it asks for the next one."""

    __slots__ = ("env", "ev")

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.ev = simpy.Event(env)

    def after(self, delay: float) -> simpy.Event:
        """The event, triggered ``delay`` cycles from now (``env.timeout(delay)``)."""
        ev = self.ev
        ev.callbacks, ev._ok, ev._value = [], True, None
        self.env.schedule(ev, _NORMAL, delay)
        return ev

    def pending(self) -> simpy.Event:
        """The event, untriggered (``env.event()``): trigger it with ``succeed``."""
        ev = self.ev
        ev.callbacks, ev._value = [], _PENDING
        return ev


class _Slots:
    """A counting semaphore with one waiting process (the buffer halves one unit waits for):
    taking a free slot costs no event. SimPy's ``Container`` schedules an event for every
    take: with ``Container`` and ``Store`` in their place the timings are the same and the
    engine takes about a third longer per tile (``benchmarks/bench_engine_units.py``)."""

    def __init__(self, env: simpy.Environment, n: int) -> None:
        self.n, self.waiter, self.wake = n, None, _Wake(env)

    def take(self):
        """None when a slot was free (taken), else an event to wait on."""
        if self.n > 0:
            self.n -= 1
            return None
        self.waiter = self.wake.pending()
        return self.waiter

    def give(self) -> None:
        if self.waiter is not None:
            w, self.waiter = self.waiter, None
            w.succeed()  # the slot passes straight to the waiter
        else:
            self.n += 1


class _Queue:
    """A FIFO with one waiting consumer (``Store`` without an event per queued item)."""

    def __init__(self, env: simpy.Environment) -> None:
        self.items, self.waiter, self.wake = deque(), None, _Wake(env)

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
        self.waiter = self.wake.pending()
        return None, self.waiter


class DramUnit:
    """The DRAM as a unit of the model: the DMA engines hand it their transfers, it serves them
    on its channels and banks (``simulator.dram``: the state that makes a read and a write that
    overlap contend) and answers with the event of the transfer's last data beat. Each operand
    streams through a region of its own (A, B, C, each wrapping at 1 GiB). A request is one
    numba call (``dram._serve_kernel``: addresses, burst timing and the per-GEMM counters)."""

    def __init__(self, env: simpy.Environment, arch, n_gemms: int) -> None:
        self.env = env
        model = Dram(DramTiming.from_spec(arch.dram, arch.clock_ghz))
        self.peak = model.timing.bytes_per_cycle  # bytes per cycle, all channels
        self.ints, self.floats = serve_state(model, _REGION)
        #: per GEMM: bytes moved (whole bursts), row hits, misses, conflicts
        self.counts = np.zeros((n_gemms, 4), dtype=np.int64)

    def serve(self, gi: int, ra: int, rb: int, rc: int) -> float:
        """Serve one DMA request of ``ra``, ``rb``, ``rc`` bytes of A, B and C (a write: C
        only) of GEMM ``gi`` requested now. Returns the cycle its last data beat ends (now
        when it moved nothing). The DMA units make this call inline (``self.call``)."""
        return _serve_kernel(self.env.now, ra, rb, rc, gi, self.ints, self.floats, self.counts)

    @property
    def call(self):
        """``(kernel, ints, floats, counts)``: ``kernel(now, ra, rb, rc, gi, ints, floats,
        counts)`` is ``serve`` without its Python frame (a call per transfer)."""
        return _serve_kernel, self.ints, self.floats, self.counts

    def account(self, timings: list[GemmTiming]) -> None:
        """The counters into the GEMMs' timings."""
        for tm, (moved, h, m, c) in zip(timings, self.counts.tolist(), strict=True):
            tm.dram_moved_bytes, tm.row_hits, tm.row_misses, tm.row_conflicts = moved, h, m, c


class _Replay:
    """What the hardware units of one replay share: the clock, the DRAM unit, the double-buffer
    slots and queues between them, the per-GEMM tile plans and timings, the event log."""

    def __init__(self, schedules: list[TileSchedule], arch, log, dram_only: bool,
                 topk: list[int]) -> None:
        self.env = simpy.Environment()
        self.dram = DramUnit(self.env, arch, len(schedules))
        self.timings = [GemmTiming() for _ in schedules]
        self.schedules = schedules
        self.n_tiles = sum(len(s) for s in schedules)
        self.wb = (arch.word_bytes["ifmap"], arch.word_bytes["filter"], arch.word_bytes["ofmap"])
        self.ports = tuple(float(arch.sram[b].words_per_cycle)
                           for b in ("ifmap", "filter", "ofmap"))
        self._plans: dict[int, list] = {}  # the GEMMs the units are in (two at most)
        self.topk = topk
        # two tiles in flight on each side: the input and output halves of the buffers
        self.in_slots, self.out_slots = _Slots(self.env, 2), _Slots(self.env, 2)
        self.ready, self.to_write = _Queue(self.env), _Queue(self.env)
        self.write_share = 1.0  # the useful share of the write in flight's DRAM time
        self.last_compute_end = 0.0
        self.end = 0.0  # when the last write-back finished
        self.done = self.env.event()  # the GEMMs are all computed and written back
        self.rec = log.extend  # the transfers, and the rest unless ``dram_only``
        self.prec = None if dram_only else self.rec  # the PE array's compute records
        # the array's waits: in the log, or (``dram_only``) in a buffer of the GEMM in flight,
        # attributed and dropped when the PE array leaves it (a step's waits can be half its
        # records)
        self.waits = None if not dram_only else array("d")
        self.wrec = self.rec if self.waits is None else self.waits.extend

    def plan(self, gi: int) -> list:
        """GEMM ``gi``'s tiles as plain rows: bytes read of A, B, C; bytes written; compute
        and SRAM-port cycles. Made when the read DMA reaches the GEMM, dropped when the PE
        array leaves it (``leave``), so a step holds one or two GEMMs' rows at a time."""
        rows = self._plans.get(gi)
        if rows is None:
            t, wb = self.schedules[gi].tiles, self.wb
            cols = np.column_stack([
                t[:, _I["a_dram"]] * wb[0], t[:, _I["b_dram"]] * wb[1],
                t[:, _I["c_read"]] * wb[2], t[:, _I["c_write"]] * wb[2], t[:, _I["compute"]],
                sram_extra_cycles(t, self.ports)])
            rows = self._plans[gi] = cols.tolist()
            # what the units do to every tile, summed once (whole numbers: exact in any order)
            a, b, c, w, compute, extra = (int(v) for v in cols.sum(axis=0))
            tm = self.timings[gi]
            rd = tm.dram_read_bytes
            rd["A"], rd["B"], rd["C"] = rd["A"] + a, rd["B"] + b, rd["C"] + c
            tm.dram_write_bytes += w
            tm.compute += compute
            tm.stalls["sram_conflict"] += extra
        return rows

    def leave(self, gi: int) -> None:
        self._plans.pop(gi, None)
        if self.waits is not None:
            attribute_stalls(self.waits, self.timings)
            del self.waits[:]


def _dma_in(r: _Replay):
    """The read DMA: fetches each tile's A, B and C from DRAM into a free input half-buffer."""
    env, wake, peak, rec = r.env, _Wake(r.env), r.dram.peak, r.rec
    serve, ints, floats, counts = r.dram.call
    take, put = r.in_slots.take, r.ready.put
    for gi in range(len(r.timings)):
        for ra, rb, rc, _w, _c, _x in r.plan(gi):
            ev = take()
            if ev is not None:
                yield ev
            took = ideal = 0.0
            if ra or rb or rc:
                now = env.now
                finish = serve(now, ra, rb, rc, gi, ints, floats, counts)
                took, ideal = finish - now, (ra + rb + rc) / peak
                rec((READ, gi, now, finish, ra, rb, rc))
                if finish > now:
                    yield wake.after(took)
            put((took, ideal))


def _pe_array(r: _Replay):
    """The PE array: computes each tile once its data is in and an output half-buffer is free,
    then hands the tile's results to the write DMA. A wait is recorded with what it waited for
    (the read's time and its time at peak bandwidth; the useful share of the write in flight);
    ``attribute_stalls`` splits it by cause afterwards."""
    env, first, wake = r.env, 1.0, _Wake(r.env)
    get, take, give, put = r.ready.get, r.out_slots.take, r.in_slots.give, r.to_write.put
    wrec, prec = r.wrec, r.prec
    for gi, tm in enumerate(r.timings):
        tm.start = env.now
        for _ra, _rb, _rc, w, compute, extra in r.plan(gi):
            now = env.now
            item, ev = get()
            if ev is not None:
                t0 = now
                item = yield ev
                now = env.now
                if now > t0:  # z = 1: the first fill
                    wrec((WAIT_READ, gi, t0, now, item[0], item[1], first))
            first = 0.0
            ev = take()
            if ev is not None:
                t1 = now
                yield ev
                now = env.now
                if now > t1:
                    wrec((WAIT_WRITE, gi, t1, now, r.write_share, 0.0, 0.0))
            busy = compute + extra
            if prec is not None:
                prec((COMPUTE, gi, now, now + busy, compute, extra, 0))
            yield wake.after(busy)
            give()
            put((gi, w))
        r.leave(gi)
        tm.end = env.now
        r.last_compute_end = env.now


def _dma_out(r: _Replay):
    """The write DMA: writes each computed tile's results back to DRAM, freeing its output
    half-buffer."""
    env, wake, peak, rec = r.env, _Wake(r.env), r.dram.peak, r.rec
    serve, ints, floats, counts = r.dram.call
    get, give = r.to_write.get, r.out_slots.give
    for _ in range(r.n_tiles):
        item, ev = get()
        if ev is not None:
            item = yield ev
        gi, nbytes = item
        if nbytes:
            now = env.now
            finish = serve(now, 0, 0, nbytes, gi, ints, floats, counts)
            took = finish - now
            rec((WRITE, gi, now, finish, nbytes, 0, 0))
            r.write_share = min(nbytes / peak, took) / took if took > 0 else 1.0
            if finish > now:
                yield wake.after(took)
        give()
    r.end = env.now
    if r.timings and r.end > r.last_compute_end:  # the drain: the last write-backs
        r.wrec((WAIT_WRITE, len(r.timings) - 1, r.last_compute_end, r.end, 0.0, 0.0, 1.0))
    r.done.succeed()


def _topk_unit(r: _Replay):
    """The top-K / threshold unit: the step's selections and mask updates (``topk`` cycles
    each, from the closed form of ``simulator.run.overhead_rows``) once the GEMMs are done; the
    step counts them serially after its GEMMs."""
    yield r.done
    n = len(r.timings)
    for i, cycles in enumerate(r.topk):
        if r.prec is not None:
            r.prec((OVERHEAD, n + i, r.env.now, r.env.now + cycles, cycles, 0, 0))
        yield r.env.timeout(cycles)


def attribute_stalls(log: array, timings: list[GemmTiming], first: int = 0) -> None:
    """Split the PE array's recorded waits by cause, in place in the log (``x, y, z`` become
    the DRAM-bandwidth, DRAM-latency/bank and fill/drain cycles) and into each GEMM's
    ``stalls``: the very first wait is the fill; a wait for a read is DRAM bandwidth for the
    share of the read's time its bytes take at peak bandwidth and latency/bank for the rest;
    a wait for an output half the same with the write in flight; the final drain (recorded,
    like the first wait, with ``z`` = 1) is fill/drain. Sums run in event order. ``first``: the
    log's first record of this replay."""
    rec = np.frombuffer(log, dtype=np.float64).reshape(-1, len(EVENT_FIELDS))[first:]
    rows = np.flatnonzero((rec[:, 0] == WAIT_READ) | (rec[:, 0] == WAIT_WRITE))
    w = rec[rows]
    wait = w[:, 3] - w[:, 2]
    took, ideal, first = w[:, 4], w[:, 5], w[:, 6] > 0
    reads = w[:, 0] == WAIT_READ
    safe = np.where(took > 0, took, 1.0)
    share = np.where(reads, np.where(took > 0, np.minimum(ideal, took) / safe, 1.0), w[:, 4])
    bw = np.where(first, 0.0, wait * share)
    lat = np.where(first, 0.0, wait - bw)
    fill = np.where(first, wait, 0.0)
    gi = w[:, 1].astype(np.int64)
    for cause, v in (("dram_bandwidth", bw), ("dram_latency", lat), ("fill_drain", fill)):
        acc = np.zeros(len(timings))
        np.add.at(acc, gi, v)  # in event order, as the stalls happened
        for g in np.unique(gi):
            timings[g].stalls[cause] += acc[g]
    rec[rows, 4], rec[rows, 5], rec[rows, 6] = bw, lat, fill
    del rec


def simulate_tiles(schedules: list[TileSchedule], arch, log=None, dram_only: bool = False,
                   topk: list[int] | None = None) -> list[GemmTiming]:
    """Replay the tile schedules of consecutive GEMMs on ``arch`` with the SimPy model: one
    process per hardware unit (read DMA, PE array, write DMA, top-K unit) over the DRAM unit.

    ``log``: None, or a flat sequence with ``extend`` (``array.array("d")``, a list) that
    receives the event records described in the module docstring; ``dram_only`` keeps only
    the transfers (what the DRAM timeline needs): the waits are attributed GEMM by GEMM.
    ``topk``: cycles of each of the step's top-K / mask-update jobs, run after the GEMMs."""
    buf = log if isinstance(log, array) and log.typecode == "d" else array("d")
    first = len(buf) // len(EVENT_FIELDS)
    r = _Replay(schedules, arch, buf, dram_only, list(topk or ()))
    for unit in (_dma_in, _pe_array, _dma_out, _topk_unit):
        r.env.process(unit(r))
    r.env.run()
    timings = r.timings
    r.dram.account(timings)
    attribute_stalls(buf if r.waits is None else r.waits, timings,
                     first if r.waits is None else 0)
    if log is not None and buf is not log:
        log.extend(buf)
    if timings:
        timings[-1].end = r.end
    return timings


def _replay_key(schedules: list[TileSchedule], arch, dram_only: bool, topk: list[int]) -> bytes:
    """What a replay depends on: the architecture, the tiles of every GEMM in order, and the
    top-K jobs where they leave records (not ``dram_only``)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(json.dumps(arch.to_dict(), sort_keys=True, default=str).encode())
    h.update(repr((dram_only, () if dram_only else tuple(topk), len(schedules))).encode())
    for s in schedules:
        t = np.ascontiguousarray(s.tiles)
        h.update(repr((t.shape, t.dtype.str)).encode())
        h.update(t.data)
    return h.digest()


class Replays:
    """Replays computed once: a replay of the same tiles on the same architecture gives the
    same timings and the same log, so one that repeats the last (the steps of a trace on an
    architecture without sparse features, whose tiles equal the dense baseline's) is a copy
    of it. Holds the last replay only, dropped before a different one starts."""

    def __init__(self) -> None:
        self.key: bytes | None = None
        self.timings: list[GemmTiming] = []
        self.log = array("d")
        self.hits = 0
        self._schedules: dict = {}
        self.schedule_hits = 0

    def schedule(self, key, make) -> TileSchedule:
        """The tile schedule of one GEMM made once per command: ``make()`` the first time
        ``key`` (everything the schedule depends on, hashable) is asked for, the same
        schedule after (the dense baseline's GEMMs and a step's are the same GEMMs when the
        architecture has no sparse features). Schedules are never modified once made."""
        sched = self._schedules.get(key)
        if sched is None:
            sched = self._schedules[key] = make()
        else:
            self.schedule_hits += 1
        return sched

    def simulate_tiles(self, schedules: list[TileSchedule], arch, log=None,
                       dram_only: bool = False, topk: list[int] | None = None
                       ) -> list[GemmTiming]:
        """``simulate_tiles``, or a copy of the last replay when it had the same inputs."""
        topk = list(topk or ())
        key = _replay_key(schedules, arch, dram_only, topk)
        if key != self.key:
            self.key, self.timings, self.log = None, [], array("d")
            own = array("d")
            self.timings = simulate_tiles(schedules, arch, own, dram_only, topk)
            self.key, self.log = key, own
        else:
            self.hits += 1
        if log is not None:
            log.extend(self.log)
        return copy.deepcopy(self.timings)
