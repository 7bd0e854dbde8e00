"""DRAM timing model: against a slow reference, streaming peak, latency-bound reads, alignment,
channel scaling, row-buffer behaviour."""

from __future__ import annotations

import dataclasses
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from simulator.dram import MAPPINGS, Dram, DramTiming, TransferResult, map_address

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
MiB = 1 << 20


def timing(**kw) -> DramTiming:
    base = dict(channels=1, bytes_per_cycle=16.0, latency_cycles=100, banks_per_channel=4,
                row_buffer_bytes=2048, burst_bytes=64, tRCD=14, tCL=14, tRP=14)
    base.update(kw)
    return DramTiming(**base)


HBM = timing(channels=8, bytes_per_cycle=256.0, banks_per_channel=16, row_buffer_bytes=2048)
DDR = timing(channels=2, bytes_per_cycle=38.4, latency_cycles=60, banks_per_channel=16,
             row_buffer_bytes=8192, tRCD=22, tCL=22, tRP=22)
ONE_BANK = timing(channels=1, bytes_per_cycle=16.0, banks_per_channel=1, tRCD=20, tCL=20, tRP=20)
SHORT_ROWS = timing(channels=1, bytes_per_cycle=16.0, banks_per_channel=2, row_buffer_bytes=256,
                    tRCD=20, tCL=20, tRP=20)
CONFIGS = {"hbm": HBM, "ddr": DDR, "one_bank": ONE_BANK, "short_rows": SHORT_ROWS}


# ------------------------------------------------------------------------------------------------
# the slow reference: byte-by-byte burst enumeration, dict state, the rules of the docstring
# ------------------------------------------------------------------------------------------------
class ReferenceDram:
    def __init__(self, t: DramTiming) -> None:
        self.t = t
        self.bus_free: dict[int, float] = {}
        self.open_row: dict[tuple[int, int], int] = {}
        self.bank_ready: dict[tuple[int, int], float] = {}

    def transfer(self, now, base, run_bytes, n_runs=1, stride=0, write=False) -> TransferResult:
        t = self.t
        now = float(now)
        # every burst any useful byte lies in, in order; a repeat of the previous one is coalesced
        seq: list[int] = []
        for i in range(n_runs):
            for addr in range(base + i * stride, base + i * stride + run_bytes):
                b = addr // t.burst_bytes
                if not seq or seq[-1] != b:
                    seq.append(b)
        useful = run_bytes * n_runs
        if not seq:
            return TransferResult(now, now, 0, 0, 0, 0, 0, 0, 0.0)
        t_burst = t.burst_bytes / (t.bytes_per_cycle / t.channels)
        t0 = now + t.latency_cycles
        finish = t0
        hits = misses = conflicts = 0
        for b in seq:
            channel, j = b % t.channels, b // t.channels
            row_global = j // (t.row_buffer_bytes // t.burst_bytes)
            bank, row = row_global % t.banks_per_channel, row_global // t.banks_per_channel
            key = (channel, bank)
            if key not in self.open_row:
                latency = t.tRCD + t.tCL
                misses += 1
            elif self.open_row[key] == row:
                latency = t.tCL
                hits += 1
            else:
                latency = t.tRP + t.tRCD + t.tCL
                conflicts += 1
            self.open_row[key] = row
            command = max(t0, self.bank_ready.get(key, 0.0))
            data_start = max(self.bus_free.get(channel, 0.0), command + latency)
            data_end = data_start + t_burst
            self.bus_free[channel] = data_end
            self.bank_ready[key] = data_end - t.tCL
            finish = max(finish, data_end)
        return TransferResult(now, finish, useful, len(seq) * t.burst_bytes, len(seq), hits,
                              misses, conflicts, useful / t.bytes_per_cycle)


@st.composite
def timings(draw) -> DramTiming:
    burst = draw(st.sampled_from([16, 32, 64]))
    return DramTiming(
        channels=draw(st.integers(1, 4)),
        bytes_per_cycle=draw(st.sampled_from([3.0, 8.0, 12.8, 16.0, 25.6, 64.0])),
        latency_cycles=draw(st.integers(0, 60)),
        banks_per_channel=draw(st.integers(1, 4)),
        row_buffer_bytes=burst * draw(st.integers(1, 8)),
        burst_bytes=burst,
        tRCD=draw(st.integers(0, 20)),
        tCL=draw(st.integers(0, 20)),
        tRP=draw(st.sampled_from([0, 1, 7, 13.5, 20])),
    )


transfers = st.lists(
    st.tuples(
        st.integers(0, 300),  # gap since the previous request (may be before it finished)
        st.integers(0, 4096),  # base
        st.integers(0, 200),  # run_bytes
        st.integers(0, 6),  # n_runs
        st.integers(0, 300),  # stride beyond run_bytes (runs may not overlap)
        st.booleans(),  # write
    ),
    min_size=1, max_size=10,
)


@settings(max_examples=300, **SETTINGS)
@given(t=timings(), seq=transfers)
def test_matches_reference(t, seq):
    fast, slow = Dram(t), ReferenceDram(t)
    now = 0.0
    for gap, base, run, n, extra, write in seq:
        now += gap
        stride = run + extra
        got = fast.transfer(now, base, run, n, stride, write)
        want = slow.transfer(now, base, run, n, stride, write)
        assert got == want
        assert got.cycles >= got.ideal_cycles * (1 - 1e-12)
        assert got.bytes_moved >= got.bytes_useful
    s = fast.stats
    assert s.row_hits + s.row_misses + s.row_conflicts == s.bursts
    assert s.bytes_read + s.bytes_written == s.bytes_moved == s.bursts * t.burst_bytes
    assert s.busy_cycles == pytest.approx(s.bursts * t.burst_cycles)


def test_map_address():
    t = timing(channels=2, banks_per_channel=4, row_buffer_bytes=256, burst_bytes=64)
    # 4 bursts per row; bursts alternate channels; a channel's row = 4 of its bursts
    assert map_address(t, 0) == (0, 0, 0, 0)
    assert map_address(t, 64) == (1, 0, 0, 0)
    assert map_address(t, 128 + 63) == (0, 0, 0, 1)
    assert map_address(t, 8 * 64) == (0, 1, 0, 0)  # channel 0's 5th burst: next row, next bank
    assert map_address(t, 4 * 8 * 64) == (0, 0, 1, 0)  # wrapped round the 4 banks: row 1
    assert map_address(t, 4 * 8 * 64 + 3 * 128 + 64) == (1, 0, 1, 3)


# ------------------------------------------------------------------------------------------------
# streaming reaches the peak the timing allows
# ------------------------------------------------------------------------------------------------
def streaming_bound(t: DramTiming, nbytes: int) -> float:
    """An upper bound on a contiguous aligned read's cycles, from the parameters.

    Per channel the rows go round-robin over the banks. A row takes D = bursts_per_row * t_burst
    of bus time; a bank may start its next row X = tRP + tRCD after its previous one ended, so
    with B banks the steady state is one row per max(D, (D + X) / B) cycles (the row switch is
    hidden once (B - 1) * D >= X). The first rows find their banks precharged (tRCD + tCL).
    """
    rows_per_channel = nbytes // t.channels // t.row_buffer_bytes
    d = t.bursts_per_row * t.burst_cycles
    per_row = max(d, (d + t.tRP + t.tRCD) / t.banks_per_channel)
    return t.latency_cycles + t.tRCD + t.tCL + (rows_per_channel - 1) * per_row + d


@pytest.mark.parametrize("name", CONFIGS)
def test_streaming_reaches_allowed_peak(name):
    t = CONFIGS[name]
    nbytes = 4 * MiB
    r = Dram(t).transfer(0.0, 0, nbytes)
    assert r.bytes_moved == nbytes
    assert r.row_conflicts + r.row_misses == nbytes // t.row_buffer_bytes  # one per row
    achieved = nbytes / r.cycles
    bound = streaming_bound(t, nbytes)
    assert achieved <= t.bytes_per_cycle
    assert r.cycles <= bound * (1 + 1e-9)  # at least the efficiency the timing allows
    assert r.cycles >= 0.99 * bound  # and the bound is tight: the overheads really are charged
    if name in ("hbm", "ddr"):  # banks hide the row switches
        assert achieved >= 0.99 * t.bytes_per_cycle


def test_streaming_one_bank_is_exact():
    t = ONE_BANK
    nbytes = 64 * 1024
    rows = nbytes // t.row_buffer_bytes
    want = (t.latency_cycles + t.tRCD + t.tCL + nbytes / t.bytes_per_cycle
            + (rows - 1) * (t.tRP + t.tRCD))
    assert Dram(t).transfer(0.0, 0, nbytes).cycles == pytest.approx(want, rel=1e-12)


def test_chunks_requested_together_stream_like_one_transfer():
    t = DDR
    one = Dram(t).transfer(0.0, 0, 1 * MiB)
    dram = Dram(t)
    chunks = [dram.transfer(0.0, off, 32 * 1024) for off in range(0, MiB, 32 * 1024)]
    assert max(c.finish for c in chunks) == pytest.approx(one.finish, rel=1e-12)
    assert dram.stats.bursts == one.bursts


def test_contention_delays_a_later_transfer():
    dram = Dram(HBM)
    a = dram.transfer(0.0, 0, 64 * 1024)
    b = dram.transfer(0.0, MiB, 64 * 1024)  # same time, other rows: waits for the buses
    assert b.finish >= a.finish + 0.9 * (64 * 1024 / HBM.bytes_per_cycle)
    c = Dram(HBM).transfer(0.0, MiB, 64 * 1024)
    assert c.finish < b.finish


