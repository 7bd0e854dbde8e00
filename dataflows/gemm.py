"""Lowering a layer to its three training GEMMs.

Every GEMM is ``C[M×N] = A[M×K] · B[K×N]``, repeated ``groups`` times (grouped and depthwise
convolutions are independent GEMMs per group, run one after another). For a conv2d with batch
``n``, output ``Ho×Wo`` and ``g`` groups (``docs/gemms.md`` has a worked example):

==============  ========  =============  ===========  ============================================
phase           M         K (reduction)  N            A, B → C
==============  ========  =============  ===========  ============================================
``fwd``         n·Ho·Wo   Cin/g·kh·kw    Cout/g       ifmap (im2col), filterᵀ → ofmap
``bwd_input``   n·Ho·Wo   Cout/g         Cin/g·kh·kw  grad_out, filter → grad_in (col2im)
``bwd_weight``  Cout/g    n·Ho·Wo        Cin/g·kh·kw  grad_outᵀ, ifmap (im2col) → grad_w
==============  ========  =============  ===========  ============================================

A linear layer is the same with Ho·Wo = tokens, kh = kw = 1, g = 1. A matmul layer (two
activations, ``heads`` products per sample) is a linear layer whose "weight" B differs per sample
and head: M = tokens, and its n·heads products are the groups. All three GEMMs have the
same number of MACs. ``bwd_input`` is the col2im form (dA_col = dZ·W, then a scatter-add), so a
strided convolution's backward pass does no work on the zeros a transposed convolution would
insert.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from common.vocab import PHASES, ROLES
from traces.layers import Layer


@dataclass(frozen=True, eq=False)
class Kept:
    """Which rows of A, k's and columns of B of a GEMM (``shape``: its M, K, N) a reduced GEMM
    keeps, per group: ``rows`` (groups × M'), ``ks`` (groups × K'), ``cols`` (groups × N'),
    int32, each entry the index it stands for in the GEMM, −1 for a slot that pads a group to
    the largest group (no data); one row where every group keeps the same (a dense operand
    keeps all its rows: a depthwise convolution's groups need not hold copies). Compared and
    hashed by ``shape`` and a digest of the indices, so that a GEMM carrying it stays a cache
    key."""

    shape: tuple[int, int, int]
    rows: np.ndarray = field(repr=False)
    ks: np.ndarray = field(repr=False)
    cols: np.ndarray = field(repr=False)
    digest: bytes = field(default=b"", repr=False)

    @classmethod
    def of(cls, shape: tuple[int, int, int], rows: np.ndarray, ks: np.ndarray,
           cols: np.ndarray) -> Kept:
        """The maps as int32 arrays of one row per group (one row for all where the groups'
        are equal), with their digest."""
        arrs = [np.ascontiguousarray(np.atleast_2d(x), dtype=np.int32) for x in (rows, ks, cols)]
        arrs = [a[:1].copy() if a.shape[0] > 1 and (a == a[:1]).all() else a for a in arrs]
        h = hashlib.blake2b(digest_size=16)
        for a in arrs:
            h.update(np.array(a.shape, dtype=np.int64).tobytes())
            h.update(a.tobytes())
        return cls(tuple(int(x) for x in shape), *arrs, h.digest())

    def group(self, grp: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The kept rows, k's and columns of group ``grp``."""
        return tuple(a[grp if a.shape[0] > 1 else 0] for a in (self.rows, self.ks, self.cols))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Kept) and self.shape == other.shape
                and self.digest == other.digest)

    def __hash__(self) -> int:
        return hash((self.shape, self.digest))


