"""The sparse work model: what a GEMM costs on an array with sparse features, from the real masks.

Features (the ``sparse:`` section of an architecture file; ``docs/sparse.md``):

``skip: [roles]``
    the array skips the zeros of these operand roles (``filter``, ``ifmap``, ``grad_out``) where
    that operand is *streamed*: A and B in ``os``, A in ``ws``, B in ``is`` (a stationary operand
    can only be gated). If both operands of a GEMM could be skipped, ``two_sided: true`` skips the
    pairs where either is zero (SparTen-style intersection; unbounded window); otherwise the
    sparser of the two is skipped (one operand per pass, as TensorDash/DNNsim).
``window: {lookahead: H, lookaside: D}``
    the per-PE lane scheduler (``dataflows.kernels.schedule``); absent = unbounded (ideal
    one-sided skipping).
``gate: [roles]``
    MACs with a zero operand of these roles are gated: they cost cycles but ``mac_gated_pj``.
``nm: "N:M"``
    structured execution of the ``filter`` operand: when every group of M consecutive weights
    along K has at most N nonzeros, the GEMM runs as a dense GEMM with N slots per group of M
    along K (2× for 2:4); otherwise at dense speed.
``fanin: true``
    condensed execution of constant fan-in weights (SRigL): when every active output neuron has
    the same number k of weights along K, the GEMM runs dense with K = k over the active neurons.
``structured: true``
    all-zero rows of A, all-zero columns of B and K positions that are zero in either operand are
    dropped: dense compute on the reduced dimensions (channel/filter-structured sparsity).
``formats: {role: format | {dram: format, sram: format}}``
    the compressed format of each role in DRAM and in its SRAM buffer, one for both levels or
    one per level (``dataflows.formats``; ``operand_compression``).

A GEMM's candidate executions are dense, skipping, each reduced mode (nm, fanin, structured)
alone, and each reduced mode with skipping stacked inside the reduced GEMM (``structured+skip:
ifmap``, ``nm+skip:filter``, ``nm+skip:ifmap``...; ``docs/sparse.md``, "Stacking"); the array
runs the one with the fewest cycles (a flexible accelerator picks its mode per GEMM).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np

from common.vocab import ROLES
from dataflows import kernels as kx
from dataflows import taps as kx_taps
from dataflows.features import FORMAT_LEVELS, SparseFeatures
from dataflows.formats import MapFormat, MapRatios, block_ratio
from dataflows.gemm import Gemm, Kept, lower
from dataflows.kernels import Bits
from dataflows.lowering import Lowering, lowered_parts
from dataflows.systolic import DenseMapping, fold_cycles_of, map_dense
from traces.layers import Layer

#: modes that run a dense GEMM on reduced dimensions (its operands are already compact)
REDUCED_MODES = ("nm", "fanin", "structured")


# ------------------------------------------------------------------------------------------------
# operands of one GEMM as bit matrices packed along K
# ------------------------------------------------------------------------------------------------
def gemm_masks(phase: str, masks: dict) -> tuple[Bits | None, Bits | None]:
    """The role masks of a GEMM's A and B, packed (``kernels.Bits``; None = dense). A mask
    may be given as the trace packs it (``PackedMask``) or as a bool array of the role's
    shape."""
    ra, rb, _ = ROLES[phase]
    return Bits.of(masks.get(ra)), Bits.of(masks.get(rb))


def pack_operands(layer: Layer, batch: int, phase: str, a_mask, b_mask, group: int
                  ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(A packed M×K, Bᵀ packed N×K) of one group under the default lowering, from the
    operands' masks (packed, or bool arrays of the roles' shapes); None = dense."""
    return _default_packs(layer, batch, phase, Bits.of(a_mask), Bits.of(b_mask))[group]


def _default_packs(layer: Layer, batch: int, phase: str, a: Bits | None, b: Bits | None
                   ) -> list:
    """``pack_operands`` of every group."""
    if layer.kind == "matmul":
        return [_pack_matmul(layer, phase, a, b, g)
                for g in range(lower(layer, batch, phase).groups)]
    return lowered_parts(layer, batch, phase, Lowering(), 1, a, b)[0][1]


def _block(t: Bits | None, group: int, rows: int, cols: int, transposed: bool
           ) -> np.ndarray | None:
    """Matrix ``group`` (rows × cols, one after another in ``t``) packed along its columns,
    or its transpose packed along its rows."""
    if t is None:
        return None
    base = (group * rows + np.arange(rows, dtype=np.int64)) * cols
    pack = kx.runs_rows(t.words, base, 0, 1, cols, 0, cols)
    return kx.transpose_bits(pack, cols) if transposed else pack


