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

Serial ``@njit(cache=True)`` kernels; lanes <= 64 (one word per step and stream).
"""

from __future__ import annotations

import numpy as np

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
def _rotr(x, r, L, full):
    """Lane word ``x`` rotated so that bit p holds lane (p + r) mod L."""
    if r == 0:
        return x
    return ((x >> np.uint64(r)) | (x << np.uint64(L - r))) & full


@njit(cache=True)
def schedule_buffer(buf, T, G, L, th, td, order, F):
    """Schedule ``buf[:T, :G]`` in place (the module's rule) and count it from a run of zero
    free steps. Returns (z, rest, out): ``z`` leading steps empty in every stream (``z == T``:
    the whole buffer is empty); ``rest`` cycles of the steps from the first non-empty one on;
    ``out`` the run of free steps at the end.

    Per step and stream, tap s offers lane p the element at lane (p + d_s) mod L of step
    t + h_s: ``cand[s]``, that step's word rotated by d_s. Only lanes with some candidate are
    visited (in ``order``); a take clears the element in every tap word that reaches it.
    One function, long: numba keeps the per-step loop tight only without calls inside it."""
    full = (_U1 << np.uint64(L)) - _U1 if L < 64 else ~_Z
    ntaps = th.shape[0]
    rot = np.empty(ntaps, dtype=np.int64)
    for s in range(ntaps):
        rot[s] = td[s] % L
        if rot[s] < 0:
            rot[s] += L
    cand = np.zeros(ntaps, dtype=np.uint64)
    skip = 0
    for t in range(T):
        zero = True
        for g in range(G):
            if buf[t, g] != 0:
                zero = False
                break
        if skip < F and zero:
            skip += 1
            continue
        skip = 0
        if t + 1 >= T:
            break
        for g in range(G):
            w = buf[t, g]
            if w == full:
                continue
            anyc = _Z
            for s in range(ntaps):
                tt = t + th[s]
                c = _rotr(buf[tt, g], rot[s], L, full) if tt < T else _Z
                cand[s] = c
                anyc |= c
            elig = anyc & ~w & full
            if elig == 0:
                continue
            for p in order:
                bp = _U1 << np.uint64(p)
                if elig & bp == 0:
                    continue
                for s in range(ntaps):
                    if cand[s] & bp:
                        h = th[s]
                        src = p + rot[s]  # (p + d) mod L, rot in [0, L): no division
                        if src >= L:
                            src -= L
                        buf[t + h, g] ^= _U1 << np.uint64(src)
                        w |= bp
                        anyc = _Z
                        for s2 in range(ntaps):  # the element leaves every tap that saw it
                            if th[s2] == h:
                                q = src - rot[s2]
                                if q < 0:
                                    q += L
                                cand[s2] &= ~(_U1 << np.uint64(q))
                            anyc |= cand[s2]
                        elig = anyc & ~w & full
                        break
                if elig == 0:
                    break
            buf[t, g] = w
    # count
    z = 0
    while z < T:
        nz = False
        for g in range(G):
            if buf[z, g] != 0:
                nz = True
                break
        if nz:
            break
        z += 1
    rest = 0
    skip = 0
    for t in range(z, T):
        zero = True
        for g in range(G):
            if buf[t, g] != 0:
                zero = False
                break
        if skip < F and zero:
            skip += 1
            continue
        skip = 0
        rest += 1
    return z, rest, skip


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
def _row_buffer(pack, r0, G, T, L, buf):
    """Steps of rows r0 .. r0+G of ``pack`` taken L bits at a time (``os`` streams)."""
    nw = pack.shape[1]
    full = (_U1 << np.uint64(L)) - _U1 if L < 64 else ~_Z
    for g in range(G):
        for t in range(T):
            k0 = t * L
            w = k0 >> 6
            off = k0 & 63
            v = pack[r0 + g, w] >> np.uint64(off) if w < nw else _Z
            if off != 0 and off + L > 64 and w + 1 < nw:
                v |= pack[r0 + g, w + 1] << np.uint64(64 - off)
            buf[t, g] = v & full


@njit(cache=True)
def _slice_buffer(pack, q0, G, S, K, L, buf):
    """Steps (rows of ``pack``) of slices q0 .. q0+G, slice q = bits qL .. qL+L−1 (``ws``/``is``
    streams: an array row's L lanes hold L consecutive k)."""
    nw = pack.shape[1]
    for g in range(G):
        k0 = (q0 + g) * L
        w = k0 >> 6
        off = k0 & 63
        n = min(L, K - k0)
        keep = (_U1 << np.uint64(n)) - _U1 if n < 64 else ~_Z
        for s in range(S):
            v = pack[s, w] >> np.uint64(off)
            if off != 0 and off + n > 64 and w + 1 < nw:
                v |= pack[s, w + 1] << np.uint64(64 - off)
            buf[s, g] = v & keep


@njit(cache=True)
def lockstep_row_folds(pack, K, L, R, th, td, order, F):
    """Per fold of R consecutive rows (streams) of ``pack``, T = ceil(K/L) steps each:
    (z, rest, out, T) of ``schedule_buffer``."""
    S = pack.shape[0]
    T = (K + L - 1) // L
    nf = (S + R - 1) // R
    z = np.zeros(nf, dtype=np.int64)
    rest = np.zeros(nf, dtype=np.int64)
    out = np.zeros(nf, dtype=np.int64)
    buf = np.zeros((max(T, 1), R), dtype=np.uint64)
    for f in range(nf):
        G = min(R, S - f * R)
        _row_buffer(pack, f * R, G, T, L, buf)
        z[f], rest[f], out[f] = schedule_buffer(buf, T, G, L, th, td, order, F)
    return z, rest, out, np.full(nf, T, dtype=np.int64)


@njit(cache=True)
def lockstep_slice_folds(pack, K, L, R, th, td, order, F):
    """Per fold of R consecutive slices of ``pack`` (``ws``/``is``), T = rows of ``pack``."""
    S = pack.shape[0]
    nq = (K + L - 1) // L
    nf = (nq + R - 1) // R
    z = np.zeros(nf, dtype=np.int64)
    rest = np.zeros(nf, dtype=np.int64)
    out = np.zeros(nf, dtype=np.int64)
    buf = np.zeros((max(S, 1), R), dtype=np.uint64)
    for f in range(nf):
        G = min(R, nq - f * R)
        _slice_buffer(pack, f * R, G, S, K, L, buf)
        z[f], rest[f], out[f] = schedule_buffer(buf, S, G, L, th, td, order, F)
    return z, rest, out, np.full(nf, S, dtype=np.int64)


@njit(cache=True)
def tap_row_lengths(pack, K, L, th, td, order, F):
    """``barrier``: per row of ``pack`` alone (G = 1), cycles of its stream from no free run."""
    S = pack.shape[0]
    T = (K + L - 1) // L
    out = np.zeros(S, dtype=np.int64)
    buf = np.zeros((max(T, 1), 1), dtype=np.uint64)
    for s in range(S):
        _row_buffer(pack, s, 1, T, L, buf)
        z, rest, _o = schedule_buffer(buf, T, 1, L, th, td, order, F)
        out[s] = rest + _lead(min(z, T), 0, F)[0]
    return out


@njit(cache=True)
def tap_slice_lengths(pack, K, L, th, td, order, F):
    """``barrier``: per slice of ``pack`` alone (``ws``/``is``), cycles of its stream."""
    S = pack.shape[0]
    nq = (K + L - 1) // L
    out = np.zeros(nq, dtype=np.int64)
    buf = np.zeros((max(S, 1), 1), dtype=np.uint64)
    for q in range(nq):
        _slice_buffer(pack, q, 1, S, K, L, buf)
        z, rest, _o = schedule_buffer(buf, S, 1, L, th, td, order, F)
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
    for f in range(nf):
        G = min(R, S - f * R)
        _row_buffer(pack, f * R, G, T, L, buf)
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
