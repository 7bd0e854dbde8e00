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
    along K has at most N nonzeros, the GEMM runs as a dense GEMM with K·N/M (2× for 2:4);
    otherwise at dense speed.
``fanin: true``
    condensed execution of constant fan-in weights (SRigL): when every active output neuron has
    the same number k of weights along K, the GEMM runs dense with K = k over the active neurons.
``structured: true``
    all-zero rows of A, all-zero columns of B and K positions that are zero in either operand are
    dropped: dense compute on the reduced dimensions (channel/filter-structured sparsity).
``formats: {role: format}``
    the compressed format of each role in DRAM and SRAM (``dataflows.formats``).

When several apply to a GEMM they are alternatives: the array runs the one with the fewest
compute cycles (a flexible accelerator picks its mode per GEMM).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dataflows import kernels as kx
from dataflows.formats import FORMATS
from dataflows.gemm import ROLES, Gemm, lower
from dataflows.systolic import DenseMapping, map_dense
from traces.errors import InputError
from traces.layers import Layer

SKIP_ROLES = ("filter", "ifmap", "grad_out")
FEATURE_KEYS = ("skip", "two_sided", "window", "gate", "nm", "fanin", "structured", "formats")


@dataclass(frozen=True)
class SparseFeatures:
    """The validated ``sparse:`` section of an architecture."""

    skip: tuple[str, ...] = ()
    two_sided: bool = False
    lookahead: int = -1  # -1: unbounded window
    lookaside: int = 0
    gate: tuple[str, ...] = ()
    nm: tuple[int, int] | None = None
    fanin: bool = False
    structured: bool = False
    formats: dict[str, str] = field(default_factory=dict)

    @property
    def any(self) -> bool:
        """True when some feature can change cycles (skipping or a structured mode)."""
        return bool(self.skip or self.nm or self.fanin or self.structured)


