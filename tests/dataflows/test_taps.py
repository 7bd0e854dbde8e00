"""The tap scheduler, lockstep folds and the free-row rule against slow, literal references."""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dataflows.kernels import pack_rows, schedule
from dataflows.taps import (
    _schedule_periodic,
    _tables,
    carry_walk,
    dnnsim_taps,
    lockstep_row_folds,
    lockstep_row_folds_periodic,
    lockstep_slice_folds,
    lockstep_slice_folds_periodic,
    schedule_buffer,
    step_period,
    strided_order,
    tap_row_lengths,
    tap_slice_lengths,
    window_lockstep,
    window_lockstep_row_folds,
    window_lockstep_slice_folds,
)

SETTINGS = dict(deadline=None, max_examples=150, derandomize=True)
TD_TAPS = [(1, -1), (1, 0), (1, 1), (1, 3), (2, -2), (2, 0), (2, 2)]


def ref_schedule(vals: np.ndarray, taps, order, F: int) -> np.ndarray:
    """DNNsim's non-overlapping schedule, slot by slot: ``vals`` (T, G, L) bool, scheduled in
    place (a copy is returned)."""
    v = vals.copy()
    T, G, L = v.shape
    skip = 0
    for t in range(T):
        if skip < F and not v[t].any():
            skip += 1
            continue
        skip = 0
        for g in range(G):
            for p in order:
                if v[t, g, p]:
                    continue
                for h, d in taps:
                    if t + h >= T:
                        continue
                    src = (p + d) % L
                    if v[t + h, g, src]:
                        v[t, g, p], v[t + h, g, src] = True, False
                        break
    return v


def ref_count(v: np.ndarray, F: int, skip: int = 0) -> tuple[int, int]:
    """Free-row rule: (cycles, the run of free steps at the end), entering after ``skip``."""
    cycles = 0
    for t in range(v.shape[0]):
        if skip < F and not v[t].any():
            skip += 1
            continue
        skip = 0
        cycles += 1
    return cycles, skip


def to_buf(vals: np.ndarray) -> np.ndarray:
    T, G, L = vals.shape
    w = (vals.astype(np.uint64) << np.arange(L, dtype=np.uint64)).sum(axis=2, dtype=np.uint64)
    return np.ascontiguousarray(w.reshape(T, G), dtype=np.uint64)


def from_buf(buf: np.ndarray, L: int) -> np.ndarray:
    return ((buf[:, :, None] >> np.arange(L, dtype=np.uint64)) & np.uint64(1)).astype(bool)


def _arr(taps):
    return (np.array([h for h, _ in taps], dtype=np.int64),
            np.array([d for _, d in taps], dtype=np.int64))


@st.composite
def buffers(draw, max_lanes=16):
    T = draw(st.integers(1, 12))
    G = draw(st.integers(1, 5))
    L = draw(st.integers(1, max_lanes))
    dens = draw(st.sampled_from([0.02, 0.1, 0.2, 0.5, 0.9]))
    seed = draw(st.integers(0, 2**31))
    vals = np.random.default_rng(seed).random((T, G, L)) < dens
    return vals


@st.composite
def tap_lists(draw, L):
    n = draw(st.integers(1, 8))
    taps = draw(st.lists(st.tuples(st.integers(1, 3), st.integers(-L, L)), min_size=n,
                         max_size=n, unique=True))
    return taps


def test_dnnsim_tap_list_and_order():
    assert dnnsim_taps("T", 2, 5) == TD_TAPS
    assert dnnsim_taps("L", 2, 3) == [(1, -3), (1, -2), (1, -1), (1, 0), (2, 0)]
    assert strided_order(16, 5) == [0, 5, 10, 1, 6, 11, 2, 7, 12, 3, 8, 13, 4, 9, 14, 15]
    assert strided_order(4, 1) == [0, 1, 2, 3]
    assert sorted(strided_order(7, 9)) == list(range(7))


