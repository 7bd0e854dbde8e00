"""Tile schedules: what a tile holds in its half buffers under an SRAM format."""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dataflows.gemm import Gemm, lower
from dataflows.systolic import map_dense
from dataflows.tiles import _CHOSEN, _alike, _group_tiles, _pair_slots, schedule
from tests.dataflows.test_traffic import _layers


def test_a_compressed_sram_format_holds_a_fold_in_one_tile():
    """An os fold reads a 4 × 100 block of A: 400 words, two chunks in a 200-word half buffer
    when held dense; one tile when held at a quarter. DRAM traffic follows the DRAM format."""
    g = Gemm("l", "fwd", 4, 100, 4)
    mp = map_dense(g, 4, 4, "os", 1)
    dense = schedule(g, mp, (200, 1000, 1000))
    held = schedule(g, mp, (200, 1000, 1000), held=(0.25, 1.0))
    assert (len(dense), len(held)) == (2, 1)
    assert dense.total("a_dram") == held.total("a_dram") == 400
    squeezed = schedule(g, mp, (200, 1000, 1000), compression=(0.5, 1.0), held=(1.0, 1.0))
    assert len(squeezed) == 2 and squeezed.total("a_dram") == 200


@settings(deadline=None, max_examples=80)
@given(m=st.integers(1, 60), k=st.integers(1, 60), n=st.integers(1, 60),
       df=st.sampled_from(["os", "ws", "is"]), cap=st.integers(4, 400),
       comp=st.tuples(st.floats(0.05, 1.0), st.floats(0.05, 1.0)),
       held=st.tuples(st.floats(0.05, 1.0), st.floats(0.05, 1.0)))
def test_held_format_is_a_larger_buffer_for_the_loop_nest(m, k, n, df, cap, comp, held):
    """An SRAM format changes what the loop nest can keep on chip — as if the A and B buffers
    held dense words / held ratio — and how folds group into tiles; never the work."""
    g = Gemm("l", "fwd", m, k, n)
    mp = map_dense(g, 4, 3, df, 2)
    caps = (cap, cap, cap)
    base = schedule(g, mp, caps, compression=comp)
    np.testing.assert_array_equal(base.tiles, schedule(g, mp, caps, compression=comp,
                                                       held=comp).tiles)  # the default
    other = schedule(g, mp, caps, compression=comp, held=held)
    for col in ("compute", "a_sram", "b_sram", "c_sram", "folds"):
        assert other.total(col) == base.total(col)
    bigger = tuple(max(cap, int(cap / h)) for h in held) + (cap,)
    same_nest = schedule(g, mp, bigger, compression=comp, held=(1.0, 1.0))
    for col in ("a_dram", "b_dram", "c_read", "c_write"):
        assert other.total(col) == same_nest.total(col)


def test_a_format_that_holds_more_than_dense_leaves_less_room():
    """A buffer holds what its format holds: B (100 × 4, one column fold) is 400 dense words
    and fits a 400-word half buffer, read once over the two row folds; held in a format 1/16
    larger (a bitmap of a dense block: 16-bit values plus a bit each) it is 425 words, does not
    fit, and is read again for the second fold."""
    g = Gemm("l", "fwd", 8, 100, 4)
    mp = map_dense(g, 4, 4, "os", 1)
    assert schedule(g, mp, (1000, 400, 1000)).total("b_dram") == 400
    assert schedule(g, mp, (1000, 400, 1000), held=(1.0, 17 / 16)).total("b_dram") == 800
    assert schedule(g, mp, (1000, 425, 1000), held=(1.0, 17 / 16)).total("b_dram") == 400


def test_each_block_is_compared_with_the_buffer_as_its_format_holds_it():
    """Blocks of one operand compress differently: B's two column folds (100 × 4 each) held at
    1/2 and at 1 are 200 and 400 words. A 300-word half buffer keeps the first across the two
    row folds and not the second (at the mean ratio, 3/4, both would be 300 words and stay)."""
    g = Gemm("l", "fwd", 8, 100, 8)
    mp = map_dense(g, 4, 4, "os", 1)
    held = np.array([[1.0, 0.5], [1.0, 0.5], [1.0, 1.0], [1.0, 1.0]])  # column folds outer
    sch = schedule(g, mp, (1000, 300, 1000), compression=np.ones((4, 2)), held=held)
    assert sch.outer == "cols" and sch.total("b_dram") == 400 + 2 * 400