# ------------------------------------------------------------------------------------------------
# small scattered reads are latency-bound
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["hbm", "ddr"])
def test_scattered_small_reads_are_latency_bound(name):
    t = CONFIGS[name]
    rng = random.Random(7)
    dram = Dram(t)
    now = 0.0
    total = 0.0
    for _ in range(500):
        r = dram.transfer(now, rng.randrange(0, 1 << 30, 64), 64)
        assert r.bursts == 1
        access = (r.row_hits * t.tCL + r.row_misses * (t.tRCD + t.tCL)
                  + r.row_conflicts * (t.tRP + t.tRCD + t.tCL))
        assert r.cycles == pytest.approx(t.latency_cycles + access + t.burst_cycles, rel=1e-12)
        total += r.cycles
        now = r.finish
    s = dram.stats
    assert s.row_conflicts > 0.5 * s.bursts  # random rows: mostly conflicts
    per_read = total / 500
    worst = t.latency_cycles + t.tRP + t.tRCD + t.tCL + t.burst_cycles
    assert t.latency_cycles + t.tCL + t.burst_cycles < per_read <= worst
    assert per_read >= 0.9 * worst
    assert 64 / per_read < 0.2 * t.bytes_per_cycle


# ------------------------------------------------------------------------------------------------
# burst alignment
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("base", "run", "n", "stride", "bursts"),
    [
        (100, 1, 1, 0, 1),  # one byte moves a whole burst
        (63, 2, 1, 0, 2),  # spans a burst boundary
        (0, 64, 1, 0, 1),
        (1, 64, 1, 0, 2),
        (0, 8, 4, 16, 1),  # four 8-byte runs inside one burst: fetched once
        (60, 8, 3, 256, 6),  # each run straddles a boundary
        (0, 64, 4, 64, 4),  # contiguous runs = one run of 256
        (32, 64, 4, 64, 5),
        (0, 1, 3, 1, 1),  # three adjacent bytes
    ],
)
def test_burst_alignment(base, run, n, stride, bursts):
    t = timing()
    r = Dram(t).transfer(0.0, base, run, n, stride)
    assert r.bursts == bursts
    assert r.bytes_moved == bursts * t.burst_bytes
    assert r.bytes_useful == run * n


def test_runs_packed_contiguously_time_like_one_run():
    t = timing(channels=2, bytes_per_cycle=32.0)
    one = Dram(t).transfer(5.0, 40, 100 * 48)
    many = Dram(t).transfer(5.0, 40, 48, 100, 48)
    assert many == one  # same bursts, same times
    assert many.ideal_cycles == 100 * 48 / t.bytes_per_cycle


def test_empty_transfer_finishes_at_once():
    dram = Dram(HBM)
    assert dram.transfer(10.0, 0, 0).finish == 10.0
    assert dram.transfer(10.0, 0, 64, n_runs=0).bursts == 0
    assert dram.stats.transfers == 0
    with pytest.raises(ValueError, match="base"):
        dram.transfer(0.0, -1, 64)
    with pytest.raises(ValueError, match="overlap"):
        dram.transfer(0.0, 0, 64, n_runs=2, stride=32)


# ------------------------------------------------------------------------------------------------
# channels scale streaming bandwidth
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [2, 4])
def test_channels_scale_streaming(channels):
    base = dict(bytes_per_cycle=16.0, banks_per_channel=8)
    one = Dram(timing(channels=1, **base)).transfer(0.0, 0, 4 * MiB)
    base["bytes_per_cycle"] = 16.0 * channels  # same per-channel peak
    many = Dram(timing(channels=channels, **base)).transfer(0.0, 0, 4 * MiB)
    ratio = one.cycles / many.cycles
    assert 0.97 * channels <= ratio <= channels * (1 + 1e-9)


# ------------------------------------------------------------------------------------------------
# the row buffer
# ------------------------------------------------------------------------------------------------
def test_row_hits_misses_conflicts():
    t = timing(channels=1, banks_per_channel=4, row_buffer_bytes=512, burst_bytes=64)
    dram = Dram(t)
    hit = t.latency_cycles + t.tCL + t.burst_cycles
    first = dram.transfer(0.0, 0, 64)  # bank precharged: miss
    assert first.row_misses == 1
    assert first.cycles == t.latency_cycles + t.tRCD + t.tCL + t.burst_cycles
    again = dram.transfer(first.finish, 0, 64)  # same burst again: hit
    assert (again.row_hits, again.cycles) == (1, hit)
    same_row = dram.transfer(again.finish, 448, 64)  # last column of the same row: hit
    assert same_row.row_hits == 1
    other_bank = dram.transfer(same_row.finish, 512, 64)  # next row lives in bank 1: miss
    assert other_bank.row_misses == 1
    now = other_bank.finish
    same_bank_rows = [0, 4 * 512]  # rows 0 and 1 of bank 0
    for i in range(6):
        r = dram.transfer(now, same_bank_rows[(i + 1) % 2], 64)
        assert r.row_conflicts == 1
        assert r.cycles == t.latency_cycles + t.tRP + t.tRCD + t.tCL + t.burst_cycles
        now = r.finish
    assert dram.stats.row_conflicts == 6 and dram.stats.row_hits == 2
    dram.reset()
    assert dram.transfer(0.0, 0, 64).row_misses == 1


def test_alternating_rows_stream_slower_than_one_row():
    t = timing(channels=1, banks_per_channel=1, row_buffer_bytes=1024)
    hits = Dram(t).transfer(0.0, 0, 64, n_runs=16, stride=64)  # the 16 bursts of one row
    alt = Dram(t).transfer(0.0, 0, 64, n_runs=16, stride=1024)  # a new row every burst
    assert (hits.row_misses, hits.row_hits, hits.row_conflicts) == (1, 15, 0)
    assert (alt.row_misses, alt.row_hits, alt.row_conflicts) == (1, 0, 15)
    assert alt.cycles - hits.cycles == pytest.approx(15 * (t.tRP + t.tRCD), rel=1e-12)


# ------------------------------------------------------------------------------------------------
# construction
# ------------------------------------------------------------------------------------------------
def test_from_spec():
    spec = SimpleNamespace(channels=4, bandwidth_gbps=102.4, latency_cycles=80,
                           banks_per_channel=8, row_buffer_bytes=1024, burst_bytes=32, tRCD=15,
                           tCL=15, tRP=15)
    t = DramTiming.from_spec(spec, clock_ghz=0.8)
    assert t.bytes_per_cycle == pytest.approx(128.0)
    assert (t.channels, t.burst_bytes, t.bursts_per_row, t.tCL) == (4, 32, 32, 15.0)
    assert t.burst_cycles == pytest.approx(1.0)
    spec.bytes_per_cycle = lambda clock_ghz: 7.0 * clock_ghz
    assert DramTiming.from_spec(spec, 2.0).bytes_per_cycle == 14.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("channels", 0), ("burst_bytes", 48.5), ("row_buffer_bytes", 100), ("bytes_per_cycle", 0),
     ("tRP", -1), ("latency_cycles", math.nan)],
)
def test_bad_timing_is_refused(field, value):
    with pytest.raises(ValueError, match=field):
        timing(**{field: value})


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(0, 20000), min_size=3, max_size=3),
       bases=st.lists(st.integers(0, 1 << 20), min_size=3, max_size=3),
       now=st.floats(0, 1000), channels=st.sampled_from([1, 2, 3, 4]),
       bpc=st.sampled_from([10.0, 16.0, 6.4]), banks=st.sampled_from([1, 2, 4]))
def test_transfer3_equals_three_transfers(sizes, bases, now, channels, bpc, banks):
    """transfer3 walks row segments (fast path); transfer walks bursts: same results."""
    timing = DramTiming(channels=channels, bytes_per_cycle=bpc, latency_cycles=7,
                        banks_per_channel=banks, row_buffer_bytes=512, burst_bytes=64,
                        tRCD=5, tCL=6, tRP=4)
    a, b = Dram(timing), Dram(timing)
    a.transfer(0.0, 12345, 999)  # some state first
    b.transfer(0.0, 12345, 999)
    finish, moved, hits, misses, conflicts = a.transfer3(
        now, bases[0], sizes[0], bases[1], sizes[1], bases[2], sizes[2])
    results = [b.transfer(now, base, size) for base, size in zip(bases, sizes, strict=True)]
    assert finish == max([now] + [r.finish for r in results if r.bytes_useful])
    assert moved == sum(r.bytes_moved for r in results)
    assert (hits, misses, conflicts) == (sum(r.row_hits for r in results),
                                         sum(r.row_misses for r in results),
                                         sum(r.row_conflicts for r in results))
    np.testing.assert_array_equal(a.bus_free, b.bus_free)
    np.testing.assert_array_equal(a.open_row, b.open_row)
    np.testing.assert_array_equal(a.bank_ready, b.bank_ready)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(reqs=st.lists(st.tuples(*(st.integers(0, 5000) for _ in range(3)), st.booleans(),
                               st.floats(0, 50)), min_size=1, max_size=25),
       tm=st.sampled_from([HBM, DDR]))
