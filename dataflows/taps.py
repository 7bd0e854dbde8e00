"""Scheduler kernels for the TensorDash rule: a fixed list of multiplexer taps, a static greedy
pass, and lockstep folds (``docs/sparse.md``, "Scheduler semantics").

A *buffer* is the work of one fold: ``T`` steps (time) × ``G`` streams (groups) × ``L`` lanes,
held as ``buf[t, g]``, an L-bit lane word (bit l set = lane l holds an effectual element).

The static schedule (``schedule_buffer``) walks the steps in order. A step that is empty in
every stream is left alone while fewer than ``F`` such steps came just before it (it will
retire for free); otherwise, for every stream, the empty lanes of the step are visited in
``order`` and each takes the first effectual element found among its taps ``(h, d)``, tried in
list order: step t + h (h >= 1, inside the buffer), lane (l + d) mod L — wrap-around inside the
stream's lane group. The element moves (a swap), so it moves at most once and at most max(h)
steps earlier.

Counting (the free-row rule): the scheduled steps are walked in order; a step empty in every
stream costs nothing while fewer than ``F`` free steps precede it, and every other step costs
one cycle. The run of free steps carries over from one fold to the next (``carry_walk``).

``lockstep``: the G streams of a fold share the step index (TensorDash, DNNsim). ``barrier``:
every stream is a buffer of its own (G = 1) and the fold waits for its slowest stream.

The same two synchronisations of the window scheduler (``dataflows.kernels``) are here too:
``window_lockstep`` applies that rule to every stream with one shared head.

Two ways to compute the pass, the same results: per stream (``_schedule``,
``_schedule_packed``: the buffer as above, a loop turn per element moved), and *sliced*
(``_schedule_sliced``, the ``os`` fold kernels ``lockstep_row_folds`` and ``tap_row_lengths``):
the buffer transposed so that a word holds one lane of one step of up to 64 streams (bit g =
stream g), several folds side by side, so that the rule's step for one lane and one tap is one
word operation for every stream at once, whatever the elements.

Serial ``@njit(cache=True)`` kernels; lanes <= 64 (one word per step and stream).
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.typed import Dict

from common.jit import njit

_U1 = np.uint64(1)
_Z = np.uint64(0)


def dnnsim_taps(shape: str, lookahead: int, lookaside: int) -> list[tuple[int, int]]:
    """The tap list DNNsim builds for search shape ``T`` or ``L`` (``(h, d)``, sorted as it sorts
    them): ``T`` is the lookahead taps ``(1..H, 0)`` plus ``lookaside`` taps that alternate sides
    (+1, −1, +2, −2, ...) while stepping through the lookahead rows; ``L`` is ``(1..H, 0)`` plus
    ``(1, −1..−D)``. H = 2, D = 5, ``T``: (1,−1) (1,0) (1,1) (1,3) (2,−2) (2,0) (2,2)."""
    taps = [(h, 0) for h in range(1, lookahead + 1)]
    if shape == "L":
        taps += [(1, -d) for d in range(1, lookaside + 1)]
    else:
        h, d, second = 1, 1, False
        for _ in range(lookaside):
            taps.append((h, d))
            d = -d
            if second:
                d += 1
                h = 1 if h + 1 > lookahead else h + 1
                second = False
            else:
                second = True
    return sorted(taps)


def strided_order(lanes: int, stride: int) -> list[int]:
    """Lanes visited in strides of ``stride`` (DNNsim's non-overlapping positions): 0, s, 2s, ...
    while a lane stays below ``lanes − stride + start``, then from the next unvisited lane.
    16 lanes, stride 5: 0 5 10 1 6 11 2 7 12 3 8 13 4 9 14 15."""
    seen = [False] * lanes
    out: list[int] = []
    start = 0
    while start < lanes:
        pos = start
        while pos < lanes - stride + start and pos < lanes:
            out.append(pos)
            seen[pos] = True
            pos += stride
        if pos == start:  # stride >= lanes: take the lane itself
            out.append(pos)
            seen[pos] = True
        start = next((i for i in range(lanes) if not seen[i]), lanes)
    return out


@njit(cache=True)
def _rank_tables(L, th, td, order):
    """Tables of the greedy pass in *rank space*, where bit i of a word is the lane visited i-th
    (``order[i]``), so that the next lane to visit is the lowest set bit:

    * ``ctab[s, k, v]``: tap s's candidates (rank space) from byte k = v of the lane word of its
      step t + h_s (row ``ntaps``: a lane word itself, mapped to rank space);
    * ``clr[s, i, s2]``: the mask that removes from tap s2's candidates the element that the lane
      of rank i takes through tap s (all ones where s2 looks at another step);
    * ``sbit[s, i]``: that element's bit in its step's lane word."""
    ntaps = th.shape[0]
    nb = (L + 7) // 8
    rank = np.empty(L, dtype=np.int64)
    for i in range(L):
        rank[order[i]] = i
    rot = np.empty(ntaps, dtype=np.int64)
    for s in range(ntaps):
        r = td[s] % L
        rot[s] = r + L if r < 0 else r
    ctab = np.zeros((ntaps + 1, nb, 256), dtype=np.uint64)
    for s in range(ntaps + 1):
        for src in range(L):  # the element at lane src is tap s's candidate for lane src - d_s
            q = src - rot[s] if s < ntaps else src
            if q < 0:
                q += L
            bit = _U1 << np.uint64(rank[q])
            for v in range(256):
                if (v >> (src & 7)) & 1:
                    ctab[s, src >> 3, v] |= bit
    clr = np.empty((ntaps, L, ntaps), dtype=np.uint64)
    sbit = np.empty((ntaps, L), dtype=np.uint64)
    for s in range(ntaps):
        for i in range(L):
            src = order[i] + rot[s]
            if src >= L:
                src -= L
            sbit[s, i] = _U1 << np.uint64(src)
            for s2 in range(ntaps):
                clr[s, i, s2] = ~_Z
                if th[s2] == th[s]:
                    q = src - rot[s2]
                    if q < 0:
                        q += L
                    clr[s, i, s2] = ~(_U1 << np.uint64(rank[q]))
    return ctab, clr, sbit


@njit(cache=True)
def _empty_step(buf, t, G):
    """Whether step t of ``buf`` is empty in every stream."""
    for g in range(G):
        if buf[t, g] != 0:
            return False
    return True


@njit(cache=True)
def _count(buf, T, G, F):
    """(z, rest, out) of a scheduled buffer: the free-row rule of the module docstring."""
    z = 0
    while z < T and _empty_step(buf, z, G):
        z += 1
    rest = 0
    skip = 0
    for t in range(z, T):
        if skip < F and _empty_step(buf, t, G):
            skip += 1
            continue
        skip = 0
        rest += 1
    return z, rest, skip


@njit(cache=True)
def _schedule(buf, T, G, L, th, order, F, ctab, clr, sbit, t0, t1, skip):
    """``schedule_buffer``'s pass over steps t0 .. t1 of the T with the tables of
    ``_rank_tables``, entered after a run of ``skip`` free steps; returns the run after them.

    Per step and stream, the lanes are visited in rank space: ``cand[s]`` holds the lanes that
    tap s can fill, ``elig`` the empty lanes with some candidate; the lowest set bit of ``elig``
    is the next lane in ``order`` that takes something (the lanes between have nothing to take,
    and candidates only disappear), so the loop runs once per element moved. A stream whose
    next steps are empty, or whose step is full, is left alone. One function, long: numba
    keeps the per-step loop tight only without calls inside it."""
    full = (_U1 << np.uint64(L)) - _U1 if L < 64 else ~_Z
    ntaps = th.shape[0]
    nb = (L + 7) // 8
    hmax = 1
    for s in range(ntaps):
        hmax = max(hmax, th[s])
    cand = np.zeros(ntaps, dtype=np.uint64)
    sv = np.zeros(hmax + 1, dtype=np.uint64)  # lane words of steps t + h of the stream
    for t in range(t0, t1):
        if skip < F and _empty_step(buf, t, G):
            skip += 1
            continue
        skip = 0
        if t + 1 >= T:
            break
        hlim = min(hmax, T - 1 - t)  # taps reaching past the buffer offer nothing
        for g in range(G):
            w = buf[t, g]
            srcs = _Z
            for h in range(1, hlim + 1):
                v = buf[t + h, g]
                sv[h] = v
                srcs |= v
            if srcs == 0 or w == full:
                continue
            anyc = _Z
            for s in range(ntaps):
                c = _Z
                if th[s] <= hlim:
                    x = sv[th[s]]
                    for k in range(nb):
                        c |= ctab[s, k, (x >> np.uint64(8 * k)) & np.uint64(255)]
                cand[s] = c
                anyc |= c
            wr = _Z
            for k in range(nb):
                wr |= ctab[ntaps, k, (w >> np.uint64(8 * k)) & np.uint64(255)]
            elig = anyc & ~wr
            if elig == 0:
                continue
            while elig != 0:
                i = trailing_zeros(elig)
                bi = _U1 << np.uint64(i)
                s = 0
                while cand[s] & bi == 0:  # the lane's first tap with an element
                    s += 1
                sv[th[s]] ^= sbit[s, i]
                wr |= bi
                w |= _U1 << np.uint64(order[i])
                anyc = _Z
                for s2 in range(ntaps):  # the element leaves every tap that saw it
                    c = cand[s2] & clr[s, i, s2]
                    cand[s2] = c
                    anyc |= c
                elig = anyc & ~wr
            buf[t, g] = w
            for h in range(1, hlim + 1):
                buf[t + h, g] = sv[h]
    return skip


@njit(cache=True)
def _packed_tables(L, th, order, ctab, clr, sbit):
    """The tables of ``_schedule_packed`` (L <= 16 lanes, <= 8 taps, h <= 3), from those of
    ``_rank_tables``; empty (shape 0) where the taps or lanes do not fit. Tap s's candidates
    sit in 16-bit field s % 4 of word s // 4:

    * ``ptab[j, h, k, v]``: word j's candidates from byte k = v of step t + h's lane word;
    * ``cm[s, i, j]``: word j's mask that removes the element the lane of rank i takes
      through tap s; ``sb[s, i]``: that element's bit in the packed source steps (step t + h
      at bits 16h ..);
    * ``lanebit[i]``: the lane word bit of the lane of rank i."""
    ntaps = th.shape[0]
    nb = (L + 7) // 8
    hmax = 1
    for s in range(ntaps):
        hmax = max(hmax, th[s])
    if L > 16 or ntaps > 8 or hmax > 3:
        return (np.zeros((0, 1, 1, 1), dtype=np.uint64), np.zeros((0, 1), dtype=np.uint64),
                np.zeros((0, 1, 1), dtype=np.uint64), np.zeros((0, 1), dtype=np.uint64),
                np.zeros(0, dtype=np.uint64))
    ptab = np.zeros((2, hmax + 1, nb, 256), dtype=np.uint64)
    for s in range(ntaps):
        sh = np.uint64(16 * (s & 3))
        for k in range(nb):
            for v in range(256):
                ptab[s >> 2, th[s], k, v] |= ctab[s, k, v] << sh
    cm = np.full((ntaps, L, 2), ~_Z, dtype=np.uint64)
    sb = np.zeros((ntaps, L), dtype=np.uint64)
    for s in range(ntaps):
        for i in range(L):
            sb[s, i] = sbit[s, i] << np.uint64(16 * th[s])
            for s2 in range(ntaps):
                gone = ~clr[s, i, s2] & np.uint64(0xFFFF)
                cm[s, i, s2 >> 2] &= ~(gone << np.uint64(16 * (s2 & 3)))
    lanebit = np.zeros(L, dtype=np.uint64)
    for i in range(L):
        lanebit[i] = _U1 << np.uint64(order[i])
    return ptab, ctab[ntaps].copy(), cm, sb, lanebit


@njit(cache=True)
def _schedule_packed(buf, T, G, L, F, ptab, wtab, cm, sb, lanebit, t0, t1, skip):
    """``_schedule`` for L <= 16 lanes, <= 8 taps and h <= 3 (TensorDash's 16 lanes and 7
    taps): the candidates of all taps in two words (a 16-bit rank-space field per tap), the
    source steps in one (step t + h at bits 16h ..), so that a take is a few word operations:
    the first tap that has an element for lane i is the lowest bit of bit i of every field,
    gathered by one multiplication. One function, long: numba keeps the per-step loop tight
    only without calls inside it, and the lookups of a step are written out for the common
    case (two-byte lane words, every tap in reach)."""
    full = (_U1 << np.uint64(L)) - _U1
    hmax = ptab.shape[1] - 1
    nb = ptab.shape[2]
    low = np.uint64(0x0001000100010001)  # bit 0 of every field
    gather = np.uint64((1 << 48) | (1 << 33) | (1 << 18) | (1 << 3))  # those bits -> 48..51
    f16 = np.uint64(0xFFFF)
    b8 = np.uint64(255)
    s8, s16, s32, s48 = np.uint64(8), np.uint64(16), np.uint64(32), np.uint64(48)
    for t in range(t0, t1):
        if skip < F and _empty_step(buf, t, G):
            skip += 1
            continue
        skip = 0
        if t + 1 >= T:
            break
        hlim = min(hmax, T - 1 - t)
        # two bytes a lane word and every tap in reach (all steps but the last few): the
        # lookups written out, without the loops over steps and bytes
        whole = nb == 2 and hlim == hmax
        for g in range(G):
            w = buf[t, g]
            if whole:
                v1 = buf[t + 1, g]
                v2 = buf[t + 2, g] if hmax >= 2 else _Z
                v3 = buf[t + 3, g] if hmax >= 3 else _Z
                sv = (v1 << s16) | (v2 << s32) | (v3 << s48)
                if sv == 0 or w == full:
                    continue
                lo, hi = v1 & b8, v1 >> s8
                p0 = ptab[0, 1, 0, lo] | ptab[0, 1, 1, hi]
                p1 = ptab[1, 1, 0, lo] | ptab[1, 1, 1, hi]
                if hmax >= 2:
                    lo, hi = v2 & b8, v2 >> s8
                    p0 |= ptab[0, 2, 0, lo] | ptab[0, 2, 1, hi]
                    p1 |= ptab[1, 2, 0, lo] | ptab[1, 2, 1, hi]
                if hmax >= 3:
                    lo, hi = v3 & b8, v3 >> s8
                    p0 |= ptab[0, 3, 0, lo] | ptab[0, 3, 1, hi]
                    p1 |= ptab[1, 3, 0, lo] | ptab[1, 3, 1, hi]
                wr = wtab[0, w & b8] | wtab[1, w >> s8]
            else:
                sv = _Z
                for h in range(1, hlim + 1):
                    sv |= buf[t + h, g] << np.uint64(16 * h)
                if sv == 0 or w == full:
                    continue
                p0 = _Z
                p1 = _Z
                for h in range(1, hlim + 1):
                    for k in range(nb):
                        v = (sv >> np.uint64(16 * h + 8 * k)) & b8
                        p0 |= ptab[0, h, k, v]
                        p1 |= ptab[1, h, k, v]
                wr = _Z
                for k in range(nb):
                    wr |= wtab[k, (w >> np.uint64(8 * k)) & b8]
            x = p0 | p1
            x |= x >> np.uint64(32)
            x |= x >> np.uint64(16)
            elig = x & f16 & ~wr
            if elig == 0:  # nothing moves: the steps stay as they are
                continue
            while elig != 0:
                i = trailing_zeros(elig)
                a = (((p0 >> np.uint64(i)) & low) * gather) >> np.uint64(48)
                b = (((p1 >> np.uint64(i)) & low) * gather) >> np.uint64(44)
                s = trailing_zeros((a & np.uint64(15)) | (b & np.uint64(240)))
                p0 &= cm[s, i, 0]
                p1 &= cm[s, i, 1]
                sv ^= sb[s, i]
                wr |= _U1 << np.uint64(i)
                w |= lanebit[i]
                x = p0 | p1
                x |= x >> np.uint64(32)
                x |= x >> np.uint64(16)
                elig = x & f16 & ~wr
            buf[t, g] = w
            for h in range(1, hlim + 1):
                buf[t + h, g] = (sv >> np.uint64(16 * h)) & f16
    return skip


@njit(cache=True)
def _sliced_tables(L, th, td, order):
    """``offs[i, s]``, the table of ``_schedule_sliced``: the place of tap s's source for the
    lane of rank i, counted from the start of step t in a sliced buffer (step t + h_s at
    (t + h_s)·L, lane (order[i] + d_s) mod L)."""
    ntaps = th.shape[0]
    offs = np.empty((L, ntaps), dtype=np.int64)
    for i in range(L):
        for s in range(ntaps):
            q = (order[i] + td[s]) % L
            offs[i, s] = th[s] * L + (q + L if q < 0 else q)
    return offs


@njit(cache=True)
def _sliced_buffer(pack, rows, G, sl):
    """The buffer of rows ``rows[:G]`` of ``pack`` *sliced*: ``sl[w, t·L + p]`` holds lane p of
    step t of streams 64w .. 64w+63, bit g = stream 64w + g (bit t·L + p of row
    ``rows[64w + g]``; the layout needs no L). Word k of 64 rows, a 64 × 64 bit matrix, is
    transposed in place in ``sl[w, 64k .. 64k+64]``: six rounds of swaps of ever smaller
    blocks, a few word operations per 64 bits, whatever the elements."""
    nw = pack.shape[1]
    for w in range((G + 63) // 64):
        s = sl[w]
        g1 = min(G - 64 * w, 64)
        for k in range(nw):
            b = 64 * k
            for g in range(g1):
                s[b + g] = pack[rows[64 * w + g], k]
            for g in range(g1, 64):
                s[b + g] = _Z
            j = 32
            m = np.uint64(0x00000000FFFFFFFF)  # the low half of every block of 2j bits
            while j != 0:
                sj = np.uint64(j)
                for k0 in range(b, b + 64, 2 * j):
                    for r in range(k0, k0 + j):  # the high half of row r <-> the low of r + j
                        x = s[r]
                        y = s[r + j]
                        t = ((x >> sj) ^ y) & m
                        s[r] = x ^ (t << sj)
                        s[r + j] = y ^ t
                j >>= 1
                m ^= m << np.uint64(j)


@njit(cache=True)
def _step_any(s, t, L):
    """The streams with an element in step t of a word of a sliced buffer ``s``."""
    b = t * L
    u = _Z
    for p in range(L):
        u |= s[b + p]
    return u


@njit(cache=True)
def _fold_steps(sl, t, L, F, masks, nb, skips, u, act):
    """Which streams of a sliced buffer schedule step t, into ``act`` (per word): those of
    the folds for which it is not a free step (each fold has its own run ``skips[k]``; fold
    k's streams are the bits ``masks[k]``). Whether any does."""
    W = sl.shape[0]
    for w in range(W):
        u[w] = _step_any(sl[w], t, L)
        act[w] = _Z
    anyf = False
    for k in range(nb):
        empty = True
        for w in range(W):
            if u[w] & masks[k, w] != 0:
                empty = False
        if skips[k] < F and empty:
            skips[k] += 1
        else:
            skips[k] = 0
            anyf = True
            for w in range(W):
                act[w] |= masks[k, w]
    return anyf


@njit(cache=True)
def _schedule_sliced(sl, T, L, th, offs, order, F, masks, nb):
    """``schedule_buffer``'s pass over a sliced buffer (``_sliced_buffer``) holding ``nb``
    folds, fold k's streams at the bits ``masks[k]`` (per word), all at once: per step, the
    folds that schedule it (``_fold_steps``), then the lanes in ``order``, and for each the
    taps in list order: a stream of those folds whose lane is still empty (bit set in ``e``)
    takes the tap's element where it has one. Streams do not interact, so one word operation
    is the rule's step for 64 of them, and the pass does the same work whatever the elements:
    with many streams it is cheaper than a pass per stream that moves one element a loop
    turn. The buffers are only counted after, so the run of free steps after the last step is
    not kept."""
    ntaps = th.shape[0]
    hmax = 1
    for s in range(ntaps):
        hmax = max(hmax, th[s])
    skips = np.zeros(nb, dtype=np.int64)
    u = np.empty(sl.shape[0], dtype=np.uint64)
    act = np.empty(sl.shape[0], dtype=np.uint64)
    for t in range(T - 1):  # the last step has no later step to take from
        if not _fold_steps(sl, t, L, F, masks, nb, skips, u, act):
            continue
        b = t * L
        for w in range(sl.shape[0]):
            sw = sl[w]
            active = act[w]
            if t + hmax < T:  # every tap in reach (all steps but the last few): no test a tap
                for i in range(L):
                    p = b + order[i]
                    e0 = ~sw[p] & active
                    e = e0
                    for s in range(ntaps):
                        q = b + offs[i, s]
                        x = sw[q]
                        a = x & e
                        sw[q] = x ^ a
                        e ^= a
                    sw[p] |= e0 ^ e
                continue
            for i in range(L):
                p = b + order[i]
                e0 = ~sw[p] & active
                e = e0
                for s in range(ntaps):
                    if th[s] <= T - 1 - t:  # taps reaching past the buffer offer nothing
                        q = b + offs[i, s]
                        x = sw[q]
                        a = x & e
                        sw[q] = x ^ a
                        e ^= a
                sw[p] |= e0 ^ e


@njit(cache=True)
def _count_sliced(sl, T, L, F, masks, nb, folds, z, rest, out):
    """``_count`` of every fold of a sliced buffer (as ``_schedule_sliced``), into
    ``z[folds[k]]``, ``rest[folds[k]]``, ``out[folds[k]]``."""
    zk = np.zeros(nb, dtype=np.int64)
    rk = np.zeros(nb, dtype=np.int64)
    sk = np.zeros(nb, dtype=np.int64)
    W = sl.shape[0]
    u = np.empty(W, dtype=np.uint64)
    for t in range(T):
        for w in range(W):
            u[w] = _step_any(sl[w], t, L)
        for k in range(nb):
            empty = True
            for w in range(W):
                if u[w] & masks[k, w] != 0:
                    empty = False
            if rk[k] == 0 and empty:  # no cycle yet: a leading empty step
                zk[k] += 1
            elif sk[k] < F and empty:
                sk[k] += 1
            else:
                sk[k] = 0
                rk[k] += 1
    for k in range(nb):
        f = folds[k]
        z[f], rest[f], out[f] = zk[k], rk[k], sk[k]


@njit(cache=True)
def _folds_sliced(pack, rows, G, T, L, th, order, F, offs, masks, nb, folds, sl, z, rest,
                  out):
    """(z, rest, out) of ``schedule_buffer`` on the buffers of ``nb`` folds whose streams are
    rows ``rows[:G]`` of ``pack`` (G <= 64 · words of ``sl``), fold k's at the bits
    ``masks[k]`` (per word), into ``z[folds[k]]`` ...: sliced. ``sl`` holds at least
    max(64 · words, T·L) words a row, zero past the words."""
    _sliced_buffer(pack, rows, G, sl)
    _schedule_sliced(sl, T, L, th, offs, order, F, masks, nb)
    _count_sliced(sl, T, L, F, masks, nb, folds, z, rest, out)


@njit(cache=True)
def _tables(L, th, td, order):
    """The tables of both schedulers (``_rank_tables``, ``_packed_tables``), made once per
    set of folds."""
    ctab, clr, sbit = _rank_tables(L, th, td, order)
    return (ctab, clr, sbit) + _packed_tables(L, th, order, ctab, clr, sbit)


@njit(cache=True)
def _schedule_steps(buf, T, G, L, th, order, F, tabs, t0, t1, skip):
    """The pass of ``schedule_buffer`` over steps t0 .. t1 of the T, entered after a run of
    ``skip`` free steps, with the tables of ``_tables``: the packed scheduler where the taps
    and lanes fit it, else the general one. Returns the run of free steps after them."""
    if tabs[3].shape[0] > 0:
        return _schedule_packed(buf, T, G, L, F, tabs[3], tabs[4], tabs[5], tabs[6], tabs[7],
                                t0, t1, skip)
    return _schedule(buf, T, G, L, th, order, F, tabs[0], tabs[1], tabs[2], t0, t1, skip)


@njit(cache=True)
def _schedule_with(buf, T, G, L, th, order, F, tabs):
    """``schedule_buffer`` with the tables of ``_tables``."""
    _schedule_steps(buf, T, G, L, th, order, F, tabs, 0, T, 0)
    return _count(buf, T, G, F)


@njit(cache=True)
def step_period(buf, T, G):
    """The least p > 0 with ``buf[t] == buf[t + p]`` (all G streams) for every t < T − p: the
    period of the steps (T when they do not repeat), by the prefix function of the sequence of
    steps (Knuth-Morris-Pratt), each step compared as a whole."""
    if T <= 1:
        return max(T, 1)
    pi = np.zeros(T, dtype=np.int64)
    for t in range(1, T):
        j = pi[t - 1]
        while True:
            same = True
            for g in range(G):
                if buf[t, g] != buf[j, g]:
                    same = False
                    break
            if same:
                pi[t] = j + 1
                break
            if j == 0:
                break
            j = pi[j - 1]
    return T - pi[T - 1]


@njit(cache=True)
def _state_hash(buf, t, n, G, skip):
    """A 64-bit hash of the run of free steps ``skip`` and the words of steps t .. t+n."""
    m = np.uint64(0x9E3779B97F4A7C15)
    hv = (np.uint64(skip) + np.uint64(1)) * m
    for i in range(n):
        for g in range(G):
            hv = (hv ^ buf[t + i, g]) * m
            hv ^= hv >> np.uint64(31)
    return hv


@njit(cache=True)
def _period_chunk(p):
    """The steps between two looks at the state of ``_schedule_periodic`` for steps of period
    ``p``: p, or a multiple of it near 64 where p is shorter (a look costs a hash)."""
    return p * max(1, 64 // p)


@njit(cache=True)
def _schedule_periodic(buf, T, G, L, th, order, F, tabs, c):
    """``_schedule_with`` on steps that repeat with a period that divides ``c``
    (``step_period``: an operand held as ones repeats every image), the same buffer and counts.

    The pass is a machine whose state at the start of step t is the run of free steps and
    steps t .. t+hmax−1 (those the steps before it may have changed; the later ones are as
    given). The state is kept at every c-th step: where it equals the state kept at an earlier
    such step u (a hash finds it, a comparison of the words confirms it), the steps u .. t were
    scheduled as every later run of t − u steps will be, as long as all their steps see hmax
    steps ahead: those runs are copied, and the pass goes on from the state after them."""
    hmax = 1
    for s in range(th.shape[0]):
        hmax = max(hmax, th[s])
    nk = T // c + 1
    kept = np.zeros((nk, hmax, G), dtype=np.uint64)
    kskip = np.zeros(nk, dtype=np.int64)
    first = Dict.empty(key_type=types.uint64, value_type=types.int64)  # hash -> kept index
    jumped = False
    skip = 0
    t = 0
    while t < T:
        t1 = min(T, t + c)
        skip = _schedule_steps(buf, T, G, L, th, order, F, tabs, t, t1, skip)
        t = t1
        if jumped or t + hmax > T:
            continue
        j = t // c
        key = _state_hash(buf, t, hmax, G, skip)
        u = first[key] if key in first else -1
        if u >= 0 and kskip[u] == skip and _rows_equal(buf, t, kept[u], hmax, G):
            per = (j - u) * c
            n = (T - hmax - t) // per
            if n > 0:
                for i in range(hmax):  # the state, entered again n runs later
                    for g in range(G):
                        kept[0, i, g] = buf[t + i, g]
                for v in range(t, t + n * per):
                    for g in range(G):
                        buf[v, g] = buf[v - per, g]
                t += n * per
                for i in range(hmax):
                    for g in range(G):
                        buf[t + i, g] = kept[0, i, g]
                jumped = True
                continue
        if u < 0:
            first[key] = j
        kskip[j] = skip
        for i in range(hmax):
            for g in range(G):
                kept[j, i, g] = buf[t + i, g]
    return _count(buf, T, G, F)


@njit(cache=True)
def _rows_equal(buf, t, rows, n, G):
    """Whether steps t .. t+n of ``buf`` hold the words of ``rows[:n]``."""
    for i in range(n):
        for g in range(G):
            if buf[t + i, g] != rows[i, g]:
                return False
    return True


@njit(cache=True)
def schedule_buffer(buf, T, G, L, th, td, order, F):
    """Schedule ``buf[:T, :G]`` in place (the module's rule) and count it from a run of zero
    free steps. Returns (z, rest, out): ``z`` leading steps empty in every stream (``z == T``:
    the whole buffer is empty); ``rest`` cycles of the steps from the first non-empty one on;
    ``out`` the run of free steps at the end.

    Per step and stream, tap s offers lane p the element at lane (p + d_s) mod L of step
    t + h_s; the empty lanes with some candidate are visited in ``order`` and each takes from
    its first tap that has one; a take removes the element from every tap that reaches it."""
    return _schedule_with(buf, T, G, L, th, order, F, _tables(L, th, td, order))


@njit(cache=True)
def _lead(z, s, F):
    """Cycles of ``z`` empty steps entered after a run of ``s`` free steps, and the run after."""
    c = 0
    for _ in range(z):
        if s < F:
            s += 1
        else:
            s = 0
            c += 1
    return c, s


@njit(cache=True)
def carry_walk(z, rest, out, T, seq, resets, F):
    """Cycles of each fold visited in ``seq`` (fold indices, with repeats), the run of free
    steps carried from one to the next and reset to zero where ``resets`` is set. Per visit."""
    n = seq.shape[0]
    cyc = np.zeros(n, dtype=np.int64)
    s = 0
    for i in range(n):
        if resets[i]:
            s = 0
        f = seq[i]
        if z[f] >= T[f]:
            c, s = _lead(T[f], s, F)
            cyc[i] = c
        else:
            c, _s = _lead(z[f], s, F)
            cyc[i] = c + rest[f]
            s = out[f]
    return cyc


@njit(cache=True)
def _row_buffer(pack, rows, G, T, L, buf):
    """Steps of rows ``rows[:G]`` of ``pack`` taken L bits at a time (``os`` streams)."""
    nw = pack.shape[1]
    full = (_U1 << np.uint64(L)) - _U1 if L < 64 else ~_Z
    for g in range(G):
        r = rows[g]
        for t in range(T):
            k0 = t * L
            w = k0 >> 6
            off = k0 & 63
            v = pack[r, w] >> np.uint64(off) if w < nw else _Z
            if off != 0 and off + L > 64 and w + 1 < nw:
                v |= pack[r, w + 1] << np.uint64(64 - off)
            buf[t, g] = v & full


@njit(cache=True)
def _live_rows(pack, r0, r1, rows):
    """The rows r0 .. r1 of ``pack`` with an effectual element, into ``rows``; how many."""
    n = 0
    for r in range(r0, r1):
        for i in range(pack.shape[1]):
            if pack[r, i] != 0:
                rows[n] = r
                n += 1
                break
    return n


@njit(cache=True)
def _rows_hash(pack, rows, G):
    """A 64-bit hash of the words of rows ``rows[:G]`` of ``pack``, in that order."""
    m = np.uint64(0x9E3779B97F4A7C15)
    hv = np.uint64(G) * m
    for g in range(G):
        for i in range(pack.shape[1]):
            hv = (hv ^ pack[rows[g], i]) * m
            hv ^= hv >> np.uint64(31)
        hv = (hv ^ np.uint64(0xD1B54A32D192ED03)) * m
    return hv


@njit(cache=True)
def _same_rows(pack, rows, other, G):
    """Whether rows ``rows[:G]`` and ``other[:G]`` of ``pack`` hold the same words."""
    for g in range(G):
        for i in range(pack.shape[1]):
            if pack[rows[g], i] != pack[other[g], i]:
                return False
    return True


@njit(cache=True)
def _seen_fold(pack, f, rows, G, R, first, other):
    """The earlier fold whose live rows hold the same words as fold ``f``'s ``G`` (``rows``),
    or −1; a fold whose hash no earlier fold has is recorded in ``first`` (hash → fold) as
    the one to compare later folds of that hash with."""
    key = _rows_hash(pack, rows, G)
    j = first[key] if key in first else -1
    if j < 0:
        first[key] = f
        return -1
    S = pack.shape[0]
    if _live_rows(pack, j * R, min(S, j * R + R), other) == G and _same_rows(pack, rows, other,
                                                                              G):
        return j
    return -1


@njit(cache=True)
def _slice_buffer(pack, q0, G, S, K, L, buf):
    """Steps (rows of ``pack``) of slices q0 .. q0+G, slice q = bits qL .. qL+L−1 (``ws``/``is``
    streams: an array row's L lanes hold L consecutive k)."""
    nw = pack.shape[1]
    ws = np.empty(G, dtype=np.int64)
    offs = np.empty(G, dtype=np.uint64)
    spans = np.zeros(G, dtype=np.bool_)  # the slice reaches into the next word
    keeps = np.empty(G, dtype=np.uint64)
    for g in range(G):
        k0 = (q0 + g) * L
        ws[g] = k0 >> 6
        off = k0 & 63
        offs[g] = off
        n = min(L, K - k0)
        keeps[g] = (_U1 << np.uint64(n)) - _U1 if n < 64 else ~_Z
        spans[g] = off != 0 and off + n > 64 and ws[g] + 1 < nw
    for s in range(S):  # row by row: the pack and the buffer are read and written in order
        for g in range(G):
            w = ws[g]
            v = pack[s, w] >> offs[g]
            if spans[g]:
                v |= pack[s, w + 1] << (np.uint64(64) - offs[g])
            buf[s, g] = v & keeps[g]


@njit(cache=True)
def lockstep_row_folds(pack, K, L, R, th, td, order, F):
    """Per fold of R consecutive rows (streams) of ``pack``, T = ceil(K/L) steps each:
    (z, rest, out, T) of ``schedule_buffer``.

    Two shortcuts with the same results: a row with no effectual element is left out of its
    fold's buffer (it stays empty, and a step is free or not by the other streams alone), and a
    fold whose remaining rows hold the same words as an earlier fold's takes that fold's
    result (a hash of the words finds it, a comparison of the words confirms it). The other
    folds are scheduled sliced, as many at once as their live rows fit in 64 streams
    (``_folds_sliced``)."""
    return _row_folds_sliced(pack, K, L, R, th, td, order, F)


@njit(cache=True)
def _row_folds_sliced(pack, K, L, R, th, td, order, F):
    """``lockstep_row_folds``: the folds to schedule gathered, in order, into sets of at most
    64 live rows (a fold of more is a set of its own, over several words); a set is scheduled
    when the next fold does not fit (or at the end), and a fold found again takes its result
    after the last set."""
    S = pack.shape[0]
    T = (K + L - 1) // L
    nf = (S + R - 1) // R
    z = np.zeros(nf, dtype=np.int64)
    rest = np.zeros(nf, dtype=np.int64)
    out = np.zeros(nf, dtype=np.int64)
    rows = np.empty(R, dtype=np.int64)
    other = np.empty(R, dtype=np.int64)
    offs = _sliced_tables(L, th, td, order)
    nw = (R + 63) // 64  # words of a set's lane
    sl = np.zeros((nw, max(64 * pack.shape[1], T * L, 1)), dtype=np.uint64)
    srows = np.empty(64 * nw, dtype=np.int64)  # the set's rows, its folds and their streams
    folds = np.empty(64, dtype=np.int64)
    masks = np.zeros((64, nw), dtype=np.uint64)
    used = nb = 0
    same = np.full(nf, -1, dtype=np.int64)  # the earlier fold of the same rows
    first = Dict.empty(key_type=types.uint64, value_type=types.int64)  # hash -> fold
    for f in range(nf + 1):
        G = _live_rows(pack, f * R, min(S, f * R + R), rows) if f < nf else 0
        if nb > 0 and (f == nf or used + G > 64):
            W = (used + 63) // 64
            _folds_sliced(pack, srows, used, T, L, th, order, F, offs, masks[:nb, :W], nb,
                          folds, sl[:W], z, rest, out)
            used = nb = 0
        if f == nf:
            break
        if G == 0:  # an empty buffer: (T, 0, 0)
            z[f] = T
            continue
        j = _seen_fold(pack, f, rows, G, R, first, other)
        if j >= 0:
            same[f] = j
            continue
        srows[used:used + G] = rows[:G]
        for w in range(nw):  # the fold's streams: bits used .. used+G-1 of the set's words
            n = min(max(G - 64 * w, 0), 64)
            masks[nb, w] = (((_U1 << np.uint64(n)) - _U1) if n < 64 else ~_Z) << np.uint64(used)
        folds[nb] = f
        used += G
        nb += 1
    for f in range(nf):
        if same[f] >= 0:
            z[f], rest[f], out[f] = z[same[f]], rest[same[f]], out[same[f]]
    return z, rest, out, np.full(nf, T, dtype=np.int64)


@njit(cache=True)
def lockstep_row_folds_periodic(pack, K, L, R, th, td, order, F):
    """``lockstep_row_folds`` for an operand whose steps repeat (a dense operand held as
    ones: its zeros are the padding of every image): each fold's buffer scheduled by
    ``_schedule_periodic`` with its ``step_period``. The same results; slower where nothing
    repeats."""
    return _row_folds(pack, K, L, R, th, td, order, F, True)


@njit(cache=True)
def _row_folds(pack, K, L, R, th, td, order, F, periodic):
    """``lockstep_row_folds``; ``periodic``: as ``lockstep_row_folds_periodic``."""
    S = pack.shape[0]
    T = (K + L - 1) // L
    nf = (S + R - 1) // R
    z = np.zeros(nf, dtype=np.int64)
    rest = np.zeros(nf, dtype=np.int64)
    out = np.zeros(nf, dtype=np.int64)
    buf = np.zeros((max(T, 1), R), dtype=np.uint64)
    tabs = _tables(L, th, td, order)
    rows = np.empty(R, dtype=np.int64)
    other = np.empty(R, dtype=np.int64)
    first = Dict.empty(key_type=types.uint64, value_type=types.int64)  # hash -> fold
    for f in range(nf):
        G = _live_rows(pack, f * R, min(S, f * R + R), rows)
        if G == 0:  # an empty buffer: (T, 0, 0)
            z[f] = T
            continue
        j = _seen_fold(pack, f, rows, G, R, first, other)
        if j >= 0:
            z[f], rest[f], out[f] = z[j], rest[j], out[j]
            continue
        _row_buffer(pack, rows, G, T, L, buf)
        if periodic and T > 64:  # a short buffer is scheduled sooner than its period found
            c = _period_chunk(step_period(buf, T, G))
            z[f], rest[f], out[f] = _schedule_periodic(buf, T, G, L, th, order, F, tabs, c)
        else:
            z[f], rest[f], out[f] = _schedule_with(buf, T, G, L, th, order, F, tabs)
    return z, rest, out, np.full(nf, T, dtype=np.int64)


@njit(cache=True)
def lockstep_slice_folds(pack, K, L, R, th, td, order, F):
    """Per fold of R consecutive slices of ``pack`` (``ws``/``is``), T = rows of ``pack``."""
    return _slice_folds(pack, K, L, R, th, td, order, F, False)


@njit(cache=True)
def lockstep_slice_folds_periodic(pack, K, L, R, th, td, order, F):
    """``lockstep_slice_folds`` for an operand whose rows repeat (as
    ``lockstep_row_folds_periodic``)."""
    return _slice_folds(pack, K, L, R, th, td, order, F, True)


@njit(cache=True)
def _slice_folds(pack, K, L, R, th, td, order, F, periodic):
    """``lockstep_slice_folds``; ``periodic``: as ``lockstep_slice_folds_periodic``."""
    S = pack.shape[0]
    nq = (K + L - 1) // L
    nf = (nq + R - 1) // R
    z = np.zeros(nf, dtype=np.int64)
    rest = np.zeros(nf, dtype=np.int64)
    out = np.zeros(nf, dtype=np.int64)
    buf = np.zeros((max(S, 1), R), dtype=np.uint64)
    tabs = _tables(L, th, td, order)
    other = np.zeros((max(S, 1), R) if periodic else (1, 1), dtype=np.uint64)
    first = Dict.empty(key_type=types.uint64, value_type=types.int64)  # hash -> fold
    for f in range(nf):
        G = min(R, nq - f * R)
        _slice_buffer(pack, f * R, G, S, K, L, buf)
        if not periodic:
            z[f], rest[f], out[f] = _schedule_with(buf, S, G, L, th, order, F, tabs)
            continue
        # a fold whose slices hold the same words as an earlier fold's takes its result
        key = _buffer_hash(buf, S, G)
        j = first[key] if key in first else -1
        if j >= 0 and min(R, nq - j * R) == G:
            _slice_buffer(pack, j * R, G, S, K, L, other)
            if _same_buffer(buf, other, S, G):
                z[f], rest[f], out[f] = z[j], rest[j], out[j]
                continue
        if j < 0:
            first[key] = f
        c = _period_chunk(step_period(buf, S, G))
        z[f], rest[f], out[f] = _schedule_periodic(buf, S, G, L, th, order, F, tabs, c)
    return z, rest, out, np.full(nf, S, dtype=np.int64)


@njit(cache=True)
def _buffer_hash(buf, T, G):
    """A 64-bit hash of ``buf[:T, :G]``."""
    m = np.uint64(0x9E3779B97F4A7C15)
    hv = np.uint64(G) * m
    for t in range(T):
        for g in range(G):
            hv = (hv ^ buf[t, g]) * m
            hv ^= hv >> np.uint64(31)
    return hv


@njit(cache=True)
def _same_buffer(buf, other, T, G):
    """Whether ``buf[:T, :G]`` and ``other[:T, :G]`` hold the same words."""
    for t in range(T):
        for g in range(G):
            if buf[t, g] != other[t, g]:
                return False
    return True


@njit(cache=True)
def tap_row_lengths(pack, K, L, th, td, order, F):
    """``barrier``: per row of ``pack`` alone (G = 1), cycles of its stream from no free run."""
    z, rest, _o, T = lockstep_row_folds(pack, K, L, 1, th, td, order, F)
    out = np.zeros(pack.shape[0], dtype=np.int64)
    for s in range(pack.shape[0]):
        out[s] = rest[s] + _lead(min(z[s], T[s]), 0, F)[0]
    return out


@njit(cache=True)
def tap_slice_lengths(pack, K, L, th, td, order, F):
    """``barrier``: per slice of ``pack`` alone (``ws``/``is``), cycles of its stream."""
    S = pack.shape[0]
    nq = (K + L - 1) // L
    out = np.zeros(nq, dtype=np.int64)
    buf = np.zeros((max(S, 1), 1), dtype=np.uint64)
    tabs = _tables(L, th, td, order)
    for q in range(nq):
        _slice_buffer(pack, q, 1, S, K, L, buf)
        z, rest, _o = _schedule_with(buf, S, 1, L, th, order, F, tabs)
        out[q] = rest + _lead(min(z, S), 0, F)[0]
    return out


@njit(cache=True)
def window_lockstep(buf, T, G, L, H, D):
    """The window rule of ``dataflows.kernels.schedule`` on every stream of ``buf[:T, :G]`` with
    one shared head: each cycle every stream's lanes take from the steps t0 .. t0+H of their own
    stream (own lane first, then lookaside l − d, l + d for d = 1 .. D); the head then moves past
    the steps consumed in every stream, at most H + 1. A fold with no effectual element costs
    nothing. Consumes ``buf``."""
    full = (_U1 << np.uint64(L)) - _U1 if L < 64 else ~_Z
    anyv = _Z
    for t in range(T):
        for g in range(G):
            anyv |= buf[t, g]
    if anyv == 0:
        return 0
    t0 = 0
    cycles = 0
    while t0 < T:
        cycles += 1
        top = min(T, t0 + H + 1)
        for g in range(G):
            free = full
            for r in range(t0, top):  # own lane, earliest step first
                take = buf[r, g] & free
                buf[r, g] ^= take
                free ^= take
            d = 1
            while d <= D and free != 0:
                sd = np.uint64(d)
                for r in range(t0, top):  # from lane l - d
                    cand = (buf[r, g] << sd) & full & free
                    buf[r, g] ^= cand >> sd
                    free ^= cand
                for r in range(t0, top):  # from lane l + d
                    cand = (buf[r, g] >> sd) & free
                    buf[r, g] ^= cand << sd
                    free ^= cand
                d += 1
        adv = 0
        while adv <= H and t0 < T:
            done = True
            for g in range(G):
                if buf[t0, g] != 0:
                    done = False
                    break
            if not done:
                break
            t0 += 1
            adv += 1
    return cycles


@njit(cache=True)
def window_lockstep_row_folds(pack, K, L, R, H, D):
    """Per fold of R consecutive rows of ``pack`` (``os``): cycles of ``window_lockstep``."""
    S = pack.shape[0]
    T = (K + L - 1) // L
    nf = (S + R - 1) // R
    out = np.zeros(nf, dtype=np.int64)
    buf = np.zeros((max(T, 1), R), dtype=np.uint64)
    rows = np.arange(R)
    for f in range(nf):
        G = min(R, S - f * R)
        _row_buffer(pack, rows + f * R, G, T, L, buf)
        out[f] = window_lockstep(buf, T, G, L, H, D)
    return out


@njit(cache=True)
def window_lockstep_slice_folds(pack, K, L, R, H, D):
    """Per fold of R consecutive slices of ``pack`` (``ws``/``is``): ``window_lockstep``."""
    S = pack.shape[0]
    nq = (K + L - 1) // L
    nf = (nq + R - 1) // R
    out = np.zeros(nf, dtype=np.int64)
    buf = np.zeros((max(S, 1), R), dtype=np.uint64)
    for f in range(nf):
        G = min(R, nq - f * R)
        _slice_buffer(pack, f * R, G, S, K, L, buf)
        out[f] = window_lockstep(buf, S, G, L, H, D)
    return out
