"""DRAM traffic of a reduced GEMM (structured sparsity, ``Gemm.kept``) against the loop-nest
reference over explicit buffers of ``test_traffic``.

A reduced GEMM runs on the rows of A, k's and columns of B that hold a nonzero, each group's
padded to the largest group's counts. The reference maps element (r, q) of the reduced A to the
word that element (rows[r], ks[q]) of the GEMM it reduces is stored in (from the layer's
geometry and the lowering's definition, as ``test_traffic`` does; a slot padding a group: no
word), likewise B and C, and walks the same loop nest over explicit sets of resident words. A
block of an im2col operand streamed along its rows steps by its rows on one output row.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import dataflows.tiles as tiles
from dataflows.gemm import Gemm, Kept, lower
from dataflows.lowering import Lowering, part_gemms
from dataflows.sparse import _counts, _Exec, _structured, condensed_gemm, nm_slots
from dataflows.systolic import map_dense
from tests.dataflows.test_traffic import (
    LOWERINGS,
    _cells,
    _layers,
    _lowered_cells,
    _words,
    walk,
)

#: the lowerings that run a phase as one GEMM (structured execution is tried on those)
KEPT_LOWERINGS = [Lowering(), *LOWERINGS]


def _keep(rng: np.random.Generator, groups: int, extent: int, density: float) -> np.ndarray:
    """Per group, a random subset of 0 .. extent−1 in order, padded with −1 to the largest."""
    sets = [np.flatnonzero(rng.random(extent) < density) for _ in range(groups)]
    width = max(1, max(len(s) for s in sets))
    out = np.full((groups, width), -1, dtype=np.int32)
    for g, s in enumerate(sets):
        out[g, : len(s)] = s
    return out


def reduced_gemm(gemm: Gemm, rows: np.ndarray, ks: np.ndarray, cols: np.ndarray) -> Gemm:
    """``gemm`` reduced to the kept rows, k's and columns (as ``sparse._structured`` makes it)."""
    return Gemm(gemm.layer, gemm.phase, rows.shape[1], ks.shape[1], cols.shape[1], gemm.groups,
                im2col=gemm.im2col, col2im=gemm.col2im,
                kept=Kept.of((gemm.M, gemm.K, gemm.N), rows, ks, cols))


def _reduced_cell(cell, rmap, cmap):
    def at(r, q):
        a, b = int(rmap[r]), int(cmap[q])
        return None if a < 0 or b < 0 else cell(a, b)
    return at


