"""The lane scheduler and the bit-packing kernels against slow, obviously-correct references."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dataflows.kernels import (
    Bits,
    col_popcounts,
    extract_bits,
    filled_slots,
    gather_cols,
    gather_runs,
    gathered_stream_lengths,
    im2col_cols,
    im2col_cols_map,
    im2col_rows,
    nm_slot_map,
    pack_rows,
    pair_lengths_max_sum,
    row_popcounts,
    row_stream_lengths,
    runs_popcount,
    runs_rows,
    schedule,
    select_bits,
    set_positions,
    slice_stream_lengths,
    taps_cols,
    trace_words,
    transpose_bits,
)
from traces.format import PackedMask

SETTINGS = dict(deadline=None, max_examples=200)


def reference_schedule(mask: np.ndarray, H: int, D: int) -> int:
    """Cycle by cycle, element by element: the rule in dataflows/kernels.py, literally."""
    T, L = mask.shape
    if H < 0 or not mask.any():
        return math.ceil(int(mask.sum()) / L)
    pending = {(t, lane) for t in range(T) for lane in range(L) if mask[t, lane]}
    t0, cycles = 0, 0
    while t0 < T:
        window = range(t0, min(T, t0 + H + 1))
        free = set(range(L))
        for lane in sorted(free):  # own lane, earliest step
            for t in window:
                if (t, lane) in pending:
                    pending.discard((t, lane))
                    free.discard(lane)
                    break
        for d in range(1, D + 1):
            for sign in (-1, +1):  # lane l - d first, then l + d
                for t in window:
                    for lane in sorted(free):
                        src = (t, lane + sign * d)
                        if lane in free and src in pending:
                            pending.discard(src)
                            free.discard(lane)
        cycles += 1
        adv = 0
        while adv <= H and t0 < T and not any((t0, x) in pending for x in range(L)):
            t0 += 1
            adv += 1
    return cycles


def _steps(mask: np.ndarray) -> np.ndarray:
    weights = (1 << np.arange(mask.shape[1], dtype=np.uint64)).astype(np.uint64)
    return (mask.astype(np.uint64) * weights).sum(axis=1).astype(np.uint64)


masks = st.builds(
    lambda t, lane, p, seed: np.random.default_rng(seed).random((t, lane)) < p,
    st.integers(1, 24), st.integers(1, 9), st.floats(0, 1), st.integers(0, 2**31))


@settings(**SETTINGS)
@given(mask=masks, H=st.integers(-1, 4), D=st.integers(0, 4))
def test_schedule_equals_reference(mask, H, D):
    assert schedule(_steps(mask), mask.shape[1], H, D) == reference_schedule(mask, H, D)


@settings(**SETTINGS)
@given(mask=masks, H=st.integers(0, 4), D=st.integers(0, 4))
def test_schedule_bounds_and_limits(mask, H, D):
    T, L = mask.shape
    c = schedule(_steps(mask), L, H, D)
    ideal = math.ceil(int(mask.sum()) / L)
    assert ideal <= c <= T  # never worse than dense, never better than ideal
    assert schedule(_steps(mask), L, 0, 0) == (T if mask.any() else 0)  # no window: dense
    assert schedule(_steps(mask), L, T, L) == ideal  # window covering everything: ideal
    assert schedule(_steps(mask), L, -1, 0) == ideal


def test_removing_a_nonzero_can_increase_bounded_cycles():
    """The documented counterexample (docs/sparse.md, "Monotonicity"): the greedy window
    scheduler is not monotone in the nonzeros; the unbounded one is."""
    before = np.array([[1, 0, 0, 0, 0], [1, 0, 0, 0, 1], [0, 0, 0, 0, 0], [1, 0, 1, 0, 1],
                       [0, 1, 1, 0, 1], [1, 0, 1, 0, 1], [1, 1, 1, 0, 0], [1, 1, 0, 1, 0]],
                      dtype=bool)
    after = before.copy()
    after[3, 4] = False
    assert schedule(_steps(before), 5, 2, 2) == reference_schedule(before, 2, 2) == 4
    assert schedule(_steps(after), 5, 2, 2) == reference_schedule(after, 2, 2) == 5
    assert schedule(_steps(after), 5, -1, 0) <= schedule(_steps(before), 5, -1, 0)


@settings(**SETTINGS)
@given(mask=st.builds(lambda r, k, p, s: np.random.default_rng(s).random((r, k)) < p,
                      st.integers(1, 7), st.integers(1, 200), st.floats(0, 1),
                      st.integers(0, 2**31)),
       k0=st.integers(0, 210), n=st.integers(1, 64))
def test_pack_extract_popcounts(mask, k0, n):
    pack = pack_rows(mask)
    for r in range(mask.shape[0]):
        want = 0
        for b in range(n):
            if k0 + b < mask.shape[1] and mask[r, k0 + b]:
                want |= 1 << b
        assert int(extract_bits(pack[r], k0, n)) == want
    np.testing.assert_array_equal(row_popcounts(pack), mask.sum(axis=1))
    np.testing.assert_array_equal(col_popcounts(pack, mask.shape[1]), mask.sum(axis=0))



@settings(deadline=None, max_examples=60)
@given(rows=st.integers(0, 700), k=st.integers(1, 300),
       p=st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0, 1)),
       extra=st.integers(0, 2), seed=st.integers(0, 2**31))
def test_col_popcounts_many_rows(rows, k, p, extra, seed):
    """Per-k counts over enough rows to fill the byte counters (255 rows) more than once, all
    ones included, from a pack with spare words past K or fewer words than K needs."""
    mask = np.random.default_rng(seed).random((rows, k)) < p
    pack = pack_rows(mask)
    want = mask.sum(axis=0)
    if extra:  # spare zero words: counted as zeros, not returned
        pack = np.hstack([pack, np.zeros((rows, extra), dtype=np.uint64)])
    np.testing.assert_array_equal(col_popcounts(pack, k), want)
    wide = col_popcounts(pack[:, :1], k)  # K past the words: zeros there
    np.testing.assert_array_equal(wide[: min(k, 64)], mask[:, :64].sum(axis=0))
    assert not wide[64:].any()

def _check_streams(mask, L, H, D):
    """Both stream kernels on a (rows × K) mask against the reference schedule."""
    pack = pack_rows(mask)
    K = mask.shape[1]
    T = -(-K // L)
    lens = row_stream_lengths(pack, K, L, H, D)
    for r in range(mask.shape[0]):
        padded = np.zeros((T, L), dtype=bool)
        padded.reshape(-1)[:K] = mask[r]
        assert lens[r] == reference_schedule(padded, H, D)
    got = slice_stream_lengths(pack, K, L, H, D)
    assert len(got) == T
    for q, k0 in enumerate(range(0, K, L)):
        cols = np.zeros((mask.shape[0], L), dtype=bool)
        cols[:, : min(L, K - k0)] = mask[:, k0:k0 + L]
        assert got[q] == reference_schedule(cols, H, D)


@settings(deadline=None, max_examples=60)
@given(mask=masks, H=st.integers(-1, 5), D=st.integers(0, 3), L=st.integers(1, 8))
def test_stream_kernels_match_schedule(mask, H, D, L):
    _check_streams(mask, L, H, D)


@settings(deadline=None, max_examples=40)
@given(rows=st.integers(1, 5), K=st.integers(1, 300), L=st.sampled_from([3, 16, 31, 33, 64]),
       p=st.floats(0, 1), H=st.integers(-1, 5), D=st.integers(0, 6), seed=st.integers(0, 99))
def test_long_streams_and_wide_lanes(rows, K, L, p, H, D, seed):
    """Streams across word boundaries and lane counts up to 64 (the full-word masks)."""
    _check_streams(np.random.default_rng(seed).random((rows, K)) < p, L, H, D)


@settings(deadline=None, max_examples=60)
@given(m=st.integers(1, 5), k=st.integers(1, 150), nc=st.integers(1, 4), ks=st.integers(1, 20),
       p=st.floats(0, 1), empty=st.booleans(), L=st.integers(1, 8), H=st.integers(-1, 5),
       D=st.integers(0, 3), seed=st.integers(0, 99))
def test_gathered_stream_lengths(m, k, nc, ks, p, empty, L, H, D, seed):
    """Per PE (i, j): the stream of column j's slots, each pending when A[i, slot] is set (an
    empty slot −1 when ``empty``, a padding slot −2 never)."""
    rng = np.random.default_rng(seed)
    a = rng.random((m, k)) < p
    slots = rng.integers(-2, k, size=(nc, ks))
    got = gathered_stream_lengths(pack_rows(a), slots, empty, L, H, D)
    for i in range(m):
        for j in range(nc):
            bits = [bool(a[i, s]) if s >= 0 else (s == -1 and empty) for s in slots[j]]
            T = -(-ks // L)
            mat = np.zeros((T, L), dtype=bool)
            mat.reshape(-1)[:ks] = bits
            assert got[i, j] == reference_schedule(mat, H, D)


@settings(deadline=None, max_examples=60)
@given(mask=st.builds(lambda r, k, p, s: np.random.default_rng(s).random((r, k)) < p,
                      st.integers(1, 200), st.integers(1, 200), st.floats(0, 1),
                      st.integers(0, 2**31)))
def test_transpose_bits(mask):
    np.testing.assert_array_equal(transpose_bits(pack_rows(mask), mask.shape[1]),
                                  pack_rows(mask.T))


@settings(deadline=None, max_examples=60)
@given(a=st.builds(lambda r, k, s: np.random.default_rng(s).random((r, k)) < 0.5,
                   st.integers(1, 6), st.integers(1, 90), st.integers(0, 2**31)),
       nb=st.integers(1, 6), L=st.integers(1, 8), seed=st.integers(0, 99))
def test_pair_lengths(a, nb, L, seed):
    b = np.random.default_rng(seed).random((nb, a.shape[1])) < 0.5
    mx, sm = pair_lengths_max_sum(pack_rows(a), pack_rows(b), 0, a.shape[0], 0, nb, L)
    vals = [math.ceil(int((a[i] & b[j]).sum()) / L) for i in range(len(a)) for j in range(nb)]
    assert (mx, sm) == (max(vals), sum(vals))


def _window_reference(fmap, n0, nimg, c0, cc, iy, ix):
    """rows (c, i, j), bits (n, p, q): fmap[n0 + n, c0 + c, iy[p, i], ix[q, j]] (−1: zero),
    element by element."""
    (P, kh), (Q, kw) = iy.shape, ix.shape
    out = np.zeros((cc * kh * kw, nimg * P * Q), dtype=bool)
    for c in range(cc):
        for i in range(kh):
            for j in range(kw):
                for n in range(nimg):
                    for p in range(P):
                        for q in range(Q):
                            y, x = iy[p, i], ix[q, j]
                            if y >= 0 and x >= 0:
                                out[(c * kh + i) * kw + j, (n * P + p) * Q + q] = \
                                    fmap[n0 + n, c0 + c, y, x]
    return out


def _index(size, out, k, s, p, d):
    """Window position o, tap i reads o·s − p + i·d, or −1 outside the ``size`` map."""
    r = np.arange(out)[:, None] * s - p + np.arange(k)[None, :] * d
    return np.where((r >= 0) & (r < size), r, -1)


fmaps = st.builds(
    lambda n, c, h, w, p, seed: np.random.default_rng(seed).random((n, c, h, w)) < p,
    st.integers(1, 3), st.integers(1, 4), st.integers(0, 6), st.integers(0, 150),
    st.sampled_from([0.0, 1.0, 0.1, 0.5]), st.integers(0, 2**31))


def _view_reference(fmap, n0, nimg, c0, cpg, y0, x0, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):
    """The transposed im2col matrix of the view fmap[n0:n0+nimg, c0:c0+cpg, y0:, x0:], element
    by element (``_window_reference`` over the windows' index maps)."""
    view = fmap[:, :, y0:, x0:]
    hv, wv = view.shape[2:]
    iy, ix = _index(hv, ho, kh, sh, ph, dh), _index(wv, wo, kw, sw, pw, dw)
    return _window_reference(np.ascontiguousarray(view), n0, nimg, c0, cpg, iy, ix)


def _draw_images_channels(data, N: int, C: int) -> tuple[int, int, int, int]:
    """A range of images (n0, count) and of channels (c0, count) of an (N, C, ...) tensor."""
    n0 = data.draw(st.integers(0, N - 1))
    nimg = data.draw(st.integers(1, N - n0))
    c0 = data.draw(st.integers(0, C - 1))
    return n0, nimg, c0, data.draw(st.integers(1, C - c0))


def _draw_windows(data, H: int) -> tuple[int, ...]:
    """A crop (y0, x0) of a map of H rows and windows over it: kernel, strides, dilations
    (up to 3), paddings (up to 3), output rows and columns (rows longer than a word)."""
    y0, x0 = data.draw(st.integers(0, H + 1)), data.draw(st.integers(0, 3))
    kh, kw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 5))
    sh, sw, dh, dw = (data.draw(st.integers(1, 3)) for _ in range(4))
    ph, pw = data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3))
    ho, wo = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 70))
    return y0, x0, kh, kw, sh, sw, dh, dw, ph, pw, ho, wo