def test_the_engines_request_kernel_equals_transfer3(reqs, tm):
    """``_serve_kernel`` (one numba call per engine request: addresses from running region
    offsets, timing, per-GEMM counters) against ``Dram.transfer3`` with the same addresses
    worked out here."""
    from simulator.dram import _serve_kernel, serve_state

    region = 1 << 30
    ref, fast = Dram(tm), Dram(tm)
    ints, floats = serve_state(fast, region)
    acc = np.zeros((2, 4), dtype=np.int64)
    mine = [0, 0, 0]
    want = np.zeros((2, 4), dtype=np.int64)
    now = 0.0
    for i, (a, b, c, write, dt) in enumerate(reqs):
        now += dt
        if write:
            a = b = 0
        base = [r * region + mine[r] % region for r in range(3)]
        mine = [m + n for m, n in zip(mine, (a, b, c), strict=True)]
        finish, moved, h, m, cf = ref.transfer3(now, base[0], a, base[1], b, base[2], c, write)
        want[i % 2] += (moved, h, m, cf)
        got = _serve_kernel(now, a, b, c, i % 2, ints, floats, acc, int(write))
        assert got == finish
    np.testing.assert_array_equal(acc, want)
    assert ints[5:8].tolist() == mine


# ------------------------------------------------------------------------------------------------
# the later rules (bank groups, mapping, activate limits, refresh, queues) against a slow
# reference: a plain-Python event loop over bursts, dict state, the rules of the docstring
# ------------------------------------------------------------------------------------------------
class QueueReference:
    def __init__(self, t: DramTiming) -> None:
        self.t = t
        self.bus: dict[int, float] = {}
        self.open: dict[tuple[int, int], int] = {}
        self.ready: dict[tuple[int, int], float] = {}
        self.act: dict[tuple[int, int], float] = {}  # last activate of a bank
        self.acts: dict[int, list[float]] = {}  # a channel's activates, in order
        self.acts_g: dict[tuple[int, int], float] = {}  # last activate of a bank group
        self.start_g: dict[tuple[int, int], float] = {}  # last data start of a bank group
        self.next_ref: dict[int, float] = {}
        self.end: dict[tuple[int, int], float] = {}  # end of a bank's last data
        self.dir: dict[int, int] = {}  # a channel's last direction, 1 a write
        self.written: dict[tuple[int, int], bool] = {}  # a bank's last data was a write
        self.kinds = [0, 0, 0]

    def visible(self, admitted: list[int], bursts: list[int]) -> list[int]:
        """The admitted requests in their bank's queue (the oldest ``bank_queue_depth`` of each
        bank; all without bank queues), in age order."""
        per_bank = self.t.bank_queue_depth
        if per_bank == 0:
            return list(admitted)
        seen: dict[int, int] = {}
        out = []
        for i in admitted:
            bank = self.locate(bursts[i])[1]
            if seen.get(bank, 0) < per_bank:
                out.append(i)
            seen[bank] = seen.get(bank, 0) + 1
        return out

    def turn(self, ch: int, write: int) -> None:
        """The bus turns around before data of the other direction than the channel's last:
        write to read tWTR + tCL, read to write tRTW (both 0: no rule)."""
        t = self.t
        if self.dir.get(ch, 0) != write:
            self.dir[ch] = write
            gap = t.tRTW if write else (t.tWTR + t.tCL if t.tWTR else 0.0)
            self.bus[ch] = self.bus.get(ch, 0.0) + gap

    def turn_transfer(self, bursts: list[int], write: int) -> None:
        """A transfer's bursts are all reads or all writes: every channel it touches turns
        first."""
        if self.t.tWTR or self.t.tRTW or self.t.tWR:
            for ch in sorted({self.locate(b)[0] for b in bursts}):
                self.turn(ch, write)

    def locate(self, b: int) -> tuple[int, int, int, int]:
        t = self.t
        G, bpr, banks = t.bank_groups, t.bursts_per_row, t.banks_per_channel
        ch, j = b % t.channels, b // t.channels
        if t.mapping == "channel_group_column_bank":
            group = j % G
            block = (j // G) // bpr
            return ch, (block % (banks // G)) * G + group, block // (banks // G), group
        rg = j // bpr
        return ch, rg % banks, rg // banks, (rg % banks) % G

    def refresh(self, ch: int, t0: float) -> None:
        t = self.t
        if not t.tREFI:
            return
        due = self.next_ref.get(ch, t.tREFI)
        now = max(t0, self.bus.get(ch, 0.0))
        if now < due:
            return
        r = due + math.floor((now - due) / t.tREFI) * t.tREFI
        end = max(r, self.bus.get(ch, 0.0)) + t.tRP + t.tRFC
        for bank in range(t.banks_per_channel):
            self.open.pop((ch, bank), None)
            self.ready[(ch, bank)] = max(self.ready.get((ch, bank), 0.0), end)
        self.next_ref[ch] = r + t.tREFI

    def precharge_at(self, t0, ch, bank):
        """When a request for another row than bank ``bank``'s open one, requested at ``t0``,
        can precharge it: the bank done with its last burst, write recovery after a write, tRAS
        after its activate (activate limits on)."""
        t = self.t
        key = (ch, bank)
        pre = max(t0, self.ready.get(key, 0.0))
        if t.tWR and self.written.get(key):
            pre = max(pre, self.end[key] + t.tWR)
        if t.tRRD_S or t.tRRD_L or t.tFAW or t.tRAS:
            pre = max(pre, self.act.get(key, -math.inf) + t.tRAS)
        return pre

    def evaluate(self, t0, ch, bank, row, g):
        t = self.t
        key = (ch, bank)
        cmd = max(t0, self.ready.get(key, 0.0))
        act = None
        if self.open.get(key) == row:
            later = (t.tCCD_L or t.tRRD_S or t.tRRD_L or t.tFAW or t.tRAS or t.tREFI
                     or t.queue_depth > 1 or t.bank_queue_depth or t.tWR
                     or t.bank_groups > 1 and t.mapping == "channel_group_column_bank")
            # with a later rule on: after the bank's last data and tCL after the request
            kind, ready = 0, max(t0 + t.tCL, self.end[key]) if later else cmd + t.tCL
        else:
            kind = 1 if key not in self.open else 2
            if t.tWR and self.written.get(key):  # write recovery before the precharge
                cmd = max(cmd, self.end[key] + t.tWR)
            if not (t.tRRD_S or t.tRRD_L or t.tFAW or t.tRAS):
                lat = t.tRCD + t.tCL if kind == 1 else t.tRP + t.tRCD + t.tCL
                ready = cmd + lat
            else:
                act = cmd
                if kind == 2:
                    act = max(cmd, self.act.get(key, -math.inf) + t.tRAS) + t.tRP
                acts = self.acts.get(ch, [])
                if acts:
                    act = max(act, acts[-1] + t.tRRD_S)
                if (ch, g) in self.acts_g:
                    act = max(act, self.acts_g[(ch, g)] + t.tRRD_L)
                if len(acts) >= 4:
                    act = max(act, acts[-4] + t.tFAW)
                ready = act + t.tRCD + t.tCL
        start = max(self.bus.get(ch, 0.0), ready)
        if t.tCCD_L and (ch, g) in self.start_g:
            start = max(start, self.start_g[(ch, g)] + t.tCCD_L)
        return start, kind, act

    def commit(self, ch, bank, row, g, start, kind, act) -> float:
        t = self.t
        key = (ch, bank)
        self.open[key] = row
        if act is not None:
            self.act[key] = act
            self.acts.setdefault(ch, []).append(act)
            self.acts_g[(ch, g)] = act
        self.start_g[(ch, g)] = start
        end = start + t.burst_bytes / (t.bytes_per_cycle / t.channels)
        self.bus[ch] = end
        self.ready[key] = end - t.tCL
        self.written[key] = self.dir.get(ch, 0) == 1  # a write: tWR before its precharge
        self.end[key] = end
        self.kinds[kind] += 1
        return end

    def first(self, keys: list[int], t0s: list[float], bursts: list[int], ch: int
              ) -> tuple[float, int]:
        """(data start, request) of the request among ``keys`` (in age order) whose data can
        start first, the oldest on a tie; a row hit that came after an older request of its
        bank, for another row, could precharge is not one (the row was closed before it came)."""
        best = None
        for n, i in enumerate(keys):
            _, bank, row, g = self.locate(bursts[i])
            if self.open.get((ch, bank)) == row and any(
                    self.locate(bursts[p])[1] == bank and self.locate(bursts[p])[2] != row
                    and t0s[i] > self.precharge_at(t0s[p], ch, bank) for p in keys[:n]):
                continue
            start = self.evaluate(t0s[i], ch, bank, row, g)[0]
            if best is None or start < best[0]:  # a strict < keeps the oldest on a tie
                best = (start, i)
        return best

    def serve(self, t0s: list[float], bursts: list[int]) -> list[float]:
        """Each channel: admit requests in order, those offered by the time the bus is free
        or the oldest waiting one came, while fewer than queue_depth wait outside the bank
        queues; serve the visible one whose data starts first, the oldest on a tie."""
        t = self.t
        depth, per_bank = t.queue_depth, t.bank_queue_depth
        done = [0.0] * len(bursts)
        for ch in range(t.channels):
            mine = [i for i, b in enumerate(bursts) if self.locate(b)[0] == ch]
            admitted: list[int] = []

            def visible(admitted=admitted):
                return self.visible(admitted, bursts)

            while mine or admitted:
                # chosen when the bus is free or the oldest waiting request comes, among the
                # requests offered by then
                due = max(self.bus.get(ch, 0.0), t0s[admitted[0] if admitted else mine[0]])
                while (mine and t0s[mine[0]] <= due
                       and len(admitted) - (len(visible()) if per_bank else 0) < depth):
                    admitted.append(mine.pop(0))
                self.refresh(ch, t0s[admitted[0]])
                i = self.first(visible(), t0s, bursts, ch)[1]
                _, bank, row, g = self.locate(bursts[i])
                start, kind, act = self.evaluate(t0s[i], ch, bank, row, g)
                done[i] = self.commit(ch, bank, row, g, start, kind, act)
                admitted.remove(i)
        return done

    def serve_buffered(self, t0s: list[float], bursts: list[int], writes: list[bool]
                       ) -> list[float]:
        """``serve`` with a write buffer of ``write_queue_depth``: requests are admitted in
        order as ``serve`` does (none before it is offered), a write into the buffer (taken at
        its request time, or when the slot it takes was freed by a drained write's data
        start), a read into the queues; the first one that does not fit holds the rest. The
        buffer drains (writes only, the one whose data starts first, the oldest on a tie) when
        no read is left to come (all of it), when it is full and no admitted read can start its
        data before the last write came (all of it), or when more than
        ``write_drain_threshold`` writes wait and no read has come by the time the bus is free
        and the one past the threshold has come (the writes come by then); else, no read
        admitted, the next request comes. The bus turns at every change of direction."""
        t = self.t
        depth, per_bank = t.queue_depth, t.bank_queue_depth
        cap, low = t.write_queue_depth, t.write_drain_threshold
        done = [0.0] * len(bursts)
        for ch in range(t.channels):
            mine = [i for i, b in enumerate(bursts) if self.locate(b)[0] == ch]
            reads: list[int] = []
            wbuf: list[int] = []
            freed = [-math.inf] * cap  # when the free slots were freed, oldest first
            drain = 0
            old: list[int] = []

            def visible(reads=reads):
                return self.visible(reads, bursts)

            def first(keys, ch=ch):
                return self.first(keys, t0s, bursts, ch)

            wait = False  # nothing to do now: the next request comes
            while True:
                waiting = reads[:1] + wbuf[:1]
                if waiting or mine:
                    due = max(self.bus.get(ch, 0.0),
                              min(t0s[k] for k in waiting) if waiting else t0s[mine[0]])
                    if wait and mine:
                        due = max(due, t0s[mine[0]])
                wait = False
                while mine:
                    i = mine[0]
                    if t0s[i] > due:
                        break
                    if writes[i]:
                        if len(wbuf) == cap:
                            break
                        done[i] = max(t0s[i], freed.pop(0))
                        wbuf.append(i)
                    else:
                        if len(reads) - (len(visible()) if per_bank else 0) >= depth:
                            break
                        reads.append(i)
                    mine.pop(0)
                if not reads and not wbuf:
                    break
                if drain == 0 and wbuf:
                    # the next read, admitted or to come
                    t_read = next((t0s[k] for k in reads + mine if not writes[k]), math.inf)
                    if t_read == math.inf:
                        drain = len(wbuf)
                    elif len(wbuf) == cap:
                        if not reads or first(visible())[0] >= t0s[wbuf[-1]]:
                            drain = len(wbuf)
                    elif len(wbuf) > low:
                        td = max(self.bus.get(ch, 0.0), t0s[wbuf[low]])
                        if t_read > td:
                            drain = sum(1 for k in wbuf if t0s[k] <= td)
                    old = list(reads) if drain else []  # queued when the drain begins
                if drain and old and self.read_first(old, wbuf, t0s, bursts, ch, visible):
                    pass  # one of those reads starts before the next write: it goes first
                elif drain:
                    self.turn(ch, 1)
                    self.refresh(ch, t0s[wbuf[0]])
                    i = first(wbuf)[1]
                    _, bank, row, g = self.locate(bursts[i])
                    start, kind, act = self.evaluate(t0s[i], ch, bank, row, g)
                    self.commit(ch, bank, row, g, start, kind, act)
                    freed.append(start)
                    wbuf.remove(i)
                    drain -= 1
                    continue
                if not reads:  # the writes wait for more to come
                    wait = True
                    continue
                self.turn(ch, 0)
                self.refresh(ch, t0s[reads[0]])
                i = first(visible(old) if drain else visible())[1]
                _, bank, row, g = self.locate(bursts[i])
                start, kind, act = self.evaluate(t0s[i], ch, bank, row, g)
                done[i] = self.commit(ch, bank, row, g, start, kind, act)
                reads.remove(i)
                if i in old:
                    old.remove(i)
        return done

    def read_first(self, old, wbuf, t0s, bursts, ch, visible) -> bool:
        """During a drain: whether one of the reads queued when it began (``old``) can start
        its data before the next buffered write, each with the bus turned its way."""
        t, bus, cur = self.t, self.bus.get(ch, 0.0), self.dir.get(ch, 0)
        self.bus[ch] = bus + (t.tWTR + t.tCL if t.tWTR and cur == 1 else 0.0)
        read = self.first(visible(old), t0s, bursts, ch)[0]
        self.bus[ch] = bus + (t.tRTW if cur == 0 else 0.0)
        write = self.first(wbuf, t0s, bursts, ch)[0]
        self.bus[ch] = bus
        return read < write


@st.composite
def full_timings(draw) -> DramTiming:
    burst = draw(st.sampled_from([16, 32, 64]))
    banks = draw(st.sampled_from([1, 2, 4, 8]))
    refi = draw(st.sampled_from([0, 0, 90, 400]))
    return DramTiming(
        channels=draw(st.integers(1, 3)),
        bytes_per_cycle=draw(st.sampled_from([8.0, 12.8, 25.6])),
        latency_cycles=draw(st.integers(0, 30)),
        banks_per_channel=banks,
        row_buffer_bytes=burst * draw(st.sampled_from([1, 2, 4, 8])),
        burst_bytes=burst,
        tRCD=draw(st.integers(0, 14)), tCL=draw(st.integers(0, 14)),
        tRP=draw(st.sampled_from([0, 5, 13.5])),
        bank_groups=draw(st.sampled_from([g for g in (1, 2, 4) if banks % g == 0])),
        mapping=draw(st.sampled_from(["channel_column_bank", "channel_group_column_bank"])),
        tCCD_L=draw(st.sampled_from([0, 0, 2, 5.5])),
        tRRD_S=draw(st.sampled_from([0, 1, 2.5])),
        tRRD_L=draw(st.sampled_from([0, 3])),
        tFAW=draw(st.sampled_from([0, 0, 13.25])),
        tRAS=draw(st.sampled_from([0, 0, 20])),
        tREFI=refi, tRFC=draw(st.sampled_from([0, 30])) if refi else 0,
        queue_depth=draw(st.sampled_from([1, 1, 2, 5, 32])),
        bank_queue_depth=draw(st.sampled_from([0, 0, 1, 3])),
        write_queue_depth=draw(st.sampled_from([0, 0, 1, 3, 8])),
        write_drain_threshold=draw(st.sampled_from([0, 2, 8])),
        tWTR=draw(st.sampled_from([0, 0, 2.5, 6])),
        tRTW=draw(st.sampled_from([0, 0, 0.625, 2])),
        tWR=draw(st.sampled_from([0, 0, 4, 15])),
    )


requests = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 1 << 14), st.booleans()),
                    min_size=1, max_size=40)


