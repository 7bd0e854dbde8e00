"""The walk of a compressed im2col operand's feature map (``dataflows.tiles``: ``_map_words``,
``_map_shared``, ``_map_all`` and the ``_map_blocks`` / ``_map_pairs`` built on them, which
read the words a block touches as runs of pixels per run of channels, and sum the nonzeros of
a run of channels once it is read again) against the element by element walk they replace,
kept here as the slow reference: every (position, column) of a block, each word marked once in
a stamp per word of the map. Geometries are drawn directly (any kernel, stride, padding,
dilation, zeros inserted into the map, (c, i, j) or (i, j, c) columns with padded channel
slots, N:M-condensed columns), so that every branch of the runs is reached.
"""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import dataflows.tiles as tiles
from common.jit import njit
from dataflows.formats import FORMATS, run_bits
from dataflows.tiles import _k_range, _positions_reaching, _rows_read

# ---- the slow reference: the element-by-element walk the runs replace ----


@njit
def _slow_set(geo, nz, blk, stamp, tag, only, prev):
    """(words, nonzeros) of the feature map (one group's: ``nz`` flat over (image, channel,
    y, x)) that im2col block ``blk`` (positions p0 .. p1−1, real ones, × columns k0 .. k1−1)
    touches, each once, marking them ``tag`` in ``stamp``; with ``only`` ≥ 0, of those only
    the words marked ``only`` (the words it shares with the block marked so); then the
    (words, nonzeros) among them that were marked ``prev`` (shared with that block). Element
    by element, positions outer."""
    k0, k1 = _k_range(geo, blk[2], blk[3])
    cg, h, w, kw = geo[1], geo[2], geo[3], geo[5]
    wo, cp, ih, iw = geo[13], geo[14], geo[18], geo[19]
    taps, hw = geo[4] * kw, geo[12] * wo
    # per column its channel's offset and its tap's; padding slots left out
    cols = np.empty((max(0, k1 - k0), 3), dtype=np.int64)
    nk = 0
    for k in range(k0, k1):
        c, t = (k // taps, k % taps) if cp == 0 else (k % cp, k // cp)
        if c < cg:  # else a slot padding the channels to the lanes: no word
            cols[nk, 0], cols[nk, 1], cols[nk, 2] = (
                c * h * w,
                (t // kw) * geo[10],
                (t % kw) * geo[11],
            )
            nk += 1
    n = z = ni = zi = 0
    # positions outer: one position's columns touch neighbouring words, so the stamps are
    # walked once per block, not once per column
    for p in range(blk[0], max(blk[0], blk[1])):
        base = (p // hw) * cg * h * w
        oy = (p % hw) // wo * geo[6] - geo[8]
        ox = p % wo * geo[7] - geo[9]
        for j in range(nk):
            y, x = oy + cols[j, 1], ox + cols[j, 2]
            if y < 0 or y >= h or x < 0 or x >= w or (ih and y % ih) or (iw and x % iw):
                continue
            q = base + cols[j, 0] + y * w + x
            if stamp[q] == tag or (only >= 0 and stamp[q] != only):
                continue
            if stamp[q] == prev:
                ni += 1
                zi += nz[q]
            stamp[q] = tag
            n += 1
            z += nz[q]
    return n, z, ni, zi


@njit
def _slow_near(geo, nz, a, b, stamp, tag, only):
    """``_slow_set`` of block ``b`` restricted to what block ``a`` can share with it: per image
    both span, the positions whose windows reach the input rows ``a``'s windows read, and in
    the (c, i, j) order the columns of ``a``'s channels."""
    hw, taps = geo[12] * geo[13], geo[4] * geo[5]
    sub = b.copy()
    if geo[14] == 0 and geo[15] == 0:
        sub[2] = max(b[2], a[2] // taps * taps)
        sub[3] = min(b[3], ((a[3] - 1) // taps + 1) * taps)
    n = z = 0
    if sub[2] >= sub[3]:
        return n, z
    for img in range(max(a[0], b[0]) // hw, (min(a[1], b[1]) - 1) // hw + 1):
        y_lo, y_hi = _rows_read(geo, img, a[0], a[1], 0, taps)
        q_lo, q_hi = _positions_reaching(geo, img, y_lo, y_hi)
        sub[0] = max(b[0], q_lo, img * hw)
        sub[1] = min(b[1], q_hi, (img + 1) * hw)
        if sub[0] < sub[1]:
            dn, dz, _, _ = _slow_set(geo, nz, sub, stamp, tag, only, -1)
            n += dn
            z += dz
    return n, z


@njit
def _slow_all(geo, nz):
    """(words, nonzeros) of all of the map the im2col matrix reads: every channel of every
    image at the pixels some window reads (all positions through all taps)."""
    h, w, kw, ih, iw = geo[2], geo[3], geo[5], geo[18], geo[19]
    hit = np.zeros(h * w, dtype=np.bool_)
    for oy in range(geo[12]):
        for ox in range(geo[13]):
            for t in range(geo[4] * kw):
                y = oy * geo[6] - geo[8] + (t // kw) * geo[10]
                x = ox * geo[7] - geo[9] + (t % kw) * geo[11]
                if 0 <= y < h and 0 <= x < w and not (ih and y % ih) and not (iw and x % iw):
                    hit[y * w + x] = True
    n = z = 0
    for m in range(geo[0] * geo[1]):
        for q in range(h * w):
            if hit[q]:
                n += 1
                z += nz[m * h * w + q]
    return n, z


@njit
def _slow_blocks(geo, nz, blocks, stream, capbits, codes, vb, nmm, stamp):
    """Per block of an im2col operand whose map is stored compressed (``codes``: its DRAM and
    SRAM formats, ``FORMATS`` indices; ``run_bits``): the DRAM bits fetching it moves, the
    SRAM bits of what it fetches, and its SRAM bits (whether it stays: ≤ ``capbits``). A
    block that does not fit streams in ⌈its SRAM bits / ``capbits``⌉ equal parts along its
    time axis (``stream`` as ``_im2col_blocks``; output rows for positions), each part the
    compressed size of its own words. Also per block its (words, nonzeros), and those it
    shares with the block before it (in index order: the pairs loop orders meet most)."""
    nb = blocks.shape[0]
    fetch = np.zeros(nb, dtype=np.int64)
    fhold = np.zeros(nb, dtype=np.int64)
    hold = np.zeros(nb, dtype=np.int64)
    words = np.zeros((nb, 4), dtype=np.int64)
    wo = geo[13]
    tag = stamp.max() + 1
    for b in range(nb):
        n, z, ni, zi = _slow_set(geo, nz, blocks[b], stamp, tag + b, -1, tag + b - 1 if b else -1)
        words[b, 0], words[b, 1], words[b, 2], words[b, 3] = n, z, ni, zi
        hold[b] = run_bits(codes[1], words[b, 0], words[b, 1], vb, nmm)
        fetch[b] = run_bits(codes[0], words[b, 0], words[b, 1], vb, nmm)
        fhold[b] = hold[b]
    tag += nb
    part = np.empty(4, dtype=np.int64)
    for b in range(nb):
        if stream < 0 or hold[b] <= capbits:
            continue
        step = wo if stream == 0 else 1
        lo, length = (
            (blocks[b, 0], (blocks[b, 1] - blocks[b, 0]) // wo)
            if stream == 0
            else (blocks[b, 2], blocks[b, 3] - blocks[b, 2])
        )
        parts = min(length, (hold[b] + capbits - 1) // capbits)
        fetch[b] = fhold[b] = 0
        for q in range(parts):
            part[:] = blocks[b]
            a = lo + q * length // parts * step
            e = lo + (q + 1) * length // parts * step
            part[2 * stream], part[2 * stream + 1] = a, e
            n, z, _, _ = _slow_set(geo, nz, part, stamp, tag, -1, -1)
            tag += 1
            fetch[b] += run_bits(codes[0], n, z, vb, nmm)
            fhold[b] += run_bits(codes[1], n, z, vb, nmm)
    return fetch, fhold, hold, words


@njit
def _slow_pairs(geo, nz, blocks, words, first, second, codes, vb, nmm, stamp):
    """Per pair of blocks (``first[q]`` kept, ``second[q]`` read next; ``words``: per block
    its (words, nonzeros) and those it shares with the block before it): the DRAM and SRAM
    bits of the words the second touches and the first does not hold — the second's less
    those both touch."""
    npair = first.shape[0]
    dram = np.zeros(npair, dtype=np.int64)
    hold = np.zeros(npair, dtype=np.int64)
    tag = stamp.max() + 1
    for q in range(npair):
        s = second[q]
        if first[q] == s - 1:
            n, z = words[s, 2], words[s, 3]
        else:
            a, b = blocks[first[q]], blocks[s]
            _slow_near(geo, nz, b, a, stamp, tag, -1)
            n, z = _slow_near(geo, nz, a, b, stamp, tag + 1, tag)
            tag += 2
        n, z = words[s, 0] - n, words[s, 1] - z
        dram[q] = run_bits(codes[0], n, z, vb, nmm)
        hold[q] = run_bits(codes[1], n, z, vb, nmm)
    return dram, hold


# ---- drawn geometries, maps and blocks ----


@st.composite
def _geometries(draw) -> np.ndarray:
    """A map's geometry as ``tiles._geometry`` lays it out (20 numbers); its positions are
    real ones (no padded slots)."""
    n_img, cg = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ih, iw = draw(st.sampled_from([0, 2, 3])), draw(st.sampled_from([0, 2]))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    ph = draw(st.integers(0, dh * (kh - 1) + 1))
    pw = draw(st.integers(0, dw * (kw - 1) + 1))
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    assume(ho >= 1 and wo >= 1)
    cp = draw(st.sampled_from([0, cg, cg + 2]))
    sn, sm = draw(st.sampled_from([(0, 0), (0, 0), (1, 2), (2, 4), (1, 3)]))
    return np.array(
        [n_img, cg, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, cp, sn, sm, 0, ih, iw],
        dtype=np.int64,
    )


def _columns(geo: np.ndarray) -> int:
    """Columns of the im2col operand: (channel slots) × taps, or the N:M slots over them."""
    full = int((geo[14] or geo[1]) * geo[4] * geo[5])
    sn, sm = int(geo[15]), int(geo[16])
    return full if not sn else (full // sm) * sn + min(sn, full % sm)


def _map(geo: np.ndarray, seed: int, density: float) -> np.ndarray:
    """Random nonzeros of the map, flat over (image, channel, y, x): zero where the map has
    inserted zeros (as ``MapFormat.nonzero`` is)."""
    n_img, cg, h, w, ih, iw = (int(geo[i]) for i in (0, 1, 2, 3, 18, 19))
    nz = (np.random.default_rng(seed).random((n_img, cg, h, w)) < density).astype(np.uint8)
    if ih:
        nz[:, :, np.arange(h) % ih != 0, :] = 0
    if iw:
        nz[:, :, :, np.arange(w) % iw != 0] = 0
    return nz.reshape(-1)


def _blocks(draw, geo: np.ndarray) -> np.ndarray:
    """Blocks (p0, p1, k0, k1) of the operand, some read again (a run of channels summed once
    it is read a second time), and now and then one with no positions."""
    npos, ncol = int(geo[0] * geo[12] * geo[13]), _columns(geo)

    def block():
        p0, k0 = draw(st.integers(0, npos - 1)), draw(st.integers(0, ncol - 1))
        p1 = draw(st.one_of(st.integers(p0 + 1, npos), st.just(p0)))
        return [p0, p1, k0, draw(st.integers(k0 + 1, ncol))]

    pool = [block() for _ in range(draw(st.integers(1, 6)))]
    order = draw(st.lists(st.integers(0, len(pool) - 1), min_size=1, max_size=14))
    return np.array([pool[i] for i in order], dtype=np.int64)


def _new(geo: np.ndarray):
    """A fresh store of channel sums and scratch, as ``tiles._MapOp`` makes them."""
    return tiles._map_sums(geo)


@settings(deadline=None, max_examples=400)
@given(
    geo=_geometries(),
    data=st.data(),
    seed=st.integers(0, 2**16),
    density=st.sampled_from([0.0, 0.3, 0.8, 1.0]),
    stream=st.integers(-1, 1),
    capbits=st.integers(1, 600),
    codes=st.tuples(*[st.integers(0, len(FORMATS) - 1)] * 2),
    vb=st.sampled_from([1, 8, 16]),
    nmm=st.sampled_from([2, 4]),
)
def test_the_runs_count_the_blocks_words_as_the_element_walk(
    geo, data, seed, density, stream, capbits, codes, vb, nmm
):
    """``_map_blocks``: per block the same DRAM, fetched and held bits, (words, nonzeros),
    and those shared with the block before, as the element-by-element walk; streamed blocks
    (parts along positions or columns) included."""
    nz = _map(geo, seed, density)
    blocks = _blocks(data.draw, geo)
    code = np.array(codes, dtype=np.int64)
    want = _slow_blocks(
        geo, nz, blocks, stream, capbits, code, vb, nmm, np.zeros(nz.shape[0], dtype=np.int32)
    )
    got = tiles._map_blocks(geo, nz, blocks, stream, capbits, code, vb, nmm, *_new(geo))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


@settings(deadline=None, max_examples=300)
@given(
    geo=_geometries(),
    data=st.data(),
    seed=st.integers(0, 2**16),
    density=st.sampled_from([0.3, 1.0]),
    codes=st.tuples(*[st.integers(0, len(FORMATS) - 1)] * 2),
)
def test_the_runs_count_what_two_blocks_share_as_the_element_walk(geo, data, seed, density, codes):
    """``_map_pairs`` (and so ``_map_shared``): the bits of the words the second block of a
    pair touches and the first does not, as the element-by-element walk, for any pairs
    (neighbours in index order, read from the blocks' own counts, and others)."""
    nz = _map(geo, seed, density)
    blocks = _blocks(data.draw, geo)
    nb = blocks.shape[0]
    pairs = data.draw(
        st.lists(st.tuples(st.integers(0, nb - 1), st.integers(0, nb - 1)), min_size=1, max_size=12)
    )
    first = np.array([p[0] for p in pairs], dtype=np.int64)
    second = np.array([p[1] for p in pairs], dtype=np.int64)
    code = np.array(codes, dtype=np.int64)
    stamp = np.zeros(nz.shape[0], dtype=np.int32)
    words = _slow_blocks(geo, nz, blocks, -1, 1, code, 8, 4, stamp)[3]
    want = _slow_pairs(geo, nz, blocks, words, first, second, code, 8, 4, stamp)
    sums = _new(geo)
    got_words = tiles._map_blocks(geo, nz, blocks, -1, 1, code, 8, 4, *sums)[3]
    np.testing.assert_array_equal(got_words, words)
    got = tiles._map_pairs(geo, nz, blocks, words, first, second, code, 8, 4, *sums)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


@settings(deadline=None, max_examples=200)
@given(geo=_geometries(), seed=st.integers(0, 2**16), density=st.sampled_from([0.3, 1.0]))
def test_the_runs_count_all_of_the_map_as_the_element_walk(geo, seed, density):
    """``_map_all``: the words every window reads, and their nonzeros, as the element walk;
    and per block the bits are those of a run of its words (``run_bits``)."""
    nz = _map(geo, seed, density)
    got = tiles._map_all(geo, nz, *tiles._map_scratch(geo), *_new(geo))
    assert got == _slow_all(geo, nz)
    assert run_bits(1, got[0], got[1], 8, 4) == (got[0] and got[1] * 8 + got[0])