@settings(deadline=None, max_examples=60)
@given(fmap=fmaps, data=st.data())
def test_im2col_kernels_from_packed_bits(fmap, data):
    """The im2col kernels read the packed tensor (``Bits``): any view fmap[n0:n0+nimg,
    c0:c0+cpg, y0:, x0:] (a crop past the map included), strides, dilations and paddings up to
    3, windows past the map, all-zero and all-one maps, rows longer than a word."""
    N, C, H, W = fmap.shape
    n0, nimg, c0, cpg = _draw_images_channels(data, N, C)
    y0, x0, kh, kw, sh, sw, dh, dw, ph, pw, ho, wo = _draw_windows(data, H)
    assume(nimg * ho * wo * cpg * kh * kw <= 60_000)
    ref = _view_reference(fmap, n0, nimg, c0, cpg, y0, x0, kh, kw, sh, sw, ph, pw, dh, dw, ho,
                          wo)
    src = Bits.of(fmap).words
    args = (src, C, H, W, n0, nimg, c0, cpg, y0, x0, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo)
    np.testing.assert_array_equal(im2col_cols(*args), pack_rows(ref))
    np.testing.assert_array_equal(im2col_rows(*args), pack_rows(ref.T))


@settings(deadline=None, max_examples=80)
@given(fmap=fmaps, data=st.data())
def test_im2col_cols_map(fmap, data):
    """The im2col columns built plane by plane and placed by a row map equal the windows read
    element by element: any view, strides (3 goes bit by bit, 2 splits words), dilations,
    paddings, windows past the map, 1×1 windows over the whole map, rows longer than a word,
    padding rows left zero."""
    N, C, H, W = fmap.shape
    n0, nimg, c0, cpg = _draw_images_channels(data, N, C)
    if data.draw(st.booleans()):  # the whole map through 1×1 windows
        y0 = x0 = ph = pw = 0
        kh = kw = sh = sw = 1
        dh, dw = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
        ho, wo = H, W
    else:
        y0, x0, kh, kw, sh, sw, dh, dw, ph, pw, ho, wo = _draw_windows(data, H)
    assume(nimg * ho * wo * cpg * kh * kw <= 60_000)
    ref = _view_reference(fmap, n0, nimg, c0, cpg, y0, x0, kh, kw, sh, sw, ph, pw, dh, dw, ho,
                          wo)
    nrows = len(ref) + data.draw(st.integers(0, 4))
    rowmap = np.random.default_rng(data.draw(st.integers(0, 2**31))).permutation(nrows)
    rowmap = rowmap[:len(ref)].astype(np.int64)
    want = np.zeros((nrows, ref.shape[1]), dtype=bool)
    want[rowmap] = ref
    got = im2col_cols_map(Bits.of(fmap).words, C, H, W, n0, nimg, c0, cpg, y0, x0, kh, kw, sh,
                          sw, ph, pw, dh, dw, ho, wo, rowmap, nrows)
    np.testing.assert_array_equal(got, pack_rows(want))


