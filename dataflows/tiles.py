"""Tile schedules: a GEMM's folds grouped into buffer tiles, with the DRAM and SRAM words each
tile moves. The SimPy engine replays one event per tile, never per cycle.

Loop order. Each GEMM takes whichever of two loop orders moves fewer DRAM bytes: column folds
outer and row folds inner (SCALE-Sim's order, kept on a tie), or row folds outer. Each fold
reads one block of A and one of B:

======  ============================  ============================  ==============================
df      A (M×K) block, time axis      B (K×N) block, time axis      C (M×N)
======  ============================  ============================  ==============================
``os``  R rows × K, along K           K × C cols, along K           R×C finished outputs per fold
``ws``  M × R·L, along M              R·L × C, stationary           M × C partial sums: kept on
                                                                    chip over the K folds if they
                                                                    fit, else spilled and read back
``is``  C × R·L, stationary           R·L × N, along N              C × N partial sums, as ``ws``
======  ============================  ============================  ==============================

What the buffer holds (``docs/validation.md``, "DRAM traffic: what is fetched"). Each operand's
half buffer (the other half takes the next tile) holds words as they are stored in DRAM: an
im2col operand (``Gemm.im2col``) is the feature map it expands, so a block of it is the
feature-map words its windows touch (its footprint; padding is not fetched), and a plain matrix
block is its elements. An operand in a compressed format (``dataflows/formats.py``) is held as
its SRAM format holds it: a plain block fills the half buffer with its words times its own
held / dense ratio (the ratio of the blocks' nonzeros each fold reads), and is fetched as its
words times its DRAM format's ratio; an im2col operand whose map is stored compressed
(``MapRatios``) counts every set of feature-map words it fetches or holds as a run of them
compressed by their own nonzeros (``_map_blocks``, in bits). A grouped GEMM with compressed
operands is planned group by group, each on its own blocks (``_grouped_schedule``). Per
operand, in loop order (sizes as held):

* an operand whose words all fit in its half buffer is fetched once, and stays;
* otherwise the buffer keeps the block the previous fold read, if it fits: the same block again
  costs nothing, and a different block that fits beside it brings in only the words the kept one
  does not hold (the halo two im2col blocks share; plain blocks share none);
* any other block is fetched whole, or, when it does not fit, streamed in ⌈footprint /
  half buffer⌉ equal parts along its time axis (whole output rows for a feature map streamed
  along its positions), each part fetched as its own footprint.

C of a col2im ``bwd_input`` (``Gemm.col2im``) is partial sums scattered into the input
gradient: its blocks are counted as the words they land in. All of them fitting the C half
buffer, every word stays and is written once; otherwise the block the previous fold accumulated
into stays while folds accumulate into it, and when another comes its words are written out —
but for the words the new one lands in too, which stay when both fit together — and the new
block's words that an earlier block landed in are read back (the rest start at zero); a block
that does not fit is written right after its fold. (A plain C is the same with blocks that share
no words.)

Every lowering whose windows are a correlation of a stored map carries its geometry: the
(i, j, c) K order (the channels padded to the lanes at every kernel position: padding slots
hold no words, in the plain operand across K and in C across N too), and a transposed
``bwd_input``'s windows over the stored output gradient (one output phase, or every position
through every tap: a correlation of the gradient with zeros inserted, which hold no words);
an N:M-condensed A keeps its geometry, a block of slots counting the words of the groups of
columns it selects from (a constant fan-in: one group of all K columns); a ``bwd_weight`` B
whose positions are padded image by image keeps its geometry, a run of its K slots holding a
run of positions (the padding slots hold no words, in B and across A's K).
``tests/dataflows/test_traffic.py`` walks this loop nest over explicit sets of resident words and
equals the schedule word for word, operands stored and held compressed included (every plain
block, and every set of feature-map words an im2col operand fetches or holds, its own formats'
words). A reduced GEMM of structured sparsity
(``Gemm.kept``: per group the rows, k's and columns it keeps of the GEMM it reduces, whose
geometry it carries) counts a block as the stored words its kept rows × kept k's (or columns)
touch — feature-map words for an im2col operand, kept elements for a plain one, for C the kept
elements or the input-gradient words they land in; a slot padding a group holds none — each
group walked on its own (``_kept_schedule``; ``tests/dataflows/test_traffic_kept.py`` walks it
too). A condensed plain A read K per row carries the geometry of a 1×1 convolution, one
position per image; C of a condensed col2im ``bwd_input`` keeps its geometry, its columns
mapped to the ones it keeps where fan-in drops some (``Gemm.c_cols``, counted as a reduced
GEMM's C). An operand that carries no geometry and is stored in fewer words than its matrix
is counted as a share of the matrix: its words scaled by stored / expanded elements, and so
are the words it fills its half buffer with. No GEMM a layer lowers to, condensed or reduced,
is such an operand (``test_no_gemm_a_model_lowers_to_is_counted_as_a_share``): only a GEMM
built by hand with a stored size and nothing that says where its words sit.
Operands are assumed laid out in DRAM in the order the dataflow reads them (a tiled layout), so
a tile's fresh words of one operand are one contiguous run. A fold whose fresh data exceeds a
half buffer is split into chunks along its time dimension; consecutive small folds are merged
into one tile until a half buffer of some operand would overflow.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from common.jit import njit
from dataflows.formats import run_bits
from dataflows.gemm import Gemm
from dataflows.systolic import DenseMapping

# fold-record columns
A_DRAM, B_DRAM, CR_DRAM, CW_DRAM, COMPUTE, A_SRAM, B_SRAM, C_SRAM = range(8)
N_COLS = 8
TILE_FIELDS = ("a_dram", "b_dram", "c_read", "c_write", "compute", "a_sram", "b_sram", "c_sram",
               "folds")


@njit(cache=True)
def _real(a, b, per, real):
    """Indices in a .. b−1 of an axis that hold data: all of them (``per`` 0), or those whose
    index modulo ``per`` is below ``real`` (an axis padded to ``per`` slots every ``real``)."""
    if per == 0:
        return b - a
    return (b // per - a // per) * real + min(b % per, real) - min(a % per, real)


@njit(cache=True)
def _folds_os(m, k, n, rows, cols, lanes, rows_outer, nper, nreal):
    """``os`` folds in loop order, column folds outer or row folds outer. A's blocks are the
    row folds (R rows × K), B's the column folds (K × C cols); the A and B DRAM columns hold
    the block each fold reads (``_fetches`` turns them into words). C's words leave out the
    padding of N (``nper``, ``nreal``: ``_real``)."""
    rf, cf = (m + rows - 1) // rows, (n + cols - 1) // cols
    out = np.empty((rf * cf, N_COLS), dtype=np.int64)  # every column written
    cpf = (k + lanes - 1) // lanes + rows + cols - 2
    n_out, n_in = (rf, cf) if rows_outer else (cf, rf)
    f = 0
    for o in range(n_out):
        for q in range(n_in):
            i, j = (o, q) if rows_outer else (q, o)
            r = min(rows, m - i * rows)
            c = min(cols, n - j * cols)
            out[f, A_DRAM], out[f, B_DRAM] = i, j
            out[f, CR_DRAM] = 0
            out[f, CW_DRAM] = r * _real(j * cols, j * cols + c, nper, nreal)
            out[f, COMPUTE] = cpf
            out[f, A_SRAM] = r * k
            out[f, B_SRAM] = k * c
            out[f, C_SRAM] = r * c
            f += 1
    return out


@njit(cache=True)
def _folds_ws(m, k, n, rows, cols, lanes, cap_c, rows_outer, nper, nreal):
    """``ws`` folds in loop order: column folds outer (a column's partial sums stay if they
    fit), or K folds outer (partial sums of all N must fit to stay). A's blocks are the K folds
    (M × R·L), B's every fold's own (R·L × C, index i·cf + j)."""
    kr = rows * lanes
    rf, cf = (k + kr - 1) // kr, (n + cols - 1) // cols
    out = np.empty((rf * cf, N_COLS), dtype=np.int64)  # every column written
    cpf = 2 * rows + cols + m - 2
    n_out, n_in = (rf, cf) if rows_outer else (cf, rf)
    f = 0
    for o in range(n_out):
        for q in range(n_in):
            i, j = (o, q) if rows_outer else (q, o)
            r = min(kr, k - i * kr)
            c = min(cols, n - j * cols)
            cw = m * _real(j * cols, j * cols + c, nper, nreal)
            psum_fits = m * _real(0, n, nper, nreal) <= cap_c if rows_outer else cw <= cap_c
            out[f, A_DRAM], out[f, B_DRAM] = i, i * cf + j
            if psum_fits:
                out[f, CW_DRAM] = cw if i == rf - 1 else 0
                out[f, CR_DRAM] = 0
            else:
                out[f, CW_DRAM] = cw
                out[f, CR_DRAM] = cw if i > 0 else 0
            out[f, COMPUTE] = cpf
            out[f, A_SRAM] = m * r
            out[f, B_SRAM] = r * c
            out[f, C_SRAM] = m * c
            f += 1
    return out


@njit(cache=True)
def _folds_is(m, k, n, rows, cols, lanes, cap_c, rows_outer, nper, nreal):
    """``is`` folds in loop order: column (M) folds outer (a column's partial sums stay if
    they fit), or K folds outer (partial sums of all of M must fit to stay). A's blocks are
    every fold's own (C × R·L, index i·cf + j), B's the K folds (R·L × N)."""
    kr = rows * lanes
    rf, cf = (k + kr - 1) // kr, (m + cols - 1) // cols
    out = np.empty((rf * cf, N_COLS), dtype=np.int64)  # every column written
    cpf = 2 * rows + cols + n - 2
    n_out, n_in = (rf, cf) if rows_outer else (cf, rf)
    f = 0
    for o in range(n_out):
        for q in range(n_in):
            i, j = (o, q) if rows_outer else (q, o)
            r = min(kr, k - i * kr)
            c = min(cols, m - j * cols)
            nr = _real(0, n, nper, nreal)
            psum_fits = m * nr <= cap_c if rows_outer else c * nr <= cap_c
            out[f, A_DRAM], out[f, B_DRAM] = i * cf + j, i
            if psum_fits:
                out[f, CW_DRAM] = c * nr if i == rf - 1 else 0
                out[f, CR_DRAM] = 0
            else:
                out[f, CW_DRAM] = c * nr
                out[f, CR_DRAM] = c * nr if i > 0 else 0
            out[f, COMPUTE] = cpf
            out[f, A_SRAM] = c * r
            out[f, B_SRAM] = r * n
            out[f, C_SRAM] = c * n
            f += 1
    return out


@njit(cache=True)
def _cols_hit(geo, ja, jb):
    """Input columns that whole output rows read through kernel columns ja .. jb−1 (of a map
    with zeros inserted, ``geo[19]``, only its stored columns)."""
    w, kw_, sw, pw, dw, wo, iw = geo[3], geo[5], geo[7], geo[9], geo[11], geo[13], geo[19]
    hit = np.zeros(w, dtype=np.bool_)
    for ox in range(wo):
        for j in range(ja, min(jb, kw_)):
            x = ox * sw - pw + j * dw
            if 0 <= x < w and (iw == 0 or x % iw == 0):
                hit[x] = True
    return hit


@njit(cache=True)
def _rows_patch(geo, y0, y1, t0, t1):
    """``_patch`` for whole output rows y0 .. y1−1 of one image, row by row of the input: a
    kernel row's taps read the same input columns on every output row, so an input row holds
    the union of the column sets of the kernel rows that land on it (at most three sets: the
    first and last kernel rows of t0 .. t1−1 may be partial)."""
    h, kw, sh, ph, dh = geo[2], geo[5], geo[6], geo[8], geo[10]
    i_lo, i_hi = t0 // kw, (t1 - 1) // kw
    first = _cols_hit(geo, t0 - i_lo * kw, kw if i_hi > i_lo else t1 - i_lo * kw)
    last = _cols_hit(geo, 0, t1 - i_hi * kw)
    full = _cols_hit(geo, 0, kw)
    n_first, n_last, n_full = first.sum(), last.sum(), full.sum()
    n_both = (first | last).sum()
    total = 0
    for y in range(max(0, y0 * sh - ph + i_lo * dh), min(h, (y1 - 1) * sh - ph + i_hi * dh + 1)):
        if geo[18] and y % geo[18]:  # a row of inserted zeros
            continue
        has_first = has_last = has_full = False
        for i in range(i_lo, i_hi + 1):
            d = y + ph - i * dh
            if d < 0 or d % sh or not y0 <= d // sh < y1:
                continue
            if i == i_lo:
                has_first = True
            elif i == i_hi:
                has_last = True
            else:
                has_full = True
        if has_full:
            total += n_full
        elif has_first and has_last:
            total += n_both
        elif has_first:
            total += n_first
        elif has_last:
            total += n_last
    return total


@njit(cache=True)
def _patch(geo, p0, p1, t0, t1, stamp, state):
    """Feature-map pixels of one channel (all images) that the output positions p0 .. p1−1
    read through the kernel taps t0 .. t1−1 (flat i·kw + j): in-bounds pixels, each once.
    Positions that span whole images count one image and multiply."""
    hw, wo = geo[12] * geo[13], geo[13]
    total = 0
    p = p0
    while p < p1:
        img = p // hw
        end = min(p1, (img + 1) * hw)
        if p == img * hw and end == (img + 1) * hw and p1 - p >= 2 * hw:
            full = (p1 - p) // hw  # whole images from here on: one counted, the rest alike
            end = p + full * hw
        else:
            full = 1
        stop = min(end, p + hw) if full > 1 else end
        if p % wo == 0 and stop % wo == 0:  # whole output rows
            total += full * _rows_patch(geo, (p % hw) // wo, (stop - 1) % hw // wo + 1, t0, t1)
            p = end
            continue
        state[0] += 1
        cnt = _mark(geo, img, p, stop, t0, t1, stamp, -1, state[0])
        total += cnt * full
        p = end
    return total


@njit(cache=True)
def _k_range(geo, k0, k1):
    """Columns k0 .. k1−1 of the im2col matrix; of an N:M-condensed one (``geo[15]`` slots per
    group of ``geo[16]`` columns), the columns of the groups its slots k0 .. k1−1 belong to:
    the dense activations those slots select from."""
    n, m = geo[15], geo[16]
    if n == 0:
        return k0, k1
    k = (geo[14] or geo[1]) * geo[4] * geo[5]
    return (k0 // n) * m, min(k, ((k1 - 1) // n + 1) * m)


@njit(cache=True)
def _chan_taps(geo, c, k0, k1):
    """The kernel taps (flat i·kw + j, a range t0 .. t1−1) of channel ``c`` among columns
    k0 .. k1−1: columns (c, i, j), or (i, j, c) with ``geo[14]`` channel slots per tap."""
    taps, cp = geo[4] * geo[5], geo[14]
    if cp == 0:
        return max(k0 - c * taps, 0), min(k1 - c * taps, taps)
    return max((k0 - c + cp - 1) // cp, 0), min((k1 - c + cp - 1) // cp, taps)


@njit(cache=True)
def _footprint(geo, p0, p1, k0, k1, stamp, state):
    """Feature-map words of the im2col block positions p0 .. p1−1 × columns k0 .. k1−1
    (columns (c, i, j), channel outermost, or (i, j, c)): per channel, the pixels its taps in
    the block read."""
    k0, k1 = _k_range(geo, k0, k1)
    taps, cp = geo[4] * geo[5], geo[14]
    if cp > 0:  # (i, j, c): the channels fall in at most three runs with the same taps
        cuts = np.sort(np.array([0, min(k0 % cp, geo[1]), min(k1 % cp, geo[1]), geo[1]]))
        words = 0
        for q in range(3):
            if cuts[q] < cuts[q + 1]:
                t0, t1 = _chan_taps(geo, cuts[q], k0, k1)
                if t0 < t1:
                    words += (cuts[q + 1] - cuts[q]) * _patch(geo, p0, p1, t0, t1, stamp, state)
        return words
    c0, c1 = k0 // taps, (k1 - 1) // taps
    if c0 == c1:
        return _patch(geo, p0, p1, k0 - c0 * taps, k1 - c0 * taps, stamp, state)
    words = _patch(geo, p0, p1, k0 - c0 * taps, taps, stamp, state)
    words += _patch(geo, p0, p1, 0, k1 - c1 * taps, stamp, state)
    if c1 - c0 > 1:
        words += (c1 - c0 - 1) * _patch(geo, p0, p1, 0, taps, stamp, state)
    return words


@njit(cache=True)
def _mark(geo, img, p0, p1, t0, t1, stamp, only, tag):
    """Mark with ``tag`` the pixels of one channel of image ``img`` that positions p0 .. p1−1
    (clipped to the image) read through taps t0 .. t1−1 — only those marked ``only`` when it is
    not −1 —; returns how many it marked."""
    h, w, kw, sh, sw, ph, pw = geo[2], geo[3], geo[5], geo[6], geo[7], geo[8], geo[9]
    dh, dw, wo, ih, iw = geo[10], geo[11], geo[13], geo[18], geo[19]
    hw = geo[12] * wo
    cnt = 0
    for q in range(max(p0, img * hw), min(p1, (img + 1) * hw)):
        oy = (q % hw) // wo
        ox = q % wo
        for t in range(t0, t1):
            y = oy * sh - ph + (t // kw) * dh
            x = ox * sw - pw + (t % kw) * dw
            if (0 <= y < h and 0 <= x < w and (ih == 0 or y % ih == 0)
                    and (iw == 0 or x % iw == 0) and stamp[y * w + x] != tag
                    and (only < 0 or stamp[y * w + x] == only)):
                stamp[y * w + x] = tag
                cnt += 1
    return cnt


@njit(cache=True)
def _rows_read(geo, img, p0, p1, t0, t1):
    """The span of input rows (first, last) that positions p0 .. p1−1 of image ``img`` read
    through taps t0 .. t1−1 (unclipped: it may reach into the padding)."""
    kw, sh, ph, dh, ho, wo = geo[5], geo[6], geo[8], geo[10], geo[12], geo[13]
    hw = ho * wo
    q0, q1 = max(p0, img * hw), min(p1, (img + 1) * hw) - 1
    return ((q0 % hw) // wo * sh - ph + (t0 // kw) * dh,
            (q1 % hw) // wo * sh - ph + ((t1 - 1) // kw) * dh)


@njit(cache=True)
def _positions_reaching(geo, img, y_lo, y_hi):
    """Positions of image ``img`` (a range, whole output rows) whose windows can read an input
    row in y_lo .. y_hi."""
    kh, sh, ph, dh, ho, wo = geo[4], geo[6], geo[8], geo[10], geo[12], geo[13]
    oy_lo = max(0, -((-(y_lo + ph - (kh - 1) * dh)) // sh))
    oy_hi = min(ho - 1, (y_hi + ph) // sh)
    return img * ho * wo + oy_lo * wo, img * ho * wo + (oy_hi + 1) * wo


@njit(cache=True)
def _overlap(geo, b1, b2, stamp, state):
    """Feature-map words two im2col blocks (rows of ``_im2col_blocks``' block array) both
    touch: only their shared channels and images can hold any. Channels with the same taps in
    both, and images covered alike, are counted once."""
    taps = geo[4] * geo[5]
    hw = geo[12] * geo[13]
    b1, b2 = b1.copy(), b2.copy()
    b1[2], b1[3] = _k_range(geo, b1[2], b1[3])
    b2[2], b2[3] = _k_range(geo, b2[2], b2[3])
    total = 0
    last = (-1, -1, -1, -1)
    last_cnt = 0
    c_lo = max(b1[2], b2[2]) // taps
    c_hi = (min(b1[3], b2[3]) - 1) // taps
    if geo[14] > 0:  # (i, j, c): any channel may be in both
        c_lo, c_hi = 0, geo[1] - 1
    i_lo = max(b1[0], b2[0]) // hw
    i_hi = (min(b1[1], b2[1]) - 1) // hw
    for c in range(c_lo, c_hi + 1):
        t = (*_chan_taps(geo, c, b1[2], b1[3]), *_chan_taps(geo, c, b2[2], b2[3]))
        if t[0] >= t[1] or t[2] >= t[3]:
            continue
        if t == last:
            total += last_cnt
            continue
        cnt = 0
        cov = -1  # the count of an image both blocks cover whole
        for img in range(i_lo, i_hi + 1):
            whole_both = (b1[0] <= img * hw and b1[1] >= (img + 1) * hw
                          and b2[0] <= img * hw and b2[1] >= (img + 1) * hw)
            if whole_both and cov >= 0:
                cnt += cov
                continue
            state[0] += 2
            # only positions whose windows reach the input rows both blocks read can share
            y_lo, y_hi = _rows_read(geo, img, b1[0], b1[1], t[0], t[1])
            y2_lo, y2_hi = _rows_read(geo, img, b2[0], b2[1], t[2], t[3])
            y_lo, y_hi = max(y_lo, y2_lo), min(y_hi, y2_hi)
            if y_lo > y_hi:
                got = 0
            else:
                q_lo, q_hi = _positions_reaching(geo, img, y_lo, y_hi)
                _mark(geo, img, max(b1[0], q_lo), min(b1[1], q_hi), t[0], t[1], stamp, -1,
                      state[0] - 1)
                got = _mark(geo, img, max(b2[0], q_lo), min(b2[1], q_hi), t[2], t[3], stamp,
                            state[0] - 1, state[0])
            if whole_both:
                cov = got
            cnt += got
        last, last_cnt = t, cnt
        total += cnt
    return total


@njit(cache=True)
def _overlaps(geo, b1, b2):
    """``_overlap`` of each pair of rows of ``b1`` and ``b2``."""
    stamp = np.zeros(geo[2] * geo[3], dtype=np.int64)
    state = np.zeros(1, dtype=np.int64)
    out = np.zeros(b1.shape[0], dtype=np.int64)
    for q in range(b1.shape[0]):
        out[q] = _overlap(geo, b1[q], b2[q], stamp, state)
    return out


@njit(cache=True)
def _fits(words, ratio, cap):
    """Whether ``words`` dense words held at ``ratio`` (held / dense words of their format)
    fit ``cap`` words: exactly ``words ≤ cap`` at a ratio of 1."""
    return words * ratio <= cap * (1.0 + 1e-12) + 1e-9


@njit(cache=True)
def _fetches(folds, col, fetch, fp, new, whole, bcap, pidx, pboth, hr, cap):
    """Into column ``col`` of fold records ``folds``, which holds the block each fold reads:
    the DRAM words of that operand at each fold. An operand that fits whole is fetched once
    (``new``: the words a block brings in at its first use). Otherwise the buffer keeps the
    block the previous fold read if it fits (``bcap``: per block, the most dense words of it
    that fit the ``cap`` words of the half buffer as it is held, ``hr``: held / dense words):
    the same block again costs nothing, and a new one that fits beside it brings in only the
    words the kept one does not hold (``pboth[pidx[f]]``: the words of the two blocks
    together, where ``pidx[f]`` ≥ 0; ``pidx`` empty or −1: not counted, plain blocks share no
    words); any other is fetched as ``fetch`` says."""
    nf = folds.shape[0]
    if whole:
        seen = np.zeros(fetch.shape[0], dtype=np.bool_)
        for f in range(nf):
            b = folds[f, col]
            folds[f, col] = 0
            if not seen[b]:
                seen[b] = True
                folds[f, col] = new[b]
        return
    counted = pidx.shape[0] > 0
    prev = -1
    for f in range(nf):
        b = folds[f, col]
        held = prev if prev >= 0 and fp[prev] <= bcap[prev] else -1
        prev = b
        folds[f, col] = 0
        if b == held:
            continue
        folds[f, col] = fetch[b]
        if held < 0 or not counted or pidx[f] < 0:
            continue
        both = pboth[pidx[f]]
        # the kept block as held, and the new one's other words as the new block is held
        if _fits(1, fp[held] * hr[held] + (both - fp[held]) * hr[b], cap):
            folds[f, col] = both - fp[held]


def _reals(a: np.ndarray, b: np.ndarray, per: int, real: int) -> np.ndarray:
    """``_real`` of each range a[i] .. b[i]−1."""
    if per == 0:
        return b - a
    return (b // per - a // per) * real + np.minimum(b % per, real) - np.minimum(a % per, real)


@njit(cache=True)
def _tap_positions(geo, y, x, pos):
    """Into ``pos``: per kernel tap t (flat i·kw + j), the output position of one image
    (oy·Wo + ox) whose window reads input pixel (y, x) through t, −1 for none."""
    kh, kw, sh, sw, ph, pw = geo[4], geo[5], geo[6], geo[7], geo[8], geo[9]
    dh, dw, ho, wo = geo[10], geo[11], geo[12], geo[13]
    for t in range(kh * kw):
        oy, ox = y + ph - (t // kw) * dh, x + pw - (t % kw) * dw
        pos[t] = -1
        if oy % sh == 0 and ox % sw == 0 and 0 <= oy // sh < ho and 0 <= ox // sw < wo:
            pos[t] = (oy // sh) * wo + ox // sw


@njit(cache=True)
def _col(geo, c, t):
    """Column of channel c, tap t in the K order ((c, i, j), or (i, j, c) with slots)."""
    return c * geo[4] * geo[5] + t if geo[14] == 0 else t * geo[14] + c


@njit(cache=True)
def _first_touch(geo, rstep, cstep, rows_outer):
    """Feature-map words each cell of a grid over a col2im'd C (row blocks of ``rstep``
    positions × column blocks of ``cstep`` columns) lands in that no cell before it in the
    walk (row blocks outer, or column blocks outer) landed in: per cell, ra × cb. A word's
    first cell follows from the taps that read it: column blocks outer, the block of its
    channel's first tap that reads it, then the row block of the first position that reads it
    through that block's taps; row blocks outer, the row block of the first position that reads
    it, then the column block of the first tap reading it from there."""
    m, n = geo[0] * geo[12] * geo[13], (geo[14] or geo[1]) * geo[4] * geo[5]
    first = np.zeros(((m + rstep - 1) // rstep, (n + cstep - 1) // cstep), dtype=np.int64)
    if rows_outer:
        _first_rows_outer(geo, rstep, cstep, first)
    else:
        _first_cols_outer(geo, rstep, cstep, first)
    return first


@njit(cache=True)
def _first_rows_outer(geo, rstep, cstep, first):
    """``_first_touch`` with row blocks outer, into ``first``."""
    n_img, cg, h, w = geo[0], geo[1], geo[2], geo[3]
    taps, hw = geo[4] * geo[5], geo[12] * geo[13]
    ra = first.shape[0]
    pos = np.empty(taps, dtype=np.int64)
    cnt = np.zeros((ra, taps), dtype=np.int64)  # words by (first row block, its first tap)
    for y in range(h):
        for x in range(w):
            _tap_positions(geo, y, x, pos)
            for img in range(n_img):
                best, tb = ra, -1
                for t in range(taps):
                    if pos[t] >= 0 and (img * hw + pos[t]) // rstep < best:
                        best, tb = (img * hw + pos[t]) // rstep, t
                if tb >= 0:
                    cnt[best, tb] += 1
    for c in range(cg):
        for t in range(taps):
            b = _col(geo, c, t) // cstep
            for a in range(ra):
                first[a, b] += cnt[a, t]


@njit(cache=True)
def _first_cols_outer(geo, rstep, cstep, first):
    """``_first_touch`` with column blocks outer, into ``first``."""
    n_img, cg, h, w = geo[0], geo[1], geo[2], geo[3]
    taps, hw = geo[4] * geo[5], geo[12] * geo[13]
    ra, m = first.shape[0], geo[0] * geo[12] * geo[13]
    pos = np.empty(taps, dtype=np.int64)
    # per channel and tap t0: the end t1 of the taps in t0's column block; the (t0, t1) pairs
    # that occur numbered
    ends = np.zeros((cg, taps), dtype=np.int64)
    pid = np.full((taps, taps + 1), -1, dtype=np.int64)
    npair = 0
    for c in range(cg):
        for t0 in range(taps):
            b = _col(geo, c, t0) // cstep
            t1 = t0 + 1
            while t1 < taps and _col(geo, c, t1) // cstep == b:
                t1 += 1
            ends[c, t0] = t1
            if pid[t0, t1] < 0:
                pid[t0, t1] = npair
                npair += 1
    # words by (first tap, end of the taps in that tap's column block; first row block)
    cnt = np.zeros((npair, ra), dtype=np.int64)
    for y in range(h):
        for x in range(w):
            _tap_positions(geo, y, x, pos)
            t0 = 0
            while t0 < taps and pos[t0] < 0:
                t0 += 1
            if t0 == taps:
                continue
            for img in range(n_img):
                e = m
                for t1 in range(t0 + 1, taps + 1):
                    if pos[t1 - 1] >= 0:
                        e = min(e, img * hw + pos[t1 - 1])
                    if pid[t0, t1] >= 0:
                        cnt[pid[t0, t1], e // rstep] += 1
    for c in range(cg):
        for t0 in range(taps):
            b = _col(geo, c, t0) // cstep
            q = pid[t0, ends[c, t0]]
            for a in range(ra):
                first[a, b] += cnt[q, a]


@njit(cache=True)
def _c_words(seq, fp, first, pidx, pboth, whole, total, cap):
    """(reads, writes) of C per fold for a C col2im'd into a feature map, fold f accumulating
    into cell ``seq[f]`` (``fp``: each cell's words; ``first``: the words no earlier cell
    landed in; ``pidx``, ``pboth``: as ``_fetches``'). All of it fits (``whole``): every word
    stays, and is written once, at the end (``total``). Otherwise the cell the previous fold
    accumulated into stays while folds accumulate into it; when another comes, its words are
    written out — but for those the new one lands in too when both fit together, which stay —
    and the new cell's words that an earlier one landed in are read back (the rest start at
    zero); a cell that does not fit is written right after its fold."""
    nf = seq.shape[0]
    rd = np.zeros(nf, dtype=np.int64)
    wr = np.zeros(nf, dtype=np.int64)
    if whole:
        wr[nf - 1] = total
        return rd, wr
    seen = np.zeros(fp.shape[0], dtype=np.bool_)
    held = -1
    for f in range(nf):
        b = seq[f]
        if b == held:
            continue
        kept = 0
        if held >= 0:
            both = pboth[pidx[f]] if pidx[f] >= 0 else -1
            if 0 <= both <= cap:
                kept = fp[held] + fp[b] - both
            wr[f] += fp[held] - kept
        rd[f] = (fp[b] if seen[b] else fp[b] - first[b]) - kept
        seen[b] = True
        if fp[b] <= cap:
            held = b
        else:
            wr[f] += fp[b]
            held = -1
    if held >= 0:
        wr[nf - 1] += fp[held]
    return rd, wr


@njit(cache=True)
def _alike(rows, geo):
    """Rows of block coordinates (one block, or two: 4 or 8 columns, positions then columns of
    the im2col matrix of geometry ``geo``) moved by whole images to the first image the first
    block starts in, and in the (c, i, j) order by whole channels to the first channel it
    starts in — blocks alike up to whole images and channels touch as many words (every
    channel's map has the same shape); returns the index of one row per layout (its first
    row; layouts numbered in order of first appearance) and each row's layout. One pass over a
    hash table of the moved rows."""
    n, w = rows.shape
    hw = geo[12] * geo[13]
    taps = geo[4] * geo[5] if geo[14] == 0 and geo[15] == 0 else 0
    key = np.empty((n, w), dtype=np.int64)
    for q in range(n):
        base = rows[q, 0] - rows[q, 0] % hw
        cbase = rows[q, 2] - rows[q, 2] % taps if taps else 0
        for c in range(w):
            key[q, c] = rows[q, c] - (base if c % 4 < 2 else cbase)
    size = 2
    while size < 2 * n:
        size *= 2
    table = np.full(size, -1, dtype=np.int64)  # slot -> layout
    first = np.empty(n, dtype=np.int64)
    inv = np.empty(n, dtype=np.int64)
    nl = 0
    for q in range(n):
        h = 0
        for c in range(w):
            h = (h ^ key[q, c]) * 1099511628211
        h = (h ^ (h >> 29)) & (size - 1)
        while table[h] >= 0:
            r = first[table[h]]
            same = True
            for c in range(w):
                if key[r, c] != key[q, c]:
                    same = False
                    break
            if same:
                break
            h = (h + 1) & (size - 1)
        if table[h] < 0:
            table[h] = nl
            first[nl] = q
            nl += 1
        inv[q] = table[h]
    return first[:nl].copy(), inv


@njit(cache=True)
def _pair_slots(seq0, seq1, col, fit):
    """For two block sequences (the two loop orders: column ``col`` of ``seq0`` and of
    ``seq1``), per fold the index of the pair (the previous fold's block, its block) among the
    distinct pairs whose words ``_fetches`` needs (they differ and both fit, ``fit`` per
    block), −1 elsewhere; and those pairs as keys first · blocks + second, in order of first
    appearance. One pass over a hash table that grows with the pairs, behind the pair that
    last began with each block (a loop nest meets the same few pairs again and again, most
    blocks followed by the same block each time)."""
    nb = fit.shape[0]
    size = 256
    table = np.full(size, -1, dtype=np.int64)
    keys = np.empty(64, dtype=np.int64)
    npairs = 0
    idx0 = np.full(seq0.shape[0], -1, dtype=np.int64)
    idx1 = np.full(seq1.shape[0], -1, dtype=np.int64)
    nxt = np.full(nb, -1, dtype=np.int64)  # per block, the block after it in the last pair
    nxt_at = np.empty(nb, dtype=np.int64)  # and that pair's index
    for s in range(2):
        seq, idx = (seq0, idx0) if s == 0 else (seq1, idx1)
        for f in range(1, seq.shape[0]):
            a, b = seq[f - 1, col], seq[f, col]
            if a == b or not fit[a] or not fit[b]:
                continue
            if nxt[a] == b:  # the pair that last began with block a
                idx[f] = nxt_at[a]
                continue
            key = a * nb + b
            h = ((key ^ (key >> 29)) * 2654435761) & (size - 1)
            while table[h] >= 0 and keys[table[h]] != key:
                h = (h + 1) & (size - 1)
            if table[h] < 0:
                if npairs == keys.shape[0]:
                    grown = np.empty(2 * npairs, dtype=np.int64)
                    grown[:npairs] = keys
                    keys = grown
                keys[npairs] = key
                table[h] = npairs
                npairs += 1
                if 2 * npairs > size:  # keep the table at most half full
                    size *= 4
                    table = np.full(size, -1, dtype=np.int64)
                    for q in range(npairs):
                        g = ((keys[q] ^ (keys[q] >> 29)) * 2654435761) & (size - 1)
                        while table[g] >= 0:
                            g = (g + 1) & (size - 1)
                        table[g] = q
                    h = -1
            nxt[a] = b
            nxt_at[a] = table[h] if h >= 0 else npairs - 1
            idx[f] = nxt_at[a]
    return keys[:npairs].copy(), idx0, idx1


def _pair_words(seqs: list[np.ndarray], col: int, blocks: np.ndarray, geo: np.ndarray,
                fp: np.ndarray, fit: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray],
                                                          np.ndarray]:
    """For the block sequences of the loop orders (column ``col`` of each; one or two), per
    fold the index of its pair in the second result (−1 where ``_fetches`` needs none: the
    blocks are the same, one does not fit — ``fit`` per block —, or they are plain matrix
    blocks, which share no words), and per pair the feature-map words of its two blocks
    together. Each pair is counted once for both orders, and pairs alike up to whole images
    and channels (``_alike``) once: any one of them stands for all, as they share as many
    words."""
    if not geo.shape[0]:
        none = np.zeros(0, dtype=np.int64)
        return (none, none), none
    pairs, idx0, idx1 = _pair_slots(seqs[0], seqs[-1] if len(seqs) > 1 else seqs[0][:0],
                                    col, fit)
    if pairs.shape[0] == 0:
        return (idx0, idx1), pairs
    nb = blocks.shape[0]
    p1, p2 = pairs // nb, pairs % nb
    first, inv = _alike(np.ascontiguousarray(np.concatenate([blocks[p1], blocks[p2]],
                                                            axis=1)), geo)
    shared = _overlaps(geo, np.ascontiguousarray(blocks[p1[first]]),
                       np.ascontiguousarray(blocks[p2[first]]))
    both = fp[p1] + fp[p2] - shared[inv]
    return (idx0, idx1), both


@njit(cache=True)
def _im2col_blocks(geo, blocks, stream, bcap):
    """Per block (position range × column range, one row of ``blocks``): its footprint in
    feature-map words and the words fetching it moves. A block that does not fit its ``bcap``
    (the most of its words the half buffer holds) streams through the half buffer in
    ⌈footprint / bcap⌉ equal parts along its time axis
    (``stream``: 0 positions, in whole output rows — such a block spans whole images —, 1
    columns, −1 none: a stationary block is loaded whole), each part fetched as its own
    footprint."""
    stamp = np.zeros(geo[2] * geo[3], dtype=np.int64)
    state = np.zeros(1, dtype=np.int64)
    hw, ho, wo = geo[12] * geo[13], geo[12], geo[13]
    nb = blocks.shape[0]
    fetch = np.zeros(nb, dtype=np.int64)
    fp = np.zeros(nb, dtype=np.int64)
    for b in range(nb):
        p0, p1, k0, k1 = blocks[b, 0], blocks[b, 1], blocks[b, 2], blocks[b, 3]
        fp[b] = _footprint(geo, p0, p1, k0, k1, stamp, state)
        fetch[b] = fp[b]
        cap = max(1, bcap[b])
        if stream >= 0 and fp[b] > bcap[b]:
            # time steps: output rows (a block streamed along positions spans whole images)
            # or columns
            step = wo if stream == 0 else 1
            lo, length = (p0, (p1 - p0) // wo) if stream == 0 else (k0, k1 - k0)
            parts = min(length, (fp[b] + cap - 1) // cap)
            # parts of whole rows alike up to whole images: by first row and length
            memo = np.full((ho, 2), -1, dtype=np.int64)
            short = length // parts
            words = 0
            for q in range(parts):
                a = lo + q * length // parts * step
                z = lo + (q + 1) * length // parts * step
                if stream == 1:
                    words += _footprint(geo, p0, p1, a, z, stamp, state)
                    continue
                r, extra = (a % hw) // wo, (z - a) // wo - short
                if memo[r, extra] < 0:
                    memo[r, extra] = _footprint(geo, a, z, k0, k1, stamp, state)
                words += memo[r, extra]
            fetch[b] = words
    return fetch, fp


@njit(cache=True)
def _group_tiles(folds, groups, fold_compute, scale_ab, scale_c, occ_ab, cap_a, cap_b, cap_c,
                 row_folds, col_folds, transposed, group_folds=False):
    """Chunk oversized folds and merge small ones into tiles; repeat the folds ``groups``
    times, with ``fold_compute`` (one per fold of every group) as each fold's cycles,
    ``scale_ab`` (one row per fold of every group, or one row for all) scaling its A and B
    DRAM words and ``occ_ab`` (the same) the words its fresh A and B occupy in their half
    buffers; each scaled column rounded on its running sum, so that nothing is lost to
    rounding. The per-fold inputs come column folds outer; ``transposed``: the folds come row
    folds outer (fold r·col_folds + c of a group is fold c·row_folds + r of theirs). Returns
    a (tiles, 9) int64 array with the columns of TILE_FIELDS; ``group_folds``: ``folds`` holds
    every group's folds, one group after another (a reduced GEMM whose groups keep rows of their
    own), not one group's for all. One function, long: one pass over every fold of every group,
    the open tile held in locals between iterations."""
    nrec = folds.shape[0]
    nf = nrec // groups if group_folds else nrec
    per_fold = scale_ab.shape[0] > 1
    src = np.empty(nf, dtype=np.int64)  # each fold's index in the per-fold inputs
    for f in range(nf):
        src[f] = (f % col_folds) * row_folds + f // col_folds if transposed else f
    occ_a0 = occ_ab[0, 0]
    occ_b0 = occ_ab[0, 1]
    # upper bound on tiles: every chunk its own tile
    bound = 0
    chunks = np.ones(nrec, dtype=np.int64)
    for f in range(nrec):
        a = int(folds[f, A_DRAM] * occ_a0 + 0.5)
        b = int(folds[f, B_DRAM] * occ_b0 + 0.5)
        cw = int((folds[f, CW_DRAM] + folds[f, CR_DRAM]) * scale_c + 0.5)
        n = 1
        if cap_a > 0 and a > cap_a:
            n = max(n, (a + cap_a - 1) // cap_a)
        if cap_b > 0 and b > cap_b:
            n = max(n, (b + cap_b - 1) // cap_b)
        if cap_c > 0 and cw > cap_c:
            n = max(n, (cw + cap_c - 1) // cap_c)
        n = min(n, max(1, fold_compute[src[f % nf]]))
        chunks[f] = n
        bound += n
    # rows filled as tiles close
    out = np.empty((bound * (1 if group_folds else groups) + 1, 9), dtype=np.int64)
    t = 0
    cur = np.zeros(9, dtype=np.int64)
    cur_a = cur_b = 0  # half-buffer words of A and B the tile holds
    have = False
    vals = np.empty(8, dtype=np.int64)  # one fold's columns, then one chunk's (reused)
    part = np.empty(8, dtype=np.int64)
    e0 = e1 = e2 = e3 = e4 = e5 = 0.0  # running sums: A, B, C read, C write, A and B held
    d0 = d1 = d2 = d3 = d4 = d5 = 0  # what they gave so far
    for _g in range(groups):
        base = _g * nf if group_folds else 0
        for f in range(nf):
            fr = base + f  # this fold's record
            n = chunks[fr]
            at = _g * nf + src[f]
            r = at if per_fold else 0
            e0 += float(folds[fr, 0]) * scale_ab[r, 0]
            e1 += float(folds[fr, 1]) * scale_ab[r, 1]
            e2 += float(folds[fr, 2]) * scale_c
            e3 += float(folds[fr, 3]) * scale_c
            e4 += float(folds[fr, 0]) * occ_ab[r, 0]
            e5 += float(folds[fr, 1]) * occ_ab[r, 1]
            v0, v1, v2 = int(e0 + 0.5) - d0, int(e1 + 0.5) - d1, int(e2 + 0.5) - d2
            v3, o_a, o_b = int(e3 + 0.5) - d3, int(e4 + 0.5) - d4, int(e5 + 0.5) - d5
            d0, d1, d2, d3, d4, d5 = d0 + v0, d1 + v1, d2 + v2, d3 + v3, d4 + o_a, d5 + o_b
            if n == 1:  # the fold whole (most folds): no division, no copies
                if have and ((cap_a > 0 and cur_a + o_a > cap_a)
                             or (cap_b > 0 and cur_b + o_b > cap_b)
                             or (cap_c > 0 and cur[CW_DRAM] + cur[CR_DRAM] + v3 + v2 > cap_c)):
                    out[t, :] = cur
                    t += 1
                    cur[:] = 0
                    cur_a = cur_b = 0
                cur[0] += v0
                cur[1] += v1
                cur[2] += v2
                cur[3] += v3
                cur[COMPUTE] += fold_compute[at]
                for col in range(A_SRAM, N_COLS):
                    cur[col] += folds[fr, col]
                cur[8] += 1
                cur_a += o_a
                cur_b += o_b
                have = True
                continue
            vals[0], vals[1], vals[2], vals[3] = v0, v1, v2, v3
            for col in range(COMPUTE, N_COLS):
                vals[col] = folds[fr, col]
            vals[COMPUTE] = fold_compute[at]
            for ch in range(n):
                for col in range(N_COLS):
                    q, rem = divmod(vals[col], n)
                    part[col] = q + (1 if ch < rem else 0)
                q, rem = divmod(o_a, n)
                p_a = q + (1 if ch < rem else 0)
                q, rem = divmod(o_b, n)
                p_b = q + (1 if ch < rem else 0)
                over = have and (
                    (cap_a > 0 and cur_a + p_a > cap_a)
                    or (cap_b > 0 and cur_b + p_b > cap_b)
                    or (cap_c > 0 and cur[CW_DRAM] + cur[CR_DRAM] + part[CW_DRAM]
                        + part[CR_DRAM] > cap_c)
                )
                if over:
                    out[t, :] = cur
                    t += 1
                    cur[:] = 0
                    cur_a = cur_b = 0
                for col in range(N_COLS):
                    cur[col] += part[col]
                cur_a += p_a
                cur_b += p_b
                if ch == 0:
                    cur[8] += 1
                have = True
    if have:
        out[t, :] = cur
        t += 1
    return out[:t].copy()  # sized exactly: the bound can be far above the tiles made


@dataclass(frozen=True)
class TileSchedule:
    """The tiles of one GEMM in execution order. Word counts are per tile; ``compute`` is the
    array's cycles for the tile with no stalls. Columns as ``TILE_FIELDS``."""

    gemm: Gemm
    mapping: DenseMapping
    tiles: np.ndarray  # (n_tiles, len(TILE_FIELDS)) int64
    outer: str = "cols"  # which folds the loop nest walks outermost: "cols" or "rows"

    def __len__(self) -> int:
        return int(self.tiles.shape[0])

    def column(self, name: str) -> np.ndarray:
        return self.tiles[:, TILE_FIELDS.index(name)]

    def total(self, name: str) -> int:
        return int(self.column(name).sum())