@settings(**SETTINGS)
@given(data=st.data(), vals=buffers(), F=st.integers(0, 3))
def test_schedule_buffer_equals_reference(data, vals, F):
    check_schedule(data, vals, F)


def check_schedule(data, vals: np.ndarray, F: int) -> None:
    """``schedule_buffer`` on ``vals`` with TensorDash's taps or drawn ones and a drawn lane
    order, against the slot-by-slot rule and its count."""
    T, G, L = vals.shape
    taps = data.draw(tap_lists(L)) if data.draw(st.booleans()) else TD_TAPS
    order = data.draw(st.permutations(list(range(L))))
    th, td = _arr(taps)
    buf = to_buf(vals)
    z, rest, out = schedule_buffer(buf, T, G, L, th, td, np.array(order, np.int64), F)
    want = ref_schedule(vals, taps, order, F)
    assert np.array_equal(from_buf(buf, L), want)
    # every element kept, none moved more than max(h) steps earlier
    assert want.sum() == vals.sum()
    lead = next((t for t in range(T) if want[t].any()), T)
    assert z == lead
    assert (rest, out) == (ref_count(want[lead:], F) if lead < T else (0, 0))
    for s in range(F + 1):  # any incoming run: lead part + rest
        c, _ = ref_count(want, F, s)
        got = carry_walk(np.array([z]), np.array([rest]), np.array([out]), np.array([T]),
                         np.array([0]), np.array([True]), F)
        if s == 0:
            assert got[0] == c



@settings(**SETTINGS)
@given(data=st.data(), T=st.integers(4, 40), G=st.integers(1, 4), L=st.integers(9, 16),
       hmax=st.integers(1, 3), dens=st.sampled_from([0.05, 0.2, 0.5, 0.9]),
       seed=st.integers(0, 2**31), F=st.integers(0, 3))
def test_schedule_buffer_two_byte_lanes(data, T, G, L, hmax, dens, seed, F):
    """9 to 16 lanes (two bytes a lane word, the packed scheduler's lookups written out) with
    taps reaching 1, 2 or 3 steps, over buffers long enough that most steps see every tap:
    the slot-by-slot rule."""
    vals = np.random.default_rng(seed).random((T, G, L)) < dens
    taps = data.draw(tap_lists(L))
    taps = sorted(set(taps) | {(hmax, data.draw(st.integers(-L, L)))})
    taps = [(min(h, hmax), d) for h, d in taps]
    taps = list(dict.fromkeys(taps))[:8]
    if all(h < hmax for h, _ in taps):
        taps[-1] = (hmax, taps[-1][1])
        taps = list(dict.fromkeys(taps))
    th, td = _arr(taps)
    order = np.array(data.draw(st.permutations(list(range(L)))), np.int64)
    buf = to_buf(vals)
    schedule_buffer(buf, T, G, L, th, td, order, F)
    assert np.array_equal(from_buf(buf, L), ref_schedule(vals, taps, list(order), F))

@settings(**SETTINGS)
@given(vals=buffers(max_lanes=8), F=st.integers(0, 3), reps=st.lists(
    st.integers(0, 3), min_size=1, max_size=8), resets=st.lists(st.booleans(), min_size=8,
                                                                max_size=8))
def test_carry_walk_equals_one_long_count(vals, F, reps, resets):
    """Folds visited in a sequence count as their scheduled steps laid end to end, the run of
    free steps carried over, reset where asked."""
    T, G, L = vals.shape
    folds = [np.roll(vals, k, axis=0) & (np.arange(T)[:, None, None] % (k + 1) == 0)
             for k in range(4)]
    th, td = _arr(TD_TAPS)
    order = np.arange(L, dtype=np.int64)
    stats, scheduled = [], []
    for f in folds:
        buf = to_buf(f)
        stats.append(schedule_buffer(buf, T, G, L, th, td, order, F))
        scheduled.append(from_buf(buf, L))
    z, rest, out = (np.array([s[i] for s in stats]) for i in range(3))
    seq = np.array(reps)
    rs = np.array(resets[:len(reps)])
    got = carry_walk(z, rest, out, np.full(4, T), seq, rs, F)
    skip = 0
    for i, f in enumerate(reps):
        if rs[i]:
            skip = 0
        c, skip = ref_count(scheduled[f], F, skip)
        assert got[i] == c


