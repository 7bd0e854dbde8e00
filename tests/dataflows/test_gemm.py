"""Training-GEMM lowering: the M×K·K×N shapes of ``dataflows.gemm.lower`` reproduce PyTorch.

For small conv2d and linear geometries, torch (float64, autograd) gives the output and both
gradients; a slow, obvious numpy im2col/col2im reference then multiplies exactly the matrices
whose shapes ``lower`` reports, per group, and must get the same numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from common.vocab import PHASES, ROLES
from dataflows.gemm import Gemm, lower, lower_all
from traces.layers import Layer
from traces.models import get_model

SETTINGS = dict(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RTOL, ATOL = 1e-9, 1e-12


# ---- slow, obvious reference ----------------------------------------------------------------
def im2col(x: np.ndarray, layer: Layer, group: int) -> np.ndarray:
    """Patch matrix of one group: rows (n, ho, wo), columns (c, i, j) like the weight's
    (Cout, Cin/g, kh, kw) layout; padding positions are explicit zeros."""
    n, _, h, w = x.shape
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    (ph, pw), (dh, dw) = layer.padding, layer.dilation
    ho, wo = layer.out_hw
    cg = layer.in_channels // layer.groups
    cols = np.zeros((n * ho * wo, cg * kh * kw))
    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                row = (b * ho + oy) * wo + ox
                for c in range(cg):
                    for i in range(kh):
                        for j in range(kw):
                            y, xx = oy * sh + i * dh - ph, ox * sw + j * dw - pw
                            if 0 <= y < h and 0 <= xx < w:
                                cols[row, (c * kh + i) * kw + j] = x[b, group * cg + c, y, xx]
    return cols


def col2im(cols: np.ndarray, layer: Layer, group: int, out: np.ndarray) -> None:
    """Scatter-add one group's patch-matrix gradient back into ``out`` (N, Cin, H, W); entries
    that fall on padding are dropped."""
    n, _, h, w = out.shape
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    (ph, pw), (dh, dw) = layer.padding, layer.dilation
    ho, wo = layer.out_hw
    cg = layer.in_channels // layer.groups
    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                row = (b * ho + oy) * wo + ox
                for c in range(cg):
                    for i in range(kh):
                        for j in range(kw):
                            y, xx = oy * sh + i * dh - ph, ox * sw + j * dw - pw
                            if 0 <= y < h and 0 <= xx < w:
                                out[b, group * cg + c, y, xx] += cols[row, (c * kh + i) * kw + j]


def matmul(a: np.ndarray, b: np.ndarray, gemm: Gemm) -> np.ndarray:
    """C = A·B, checking that A, B and C have exactly the shapes ``gemm`` reports."""
    assert a.shape == (gemm.M, gemm.K)
    assert b.shape == (gemm.K, gemm.N)
    c = a @ b
    assert c.shape == (gemm.M, gemm.N)
    return c


def torch_conv(layer: Layer, batch: int, seed: int):
    """Input, weight, output and gradients of a float64 torch conv2d (no bias)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(layer.ifmap_shape(batch), dtype=torch.float64, generator=gen)
    w = torch.randn(layer.weight_shape, dtype=torch.float64, generator=gen)
    x.requires_grad_(True)
    w.requires_grad_(True)
    z = F.conv2d(x, w, stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                 groups=layer.groups)
    dz = torch.randn(z.shape, dtype=torch.float64, generator=gen)
    z.backward(dz)
    return [t.detach().numpy() for t in (x, w, z, dz, x.grad, w.grad)]