def _pair_slots_reference(seqs, fit):
    """The needed pairs of consecutive blocks of each sequence, numbered as they first appear
    over the sequences in turn."""
    nb, keys, idx = len(fit), {}, []
    for seq in seqs:
        out = []
        for f, b in enumerate(seq):
            a = seq[f - 1] if f else b
            if a == b or not (fit[a] and fit[b]):
                out.append(-1)
                continue
            out.append(keys.setdefault(int(a) * nb + int(b), len(keys)))
        idx.append(out)
    return list(keys), idx


@settings(deadline=None, max_examples=80)
@given(nb=st.integers(1, 12), data=st.data())
def test_pair_slots_numbers_the_pairs_of_both_orders_once(nb, data):
    """``tiles._pair_slots`` (a hash table that grows) numbers the pairs of blocks consecutive
    folds read in either loop order as a plain dictionary does, past the table's first size."""
    fit = np.array(data.draw(st.lists(st.booleans(), min_size=nb, max_size=nb)))
    seqs = [np.array(data.draw(st.lists(st.integers(0, nb - 1), max_size=n)), dtype=np.int64)
            for n in (300, 300)]
    if nb > 8:  # many distinct pairs: the table grows
        seqs[1] = np.array([b for a in range(nb) for b in range(nb)] * 2, dtype=np.int64)
    keys, idx = _pair_slots_reference(seqs, fit)
    got_keys, *got_idx = _pair_slots(seqs[0].reshape(-1, 1), seqs[1].reshape(-1, 1), 0, fit)
    np.testing.assert_array_equal(got_keys, np.array(keys, dtype=np.int64))
    for got, want in zip(got_idx, idx, strict=True):
        np.testing.assert_array_equal(got, np.array(want, dtype=np.int64))


def _alike_reference(rows, geo):
    """Layouts by a stable lexicographic sort of the moved rows: each one's first row, and each
    row's layout (numbered in sorted order)."""
    hw = int(geo[12] * geo[13])
    taps = int(geo[4] * geo[5]) if geo[14] == 0 and geo[15] == 0 else 0
    base = rows[:, 0] - rows[:, 0] % hw
    cbase = rows[:, 2] - rows[:, 2] % taps if taps else 0
    key = np.stack([rows[:, i] - (base if i % 4 < 2 else cbase) for i in range(rows.shape[1])],
                   axis=1)
    order = np.lexsort(key.T[::-1])
    ordered = key[order]
    starts = np.concatenate([[True], np.any(ordered[1:] != ordered[:-1], axis=1)])
    inv = np.empty(key.shape[0], dtype=np.int64)
    inv[order] = np.cumsum(starts) - 1
    return order[starts], inv


@settings(deadline=None, max_examples=80)
@given(width=st.sampled_from([4, 8]), hw=st.integers(1, 9), taps=st.integers(1, 9),
       cp=st.sampled_from([0, 0, 3]), data=st.data())
def test_alike_groups_rows_as_a_lexicographic_sort_does(width, hw, taps, cp, data):
    """``tiles._alike`` (a hash table of the moved rows) puts the same rows together as a
    stable sort of them, each group represented by the same row (its first)."""
    geo = np.zeros(20, dtype=np.int64)
    geo[12], geo[13], geo[4], geo[5], geo[14] = hw, 1, taps, 1, cp
    n = data.draw(st.integers(1, 60))
    rows = np.array(data.draw(st.lists(st.lists(st.integers(0, 40), min_size=width,
                                                max_size=width), min_size=n, max_size=n)),
                    dtype=np.int64)
    first, inv = _alike(rows, geo)
    want_first, want_inv = _alike_reference(rows, geo)
    assert sorted(first) == sorted(want_first)
    np.testing.assert_array_equal(first[inv], want_first[want_inv])


def _scaled_reference(words, scale):
    """Each fold's words times its scale, rounded on the running sum."""
    out, exact, done = [], 0.0, 0
    for w, s in zip(words, scale, strict=True):
        exact += float(w) * s
        v = int(exact + 0.5) - done
        out.append(v)
        done += v
    return out