weights = st.builds(
    lambda o, c, kh, kw, p, seed: np.random.default_rng(seed).random((o, c, kh, kw)) < p,
    st.integers(1, 5), st.integers(1, 5), st.integers(1, 4), st.integers(1, 20),
    st.sampled_from([0.0, 1.0, 0.1, 0.5]), st.integers(0, 2**31))


@settings(**SETTINGS)
@given(w=weights, data=st.data())
def test_taps_cols(w, data):
    """Row c, bit kcol[t] + o·ostep holds W[o0 + o, c, t] for the kept taps (kcol ≥ 0),
    element by element; filters of more than 64 taps included."""
    nf, cin, kh, kw = w.shape
    khw = kh * kw
    o0 = data.draw(st.integers(0, nf - 1))
    cout = data.draw(st.integers(1, nf - o0))
    nt = data.draw(st.integers(0, khw))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    kcol = np.full(khw, -1, dtype=np.int64)
    ostep = data.draw(st.sampled_from(["inner", "outer"]))
    slots = rng.permutation(nt)
    kcol[rng.permutation(khw)[:nt]] = slots if ostep == "outer" else slots * (cout + 2)
    step = nt if ostep == "outer" else 1
    nbits = max(1, nt * (cout + 2))
    want = np.zeros((cin, nbits), dtype=bool)
    flat = w.reshape(nf, cin, khw)
    for o in range(cout):
        for c in range(cin):
            for t in range(khw):
                if kcol[t] >= 0:
                    want[c, kcol[t] + o * step] = flat[o0 + o, c, t]
    got = taps_cols(Bits.of(w).words, o0, cout, cin, khw, kcol, step, nbits)
    np.testing.assert_array_equal(got, pack_rows(want))


