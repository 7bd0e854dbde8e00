"""numba kernels of the sparse work model: bit-packed operand streams and the lane scheduler.

A GEMM operand is held as a bit matrix packed along K: ``A`` as (M rows × K bits) and ``B`` as
``Bᵀ`` (N rows × K bits), bit k of a row in word k // 64, bit k % 64 (little-endian). im2col is
done here, from the feature-map mask, without building the expanded matrix first.

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

import numpy as np
from numba import njit

_U1 = np.uint64(1)


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
def schedule(steps, L, H, D):
    """Cycles to drain a stream of ``steps`` (uint64 lane masks, L lanes) with window H, D."""
    T = steps.shape[0]
    if H < 0:
        total = 0
        for t in range(T):
            total += popcount64(steps[t])
        return (total + L - 1) // L
    empty = True
    for t in range(T):
        if steps[t] != 0:
            empty = False
            break
    if empty:  # an all-zero stream is known empty (its count is zero): nothing to schedule
        return 0
    full = (_U1 << np.uint64(L)) - _U1 if L < 64 else ~np.uint64(0)
    win = np.zeros(H + 1, dtype=np.uint64)
    for r in range(H + 1):
        if r < T:
            win[r] = steps[r]
    t0 = 0
    cycles = 0
    while t0 < T:
        free = full
        for r in range(H + 1):  # own lane, earliest step first
            take = win[r] & free
            win[r] ^= take
            free ^= take
        rest = np.uint64(0)
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
            rest = np.uint64(0)
            for r in range(H + 1):
                rest |= win[r]
            d += 1
        cycles += 1
        adv = 0
        while adv <= H and t0 < T and win[0] == 0:
            for r in range(H):
                win[r] = win[r + 1]
            nxt = t0 + H + 1
            win[H] = steps[nxt] if nxt < T else np.uint64(0)
            t0 += 1
            adv += 1
    return cycles


@njit(cache=True)
def row_stream_lengths(pack, K, L, H, D):
    """Per packed row: cycles of the stream of its K bits taken L at a time (``os``)."""
    S = pack.shape[0]
    T = (K + L - 1) // L
    out = np.zeros(S, dtype=np.int64)
    steps = np.zeros(T, dtype=np.uint64)
    for s in range(S):
        row = pack[s]
        for t in range(T):
            steps[t] = extract_bits(row, t * L, min(L, K - t * L))
        out[s] = schedule(steps, L, H, D)
    return out


@njit(cache=True)
def slice_stream_length(pack, k0, K, L, H, D):
    """Cycles of the stream that runs down all rows of ``pack`` reading bits k0 .. k0+L-1
    (an array row of ``ws``/``is``: its L lanes hold L consecutive k)."""
    S = pack.shape[0]
    n = min(L, K - k0)
    if n <= 0:
        return 0
    steps = np.zeros(S, dtype=np.uint64)
    for s in range(S):
        steps[s] = extract_bits(pack[s], k0, n)
    return schedule(steps, L, H, D)


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


@njit(cache=True)
def col_popcounts(pack, K):
    """Per bit position k < K: how many rows have it set."""
    out = np.zeros(K, dtype=np.int64)
    for s in range(pack.shape[0]):
        for k in range(K):
            if (pack[s, k >> 6] >> np.uint64(k & 63)) & _U1:
                out[k] += 1
    return out


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
def _pack_fmap_rows(fmap, c0, cpg, pw):
    """Each (n, c, y) row of the group's channels as bits along x, shifted right by ``pw`` so
    that left padding sits at non-negative positions: (N, cpg, H, words) uint64."""
    N, _, H, Wd = fmap.shape
    words = (Wd + 2 * pw + 63) // 64 + 1
    out = np.zeros((N, cpg, H, words), dtype=np.uint64)
    for n in range(N):
        for c in range(cpg):
            for y in range(H):
                for x in range(Wd):
                    if fmap[n, c0 + c, y, x]:
                        b = x + pw
                        out[n, c, y, b >> 6] |= _U1 << np.uint64(b & 63)
    return out


@njit(cache=True)
def im2col_rows(fmap, c0, cpg, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):
    """Pack the im2col matrix of group channels c0 .. c0+cpg of ``fmap`` (N, C, H, W bool):
    rows (n, oh, ow), bits (c, i, j) — the fwd A operand. Padding is zero. With dilation 1 along
    x a window row is ``kw`` consecutive bits of the packed feature-map row, moved in one go."""
    N, _, H, Wd = fmap.shape
    K = cpg * kh * kw
    W = (K + 63) // 64
    out = np.zeros((N * ho * wo, W), dtype=np.uint64)
    if dw == 1 and kw <= 64:
        rowsb = _pack_fmap_rows(fmap, c0, cpg, pw)
        for n in range(N):
            for oh in range(ho):
                for ow in range(wo):
                    r = (n * ho + oh) * wo + ow
                    x0 = ow * sw  # window start, in the shifted (padded) coordinates
                    k = 0
                    for c in range(cpg):
                        for i in range(kh):
                            y = oh * sh - ph + i * dh
                            if 0 <= y < H:
                                v = extract_bits(rowsb[n, c, y], x0, kw)
                                if v != 0:
                                    w0 = k >> 6
                                    off = k & 63
                                    out[r, w0] |= v << np.uint64(off)
                                    if off + kw > 64:
                                        out[r, w0 + 1] |= v >> np.uint64(64 - off)
                            k += kw
        return out
    for n in range(N):
        for oh in range(ho):
            for ow in range(wo):
                r = (n * ho + oh) * wo + ow
                k = 0
                for c in range(cpg):
                    plane = fmap[n, c0 + c]
                    for i in range(kh):
                        y = oh * sh - ph + i * dh
                        inside_y = 0 <= y < H
                        for j in range(kw):
                            x = ow * sw - pw + j * dw
                            if inside_y and 0 <= x < Wd and plane[y, x]:
                                out[r, k >> 6] |= _U1 << np.uint64(k & 63)
                            k += 1
    return out


@njit(cache=True)
def im2col_cols(fmap, c0, cpg, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):
    """The transpose of ``im2col_rows``: rows (c, i, j), bits (n, oh, ow) — the bwd_weight B
    operand (as Bᵀ)."""
    N, _, H, Wd = fmap.shape
    Kb = N * ho * wo
    W = (Kb + 63) // 64
    out = np.zeros((cpg * kh * kw, W), dtype=np.uint64)
    for c in range(cpg):
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                for n in range(N):
                    for oh in range(ho):
                        y = oh * sh - ph + i * dh
                        if y < 0 or y >= H:
                            continue
                        for ow in range(wo):
                            x = ow * sw - pw + j * dw
                            if 0 <= x < Wd and fmap[n, c0 + c, y, x]:
                                k = (n * ho + oh) * wo + ow
                                out[r, k >> 6] |= _U1 << np.uint64(k & 63)
    return out


def pack_rows(mask2d: np.ndarray) -> np.ndarray:
    """Pack a (rows, K) bool matrix along K into (rows, ceil(K/64)) uint64."""
    rows, k = mask2d.shape
    words = max(1, -(-k // 64))
    b = np.packbits(np.ascontiguousarray(mask2d, dtype=bool), axis=1, bitorder="little")
    out = np.zeros((rows, words * 8), dtype=np.uint8)
    out[:, : b.shape[1]] = b
    return out.view(np.uint64)
