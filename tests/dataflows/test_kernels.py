"""The lane scheduler and the bit-packing kernels against slow, obviously-correct references."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.kernels import (
    col_popcounts,
    extract_bits,
    gathered_stream_lengths,
    im2col_cols,
    im2col_rows,
    pack_rows,
    pair_lengths_max_sum,
    row_popcounts,
    row_stream_lengths,
    schedule,
    slice_stream_lengths,
    transpose_bits,
)

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


def _im2col_reference(fmap, c0, cpg, kh, kw, s, p, d, ho, wo):
    n_, _, h, w = fmap.shape
    rows = []
    for n in range(n_):
        for oh in range(ho):
            for ow in range(wo):
                row = []
                for c in range(cpg):
                    for i in range(kh):
                        for j in range(kw):
                            y, x = oh * s[0] - p[0] + i * d[0], ow * s[1] - p[1] + j * d[1]
                            inside = 0 <= y < h and 0 <= x < w
                            row.append(bool(inside and fmap[n, c0 + c, y, x]))
                rows.append(row)
    return np.array(rows, dtype=bool)


@settings(deadline=None, max_examples=40)
@given(n=st.integers(1, 2), g=st.sampled_from([1, 2]), cpg=st.integers(1, 3),
       k=st.integers(1, 3), s=st.integers(1, 2), p=st.integers(0, 1), d=st.integers(1, 2),
       hw=st.integers(3, 7), seed=st.integers(0, 99))
def test_im2col_kernels(n, g, cpg, k, s, p, d, hw, seed):
    span = d * (k - 1) + 1
    if hw + 2 * p < span:
        return
    fmap = np.random.default_rng(seed).random((n, g * cpg, hw, hw)) < 0.5
    ho = wo = (hw + 2 * p - span) // s + 1
    for grp in range(g):
        ref = _im2col_reference(fmap, grp * cpg, cpg, k, k, (s, s), (p, p), (d, d), ho, wo)
        got = im2col_rows(fmap, grp * cpg, cpg, k, k, s, s, p, p, d, d, ho, wo)
        np.testing.assert_array_equal(got, pack_rows(ref))
        got_t = im2col_cols(fmap, grp * cpg, cpg, k, k, s, s, p, p, d, d, ho, wo)
        np.testing.assert_array_equal(got_t, pack_rows(ref.T))


@settings(deadline=None, max_examples=30)
@given(n=st.integers(1, 2), cpg=st.integers(1, 2), kh=st.integers(1, 3), kw=st.integers(1, 5),
       sh=st.integers(1, 3), sw=st.integers(1, 3), ph=st.integers(0, 2), pw=st.integers(0, 3),
       dh=st.integers(1, 2), dw=st.integers(1, 3), h=st.integers(1, 5), w=st.integers(1, 150),
       p=st.floats(0, 1), seed=st.integers(0, 99))
def test_im2col_kernels_wide_rows(n, cpg, kh, kw, sh, sw, ph, pw, dh, dw, h, w, p, seed):
    """Asymmetric geometry and feature-map rows longer than a word (window runs that cross
    words on both sides), strides and dilations up to 3."""
    sy, sx = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if h + 2 * ph < sy or w + 2 * pw < sx:
        return
    fmap = np.random.default_rng(seed).random((n, cpg, h, w)) < p
    ho, wo = (h + 2 * ph - sy) // sh + 1, (w + 2 * pw - sx) // sw + 1
    ref = np.zeros((n * ho * wo, cpg * kh * kw), dtype=bool)
    pad = np.zeros((n, cpg, h + 2 * ph, w + 2 * pw), dtype=bool)
    pad[:, :, ph:ph + h, pw:pw + w] = fmap
    for i in range(kh):
        for j in range(kw):
            win = pad[:, :, i * dh::sh, j * dw::sw][:, :, :ho, :wo]  # (n, c, ho, wo)
            ref[:, np.arange(cpg) * kh * kw + i * kw + j] = win.transpose(0, 2, 3, 1).reshape(
                -1, cpg)
    np.testing.assert_array_equal(im2col_rows(fmap, 0, cpg, kh, kw, sh, sw, ph, pw, dh, dw, ho,
                                              wo), pack_rows(ref))
    np.testing.assert_array_equal(im2col_cols(fmap, 0, cpg, kh, kw, sh, sw, ph, pw, dh, dw, ho,
                                              wo), pack_rows(ref.T))
