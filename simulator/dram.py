"""DRAM timing model: channels, bank groups, banks, open rows and burst-granular transfers.

The SimPy engine calls :meth:`Dram.transfer` once per DMA transfer of a buffer tile; the per-burst
loop is a serial numba kernel over small state arrays, so one call costs a few microseconds. All
times are accelerator clock cycles, kept as float64 (a burst may occupy a bus for a fractional
number of cycles).

Address mapping
---------------
For a byte address ``a``, with ``bursts_per_row = row_buffer_bytes // burst_bytes`` and ``G =
bank_groups`` (banks are numbered ``bank = bank_in_group * G + group``)::

    b          = a // burst_bytes           # global burst index
    channel    = b % channels               # consecutive bursts interleave across channels
    j          = b // channels              # burst index inside the channel

``mapping: channel_column_bank`` (the default; DRAMsim3's ``ro ba bg co ch``: the column right
above the channel, a channel's consecutive bursts stay in one row)::

    column     = j % bursts_per_row         # burst inside a row (not needed for timing)
    row_global = j // bursts_per_row        # a row_buffer_bytes-sized row of one channel
    bank       = row_global % banks         # consecutive rows of a channel rotate over banks
    row        = row_global // banks        # the row inside that bank
    group      = bank % G

``mapping: channel_group_column_bank`` (DRAMsim3's ``ro ba co bg ch``: the bank group right above
the channel, as DDR4 controllers interleave, so a channel's consecutive bursts alternate groups
and stream at tCCD_S)::

    group      = j % G
    column     = (j // G) % bursts_per_row
    block      = j // G // bursts_per_row   # the same row of one bank in every group
    bank       = (block % (banks // G)) * G + group
    row        = block // (banks // G)

Transfer shape
--------------
A transfer is ``n_runs`` contiguous runs of ``run_bytes`` bytes starting at
``base + i * stride`` (a tile of rows of a row-major matrix; runs may not overlap, so
``stride >= run_bytes`` when ``n_runs > 1``). Each run moves every burst it
touches, whole (a run that does not start or end on a burst boundary moves more bytes than it
needs); a burst that is the same as the one fetched just before it (the last burst of one run and
the first of the next, or runs packed closer than a burst) is fetched once.

Timing rules (per burst, in the order the bursts appear in the transfer)
-----------------------------------------------------------------------
* One DMA engine issues all bursts of a transfer in order, pipelined with unlimited outstanding
  requests, at ``t0 = now + latency_cycles`` (the controller/interconnect latency is paid once per
  transfer, on its first burst; the bursts behind it overlap with it). :meth:`Dram.stream` takes
  one-burst requests, each with its own time (``t0 = now[i] + latency_cycles``).
* Queues (per channel; channels are independent). With ``queue_depth = 1`` and no bank queues
  (``bank_queue_depth = 0``) a channel serves its bursts in the order they were requested.
  Otherwise the channel's controller *admits* its requests in order, none before its ``t0``
  (it chooses when the bus is free or, later, when its oldest waiting request came, among the
  requests offered by then; with none waiting, when the next comes): with bank queues, a request
  goes into its bank's queue while that holds fewer than ``bank_queue_depth`` admitted requests,
  else it waits in the transaction queue, and admission stops while ``queue_depth`` requests wait
  there; without bank queues, admission stops at ``queue_depth`` admitted requests. Each time,
  of the requests in the bank queues (all admitted ones without bank queues) the controller serves
  the one whose ``data_start`` below is smallest, the oldest on a tie (so row hits and ready banks
  pass a request that waits for its row: first-ready, first-come) — but a row hit does not pass
  an older request of its bank for another row that could precharge before the hit was
  requested (at ``max(its t0, bank_ready[bank], the end of a written burst + tWR, the bank's
  activate + tRAS)``): a controller that issues each command when it is legal had closed the
  row by then (requests offered together, as a transfer's, never meet this); a served request
  leaves, and admission goes on. A transfer's bursts are requests at the same ``t0``; a
  transfer's queue starts empty (calls do not reorder across each other), and ``transfer3``'s
  three runs are one transfer.
* Refresh (when ``tREFI > 0``): every channel owes a refresh at ``tREFI, 2 tREFI, ...``. Before a
  burst on a channel, with ``t = max(t0, bus_free[ch])``: if ``t >= next_ref[ch]``, the last
  refresh due by ``t`` (``r = next_ref + floor((t - next_ref) / tREFI) * tREFI``; the ones before
  it fell in idle time) precharges all the channel's banks and refreshes them from
  ``max(r, bus_free[ch])``: every bank's open row is closed and ``bank_ready = max(bank_ready,
  max(r, bus_free[ch]) + tRP + tRFC)``; ``next_ref[ch] = r + tREFI``.
* Open-page policy: a burst is a row *hit* (its bank has its row open), a *miss* (the bank is
  precharged: at start, after :meth:`Dram.reset` or a refresh) or a *conflict* (another row is
  open). The accessed row is left open. The bank's command starts at ``cmd = max(t0,
  bank_ready[bank])``; the data may start at ``ready``:

  - hit: ``ready = cmd + tCL``; with any later rule on (any of the keys below, a queue or the
    interleaved mapping with more than one group), ``ready = max(t0 + tCL, end of the bank's
    last data)`` instead (the same number in exact arithmetic, and one the fast path can take
    without rounding);
  - miss / conflict, no activate limits (``tRRD_S = tRRD_L = tFAW = tRAS = 0``): ``ready = cmd +
    tRCD + tCL`` / ``cmd + tRP + tRCD + tCL``;
  - miss / conflict with activate limits: the activate goes at ``act = max(a, last_act[ch] +
    tRRD_S, last_act[ch, group] + tRRD_L, act_4_ago[ch] + tFAW)``, where ``a = cmd`` on a miss
    and ``a = max(cmd, act_time[bank] + tRAS) + tRP`` on a conflict (the precharge waits tRAS
    after the bank's own activate); ``act_4_ago`` is the fourth-last activate of the channel
    (activates happen in burst order, so these are the last ones timed); ``ready = act + tRCD +
    tCL``; ``act`` becomes the bank's, the group's and the channel's last activate.
* ``data_start = max(bus_free[ch], ready)``, and with ``tCCD_L > 0`` also ``>=
  last_start[ch, group] + tCCD_L`` (column commands to one bank group tCCD_L apart; to
  different groups tCCD_S, which is the burst itself); the data occupies the channel's bus for
  ``t_burst = burst_bytes / (bytes_per_cycle / channels)`` cycles: ``data_end = data_start +
  t_burst``, ``bus_free[ch] = data_end``, ``last_start[ch, group] = data_start``.
* Simplification for bank occupancy: ``bank_ready = data_end - tCL``. A bank can issue its next
  column read so that its data follows the previous burst's data back-to-back (row hits stream at
  the full bus rate), and a precharge + activate for a new row starts only then, so a row change
  on a bank costs ``tRP + tRCD`` of bus idle time unless other banks' data fills it (bank
  parallelism). A write's bank and bus timing is a read's, but for the rules below.
* Writes (each rule off at 0). A transfer is all reads or all writes (``write``; the engine's
  writer sets it). Before its first burst on a channel whose last burst went the other way, the
  bus turns around: ``bus_free[ch] += tWTR + tCL`` (write to read: the read command tWTR after
  the write data, its data tCL later) or ``+= tRTW`` (read to write). When a bank's last data
  was written, its miss or conflict has ``cmd = max(t0, bank_ready[bank], end of that data +
  tWR)`` (write recovery before the precharge; tWR > 0 also turns the hit rule above to its
  second form).
* Write buffer (``write_queue_depth`` W > 0; :meth:`Dram.stream` only, the transfers above are
  whole batches already). A channel admits its requests in order, a read into the queues above
  while they have room, a write into its W-entry buffer while it has room; the first request
  that does not fit holds back the rest. A write is done (posted) when the buffer takes it: at
  its ``t0``, or when the slot it takes was freed, at the data start of the write drained from
  it. The controller serves reads as above, and drains the buffer (each time the buffered
  write whose data can start first, the oldest on a tie, a row hit held back by the same rule;
  the bus turned to write, then back to read after it) when no read is left to come (all of
  it), when the buffer is full and no admitted read can start its data before the ``t0`` of
  the write that filled it (all of it), or when more than ``write_drain_threshold`` L writes
  wait and the next read's ``t0`` (admitted or to come) is later than ``td =
  max(bus_free[ch], t0 of the (L+1)-th buffered write)`` (the writes requested by ``td``);
  otherwise, with no read admitted, the writes wait for the next request. During a drain,
  the reads queued when it began (in their bank queues) still go: one whose data can start
  before the next write's, each with the bus turned its way (``+ tWTR + tCL`` or ``+ tRTW``
  where the bus last went the other way), is served first (of them, the one ``_pick``
  chooses), as a controller serves the reads already in its command queues while it drains
  (so a bank's write recovery overlaps other banks' reads); reads admitted during the drain
  wait for its end. Without a buffer a stream's writes queue and time as reads.
* ``finish`` is the end of the transfer's last data beat. ``ideal_cycles = bytes_useful /
  bytes_per_cycle`` (all channels at peak), and ``finish - start >= ideal_cycles`` always, so the
  engine can charge ``ideal_cycles`` of a wait to DRAM bandwidth and the rest
  (:attr:`TransferResult.overhead_cycles`) to DRAM latency/banks.

With every later key at its default (one bank group or the default mapping, ``tCCD_L``,
``tRRD_*``, ``tFAW``, ``tRAS``, ``tREFI``, ``tWTR``, ``tRTW``, ``tWR`` all 0, ``queue_depth`` 1,
``bank_queue_depth`` and ``write_queue_depth`` 0) the rules are the first model's, float
operation for float operation; with the write keys at 0 they are those of the model before
them.

Fast path
---------
The engine's requests (``_serve_kernel`` -> ``transfer3``) are contiguous runs. A channel's bursts
are walked one row block at a time (a row of one bank; with the interleaved mapping the same row of
one bank in every group), located without divisions. Without the later rules a block's first burst
takes the bank logic and the rest are row hits at the bus rate (float additions only). With them,
the oldest burst is served at once when its data can start when the bus is free or tCL after its
request (no request can do better and the oldest wins a tie; the queue is then not even looked at),
and once a block's banks have each been served in order, the rest of the block goes at the bus
rate, its bank and group state written as it goes, until the run ends or a refresh is due; where
every time of that run is an exact float (the burst time and the bus a multiple of one power of
two) it is written in closed form, each bank's last burst only. When the oldest burst would leave
the bus idle, the requests the controller would admit are looked over without admitting them (a row
block's bursts after its first banks' add no new candidate); when a younger one wins, only the
bursts it passes are queued, and the next look goes over those and then the walk. The tests hold
these paths equal to a plain-Python event loop of the rules above, float for float.

Channels are independent, and a request's runs give most channels the same bursts (the same
channel burst indices, so the same banks and rows) as the channel before them: a channel that
starts in the same state as the one before it, value for value, and has the same bursts ends as
that one ended, so its state is copied from it and its counts added again instead of walking it
(about half of the engine's channel walks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np

from common.jit import njit

__all__ = ["MAPPINGS", "Dram", "DramStats", "DramTiming", "TransferResult", "map_address"]

#: address mappings (the module docstring), the default first
MAPPINGS = ("channel_column_bank", "channel_group_column_bank")

#: the timings beyond the first model, all cycles >= 0, 0 = the rule is off
_EXTRA_TIMINGS = ("tCCD_L", "tRRD_S", "tRRD_L", "tFAW", "tRAS", "tREFI", "tRFC", "tWTR", "tRTW",
                  "tWR")


@dataclass(frozen=True)
class DramTiming:
    """The DRAM parameters the timing model needs, as plain numbers.

    ``bytes_per_cycle`` is the total peak over all channels, in bytes per accelerator cycle;
    ``latency_cycles`` and every ``t*`` timing are in accelerator cycles (0 turns the rules of
    ``tCCD_L``, ``tRRD_S``/``tRRD_L``/``tFAW``/``tRAS``, ``tREFI``/``tRFC`` and ``tWTR``,
    ``tRTW``, ``tWR`` off); ``write_queue_depth`` 0 = no write buffer.
    """

    channels: int
    bytes_per_cycle: float
    latency_cycles: float
    banks_per_channel: int
    row_buffer_bytes: int
    burst_bytes: int
    tRCD: float
    tCL: float
    tRP: float
    bank_groups: int = 1
    mapping: str = MAPPINGS[0]
    tCCD_L: float = 0.0
    tRRD_S: float = 0.0
    tRRD_L: float = 0.0
    tFAW: float = 0.0
    tRAS: float = 0.0
    tREFI: float = 0.0
    tRFC: float = 0.0
    queue_depth: int = 1
    bank_queue_depth: int = 0
    write_queue_depth: int = 0
    write_drain_threshold: int = 0
    tWTR: float = 0.0
    tRTW: float = 0.0
    tWR: float = 0.0

    def __post_init__(self) -> None:
        for name in ("channels", "banks_per_channel", "row_buffer_bytes", "burst_bytes",
                     "bank_groups", "queue_depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"DramTiming.{name}: expected a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if not self.bytes_per_cycle > 0:
            raise ValueError(
                f"DramTiming.bytes_per_cycle: expected a positive number, got "
                f"{self.bytes_per_cycle!r}"
            )
        object.__setattr__(self, "bytes_per_cycle", float(self.bytes_per_cycle))
        for name in ("latency_cycles", "tRCD", "tCL", "tRP", *_EXTRA_TIMINGS):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"DramTiming.{name}: expected cycles >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.row_buffer_bytes % self.burst_bytes:
            raise ValueError(
                f"DramTiming.row_buffer_bytes: expected a multiple of burst_bytes "
                f"({self.burst_bytes}), got {self.row_buffer_bytes}"
            )
        if self.banks_per_channel % self.bank_groups:
            raise ValueError(
                f"DramTiming.bank_groups: expected a divisor of banks_per_channel "
                f"({self.banks_per_channel}), got {self.bank_groups}"
            )
        for name in ("bank_queue_depth", "write_queue_depth", "write_drain_threshold"):
            bq = getattr(self, name)
            if isinstance(bq, bool) or int(bq) != bq or bq < 0:
                raise ValueError(f"DramTiming.{name}: expected an integer >= 0, got {bq!r}")
            object.__setattr__(self, name, int(bq))
        if self.mapping not in MAPPINGS:
            raise ValueError(f"DramTiming.mapping: expected one of {', '.join(MAPPINGS)}, got "
                             f"{self.mapping!r}")
        if self.tRFC and not self.tREFI:
            raise ValueError(f"DramTiming.tRFC: expected 0 when tREFI is 0 (no refresh), got "
                             f"{self.tRFC!r}")
        if self.tREFI and not self.tRP + self.tRFC < self.tREFI:
            raise ValueError(f"DramTiming.tREFI: expected more than tRP + tRFC "
                             f"({self.tRP + self.tRFC:g}), got {self.tREFI!r}")

    @classmethod
    def from_spec(cls, spec: Any, clock_ghz: float) -> DramTiming:
        """Read a DRAM spec object (``arch.DramSpec`` or anything with the same attributes; the
        keys beyond the first model are optional).

        The peak comes from ``spec.bytes_per_cycle(clock_ghz)`` when the spec has it, else from
        ``spec.bandwidth_gbps / clock_ghz`` (GB/s over Gcycles/s is bytes per cycle).
        """
        per_cycle = getattr(spec, "bytes_per_cycle", None)
        if callable(per_cycle):
            bpc = float(per_cycle(clock_ghz))
        else:
            bpc = float(spec.bandwidth_gbps) / float(clock_ghz)
        extra = {name: getattr(spec, name)
                 for name in ("bank_groups", "mapping", "queue_depth", "bank_queue_depth",
                              "write_queue_depth", "write_drain_threshold", *_EXTRA_TIMINGS)
                 if hasattr(spec, name)}
        return cls(
            channels=spec.channels,
            bytes_per_cycle=bpc,
            latency_cycles=spec.latency_cycles,
            banks_per_channel=spec.banks_per_channel,
            row_buffer_bytes=spec.row_buffer_bytes,
            burst_bytes=spec.burst_bytes,
            tRCD=spec.tRCD,
            tCL=spec.tCL,
            tRP=spec.tRP,
            **extra,
        )

    @property
    def bursts_per_row(self) -> int:
        return self.row_buffer_bytes // self.burst_bytes

    @property
    def burst_cycles(self) -> float:
        """Cycles one burst occupies its channel's data bus."""
        return self.burst_bytes / (self.bytes_per_cycle / self.channels)