def _pack_matmul(layer: Layer, phase: str, a: Bits | None, b: Bits | None, group: int
                 ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``pack_operands`` of a matmul layer: group ``group`` is one (sample, head) product of
    X (M×K, ``ifmap``), Y (K×N, ``filter``) and dZ (M×N, ``grad_out``)."""
    m, k, n = layer.tokens, layer.in_channels, layer.out_channels
    if phase == "fwd":  # Z = X·Y: A = X, Bᵀ = Yᵀ
        return _block(a, group, m, k, False), _block(b, group, k, n, True)
    if phase == "bwd_input":  # dX = dZ·Yᵀ: A = dZ, Bᵀ = Y
        return _block(a, group, m, n, False), _block(b, group, k, n, False)
    # dYᵀ = dZᵀ·X: A = dZᵀ, Bᵀ = Xᵀ
    return _block(a, group, m, n, True), _block(b, group, m, k, True)


# ------------------------------------------------------------------------------------------------
# the work of one GEMM
# ------------------------------------------------------------------------------------------------
@dataclass
class SparseWork:
    """Cycles and counters of one GEMM (all groups) under the sparse features."""

    gemm: Gemm
    mapping: DenseMapping  # of the executed GEMM (reduced dims for nm / fanin / structured)
    mode: str  # dense | skip:<role> | two_sided | nm | fanin | structured
    fold_cycles: np.ndarray | None  # per fold in tile order incl. fill/drain; None: constant
    compute_cycles: int  # Σ per fold (balanced stream length + fill/drain)
    imbalance_cycles: int  # Σ per fold (slowest stream − balanced)
    algorithmic: int
    actual: int
    effectual: int
    gated: int
    density: dict[str, float] = field(default_factory=dict)  # A / B realized densities
    nnz: dict[str, int] = field(default_factory=dict)
    #: per fold of every group (column folds outer): [A rows, A cols, A nnz, B rows, B cols,
    #: B nnz] of the operand blocks the fold reads; None for a reduced mode
    fold_blocks: np.ndarray | None = None
    #: per fold, in the order of ``fold_cycles``: slowest stream − balanced (cycles, >= 0);
    #: sums to ``imbalance_cycles``; None where ``fold_cycles`` is None
    fold_imbalance: np.ndarray | None = None
    #: the GEMMs run one after another when the phase lowers to several (``bwd_input:
    #: phases``); ``gemm`` and ``mapping`` are then the first one's
    parts: list | None = None
    #: the nonzeros of the feature map the GEMM's im2col operand expands, per group as its
    #: geometry lays them out (``MapFormat.nonzero``), where that operand's role is stored in
    #: a compressed format; None otherwise
    map_nonzero: np.ndarray | None = None
    map_digest: bytes = b""  # ``MapFormat.digest`` of ``map_nonzero`` (``map_nonzero``'s)

    @property
    def skipped(self) -> int:
        return self.algorithmic - self.actual

    @property
    def reduction(self) -> str | None:
        """The reduced mode the GEMM runs in (``nm``, ``fanin``, ``structured``), alone or with
        skipping stacked on it (mode ``structured+skip:ifmap``...); None otherwise."""
        base = self.mode.split("+")[0]
        return base if base in REDUCED_MODES else None


def _fold_cycles_rows(lens: np.ndarray, block: int, overhead: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per block of ``block`` consecutive streams (one fold): busy = max + ``overhead`` and
    imbalance = max − ceil(mean). Returns (fold cycles, fold imbalance)."""
    starts = np.arange(0, len(lens), block)
    busy = np.maximum.reduceat(lens, starts)
    size = np.minimum(starts + block, len(lens)) - starts
    bal = -(-np.add.reduceat(lens, starts) // size)
    return (busy + overhead).astype(np.int64), (busy - bal).astype(np.int64)


def _walk_order(nr: int, nc: int, rows_outer: bool) -> np.ndarray:
    """Tile index (column folds outer: j·nr + i) of each visit when the row folds are walked
    outer instead (``rows_outer``) or not."""
    idx = np.arange(nr * nc).reshape(nc, nr)
    return (idx.T if rows_outer else idx).ravel()


def _carried_folds(stats: tuple, nr: int, nc: int, by_rows: bool, rows_outer: bool,
                   F: int) -> np.ndarray:
    """Cycles of the nr × nc tiles of one group (column folds outer) from the scheduled
    buffers' ``stats`` (``taps.lockstep_*_folds``; one buffer per row fold if ``by_rows``, else
    per column fold), the run of free steps carried from tile to tile in DNNsim's loop order:
    the windowed operand's folds outer (``rows_outer``: A's rows in fwd / bwd_input)."""
    z, rest, out, T = stats
    visit = _walk_order(nr, nc, rows_outer)  # tile index per visit
    fold_of = np.tile(np.arange(nr), nc) if by_rows else np.repeat(np.arange(nc), nr)
    seq = fold_of[visit]
    resets = np.zeros(len(seq), dtype=bool)
    resets[0] = True
    fc = np.empty(nr * nc, dtype=np.int64)
    fc[visit] = kx_taps.carry_walk(z, rest, out, T, seq, resets, F)
    return fc


def _direct(kern, pack: np.ndarray, *args):
    """``kern(pack, *args)``."""
    return kern(pack, *args)


#: results of the stream kernels on dense operands held as ones, by kernel, the operand's
#: digest and the other arguments: such an operand is a function of the layer's geometry (its
#: padding), and a network repeats geometries across layers and phases. Small (per fold or
#: stream); shared by every caller, so read and never written in place.
_ONES_RESULTS: dict = {}
_ONES_RESULTS_MAX = 4096
#: lowered operands held as ones (``_ones_parts``), the latest first out; up to so many bytes
_ONES_PARTS: OrderedDict = OrderedDict()
_ONES_PARTS_BYTES = 1 << 27
#: a Dask worker runs sweep points in threads of one process: the look-up and the eviction
#: each happen whole
_ONES_LOCK = threading.Lock()


class _Ones:
    """A lowered operand held as ones (``pack``), with what was derived from it: its per-k
    counts, and its digest (SHA-256 of its shape and words, taken when first asked for: the
    name of its kernels' results in ``_ONES_RESULTS``; SHA-256 as the fastest of hashlib's
    where the processor has SHA instructions). The counts are shared: read, never written
    in place."""

    __slots__ = ("_digest", "kcounts", "pack")

    def __init__(self, pack: np.ndarray) -> None:
        self.pack = pack
        self.kcounts: dict[int, np.ndarray] = {}
        self._digest: bytes | None = None

    @property
    def digest(self) -> bytes:
        if self._digest is None:
            h = hashlib.sha256(repr((self.pack.dtype.str, self.pack.shape)).encode())
            h.update(np.ascontiguousarray(self.pack).data)
            self._digest = h.digest()
        return self._digest

    def col_popcounts(self, K: int) -> np.ndarray:
        """``kernels.col_popcounts`` of the pack, once per K."""
        if K not in self.kcounts:
            self.kcounts[K] = kx.col_popcounts(self.pack, K)
        return self.kcounts[K]


def _ones_kernel(ones: _Ones, kern, pack: np.ndarray, *args):
    """``kern(pack, *args)`` through ``_ONES_RESULTS``; ``pack`` is ``ones.pack``."""
    frozen = tuple(tuple(a.tolist()) if isinstance(a, np.ndarray) else a for a in args)
    key = (kern, ones.digest, frozen)
    hit = _ONES_RESULTS.get(key)
    if hit is None:
        if len(_ONES_RESULTS) >= _ONES_RESULTS_MAX:
            _ONES_RESULTS.clear()
        hit = _ONES_RESULTS[key] = kern(pack, *args)
    return hit


def _ones_parts(layer: Layer, batch: int, phase: str, low: Lowering, lanes: int,
                ones: list[bool], roles: tuple[str, str]) -> tuple[list, list]:
    """``lowered_parts`` with the operands in ``ones`` held as ones and the others left out
    (None), and per GEMM and group those operands as ``_Ones`` (None for the others); of the
    layer's geometry, so a layer of the same geometry as a recent one takes its operands
    (``_ONES_PARTS``). The GEMMs named are the first such layer's."""
    key = (replace(layer, name=""), batch, phase, low, lanes, tuple(ones))
    with _ONES_LOCK:
        hit = _ONES_PARTS.get(key)
        if hit is not None:
            _ONES_PARTS.move_to_end(key)
            return hit[:2]
    built = [Bits.ones(layer.operand_shape(r, batch)) if o else None
             for r, o in zip(roles, ones, strict=True)]
    parts = lowered_parts(layer, batch, phase, low, lanes, *built)
    held = [[tuple(None if p is None else _Ones(p) for p in ab) for ab in packs]
            for _g, packs, _f in parts]
    size = sum(p.nbytes for _g, packs, _f in parts for ab in packs for p in ab
               if p is not None)
    with _ONES_LOCK:
        _ONES_PARTS[key] = (parts, held, size)
        while (sum(v[2] for v in _ONES_PARTS.values()) > _ONES_PARTS_BYTES
               and len(_ONES_PARTS) > 1):
            _ONES_PARTS.popitem(last=False)
    return parts, held


def _with_ones(parts: list, ones_parts: list, ones: list[bool]) -> list:
    """The lowered GEMMs of ``parts`` with the operands in ``ones`` (and their zero fractions)
    taken from ``ones_parts``, the same GEMMs lowered with only those operands."""
    out = []
    for (gemm, packs, fracs), (_g, packs1, fracs1) in zip(parts, ones_parts, strict=True):
        out.append((gemm,
                    [tuple(p1[i] if ones[i] else p[i] for i in (0, 1))
                     for p, p1 in zip(packs, packs1, strict=True)],
                    [tuple(f1[i] if ones[i] else f[i] for i in (0, 1))
                     for f, f1 in zip(fracs, fracs1, strict=True)]))
    return out


#: the tap scheduler's fold kernels (``dataflows.taps``) by (slice streams, an operand held as
#: ones): ones repeat every image, so theirs find the period and schedule one period of every
#: repeat
_TAP_FOLDS = {(False, False): "lockstep_row_folds", (False, True): "lockstep_row_folds_periodic",
              (True, False): "lockstep_slice_folds", (True, True): "lockstep_slice_folds_periodic"}


def _one_sided_folds(packs, xs: list[str], M: int, K: int, N: int, dataflow: str, rows: int,
                     cols: int, lanes: int, feats: SparseFeatures, mapping: DenseMapping,
                     phase: str = "fwd", keys: list | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(fold cycles, fold imbalance) of every group, column folds outer, when the zeros of
    operand ``xs[group]`` ("A" or "B") are skipped, the fill/drain and fold spacing as
    ``mapping``'s (``systolic.fold_cycles_of``). The streams of a fold run under
    ``feats.sync`` with the window or the taps. ``keys``: per group, the operands held as ones
    (``_Ones``; ``_Exec.keys``), whose kernel results are looked up."""
    fold_ovh = mapping.fold_overhead
    H, D = feats.lookahead, feats.lookaside
    taps = feats.taps
    lock = feats.sync == "lockstep" and (taps is not None or H >= 0)
    if taps is not None:
        th = np.array([t[0] for t in taps], dtype=np.int64)
        td = np.array([t[1] for t in taps], dtype=np.int64)
        order, F = feats.lane_order(lanes), feats.free_run()
    fcs, fis = [], []
    for gi, ((a, b), x) in enumerate(zip(packs, xs, strict=True)):
        pack = a if x == "A" else b
        held = None if keys is None else keys[gi]["AB".index(x)]
        call = _direct if held is None else partial(_ones_kernel, held)
        if dataflow == "os":
            R = rows if x == "A" else cols
            nr, nc = -(-M // rows), -(-N // cols)
        else:  # ws streams A over M, is streams B over N; one array row = L k's
            R = rows
            nr, nc = -(-K // (lanes * rows)), -(-(N if dataflow == "ws" else M) // cols)
        slices = dataflow != "os"
        if lock and taps is not None:
            kern = getattr(kx_taps, _TAP_FOLDS[slices, held is not None])
            stats = call(kern, pack, K, lanes, R, th, td, order, F)
            fc = _carried_folds(stats, nr, nc, slices or x == "A",
                                dataflow == "os" and phase != "bwd_weight", F) + fold_ovh
            fi = np.zeros(nr * nc, dtype=np.int64)
        elif lock:
            kern = (kx_taps.window_lockstep_slice_folds if slices
                    else kx_taps.window_lockstep_row_folds)
            per = call(kern, pack, K, lanes, R, H, D) + fold_ovh
            fi0 = np.zeros(len(per), dtype=np.int64)
            if not slices and x == "B":
                fc, fi = np.repeat(per, nr), np.repeat(fi0, nr)
            else:
                fc, fi = np.tile(per, nc), np.tile(fi0, nc)
        else:
            if taps is not None:
                lens = call(kx_taps.tap_slice_lengths if slices else kx_taps.tap_row_lengths,
                            pack, K, lanes, th, td, order, F)
            else:
                lens = call(kx.slice_stream_lengths if slices else kx.row_stream_lengths,
                            pack, K, lanes, H, D)
            fc, fi = _fold_cycles_rows(lens, R, fold_ovh)
            if not slices and x == "B":  # columns of B on array columns, outer loop
                fc, fi = np.repeat(fc, nr), np.repeat(fi, nr)
            else:  # rows of A (or slices) on array rows; repeated for every column fold
                fc, fi = np.tile(fc, nc), np.tile(fi, nc)
        fcs.append(fc)
        fis.append(fi)
    return fold_cycles_of(np.concatenate(fcs), mapping), np.concatenate(fis)


def _two_sided_folds(packs, M: int, N: int, rows: int, cols: int, lanes: int,
                     ovh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(fold cycles, fold imbalance) of every group (``os``, column folds outer) when every
    pair with a zero operand is skipped: one stream per PE, ceil(|A_i ∧ B_j| / L) cycles."""
    fold_ovh, gemm_ovh = ovh
    fc, fi = [], []
    for a, b in packs:
        for j0 in range(0, N, cols):
            for i0 in range(0, M, rows):
                i1, j1 = min(M, i0 + rows), min(N, j0 + cols)
                mx, sm = kx.pair_lengths_max_sum(a, b, i0, i1, j0, j1, lanes)
                fc.append(mx + fold_ovh)
                fi.append(mx + (sm // -((i1 - i0) * (j1 - j0))))  # max − ceil(mean)
    fc[0] += gemm_ovh
    return np.array(fc, dtype=np.int64), np.array(fi, dtype=np.int64)


def _block_nnz(dataflow: str, M: int, K: int, N: int, rows: int, cols: int, lanes: int,
               a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray:
    """[A rows, A cols, A nnz, B rows, B cols, B nnz] of the blocks each fold of one group reads
    (column folds outer, as ``dataflows.tiles``); a dense operand's blocks are full."""

    def spans(n: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        starts = np.arange(0, n, step)
        return starts, np.minimum(starts + step, n) - starts

    if dataflow == "os":
        i0, ir = spans(M, rows)
        j0, jc = spans(N, cols)
        ar = np.full(M, K) if a is None else kx.row_popcounts(a)
        br = np.full(N, K) if b is None else kx.row_popcounts(b)
        an, bn = np.add.reduceat(ar, i0), np.add.reduceat(br, j0)
        nj, ni = len(j0), len(i0)
        return np.column_stack([np.tile(ir, nj), np.full(nj * ni, K), np.tile(an, nj),
                                np.full(nj * ni, K), np.repeat(jc, ni),
                                np.repeat(bn, ni)]).astype(np.float64)
    kr = rows * lanes
    k0, kw = spans(K, kr)
    if dataflow == "ws":  # A[:, kb] whole column block; B[kb, j] per column fold
        j0, jc = spans(N, cols)
        ac = np.full(K, M) if a is None else kx.col_popcounts(a, K)
        an = np.add.reduceat(ac, k0)
        if b is None:
            bn = (jc[:, None] * kw[None, :]).reshape(-1)
        else:
            bn = np.add.reduceat(kx.range_popcounts(b, K, kr), j0, axis=0).reshape(-1)
        nj, nk = len(j0), len(k0)
        return np.column_stack([np.full(nj * nk, M), np.tile(kw, nj), np.tile(an, nj),
                                np.tile(kw, nj), np.repeat(jc, nk), bn]).astype(np.float64)
    m0, mc = spans(M, cols)  # is: A[m-block, kb] per fold; B[kb, :] whole row block
    bc = np.full(K, N) if b is None else kx.col_popcounts(b, K)
    bn = np.add.reduceat(bc, k0)
    if a is None:
        an = (mc[:, None] * kw[None, :]).reshape(-1)
    else:
        an = np.add.reduceat(kx.range_popcounts(a, K, kr), m0, axis=0).reshape(-1)
    nm_, nk = len(m0), len(k0)
    return np.column_stack([np.repeat(mc, nk), np.tile(kw, nm_), an, np.tile(kw, nm_),
                            np.full(nm_ * nk, N), np.tile(bn, nm_)]).astype(np.float64)


def _counts(a, b, M: int, K: int, N: int, keys: tuple | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Per k: nonzeros of A's column k (over M) and of B's row k (over N); ``keys``: the
    operands held as ones (``_Ones``, their counts kept)."""
    ha, hb = (None, None) if keys is None else keys
    ak = (np.full(K, M, dtype=np.int64) if a is None else kx.col_popcounts(a, K) if ha is None
          else ha.col_popcounts(K))
    bk = (np.full(K, N, dtype=np.int64) if b is None else kx.col_popcounts(b, K) if hb is None
          else hb.col_popcounts(K))
    return ak, bk


@dataclass(frozen=True)
class _Exec:
    """One way of executing a GEMM: the GEMM that runs (reduced dimensions for a reduced
    mode), its dense mapping, and per group its operands (A packed M×K, Bᵀ packed N×K; None =
    dense) with their per-k nonzero counts (a_k over M, b_k over N)."""

    gemm: Gemm
    mapping: DenseMapping
    packs: list
    counts: list
    #: per group, A and B where they are dense operands held as ones (``_Ones``; None
    #: otherwise): the same words wherever the geometry repeats, so their kernels' results are
    #: looked up (``_ones_kernel``)
    keys: list | None = None


@dataclass(frozen=True)
class _Ctx:
    """What every candidate of one GEMM shares: the array, the features and the real
    operands' figures (counters are reported against the GEMM as written)."""

    dataflow: str
    rows: int
    cols: int
    lanes: int
    feats: SparseFeatures
    roles: tuple[str, str]
    masked: tuple[bool, bool]  # A, B have a mask (else dense: nothing to skip)
    algorithmic: int
    effectual: int
    density: dict
    nnz: dict
    phase: str = "fwd"
    #: per group, the zero fractions of the A and B tensors as stored (``side: tensor``)
    fracs: list | None = None

    @property
    def gate(self) -> tuple[bool, bool]:
        return self.roles[0] in self.feats.gate, self.roles[1] in self.feats.gate


def _executed(gemm: Gemm, packs: list, ctx: _Ctx, folds: str) -> _Exec:
    """``gemm`` with these operands, mapped on the array."""
    counts = [_counts(a, b, gemm.M, gemm.K, gemm.N) for a, b in packs]
    return _Exec(gemm, map_dense(gemm, ctx.rows, ctx.cols, ctx.dataflow, ctx.lanes, folds),
                 packs, counts)


def _skipping(ex: _Exec, ctx: _Ctx, prefix: str = "") -> list[SparseWork]:
    """The skipping candidate of one executed GEMM (the rules of ``docs/sparse.md``: the
    streamed operands whose roles are skipped; both with ``two_sided``, else the sparser)."""
    M, K, N, G = ex.gemm.M, ex.gemm.K, ex.gemm.N, ex.gemm.groups
    streamed = {"os": ("A", "B"), "ws": ("A",), "is": ("B",)}[ctx.dataflow]
    skippable = [x for x in streamed if ctx.roles["AB".index(x)] in ctx.feats.skip
                 and ctx.masked["AB".index(x)]]
    if not skippable:
        return []
    gate_a, gate_b = ctx.gate
    if len(skippable) == 2 and ctx.feats.two_sided:
        fc, fi = _two_sided_folds(ex.packs, M, N, ctx.rows, ctx.cols, ctx.lanes,
                                  (ex.mapping.fold_overhead, ex.mapping.gemm_overhead))
        mode, actual, gated = "two_sided", ctx.effectual, 0
    else:
        if len(skippable) == 1:
            xs = skippable * G
        elif ctx.feats.side == "tensor" and ctx.fracs is not None and len(ctx.fracs) == G:
            # per group: the larger zero fraction of the stored tensors; ties to the operand
            # that is not windowed (B, but A in bwd_weight)
            win = "B" if ctx.phase == "bwd_weight" else "A"
            other = "A" if win == "B" else "B"
            xs = [win if f["AB".index(win)] > f["AB".index(other)] else other
                  for f in ctx.fracs]
        else:
            dens = {"A": sum(int(ak.sum()) for ak, _ in ex.counts) / (G * M * K),
                    "B": sum(int(bk.sum()) for _, bk in ex.counts) / (G * K * N)}
            xs = [min(skippable, key=lambda o: dens[o])] * G
        fc, fi = _one_sided_folds(ex.packs, xs, M, K, N, ctx.dataflow, ctx.rows, ctx.cols,
                                  ctx.lanes, ctx.feats, ex.mapping, ctx.phase, ex.keys)
        mode = "skip:" + "/".join(dict.fromkeys(ctx.roles["AB".index(x)] for x in xs))
        actual = gated = 0
        for (ak, bk), x in zip(ex.counts, xs, strict=True):
            if x == "A":  # every nonzero of A meets all N columns; gated where B is zero
                nd = ex.gemm.n_data or N  # columns that hold data (not padding lanes)
                actual += int(ak.sum()) * nd
                gated += int((ak * np.maximum(nd - bk, 0)).sum()) if gate_b else 0
            else:
                actual += int(bk.sum()) * M
                gated += int(((M - ak) * bk).sum()) if gate_a else 0
    return [SparseWork(ex.gemm, ex.mapping, prefix + mode, fc, int(fc.sum() - fi.sum()),
                       int(fi.sum()), ctx.algorithmic, actual, ctx.effectual, gated,
                       ctx.density, ctx.nnz, fold_imbalance=fi)]


def _dense_work(ex: _Exec, ctx: _Ctx, mode: str, macs: int | None = None) -> SparseWork:
    """``ex`` run at dense speed: every MAC of the executed GEMM performed (``macs`` of a
    reduced GEMM with a zero dimension, which runs as one of size 1)."""
    macs = ex.gemm.data_macs if macs is None else macs
    gate_a, gate_b = ctx.gate
    if mode == "dense":
        ga = sum(int(((ex.gemm.M - ak) * ex.gemm.N).sum()) for ak, _ in ex.counts)
        gb = sum(int((ex.gemm.M * (ex.gemm.N - bk)).sum()) for _, bk in ex.counts)
        gab = sum(int((ex.gemm.M * ex.gemm.N - ak * bk).sum()) for ak, bk in ex.counts)
        gated = gab if gate_a and gate_b else (ga if gate_a else (gb if gate_b else 0))
        if ex.gemm.k_data or ex.gemm.n_data:  # padding lanes are idle, not gated computes
            gated = min(gated, macs - ctx.effectual)
    else:
        gated = max(0, macs - ctx.effectual) if (gate_a or gate_b) else 0
    return SparseWork(ex.gemm, ex.mapping, mode, None, ex.mapping.compute_cycles, 0,
                      ctx.algorithmic, macs, ctx.effectual, gated, ctx.density, ctx.nnz)


def _structured(ex: _Exec) -> tuple[Gemm, list, int] | None:
    """The GEMM on the rows of A, columns of B and k's that hold a nonzero (both operands
    nonzero at k); groups padded with zeros to the largest group's dimensions. Returns (the
    GEMM, its operands per group, its MACs) or None when nothing is dropped."""
    M, K, N, G = ex.gemm.M, ex.gemm.K, ex.gemm.N, ex.gemm.groups
    keep = []
    for (a, b), (ak, bk) in zip(ex.packs, ex.counts, strict=True):
        keep.append((np.ones(M, bool) if a is None else kx.row_popcounts(a) > 0,
                     (ak > 0) & (bk > 0),
                     np.ones(N, bool) if b is None else kx.row_popcounts(b) > 0))
    m2, k2, n2 = (max(int(kp[i].sum()) for kp in keep) for i in range(3))
    if (m2, k2, n2) == (M, K, N):
        return None
    macs = G * m2 * k2 * n2
    m2, k2, n2 = max(1, m2), max(1, k2), max(1, n2)

    def select(pack, r, c, shape):  # the kept rows and k's, in a (rows, k) zero matrix
        if pack is None:
            return None
        return kx.select_bits(pack, np.flatnonzero(r), np.flatnonzero(c), *shape)

    packs = [(select(a, km, kk, (m2, k2)), select(b, kn, kk, (n2, k2)))
             for (a, b), (km, kk, kn) in zip(ex.packs, keep, strict=True)]
    g = ex.gemm
    # the reduced operands as stored: the kept share of each (an im2col A keeps its feature-map
    # ratio)
    a_st = -(-g.stored("A") * m2 * k2 // (M * K))
    b_st = -(-g.stored("B") * k2 * n2 // (K * N))
    c_st = -(-g.stored("C") * m2 * n2 // (M * N))
    # which rows, k's and columns of the GEMM each group keeps (−1: padding to the largest
    # group), so that the tile schedule counts the stored words a block of them touches
    maps = []
    for i, size in enumerate((m2, k2, n2)):
        idx = np.full((G, size), -1, dtype=np.int32)
        for grp, kp in enumerate(keep):
            at = np.flatnonzero(kp[i])
            idx[grp, : len(at)] = at
        maps.append(idx)
    kept = Kept.of((M, K, N), *maps)
    return Gemm(g.layer, g.phase, m2, k2, n2, G, a_st, b_st, c_st, im2col=g.im2col,
                col2im=g.col2im, kept=kept), packs, macs


def nm_slots(K: int, n: int, m: int) -> int:
    """Slots along K of an N:M-condensed operand: N per group of M, min(N, width) for a last,
    narrower group."""
    return (K // m) * n + min(n, K % m)


def _condense(b: np.ndarray, K: int, kind: str, nm: tuple[int, int] | None
              ) -> tuple[np.ndarray, int] | None:
    """The slots of the condensed weight operand (Bᵀ packed N×K, one group): per column, the
    k of each slot, −1 for an empty slot (an explicit zero weight). ``nm``: N slots per group of
    M along K, the group's nonzeros first; ``fanin``: the k nonzeros of every active column
    (all columns with a nonzero hold the same k), inactive columns dropped. Returns (slots
    (columns × K'), the columns kept) or None where the mask does not have the structure."""
    if kind == "fanin":
        per = kx.row_popcounts(b)
        act = np.flatnonzero(per > 0)
        if len(act) == 0:
            return np.zeros((0, 0), dtype=np.int64), act
        if len(set(per[act].tolist())) != 1:
            return None
        return kx.set_positions(b[act], int(per[act[0]])), act
    n, m = nm
    ok, slots = kx.nm_slot_map(b, K, n, m, nm_slots(K, n, m))
    return (slots, np.arange(b.shape[0])) if ok else None


def condensed_gemm(g: Gemm, k2: int, n2: int, nm: tuple[int, int] | None,
                   cols: list[np.ndarray] | None = None) -> Gemm:
    """The GEMM of ``g`` with its weights (B) condensed to ``k2`` slots along K and ``n2``
    columns: the activations are read dense (K per row; an im2col A as its feature map, whose
    geometry it keeps with N:M's slots per group, ``nm``, so that a block of slots counts the
    words of the groups it selects from; a constant fan-in k is (k, K), one group), the
    condensed weights as K' slots. A plain A (a linear layer's activations, ``bwd_input``'s
    output gradient) is given the geometry of a 1×1 convolution with one position per image
    (images M, channels K), so that a block of its slots counts the elements of its rows in the
    groups its slots select from. ``cols``: per group, the columns of ``g`` kept (None: the
    first ``n2``, all of them where ``n2`` is N); C of a col2im ``bwd_input`` keeps its
    geometry, its columns mapped to those of ``g`` (``Gemm.c_cols``) where some are dropped."""
    im2col = None
    if nm is not None and k2 == nm_slots(g.K, *nm):
        if g.im2col is not None and g.im2col[0] == "A":
            im2col = (*(list(g.im2col) + [0])[:16], *nm)
        elif g.im2col is None and not g.k_read and g.stored("A") == g.M * g.K:
            im2col = ("A", g.M, g.K, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, *nm)
    c_cols = None
    if cols is not None and g.col2im is not None and not all(
            len(c) == g.N for c in cols):
        at = np.full((len(cols), n2), -1, dtype=np.int32)
        for grp, c in enumerate(cols):
            at[grp, : len(c)] = c
        c_cols = Kept.of((g.M, g.K, g.N), np.zeros((1, 0)), np.zeros((1, 0)), at)
    elif n2 != g.N:
        c_cols = None if g.col2im is None else Kept.of(
            (g.M, g.K, g.N), np.zeros((1, 0)), np.zeros((1, 0)), np.arange(n2)[None, :])
    return Gemm(g.layer, g.phase, g.M, k2, n2, g.groups, a_stored=g.stored("A"),
                c_stored=g.stored("C") * n2 // g.N, k_read=g.K, im2col=im2col,
                col2im=g.col2im, c_cols=c_cols)


def _pe_folds(lens: np.ndarray, rows: int, cols: int, fold_ovh: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """(fold cycles, fold imbalance) of one group of ``os`` folds (column folds outer) from the
    stream length of every PE (i, j): ``lens`` (M × N)."""
    M, N = lens.shape
    i0, j0 = np.arange(0, M, rows), np.arange(0, N, cols)
    mx = np.maximum.reduceat(np.maximum.reduceat(lens, i0, axis=0), j0, axis=1)
    sm = np.add.reduceat(np.add.reduceat(lens, i0, axis=0), j0, axis=1)
    size = np.outer(np.minimum(i0 + rows, M) - i0, np.minimum(j0 + cols, N) - j0)
    return (mx + fold_ovh).T.ravel().astype(np.int64), (mx + sm // -size).T.ravel().astype(
        np.int64)


def _condensed(kind: str, ex: _Exec, ctx: _Ctx, folds: str) -> list[SparseWork]:
    """N:M or fan-in execution of the weights (operand B) and what stacks on it: the dense
    condensed GEMM; skipping the condensed weights' empty slots (a streamed B); and in ``os``,
    skipping the other operand's zeros per PE, whose elements each PE selects by its weights'
    indices (so its stream is its own: slot s of column j pending when A[i, k_j(s)] is nonzero;
    an empty slot is pending unless the filter's zeros are skipped)."""
    if ctx.roles[1] != "filter" or not ctx.masked[1]:
        return []
    M, K = ex.gemm.M, ex.gemm.K
    cond = [_condense(b, K, kind, ctx.feats.nm) for _, b in ex.packs]
    if any(c is None for c in cond):
        return []
    k2 = max(c[0].shape[1] for c in cond)
    if kind == "fanin" and len({c[0].shape[1] for c in cond if len(c[1])}) != 1:
        return []  # no active column, or groups with different fan-ins
    n2 = max(len(c[1]) for c in cond)
    slots = []
    for sl, act in cond:  # pad every group to (n2, k2); −2 marks slots of no real column
        full = np.full((n2, max(1, k2)), -2, dtype=np.int64)
        full[:len(act), : sl.shape[1]] = sl
        slots.append(full)
    # fan-in: a slot may select any of the K activations, one group of all K columns
    g2 = condensed_gemm(ex.gemm, max(1, k2), n2,
                        ctx.feats.nm if kind == "nm" else (max(1, k2), ex.gemm.K),
                        [act for _, act in cond])
    ex2 = _Exec(g2, map_dense(g2, ctx.rows, ctx.cols, ctx.dataflow, ctx.lanes, folds),
                [(None, kx.filled_slots(sl)) for sl in slots], ex.counts)
    # dense on the condensed GEMM; the weights' empty slots skipped as a shared stream of B
    out = [_dense_work(ex2, ctx, kind)]
    out += _skipping(ex2, replace(ctx, masked=(False, True),
                                  feats=replace(ctx.feats, two_sided=False)), kind + "+")
    if ctx.dataflow == "os" and ctx.masked[0] and ctx.roles[0] in ctx.feats.skip:
        empty = "filter" not in ctx.feats.skip
        fcs, fis = [], []
        for (a, _), sl in zip(ex.packs, slots, strict=True):
            lens = kx.gathered_stream_lengths(a, sl, empty, ctx.lanes, ctx.feats.lookahead,
                                              ctx.feats.lookaside)
            fc, fi = _pe_folds(lens, ctx.rows, ctx.cols, ex2.mapping.fold_overhead)
            fcs.append(fc)
            fis.append(fi)
        fc, fi = np.concatenate(fcs), np.concatenate(fis)
        fc[0] += ex2.mapping.gemm_overhead
        empties = M * sum(int((sl == -1).sum()) for sl in slots) if empty else 0
        gated = empties if ctx.gate[1] else 0
        out.append(SparseWork(g2, ex2.mapping, f"{kind}+skip:{ctx.roles[0]}", fc,
                              int(fc.sum() - fi.sum()), int(fi.sum()), ctx.algorithmic,
                              ctx.effectual + empties, ctx.effectual, gated, ctx.density,
                              ctx.nnz, fold_imbalance=fi))
    return out


def work_candidates(layer: Layer, batch: int, phase: str, masks: dict,
                    rows: int, cols: int, lanes: int, dataflow: str, feats: SparseFeatures,
                    folds: str = "serial") -> list[SparseWork]:
    """Every way the array can run ``phase`` of ``layer`` with these masks under ``feats``:
    dense first, then skipping, the reduced modes alone, and each reduced mode with skipping
    inside the reduced GEMM (``docs/sparse.md``, "Stacking")."""
    return _candidates(layer, batch, phase, masks, rows, cols, lanes, dataflow, feats, folds)[0]


def _ones_counts(layer: Layer, batch: int, phase: str, low: Lowering, lanes: int,
                 ones: list[bool], roles: tuple[str, str]) -> list:
    """Per GEMM of the phase: (per group (a_k, b_k) of the operands in ``ones``, None for the
    others; per group the zero fractions, the ones' from their padding) for the dense operands
    in ``ones`` taken as ones, from one image: a lowering's zeros are the same in every image
    (the batch folds into M, or into K of ``bwd_weight``: counts scale or repeat; with
    ``batch: per_image`` each image is a GEMM of its own, padded as the one image is)."""
    parts1, keys1 = _ones_parts(layer, 1, phase, low, lanes, ones, roles)
    imgs = 1 if low.batch == "per_image" else batch
    g = layer.groups
    out = []
    for (gemm1, packs1, fracs1), keys in zip(parts1, keys1, strict=True):
        reps = batch if low.batch == "per_image" else 1
        per_group, fr = [], []
        for idx in range(g * reps):
            a1, b1 = packs1[idx % g]
            ha, hb = keys[idx % g]
            k1 = gemm1.K
            ak = bk = None
            if ones[0]:
                ak = ha.col_popcounts(k1)
                ak = np.tile(ak, imgs) if phase == "bwd_weight" else ak * imgs
            if ones[1]:
                bk = hb.col_popcounts(k1)
                bk = np.tile(bk, imgs) if phase == "bwd_weight" else bk
            per_group.append((ak, bk))
            fr.append(fracs1[idx % g])
        out.append((per_group, fr))
    return out


def _could_skip_ones(parts: list, fill: list, ones: list[bool], other_ok: bool,
                     dataflow: str, feats: SparseFeatures, phase: str) -> bool:
    """Whether the array could skip a dense operand held as ones (so it must be built): it is
    streamed and the sparser one (``side``), or skipped two-sided."""
    streamed = {"os": "AB", "ws": "A", "is": "B"}[dataflow]
    if not any(o and x in streamed for o, x in zip(ones, "AB", strict=True)):
        return False
    if all(ones) or feats.two_sided:
        return True
    x = "AB"[ones.index(True)]
    if "AB".replace(x, "") not in streamed or not other_ok:
        return True  # the only skippable operand
    for (gemm, packs, fracs), (counts1, fr1) in zip(parts, fill, strict=True):
        if feats.side == "tensor":
            win = "B" if phase == "bwd_weight" else "A"
            for (fa, fb), (oa, ob) in zip(fracs, fr1, strict=True):
                f = {"A": oa if ones[0] else fa, "B": ob if ones[1] else fb}
                other = "A" if win == "B" else "B"
                if (win if f[win] > f[other] else other) == x:
                    return True
            continue
        G, M, K, N = gemm.groups, gemm.M, gemm.K, gemm.N
        if x == "A":
            da = sum(int(ak.sum()) for ak, _ in counts1) / (G * M * K)
            db = sum(int(kx.row_popcounts(b).sum()) for _, b in packs) / (G * K * N)
        else:
            da = sum(int(kx.row_popcounts(a).sum()) for a, _ in packs) / (G * M * K)
            db = sum(int(bk.sum()) for _, bk in counts1) / (G * K * N)
        if (da <= db) == (x == "A"):  # min() over (A, B) takes A on a tie
            return True
    return False


def _context(gemm: Gemm, packs: list, fracs, roles: tuple[str, str],
             masked: tuple[bool, bool], rows: int, cols: int, lanes: int, dataflow: str,
             feats: SparseFeatures, phase: str, fill: tuple | None = None,
             keys: list | None = None) -> tuple[_Ctx, list]:
    """The shared figures of one executed GEMM and its per-k counts; ``fill``: per group the
    counts (a_k, b_k; None = from the pack) and zero fractions of dense operands held as ones
    that were not built (``_ones_counts``); ``keys``: per group the operands held as ones
    (``_Ones``; ``_Exec.keys``)."""
    M, K, N, G = gemm.M, gemm.K, gemm.N, gemm.groups
    counts = [_counts(a, b, M, K, N, None if keys is None else keys[g])
              for g, (a, b) in enumerate(packs)]
    if fill is not None:
        fc, ff = fill
        counts = [(ak if fa is None else fa, bk if fb is None else fb)
                  for (ak, bk), (fa, fb) in zip(counts, fc, strict=True)]
        fracs = ff
    nnz_a = sum(int(ak.sum()) for ak, _ in counts)
    nnz_b = sum(int(bk.sum()) for _, bk in counts)
    # the MACs of the GEMM as lowered (the layer's, under the default lowering)
    ctx = _Ctx(dataflow, rows, cols, lanes, feats, roles, masked, gemm.data_macs,
               sum(int((ak * bk).sum()) for ak, bk in counts),
               {"A": nnz_a / (G * M * K), "B": nnz_b / (G * K * N)}, {"A": nnz_a, "B": nnz_b},
               phase, fracs)
    return ctx, counts


def _dense_folds(w: SparseWork) -> np.ndarray:
    if w.fold_cycles is not None:
        return w.fold_cycles
    mp = w.mapping
    fc = np.full(mp.folds * mp.groups, mp.cycles_per_fold, dtype=np.int64)
    fc[0] += mp.gemm_overhead
    return fc


def _combine(works: list[SparseWork], density: dict, nnz: dict) -> SparseWork:
    """Several GEMMs run one after another as the work of one layer and phase."""
    fc = np.concatenate([_dense_folds(w) for w in works])
    fi = np.concatenate([w.fold_imbalance if w.fold_imbalance is not None
                         else np.zeros(len(_dense_folds(w)), dtype=np.int64) for w in works])
    mode = "/".join(dict.fromkeys(w.mode for w in works))
    return SparseWork(works[0].gemm, works[0].mapping, mode, fc,
                      sum(w.compute_cycles for w in works),
                      sum(w.imbalance_cycles for w in works),
                      sum(w.algorithmic for w in works), sum(w.actual for w in works),
                      sum(w.effectual for w in works),
                      sum(w.gated for w in works), density, nnz, fold_imbalance=fi,
                      parts=works)


def _composite(parts: list, roles: tuple[str, str], masked: tuple[bool, bool],
               rows: int, cols: int, lanes: int, dataflow: str, feats: SparseFeatures,
               folds: str, phase: str, fill: list | None = None,
               keys: list | None = None) -> list[SparseWork]:
    """The candidates of a phase lowered to several GEMMs (``bwd_input: phases``): all dense,
    and each GEMM run its cheaper way (dense or skipping; reduced modes are not tried).
    ``keys``: per GEMM, its operands held as ones (``_Exec.keys``)."""
    dense, best = [], []
    nz = {"A": 0, "B": 0}
    size = {"A": 0, "B": 0}
    for i, (gemm, packs, fracs) in enumerate(parts):
        ky = None if keys is None else keys[i]
        ctx, counts = _context(gemm, packs, fracs, roles, masked, rows, cols, lanes,
                               dataflow, feats, phase, None if fill is None else fill[i], ky)
        for x in "AB":
            nz[x] += ctx.nnz[x]
        size["A"] += gemm.groups * gemm.M * gemm.K
        size["B"] += gemm.groups * gemm.K * gemm.N
        ex = _Exec(gemm, map_dense(gemm, rows, cols, dataflow, lanes, folds), packs, counts, ky)
        d = _dense_work(ex, ctx, "dense")
        dense.append(d)
        best.append(min([d] + _skipping(ex, ctx),
                        key=lambda c: c.compute_cycles + c.imbalance_cycles))
    density = {x: nz[x] / max(size[x], 1) for x in "AB"}
    out = [_combine(dense, density, nz)]
    if any(b.mode != "dense" for b in best):
        out.append(_combine(best, density, nz))
    return out


def _candidates(layer: Layer, batch: int, phase: str, masks: dict, rows: int, cols: int,
                lanes: int, dataflow: str, feats: SparseFeatures, folds: str,
                lowered: Gemm | None = None) -> tuple[list[SparseWork], list]:
    """``work_candidates`` and the packed operands of every group."""
    true = lower(layer, batch, phase) if lowered is None else lowered
    ra, rb, _ = true.roles
    a_mask, b_mask = gemm_masks(phase, masks)
    low = feats.lowering
    fracs = None
    if low.default and feats.side == "gemm" or layer.kind == "matmul":  # no im2col to vary
        gemm = true
        keys = None
        packs = _default_packs(layer, batch, phase, a_mask, b_mask)
        ctx, counts = _context(gemm, packs, fracs, (ra, rb),
                               (a_mask is not None, b_mask is not None), rows, cols, lanes,
                               dataflow, feats, phase)
    else:
        # under a lowering of its own, a dense operand of a skipped role is ones in its data
        # and zeros where the lowering pads (the spatial padding, the lanes past the channels):
        # what the array's buffers hold. It is built only where the array could skip it;
        # otherwise its per-k counts come from one image (``_ones_counts``).
        masks2 = [a_mask, b_mask]
        ones = [m is None and r in feats.skip for m, r in zip(masks2, (ra, rb), strict=True)]
        masked = (a_mask is not None, b_mask is not None)
        keys = None
        parts = lowered_parts(layer, batch, phase, low, lanes, a_mask, b_mask)
        fill = None
        if any(ones):
            fill = _ones_counts(layer, batch, phase, low, lanes, ones, (ra, rb))
            other_ok = any(m is not None and r in feats.skip and not o for m, r, o in
                           zip(masks2, (ra, rb), ones, strict=True))
            if _could_skip_ones(parts, fill, ones, other_ok, dataflow, feats, phase):
                # the operands with a mask are lowered already: only the ones are added
                parts1, keys = _ones_parts(layer, batch, phase, low, lanes, ones, (ra, rb))
                parts = _with_ones(parts, parts1, ones)
                masked = (masked[0] or ones[0], masked[1] or ones[1])
                fill = None
        if len(parts) > 1:
            return _composite(parts, (ra, rb), masked, rows, cols, lanes, dataflow, feats,
                              folds, phase, fill, keys), []
        gemm, packs, fracs = parts[0]
        keys = None if keys is None else keys[0]
        ctx, counts = _context(gemm, packs, fracs, (ra, rb), masked, rows, cols, lanes,
                               dataflow, feats, phase, None if fill is None else fill[0], keys)
    ex = _Exec(gemm, map_dense(gemm, rows, cols, dataflow, lanes, folds), packs, counts, keys)
    out = [_dense_work(ex, ctx, "dense")] + _skipping(ex, ctx)
    for kind in ("nm", "fanin"):
        if getattr(feats, kind):
            out += _condensed(kind, ex, ctx, folds)
    if feats.structured:
        red = _structured(ex)
        if red is not None:
            g2, p2, macs = red
            ex2 = _executed(g2, p2, ctx, folds)
            out += [_dense_work(ex2, ctx, "structured", macs)] + _skipping(ex2, ctx,
                                                                           "structured+")
    return out, packs


def sparse_work(layer: Layer, batch: int, phase: str, masks: dict,
                rows: int, cols: int, lanes: int, dataflow: str,
                feats: SparseFeatures, folds: str = "serial",
                lowered: Gemm | None = None) -> SparseWork:
    """The work of ``phase`` of ``layer`` with the operand masks of one step: the candidate of
    ``work_candidates`` with the fewest cycles (the first of equals). ``masks``: role → the
    mask as the trace packs it (``PackedMask``, read straight into the operand kernels), a bool
    array of the role's shape, or None (dense). ``lowered``: the GEMM as
    ``dataflows.gemm.lower`` gives it, when the caller has it already."""
    cands, packs = _candidates(layer, batch, phase, masks, rows, cols, lanes, dataflow, feats,
                               folds, lowered)
    best = min(cands, key=lambda c: c.compute_cycles + c.imbalance_cycles)
    gemm = cands[0].gemm  # the GEMM as lowered (the dense candidate runs it whole)
    compressed = any(feats.format_of(r, lv) != "dense" for r in gemm.roles[:2]
                     for lv in FORMAT_LEVELS)
    if compressed and best.reduction is None and any(p is not None for ab in packs for p in ab):
        best.fold_blocks = np.concatenate([_block_nnz(dataflow, gemm.M, gemm.K, gemm.N, rows,
                                                      cols, lanes, a, b) for a, b in packs])
    if compressed and best.reduction is None:
        for w in best.parts or [best]:
            g = w.gemm
            role = None if g.im2col is None else g.roles["AB".index(g.im2col[0])]
            if role is not None and any(feats.format_of(role, lv) != "dense"
                                        for lv in FORMAT_LEVELS):
                got = map_nonzero(g, layer, masks.get(role))
                if got is not None:
                    w.map_nonzero, w.map_digest = got
    return best


def map_nonzero(gemm: Gemm, layer: Layer, mask) -> tuple[np.ndarray, bytes] | None:
    """The nonzeros of the feature map ``gemm``'s im2col operand expands (``mask``: its
    role's, as ``gemm_masks`` takes it; None: dense, all ones), per group as the geometry lays
    them out: (groups, images, channels, H, W) uint8, the rows and columns of zeros a
    transposed ``bwd_input`` inserts zero (``MapFormat.nonzero``), and its digest (of the
    packed mask and the layout, not of the array: 8× fewer bytes). A linear layer's map is
    (images, channels, tokens, 1). None where the mask's size is not the map's."""
    g = (list(gemm.im2col[1:]) + [0] * 6)[:20]
    n_img, cg, h, w = g[:4]
    ih, iw = max(1, g[18]), max(1, g[19])
    hs, ws = (h - 1) // ih + 1, (w - 1) // iw + 1
    lg = layer.groups if layer.kind == "conv2d" else 1
    reps = gemm.groups // lg  # a GEMM per image: groups run image by image
    bits = Bits.of(mask)
    shape = (reps * n_img, lg * cg, hs, ws)
    if bits is None:
        t = np.ones(shape, dtype=np.uint8)
    elif bits.numel != math.prod(shape):
        return None
    else:
        t = np.unpackbits(bits.words.view(np.uint8), bitorder="little")[:bits.numel]
        t = (t.reshape(shape) if layer.kind == "conv2d"  # a linear's is (n, token, channel)
             else t.reshape(shape[0], hs * ws, shape[1]).transpose(0, 2, 1).reshape(shape))
    out = np.zeros((gemm.groups, n_img, cg, h, w), dtype=np.uint8)
    for gi in range(gemm.groups):
        img, grp = divmod(gi, lg)
        out[gi, :, :, ::ih, ::iw] = t[img * n_img:(img + 1) * n_img, grp * cg:(grp + 1) * cg]
    h = hashlib.blake2b(b"ones" if bits is None else bits.words.tobytes(), digest_size=16)
    h.update(repr((gemm.im2col, gemm.groups, lg, layer.kind, out.shape)).encode())
    return out, h.digest()


def operand_compression(work: SparseWork, feats: SparseFeatures, word_bits: tuple[int, int],
                        level: str = "dram") -> tuple[float, float] | np.ndarray:
    """Compressed / dense bits of A and B in their roles' formats at ``level`` (``dram``: the
    traffic; ``sram``: what a tile occupies in its buffer): per fold of every group from the
    nonzeros of the blocks that fold reads (column folds outer, ``SparseWork.fold_blocks``), or
    one pair for the GEMM. A reduced mode's operands are already compact: (1, 1).
    ``word_bits``: bits per word of the A and B buffers. Where the GEMM's im2col operand is
    stored compressed (``SparseWork.map_nonzero``), the ratios carry its map in this level's
    format (``MapRatios``): ``dataflows.tiles`` counts its blocks from the map's own nonzeros,
    and its column of the ratios is left as the matrix blocks' (unused)."""
    g = work.gemm
    fmts = [feats.format_of(g.roles[i], level) for i in (0, 1)]
    if work.map_nonzero is not None:  # the im2col operand's map is stored compressed
        x = "AB".index(g.im2col[0])
        fmap = MapFormat(g.im2col[0], fmts[x], word_bits[x], feats.nm[1] if feats.nm else 4,
                         work.map_nonzero, work.map_digest)
        return MapRatios.of(_ratios(work, feats, word_bits, fmts), fmap)
    return _ratios(work, feats, word_bits, fmts)


def _ratios(work: SparseWork, feats: SparseFeatures, word_bits: tuple[int, int],
            fmts: list[str]) -> tuple[float, float] | np.ndarray:
    """``operand_compression``'s ratios in formats ``fmts``."""
    g = work.gemm
    if work.reduction is not None or fmts == ["dense", "dense"]:
        return (1.0, 1.0)
    m = feats.nm[1] if feats.nm else 4
    blocks = work.fold_blocks
    if blocks is None:  # every operand dense: one full block per operand
        return tuple(float(block_ratio(f, np.array([r]), np.array([c]), np.array([r * c]), w,
                                       m)[0])
                     for f, (r, c), w in zip(fmts, ((g.M, g.K), (g.K, g.N)), word_bits,
                                             strict=True))
    out = np.empty((blocks.shape[0], 2))
    for i, (f, w) in enumerate(zip(fmts, word_bits, strict=True)):
        out[:, i] = block_ratio(f, blocks[:, 3 * i], blocks[:, 3 * i + 1], blocks[:, 3 * i + 2],
                                w, m)
    return out


def ideal_cycles(work: SparseWork, rows: int, cols: int, lanes: int) -> int:
    """Effectual MACs over the array's MAC units (rounded up)."""
    return math.ceil(work.effectual / (rows * cols * lanes))