def _per_fold(ratio, nf_all: int, name: str) -> np.ndarray:
    """A compression ratio pair for the GEMM or per fold: one row for every fold (a pair), or
    one row per fold."""
    r = np.asarray(ratio, dtype=np.float64)
    if r.ndim == 1:
        return np.broadcast_to(r, (nf_all, 2))[:1].copy()
    if r.shape != (nf_all, 2):
        raise ValueError(f"{name} has shape {r.shape}, expected ({nf_all}, 2)")
    return r


def _geometry(gemm: Gemm) -> tuple[str, np.ndarray | None]:
    """Which operand is an im2col of a feature map ('A', 'B' or '') and its geometry as the
    int64 array ``_patch`` reads (20 numbers: ``Gemm.im2col``'s, then the channel slots per
    tap, 0 for the (c, i, j) order, then an N:M-condensed A's slots per group and group width,
    0 0 for none, then the slots per image of a B whose positions are padded image by image,
    0 for none: ``_real_rows`` maps its rows to positions, then the strides of the zeros
    inserted into the map's rows and columns, 0 0 for none: only the pixels at their multiples
    are stored words); None when the GEMM carries none or
    its shape is not that geometry's: a sparse rewrite that changed the matrix otherwise."""
    if gemm.im2col is None:
        return "", None
    which, *g = gemm.im2col
    g = (list(g) + [0] * 6)[:20]
    n_img, cg, _h, _w, kh, kw = g[:6]
    ho, wo, cp, sn, sm, pp = g[12], g[13], g[14], g[15], g[16], g[17]
    pos, fan = (gemm.M, gemm.K) if which == "A" else (gemm.K, gemm.N)
    if pp:  # B's positions padded image by image: its rows as its images' slots
        if which != "B" or sn or pp < ho * wo or pos != n_img * pp:
            return "", None
        pos = n_img * ho * wo
    full = (cp or cg) * kh * kw
    if sn:  # N:M slots over the columns of an A read dense
        ok = which == "A" and gemm.k_read == full and fan == (full // sm) * sn + min(sn, full % sm)
        if pos != n_img * ho * wo or not ok:
            return "", None
    elif (pos, fan) != (n_img * ho * wo, full) or gemm.k_read:
        return "", None
    if cp and cp < cg:
        return "", None
    return which, np.array(g, dtype=np.int64)


def _padding(gemm: Gemm, geo: tuple[str, np.ndarray | None]) -> tuple[int, int, int, int]:
    """The padding of K and of N that an (i, j, c) order puts in, and of K that positions
    padded image by image put in (each: slots per period and data slots among them,
    ``_real``; 0, 0: none), from the im2col operand's geometry or C's (``Gemm.col2im``):
    plain operands and C hold no words there."""
    which, g = geo
    if g is not None and g[17]:  # bwd_weight's K: each image's positions, then padding
        kpad = (int(g[17]), int(g[12] * g[13]))
        return (*kpad, int(g[14]), int(g[1])) if g[14] else (*kpad, 0, 0)
    if g is not None and g[14] and not g[15]:
        return (int(g[14]), int(g[1]), 0, 0) if which == "A" else (0, 0, int(g[14]), int(g[1]))
    c = gemm.col2im
    if c is not None and len(c) > 14 and c[14] and gemm.N == c[14] * c[4] * c[5]:
        return 0, 0, int(c[14]), int(c[1])
    return 0, 0, 0, 0


def _block_ranges(mapping: DenseMapping, m: int, k: int, n: int) -> tuple[np.ndarray, int,
                                                                           np.ndarray, int]:
    """The blocks of A and of B the folds read, as (row start, row end, column start, column
    end) of the operand matrix, with each one's time axis (0 rows, 1 columns, −1 stationary),
    in the block order of the fold kernels."""
    r, c, lanes, df = mapping.rows, mapping.cols, mapping.lanes, mapping.dataflow

    def cuts(extent, step):
        lo = np.arange(0, extent, step, dtype=np.int64)
        return lo, np.minimum(lo + step, extent)

    if df == "os":
        (i0, i1), (j0, j1) = cuts(m, r), cuts(n, c)
        a = np.stack([i0, i1, np.zeros_like(i0), np.full_like(i0, k)], axis=1)
        b = np.stack([np.zeros_like(j0), np.full_like(j0, k), j0, j1], axis=1)
        return a, 1, b, 0
    (i0, i1) = cuts(k, r * lanes)
    if df == "ws":
        (j0, j1) = cuts(n, c)
        a = np.stack([np.zeros_like(i0), np.full_like(i0, m), i0, i1], axis=1)
        b = np.stack([np.repeat(i0, len(j0)), np.repeat(i1, len(j0)), np.tile(j0, len(i0)),
                      np.tile(j1, len(i0))], axis=1)
        return a, 0, b, -1
    (j0, j1) = cuts(m, c)
    a = np.stack([np.tile(j0, len(i0)), np.tile(j1, len(i0)), np.repeat(i0, len(j0)),
                  np.repeat(i1, len(j0))], axis=1)
    b = np.stack([i0, i1, np.zeros_like(i0), np.full_like(i0, n)], axis=1)
    return a, -1, b, 1


def _real_rows(blocks: np.ndarray, geo: np.ndarray) -> np.ndarray:
    """Blocks of an im2col operand with their rows as positions (n, oh, ow): as they are, or,
    with the positions padded image by image (``geo[17]`` slots an image), the positions their
    rows' data slots hold — a run of rows holds a run of positions."""
    if not geo[17]:
        return blocks
    out = blocks.copy()
    out[:, :2] = _reals(np.zeros_like(out[:, :2]), out[:, :2], int(geo[17]),
                        int(geo[12] * geo[13]))
    return out


def _block_ratios(mapping: DenseMapping, m: int, k: int, n: int,
                  ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per block of A and of B (``_block_ranges``' order), its ratio (one per fold of every
    group, column folds outer): the mean over the groups of the folds that read it — every fold
    reading a block in a group has that block's ratio."""
    rows, cols, kr, df = mapping.rows, mapping.cols, mapping.rows * mapping.lanes, mapping.dataflow
    if df == "os":
        rf, cf = -(-m // rows), -(-n // cols)
    else:
        rf, cf = -(-k // kr), -(-(n if df == "ws" else m) // cols)
    nblk = {"os": (rf, cf), "ws": (rf, rf * cf), "is": (rf * cf, rf)}[df]
    if ratio.shape[0] == 1 or (ratio == ratio[0]).all():  # one ratio pair: every block alike
        return np.full(nblk[0], ratio[0, 0]), np.full(nblk[1], ratio[0, 1])
    f = np.arange(rf * cf)
    i, j = f % rf, f // rf  # column folds outer: fold j·rf + i
    idx = {"os": (i, j), "ws": (i, i * cf + j), "is": (i * cf + j, i)}[df]
    groups = ratio.shape[0] // (rf * cf)
    out = []
    for x in (0, 1):
        at = np.tile(idx[x], groups)
        out.append(np.bincount(at, weights=ratio[:, x], minlength=nblk[x])
                   / np.maximum(np.bincount(at, minlength=nblk[x]), 1))
    return out[0], out[1]


def _block_caps(cap: int, ratio: np.ndarray) -> np.ndarray:
    """Per block, the most of its dense words that fit ``cap`` held words when the block is
    held at ``ratio`` (held / dense words): ``cap`` itself at a ratio of 1."""
    quot = np.floor(cap / np.maximum(ratio, 1e-6) + 1e-9).astype(np.int64)
    return np.where(ratio == 1.0, cap, quot).astype(np.int64)


def _operand_blocks(gemm: Gemm, mapping: DenseMapping, geo, caps: tuple[int, int],
                    held: tuple[np.ndarray, np.ndarray], stored: np.ndarray,
                    pad: tuple[int, int, int, int]):
    """Per operand (A, B), the arguments of ``_fetches`` after the block sequence: the blocks,
    the im2col geometry (empty for a plain matrix), per block its fetched words, footprint and
    first-use words, whether the operand fits its half buffer whole, per block the most of its
    words that fit the half buffer, per block its held / counted words, the half buffer's
    words. A block is held in its operand's SRAM format (``held``: per block, held / dense
    words): the buffer is compared with what it holds. An im2col operand counts feature-map
    words (``_im2col_blocks``; fitting whole — its footprint at the matrix's held ratio —, it is
    fetched once, all of it with its first block); any other counts matrix words, held as
    stored (times the stored share, so a matrix stored smaller fits as stored), and leaves out
    the slots ``pad`` says hold no data (K's of B, N's of C; ``_padding``)."""
    m, k, n = gemm.M, gemm.K, gemm.N
    a_blk, a_time, b_blk, b_time = _block_ranges(mapping, m, k, n)
    out = []
    for x, blk, time, cap, share, extent, hr in (
            ("A", a_blk, a_time, caps[0], stored[0], (m, k), held[0]),
            ("B", b_blk, b_time, caps[1], stored[1], (k, n), held[1])):
        if x == geo[0]:
            size = (blk[:, 1] - blk[:, 0]) * (blk[:, 3] - blk[:, 2])
            whole_ratio = float(hr @ size / max(1, size.sum())) if (hr != 1.0).any() else 1.0
            blk = _real_rows(blk, geo[1])
            once = _im2col_blocks(geo[1], _real_rows(np.array([[0, extent[0], 0, extent[1]]]),
                                                     geo[1]), -1, np.zeros(1, np.int64))[1]
            whole = bool(_fits(once[0], whole_ratio, cap))
            bcap = _block_caps(cap, hr)
            if whole:  # fetched once, whole: its blocks need no counting
                fetch = fp = np.zeros(blk.shape[0], dtype=np.int64)
            else:
                first, inv = _alike(np.ascontiguousarray(blk), geo[1])
                if (bcap != cap).any():  # blocks alike but held unlike stream unlike
                    key, inv = np.unique(np.stack([inv, bcap], axis=1), axis=0,
                                         return_inverse=True)
                    first = np.zeros(key.shape[0], dtype=np.int64)
                    first[inv.reshape(-1)] = np.arange(inv.shape[0])
                    inv = inv.reshape(-1)
                fetch, fp = (x[inv] for x in _im2col_blocks(
                    geo[1], np.ascontiguousarray(blk[first]), time,
                    np.ascontiguousarray(bcap[first])))
            new = np.zeros_like(fetch)
            new[0] = once[0]
            out.append((blk, geo[1], fetch, fp, new, whole, bcap, hr, cap))
            continue
        # data slots only: K padded (B's rows, A's columns), N padded (B's columns)
        rpad, cpad = ((0, 0), pad[:2]) if x == "A" else (pad[:2], pad[2:])
        words = _reals(blk[:, 0], blk[:, 1], *rpad) * _reals(blk[:, 2], blk[:, 3], *cpad)
        hx = hr * share
        whole = bool(_fits(1, float(words @ hx), cap))
        out.append((blk, np.zeros(0, dtype=np.int64), words, words, words, whole,
                    _block_caps(cap, hx), hx, cap))
    return out


def _c_geometry(gemm: Gemm) -> np.ndarray | None:
    """C's geometry when it is col2im'd into a feature map (``Gemm.col2im``, as ``_geometry``
    gives an operand's), else None."""
    if gemm.col2im is None:
        return None
    g = (list(gemm.col2im) + [0] * 6)[:20]
    n_img, cg, kh, kw, ho, wo, cp = g[0], g[1], g[4], g[5], g[12], g[13], g[14]
    if (gemm.M, gemm.N) != (n_img * ho * wo, (cp or cg) * kh * kw) or cp and cp < cg:
        return None
    return np.array(g, dtype=np.int64)


@dataclass(frozen=True)
class _Col2im:
    """C's blocks when it is col2im'd into a feature map: the cells of a grid (``os``: row
    folds × column folds; ``ws``: column folds of all M; ``is``: M folds of all N), each
    cell's words and all of C's, the same in both loop orders."""

    geo: np.ndarray
    rstep: int
    cstep: int
    cells: np.ndarray  # (row start, row end, column start, column end) per cell
    fp: np.ndarray
    total: int

    @classmethod
    def of(cls, mapping: DenseMapping, m: int, n: int, geo: np.ndarray,
           cap_c: int) -> _Col2im:
        rows, cols = mapping.rows, mapping.cols
        rstep, cstep = {"os": (rows, cols), "ws": (m, cols), "is": (cols, n)}[mapping.dataflow]
        r0 = np.arange(0, m, rstep, dtype=np.int64)
        c0 = np.arange(0, n, cstep, dtype=np.int64)
        a0, b0 = np.repeat(r0, len(c0)), np.tile(c0, len(r0))
        cells = np.stack([a0, np.minimum(a0 + rstep, m), b0, np.minimum(b0 + cstep, n)],
                         axis=1)
        first, inv = _alike(cells, geo)
        fp = _im2col_blocks(geo, np.ascontiguousarray(cells[first]), -1,
                            np.zeros(first.shape[0], np.int64))[1][inv]
        total = int(_im2col_blocks(geo, np.array([[0, m, 0, n]]), -1,
                                   np.zeros(1, np.int64))[1][0])
        return cls(geo, rstep, cstep, cells, fp, total)


def _c_cells(f: np.ndarray, mapping: DenseMapping, m: int, n: int) -> np.ndarray:
    """The cell (``_Col2im``'s) of a C col2im'd into a feature map that each of the fold
    records ``f`` accumulates into (A and B columns still the block indices)."""
    df, cols = mapping.dataflow, mapping.cols
    if df == "os":
        seq = f[:, A_DRAM] * (-(-n // cols)) + f[:, B_DRAM]
    elif df == "ws":
        seq = f[:, B_DRAM] % (-(-n // cols))
    else:
        seq = f[:, A_DRAM] % (-(-m // cols))
    return np.ascontiguousarray(seq).reshape(-1, 1)


@njit(cache=True)
def _dram_totals(f):
    """The A, B, C read and C write DRAM words of fold records ``f``, summed."""
    out = np.zeros(4, dtype=np.int64)
    for q in range(f.shape[0]):
        for col in range(4):
            out[col] += f[q, col]
    return out


def _orders(gemm: Gemm, mapping: DenseMapping, cap_c: int, ops, npad: tuple[int, int],
            cgeo: np.ndarray | None, orders: tuple[bool, ...]) -> list[np.ndarray]:
    """The fold records of the loop orders ``orders`` (False: column folds outer, True: row
    folds outer), their A and B DRAM columns in words (``ops`` as ``_operand_blocks`` gives
    them; ``npad``: the padding of N, which C's words leave out; ``cgeo``: C's geometry when
    it is col2im'd, its C columns then the words ``_c_words`` gives). The pairs of blocks that
    consecutive folds read are counted once for both orders (``_pair_words``)."""
    kernel, extra = {"os": (_folds_os, ()), "ws": (_folds_ws, (cap_c,)),
                     "is": (_folds_is, (cap_c,))}[mapping.dataflow]
    m, n = gemm.M, gemm.N
    out = [kernel(m, gemm.K, n, mapping.rows, mapping.cols, mapping.lanes, *extra, order,
                  *npad) for order in orders]
    if isinstance(cgeo, _KeptC):  # a reduced GEMM's C
        cgeo.fill(out, orders, mapping, m, n, cap_c)
    elif cgeo is not None:
        c = _Col2im.of(mapping, m, n, cgeo, cap_c)
        seqs = [_c_cells(f, mapping, m, n) for f in out]
        idx, pboth = _pair_words(seqs, 0, c.cells, c.geo, c.fp, c.fp <= cap_c)
        for order, f, seq, ix in zip(orders, out, seqs, idx, strict=False):
            first = _first_touch(c.geo, c.rstep, c.cstep,
                                 order and mapping.dataflow == "os").reshape(-1)
            f[:, CR_DRAM], f[:, CW_DRAM] = _c_words(seq[:, 0], c.fp, first, ix, pboth,
                                                    c.total <= cap_c, c.total, cap_c)
    for col, (blk, g, fetch, fp, new, whole, bcap, hr, cap) in zip((A_DRAM, B_DRAM), ops,
                                                                    strict=True):
        if isinstance(g, _MapOp):  # its feature map stored compressed: counted in bits
            g.fill(out, col)
            continue
        none = np.zeros(0, dtype=np.int64)
        if whole:
            idx, pboth = (none, none), none
        elif isinstance(g, _KeptIm2col):  # a reduced GEMM's im2col operand
            idx, pboth = g.pair_words(out, col, blk, fp, fp <= bcap)
        else:
            idx, pboth = _pair_words(out, col, blk, g, fp, fp <= bcap)
        for f, ix in zip(out, idx, strict=False):
            _fetches(f, col, fetch, fp, new, whole, bcap, ix, pboth, hr, cap)
    return out


def _fold_cycles(fold_cycles: np.ndarray | None, mapping: DenseMapping, n: int) -> np.ndarray:
    """The cycles of each of the ``n`` folds of every group: the dense mapping's (the GEMM's
    overhead on the first fold) where none are given, else the given ones, checked."""
    if fold_cycles is None:
        fold_cycles = np.full(n, mapping.cycles_per_fold, dtype=np.int64)
        fold_cycles[0] += mapping.gemm_overhead
    elif fold_cycles.shape[0] != n:
        raise ValueError(f"fold_cycles has {fold_cycles.shape[0]} entries for {n} folds")
    return fold_cycles


#: The loop order ``schedule`` chose, by what chooses it (the GEMM, its mapping, the half
#: buffers, the operands' ratios; not the cycles): a layer's dense baseline and its sparse
#: run plan the same GEMM with other cycles, and the second plans only the order chosen.
_CHOSEN: dict[tuple, bool] = {}
_CHOSEN_MAX = 4096


def _chosen_order(gemm: Gemm, mapping: DenseMapping, caps: tuple[int, int, int], ops,
                  npad: tuple[int, int], cgeo: np.ndarray | None, scale_ab: np.ndarray,
                  held_ratio: np.ndarray, scale_c: float) -> tuple[np.ndarray, bool]:
    """The fold records of the loop order that moves fewer DRAM bytes (column folds outer on a
    tie, as SCALE-Sim), its DRAM words weighted by the operands' mean DRAM ratios, and whether
    it is row folds outer. An order chosen before for the same inputs (``_CHOSEN``) is the
    only one planned."""
    key = (gemm, mapping, caps, scale_ab.shape, scale_ab.tobytes(), held_ratio.shape,
           held_ratio.tobytes())
    row_first = _CHOSEN.get(key)
    if row_first is not None:
        return _orders(gemm, mapping, caps[2], ops, npad, cgeo, (row_first,))[0], row_first
    if (scale_ab == 1.0).all():  # the mean of ones is one, however it is summed
        mean_ab = [1.0, 1.0]
    else:  # the mean over every fold, summed as numpy sums the rows of all of them
        nf_all = mapping.folds * gemm.groups
        mean_ab = np.ascontiguousarray(np.broadcast_to(scale_ab, (nf_all, 2))).mean(axis=0)
    weights = np.array([*mean_ab, scale_c, scale_c], dtype=np.float64)
    cols_outer, rows_outer = _orders(gemm, mapping, caps[2], ops, npad, cgeo, (False, True))
    traffic = [float(_dram_totals(f) @ weights) for f in (cols_outer, rows_outer)]
    row_first = bool(traffic[1] < traffic[0])
    if len(_CHOSEN) >= _CHOSEN_MAX:
        _CHOSEN.clear()
    _CHOSEN[key] = row_first
    return (rows_outer if row_first else cols_outer), row_first


# ---- reduced GEMMs (``Gemm.kept``): blocks of kept rows × kept k's (or columns) ----


@njit(cache=True)
def _kept_pos(geo, p):
    """The output position (n·Ho·Wo + oy·Wo + ox) of row ``p`` of an im2col matrix of geometry
    ``geo`` (its positions padded image by image, ``geo[17]``, or not); −1 for none."""
    if p < 0:
        return -1
    pp, hw = geo[17], geo[12] * geo[13]
    if pp == 0:
        return p
    if p % pp >= hw:
        return -1
    return (p // pp) * hw + p % pp


@njit(cache=True)
def _kept_mark(geo, rmap, blocks, tapset, c, stamp, tag):
    """Mark with ``tag`` the pixels of channel ``c`` (all images) that the kept positions of
    each block read through its taps (``tapset[c]``: per block, which taps); returns how many
    it marked."""
    taps = geo[4] * geo[5]
    h, w, kw, sh, sw, ph, pw = geo[2], geo[3], geo[5], geo[6], geo[7], geo[8], geo[9]
    dh, dw, wo, ih, iw = geo[10], geo[11], geo[13], geo[18], geo[19]
    hw = geo[12] * wo
    cnt = 0
    for b in range(blocks.shape[0]):
        for r in range(blocks[b, 0], blocks[b, 1]):
            pos = _kept_pos(geo, rmap[r])
            if pos < 0:
                continue
            img, oy, ox = pos // hw, (pos % hw) // wo, pos % wo
            for t in range(taps):
                if not tapset[c, b * taps + t]:
                    continue
                y = oy * sh - ph + (t // kw) * dh
                x = ox * sw - pw + (t % kw) * dw
                if (0 <= y < h and 0 <= x < w and (ih == 0 or y % ih == 0)
                        and (iw == 0 or x % iw == 0)):
                    at = (img * h + y) * w + x
                    if stamp[at] != tag:
                        stamp[at] = tag
                        cnt += 1
    return cnt


@njit(cache=True)
def _kept_union(geo, rmap, cmap, blocks, stamp, state):
    """Feature-map words the blocks (rows of (row start, row end, column start, column end)
    of a reduced matrix; one or two) touch together, its row r standing for row ``rmap[r]`` and
    its column q for column ``cmap[q]`` of the im2col matrix of geometry ``geo`` (−1: a slot
    padding a group, no word). Per channel, the pixels its kept positions read through its
    kept taps; channels with the same taps in every block are counted once."""
    cg, taps, cp = geo[1], geo[4] * geo[5], geo[14]
    nb = blocks.shape[0]
    tapset = np.zeros((cg, nb * taps), dtype=np.bool_)
    have = np.zeros(cg, dtype=np.bool_)
    for b in range(nb):
        for q in range(blocks[b, 2], blocks[b, 3]):
            col = cmap[q]
            if col < 0:
                continue
            c, t = (col // taps, col % taps) if cp == 0 else (col % cp, col // cp)
            if c < cg:
                tapset[c, b * taps + t] = True
                have[c] = True
    chans = np.flatnonzero(have)
    key = np.zeros(chans.shape[0], dtype=np.int64)
    for i in range(chans.shape[0]):
        for t in range(nb * taps):
            key[i] = key[i] * 1000003 + (1 + tapset[chans[i], t])
    order = np.argsort(key, kind="mergesort")
    total = 0
    prev, prev_cnt = -1, 0
    for i in order:
        c = chans[i]
        if prev >= 0:
            same = True
            for t in range(nb * taps):
                if tapset[c, t] != tapset[prev, t]:
                    same = False
                    break
            if same:  # a channel with the taps of the one before: as many words
                total += prev_cnt
                continue
        state[0] += 1
        prev, prev_cnt = c, _kept_mark(geo, rmap, blocks, tapset, c, stamp, state[0])
        total += prev_cnt
    return total


@njit(cache=True)
def _kept_steps(geo, rmap, r0, r1):
    """The rows r0 .. r1−1 of a reduced im2col operand where a time step begins: a run of
    rows on one output row (rows with no position belong to none)."""
    wo = geo[13]
    starts = np.empty(r1 - r0, dtype=np.int64)
    ns = 0
    last = -1
    for r in range(r0, r1):
        pos = _kept_pos(geo, rmap[r])
        if pos >= 0 and pos // wo != last:
            starts[ns] = r
            ns += 1
            last = pos // wo
    return starts[:ns]


@njit(cache=True)
def _kept_blocks(geo, rmap, cmap, blocks, stream, bcap, stamp, state):
    """``_im2col_blocks`` of a reduced im2col operand (``_kept_union``'s maps): per block its
    footprint and the words fetching it moves, streamed in ⌈footprint / bcap⌉ equal parts
    along its time axis when it does not fit (``stream``: 0 rows, a step the rows on one
    output row; 1 columns; −1 none), each part fetched as its own footprint. ``stamp`` (a word
    per pixel of a channel's maps) and ``state`` (the last tag) are ``_kept_union``'s."""
    nb = blocks.shape[0]
    fetch = np.zeros(nb, dtype=np.int64)
    fp = np.zeros(nb, dtype=np.int64)
    one = np.empty((1, 4), dtype=np.int64)
    for b in range(nb):
        fp[b] = _kept_union(geo, rmap, cmap, blocks[b:b + 1], stamp, state)
        fetch[b] = fp[b]
        cap = max(1, bcap[b])
        if stream < 0 or fp[b] <= bcap[b]:
            continue
        r0, r1, k0, k1 = blocks[b, 0], blocks[b, 1], blocks[b, 2], blocks[b, 3]
        starts = _kept_steps(geo, rmap, r0, r1) if stream == 0 else np.zeros(0, np.int64)
        ns = starts.shape[0] if stream == 0 else k1 - k0
        parts = min(ns, (fp[b] + cap - 1) // cap)
        words = 0
        for q in range(parts):
            a, z = q * ns // parts, (q + 1) * ns // parts
            if stream == 0:
                one[0, 0], one[0, 1] = starts[a], starts[z] if z < ns else r1
                one[0, 2], one[0, 3] = k0, k1
            else:
                one[0, 0], one[0, 1], one[0, 2], one[0, 3] = r0, r1, k0 + a, k0 + z
            words += _kept_union(geo, rmap, cmap, one, stamp, state)
        fetch[b] = words
    return fetch, fp


@njit(cache=True)
def _kept_pairs(geo, rmap, cmap, b1, b2, stamp, state):
    """``_kept_union`` of each pair of rows of ``b1`` and ``b2``."""
    out = np.zeros(b1.shape[0], dtype=np.int64)
    two = np.empty((2, 4), dtype=np.int64)
    for q in range(b1.shape[0]):
        two[0, :] = b1[q]
        two[1, :] = b2[q]
        out[q] = _kept_union(geo, rmap, cmap, two, stamp, state)
    return out


@njit(cache=True)
def _kept_first(geo, rmap, cmap, cells, ncols, rows_outer):
    """Per cell of a grid over a reduced col2im'd C (``cells`` row-major, ``ncols`` cells a
    row), the words it lands in that no cell before it in the walk (row blocks outer, or
    column blocks outer) landed in: the walk marks every word as it goes."""
    cg, taps, cp = geo[1], geo[4] * geo[5], geo[14]
    h, w, kw, sh, sw, ph, pw = geo[2], geo[3], geo[5], geo[6], geo[7], geo[8], geo[9]
    dh, dw, wo, ih, iw = geo[10], geo[11], geo[13], geo[18], geo[19]
    hw = geo[12] * wo
    seen = np.zeros(cg * geo[0] * h * w, dtype=np.bool_)
    n = cells.shape[0]
    first = np.zeros(n, dtype=np.int64)
    nrows = n // ncols
    for s in range(n):
        cell = s if rows_outer else (s % nrows) * ncols + s // nrows
        cnt = 0
        for q in range(cells[cell, 2], cells[cell, 3]):
            col = cmap[q]
            if col < 0:
                continue
            c, t = (col // taps, col % taps) if cp == 0 else (col % cp, col // cp)
            if c >= cg:
                continue
            for r in range(cells[cell, 0], cells[cell, 1]):
                pos = _kept_pos(geo, rmap[r])
                if pos < 0:
                    continue
                img, oy, ox = pos // hw, (pos % hw) // wo, pos % wo
                y = oy * sh - ph + (t // kw) * dh
                x = ox * sw - pw + (t % kw) * dw
                if (0 <= y < h and 0 <= x < w and (ih == 0 or y % ih == 0)
                        and (iw == 0 or x % iw == 0)):
                    at = ((c * geo[0] + img) * h + y) * w + x
                    if not seen[at]:
                        seen[at] = True
                        cnt += 1
        first[cell] = cnt
    return first


@njit(cache=True)
def _kept_c_plain(f, df, m, n, rows, cols, rreal, creal, cap_c, rows_outer):
    """Into the C columns of fold records ``f`` (A and B columns still the block indices) the
    partial sums a reduced GEMM's plain C moves, its cells' words their real rows × real
    columns (``rreal``, ``creal``: prefix counts of the rows and columns that hold data): as
    the fold kernels (``_folds_os`` ...) count them."""
    total = rreal[m] * creal[n]
    if df == 0:
        for q in range(f.shape[0]):
            i, j = f[q, A_DRAM], f[q, B_DRAM]
            r0, c0 = i * rows, j * cols
            f[q, CR_DRAM] = 0
            f[q, CW_DRAM] = ((rreal[min(m, r0 + rows)] - rreal[r0])
                             * (creal[min(n, c0 + cols)] - creal[c0]))
        return
    ext = n if df == 1 else m
    cf = (ext + cols - 1) // cols
    rf = f.shape[0] // cf
    for q in range(f.shape[0]):
        if df == 1:
            i, j = f[q, A_DRAM], f[q, B_DRAM] % cf
            size = rreal[m] * (creal[min(n, j * cols + cols)] - creal[j * cols])
        else:
            i, j = f[q, B_DRAM], f[q, A_DRAM] % cf
            size = (rreal[min(m, j * cols + cols)] - rreal[j * cols]) * creal[n]
        fits = total <= cap_c if rows_outer else size <= cap_c
        if fits:
            f[q, CW_DRAM] = size if i == rf - 1 else 0
            f[q, CR_DRAM] = 0
        else:
            f[q, CW_DRAM] = size
            f[q, CR_DRAM] = size if i > 0 else 0


@dataclass(frozen=True)
class _KeptIm2col:
    """One group's reduced im2col operand (or col2im'd C): the geometry of the matrix it
    reduces, and which of its rows and columns each reduced row and column stands for."""

    geo: np.ndarray
    rmap: np.ndarray
    cmap: np.ndarray
    #: ``_kept_union``'s stamps (a word per pixel of a channel's maps, all images) and last
    #: tag, shared by every count on one geometry
    stamp: np.ndarray
    state: np.ndarray

    @classmethod
    def of(cls, geo: np.ndarray, rmap: np.ndarray, cmap: np.ndarray,
           scratch: dict) -> _KeptIm2col:
        """The operand on ``geo``, its stamps kept in ``scratch`` for the next on it."""
        key = geo.tobytes()
        if key not in scratch:
            scratch[key] = (np.zeros(geo[0] * geo[2] * geo[3], dtype=np.int64),
                            np.zeros(1, dtype=np.int64))
        return cls(geo, rmap, cmap, *scratch[key])

    def blocks(self, blocks: np.ndarray, stream: int, bcap: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        return _kept_blocks(self.geo, self.rmap, self.cmap, np.ascontiguousarray(blocks),
                            stream, np.ascontiguousarray(bcap, dtype=np.int64), self.stamp,
                            self.state)

    def pair_words(self, seqs: list[np.ndarray], col: int, blocks: np.ndarray, fp: np.ndarray,
                   fit: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
        """``_pair_words`` of a reduced im2col operand: the words of each pair of blocks that
        consecutive folds read, counted once for both loop orders."""
        pairs, idx0, idx1 = _pair_slots(seqs[0], seqs[-1] if len(seqs) > 1 else seqs[0][:0],
                                        col, fit)
        nb = blocks.shape[0]
        p1, p2 = pairs // nb, pairs % nb
        shared = _kept_pairs(self.geo, self.rmap, self.cmap, np.ascontiguousarray(blocks[p1]),
                             np.ascontiguousarray(blocks[p2]), self.stamp, self.state)
        return (idx0, idx1), shared


def _real_map(idx: np.ndarray, per: int, real: int) -> np.ndarray:
    """Prefix counts (length + 1) of the entries of a kept map that hold data: kept (not −1)
    and not on a slot that an axis padded to ``per`` every ``real`` leaves empty (``_real``)."""
    ok = idx >= 0
    if per:
        ok &= idx % per < real
    return np.concatenate([[0], np.cumsum(ok)]).astype(np.int64)


def _kept_ops(gemm: Gemm, mapping: DenseMapping, base: tuple, grp: int, caps: tuple[int, int],
              held: tuple[np.ndarray, np.ndarray], scratch: dict):
    """``_operand_blocks`` of group ``grp`` of a reduced GEMM (``Gemm.kept``): an im2col
    operand's blocks counted as the feature-map words their kept rows × kept columns touch, a
    plain operand's as their kept rows × columns that hold data (``base``: the geometry and
    padding of the GEMM it reduces; ``scratch``: ``_KeptIm2col.of``'s)."""
    geo, pad = base
    rows, ks, cols = gemm.kept.group(grp)
    maps = {"A": (rows, ks), "B": (ks, cols)}
    a_blk, a_time, b_blk, b_time = _block_ranges(mapping, gemm.M, gemm.K, gemm.N)
    out = []
    for x, blk, time, cap, extent, hr in (("A", a_blk, a_time, caps[0], (gemm.M, gemm.K),
                                           held[0]),
                                          ("B", b_blk, b_time, caps[1], (gemm.K, gemm.N),
                                           held[1])):
        rmap, cmap = maps[x]
        if x == geo[0]:
            op = _KeptIm2col.of(geo[1], rmap, cmap, scratch)
            size = (blk[:, 1] - blk[:, 0]) * (blk[:, 3] - blk[:, 2])
            whole_ratio = float(hr @ size / max(1, size.sum())) if (hr != 1.0).any() else 1.0
            once = op.blocks(np.array([[0, extent[0], 0, extent[1]]]), -1,
                             np.zeros(1, np.int64))[1]
            whole = bool(_fits(once[0], whole_ratio, cap))
            bcap = _block_caps(cap, hr)
            if whole:  # fetched once, whole: its blocks need no counting
                fetch = fp = np.zeros(blk.shape[0], dtype=np.int64)
            else:
                fetch, fp = op.blocks(blk, time, bcap)
            new = np.zeros_like(fetch)
            new[0] = once[0]
            out.append((blk, op, fetch, fp, new, whole, bcap, hr, cap))
            continue
        rpad, cpad = ((0, 0), pad[:2]) if x == "A" else (pad[:2], pad[2:])
        rr, cr = _real_map(rmap, *rpad), _real_map(cmap, *cpad)
        words = (rr[blk[:, 1]] - rr[blk[:, 0]]) * (cr[blk[:, 3]] - cr[blk[:, 2]])
        whole = bool(_fits(1, float(words @ hr), cap))
        out.append((blk, np.zeros(0, dtype=np.int64), words, words, words, whole,
                    _block_caps(cap, hr), hr, cap))
    return out


@dataclass(frozen=True)
class _KeptC:
    """C of one group of a reduced GEMM: plain (its cells' real rows × real columns), or
    col2im'd into a feature map (``im2col``: its cells' kept positions × kept columns, counted
    as ``_Col2im``'s)."""

    rreal: np.ndarray
    creal: np.ndarray
    im2col: _KeptIm2col | None

    def fill(self, out: list[np.ndarray], orders: tuple[bool, ...], mapping: DenseMapping,
             m: int, n: int, cap_c: int) -> None:
        """C's read and write columns of the fold records ``out`` of the loop orders
        ``orders`` (A and B columns still the block indices)."""
        df = mapping.dataflow
        if self.im2col is None:
            for order, f in zip(orders, out, strict=True):
                _kept_c_plain(f, {"os": 0, "ws": 1, "is": 2}[df], m, n, mapping.rows,
                              mapping.cols, self.rreal, self.creal, cap_c, order)
            return
        op = self.im2col
        rstep, cstep = {"os": (mapping.rows, mapping.cols), "ws": (m, mapping.cols),
                        "is": (mapping.cols, n)}[df]
        r0 = np.arange(0, m, rstep, dtype=np.int64)
        c0 = np.arange(0, n, cstep, dtype=np.int64)
        a0, b0 = np.repeat(r0, len(c0)), np.tile(c0, len(r0))
        cells = np.stack([a0, np.minimum(a0 + rstep, m), b0, np.minimum(b0 + cstep, n)], axis=1)
        fp = op.blocks(cells, -1, np.zeros(cells.shape[0], np.int64))[1]
        total = int(op.blocks(np.array([[0, m, 0, n]]), -1, np.zeros(1, np.int64))[1][0])
        seqs = [_c_cells(f, mapping, m, n) for f in out]
        idx, pboth = op.pair_words(seqs, 0, cells, fp, fp <= cap_c)
        for order, f, seq, ix in zip(orders, out, seqs, idx, strict=False):
            first = _kept_first(op.geo, op.rmap, op.cmap, cells, len(c0), order and df == "os")
            f[:, CR_DRAM], f[:, CW_DRAM] = _c_words(seq[:, 0], fp, first, ix, pboth,
                                                    total <= cap_c, total, cap_c)


def _kept_c(gemm: Gemm, base: tuple, cgeo: np.ndarray | None, grp: int,
            scratch: dict) -> _KeptC:
    """``_KeptC`` of group ``grp`` of a reduced GEMM (``base``, ``scratch``: as
    ``_kept_ops``')."""
    pad = base[1]
    rows, _, cols = gemm.kept.group(grp)
    op = None if cgeo is None else _KeptIm2col.of(cgeo, rows, cols, scratch)
    return _KeptC(_real_map(rows, 0, 0), _real_map(cols, *pad[2:]), op)


def _kept_schedule(gemm: Gemm, mapping: DenseMapping, caps: tuple[int, int, int],
                   fold_cycles: np.ndarray | None, compression, held) -> TileSchedule:
    """``schedule`` of a reduced GEMM (``Gemm.kept``): each group's blocks counted as the
    stored words they touch (its own kept rows, k's and columns), the loop order the one that
    moves fewer DRAM bytes over all groups."""
    cap_a, cap_b, cap_c = caps
    m, k, n, groups = gemm.M, gemm.K, gemm.N, gemm.groups
    full = replace(gemm, M=gemm.kept.shape[0], K=gemm.kept.shape[1], N=gemm.kept.shape[2],
                   a_stored=0, b_stored=0, c_stored=0, k_read=0, kept=None)
    geo = _geometry(full)
    base = (geo, _padding(full, geo))
    cgeo = _c_geometry(full)
    nf_all = mapping.folds * groups
    held_ratio = _per_fold(compression if held is None else held, nf_all, "held")
    scale_ab = _per_fold(compression, nf_all, "compression")
    ratios = _block_ratios(mapping, m, k, n, held_ratio)
    per_order: list[list[np.ndarray]] = [[], []]
    # groups that keep the same indices move the same words (every group's map has the same
    # shape): each distinct one planned once (a depthwise convolution's groups keep few sets)
    done: dict[bytes, list[np.ndarray]] = {}
    scratch: dict = {}
    for grp in range(groups):
        maps = gemm.kept.group(grp)
        key = b"".join(a.tobytes() for a in maps)
        if key not in done:
            ops = _kept_ops(gemm, mapping, base, grp, (cap_a, cap_b), ratios, scratch)
            done[key] = _orders(gemm, mapping, cap_c, ops, (0, 0),
                                _kept_c(gemm, base, cgeo, grp, scratch), (False, True))
        outs = done[key]
        for o in (0, 1):
            per_order[o].append(outs[o])
    if (scale_ab == 1.0).all():
        mean_ab = [1.0, 1.0]
    else:
        mean_ab = np.ascontiguousarray(np.broadcast_to(scale_ab, (nf_all, 2))).mean(axis=0)
    weights = np.array([*mean_ab, 1.0, 1.0], dtype=np.float64)
    traffic = [sum(float(_dram_totals(f) @ weights) for f in fs) for fs in per_order]
    row_first = bool(traffic[1] < traffic[0])
    folds = np.concatenate(per_order[int(row_first)])
    nf = folds.shape[0] // groups
    fold_cycles = _fold_cycles(fold_cycles, mapping, nf * groups)
    tiles = _group_tiles(folds, groups, np.ascontiguousarray(fold_cycles, dtype=np.int64),
                         np.ascontiguousarray(scale_ab), 1.0, np.ascontiguousarray(held_ratio),
                         cap_a, cap_b, cap_c, mapping.row_folds, mapping.col_folds, row_first,
                         True)
    return TileSchedule(gemm, mapping, tiles, "rows" if row_first else "cols")


# ---- an im2col operand whose feature map is stored compressed (``MapFormat``), and grouped
# GEMMs whose operands are compressed: each group planned on its own blocks ----


# channel sums kept per map (``_map_sums``): slots, and runs of channels read plane by plane
_SUM_SLOTS = 4
_SUM_SEEN = 16


@njit(cache=True)
def _map_sums(geo):
    """An empty store of channel sums of a map (``_chan_sum``): per slot its channels (first,
    end) and last use, then per run of channels read plane by plane its channels, the pixels
    read so, its last use and whether it was summed before, then a clock; and the slots' sums,
    per image and pixel (left unfilled until a slot is taken)."""
    keys = np.full((_SUM_SLOTS + _SUM_SEEN + 1, 5), -1, dtype=np.int64)
    keys[-1, 0] = 0
    return keys, np.empty((_SUM_SLOTS, geo[0] * geo[2] * geo[3]), dtype=np.int32)


@njit(cache=True)
def _seen(keys, c0, c1, now):
    """The row of ``keys`` that remembers channels c0 .. c1−1 as read plane by plane (a new
    one in place of the least recently used, and whether it is new)."""
    old = _SUM_SLOTS
    for at in range(_SUM_SLOTS, _SUM_SLOTS + _SUM_SEEN):
        if keys[at, 0] == c0 and keys[at, 1] == c1:
            keys[at, 3] = now
            return at, False
        if keys[at, 3] < keys[old, 3]:
            old = at
    keys[old, 0], keys[old, 1], keys[old, 2], keys[old, 3], keys[old, 4] = c0, c1, 0, now, 0
    return old, True


@njit(cache=True)
def _chan_sum(geo, nz, c0, c1, cost, keys, sums):
    """The slot of ``sums`` that holds, per image and pixel, the nonzeros of channels
    c0 .. c1−1, or −1 (read them plane by plane: ``cost`` pixels). A run of channels is summed
    when it is asked for a second time; one whose sum gave way to another's (runs that take
    turns) only once it has been read plane by plane as many pixels as summing it reads, so
    that it costs at most twice the cheaper way. The least recently used slot gives way."""
    keys[-1, 0] += 1
    now = keys[-1, 0]
    for i in range(_SUM_SLOTS):
        if keys[i, 0] == c0 and keys[i, 1] == c1:
            keys[i, 2] = now
            return i
    at, new = _seen(keys, c0, c1, now)
    keys[at, 2] += cost
    cg, hwp = geo[1], geo[2] * geo[3]
    if new or (keys[at, 4] == 1 and keys[at, 2] < (c1 - c0) * geo[0] * hwp):
        return -1
    keys[at, :4] = -1
    slot = 0
    for i in range(1, _SUM_SLOTS):
        if keys[i, 2] < keys[slot, 2]:
            slot = i
    if keys[slot, 0] >= 0:  # the sum that gives way is remembered as summed before
        gone, _ = _seen(keys, keys[slot, 0], keys[slot, 1], now)
        keys[gone, 4] = 1
    keys[slot, 0], keys[slot, 1], keys[slot, 2] = c0, c1, now
    out = sums[slot]
    for img in range(geo[0]):
        row = out[img * hwp:(img + 1) * hwp]
        row[:] = 0
        for c in range(c0, c1):
            row += nz[(img * cg + c) * hwp:(img * cg + c + 1) * hwp]
    return slot


@njit(cache=True)
def _class_sum(geo, nz, img, c0, c1, runs, nr, words, keys, sums):
    """Nonzeros of image ``img``'s channels c0 .. c1−1 in ``nr`` runs of pixels of a plane
    (``words`` pixels): from their channel sum where one is kept (``_chan_sum``), else plane
    by plane."""
    cg, hwp = geo[1], geo[2] * geo[3]
    slot = _chan_sum(geo, nz, c0, c1, (c1 - c0) * words, keys, sums) if c1 - c0 > 1 else -1
    if slot >= 0:
        return _runs_sum(sums[slot], img * hwp, runs, nr)
    z = 0
    for c in range(c0, c1):
        z += _runs_sum(nz, (img * cg + c) * hwp, runs, nr)
    return z


@njit(cache=True)
def _map_scratch(geo):
    """Scratch for ``_map_runs`` on the map's planes: per pixel whether it is hit, per row the
    span of its hits (first, last), and three buffers of runs (two sets and their common
    part)."""
    h, w = geo[2], geo[3]
    span = np.empty((2, h), dtype=np.int64)
    span[0, :] = w
    span[1, :] = -1
    return np.zeros(h * w, dtype=np.uint8), span, np.zeros((3, h * w + 1, 2), dtype=np.int64)


@njit(cache=True)
def _map_hit(geo, r0, r1, t0, t1, hit, span):
    """Mark in ``hit`` the stored pixels of one plane that the positions r0 .. r1−1 of an image
    read through the taps t0 .. t1−1, with each row's span of them in ``span``; returns the
    rows (first, last) marked. A kernel row's taps over a row of positions read an interval of
    the input row when they leave no column between them (unit dilation, as many taps as the
    stride or one position): marked as one."""
    h, w, kw, sh, sw, ph, pw = geo[2], geo[3], geo[5], geo[6], geo[7], geo[8], geo[9]
    dh, dw, wo, ih, iw = geo[10], geo[11], geo[13], geo[18], geo[19]
    i0, i1 = t0 // kw, (t1 - 1) // kw
    ylo, yhi = h, -1
    for oy in range(r0 // wo, (r1 - 1) // wo + 1):
        oxa = max(r0, oy * wo) - oy * wo
        oxb = min(r1, (oy + 1) * wo) - oy * wo - 1
        for i in range(i0, i1 + 1):
            y = oy * sh - ph + i * dh
            if y < 0 or y >= h or (ih and y % ih):
                continue
            ja = t0 - i * kw if i == i0 else 0
            jb = t1 - 1 - i * kw if i == i1 else kw - 1
            row = y * w
            lo, hi = span[0, y], span[1, y]
            if dw == 1 and (jb - ja + 1 >= sw or oxa == oxb):
                xa, xb = max(0, oxa * sw - pw + ja), min(w - 1, oxb * sw - pw + jb)
                for x in range(xa, xb + 1):
                    if not (iw and x % iw):
                        hit[row + x] = 1
                if xa <= xb:
                    lo, hi = min(lo, xa), max(hi, xb)
            else:
                for ox in range(oxa, oxb + 1):
                    for j in range(ja, jb + 1):
                        x = ox * sw - pw + j * dw
                        if 0 <= x < w and not (iw and x % iw):
                            hit[row + x] = 1
                            lo, hi = min(lo, x), max(hi, x)
            span[0, y], span[1, y] = lo, hi
            ylo, yhi = min(ylo, y), max(yhi, y)
    return ylo, yhi


@njit(cache=True)
def _run_add(runs, nr, start, end):
    """Append the run start .. end−1 to the ``nr`` ascending runs of ``runs``, merged with the
    last one where they meet; returns how many runs there are."""
    if nr and runs[nr - 1, 1] == start:
        runs[nr - 1, 1] = end
        return nr
    runs[nr, 0], runs[nr, 1] = start, end
    return nr + 1


@njit(cache=True)
def _map_runs(geo, r0, r1, t0, t1, hit, span, runs):
    """The stored pixels of one plane that the positions r0 .. r1−1 of an image (flat
    oy·wo + ox) read through the taps t0 .. t1−1, as runs of consecutive flat pixels
    (y·w + x) into ``runs`` (start, end), ascending, returning how many. ``hit`` and ``span``
    are left clear."""
    if r0 >= r1 or t0 >= t1:
        return 0
    w = geo[3]
    ylo, yhi = _map_hit(geo, r0, r1, t0, t1, hit, span)
    nr = 0
    for y in range(ylo, yhi + 1):
        lo, hi = span[0, y], span[1, y]
        span[0, y], span[1, y] = w, -1
        start = -1
        for p in range(y * w + lo, y * w + hi + 1):
            if hit[p]:
                hit[p] = 0
                start = p if start < 0 else start
            elif start >= 0:
                nr = _run_add(runs, nr, start, p)
                start = -1
        if start >= 0:
            nr = _run_add(runs, nr, start, y * w + hi + 1)
    return nr


@njit(cache=True)
def _runs_and(a, na, b, nb, out):
    """The common part of two ascending sets of runs, as runs into ``out``; returns how many."""
    i = j = k = 0
    while i < na and j < nb:
        s, e = max(a[i, 0], b[j, 0]), min(a[i, 1], b[j, 1])
        if s < e:
            out[k, 0], out[k, 1] = s, e
            k += 1
        if a[i, 1] < b[j, 1]:
            i += 1
        else:
            j += 1
    return k


@njit(cache=True)
def _runs_words(runs, nr):
    """Pixels in ``nr`` runs."""
    n = 0
    for r in range(nr):
        n += runs[r, 1] - runs[r, 0]
    return n


@njit(cache=True)
def _runs_sum(nz, base, runs, nr):
    """Nonzeros of a plane (at ``base`` in the map ``nz``) in ``nr`` runs of its pixels."""
    z = 0
    for r in range(nr):
        for p in range(base + runs[r, 0], base + runs[r, 1]):
            z += nz[p]
    return z


@njit(cache=True)
def _map_classes(geo, k0, k1, cls):
    """The channels of columns k0 .. k1−1 (after ``_k_range``) in runs that read the same taps:
    rows (first channel, end channel, first tap, end tap) into ``cls``; returns how many (at
    most three: only the first and last channel, or tap, of the columns may be partial).
    Slots that pad the channels to the lanes hold no word."""
    taps, cp, cg = geo[4] * geo[5], geo[14], geo[1]
    n = 0
    if k0 >= k1:
        return 0
    if cp == 0:
        c0, c1 = k0 // taps, (k1 - 1) // taps
        cut = np.array([c0, c0 + 1, c1, c1 + 1]) if c1 > c0 else np.array([c0, c0, c0, c0 + 1])
    else:
        cut = np.sort(np.array([0, min(k0 % cp, cg), min(k1 % cp, cg), cg]))
    for i in range(3):
        if cut[i] < cut[i + 1]:
            t0, t1 = _chan_taps(geo, cut[i], k0, k1)
            if t0 < t1:
                cls[n, 0], cls[n, 1], cls[n, 2], cls[n, 3] = cut[i], cut[i + 1], t0, t1
                n += 1
    return n


@njit(cache=True)
def _map_words(geo, nz, blk, hit, span, runs, keys, sums):
    """(words, nonzeros) of the feature map that im2col block ``blk`` (positions p0 .. p1−1,
    real ones, × columns k0 .. k1−1) touches, each once: per image and run of channels with
    the same taps, the runs of pixels those taps read (``_map_runs``), and per channel the
    nonzeros of its plane in them. Images the block covers alike share their runs."""
    k0, k1 = _k_range(geo, blk[2], blk[3])
    cls = np.empty((3, 4), dtype=np.int64)
    ncls = _map_classes(geo, k0, k1, cls)
    hw = geo[12] * geo[13]
    n = z = 0
    if blk[0] >= blk[1]:
        return n, z
    for ci in range(ncls):
        key0 = key1 = -1
        nr = words = 0
        for img in range(blk[0] // hw, (blk[1] - 1) // hw + 1):
            r0 = max(blk[0], img * hw) - img * hw
            r1 = min(blk[1], (img + 1) * hw) - img * hw
            if r0 != key0 or r1 != key1:
                key0, key1 = r0, r1
                nr = _map_runs(geo, r0, r1, cls[ci, 2], cls[ci, 3], hit, span, runs[0])
                words = _runs_words(runs[0], nr)
            n += words * (cls[ci, 1] - cls[ci, 0])
            z += _class_sum(geo, nz, img, cls[ci, 0], cls[ci, 1], runs[0], nr, words, keys,
                             sums)
    return n, z


@njit(cache=True)
def _map_shared(geo, nz, a, b, hit, span, runs, keys, sums):
    """(words, nonzeros) of the feature map that im2col blocks ``a`` and ``b`` both touch
    (``_map_words``): per image both reach and channel both read, the common part of their
    runs of pixels."""
    ca = np.empty((3, 4), dtype=np.int64)
    cb = np.empty((3, 4), dtype=np.int64)
    ka0, ka1 = _k_range(geo, a[2], a[3])
    kb0, kb1 = _k_range(geo, b[2], b[3])
    na, nb = _map_classes(geo, ka0, ka1, ca), _map_classes(geo, kb0, kb1, cb)
    hw = geo[12] * geo[13]
    n = z = 0
    if a[0] >= a[1] or b[0] >= b[1]:
        return n, z
    for u in range(na):
        for v in range(nb):
            c0, c1 = max(ca[u, 0], cb[v, 0]), min(ca[u, 1], cb[v, 1])
            if c0 >= c1:
                continue
            sa0 = sa1 = sb0 = sb1 = -1
            nr = words = 0
            for img in range(max(a[0], b[0]) // hw, (min(a[1], b[1]) - 1) // hw + 1):
                ra0, ra1 = max(a[0], img * hw) - img * hw, min(a[1], (img + 1) * hw) - img * hw
                rb0, rb1 = max(b[0], img * hw) - img * hw, min(b[1], (img + 1) * hw) - img * hw
                if ra0 != sa0 or ra1 != sa1 or rb0 != sb0 or rb1 != sb1:
                    sa0, sa1, sb0, sb1 = ra0, ra1, rb0, rb1
                    n1 = _map_runs(geo, ra0, ra1, ca[u, 2], ca[u, 3], hit, span, runs[0])
                    n2 = _map_runs(geo, rb0, rb1, cb[v, 2], cb[v, 3], hit, span, runs[1])
                    nr = _runs_and(runs[0], n1, runs[1], n2, runs[2])
                    words = _runs_words(runs[2], nr)
                n += words * (c1 - c0)
                z += _class_sum(geo, nz, img, c0, c1, runs[2], nr, words, keys, sums)
    return n, z


@njit(cache=True)
def _map_all(geo, nz, hit, span, runs, keys, sums):
    """(words, nonzeros) of all of the map the im2col matrix reads: every channel of every
    image at the pixels some window reads (all positions through all taps)."""
    nr = _map_runs(geo, 0, geo[12] * geo[13], 0, geo[4] * geo[5], hit, span, runs[0])
    words = _runs_words(runs[0], nr)
    z = 0
    for img in range(geo[0]):
        z += _class_sum(geo, nz, img, 0, geo[1], runs[0], nr, words, keys, sums)
    return words * geo[0] * geo[1], z


@njit(cache=True)
def _map_blocks(geo, nz, blocks, stream, capbits, codes, vb, nmm, keys, sums):
    """Per block of an im2col operand whose map is stored compressed (``codes``: its DRAM and
    SRAM formats, ``FORMATS`` indices; ``run_bits``): the DRAM bits fetching it moves, the
    SRAM bits of what it fetches, and its SRAM bits (whether it stays: ≤ ``capbits``). A
    block that does not fit streams in ⌈its SRAM bits / ``capbits``⌉ equal parts along its
    time axis (``stream`` as ``_im2col_blocks``; output rows for positions), each part the
    compressed size of its own words. Also per block its (words, nonzeros), and those it
    shares with the block before it (in index order: the pairs loop orders meet most)."""
    nb = blocks.shape[0]
    hit, span, runs = _map_scratch(geo)
    fetch = np.zeros(nb, dtype=np.int64)
    fhold = np.zeros(nb, dtype=np.int64)
    hold = np.zeros(nb, dtype=np.int64)
    words = np.zeros((nb, 4), dtype=np.int64)
    wo = geo[13]
    for b in range(nb):
        words[b, 0], words[b, 1] = _map_words(geo, nz, blocks[b], hit, span, runs, keys, sums)
        if b:
            words[b, 2], words[b, 3] = _map_shared(geo, nz, blocks[b - 1], blocks[b], hit,
                                                   span, runs, keys, sums)
        hold[b] = run_bits(codes[1], words[b, 0], words[b, 1], vb, nmm)
        fetch[b] = run_bits(codes[0], words[b, 0], words[b, 1], vb, nmm)
        fhold[b] = hold[b]
    part = np.empty(4, dtype=np.int64)
    for b in range(nb):
        if stream < 0 or hold[b] <= capbits:
            continue
        step = wo if stream == 0 else 1
        lo, length = (blocks[b, 0], (blocks[b, 1] - blocks[b, 0]) // wo) if stream == 0 \
            else (blocks[b, 2], blocks[b, 3] - blocks[b, 2])
        parts = min(length, (hold[b] + capbits - 1) // capbits)
        fetch[b] = fhold[b] = 0
        for q in range(parts):
            part[:] = blocks[b]
            a = lo + q * length // parts * step
            e = lo + (q + 1) * length // parts * step
            part[2 * stream], part[2 * stream + 1] = a, e
            n, z = _map_words(geo, nz, part, hit, span, runs, keys, sums)
            fetch[b] += run_bits(codes[0], n, z, vb, nmm)
            fhold[b] += run_bits(codes[1], n, z, vb, nmm)
    return fetch, fhold, hold, words


@njit(cache=True)
def _map_pairs(geo, nz, blocks, words, first, second, codes, vb, nmm, keys, sums):
    """Per pair of blocks (``first[q]`` kept, ``second[q]`` read next; ``words``: per block
    its (words, nonzeros) and those it shares with the block before it): the DRAM and SRAM
    bits of the words the second touches and the first does not hold — the second's less
    those both touch."""
    npair = first.shape[0]
    dram = np.zeros(npair, dtype=np.int64)
    hold = np.zeros(npair, dtype=np.int64)
    hit, span, runs = _map_scratch(geo)
    for i in range(npair):
        s = second[i]
        if first[i] == s - 1:
            n, z = words[s, 2], words[s, 3]
        else:
            n, z = _map_shared(geo, nz, blocks[first[i]], blocks[s], hit, span, runs, keys,
                                  sums)
        n, z = words[s, 0] - n, words[s, 1] - z
        dram[i] = run_bits(codes[0], n, z, vb, nmm)
        hold[i] = run_bits(codes[1], n, z, vb, nmm)
    return dram, hold


@njit(cache=True)
def _fetch_bits(folds, col, fetch, fhold, hold, whole, pidx, pdram, phold, capbits):
    """``_fetches`` in bits for an operand whose blocks are compressed sets of words: into
    column ``col`` of ``folds`` (which holds each fold's block) the DRAM bits each fold
    fetches, and per fold the SRAM bits of what it fetches (returned). All of the operand
    fitting (``whole``: its DRAM and SRAM bits), it is fetched with the first fold. Otherwise
    the block the previous fold read stays if it fits: the same block again costs nothing,
    and a new one brings in only what the kept one lacks (pair ``pidx[f]``) when the kept
    one's SRAM bits and those fit together; any other is fetched as ``fetch`` says."""
    nf = folds.shape[0]
    occ = np.zeros(nf, dtype=np.int64)
    if whole[0] >= 0:
        for f in range(nf):
            folds[f, col] = 0
        if nf:
            folds[0, col], occ[0] = whole[0], whole[1]
        return occ
    prev = -1
    for f in range(nf):
        b = folds[f, col]
        kept = prev if prev >= 0 and hold[prev] <= capbits else -1
        prev = b
        folds[f, col] = 0
        if b == kept:
            continue
        folds[f, col], occ[f] = fetch[b], fhold[b]
        if kept >= 0 and pidx[f] >= 0 and hold[kept] + phold[pidx[f]] <= capbits:
            folds[f, col], occ[f] = pdram[pidx[f]], phold[pidx[f]]
    return occ


class _MapOp:
    """One group's im2col operand with its feature map stored compressed: its blocks' bits
    (``_map_blocks``), and after ``fill`` per loop order the SRAM bits each fold fetches."""

    def __init__(self, geo: np.ndarray, nz: np.ndarray, blocks: np.ndarray, stream: int,
                 cap: int, fmts: tuple, vb: int, nmm: int) -> None:
        self.geo, self.nz, self.blocks = geo, nz, np.ascontiguousarray(blocks)
        self.codes = np.array(fmts, dtype=np.int64)
        self.vb, self.nmm, self.capbits = vb, nmm, cap * vb
        # the map's channel sums, kept from block to block and for the pairs
        self.sums = _map_sums(geo)
        self.fetch, self.fhold, self.hold, self.words = _map_blocks(
            geo, self.nz, self.blocks, stream, self.capbits, self.codes, vb, nmm, *self.sums)
        n, z = _map_all(geo, self.nz, *_map_scratch(geo), *self.sums)
        bits = [int(run_bits(c, n, z, vb, nmm)) for c in self.codes]
        self.whole = np.array(bits if bits[1] <= self.capbits else [-1, -1], dtype=np.int64)
        self.occ: list[np.ndarray] = []

    def fill(self, out: list[np.ndarray], col: int) -> None:
        """Column ``col`` of each loop order's fold records ``out`` in DRAM bits."""
        none = np.zeros(0, dtype=np.int64)
        fit = self.hold <= self.capbits
        keys, idx0, idx1 = _pair_slots(out[0], out[-1] if len(out) > 1 else out[0][:0], col,
                                       fit)
        nb = self.blocks.shape[0]
        pdram, phold = (none, none) if not keys.shape[0] else _map_pairs(
            self.geo, self.nz, self.blocks, self.words, keys // nb, keys % nb,
            self.codes, self.vb, self.nmm, *self.sums)
        self.occ = [_fetch_bits(f, col, self.fetch, self.fhold, self.hold, self.whole, ix,
                                pdram, phold, self.capbits)
                    for f, ix in zip(out, (idx0, idx1), strict=False)]


def _stored(gemm: Gemm, geo: tuple, pad: tuple[int, int, int, int]) -> np.ndarray:
    """Stored / expanded words of A and B where an operand is counted as a share of the
    matrix (1 for one whose blocks are counted in feature-map words, or in its data slots
    across a padded axis)."""
    padded = {"A": pad[0] > 0, "B": pad[0] > 0 or pad[2] > 0}
    return np.array([1.0 if x == geo[0] or padded[x] else gemm.stored(x) / full
                     for x, full in (("A", gemm.M * gemm.K), ("B", gemm.K * gemm.N))])


def _condensed_c(gemm: Gemm, grp: int, scratch: dict) -> _KeptC:
    """C of group ``grp`` of a condensed GEMM whose columns are some of those of the GEMM it
    condenses (``Gemm.c_cols``): its rows all of that GEMM's, its columns the kept ones, counted
    as the input-gradient words they land in (or the elements they are, where C's geometry does
    not hold) as a reduced GEMM's C is (``_KeptC``; ``scratch``: ``_KeptIm2col.of``'s)."""
    full = replace(gemm, N=gemm.c_cols.shape[2], im2col=None, c_cols=None)
    cols = gemm.c_cols.group(grp)[2]
    rows = np.arange(gemm.M, dtype=np.int32)
    cgeo = _c_geometry(full)
    op = None if cgeo is None else _KeptIm2col.of(cgeo, rows, cols, scratch)
    return _KeptC(_real_map(rows, 0, 0), _real_map(cols, *_padding(full, ("", None))[2:]), op)


def _map_formats(gemm: Gemm, geo: tuple, compression, held) -> tuple:
    """The DRAM and SRAM ``MapFormat`` of the GEMM's im2col operand (None, None: its map is
    not stored compressed, or the GEMM carries no geometry it can be read through — its
    ratios count it then); an SRAM level given without one holds the map dense."""
    fd = getattr(compression, "fmap", None)
    g = geo[1]
    if fd is None or g is None or fd.which != geo[0]:
        return None, None
    fs = fd if held is None else getattr(held, "fmap", None) or replace(fd, fmt="dense")
    if fd.nonzero.shape != (gemm.groups, g[0], g[1], g[2], g[3]):
        raise ValueError(f"{gemm.layer} {gemm.phase}: map nonzeros of shape "
                         f"{fd.nonzero.shape} for a geometry of {tuple(int(v) for v in g[:4])}")
    return fd, fs


def _group_ops(gemm: Gemm, mapping: DenseMapping, geo: tuple, pad: tuple, caps: tuple[int, int],
               held: np.ndarray, stored: np.ndarray, fmaps: tuple, grp: int) -> list:
    """The operands of group ``grp`` as ``_orders`` takes them, each block held at its own
    ratio in this group (``held``: the group's folds' ratios); an im2col operand whose map is
    stored compressed (``fmaps``) is a ``_MapOp`` on the group's own nonzeros."""
    m, k, n = gemm.M, gemm.K, gemm.N
    ratios = _block_ratios(mapping, m, k, n, held)
    fd, fs = fmaps
    if fd is None:
        return _operand_blocks(gemm, mapping, geo, caps, ratios, stored, pad)
    ops = _operand_blocks(gemm, mapping, ("", None), caps, ratios, stored, pad)
    a_blk, a_time, b_blk, b_time = _block_ranges(mapping, m, k, n)
    x = 0 if fd.which == "A" else 1
    blk, time = (a_blk, a_time) if x == 0 else (b_blk, b_time)
    op = _MapOp(geo[1], np.ascontiguousarray(fd.nonzero[grp]).reshape(-1),
                _real_rows(blk, geo[1]), time, caps[x], (fd.code, fs.code), fd.value_bits,
                fd.nm_m)
    ops[x] = (blk, op, None, None, None, False, None, None, caps[x])
    return ops


def _grouped_schedule(gemm: Gemm, mapping: DenseMapping, caps: tuple[int, int, int],
                      fold_cycles: np.ndarray | None, compression, held,
                      fmaps: tuple) -> TileSchedule:
    """``schedule`` planned group by group: each group's blocks held at their own folds'
    ratios and, for an im2col operand whose map is stored compressed (``fmaps``), counted as
    the compressed bits of the feature-map words they touch (its column of the fold records
    in bits, scaled to words by ``_group_tiles``); one loop order for all groups, the one that
    moves fewer DRAM bytes."""
    m, n, groups, nf = gemm.M, gemm.N, gemm.groups, mapping.folds
    geo = _geometry(gemm)
    pad = _padding(gemm, geo)
    stored = _stored(gemm, geo, pad)
    full = (nf * groups, 2)
    hr = np.broadcast_to(_per_fold(compression if held is None else held, nf * groups, "held"),
                         full).copy()
    scale_ab = np.broadcast_to(_per_fold(compression, nf * groups, "compression") * stored,
                               full).copy()
    cgeo = _c_geometry(gemm)
    scale_c = 1.0 if pad[2] or cgeo is not None or gemm.c_cols is not None \
        else gemm.stored("C") / (m * n)
    x = -1 if fmaps[0] is None else "AB".index(fmaps[0].which)
    per_order: list[list[np.ndarray]] = [[], []]
    occs: list[list[np.ndarray]] = [[], []]
    scratch: dict = {}
    for grp in range(groups):
        ops = _group_ops(gemm, mapping, geo, pad, caps[:2], hr[grp * nf:(grp + 1) * nf],
                         stored, fmaps, grp)
        c = cgeo if gemm.c_cols is None else _condensed_c(gemm, grp, scratch)
        for o, f in enumerate(_orders(gemm, mapping, caps[2], ops, pad[2:], c,
                                      (False, True))):
            per_order[o].append(f)
            if x >= 0:
                occs[o].append(ops[x][1].occ[o])
    if x >= 0:  # the map's column is in bits
        scale_ab[:, x] = 1.0 / fmaps[0].value_bits
    weights = np.array([*scale_ab.mean(axis=0), scale_c, scale_c], dtype=np.float64)
    traffic = [sum(float(_dram_totals(f) @ weights) for f in fs) for fs in per_order]
    row_first = bool(traffic[1] < traffic[0])
    folds = np.concatenate(per_order[int(row_first)])
    occ_ab = hr * stored
    if x >= 0:  # what each fold's fetch occupies: its SRAM bits, as a share of its DRAM bits
        f = np.arange(nf)
        src = (f % mapping.col_folds) * mapping.row_folds + f // mapping.col_folds \
            if row_first else f
        at = (np.arange(groups)[:, None] * nf + src[None, :]).reshape(-1)
        occ, dram = np.concatenate(occs[int(row_first)]), folds[:, x]
        occ_ab[at, x] = np.where(dram > 0, occ / np.maximum(dram, 1), 0.0) \
            / fmaps[1].value_bits
    fold_cycles = _fold_cycles(fold_cycles, mapping, nf * groups)
    tiles = _group_tiles(folds, groups, np.ascontiguousarray(fold_cycles, dtype=np.int64),
                         np.ascontiguousarray(scale_ab), scale_c, np.ascontiguousarray(occ_ab),
                         *caps, mapping.row_folds, mapping.col_folds, row_first, True)
    return TileSchedule(gemm, mapping, tiles, "rows" if row_first else "cols")


def schedule(gemm: Gemm, mapping: DenseMapping, cap_words: tuple[int, int, int],
             fold_cycles: np.ndarray | None = None,
             compression: tuple[float, float] | np.ndarray = (1.0, 1.0),
             held: tuple[float, float] | np.ndarray | None = None) -> TileSchedule:
    """Tile ``gemm`` mapped as ``mapping`` with half-buffer capacities ``cap_words`` (A, B, C
    operand buffers, in words). ``fold_cycles`` (one per fold of every group, in tile order)
    replaces the dense cycles per fold — the sparse work model's; ``compression`` scales the
    DRAM words of A and B (compressed bytes / dense bytes in the operand's DRAM format): two
    numbers for the whole GEMM, or one pair per fold of every group in the same order as
    ``fold_cycles`` (column folds outer). ``held`` is the same for the operands' SRAM format:
    it scales the words a tile's fresh A and B occupy in their half buffers, and the words each
    block fills its half buffer with when the loop nest decides what stays (None: as
    ``compression``, the data held as it came from DRAM). Ratios that carry the im2col
    operand's stored map (``MapRatios``, as ``sparse.operand_compression`` gives them where
    that map is compressed) count that operand from the map's own nonzeros instead."""
    cap_a, cap_b, cap_c = (max(1, int(c)) for c in cap_words)
    if gemm.kept is not None:
        return _kept_schedule(gemm, mapping, (cap_a, cap_b, cap_c), fold_cycles, compression,
                              held)
    m, k, n = gemm.M, gemm.K, gemm.N
    nf_all = mapping.folds * gemm.groups
    geo = _geometry(gemm)
    fmaps = _map_formats(gemm, geo, compression, held)
    if fmaps[0] is not None or gemm.c_cols is not None or (gemm.groups > 1 and any(
            np.ndim(r) == 2 for r in (compression, held) if r is not None)):
        # a compressed map, C's columns some of a col2im's, or compressed blocks that differ
        # from group to group
        return _grouped_schedule(gemm, mapping, (cap_a, cap_b, cap_c), fold_cycles,
                                 compression, held, fmaps)
    pad = _padding(gemm, geo)
    stored = _stored(gemm, geo, pad)
    # one row for all folds, or one per fold of every group (column folds outer)
    held_ratio = _per_fold(compression if held is None else held, nf_all, "held")
    scale_ab = _per_fold(compression, nf_all, "compression") * stored
    occ_ab = held_ratio * stored
    # what the loop nest can keep on chip: each block as its SRAM format holds it
    ops = _operand_blocks(gemm, mapping, geo, (cap_a, cap_b),
                          _block_ratios(mapping, m, k, n, held_ratio), stored, pad)
    cgeo = _c_geometry(gemm)
    scale_c = 1.0 if pad[2] or cgeo is not None else gemm.stored("C") / (m * n)
    folds, row_first = _chosen_order(gemm, mapping, (cap_a, cap_b, cap_c), ops, pad[2:], cgeo,
                                     scale_ab, held_ratio, scale_c)
    nf = folds.shape[0]
    fold_cycles = _fold_cycles(fold_cycles, mapping, nf * gemm.groups)
    # the per-fold inputs come column folds outer; _group_tiles reads them as the folds come
    tiles = _group_tiles(folds, gemm.groups, np.ascontiguousarray(fold_cycles, dtype=np.int64),
                         np.ascontiguousarray(scale_ab), scale_c, np.ascontiguousarray(occ_ab),
                         cap_a, cap_b, cap_c, mapping.row_folds, mapping.col_folds, row_first)
    return TileSchedule(gemm, mapping, tiles, "rows" if row_first else "cols")


def concat(schedules: list[TileSchedule]) -> TileSchedule:
    """The tiles of several GEMMs run one after another as one schedule (the first GEMM's
    ``gemm``, ``mapping`` and loop order name it)."""
    first = schedules[0]
    return TileSchedule(first.gemm, first.mapping,
                        np.concatenate([s.tiles for s in schedules], axis=0), first.outer)