def _reduced_unit(unit, rmap, extent: int):
    """The steps of a block streamed along its rows: runs of kept rows on one of the original
    steps (``unit``: rows per step, or a function of a row range giving the steps' rows)."""
    step = {}
    if callable(unit):
        for i, rows in enumerate(unit(0, extent)):
            step.update(dict.fromkeys(rows, i))
    else:
        step = {r: r // unit for r in range(extent)}

    def steps(r0, r1):
        out, last = [], None
        for r in range(r0, r1):
            o = int(rmap[r])
            if o < 0 or o not in step:
                continue
            if step[o] != last:
                out.append([])
                last = step[o]
            out[-1].append(r)
        return out
    return steps


def reduced_reference(shape, cells, unit, kept: Kept, rows, cols, lanes, df, caps, outer,
                      scatter: bool, variant: str = "") -> tuple[dict[str, int], list[int]]:
    """DRAM words the loop nest moves over the reduced GEMM of one lowered GEMM (``shape``,
    ``cells``, ``unit``: ``_lowered_cells``'), and the compulsory words of A and B. A group's
    kept maps differ, so every group is walked on its own with its own cells."""
    tot = {"a_dram": 0, "b_dram": 0, "c_read": 0, "c_write": 0}
    need = [0, 0]
    units = unit if isinstance(unit, tuple) else (unit, unit)
    m2, k2, n2 = kept.rows.shape[1], kept.ks.shape[1], kept.cols.shape[1]
    for g, (ca, cb, cc) in enumerate(cells):
        rm, km, nm = kept.group(g)
        if variant == "share":  # wrong on purpose: every kept index counted, padding too
            rm, km, nm = np.maximum(rm, 0), np.maximum(km, 0), np.maximum(nm, 0)
        red = (_reduced_cell(ca, rm, km), _reduced_cell(cb, km, nm), _reduced_cell(cc, rm, nm))
        u = (_reduced_unit(units[0], rm, shape[0]), _reduced_unit(units[1], km, shape[1]))
        got = walk((m2, k2, n2), [red], u, rows, cols, lanes, df, caps, outer, scatter)
        for x in tot:
            tot[x] += got[x]
        for x, (cell, mr, mc) in enumerate(((red[0], m2, k2), (red[1], k2, n2))):
            need[x] += len({w for r in range(mr) for c in range(mc) for w in _words(cell, r, c)})
    return tot, need


@st.composite
def _cases(draw):
    layer = draw(_layers())
    batch = draw(st.integers(1, 2))
    phase = draw(st.sampled_from(["fwd", "bwd_weight", "bwd_input"]))
    low = draw(st.sampled_from(KEPT_LOWERINGS))
    lanes = draw(st.integers(1, 3))
    gemms = part_gemms(layer, batch, phase, low, lanes)
    assume(len(gemms) == 1)
    gemm = gemms[0]
    assume(gemm.M * gemm.K * gemm.N * gemm.groups <= 6000)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dens = [draw(st.sampled_from([0.2, 0.5, 0.8, 1.0])) for _ in range(3)]
    maps = [_keep(rng, gemm.groups, e, d) for e, d in zip((gemm.M, gemm.K, gemm.N), dens,
                                                           strict=True)]
    return layer, batch, phase, low, lanes, gemm, maps


def _check(case, df, rows, cols, caps, variant=""):
    layer, batch, phase, low, lanes, gemm, maps = case
    (shape, cells, unit), = _lowered_cells(layer, batch, phase, low, lanes)
    assert (gemm.M, gemm.K, gemm.N, gemm.groups) == (*shape, len(cells))
    g2 = reduced_gemm(gemm, *maps)
    sch = tiles.schedule(g2, map_dense(g2, rows, cols, df, lanes), caps)
    scatter = phase == "bwd_input" and low.bwd_input == "col2im" and layer.kind == "conv2d"
    ref, need = reduced_reference(shape, cells, unit, g2.kept, rows, cols, lanes, df, caps,
                                  sch.outer, scatter, variant)
    return {x: sch.total(x) for x in ref}, ref, need


@settings(deadline=None, max_examples=300)
@given(case=_cases(), df=st.sampled_from(["os", "ws", "is"]), rows=st.integers(1, 4),
       cols=st.integers(1, 4), caps=st.tuples(*[st.integers(1, 160)] * 3))
def test_a_reduced_gemm_moves_what_the_loop_nest_over_its_kept_words_moves(case, df, rows, cols,
                                                                          caps):
    """The reduced GEMM of every phase (convolutions and linear layers, groups 1–2, every
    lowering that runs the phase as one GEMM), kept rows, k's and columns drawn at random per
    group: the schedule equals the reference word for word for A, B and C, and fetches A and
    B no fewer than their compulsory words."""
    got, ref, need = _check(case, df, rows, cols, caps)
    assert got == ref
    assert got["a_dram"] >= need[0] and got["b_dram"] >= need[1]


def _fixed_case(phase: str, lanes: int = 1):
    """A grouped 3×3 convolution whose groups keep unlike numbers of rows, k's and columns."""
    from traces.layers import Layer
    layer = Layer.conv("c", 4, 4, (3, 3), (5, 5), padding=(1, 1), groups=2)
    gemm = part_gemms(layer, 1, phase, Lowering(), lanes)[0]
    rng = np.random.default_rng(7)
    maps = [_keep(rng, 2, e, 0.7) for e in (gemm.M, gemm.K, gemm.N)]
    return (layer, 1, phase, Lowering(), lanes, gemm, maps)


def _share(gemm: Gemm, maps) -> Gemm:
    """The reduced GEMM as counted before: no kept maps, its operands a share of the matrix
    (the stored words scaled by the kept share of the expanded matrix)."""
    m2, k2, n2 = (x.shape[1] for x in maps)
    M, K, N = gemm.M, gemm.K, gemm.N
    return Gemm(gemm.layer, gemm.phase, m2, k2, n2, gemm.groups,
                -(-gemm.stored("A") * m2 * k2 // (M * K)),
                -(-gemm.stored("B") * k2 * n2 // (K * N)),
                -(-gemm.stored("C") * m2 * n2 // (M * N)))


def test_the_reference_fails_wrong_counts(monkeypatch):
    """The reference can fail: counting the slots that pad a group as words, the share of the
    matrix counted before, and a schedule that catches no halo between two kept blocks each
    differ from the walk on some of these cases, which the schedule equals."""
    wrong = {"padding": 0, "share": 0, "halo": 0}
    for phase in ("fwd", "bwd_weight", "bwd_input"):
        for df, caps in (("os", (8, 8, 8)), ("ws", (40, 40, 40)), ("is", (30, 12, 9))):
            case = _fixed_case(phase)
            got, ref, _ = _check(case, df, 2, 2, caps)
            assert got == ref
            wrong["padding"] += _check(case, df, 2, 2, caps, variant="share")[1] != ref
            g2 = _share(case[5], case[6])
            sch = tiles.schedule(g2, map_dense(g2, 2, 2, df), caps)
            wrong["share"] += {x: sch.total(x) for x in ref} != ref
            with monkeypatch.context() as mp:
                mp.setattr(tiles._KeptIm2col, "pair_words",
                           lambda self, seqs, col, blocks, fp, fit: (
                               tuple(np.full(s.shape[0], -1) for s in (seqs * 2)[:2]),
                               np.zeros(0, dtype=np.int64)))
                wrong["halo"] += _check(case, df, 2, 2, caps)[0] != ref
    assert all(wrong.values()), wrong


def test_structured_keeps_the_rows_ks_and_columns_that_hold_a_nonzero():
    """``sparse._structured`` carries, per group, the rows of A, k's and columns of B it keeps
    (those with a nonzero; k's where both operands have one), padded with −1 to the largest
    group, and the reduced GEMM is hashable and equal to one built from the same maps."""
    from dataflows import kernels as kx
    rng = np.random.default_rng(3)
    M, K, N, G = 7, 9, 5, 2
    base = Gemm("l", "fwd", M, K, N, G)
    packs, want = [], []
    for _ in range(G):
        a = rng.random((M, K)) < 0.3
        b = rng.random((N, K)) < 0.3
        packs.append((kx.pack_rows(a), kx.pack_rows(b)))
        want.append((np.flatnonzero(a.any(1)), np.flatnonzero(a.any(0) & b.any(0)),
                     np.flatnonzero(b.any(1))))
    counts = [_counts(a, b, M, K, N) for a, b in packs]
    ex = _Exec(base, map_dense(base, 2, 2, "os"), packs, counts)
    g2, _, _ = _structured(ex)
    for grp in range(G):
        for arr, w in zip(g2.kept.group(grp), want[grp], strict=True):
            assert arr[arr >= 0].tolist() == w.tolist()
            assert (arr[len(w):] == -1).all()
    same = dataclasses.replace(g2, kept=Kept.of((M, K, N), g2.kept.rows.copy(), g2.kept.ks.copy(),
                                                g2.kept.cols.copy()))
    assert hash(g2) == hash(same) and g2 == same
    other = np.stack([g2.kept.group(grp)[0] for grp in range(G)])
    other[0, 0] = -1
    assert g2 != dataclasses.replace(g2, kept=Kept.of((M, K, N), other, g2.kept.ks, g2.kept.cols))
    # groups that keep the same indices share one row of them
    same_rows = Kept.of((M, K, N), np.tile(np.arange(M), (G, 1)), g2.kept.ks, g2.kept.cols)
    assert same_rows.rows.shape == (1, M)
    assert all(same_rows.group(grp)[0].tolist() == list(range(M)) for grp in range(G))


@settings(deadline=None, max_examples=150)
@given(layer=_layers(), batch=st.integers(1, 2), phase=st.sampled_from(["fwd", "bwd_input"]),
       nm=st.sampled_from([(1, 2), (2, 4), (1, 3), (2, 3), (3, 4), "fanin"]),
       fanin=st.integers(1, 40), df=st.sampled_from(["os", "ws", "is"]),
       rows=st.integers(1, 4), cols=st.integers(1, 4), lanes=st.integers(1, 3),
       caps=st.tuples(*[st.integers(1, 160)] * 3))
def test_a_condensed_plain_a_moves_what_the_loop_nest_moves(layer, batch, phase, nm, fanin, df,
                                                            rows, cols, lanes, caps):
    """A plain A read K per row under condensed weights (``sparse.condensed_gemm``: a linear
    layer's activations, a convolution's output gradient in ``bwd_input``): a slot of A reads
    its row's dense elements of its group of M columns (a constant fan-in: all K), so an element
    of A is the set of words its group holds. Equal to the reference word for word for A and B
    (and C where it is a plain matrix: a linear layer's ``fwd``), never below the compulsory
    words."""
    assume(layer.kind == "linear" or phase == "bwd_input")
    gemm = lower(layer, batch, phase)
    assert gemm.im2col is None
    n, m = nm if nm != "fanin" else (min(fanin, gemm.K), gemm.K)
    g2 = condensed_gemm(gemm, nm_slots(gemm.K, n, m), gemm.N, (n, m))
    assume(g2.M * g2.K * g2.N * g2.groups <= 6000)
    cells = []
    for grp in range(gemm.groups):
        _, cell_a, _ = _cells(layer, batch, phase, grp)

        def slotted(r, s, cell_a=cell_a):
            q = s // n
            return frozenset(cell_a(r, k) for k in range(q * m, min(gemm.K, q * m + m)))

        cells.append((slotted, lambda s, c, grp=grp: ("W", grp, s, c),
                      lambda r, c, grp=grp: ("C", grp, r, c)))
    sch = tiles.schedule(g2, map_dense(g2, rows, cols, df, lanes), caps)
    ref = walk((g2.M, g2.K, g2.N), cells, 1, rows, cols, lanes, df, caps, sch.outer)
    got = {x: sch.total(x) for x in ref}
    keys = list(ref) if phase == "fwd" else ["a_dram", "b_dram"]
    assert {x: got[x] for x in keys} == {x: ref[x] for x in keys}
    assert got["a_dram"] >= gemm.groups * gemm.M * gemm.K
