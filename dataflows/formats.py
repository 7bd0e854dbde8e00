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

import numpy as np

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


def _idx_arr(n: np.ndarray) -> np.ndarray:
    return np.maximum(1, np.ceil(np.log2(np.maximum(n, 2))))


def block_ratio(fmt: str, rows: np.ndarray, cols: np.ndarray, nnz: np.ndarray, value_bits: int,
                nm_m: int = 4) -> np.ndarray:
    """``block_bits`` for many blocks at once, as (data + metadata) / dense bits."""
    rows, cols, nnz = (np.asarray(x, dtype=np.float64) for x in (rows, cols, nnz))
    n = np.maximum(rows * cols, 1)
    if fmt == "dense":
        return np.ones_like(n)
    data = nnz * value_bits
    meta = {
        "bitmap": lambda: n,
        "csr": lambda: nnz * _idx_arr(cols) + (rows + 1) * _idx_arr(nnz + 1),
        "csc": lambda: nnz * _idx_arr(rows) + (cols + 1) * _idx_arr(nnz + 1),
        "coo": lambda: nnz * (_idx_arr(rows) + _idx_arr(cols)),
        "rle": lambda: nnz * 4 + 4 * np.floor((n - nnz) / 16),
        "nm": lambda: nnz * _idx_arr(np.asarray(float(nm_m))),
        "fanin": lambda: nnz * _idx_arr(cols),
    }[fmt]()
    return (data + meta) / (n * value_bits)