def torch_linear(layer: Layer, batch: int, seed: int):
    """Input (N, tokens, in), weight, output and gradients of a float64 torch linear (no bias)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(layer.ifmap_shape(batch), dtype=torch.float64, generator=gen)
    w = torch.randn(layer.weight_shape, dtype=torch.float64, generator=gen)
    x.requires_grad_(True)
    w.requires_grad_(True)
    z = F.linear(x, w)
    dz = torch.randn(z.shape, dtype=torch.float64, generator=gen)
    z.backward(dz)
    return [t.detach().numpy() for t in (x, w, z, dz, x.grad, w.grad)]


# ---- geometries -----------------------------------------------------------------------------
pairs = st.tuples


@st.composite
def conv_geometries(draw):
    g = draw(st.integers(1, 6))
    cin = g * draw(st.integers(1, 6 // g))  # cin == g: depthwise (possibly with a multiplier)
    cout = g * draw(st.integers(1, 6 // g))
    kernel = draw(pairs(st.integers(1, 3), st.integers(1, 3)))
    stride = draw(pairs(st.integers(1, 2), st.integers(1, 2)))
    padding = draw(pairs(st.integers(0, 2), st.integers(0, 2)))
    dilation = draw(pairs(st.integers(1, 2), st.integers(1, 2)))
    hw = draw(pairs(st.integers(3, 8), st.integers(3, 8)))
    for a in range(2):
        assume(hw[a] + 2 * padding[a] >= dilation[a] * (kernel[a] - 1) + 1)
    layer = Layer.conv("conv", cin, cout, kernel, hw, stride, padding, g, dilation)
    return layer, draw(st.integers(1, 3)), draw(st.integers(0, 2**31 - 1))


@st.composite
def linear_geometries(draw):
    layer = Layer.linear("fc", draw(st.integers(1, 6)), draw(st.integers(1, 6)),
                         tokens=draw(st.integers(1, 3)))
    return layer, draw(st.integers(1, 3)), draw(st.integers(0, 2**31 - 1))


# strided 3x3 like resnet50 layer2.0.conv2; depthwise strided; grouped, dilated, non-square
CONV_EXAMPLES = [
    (Layer.conv("strided", 4, 4, 3, 8, stride=2, padding=1), 2, 0),
    (Layer.conv("dw", 3, 3, 3, 7, stride=2, padding=1, groups=3), 3, 1),
    (Layer.conv("dw_x2", 2, 6, (3, 2), (5, 8), stride=(1, 2), padding=(2, 0), groups=2,
                dilation=(2, 1)), 1, 2),
]


# ---- 1. the GEMMs reproduce torch -----------------------------------------------------------
@settings(**SETTINGS)
@given(conv_geometries())
@example(CONV_EXAMPLES[0])
@example(CONV_EXAMPLES[1])
@example(CONV_EXAMPLES[2])
def test_conv_gemms_match_torch(case):
    layer, batch, seed = case
    x, w, z, dz, dx, dw = torch_conv(layer, batch, seed)
    fwd, bwd_in, bwd_w = lower_all(layer, batch)
    g = layer.groups
    assert fwd.groups == bwd_in.groups == bwd_w.groups == g
    ho, wo = layer.out_hw
    cog = layer.out_channels // g
    dx_ref = np.zeros_like(x)
    for gi in range(g):
        oc = slice(gi * cog, (gi + 1) * cog)
        cols = im2col(x, layer, gi)  # (n·Ho·Wo, Cin/g·kh·kw)
        wg = w[oc].reshape(cog, -1)  # (Cout/g, Cin/g·kh·kw)
        dzg = dz[:, oc].transpose(0, 2, 3, 1).reshape(-1, cog)  # (n·Ho·Wo, Cout/g)

        zg = matmul(cols, wg.T, fwd)
        zg = zg.reshape(batch, ho, wo, cog).transpose(0, 3, 1, 2)
        np.testing.assert_allclose(zg, z[:, oc], rtol=RTOL, atol=ATOL)

        col2im(matmul(dzg, wg, bwd_in), layer, gi, dx_ref)

        dwg = matmul(dzg.T, cols, bwd_w)
        np.testing.assert_allclose(dwg.reshape(w[oc].shape), dw[oc], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dx_ref, dx, rtol=RTOL, atol=ATOL)


@settings(**SETTINGS)
@given(linear_geometries())
def test_linear_gemms_match_torch(case):
    layer, batch, seed = case
    x, w, z, dz, dx, dw = torch_linear(layer, batch, seed)
    fwd, bwd_in, bwd_w = lower_all(layer, batch)
    a = x.reshape(batch * layer.tokens, layer.in_channels)
    dzm = dz.reshape(batch * layer.tokens, layer.out_channels)
    np.testing.assert_allclose(matmul(a, w.T, fwd).reshape(z.shape), z, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(matmul(dzm, w, bwd_in).reshape(dx.shape), dx,
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(matmul(dzm.T, a, bwd_w), dw, rtol=RTOL, atol=ATOL)


# ---- 2. MAC counts --------------------------------------------------------------------------
def check_macs(layer: Layer, batch: int) -> None:
    gemms = lower_all(layer, batch)
    assert [gm.phase for gm in gemms] == list(PHASES)
    for gm in gemms:
        assert min(gm.M, gm.K, gm.N, gm.groups) >= 1
        assert gm.macs == gm.groups * gm.M * gm.K * gm.N == layer.macs(batch)
        assert gm.layer == layer.name


@settings(**SETTINGS)
@given(st.one_of(conv_geometries(), linear_geometries()))
def test_macs_equal_across_phases(case):
    layer, batch, _ = case
    check_macs(layer, batch)


@pytest.mark.parametrize("model", ["resnet50", "mobilenetv2", "vit-b16"])
def test_macs_of_builtin_models(model):
    for layer in get_model(model).layers:
        check_macs(layer, 32)


def test_worked_examples_in_docs():
    """The numbers of docs/gemms.md."""
    layers = {la.name: la for la in get_model("resnet50").layers}
    conv = layers["layer2.0.conv2"]
    assert conv.ifmap_shape(32) == (32, 128, 56, 56)
    assert conv.grad_out_shape(32) == (32, 128, 28, 28)
    assert [(gm.M, gm.K, gm.N) for gm in lower_all(conv, 32)] == [
        (25088, 1152, 128), (25088, 128, 1152), (128, 25088, 1152)]
    assert conv.macs(32) == 3_699_376_128
    fc = layers["fc"]
    assert [(gm.M, gm.K, gm.N) for gm in lower_all(fc, 32)] == [
        (32, 2048, 1000), (32, 1000, 2048), (1000, 32, 2048)]
    assert fc.macs(32) == 65_536_000
    vit = {la.name: la for la in get_model("vit-b16").layers}
    mlp = vit["encoder.layers.encoder_layer_0.mlp.0"]
    assert [(gm.M, gm.K, gm.N) for gm in lower_all(mlp, 32)] == [
        (6304, 768, 3072), (6304, 3072, 768), (3072, 6304, 768)]
    assert mlp.macs(32) == 14_873_001_984
    mb = {la.name: la for la in get_model("mobilenetv2").layers}
    dw = mb["features.2.conv.1.0"]
    assert [(gm.M, gm.K, gm.N, gm.groups) for gm in lower_all(dw, 32)] == [
        (100352, 9, 1, 96), (100352, 1, 9, 96), (1, 100352, 9, 96)]
    assert dw.macs(32) == 86_704_128


# ---- 3. operand shapes ----------------------------------------------------------------------
@settings(**SETTINGS)
@given(st.one_of(conv_geometries(), linear_geometries()))
def test_torch_shapes_match_layer(case):
    layer, batch, seed = case
    run = torch_linear if layer.kind == "linear" else torch_conv
    x, w, z, dz, dx, dw = run(layer, batch, seed)
    assert x.shape == dx.shape == layer.ifmap_shape(batch) == layer.operand_shape("ifmap", batch)
    assert w.shape == dw.shape == layer.weight_shape == layer.operand_shape("filter", batch)
    assert z.shape == dz.shape == layer.grad_out_shape(batch)
    assert z.shape == layer.operand_shape("grad_out", batch)
    if layer.kind == "linear":
        assert x.shape == (batch, layer.tokens, layer.in_channels)


# ---- 4. roles and errors --------------------------------------------------------------------
def test_roles():
    layer = Layer.conv("c", 4, 8, 3, 6, padding=1)
    for phase in PHASES:
        gm = lower(layer, 2, phase)
        assert gm.roles == ROLES[phase]
        assert all(layer.operand_shape(role, 2) for role in gm.roles)
    assert lower(layer, 2, "bwd_input").roles[0] == "grad_out"  # dZ is the A operand


@pytest.mark.parametrize("phase", ["bwd", "forward", "", "FWD", "bwd_inputs"])
def test_unknown_phase_raises(phase):
    layer = Layer.linear("fc", 4, 3)
    with pytest.raises(ValueError, match="unknown phase"):
        lower(layer, 1, phase)
    with pytest.raises(ValueError):
        lower_all(layer, 1, ("fwd", phase))
