"""Lowering choices (``dataflows.lowering``) against torch autograd.

0/1 masks are exact in float64: for each choice, the lowered operands of every group multiply
(A · Bᵀ) to the layer's output, input gradient or weight gradient that torch computes from the
same 0/1 tensors, and the GEMM's reported dimensions are those of the operands.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import InputError
from dataflows.kernels import Bits
from dataflows.lowering import CHOICES, Lowering, lowered, lowered_parts, parse_lowering
from traces.format import PackedMask
from traces.layers import Layer

SETTINGS = dict(max_examples=80, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def _unpack(pack: np.ndarray, k: int) -> np.ndarray:
    return np.unpackbits(pack.view(np.uint8), axis=1, bitorder="little")[:, :k].astype(float)


def _torch(layer: Layer, x, w, dz):
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    if layer.kind == "linear":
        out = xt @ wt.T
    else:
        out = F.conv2d(xt, wt, stride=layer.stride, padding=layer.padding,
                       dilation=layer.dilation, groups=layer.groups)
    (out * torch.tensor(dz, dtype=torch.float64)).sum().backward()
    return out.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()


def _k_back(c: np.ndarray, low: Lowering, ch: int, kh: int, kw: int, lanes: int) -> np.ndarray:
    """Columns in the K order of ``low`` back to (c, i, j)."""
    if low.k_order == "flat":
        return c.reshape(c.shape[0], ch, kh, kw)
    cp = -(-ch // lanes) * lanes
    t = c.reshape(c.shape[0], kh, kw, cp)
    assert not t[..., ch:].any()  # the padding lanes hold nothing
    return t[..., :ch].transpose(0, 3, 1, 2)


@st.composite
def cases(draw):
    linear = draw(st.booleans()) and draw(st.booleans())
    n = draw(st.integers(1, 3))
    if linear:
        tokens = draw(st.integers(1, 4))
        layer = Layer.linear("l", draw(st.integers(1, 20)), draw(st.integers(1, 20)), tokens)
    else:
        g = draw(st.sampled_from([1, 1, 2]))
        k = draw(st.integers(1, 3))
        s = draw(st.integers(1, 3))
        d = draw(st.sampled_from([1, 1, 2]))
        p = draw(st.integers(0, d * (k - 1)))
        hw = (draw(st.integers(d * (k - 1) + 1, 9)), draw(st.integers(d * (k - 1) + 1, 9)))
        layer = Layer.conv("c", g * draw(st.integers(1, 9)), g * draw(st.integers(1, 5)), k, hw,
                           stride=s, padding=p, groups=g, dilation=d)
    low = Lowering(**{k: draw(st.sampled_from(v)) for k, v in CHOICES.items()})
    lanes = draw(st.sampled_from([1, 4, 16]))
    seed = draw(st.integers(0, 2**31))
    return layer, n, low, lanes, seed


def _masks(layer: Layer, n: int, seed: int):
    rng = np.random.default_rng(seed)
    if layer.kind == "linear":
        t = layer.tokens
        x = rng.random((n, t, layer.in_channels)) < 0.5 if t > 1 else \
            rng.random((n, layer.in_channels)) < 0.5
        dz = rng.random(x.shape[:-1] + (layer.out_channels,)) < 0.5
        w = rng.random((layer.out_channels, layer.in_channels)) < 0.5
    else:
        x = rng.random((n, layer.in_channels, *layer.input_hw)) < 0.5
        w = rng.random((layer.out_channels, layer.in_channels // layer.groups,
                        *layer.kernel)) < 0.5
        dz = rng.random((n, layer.out_channels, *layer.out_hw)) < 0.5
    return x, w, dz


@settings(**SETTINGS)
@given(case=cases())
def test_lowered_gemms_multiply_to_torch(case):
    layer, n, low, lanes, seed = case
    x, w, dz = _masks(layer, n, seed)
    out, dx, dw = _torch(layer, x.astype(float), w.astype(float), dz.astype(float))
    conv = layer.kind == "conv2d"
    if not conv:  # as (N, C, tokens, 1) and (out, in, 1, 1)
        t = layer.tokens
        out = out.reshape(n, t, -1).transpose(0, 2, 1)[..., None]
        dx = dx.reshape(n, t, -1).transpose(0, 2, 1)[..., None]
        dw = dw[..., None, None]
    g = layer.groups
    cin, cout = layer.in_channels // g, layer.out_channels // g
    kh, kw = layer.kernel
    h, wd = layer.input_hw if conv else (layer.tokens, 1)
    ho, wo = layer.out_hw if conv else (layer.tokens, 1)
    per_image = low.batch == "per_image"
    imgs = n if per_image else 1
    for phase, (am, bm) in {"fwd": (x, w), "bwd_input": (dz, w),
                            "bwd_weight": (dz, x)}.items():
        parts = lowered_parts(layer, n, phase, low, lanes, am, bm)
        if phase == "bwd_input" and low.bwd_input == "phases":
            _check_phases(layer, n, low, lanes, parts, dx)
            continue
        assert len(parts) == 1
        gemm, packs, fracs = parts[0]
        assert gemm.groups == g * imgs == len(packs) == len(fracs)
        assert all(0.0 <= f <= 1.0 for fr in fracs for f in fr)
        acc_dw = np.zeros_like(dw)
        for idx, (a, b) in enumerate(packs):
            img, grp = divmod(idx, g)
            assert a.shape[0] == gemm.M and b.shape[0] == gemm.N
            c = _unpack(a, gemm.K) @ _unpack(b, gemm.K).T
            sl = slice(img, img + 1) if per_image else slice(0, n)
            nn = 1 if per_image else n
            ci, co = slice(grp * cin, (grp + 1) * cin), slice(grp * cout, (grp + 1) * cout)
            if phase == "fwd":
                want = out[sl, co].transpose(0, 2, 3, 1).reshape(nn * ho * wo, cout)
                np.testing.assert_array_equal(c, want)
            elif phase == "bwd_weight":
                acc_dw[co] += _k_back(c, low, cin, kh, kw, lanes)
            elif low.bwd_input == "transposed":
                want = dx[sl, ci].transpose(0, 2, 3, 1).reshape(nn * h * wd, cin)
                np.testing.assert_array_equal(c, want)
            else:  # col2im: C's rows (n, oh, ow), columns the patch; scatter-add them
                cols = _k_back(c, low, cin, kh, kw, lanes).reshape(nn, ho, wo, cin, kh, kw)
                got = np.zeros((nn, cin, h, wd))
                (sh, sw), (ph, pw), (dh, ddw) = ((layer.stride, layer.padding, layer.dilation)
                                                 if conv else ((1, 1), (0, 0), (1, 1)))
                for oy in range(ho):
                    for ox in range(wo):
                        for i in range(kh):
                            for j in range(kw):
                                y, xx = oy * sh + i * dh - ph, ox * sw + j * ddw - pw
                                if 0 <= y < h and 0 <= xx < wd:
                                    got[:, :, y, xx] += cols[:, oy, ox, :, i, j]
                np.testing.assert_array_equal(got, dx[sl, ci])
        if phase == "bwd_weight":
            np.testing.assert_array_equal(acc_dw, dw)


def _phases_of(size, k, s, p, d):
    """Per output phase r: its positions and rotated taps (both non-empty), worked directly."""
    out = []
    for r in range(s):
        ys = list(range(r, size, s))
        taps = [t for t in range(k) if (r + p - (k - 1 - t) * d) % s == 0]
        if ys and taps:
            out.append((ys, taps))
    return out


def _check_phases(layer, n, low, lanes, parts, dx):
    """Every phase GEMM gives dX at its own positions; positions no phase holds get none."""
    conv = layer.kind == "conv2d"
    g = layer.groups
    cin = layer.in_channels // g
    h, wd = layer.input_hw if conv else (layer.tokens, 1)
    (kh, kw), (sh, sw), (ph, pw), (dh, ddw) = ((layer.kernel, layer.stride, layer.padding,
                                                layer.dilation) if conv else
                                               ((1, 1), (1, 1), (0, 0), (1, 1)))
    sets = [(a, b) for a in _phases_of(h, kh, sh, ph, dh) for b in _phases_of(wd, kw, sw, pw, ddw)]
    sets.sort(key=lambda t: (t[0][1][0], t[1][1][0]))
    if not sets:  # no position meets a stored element: one GEMM of the whole, all zero
        assert len(parts) == 1 and not dx.any()
        return
    assert len(parts) == len(sets)
    per_image = low.batch == "per_image"
    got = np.zeros_like(dx)
    for (gemm, packs, _), ((ys, ti), (xs, tj)) in zip(parts, sets, strict=True):
        taps = len(ti) * len(tj)
        k = gemm.K
        assert k == (layer.out_channels // g * taps if low.k_order == "flat"
                     else taps * -(-(layer.out_channels // g) // lanes) * lanes)
        for idx, (a, b) in enumerate(packs):
            img, grp = divmod(idx, g)
            c = _unpack(a, k) @ _unpack(b, k).T
            sl = slice(img, img + 1) if per_image else slice(0, n)
            nn = 1 if per_image else n
            c = c.reshape(nn, len(ys), len(xs), cin).transpose(0, 3, 1, 2)
            got[sl, grp * cin:(grp + 1) * cin][:, :, np.array(ys)[:, None],
                                              np.array(xs)[None, :]] += c
    np.testing.assert_array_equal(got, dx)


def test_stride_two_transposed_streams_the_inserted_zeros():
    """A 3×3, stride-2 conv's transposed bwd_input reads every input position against all 9
    taps: the zeros inserted between output-gradient elements are in the stream (about three
    in four of the window's elements), so a skipping array can skip them; col2im has none."""
    layer = Layer.conv("c", 1, 1, 3, 8, stride=2, padding=1)
    dz = np.ones((1, 1, 4, 4), dtype=bool)
    w = np.ones((1, 1, 3, 3), dtype=bool)
    low = Lowering(bwd_input="transposed")
    gemm, packs, _ = lowered(layer, 1, "bwd_input", low, 16, dz, w)
    a = _unpack(packs[0][0], gemm.K)
    assert (gemm.M, gemm.K, gemm.N) == (64, 9, 1)
    # position (y, x) gets (number of odd-offset-aligned taps): 1, 2 or 4 of 9 taps per axis pair
    per = a.sum(axis=1).reshape(8, 8)
    assert per[1, 1] == 4 and per[1, 2] == 2 and per[2, 2] == 1
    assert a.sum() < gemm.M * gemm.K / 2


def test_channel_inner_pads_each_kernel_position():
    layer = Layer.conv("c", 3, 2, 3, 5, padding=1)
    gemm, packs, _ = lowered(layer, 2, "fwd", Lowering(k_order="channel_inner"), 16,
                             np.ones((2, 3, 5, 5), bool), np.ones((2, 3, 3, 3), bool))
    assert gemm.K == 9 * 16
    b = _unpack(packs[0][1], gemm.K).reshape(2, 9, 16)
    assert b[:, :, :3].all() and not b[:, :, 3:].any()


@pytest.mark.parametrize("bad,field", [({"bwd_input": "col"}, "sparse.lowering.bwd_input"),
                                       ({"order": 1}, "sparse.lowering.order"),
                                       ([1], "sparse.lowering")])
def test_parse_lowering_errors(bad, field):
    with pytest.raises(InputError) as e:
        parse_lowering(bad, "a.yaml")
    assert field in str(e.value)


def _as_conv(layer: Layer, n: int, x, w, dz):
    """The three tensors in conv shape: a linear layer's (N[, tokens], C) as (N, C, tokens, 1)."""
    if layer.kind == "conv2d":
        return x, w, dz

    def fm(t):
        return t.reshape(n, -1, t.shape[-1]).transpose(0, 2, 1)[..., None]

    return fm(x), w[..., None, None], fm(dz)


def _reference_parts(layer: Layer, n: int, phase: str, low: Lowering, lanes: int, x, w, dz):
    """Per GEMM of the phase, per group: (A, Bᵀ) as bool matrices and the zero fractions,
    element by element from the bool tensors (the geometry and the phase sets from the
    lowering)."""
    from dataflows.lowering import _phase_sets, _shape

    x4, w4, dz4 = _as_conv(layer, n, x, w, dz)
    S = _shape(layer, n, low, lanes)
    cin, cout, kh, kw = S.cin, S.cout, S.kh, S.kw

    def kidx(c, i, j, ch, th, tw):
        if low.k_order == "flat":
            return (c * th + i) * tw + j
        return (i * tw + j) * (-(-ch // lanes) * lanes) + c

    def frac(t, numel):
        return 1.0 - int(t.sum()) / max(numel, 1)

    imgs = [[i] for i in range(n)] if low.batch == "per_image" else [list(range(n))]
    per = S.ho * S.wo
    pp = -(-per // lanes) * lanes if S.k_padded else per
    out = []
    for sets in _phase_sets(S, phase):
        ops = []
        for im in imgs:
            for grp in range(layer.groups):
                ci, co = slice(grp * cin, (grp + 1) * cin), slice(grp * cout, (grp + 1) * cout)
                xg, wg, dg = x4[im][:, ci], w4[co], dz4[im][:, co]
                fx = frac(xg, len(im) * cin * S.hp * S.wp)
                fw, fd = frac(wg, cout * cin * kh * kw), frac(dg, len(im) * cout * per)
                kk = S.kdim(cin, kh * kw)
                if phase == "fwd" or phase == "bwd_weight":
                    win = np.zeros((len(im), S.ho, S.wo, kk), dtype=bool)
                    for li, oh, ow, c, i, j in np.ndindex(len(im), S.ho, S.wo, cin, kh, kw):
                        y, xx = oh * S.sh - S.ph + i * S.dh, ow * S.sw - S.pw + j * S.dw
                        if 0 <= y < S.h and 0 <= xx < S.w:
                            win[li, oh, ow, kidx(c, i, j, cin, kh, kw)] = xg[li, c, y, xx]
                if phase == "fwd":
                    b = np.zeros((cout, kk), dtype=bool)
                    for o, c, i, j in np.ndindex(cout, cin, kh, kw):
                        b[o, kidx(c, i, j, cin, kh, kw)] = wg[o, c, i, j]
                    ops.append((win.reshape(-1, kk), b, (fx, fw)))
                elif phase == "bwd_weight":
                    a = np.zeros((cout, len(im), pp), dtype=bool)
                    a[:, :, :per] = dg.transpose(1, 0, 2, 3).reshape(cout, len(im), per)
                    b = np.zeros((kk, len(im), pp), dtype=bool)
                    b[:, :, :per] = win.reshape(len(im), per, kk).transpose(2, 0, 1)
                    ops.append((a.reshape(cout, -1), b.reshape(kk, -1), (fd, fx)))
                elif sets is None:
                    b = np.zeros((kk, cout), dtype=bool)
                    for o, c, i, j in np.ndindex(cout, cin, kh, kw):
                        b[kidx(c, i, j, cin, kh, kw), o] = wg[o, c, i, j]
                    ops.append((dg.transpose(0, 2, 3, 1).reshape(-1, cout), b, (fd, fw)))
                else:
                    ops.append(_reference_transposed(S, sets, dg, wg, kidx, fw, len(im)))
        out.append(ops)
    return out


def _reference_transposed(S, sets, dg, wg, kidx, fw, nimg):
    """One transposed GEMM's (A, Bᵀ, fractions): position (y, x) meets tap (a, b) where the
    output-gradient row (y + p − (k−1−ti[a])·d) / s is whole and inside."""
    (ys, ti), (xs, tj) = sets
    cout, cin = S.cout, S.cin
    kk = S.kdim(cout, len(ti) * len(tj))
    a = np.zeros((nimg, len(ys), len(xs), kk), dtype=bool)
    b = np.zeros((cin, kk), dtype=bool)
    for o, u, v in np.ndindex(cout, len(ti), len(tj)):
        k = kidx(o, u, v, cout, len(ti), len(tj))
        b[:, k] = wg[o, :, S.kh - 1 - ti[u], S.kw - 1 - tj[v]]
        for p, q in np.ndindex(len(ys), len(xs)):
            ry = ys[p] + S.ph - (S.kh - 1 - ti[u]) * S.dh
            rx = xs[q] + S.pw - (S.kw - 1 - tj[v]) * S.dw
            if (ry % S.sh == 0 and rx % S.sw == 0 and 0 <= ry // S.sh < S.ho
                    and 0 <= rx // S.sw < S.wo):
                a[:, p, q, k] = dg[:, o, ry // S.sh, rx // S.sw]
    eh, ew = S.eh_ew
    return a.reshape(-1, kk), b, (1.0 - int(dg.sum()) / max(nimg * cout * eh * ew, 1), fw)


def _pack(m: np.ndarray) -> np.ndarray:
    words = max(1, -(-m.shape[1] // 64))
    out = np.zeros((m.shape[0], words * 8), dtype=np.uint8)
    b = np.packbits(m, axis=1, bitorder="little")
    out[:, : b.shape[1]] = b
    return out.view(np.uint64)


@settings(**{**SETTINGS, "max_examples": 60})
@given(case=cases(), dens=st.sampled_from([0.0, 1.0, 0.1, 0.5, 0.9]),
       dense=st.sampled_from([None, "a", "b"]))
def test_lowered_operands_from_packed_masks_bit_for_bit(case, dens, dense):
    """Every lowering's operands built from the masks as the trace packs them (``PackedMask``,
    never unpacked) equal, bit for bit, the matrices written element by element from the bool
    tensors; so do the zero fractions; a dense operand (None) stays None."""
    layer, n, low, lanes, seed = case
    rng = np.random.default_rng(seed)
    x, w, dz = (rng.random(t.shape) < dens for t in _masks(layer, n, seed))
    for phase, (am, bm) in {"fwd": (x, w), "bwd_input": (dz, w),
                            "bwd_weight": (dz, x)}.items():
        pa = None if dense == "a" else PackedMask.from_bool(am)
        pb = None if dense == "b" else PackedMask.from_bool(bm)
        parts = lowered_parts(layer, n, phase, low, lanes, pa, pb)
        want = _reference_parts(layer, n, phase, low, lanes, x, w, dz)
        assert len(parts) == len(want)
        for (_, packs, fracs), ops in zip(parts, want, strict=True):
            assert len(packs) == len(ops)
            for (a, b), fr, (ra, rb, rfr) in zip(packs, fracs, ops, strict=True):
                if dense == "a":
                    assert a is None and fr[0] == 0.0 and fr[1] == rfr[1]
                else:
                    np.testing.assert_array_equal(a, _pack(ra))
                if dense == "b":
                    assert b is None and fr[1] == 0.0 and fr[0] == rfr[0]
                else:
                    np.testing.assert_array_equal(b, _pack(rb))
                if dense is None:
                    assert fr == rfr


@settings(**{**SETTINGS, "max_examples": 40})
@given(case=cases(), n=st.integers(2, 3))
def test_all_ones_operands_repeat_one_image(case, n):
    """An all-ones feature map or gradient (a dense operand held as ones) is built for one
    image and repeated; the operands equal those written element by element for the whole
    batch, in every lowering."""
    layer, _, low, lanes, seed = case
    x, w, dz = (np.ones(t.shape, dtype=bool) for t in _masks(layer, n, seed))
    for phase, (am, bm) in {"fwd": (x, w), "bwd_input": (dz, w),
                            "bwd_weight": (dz, x)}.items():
        parts = lowered_parts(layer, n, phase, low, lanes, Bits.ones(am.shape),
                              PackedMask.from_bool(bm))
        want = _reference_parts(layer, n, phase, low, lanes, x, w, dz)
        for (_, packs, fracs), ops in zip(parts, want, strict=True):
            for (a, b), fr, (ra, rb, rfr) in zip(packs, fracs, ops, strict=True):
                np.testing.assert_array_equal(a, _pack(ra))
                np.testing.assert_array_equal(b, _pack(rb))
                assert fr == rfr


@settings(**SETTINGS)
@given(rows=st.integers(1, 4), per=st.sampled_from([1, 5, 63, 64, 65, 128, 192, 200]),
       n=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_repeat_bits_equals_reference(rows, per, n, seed):
    """One image's bits laid end to end n times, in whole words (per a multiple of 64) or
    not, equal the bits written one by one; copying words is wrong where per is not."""
    from dataflows.lowering import _repeat_bits

    m = np.random.default_rng(seed).random((rows, per)) < 0.5
    pack = _pack(m)
    got = _repeat_bits(pack, per, n)
    np.testing.assert_array_equal(got, _pack(np.tile(m, (1, n))))
    if per % 64 and n > 1 and m[:, :per].any():  # the shortcut taken where it does not hold
        assert not np.array_equal(np.tile(pack, (1, n))[:, :got.shape[1]], got)
