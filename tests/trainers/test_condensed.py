"""Condensed constant fan-in linear layer against the masked dense layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainers import condensed
from trainers.condensed import CondensedLinear
from trainers.dst import constant_fan_in_mask


def _layer(out_f, in_f, density, ablated, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    lin = nn.Linear(in_f, out_f, bias=bias)
    mask = constant_fan_in_mask((out_f, in_f), density, g)
    mask[ablated] = False
    return lin, mask


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("ablated", [[], [0, 5, 11]])
def test_matches_masked_dense(batch, bias, ablated):
    lin, mask = _layer(12, 30, 0.2, ablated, bias)
    x = torch.randn(batch, 30)
    ref = nn.functional.linear(x, lin.weight * mask, lin.bias)
    layer = CondensedLinear.from_linear(lin, mask)
    active = [r for r in range(12) if r not in ablated]
    assert layer.Wc.shape == layer.Idx.shape == (len(active), 6)
    assert layer.active_rows.tolist() == active
    assert torch.allclose(layer(x), ref[:, active], atol=1e-5)
    layer.full_output = True
    assert torch.allclose(layer(x), ref, atol=1e-5)


def test_extra_leading_dims_and_bad_masks():
    lin, mask = _layer(8, 16, 0.25, [2])
    layer = CondensedLinear.from_linear(lin, mask, full_output=True)
    x = torch.randn(3, 4, 16)
    ref = nn.functional.linear(x, lin.weight * mask, lin.bias)
    assert torch.allclose(layer(x), ref, atol=1e-5)
    mask[0, mask[0].nonzero()[0]] = False  # one row now has k - 1 entries
    with pytest.raises(ValueError):
        CondensedLinear.from_linear(lin, mask)
    with pytest.raises(ValueError):
        CondensedLinear.from_linear(lin, mask.T)


@pytest.mark.parametrize("block", [1, 50, 10_000])
def test_blocked_large_batch_path(monkeypatch, block):
    """The eager large-batch path (row blocks of gathered x^T rows) gives the same result."""
    monkeypatch.setattr(condensed, "GATHER_LIMIT", 0)
    monkeypatch.setattr(condensed, "BLOCK_ELEMS", block)
    lin, mask = _layer(12, 30, 0.2, [4, 7])
    layer = CondensedLinear.from_linear(lin, mask, full_output=True)
    x = torch.randn(9, 30)
    ref = nn.functional.linear(x, lin.weight * mask, lin.bias)
    assert torch.allclose(layer(x), ref, atol=1e-5)