def parse_features(d: Any, source: str) -> SparseFeatures:
    """Check the ``sparse:`` mapping of an architecture file; errors name ``sparse.<key>``."""
    if d is None:
        return SparseFeatures()
    if not isinstance(d, dict):
        raise InputError(source, "sparse", "expected a mapping")
    for k in d:
        if k not in FEATURE_KEYS:
            raise InputError(source, f"sparse.{k}",
                             f"unknown key; expected one of {', '.join(FEATURE_KEYS)}")

    def roles(key: str) -> tuple[str, ...]:
        v = d.get(key, [])
        v = [v] if isinstance(v, str) else v
        if not isinstance(v, (list, tuple)) or any(r not in SKIP_ROLES for r in v):
            raise InputError(source, f"sparse.{key}",
                             f"expected a list of {', '.join(SKIP_ROLES)}, got {d.get(key)!r}")
        return tuple(dict.fromkeys(v))

    def flag(key: str) -> bool:
        v = d.get(key, False)
        if not isinstance(v, bool):
            raise InputError(source, f"sparse.{key}", f"expected true or false, got {v!r}")
        return v

    la, ls = -1, 0
    win = d.get("window")
    if win is not None:
        if not isinstance(win, dict) or set(win) - {"lookahead", "lookaside"}:
            raise InputError(source, "sparse.window",
                             "expected a mapping with lookahead and lookaside (integers >= 0)")
        la, ls = win.get("lookahead", 0), win.get("lookaside", 0)
        for k, v in (("lookahead", la), ("lookaside", ls)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise InputError(source, f"sparse.window.{k}",
                                 f"expected an integer >= 0, got {v!r}")
    nm = d.get("nm")
    if nm is not None:
        parts = str(nm).split(":")
        ok = len(parts) == 2 and all(p.strip().isdigit() for p in parts)
        n, m = (int(parts[0]), int(parts[1])) if ok else (0, 0)
        if not ok or not 1 <= n < m:
            raise InputError(source, "sparse.nm", f"expected 'N:M' with 1 <= N < M, got {nm!r}")
        nm = (n, m)
    formats = d.get("formats", {}) or {}
    if not isinstance(formats, dict):
        raise InputError(source, "sparse.formats", "expected a mapping role: format")
    for role, fmt in formats.items():
        if role not in SKIP_ROLES:
            raise InputError(source, f"sparse.formats.{role}",
                             f"unknown role; expected one of {', '.join(SKIP_ROLES)}")
        if fmt not in FORMATS:
            raise InputError(source, f"sparse.formats.{role}",
                             f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return SparseFeatures(skip=roles("skip"), two_sided=flag("two_sided"), lookahead=la,
                          lookaside=ls, gate=roles("gate"), nm=nm, fanin=flag("fanin"),
                          structured=flag("structured"), formats=dict(formats))


# ------------------------------------------------------------------------------------------------
# operands of one GEMM as bit matrices packed along K
# ------------------------------------------------------------------------------------------------
def gemm_masks(phase: str, masks: dict[str, np.ndarray | None]
               ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The role masks (layer-shaped bool tensors, None = dense) of a GEMM's A and B."""
    ra, rb, _ = ROLES[phase]
    return masks.get(ra), masks.get(rb)


def pack_operands(layer: Layer, batch: int, phase: str, a_mask: np.ndarray | None,
                  b_mask: np.ndarray | None, group: int
                  ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(A packed M×K, Bᵀ packed N×K) of one group, from the layer-shaped masks; None = dense."""
    g = layer.groups
    cpg, opg = layer.in_channels // g, layer.out_channels // g
    conv = layer.kind == "conv2d"
    if conv:
        ho, wo = layer.out_hw
        geo = (layer.kernel[0], layer.kernel[1], layer.stride[0], layer.stride[1],
               layer.padding[0], layer.padding[1], layer.dilation[0], layer.dilation[1], ho, wo)

    def feat_rows(fmap):  # ifmap as rows (n, pixel), bits (c, i, j)
        if conv:
            return kx.im2col_rows(fmap, group * cpg, cpg, *geo)
        return kx.pack_rows(fmap.reshape(-1, fmap.shape[-1]))

    def feat_cols(fmap):  # its transpose
        if conv:
            return kx.im2col_cols(fmap, group * cpg, cpg, *geo)
        return kx.pack_rows(fmap.reshape(-1, fmap.shape[-1]).T)

    def grad_rows(dz):  # grad_out as rows (n, pixel), bits (output channel of the group)
        if conv:
            t = dz[:, group * opg:(group + 1) * opg].transpose(0, 2, 3, 1)
            return kx.pack_rows(t.reshape(-1, opg))
        return kx.pack_rows(dz.reshape(-1, dz.shape[-1]))

    def grad_cols(dz):
        if conv:
            t = dz[:, group * opg:(group + 1) * opg].transpose(1, 0, 2, 3)
            return kx.pack_rows(t.reshape(opg, -1))
        return kx.pack_rows(dz.reshape(-1, dz.shape[-1]).T)

    def w_rows(w):  # filter as rows (output channel), bits (c, i, j)
        return kx.pack_rows(w[group * opg:(group + 1) * opg].reshape(opg, -1))

    def w_cols(w):
        return kx.pack_rows(w[group * opg:(group + 1) * opg].reshape(opg, -1).T)

    if phase == "fwd":
        a = None if a_mask is None else feat_rows(a_mask)
        b = None if b_mask is None else w_rows(b_mask)
    elif phase == "bwd_input":
        a = None if a_mask is None else grad_rows(a_mask)
        b = None if b_mask is None else w_cols(b_mask)
    else:
        a = None if a_mask is None else grad_cols(a_mask)
        b = None if b_mask is None else feat_cols(b_mask)
    return a, b


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

    @property
    def skipped(self) -> int:
        return self.algorithmic - self.actual


def _nm_valid(pack: np.ndarray, K: int, n: int, m: int) -> bool:
    for k0 in range(0, K, m):
        width = min(m, K - k0)
        for r in range(pack.shape[0]):
            if kx.popcount64(kx.extract_bits(pack[r], k0, width)) > n:
                return False
    return True


def _fold_cycles_rows(lens: np.ndarray, block: int, overhead: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per block of ``block`` consecutive streams (one fold): busy = max + ``overhead`` and
    imbalance = max − ceil(mean). Returns (fold cycles, fold imbalance)."""
    starts = np.arange(0, len(lens), block)
    busy = np.maximum.reduceat(lens, starts)
    size = np.minimum(starts + block, len(lens)) - starts
    bal = -(-np.add.reduceat(lens, starts) // size)
    return (busy + overhead).astype(np.int64), (busy - bal).astype(np.int64)


def _one_sided_folds(packs, x: str, M: int, K: int, N: int, dataflow: str, rows: int,
                     cols: int, lanes: int, H: int, D: int, ovh: tuple[int, int]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(fold cycles, fold imbalance) of every group, column folds outer, when the zeros of
    operand ``x`` ("A" or "B") are skipped; ``ovh`` = (fill/drain per fold, once per GEMM)."""
    fold_ovh, gemm_ovh = ovh
    fcs, fis = [], []
    for a, b in packs:
        pack = a if x == "A" else b
        if dataflow == "os":
            lens = kx.row_stream_lengths(pack, K, lanes, H, D)
            if x == "A":  # rows of A on array rows; repeated for every column fold
                fc, fi = _fold_cycles_rows(lens, rows, fold_ovh)
                fc, fi = np.tile(fc, -(-N // cols)), np.tile(fi, -(-N // cols))
            else:  # columns of B on array columns, outer loop: each once, rows inner
                fc, fi = _fold_cycles_rows(lens, cols, fold_ovh)
                fc, fi = np.repeat(fc, -(-M // rows)), np.repeat(fi, -(-M // rows))
        else:  # ws streams A over M, is streams B over N; one array row = L k's
            lens = kx.slice_stream_lengths(pack, K, lanes, H, D)
            fc, fi = _fold_cycles_rows(lens, rows, fold_ovh)
            outer = -(-(N if dataflow == "ws" else M) // cols)
            fc, fi = np.tile(fc, outer), np.tile(fi, outer)
        fcs.append(fc)
        fis.append(fi)
    fc = np.concatenate(fcs)
    fc[0] += gemm_ovh
    return fc, np.concatenate(fis)


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


def _counts(a, b, M: int, K: int, N: int) -> tuple[np.ndarray, np.ndarray]:
    """Per k: nonzeros of A's column k (over M) and of B's row k (over N)."""
    ak = np.full(K, M, dtype=np.int64) if a is None else kx.col_popcounts(a, K)
    bk = np.full(K, N, dtype=np.int64) if b is None else kx.col_popcounts(b, K)
    return ak, bk


def sparse_work(layer: Layer, batch: int, phase: str, masks: dict[str, np.ndarray | None],
                rows: int, cols: int, lanes: int, dataflow: str,
                feats: SparseFeatures, folds: str = "serial") -> SparseWork:
    """The work of ``phase`` of ``layer`` with the operand masks of one step."""
    gemm = lower(layer, batch, phase)
    ra, rb, _ = gemm.roles
    a_mask, b_mask = gemm_masks(phase, masks)
    M, K, N, G = gemm.M, gemm.K, gemm.N, gemm.groups
    dense_map = map_dense(gemm, rows, cols, dataflow, lanes, folds)
    fold_ovh, gemm_ovh = dense_map.fold_overhead, dense_map.gemm_overhead
    packs = [pack_operands(layer, batch, phase, a_mask, b_mask, g) for g in range(G)]
    eff = act_a = act_b = gated_a = gated_b = gated_ab = 0
    nnz_a = nnz_b = 0
    counts = []
    for a, b in packs:
        ak, bk = _counts(a, b, M, K, N)
        counts.append((ak, bk))
        eff += int((ak * bk).sum())
        nnz_a += int(ak.sum())
        nnz_b += int(bk.sum())
        act_a += int(ak.sum()) * N
        act_b += int(bk.sum()) * M
        gated_a += int(((M - ak) * N).sum())
        gated_b += int((M * (N - bk)).sum())
        gated_ab += int((M * N - ak * bk).sum())
    algorithmic = gemm.macs
    density = {"A": nnz_a / (G * M * K), "B": nnz_b / (G * K * N)}
    gate_a, gate_b = ra in feats.gate, rb in feats.gate

    def dense_gated() -> int:
        if gate_a and gate_b:
            return gated_ab
        return gated_a if gate_a else (gated_b if gate_b else 0)

    best = SparseWork(gemm, dense_map, "dense", None, dense_map.compute_cycles, 0, algorithmic,
                      algorithmic, eff, dense_gated(), density,
                      {"A": nnz_a, "B": nnz_b})
    candidates = []
    H, D = feats.lookahead, feats.lookaside

    # -- skipping -------------------------------------------------------------------------------
    streamed = {"os": ("A", "B"), "ws": ("A",), "is": ("B",)}[dataflow]
    skippable = [x for x in streamed if (ra if x == "A" else rb) in feats.skip
                 and (a_mask if x == "A" else b_mask) is not None]
    ovh = (fold_ovh, gemm_ovh)
    if skippable:
        if len(skippable) == 2 and feats.two_sided:
            fc, fi = _two_sided_folds(packs, M, N, rows, cols, lanes, ovh)
            candidates.append(SparseWork(gemm, dense_map, "two_sided", fc,
                                         int(fc.sum() - fi.sum()), int(fi.sum()), algorithmic,
                                         eff, eff, 0, density, best.nnz, fold_imbalance=fi))
        else:
            x = min(skippable, key=lambda o: density[o])
            role = ra if x == "A" else rb
            fc, fi = _one_sided_folds(packs, x, M, K, N, dataflow, rows, cols, lanes, H, D, ovh)
            actual = act_a if x == "A" else act_b
            other_gated = 0
            if x == "A" and gate_b:
                other_gated = sum(int((ak * (N - bk)).sum()) for ak, bk in counts)
            if x == "B" and gate_a:
                other_gated = sum(int(((M - ak) * bk).sum()) for ak, bk in counts)
            candidates.append(SparseWork(gemm, dense_map, f"skip:{role}", fc,
                                         int(fc.sum() - fi.sum()), int(fi.sum()), algorithmic,
                                         actual, eff, other_gated, density, best.nnz,
                                         fold_imbalance=fi))

    # -- structured modes: a dense GEMM with reduced dimensions ---------------------------------
    def reduced(mode: str, m2: int, k2: int, n2: int) -> None:
        g2 = Gemm(gemm.layer, phase, max(1, m2), max(1, k2), max(1, n2), G)
        mp = map_dense(g2, rows, cols, dataflow, lanes, folds)
        macs = G * m2 * k2 * n2
        gated = max(0, macs - eff) if (gate_a or gate_b) else 0
        candidates.append(SparseWork(g2, mp, mode, None, mp.compute_cycles, 0, algorithmic,
                                     macs, eff, gated, density, best.nnz))

    wpos = {"A": ra, "B": rb}
    for x, pack_i in (("A", 0), ("B", 1)):
        if wpos[x] != "filter" or (a_mask if x == "A" else b_mask) is None:
            continue
        if feats.nm:
            n, m = feats.nm
            if all(_nm_valid(p[pack_i], K, n, m) for p in packs):
                reduced("nm", M, -(-K * n // m), N)
        if feats.fanin:
            per_row = [kx.row_popcounts(p[pack_i]) for p in packs]
            active = [r[r > 0] for r in per_row]
            ks = {int(v) for r in active for v in r}
            if len(ks) == 1:
                k = ks.pop()
                n_act = max(len(r) for r in active)
                if x == "B":
                    reduced("fanin", M, k, n_act)
                else:
                    reduced("fanin", n_act, k, N)
    if feats.structured:
        m2 = k2 = n2 = 0
        for (a, b), (ak, bk) in zip(packs, counts, strict=True):
            m2 = max(m2, M if a is None else int((kx.row_popcounts(a) > 0).sum()))
            n2 = max(n2, N if b is None else int((kx.row_popcounts(b) > 0).sum()))
            k2 = max(k2, int(((ak > 0) & (bk > 0)).sum()))
        if (m2, k2, n2) != (M, K, N):
            reduced("structured", m2, k2, n2)

    for c in candidates:
        if c.compute_cycles + c.imbalance_cycles < best.compute_cycles + best.imbalance_cycles:
            best = c
    compressed = any(feats.formats.get(r, "dense") != "dense" for r in (ra, rb))
    if compressed and best.mode not in ("nm", "fanin", "structured") and (
            a_mask is not None or b_mask is not None):
        best.fold_blocks = np.concatenate([_block_nnz(dataflow, M, K, N, rows, cols, lanes, a, b)
                                           for a, b in packs])
    return best


def ideal_cycles(work: SparseWork, rows: int, cols: int, lanes: int) -> int:
    """Effectual MACs over the array's MAC units (rounded up)."""
    return math.ceil(work.effectual / (rows * cols * lanes))