def test_hand_worked_tile():
    """Two streams of 4 lanes, taps (1,0) (1,1) (2,0), free rows 2, sequential order.

    step 0: a=1000 b=0000 -> a takes nothing for lanes 1..3 except from step 1/2
    The numbers below are worked by hand from the rule in the module docstring."""
    a = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0],
                  [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], bool)
    b = np.zeros_like(a)
    b[0, 3] = b[5, 2] = True
    vals = np.stack([a, b], axis=1)
    taps = [(1, 0), (1, 1), (2, 0)]
    th, td = _arr(taps)
    buf = to_buf(vals)
    z, rest, out = schedule_buffer(buf, 8, 2, 4, th, td, np.arange(4, dtype=np.int64), 2)
    got = from_buf(buf, 4)
    # step 0, stream a: lane 0 full; lane 1 takes (1, 0) -> step 1 lane 1; lanes 2, 3 find
    # nothing at steps 1 (now empty) and 2. Stream b: lane 2 takes (1,1)? step 1 lane 3: empty;
    # nothing. Step 1 is now empty in both: free (run 1). Step 2 empty: free (run 2). Step 3:
    # a lanes 0, 1 take nothing (steps 4, 5 of a are empty); b lane 1 takes (2, 0)? step 5 lane
    # 1: empty; b lane 1 (1,1) -> step 4 lane 2: empty. b lane 2 (2, 0) -> step 5 lane 2: yes.
    assert got[0, 0].tolist() == [True, True, False, False]
    assert got[3, 1].tolist() == [False, False, True, False]
    assert not got[5].any()
    # count: step 0 (1), steps 1, 2 free, step 3 (1), steps 4, 5 free, step 6 costs (run was
    # 2), step 7 free -> 3 cycles, run 1 at the end
    assert (z, rest, out) == (0, 3, 1)


