"""DRAM timing model: channels, banks, open rows and burst-granular transfers.

The SimPy engine calls :meth:`Dram.transfer` once per DMA transfer of a buffer tile; the per-burst
loop is a serial numba kernel over small state arrays, so one call costs a few microseconds. All
times are accelerator clock cycles, kept as float64 (a burst may occupy a bus for a fractional
number of cycles).

Address mapping (burst-interleaved over channels, rows rotate over banks)
------------------------------------------------------------------------
For a byte address ``a``, with ``bursts_per_row = row_buffer_bytes // burst_bytes``::

    b          = a // burst_bytes           # global burst index
    channel    = b % channels               # consecutive bursts interleave across channels
    j          = b // channels              # burst index inside the channel
    column     = j % bursts_per_row         # burst inside a row (not needed for timing)
    row_global = j // bursts_per_row        # a row_buffer_bytes-sized row of one channel
    bank       = row_global % banks         # consecutive rows of a channel rotate over banks
    row        = row_global // banks        # the row inside that bank

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
  transfer, on its first burst; the bursts behind it overlap with it).
* Open-page policy. Access latency ``L`` is ``tCL`` on a row hit (the row is open), ``tRCD + tCL``
  on a row miss (the bank has no open row: only at start or after :meth:`Dram.reset`) and
  ``tRP + tRCD + tCL`` on a row conflict (another row is open). The accessed row is left open.
* The bank's command starts at ``cmd = max(t0, bank_ready)``; the data then starts at
  ``data_start = max(bus_free[channel], cmd + L)`` and occupies the channel's data bus for
  ``t_burst = burst_bytes / (bytes_per_cycle / channels)`` cycles: ``data_end = data_start +
  t_burst``, and ``bus_free[channel] = data_end``. A channel therefore serves its bursts in
  order (no reordering).
* Simplification for bank occupancy: ``bank_ready = data_end - tCL``. A bank can issue its next
  column read so that its data follows the previous burst's data back-to-back (row hits stream at
  the full bus rate), and a precharge + activate for a new row starts only then, so a row change
  on a bank costs ``tRP + tRCD`` of bus idle time unless other banks' data fills it (bank
  parallelism). Writes use the same timing as reads (no write-to-read turnaround, no refresh).
* ``finish`` is the end of the transfer's last data beat. ``ideal_cycles = bytes_useful /
  bytes_per_cycle`` (all channels at peak), and ``finish - start >= ideal_cycles`` always, so the
  engine can charge ``ideal_cycles`` of a wait to DRAM bandwidth and the rest
  (:attr:`TransferResult.overhead_cycles`) to DRAM latency/banks.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np

from common.jit import njit

__all__ = ["Dram", "DramStats", "DramTiming", "TransferResult", "map_address"]


@dataclass(frozen=True)
class DramTiming:
    """The DRAM parameters the timing model needs, as plain numbers.

    ``bytes_per_cycle`` is the total peak over all channels, in bytes per accelerator cycle;
    ``latency_cycles``, ``tRCD``, ``tCL`` and ``tRP`` are in accelerator cycles.
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

    def __post_init__(self) -> None:
        for name in ("channels", "banks_per_channel", "row_buffer_bytes", "burst_bytes"):
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
        for name in ("latency_cycles", "tRCD", "tCL", "tRP"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"DramTiming.{name}: expected cycles >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.row_buffer_bytes % self.burst_bytes:
            raise ValueError(
                f"DramTiming.row_buffer_bytes: expected a multiple of burst_bytes "
                f"({self.burst_bytes}), got {self.row_buffer_bytes}"
            )

    @classmethod
    def from_spec(cls, spec: Any, clock_ghz: float) -> DramTiming:
        """Read a DRAM spec object (``arch.DramSpec`` or anything with the same attributes).

        The peak comes from ``spec.bytes_per_cycle(clock_ghz)`` when the spec has it, else from
        ``spec.bandwidth_gbps / clock_ghz`` (GB/s over Gcycles/s is bytes per cycle).
        """
        per_cycle = getattr(spec, "bytes_per_cycle", None)
        if callable(per_cycle):
            bpc = float(per_cycle(clock_ghz))
        else:
            bpc = float(spec.bandwidth_gbps) / float(clock_ghz)
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
    row_global = j // timing.bursts_per_row
    return (channel, row_global % timing.banks_per_channel,
            row_global // timing.banks_per_channel, j % timing.bursts_per_row)


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


@njit(cache=True)
def _transfer_kernel(t0, base, run_bytes, n_runs, stride, burst_bytes, channels, banks,
                     bursts_per_row, t_hit, t_miss, t_conflict, t_cl, t_burst,
                     bus_free, open_row, bank_ready):
    """Time the bursts of one transfer; updates the state arrays in place.

    ``open_row`` and ``bank_ready`` are indexed by ``channel * banks + bank``; an open row < 0
    means the bank is precharged. Returns ``(finish, bursts, hits, misses, conflicts)``.
    """
    finish = t0
    prev = -1
    bursts = 0
    hits = 0
    misses = 0
    conflicts = 0
    for r in range(n_runs):
        start = base + r * stride
        b = start // burst_bytes
        last_b = (start + run_bytes - 1) // burst_bytes
        if b == prev:  # the burst just fetched: coalesced
            b += 1
        while b <= last_b:
            ch = b % channels
            j = b // channels
            row_global = j // bursts_per_row
            k = ch * banks + row_global % banks
            row = row_global // banks
            open_r = open_row[k]
            if open_r == row:
                lat = t_hit
                hits += 1
            elif open_r < 0:
                lat = t_miss
                misses += 1
            else:
                lat = t_conflict
                conflicts += 1
            open_row[k] = row
            cmd = max(t0, bank_ready[k])
            data_start = max(bus_free[ch], cmd + lat)
            data_end = data_start + t_burst
            bus_free[ch] = data_end
            bank_ready[k] = data_end - t_cl
            if data_end > finish:
                finish = data_end
            bursts += 1
            b += 1
        prev = last_b
    return finish, bursts, hits, misses, conflicts


@njit(cache=True)
def _contiguous_kernel(t0, base, size, burst_bytes, channels, banks, bursts_per_row, t_hit,
                       t_miss, t_conflict, t_cl, t_burst, bus_free, open_row, bank_ready):
    """One contiguous run, timed exactly as ``_transfer_kernel`` times it but one row segment
    at a time: after a segment's first burst every burst of the same open row is a hit that
    starts when the previous one ends, so only the first needs the bank logic. Channels are
    independent (own bus and banks), so they are walked one after another."""
    b0 = base // burst_bytes
    b1 = (base + size - 1) // burst_bytes
    finish = t0
    hits = 0
    misses = 0
    conflicts = 0
    for ch in range(channels):
        first = b0 + (ch - b0 % channels) % channels
        if first > b1:
            continue
        last = b1 - (b1 - ch) % channels
        j = first // channels
        j_hi = last // channels
        while j <= j_hi:
            row_global = j // bursts_per_row
            seg_end = min(j_hi, (row_global + 1) * bursts_per_row - 1)
            n = seg_end - j + 1
            k = ch * banks + row_global % banks
            row = row_global // banks
            open_r = open_row[k]
            if open_r == row:
                lat = t_hit
                hits += 1
            elif open_r < 0:
                lat = t_miss
                misses += 1
            else:
                lat = t_conflict
                conflicts += 1
            hits += n - 1
            open_row[k] = row
            cmd = max(t0, bank_ready[k])
            data_end = max(bus_free[ch], cmd + lat)
            for _ in range(n):  # the same float additions as burst by burst
                data_end += t_burst
            bus_free[ch] = data_end
            bank_ready[k] = data_end - t_cl
            if data_end > finish:
                finish = data_end
            j = seg_end + 1
    return finish, b1 - b0 + 1, hits, misses, conflicts


@njit(cache=True)
def _transfer3_kernel(t0, base0, size0, base1, size1, base2, size2, burst_bytes, channels,
                      banks, bursts_per_row, t_hit, t_miss, t_conflict, t_cl, t_burst,
                      bus_free, open_row, bank_ready):
    """Up to three contiguous transfers issued together (one tile's operands), in order; a size
    of 0 skips a slot. Returns ``(finish, bursts, hits, misses, conflicts)`` summed."""
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
        f, b, h, m, c = _contiguous_kernel(t0, base, size, burst_bytes, channels, banks,
                                           bursts_per_row, t_hit, t_miss, t_conflict, t_cl,
                                           t_burst, bus_free, open_row, bank_ready)
        finish = max(finish, f)
        bursts += b
        hits += h
        misses += m
        conflicts += c
    return finish, bursts, hits, misses, conflicts


def serve_state(model: Dram, region: int) -> tuple[np.ndarray, np.ndarray]:
    """The state ``_serve_kernel`` works on, as two flat arrays (a numba call's cost grows with
    its array arguments): ``ints`` = burst bytes, channels, banks per channel, bursts per row,
    region size, the A/B/C region offsets, then the open row of every bank; ``floats`` =
    latency, tCL hit, miss and conflict latencies, tCL, burst cycles, then every channel's
    bus-free time and every bank's ready time. Copied from ``model``'s state."""
    t = model.timing
    ints = np.concatenate([np.array([t.burst_bytes, t.channels, t.banks_per_channel,
                                     t.bursts_per_row, region, 0, 0, 0], dtype=np.int64),
                           model.open_row]).astype(np.int64)
    floats = np.concatenate([np.array([t.latency_cycles, model._t_hit, model._t_miss,
                                       model._t_conflict, t.tCL, model._t_burst],
                                      dtype=np.float64), model.bus_free, model.bank_ready])
    return ints, floats


@njit(cache=True)
def _serve_kernel(now, ra, rb, rc, gi, ints, floats, acc):
    """One DMA request of the engine, whole: ``ra``, ``rb``, ``rc`` bytes of the A, B and C
    regions at their running offsets (``ints[5:8]``, advanced; each region wraps at
    ``ints[4]`` bytes), timed as ``_transfer3_kernel`` times them, and the bytes moved, row
    hits, misses and conflicts added to ``acc[gi]``. ``ints``/``floats``: ``serve_state``.
    Returns the finish time (``now`` when nothing moved)."""
    region = ints[4]
    channels = ints[1]
    open_row = ints[8:]
    bus_free = floats[6:6 + channels]
    bank_ready = floats[6 + channels:]
    base = np.empty(3, dtype=np.int64)
    sizes = (ra, rb, rc)
    for i in range(3):
        base[i] = i * region + ints[5 + i] % region
        ints[5 + i] += sizes[i]
    finish, bursts, hits, misses, conflicts = _transfer3_kernel(
        now + floats[0], base[0], ra, base[1], rb, base[2], rc, ints[0], channels, ints[2],
        ints[3], floats[1], floats[2], floats[3], floats[4], floats[5], bus_free, open_row,
        bank_ready)
    if bursts == 0:
        return now
    acc[gi, 0] += bursts * ints[0]
    acc[gi, 1] += hits
    acc[gi, 2] += misses
    acc[gi, 3] += conflicts
    return finish


class Dram:
    """Mutable DRAM state (per channel bus, per bank open row and ready time) and counters."""

    def __init__(self, timing: DramTiming) -> None:
        self.timing = timing
        n_banks = timing.channels * timing.banks_per_channel
        self.bus_free = np.zeros(timing.channels, dtype=np.float64)
        self.open_row = np.full(n_banks, -1, dtype=np.int64)
        self.bank_ready = np.zeros(n_banks, dtype=np.float64)
        self.stats = DramStats()
        # the kernel's scalar arguments, computed once
        self._t_hit = timing.tCL
        self._t_miss = timing.tRCD + timing.tCL
        self._t_conflict = timing.tRP + timing.tRCD + timing.tCL
        self._t_burst = timing.burst_cycles
        self._geometry = (timing.burst_bytes, timing.channels, timing.banks_per_channel,
                          timing.bursts_per_row)

    def reset(self) -> None:
        """All banks precharged, buses free at time 0, counters cleared."""
        self.bus_free[:] = 0.0
        self.open_row[:] = -1
        self.bank_ready[:] = 0.0
        self.stats = DramStats()

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
        timing = self.timing
        burst_bytes, channels, banks, bursts_per_row = self._geometry
        finish, bursts, hits, misses, conflicts = _transfer3_kernel(
            now + timing.latency_cycles, base0, size0, base1, size1, base2, size2,
            burst_bytes, channels, banks, bursts_per_row,
            self._t_hit, self._t_miss, self._t_conflict, timing.tCL, self._t_burst,
            self.bus_free, self.open_row, self.bank_ready,
        )
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
        timing = self.timing
        burst_bytes, channels, banks, bursts_per_row = self._geometry
        finish, bursts, hits, misses, conflicts = _transfer_kernel(
            now + timing.latency_cycles, int(base), int(run_bytes), int(n_runs), int(stride),
            burst_bytes, channels, banks, bursts_per_row,
            self._t_hit, self._t_miss, self._t_conflict, timing.tCL, self._t_burst,
            self.bus_free, self.open_row, self.bank_ready,
        )
        useful = run_bytes * n_runs
        moved, ideal = self._account(bursts, useful, write, hits, misses, conflicts)
        return TransferResult(now, finish, useful, moved, bursts, hits, misses, conflicts, ideal)