def map_address(timing: DramTiming, addr: int) -> tuple[int, int, int, int]:
    """``(channel, bank, row, column)`` of byte address ``addr`` (see the module docstring)."""
    b = addr // timing.burst_bytes
    channel = b % timing.channels
    j = b // timing.channels
    bpr, groups, banks = timing.bursts_per_row, timing.bank_groups, timing.banks_per_channel
    if timing.mapping == MAPPINGS[1]:
        block = j // groups // bpr
        per_group = banks // groups
        return (channel, (block % per_group) * groups + j % groups, block // per_group,
                (j // groups) % bpr)
    row_global = j // bpr
    return (channel, row_global % banks, row_global // banks, j % bpr)


class TransferResult(NamedTuple):
    """What one transfer did; times in cycles. (A NamedTuple: immutable and cheap to build.)"""

    start: float  #: the ``now`` the transfer was requested at
    finish: float  #: end of its last data beat
    bytes_useful: int  #: run_bytes * n_runs
    bytes_moved: int  #: bursts * burst_bytes (includes burst-alignment waste)
    bursts: int
    row_hits: int
    row_misses: int
    row_conflicts: int
    ideal_cycles: float  #: bytes_useful / peak bytes_per_cycle (all channels)

    @property
    def cycles(self) -> float:
        """``finish - start``."""
        return self.finish - self.start

    @property
    def overhead_cycles(self) -> float:
        """The part of ``cycles`` beyond the bandwidth-ideal time (latency, banks, contention)."""
        return max(0.0, self.finish - self.start - self.ideal_cycles)


@dataclass
class DramStats:
    """Totals over all transfers since construction or :meth:`Dram.reset`."""

    transfers: int = 0
    bursts: int = 0
    bytes_useful: int = 0
    bytes_moved: int = 0
    bytes_read: int = 0  #: moved bytes of reads
    bytes_written: int = 0  #: moved bytes of writes
    row_hits: int = 0
    row_misses: int = 0
    row_conflicts: int = 0
    busy_cycles: float = 0.0  #: data-bus busy time summed over channels (bursts * burst_cycles)
    ideal_cycles: float = 0.0  #: sum of the transfers' ideal_cycles

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ------------------------------------------------------------------------------------------------
# state layout (``Dram.ints`` / ``Dram.floats``; ``serve_state`` hands the engine a copy)
# ------------------------------------------------------------------------------------------------
#: ints header: burst bytes, channels, banks per channel, bursts per row, region, A/B/C offsets,
#: bank groups, mapping (0 channel_column_bank, 1 channel_group_column_bank), plain (1 when no
#: rule beyond the first model is on), queue depth, bank queue depth, write buffer depth, write
#: drain threshold, then the open row of every bank (-1: precharged), then room for the queues
#: (``_queues``)
_I_GROUPS, _I_MAP, _I_PLAIN, _I_QUEUE, _I_BANKQ, _I_WQ, _I_WLOW = 8, 9, 10, 11, 12, 13, 14
_IH = 15
#: floats header: latency, hit/miss/conflict latencies, tCL, burst cycles, tCCD_L, tRRD_S,
#: tRRD_L, tFAW, tRAS, tREFI, tRFC, tRP, tRCD, activate limits on (1.0 / 0.0), then the bus
#: turnarounds: write to read (tWTR + tCL), read to write (tRTW), then tWR
_F_CCDL, _F_RRDS, _F_RRDL, _F_FAW, _F_RAS, _F_REFI, _F_RFC, _F_RP, _F_RCD, _F_ACT = range(6, 16)
_F_WTR, _F_RTW, _F_WR = 16, 17, 18
_FH = 19
#: "never": the time of an activate that did not happen (finite, so that + tFAW stays finite)
_NEVER = -1e18


@njit(cache=True, inline="always")
def _u(i):
    """Index ``i`` (>= 0) as unsigned: numba checks a signed index for a negative value on
    every access (to count it from the end); the state's indices never are, and on the
    engine's requests the checks took about a seventh of the request kernel's time."""
    return np.uint64(i)


@njit(cache=True, inline="always")
def _offsets(channels, banks, groups):
    """Where each state array starts in ``floats``: bus free (per channel), bank ready (per
    bank), last activate of a bank, last activate of a channel, last activate of a bank group,
    the channel's last four activates (oldest first), last data start of a bank group, next
    refresh of a channel."""
    nb = channels * banks
    o_bus = _FH
    o_ready = o_bus + channels
    o_act = o_ready + nb
    o_last = o_act + nb
    o_lastg = o_last + channels
    o_faw = o_lastg + channels * groups
    o_start = o_faw + 4 * channels
    o_ref = o_start + channels * groups
    return o_bus, o_ready, o_act, o_last, o_lastg, o_faw, o_start, o_ref, o_ref + channels


@njit(cache=True, inline="always")
def _locate(b, channels, banks, bpr, groups, mapping):
    """``(channel, bank, row, bank group)`` of global burst index ``b`` (module docstring)."""
    ch = b % channels
    j = b // channels
    if mapping == 1:
        g = j % groups
        block = j // groups // bpr
        per_group = banks // groups
        bank = (block % per_group) * groups + g
        row = block // per_group
    else:
        row_global = j // bpr
        bank = row_global % banks
        row = row_global // banks
        g = bank % groups
    return ch, bank, row, g


@njit(cache=True, inline="always")
def _refresh(t0, ch, ints, floats):
    """Refresh channel ``ch`` if one is due before a burst requested at ``t0`` (docstring)."""
    refi = floats[_F_REFI]
    if refi > 0.0:
        banks = ints[2]
        o_bus, o_ready = _FH, _FH + ints[1]
        o_ref = _offsets(ints[1], banks, ints[_I_GROUPS])[7]
        t = max(t0, floats[_u(o_bus + ch)])
        due = floats[_u(o_ref + ch)]
        if t >= due:  # the last refresh due by t: precharge all, refresh, then the banks wait
            r = due + math.floor((t - due) / refi) * refi
            end = max(r, floats[_u(o_bus + ch)]) + floats[_F_RP] + floats[_F_RFC]
            for i in range(ch * banks, ch * banks + banks):
                ints[_u(_IH + i)] = -1
                if floats[_u(o_ready + i)] < end:
                    floats[_u(o_ready + i)] = end
            floats[_u(o_ref + ch)] = r + refi


@njit(cache=True, inline="always")
def _evaluate(t0, ch, bank, row, g, ints, floats):
    """When a burst on ``(ch, bank, row)`` of group ``g`` requested at ``t0`` would start its
    data if it were served next, without changing the state: ``(data_start, kind, act)``, kind
    0 row hit, 1 miss, 2 conflict; ``act`` its activate (activate limits on) or 0."""
    channels = ints[1]
    banks = ints[2]
    groups = ints[_I_GROUPS]
    o_bus, o_ready, o_act, o_last, o_lastg, o_faw, o_start, o_ref, o_end = _offsets(
        channels, banks, groups)
    k = ch * banks + bank
    open_r = ints[_u(_IH + k)]
    cmd = max(t0, floats[_u(o_ready + k)])
    act = 0.0
    if open_r == row:
        kind = 0
        if ints[_I_PLAIN] == 1:
            ready = cmd + floats[1]
        else:  # after the bank's previous data, and tCL after the request
            ready = max(t0 + floats[4], floats[_u(o_end + k)])
    else:
        kind = 1 if open_r < 0 else 2
        if floats[_F_WR] > 0.0 and _written(ch, k, o_end, channels, banks, floats):
            cmd = max(cmd, floats[_u(o_end + k)] + floats[_F_WR])  # write recovery, then precharge
        if floats[_F_ACT] == 0.0:
            ready = cmd + floats[_u(1 + kind)]
        else:
            act = cmd
            if kind == 2:  # precharge no sooner than tRAS after this bank's activate
                act = max(cmd, floats[_u(o_act + k)] + floats[_F_RAS]) + floats[_F_RP]
            act = max(act, floats[_u(o_last + ch)] + floats[_F_RRDS],
                      floats[_u(o_lastg + ch * groups + g)] + floats[_F_RRDL],
                      floats[_u(o_faw + 4 * ch)] + floats[_F_FAW])
            ready = act + floats[_F_RCD] + floats[4]
    data_start = max(floats[_u(o_bus + ch)], ready)
    tccd = floats[_F_CCDL]
    if tccd > 0.0:
        data_start = max(data_start, floats[_u(o_start + ch * groups + g)] + tccd)
    return data_start, kind, act


@njit(cache=True, inline="always")
def _commit(ch, bank, row, g, kind, act, data_start, ints, floats):
    """Serve the burst ``_evaluate`` timed: update the state; returns its data end."""
    channels = ints[1]
    banks = ints[2]
    groups = ints[_I_GROUPS]
    o_bus, o_ready, o_act, o_last, o_lastg, o_faw, o_start, o_ref, o_end = _offsets(
        channels, banks, groups)
    k = ch * banks + bank
    if kind != 0:
        ints[_u(_IH + k)] = row
        if floats[_F_ACT] != 0.0:
            floats[_u(o_act + k)] = act
            floats[_u(o_last + ch)] = act
            floats[_u(o_lastg + ch * groups + g)] = act
            fw = o_faw + 4 * ch
            floats[_u(fw)] = floats[_u(fw + 1)]
            floats[_u(fw + 1)] = floats[_u(fw + 2)]
            floats[_u(fw + 2)] = floats[_u(fw + 3)]
            floats[_u(fw + 3)] = act
    if floats[_F_CCDL] > 0.0:
        floats[_u(o_start + ch * groups + g)] = data_start
    data_end = data_start + floats[5]
    floats[_u(o_bus + ch)] = data_end
    floats[_u(o_ready + k)] = data_end - floats[4]
    floats[_u(o_end + k)] = data_end
    return data_end


@njit(cache=True, inline="always")
def _burst(t0, ch, bank, row, g, ints, floats):
    """Time one burst in order (refresh, then ``_evaluate`` and ``_commit``). Returns
    ``(data_end, kind)``."""
    _refresh(t0, ch, ints, floats)
    data_start, kind, act = _evaluate(t0, ch, bank, row, g, ints, floats)
    return _commit(ch, bank, row, g, kind, act, data_start, ints, floats), kind


@njit(cache=True, inline="always")
def _turn(ch, write, ints, floats):
    """The bus of channel ``ch`` turns to ``write`` (1) or read (0): when the channel's last
    burst went the other way, its bus is held for the turnaround (write to read ``tWTR + tCL``,
    read to write ``tRTW``) before the next data. Kept after the bank state (``_offsets``'
    end): the channels' directions, when each turned (its bus then: data of the current
    direction ends later), and whether each bank's last data before that was written
    (``_written``), recorded at the turn."""
    channels, banks = ints[1], ints[2]
    o_dir = _offsets(channels, banks, ints[_I_GROUPS])[8] + channels * banks
    old = floats[o_dir + ch]
    if old != write:
        o_end = o_dir - channels * banks
        since = floats[o_dir + channels + ch]
        for k in range(ch * banks, ch * banks + banks):  # the closing direction's banks
            if floats[o_end + k] > since:
                floats[o_dir + 2 * channels + k] = old
        floats[o_dir + channels + ch] = floats[_FH + ch]
        floats[o_dir + ch] = write
        floats[_FH + ch] += floats[_F_RTW] if write else floats[_F_WTR]


@njit(cache=True, inline="always")
def _written(ch, k, o_end, channels, banks, floats):
    """Whether bank ``k``'s last data (it ended at ``floats[o_end + k]``) was written: the
    channel's direction if it ended after the channel's last turn, else what the turn
    recorded (``_turn``)."""
    o_dir = o_end + channels * banks
    if floats[_u(o_end + k)] > floats[_u(o_dir + channels + ch)]:
        return floats[_u(o_dir + ch)] == 1.0
    return floats[_u(o_dir + 2 * channels + k)] == 1.0


@njit(cache=True, _nrt=False)  # no arrays made: no reference counts (``_queued3_kernel``)
def _turn3(write, base0, size0, base1, size1, base2, size2, ints, floats):
    """``_turn`` on every channel that one of the three runs (``_transfer3_kernel``) touches;
    nothing when no write rule is on (both turnarounds and tWR 0)."""
    if floats[_F_WTR] == 0.0 and floats[_F_RTW] == 0.0 and floats[_F_WR] == 0.0:
        return
    burst_bytes, channels = ints[0], ints[1]
    r0 = _run_ends(base0, size0, burst_bytes, channels)
    r1 = _run_ends(base1, size1, burst_bytes, channels)
    r2 = _run_ends(base2, size2, burst_bytes, channels)
    for ch in range(channels):
        lo0, hi0 = _chan_span(r0, ch)
        lo1, hi1 = _chan_span(r1, ch)
        lo2, hi2 = _chan_span(r2, ch)
        if lo0 <= hi0 or lo1 <= hi1 or lo2 <= hi2:
            _turn(ch, write, ints, floats)


@njit(cache=True, inline="always")
def _chan_locate(j, banks, bpr, groups, mapping):
    """``(bank, row, group)`` of a channel's burst ``j`` (``_locate`` without the channel)."""
    if mapping == 1:
        g = j % groups
        block = j // groups // bpr
        per_group = banks // groups
        return (block % per_group) * groups + g, block // per_group, g
    row_global = j // bpr
    bank = row_global % banks
    return bank, row_global // banks, bank % groups


@njit(cache=True, inline="always")
def _precharge_at(t0s, ch, e, ints, floats):
    """When the precharge of ring entry ``e`` (a burst of another row than its bank's open
    one) can go: requested, its bank done with its last burst, write recovery after a write,
    tRAS after the bank's activate (activate limits on)."""
    channels, banks = ints[1], ints[2]
    o_bus, o_ready, o_act, o_last, o_lastg, o_faw, o_start, o_ref, o_end = _offsets(
        channels, banks, ints[_I_GROUPS])
    k = ch * banks + e[1]
    pre = max(t0s[e[0]], floats[_u(o_ready + k)])
    if floats[_F_WR] > 0.0 and _written(ch, k, o_end, channels, banks, floats):
        pre = max(pre, floats[_u(o_end + k)] + floats[_F_WR])
    if floats[_F_ACT] != 0.0:
        pre = max(pre, floats[_u(o_act + k)] + floats[_F_RAS])
    return pre


@njit(cache=True)
def _pick(t0, t0s, ch, ring, head, cnt, cap, per_bank, seen, ints, floats):
    """The queue position (0 = oldest) of the burst whose data can start first among the
    ``cnt`` admitted ones that are in their bank's queue (the oldest ``per_bank`` of each bank;
    all when ``per_bank`` is 0); ring rows: key, bank, row, group, requested at ``t0s[key]``
    (at ``t0`` when ``t0s`` is empty); the oldest on a tie. ``seen``: scratch, two per bank
    (the second: the kinds seen, and above them the ring row + 1 of the bank's oldest burst of
    another row than its open one). A row hit requested after that burst could precharge is
    not a candidate (module docstring): neither are the bank's later hits, requested no sooner.

    Only the oldest row hit and the oldest other burst of each bank are timed: the others of
    the same bank and kind start no sooner (the same bank state, requested no sooner). No burst
    starts before the bus is free, so the first that starts then is the pick."""
    banks = ints[2]
    o_open = _IH + ch * banks
    timed = len(t0s) > 0
    bus = floats[_FH + ch]
    best = 0
    best_ds = 0.0
    seen[:] = 0
    k = head
    for i in range(cnt):
        bank = ring[k, 1]
        row = ring[k, 2]
        at = k
        k += 1
        if k == cap:
            k = 0
        if per_bank > 0:
            if seen[bank] >= per_bank:
                continue
            seen[bank] += 1
        kind = 1 if ints[o_open + bank] == row else 2  # a hit / another kind
        kb = seen[banks + bank]
        if kind == 1 and kb & 2 and timed and t0s[ring[at, 0]] > _precharge_at(
                t0s, ch, ring[(kb >> 2) - 1], ints, floats):
            continue  # an older burst of its bank closed the row before this one came
        if kb & kind:
            continue
        seen[banks + bank] = kb | kind | ((at + 1) << 2 if kind == 2 else 0)
        ds, _, _ = _evaluate(t0s[ring[at, 0]] if timed else t0, ch, bank, row, ring[at, 3],
                             ints, floats)
        if i == 0 or ds < best_ds:
            best, best_ds = i, ds
            if ds <= bus:  # starts when the bus is free: no later one starts sooner
                break
    return best


@njit(cache=True, inline="always")
def _queue_at(ints):
    """``(transaction queue depth, bank queue depth, ring capacity, where the ring starts,
    where the per-bank scratch starts)`` in ``ints`` (``_queues`` as offsets: a view made in a
    numba function costs a reference count, twice, each time)."""
    banks = ints[2]
    depth, per_bank = ints[_I_QUEUE], ints[_I_BANKQ]
    cap = depth + banks * per_bank
    o = _IH + ints[1] * banks
    return depth, per_bank, cap, o, o + 4 * cap + banks


@njit(cache=True, inline="always")
def _offer(t0, ch, bank, row, g, per_bank, o_seen, ints, floats):
    """A burst offered to a pick (``_window_pick``, ``_stream_rest``): counted into its bank's
    queue or, that full (``per_bank`` 0: always), as waiting behind it, and timed
    (``_evaluate``) where it is in its bank's queue and the first of its bank and kind (a row
    hit, or not) there: the others of the class start no sooner. Returns ``(1 if it waits
    else 0, whether it was timed, its data start)``."""
    banks = ints[2]
    waits = 1
    if per_bank > 0:
        n_b = ints[_u(o_seen + bank)]
        ints[_u(o_seen + bank)] = n_b + 1
        if n_b < per_bank:
            waits = 0
    if per_bank == 0 or waits == 0:
        kind = 1 if ints[_u(_IH + ch * banks + bank)] == row else 2  # a hit / another kind
        if ints[_u(o_seen + banks + bank)] & kind == 0:
            ints[_u(o_seen + banks + bank)] |= kind
            return waits, True, _evaluate(t0, ch, bank, row, g, ints, floats)[0]
    return waits, False, 0.0


@njit(cache=True)
def _stream_pick(t0, ch, nj, s, lo, hi, depth, per_bank, ints, floats):
    """``_pick`` over the requests channel ``ch``'s controller would admit when its queue is
    empty and the next ones are the walk's bursts from ``(nj, s)`` on (``_queued3_kernel``,
    all requested at ``t0``), without admitting them. Returns the window position of the pick
    (0: the oldest)."""
    o_seen = _queue_at(ints)[4]
    ints[o_seen:o_seen + 2 * ints[2]] = 0  # admitted per bank, then the classes timed per bank
    return _stream_rest(t0, ch, nj, s, lo, hi, depth, per_bank, o_seen, ints, floats, 0, 0, 0,
                        0.0, (-1, 0, 0, 0, 0))


@njit(cache=True, _nrt=False)  # no arrays made: no reference counts (``_queued3_kernel``)
def _window_pick(t0, ch, head, cnt, nj, s, lo, hi, ints, floats, at):
    """``_pick`` over the requests channel ``ch``'s controller would admit (``_queued3_kernel``,
    all requested at ``t0``): the ``cnt`` admitted ones in the ring from ``head`` (rows: key,
    bank, row, group; older than any of the walk's), then the walk's bursts from ``(nj, s)``
    on, which are not admitted (``_stream_rest``). The queue holds only the bursts passed by a
    younger pick, so a pick neither fills it up to its depth nor rescans what it would have
    filled. ``at``: ``(j, bank, row, group, end of its row block)`` of a channel burst ``j``,
    the caller's (no division to locate the walk's first burst when it is ``nj``). Returns the
    window position of the pick (0: the oldest; ``cnt`` on: the walk's)."""
    banks = ints[2]
    depth, per_bank, cap, o_ring, o_seen = _queue_at(ints)
    bus = floats[_u(_FH + ch)]
    for i in range(o_seen, o_seen + 2 * banks):
        ints[_u(i)] = 0
    waiting = 0
    best = 0
    best_ds = 0.0
    k = head
    for i in range(cnt):
        e = o_ring + 4 * k
        bank = ints[_u(e + 1)]
        row = ints[_u(e + 2)]
        k += 1
        if k == cap:
            k = 0
        waits, timed, ds = _offer(t0, ch, bank, row, ints[_u(e + 3)], per_bank, o_seen, ints,
                                  floats)
        waiting += waits
        if timed and (i == 0 or ds < best_ds):
            best, best_ds = i, ds
            if ds <= bus:  # starts when the bus is free: no later one starts sooner
                return best
        if waiting >= depth:
            return best
    return _stream_rest(t0, ch, nj, s, lo, hi, depth, per_bank, o_seen, ints, floats, cnt,
                        waiting, best, best_ds, at)


@njit(cache=True, inline="always")
def _stream_rest(t0, ch, nj, s, lo, hi, depth, per_bank, o_seen, ints, floats, pos, waiting,
                 best, best_ds, at):
    """The walk's part of a pick (``_stream_pick``, ``_window_pick``): its bursts from
    ``(nj, s)`` on, at window positions ``pos`` on, after ``waiting`` admitted ones wait and
    with the per-bank scratch at ``ints[o_seen:]`` (admitted per bank, then the classes timed
    per bank) and the best so far
    (``best``, starting at ``best_ds``; none when ``pos`` is 0) as the older ones left them;
    ``at`` (``_window_pick``) may locate the first burst.
    Inside a row block's piece every burst after the first ``gm`` has the bank and row of one
    of those (the same class, timed no sooner), so only those are timed; the rest are
    counted, for the bank queues' occupancy and where admission stops. Returns the window
    position of the pick.
    One function, long: the window's cursor, the per-bank counts and the best pick so far live
    in locals that the counting of a piece and the timing of its first bursts share."""
    banks, bpr = ints[2], ints[3]
    groups, mapping = ints[_I_GROUPS], ints[_I_MAP]
    span = bpr * groups if mapping == 1 else bpr
    gm = groups if mapping == 1 else 1
    while s < 3:
        if nj == at[0]:
            bank, row, g, blk_end = at[1], at[2], at[3], at[4]
        else:
            bank, row, g = _chan_locate(nj, banks, bpr, groups, mapping)
            blk_end = (nj // span + 1) * span - 1
        last = min(blk_end, hi[s])
        bank0 = bank - g
        m = last - nj + 1
        g_first = g
        for _ in range(min(m, gm)):
            if mapping == 1:
                bank = bank0 + g
            waits, timed, ds = _offer(t0, ch, bank, row, g, per_bank, o_seen, ints, floats)
            waiting += waits
            if timed and (pos == 0 or ds < best_ds):
                best, best_ds = pos, ds
                if ds <= floats[_u(_FH + ch)]:  # starts when the bus is free: the pick
                    return best
            pos += 1
            if waiting >= depth:
                return best
            if mapping == 1:
                g += 1
                if g == groups:
                    g = 0
        rest = m - gm
        if rest > 0:
            # the rest of the piece is counted, not walked: position gm + q + i * gm is a burst
            # of the bank of position q, none of them timed, so only how many enter each bank
            # and how many wait matter (waiting only grows: past depth anywhere in the piece
            # is past depth at its end, and the pick is the same)
            if per_bank == 0:
                waiting += rest
            else:
                for q in range(min(gm, rest)):
                    b = bank0 + (g_first + q) % groups if mapping == 1 else bank
                    c = (rest - q + gm - 1) // gm
                    n_b = ints[_u(o_seen + b)]
                    over = n_b + c - max(n_b, per_bank)
                    if over > 0:
                        waiting += over
                    ints[_u(o_seen + b)] = n_b + c
            pos += rest
            if waiting >= depth:
                return best
        nj, s = _advance(last, s, lo, hi)
    return best


@njit(cache=True, inline="always")
def _hits_at_bus(ch, row, bank0, g, run, gm, n, ints, floats):
    """Whether the next bursts of a row block (``channel_group_column_bank``: bank
    ``bank0 + g`` served last, ``run`` of the block's in order up to it; ``n`` left in the
    piece) to the banks not among the last ``run`` served are row hits whose data can start
    when the bus is free, one after another: open on ``row`` and their group's last start +
    tCCD_L no later (their last data and ``t0 + tCL`` are behind the burst just served, which
    started no sooner). Then, with the served ones, every bank of the block is as after ``gm``
    bursts in order, and the rest of the piece goes at the bus rate."""
    banks, groups = ints[2], ints[_I_GROUPS]
    o_bus, o_ready, o_act, o_last, o_lastg, o_faw, o_start, o_ref, o_end = _offsets(
        ints[1], banks, groups)
    bus = floats[_u(o_bus + ch)]
    tccd = floats[_F_CCDL]
    gb = g
    for _ in range(min(gm - run, n)):
        gb += 1
        if gb == groups:
            gb = 0
        if ints[_u(_IH + ch * banks + bank0 + gb)] != row:
            return False
        if tccd > 0.0 and floats[_u(o_start + ch * groups + gb)] + tccd > bus:
            return False
        bus = bus + floats[5]
    return True


@njit(cache=True, inline="always")
def _take_at(ints, o_ring, head, cap, i):
    """Remove queue position ``i`` of the ring at ``ints[o_ring:]`` (``_queue_at``; entries
    before it move up one), without a view of it; returns the new head."""
    dst = head + i
    if dst >= cap:
        dst -= cap
    for _ in range(i):
        src = dst - 1 if dst > 0 else cap - 1
        for c in range(4):
            ints[_u(o_ring + 4 * dst + c)] = ints[_u(o_ring + 4 * src + c)]
        dst = src
    return head + 1 if head + 1 < cap else 0


@njit(cache=True, inline="always")
def _queues(ints):
    """``(transaction queue depth, bank queue depth, ring capacity, ring, per-bank admitted
    counts, per-bank scratch)``: the queue state's views into ``ints``."""
    banks = ints[2]
    nb = ints[1] * banks
    depth, per_bank = ints[_I_QUEUE], ints[_I_BANKQ]
    cap = depth + banks * per_bank
    o = _IH + nb
    ring = ints[o:o + 4 * cap].reshape((cap, 4))
    return depth, per_bank, cap, ring, ints[o + 4 * cap:o + 4 * cap + banks], \
        ints[o + 4 * cap + banks:o + 4 * cap + 3 * banks]


@njit(cache=True, inline="always")
def _step_locate(nj, loc_j, blk_end, bank, row, g, bank0, banks, bpr, groups, mapping, span):
    """``(bank, row, g, bank0, blk_end)`` of a channel's burst ``nj``, given those of burst
    ``loc_j``: one step on inside a row block costs no division."""
    if nj == loc_j + 1 and nj <= blk_end:  # the next burst of the same row block
        if mapping == 1:
            g += 1
            if g == groups:
                g = 0
            bank = bank0 + g
    elif nj != loc_j:
        bank, row, g = _chan_locate(nj, banks, bpr, groups, mapping)
        blk_end = (nj // span + 1) * span - 1
        bank0 = bank - g if mapping == 1 else bank
    return bank, row, g, bank0, blk_end


@njit(cache=True, inline="always")
def _advance(nj, s, lo, hi):
    """The next burst ``(nj, s)`` of a channel's walk over runs ``lo[s]..hi[s]`` (``s`` = 3:
    done)."""
    nj += 1
    while s < 3 and nj > hi[s]:
        s += 1
        if s < 3:
            nj = lo[s]
    return nj, s


@njit(cache=True, inline="always")
def _waits(admitted, bank, per_bank, change):
    """Count a request into (``change`` 1) or out of (-1) ``bank``'s admitted ones; returns
    the change to the number waiting outside the bank queues."""
    if per_bank == 0:
        return change
    admitted[bank] += change
    if change > 0:
        return 1 if admitted[bank] > per_bank else 0
    return -1 if admitted[bank] >= per_bank else 0


@njit(cache=True, inline="always")
def _exact_steps(t, step, n):
    """Whether ``t + i * step`` is a float for every ``i <= n`` (``t`` and ``step`` multiples
    of one power of two, the largest sum below 2**53 of them): then adding ``step`` ``i`` times
    to ``t`` gives ``t + i * step`` exactly, and a run of row hits at the bus rate can be
    written in closed form with the same floats as burst by burst."""
    s = 1.0
    k = 0
    while step * s != math.floor(step * s) or t * s != math.floor(t * s):
        s *= 2.0
        k += 1
        if k > 52:
            return False
    return abs(t * s) + n * (step * s) < 9007199254740992.0


@njit(cache=True, inline="always")
def _steps_before(t, step, n, due):
    """How many of ``t, t + step, ..., t + (n - 1) step`` come before ``due`` (all exact
    floats, ``_exact_steps``), counting from the first: the bursts a run starts before its
    channel's next refresh."""
    if not due < math.inf:
        return n
    if t >= due:
        return 0
    m = min(n, int(math.ceil((due - t) / step)))
    while m > 0 and t + (m - 1) * step >= due:
        m -= 1
    while m < n and t + m * step < due:
        m += 1
    return m


@njit(cache=True)
def _drain_size(ch, t0s, ring, head, cnt, cap, per_bank, seen, wbuf, wcnt, wdepth, low,
                t_read, ints, floats):
    """How many of the ``wcnt`` buffered writes (``wbuf``, oldest first) start to drain now
    (0: none; module docstring): all when no read is left (``t_read``, the next read's request
    time, admitted or to come, is infinite); all when the buffer is full and no admitted read
    can start its data before the last write came (timed on the state as it is); when more
    than ``low`` wait and no read has come by the time the bus is free and the one past
    ``low`` came, the ones requested by then."""
    if t_read == math.inf:
        return wcnt
    if wcnt == wdepth:
        if cnt == 0:
            return wcnt
        p = _pick(0.0, t0s, ch, ring, head, cnt, cap, per_bank, seen, ints, floats)
        e = ring[(head + p) % cap]
        ds, _, _ = _evaluate(t0s[e[0]], ch, e[1], e[2], e[3], ints, floats)
        return wcnt if ds >= t0s[wbuf[wcnt - 1, 0]] else 0
    n = 0
    if wcnt > low:
        td = max(floats[_FH + ch], t0s[wbuf[low, 0]])
        if t_read > td:
            while n < wcnt and t0s[wbuf[n, 0]] <= td:
                n += 1
    return n


@njit(cache=True, inline="always")
def _closed_before(t0s, ch, wbuf, q, o_open, ints, floats):
    """Whether an older buffered write of write ``q``'s bank, for another row, could
    precharge before ``q`` came (``_pick``'s rule: the row hit ``q`` would be is closed)."""
    for p in range(q):
        e = wbuf[p]
        if e[1] == wbuf[q, 1] and ints[o_open + e[1]] != e[2]:
            return t0s[wbuf[q, 0]] > _precharge_at(t0s, ch, e, ints, floats)
    return False


@njit(cache=True)
def _drain_one(ch, t0s, wbuf, wcnt, counts, ints, floats):
    """Serve the buffered write whose data can start first (the oldest on a tie; a row hit
    that came after an older write of its bank could precharge is not one), the bus
    turned to write; it leaves ``wbuf`` (those behind it move up) and its kind is counted.
    Returns its data start."""
    _turn(ch, 1, ints, floats)
    _refresh(t0s[wbuf[0, 0]], ch, ints, floats)
    best, best_ds = -1, 0.0
    o_open = _IH + ch * ints[2]
    for q in range(wcnt):
        w = wbuf[q]
        if ints[o_open + w[1]] == w[2] and _closed_before(t0s, ch, wbuf, q, o_open, ints,
                                                          floats):
            continue
        ds, _, _ = _evaluate(t0s[w[0]], ch, w[1], w[2], w[3], ints, floats)
        if best < 0 or ds < best_ds:
            best, best_ds = q, ds
    w = wbuf[best]
    key, bank, row, g = w[0], w[1], w[2], w[3]
    ds, kind, act = _evaluate(t0s[key], ch, bank, row, g, ints, floats)
    _commit(ch, bank, row, g, kind, act, ds, ints, floats)
    counts[kind] += 1
    for q in range(best, wcnt - 1):
        wbuf[q, :] = wbuf[q + 1, :]
    return ds


@njit(cache=True)
def _read_first(ch, t0s, ring, head, old, cap, per_bank, seen, wbuf, wcnt, ints, floats):
    """Whether, during a drain, one of the ``old`` reads queued when it began can start its
    data before the next buffered write, each with the bus turned its way."""
    channels, banks = ints[1], ints[2]
    o_dir = _offsets(channels, banks, ints[_I_GROUPS])[8] + channels * banks
    bus = floats[_FH + ch]
    cur = floats[o_dir + ch]
    floats[_FH + ch] = bus + (floats[_F_WTR] if cur == 1.0 else 0.0)
    p = _pick(0.0, t0s, ch, ring, head, old, cap, per_bank, seen, ints, floats)
    e = ring[(head + p) % cap]
    ds_r = _evaluate(t0s[e[0]], ch, e[1], e[2], e[3], ints, floats)[0]
    floats[_FH + ch] = bus + (floats[_F_RTW] if cur == 0.0 else 0.0)
    o_open = _IH + ch * banks
    ds_w = math.inf
    for q in range(wcnt):
        w = wbuf[q]
        if ints[o_open + w[1]] == w[2] and _closed_before(t0s, ch, wbuf, q, o_open, ints,
                                                          floats):
            continue
        ds_w = min(ds_w, _evaluate(t0s[w[0]], ch, w[1], w[2], w[3], ints, floats)[0])
    floats[_FH + ch] = bus
    return ds_r < ds_w


@njit(cache=True)
def _queue_kernel(t0s, bursts, writes, buffered, ints, floats, done):
    """Serve one-burst requests (burst indices ``bursts`` requested at ``t0s``, in order)
    through each channel's queues and, ``buffered``, its write buffer (``writes``; module
    docstring; else all as reads, the bus not turned). ``done[i]``: the end of request i's
    data, or when the buffer took it. Returns ``(hits, misses, conflicts)``.
    One function, long: a channel's controller state (the queue's head and count, the write
    buffer and its freed slots, the admission cursor, the decision time) lives in locals that
    admission, draining and serving all change."""
    channels, banks, bpr = ints[1], ints[2], ints[3]
    groups, mapping = ints[_I_GROUPS], ints[_I_MAP]
    depth, per_bank, cap, ring, admitted, seen = _queues(ints)
    o_ring = _queue_at(ints)[3]
    wdepth, low = ints[_I_WQ], ints[_I_WLOW]
    n = len(bursts)
    counts = np.zeros(3, dtype=np.int64)
    wbuf = np.empty((wdepth, 4), dtype=np.int64)  # key, bank, row, group; oldest first
    slots = np.empty(wdepth)  # when the free slots freed, oldest first (a ring from shead)
    for ch in range(channels):
        head = cnt = waiting = wcnt = drain = shead = old = 0
        admitted[:] = 0
        slots[:] = -math.inf
        i = nr = 0
        wait = False
        while True:
            # the controller chooses when the bus is free or the oldest waiting request
            # comes, among the requests offered by then (none waiting, or nothing it can do
            # then, ``wait``: when the next one comes)
            due = math.inf
            if cnt > 0 or wcnt > 0:
                first = min(t0s[ring[head, 0]] if cnt > 0 else math.inf,
                            t0s[wbuf[0, 0]] if wcnt > 0 else math.inf)
                due = max(floats[_FH + ch], first)
            while i < n:  # admission, in order: a request that does not fit holds the rest
                b = bursts[i]
                if b % channels == ch:
                    if t0s[i] > due:
                        if not wait:
                            break
                        due = t0s[i]
                    wait = False
                    wr = buffered and writes[i]
                    if (wcnt == wdepth) if wr else (waiting >= depth):
                        break
                    w = wbuf[wcnt] if wr else ring[(head + cnt) % cap]
                    bank, row, g = _chan_locate(b // channels, banks, bpr, groups, mapping)
                    w[0], w[1], w[2], w[3] = i, bank, row, g
                    if wr:
                        done[i] = max(t0s[i], slots[shead])
                        shead = (shead + 1) % wdepth
                        wcnt += 1
                    else:
                        cnt += 1
                        waiting += _waits(admitted, bank, per_bank, 1)
                    if due == math.inf:
                        due = max(floats[_FH + ch], t0s[i])
                i += 1
            if cnt == 0 and wcnt == 0:
                break
            if drain == 0 and wcnt > 0:
                if cnt > 0:
                    t_read = t0s[ring[head, 0]]
                else:  # the channel's next read to come
                    nr = max(nr, i)
                    while nr < n and (bursts[nr] % channels != ch or writes[nr]):
                        nr += 1
                    t_read = t0s[nr] if nr < n else math.inf
                drain = _drain_size(ch, t0s, ring, head, cnt, cap, per_bank, seen, wbuf, wcnt,
                                    wdepth, low, t_read, ints, floats)
                old = cnt if drain > 0 else 0  # the reads queued when the drain begins
            if drain > 0 and not (old > 0 and _read_first(ch, t0s, ring, head, old, cap,
                                                        per_bank, seen, wbuf, wcnt, ints,
                                                        floats)):
                ds = _drain_one(ch, t0s, wbuf, wcnt, counts, ints, floats)
                slots[(shead + wdepth - wcnt) % wdepth] = ds  # its slot frees
                wcnt -= 1
                drain -= 1
                continue
            if cnt == 0:  # writes wait for more to come (the threshold) or the end
                wait = True
                continue
            if buffered:
                _turn(ch, 0, ints, floats)
            _refresh(t0s[ring[head, 0]], ch, ints, floats)
            p = _pick(0.0, t0s, ch, ring, head, old if drain > 0 else cnt, cap, per_bank, seen,
                      ints, floats)
            e = ring[(head + p) % cap]
            key, bank, row, g = e[0], e[1], e[2], e[3]
            ds, kind, act = _evaluate(t0s[key], ch, bank, row, g, ints, floats)
            done[key] = _commit(ch, bank, row, g, kind, act, ds, ints, floats)
            counts[kind] += 1
            head = _take_at(ints, o_ring, head, cap, p)
            cnt -= 1
            if p < old:
                old -= 1
            waiting += _waits(admitted, bank, per_bank, -1)
    return counts[0], counts[1], counts[2]


@njit(cache=True, inline="always")
def _run_ends(base, size, burst_bytes, channels):
    """``(q0, c0, q1, c1, bursts)``: the run of ``size`` bytes at ``base``'s first and last
    burst, each as (burst index inside its channel, channel), and its burst count; ``c0`` -1
    when it is empty. The divisions of a run, done once for all its channels
    (``_chan_span``): integer divisions are a measurable share of a request's cost."""
    if size > 0:
        b0 = base // burst_bytes
        b1 = (base + size - 1) // burst_bytes
        return b0 // channels, b0 % channels, b1 // channels, b1 % channels, b1 - b0 + 1
    return 0, -1, 0, -1, 0


@njit(cache=True, inline="always")
def _chan_span(ends, ch):
    """``(lo, hi)``: the first and last burst of channel ``ch`` (its own burst index) in the
    run of ``ends`` (``_run_ends``); ``(0, -1)`` when it has none. The first is in the first
    burst's channel row or the next, the last in the last burst's or the one before."""
    q0, c0, q1, c1, _n = ends
    if c0 < 0:
        return 0, -1
    lo = q0 if ch >= c0 else q0 + 1
    hi = q1 if ch <= c1 else q1 - 1
    if lo > hi:
        return 0, -1
    return lo, hi


@njit(cache=True, inline="always")
def _channel_parts(ints):
    """Where each part of a channel's state is in ``floats``, as ``(start, values per
    channel)``: every value of the state arrays that belongs to one channel (``_offsets``,
    ``_turn``: bus, next refresh, banks' last data, ready times and activates, the channel's
    and its groups' last activates, the four-activate history, the groups' last data starts,
    the bus direction, when it turned, what each bank's data before it was); the open rows
    (``ints``) are the rest. Channel ``c``'s values of a part are ``start + c * n`` on."""
    channels, banks, groups = ints[1], ints[2], ints[_I_GROUPS]
    o_bus, o_ready, o_act, o_last, o_lastg, o_faw, o_start, o_ref, o_end = _offsets(
        channels, banks, groups)
    o_dir = o_end + channels * banks
    return ((o_bus, 1), (o_ref, 1), (o_end, banks), (o_ready, banks), (o_act, banks),
            (o_last, 1), (o_lastg, groups), (o_faw, 4), (o_start, groups), (o_dir, 1),
            (o_dir + channels, 1), (o_dir + 2 * channels, banks))


@njit(cache=True, inline="always")
def _same_part(values, part, a, b):
    """Whether channels ``a`` and ``b`` have the same values in ``part`` (``(start, values per
    channel)``, ``_channel_parts``). Unsigned indices (no check for negative ones) and no
    early exit: the comparisons go together, a few at a time."""
    o, n = part
    x, y = np.uint64(o + a * n), np.uint64(o + b * n)
    same = True
    for i in range(np.uint64(n)):
        same &= values[x + i] == values[y + i]
    return same


@njit(cache=True, inline="always")
def _copy_part(values, part, a, b):
    """Channel ``a``'s values in ``part`` written over channel ``b``'s (``_same_part``)."""
    o, n = part
    x, y = np.uint64(o + a * n), np.uint64(o + b * n)
    for i in range(np.uint64(n)):
        values[y + i] = values[x + i]


@njit(cache=True, inline="always")
def _same_channel(a, b, ints, floats):
    """Whether channels ``a`` and ``b`` are in the same state, value for value
    (``_channel_parts``). Channels are independent, so a channel in the state of another,
    given the same bursts at the same time, ends as that one ended."""
    if floats[_FH + a] != floats[_FH + b]:  # where channels differ, the bus mostly does
        return False
    p = _channel_parts(ints)
    return (_same_part(floats, p[0], a, b) & _same_part(floats, p[1], a, b)
            & _same_part(floats, p[2], a, b) & _same_part(floats, p[3], a, b)
            & _same_part(floats, p[4], a, b) & _same_part(floats, p[5], a, b)
            & _same_part(floats, p[6], a, b) & _same_part(floats, p[7], a, b)
            & _same_part(floats, p[8], a, b) & _same_part(floats, p[9], a, b)
            & _same_part(floats, p[10], a, b) & _same_part(floats, p[11], a, b)
            & _same_part(ints, (_IH, ints[2]), a, b))


@njit(cache=True, inline="always")
def _copy_channel(a, b, ints, floats):
    """Channel ``a``'s state written over channel ``b``'s (``_channel_parts``)."""
    p = _channel_parts(ints)
    for k in range(len(p)):
        _copy_part(floats, p[k], a, b)
    _copy_part(ints, (_IH, ints[2]), a, b)


@njit(cache=True, _nrt=False)
def _queued3_kernel(t0, base0, size0, base1, size1, base2, size2, ints, floats):
    """``_transfer3_kernel`` with queues (``queue_depth`` > 1): each channel serves the bursts
    of the three runs (in that order) as ``_queue_kernel`` does. While the oldest burst can
    start at once (the usual case: a row hit) it is served without admitting the others (no
    burst can start sooner, and the oldest wins a tie), and a channel's next burst is located
    without divisions inside a row block. Compiled without numba's reference counting
    (``_nrt=False``; it makes no arrays, and its callees neither): the counts numba kept on
    ``ints``/``floats`` through the inlined helpers cost a seventh of its time.

    One function, long: the walk's state (cursor over three runs, row-block location, queue
    ring, in-order run) is a dozen locals that every step reads and writes; split into numba
    functions it would travel as tuples through each call on the engine's hot path."""
    burst_bytes, channels, banks, bpr = ints[0], ints[1], ints[2], ints[3]
    groups, mapping = ints[_I_GROUPS], ints[_I_MAP]
    cap, o_ring = _queue_at(ints)[2:4]
    span = bpr * groups if mapping == 1 else bpr
    o_bus, o_ready, o_act, o_last, o_lastg, o_faw, o_start, o_ref, o_end = _offsets(
        channels, banks, groups)
    t_burst, t_cl, tccd, refi = floats[5], floats[4], floats[_F_CCDL], floats[_F_REFI]
    gm = groups if mapping == 1 else 1  # banks a row block interleaves
    bulk = tccd == 0.0 or tccd < gm * t_burst * (1.0 - 1e-9)
    finish = t0
    hits = misses = conflicts = 0
    r0 = _run_ends(base0, size0, burst_bytes, channels)
    r1 = _run_ends(base1, size1, burst_bytes, channels)
    r2 = _run_ends(base2, size2, burst_bytes, channels)
    bursts = r0[4] + r1[4] + r2[4]
    same_next = False  # whether the next channel starts as this one and has its bursts
    d_hits = d_misses = d_conflicts = 0  # the last channel walked's counts
    for ch in range(channels):
        # each run's first and last burst on this channel (tuples: no allocation per call)
        lo0, hi0 = _chan_span(r0, ch)
        lo1, hi1 = _chan_span(r1, ch)
        lo2, hi2 = _chan_span(r2, ch)
        lo = (lo0, lo1, lo2)
        hi = (hi0, hi1, hi2)
        same = same_next
        same_next = False
        if ch + 1 < channels and (lo0 <= hi0 or lo1 <= hi1 or lo2 <= hi2) \
                and _chan_span(r0, ch + 1) == (lo0, hi0) and _chan_span(r1, ch + 1) == (lo1, hi1) \
                and _chan_span(r2, ch + 1) == (lo2, hi2):
            same_next = _same_channel(ch, ch + 1, ints, floats)  # both as they start
        if same:
            # this channel started as the last one and has the same bursts (its channel burst
            # indices, so the same banks and rows): it ends as that one did, without a walk
            _copy_channel(ch - 1, ch, ints, floats)
            hits += d_hits
            misses += d_misses
            conflicts += d_conflicts
            continue
        d_hits, d_misses, d_conflicts = hits, misses, conflicts
        nj, s = _advance(lo[0] - 1, 0, lo, hi)
        head = cnt = 0  # the queue: the bursts a younger pick passed, all older than (nj, s)
        loc_j = -2  # the channel burst (bank, row, g, bank0, blk_end) below belong to
        blk_end = -1
        bank = row = g = bank0 = 0
        run_j = -2  # the last burst served in order, and how many of its block in a row
        run = 0
        run_end = -1  # the last burst of run_j's row block (no division per burst)
        while cnt > 0 or s < 3:
            if cnt > 0:
                e = o_ring + 4 * head
                ob, orow, og = ints[_u(e + 1)], ints[_u(e + 2)], ints[_u(e + 3)]
            else:
                bank, row, g, bank0, blk_end = _step_locate(
                    nj, loc_j, blk_end, bank, row, g, bank0, banks, bpr, groups, mapping, span)
                loc_j = nj
                ob, orow, og = bank, row, g
            if refi > 0.0:
                due = floats[_u(o_ref + ch)]
                _refresh(t0, ch, ints, floats)
                if floats[_u(o_ref + ch)] != due:  # a refresh closed the rows: a new run
                    run_j = -2
            ds, kind, act = _evaluate(t0, ch, ob, orow, og, ints, floats)
            p = 0
            if ds > floats[_u(o_bus + ch)] and ds > t0 + t_cl:
                # a gap a younger burst may fill: none starts its data before the bus is free
                # or tCL after the request (a hit's earliest, and a row change adds to it), and
                # the oldest wins a tie
                if s < 3:  # where the walk goes on, located without division (mostly)
                    bank, row, g, bank0, blk_end = _step_locate(
                        nj, loc_j, blk_end, bank, row, g, bank0, banks, bpr, groups, mapping,
                        span)
                    loc_j = nj
                p = _window_pick(t0, ch, head, cnt, nj, s, lo, hi, ints, floats,
                                 (loc_j, bank, row, g, blk_end))
            lazy = False
            if p < cnt:  # one the queue holds
                at = head + p
                if at >= cap:
                    at -= cap
                e = o_ring + 4 * at
                key, ob, orow, og = ints[_u(e)], ints[_u(e + 1)], ints[_u(e + 2)], ints[_u(e + 3)]
                if p != 0:
                    ds, kind, act = _evaluate(t0, ch, ob, orow, og, ints, floats)
                    run_j = -2
                head = _take_at(ints, o_ring, head, cap, p)
                cnt -= 1
            else:  # the walk's: the ones it passes are admitted (the queue's youngest)
                tail = head + cnt
                if tail >= cap:
                    tail -= cap
                for _ in range(p - cnt):
                    bank, row, g, bank0, blk_end = _step_locate(
                        nj, loc_j, blk_end, bank, row, g, bank0, banks, bpr, groups, mapping,
                        span)
                    loc_j = nj
                    e = o_ring + 4 * tail
                    ints[_u(e)] = nj * 4 + s
                    ints[_u(e + 1)] = bank
                    ints[_u(e + 2)] = row
                    ints[_u(e + 3)] = g
                    tail += 1
                    if tail == cap:
                        tail = 0
                    cnt += 1
                    nj, s = _advance(nj, s, lo, hi)
                if p != 0:
                    bank, row, g, bank0, blk_end = _step_locate(
                        nj, loc_j, blk_end, bank, row, g, bank0, banks, bpr, groups, mapping,
                        span)
                    loc_j = nj
                    ob, orow, og = bank, row, g
                    ds, kind, act = _evaluate(t0, ch, ob, orow, og, ints, floats)
                    run_j = -2
                key = nj * 4 + s
                lazy = cnt == 0
                nj, s = _advance(nj, s, lo, hi)
            jd = key // 4
            if jd == run_j + 1 and jd <= run_end:  # the next burst of the same row block
                run += 1
            else:
                run = 1
                run_end = (jd // span + 1) * span - 1
            run_j = jd
            data_end = _commit(ch, ob, orow, og, kind, act, ds, ints, floats)
            if kind == 0:
                hits += 1
            elif kind == 1:
                misses += 1
            else:
                conflicts += 1
            if data_end > finish:
                finish = data_end
            if lazy and bulk and s < 3 and nj == run_j + 1 and nj <= blk_end \
                    and (run >= gm or _hits_at_bus(ch, row, bank0, g, run, gm,
                                                   min(blk_end, hi[s]) - nj + 1, ints, floats)):
                # the last gm bursts were this block's, in order (or the banks of the block
                # not among the last ones served are ready for theirs, ``_hits_at_bus``): every
                # bank of the block has its row open and every later burst of the block starts
                # when the bus is free (its bank's last data, t0 + tCL and its group's last
                # start + tCCD_L are behind it), so they go at the bus rate until the block,
                # the run or the time to the next refresh ends: the same float operations as
                # burst by burst
                n = min(blk_end, hi[s]) - nj + 1
                bus = floats[_u(o_bus + ch)]
                due = floats[_u(o_ref + ch)] if refi > 0.0 else math.inf
                gb = g
                kb = ch * banks + bank
                i = 0
                stop = n
                if _exact_steps(bus, t_burst, n):
                    # every bus + i * t_burst is a float, so the additions below are exact:
                    # only the bursts before the refresh, and each bank's last one, are walked
                    stop = _steps_before(bus, t_burst, n, due)
                    i = max(0, stop - gm)
                    if mapping == 1:
                        gb = (g + i) % groups
                    bus = bus + i * t_burst
                while i < stop and bus < due:
                    if mapping == 1:
                        gb += 1
                        if gb == groups:
                            gb = 0
                        kb = ch * banks + bank0 + gb
                    if tccd > 0.0:
                        floats[_u(o_start + ch * groups + gb)] = bus
                    bus = bus + t_burst
                    floats[_u(o_ready + kb)] = bus - t_cl
                    floats[_u(o_end + kb)] = bus
                    i += 1
                if i > 0:
                    floats[_u(o_bus + ch)] = bus
                    hits += i
                    if bus > finish:
                        finish = bus
                    nj += i
                    run_j = nj - 1
                    run += i
                    g = gb
                    bank = kb - ch * banks
                    loc_j = run_j
                    nj, s = _advance(nj - 1, s, lo, hi)
        d_hits, d_misses, d_conflicts = hits - d_hits, misses - d_misses, conflicts - d_conflicts
    return finish, bursts, hits, misses, conflicts


@njit(cache=True)
def _transfer_bursts(base, run_bytes, n_runs, stride, burst_bytes):
    """The global burst indices of a transfer, in order, a repeat of the previous coalesced."""
    out = np.empty(n_runs * ((run_bytes + burst_bytes - 1) // burst_bytes + 1), dtype=np.int64)
    n = 0
    prev = -1
    for r in range(n_runs):
        start = base + r * stride
        b = start // burst_bytes
        last_b = (start + run_bytes - 1) // burst_bytes
        if b == prev:
            b += 1
        while b <= last_b:
            out[n] = b
            n += 1
            b += 1
        prev = last_b
    return out[:n]


@njit(cache=True)
def _transfer_kernel(t0, base, run_bytes, n_runs, stride, ints, floats):
    """Time the bursts of one transfer, burst by burst, in order; updates the state arrays in
    place. Returns ``(finish, bursts, hits, misses, conflicts)``."""
    burst_bytes, channels, banks, bpr = ints[0], ints[1], ints[2], ints[3]
    groups, mapping = ints[_I_GROUPS], ints[_I_MAP]
    finish = t0
    prev = -1
    bursts = 0
    hits = misses = conflicts = 0
    for r in range(n_runs):
        start = base + r * stride
        b = start // burst_bytes
        last_b = (start + run_bytes - 1) // burst_bytes
        if b == prev:  # the burst just fetched: coalesced
            b += 1
        while b <= last_b:
            ch, bank, row, g = _locate(b, channels, banks, bpr, groups, mapping)
            data_end, kind = _burst(t0, ch, bank, row, g, ints, floats)
            if kind == 0:
                hits += 1
            elif kind == 1:
                misses += 1
            else:
                conflicts += 1
            if data_end > finish:
                finish = data_end
            bursts += 1
            b += 1
        prev = last_b
    return finish, bursts, hits, misses, conflicts


@njit(cache=True)
def _contiguous_kernel(t0, base, size, ints, floats):
    """One contiguous run, timed exactly as ``_transfer_kernel`` times it. Channels are
    independent (own bus and banks), so they are walked one after another, and a channel's
    bursts one row block at a time (a row of one bank; with ``channel_group_column_bank`` the
    same row of one bank in every group, interleaved), so no burst needs the address mapping's
    divisions. Without the later rules (``plain``) only a block's first burst needs the bank
    logic: every later one is a row hit that starts when the previous one ends."""
    burst_bytes, channels, banks, bpr = ints[0], ints[1], ints[2], ints[3]
    groups, mapping = ints[_I_GROUPS], ints[_I_MAP]
    b0 = base // burst_bytes
    b1 = (base + size - 1) // burst_bytes
    finish = t0
    hits = misses = conflicts = 0
    t_burst = floats[5]
    o_bus = _FH
    per_group = banks // groups
    span = bpr * groups if mapping == 1 else bpr  # channel bursts of one row block
    for ch in range(channels):
        first = b0 + (ch - b0 % channels) % channels
        if first > b1:
            continue
        last = b1 - (b1 - ch) % channels
        j = first // channels
        j_hi = last // channels
        while j <= j_hi:
            block = j // span
            seg_end = min(j_hi, (block + 1) * span - 1)
            if mapping == 1:
                row = block // per_group
                bank0 = (block % per_group) * groups
                g = j % groups
                bank = bank0 + g
            else:
                row = block // banks
                bank = block % banks
                g = bank % groups
            data_end, kind = _burst(t0, ch, bank, row, g, ints, floats)
            if kind == 1:
                misses += 1
            elif kind == 2:
                conflicts += 1
            n = seg_end - j
            hits += n + (kind == 0)
            if _exact_steps(data_end, t_burst, n):  # the sum of the additions below, exact
                data_end = data_end + n * t_burst
            else:
                for _ in range(n):  # the same float additions as burst by burst
                    data_end += t_burst
            floats[o_bus + ch] = data_end
            floats[o_bus + channels + ch * banks + bank] = data_end - floats[4]
            if data_end > finish:
                finish = data_end
            j = seg_end + 1
    return finish, b1 - b0 + 1, hits, misses, conflicts


@njit(cache=True)
def _transfer3_kernel(t0, base0, size0, base1, size1, base2, size2, ints, floats):
    """Up to three contiguous transfers issued together (one tile's operands), in order; a size
    of 0 skips a slot. Returns ``(finish, bursts, hits, misses, conflicts)`` summed."""
    if ints[_I_PLAIN] == 0:
        return _queued3_kernel(t0, base0, size0, base1, size1, base2, size2, ints, floats)
    finish = t0
    bursts = hits = misses = conflicts = 0
    for slot in range(3):
        if slot == 0:
            base, size = base0, size0
        elif slot == 1:
            base, size = base1, size1
        else:
            base, size = base2, size2
        if size <= 0:
            continue
        f, b, h, m, c = _contiguous_kernel(t0, base, size, ints, floats)
        finish = max(finish, f)
        bursts += b
        hits += h
        misses += m
        conflicts += c
    return finish, bursts, hits, misses, conflicts


def serve_state(model: Dram, region: int) -> tuple[np.ndarray, np.ndarray]:
    """The state ``_serve_kernel`` works on, as two flat arrays (a numba call's cost grows with
    its array arguments): a copy of ``model.ints`` / ``model.floats`` (the layout is in
    ``Dram.__init__``) with the region size set and the A/B/C offsets at 0."""
    ints = model.ints.copy()
    ints[4] = region
    ints[5:8] = 0
    return ints, model.floats.copy()


@njit(cache=True)
def _serve_kernel(now, ra, rb, rc, gi, ints, floats, acc, write=0):
    """One DMA request of the engine, whole: ``ra``, ``rb``, ``rc`` bytes of the A, B and C
    regions at their running offsets (``ints[5:8]``, advanced; each region wraps at
    ``ints[4]`` bytes), timed as ``_transfer3_kernel`` times them (``write`` 1: a write, the
    bus turned first, ``_turn3``), and the bytes moved, row hits, misses and conflicts added
    to ``acc[gi]``. ``ints``/``floats``: ``serve_state``. Returns the finish time (``now``
    when nothing moved)."""
    region = ints[4]
    # scalars, not an array: an allocation per request is a measurable share of its cost
    base0 = ints[5] % region
    base1 = region + ints[6] % region
    base2 = 2 * region + ints[7] % region
    ints[5] += ra
    ints[6] += rb
    ints[7] += rc
    _turn3(write, base0, ra, base1, rb, base2, rc, ints, floats)
    finish, bursts, hits, misses, conflicts = _transfer3_kernel(
        now + floats[0], base0, ra, base1, rb, base2, rc, ints, floats)
    if bursts == 0:
        return now
    acc[gi, 0] += bursts * ints[0]
    acc[gi, 1] += hits
    acc[gi, 2] += misses
    acc[gi, 3] += conflicts
    return finish


class Dram:
    """Mutable DRAM state and counters. The state is two flat arrays, ``ints`` and ``floats``
    (headers ``_IH`` / ``_FH`` long: the geometry and timings, then per channel, bank and bank
    group the open row, bus-free time, bank-ready time, activate history, last data start and
    next refresh; see ``_offsets``), so that the engine's numba call takes two arrays."""

    def __init__(self, timing: DramTiming) -> None:
        self.timing = t = timing
        groups = t.bank_groups
        act = 1.0 if (t.tRRD_S or t.tRRD_L or t.tFAW or t.tRAS) else 0.0
        plain = int(not (t.tCCD_L or act or t.tREFI or t.queue_depth > 1 or t.bank_queue_depth
                         or t.tWR)
                    and (groups == 1 or t.mapping == MAPPINGS[0]))
        self._header_i = np.array([t.burst_bytes, t.channels, t.banks_per_channel,
                                   t.bursts_per_row, 0, 0, 0, 0, groups,
                                   MAPPINGS.index(t.mapping), plain, t.queue_depth,
                                   t.bank_queue_depth, t.write_queue_depth,
                                   t.write_drain_threshold], dtype=np.int64)
        # the kernel's scalar arguments, computed once
        self._t_hit = t.tCL
        self._t_miss = t.tRCD + t.tCL
        self._t_conflict = t.tRP + t.tRCD + t.tCL
        self._t_burst = t.burst_cycles
        self._header_f = np.array([t.latency_cycles, self._t_hit, self._t_miss,
                                   self._t_conflict, t.tCL, self._t_burst, t.tCCD_L, t.tRRD_S,
                                   t.tRRD_L, t.tFAW, t.tRAS, t.tREFI, t.tRFC, t.tRP, t.tRCD,
                                   act, t.tWTR + t.tCL if t.tWTR else 0.0, t.tRTW, t.tWR],
                                  dtype=np.float64)
        assert len(self._header_i) == _IH and len(self._header_f) == _FH
        self.reset()

    def reset(self) -> None:
        """All banks precharged, buses free at time 0, no activate yet, the first refresh due
        at tREFI, counters cleared."""
        t = self.timing
        ch, nb, groups = t.channels, t.channels * t.banks_per_channel, t.bank_groups
        self.ints = np.concatenate([self._header_i, np.full(nb, -1, dtype=np.int64),
                                    np.zeros(4 * (t.queue_depth + t.banks_per_channel
                                                  * t.bank_queue_depth)
                                             + 3 * t.banks_per_channel, dtype=np.int64)])
        o = _offsets(ch, t.banks_per_channel, groups)
        # + the channels' bus direction and when it turned, and whether each bank's last data
        # before that was written (_turn)
        self.floats = np.zeros(o[-1] + nb + 2 * ch + nb, dtype=np.float64)
        self.floats[:_FH] = self._header_f
        self.floats[o[2]:o[6]] = _NEVER  # activate history
        self.floats[o[6]:o[7]] = _NEVER  # last data start of a bank group
        self.floats[o[7]:o[8]] = t.tREFI
        self.stats = DramStats()

    @property
    def open_row(self) -> np.ndarray:
        """Open row of every bank (``channel * banks + bank``), -1 when precharged (a view)."""
        return self.ints[_IH:_IH + self.timing.channels * self.timing.banks_per_channel]

    @property
    def bus_free(self) -> np.ndarray:
        """When each channel's data bus is next free, cycles (a view)."""
        return self.floats[_FH:_FH + self.timing.channels]

    @property
    def bank_ready(self) -> np.ndarray:
        """When each bank can take its next command, cycles (a view)."""
        ch = self.timing.channels
        return self.floats[_FH + ch:_FH + ch + ch * self.timing.banks_per_channel]

    def _account(self, bursts: int, useful: int, write: bool, hits: int, misses: int,
                 conflicts: int) -> tuple[int, float]:
        """Add one transfer to ``stats``; returns (bytes moved, ideal cycles)."""
        moved = bursts * self.timing.burst_bytes
        ideal = useful / self.timing.bytes_per_cycle
        s = self.stats
        s.transfers += 1
        s.bursts += bursts
        s.bytes_useful += useful
        s.bytes_moved += moved
        if write:
            s.bytes_written += moved
        else:
            s.bytes_read += moved
        s.row_hits += hits
        s.row_misses += misses
        s.row_conflicts += conflicts
        s.busy_cycles += bursts * self._t_burst
        s.ideal_cycles += ideal
        return moved, ideal

    def transfer3(self, now: float, base0: int, size0: int, base1: int = 0, size1: int = 0,
                  base2: int = 0, size2: int = 0, write: bool = False
                  ) -> tuple[float, int, int, int, int]:
        """Up to three contiguous transfers requested together at ``now`` (the lean path the
        engine uses per tile; sizes in bytes, 0 skips a slot). Returns ``(finish, bytes moved,
        row hits, row misses, row conflicts)``; the ideal time is ``useful / bytes_per_cycle``.
        Counters in ``stats`` are updated as for ``transfer``."""
        _turn3(int(write), base0, size0, base1, size1, base2, size2, self.ints, self.floats)
        finish, bursts, hits, misses, conflicts = _transfer3_kernel(
            now + self.timing.latency_cycles, base0, size0, base1, size1, base2, size2,
            self.ints, self.floats)
        if bursts == 0:
            return float(now), 0, 0, 0, 0
        useful = max(size0, 0) + max(size1, 0) + max(size2, 0)
        moved, _ = self._account(bursts, useful, write, hits, misses, conflicts)
        return finish, moved, hits, misses, conflicts

    def transfer(self, now: float, base: int, run_bytes: int, n_runs: int = 1, stride: int = 0,
                 write: bool = False) -> TransferResult:
        """Move ``n_runs`` runs of ``run_bytes`` bytes at ``base + i * stride``, requested at
        ``now`` (cycles). An empty transfer (no bytes) finishes at ``now``."""
        if base < 0 or stride < 0 or run_bytes < 0 or n_runs < 0:
            raise ValueError(
                f"Dram.transfer: expected base, run_bytes, n_runs, stride >= 0, got "
                f"base={base}, run_bytes={run_bytes}, n_runs={n_runs}, stride={stride}"
            )
        if n_runs > 1 and stride < run_bytes:
            raise ValueError(
                f"Dram.transfer: runs overlap (stride={stride} < run_bytes={run_bytes}); "
                f"expected stride >= run_bytes when n_runs > 1"
            )
        now = float(now)
        if run_bytes == 0 or n_runs == 0:
            return TransferResult(now, now, 0, 0, 0, 0, 0, 0, 0.0)
        t0 = now + self.timing.latency_cycles
        bursts_ = _transfer_bursts(int(base), int(run_bytes), int(n_runs), int(stride),
                                   self.timing.burst_bytes)
        if self.timing.tWTR or self.timing.tRTW or self.timing.tWR:
            for ch in np.unique(bursts_ % self.timing.channels).tolist():
                _turn(ch, int(write), self.ints, self.floats)
        if self.timing.queue_depth > 1 or self.timing.bank_queue_depth > 0:
            done = np.empty(len(bursts_))
            hits, misses, conflicts = _queue_kernel(np.full(len(bursts_), t0), bursts_,
                                                    np.zeros(len(bursts_), dtype=np.bool_), False,
                                                    self.ints, self.floats, done)
            finish, bursts = float(done.max()), len(bursts_)
        else:
            finish, bursts, hits, misses, conflicts = _transfer_kernel(
                t0, int(base), int(run_bytes), int(n_runs), int(stride), self.ints,
                self.floats)
        useful = run_bytes * n_runs
        moved, ideal = self._account(bursts, useful, write, hits, misses, conflicts)
        return TransferResult(now, finish, useful, moved, bursts, hits, misses, conflicts, ideal)

    def stream(self, now: np.ndarray, addr: np.ndarray, write: np.ndarray | None = None
               ) -> np.ndarray:
        """One-burst requests: the burst holding byte ``addr[i]`` requested at ``now[i]``
        (cycles, non-decreasing), served by each channel from a queue of ``queue_depth`` (the
        module docstring; with a depth of 1, in order, as one ``transfer`` each). Returns the
        end of every request's data, cycles (``latency_cycles`` included)."""
        now = np.asarray(now, dtype=np.float64)
        addr = np.asarray(addr, dtype=np.int64)
        write = np.zeros(len(addr), dtype=bool) if write is None else np.asarray(write, bool)
        if not (now.shape == addr.shape == write.shape and now.ndim == 1):
            raise ValueError("Dram.stream: expected now, addr and write of one length")
        if len(addr) and (addr.min() < 0 or np.any(np.diff(now) < 0)):
            raise ValueError("Dram.stream: expected addresses >= 0 and non-decreasing times")
        done = np.empty(len(addr))
        bursts = addr // self.timing.burst_bytes
        t = self.timing
        if t.write_queue_depth == 0 and (t.tWTR or t.tRTW or t.tWR):
            for ch in range(t.channels):  # without a write buffer a stream's bursts are reads
                _turn(ch, 0, self.ints, self.floats)
        hits, misses, conflicts = _queue_kernel(now + t.latency_cycles, bursts, write,
                                                t.write_queue_depth > 0, self.ints, self.floats,
                                                done)
        n, written = len(addr), int(write.sum()) * self.timing.burst_bytes
        self._account(n, n * self.timing.burst_bytes, False, hits, misses, conflicts)
        self.stats.transfers += n - 1  # one per request
        self.stats.bytes_read -= written
        self.stats.bytes_written += written
        return done
