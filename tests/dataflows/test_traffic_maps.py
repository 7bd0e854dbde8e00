"""A compressed im2col operand end to end: the work model's feature-map nonzeros
(``sparse.map_nonzero``, carried by ``operand_compression``) laid out as the tile schedule
reads them, against the loop nest over explicit buffers of ``test_traffic`` walked with every
set of feature-map words compressed by the nonzeros of the role's mask, under every lowering.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import dataflows.tiles as tiles
from dataflows.features import parse_features
from dataflows.formats import FORMATS, MapRatios, block_bits, run_bits
from dataflows.gemm import lower
from dataflows.lowering import Lowering, part_gemms
from dataflows.sparse import operand_compression, sparse_work
from dataflows.tiles import schedule
from tests.dataflows.test_traffic import (
    LOWERINGS,
    _cells,
    _layers,
    _lowered_cells,
    _MapSizes,
    walk,
)
from traces.layers import Layer


@settings(deadline=None, max_examples=120)
@given(layer=_layers(groups_from=(1, 2, 3)), batch=st.integers(1, 2),
       phase=st.sampled_from(["fwd", "bwd_weight", "bwd_input"]),
       low=st.sampled_from([Lowering(), *LOWERINGS]),
       df=st.sampled_from(["os", "ws", "is"]), rows=st.integers(1, 4), cols=st.integers(1, 4),
       lanes=st.integers(1, 3),
       caps=st.tuples(*[st.one_of(st.integers(1, 24), st.integers(1, 160))] * 3),
       fmts=st.tuples(st.sampled_from(FORMATS[1:]), st.sampled_from(FORMATS)),
       dense_map=st.booleans(), seed=st.integers(0, 2**16))
def test_the_work_models_map_moves_what_the_loop_nest_moves(
        layer, batch, phase, low, df, rows, cols, lanes, caps, fmts, dense_map, seed):
    """The map an im2col operand expands (the activations, or a transposed ``bwd_input``'s
    output gradient) stored in a DRAM and an SRAM format (the other operands dense), random
    masks (or none: all ones): every GEMM the phase runs, scheduled with the work model's
    ratios, moves the reference's words (to the word: the fractional total rounded), the
    reference keying each feature-map word's nonzero by the mask."""
    gemms = part_gemms(layer, batch, phase, low, lanes)
    assume(sum(g.M * g.K * g.N * g.groups for g in gemms) <= 6000)
    assume(all(g.im2col is not None for g in gemms))
    rng = np.random.default_rng(seed)
    masks = {"ifmap": None if dense_map else rng.random(layer.ifmap_shape(batch)) < 0.4,
             "grad_out": None if dense_map else rng.random(layer.grad_out_shape(batch)) < 0.6}
    role = gemms[0].roles["AB".index(gemms[0].im2col[0])]
    feats = dataclasses.replace(parse_features(
        {"formats": {role: {"dram": fmts[0], "sram": fmts[1]}}}, "arch.yaml"), lowering=low)
    lm = {r: m for r, m in masks.items() if r in {"fwd": ("ifmap",), "bwd_weight": (
        "grad_out", "ifmap"), "bwd_input": ("grad_out",)}[phase]}
    work = sparse_work(layer, batch, phase, lm, rows, cols, lanes, df, feats)
    parts = work.parts or [work]
    cells = _lowered_cells(layer, batch, phase, low, lanes)
    assert len(parts) == len(cells)
    for p, (shape, cell, unit) in zip(parts, cells, strict=True):
        comp = operand_compression(p, feats, (16, 16), "dram")
        held = operand_compression(p, feats, (16, 16), "sram")
        sch = schedule(p.gemm, p.mapping, caps, p.fold_cycles, comp, held)
        assert isinstance(comp, MapRatios) and isinstance(held, MapRatios)
        x = "AB".index(p.gemm.im2col[0])
        nonzero = _word_nonzeros(masks[role], layer, batch, role)
        sizes = [tuple(_MapSizes((fmts[0], fmts[1]), nonzero, 16) if i == x else None
                       for i in (0, 1))] * len(cell)
        scatter = phase == "bwd_input" and low.bwd_input == "col2im" and layer.kind == "conv2d"
        ref = walk(shape, cell, unit, rows, cols, lanes, df, caps, sch.outer, scatter,
                   sizes=sizes)
        for col in ref:
            assert abs(sch.total(col) - ref[col]) <= 0.5, col


