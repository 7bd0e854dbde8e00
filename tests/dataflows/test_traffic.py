"""DRAM traffic of the tile schedule against a slow loop-nest reference over explicit buffers.

The reference walks the stated loop nest fold by fold (column folds outer or row folds outer),
asks for every operand block the fold reads element by element, maps each element to the word
that holds it in DRAM (an im2col operand's element is a feature-map pixel, or nothing where it
reads padding), and keeps explicit sets of resident words with the half buffer's capacity:

* an operand whose words all fit in its half buffer is fetched word by word as first needed and
  then stays;
* otherwise the buffer holds one block: a block the previous fold read, if it fits, is still
  there; a new block that fits beside it brings in only the words it does not hold (the halo two
  im2col blocks share); any other is fetched, in ⌈footprint / capacity⌉ equal parts along its
  time axis when it does not fit (a feature map streamed along its positions moves whole output
  rows), each part fetched as the distinct words it touches;
* partial sums: all of C stays when it fits; otherwise one block stays while consecutive folds
  accumulate into it, and is written out (and read back at its next fold) when it leaves.

Every lowering choice is walked the same way: its matrices' elements are mapped to the words
that hold them from the layer's geometry and the lowering's definition (``docs/gemms.md``,
"Lowering choices"), here in the test — the (i, j, c) K order with its padding channels (no
word), a transposed ``bwd_input``'s windows over the stored output gradient (one GEMM per output
phase, or all of them), one GEMM per image, ``bwd_weight``'s positions padded image by image
(padding slots: no word; a block streamed along them moves whole output rows).
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dataflows.features import SparseFeatures
from dataflows.formats import FORMATS, MapFormat, MapRatios, block_bits
from dataflows.gemm import Gemm, lower
from dataflows.lowering import Lowering, part_gemms
from dataflows.sparse import condensed_gemm, nm_slots, sparse_work
from dataflows.systolic import map_dense
from dataflows.tiles import _c_geometry, _first_touch, _geometry, _padding, _stored, schedule
from tests.dataflows.test_lowering import _phases_of
from traces.layers import Layer
from traces.models import get_model, model_names


def _cells(layer: Layer, batch: int, phase: str, g: int):
    """The DRAM word (a hashable name, or None for a padding zero) of element (r, c) of A and
    of B of ``phase``'s GEMM for group ``g``, worked out from the layer's geometry."""
    gemm = lower(layer, batch, phase)
    if layer.kind != "conv2d":
        return gemm, (lambda r, c: ("A", g, r, c)), (lambda r, c: ("B", g, r, c))
    return (gemm, *_conv_cells(layer, phase, g)[:2])


def _conv_cells(layer: Layer, phase: str, g: int):
    (h, w), (kh, kw), (sh, sw) = layer.input_hw, layer.kernel, layer.stride
    (ph, pw), (dh, dw), (ho, wo) = layer.padding, layer.dilation, layer.out_hw
    cg = layer.in_channels // layer.groups

    def pixel(p, q):  # position p = (n, oy, ox), column q = (c, i, j)
        n, oy, ox = p // (ho * wo), p % (ho * wo) // wo, p % wo
        c, i, j = q // (kh * kw), q % (kh * kw) // kw, q % kw
        y, x = oy * sh - ph + i * dh, ox * sw - pw + j * dw
        return ("fmap", n, g * cg + c, y, x) if 0 <= y < h and 0 <= x < w else None

    if phase == "fwd":
        return pixel, (lambda r, c: ("B", g, r, c))
    if phase == "bwd_weight":
        return (lambda r, c: ("A", g, r, c)), pixel
    # bwd_input: C (positions × (c, i, j), as fwd's A) lands in the input gradient's words
    return (lambda r, c: ("A", g, r, c)), (lambda r, c: ("B", g, r, c)), pixel


def _phase_sets(layer: Layer, low: Lowering):
    """The transposed GEMMs of ``bwd_input`` under ``low``: per GEMM, per axis (its input
    positions, its rotated taps) — all of them, or one output phase each (the taps whose
    gradient row is whole for that phase's positions), ordered by their first taps."""
    (h, w), (kh, kw), (sh, sw) = layer.input_hw, layer.kernel, layer.stride
    (ph, pw), (dh, dw) = layer.padding, layer.dilation
    whole = [((list(range(h)), list(range(kh))), (list(range(w)), list(range(kw))))]
    if low.bwd_input == "transposed":
        return whole
    sets = [(a, b) for a in _phases_of(h, kh, sh, ph, dh) for b in _phases_of(w, kw, sw, pw, dw)]
    sets.sort(key=lambda t: (t[0][1][0], t[1][1][0]))
    return sets or whole


def _lowered_cells(layer: Layer, batch: int, phase: str, low: Lowering, lanes: int):
    """Per GEMM ``phase`` runs under ``low``: its (M, K, N) and per group (the layer's groups,
    for every image with ``batch: per_image``) the DRAM words of elements of A, B and C (None:
    a zero the lowering pads with), from the lowering's definition."""
    (h, w), (kh, kw), (sh, sw) = layer.input_hw, layer.kernel, layer.stride
    (ph, pw), (dh, dw), (ho, wo) = layer.padding, layer.dilation, layer.out_hw
    groups = layer.groups if layer.kind == "conv2d" else 1
    cin, cout = layer.in_channels // groups, layer.out_channels // groups
    per_image = low.batch == "per_image"
    n_img = 1 if per_image else batch
    k_padded = per_image or low.bwd_weight == "per_image"

    def kdec(q, ch, taps):  # a K (or N) index → (channel, tap), or None for a padding slot
        if low.k_order == "flat":
            return q // taps, q % taps
        cp = -(-ch // lanes) * lanes
        return (q % cp, q // cp) if q % cp < ch else None

    def kdim(ch, taps):
        return ch * taps if low.k_order == "flat" else taps * -(-ch // lanes) * lanes

    per = ho * wo
    pp = -(-per // lanes) * lanes if k_padded else per

    def pos(p):  # a bwd_weight K index → (image, oy, ox), or None for a padding slot
        return (p // pp, p % pp // wo, p % pp % wo) if p % pp < per else None

    def x_word(img0, grp, n, c, oy, ox, t):
        y, x = oy * sh - ph + t // kw * dh, ox * sw - pw + t % kw * dw
        if 0 <= y < h and 0 <= x < w:
            return ("x", img0 + n, grp * cin + c, y, x)
        return None

    sets = [None] if phase != "bwd_input" or low.bwd_input == "col2im" else _phase_sets(
        layer, low)
    out = []
    for pset in sets:
        cells = []
        for img0 in range(batch if per_image else 1):
            for grp in range(groups):
                idx = (img0, grp)
                if phase == "fwd":
                    shape = (n_img * per, kdim(cin, kh * kw), cout)

                    def ca(r, q, img0=img0, grp=grp):
                        d = kdec(q, cin, kh * kw)
                        return None if d is None else x_word(img0, grp, r // per, d[0],
                                                             r % per // wo, r % wo, d[1])

                    def cb(q, c, idx=idx):
                        d = kdec(q, cin, kh * kw)
                        return None if d is None else ("W", idx[1], c, *d)

                    def cc(r, c, idx=idx):
                        return ("C", idx, r, c)
                elif phase == "bwd_weight":
                    shape = (cout, n_img * pp, kdim(cin, kh * kw))

                    def ca(o, p, idx=idx):
                        q = pos(p)
                        return None if q is None else ("dZ", idx, o, *q)

                    def cb(p, q, img0=img0, grp=grp):
                        a, d = pos(p), kdec(q, cin, kh * kw)
                        return (None if a is None or d is None
                                else x_word(img0, grp, a[0], d[0], a[1], a[2], d[1]))

                    def cc(o, q, idx=idx):
                        return None if kdec(q, cin, kh * kw) is None else ("C", idx, o, q)
                elif pset is None:
                    shape = (n_img * per, cout, kdim(cin, kh * kw))

                    def ca(r, o, idx=idx):
                        return ("dZ", idx, r, o)

                    def cb(o, q, idx=idx):
                        d = kdec(q, cin, kh * kw)
                        return None if d is None else ("W", idx[1], o, *d)

                    def cc(r, q, img0=img0, grp=grp):  # lands in the input gradient
                        d = kdec(q, cin, kh * kw)
                        return None if d is None else x_word(img0, grp, r // per, d[0],
                                                             r % per // wo, r % wo, d[1])
                else:
                    (ys, ti), (xs, tj) = pset
                    taps = len(ti) * len(tj)
                    shape = (n_img * len(ys) * len(xs), kdim(cout, taps), cin)

                    def ca(r, q, img0=img0, grp=grp, ys=ys, ti=ti, xs=xs, tj=tj, taps=taps):
                        d = kdec(q, cout, taps)
                        if d is None:
                            return None
                        n, m = r // (len(ys) * len(xs)), r % (len(ys) * len(xs))
                        y, x = ys[m // len(xs)], xs[m % len(xs)]
                        i, j = ti[d[1] // len(tj)], tj[d[1] % len(tj)]
                        ry = y + ph - (kh - 1 - i) * dh
                        rx = x + pw - (kw - 1 - j) * dw
                        if ry % sh or rx % sw or not (0 <= ry // sh < ho and 0 <= rx // sw < wo):
                            return None
                        return ("dZ", img0 + n, grp * cout + d[0], ry // sh, rx // sw)

                    def cb(q, c, idx=idx, ti=ti, tj=tj, taps=taps):
                        d = kdec(q, cout, taps)
                        if d is None:
                            return None
                        return ("W", idx[1], d[0], c, ti[d[1] // len(tj)], tj[d[1] % len(tj)])

                    def cc(r, c, idx=idx, pset=pset):
                        return ("C", idx, str(pset), r, c)
                cells.append((ca, cb, cc))
        unit = wo if pset is None else len(pset[1][0])
        if phase == "bwd_weight" and k_padded:  # B's steps: an output row's slots, no padding
            def rows_b(r0, r1):
                rows = {}
                for r in range(r0, r1):
                    if r % pp < per:
                        rows.setdefault((r // pp, r % pp // wo), []).append(r)
                return list(rows.values())
            unit = (1, rows_b)
        out.append((shape, cells, unit))
    return out


class _Buffer:
    """One operand's half buffer: the words it holds and the DRAM words it brought in. Stored
    compressed (``sizes``: a plain matrix, block by block), a block is its (DRAM words, held
    words) in its formats, and the buffer is filled by what it holds."""

    def __init__(self, cap: int, everything: set, sizes=None, blocks=()) -> None:
        self.cap, self.whole = cap, len(everything) <= cap
        self.sizes = sizes
        self.seen: set = set()
        if isinstance(sizes, _MapSizes):  # a feature map stored compressed: sets of words
            self.everything = everything
            self.whole = sizes(everything, 1) <= cap
        elif sizes is not None:
            self.whole = sum(sizes(key)[1] for key in blocks) <= cap
        self.resident: set = set()
        self.held, self.kept = None, set()
        self.words = 0

    def read(self, key, steps: list[list]) -> None:
        """A fold reads block ``key``, whose words along its time axis are ``steps``."""
        need = {a for s in steps for a in s if a is not None}
        if isinstance(self.sizes, _MapSizes):
            self._read_map(key, need, steps)
            return
        if self.sizes is not None:
            self._read_compressed(key, need)
            return
        if self.whole:
            self.words += len(need - self.resident)
            self.resident |= need
            return
        if key == self.held:
            return
        if self.held is not None and len(need) <= self.cap and len(need | self.kept) <= self.cap:
            self.words += len(need - self.kept)  # fits beside the block held: only what is new
        else:
            parts = min(len(steps), -(-len(need) // self.cap))
            for q in range(parts):
                part = steps[q * len(steps) // parts:(q + 1) * len(steps) // parts]
                self.words += len({a for s in part for a in s if a is not None})
        self.held, self.kept = (key, need) if len(need) <= self.cap else (None, set())

    def _read_compressed(self, key, need: set) -> None:
        """``read`` of a block stored compressed: fetched whole (streamed or not, its parts
        add up to it) unless it is the block held or all of the operand stays."""
        dram, held = self.sizes(key)
        if self.whole:
            self.words += dram if key not in self.seen else 0
            self.seen.add(key)
            return
        if key == self.held:
            return
        assert not need & self.kept  # blocks of a plain matrix share no word
        self.words += dram
        self.held, self.kept = (key, need) if held <= self.cap else (None, set())


    def _read_map(self, key, need: set, steps: list[list]) -> None:
        """``read`` of a block of an im2col operand whose feature map is stored compressed:
        every set of words fetched or held is its compressed size (``_MapSizes``); all of the
        map fitting, it is fetched with the first block."""
        size = self.sizes
        if self.whole:
            self.words += size(self.everything, 0) if not self.seen else 0
            self.seen.add(key)
            return
        if key == self.held:
            return
        hold = size(need, 1)
        if (self.held is not None and hold <= self.cap
                and size(self.kept, 1) + size(need - self.kept, 1) <= self.cap):
            self.words += size(need - self.kept, 0)  # beside the block held: only what is new
        else:
            # a block that fits is one part (even one held in no words: all zeros)
            parts = min(len(steps), max(1, -(-hold // self.cap)))
            for q in range(parts):
                part = steps[q * len(steps) // parts:(q + 1) * len(steps) // parts]
                self.words += size({a for s in part for a in s if a is not None}, 0)
        self.held, self.kept = (key, need) if hold <= self.cap else (None, set())


class _MapSizes:
    """The compressed size, in words, of a set of words of a feature map stored in a DRAM
    and an SRAM format (level 0, 1): a run of n words, a 1 × n block, by its own nonzeros
    (``nonzero``: word → bool); a set of no words is none."""

    def __init__(self, fmts: tuple[str, str], nonzero: dict, wbits: int) -> None:
        self.fmts, self.nonzero, self.wbits = fmts, nonzero, wbits

    def __call__(self, words: set, level: int) -> Fraction:
        if not words:
            return Fraction(0)
        nnz = sum(self.nonzero[w] for w in words)
        return Fraction(sum(block_bits(self.fmts[level], 1, len(words), nnz, self.wbits)),
                        self.wbits)


class _Scatter:
    """C's half buffer when C's partial sums are scattered into the words they land in (the
    input gradient of a col2im ``bwd_input``): the words it holds, those already in DRAM."""

    def __init__(self, cap: int, everything: set) -> None:
        self.cap, self.whole = cap, len(everything) <= cap
        self.everything = everything
        self.held, self.kept = None, set()
        self.touched: set = set()
        self.reads = self.writes = 0

    def accumulate(self, key, words: set) -> None:
        """A fold accumulates into C block ``key``, which lands in ``words``."""
        if self.whole or key == self.held:  # all of C stays / the block held stays
            return
        stay = set()
        if self.held is not None:  # the block held leaves; words both land in stay if both fit
            if len(self.kept | words) <= self.cap:
                stay = self.kept & words
            self.writes += len(self.kept - stay)
        self.reads += len((words & self.touched) - stay)  # partial sums already in DRAM
        self.touched |= words
        if len(words) <= self.cap:
            self.held, self.kept = key, words
        else:  # too big to stay: out right after the fold
            self.writes += len(words)
            self.held, self.kept = None, set()

    def finish(self) -> None:
        self.writes += len(self.everything) if self.whole else len(self.kept)


def _words(cell, r, c) -> list:
    """The DRAM words element (r, c) reads: one, none (None), or several (a frozenset: an
    N:M slot reads its whole group of dense activations)."""
    v = cell(r, c)
    return [] if v is None else list(v) if isinstance(v, frozenset) else [v]


def _block(cell, r0, r1, c0, c1, time, unit=1):
    """The words of block rows r0..r1−1 × columns c0..c1−1 per time step (0: ``unit`` rows
    at a time, or the lists of rows ``unit(r0, r1)`` gives; 1: columns, −1: one step)."""
    if time == 0:
        steps = unit(r0, r1) if callable(unit) else [range(a, min(r1, a + unit))
                                                     for a in range(r0, r1, unit)]
        return [[w for r in rows for c in range(c0, c1) for w in _words(cell, r, c)]
                for rows in steps]
    if time == 1:
        return [[w for r in range(r0, r1) for w in _words(cell, r, c)] for c in range(c0, c1)]
    return [[w for r in range(r0, r1) for c in range(c0, c1) for w in _words(cell, r, c)]]


def reference(layer: Layer, batch: int, phase: str, rows: int, cols: int, lanes: int,
              df: str, caps: tuple[int, int, int], outer: str) -> dict[str, int]:
    """DRAM words of A, B and C (reads, writes) the loop nest moves, all groups."""
    cells = []
    scatter = phase == "bwd_input" and layer.kind == "conv2d"  # col2im: C lands in words
    for g in range(layer.groups if layer.kind == "conv2d" else 1):
        gemm, cell_a, cell_b = _cells(layer, batch, phase, g)
        cell_c = _conv_cells(layer, phase, g)[2] if scatter else (lambda r, c: ("C", r, c))
        cells.append((cell_a, cell_b, cell_c))
    # a feature map streams along its positions an output row at a time
    unit = layer.out_hw[1] if layer.kind == "conv2d" else 1
    return walk((gemm.M, gemm.K, gemm.N), cells, unit, rows, cols, lanes, df, caps, outer,
                scatter)


def loop_nest(shape: tuple[int, int, int], rows: int, cols: int, lanes: int, df: str,
              outer: str) -> list[tuple]:
    """The folds in loop order (column folds outer or row folds outer): per fold its row and
    column fold (i, j), the A and B blocks it reads ((row start, row end, column start, column
    end), time axis) and the C block it accumulates into."""
    m, k, n = shape
    kr = rows * lanes
    span = {"os": (rows, cols), "ws": (kr, cols), "is": (kr, cols)}[df]
    ext = {"os": (m, n), "ws": (k, n), "is": (k, m)}[df]
    rf, cf = (-(-e // s) for e, s in zip(ext, span, strict=True))
    order = [(o, q) if outer == "rows" else (q, o)
             for o in range(rf if outer == "rows" else cf)
             for q in range(cf if outer == "rows" else rf)]
    out = []
    for i, j in order:
        lo_i, hi_i = i * span[0], min(ext[0], (i + 1) * span[0])
        lo_j, hi_j = j * span[1], min(ext[1], (j + 1) * span[1])
        if df == "os":
            out.append((i, j, ((lo_i, hi_i, 0, k), 1), ((0, k, lo_j, hi_j), 0),
                        (lo_i, hi_i, lo_j, hi_j)))
        elif df == "ws":
            out.append((i, j, ((0, m, lo_i, hi_i), 0), ((lo_i, hi_i, lo_j, hi_j), -1),
                        (0, m, lo_j, hi_j)))
        else:
            out.append((i, j, ((lo_j, hi_j, lo_i, hi_i), -1), ((lo_i, hi_i, 0, n), 1),
                        (lo_j, hi_j, 0, n)))
    return out


def walk(shape: tuple[int, int, int], cells: list, unit: int, rows: int, cols: int,
         lanes: int, df: str, caps: tuple[int, int, int], outer: str,
         scatter: bool = False, sizes: list | None = None) -> dict[str, int]:
    """DRAM words of A, B and C (reads, writes) the loop nest of an M×K·K×N GEMM moves, one
    walk per group (``cells``: per group the words of A's, B's and C's elements; ``unit``:
    positions in an output row, or a pair — per operand, the rows, or ``_block``'s function of
    rows, a block streamed along its rows steps by; ``scatter``: C's elements are partial sums
    scattered into the words they land in, ``_Scatter``; ``sizes``: per group, per operand A
    and B, None or the (DRAM words, held words) of a block stored compressed, ``_Buffer``)."""
    tot = {"a_dram": 0, "b_dram": 0, "c_read": 0, "c_write": 0}
    m, k, n = shape
    units = unit if isinstance(unit, tuple) else (unit, unit)
    folds = loop_nest(shape, rows, cols, lanes, df, outer)
    for grp, (cell_a, cell_b, cell_c) in enumerate(cells):
        size = (None, None) if sizes is None else sizes[grp]
        bufs = [_Buffer(cap, {w for r in range(mr) for c in range(mc) for w in _words(cell, r, c)},
                        sz, {fold[2 + x][0] for fold in folds})
                for x, (cap, cell, (mr, mc), sz) in enumerate((
                    (caps[0], cell_a, (m, k), size[0]), (caps[1], cell_b, (k, n), size[1])))]
        c_all = sum(cell_c(r, c) is not None for r in range(m) for c in range(n))
        c_whole, c_held, c_size, spilled = c_all <= caps[2], None, 0, set()
        sc = _Scatter(caps[2], {cell_c(r, c) for r in range(m) for c in range(n)} - {None})
        last_k = {j: (i, j) for i, j, *_ in folds}  # a column's last K fold (ws, is)
        for i, j, a, b, cblk in folds:
            for buf, cell, (key, time), u in ((bufs[0], cell_a, a, units[0]),
                                              (bufs[1], cell_b, b, units[1])):
                buf.read(key, _block(cell, *key, time, u))
            if scatter:
                sc.accumulate(cblk, {cell_c(r, c) for r in range(cblk[0], cblk[1])
                                     for c in range(cblk[2], cblk[3])} - {None})
                continue
            size = sum(cell_c(r, c) is not None for r in range(cblk[0], cblk[1])
                       for c in range(cblk[2], cblk[3]))
            if df == "os":  # every fold finishes its outputs
                tot["c_write"] += size
                continue
            if c_whole:  # all partial sums stay; each block written once, finished
                tot["c_write"] += size if last_k[j] == (i, j) else 0
                continue
            if cblk != c_held:
                if c_held is not None:  # the block held leaves: written, finished or not
                    tot["c_write"] += c_size
                    spilled.add(c_held)
                tot["c_read"] += size if cblk in spilled else 0
                c_held, c_size = (cblk, size) if size <= caps[2] else (None, 0)
                if c_held is None:  # too big to stay: out right after the fold
                    tot["c_write"] += size
                    spilled.add(cblk)
        if c_held is not None:
            tot["c_write"] += c_size
        if scatter:
            sc.finish()
            tot["c_read"] += sc.reads
            tot["c_write"] += sc.writes
        tot["a_dram"] += bufs[0].words
        tot["b_dram"] += bufs[1].words
    return tot


def compulsory(layer: Layer, batch: int, phase: str) -> tuple[int, int]:
    """Distinct DRAM words of A and of B the GEMM reads at all (all groups)."""
    words = [0, 0]
    for g in range(layer.groups if layer.kind == "conv2d" else 1):
        gemm, cell_a, cell_b = _cells(layer, batch, phase, g)
        for x, (cell, mr, mc) in enumerate(((cell_a, gemm.M, gemm.K), (cell_b, gemm.K, gemm.N))):
            words[x] += len({cell(r, c) for r in range(mr) for c in range(mc)} - {None})
    return words[0], words[1]


@st.composite
def _layers(draw, groups_from=(1, 1, 2)):
    if draw(st.integers(0, 4)) == 0:  # a linear layer: plain matrices
        return Layer.linear("l", draw(st.integers(1, 12)), draw(st.integers(1, 12)),
                            tokens=draw(st.integers(1, 4)))
    groups = draw(st.sampled_from(groups_from))
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    hw = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    pad = (draw(st.integers(0, min(2, k[0] - 1))), draw(st.integers(0, min(1, k[1] - 1))))
    dil = (draw(st.integers(1, 2)), 1)
    assume(all(hw[i] + 2 * pad[i] >= dil[i] * (k[i] - 1) + 1 for i in range(2)))
    return Layer.conv("c", groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3)),
                      k, hw, stride=(draw(st.integers(1, 3)), draw(st.integers(1, 2))),
                      padding=pad, groups=groups, dilation=dil)


@settings(deadline=None, max_examples=300)
@given(layer=_layers(), batch=st.integers(1, 2),
       phase=st.sampled_from(["fwd", "bwd_weight", "bwd_input"]),
       df=st.sampled_from(["os", "ws", "is"]), rows=st.integers(1, 4), cols=st.integers(1, 4),
       lanes=st.integers(1, 2), caps=st.tuples(*[st.integers(1, 160)] * 3))
def test_schedule_moves_what_the_loop_nest_over_explicit_buffers_moves(
        layer, batch, phase, df, rows, cols, lanes, caps):
    """Equal DRAM words per operand to the reference in the loop order the schedule took; the
    other order moves no fewer words; never below the compulsory traffic."""
    gemm = lower(layer, batch, phase)
    assume(gemm.M * gemm.K * gemm.N <= 6000)
    sch = schedule(gemm, map_dense(gemm, rows, cols, df, lanes), caps)
    ref = reference(layer, batch, phase, rows, cols, lanes, df, caps, sch.outer)
    got = {x: sch.total(x) for x in ref}
    assert got == ref
    other = reference(layer, batch, phase, rows, cols, lanes, df, caps,
                      "cols" if sch.outer == "rows" else "rows")
    assert sum(got.values()) <= sum(other[x] for x in got)
    need = compulsory(layer, batch, phase)
    assert sch.total("a_dram") >= need[0] and sch.total("b_dram") >= need[1]


@settings(deadline=None, max_examples=150)
@given(layer=_layers(), batch=st.integers(1, 2), df=st.sampled_from(["os", "ws", "is"]),
       rows=st.integers(1, 4), cols=st.integers(1, 4), lanes=st.integers(1, 2),
       cap_c=st.integers(1, 48))
def test_col2im_partial_sums_move_what_the_loop_nest_moves(layer, batch, df, rows, cols, lanes,
                                                           cap_c):
    """C of a conv's col2im ``bwd_input``, its partial sums scattered into the input gradient
    (``_Scatter``), with C buffers from one word to a few blocks' worth: the schedule's reads
    and writes of C equal the reference's, and no word is written less than once."""
    assume(layer.kind == "conv2d")
    gemm = lower(layer, batch, "bwd_input")
    assume(gemm.M * gemm.K * gemm.N <= 6000)
    caps = (160, 160, cap_c)
    sch = schedule(gemm, map_dense(gemm, rows, cols, df, lanes), caps)
    ref = reference(layer, batch, "bwd_input", rows, cols, lanes, df, caps, sch.outer)
    assert {x: sch.total(x) for x in ("c_read", "c_write")} == {
        x: ref[x] for x in ("c_read", "c_write")}
    landed = {_conv_cells(layer, "bwd_input", g)[2](r, c)
              for g in range(layer.groups) for r in range(gemm.M) for c in range(gemm.N)}
    assert sch.total("c_write") >= len(landed - {None})


LOWERINGS = [Lowering(k_order="channel_inner"), Lowering(bwd_input="transposed"),
             Lowering(bwd_input="phases"), Lowering(bwd_input="phases", k_order="channel_inner"),
             Lowering(batch="per_image"), Lowering(bwd_input="transposed",
                                                    k_order="channel_inner"),
             Lowering(bwd_weight="per_image"),
             Lowering(bwd_weight="per_image", k_order="channel_inner")]


@settings(deadline=None, max_examples=260)
@given(layer=_layers(), batch=st.integers(1, 2),
       phase=st.sampled_from(["fwd", "bwd_weight", "bwd_input"]), low=st.sampled_from(LOWERINGS),
       df=st.sampled_from(["os", "ws", "is"]), rows=st.integers(1, 4), cols=st.integers(1, 4),
       lanes=st.integers(1, 3), caps=st.tuples(*[st.integers(1, 160)] * 3))
def test_every_lowering_moves_what_the_loop_nest_over_explicit_buffers_moves(
        layer, batch, phase, low, df, rows, cols, lanes, caps):
    """Under the other lowering choices — the (i, j, c) K order with channels padded to the
    lanes, a transposed bwd_input (one GEMM, or one per output phase), a GEMM per image,
    bwd_weight's positions padded to the lanes image by image — every
    GEMM the phase runs moves the reference's words of A, B and C (C of col2im bwd_input: A and
    B), and no fewer than its compulsory words."""
    gemms = part_gemms(layer, batch, phase, low, lanes)
    parts = _lowered_cells(layer, batch, phase, low, lanes)
    assert len(gemms) == len(parts)
    assume(sum(g.M * g.K * g.N * g.groups for g in gemms) <= 6000)
    for gemm, (shape, cells, unit) in zip(gemms, parts, strict=True):
        assert (gemm.M, gemm.K, gemm.N, gemm.groups) == (*shape, len(cells))
        sch = schedule(gemm, map_dense(gemm, rows, cols, df, lanes), caps)
        ref = walk(shape, cells, unit, rows, cols, lanes, df, caps, sch.outer,
                   phase == "bwd_input" and low.bwd_input == "col2im")
        assert {x: sch.total(x) for x in ref} == ref
        for x, col in enumerate(("a_dram", "b_dram")):
            need = set()
            for cell in (c[x] for c in cells):
                mr, mc = (shape[0], shape[1]) if x == 0 else (shape[1], shape[2])
                need |= {(id(cell), cell(r, c)) for r in range(mr) for c in range(mc)
                         if cell(r, c) is not None}
            assert sch.total(col) >= len(need)


@settings(deadline=None, max_examples=100)
@given(layer=_layers(), batch=st.integers(1, 2),
       low=st.sampled_from([Lowering(bwd_input="transposed"),
                            Lowering(bwd_input="transposed", k_order="channel_inner")]),
       df=st.sampled_from(["os", "ws", "is"]), rows=st.integers(1, 4), cols=st.integers(1, 4),
       lanes=st.integers(1, 3), caps=st.tuples(*[st.integers(1, 160)] * 3))
def test_a_strided_transposed_bwd_input_moves_what_the_loop_nest_moves(
        layer, batch, low, df, rows, cols, lanes, caps):
    """The transposed ``bwd_input`` alone, strides 1 to 3 (every position through every tap:
    the output gradient with stride − 1 zeros inserted between its elements, which hold no
    word), against the same reference as above."""
    assume(layer.kind == "conv2d")
    test_every_lowering_moves_what_the_loop_nest_over_explicit_buffers_moves.hypothesis.inner_test(
        layer, batch, "bwd_input", low, df, rows, cols, lanes, caps)


def _convs(model: str) -> list[Layer]:
    return [la for la in get_model(model).layers if la.kind == "conv2d"]


@pytest.mark.parametrize("model", ["resnet50", "mobilenetv2"])
def test_a_feature_map_that_fits_half_its_buffer_is_fetched_once(model):
    """Every conv of the model, batch 1, on 32×32 and 128×128 arrays in every dataflow, with a
    half buffer exactly the size of the layer's input feature map: the forward GEMM's A and the
    weight-gradient GEMM's B (both that feature map, im2col'd) move at most 1.05× its words."""
    worst = 0.0
    for layer in _convs(model):
        fmap = layer.in_channels * layer.input_hw[0] * layer.input_hw[1]
        for phase, col in (("fwd", "a_dram"), ("bwd_weight", "b_dram")):
            gemm = lower(layer, 1, phase)
            for size, df in itertools.product((32, 128), ("os", "ws", "is")):
                sch = schedule(gemm, map_dense(gemm, size, size, df), (fmap, fmap, fmap))
                worst = max(worst, sch.total(col) / fmap)
    assert worst <= 1.05


@pytest.mark.parametrize("df", ["os", "ws", "is"])
def test_an_operand_counted_as_a_share_that_fits_as_stored_is_fetched_once(df):
    """A lowering with no geometry (the GEMM's A stored as 25 088 feature-map words, expanded
    to 49 × 4 608) is compared with its buffer as stored: with a half buffer of 25 088 words it
    is read once, on a 32×32 array with 16 column folds — not once per fold."""
    g = Gemm("CB5a_2", "fwd", 49, 4608, 512, a_stored=25088)
    sch = schedule(g, map_dense(g, 32, 32, df), (25088, 25088, 25088))
    assert sch.total("a_dram") == 25088


@pytest.mark.parametrize("low", [Lowering(k_order="channel_inner"),
                                 Lowering(bwd_input="phases", k_order="channel_inner"),
                                 Lowering(bwd_input="transposed", batch="per_image")],
                         ids=["channel_inner", "phases", "transposed-per_image"])
def test_a_feature_map_that_fits_half_its_buffer_is_fetched_once_under_every_lowering(low):
    """As above under other lowerings (16 lanes, so that the (i, j, c) order pads channels):
    every conv of ResNet-50, batch 1, 32×32 array, every dataflow, a half buffer the size of
    the map an im2col operand expands — the input of ``fwd`` (A) and ``bwd_weight`` (B), the
    output gradient of a transposed ``bwd_input`` (A): each GEMM the phase runs moves at most
    1.05× that map's words."""
    worst = 0.0
    for layer in _convs("resnet50"):
        fmap = layer.in_channels * layer.input_hw[0] * layer.input_hw[1]
        grad = layer.out_channels * layer.out_hw[0] * layer.out_hw[1]
        for phase, col, words in (("fwd", "a_dram", fmap), ("bwd_weight", "b_dram", fmap),
                                  ("bwd_input", "a_dram", grad)):
            for gemm in part_gemms(layer, 1, phase, low, 16):
                for df in ("os", "ws", "is"):
                    sch = schedule(gemm, map_dense(gemm, 32, 32, df, 16),
                                   (words, words, words))
                    worst = max(worst, sch.total(col) / (words * gemm.groups))
    assert worst <= 1.05


@settings(deadline=None, max_examples=60)
@given(layer=_layers(), batch=st.integers(1, 2), low=st.sampled_from(
           [Lowering(), Lowering(k_order="channel_inner")]),
       lanes=st.integers(1, 3), rstep=st.integers(1, 9), cstep=st.integers(1, 9),
       rows_outer=st.booleans())
def test_the_words_a_col2im_cell_lands_in_first_are_counted_where_the_walk_meets_them(
        layer, batch, low, lanes, rstep, cstep, rows_outer):
    """``tiles._first_touch`` (which places C's read-backs fold by fold: totals do not see
    it) against the cells of the grid walked in order over an explicit set of words met."""
    assume(layer.kind == "conv2d")
    gemm = part_gemms(layer, batch, "bwd_input", low, lanes)[0]
    (_, cells, _), = _lowered_cells(layer, batch, "bwd_input", low, lanes)
    cell_c = cells[0][2]
    m, n = gemm.M, gemm.N
    assume(m * n <= 3000)
    ra, cb = -(-m // rstep), -(-n // cstep)
    order = [(a, b) for a in range(ra) for b in range(cb)] if rows_outer else [
        (a, b) for b in range(cb) for a in range(ra)]
    met, want = set(), [[0] * cb for _ in range(ra)]
    for a, b in order:
        words = {cell_c(r, c) for r in range(a * rstep, min(m, (a + 1) * rstep))
                 for c in range(b * cstep, min(n, (b + 1) * cstep))} - {None}
        want[a][b] = len(words - met)
        met |= words
    geo = np.array((list(gemm.col2im) + [0])[:15], dtype=np.int64)
    assert _first_touch(geo, rstep, cstep, rows_outer).tolist() == want


def _slotted(cell_a, n: int, m: int, k: int):
    """Element (r, s) of an A condensed N:M (``n`` slots per group of ``m`` of its ``k``
    columns): the set of words its group's columns of row r hold."""
    def cell(r, s):
        q = s // n
        return frozenset(cell_a(r, c) for c in range(q * m, min(k, q * m + m))
                         if cell_a(r, c) is not None)
    return cell


@settings(deadline=None, max_examples=120)
@given(layer=_layers(), batch=st.integers(1, 2),
       nm=st.sampled_from([(1, 2), (2, 4), (1, 3), (2, 3), (3, 4), "fanin"]),
       fanin=st.integers(1, 40),
       low=st.sampled_from([Lowering(), Lowering(k_order="channel_inner")]),
       df=st.sampled_from(["os", "ws", "is"]), rows=st.integers(1, 4), cols=st.integers(1, 4),
       lanes=st.integers(1, 3), caps=st.tuples(*[st.integers(1, 160)] * 3))
def test_an_nm_condensed_gemm_moves_what_the_loop_nest_moves(
        layer, batch, nm, fanin, low, df, rows, cols, lanes, caps):
    """The forward GEMM with its weights condensed N:M (``sparse.condensed_gemm``): a slot of
    A reads the dense activations of its group of M columns, so an element of A is the set of
    feature-map words its group's windows touch; the weights are their K' slots. Condensed to
    a constant fan-in of k, a slot may select any activation: one group of all K columns with
    k slots. Equal to the reference word for word."""
    assume(layer.kind == "conv2d")
    gemm = part_gemms(layer, batch, "fwd", low, lanes)[0]
    (_, cells, unit), = _lowered_cells(layer, batch, "fwd", low, lanes)
    n, m = nm if nm != "fanin" else (min(fanin, gemm.K), gemm.K)
    g2 = condensed_gemm(gemm, nm_slots(gemm.K, n, m), gemm.N, (n, m))
    assume(g2.M * g2.K * g2.N * g2.groups <= 6000)

    cells2 = [(_slotted(ca, n, m, gemm.K), lambda s, c, i=i: ("W", i, s, c), cc)
              for i, (ca, _, cc) in enumerate(cells)]
    sch = schedule(g2, map_dense(g2, rows, cols, df, lanes), caps)
    ref = walk((g2.M, g2.K, g2.N), cells2, unit, rows, cols, lanes, df, caps, sch.outer)
    assert {x: sch.total(x) for x in ref} == ref


@settings(deadline=None, max_examples=120)
@given(layer=_layers(), batch=st.integers(1, 2),
       nm=st.sampled_from([(1, 2), (2, 4), (1, 3), "fanin"]), fanin=st.integers(1, 6),
       low=st.sampled_from([Lowering(), Lowering(k_order="channel_inner")]),
       df=st.sampled_from(["os", "ws", "is"]), rows=st.integers(1, 4), cols=st.integers(1, 4),
       lanes=st.integers(1, 3), caps=st.tuples(*[st.integers(1, 160)] * 3), data=st.data())
def test_a_condensed_col2im_bwd_input_moves_what_the_loop_nest_moves(
        layer, batch, nm, fanin, low, df, rows, cols, lanes, caps, data):
    """A conv's col2im ``bwd_input`` with its weights condensed (``sparse.condensed_gemm``):
    A, the output gradient, read as N:M (or fan-in) slots; C's columns the GEMM's (N:M), or
    per group only the columns some weight reaches (fan-in drops the others): its partial sums
    land in the input-gradient words of those columns. Equal to the reference word for word."""
    assume(layer.kind == "conv2d")
    gemm = part_gemms(layer, batch, "bwd_input", low, lanes)[0]
    (_, cells, unit), = _lowered_cells(layer, batch, "bwd_input", low, lanes)
    n, m = nm if nm != "fanin" else (min(fanin, gemm.K), gemm.K)
    if nm == "fanin":  # per group, the columns some weight reaches (none the lowering pads)
        real = [c for c in range(gemm.N) if cells[0][1](0, c) is not None]
        kept = [sorted(data.draw(st.sets(st.sampled_from(real), min_size=1))) for _ in cells]
    else:
        kept = [list(range(gemm.N))] * len(cells)
    n2 = max(len(c) for c in kept)
    g2 = condensed_gemm(gemm, nm_slots(gemm.K, n, m), n2, (n, m),
                        [np.array(c) for c in kept])
    assume(g2.M * g2.K * g2.N * g2.groups <= 6000)
    assert (g2.col2im, g2.c_cols is None) == (gemm.col2im, n2 == gemm.N and nm != "fanin"
                                              or all(len(c) == gemm.N for c in kept))

    def landed(cell_c, at):
        return lambda r, c: cell_c(r, at[c]) if c < len(at) else None

    def weights(cell_b, at, i):
        # a column the lowering pads holds no weight; the condensed weights are stored as
        # groups × N' × K' slots, a group's columns beyond its own each a slot of zeros
        return lambda s, c: ("W", i, s, c) if c >= len(at) or cell_b(0, at[c]) else None

    cells2 = [(_slotted(ca, n, m, gemm.K), weights(cb, at, i), landed(cc, at))
              for i, ((ca, cb, cc), at) in enumerate(zip(cells, kept, strict=True))]
    sch = schedule(g2, map_dense(g2, rows, cols, df, lanes), caps)
    ref = walk((g2.M, g2.K, g2.N), cells2, unit, rows, cols, lanes, df, caps, sch.outer, True)
    assert {x: sch.total(x) for x in ref} == ref


def test_a_fanin_bwd_input_carries_the_columns_it_keeps_to_its_schedule():
    """End to end: a conv whose weights reach every input (channel, tap) from the same number
    of output channels but leave some unreached runs ``bwd_input`` fan-in condensed; its GEMM
    keeps C's col2im geometry with the columns it keeps, and its schedule writes C as the
    input-gradient words those columns land in (fewer than all of them: a reached input
    pixel of one channel), not a share of the matrix."""
    layer = Layer.conv("c", 3, 4, 3, 5, padding=1)
    w = np.zeros(layer.weight_shape, bool)  # (cout, cin, kh, kw)
    w[:2, 1, :, :] = True  # only input channel 1 is reached, by 2 output channels per tap
    masks = {"filter": w, "ifmap": None, "grad_out": None}
    work = sparse_work(layer, 1, "bwd_input", masks, 4, 4, 1, "os", SparseFeatures(fanin=True))
    g2 = work.gemm
    assert work.mode == "fanin" and (g2.K, g2.N) == (2, 9)
    assert g2.col2im is not None and g2.c_cols.group(0)[2].tolist() == list(range(9, 18))
    sch = schedule(g2, map_dense(g2, 4, 4, "os", 1), (10**6,) * 3)
    assert (sch.total("c_read"), sch.total("c_write")) == (0, 25)  # channel 1's 5×5 pixels


@pytest.mark.parametrize("low", [Lowering(), *LOWERINGS])
def test_no_gemm_a_model_lowers_to_is_counted_as_a_share(low):
    """Every GEMM a built-in model's layers lower to (every phase, under ``low``), and each
    condensed N:M or by fan-in where its B is the weights, has every operand stored in fewer
    words than its matrix counted through a geometry (feature-map or input-gradient words, or
    data slots across a padded axis), never as a share of its matrix (``tiles._stored``: 1;
    C: ``_c_geometry``, or padding, or its columns mapped, ``Gemm.c_cols``)."""
    seen = 0
    for model in model_names():
        for layer in get_model(model).layers:
            for phase in ("fwd", "bwd_input", "bwd_weight"):
                for g in part_gemms(layer, 2, phase, low, 2):
                    alts = [g]
                    if phase != "bwd_weight":  # B is the weights
                        alts += [condensed_gemm(g, nm_slots(g.K, 2, 4), g.N, (2, 4)),
                                 condensed_gemm(g, 1, g.N, (1, g.K)),
                                 condensed_gemm(g, 1, -(-g.N // 2), (1, g.K),
                                                [np.arange(0, g.N, 2)] * g.groups)]
                    for x in alts:
                        geo = _geometry(x)
                        pad = _padding(x, geo)
                        assert (_stored(x, geo, pad) == 1.0).all(), (model, layer.name, x)
                        assert (x.stored("C") == x.M * x.N or pad[2] or x.c_cols is not None
                                or _c_geometry(x) is not None), (model, layer.name, x)
                        seen += x.stored("A") < x.M * x.K or x.stored("C") < x.M * x.N
    assert seen  # GEMMs whose stored operands differ from their matrices were met


def _compressed_case(layer: Layer, batch: int, phase: str, rows: int, cols: int, lanes: int,
                     df: str, fmts: list[str], seed: int, wbits: int = 16):
    """A GEMM whose operands are stored and held compressed (``fmts``: DRAM and SRAM formats
    of A, then of B), on random masks whose rows and columns (a feature map's channels and
    rows) have densities of their own: per group the reference's cells and block sizes —
    a plain operand's block (its DRAM words, held words) from its own nonzeros, an im2col
    operand's sets of feature-map words from theirs (``_MapSizes``) —, the ratios the
    schedule is given per fold of every group (column folds outer; DRAM, SRAM), and the
    feature map's nonzeros as the schedule takes them (``MapFormat.nonzero``; None for no
    im2col operand)."""
    gemm = lower(layer, batch, phase)
    geo = {"A": 0, "B": 1}.get((gemm.im2col or "-")[0])
    rng = np.random.default_rng(seed)
    scatter = phase == "bwd_input" and layer.kind == "conv2d"
    fmap = None
    if geo is not None:  # the stored feature map's nonzeros, word by word
        n_img, cg, h, w = gemm.im2col[1:5]
        dens = rng.random((1, layer.in_channels, h, 1)) * rng.random((1, 1, 1, w))
        fmap = rng.random((n_img, layer.in_channels, h, w)) < dens ** 0.5
    folds = loop_nest((gemm.M, gemm.K, gemm.N), rows, cols, lanes, df, "cols")
    ratio = np.ones((2, len(folds) * gemm.groups, 2))
    cells, sizes = [], []
    for g in range(gemm.groups):
        _, cell_a, cell_b = _cells(layer, batch, phase, g)
        cell_c = _conv_cells(layer, phase, g)[2] if scatter else (lambda r, c: ("C", r, c))
        masks = [rng.random((r, c)) < np.outer(rng.random(r), rng.random(c)) ** 0.5
                 for r, c in ((gemm.M, gemm.K), (gemm.K, gemm.N))]
        if geo is not None:  # the im2col matrix's elements: their words' nonzeros
            cell = (cell_a, cell_b)[geo]
            masks[geo] = np.array([[cell(r, c) is not None and bool(fmap[cell(r, c)[1:]])
                                    for c in range(masks[geo].shape[1])]
                                   for r in range(masks[geo].shape[0])], dtype=bool)
        cells.append((cell_a, cell_b, cell_c))
        sizes.append(tuple(_sizer(masks[x], fmts[2 * x:2 * x + 2], wbits) if x != geo else
                           _MapSizes((fmts[2 * x], fmts[2 * x + 1]),
                                     {("fmap", *i): bool(v) for i, v in np.ndenumerate(fmap)},
                                     wbits) for x in (0, 1)))
        for f, (_, _, a, b, _) in enumerate(folds):
            for x, (key, _) in enumerate((a, b)):
                dense = (key[1] - key[0]) * (key[3] - key[2]) * wbits
                for level in (0, 1):  # the im2col operand's: its matrix block's (the old count)
                    ratio[level, g * len(folds) + f, x] = _bits(
                        masks[x], fmts[2 * x + level], key, wbits) / max(dense, 1)
    return gemm, cells, sizes, ratio, fmap


def _bits(mask: np.ndarray, fmt: str, key: tuple, wbits: int) -> int:
    """Compressed bits of block ``key`` (rows r0 .. r1−1 × columns c0 .. c1−1) of ``mask``."""
    r0, r1, c0, c1 = key
    return sum(block_bits(fmt, r1 - r0, c1 - c0, int(mask[r0:r1, c0:c1].sum()), wbits))


def _sizer(mask: np.ndarray, fmts: list[str], wbits: int):
    """A plain operand's block → (DRAM words, held words) in its formats."""
    return lambda key: (Fraction(_bits(mask, fmts[0], key, wbits), wbits),
                        Fraction(_bits(mask, fmts[1], key, wbits), wbits))


def _map_ratios(gemm, layer: Layer, ratio: np.ndarray, fmap, fmts: list[str], wbits: int):
    """What ``schedule`` is given: each level's ratios, carrying the im2col operand's map in
    that level's format (``MapRatios``) when it is stored compressed at some level (as
    ``sparse.operand_compression`` gives them)."""
    x = None if fmap is None else "AB".index(gemm.im2col[0])
    if x is None or fmts[2 * x:2 * x + 2] == ["dense", "dense"]:
        return ratio[0], ratio[1]
    cg = gemm.im2col[2]
    per = np.stack([fmap[:, g * cg:(g + 1) * cg] for g in range(gemm.groups)]).astype(np.uint8)
    return tuple(MapRatios.of(ratio[lv], MapFormat(gemm.im2col[0], fmts[2 * x + lv], wbits, 4,
                                                   per)) for lv in (0, 1))


@settings(deadline=None, max_examples=200)
@given(layer=_layers(groups_from=(1, 2, 3)), batch=st.integers(1, 2),
       phase=st.sampled_from(["fwd", "bwd_weight", "bwd_input"]),
       df=st.sampled_from(["os", "ws", "is"]), rows=st.integers(1, 4), cols=st.integers(1, 4),
       lanes=st.integers(1, 2),
       caps=st.tuples(*[st.one_of(st.integers(1, 24), st.integers(1, 160))] * 3),
       fmts=st.lists(st.sampled_from(FORMATS), min_size=4, max_size=4),
       seed=st.integers(0, 2**16))
def test_compressed_operands_move_what_the_loop_nest_moves(
        layer, batch, phase, df, rows, cols, lanes, caps, fmts, seed):
    """Operands stored compressed (a DRAM format) and held compressed (an SRAM format,
    ``dataflows/formats.py``), random masks, groups 1–3: the reference walks the loop nest
    with every block of a plain operand the compressed words of its own nonzeros in each
    format, and every set of feature-map words an im2col operand fetches or holds compressed
    by its own nonzeros (a run of words) — fetched as its DRAM words, kept when its SRAM
    words fit the half buffer, all of the operand staying when all of it fits as held —,
    each group on its own blocks; the schedule, given each fold's compressed / dense ratios
    and the stored map's nonzeros, moves those words (to the word: the fractional total
    rounded). C, never compressed, moves the dense reference's words."""
    gemm = lower(layer, batch, phase)
    assume(gemm.M * gemm.K * gemm.N <= 6000)
    wbits = 16
    gemm, cells, sizes, ratio, fmap = _compressed_case(layer, batch, phase, rows, cols, lanes,
                                                       df, fmts, seed, wbits)
    comp, held = _map_ratios(gemm, layer, ratio, fmap, fmts, wbits)
    sch = schedule(gemm, map_dense(gemm, rows, cols, df, lanes), caps, compression=comp,
                   held=held)
    unit = layer.out_hw[1] if layer.kind == "conv2d" else 1
    scatter = phase == "bwd_input" and layer.kind == "conv2d"
    ref = walk((gemm.M, gemm.K, gemm.N), cells, unit, rows, cols, lanes, df, caps, sch.outer,
               scatter, sizes=sizes)
    for x in ("a_dram", "b_dram"):
        assert abs(sch.total(x) - ref[x]) <= Fraction(1, 2), x
    assert {x: sch.total(x) for x in ("c_read", "c_write")} == {
        x: ref[x] for x in ("c_read", "c_write")}


def test_the_compressed_reference_fails_the_old_counts():
    """The previous counts fail the reference above: an im2col operand stored in a bitmap
    counted as its footprint times the ratio of the matrix block (the ratios without the
    map), and a grouped GEMM whose blocks are held at their ratio averaged over the groups
    (the reference walked with those sizes)."""
    conv = Layer.conv("c", 2, 2, (3, 3), (4, 4), padding=(1, 1))
    fmts = ["bitmap"] * 4
    gemm, cells, sizes, ratio, fmap = _compressed_case(conv, 1, "fwd", 2, 2, 1, "os", fmts, 0)
    comp, held = _map_ratios(gemm, conv, ratio, fmap, fmts, 16)
    mp, caps = map_dense(gemm, 2, 2, "os", 1), (12, 12, 12)
    ref = walk((gemm.M, gemm.K, gemm.N), cells, 4, 2, 2, 1, "os", caps, "cols", sizes=sizes)
    assert schedule(gemm, mp, caps, compression=comp, held=held).total("a_dram") == ref["a_dram"]
    old = schedule(gemm, mp, caps, compression=np.asarray(comp), held=np.asarray(held))
    assert abs(old.total("a_dram") - ref["a_dram"]) > 1
    grouped = Layer.conv("g", 4, 8, (3, 3), (3, 3), padding=(1, 1), groups=2)
    fmts = ["dense", "dense", "bitmap", "bitmap"]
    gemm, cells, sizes, ratio, fmap = _compressed_case(grouped, 1, "fwd", 2, 2, 1, "os", fmts, 0)
    comp, held = _map_ratios(gemm, grouped, ratio, fmap, fmts, 16)
    caps = (19, 19, 19)
    sch = schedule(gemm, map_dense(gemm, 2, 2, "os", 1), caps, compression=comp, held=held)
    ref = walk((gemm.M, gemm.K, gemm.N), cells, 3, 2, 2, 1, "os", caps, sch.outer, sizes=sizes)
    assert abs(sch.total("b_dram") - ref["b_dram"]) <= Fraction(1, 2)
    keys = {fold[3][0] for fold in loop_nest((gemm.M, gemm.K, gemm.N), 2, 2, 1, "os", "cols")}
    mean = {k: tuple(sum(s[1](k)[lv] for s in sizes) / len(sizes) for lv in (0, 1))
            for k in keys}
    averaged = walk((gemm.M, gemm.K, gemm.N), cells, 3, 2, 2, 1, "os", caps, sch.outer,
                    sizes=[(s[0], mean.get) for s in sizes])
    assert abs(averaged["b_dram"] - ref["b_dram"]) > 1
