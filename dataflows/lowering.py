"""Lowering choices: how a layer's training GEMMs are laid out on the array (``docs/gemms.md``,
"Lowering choices"; the ``sparse.lowering`` keys of an architecture file).

``bwd_input``
    ``col2im`` (default): dA_col = dZ · W with K = Cout, then a scatter-add of overlapping
    partial sums. ``transposed``: a transposed convolution, the output gradient zero-inserted
    (stride − 1 zeros between elements, zeros the scheduler may skip), padded by d(k−1) − p and
    correlated with the 180°-rotated filters: M = N·H·W input positions, K = Cout·kh·kw,
    N = Cin; no partial sums leave the array. ``phases``: the same transposed convolution split
    by output phase (sub-pixel decomposition, DNNsim's strided path): for a stride s, the input
    positions y ≡ r (mod s) only ever meet the taps whose offset lines up with a stored element,
    so each of the s² phases is a stride-1 correlation of the stored output gradient with its
    own sub-kernel — s² GEMMs of their own (``lowered_parts``), and the inserted zeros are never
    streamed. With stride 1 it is ``transposed``.
``bwd_weight``
    ``batch`` (default): K = N·Ho·Wo, the images one after another. ``per_image``: each image's
    Ho·Wo positions padded to a multiple of the lanes, so no step of a stream spans two images.
``k_order``
    ``flat`` (default; SCALE-Sim's): the im2col dimension is (c, i, j). ``channel_inner``:
    (i, j, c), the channels padded with zeros to a multiple of the lanes at every kernel
    position (TensorDash's channel-first layout).
``batch``
    ``folded`` (default): the batch is folded into M (or K of ``bwd_weight``). ``per_image``:
    every image is a GEMM of its own, run one after another (counted as groups: a layer with g
    groups at batch n runs n·g GEMMs), which implies ``bwd_weight: per_image``.

The operands of every lowering, the default one included (``dataflows.gemm.lower``'s GEMM), are
built here from the masks as the trace packs them (``kernels.Bits``): each is a strided view of a
packed tensor (``kernels.runs_rows``), im2col windows placed in the K order as they are built
(``kernels.im2col_cols_map``; any other index map, ``kernels.gather_cols``), rows of a packed
matrix concatenated (``kernels.gather_runs``) or a filter's taps moved to their K columns
(``kernels.taps_cols``), a permutation of packed rows (``_ci_rows``: the K order) or a bit
transpose. No bool array of a tensor or of a GEMM operand is made.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from common.errors import InputError
from dataflows import kernels as kx
from dataflows.gemm import Gemm, lower
from dataflows.kernels import Bits
from traces.layers import Layer

CHOICES = {
    "bwd_input": ("col2im", "transposed", "phases"),
    "bwd_weight": ("batch", "per_image"),
    "k_order": ("flat", "channel_inner"),
    "batch": ("folded", "per_image"),
}


@dataclass(frozen=True)
class Lowering:
    """The validated ``sparse.lowering`` section."""

    bwd_input: str = "col2im"
    bwd_weight: str = "batch"
    k_order: str = "flat"
    batch: str = "folded"

    @property
    def default(self) -> bool:
        return self == Lowering()


def parse_lowering(v: Any, source: str) -> Lowering:
    """Check ``sparse.lowering``; errors name ``sparse.lowering.<key>``."""
    if v is None:
        return Lowering()
    if not isinstance(v, dict):
        raise InputError(source, "sparse.lowering", "expected a mapping of "
                         + ", ".join(CHOICES))
    for k, x in v.items():
        if k not in CHOICES:
            raise InputError(source, f"sparse.lowering.{k}",
                             f"unknown key; expected one of {', '.join(CHOICES)}")
        if x not in CHOICES[k]:
            raise InputError(source, f"sparse.lowering.{k}",
                             f"expected {' or '.join(CHOICES[k])}, got {x!r}")
    return Lowering(**v)


def _geometry(layer: Layer):
    if layer.kind == "linear":
        return (layer.tokens, 1), (layer.tokens, 1), (1, 1), (1, 1), (0, 0), (1, 1)
    return (layer.input_hw, layer.out_hw, layer.kernel, layer.stride, layer.padding,
            layer.dilation)


def _axis_phases(size: int, out: int, k: int, s: int, p: int, d: int
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per output phase r of one axis: (its positions y ≡ r mod s, the rotated taps i' whose
    output-gradient row (y + p − (k−1−i')·d) / s is a whole number); phases with no position
    or no tap are left out."""
    out_ = []
    for r in range(s):
        ys = np.arange(r, size, s)
        taps = np.array([i for i in range(k) if (r + p - (k - 1 - i) * d) % s == 0], dtype=int)
        if len(ys) and len(taps):
            out_.append((ys, taps))
    return out_


