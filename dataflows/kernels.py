"""numba kernels of the sparse work model: bit-packed operand streams and the lane scheduler.

A GEMM operand is held as a bit matrix packed along K: ``A`` as (M rows × K bits) and ``B`` as
``Bᵀ`` (N rows × K bits), bit k of a row in word k // 64, bit k % 64 (little-endian). The
operands are built here from the trace's packed masks (``Bits``: a tensor's C-order bits in
words of the same order, repacked from the trace's bytes by ``trace_words``): im2col windows
(``im2col_cols``, ``im2col_cols_map``, ``gather_cols``), strided runs (``runs_rows``),
concatenated rows (``gather_runs``), a filter's taps in a K order (``taps_cols``) and bit
transposes (``transpose_bits``), never through a bool array of the tensor or of the expanded
matrix.

The scheduler (``schedule``) times one *stream*: T steps of L lanes (a PE's L multipliers), with
a bit set where the pair is effectual. Each cycle every lane takes at most one pending element,
in this priority order:

1. its own lane, earliest step in the window (steps t0 .. t0+H);
2. then lookaside: for distance d = 1 .. D, first from lane l − d, then from lane l + d, each
   at the earliest step in the window that still has that element pending.

After the cycle the window's head t0 moves past fully consumed steps, at most H + 1 of them
(the window cannot see further). A stream with no effectual element costs nothing (its count
is known). H = D = 0 is dense execution otherwise (every step costs a cycle); ``H < 0`` means an
unbounded window: ceil(pending / L) cycles, ideal one-sided skipping.
Serial ``@njit(cache=True)`` kernels, one per access pattern.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.jit import njit
from traces.format import PackedMask

_U1 = np.uint64(1)
_Z = np.uint64(0)


@njit(cache=True)
def popcount64(x):
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return int((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@njit(cache=True)
def extract_bits(row, k0, n):
    """``n`` (<= 64) bits of a packed row starting at bit ``k0`` (bits past the row are 0)."""
    w = k0 >> 6
    off = k0 & 63
    nw = row.shape[0]
    if w >= nw:
        return np.uint64(0)
    v = row[w] >> np.uint64(off)
    if off != 0 and off + n > 64 and w + 1 < nw:
        v |= row[w + 1] << np.uint64(64 - off)
    if n < 64:
        v &= (_U1 << np.uint64(n)) - _U1
    return v


@njit(cache=True)
def _drain_small(steps, T, L, H, D):
    """``schedule`` for a window of at most four steps (0 <= H <= 3), held in four scalars:
    rows past H stay zero and take nothing. A window whose lanes hold one element each at most
    (no two steps share a lane) is drained in one cycle and the head moves H + 1 steps.
    One function, long: the window lives in four local scalars, which a call would spill."""
    full = (_U1 << np.uint64(L)) - _U1 if L < 64 else ~_Z
    w0 = steps[0] if T > 0 else _Z
    w1 = steps[1] if H >= 1 and T > 1 else _Z
    w2 = steps[2] if H >= 2 and T > 2 else _Z
    w3 = steps[3] if H >= 3 and T > 3 else _Z
    t0 = 0
    cycles = 0
    while t0 < T:
        cycles += 1
        if (w0 & w1) | ((w0 | w1) & w2) | ((w0 | w1 | w2) & w3) == 0:
            t0 += H + 1
            w0 = steps[t0] if t0 < T else _Z
            w1 = steps[t0 + 1] if H >= 1 and t0 + 1 < T else _Z
            w2 = steps[t0 + 2] if H >= 2 and t0 + 2 < T else _Z
            w3 = steps[t0 + 3] if H >= 3 and t0 + 3 < T else _Z
            continue
        free = full
        take = w0 & free  # own lane, earliest step first
        w0 ^= take
        free ^= take
        take = w1 & free
        w1 ^= take
        free ^= take
        take = w2 & free
        w2 ^= take
        free ^= take
        take = w3 & free
        w3 ^= take
        free ^= take
        d = 1
        while d <= D and free != 0 and (w0 | w1 | w2 | w3) != 0:
            sd = np.uint64(d)
            cand = (w0 << sd) & full & free  # from lane l - d
            w0 ^= cand >> sd
            free ^= cand
            cand = (w1 << sd) & full & free
            w1 ^= cand >> sd
            free ^= cand
            cand = (w2 << sd) & full & free
            w2 ^= cand >> sd
            free ^= cand
            cand = (w3 << sd) & full & free
            w3 ^= cand >> sd
            free ^= cand
            cand = (w0 >> sd) & free  # from lane l + d
            w0 ^= cand << sd
            free ^= cand
            cand = (w1 >> sd) & free
            w1 ^= cand << sd
            free ^= cand
            cand = (w2 >> sd) & free
            w2 ^= cand << sd
            free ^= cand
            cand = (w3 >> sd) & free
            w3 ^= cand << sd
            free ^= cand
            d += 1
        adv = 0
        while adv <= H and t0 < T and w0 == 0:
            nxt = t0 + H + 1
            v = steps[nxt] if nxt < T else _Z
            w0, w1, w2, w3 = w1, w2, w3, _Z
            if H == 0:
                w0 = v
            elif H == 1:
                w1 = v
            elif H == 2:
                w2 = v
            else:
                w3 = v
            t0 += 1
            adv += 1
    return cycles


@njit(cache=True)
def _drain_wide(steps, T, L, H, D, win):
    """``schedule`` for any H >= 0, the window in ``win`` (at least H + 1 words, scratch)."""
    full = (_U1 << np.uint64(L)) - _U1 if L < 64 else ~_Z
    for r in range(H + 1):
        win[r] = steps[r] if r < T else _Z
    t0 = 0
    cycles = 0
    while t0 < T:
        cycles += 1
        seen = _Z
        dup = _Z
        for r in range(H + 1):
            dup |= seen & win[r]
            seen |= win[r]
        if dup == 0:  # one element per lane at most: all taken, the head moves H + 1
            t0 += H + 1
            for r in range(H + 1):
                win[r] = steps[t0 + r] if t0 + r < T else _Z
            continue
        free = full
        for r in range(H + 1):  # own lane, earliest step first
            take = win[r] & free
            win[r] ^= take
            free ^= take
        rest = _Z
        for r in range(H + 1):
            rest |= win[r]
        d = 1
        while d <= D and free != 0 and rest != 0:
            sd = np.uint64(d)
            for r in range(H + 1):  # from lane l - d
                cand = (win[r] << sd) & full & free
                win[r] ^= cand >> sd
                free ^= cand
            for r in range(H + 1):  # from lane l + d
                cand = (win[r] >> sd) & free
                win[r] ^= cand << sd
                free ^= cand
            rest = _Z
            for r in range(H + 1):
                rest |= win[r]
            d += 1
        adv = 0
        while adv <= H and t0 < T and win[0] == 0:
            for r in range(H):
                win[r] = win[r + 1]
            nxt = t0 + H + 1
            win[H] = steps[nxt] if nxt < T else _Z
            t0 += 1
            adv += 1
    return cycles


@njit(cache=True)
def _drain(steps, T, L, H, D, win):
    """Cycles of ``steps[:T]`` (``schedule``'s rule); ``win``: scratch of H + 1 words."""
    if H < 0:
        total = 0
        for t in range(T):
            total += popcount64(steps[t])
        return (total + L - 1) // L
    anyv = _Z
    for t in range(T):
        anyv |= steps[t]
    if anyv == 0:  # an all-zero stream is known empty (its count is zero): nothing to schedule
        return 0
    if H <= 3:
        return _drain_small(steps, T, L, H, D)
    return _drain_wide(steps, T, L, H, D, win)


@njit(cache=True)
def schedule(steps, L, H, D):
    """Cycles to drain a stream of ``steps`` (uint64 lane masks, L lanes) with window H, D."""
    return _drain(steps, steps.shape[0], L, H, D, np.zeros(max(H + 1, 1), dtype=np.uint64))


@njit(cache=True)
def row_stream_lengths(pack, K, L, H, D):
    """Per packed row: cycles of the stream of its K bits taken L at a time (``os``)."""
    S, nw = pack.shape
    T = (K + L - 1) // L
    full = (_U1 << np.uint64(L)) - _U1 if L < 64 else ~_Z
    tail = K - (T - 1) * L  # bits in the last step
    last = (_U1 << np.uint64(tail)) - _U1 if tail < 64 else ~_Z
    out = np.zeros(S, dtype=np.int64)
    steps = np.zeros(T, dtype=np.uint64)
    win = np.zeros(max(H + 1, 1), dtype=np.uint64)
    for s in range(S):
        for t in range(T):
            k0 = t * L
            w = k0 >> 6
            off = k0 & 63
            v = pack[s, w] >> np.uint64(off)
            if off + L > 64 and w + 1 < nw:
                v |= pack[s, w + 1] << np.uint64(64 - off)
            steps[t] = v & full
        if T > 0:
            steps[T - 1] &= last
        out[s] = _drain(steps, T, L, H, D, win)
    return out


@njit(cache=True)
def slice_stream_lengths(pack, K, L, H, D):
    """Per slice k0 = 0, L, 2L, ...: cycles of the stream that runs down all rows of ``pack``
    reading bits k0 .. k0+L-1 (an array row of ``ws``/``is``: its L lanes hold L consecutive
    k)."""
    S, nw = pack.shape
    nslices = (K + L - 1) // L
    out = np.zeros(nslices, dtype=np.int64)
    steps = np.zeros(S, dtype=np.uint64)
    win = np.zeros(max(H + 1, 1), dtype=np.uint64)
    for q in range(nslices):
        k0 = q * L
        w = k0 >> 6
        off = k0 & 63
        n = min(L, K - k0)
        keep = (_U1 << np.uint64(n)) - _U1 if n < 64 else ~_Z
        two = off + n > 64 and w + 1 < nw
        for s in range(S):
            v = pack[s, w] >> np.uint64(off)
            if two:
                v |= pack[s, w + 1] << np.uint64(64 - off)
            steps[s] = v & keep
        out[q] = _drain(steps, S, L, H, D, win)
    return out


@njit(cache=True)
def gathered_stream_lengths(a_pack, slots, empty, L, H, D):
    """Per PE (i, j) of a condensed GEMM (N:M or fan-in weights in slots, ``os``): cycles of
    the stream of column j's slots taken L at a time, slot s pending when bit ``slots[j, s]``
    of A's row i is set; an empty slot (−1) is pending when ``empty``, a padding slot (−2)
    never. (M, columns) int64."""
    M = a_pack.shape[0]
    nc, ks = slots.shape
    T = (ks + L - 1) // L
    out = np.zeros((M, nc), dtype=np.int64)
    steps = np.zeros(T, dtype=np.uint64)
    win = np.zeros(max(H + 1, 1), dtype=np.uint64)
    e = _U1 if empty else _Z
    for j in range(nc):
        for i in range(M):
            for t in range(T):
                v = _Z
                for lane in range(min(L, ks - t * L)):
                    k = slots[j, t * L + lane]
                    if k >= 0:
                        bit = (a_pack[i, k >> 6] >> np.uint64(k & 63)) & _U1
                    else:
                        bit = e if k == -1 else _Z
                    v |= bit << np.uint64(lane)
                steps[t] = v
            out[i, j] = _drain(steps, T, L, H, D, win)
    return out


@njit(cache=True)
def pair_lengths_max_sum(a_pack, b_pack, i0, i1, j0, j1, L):
    """Two-sided (intersection) streams of the PEs of one ``os`` fold: the max and the sum over
    PEs (i, j) of ceil(popcount(A_i & B_j) / L)."""
    W = a_pack.shape[1]
    mx = 0
    sm = 0
    for i in range(i0, i1):
        for j in range(j0, j1):
            c = 0
            for w in range(W):
                c += popcount64(a_pack[i, w] & b_pack[j, w])
            v = (c + L - 1) // L
            sm += v
            if v > mx:
                mx = v
    return mx, sm


@njit(cache=True)
def row_popcounts(pack):
    out = np.zeros(pack.shape[0], dtype=np.int64)
    for s in range(pack.shape[0]):
        c = 0
        for w in range(pack.shape[1]):
            c += popcount64(pack[s, w])
        out[s] = c
    return out


def col_popcounts(pack: np.ndarray, K: int) -> np.ndarray:
    """Per bit position k < K: how many rows have it set."""
    return _col_counts(pack, K)


@njit(cache=True)
def _col_counts(pack, K):
    """``col_popcounts`` by byte counters: bit j of every byte of a word (8 bit positions
    8b + j) is added into the bytes of counter word (j, w), 255 rows at most before the bytes
    are emptied into the counts. Eight shift-mask-adds a word, no branch on the bits, one pass
    over the rows in memory order; cheaper than transposing the rows (``transpose_bits``)
    and counting the transpose's rows."""
    R, nw = pack.shape
    out = np.zeros(max(K, nw * 64), dtype=np.int64)
    acc = np.zeros((8, nw), dtype=np.uint64)
    ones = np.uint64(0x0101010101010101)
    r0 = 0
    while r0 < R:
        r1 = min(R, r0 + 255)
        for r in range(r0, r1):
            row = pack[r]
            for j in range(8):
                sj = np.uint64(j)
                a = acc[j]
                for w in range(nw):  # no dependence between words: vectorized
                    a[w] += (row[w] >> sj) & ones
        for j in range(8):
            for w in range(nw):
                x = acc[j, w]
                for b in range(8):
                    out[(w << 6) + 8 * b + j] += (x >> np.uint64(8 * b)) & np.uint64(255)
                acc[j, w] = _Z
        r0 = r1
    return out[:K].copy()


@njit(cache=True)
def range_popcounts(pack, K, width):
    """Per row, the set bits in each range of ``width`` consecutive k: (rows, ceil(K/width))."""
    nb = (K + width - 1) // width
    out = np.zeros((pack.shape[0], nb), dtype=np.int64)
    for s in range(pack.shape[0]):
        row = pack[s]
        for b in range(nb):
            k0 = b * width
            c = 0
            k = k0
            end = min(K, k0 + width)
            while k < end:
                n = min(64, end - k)
                c += popcount64(extract_bits(row, k, n))
                k += n
            out[s, b] = c
    return out


@njit(cache=True)
def transpose_bits(pack, nbits):
    """The bit transpose of ``pack`` (R rows × ``nbits`` bits): ``nbits`` rows × R bits, by
    64 × 64 blocks (three-swap recursive halving, Hacker's Delight 7-3)."""
    R, nw = pack.shape
    ow = (R + 63) >> 6
    out = np.zeros((nbits, ow), dtype=np.uint64)
    blk = np.zeros(64, dtype=np.uint64)
    for bw in range(nw):  # 64 input bits -> 64 output rows
        for br in range(ow):  # 64 input rows -> one output word
            r0 = br << 6
            nr = min(64, R - r0)
            anyv = _Z
            for t in range(nr):
                blk[t] = pack[r0 + t, bw]
                anyv |= blk[t]
            if anyv == 0:
                continue
            for t in range(nr, 64):
                blk[t] = _Z
            j = 32
            m = np.uint64(0x00000000FFFFFFFF)
            while j != 0:
                sj = np.uint64(j)
                k = 0
                while k < 64:  # swap the off-diagonal j × j blocks of rows k and k + j
                    t = ((blk[k] >> sj) ^ blk[k + j]) & m
                    blk[k] ^= t << sj
                    blk[k + j] ^= t
                    k = (k + j + 1) & ~j
                j >>= 1
                m ^= m << np.uint64(j)
            b0 = bw << 6
            for t in range(min(64, nbits - b0)):
                out[b0 + t, br] = blk[t]
    return out


@njit(cache=True)
def _put_bits(row, k, v, cnt):
    """OR the ``cnt`` (<= 64) bits ``v`` into a packed row at bit ``k``."""
    w = k >> 6
    off = k & 63
    row[w] |= v << np.uint64(off)
    if off + cnt > 64:
        row[w + 1] |= v >> np.uint64(64 - off)


@njit(cache=True)
def _phase_rows(src, C, H, W, n0, nimg, c0, cpg, y0, x0, sw, pw, nq):
    """Each (n, c, y) row of the view ``fmap[n0:n0+nimg, c0:c0+cpg, y0:, x0:]`` of a packed
    (N, C, H, W) tensor (``src``: its words) as ``sw`` bit rows, one per phase p: bit q of
    phase p is x = q·sw + p − pw (left padding at non-negative positions, zero), so that a
    strided window column is a run of consecutive bits: (nimg, cpg, H − y0, sw, words) uint64.
    The row is read 64 bits at a time: a stride-1 row is the run itself moved by ``pw``; a
    strided one sends each set bit x to phase (x + pw) % sw, bit (x + pw) // sw."""
    hv, wv = max(0, H - y0), max(0, W - x0)
    words = (nq + 63) // 64 + 1  # one spare zero word: a run may be read past the row
    out = np.zeros((nimg, cpg, hv, sw, words), dtype=np.uint64)
    for n in range(nimg):
        for c in range(cpg):
            for y in range(hv):
                start = (((n0 + n) * C + c0 + c) * H + y0 + y) * W + x0
                t = 0
                while t < wv:
                    cnt = min(64, wv - t)
                    v = extract_bits(src, start + t, cnt)
                    if v != 0 and sw == 1:
                        _put_bits(out[n, c, y, 0], t + pw, v, cnt)
                    while v != 0 and sw > 1:
                        low = v & (~v + _U1)
                        x = t + popcount64(low - _U1) + pw
                        q = x // sw
                        out[n, c, y, x % sw, q >> 6] |= _U1 << np.uint64(q & 63)
                        v ^= low
                    t += cnt
    return out


@njit(cache=True)
def im2col_cols(src, C, H, W, n0, nimg, c0, cpg, y0, x0, kh, kw, sh, sw, ph, pw, dh, dw, ho,
                wo):
    """Pack the transposed im2col matrix of the view ``fmap[n0:n0+nimg, c0:c0+cpg, y0:, x0:]``
    of a packed (N, C, H, W) feature map (``src``: its words): rows (c, i, j), bits (n, oh,
    ow) — the bwd_weight B operand (as Bᵀ). Padding and windows past the map read zeros.
    Along ow a window column reads x = ow·sw + j·dw − pw: consecutive bits of one phase of the
    phase-split feature-map row, moved up to 64 at a time."""
    hv = max(0, H - y0)
    Kb = nimg * ho * wo
    out = np.zeros((cpg * kh * kw, max(1, (Kb + 63) // 64)), dtype=np.uint64)
    # phase bits a window may read: the map with its padding, or past it
    nq = max((max(0, W - x0) + 2 * pw + sw - 1) // sw, ((kw - 1) * dw) // sw + wo)
    rowsb = _phase_rows(src, C, H, W, n0, nimg, c0, cpg, y0, x0, sw, pw, nq)
    for c in range(cpg):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                p = (j * dw) % sw
                q0 = (j * dw) // sw
                for n in range(nimg):
                    for oh in range(ho):
                        y = oh * sh - ph + i * dh
                        if y < 0 or y >= hv:
                            continue
                        base = (n * ho + oh) * wo
                        t = 0
                        while t < wo:
                            cnt = min(64, wo - t)
                            q = q0 + t  # bits q .. q+cnt-1 of the phase row (the spare word
                            sq = q & 63  # keeps q >> 6 + 1 inside it)
                            v = rowsb[n, c, y, p, q >> 6] >> np.uint64(sq)
                            if sq != 0:
                                v |= rowsb[n, c, y, p, (q >> 6) + 1] << np.uint64(64 - sq)
                            if cnt < 64:
                                v &= (_U1 << np.uint64(cnt)) - _U1
                            if v != 0:
                                _put_bits(out[r], base + t, v, cnt)
                            t += cnt
    return out


@njit(cache=True)
def im2col_rows(src, C, H, W, n0, nimg, c0, cpg, y0, x0, kh, kw, sh, sw, ph, pw, dh, dw, ho,
                wo):
    """Pack the im2col matrix of the same view as ``im2col_cols``: rows (n, oh, ow), bits
    (c, i, j) — the fwd A operand; the bit transpose of ``im2col_cols``."""
    cols = im2col_cols(src, C, H, W, n0, nimg, c0, cpg, y0, x0, kh, kw, sh, sw, ph, pw, dh, dw,
                       ho, wo)
    return transpose_bits(cols, nimg * ho * wo)


@njit(cache=True, inline="always")
def _even_bits(v):
    """Bits 0, 2, 4, ... of ``v`` packed into its low 32 bits."""
    v &= np.uint64(0x5555555555555555)
    v = (v | (v >> np.uint64(1))) & np.uint64(0x3333333333333333)
    v = (v | (v >> np.uint64(2))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    v = (v | (v >> np.uint64(4))) & np.uint64(0x00FF00FF00FF00FF)
    v = (v | (v >> np.uint64(8))) & np.uint64(0x0000FFFF0000FFFF)
    return (v | (v >> np.uint64(16))) & np.uint64(0x00000000FFFFFFFF)


@njit(cache=True, inline="always")
def _or_at(dst, r, k, v, cnt):
    """OR the ``cnt`` (<= 64) bits ``v`` into row ``r`` of a packed matrix at bit ``k``."""
    w = k >> 6
    off = k & 63
    dst[r, w] |= v << np.uint64(off)
    if off + cnt > 64:
        dst[r, w + 1] |= v >> np.uint64(64 - off)


@njit(cache=True, inline="always")
def _bits_at(src, r, k, cnt):
    """``cnt`` (<= 64) bits of row ``r`` of a packed matrix from bit ``k``; the row holds a
    spare zero word past any bit read, so no bound is checked."""
    w = k >> 6
    off = k & 63
    v = src[r, w] >> np.uint64(off)
    if off != 0:
        v |= src[r, w + 1] << np.uint64(64 - off)
    if cnt < 64:
        v &= (_U1 << np.uint64(cnt)) - _U1
    return v


@njit(cache=True, inline="always")
def _plane_phases(src, start, wv, sw, pw, out):
    """One row of ``wv`` bits of a packed tensor (from bit ``start``) as ``sw`` phase rows in
    ``out`` (zeroed by the caller): bit q of phase p is x = q·sw + p − pw (``_phase_rows``'
    layout). Stride 1 moves the run, stride 2 splits each word into its even and odd bits,
    larger strides go bit by bit over the set bits."""
    t = 0
    while t < wv:
        cnt = min(64, wv - t)
        v = extract_bits(src, start + t, cnt)
        if v != 0:
            if sw == 1:
                _or_at(out, 0, t + pw, v, cnt)
            elif sw == 2:
                x = t + pw  # bit k of v is x + k: phase (x + k) % 2, bit (x + k) // 2
                q = x >> 1
                if x & 1 == 0:
                    _or_at(out, 0, q, _even_bits(v), 32)
                    _or_at(out, 1, q, _even_bits(v >> _U1), 32)
                else:
                    _or_at(out, 1, q, _even_bits(v), 32)
                    _or_at(out, 0, q + 1, _even_bits(v >> _U1), 32)
            else:
                while v != 0:
                    low = v & (~v + _U1)
                    x = t + popcount64(low - _U1) + pw
                    q = x // sw
                    out[x % sw, q >> 6] |= _U1 << np.uint64(q & 63)
                    v ^= low
        t += cnt


@njit(cache=True, inline="always")
def _copy_run(dst, r, d, src, sr, k, n):
    """OR the ``n`` bits of row ``sr`` of packed matrix ``src`` from bit ``k`` into row ``r``
    of ``dst`` at bit ``d``, 64 at a time and with no branch on the data: ``src``'s rows hold
    a spare zero word past any bit read (a shift by 64 is made of two, so that an aligned word
    takes nothing from its neighbour); a word past ``dst``'s row is never written."""
    last = dst.shape[1] - 1
    t = 0
    while t < n:
        cnt = min(64, n - t)
        ks = k + t
        off = np.uint64(ks & 63)
        v = (src[sr, ks >> 6] >> off) | ((src[sr, (ks >> 6) + 1] << _U1) << (np.uint64(63) - off))
        v &= ~_Z >> np.uint64(64 - cnt)
        kd = d + t
        w = kd >> 6
        off = np.uint64(kd & 63)
        dst[r, w] |= v << off
        if w < last:
            dst[r, w + 1] |= (v >> _U1) >> (np.uint64(63) - off)
        t += cnt


@njit(cache=True)
def _whole_planes(src, C, HW, n0, nimg, c, out, r):
    """Row ``r`` of ``out``: plane c of each of the ``nimg`` images from n0 of a packed
    (N, C, H, W) tensor, one after another (the windows of a 1×1 stride-1 convolution)."""
    for n in range(nimg):
        plane = ((n0 + n) * C + c) * HW
        for t in range(0, HW, 64):
            v = extract_bits(src, plane + t, min(64, HW - t))
            if v != 0:
                _or_at(out, r, n * HW + t, v, min(64, HW - t))


@njit(cache=True)
def im2col_cols_map(src, C, H, W, n0, nimg, c0, cpg, y0, x0, kh, kw, sh, sw, ph, pw, dh, dw,
                    ho, wo, rowmap, nrows):
    """``im2col_cols`` with row (c, i, j) placed at row ``rowmap[(c·kh + i)·kw + j]`` of an
    ``nrows``-row matrix, the others zero (a K order with padding rows: channel_inner).
    Channel by channel, in runs: per image, kernel column j and row phase py, a block holds
    the ``wo`` bits each padded input row yy ≡ py (mod sh) gives that column (a stride-1
    column is the row's bits in place, a strided one a run of its phase rows); the (n, oh, ow)
    bits of row (c, i, j) are one run of image n's block (j, (i·dh) mod sh) from its row
    (i·dh) // sh. 1×1 stride-1 windows over the whole map are its planes (``_whole_planes``)."""
    hv, wv = max(0, H - y0), max(0, W - x0)
    per = ho * wo
    out = np.zeros((nrows, max(1, (nimg * per + 63) // 64)), dtype=np.uint64)
    if nimg == 0 or per == 0:
        return out
    if (kh == 1 and kw == 1 and sh == 1 and sw == 1 and ph == 0 and pw == 0 and y0 == 0
            and x0 == 0 and ho == H and wo == W):
        for c in range(cpg):
            _whole_planes(src, C, H * W, n0, nimg, c0 + c, out, rowmap[c])
        return out
    yp = ((ho - 1) * sh + (kh - 1) * dh + sh) // sh  # rows of a block (padded rows / sh)
    nb = kw * sh
    blocks = np.zeros((nimg * nb, (yp * wo + 63) // 64 + 1), dtype=np.uint64)
    nq = max((wv + 2 * pw + sw - 1) // sw, ((kw - 1) * dw) // sw + wo)
    phases = np.zeros((sw, (nq + 63) // 64 + 1), dtype=np.uint64)
    used = np.zeros(sh, dtype=np.bool_)  # the row phases some tap i reads
    for i in range(kh):
        used[(i * dh) % sh] = True
    jq = np.arange(kw) * dw  # tap j's phase row (jq % sw) and first bit there (jq // sw)
    for c in range(cpg):
        blocks[:, :] = _Z
        for n in range(nimg):
            plane = ((n0 + n) * C + c0 + c) * H * W
            for py in range(sh):
                for yq in range(yp if used[py] else 0):
                    y = yq * sh + py - ph
                    if y >= hv:
                        break
                    if y < 0:
                        continue
                    row = plane + (y0 + y) * W + x0
                    if sw > 1:
                        phases[:, :] = _Z
                        _plane_phases(src, row, wv, sw, pw, phases)
                    for j in range(kw):
                        b, x = n * nb + j * sh + py, j * dw - pw
                        if sw > 1:
                            _copy_run(blocks, b, yq * wo, phases, jq[j] % sw, jq[j] // sw, wo)
                            continue
                        for t in range(max(0, x), min(wv, x + wo), 64):  # x = ow + j·dw − pw
                            cnt = min(64, min(wv, x + wo) - t)
                            v = extract_bits(src, row + t, cnt)
                            if v != 0:
                                _or_at(blocks, b, yq * wo + t - x, v, cnt)
        for i in range(kh):
            bi, si = (i * dh) % sh, ((i * dh) // sh) * wo  # tap i's block row phase, first bit
            for j in range(kw):
                r = rowmap[(c * kh + i) * kw + j]
                for n in range(nimg):
                    _copy_run(out, r, n * per, blocks, n * nb + j * sh + bi, si, per)
    return out


@njit(cache=True)
def taps_cols(src, o0, cout, cin, khw, kcol, ostep, nbits):
    """Filters o0 .. o0+cout of a packed (O, cin, kh, kw) weight tensor (``src``: its words)
    laid out by kernel position: rows the input channels, bit ``kcol[t] + o·ostep`` of row c
    set where W[o0 + o, c] holds its tap t = i·kw + j; a tap with ``kcol[t] < 0`` is left out.
    A transposed convolution's rotated filters, in any K order (``kcol``, ``ostep``) and any
    subset of taps (an output phase's). Reads each filter's bits in order, moves only the set
    ones. (cin, ceil(nbits / 64)) uint64."""
    out = np.zeros((cin, (nbits + 63) >> 6), dtype=np.uint64)
    nch = (khw + 63) >> 6
    keep = np.zeros(nch, dtype=np.uint64)  # the taps kept, 64 at a time
    for t in range(khw):
        if kcol[t] >= 0:
            keep[t >> 6] |= _U1 << np.uint64(t & 63)
    for o in range(cout):
        for c in range(cin):
            pos = ((o0 + o) * cin + c) * khw
            for h in range(nch):
                v = extract_bits(src, pos + (h << 6), min(64, khw - (h << 6))) & keep[h]
                while v != 0:
                    low = v & (~v + _U1)
                    k = kcol[(h << 6) + popcount64(low - _U1)] + o * ostep
                    out[c, k >> 6] |= _U1 << np.uint64(k & 63)
                    v ^= low
    return out


@njit(cache=True)
def gather_runs(src, rows, seglen, ostride, kout):
    """Rows of ``kout`` bits, each a concatenation of packed rows of ``src``: row r holds at
    bits s·``ostride`` .. + ``seglen`` the first ``seglen`` bits of row ``rows[r, s]`` of
    ``src`` (none where it is −1), the rest zero; moved 64 bits at a time. (R, ceil(kout /
    64)) uint64."""
    R, nseg = rows.shape
    out = np.zeros((R, max(1, (kout + 63) >> 6)), dtype=np.uint64)
    for r in range(R):
        for s in range(nseg):
            sr = rows[r, s]
            if sr < 0:
                continue
            o = s * ostride
            t = 0
            while t < seglen:
                cnt = min(64, seglen - t)
                v = extract_bits(src[sr], t, cnt)
                if v != 0:
                    _or_at(out, r, o + t, v, cnt)
                t += cnt
    return out


@njit(cache=True)
def gather_cols(src, C, H, W, n0, nimg, c0, cc, iy, ix):
    """Windows of any index map over the view ``fmap[n0:n0+nimg, c0:c0+cc]`` of a packed (N, C,
    H, W) tensor: rows (c, i, j), bits (n, p, q), bit set where ``fmap[n, c, iy[p, i],
    ix[q, j]]`` is (an index −1 reads a zero: padding or an inserted zero). One bit at a time:
    for the maps the strided ``im2col_cols`` does not cover (a dilated transposed convolution,
    the zero-inserted gradient of a strided one)."""
    P, kh = iy.shape
    Q, kw = ix.shape
    Kb = nimg * P * Q
    out = np.zeros((cc * kh * kw, max(1, (Kb + 63) // 64)), dtype=np.uint64)
    for c in range(cc):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                for n in range(nimg):
                    base = ((n0 + n) * C + c0 + c) * H * W
                    for p in range(P):
                        y = iy[p, i]
                        if y < 0:
                            continue
                        for q in range(Q):
                            x = ix[q, j]
                            if x < 0:
                                continue
                            pos = base + y * W + x
                            if (src[pos >> 6] >> np.uint64(pos & 63)) & _U1:
                                k = (n * P + p) * Q + q
                                out[r, k >> 6] |= _U1 << np.uint64(k & 63)
    return out


@njit(cache=True)
def runs_rows(src, base, stride, nseg, seglen, ostride, kout):
    """Rows of ``kout`` bits from runs of a packed bit stream (``src``: words): row r holds, at
    bits s·``ostride`` .. s·``ostride`` + ``seglen``, the bits ``base[r]`` + s·``stride`` ..
    + ``seglen`` of ``src`` for s < ``nseg``; the rest is zero, a row whose base is −1 all
    zero. Any strided view of a packed tensor whose innermost dimension is a run (or a run of
    one bit) is one call; moved up to 64 bits at a time. (rows, ceil(kout / 64)) uint64."""
    R = base.shape[0]
    out = np.zeros((R, max(1, (kout + 63) >> 6)), dtype=np.uint64)
    for r in range(R):
        b0 = base[r]
        if b0 < 0:
            continue
        for s in range(nseg):
            pos = b0 + s * stride
            o = s * ostride
            t = 0
            while t < seglen:
                cnt = min(64, seglen - t)
                v = extract_bits(src, pos + t, cnt)
                if v != 0:
                    _put_bits(out[r], o + t, v, cnt)
                t += cnt
    return out


@njit(cache=True)
def runs_popcount(src, start, stride, nseg, seglen):
    """Set bits in the runs ``start`` + s·``stride`` .. + ``seglen`` (s < ``nseg``) of a
    packed bit stream."""
    c = 0
    for s in range(nseg):
        pos = start + s * stride
        t = 0
        while t < seglen:
            cnt = min(64, seglen - t)
            c += popcount64(extract_bits(src, pos + t, cnt))
            t += cnt
    return c


@njit(cache=True)
def select_bits(pack, rows, cols, nrows, kout):
    """Rows ``rows`` of a packed matrix with its bits at ``cols`` (in that order), in a matrix
    of ``nrows`` × ``kout`` bits, zero past them: the kept rows and k's of a reduced GEMM."""
    out = np.zeros((nrows, max(1, (kout + 63) >> 6)), dtype=np.uint64)
    for i in range(rows.shape[0]):
        src = pack[rows[i]]
        for t in range(cols.shape[0]):
            k = cols[t]
            if (src[k >> 6] >> np.uint64(k & 63)) & _U1:
                out[i, t >> 6] |= _U1 << np.uint64(t & 63)
    return out


@njit(cache=True)
def set_positions(pack, per):
    """Per row of a packed matrix whose rows each hold ``per`` set bits: their positions in
    increasing order, (rows, per) int64."""
    out = np.zeros((pack.shape[0], per), dtype=np.int64)
    for r in range(pack.shape[0]):
        c = 0
        for w in range(pack.shape[1]):
            v = pack[r, w]
            while v != 0 and c < per:
                low = v & (~v + _U1)
                out[r, c] = (w << 6) + popcount64(low - _U1)
                c += 1
                v ^= low
    return out


@njit(cache=True)
def nm_slot_map(pack, K, n, m, width):
    """The slots of an N:M-condensed operand (a packed matrix, K bits a row): per row, the k of
    each of the n slots of every group of m consecutive k's (the group's set bits in order),
    −1 for an empty slot; (True, (rows, width) int64), or (False, ...) where a group holds more
    than n set bits."""
    out = np.full((pack.shape[0], width), -1, dtype=np.int64)
    for r in range(pack.shape[0]):
        grp = -1
        cnt = 0
        for w in range(pack.shape[1]):
            v = pack[r, w]
            while v != 0:
                low = v & (~v + _U1)
                k = (w << 6) + popcount64(low - _U1)
                v ^= low
                if k >= K:
                    break
                if k // m != grp:
                    grp = k // m
                    cnt = 0
                if cnt >= n:
                    return False, out
                out[r, grp * n + cnt] = k
                cnt += 1
    return True, out


@njit(cache=True)
def filled_slots(slots):
    """A slot map (columns × K' int64, −1 empty, −2 padding) packed along K': bit s of row j
    set where slot s holds a weight."""
    R, ks = slots.shape
    out = np.zeros((R, max(1, (ks + 63) >> 6)), dtype=np.uint64)
    for r in range(R):
        for t in range(ks):
            if slots[r, t] >= 0:
                out[r, t >> 6] |= _U1 << np.uint64(t & 63)
    return out


@njit(cache=True)
def trace_words(bits, nbits):
    """The words of ``nbits`` bits stored as ``numpy.packbits`` bytes (the trace format: bit i
    is bit 7 − i % 8 of byte i // 8) in the kernels' order (bit i is bit i % 64 of word
    i // 64): eight bytes to a word, the bits of each byte reversed in place. Nothing is
    unpacked; bits past ``nbits`` are cleared."""
    nw = max(1, (nbits + 63) >> 6)
    out = np.zeros(nw, dtype=np.uint64)
    nb = min(bits.shape[0], (nbits + 7) >> 3)
    m1 = np.uint64(0x5555555555555555)
    m2 = np.uint64(0x3333333333333333)
    m4 = np.uint64(0x0F0F0F0F0F0F0F0F)
    for w in range(nw):
        v = _Z
        for b in range(min(8, nb - 8 * w)):
            v |= np.uint64(bits[8 * w + b]) << np.uint64(8 * b)
        v = ((v >> np.uint64(1)) & m1) | ((v & m1) << np.uint64(1))
        v = ((v >> np.uint64(2)) & m2) | ((v & m2) << np.uint64(2))
        v = ((v >> np.uint64(4)) & m4) | ((v & m4) << np.uint64(4))
        out[w] = v
    tail = nbits & 63
    if tail:
        out[nw - 1] &= (_U1 << np.uint64(tail)) - _U1
    return out


@dataclass(frozen=True)
class Bits:
    """A boolean tensor held packed: its ``shape`` and its C-order bits as ``words`` (bit i is
    bit i % 64 of word i // 64), what the operand builders read. From the trace's packed
    masks (``traces.format.PackedMask``) by ``trace_words``, never through a bool array."""

    shape: tuple[int, ...]
    words: np.ndarray

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @staticmethod
    def of(mask: Any) -> Bits | None:
        """``mask`` as ``Bits``: a ``PackedMask`` (repacked word by word), a bool array
        (packed; for callers that hold one) or ``Bits``; None stays None (dense)."""
        if mask is None or isinstance(mask, Bits):
            return mask
        if isinstance(mask, PackedMask):
            return Bits(tuple(mask.shape), trace_words(mask.bits, mask.numel))
        m = np.ascontiguousarray(mask, dtype=bool)
        b = np.packbits(m.reshape(-1), bitorder="little")
        buf = np.zeros(max(1, -(-b.size // 8)) * 8, dtype=np.uint8)
        buf[: b.size] = b
        return Bits(tuple(int(s) for s in m.shape), buf.view("<u8").astype(np.uint64))

    @staticmethod
    def ones(shape: tuple[int, ...]) -> Bits:
        """An all-ones tensor (a dense operand held as ones)."""
        n = math.prod(shape)
        words = np.full(max(1, -(-n // 64)), np.uint64(0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
        if n % 64:
            words[-1] = np.uint64((1 << (n % 64)) - 1)
        if n == 0:
            words[:] = 0
        return Bits(tuple(int(s) for s in shape), words)


def pack_rows(mask2d: np.ndarray) -> np.ndarray:
    """Pack a (rows, K) bool matrix along K into (rows, ceil(K/64)) uint64."""
    rows, k = mask2d.shape
    words = max(1, -(-k // 64))
    b = np.packbits(np.ascontiguousarray(mask2d, dtype=bool), axis=1, bitorder="little")
    out = np.zeros((rows, words * 8), dtype=np.uint8)
    out[:, : b.shape[1]] = b
    return out.view(np.uint64)
