"""The sliced tap scheduler (every stream of a fold in one word per lane and step) against the
slot-by-slot rule of ``test_taps``, and the fold kernels on both sides of its stream count."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.kernels import pack_rows
from dataflows.taps import (
    _count_sliced,
    _row_folds,
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


def _sliced_run(m: np.ndarray, L: int, taps, order, F: int, rows=None, sizes=None):
    """Rows ``rows`` of ``m`` (all: None) sliced as folds of ``sizes`` streams (one fold:
    None), scheduled and counted: per fold, the scheduled steps as (T, G, L) booleans and
    (z, rest, out)."""
    rows = np.arange(m.shape[0]) if rows is None else np.asarray(rows, np.int64)
    G = len(rows)
    sizes = [G] if sizes is None else sizes
    T = -(-m.shape[1] // L)
    pack = pack_rows(m)
    th, td = _arr(taps)
    order = np.asarray(order, np.int64)
    offs = _sliced_tables(L, th, td, order)
    W = -(-G // 64)
    sl = np.zeros((W, max(64 * pack.shape[1], T * L)), np.uint64)
    cuts = np.cumsum([0] + list(sizes))
    bit = lambda g: np.uint64(1) << np.uint64(g % 64)  # noqa: E731
    masks = np.zeros((len(sizes), W), np.uint64)
    for k in range(len(sizes)):
        for g in range(cuts[k], cuts[k + 1]):
            masks[k, g // 64] |= bit(g)
    nb = len(sizes)
    _sliced_buffer(pack, rows, G, sl)
    _schedule_sliced(sl, T, L, th, offs, order, F, masks, nb)
    z, rest, out = (np.full(nb, -1, np.int64) for _ in range(3))
    _count_sliced(sl, T, L, F, masks, nb, np.arange(nb), z, rest, out)
    words = np.stack([sl[g // 64, : T * L] for g in range(G)], axis=1)  # (T·L, G)
    shifts = np.array([g % 64 for g in range(G)], np.uint64)
    bits = (words >> shifts) & np.uint64(1)
    sched = bits.astype(bool).reshape(T, L, G).transpose(0, 2, 1)
    return [(sched[:, cuts[k] : cuts[k + 1]], (z[k], rest[k], out[k])) for k in range(nb)]


def _reference(m: np.ndarray, L: int, taps, order, F: int, rows=None):
    """The slot-by-slot schedule of those rows as one fold, and its (z, rest, out)."""
    rows = np.arange(m.shape[0]) if rows is None else np.asarray(rows)
    T = -(-m.shape[1] // L)
    vals = _padded(m[rows], L).reshape(len(rows), T, L).transpose(1, 0, 2)
    want = ref_schedule(vals, taps, list(order), F)
    lead = next((t for t in range(T) if want[t].any()), T)
    return want, (lead,) + (ref_count(want[lead:], F) if lead < T else (0, 0))


def _check_folds(m, L, taps, order, F, rows=None, sizes=None) -> bool:
    """Whether every fold of ``_sliced_run`` is the slot-by-slot rule's, steps and counts."""
    rows = np.arange(m.shape[0]) if rows is None else np.asarray(rows, np.int64)
    sizes = [len(rows)] if sizes is None else sizes
    cuts = np.cumsum([0] + list(sizes))
    for k, (sched, counts) in enumerate(_sliced_run(m, L, taps, order, F, rows, sizes)):
        want, want_counts = _reference(m, L, taps, order, F, rows[cuts[k] : cuts[k + 1]])
        if not np.array_equal(sched, want) or counts != want_counts:
            return False
    return True


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
    """One fold of 1 to 20 streams, any lanes, taps (h up to 3, d past the lanes) and lane
    order: the scheduled steps are the slot-by-slot rule's, the counts its free-row count."""
    m, L, taps, order = op
    ((sched, counts),) = _sliced_run(m, L, taps, order, F)
    want, want_counts = _reference(m, L, taps, order, F)
    assert np.array_equal(sched, want)
    assert counts == want_counts
    assert sched.sum() == m.sum()  # every element kept


@settings(**SETTINGS)
@given(data=st.data(), op=operands(max_rows=140), F=st.integers(0, 3))
def test_sliced_folds_at_once_equal_reference(data, op, F):
    """Up to 140 streams (one bit each of a lane word, 64 a word) in folds of any sizes,
    scheduled at once, each with its own run of free steps, drawn from the rows in any order
    (as the fold kernels pass the rows left after the empty ones): every fold is the
    slot-by-slot rule's."""
    m, L, taps, order = op
    rows = data.draw(st.permutations(list(range(m.shape[0]))))
    rows = rows[: data.draw(st.integers(1, len(rows)))]
    sizes = []
    while sum(sizes) < len(rows):
        sizes.append(data.draw(st.integers(1, len(rows) - sum(sizes))))
    assert _check_folds(m, L, taps, order, F, rows, sizes)


def test_sliced_schedule_with_broken_tables_differs():
    """The comparisons above can fail: with the taps tried in the wrong order (the tables
    built from the reversed list), the lanes visited in lane order rather than ``order``, or
    four folds scheduled as one (one run of free steps for all), the sliced pass schedules
    other steps than the rule on TensorDash's real shape."""
    rng = np.random.default_rng(3)
    m = rng.random((64, 512)) < 0.1
    m[:, 96:160] = False  # a stretch of empty steps in every stream
    m[48:, 160:192] = False
    L, order, F = 16, strided_order(16, 5), 2
    assert _check_folds(m, L, TD_TAPS, order, F, sizes=[16] * 4)
    want = _reference(m[:16], L, TD_TAPS, order, F)[0]
    assert not np.array_equal(_sliced_run(m[:16], L, TD_TAPS[::-1], order, F)[0][0], want)
    assert not np.array_equal(_sliced_run(m[:16], L, TD_TAPS, list(range(L)), F)[0][0], want)
    ((one, _),) = _sliced_run(m, L, TD_TAPS, order, F, sizes=[64])
    four = np.concatenate(
        [_reference(m[k : k + 16], L, TD_TAPS, order, F)[0] for k in range(0, 64, 16)], axis=1
    )
    assert not np.array_equal(one, four)


@settings(**SETTINGS)
@given(
    op=operands(max_rows=150),
    F=st.integers(0, 3),
    R=st.sampled_from([1, 2, 3, 5, 16, 70, 130]),
    empty=st.integers(0, 6),
)
def test_row_folds_equal_per_fold_schedule(op, F, R, empty):
    """``lockstep_row_folds`` with folds of 1 to 130 rows (sets of folds of up to 64 live rows,
    a fold of more alone over two or three words), some rows empty: every fold's
    (z, rest, out) is ``schedule_buffer``'s on its buffer with every row, and the per-stream
    kernels' (``_row_folds``)."""
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
        G = buf.shape[1]
        assert (z[f], rest[f], out[f]) == schedule_buffer(buf, T, G, L, th, td, order, F)
        assert tt[f] == T
    plain = _row_folds(pack, K, L, R, th, td, order, F, False)
    assert all(np.array_equal(a, b) for a, b in zip(plain, (z, rest, out, tt), strict=True))
    bars = tap_row_lengths(pack, K, L, th, td, order, F)
    for r in range(m.shape[0]):
        want = ref_schedule(padded[r].reshape(T, 1, L), taps, list(order), F)
        assert bars[r] == ref_count(want, F)[0]
