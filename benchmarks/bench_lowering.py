"""Benchmark: building a lowering's packed operands (``dataflows.lowering``).

Two ratios, each measured in one run on one machine (best of ``--repeat``; other processes may
share the cores, so the load average is printed with the figures):

1. im2col columns in TensorDash's ``channel_inner`` K order, for the ResNet-50 convolution
   shapes at batch 32 with 90 %-sparse and all-ones feature maps: ``im2col_cols`` followed by
   placing its rows in the K order (numpy, the way the lowering built them before), against
   ``im2col_cols_map`` (planes built once per image and channel, rows placed by the kernel).
2. The rotated filters of a ``bwd_input: phases`` GEMM (``channel_inner``), for the ResNet-50
   weight shapes: one ``runs_rows`` run of one bit per (filter, tap) and channel, then the K
   order and a bit transpose (before), against the rows of Wᵀ concatenated tap by tap
   (``gather_runs``).

3. The per-k counts of a GEMM operand (``col_popcounts``: how many rows hold each k), on the
   two layouts of the ResNet-50 convolutions' im2col operands at batch 32 (rows (c, i, j) by
   positions, as ``bwd_weight`` reads the input; positions by (c, i, j), as ``fwd``), 1/8
   dense and all ones: a bit transpose and a count of its rows (before), against byte
   counters over the rows (after).
4. One image's all-ones im2col columns (rows (c, i, j) in the channel_inner K order, bits its
   positions) repeated for the batch, as ``bwd_weight`` builds a dense input held as ones, for
   the ResNet-50 convolutions whose image is whole 64-bit words: every run moved
   (``runs_rows``, before) against the words copied (``lowering._repeat_bits``, after).

Both sides build the same bits, and the same counts (checked here). Run:
python benchmarks/bench_lowering.py
"""

from __future__ import annotations

import argparse
import os
from functools import partial

import numpy as np
from bench_sparse import _best  # the sibling script (run as a script, its folder is on the path)

from dataflows import kernels as kx
from dataflows.lowering import _repeat_bits
from traces.format import PackedMask

LANES = 16
# (channels, map size, kernel, stride, padding): the convolutions of ResNet-50 (one of each)
CONVS = [(3, 224, 7, 2, 3), (64, 56, 1, 1, 0), (64, 56, 3, 1, 1), (256, 56, 1, 1, 0),
         (256, 56, 1, 2, 0), (128, 56, 3, 2, 1), (128, 28, 3, 1, 1), (512, 28, 1, 1, 0),
         (512, 28, 1, 2, 0), (256, 28, 3, 2, 1), (256, 14, 3, 1, 1), (1024, 14, 1, 1, 0),
         (1024, 14, 1, 2, 0), (512, 14, 3, 2, 1), (512, 7, 3, 1, 1), (2048, 7, 1, 1, 0)]
# (filters, channels, kernel, stride): the weights whose rotated copies a transposed GEMM reads
WEIGHTS = [(64, 3, 7, 2), (64, 64, 3, 1), (256, 64, 1, 1), (128, 256, 1, 1), (128, 128, 3, 2),
           (512, 256, 1, 2), (256, 256, 3, 2), (1024, 512, 1, 2), (512, 512, 3, 2),
           (2048, 1024, 1, 2), (512, 2048, 1, 1)]


