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

The default lowering is ``dataflows.gemm.lower`` with the packed operands of
``dataflows.sparse.pack_operands``; any other builds the operands here with numpy from the
layer-shaped masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import InputError
from dataflows import kernels as kx
from dataflows.gemm import Gemm, lower
from dataflows.kernels import pack_rows
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


def _as_conv(layer: Layer, batch: int, role: str, m: np.ndarray) -> np.ndarray:
    """A linear layer's operand in conv shape: ifmap/grad_out (N, C, tokens, 1), filter
    (out, in, 1, 1)."""
    if layer.kind != "linear":
        return m
    if role == "filter":
        return m.reshape(m.shape[0], m.shape[1], 1, 1)
    return m.reshape(batch, -1, m.shape[-1]).transpose(0, 2, 1)[..., None]


def _geometry(layer: Layer):
    if layer.kind == "linear":
        return (layer.tokens, 1), (layer.tokens, 1), (1, 1), (1, 1), (0, 0), (1, 1)
    return (layer.input_hw, layer.out_hw, layer.kernel, layer.stride, layer.padding,
            layer.dilation)


def _gather(x: np.ndarray, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """``x`` (N, C, Hs, Ws) bool read at rows ``iy`` (P, kh) and columns ``ix`` (Q, kw), −1 for
    a zero (padding or an inserted zero): (N, C, P, Q, kh, kw)."""
    n, c, hs, ws = x.shape
    xp = np.zeros((n, c, hs + 1, ws + 1), dtype=bool)
    xp[:, :, :hs, :ws] = x
    iy = np.where(iy < 0, hs, iy)
    ix = np.where(ix < 0, ws, ix)
    return xp[:, :, iy[:, None, :, None], ix[None, :, None, :]]


def _fwd_index(size: int, out: int, k: int, s: int, p: int, d: int) -> np.ndarray:
    r = np.arange(out)[:, None] * s - p + np.arange(k)[None, :] * d
    return np.where((r >= 0) & (r < size), r, -1)


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


def _k_layout(t: np.ndarray, order: str, lanes: int) -> np.ndarray:
    """(rows, C, kh, kw) → (rows, K): flat (c, i, j) or (i, j, c) with c padded to the lanes."""
    rows, c, kh, kw = t.shape
    if order == "flat":
        return t.reshape(rows, c * kh * kw)
    cp = -(-c // lanes) * lanes
    out = np.zeros((rows, kh, kw, cp), dtype=bool)
    out[..., :c] = t.transpose(0, 2, 3, 1)
    return out.reshape(rows, kh * kw * cp)


def _pad_k(bits: np.ndarray, per: int, lanes: int) -> np.ndarray:
    """(rows, images·per) → (rows, images·per') with each image's ``per`` padded to the lanes."""
    rows = bits.shape[0]
    img = bits.shape[1] // per
    pp = -(-per // lanes) * lanes
    out = np.zeros((rows, img, pp), dtype=bool)
    out[:, :, :per] = bits.reshape(rows, img, per)
    return out.reshape(rows, img * pp)


def _ci_rows(cols: np.ndarray, ch: int, kh: int, kw: int, order: str, lanes: int
             ) -> np.ndarray:
    """Packed rows (c, i, j) of an im2col-columns matrix reordered as ``order`` lays out K:
    flat as they are, channel_inner as (i, j, c) with zero rows for the padding channels."""
    if order == "flat":
        return cols
    cp = -(-ch // lanes) * lanes
    out = np.zeros((kh * kw * cp, cols.shape[1]), dtype=np.uint64)
    c, i, j = np.meshgrid(np.arange(ch), np.arange(kh), np.arange(kw), indexing="ij")
    out[((i * kw + j) * cp + c).ravel()] = cols[((c * kh + i) * kw + j).ravel()]
    return out


def _fast_cols(x: np.ndarray, geo: tuple) -> np.ndarray:
    """``kernels.im2col_cols`` of all channels of ``x`` (N, C, H, W) with ``geo`` = (kh, kw,
    sh, sw, ph, pw, dh, dw, ho, wo): rows (c, i, j), bits (n, oh, ow). The map is padded with
    zeros below and right so that every window stays inside what the kernel packs."""
    kh, kw, sh, sw, ph, pw, dh, dw, ho, wo = geo
    n, c, h, w = x.shape
    need_h = (ho - 1) * sh + dh * (kh - 1) + 1 - ph
    need_w = (wo - 1) * sw + dw * (kw - 1) + 1 - pw
    if need_h > h or need_w > w:
        x = np.pad(x, ((0, 0), (0, 0), (0, max(0, need_h - h)), (0, max(0, need_w - w))))
    return kx.im2col_cols(np.ascontiguousarray(x), 0, c, *geo)


def _phase_shift(r: int, first: int, k: int, s: int, p: int) -> int:
    """Output-gradient row of phase r's first position and first rotated tap (stride s,
    dilation 1): the taps then read rows m + shift + u."""
    return (r + p - (k - 1 - first)) // s


def _zero_frac(x: np.ndarray | None, numel: int) -> float:
    """Zero fraction of a tensor of ``numel`` elements (padding included) holding ``x``'s
    nonzeros; a dense operand (no mask) has none."""
    if x is None:
        return 0.0
    return 1.0 - int(np.count_nonzero(x)) / max(numel, 1)


def lowered(layer: Layer, batch: int, phase: str, low: Lowering, lanes: int,
            a_mask: np.ndarray | None, b_mask: np.ndarray | None
            ) -> tuple[Gemm, list, list[tuple[float, float]]]:
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


def _part_gemm(layer: Layer, S: _Shape, phase: str, st, groups: int) -> Gemm:
    n, cin, cout, taps = S.n_img, S.cin, S.cout, S.kh * S.kw
    if phase == "fwd":
        return Gemm(layer.name, phase, n * S.ho * S.wo, S.kdim(cin, taps), cout, groups,
                    a_stored=n * cin * S.h * S.w, k_data=cin * taps)
    if phase == "bwd_weight":
        per = S.ho * S.wo
        kk = -(-per // S.lanes) * S.lanes if S.k_padded else per
        return Gemm(layer.name, phase, cout, n * kk, S.kdim(cin, taps), groups,
                    b_stored=n * cin * S.h * S.w, k_data=n * per, n_data=cin * taps)
    if st is None:
        return Gemm(layer.name, phase, n * S.ho * S.wo, cout, S.kdim(cin, taps), groups,
                    c_stored=n * cin * S.h * S.w, n_data=cin * taps)
    (ys, ti), (xs, tj) = st
    t = len(ti) * len(tj)
    return Gemm(layer.name, phase, n * len(ys) * len(xs), S.kdim(cout, t), cin, groups,
                a_stored=n * cout * S.ho * S.wo, b_stored=cout * cin * t, k_data=cout * t)


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


def _pack(m: np.ndarray | None) -> np.ndarray | None:
    return None if m is None else pack_rows(m)


def _im2col(S: _Shape, x: np.ndarray) -> np.ndarray:
    """Bool (positions, channels, kh, kw) of the forward windows over ``x`` (N, C, H, W)."""
    t = _gather(x, _fwd_index(S.h, S.ho, S.kh, S.sh, S.ph, S.dh),
                _fwd_index(S.w, S.wo, S.kw, S.sw, S.pw, S.dw))
    return t.transpose(0, 2, 3, 1, 4, 5).reshape(-1, x.shape[1], S.kh, S.kw)


def _fwd_ops(S: _Shape, x, wt):
    """fwd: A = the input's windows (rows (n, oh, ow)), Bᵀ = the filters."""
    fr = (_zero_frac(x, S.n_img * S.cin * S.hp * S.wp), _zero_frac(wt, S.cout * S.cin * S.kh
                                                                   * S.kw))
    a = None
    if x is not None and S.conv:
        rows = _ci_rows(_fast_cols(x, S.geo), S.cin, S.kh, S.kw, S.low.k_order, S.lanes)
        a = kx.transpose_bits(rows, S.n_img * S.ho * S.wo)
    elif x is not None:
        a = _pack(_k_layout(_im2col(S, x), S.low.k_order, S.lanes))
    b = None if wt is None else _pack(_k_layout(wt, S.low.k_order, S.lanes))
    return a, b, fr


def _bwd_weight_ops(S: _Shape, dz, x):
    """bwd_weight: A = dZᵀ (rows: output channels), Bᵀ = the input's windows transposed (rows
    (i, j, c) or (c, i, j)); K = positions, padded to the lanes image by image if asked."""
    fr = (_zero_frac(dz, S.n_img * S.cout * S.ho * S.wo),
          _zero_frac(x, S.n_img * S.cin * S.hp * S.wp))
    per, pad = S.ho * S.wo, S.k_padded
    a = b = None
    if dz is not None:
        a = dz.transpose(1, 0, 2, 3).reshape(S.cout, -1)
        a = _pack(_pad_k(a, per, S.lanes) if pad else a)
    if x is not None and S.conv and not pad:
        b = _ci_rows(_fast_cols(x, S.geo), S.cin, S.kh, S.kw, S.low.k_order, S.lanes)
    elif x is not None:
        t = _k_layout(_im2col(S, x), S.low.k_order, S.lanes).T
        b = _pack(_pad_k(t, per, S.lanes) if pad else t)
    return a, b, fr


def _col2im_ops(S: _Shape, dz, wt):
    """col2im bwd_input: A = dZ (rows (n, oh, ow), K = output channels), Bᵀ = Wᵀ."""
    fr = (_zero_frac(dz, S.n_img * S.cout * S.ho * S.wo),
          _zero_frac(wt, S.cout * S.cin * S.kh * S.kw))
    a = None if dz is None else _pack(dz.transpose(0, 2, 3, 1).reshape(-1, S.cout))
    b = None if wt is None else _pack(_k_layout(wt, S.low.k_order, S.lanes).T.copy())
    return a, b, fr


def _transposed_ops(S: _Shape, st, dz, wt):
    """Transposed bwd_input (one output phase, or all positions): A = the output gradient's
    windows over the rotated taps, Bᵀ = the rotated filters (rows: input channels)."""
    (ys, ti), (xs, tj) = st
    eh, ew = S.eh_ew
    fr = (_zero_frac(dz, S.n_img * S.cout * eh * ew),
          _zero_frac(wt, S.cout * S.cin * S.kh * S.kw))
    a = b = None
    if (dz is not None and S.conv and S.dh == S.dw == 1
            and (S.low.bwd_input == "phases" or S.sh == S.sw == 1)):
        # a stride-1 correlation of the stored gradient with the phase's taps
        oy = _phase_shift(int(ys[0]), int(ti[0]), S.kh, S.sh, S.ph)
        ox = _phase_shift(int(xs[0]), int(tj[0]), S.kw, S.sw, S.pw)
        src = dz[:, :, max(oy, 0):, max(ox, 0):]
        geo = (len(ti), len(tj), 1, 1, max(-oy, 0), max(-ox, 0), 1, 1, len(ys), len(xs))
        rows = _ci_rows(_fast_cols(src, geo), S.cout, len(ti), len(tj), S.low.k_order, S.lanes)
        a = kx.transpose_bits(rows, S.n_img * len(ys) * len(xs))
    elif dz is not None:
        t = _gather(dz, _phase_index(ys, ti, S.ho, S.kh, S.sh, S.ph, S.dh),
                    _phase_index(xs, tj, S.wo, S.kw, S.sw, S.pw, S.dw))
        t = t.transpose(0, 2, 3, 1, 4, 5).reshape(-1, S.cout, len(ti), len(tj))
        a = _pack(_k_layout(t, S.low.k_order, S.lanes))
    if wt is not None:  # rotated: tap i' holds W[..., k−1−i', k−1−j']
        rot = wt[:, :, ::-1, ::-1][:, :, ti][:, :, :, tj]
        b = _pack(_k_layout(np.ascontiguousarray(rot.transpose(1, 0, 2, 3)), S.low.k_order,
                            S.lanes))
    return a, b, fr


def lowered_parts(layer: Layer, batch: int, phase: str, low: Lowering, lanes: int,
                  a_mask: np.ndarray | None, b_mask: np.ndarray | None
                  ) -> list[tuple[Gemm, list, list[tuple[float, float]]]]:
    """``lowered`` for every GEMM the phase runs, in order: one, or one per output phase."""
    S = _shape(layer, batch, low, lanes)
    reps = batch if low.batch == "per_image" else 1
    g = layer.groups
    ra, rb = {"fwd": ("ifmap", "filter"), "bwd_input": ("grad_out", "filter"),
              "bwd_weight": ("grad_out", "ifmap")}[phase]
    a_full = None if a_mask is None else _as_conv(layer, batch, ra, np.asarray(a_mask, bool))
    b_full = None if b_mask is None else _as_conv(layer, batch, rb, np.asarray(b_mask, bool))
    parts = []
    for st in _phase_sets(S, phase):
        gemm = lower(layer, batch, phase) if low.default else _part_gemm(layer, S, phase, st,
                                                                          g * reps)
        packs, fracs = [], []
        for img in range(reps):  # the images one by one (per_image), else the whole batch
            sl = slice(img, img + 1) if reps > 1 else slice(0, batch)
            for grp in range(g):
                ci = slice(grp * S.cin, (grp + 1) * S.cin)
                co = slice(grp * S.cout, (grp + 1) * S.cout)
                if phase == "fwd":
                    ops = (None if a_full is None else a_full[sl, ci],
                           None if b_full is None else b_full[co])
                    a, b, fr = _fwd_ops(S, *ops)
                elif phase == "bwd_weight":
                    ops = (None if a_full is None else a_full[sl, co],
                           None if b_full is None else b_full[sl, ci])
                    a, b, fr = _bwd_weight_ops(S, *ops)
                else:
                    ops = (None if a_full is None else a_full[sl, co],
                           None if b_full is None else b_full[co])
                    a, b, fr = (_col2im_ops(S, *ops) if st is None
                                else _transposed_ops(S, st, *ops))
                packs.append((a, b))
                fracs.append(fr)
        parts.append((gemm, packs, fracs))
    return parts
