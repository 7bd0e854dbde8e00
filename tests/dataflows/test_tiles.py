"""Tile schedules: what a tile holds in its half buffers under an SRAM format."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.gemm import Gemm
from dataflows.systolic import map_dense
from dataflows.tiles import _unique, schedule


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


@settings(deadline=None, max_examples=60)
@given(keys=st.lists(st.integers(-(2**40), 2**40), max_size=300),
       few=st.integers(1, 8))
def test_unique_is_numpys(keys, few):
    """``tiles._unique`` (a hash table, then only the distinct keys sorted) gives what
    ``np.unique(..., return_inverse=True)`` gives, on keys drawn freely and on keys with a few
    values repeated many times (a loop nest's pairs of blocks)."""
    for ks in (np.array(keys, dtype=np.int64), np.array(keys, dtype=np.int64) % few):
        want, want_inv = np.unique(ks, return_inverse=True)
        got, got_inv = _unique(ks)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got_inv, want_inv.reshape(-1))