def _word_nonzeros(mask, layer: Layer, batch: int, role: str) -> dict:
    """Word → nonzero, for the words ``_lowered_cells`` names: ("x", n, c, y, x) of the
    activations, ("dZ", n, c, y, x) of the output gradient (a linear layer's tokens its rows,
    stored (n, token, channel))."""
    shape = layer.ifmap_shape(batch) if role == "ifmap" else layer.grad_out_shape(batch)
    m = np.ones(shape, dtype=bool) if mask is None else mask
    if layer.kind != "conv2d":  # (n, token, channel) → (n, channel, token, 1)
        m = m.reshape(batch, -1, m.shape[-1]).transpose(0, 2, 1)[..., None]
    tag = "x" if role == "ifmap" else "dZ"
    return {(tag, *i): bool(v) for i, v in np.ndenumerate(m)}


@settings(deadline=None, max_examples=150)
@given(layer=_layers(), batch=st.integers(1, 2), data=st.data(), seed=st.integers(0, 2**16))
def test_the_words_two_blocks_share_are_their_runs_in_common(layer, batch, data, seed):
    """``tiles._map_shared`` (the common part of the two blocks' runs of pixels, per image and
    channel both read) counts the words two im2col blocks share, and their nonzeros, as the
    intersection of the two blocks' explicit word sets."""
    assume(layer.kind == "conv2d")
    gemm = lower(layer, batch, "fwd")
    _, cell, _ = _cells(layer, batch, "fwd", 0)
    geo = np.array((list(gemm.im2col[1:]) + [0] * 6)[:20], dtype=np.int64)
    rng = np.random.default_rng(seed)
    nz = (rng.random(int(np.prod(geo[:4]))) < 0.5).astype(np.uint8)

    def block():
        p0 = data.draw(st.integers(0, gemm.M - 1))
        k0 = data.draw(st.integers(0, gemm.K - 1))
        return np.array([p0, data.draw(st.integers(p0 + 1, gemm.M)), k0,
                         data.draw(st.integers(k0 + 1, gemm.K))], dtype=np.int64)

    a, b = block(), block()
    got = tiles._map_shared(geo, nz, a, b, *tiles._map_scratch(geo), *tiles._map_sums(geo))

    def words(blk):
        return {cell(r, c) for r in range(blk[0], blk[1]) for c in range(blk[2], blk[3])} - {None}

    both = words(a) & words(b)
    cg, h, w = geo[1], geo[2], geo[3]
    want = sum(int(nz[((n * cg + c) * h + y) * w + x]) for _, n, c, y, x in both)
    assert got == (len(both), want)


@settings(deadline=None, max_examples=300)
@given(code=st.integers(0, len(FORMATS) - 1), n=st.integers(0, 5000), data=st.data(),
       value_bits=st.sampled_from([1, 8, 16, 32]), nm_m=st.integers(1, 16))
def test_a_run_of_words_is_a_one_row_block(code, n, data, value_bits, nm_m):
    """``formats.run_bits`` (the kernels' size of a set of map words) is ``block_bits`` of a
    1 × n block, and a run of no words is no bits."""
    nnz = data.draw(st.integers(0, n))
    want = 0 if n == 0 else sum(block_bits(FORMATS[code], 1, n, nnz, value_bits, nm_m))
    assert run_bits(code, n, nnz, value_bits, nm_m) == want
