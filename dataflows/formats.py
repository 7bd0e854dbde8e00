"""Compressed formats: bytes of data and metadata for a block of a sparse operand.

A block is ``rows × cols`` elements, ``nnz`` of them nonzero, ``value_bits`` per value. Index
widths are the fewest bits that can address the dimension (ceil(log2(n)), at least 1).

==============  ==============================================================================
format          data bits                        metadata bits
==============  ==============================================================================
``dense``       rows·cols·w                       0
``bitmap``      nnz·w                             rows·cols (one bit per element)
``csr``         nnz·w                             nnz·idx(cols) + (rows + 1)·idx(nnz + 1)
``csc``         nnz·w                             nnz·idx(rows) + (cols + 1)·idx(nnz + 1)
``coo``         nnz·w                             nnz·(idx(rows) + idx(cols))
``rle``         nnz·w                             nnz·4 + 4·(zero runs of 16 or more, counted
                                                  as floor((rows·cols − nnz) / 16) at most)
``nm``          nnz·w                             nnz·idx(M) (the position in its group of M)
``fanin``       nnz·w                             nnz·idx(cols) (one index per weight, no
                                                  row pointers: every row holds k)
==============  ==============================================================================

``rle`` here is 4-bit run lengths; a run of zeros longer than 15 needs an extra (zero-valued)
entry per 16, which we bound by the zeros / 16 (exact for the worst case, an upper bound
otherwise).
"""

from __future__ import annotations

import math

FORMATS = ("dense", "bitmap", "csr", "csc", "coo", "rle", "nm", "fanin")


def _idx(n: int) -> int:
    return max(1, math.ceil(math.log2(max(n, 2))))


def block_bits(fmt: str, rows: int, cols: int, nnz: int, value_bits: int,
               nm_m: int = 4) -> tuple[int, int]:
    """(data bits, metadata bits) of a ``rows × cols`` block holding ``nnz`` nonzeros."""
    n = rows * cols
    if fmt == "dense":
        return n * value_bits, 0
    data = nnz * value_bits
    if fmt == "bitmap":
        return data, n
    if fmt == "csr":
        return data, nnz * _idx(cols) + (rows + 1) * _idx(nnz + 1)
    if fmt == "csc":
        return data, nnz * _idx(rows) + (cols + 1) * _idx(nnz + 1)
    if fmt == "coo":
        return data, nnz * (_idx(rows) + _idx(cols))
    if fmt == "rle":
        return data, nnz * 4 + 4 * ((n - nnz) // 16)
    if fmt == "nm":
        return data, nnz * _idx(nm_m)
    if fmt == "fanin":
        return data, nnz * _idx(cols)
    raise ValueError(f"unknown format {fmt!r}")
