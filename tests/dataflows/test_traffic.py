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
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dataflows.gemm import Gemm, lower
from dataflows.systolic import map_dense
from dataflows.tiles import schedule
from traces.layers import Layer
from traces.models import get_model


def _cells(layer: Layer, batch: int, phase: str, g: int):
    """The DRAM word (a hashable name, or None for a padding zero) of element (r, c) of A and
    of B of ``phase``'s GEMM for group ``g``, worked out from the layer's geometry."""
    gemm = lower(layer, batch, phase)
    if layer.kind != "conv2d":
        return gemm, (lambda r, c: ("A", g, r, c)), (lambda r, c: ("B", g, r, c))
    (h, w), (kh, kw), (sh, sw) = layer.input_hw, layer.kernel, layer.stride
    (ph, pw), (dh, dw), (ho, wo) = layer.padding, layer.dilation, layer.out_hw
    cg = layer.in_channels // layer.groups

    def pixel(p, q):  # position p = (n, oy, ox), column q = (c, i, j)
        n, oy, ox = p // (ho * wo), p % (ho * wo) // wo, p % wo
        c, i, j = q // (kh * kw), q % (kh * kw) // kw, q % kw
        y, x = oy * sh - ph + i * dh, ox * sw - pw + j * dw
        return ("fmap", n, g * cg + c, y, x) if 0 <= y < h and 0 <= x < w else None

    if phase == "fwd":
        return gemm, pixel, (lambda r, c: ("B", g, r, c))
    if phase == "bwd_weight":
        return gemm, (lambda r, c: ("A", g, r, c)), pixel
    return gemm, (lambda r, c: ("A", g, r, c)), (lambda r, c: ("B", g, r, c))


class _Buffer:
    """One operand's half buffer: the words it holds and the DRAM words it brought in."""

    def __init__(self, cap: int, everything: set) -> None:
        self.cap, self.whole = cap, len(everything) <= cap
        self.resident: set = set()
        self.held, self.kept = None, set()
        self.words = 0

    def read(self, key, steps: list[list]) -> None:
        """A fold reads block ``key``, whose words along its time axis are ``steps``."""
        need = {a for s in steps for a in s if a is not None}
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


def _block(cell, r0, r1, c0, c1, time, unit=1):
    """The words of block rows r0..r1−1 × columns c0..c1−1 per time step (0: ``unit`` rows
    at a time, 1: columns, −1: one step)."""
    if time == 0:
        return [[cell(r, c) for r in range(a, min(r1, a + unit)) for c in range(c0, c1)]
                for a in range(r0, r1, unit)]
    if time == 1:
        return [[cell(r, c) for r in range(r0, r1)] for c in range(c0, c1)]
    return [[cell(r, c) for r in range(r0, r1) for c in range(c0, c1)]]


def reference(layer: Layer, batch: int, phase: str, rows: int, cols: int, lanes: int,
              df: str, caps: tuple[int, int, int], outer: str) -> dict[str, int]:
    """DRAM words of A, B and C (reads, writes) the loop nest moves, all groups."""
    tot = {"a_dram": 0, "b_dram": 0, "c_read": 0, "c_write": 0}
    for g in range(layer.groups if layer.kind == "conv2d" else 1):
        gemm, cell_a, cell_b = _cells(layer, batch, phase, g)
        m, k, n = gemm.M, gemm.K, gemm.N
        # a feature map streams along its positions an output row at a time
        unit = layer.out_hw[1] if layer.kind == "conv2d" else 1
        kr = rows * lanes
        span = {"os": (rows, cols), "ws": (kr, cols), "is": (kr, cols)}[df]
        ext = {"os": (m, n), "ws": (k, n), "is": (k, m)}[df]
        rf, cf = (-(-e // s) for e, s in zip(ext, span, strict=True))
        bufs = [_Buffer(cap, {cell(r, c) for r in range(mr) for c in range(mc)} - {None})
                for cap, cell, (mr, mc) in ((caps[0], cell_a, (m, k)), (caps[1], cell_b, (k, n)))]
        c_whole, c_held, c_size, spilled = m * n <= caps[2], None, 0, set()
        order = [(o, q) if outer == "rows" else (q, o)
                 for o in range(rf if outer == "rows" else cf)
                 for q in range(cf if outer == "rows" else rf)]
        last_k = {j: (i, j) for i, j in order}  # a column's last K fold (ws, is)
        for i, j in order:
            lo_i, hi_i = i * span[0], min(ext[0], (i + 1) * span[0])
            lo_j, hi_j = j * span[1], min(ext[1], (j + 1) * span[1])
            if df == "os":
                a = ((lo_i, hi_i, 0, k), 1)
                b = ((0, k, lo_j, hi_j), 0)
                cblk = (lo_i, hi_i, lo_j, hi_j)
            elif df == "ws":
                a = ((0, m, lo_i, hi_i), 0)
                b = ((lo_i, hi_i, lo_j, hi_j), -1)
                cblk = (0, m, lo_j, hi_j)
            else:
                a = ((lo_j, hi_j, lo_i, hi_i), -1)
                b = ((lo_i, hi_i, 0, n), 1)
                cblk = (lo_j, hi_j, 0, n)
            for buf, cell, (key, time) in ((bufs[0], cell_a, a), (bufs[1], cell_b, b)):
                buf.read(key, _block(cell, *key, time, unit))
            size = (cblk[1] - cblk[0]) * (cblk[3] - cblk[2])
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
def _layers(draw):
    if draw(st.integers(0, 4)) == 0:  # a linear layer: plain matrices
        return Layer.linear("l", draw(st.integers(1, 12)), draw(st.integers(1, 12)),
                            tokens=draw(st.integers(1, 4)))
    groups = draw(st.sampled_from([1, 1, 2]))
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
    ab = ("a_dram", "b_dram")
    got = {x: sch.total(x) for x in ref}
    if phase == "bwd_input" and layer.kind == "conv2d":  # C is col2im'd: scaled, not walked
        ref = {x: ref[x] for x in ab}
        got = {x: got[x] for x in ab}
    assert got == ref
    other = reference(layer, batch, phase, rows, cols, lanes, df, caps,
                      "cols" if sch.outer == "rows" else "rows")
    assert sum(got.values()) <= sum(other[x] for x in got)
    need = compulsory(layer, batch, phase)
    assert sch.total("a_dram") >= need[0] and sch.total("b_dram") >= need[1]


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
