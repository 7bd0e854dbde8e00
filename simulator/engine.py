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

Runs of tiles. The processes above define the model; most tiles do not go through them one
SimPy event at a time. Where one unit paces a stretch (the PE array when compute-bound, the read
DMA when DRAM-bound) and the others wait in the same places tile after tile, that unit hands the
units to ``_run_kernel``, one numba call that replays the three processes event by event in
SimPy's order (time, then the order the events were scheduled), with the same DRAM calls in the
same order and the same records, up to the last point where every other unit is suspended where
it was when the run began; the generators then resume from there. The fill, the GEMM boundaries,
the drain, the top-K unit and any stretch without such points stay with the processes.
``simulate_tiles(..., runs=False)`` (or the module's ``RUNS``) turns runs off: the event log
and the timings are the same byte for byte (``tests/simulator/test_engine_runs.py``).

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
from heapq import heappush

import numpy as np
import simpy
from simpy.events import NORMAL as _NORMAL
from simpy.events import PENDING as _PENDING

from common.jit import njit
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
#: replay runs of tiles in one numba call where that is what the per-tile processes do (see
#: ``_run_kernel``); off, every tile goes through the processes (the same log and timings)
RUNS = True
_RUN_LIMIT = 4096  # tiles of the pacing unit per run at most (the size of its record buffer)
_RUN_BUDGET = 64  # events without reaching the run's shape again before it is rolled back
#: a run's state is copied (the snapshot a failed run rolls back to) at every so many points
#: of its shape, not at each: the copy, DRAM state included, was 7 % of the engine's time
_SNAP_EVERY = 8


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

    def at(self, when: float) -> simpy.Event:
        """The event, triggered at time ``when`` (>= now): how a run hands its unit back."""
        ev = self.ev
        ev.callbacks, ev._ok, ev._value = [], True, None
        heappush(self.env._queue, (when, _NORMAL, next(self.env._eid), ev))
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

    def serve(self, gi: int, ra: int, rb: int, rc: int, write: int = 0) -> float:
        """Serve one DMA request of ``ra``, ``rb``, ``rc`` bytes of A, B and C (a write, 1:
        C only) of GEMM ``gi`` requested now. Returns the cycle its last data beat ends (now
        when it moved nothing). The DMA units make this call inline (``self.call``)."""
        return _serve_kernel(float(self.env.now), ra, rb, rc, gi, self.ints, self.floats,
                             self.counts, write)

    @property
    def call(self):
        """``(kernel, ints, floats, counts)``: ``kernel(now, ra, rb, rc, gi, ints, floats,
        counts[, write])`` is ``serve`` without its Python frame (a call per transfer)."""
        return _serve_kernel, self.ints, self.floats, self.counts

    def account(self, timings: list[GemmTiming]) -> None:
        """The counters into the GEMMs' timings."""
        for tm, (moved, h, m, c) in zip(timings, self.counts.tolist(), strict=True):
            tm.dram_moved_bytes, tm.row_hits, tm.row_misses, tm.row_conflicts = moved, h, m, c


# ---------------------------------------------------------------------------------------------
# Runs: the per-tile processes (``_dma_in``, ``_pe_array``, ``_dma_out`` below), advanced
# many tiles in one numba call.
#
# ``_run_kernel`` replays the three units exactly as SimPy runs those processes: each unit
# is a program counter (where its generator is suspended), each suspended unit has at most one
# scheduled event, and the next event is the one with the smallest (time, order of
# scheduling) — SimPy's (time, priority, event id) with every event at NORMAL priority. A unit
# that resumes runs the same statements as its process, with the same DRAM calls
# (``_serve_kernel``) and the same records, until it waits again. A run starts where one unit
# (the read DMA or the PE array: the one that paces the stretch) has just been resumed from its
# timeout and every other unit is suspended on a free-slot / queue wait or on its own timeout
# (no wake-up pending); it ends at a later such point where every other unit is suspended at
# the same place as at the start, so that the generators, suspended at the run's start, resume
# correctly with the state the run hands back. Everything between two such points is
# committed only when the second is reached: a unit that would leave the GEMM, the event
# budget spent without one, or an empty schedule rolls the run (DRAM state included) back to
# a recent such point (every ``_SNAP_EVERY``-th is kept; the processes redo the rest). The
# per-tile processes do all the rest (the fill, the GEMM boundaries, the drain, the top-K
# unit).

# state array indices (ints)
_PC_D, _KD, _PC_P, _KP, _PC_W, _NB_W, _W_I, _IN_N, _OUT_N = 0, 1, 2, 3, 4, 5, 6, 7, 8
_IN_WAIT, _OUT_WAIT, _RD_WAIT, _TW_WAIT, _RQ_N, _TQ_N, _TQ0 = 9, 10, 11, 12, 13, 14, 15  # 15..18
_ACT, _SEQ, _SEQC, _NOUT, _NWAIT, _PV_NB, _NT = 19, 22, 25, 26, 27, 28, 29  # ACT/SEQ: 3 each
_N_SI = 30
# state array indices (floats)
_NOW, _TOOK_D, _IDEAL_D, _PT, _FIRST, _SHARE, _T, _RQ0, _PV_TOOK, _PV_IDEAL = (
    0, 1, 2, 3, 4, 5, 6, 9, 13, 14)  # _T: 3 pending times; _RQ0: 2 (took, ideal) items
_N_SF = 15
# program counters: where each unit's generator is suspended
_D_SLOT, _D_READ = 0, 1  # waiting for an input half / for its read
_P_READY, _P_SLOT, _P_BUSY = 0, 1, 2  # a loaded tile / an output half / computing
_W_GET, _W_WRITE = 0, 1  # the next computed tile / its write
_UD, _UP, _UW = 0, 1, 2  # units, in the order the event arrays use
# the DRAM call's constant arguments as int64, not literals: the kernel called from here and
# from the processes is then one compiled version (each loads from the cache at start-up)
_NO, _YES = np.int64(0), np.int64(1)


@njit(cache=True)
def _rec(out, n, kind, gi, t0, t1, x, y, z):
    j = n * 7
    out[j], out[j + 1], out[j + 2], out[j + 3] = kind, gi, t0, t1
    out[j + 4], out[j + 5], out[j + 6] = x, y, z
    return n + 1


@njit(cache=True)
def _rec_wait(si, out, waits, wait_out, kind, gi, t0, t1, x, y, z):
    """A wait of the PE array: into the log, or (``dram_only``) into its own buffer."""
    if wait_out:
        si[_NOUT] = _rec(out, si[_NOUT], kind, gi, t0, t1, x, y, z)
    else:
        si[_NWAIT] = _rec(waits, si[_NWAIT], kind, gi, t0, t1, x, y, z)


@njit(cache=True)
def _save(src_si, src_sf, src_ints, src_floats, src_acc, si, sf, ints, floats, acc):
    """Copy a run's state (units, DRAM, the GEMM's DRAM counters) from the first five arrays
    into the last five: a snapshot, or a roll-back."""
    si[:] = src_si
    sf[:] = src_sf
    ints[:] = src_ints
    floats[:] = src_floats
    acc[:] = src_acc


@njit(cache=True)
def _hand(si, sf, wait, n, u, now):
    """Free a slot (``n``: the count at ``si[n]``) or hand it to the unit ``u`` waiting for it
    (its flag at ``si[wait]``): ``_Slots.give``. False as ``_sched``."""
    if si[wait]:
        si[wait] = 0
        return _sched(si, sf, u, now)
    si[n] += 1
    return True


@njit(cache=True)
def _sched(si, sf, u, t):
    """Schedule unit ``u``'s event at ``t``; False if it already has one (never, by design)."""
    if si[_ACT + u]:
        return False
    si[_ACT + u] = 1
    sf[_T + u] = t
    si[_SEQ + u] = si[_SEQC]
    si[_SEQC] += 1
    return True


@njit(cache=True)
def _step_d(si, sf, rows, gi, ints, floats, acc, out, peak):
    """Resume the read DMA at ``now`` until it waits again (``_dma_in``). False: it would
    leave the GEMM."""
    now = sf[_NOW]
    n = rows.shape[0]
    read = si[_PC_D] == _D_SLOT  # woken with a free input half: read the tile
    while True:
        if read:
            k = si[_KD]
            ra, rb, rc = rows[k, 0], rows[k, 1], rows[k, 2]
            took = 0.0
            ideal = 0.0
            if ra != 0 or rb != 0 or rc != 0:
                finish = _serve_kernel(now, ra, rb, rc, gi, ints, floats, acc, _NO)
                took = finish - now
                ideal = (ra + rb + rc) / peak
                si[_NOUT] = _rec(out, si[_NOUT], READ, gi, now, finish, ra, rb, rc)
                if finish > now:
                    sf[_TOOK_D], sf[_IDEAL_D] = took, ideal
                    si[_PC_D] = _D_READ
                    return _sched(si, sf, _UD, now + took)
            sf[_TOOK_D], sf[_IDEAL_D] = took, ideal
        # put the tile in the ready queue (or hand it to the waiting PE array)
        if si[_RD_WAIT]:
            si[_RD_WAIT] = 0
            sf[_PV_TOOK], sf[_PV_IDEAL] = sf[_TOOK_D], sf[_IDEAL_D]
            if not _sched(si, sf, _UP, now):
                return False
        else:
            q = si[_RQ_N]
            if q >= 2:
                return False
            sf[_RQ0 + 2 * q], sf[_RQ0 + 2 * q + 1] = sf[_TOOK_D], sf[_IDEAL_D]
            si[_RQ_N] = q + 1
        si[_KD] += 1
        if si[_KD] >= n:
            return False
        if si[_IN_N] > 0:
            si[_IN_N] -= 1
            read = True
        else:
            si[_IN_WAIT] = 1
            si[_PC_D] = _D_SLOT
            return True


@njit(cache=True)
def _step_p(si, sf, rows, gi, out, waits, wait_out, compute_log):
    """Resume the PE array at ``now`` until it waits again (``_pe_array``). False: it would
    leave the GEMM. One function, long: it follows ``_pe_array`` statement by statement."""
    now = sf[_NOW]
    n = rows.shape[0]
    pc = si[_PC_P]
    if pc == _P_READY:  # woken with the loaded tile
        if now > sf[_PT]:
            _rec_wait(si, out, waits, wait_out, WAIT_READ, gi, sf[_PT], now, sf[_PV_TOOK],
                      sf[_PV_IDEAL], sf[_FIRST])
        sf[_FIRST] = 0.0
        stage = 1
    elif pc == _P_SLOT:  # woken with a free output half
        if now > sf[_PT]:
            _rec_wait(si, out, waits, wait_out, WAIT_WRITE, gi, sf[_PT], now, sf[_SHARE], 0.0,
                      0.0)
        stage = 2
    else:  # the tile's compute is over
        stage = 0
    while True:
        if stage == 0:
            # free the input half, queue the results for the write DMA, take the next tile
            if not _hand(si, sf, _IN_WAIT, _IN_N, _UD, now):
                return False
            w = rows[si[_KP], 3]
            if si[_TW_WAIT]:
                si[_TW_WAIT] = 0
                si[_PV_NB] = w
                if not _sched(si, sf, _UW, now):
                    return False
            else:
                q = si[_TQ_N]
                if q >= 4:
                    return False
                si[_TQ0 + q] = w
                si[_TQ_N] = q + 1
            si[_KP] += 1
            if si[_KP] >= n:
                return False
            if si[_RQ_N] > 0:  # a loaded tile is there: no wait
                sf[_RQ0], sf[_RQ0 + 1] = sf[_RQ0 + 2], sf[_RQ0 + 3]
                si[_RQ_N] -= 1
                sf[_FIRST] = 0.0
                stage = 1
            else:
                si[_RD_WAIT] = 1
                sf[_PT] = now
                si[_PC_P] = _P_READY
                return True
        if stage == 1:
            if si[_OUT_N] > 0:
                si[_OUT_N] -= 1
            else:
                si[_OUT_WAIT] = 1
                sf[_PT] = now
                si[_PC_P] = _P_SLOT
                return True
        k = si[_KP]
        compute, extra = rows[k, 4], rows[k, 5]
        busy = compute + extra
        if compute_log:
            si[_NOUT] = _rec(out, si[_NOUT], COMPUTE, gi, now, now + busy, compute, extra, 0)
        si[_PC_P] = _P_BUSY
        return _sched(si, sf, _UP, now + busy)


@njit(cache=True)
def _step_w(si, sf, gi, ints, floats, acc, out, peak):
    """Resume the write DMA at ``now`` until it waits again (``_dma_out``). False: the last
    tile of the replay is written."""
    now = sf[_NOW]
    write = si[_PC_W] == _W_GET
    if write:
        si[_NB_W] = si[_PV_NB]
    while True:
        if write:
            nb = si[_NB_W]
            if nb != 0:
                finish = _serve_kernel(now, _NO, _NO, nb, gi, ints, floats, acc, _YES)
                took = finish - now
                si[_NOUT] = _rec(out, si[_NOUT], WRITE, gi, now, finish, nb, 0, 0)
                if took > 0:
                    share = nb / peak
                    if took < share:
                        share = took
                    sf[_SHARE] = share / took
                else:
                    sf[_SHARE] = 1.0
                if finish > now:
                    si[_PC_W] = _W_WRITE
                    return _sched(si, sf, _UW, now + took)
        if not _hand(si, sf, _OUT_WAIT, _OUT_N, _UP, now):
            return False
        si[_W_I] += 1
        if si[_W_I] >= si[_NT]:
            return False
        if si[_TQ_N] > 0:
            si[_NB_W] = si[_TQ0]
            for i in range(3):
                si[_TQ0 + i] = si[_TQ0 + i + 1]
            si[_TQ_N] -= 1
            write = True
        else:
            si[_TW_WAIT] = 1
            si[_PC_W] = _W_GET
            return True


@njit(cache=True)
def _run_kernel(mode, gi, rows, si, sf, ints, floats, acc, out, waits, wait_out, compute_log,
                peak, limit, budget, snap_si, snap_sf, snap_ints, snap_floats, snap_acc):
    """Advance the units from a run's start (unit ``mode``, 0 the read DMA or 1 the PE array,
    resumed at ``sf[_NOW]`` from its timeout) to the last point of the same shape reached
    within ``limit`` tiles of the pacing unit, or, where the run fails on the way, to the last
    one snapshotted, committing nothing past it (see above). Returns
    the tiles the pacing unit advanced (0: no run; the state is as it was)."""
    n = rows.shape[0]
    cur = _KD if mode == _UD else _KP
    start = si[cur]
    sig_d, sig_p, sig_w = si[_PC_D], si[_PC_P], si[_PC_W]
    # room for the records of ``budget`` more events (at most five each) after a stop
    cap = (out.shape[0] // 7) - 5 * (budget + 4)
    wcap = cap if wait_out else (waits.shape[0] // 7) - 5 * (budget + 4)
    snap = (snap_si, snap_sf, snap_ints, snap_floats, snap_acc)
    _save(si, sf, ints, floats, acc[gi], *snap)  # the start, whatever happens
    u = mode
    events = 0
    points = 0
    while True:
        if u == mode:
            # a point of the run's shape: the others suspended where they were at its start,
            # each on its own timeout or on a wait that nobody has answered yet
            if mode == _UD:
                same = (si[_PC_D] == _D_READ and si[_PC_P] == sig_p
                        and (si[_PC_P] == _P_BUSY) == (si[_ACT + _UP] == 1))
            else:
                same = (si[_PC_P] == _P_BUSY and si[_PC_D] == sig_d
                        and (si[_PC_D] == _D_READ) == (si[_ACT + _UD] == 1))
            same = same and si[_PC_W] == sig_w and (
                (si[_PC_W] == _W_WRITE) == (si[_ACT + _UW] == 1))
            if same:
                done = si[cur] - start
                if done > 0 and (done >= limit or si[cur] >= n - 1 or si[_NOUT] >= cap
                                 or si[_NWAIT] >= wcap):
                    return done
                points += 1
                if points >= _SNAP_EVERY:
                    _save(si, sf, ints, floats, acc[gi], *snap)
                    points = 0
                events = 0
        if u == _UD:
            ok = _step_d(si, sf, rows, gi, ints, floats, acc, out, peak)
        elif u == _UP:
            ok = _step_p(si, sf, rows, gi, out, waits, wait_out, compute_log)
        else:
            ok = _step_w(si, sf, gi, ints, floats, acc, out, peak)
        # the next event: the smallest (time, order scheduled)
        u = -1
        for v in range(3):
            if si[_ACT + v] and (u < 0 or sf[_T + v] < sf[_T + u] or (
                    sf[_T + v] == sf[_T + u] and si[_SEQ + v] < si[_SEQ + u])):
                u = v
        events += 1
        if not ok or u < 0 or events > budget:
            _save(*snap, si, sf, ints, floats, acc[gi])
            return si[cur] - start
        si[_ACT + u] = 0
        sf[_NOW] = sf[_T + u]


class _Rows:
    """A GEMM's tile rows, each made a list of Python numbers (``tolist``) only when a unit
    asks for it: most tiles go through runs, which read the array."""

    __slots__ = ("cols",)

    def __init__(self, cols: np.ndarray) -> None:
        self.cols = cols

    def __len__(self) -> int:
        return self.cols.shape[0]

    def __getitem__(self, k: int) -> list:
        return self.cols[k].tolist()


class _Replay:
    """What the hardware units of one replay share: the clock, the DRAM unit, the double-buffer
    slots and queues between them, the per-GEMM tile plans and timings, the event log, and
    where each unit stands (``d_st``, ``p_st``, ``w_st``: what a run needs to take the units
    over and hands back; a unit that finds its tuple replaced after a wait was moved by one)."""

    def __init__(self, schedules: list[TileSchedule], arch, log, dram_only: bool,
                 topk: list[int], runs: bool = True) -> None:
        self.env = simpy.Environment()
        self.dram = DramUnit(self.env, arch, len(schedules))
        self.timings = [GemmTiming() for _ in schedules]
        self.schedules = schedules
        self.n_tiles = sum(len(s) for s in schedules)
        self.wb = (arch.word_bytes["ifmap"], arch.word_bytes["filter"], arch.word_bytes["ofmap"])
        self.ports = tuple(float(arch.sram[b].words_per_cycle)
                           for b in ("ifmap", "filter", "ofmap"))
        self._plans: dict[int, _Rows] = {}  # the GEMMs the units are in (two at most)
        self._arrays: dict[int, np.ndarray] = {}  # the same rows as one int64 array (runs)
        self.topk = topk
        # two tiles in flight on each side: the input and output halves of the buffers
        self.in_slots, self.out_slots = _Slots(self.env, 2), _Slots(self.env, 2)
        self.ready, self.to_write = _Queue(self.env), _Queue(self.env)
        self.write_share = 1.0  # the useful share of the write in flight's DRAM time
        self.last_compute_end = 0.0
        self.end = 0.0  # when the last write-back finished
        self.done = self.env.event()  # the GEMMs are all computed and written back
        self.log = log
        self.rec = log.extend  # the transfers, and the rest unless ``dram_only``
        self.prec = None if dram_only else self.rec  # the PE array's compute records
        # the array's waits: in the log, or (``dram_only``) in a buffer of the GEMM in flight,
        # attributed and dropped when the PE array leaves it (a step's waits can be half its
        # records)
        self.waits = None if not dram_only else array("d")
        self.wrec = self.rec if self.waits is None else self.waits.extend
        # the units' own timeouts, and where each stands while it waits
        self.d_wake, self.p_wake, self.w_wake = (_Wake(self.env) for _ in range(3))
        self.d_g = self.p_g = -1
        self.d_st = self.p_st = self.w_st = None
        self.runs = runs and len(schedules) > 0
        self.run_tiles = 0  # tiles the PE array went through inside runs
        if self.runs:
            self._si, self._sf = np.zeros(_N_SI, np.int64), np.zeros(_N_SF)
            self._snap = (np.zeros(_N_SI, np.int64), np.zeros(_N_SF),
                          self.dram.ints.copy(), self.dram.floats.copy(),
                          np.zeros(self.dram.counts.shape[1], np.int64))
            size = 7 * 5 * (_RUN_LIMIT + _RUN_BUDGET + 8)
            self._out = np.zeros(size)
            self._wout = np.zeros(size if dram_only else 7 * 5 * (_RUN_BUDGET + 8))
            self._skip, self._backoff = [0, 0], [1, 1]

    def plan(self, gi: int) -> _Rows:
        """GEMM ``gi``'s tiles as plain rows (``_Rows``): bytes read of A, B, C; bytes
        written; compute and SRAM-port cycles. Made when the read DMA reaches the GEMM,
        dropped when the PE array leaves it (``leave``), so a step holds one or two GEMMs'
        rows at a time."""
        rows = self._plans.get(gi)
        if rows is None:
            t, wb = self.schedules[gi].tiles, self.wb
            cols = np.column_stack([
                t[:, _I["a_dram"]] * wb[0], t[:, _I["b_dram"]] * wb[1],
                t[:, _I["c_read"]] * wb[2], t[:, _I["c_write"]] * wb[2], t[:, _I["compute"]],
                sram_extra_cycles(t, self.ports)])
            rows = self._plans[gi] = _Rows(cols)
            if cols.dtype == np.int64:
                self._arrays[gi] = np.ascontiguousarray(cols)
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
        self._arrays.pop(gi, None)
        if self.waits is not None:
            attribute_stalls(self.waits, self.timings)
            del self.waits[:]

    def run(self, mode: int, gi: int, k: int, took: float = 0.0, ideal: float = 0.0):
        """A run from here (``_run_kernel``): the read DMA (``mode`` 0; it has just read tile
        ``k`` of GEMM ``gi`` in ``took`` cycles, ``ideal`` at peak bandwidth) or the PE array
        (1; it has just computed tile ``k``) takes the units over. None where no run starts
        here; else where the running unit stands at the run's end — ``(k, took, ideal,
        event)``, the event its process yields next — with the other units, the buffers, the
        queues, the log and the clock's pending events set as the per-tile processes would
        have left them there."""
        skip = self._skip
        if skip[mode]:
            skip[mode] -= 1
            return None
        rows = self._arrays.get(gi)
        if rows is None or not self._load(mode, gi, k, took, ideal):
            return None
        si, dram = self._si, self.dram
        start = si[_KP] if mode == _UD else k
        done = _run_kernel(mode, gi, rows, si, self._sf, dram.ints, dram.floats, dram.counts,
                           self._out, self._wout, self.waits is None, self.prec is not None,
                           dram.peak, _RUN_LIMIT, _RUN_BUDGET, *self._snap)
        if not done:
            skip[mode] = self._backoff[mode]
            self._backoff[mode] = min(2 * self._backoff[mode], 256)
            return None
        self._backoff[mode] = 1
        self.run_tiles += int(si[_KP] - start)
        return self._hand_back(mode, gi)

    def _load(self, mode: int, gi: int, k: int, took: float, ideal: float) -> bool:
        """The units' state into the run's arrays (``run``); False where no run may start:
        a wake-up pending, a unit in another GEMM, a time still a whole number."""
        env = self.env
        now, queue = env._now, env._queue
        if type(now) is not float or len(queue) > 2 or len(self.ready.items) > 2:
            return False
        si, sf = self._si, self._sf
        si[:] = 0
        sf[:] = 0.0
        theirs = {id(self.d_wake.ev): _UD, id(self.p_wake.ev): _UP, id(self.w_wake.ev): _UW}
        for rank, (t, _prio, _eid, ev) in enumerate(sorted(queue)):
            u = theirs.get(id(ev))
            if u is None or u == mode or type(t) is not float:
                # a wake-up pending, the end of a process, or a time still a whole number (it
                # stays one while its unit adds whole cycles to it; a run's times are floats)
                return False
            si[_ACT + u], si[_SEQ + u] = 1, rank
            sf[_T + u] = t
        si[_SEQC] = len(queue)
        wst, items = self.w_st, self.to_write.items
        if (wst is None or any(g != gi for g, _ in items)
                or (wst[0] == _W_WRITE and wst[2] != gi) or len(items) > 4):
            return False
        si[_PC_W], si[_W_I] = wst[0], wst[1]
        for i, (_g, nb) in enumerate(items):
            si[_TQ0 + i] = nb
        si[_TQ_N] = len(items)
        if mode == _UD:
            if self.p_st is None or self.p_g != gi:
                return False
            si[_PC_D], si[_KD], sf[_TOOK_D], sf[_IDEAL_D] = _D_READ, k, took, ideal
            si[_PC_P], si[_KP], sf[_PT], sf[_FIRST] = self.p_st
        else:
            if self.d_st is None or self.d_g != gi:
                return False
            si[_PC_D], si[_KD], sf[_TOOK_D], sf[_IDEAL_D] = self.d_st
            si[_PC_P], si[_KP] = _P_BUSY, k
        for i, (a, b) in enumerate(self.ready.items):
            sf[_RQ0 + 2 * i], sf[_RQ0 + 2 * i + 1] = a, b
        si[_RQ_N] = len(self.ready.items)
        si[_IN_N], si[_OUT_N] = self.in_slots.n, self.out_slots.n
        si[_IN_WAIT] = self.in_slots.waiter is not None
        si[_OUT_WAIT] = self.out_slots.waiter is not None
        si[_RD_WAIT] = self.ready.waiter is not None
        si[_TW_WAIT] = self.to_write.waiter is not None
        si[_NT] = self.n_tiles
        sf[_NOW], sf[_SHARE] = now, self.write_share
        return True

    def _hand_back(self, mode: int, gi: int):
        """The run's end into the units' state, the log and the clock (``run``'s answer)."""
        si, sf, env = self._si, self._sf, self.env
        self.log.frombytes(self._out[:7 * si[_NOUT]].tobytes())
        if self.waits is not None:
            self.waits.frombytes(self._wout[:7 * si[_NWAIT]].tobytes())
        s, f = si.tolist(), sf.tolist()
        self.in_slots.n, self.out_slots.n, self.write_share = s[_IN_N], s[_OUT_N], f[_SHARE]
        self.ready.items = deque((f[_RQ0 + 2 * i], f[_RQ0 + 2 * i + 1])
                                 for i in range(s[_RQ_N]))
        self.to_write.items = deque((gi, s[_TQ0 + i]) for i in range(s[_TQ_N]))
        self.w_st = (s[_PC_W], s[_W_I], gi)
        self.d_st = (s[_PC_D], s[_KD], f[_TOOK_D], f[_IDEAL_D])
        self.p_st = (s[_PC_P], s[_KP], f[_PT], f[_FIRST])
        # the clock: the running unit's resumption first (it is the next event), then the
        # others' timeouts in the order they were scheduled
        queue = env._queue
        queue.clear()
        ev = (self.d_wake if mode == _UD else self.p_wake).at(f[_NOW])
        wakes = (self.d_wake, self.p_wake, self.w_wake)
        for _seq, u in sorted((s[_SEQ + u], u) for u in range(3) if s[_ACT + u]):
            heappush(queue, (f[_T + u], _NORMAL, next(env._eid), wakes[u].ev))
        if mode == _UD:
            return s[_KD], f[_TOOK_D], f[_IDEAL_D], ev
        return s[_KP], 0.0, 0.0, ev


def _dma_in(r: _Replay):
    """The read DMA: fetches each tile's A, B and C from DRAM into a free input half-buffer."""
    env, wake, peak, rec = r.env, r.d_wake, r.dram.peak, r.rec
    serve, ints, floats, counts = r.dram.call
    take, put = r.in_slots.take, r.ready.put
    for gi in range(len(r.timings)):
        rows = r.plan(gi)
        n, k, r.d_g = len(rows), 0, gi
        while k < n:
            ra, rb, rc, _w, _c, _x = rows[k]
            ev = take()
            if ev is not None:
                st = r.d_st = (_D_SLOT, k, 0.0, 0.0)
                yield ev
                if r.d_st is not st:  # a run moved this unit on
                    k = r.d_st[1]
                    ra, rb, rc, _w, _c, _x = rows[k]
            took = ideal = 0.0
            if ra or rb or rc:
                now = env.now
                # always a float and the write flag given: one compiled version to load
                finish = serve(float(now), ra, rb, rc, gi, ints, floats, counts, 0)
                took, ideal = finish - now, (ra + rb + rc) / peak
                rec((READ, gi, now, finish, ra, rb, rc))
                if finish > now:
                    st = r.d_st = (_D_READ, k, took, ideal)
                    yield wake.after(took)
                    if r.d_st is not st:
                        _pc, k, took, ideal = r.d_st
                    elif r.runs and k < n - 1:
                        went = r.run(_UD, gi, k, took, ideal)
                        if went is not None:
                            k, took, ideal, ev = went
                            yield ev
            put((took, ideal))
            k += 1
    r.d_g = -1


def _pe_array(r: _Replay):
    """The PE array: computes each tile once its data is in and an output half-buffer is free,
    then hands the tile's results to the write DMA. A wait is recorded with what it waited for
    (the read's time and its time at peak bandwidth; the useful share of the write in flight);
    ``attribute_stalls`` splits it by cause afterwards."""
    env, first, wake = r.env, 1.0, r.p_wake
    get, take, give, put = r.ready.get, r.out_slots.take, r.in_slots.give, r.to_write.put
    wrec, prec = r.wrec, r.prec
    for gi, tm in enumerate(r.timings):
        tm.start = env.now
        rows = r.plan(gi)
        n, k, r.p_g = len(rows), 0, gi
        while k < n:
            _ra, _rb, _rc, w, compute, extra = rows[k]
            now = env.now
            item, ev = get()
            if ev is not None:
                t0 = now
                st = r.p_st = (_P_READY, k, t0, first)
                item = yield ev
                if r.p_st is not st:  # a run moved this unit on
                    _pc, k, t0, first = r.p_st
                    _ra, _rb, _rc, w, compute, extra = rows[k]
                now = env.now
                if now > t0:  # z = 1: the first fill
                    wrec((WAIT_READ, gi, t0, now, item[0], item[1], first))
            first = 0.0
            ev = take()
            if ev is not None:
                t1 = now
                st = r.p_st = (_P_SLOT, k, t1, first)
                yield ev
                if r.p_st is not st:
                    _pc, k, t1, _first = r.p_st
                    _ra, _rb, _rc, w, compute, extra = rows[k]
                now = env.now
                if now > t1:
                    wrec((WAIT_WRITE, gi, t1, now, r.write_share, 0.0, 0.0))
            busy = compute + extra
            if prec is not None:
                prec((COMPUTE, gi, now, now + busy, compute, extra, 0))
            st = r.p_st = (_P_BUSY, k, 0.0, first)
            yield wake.after(busy)
            if r.p_st is not st:
                k = r.p_st[1]
                w = rows[k][3]
            elif r.runs and k < n - 1:
                went = r.run(_UP, gi, k)
                if went is not None:
                    k, _took, _ideal, ev = went
                    w = rows[k][3]
                    yield ev
            give()
            put((gi, w))
            k += 1
        r.leave(gi)
        tm.end = env.now
        r.last_compute_end = env.now


def _dma_out(r: _Replay):
    """The write DMA: writes each computed tile's results back to DRAM, freeing its output
    half-buffer."""
    env, wake, peak, rec = r.env, r.w_wake, r.dram.peak, r.rec
    serve, ints, floats, counts = r.dram.call
    get, give = r.to_write.get, r.out_slots.give
    i, n = 0, r.n_tiles
    while i < n:
        item, ev = get()
        if ev is not None:
            st = r.w_st = (_W_GET, i, -1)
            item = yield ev
            if r.w_st is not st:  # a run moved this unit on
                i = r.w_st[1]
        gi, nbytes = item
        if nbytes:
            now = env.now
            finish = serve(float(now), 0, 0, nbytes, gi, ints, floats, counts, 1)
            took = finish - now
            rec((WRITE, gi, now, finish, nbytes, 0, 0))
            r.write_share = min(nbytes / peak, took) / took if took > 0 else 1.0
            if finish > now:
                st = r.w_st = (_W_WRITE, i, gi)
                yield wake.after(took)
                if r.w_st is not st:
                    i = r.w_st[1]
        give()
        i += 1
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
                   topk: list[int] | None = None, runs: bool | None = None
                   ) -> list[GemmTiming]:
    """Replay the tile schedules of consecutive GEMMs on ``arch`` with the SimPy model: one
    process per hardware unit (read DMA, PE array, write DMA, top-K unit) over the DRAM unit.

    ``log``: None, or a flat sequence with ``extend`` (``array.array("d")``, a list) that
    receives the event records described in the module docstring; ``dram_only`` keeps only
    the transfers (what the DRAM timeline needs): the waits are attributed GEMM by GEMM.
    ``topk``: cycles of each of the step's top-K / mask-update jobs, run after the GEMMs.
    ``runs``: let runs of tiles go through ``_run_kernel`` (the same log and timings; None:
    the module's ``RUNS``)."""
    return replay(schedules, arch, log, dram_only, topk, runs)[0]


def replay(schedules: list[TileSchedule], arch, log=None, dram_only: bool = False,
           topk: list[int] | None = None, runs: bool | None = None
           ) -> tuple[list[GemmTiming], float]:
    """``simulate_tiles``, and the share of the tiles the PE array went through inside runs
    (0 with runs off)."""
    buf = log if isinstance(log, array) and log.typecode == "d" else array("d")
    first = len(buf) // len(EVENT_FIELDS)
    r = _Replay(schedules, arch, buf, dram_only, list(topk or ()), RUNS if runs is None else runs)
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
    return timings, r.run_tiles / max(r.n_tiles, 1)


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