def _phase_index(ys: np.ndarray, taps: np.ndarray, out: int, k: int, s: int, p: int,
                 d: int) -> np.ndarray:
    r = ys[:, None] + p - (k - 1 - taps[None, :]) * d
    ok = (r % s == 0) & (r >= 0) & (r // s < out)
    return np.where(ok, r // s, -1)


def _k_rows(ch: int, kh: int, kw: int, order: str, lanes: int) -> tuple[np.ndarray, int]:
    """Where each packed row (c, i, j) of an im2col-columns matrix goes as ``order`` lays out K,
    and how many rows that layout has: flat as they are, channel_inner as (i, j, c) with zero
    rows for the padding channels."""
    if order == "flat":
        return np.arange(ch * kh * kw, dtype=np.int64), ch * kh * kw
    cp = -(-ch // lanes) * lanes
    c, i, j = np.meshgrid(np.arange(ch), np.arange(kh), np.arange(kw), indexing="ij")
    return ((i * kw + j) * cp + c).ravel().astype(np.int64), kh * kw * cp


def _ci_rows(cols: np.ndarray, ch: int, kh: int, kw: int, order: str, lanes: int
             ) -> np.ndarray:
    """Packed rows (c, i, j) of an im2col-columns matrix reordered as ``order`` lays out K
    (``_k_rows``)."""
    if order == "flat":
        return cols
    rows, n = _k_rows(ch, kh, kw, order, lanes)
    out = np.zeros((n, cols.shape[1]), dtype=np.uint64)
    out[rows] = cols
    return out


def _phase_shift(r: int, first: int, k: int, s: int, p: int) -> int:
    """Output-gradient row of phase r's first position and first rotated tap (stride s,
    dilation 1): the taps then read rows m + shift + u."""
    return (r + p - (k - 1 - first)) // s


def lowered(layer: Layer, batch: int, phase: str, low: Lowering, lanes: int,
            a_mask, b_mask) -> tuple[Gemm, list, list[tuple[float, float]]]:
    """The GEMM that runs for ``phase`` of ``layer`` under ``low``, its packed operands per
    group (A M×K, Bᵀ N×K; None = dense) and per group the zero fractions of the A and B tensors
    as stored, padding included (``sparse.side: tensor``). A lowering that runs several GEMMs
    (``bwd_input: phases`` with stride > 1) is ``lowered_parts``."""
    parts = lowered_parts(layer, batch, phase, low, lanes, a_mask, b_mask)
    if len(parts) != 1:
        raise ValueError(f"{layer.name} {phase} lowers to {len(parts)} GEMMs")
    return parts[0]


@dataclass(frozen=True)
class _Shape:
    """A layer's geometry under one lowering, per group and GEMM (what every builder needs)."""

    conv: bool
    h: int
    w: int
    ho: int
    wo: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    cin: int  # per group
    cout: int
    n_img: int  # images in one GEMM: 1 with batch per_image, else the batch
    low: Lowering
    lanes: int

    @property
    def hp(self) -> int:
        """Rows of the input with the padding the forward windows read (top + what they
        reach)."""
        return self.ph + max(self.h, (self.ho - 1) * self.sh + self.dh * (self.kh - 1) + 1
                             - self.ph)

    @property
    def wp(self) -> int:
        return self.pw + max(self.w, (self.wo - 1) * self.sw + self.dw * (self.kw - 1) + 1
                             - self.pw)

    @property
    def eh_ew(self) -> tuple[int, int]:
        """The output gradient as a transposed bwd_input's windows read it, padded as DNNsim
        pads it (which ``side: tensor`` measures): by the forward padding (p − 1 on one side
        where the forward windows leave the last padded row unread), or by ⌊(k−1)/s⌋ when
        p = 0."""
        eh = self.ho + (self.hp - self.h if self.ph else 2 * ((self.kh - 1) // self.sh))
        ew = self.wo + (self.wp - self.w if self.pw else 2 * ((self.kw - 1) // self.sw))
        return eh, ew

    @property
    def geo(self) -> tuple:
        """The forward windows as ``kernels.im2col_cols`` takes them."""
        return (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw, self.dh, self.dw,
                self.ho, self.wo)

    def kdim(self, ch: int, taps: int) -> int:
        """An im2col dimension of ``ch`` channels × ``taps`` kernel positions, as laid out."""
        if self.low.k_order == "flat":
            return ch * taps
        return taps * -(-ch // self.lanes) * self.lanes

    @property
    def k_padded(self) -> bool:
        """Whether bwd_weight's K is padded to the lanes image by image."""
        return not (self.low.bwd_weight == "batch" and self.low.batch != "per_image")


def _shape(layer: Layer, batch: int, low: Lowering, lanes: int) -> _Shape:
    (h, w), (ho, wo), (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _geometry(layer)
    g = layer.groups
    return _Shape(layer.kind == "conv2d", h, w, ho, wo, kh, kw, sh, sw, ph, pw, dh, dw,
                  layer.in_channels // g, layer.out_channels // g,
                  1 if low.batch == "per_image" else batch, low, lanes)


def _phase_sets(S: _Shape, phase: str) -> list:
    """The GEMMs a phase runs: [None] (one, not transposed), or per transposed GEMM its
    (positions, rotated taps) along each axis: all of them, or one output phase each."""
    if phase != "bwd_input" or S.low.bwd_input == "col2im":
        return [None]
    whole = [((np.arange(S.h), np.arange(S.kh)), (np.arange(S.w), np.arange(S.kw)))]
    if S.low.bwd_input == "transposed":
        return whole
    sets = [(yp, xp) for yp in _axis_phases(S.h, S.ho, S.kh, S.sh, S.ph, S.dh)
            for xp in _axis_phases(S.w, S.wo, S.kw, S.sw, S.pw, S.dw)]
    sets.sort(key=lambda t: (t[0][1][0], t[1][1][0]))  # by the first rotated tap
    return sets or whole  # no input position meets a stored element: one empty GEMM


def _slots(S: _Shape, ch: int) -> int:
    """Channel slots per kernel position in the K order: 0 for (c, i, j), else the channels
    padded to the lanes (``Gemm.im2col``'s last element)."""
    return 0 if S.low.k_order == "flat" else -(-ch // S.lanes) * S.lanes


def _axis_windows(ys: np.ndarray, taps: np.ndarray, k: int, s: int, p: int, d: int
                  ) -> tuple[int, int] | None:
    """A transposed GEMM's windows along one axis as a forward correlation of the stored
    gradient: position m (input row ys[m]) and its u-th tap (rotated tap taps[u]) read
    gradient row m + u·d' − p', returned as (p', d'); None where the rows are not evenly spaced
    (a stride above 1 read through every tap: the zeros a transposed convolution inserts)."""
    rows = ys[:, None] + p - (k - 1 - taps[None, :]) * d
    if (rows % s).any():
        return None
    rows //= s
    if len(ys) > 1 and (np.diff(ys) != s).any():
        return None
    du = np.diff(rows[0])
    if len(taps) > 1 and (du != du[0]).any():
        return None
    return -int(rows[0, 0]), int(du[0]) if len(taps) > 1 else 1


def _transposed_geo(S: _Shape, st) -> tuple | None:
    """``Gemm.im2col`` of a transposed bwd_input's A, where its windows are a forward
    correlation of the stored output gradient (one output phase, or a stride of 1)."""
    (ys, ti), (xs, tj) = st
    if not len(ys) or not len(xs) or not len(ti) or not len(tj):
        return None
    wy = _axis_windows(ys, ti, S.kh, S.sh, S.ph, S.dh)
    wx = _axis_windows(xs, tj, S.kw, S.sw, S.pw, S.dw)
    if wy is None or wx is None:
        if (len(ys), len(ti), len(xs), len(tj)) != (S.h, S.kh, S.w, S.kw):
            return None
        # every position through every tap: a correlation of the gradient with stride − 1
        # zeros inserted between its elements (the last two: where its stored ones sit)
        return ("A", S.n_img, S.cout, (S.ho - 1) * S.sh + 1, (S.wo - 1) * S.sw + 1, S.kh,
                S.kw, 1, 1, S.dh * (S.kh - 1) - S.ph, S.dw * (S.kw - 1) - S.pw, S.dh, S.dw,
                S.h, S.w, _slots(S, S.cout), 0, 0, 0, S.sh, S.sw)
    return ("A", S.n_img, S.cout, S.ho, S.wo, len(ti), len(tj), 1, 1, wy[0], wx[0], wy[1],
            wx[1], len(ys), len(xs), _slots(S, S.cout))


def _part_gemm(layer: Layer, S: _Shape, phase: str, st, groups: int) -> Gemm:
    n, cin, cout, taps = S.n_img, S.cin, S.cout, S.kh * S.kw
    # the feature map a fwd / bwd_weight im2col operand expands (a linear layer's tokens as a
    # column of pixels)
    geo = (n, cin, S.h, S.w, S.kh, S.kw, S.sh, S.sw, S.ph, S.pw, S.dh, S.dw, S.ho, S.wo,
           _slots(S, cin))
    if phase == "fwd":
        return Gemm(layer.name, phase, n * S.ho * S.wo, S.kdim(cin, taps), cout, groups,
                    a_stored=n * cin * S.h * S.w, k_data=cin * taps, im2col=("A", *geo))
    if phase == "bwd_weight":
        per = S.ho * S.wo
        kk = -(-per // S.lanes) * S.lanes if S.k_padded else per
        return Gemm(layer.name, phase, cout, n * kk, S.kdim(cin, taps), groups,
                    b_stored=n * cin * S.h * S.w, k_data=n * per, n_data=cin * taps,
                    im2col=("B", *geo, 0, 0, kk) if S.k_padded else ("B", *geo))
    if st is None:
        return Gemm(layer.name, phase, n * S.ho * S.wo, cout, S.kdim(cin, taps), groups,
                    c_stored=n * cin * S.h * S.w, n_data=cin * taps, col2im=geo)
    (ys, ti), (xs, tj) = st
    t = len(ti) * len(tj)
    return Gemm(layer.name, phase, n * len(ys) * len(xs), S.kdim(cout, t), cin, groups,
                a_stored=n * cout * S.ho * S.wo, b_stored=cout * cin * t, k_data=cout * t,
                im2col=_transposed_geo(S, st))


#: above this many output phases (stride_h x stride_w) ``part_gemms`` stands the one transposed
#: GEMM in for them: an estimate need not walk 65 536^2 phases
MAX_COUNTED_PHASES = 4096


def part_gemms(layer: Layer, batch: int, phase: str, low: Lowering, lanes: int) -> list[Gemm]:
    """The GEMMs ``lowered_parts`` runs for ``phase``, shapes only (no masks, nothing per
    image or group): what a cost estimate needs. Beyond ``MAX_COUNTED_PHASES`` output phases
    of a ``bwd_input: phases`` lowering, the whole transposed GEMM stands in for them."""
    if low.default or layer.kind == "matmul":
        return [lower(layer, batch, phase)]
    S = _shape(layer, batch, low, lanes)
    groups = layer.groups * (batch if low.batch == "per_image" else 1)
    if (phase == "bwd_input" and low.bwd_input == "phases"
            and S.sh * S.sw > MAX_COUNTED_PHASES):
        sets = [((np.arange(S.h), np.arange(S.kh)), (np.arange(S.w), np.arange(S.kw)))]
    else:
        sets = _phase_sets(S, phase)
    return [_part_gemm(layer, S, phase, st, groups) for st in sets]


def _chans(S: _Shape, t: Bits) -> int:
    """Channels of a stored feature map or gradient: (N, C, H, W), or (N[, tokens], C)."""
    return t.shape[1] if S.conv else t.shape[-1]


def _chan_rows(S: _Shape, t: Bits, n0: int, c0: int, cc: int, hw: int) -> np.ndarray:
    """Rows: channels c0 .. c0+cc of ``t`` (``hw`` pixels an image); bits (n, pixel) of the
    GEMM's images from n0."""
    ct, n = _chans(S, t), S.n_img
    if S.conv:  # each (n, c) plane is a run of hw bits
        base = (n0 * ct + c0 + np.arange(cc, dtype=np.int64)) * hw
        return kx.runs_rows(t.words, base, ct * hw, n, hw, hw, n * hw)
    return kx.transpose_bits(_pix_rows(S, t, n0, c0, cc, hw, cc), cc)


def _pix_rows(S: _Shape, t: Bits, n0: int, c0: int, cc: int, hw: int, kout: int
              ) -> np.ndarray:
    """Rows (n, pixel) of the GEMM's images of ``t``; bits its channels c0 .. c0+cc, zero up to
    ``kout`` (a linear layer's lanes; a conv's rows hold cc bits)."""
    ct, n = _chans(S, t), S.n_img
    if S.conv:
        return kx.transpose_bits(_chan_rows(S, t, n0, c0, cc, hw), n * hw)
    base = (n0 * hw + np.arange(n * hw, dtype=np.int64)) * ct + c0  # (n, token): a run
    return kx.runs_rows(t.words, base, 0, 1, cc, 0, kout)


def _w_rows(S: _Shape, wt: Bits, grp: int) -> np.ndarray:
    """Rows: the group's filters; bits (c, i, j) (each filter is a run)."""
    k = S.cin * S.kh * S.kw
    base = (grp * S.cout + np.arange(S.cout, dtype=np.int64)) * k
    return kx.runs_rows(wt.words, base, 0, 1, k, 0, k)


def _w_cols(S: _Shape, wt: Bits, grp: int) -> np.ndarray:
    """Rows: (c, i, j) in the K order of the lowering; bits the group's filters."""
    cols = kx.transpose_bits(_w_rows(S, wt, grp), S.cin * S.kh * S.kw)
    return _ci_rows(cols, S.cin, S.kh, S.kw, S.low.k_order, S.lanes)


def _rot_cols(S: _Shape, wt: Bits, grp: int, ti: np.ndarray, tj: np.ndarray) -> np.ndarray:
    """Bᵀ of a transposed bwd_input: rows the group's input channels, bits (o, i', j') in the K
    order, tap (i', j') of filter o holding W[o, c, kh−1−ti[i'], kw−1−tj[j']] (rotated 180°)."""
    nt = len(ti) * len(tj)
    khw = S.kh * S.kw
    a, b = np.meshgrid(np.arange(len(ti)), np.arange(len(tj)), indexing="ij")
    taps = ((S.kh - 1 - ti[a]) * S.kw + (S.kw - 1 - tj[b])).ravel()  # stored taps, K order
    if S.low.k_order == "flat":  # (o, i', j'): each filter's taps in turn
        kcol = np.full(khw, -1, dtype=np.int64)
        kcol[taps] = np.arange(nt)
        return kx.taps_cols(wt.words, grp * S.cout, S.cout, S.cin, khw, kcol, nt,
                            S.kdim(S.cout, nt))
    # (i', j', o): per tap, the filters' bits of channel c are one row of Wᵀ
    wcols = kx.transpose_bits(_w_rows(S, wt, grp), S.cin * khw)  # rows (c, i, j), bits o
    rows = np.arange(S.cin, dtype=np.int64)[:, None] * khw + taps[None, :].astype(np.int64)
    return kx.gather_runs(wcols, rows, S.cout, _slots(S, S.cout), S.kdim(S.cout, nt))


_FULL = np.uint64(0xFFFFFFFFFFFFFFFF)


def _all_ones(t: Bits) -> bool:
    """Whether every bit of ``t`` is set (a dense operand held as ones): its windows are then
    the same in every image."""
    n, w = t.numel, t.words
    whole = n >> 6
    if whole and w[0] != _FULL:  # a mask that is not all ones fails here
        return False
    return bool((w[:whole] == _FULL).all()) and (n % 64 == 0
                                                 or int(w[whole]) == (1 << (n % 64)) - 1)


def _alike(S: _Shape, t: Bits) -> bool:
    """Whether the GEMM's images of ``t`` are all alike (all ones), so one image's operand
    stands for every one."""
    return S.n_img > 1 and t.numel > 0 and _all_ones(t)


def _repeat_bits(pack: np.ndarray, per: int, n: int) -> np.ndarray:
    """(rows, ``per`` bits) → the same ``per`` bits ``n`` times over, one after another."""
    if per % 64 == 0 and per > 0 and pack.shape[1] == per // 64:  # whole words: copies
        return np.tile(pack, (1, n))
    base = np.arange(pack.shape[0], dtype=np.int64) * pack.shape[1] * 64
    return kx.runs_rows(pack.reshape(-1), base, 0, n, per, per, n * per)


def _x_cols(S: _Shape, x: Bits, n0: int, grp: int) -> np.ndarray:
    """The forward windows over the GEMM's images of the input, transposed: rows (c, i, j) in
    the K order, bits (n, oh, ow)."""
    if S.conv:
        if _alike(S, x):
            return _repeat_bits(_x_cols(replace(S, n_img=1), x, n0, grp), S.ho * S.wo,
                                S.n_img)
        return kx.im2col_cols_map(x.words, *x.shape[1:], n0, S.n_img, grp * S.cin, S.cin, 0, 0,
                                  *S.geo, *_k_rows(S.cin, S.kh, S.kw, S.low.k_order, S.lanes))
    cols = _chan_rows(S, x, n0, 0, S.cin, S.h)
    return _ci_rows(cols, S.cin, S.kh, S.kw, S.low.k_order, S.lanes)


def _respace(pack: np.ndarray, per: int, n: int, lanes: int) -> np.ndarray:
    """(rows, n·per bits) → the ``per`` bits of each image padded to the lanes."""
    pp = -(-per // lanes) * lanes
    base = np.arange(pack.shape[0], dtype=np.int64) * pack.shape[1] * 64
    return kx.runs_rows(pack.reshape(-1), base, per, n, per, pp, n * pp)


def _fmap_frac(S: _Shape, t: Bits | None, n0: int, c0: int, cc: int, hw: int,
               numel: int) -> float:
    """Zero fraction of a tensor of ``numel`` elements (padding included) holding the nonzeros
    of channels c0 .. c0+cc of the GEMM's images of ``t``; a dense operand (None) has none."""
    if t is None:
        return 0.0
    ct = _chans(S, t)
    if S.conv:
        nnz = kx.runs_popcount(t.words, (n0 * ct + c0) * hw, ct * hw, S.n_img, cc * hw)
    else:  # one group: the images' tokens, all channels
        nnz = kx.runs_popcount(t.words, n0 * hw * ct, 0, 1, S.n_img * hw * ct)
    return 1.0 - int(nnz) / max(numel, 1)


def _w_frac(S: _Shape, wt: Bits | None, grp: int) -> float:
    if wt is None:
        return 0.0
    k = S.cout * S.cin * S.kh * S.kw
    return 1.0 - int(kx.runs_popcount(wt.words, grp * k, 0, 1, k)) / max(k, 1)


def _fwd_ops(S: _Shape, x: Bits | None, wt: Bits | None, n0: int, grp: int):
    """fwd: A = the input's windows (rows (n, oh, ow)), Bᵀ = the filters."""
    fr = (_fmap_frac(S, x, n0, grp * S.cin, S.cin, S.h * S.w, S.n_img * S.cin * S.hp * S.wp),
          _w_frac(S, wt, grp))
    a = b = None
    if x is not None and S.conv and _alike(S, x):  # one image's rows, repeated
        a = np.tile(kx.transpose_bits(_x_cols(replace(S, n_img=1), x, n0, grp), S.ho * S.wo),
                    (S.n_img, 1))
    elif x is not None and S.conv:
        a = kx.transpose_bits(_x_cols(S, x, n0, grp), S.n_img * S.ho * S.wo)
    elif x is not None:
        a = _pix_rows(S, x, n0, 0, S.cin, S.h, S.kdim(S.cin, 1))
    if wt is not None:
        b = (_w_rows(S, wt, grp) if S.low.k_order == "flat"
             else kx.transpose_bits(_w_cols(S, wt, grp), S.cout))
    return a, b, fr


def _bwd_weight_ops(S: _Shape, dz: Bits | None, x: Bits | None, n0: int, grp: int):
    """bwd_weight: A = dZᵀ (rows: output channels), Bᵀ = the input's windows transposed (rows
    (i, j, c) or (c, i, j)); K = positions, padded to the lanes image by image if asked."""
    per = S.ho * S.wo
    fr = (_fmap_frac(S, dz, n0, grp * S.cout, S.cout, per, S.n_img * S.cout * per),
          _fmap_frac(S, x, n0, grp * S.cin, S.cin, S.h * S.w, S.n_img * S.cin * S.hp * S.wp))
    a = None if dz is None else _chan_rows(S, dz, n0, grp * S.cout, S.cout, per)
    b = None if x is None else _x_cols(S, x, n0, grp)
    if S.k_padded:
        a = None if a is None else _respace(a, per, S.n_img, S.lanes)
        b = None if b is None else _respace(b, per, S.n_img, S.lanes)
    return a, b, fr


def _col2im_ops(S: _Shape, dz: Bits | None, wt: Bits | None, n0: int, grp: int):
    """col2im bwd_input: A = dZ (rows (n, oh, ow), K = output channels), Bᵀ = Wᵀ."""
    per = S.ho * S.wo
    fr = (_fmap_frac(S, dz, n0, grp * S.cout, S.cout, per, S.n_img * S.cout * per),
          _w_frac(S, wt, grp))
    a = None if dz is None else _pix_rows(S, dz, n0, grp * S.cout, S.cout, per, S.cout)
    b = None if wt is None else _w_cols(S, wt, grp)
    return a, b, fr


def _transposed_a(S: _Shape, st, dz: Bits, n0: int, grp: int) -> np.ndarray:
    """A of a transposed bwd_input: the output gradient's windows over the rotated taps."""
    (ys, ti), (xs, tj) = st
    npos = S.n_img * len(ys) * len(xs)
    if not S.conv:  # one tap, every position: the gradient's rows as they are
        return _pix_rows(S, dz, n0, 0, S.cout, S.ho * S.wo, S.kdim(S.cout, 1))
    ct = _chans(S, dz)
    if _alike(S, dz):  # one image's rows, repeated
        return np.tile(_transposed_a(replace(S, n_img=1), st, dz, n0, grp), (S.n_img, 1))
    if S.dh == S.dw == 1 and (S.low.bwd_input == "phases" or S.sh == S.sw == 1):
        # a stride-1 correlation of the stored gradient (from row oy, column ox) with the
        # phase's taps
        oy = _phase_shift(int(ys[0]), int(ti[0]), S.kh, S.sh, S.ph)
        ox = _phase_shift(int(xs[0]), int(tj[0]), S.kw, S.sw, S.pw)
        geo = (len(ti), len(tj), 1, 1, max(-oy, 0), max(-ox, 0), 1, 1, len(ys), len(xs))
        rows = kx.im2col_cols_map(dz.words, ct, S.ho, S.wo, n0, S.n_img, grp * S.cout,
                                  S.cout, max(oy, 0), max(ox, 0), *geo,
                                  *_k_rows(S.cout, len(ti), len(tj), S.low.k_order, S.lanes))
        return kx.transpose_bits(rows, npos)
    # dilated, or the zeros a stride inserts read as zeros
    iy = _phase_index(ys, ti, S.ho, S.kh, S.sh, S.ph, S.dh)
    ix = _phase_index(xs, tj, S.wo, S.kw, S.sw, S.pw, S.dw)
    cols = kx.gather_cols(dz.words, ct, S.ho, S.wo, n0, S.n_img, grp * S.cout, S.cout,
                          np.ascontiguousarray(iy), np.ascontiguousarray(ix))
    rows = _ci_rows(cols, S.cout, len(ti), len(tj), S.low.k_order, S.lanes)
    return kx.transpose_bits(rows, npos)


def _transposed_ops(S: _Shape, st, dz: Bits | None, wt: Bits | None, n0: int, grp: int):
    """Transposed bwd_input (one output phase, or all positions): A = the output gradient's
    windows over the rotated taps, Bᵀ = the rotated filters (rows: input channels)."""
    (_, ti), (_, tj) = st
    eh, ew = S.eh_ew
    fr = (_fmap_frac(S, dz, n0, grp * S.cout, S.cout, S.ho * S.wo, S.n_img * S.cout * eh * ew),
          _w_frac(S, wt, grp))
    a = None if dz is None else _transposed_a(S, st, dz, n0, grp)
    b = None if wt is None else _rot_cols(S, wt, grp, ti, tj)
    return a, b, fr


def lowered_parts(layer: Layer, batch: int, phase: str, low: Lowering, lanes: int,
                  a_mask, b_mask) -> list[tuple[Gemm, list, list[tuple[float, float]]]]:
    """``lowered`` for every GEMM the phase runs, in order: one, or one per output phase.
    ``a_mask``, ``b_mask``: the operands' masks, packed (``kernels.Bits``, a trace's
    ``PackedMask``) or bool arrays of the roles' shapes; None = dense."""
    S = _shape(layer, batch, low, lanes)
    reps = batch if low.batch == "per_image" else 1
    g = layer.groups
    a_bits, b_bits = Bits.of(a_mask), Bits.of(b_mask)
    parts = []
    for st in _phase_sets(S, phase):
        gemm = lower(layer, batch, phase) if low.default else _part_gemm(layer, S, phase, st,
                                                                          g * reps)
        packs, fracs = [], []
        for img in range(reps):  # the images one by one (per_image), else the whole batch
            for grp in range(g):
                if phase == "fwd":
                    a, b, fr = _fwd_ops(S, a_bits, b_bits, img, grp)
                elif phase == "bwd_weight":
                    a, b, fr = _bwd_weight_ops(S, a_bits, b_bits, img, grp)
                elif st is None:
                    a, b, fr = _col2im_ops(S, a_bits, b_bits, img, grp)
                else:
                    a, b, fr = _transposed_ops(S, st, a_bits, b_bits, img, grp)
                packs.append((a, b))
                fracs.append(fr)
        parts.append((gemm, packs, fracs))
    return parts