@settings(**SETTINGS)
@given(mat=st.builds(lambda r, k, p, seed: np.random.default_rng(seed).random((r, k)) < p,
                     st.integers(1, 6), st.integers(1, 150),
                     st.sampled_from([0.0, 1.0, 0.1, 0.5]), st.integers(0, 2**31)),
       data=st.data())
def test_gather_runs(mat, data):
    """Row r holds at bits s·ostride the first seglen bits of row rows[r, s] (−1: none)."""
    nr, k = mat.shape
    seglen = data.draw(st.integers(0, k))
    ostride = data.draw(st.integers(seglen, seglen + 70))
    nseg = data.draw(st.integers(0, 4))
    nout = data.draw(st.integers(1, 5))
    rows = np.array(data.draw(st.lists(st.integers(-1, nr - 1), min_size=nout * nseg,
                                       max_size=nout * nseg)),
                    dtype=np.int64).reshape(nout, nseg)
    kout = data.draw(st.integers(max(0, (nseg - 1) * ostride + seglen),
                                 max(0, (nseg - 1) * ostride + seglen) + 70))
    want = np.zeros((len(rows), max(kout, 1)), dtype=bool)
    for r in range(len(rows)):
        for s in range(nseg):
            if rows[r, s] >= 0:
                want[r, s * ostride:s * ostride + seglen] = mat[rows[r, s], :seglen]
    got = gather_runs(pack_rows(mat), rows, seglen, ostride, kout)
    np.testing.assert_array_equal(got, pack_rows(want)[:, :max(1, -(-kout // 64))])


@settings(deadline=None, max_examples=60)
@given(fmap=fmaps, data=st.data())
def test_gather_cols(fmap, data):
    """Any index map (−1 reads zero) over a channel and image range of the packed tensor."""
    N, C, H, W = fmap.shape
    assume(H > 0 and W > 0)
    n0 = data.draw(st.integers(0, N - 1))
    nimg = data.draw(st.integers(1, N - n0))
    c0 = data.draw(st.integers(0, C - 1))
    cc = data.draw(st.integers(1, C - c0))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    iy = rng.integers(-1, H, size=(data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3))))
    ix = rng.integers(-1, W, size=(data.draw(st.integers(1, 70)), data.draw(st.integers(1, 3))))
    got = gather_cols(Bits.of(fmap).words, C, H, W, n0, nimg, c0, cc, iy, ix)
    np.testing.assert_array_equal(got, pack_rows(_window_reference(fmap, n0, nimg, c0, cc, iy,
                                                                   ix)))


flat_masks = st.builds(
    lambda n, p, seed: np.random.default_rng(seed).random(n) < p,
    st.integers(0, 700), st.sampled_from([0.0, 1.0, 0.05, 0.5, 0.95]), st.integers(0, 2**31))


@settings(**SETTINGS)
@given(flat=flat_masks)
def test_trace_words_and_bits(flat):
    """The trace's bytes (``numpy.packbits`` order) repacked word by word give bit i of the
    tensor at bit i % 64 of word i // 64; a bool array packs the same; ones are ones."""
    words = trace_words(PackedMask.from_bool(flat).bits, flat.size)
    assert words.shape == (max(1, -(-flat.size // 64)),)
    for i in range(max(1, -(-flat.size // 64)) * 64):
        assert bool((int(words[i // 64]) >> (i % 64)) & 1) == bool(i < flat.size and flat[i])
    shaped = flat.reshape(1, -1)
    np.testing.assert_array_equal(Bits.of(PackedMask.from_bool(shaped)).words, words)
    np.testing.assert_array_equal(Bits.of(shaped).words, words)
    assert Bits.of(shaped).shape == (1, flat.size)
    ones = Bits.ones((flat.size,))
    np.testing.assert_array_equal(ones.words, Bits.of(np.ones(flat.size, bool)).words)


@settings(**SETTINGS)
@given(flat=flat_masks, data=st.data())
def test_runs_rows_and_popcount(flat, data):
    """Row r holds the runs base[r] + s·stride .. + seglen at bits s·ostride (s < nseg), zero
    elsewhere and in a row whose base is −1; the popcount of the same runs."""
    n = flat.size
    assume(n > 0)
    seglen = data.draw(st.integers(0, min(n, 130)))
    stride = data.draw(st.integers(0, 90))
    nseg = data.draw(st.integers(0, 4))
    ostride = data.draw(st.integers(seglen, seglen + 70))
    assume(nseg == 0 or (nseg - 1) * stride + seglen <= n)
    top = n - ((nseg - 1) * stride + seglen) if nseg else n - 1
    base = np.array(data.draw(st.lists(st.integers(-1, max(top, 0)), min_size=0, max_size=5)),
                    dtype=np.int64)
    need = (nseg - 1) * ostride + seglen if nseg else 0
    kout = data.draw(st.integers(need, need + 130))
    words = Bits.of(flat).words
    got = runs_rows(words, base, stride, nseg, seglen, ostride, kout)
    want = np.zeros((len(base), kout), dtype=bool)
    for r, b0 in enumerate(base):
        for s in range(nseg if b0 >= 0 else 0):
            want[r, s * ostride:s * ostride + seglen] = flat[b0 + s * stride:
                                                             b0 + s * stride + seglen]
    np.testing.assert_array_equal(got, pack_rows(want))
    for b0 in base[base >= 0]:
        assert runs_popcount(words, b0, stride, nseg, seglen) == sum(
            int(flat[b0 + s * stride:b0 + s * stride + seglen].sum()) for s in range(nseg))


packed_mats = st.builds(
    lambda r, k, p, seed: np.random.default_rng(seed).random((r, k)) < p,
    st.integers(1, 6), st.integers(1, 150), st.sampled_from([0.0, 1.0, 0.1, 0.5, 0.9]),
    st.integers(0, 2**31))


@settings(**SETTINGS)
@given(mat=packed_mats, data=st.data())
def test_select_bits(mat, data):
    """The kept rows and k's of a packed matrix, in order, in a larger zero matrix."""
    r, k = mat.shape
    rows = np.array(data.draw(st.lists(st.integers(0, r - 1), max_size=r)), dtype=np.int64)
    cols = np.array(data.draw(st.lists(st.integers(0, k - 1), max_size=k)), dtype=np.int64)
    nrows, kout = len(rows) + data.draw(st.integers(0, 2)), len(cols) + data.draw(
        st.integers(0, 70))
    want = np.zeros((nrows, kout), dtype=bool)
    for i, ri in enumerate(rows):
        for t, c in enumerate(cols):
            want[i, t] = mat[ri, c]
    np.testing.assert_array_equal(select_bits(pack_rows(mat), rows, cols, nrows, kout),
                                  pack_rows(want))


@settings(**SETTINGS)
@given(mat=packed_mats, n=st.integers(1, 4), m=st.integers(2, 70))
def test_condensing_kernels(mat, n, m):
    """N:M slot maps (a group's set bits in order, −1 for empty slots, refused where a group
    holds more than n), the set positions of rows of equal counts, and slot occupancy."""
    assume(n < m)
    r, k = mat.shape
    width = (k // m) * n + min(n, k % m)
    ok, slots = nm_slot_map(pack_rows(mat), k, n, m, width)
    want = np.full((r, width), -1, dtype=np.int64)
    fits = True
    for row in range(r):
        for g0 in range(0, k, m):
            ks = [g0 + c for c in range(min(m, k - g0)) if mat[row, g0 + c]]
            fits &= len(ks) <= n
            want[row, (g0 // m) * n:(g0 // m) * n + min(len(ks), n)] = ks[:n]
    assert ok == fits
    if fits:
        np.testing.assert_array_equal(slots, want)
        np.testing.assert_array_equal(filled_slots(slots), pack_rows(want >= 0))
    per = mat.sum(axis=1)
    same = mat[per == per.max()]
    np.testing.assert_array_equal(set_positions(pack_rows(same), int(per.max())),
                                  np.array([np.flatnonzero(x) for x in same]).reshape(
                                      len(same), int(per.max())))