@settings(max_examples=80, **SETTINGS)
@given(t=full_timings(), reqs=requests)
def test_stream_matches_the_reference_event_loop(t, reqs):
    """``Dram.stream`` (numba, all the later rules) equals the plain-Python event loop, float
    for float, on hypothesis-generated request streams (reads and writes) and timings."""
    now = np.cumsum([gap for gap, _, _ in reqs]).astype(np.float64)
    addr = np.array([a for _, a, _ in reqs], dtype=np.int64)
    writes = np.array([w for _, _, w in reqs], dtype=bool)
    fast, ref = Dram(t), QueueReference(t)
    got = fast.stream(now, addr, writes)
    t0s, bursts = (now + t.latency_cycles).tolist(), (addr // t.burst_bytes).tolist()
    if t.write_queue_depth:
        want = ref.serve_buffered(t0s, bursts, writes.tolist())
    else:  # writes queue and time as reads
        want = ref.serve(t0s, bursts)
    assert got.tolist() == want
    assert (fast.stats.row_hits, fast.stats.row_misses, fast.stats.row_conflicts) == \
        tuple(ref.kinds)


@settings(max_examples=70, **SETTINGS)
@given(t=full_timings(), sizes=st.lists(st.integers(0, 3000), min_size=3, max_size=3),
       bases=st.lists(st.integers(0, 1 << 16), min_size=3, max_size=3), now=st.floats(0, 500),
       first_write=st.booleans(), write=st.booleans())
def test_the_fast_contiguous_path_equals_the_reference(t, sizes, bases, now, first_write, write):
    """``transfer3`` (row blocks, the oldest served without filling the queue when it can start
    at once) equals the event loop over the three runs' bursts, requested together; a read or
    a write after a read or a write (the bus turned first)."""
    fast, ref = Dram(t), QueueReference(t)
    fast.transfer(0.0, 777, 500, write=first_write)  # some state first
    b0 = list(range(777 // t.burst_bytes, (777 + 499) // t.burst_bytes + 1))
    ref.turn_transfer(b0, first_write)
    ref.serve([float(t.latency_cycles)] * len(b0), b0)
    finish, moved, hits, misses, conflicts = fast.transfer3(
        now, bases[0], sizes[0], bases[1], sizes[1], bases[2], sizes[2], write)
    bursts = [b for base, size in zip(bases, sizes, strict=True) if size
              for b in range(base // t.burst_bytes, (base + size - 1) // t.burst_bytes + 1)]
    ref.turn_transfer(bursts, write)
    ref.kinds = [0, 0, 0]
    done = ref.serve([now + t.latency_cycles] * len(bursts), bursts)
    assert finish == (max(done) if done else now)
    assert moved == len(bursts) * t.burst_bytes
    assert [hits, misses, conflicts] == ref.kinds
    np.testing.assert_array_equal(fast.open_row, [ref.open.get((c, k), -1)
                                                  for c in range(t.channels)
                                                  for k in range(t.banks_per_channel)])
    assert_same_state(fast, ref)


def assert_same_state(fast: Dram, ref: QueueReference) -> None:
    """Every bank's next-command time and every channel's bus equal the reference's, float for
    float: the row-hit runs written in closed form leave each bank as burst by burst does."""
    t = fast.timing
    banks = range(t.banks_per_channel)
    assert fast.bank_ready.tolist() == [ref.ready.get((c, k), 0.0)
                                        for c in range(t.channels) for k in banks]
    assert fast.bus_free.tolist() == [ref.bus.get(c, 0.0) for c in range(t.channels)]


@settings(max_examples=40, **SETTINGS)
@given(t=full_timings(), base=st.integers(0, 1 << 12), size=st.integers(1, 1 << 15),
       now=st.sampled_from([0.0, 3.0, 37.5, 401.25]))
def test_long_row_hit_runs_equal_the_reference(t, base, size, now):
    """One long transfer: most of its bursts go through the row-hit runs (in closed form where
    every time is an exact float, burst by burst otherwise), refreshes falling inside them."""
    fast, ref = Dram(t), QueueReference(t)
    finish = fast.transfer3(now, base, size, 0, 0, 0, 0)[0]
    bursts = list(range(base // t.burst_bytes, (base + size - 1) // t.burst_bytes + 1))
    assert finish == max(ref.serve([now + t.latency_cycles] * len(bursts), bursts))
    assert_same_state(fast, ref)


@settings(max_examples=60, **SETTINGS)
@given(t=full_timings(), base=st.integers(0, 1 << 12),
       moves=st.lists(st.tuples(st.integers(1, 700), st.integers(0, 300),
                                st.sampled_from([0.0, 0.5, 2.0, 9.0, 60.0])),
                      min_size=2, max_size=8))
def test_back_to_back_transfers_equal_the_reference(t, base, moves):
    """Transfers of two regions that go on where the previous ones stopped, requested while
    their bursts are still on the bus (as the engine's DMA streams its operands): the bursts at
    the start of each, to row blocks left open by one region and bank groups just used by the
    other, and the row-hit runs behind them equal the event loop."""
    fast, ref = Dram(t), QueueReference(t)
    now, addr = 0.0, [base, base + (1 << 15) + 3 * t.burst_bytes]
    for size_a, size_b, gap in moves:
        now += gap
        finish = fast.transfer3(now, addr[0], size_a, addr[1], size_b, 0, 0)[0]
        bursts = [b for a, size in zip(addr, (size_a, size_b), strict=True) if size
                  for b in range(a // t.burst_bytes, (a + size - 1) // t.burst_bytes + 1)]
        assert finish == max(ref.serve([now + t.latency_cycles] * len(bursts), bursts))
        addr = [addr[0] + size_a, addr[1] + size_b]
    assert_same_state(fast, ref)


@settings(max_examples=40, **SETTINGS)
@given(t=full_timings(), base=st.integers(0, 5000), run=st.integers(1, 300),
       n=st.integers(1, 5), gap=st.integers(0, 200))
def test_a_strided_transfer_equals_the_reference(t, base, run, n, gap):
    fast, ref = Dram(t), QueueReference(t)
    r = fast.transfer(3.0, base, run, n, run + gap)
    seq: list[int] = []
    for i in range(n):
        for b in range((base + i * (run + gap)) // t.burst_bytes,
                       (base + i * (run + gap) + run - 1) // t.burst_bytes + 1):
            if not seq or seq[-1] != b:
                seq.append(b)
    done = ref.serve([3.0 + t.latency_cycles] * len(seq), seq)
    assert r.finish == max(done) and r.bursts == len(seq)
    assert [r.row_hits, r.row_misses, r.row_conflicts] == ref.kinds


def test_the_engines_request_kernel_equals_transfer3_with_every_rule():
    """``_serve_kernel`` on the presets' settings (queues, groups, limits, refresh) equals
    ``transfer3`` at the same addresses."""
    from simulator.arch import load_arch
    from simulator.dram import _serve_kernel, serve_state

    rng = random.Random(5)
    for preset in ("tensordash", "stc-2to4"):
        arch = load_arch(preset)
        tm = DramTiming.from_spec(arch.dram, arch.clock_ghz)
        region = 1 << 30
        ref, fast = Dram(tm), Dram(tm)
        ints, floats = serve_state(fast, region)
        acc = np.zeros((1, 4), dtype=np.int64)
        mine = [0, 0, 0]
        now = 0.0
        for _ in range(300):
            a, b, c = (rng.choice([0, rng.randrange(1, 20000)]) for _ in range(3))
            write = rng.random() < 0.3
            if write:  # the engine's writer: C only
                a = b = 0
            now += rng.uniform(0, 400)
            base = [r * region + mine[r] % region for r in range(3)]
            mine = [m + k for m, k in zip(mine, (a, b, c), strict=True)]
            want = ref.transfer3(now, base[0], a, base[1], b, base[2], c, write)[0]
            assert _serve_kernel(now, a, b, c, 0, ints, floats, acc, int(write)) == want


def test_defaults_are_the_first_model():
    """Every later key at its default: the old reference's results, and the fast flag set."""
    t = timing(channels=2, banks_per_channel=4)
    assert (t.bank_groups, t.mapping, t.tCCD_L, t.tFAW, t.tREFI, t.queue_depth,
            t.bank_queue_depth) == (1, "channel_column_bank", 0.0, 0.0, 0.0, 1, 0)
    rng = random.Random(2)
    d, ref = Dram(t), ReferenceDram(t)
    for _ in range(200):
        args = (rng.uniform(0, 3000), rng.randrange(1 << 16), rng.randrange(1, 900))
        assert d.transfer(*args) == ref.transfer(*args)


def test_bank_groups_space_one_groups_bursts_by_tccd_l():
    """Under channel_column_bank a channel's bursts stay in one bank (one group): tCCD_L
    spaces them; channel_group_column_bank alternates groups and streams at the burst."""
    base = dict(channels=1, bytes_per_cycle=25.6, banks_per_channel=16, row_buffer_bytes=8192,
                tRCD=14, tCL=14, tRP=14, bank_groups=4, tCCD_L=5.0, latency_cycles=0)
    n = 8192
    low = Dram(timing(**base)).transfer(0.0, 0, n)
    inter = Dram(timing(**base, mapping="channel_group_column_bank")).transfer(0.0, 0, n)
    assert low.cycles == pytest.approx(28 + (n // 64 - 1) * 5.0 + 2.5)
    assert inter.cycles == pytest.approx(28 + (n // 64) * 2.5)


def test_activate_limits_bound_row_opening():
    """One burst per row, every row in another bank: at most four activates per tFAW, one per
    tRRD_S."""
    t = timing(channels=1, bytes_per_cycle=64.0, banks_per_channel=16, row_buffer_bytes=64,
               tRCD=10, tCL=10, tRP=10, latency_cycles=0, tRRD_S=2, tFAW=20)
    d = Dram(t)
    r = d.transfer(0.0, 0, 64, 400, 64)  # 400 bursts, 400 rows over 16 banks
    assert r.row_misses + r.row_conflicts == 400
    assert r.cycles >= (400 // 4 - 1) * 20
    free = Dram(timing(channels=1, bytes_per_cycle=64.0, banks_per_channel=16,
                       row_buffer_bytes=64, tRCD=10, tCL=10, tRP=10, latency_cycles=0))
    assert free.transfer(0.0, 0, 64, 400, 64).cycles < r.cycles / 2


def test_refresh_costs_its_share_of_a_long_stream():
    t = dict(channels=1, bytes_per_cycle=16.0, banks_per_channel=4, latency_cycles=0)
    plain = Dram(timing(**t)).transfer(0.0, 0, 1 << 20)
    ref = Dram(timing(**t, tREFI=1000, tRFC=100)).transfer(0.0, 0, 1 << 20)
    # every tREFI the bus loses tRP + tRFC and the reopening of the row (tRCD + tCL)
    lost = 14 + 100 + 28
    assert ref.cycles / plain.cycles == pytest.approx(1000 / (1000 - lost), rel=0.01)


def test_refresh_in_idle_time_only_closes_rows():
    t = timing(channels=1, banks_per_channel=1, latency_cycles=0, tREFI=1000, tRFC=100)
    d = Dram(t)
    d.transfer(0.0, 0, 64)
    r = d.transfer(10_500.0, 64, 64)  # refreshes at 1000 ... 10000 fell in idle time
    assert r.row_misses == 1 and r.cycles == 14 + 14 + 4


@settings(max_examples=30, **SETTINGS)
@given(t=full_timings(), picks=st.lists(st.integers(0, 1 << 12), min_size=1, max_size=200))
def test_a_queue_is_never_worse_than_in_order_on_row_hits(t, picks):
    """A stream of row hits (bursts of row 0 of any bank, every row opened first): the queue
    serves it no later than in order. Without tCCD_L: with it, serving the burst that can
    start first is not always best (one bank per group, bursts of 2 cycles, tCCD_L 5.5, banks
    2 0 2 1 2: the queue serves bank 1 at 1004, pushing the second bank-2 burst from 1005.5 to
    1006 and the last to 1011.5, and ends at 1013.5 where in order ends at 1013)."""
    t = dataclasses.replace(t, tREFI=0, tRFC=0, tCCD_L=0.0)
    in_order = dataclasses.replace(t, queue_depth=1, bank_queue_depth=0)
    row0 = [a for a in range(0, 1 << 16, t.burst_bytes) if map_address(t, a)[2] == 0]
    addr = np.array([row0[p % len(row0)] for p in picks], dtype=np.int64)
    a, b = Dram(t), Dram(in_order)
    for d in (a, b):  # every row 0 open
        d.stream(np.zeros(len(row0)), np.array(row0, dtype=np.int64))
    now = np.full(len(addr), 1000.0)
    got, want = a.stream(now, addr), b.stream(now, addr)
    assert a.stats.row_hits - b.stats.row_hits == 0
    assert got.max() <= want.max()


def test_stream_refuses_bad_input():
    d = Dram(timing())
    with pytest.raises(ValueError, match="non-decreasing"):
        d.stream(np.array([5.0, 1.0]), np.array([0, 64]))
    with pytest.raises(ValueError, match="one length"):
        d.stream(np.array([0.0]), np.array([0, 64]))


@pytest.mark.parametrize(("field", "value", "match"), [
    ("bank_groups", 3, "divisor"), ("mapping", "row_first", "channel_column_bank"),
    ("tRFC", 10, "tREFI is 0"), ("tFAW", -1, "cycles >= 0"), ("queue_depth", 0, "positive"),
    ("bank_queue_depth", -1, "integer >= 0")])
def test_bad_later_timing_is_refused(field, value, match):
    with pytest.raises(ValueError, match=match):
        timing(**{field: value})
    with pytest.raises(ValueError, match="more than tRP"):
        timing(tREFI=100, tRFC=90)


@pytest.mark.parametrize("preset", ["tensordash", "stc-2to4"])
def test_the_presets_engine_requests_equal_the_reference(preset):
    """Engine-like requests (three contiguous runs of regions 1 GiB apart, a refresh among
    them) on the presets' own settings: ``transfer3`` equals the event loop."""
    from simulator.arch import load_arch

    arch = load_arch(preset)
    t = DramTiming.from_spec(arch.dram, arch.clock_ghz)
    fast, ref = Dram(t), QueueReference(t)
    rng = random.Random(7)
    offsets = [0, 0, 0]
    now = 0.0
    for k in range(8):
        write = k % 3 == 2  # the engine's writer: C only
        sizes = [0 if write and r < 2 else rng.randrange(0, 5000) for r in range(3)]
        now += rng.uniform(0, 2000)
        bases = [r * (1 << 30) + offsets[r] for r in range(3)]
        offsets = [o + n for o, n in zip(offsets, sizes, strict=True)]
        got = fast.transfer3(now, bases[0], sizes[0], bases[1], sizes[1], bases[2], sizes[2],
                             write)
        bursts = [b for base, size in zip(bases, sizes, strict=True) if size
                  for b in range(base // t.burst_bytes, (base + size - 1) // t.burst_bytes + 1)]
        ref.turn_transfer(bursts, write)
        ref.kinds = [0, 0, 0]
        done = ref.serve([now + t.latency_cycles] * len(bursts), bursts)
        assert got[0] == (max(done) if done else now)
        assert list(got[2:]) == ref.kinds


def test_stream_counts_requests_reads_and_writes():
    d = Dram(timing())
    d.stream(np.array([0.0, 1.0, 2.0]), np.array([0, 64, 4096]), np.array([False, True, False]))
    s = d.stats
    assert (s.transfers, s.bursts, s.bytes_read, s.bytes_written) == (3, 3, 128, 64)
    assert s.row_hits + s.row_misses + s.row_conflicts == 3


@settings(max_examples=200, deadline=None)
@example(t=0.0, step=2.0, n=10, due=4.0)  # a burst would start exactly at the refresh
@example(t=1.25, step=1.25, n=5, due=2.5)
@given(t=st.integers(-64, 4000).map(lambda v: v / 4), step=st.sampled_from(
    [0.25, 1.25, 2.0, 2.5, 1 / 3, 0.1, 64 / 20.4, 3.0]), n=st.integers(0, 300),
    due=st.one_of(st.just(math.inf), st.integers(-64, 4800).map(lambda v: v / 4)))
def test_row_hit_run_closed_form_against_adding_one_burst_at_a_time(t, step, n, due):
    """``_exact_steps`` / ``_steps_before`` (the closed form of a run of row hits) against
    adding ``step`` one burst at a time: where it claims exactness every partial sum is
    ``t + i * step``, and the count of bursts that start before ``due`` is the loop's."""
    from simulator.dram import _exact_steps, _steps_before

    exact = _exact_steps(t, step, n)
    bus, i = t, 0
    sums = []
    while i < n and bus < due:
        bus += step
        sums.append(bus)
        i += 1
    if step in (0.25, 1.25, 2.0, 2.5, 3.0):  # dyadic steps over quarter-cycle starts
        assert exact
    if exact:
        assert sums == [t + (k + 1) * step for k in range(i)]
        assert _steps_before(t, step, n, due) == i


def _buffered(**kw) -> Dram:
    """One channel, 4 banks, 2 KiB rows, 64 B bursts of 4 cycles, 14-14-14, a write buffer."""
    return Dram(timing(latency_cycles=0, queue_depth=4, tWTR=2, tRTW=1, tWR=5, **kw))


def test_a_write_buffer_by_hand():
    """The write buffer's rules on streams small enough to time by hand: writes to row 0 of
    bank 0, a read of its row 1 (``8192``)."""
    # more writes than the threshold wait and the read has not come: they drain first (a miss,
    # two hits, data at 28, 32, 36), the read is a conflict after tWR: its bank precharges at
    # max(1000, 40 + 5), data at 1000 + 42
    d = _buffered(write_queue_depth=8, write_drain_threshold=2)
    done = d.stream(np.array([0.0, 0, 0, 1000]), np.array([0, 64, 128, 8192]),
                    np.array([True, True, True, False]))
    assert done.tolist() == [0.0, 0.0, 0.0, 1046.0]
    assert (d.stats.row_misses, d.stats.row_hits, d.stats.row_conflicts) == (1, 2, 1)
    # two writes, threshold 2: they wait; the read goes first (a miss) and they drain after it
    d = _buffered(write_queue_depth=8, write_drain_threshold=2)
    done = d.stream(np.array([0.0, 0, 1000]), np.array([0, 64, 8192]),
                    np.array([True, True, False]))
    assert done[2] == 1000 + 28 + 4
    assert (d.stats.row_misses, d.stats.row_conflicts) == (1, 1)
    # a read that has come by the time the bus is free goes before the idle drain
    d = _buffered(write_queue_depth=8, write_drain_threshold=2)
    done = d.stream(np.zeros(4), np.array([0, 64, 128, 8192]),
                    np.array([True, True, True, False]))
    assert done[3] == 28 + 4
    # a full buffer holds the next write until the slot it takes frees: when the drained
    # write's data starts (the bus turned to write first, 1 cycle)
    d = _buffered(write_queue_depth=1)
    done = d.stream(np.zeros(2), np.array([0, 64]), np.array([True, True]))
    assert done.tolist() == [0.0, 28.0]
    # without a write buffer a stream's writes queue and time as reads
    a = Dram(timing(latency_cycles=0, queue_depth=4))
    b = Dram(timing(latency_cycles=0, queue_depth=4, tWTR=2, tRTW=1, tWR=5))
    args = (np.zeros(3), np.array([0, 8192, 64]), np.array([True, False, True]))
    assert a.stream(*args).tolist() == b.stream(*args).tolist()


def test_the_bus_turns_around_between_transfers():
    """A read transfer after a write pays tWTR + tCL on the bus, a write after a read tRTW; a
    write leaves tWR before its bank's next precharge."""
    base = dict(latency_cycles=0, banks_per_channel=4, queue_depth=4)
    plain, rw = Dram(timing(**base)), Dram(timing(**base, tWTR=2, tRTW=1, tWR=5))
    for d in (plain, rw):
        d.transfer(0.0, 0, 64, write=True)  # data 28..32 (a miss)
    assert rw.transfer(0.0, 64, 64).finish == 32 + 2 + 14 + 4  # a hit, after the turnaround
    assert plain.transfer(0.0, 64, 64).finish == 32 + 4
    assert rw.transfer(0.0, 128, 64, write=True).finish == 52 + 1 + 4
    # a conflict after the write: precharge at 57 + tWR, then tRP + tRCD + tCL (the bus, turned
    # to read at 57 + 16, waits for it)
    assert rw.transfer(0.0, 8192, 64).finish == 57 + 5 + 42 + 4
    assert plain.transfer(0.0, 128, 64, write=True).finish == 36 + 4
    assert plain.transfer(0.0, 8192, 64).finish == 40 - 14 + 42 + 4


@pytest.mark.parametrize(("field", "value", "match"), [
    ("write_queue_depth", -1, "integer >= 0"), ("write_drain_threshold", 1.5, "integer >= 0"),
    ("tWTR", -1, "cycles >= 0"), ("tRTW", math.inf, "cycles >= 0"), ("tWR", -2, "cycles >= 0")])
def test_bad_write_timing_is_refused(field, value, match):
    with pytest.raises(ValueError, match=f"{field}.*{match}"):
        timing(**{field: value})


@pytest.mark.parametrize("offered", [40.0, 30.0, 19.0])
def test_a_request_is_not_chosen_before_it_is_offered(offered):
    """The controller chooses when the bus is free, among the requests offered by then: a row
    hit offered after that does not pass the row change the controller already chose. Nor does
    one offered after the row change's precharge could go (the bank done with its last burst,
    at its data end less tCL: 118), though the bus is not yet free: the precharge went out,
    and the row is closed. Bank 0: a miss on row 0 (data 128..132), a request for row 1 and,
    offered at ``offered`` (+ 100 latency), another burst of row 0. Had it passed, the late
    row hit would go second and push the row change later."""
    d = Dram(timing(queue_depth=32))
    done = d.stream(np.array([0.0, 0.0, offered]), np.array([0, 8192, 64]))
    assert done.tolist() == [132.0, 164.0, 196.0]
    assert (d.stats.row_misses, d.stats.row_hits, d.stats.row_conflicts) == (1, 0, 2)


@pytest.mark.parametrize("offered", [0.0, 10.0, 18.0])
def test_a_row_hit_offered_before_the_row_change_can_go_passes_it(offered):
    """Offered by the time the row change's precharge could go (118 - 100 latency = 18), the
    row hit is pending then: the controller keeps the row open for it (first-ready), and it
    goes second (132..136), the row change after it."""
    d = Dram(timing(queue_depth=32))
    done = d.stream(np.array([0.0, 0.0, offered]), np.array([0, 8192, 64]))
    assert done.tolist() == [132.0, 168.0, 136.0]
    assert (d.stats.row_misses, d.stats.row_hits, d.stats.row_conflicts) == (1, 1, 1)


@pytest.mark.parametrize("offered, kinds", [(10.0, (1, 1, 1)), (18.0, (1, 1, 1)),
                                             (19.0, (1, 0, 2)), (30.0, (1, 0, 2))])
def test_a_buffered_write_hit_does_not_pass_a_row_change_that_could_go_before_it_came(
        offered, kinds):
    """The same rule in a drain: a read of row 0 of bank 0 (data 128..132), a write to its row
    1 and, offered at ``offered`` (+ 100 latency), a write to row 0; both drain when the bus is
    free. The row 1 write could precharge at 118 (the read's data end less tCL): a row 0 write
    that came by then is a hit and goes first; one that came later is a conflict after it."""
    d = Dram(timing(queue_depth=32, write_queue_depth=8))
    d.stream(np.array([0.0, 0.0, offered]), np.array([0, 8192, 64]),
             np.array([False, True, True]))
    assert (d.stats.row_misses, d.stats.row_hits, d.stats.row_conflicts) == kinds


def test_a_read_queued_when_a_drain_begins_goes_between_its_writes():
    """A read queued when a drain begins goes before the drain's next write when its data can
    start first, each with the bus turned its way (as a controller serves the reads already
    in its command queues while it drains). Bank 1: writes to row 0 (2048) and row 1 (10240)
    fill the 2-write buffer with a read of row 0 (2112) queued, all requested at 100; the
    drain writes row 0 (a miss, data 128..132, before the read's 128 on a tie); then the read,
    a row hit, can start at 132 + tWTR + tCL = 148, the row 1 write only after write recovery,
    a precharge and an activate (137 + 42 = 179): the read goes (data to 152), then the
    write. Drained first, that write would have pushed the read to a second row change."""
    t = timing(queue_depth=32, write_queue_depth=2, write_drain_threshold=0, tRTW=2, tWTR=2,
               tWR=5)
    d = Dram(t)
    done = d.stream(np.zeros(3), np.array([2048, 2112, 10240]), np.array([True, False, True]))
    assert done.tolist() == [100.0, 152.0, 100.0]
    assert (d.stats.row_misses, d.stats.row_hits, d.stats.row_conflicts) == (1, 1, 1)
    ref = QueueReference(t)  # the reference without the rule times the read at 234
    ref.read_first = lambda *a: False
    assert ref.serve_buffered([100.0] * 3, [32, 33, 160], [True, False, True])[1] == 234.0


def _stream_pick_by_walking(t0, ch, nj, s, lo, hi, depth, per_bank, ints, floats, queued=()):
    """``_stream_pick`` as it reads: every position of the window walked and counted one at a
    time (only the first ``gm`` of a row block's piece timed); with ``queued`` (bank, row,
    group of admitted bursts, oldest first), ``_window_pick``: those first, each timed unless
    its bank's queue is full or its bank and kind were timed."""
    from simulator.dram import _I_GROUPS, _I_MAP, _IH, _chan_locate, _evaluate

    banks, bpr, groups, mapping = int(ints[2]), int(ints[3]), int(ints[_I_GROUPS]), \
        int(ints[_I_MAP])
    span = bpr * groups if mapping == 1 else bpr
    gm = groups if mapping == 1 else 1
    def window():  # (bank, row, group, may be timed) of each position, oldest first
        for bank, row, g in queued:
            yield bank, row, g, True
        j, stage = nj, s
        while stage < 3:
            last = min((j // span + 1) * span - 1, hi[stage])
            for o, jj in enumerate(range(j, last + 1)):
                yield (*_chan_locate(jj, banks, bpr, groups, mapping), o < gm)
            j = last + 1
            while stage < 3 and j > hi[stage]:
                stage += 1
                if stage < 3:
                    j = lo[stage]

    admitted, classes = [0] * banks, [0] * banks
    waiting = best = 0
    best_ds = 0.0
    for pos, (bank, row, g, timed) in enumerate(window()):
        if per_bank == 0:
            waiting += 1
        else:
            admitted[bank] += 1
            if admitted[bank] > per_bank:
                waiting += 1
                timed = False
        if timed:
            kind = 1 if ints[_IH + ch * banks + bank] == row else 2
            if not classes[bank] & kind:
                classes[bank] |= kind
                ds = _evaluate(t0, ch, bank, row, g, ints, floats)[0]
                if pos == 0 or ds < best_ds:
                    best, best_ds = pos, ds
                    if ds <= floats[19 + ch]:  # the channel's bus (``_FH + ch``)
                        return best
        if waiting >= depth:
            return best
    return best


@settings(max_examples=150, **SETTINGS)
@given(t=full_timings(), warm=st.lists(st.tuples(st.integers(0, 1 << 14),
                                                  st.integers(1, 3000)), max_size=4),
       pieces=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 90)), min_size=3,
                       max_size=3),
       depth=st.integers(1, 40), per_bank=st.integers(0, 10), now=st.floats(0, 900))
def test_the_stream_pick_counts_a_row_block_as_walking_it_does(t, warm, pieces, depth,
                                                               per_bank, now):
    """``_stream_pick`` counts the untimed rest of each row block's piece in closed form (how
    many bursts enter each bank's queue and how many wait): the pick equals walking every
    position, on states left by random transfers, over windows of three runs whose pieces
    are short and long, with any queue depths."""
    from simulator.dram import _stream_pick

    fast = Dram(t)
    lo = np.array([p[0] for p in pieces], dtype=np.int64)
    hi = lo + np.array([p[1] for p in pieces], dtype=np.int64) - 1
    for base, size in warm:
        fast.transfer(now / 2, base, size)
    for j in lo[1:].tolist():  # the later runs' rows open: a hit there may be the pick
        fast.transfer(now / 2, j * t.channels * t.burst_bytes, t.channels * t.burst_bytes)
    for ch in range(t.channels):
        s = 0
        while s < 3 and lo[s] > hi[s]:
            s += 1
        if s == 3:
            return
        args = (now, ch, int(lo[s]), s, lo, hi, depth, per_bank)
        want = _stream_pick_by_walking(*args, fast.ints, fast.floats)
        assert _stream_pick(*args, fast.ints, fast.floats) == want


@pytest.mark.parametrize("mapping, per_bank, depth, want", [
    # one bank per piece: 5 bursts to bank 0 with room for 4 in its queue leave 1 waiting, so
    # the window reaches the open row of bank 1 behind them (counting all 4 left over as
    # waiting would stop at 3 and serve the oldest)
    ("channel_column_bank", 4, 3, 5),
    # two groups: the 3 left after the first two alternate banks 0, 1, 0 (2 + 1, not 1 + 1),
    # all waiting behind a queue of 1 each: 3 wait, the window stops before bank 2's open row
    ("channel_group_column_bank", 1, 3, 0),
])
def test_the_stream_pick_counts_each_bank_of_a_piece(mapping, per_bank, depth, want):
    """Two hand-made windows where the count of a row block's untimed rest decides whether a
    row hit in the next run is in reach of the controller."""
    from simulator.dram import _stream_pick

    t = timing(channels=1, banks_per_channel=4, row_buffer_bytes=512, latency_cycles=0,
               bank_groups=2, mapping=mapping, queue_depth=depth, bank_queue_depth=per_bank)
    fast = Dram(t)
    nxt = 8 if mapping == "channel_column_bank" else 16  # the next run: bank 1 / 2, row 0
    fast.transfer(0.0, nxt * t.burst_bytes, t.burst_bytes)  # opens it
    lo, hi = np.array([0, nxt, 0]), np.array([4, nxt, -1])
    args = (1000.0, 0, 0, 0, lo, hi, depth, per_bank)
    assert _stream_pick_by_walking(*args, fast.ints, fast.floats) == want
    assert _stream_pick(*args, fast.ints, fast.floats) == want


@settings(max_examples=150, **SETTINGS)
@given(t=full_timings(), warm=st.lists(st.tuples(st.integers(0, 1 << 14),
                                                  st.integers(1, 3000)), max_size=4),
       queued=st.lists(st.integers(0, 400), max_size=4), head=st.integers(0, 300),
       back=st.lists(st.integers(1, 60), max_size=12, unique=True),
       pieces=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 90)), min_size=3,
                       max_size=3),
       depth=st.integers(1, 40), per_bank=st.integers(0, 10), now=st.floats(0, 900))
def test_the_window_pick_equals_walking_the_queue_then_the_walk(t, warm, queued, head, back,
                                                                pieces, depth, per_bank, now):
    """``_window_pick`` (the queue holds only the bursts a younger pick passed; the rest of
    the window is the walk's, not admitted) equals walking the queued bursts and then every
    position of the walk one at a time, on states left by random transfers, with the queue's
    entries anywhere in its ring (it wraps) and any depths. The queued bursts are mostly the
    walk's just before its cursor (as the kernel leaves them: the same banks' queues)."""
    from simulator.dram import _chan_locate, _queues, _window_pick

    t = dataclasses.replace(t, queue_depth=max(depth, 2), bank_queue_depth=per_bank)
    fast = Dram(t)
    lo = np.array([p[0] for p in pieces], dtype=np.int64)
    hi = lo + np.array([p[1] for p in pieces], dtype=np.int64) - 1
    for base, size in warm:
        fast.transfer(now / 2, base, size)
    for j in lo[1:].tolist() + queued[:2]:  # rows open where a hit may be the pick
        fast.transfer(now / 2, j * t.channels * t.burst_bytes, t.channels * t.burst_bytes)
    _, _, cap, ring, _, _ = _queues(fast.ints)
    banks, bpr, groups = t.banks_per_channel, t.bursts_per_row, t.bank_groups
    mapping = MAPPINGS.index(t.mapping)
    s = 0
    while s < 3 and lo[s] > hi[s]:
        s += 1
    nj = int(lo[s]) if s < 3 else 0
    queued = ([max(nj - d, 0) for d in sorted(back, reverse=True)] + queued)[:cap - 1]
    entries = [tuple(int(v) for v in _chan_locate(j, banks, bpr, groups, mapping))
               for j in queued]
    head %= cap
    for i, (j, e) in enumerate(zip(queued, entries, strict=True)):
        ring[(head + i) % cap] = (j * 4, *e)
    span = bpr * groups if mapping == 1 else bpr
    at = (nj, *(int(v) for v in _chan_locate(nj, banks, bpr, groups, mapping)),
          (nj // span + 1) * span - 1)  # the caller's location of the walk's first burst
    for ch in range(t.channels):
        args = (now, ch, nj, s, lo, hi, t.queue_depth, per_bank)
        want = _stream_pick_by_walking(*args, fast.ints, fast.floats, entries)
        got = _window_pick(now, ch, head, len(entries), nj, s, lo, hi, fast.ints, fast.floats,
                           at)
        assert got == want


@pytest.mark.parametrize("per_bank, want", [(1, 0), (2, 1)])
def test_a_queued_burst_fills_its_banks_queue_for_the_walk(per_bank, want):
    """The queue's burst to bank 1 (another row) and the walk's next, to bank 1's open row:
    with room for one in bank 1's queue the walk's waits (out of reach with a depth of 1) and
    the queued one goes; with room for two the row hit passes it."""
    from simulator.dram import _queues, _window_pick

    t = timing(channels=1, banks_per_channel=4, row_buffer_bytes=512, latency_cycles=0,
               queue_depth=1, bank_queue_depth=per_bank)
    fast = Dram(t)
    fast.transfer(0.0, 8 * t.burst_bytes, t.burst_bytes)  # opens bank 1, row 0 (burst 8)
    _, _, cap, ring, _, _ = _queues(fast.ints)
    ring[3] = (40 * 4, 1, 1, 0)  # burst 40: bank 1, row 1
    lo, hi = np.array([9, 0, 0]), np.array([12, -1, -1])
    assert _window_pick(1000.0, 0, 3, 1, 9, 0, lo, hi, fast.ints, fast.floats,
                        (-1, 0, 0, 0, 0)) == want
    assert _stream_pick_by_walking(1000.0, 0, 9, 0, lo, hi, 1, per_bank, fast.ints,
                                   fast.floats, [(1, 1, 0)]) == want


def _channel_slots(t: DramTiming, ch: int) -> tuple[list[int], list[int]]:
    """Every ``floats`` and ``ints`` index that holds channel ``ch``'s state, from the layout
    (``Dram.__init__``, ``_offsets``, ``_turn``): after the header, parts of ``channels * n``
    values, channel ``c`` at ``c * n`` on in each; in ``ints`` the open rows."""
    from simulator.dram import _FH, _IH

    banks, groups, channels = t.banks_per_channel, t.bank_groups, t.channels
    # bus, ready, activate, channel's activate, group's activate, four activates, group's
    # data start, next refresh, last data end, direction, turned at, written before it
    parts = [1, banks, banks, 1, groups, 4, groups, 1, banks, 1, 1, banks]
    fl, o = [], _FH
    for n in parts:
        fl += range(o + ch * n, o + ch * n + n)
        o += channels * n
    assert o == len(Dram(t).floats)  # no value of the state left out of the parts
    return fl, list(range(_IH + ch * banks, _IH + ch * banks + banks))


@pytest.mark.parametrize("channels, banks, groups", [(2, 4, 2), (3, 16, 4), (4, 2, 1)])
def test_two_channels_are_the_same_only_in_every_value(channels, banks, groups):
    """``_same_channel`` looks at every value of a channel's state (a change to any one of
    them tells the two apart) and ``_copy_channel`` writes exactly those of the other."""
    from simulator.dram import _copy_channel, _same_channel

    t = timing(channels=channels, banks_per_channel=banks, bank_groups=groups)
    d = Dram(t)
    rng = np.random.default_rng(3)
    d.floats[:] = rng.integers(0, 5, len(d.floats)) * 0.5
    d.ints[:] = np.concatenate([d._header_i, rng.integers(-1, 3, len(d.ints) - len(d._header_i))])
    a, b = channels - 2, channels - 1
    fa, ia = _channel_slots(t, a)
    fb, ib = _channel_slots(t, b)
    ints0, floats0 = d.ints.copy(), d.floats.copy()
    _copy_channel(a, b, d.ints, d.floats)
    want_f, want_i = floats0.copy(), ints0.copy()
    want_f[fb], want_i[ib] = floats0[fa], ints0[ia]
    assert d.floats.tolist() == want_f.tolist() and d.ints.tolist() == want_i.tolist()
    assert _same_channel(a, b, d.ints, d.floats) and _same_channel(b, a, d.ints, d.floats)
    for i in fb:
        d.floats[i] += 1.0
        assert not _same_channel(a, b, d.ints, d.floats), i
        d.floats[i] -= 1.0
    for i in ib:
        d.ints[i] += 1
        assert not _same_channel(a, b, d.ints, d.floats), i
        d.ints[i] -= 1
    assert _same_channel(a, b, d.ints, d.floats)


@settings(max_examples=60, **SETTINGS)
@given(t=full_timings(), warm=st.lists(st.integers(1, 40), max_size=4),
       moves=st.lists(st.tuples(st.integers(0, 1 << 12), st.integers(0, 1500),
                                st.sampled_from([0.0, 2.5, 40.0]), st.booleans()),
                      min_size=1, max_size=5))
def test_channels_that_start_alike_end_alike_as_the_reference(t, warm, moves):
    """Transfers of whole channel rows (every channel the same bursts) keep the channels in
    one state, so ``transfer3`` times a channel by copying the one before it; then transfers at
    any address: the counts, finish times and state equal the event loop's."""
    fast, ref = Dram(t), QueueReference(t)
    now, row = 0.0, t.burst_bytes * t.channels
    addr = [0, 1 << 20, 1 << 21]
    for k, rows in enumerate(warm + [None] + moves):
        if rows is None:
            continue
        if isinstance(rows, int):  # all channels alike
            sizes, write, gap = [rows * row, (rows % 3) * row, 0], k % 2 == 1, 10.0 * k
            bases = [a - a % row for a in addr]
        else:
            base, size, gap, write = rows
            sizes, bases = [size, size // 2, 0], [a + base for a in addr]
        now += gap
        got = fast.transfer3(now, bases[0], sizes[0], bases[1], sizes[1], bases[2], sizes[2],
                             write)
        bursts = [b for base, size in zip(bases, sizes, strict=True) if size
                  for b in range(base // t.burst_bytes, (base + size - 1) // t.burst_bytes + 1)]
        ref.turn_transfer(bursts, write)
        ref.kinds = [0, 0, 0]
        done = ref.serve([now + t.latency_cycles] * len(bursts), bursts)
        assert got[0] == (max(done) if done else now)
        assert list(got[2:]) == ref.kinds
        addr = [a + s for a, s in zip(addr, sizes, strict=True)]
    assert_same_state(fast, ref)
