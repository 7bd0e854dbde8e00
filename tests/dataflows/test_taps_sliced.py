"""The sliced tap scheduler (every stream of a fold in one word per lane and step) against the
slot-by-slot rule of ``test_taps``, and the fold kernels on both sides of its stream count."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.kernels import pack_rows
from dataflows.taps import (
    _SLICED_MIN_G,
    _count_sliced,
    _fold_sliced,
    _schedule_sliced,
    _sliced_buffer,
    _sliced_tables,
    lockstep_row_folds,
    schedule_buffer,
    strided_order,
    tap_row_lengths,
)
from tests.dataflows.test_taps import (
    SETTINGS,
    TD_TAPS,
    _arr,
    ref_count,
    ref_schedule,
    tap_lists,
    to_buf,
)


def _padded(m: np.ndarray, L: int) -> np.ndarray:
    """Rows of ``m`` (S, K) with zeros up to T·L columns."""
    T = -(-m.shape[1] // L)
    out = np.zeros((m.shape[0], T * L), bool)
    out[:, : m.shape[1]] = m
    return out


def _sliced_run(m: np.ndarray, L: int, taps, order, F: int, rows=None):
    """Rows ``rows`` of ``m`` sliced, scheduled and counted: the scheduled steps as (T, G, L)
    booleans, (z, rest, out) and the run the pass ends on."""
    S, K = m.shape
    rows = np.arange(S) if rows is None else np.asarray(rows, np.int64)
    G = len(rows)
    T = -(-K // L)
    pack = pack_rows(m)
    th, td = _arr(taps)
    order = np.asarray(order, np.int64)
    offs, spread = _sliced_tables(L, th, td, order)
    sl = np.zeros(max(64 * pack.shape[1], T * L), np.uint64)
    _sliced_buffer(pack, rows, G, spread, sl)
    run = _schedule_sliced(sl, T, L, th, offs, order, F)
    bits = (sl[: T * L, None] >> np.arange(G, dtype=np.uint64)) & np.uint64(1)
    sched = bits.astype(bool).reshape(T, L, G).transpose(0, 2, 1)
    return sched, _count_sliced(sl, T, L, F), run


def _reference(m: np.ndarray, L: int, taps, order, F: int, rows=None):
    """The slot-by-slot schedule of those rows and its (z, rest, out)."""
    rows = np.arange(m.shape[0]) if rows is None else np.asarray(rows)
    T = -(-m.shape[1] // L)
    vals = _padded(m[rows], L).reshape(len(rows), T, L).transpose(1, 0, 2)
    want = ref_schedule(vals, taps, list(order), F)
    lead = next((t for t in range(T) if want[t].any()), T)
    return want, (lead,) + (ref_count(want[lead:], F) if lead < T else (0, 0))


@st.composite
def operands(draw, max_rows=20):
    """A boolean (rows, K) operand, its lanes, taps (TensorDash's or drawn) and lane order."""
    L = draw(st.sampled_from([1, 3, 7, 8, 9, 16, 17, 31, 64]))
    K = draw(st.integers(1, 6 * L + 70))
    S = draw(st.integers(1, max_rows))
    dens = draw(st.sampled_from([0.02, 0.1, 0.3, 0.7, 1.0]))
    m = np.random.default_rng(draw(st.integers(0, 2**31))).random((S, K)) < dens
    taps = draw(tap_lists(L)) if L != 16 or draw(st.booleans()) else TD_TAPS
    order = (
        draw(st.permutations(list(range(L))))
        if draw(st.booleans())
        else strided_order(L, draw(st.integers(1, 6)))
    )
    return m, L, taps, order


@settings(**SETTINGS)
@given(op=operands(), F=st.integers(0, 3))
def test_sliced_schedule_equals_reference(op, F):
    """Every stream count from 1 to 20, any lanes, taps (h up to 3, d past the lanes) and lane
    order: the scheduled steps are the slot-by-slot rule's, the counts its free-row count."""
    m, L, taps, order = op
    sched, zro, run = _sliced_run(m, L, taps, order, F)
    want, counts = _reference(m, L, taps, order, F)
    assert np.array_equal(sched, want)
    assert zro == counts
    assert sched.sum() == m.sum()  # every element kept


@settings(**SETTINGS)
@given(data=st.data(), G=st.integers(1, 64), dens=st.sampled_from([0.05, 0.3]), F=st.integers(0, 3))
def test_sliced_schedule_many_streams(data, G, dens, F):
    """Up to 64 streams (one bit each of a lane word), drawn from more rows in any order, as
    the fold kernels pass the rows left after the empty ones: the slot-by-slot rule."""
    K = data.draw(st.integers(1, 150))
    S = G + data.draw(st.integers(0, 8))
    m = np.random.default_rng(data.draw(st.integers(0, 2**31))).random((S, K)) < dens
    rows = data.draw(st.permutations(list(range(S))))[:G]
    order = strided_order(16, 5)
    sched, zro, _ = _sliced_run(m, 16, TD_TAPS, order, F, rows)
    want, counts = _reference(m, 16, TD_TAPS, order, F, rows)
    assert np.array_equal(sched, want)
    assert zro == counts


def test_sliced_schedule_with_broken_tables_differs():
    """The comparisons above can fail: with the taps tried in the wrong order (the tables
    built from the reversed list) or the lanes visited in lane order rather than ``order``,
    the sliced pass schedules other steps than the rule on TensorDash's real shape."""
    rng = np.random.default_rng(3)
    m = rng.random((16, 512)) < 0.1
    L, order, F = 16, strided_order(16, 5), 2
    want, counts = _reference(m, L, TD_TAPS, order, F)
    sched, zro, _ = _sliced_run(m, L, TD_TAPS, order, F)
    assert np.array_equal(sched, want) and zro == counts
    assert not np.array_equal(_sliced_run(m, L, TD_TAPS[::-1], order, F)[0], want)
    assert not np.array_equal(_sliced_run(m, L, TD_TAPS, list(range(L)), F)[0], want)


@settings(**SETTINGS)
@given(op=operands(max_rows=40), F=st.integers(0, 3), R=st.integers(1, 20), empty=st.integers(0, 6))
def test_row_folds_sliced_and_per_stream_agree(op, F, R, empty):
    """``lockstep_row_folds`` with folds of 1 to 20 rows, some of them empty (folds of fewer
    live rows than ``_SLICED_MIN_G`` go to the per-stream scheduler, the others sliced):
    every fold's (z, rest, out) is ``schedule_buffer``'s on its buffer with every row."""
    m, L, taps, order = op
    m = m.copy()
    m[: min(empty, m.shape[0])] = False
    pack = pack_rows(m)
    th, td = _arr(taps)
    order = np.asarray(order, np.int64)
    K = m.shape[1]
    T = -(-K // L)
    z, rest, out, tt = lockstep_row_folds(pack, K, L, R, th, td, order, F)
    padded = _padded(m, L)
    for f in range(-(-m.shape[0] // R)):
        vals = padded[f * R : (f + 1) * R].reshape(-1, T, L).transpose(1, 0, 2)
        buf = to_buf(vals)
        assert (z[f], rest[f], out[f]) == schedule_buffer(buf, T, buf.shape[1], L, th, td, order, F)
        assert tt[f] == T
    bars = tap_row_lengths(pack, K, L, th, td, order, F)
    for r in range(m.shape[0]):
        want = ref_schedule(padded[r].reshape(T, 1, L), taps, list(order), F)
        assert bars[r] == ref_count(want, F)[0]


def test_fold_sliced_matches_the_rule_at_the_threshold():
    """``_fold_sliced`` itself at the stream count where the fold kernels start using it."""
    rng = np.random.default_rng(11)
    m = rng.random((_SLICED_MIN_G, 300)) < 0.2
    pack = pack_rows(m)
    th, td = _arr(TD_TAPS)
    order = np.asarray(strided_order(16, 5), np.int64)
    offs, spread = _sliced_tables(16, th, td, order)
    T = -(-300 // 16)
    sl = np.zeros(max(64 * pack.shape[1], T * 16), np.uint64)
    got = _fold_sliced(
        pack, np.arange(_SLICED_MIN_G), _SLICED_MIN_G, T, 16, th, order, 2, offs, spread, sl
    )
    assert got == _reference(m, 16, TD_TAPS, order, 2)[1]