@settings(deadline=None, max_examples=60)
@given(rf=st.integers(1, 5), cf=st.integers(1, 5), groups=st.integers(1, 3),
       one_row=st.booleans(), transposed=st.booleans(), data=st.data())
def test_group_tiles_reads_per_fold_inputs_in_the_order_the_folds_come(
        rf, cf, groups, one_row, transposed, data):
    """With every fold its own tile (one-word buffers, one cycle a fold: no chunks), a tile is
    its fold, its DRAM words scaled and rounded on their running sums. The per-fold inputs
    come column folds outer; folds that come row folds outer read them transposed, as if they
    had been reordered (any buffers, any cycles) — and one row for all folds is that row
    repeated."""
    nf = rf * cf
    folds = np.array(data.draw(st.lists(st.lists(st.integers(0, 1000), min_size=8, max_size=8),
                                        min_size=nf, max_size=nf)), dtype=np.int64)
    rows = 1 if one_row else nf * groups
    ratio = st.floats(0.05, 2.0)
    scale = np.array(data.draw(st.lists(st.tuples(ratio, ratio), min_size=rows, max_size=rows)))
    occ = np.array(data.draw(st.lists(st.tuples(ratio, ratio), min_size=rows, max_size=rows)))
    scale_c = data.draw(ratio)
    full_scale, full_occ = (np.repeat(x, nf * groups // rows, axis=0) for x in (scale, occ))
    src = [(f % cf) * rf + f // cf if transposed else f for f in range(nf)]
    at = [g * nf + s for g in range(groups) for s in src]
    ones = np.ones(nf * groups, dtype=np.int64)
    # every fold holds at least a word of A: it closes the tile before it
    fresh = np.where(np.arange(8) == 0, np.maximum(folds, 1), folds)
    got = _group_tiles(fresh, groups, ones, scale, scale_c, np.maximum(occ, 1.0), 1, 1, 1, rf,
                       cf, transposed)
    reps = np.tile(fresh, (groups, 1))
    assert got.shape == (nf * groups, 9)
    for col, sc in ((0, full_scale[at, 0]), (1, full_scale[at, 1]), (2, [scale_c] * len(at)),
                    (3, [scale_c] * len(at))):
        np.testing.assert_array_equal(got[:, col], _scaled_reference(reps[:, col], sc))
    np.testing.assert_array_equal(got[:, 5:8], reps[:, 5:8])
    caps = data.draw(st.tuples(*[st.integers(0, 3000)] * 3))
    cycles = np.array(data.draw(st.lists(st.integers(0, 9), min_size=nf * groups,
                                         max_size=nf * groups)), dtype=np.int64)
    got = _group_tiles(folds, groups, cycles, scale, scale_c, occ, *caps, rf, cf, transposed)
    want = _group_tiles(folds, groups, cycles[at], full_scale[at], scale_c, full_occ[at], *caps,
                        rf, cf, False)
    np.testing.assert_array_equal(got, want)


@settings(deadline=None, max_examples=80)
@given(layer=_layers(), batch=st.integers(1, 2),
       phase=st.sampled_from(["fwd", "bwd_weight", "bwd_input"]),
       df=st.sampled_from(["os", "ws", "is"]), rows=st.integers(1, 4), cols=st.integers(1, 4),
       caps=st.tuples(*[st.integers(1, 160)] * 3), data=st.data())
def test_a_remembered_loop_order_plans_as_a_fresh_choice(layer, batch, phase, df, rows, cols,
                                                         caps, data):
    """A GEMM planned again with other cycles (a layer's sparse run after its dense baseline)
    plans only the loop order chosen the first time: the tiles are those of a fresh choice."""
    gemm = lower(layer, batch, phase)
    assume(gemm.M * gemm.K * gemm.N <= 20000)
    mp = map_dense(gemm, rows, cols, df, 2)
    nf = mp.folds * gemm.groups
    cycles = np.array(data.draw(st.lists(st.integers(1, 50), min_size=nf, max_size=nf)),
                      dtype=np.int64)
    _CHOSEN.clear()
    fresh = schedule(gemm, mp, caps, cycles)
    _CHOSEN.clear()
    schedule(gemm, mp, caps)
    again = schedule(gemm, mp, caps, cycles)
    assert again.outer == fresh.outer
    np.testing.assert_array_equal(again.tiles, fresh.tiles)