@dataclass(frozen=True)
class Gemm:
    """One training GEMM of one layer: ``groups`` × (M×K · K×N)."""

    layer: str
    phase: str
    M: int
    K: int
    N: int
    groups: int = 1
    #: elements of A, B and C as stored in DRAM, per group (0 = the full matrix). An im2col
    #: operand is stored as the feature map it expands: N·Cin/g·H·W elements, not M×K.
    a_stored: int = 0
    b_stored: int = 0
    c_stored: int = 0
    #: elements of a row of A read from DRAM when that differs from K (0 = K): condensed (N:M,
    #: fan-in) execution computes on K' weight slots but reads the dense activations
    k_read: int = 0
    #: K and N positions that hold data when a lowering pads them to the lanes (0 = all):
    #: padding lanes are idle, not computes (``dataflows.lowering``)
    k_data: int = 0
    n_data: int = 0
    #: where an im2col operand's elements sit in the feature map it expands (None: a plain
    #: matrix, or a lowering whose rows are not the layer's output positions): (operand 'A' or
    #: 'B', batch, channels per group, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo); its rows
    #: (A) or K (B) run over the positions (n, oh, ow), its K (A) or columns (B) over (c, i, j).
    #: ``dataflows.tiles`` counts DRAM words of a block as the feature-map words it touches.
    #: An optional last element, the channel slots per kernel position, says the K order is
    #: (i, j, c) with the channels padded to that many (``k_order: channel_inner``; 0 or
    #: absent: (c, i, j)); two more, N and M, say A's K is N:M slots over those columns
    #: (``dataflows.sparse.condensed_gemm``); one more, B's K slots per image, says each
    #: image's positions are padded to that many (``bwd_weight: per_image``; 0 or absent: none);
    #: two more, the map's stored elements sit every so many rows and columns, zeros between
    #: them (a transposed ``bwd_input``'s zero-inserted output gradient; 0 or absent: none)
    im2col: tuple | None = None
    #: where C's elements land in the feature map they are scattered into (``bwd_input``'s
    #: col2im: C's rows the positions, its columns (c, i, j)), in ``im2col``'s layout after
    #: the operand letter; None: C is a plain matrix
    col2im: tuple | None = None
    #: a reduced GEMM's kept rows, k's and columns of the GEMM it reduces (``Kept``; None: not
    #: reduced). ``im2col`` and ``col2im`` then describe that GEMM, and ``dataflows.tiles``
    #: counts a block as the stored words its kept rows × kept k's (or columns) touch
    kept: Kept | None = None
    #: a condensed GEMM's columns (``dataflows.sparse.condensed_gemm``: a fan-in condensed
    #: ``bwd_input`` drops the columns no weight reaches) as a ``Kept`` whose ``cols`` say, per
    #: group, which column of the GEMM whose ``col2im`` it carries each of its columns is (−1:
    #: a column padding a group); its ``shape`` is that GEMM's. None: C's columns are that
    #: GEMM's own
    c_cols: Kept | None = None

    @property
    def data_macs(self) -> int:
        """Multiply-accumulates of all groups on data positions (padding lanes left out)."""
        return self.groups * self.M * (self.k_data or self.K) * (self.n_data or self.N)

    def stored(self, which: str) -> int:
        """Elements of operand ``which`` ('A', 'B' or 'C') in DRAM, per group."""
        full = {"A": self.M * (self.k_read or self.K), "B": self.K * self.N,
                "C": self.M * self.N}[which]
        own = {"A": self.a_stored, "B": self.b_stored, "C": self.c_stored}[which]
        return min(own, full) if own else full

    @property
    def roles(self) -> tuple[str, str, str]:
        """Operand roles of A (M×K), B (K×N) and C (M×N)."""
        return ROLES[self.phase]

    @property
    def macs(self) -> int:
        """Multiply-accumulates of all groups."""
        return self.groups * self.M * self.K * self.N


def lower(layer: Layer, batch: int, phase: str) -> Gemm:
    """The GEMM of ``phase`` for ``layer`` at batch size ``batch``."""
    if batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch}")
    if layer.kind == "matmul":  # every sample and head a product of its own
        g, m, k, n = batch * layer.heads, layer.tokens, layer.in_channels, layer.out_channels
        return {"fwd": Gemm(layer.name, phase, m, k, n, g),
                "bwd_input": Gemm(layer.name, phase, m, n, k, g),
                "bwd_weight": Gemm(layer.name, phase, n, m, k, g)}[_phase(phase)]
    g = layer.groups
    if layer.kind == "linear":
        rows = batch * layer.tokens
    else:
        ho, wo = layer.out_hw
        rows = batch * ho * wo
    fan_in = layer.fan_in  # Cin/g · kh · kw
    cout = layer.out_channels // g
    # the feature map an im2col operand expands (per group); equal to the matrix for linear
    fmap = batch * (layer.in_channels // g) * (layer.tokens if layer.kind == "linear"
                                              else layer.input_hw[0] * layer.input_hw[1])
    geo = None
    if layer.kind == "conv2d":
        geo = (batch, layer.in_channels // g, *layer.input_hw, *layer.kernel, *layer.stride,
               *layer.padding, *layer.dilation, *layer.out_hw)
    if phase == "fwd":
        return Gemm(layer.name, phase, rows, fan_in, cout, g, a_stored=fmap,
                    im2col=None if geo is None else ("A", *geo))
    if phase == "bwd_input":
        return Gemm(layer.name, phase, rows, cout, fan_in, g, c_stored=fmap, col2im=geo)
    if phase == "bwd_weight":
        return Gemm(layer.name, phase, cout, rows, fan_in, g, b_stored=fmap,
                    im2col=None if geo is None else ("B", *geo))
    raise ValueError(f"unknown phase {phase!r}; expected one of {', '.join(PHASES)}")


def _phase(phase: str) -> str:
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {', '.join(PHASES)}")
    return phase


def lower_all(layer: Layer, batch: int, phases: tuple[str, ...] = PHASES) -> list[Gemm]:
    """The GEMMs of ``phases`` (default: all three) in training order for one layer."""
    return [lower(layer, batch, p) for p in phases]
