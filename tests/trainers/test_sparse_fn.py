"""SparseGemm applies one mask per operand per phase, against an obvious autograd reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from trainers.sparse_fn import (
    BWI_FILTER,
    BWI_GRAD_OUT,
    BWW_GRAD_OUT,
    BWW_IFMAP,
    FWD_FILTER,
    FWD_IFMAP,
    GRAD_W,
    KEYS,
    SparseConv2d,
    SparseLinear,
    sparse_layers,
    sparsify,
)

SETTINGS = dict(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _layer(kind: str, g: torch.Generator) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
    if kind == "conv":
        layer = SparseConv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2).double()
        x = torch.randn(3, 4, 7, 6, generator=g, dtype=torch.float64)
    elif kind == "conv-dilated":
        layer = SparseConv2d(3, 5, (3, 1), stride=1, padding=(2, 0), dilation=2).double()
        x = torch.randn(2, 3, 6, 5, generator=g, dtype=torch.float64)
    elif kind == "linear-tokens":
        layer = SparseLinear(5, 4).double()
        x = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    else:
        layer = SparseLinear(5, 4, bias=False).double()
        x = torch.randn(3, 5, generator=g, dtype=torch.float64)
    return layer, x


def _plain(layer: nn.Module, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    b = None if layer.bias is None else layer.bias.detach()
    if isinstance(layer, nn.Conv2d):
        return F.conv2d(x, w, b, layer.stride, layer.padding, layer.dilation, layer.groups)
    return F.linear(x, w, b)


@settings(**SETTINGS)
@given(kind=st.sampled_from(["conv", "conv-dilated", "linear", "linear-tokens"]),
       seed=st.integers(0, 2**16), which=st.sets(st.sampled_from(KEYS)),
       callable_masks=st.booleans())
def test_each_mask_acts_on_its_operand_only(kind, seed, which, callable_masks):
    g = torch.Generator().manual_seed(seed)
    layer, x = _layer(kind, g)
    x.requires_grad_(True)
    with torch.no_grad():
        z_shape = _plain(layer, x, layer.weight).shape
    shapes = {FWD_FILTER: layer.weight.shape, BWI_FILTER: layer.weight.shape,
              GRAD_W: layer.weight.shape, FWD_IFMAP: x.shape, BWW_IFMAP: x.shape,
              BWI_GRAD_OUT: z_shape, BWW_GRAD_OUT: z_shape}
    masks = {k: torch.rand(shapes[k], generator=g) < 0.6 for k in which}
    one = {k: masks.get(k, torch.ones(shapes[k], dtype=torch.bool)) for k in KEYS}
    layer.masks = {k: ((lambda t, m=m: m) if callable_masks else m) for k, m in masks.items()}
    dz = torch.randn(z_shape, generator=g, dtype=torch.float64)

    z = layer(x)
    z.backward(dz)
    # reference: each GEMM on its own, with plain autograd on the masked operands
    w = layer.weight.detach()
    z_ref = _plain(layer, x.detach() * one[FWD_IFMAP], w * one[FWD_FILTER])
    xi = x.detach().clone().requires_grad_(True)
    _plain(layer, xi, w * one[BWI_FILTER]).backward(dz * one[BWI_GRAD_OUT])
    wi = w.clone().requires_grad_(True)
    _plain(layer, x.detach() * one[BWW_IFMAP], wi).backward(dz * one[BWW_GRAD_OUT])
    torch.testing.assert_close(z, z_ref)
    torch.testing.assert_close(x.grad, xi.grad)
    torch.testing.assert_close(layer.weight.grad, wi.grad * one[GRAD_W])
    if layer.bias is not None:
        torch.testing.assert_close(layer.bias.grad, dz.reshape(-1, dz.shape[-1]).sum(0)
                                   if isinstance(layer, nn.Linear) else dz.sum((0, 2, 3)))


def test_callable_masks_run_once_per_forward_and_not_in_inference():
    layer = SparseLinear(6, 3)
    calls = []

    def rule(t):
        calls.append(tuple(t.shape))
        return t.abs() > 0.1

    layer.masks = {FWD_FILTER: rule, BWI_FILTER: rule}
    x = torch.randn(4, 6)
    layer(x).sum().backward()
    assert calls == [(3, 6)]  # W~ decided once, used by fwd and bwd_input
    layer.masks[BWW_IFMAP] = rule
    calls.clear()
    with torch.no_grad():
        out = layer(x)
    assert calls == [(3, 6)]  # inference: forward operands only, no stash
    torch.testing.assert_close(out, F.linear(x, layer.weight * (layer.weight.abs() > 0.1),
                                             layer.bias))


def test_sparsify_keeps_names_parameters_and_results():
    """With no masks the twins give autograd's own numbers bit for bit (a bias gradient summed
    in another order differs in the last bits on a large enough layer)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(16 * 12 * 12, 10))
    params = list(model.parameters())
    x = torch.randn(32, 8, 12, 12, requires_grad=True)
    ref = model(x)
    dz = torch.randn_like(ref)
    ref.backward(dz)
    ref_grads = [p.grad.clone() for p in params] + [x.grad.clone()]
    for p in params + [x]:
        p.grad = None
    sparsify(model)
    assert [n for n, _ in sparse_layers(model)] == ["0", "3"]
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))
    out = model(x)
    out.backward(dz)
    assert torch.equal(out, ref)
    for p, g in zip(params + [x], ref_grads, strict=True):
        assert torch.equal(p.grad, g)
    assert sparsify(model) is model and isinstance(model[0], SparseConv2d)


def test_unsupported_padding_mode_is_refused():
    with pytest.raises(ValueError, match="zero padding"):
        SparseConv2d(2, 2, 3, padding=1, padding_mode="reflect")
