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

A feature map stored in a format is fetched as sets of its words (the words an im2col block
touches): a set of ``n`` words is one run of them, a ``1 × n`` block compressed by its own
nonzeros (``run_bits``); a set of no words is no bits.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from common.jit import njit

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


@njit(cache=True)
def _idx_nb(n):
    """``_idx`` for the kernels: the fewest bits that address ``n`` things (at least 1)."""
    b = 1
    while (1 << b) < n:
        b += 1
    return b


@njit(cache=True)
def run_bits(code, n, nnz, value_bits, nm_m):
    """``block_bits`` (data + metadata) of a run of ``n`` words holding ``nnz`` nonzeros — a
    ``1 × n`` block — in format ``FORMATS[code]``; a run of no words is no bits."""
    if n == 0:
        return 0
    data = nnz * value_bits
    if code == 0:
        return n * value_bits
    if code == 1:
        return data + n
    if code == 2:
        return data + nnz * _idx_nb(n) + 2 * _idx_nb(nnz + 1)
    if code == 3:
        return data + nnz + (n + 1) * _idx_nb(nnz + 1)
    if code == 4:
        return data + nnz * (1 + _idx_nb(n))
    if code == 5:
        return data + nnz * 4 + 4 * ((n - nnz) // 16)
    if code == 6:
        return data + nnz * _idx_nb(nm_m)
    return data + nnz * _idx_nb(n)


@dataclass(frozen=True, eq=False)
class MapFormat:
    """The feature map an im2col operand expands (``Gemm.im2col``'s operand ``which``), stored
    in format ``fmt`` at one memory level: its nonzeros per group of the GEMM as the
    geometry lays them out (``nonzero``: (groups, images, channels, H, W) uint8, the map's
    zero-inserted rows and columns zero), ``value_bits`` per value. Compared and hashed by a
    digest, so that it can be part of a key."""

    which: str
    fmt: str
    value_bits: int
    nm_m: int
    nonzero: np.ndarray
    digest: bytes = b""

    def __post_init__(self) -> None:
        if not self.digest:
            h = hashlib.blake2b(np.ascontiguousarray(self.nonzero).tobytes(), digest_size=16)
            h.update(repr(self.nonzero.shape).encode())
            object.__setattr__(self, "digest", h.digest())

    @property
    def code(self) -> int:
        return FORMATS.index(self.fmt)

    def _key(self) -> tuple:
        return (self.which, self.fmt, self.value_bits, self.nm_m, self.digest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MapFormat) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


class MapRatios(np.ndarray):
    """Compressed / dense ratios of A and B (per fold of every group, or one pair: an array as
    ``dataflows.sparse.operand_compression`` gives them) that also carry, as ``fmap``, the
    stored feature map of the GEMM's im2col operand (``MapFormat``): ``dataflows.tiles``
    counts that operand's blocks as the compressed words of the feature-map words they
    touch, and takes the other operand's ratios from the array."""

    fmap: MapFormat | None

    @staticmethod
    def of(ratio, fmap: MapFormat) -> MapRatios:
        """``ratio`` as an array carrying ``fmap``."""
        out = np.array(ratio, dtype=np.float64).view(MapRatios)
        out.fmap = fmap
        return out

    def __array_finalize__(self, obj) -> None:
        self.fmap = getattr(obj, "fmap", None)
