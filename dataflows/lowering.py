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


def _transposed_index(size: int, out: int, k: int, s: int, p: int, d: int) -> np.ndarray:
    """Input position y, rotated tap i' reads output-gradient row (y + p − (k−1−i')·d) / s."""
    r = np.arange(size)[:, None] + p - (k - 1 - np.arange(k)[None, :]) * d
    ok = (r % s == 0) & (r >= 0) & (r // s < out)
    return np.where(ok, r // s, -1)


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


def lowered_parts(layer: Layer, batch: int, phase: str, low: Lowering, lanes: int,
                  a_mask: np.ndarray | None, b_mask: np.ndarray | None
                  ) -> list[tuple[Gemm, list, list[tuple[float, float]]]]:
    """``lowered`` for every GEMM the phase runs, in order: one, or one per output phase."""
    per_image = low.batch == "per_image"
    conv = layer.kind == "conv2d"
    (h, w), (ho, wo), (kh, kw), (sh, sw), (ph, pw), (dh, dw) = _geometry(layer)
    g = layer.groups
    cin, cout = layer.in_channels // g, layer.out_channels // g
    n_img = 1 if per_image else batch
    reps = batch if per_image else 1

    def kdim(ch: int, taps: int) -> int:
        return ch * taps if low.k_order == "flat" else taps * -(-ch // lanes) * lanes

    # the padded extent the forward windows read (top/left pad + what the windows reach)
    hp = ph + max(h, (ho - 1) * sh + dh * (kh - 1) + 1 - ph)
    wp = pw + max(w, (wo - 1) * sw + dw * (kw - 1) + 1 - pw)
    ra, rb = {"fwd": ("ifmap", "filter"), "bwd_input": ("grad_out", "filter"),
              "bwd_weight": ("grad_out", "ifmap")}[phase]
    a_full = None if a_mask is None else _as_conv(layer, batch, ra, np.asarray(a_mask, bool))
    b_full = None if b_mask is None else _as_conv(layer, batch, rb, np.asarray(b_mask, bool))
    transposed = phase == "bwd_input" and low.bwd_input != "col2im"
    whole = [((np.arange(h), np.arange(kh)), (np.arange(w), np.arange(kw)))]
    if not transposed:
        sets = [None]
    elif low.bwd_input == "phases":
        sets = [(yp, xp) for yp in _axis_phases(h, ho, kh, sh, ph, dh)
                for xp in _axis_phases(w, wo, kw, sw, pw, dw)]
        sets.sort(key=lambda t: (t[0][1][0], t[1][1][0]))  # by the first rotated tap
        sets = sets or whole  # no input position meets a stored element: one empty GEMM
    else:
        sets = whole
    # the output gradient as a transposed bwd_input's windows read it, padded as DNNsim pads it
    # (which ``side: tensor`` measures): by the forward padding (p − 1 on one side where the
    # forward windows leave the last padded row unread), or by ⌊(k−1)/s⌋ when p = 0
    eh = ho + (hp - h if ph else 2 * ((kh - 1) // sh))
    ew = wo + (wp - w if pw else 2 * ((kw - 1) // sw))
    parts = []
    for st in sets:
        if phase == "fwd":
            gemm = Gemm(layer.name, phase, n_img * ho * wo, kdim(cin, kh * kw), cout, g * reps,
                        a_stored=n_img * cin * h * w, k_data=cin * kh * kw)
        elif phase == "bwd_weight":
            per = ho * wo
            kk = per if low.bwd_weight == "batch" and not per_image else -(-per // lanes) * lanes
            gemm = Gemm(layer.name, phase, cout, n_img * kk, kdim(cin, kh * kw), g * reps,
                        b_stored=n_img * cin * h * w, k_data=n_img * per,
                        n_data=cin * kh * kw)
        elif not transposed:
            gemm = Gemm(layer.name, phase, n_img * ho * wo, cout, kdim(cin, kh * kw), g * reps,
                        c_stored=n_img * cin * h * w, n_data=cin * kh * kw)
        else:
            (ys, ti), (xs, tj) = st
            gemm = Gemm(layer.name, phase, n_img * len(ys) * len(xs),
                        kdim(cout, len(ti) * len(tj)), cin, g * reps,
                        a_stored=n_img * cout * ho * wo, b_stored=cout * cin * len(ti) * len(tj),
                        k_data=cout * len(ti) * len(tj))
        if low.default:
            gemm = lower(layer, batch, phase)
        packs, fracs = [], []
        for img in range(reps):
            sl = slice(img, img + 1) if per_image else slice(0, batch)
            for grp in range(g):
                ci = slice(grp * cin, (grp + 1) * cin)
                co = slice(grp * cout, (grp + 1) * cout)

                def fmap(m, c=ci, s=sl):
                    return None if m is None else m[s, c]

                def wts(m, o=co):
                    return None if m is None else m[o]

                a = b = None
                pa = pb = None  # packed directly by the numba kernels
                if phase == "fwd":
                    x, wt = fmap(a_full), wts(b_full)
                    fr = (_zero_frac(x, n_img * cin * hp * wp),
                          _zero_frac(wt, cout * cin * kh * kw))
                    if x is not None and conv:
                        cols = _fast_cols(x, (kh, kw, sh, sw, ph, pw, dh, dw, ho, wo))
                        rows = _ci_rows(cols, cin, kh, kw, low.k_order, lanes)
                        pa = kx.transpose_bits(rows, n_img * ho * wo)
                    elif x is not None:
                        t = _gather(x, _fwd_index(h, ho, kh, sh, ph, dh),
                                    _fwd_index(w, wo, kw, sw, pw, dw))
                        t = t.transpose(0, 2, 3, 1, 4, 5).reshape(-1, cin, kh, kw)
                        a = _k_layout(t, low.k_order, lanes)
                    if wt is not None:
                        b = _k_layout(wt, low.k_order, lanes)
                elif phase == "bwd_weight":
                    dz, x = fmap(a_full, co), fmap(b_full)
                    fr = (_zero_frac(dz, n_img * cout * ho * wo),
                          _zero_frac(x, n_img * cin * hp * wp))
                    pad = not (low.bwd_weight == "batch" and not per_image)
                    if dz is not None:
                        a = dz.transpose(1, 0, 2, 3).reshape(cout, -1)
                        a = _pad_k(a, ho * wo, lanes) if pad else a
                    if x is not None and conv and not pad:
                        cols = _fast_cols(x, (kh, kw, sh, sw, ph, pw, dh, dw, ho, wo))
                        pb = _ci_rows(cols, cin, kh, kw, low.k_order, lanes)
                    elif x is not None:
                        t = _gather(x, _fwd_index(h, ho, kh, sh, ph, dh),
                                    _fwd_index(w, wo, kw, sw, pw, dw))
                        t = t.transpose(0, 2, 3, 1, 4, 5).reshape(-1, cin, kh, kw)
                        b = _k_layout(t, low.k_order, lanes).T
                        b = _pad_k(b, ho * wo, lanes) if pad else b
                elif not transposed:
                    dz, wt = fmap(a_full, co), wts(b_full)
                    fr = (_zero_frac(dz, n_img * cout * ho * wo),
                          _zero_frac(wt, cout * cin * kh * kw))
                    a = None if dz is None else dz.transpose(0, 2, 3, 1).reshape(-1, cout)
                    b = None if wt is None else _k_layout(wt, low.k_order, lanes).T.copy()
                else:
                    (ys, ti), (xs, tj) = st
                    dz, wt = fmap(a_full, co), wts(b_full)
                    fr = (_zero_frac(dz, n_img * cout * eh * ew),
                          _zero_frac(wt, cout * cin * kh * kw))
                    if (dz is not None and conv and dh == dw == 1
                            and (low.bwd_input == "phases" or sh == sw == 1)):
                        # a stride-1 correlation of the stored gradient with the phase's taps
                        oy = _phase_shift(int(ys[0]), int(ti[0]), kh, sh, ph)
                        ox = _phase_shift(int(xs[0]), int(tj[0]), kw, sw, pw)
                        src = dz[:, :, max(oy, 0):, max(ox, 0):]
                        geo = (len(ti), len(tj), 1, 1, max(-oy, 0), max(-ox, 0), 1, 1, len(ys),
                               len(xs))
                        rows = _ci_rows(_fast_cols(src, geo), cout, len(ti), len(tj),
                                        low.k_order, lanes)
                        pa = kx.transpose_bits(rows, n_img * len(ys) * len(xs))
                    elif dz is not None:
                        t = _gather(dz, _phase_index(ys, ti, ho, kh, sh, ph, dh),
                                    _phase_index(xs, tj, wo, kw, sw, pw, dw))
                        t = t.transpose(0, 2, 3, 1, 4, 5).reshape(-1, cout, len(ti), len(tj))
                        a = _k_layout(t, low.k_order, lanes)
                    if wt is not None:  # rotated: tap i' holds W[..., k−1−i', k−1−j']
                        rot = wt[:, :, ::-1, ::-1][:, :, ti][:, :, :, tj]
                        b = _k_layout(np.ascontiguousarray(rot.transpose(1, 0, 2, 3)),
                                      low.k_order, lanes)
                packs.append((pa if pa is not None else None if a is None else pack_rows(a),
                              pb if pb is not None else None if b is None else pack_rows(b)))
                fracs.append(fr)
        parts.append((gemm, packs, fracs))
    return parts