def _k_rows(ch: int, kh: int, kw: int) -> tuple[np.ndarray, int]:
    """Row (c, i, j) -> its row in the channel_inner K order (i, j, c), channels padded."""
    cp = -(-ch // LANES) * LANES
    c, i, j = np.meshgrid(np.arange(ch), np.arange(kh), np.arange(kw), indexing="ij")
    return ((i * kw + j) * cp + c).ravel().astype(np.int64), kh * kw * cp


def _im2col_before(view: tuple, geo: tuple, rows: np.ndarray, nrows: int) -> np.ndarray:
    cols = kx.im2col_cols(*view, *geo)
    placed = np.zeros((nrows, cols.shape[1]), dtype=np.uint64)
    placed[rows] = cols
    return placed


def _im2col_after(view: tuple, geo: tuple, rows: np.ndarray, nrows: int) -> np.ndarray:
    return kx.im2col_cols_map(*view, *geo, rows, nrows)


def im2col_ratio(repeat: int, batch: int) -> tuple[float, float]:
    """Seconds of the whole set of shapes, before and after (each shape's best of
    ``repeat``)."""
    rng = np.random.default_rng(0)
    before = after = 0.0
    for ch, size, k, s, p in CONVS:
        out = (size + 2 * p - k) // s + 1
        geo = (k, k, s, s, p, p, 1, 1, out, out)
        rows, nrows = _k_rows(ch, k, k)
        for density in (0.1, 1.0):
            mask = rng.random((batch, ch, size, size)) < density
            words = kx.Bits.of(PackedMask.from_bool(mask)).words
            args = ((words, ch, size, size, 0, batch, 0, ch, 0, 0), geo, rows, nrows)
            assert np.array_equal(_im2col_before(*args), _im2col_after(*args))
            before += _best(partial(_im2col_before, *args), repeat)
            after += _best(partial(_im2col_after, *args), repeat)
    return before, after


def _rotated_before(wt: np.ndarray, shape: tuple, ti: np.ndarray, tj: np.ndarray
                    ) -> np.ndarray:
    """One run of one bit per (filter, tap) and channel, the K order, a bit transpose."""
    cout, cin, k = shape
    o, a, b = np.meshgrid(np.arange(cout), ti, tj, indexing="ij")
    base = (o * cin * k * k + (k - 1 - a) * k + (k - 1 - b)).ravel().astype(np.int64)
    per = kx.runs_rows(wt, base, k * k, cin, 1, 1, cin)
    rows, nrows = _k_rows(cout, len(ti), len(tj))
    placed = np.zeros((nrows, per.shape[1]), dtype=np.uint64)
    placed[rows] = per
    return kx.transpose_bits(placed, cin)


def _rotated_after(wt: np.ndarray, shape: tuple, ti: np.ndarray, tj: np.ndarray
                   ) -> np.ndarray:
    """The rows of Wᵀ (channel, tap), concatenated tap by tap."""
    cout, cin, k = shape
    khw = k * k
    a, b = np.meshgrid(np.arange(len(ti)), np.arange(len(tj)), indexing="ij")
    taps = ((k - 1 - ti[a]) * k + (k - 1 - tj[b])).ravel().astype(np.int64)
    filters = kx.runs_rows(wt, np.arange(cout, dtype=np.int64) * cin * khw, 0, 1, cin * khw,
                           0, cin * khw)
    wcols = kx.transpose_bits(filters, cin * khw)
    rows = np.arange(cin, dtype=np.int64)[:, None] * khw + taps[None, :]
    cp = -(-cout // LANES) * LANES
    return kx.gather_runs(wcols, rows, cout, cp, len(taps) * cp)


def rotated_ratio(repeat: int) -> tuple[float, float]:
    """Seconds of every output phase of every weight shape, before and after."""
    rng = np.random.default_rng(1)
    before = after = 0.0
    for cout, cin, k, s in WEIGHTS:
        wt = kx.Bits.of(PackedMask.from_bool(rng.random((cout, cin, k, k)) < 0.1)).words
        for r in range(s * s):  # the phases' rotated taps: every s-th, from r // s and r % s
            ti, tj = np.arange(r // s, k, s), np.arange(r % s, k, s)
            if not len(ti) or not len(tj):
                continue
            args = (wt, (cout, cin, k), ti, tj)
            assert np.array_equal(_rotated_before(*args), _rotated_after(*args))
            before += _best(partial(_rotated_before, *args), repeat)
            after += _best(partial(_rotated_after, *args), repeat)
    return before, after


def _counts_before(pack: np.ndarray, k: int) -> np.ndarray:
    """``col_popcounts`` as it was: the transpose's rows counted."""
    return kx.row_popcounts(kx.transpose_bits(pack, k))


def counts_ratio(repeat: int, batch: int) -> tuple[float, float]:
    """Seconds of the per-k counts of every convolution's two operand layouts, before and
    after."""
    rng = np.random.default_rng(2)
    before = after = 0.0
    for cin, hw, k, s, p in CONVS:
        ho = (hw + 2 * p - k) // s + 1
        kk = -(-cin // LANES) * LANES * k * k  # channel_inner: channels padded to the lanes
        pos = batch * ho * ho
        for rows, bits in ((kk, pos), (pos, kk)):
            shape = (rows, -(-bits // 64))
            for ones in (False, True):
                if ones:
                    pack = np.full(shape, np.uint64(0xFFFFFFFFFFFFFFFF))
                else:  # three random words ANDed: 1/8 dense
                    pack = rng.integers(0, 2**64 - 1, shape, np.uint64, endpoint=True)
                    for _ in range(2):
                        pack &= rng.integers(0, 2**64 - 1, shape, np.uint64, endpoint=True)
                assert np.array_equal(_counts_before(pack, bits), kx.col_popcounts(pack, bits))
                before += _best(partial(_counts_before, pack, bits), repeat)
                after += _best(partial(kx.col_popcounts, pack, bits), repeat)
    return before, after


def _repeat_before(pack: np.ndarray, per: int, n: int) -> np.ndarray:
    """``lowering._repeat_bits`` as it was: a run of ``per`` bits moved per image and row."""
    base = np.arange(pack.shape[0], dtype=np.int64) * pack.shape[1] * 64
    return kx.runs_rows(pack.reshape(-1), base, 0, n, per, per, n * per)


def repeat_ratio(repeat: int, batch: int) -> tuple[float, float]:
    """Seconds of the all-ones columns of every convolution whose image is whole words,
    repeated for the batch, before and after."""
    before = after = 0.0
    for ch, size, k, s, p in CONVS:
        out = (size + 2 * p - k) // s + 1
        if (out * out) % 64:
            continue
        rows, nrows = _k_rows(ch, k, k)
        ones = kx.Bits.ones((1, ch, size, size)).words
        one = kx.im2col_cols_map(ones, ch, size, size, 0, 1, 0, ch, 0, 0, k, k, s, s, p, p,
                                 1, 1, out, out, rows, nrows)
        assert np.array_equal(_repeat_before(one, out * out, batch),
                              _repeat_bits(one, out * out, batch))
        before += _best(partial(_repeat_before, one, out * out, batch), repeat)
        after += _best(partial(_repeat_bits, one, out * out, batch), repeat)
    return before, after


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    b, a = im2col_ratio(args.repeat, args.batch)
    print(f"im2col, channel_inner, ResNet-50 shapes at batch {args.batch}: "
          f"before {b * 1e3:.1f} ms, after {a * 1e3:.1f} ms, {b / a:.1f}x")
    b, a = rotated_ratio(args.repeat)
    print(f"rotated filters, channel_inner, ResNet-50 weights: before {b * 1e3:.1f} ms, "
          f"after {a * 1e3:.1f} ms, {b / a:.1f}x")
    b, a = counts_ratio(args.repeat, args.batch)
    print(f"per-k counts, im2col operands of ResNet-50 at batch {args.batch}: "
          f"before {b * 1e3:.1f} ms, after {a * 1e3:.1f} ms, {b / a:.1f}x")
    b, a = repeat_ratio(args.repeat, args.batch)
    print(f"all-ones columns of one image repeated, ResNet-50 shapes at batch {args.batch}: "
          f"before {b * 1e3:.1f} ms, after {a * 1e3:.1f} ms, {b / a:.1f}x")


if __name__ == "__main__":
    main()