@settings(**SETTINGS)
@given(data=st.data(), F=st.integers(0, 3), R=st.integers(1, 4))
def test_fold_kernels_equal_reference(data, F, R):
    """The fold kernels build the buffers of ``os`` (rows of a packed matrix, L bits a step) and
    ``ws``/``is`` (slices of L consecutive k, one step per row) as stated."""
    rows = data.draw(st.integers(1, 9))
    K = data.draw(st.integers(1, 140))
    L = data.draw(st.sampled_from([1, 3, 8, 16, 64]))
    dens = data.draw(st.sampled_from([0.05, 0.3, 0.8]))
    m = np.random.default_rng(data.draw(st.integers(0, 2**31))).random((rows, K)) < dens
    pack = pack_rows(m)
    th, td = _arr(TD_TAPS)
    order = np.array(strided_order(L, 5), np.int64)
    T = -(-K // L)
    padded = np.zeros((rows, T * L), bool)
    padded[:, :K] = m
    z, rest, out, tt = lockstep_row_folds(pack, K, L, R, th, td, order, F)
    bars = tap_row_lengths(pack, K, L, th, td, order, F)
    for f in range(-(-rows // R)):
        vals = padded[f * R:(f + 1) * R].reshape(-1, T, L).transpose(1, 0, 2)
        sch = ref_schedule(vals, TD_TAPS, order.tolist(), F)
        assert tt[f] == T
        assert carry_walk(z, rest, out, tt, np.array([f]), np.array([True]), F)[0] == \
            ref_count(sch, F)[0]
    for r in range(rows):
        vals = padded[r].reshape(T, 1, L)
        assert bars[r] == ref_count(ref_schedule(vals, TD_TAPS, order.tolist(), F), F)[0]
    nq = T
    z, rest, out, tt = lockstep_slice_folds(pack, K, L, R, th, td, order, F)
    sl = tap_slice_lengths(pack, K, L, th, td, order, F)
    for f in range(-(-nq // R)):
        vals = np.stack([padded[:, q * L:(q + 1) * L] for q in range(f * R, min(nq, f * R + R))],
                        axis=1)
        sch = ref_schedule(vals, TD_TAPS, order.tolist(), F)
        assert tt[f] == rows
        assert carry_walk(z, rest, out, tt, np.array([f]), np.array([True]), F)[0] == \
            ref_count(sch, F)[0]
    for q in range(nq):
        vals = padded[:, q * L:(q + 1) * L][:, None, :]
        assert sl[q] == ref_count(ref_schedule(vals, TD_TAPS, order.tolist(), F), F)[0]


def ref_window_lockstep(vals: np.ndarray, H: int, D: int) -> int:
    """The window rule, element by element, every stream with its own lanes and one head."""
    T, G, L = vals.shape
    if not vals.any():
        return 0
    pending = {(t, g, x) for t, g, x in zip(*np.nonzero(vals), strict=True)}
    t0 = cycles = 0
    while t0 < T:
        window = range(t0, min(T, t0 + H + 1))
        for g in range(G):
            free = set(range(L))
            for lane in sorted(free):
                for t in window:
                    if (t, g, lane) in pending:
                        pending.discard((t, g, lane))
                        free.discard(lane)
                        break
            for d in range(1, D + 1):
                for sign in (-1, +1):
                    for t in window:
                        for lane in sorted(free):
                            src = (t, g, lane + sign * d)
                            if lane in free and src in pending:
                                pending.discard(src)
                                free.discard(lane)
        cycles += 1
        adv = 0
        while adv <= H and t0 < T and not any(p[0] == t0 for p in pending):
            t0 += 1
            adv += 1
    return cycles


@settings(**SETTINGS)
@given(vals=buffers(), H=st.integers(0, 4), D=st.integers(0, 5))
def test_window_lockstep_equals_reference(vals, H, D):
    T, G, L = vals.shape
    got = window_lockstep(to_buf(vals), T, G, L, H, D)
    assert got == ref_window_lockstep(vals, H, D)
    if G == 1:  # one stream: the barrier kernel's own rule
        assert got == schedule(to_buf(vals)[:, 0].copy(), L, H, D)
    # one shared head is never faster than the slowest stream alone
    alone = max(schedule(to_buf(vals[:, g:g + 1])[:, 0].copy(), L, H, D) for g in range(G))
    assert got >= alone


@settings(**SETTINGS)
@given(data=st.data(), R=st.integers(1, 4), H=st.integers(0, 3), D=st.integers(0, 3))
def test_window_lockstep_folds(data, R, H, D):
    rows = data.draw(st.integers(1, 7))
    K = data.draw(st.integers(1, 100))
    L = data.draw(st.sampled_from([2, 8, 16]))
    m = np.random.default_rng(data.draw(st.integers(0, 2**31))).random((rows, K)) < 0.3
    assume(m.any())
    pack = pack_rows(m)
    T = -(-K // L)
    padded = np.zeros((rows, T * L), bool)
    padded[:, :K] = m
    got = window_lockstep_row_folds(pack, K, L, R, H, D)
    for f in range(-(-rows // R)):
        vals = padded[f * R:(f + 1) * R].reshape(-1, T, L).transpose(1, 0, 2)
        assert got[f] == ref_window_lockstep(vals, H, D)
    got = window_lockstep_slice_folds(pack, K, L, R, H, D)
    for f in range(-(-T // R)):
        vals = np.stack([padded[:, q * L:(q + 1) * L] for q in range(f * R, min(T, f * R + R))],
                        axis=1)
        assert got[f] == ref_window_lockstep(vals, H, D)


@st.composite
def edge_buffers(draw):
    """Buffers at the edges of the word: 1, 2, 63 or 64 lanes (or any up to 64), whole steps
    full or empty, densities from none to all."""
    T = draw(st.integers(1, 9))
    G = draw(st.integers(1, 4))
    L = draw(st.sampled_from([1, 2, 63, 64]) | st.integers(1, 64))
    dens = draw(st.sampled_from([0.0, 0.05, 0.3, 0.7, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    vals = rng.random((T, G, L)) < dens
    for t in range(T):  # some steps forced full or empty in some streams
        kind = draw(st.sampled_from(["as drawn", "as drawn", "full", "empty"]))
        if kind != "as drawn":
            vals[t, rng.random(G) < 0.7] = kind == "full"
    return vals


@settings(**SETTINGS)
@given(data=st.data(), vals=edge_buffers(), F=st.integers(0, 3))
def test_schedule_buffer_edge_lanes(data, vals, F):
    """The rank-space pass equals the slot-by-slot rule for every lane count up to the word's
    64, full and empty steps, any tap list (d beyond ±L wraps) and any lane order."""
    check_schedule(data, vals, F)


@settings(**SETTINGS)
@given(data=st.data(), F=st.integers(0, 3), R=st.integers(1, 5))
def test_row_folds_with_empty_and_repeated_rows(data, F, R):
    """Rows drawn from a small pool (empty ones included) so that folds repeat, differ by one
    row or by where their empty rows sit: every fold's (z, rest, out) is its own buffer's,
    scheduled with every row (``schedule_buffer``) and by the slot-by-slot rule."""
    L = data.draw(st.sampled_from([1, 4, 16, 64]))
    K = data.draw(st.integers(1, 3 * L + 5))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    pool = rng.random((4, K)) < data.draw(st.sampled_from([0.1, 0.4, 0.9]))
    pool[0] = False
    pool[1, :] = pool[2, :]
    pool[1, rng.integers(K)] ^= True  # a row one element away from another
    pool[3, :64] = False  # a row whose first word is empty
    pick = data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=4 * R))
    m = pool[pick]
    pack = pack_rows(m)
    th, td = _arr(TD_TAPS)
    order = np.array(strided_order(L, 5), np.int64)
    z, rest, out, tt = lockstep_row_folds(pack, K, L, R, th, td, order, F)
    T = -(-K // L)
    padded = np.zeros((len(pick), T * L), bool)
    padded[:, :K] = m
    for f in range(-(-len(pick) // R)):
        vals = padded[f * R:(f + 1) * R].reshape(-1, T, L).transpose(1, 0, 2)
        buf = to_buf(vals)
        assert (z[f], rest[f], out[f]) == schedule_buffer(buf, T, buf.shape[1], L, th, td,
                                                         order, F)
        want = ref_schedule(vals, TD_TAPS, order.tolist(), F)
        lead = next((t for t in range(T) if want[t].any()), T)
        assert z[f] == lead and tt[f] == T
        if lead < T:
            assert (rest[f], out[f]) == ref_count(want[lead:], F)
    bars = tap_row_lengths(pack, K, L, th, td, order, F)
    for r in range(len(pick)):
        vals = padded[r].reshape(T, 1, L)
        assert bars[r] == ref_count(ref_schedule(vals, TD_TAPS, order.tolist(), F), F)[0]


def ref_period(vals: np.ndarray) -> int:
    """The least p > 0 with vals[t] == vals[t + p] for every t, by trying each p."""
    T = vals.shape[0]
    return next(p for p in range(1, T + 1) if np.array_equal(vals[p:], vals[:T - p]))


@st.composite
def periodic_buffers(draw):
    """Steps that repeat: a drawn block of steps laid end to end and cut anywhere (the way a
    dense operand held as ones repeats every image), dense or sparse, with whole steps empty
    in every stream now and then so that free steps occur."""
    p = draw(st.integers(1, 7))
    G = draw(st.integers(1, 3))
    L = draw(st.integers(2, 16))
    T = draw(st.integers(1, 90))
    dens = draw(st.sampled_from([0.1, 0.3, 0.6, 0.9, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    block = rng.random((p, G, L)) < dens
    block[rng.random(p) < 0.3] = False
    return np.concatenate([block] * (T // p + 1))[:T]


def _periodic_run(vals, taps, order, F, p):
    T, G, L = vals.shape
    th, td = _arr(taps)
    o = np.array(order, np.int64)
    buf = to_buf(vals)
    got = _schedule_periodic(buf, T, G, L, th, o, F, _tables(L, th, td, o), p)
    return got, from_buf(buf, L)


@settings(**SETTINGS)
@given(data=st.data(), vals=periodic_buffers(), F=st.integers(0, 3))
def test_periodic_schedule_equals_reference(data, vals, F):
    """Steps that repeat, scheduled a period at a time with the repeated periods copied: the
    slot-by-slot rule's buffer and count, for TensorDash's taps or drawn ones and any lane
    order; ``step_period`` is the least period."""
    T, G, L = vals.shape
    taps = data.draw(tap_lists(L)) if data.draw(st.booleans()) else TD_TAPS
    order = data.draw(st.permutations(list(range(L))))
    p = step_period(to_buf(vals), T, G)
    assert p == ref_period(vals)
    # the state looked at every period or every few (the kernels look about every 64 steps)
    (z, rest, out), sched = _periodic_run(vals, taps, order, F, p * data.draw(st.integers(1, 3)))
    want = ref_schedule(vals, taps, order, F)
    assert np.array_equal(sched, want)
    lead = next((t for t in range(T) if want[t].any()), T)
    assert z == lead
    assert (rest, out) == (ref_count(want[lead:], F) if lead < T else (0, 0))


def test_periodic_schedule_with_a_wrong_period_differs():
    """The reference comparison above can fail: told a period the steps do not have (3 for
    4), the pass copies steps that differ from the ones it skips."""
    rng = np.random.default_rng(7)
    wrong = 0
    for _ in range(40):
        block = rng.random((4, 2, 16)) < 0.3
        vals = np.concatenate([block] * 12)
        want = ref_schedule(vals, TD_TAPS, strided_order(16, 5), 2)
        _, sched = _periodic_run(vals, TD_TAPS, strided_order(16, 5), 2, 3)
        wrong += not np.array_equal(sched, want)
        _, sched = _periodic_run(vals, TD_TAPS, strided_order(16, 5), 2, 4)
        assert np.array_equal(sched, want)
    assert wrong > 0


@settings(**SETTINGS)
@given(data=st.data(), F=st.integers(0, 3), R=st.integers(1, 4))
def test_periodic_fold_kernels_equal_plain_ones(data, F, R):
    """The fold kernels for operands that repeat give the plain kernels' results, on operands
    whose rows (``ws``/``is`` steps) and k's (``os`` steps) repeat, and on ones that do not."""
    L = data.draw(st.sampled_from([4, 16]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    dens = data.draw(st.sampled_from([0.2, 0.7, 1.0]))
    img = rng.random((data.draw(st.integers(1, 5)), data.draw(st.integers(1, 40)))) < dens
    n = data.draw(st.integers(1, 12))
    rows = np.concatenate([img] * n)  # images one after another along the rows
    if data.draw(st.booleans()):
        rows = np.concatenate([img] * n, axis=1)  # or along k
    if data.draw(st.booleans()):  # or nothing repeats
        rows = rng.random(rows.shape) < dens
    K = rows.shape[1]
    pack = pack_rows(rows)
    th, td = _arr(TD_TAPS)
    order = np.array(strided_order(L, 5), np.int64)
    for plain, periodic in ((lockstep_row_folds, lockstep_row_folds_periodic),
                            (lockstep_slice_folds, lockstep_slice_folds_periodic)):
        want = plain(pack, K, L, R, th, td, order, F)
        got = periodic(pack, K, L, R, th, td, order, F)
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
