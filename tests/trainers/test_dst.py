"""RigL and SRigL mask updates: counts, which weights move, SRigL's constant fan-in invariants."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainers.dst import constant_fan_in_mask, cosine_fraction, rigl_update, srigl_update

SETTINGS = dict(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def layer(draw):
    """(weight, mask, grad) on a small linear or conv shape with distinct random values."""
    shape = draw(st.sampled_from([(6, 10), (12, 7), (4, 3, 3, 3), (9, 2, 1, 5)]))
    seed = draw(st.integers(0, 2**16))
    density = draw(st.floats(0.1, 0.9))
    g = torch.Generator().manual_seed(seed)
    mask = constant_fan_in_mask(shape, density, g)
    weight = torch.randn(shape, generator=g, dtype=torch.float64) * mask
    grad = torch.randn(shape, generator=g, dtype=torch.float64)
    return weight, mask, grad


def _rows(t):
    return t.reshape(t.shape[0], -1)


def test_cosine_fraction():
    assert cosine_fraction(0, 0.3, 100) == pytest.approx(0.3)
    assert cosine_fraction(50, 0.3, 100) == pytest.approx(0.15)
    assert cosine_fraction(100, 0.3, 100) == 0.0 and cosine_fraction(150, 0.3, 100) == 0.0


@given(shape=st.sampled_from([(5, 8), (7, 3, 3, 3), (1, 4), (16, 1)]), d=st.floats(0.01, 1.0))
@settings(**SETTINGS)
def test_constant_fan_in_mask(shape, d):
    mask = constant_fan_in_mask(shape, d, torch.Generator().manual_seed(0))
    fan = math.prod(shape[1:])
    k = min(max(int(math.prod(shape) * d) // shape[0], 1), fan)
    assert mask.shape == shape and (_rows(mask).sum(1) == k).all()


@given(layer(), st.floats(0.0, 1.0))
@settings(**SETTINGS)
def test_rigl_drops_smallest_weights_grows_largest_grads(lay, fraction):
    weight, mask, grad = lay
    new, moved = rigl_update(weight, mask, grad, fraction)
    nnz = int(mask.sum())
    n = int(fraction * nnz)
    assert int(new.sum()) == nnz
    # RigL's kept set is the nnz - n largest active |W|; whatever left the mask is below it
    # (a dropped position may be re-grown, so "left" is a subset of "dropped")
    if 0 < n < nnz:
        t = torch.sort(weight[mask].abs(), descending=True).values[nnz - n - 1]
        assert (weight[mask & ~new].abs() <= t).all()
        assert int((mask & new).sum()) >= nnz - n
    # every grown position beats every position left out (kept set excluded from both)
    grown = new & ~mask
    assert moved == int(grown.sum()) <= n
    outside = ~new
    if grown.any() and outside.any():
        assert grad[grown].abs().min() >= grad[outside].abs().max()


def test_rigl_small_exact_case():
    w = torch.tensor([[0.1, 0.0, 5.0, 0.0], [3.0, 0.0, 0.0, 0.2]])
    m = w != 0
    g = torch.tensor([[0.0, 9.0, 0.0, 1.0], [0.0, 0.5, 8.0, 0.0]])
    new, moved = rigl_update(w, m, g, 0.5)  # drop 0.1 and 0.2, grow (0,1) and (1,2)
    assert moved == 2
    assert new.tolist() == [[False, True, True, False], [True, False, True, False]]
    assert torch.equal(rigl_update(w, m, g, 0.0)[0], m)


def _check_srigl(new, info, shape):
    rows = _rows(new).sum(1)
    dead = torch.zeros(shape[0], dtype=torch.bool)
    dead[info["ablated"]] = True
    assert (rows[dead] == 0).all() and (rows[~dead] == info["k"]).all()
    assert int(new.sum()) == info["k"] * (shape[0] - len(info["ablated"]))
    assert 0 < info["k"] <= math.prod(shape[1:])


@given(layer(), st.floats(0.0, 0.5), st.floats(0.0, 1.0), st.booleans(), st.booleans())
@settings(**SETTINGS)
def test_srigl_invariants_over_many_updates(lay, alpha, gamma, ablate, use_budget):
    weight, mask, grad = lay
    shape = weight.shape
    budget = int(mask.sum()) if use_budget else None
    g = torch.Generator().manual_seed(1)
    for step in range(8):
        old = int(mask.sum())
        new, info = srigl_update(
            weight, mask, grad, cosine_fraction(step, alpha, 8), gamma, ablate, nnz_budget=budget
        )
        _check_srigl(new, info, shape)
        assert int(new.sum()) == old - info["dropped"] + info["grown"]
        assert int(new.sum()) <= (budget if use_budget else old)
        if not ablate:
            assert info["ablated"] == []
        # next step: grown weights start at 0 and train a little; gradients change
        weight = torch.where(new & ~mask, 0.0, weight) * new
        weight = weight + 0.01 * torch.randn(shape, generator=g, dtype=weight.dtype) * new
        grad = torch.randn(shape, generator=g, dtype=weight.dtype)
        mask = new


@given(layer(), st.floats(0.0, 1.0))
@settings(**SETTINGS)
def test_srigl_fraction_zero_is_identity(lay, gamma):
    weight, mask, grad = lay
    new, info = srigl_update(weight, mask, grad, 0.0, gamma)
    assert torch.equal(new, mask) and info["dropped"] == info["grown"] == 0
    assert info["ablated"] == []


def test_srigl_ablates_row_with_tiny_saliency():
    g = torch.Generator().manual_seed(0)
    shape = (8, 20)
    mask = constant_fan_in_mask(shape, 0.25, g)  # k0 = 5 per row
    weight = torch.randn(shape, generator=g).abs().add(1.0) * mask
    grad = torch.randn(shape, generator=g).abs().add(1.0)
    weight[3] *= 1e-6  # neuron 3: the smallest weights ...
    grad[3] *= 1e-6  # ... and the smallest gradients in the layer
    new, info = srigl_update(weight, mask, grad, 0.3, gamma_sal=0.3)
    assert info["ablated"] == [3]
    assert info["k"] == 40 // 7  # budget = nnz = 40 over 7 active rows
    _check_srigl(new, info, shape)
    same, info2 = srigl_update(weight, mask, grad, 0.3, gamma_sal=0.3, ablate=False)
    assert info2["ablated"] == [] and info2["k"] == 5
    _check_srigl(same, info2, shape)
    # with a budget (SRigL's code: from the layer's target density) k = floor(budget / active)
    _, info3 = srigl_update(weight, mask, grad, 0.3, nnz_budget=48)
    assert info3["k"] == 48 // 7


def test_srigl_grows_largest_gradients_per_row():
    w = torch.tensor([[4.0, 3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 1.0, 0.0]])
    m = w != 0
    g = torch.tensor([[0.0, 0.0, 1.0, 7.0, 2.0], [6.0, 0.0, 0.0, 0.0, 5.0]])
    new, info = srigl_update(w, m, g, 0.5, ablate=False)
    # n_prune = 2: the global keep is |W| = 4, 3 (both in row 0, which is then full at k = 2);
    # row 1 keeps nothing and grows its two largest |G| positions (0 and 4)
    assert new.tolist() == [[True, True, False, False, False], [True, False, False, False, True]]
    assert info == {"k": 2, "ablated": [], "dropped": 2, "grown": 2}


def test_srigl_min_neurons_caps_ablation():
    """A dense-ish layer cannot lose rows: k would exceed the dense fan-in."""
    g = torch.Generator().manual_seed(3)
    shape = (4, 5)
    mask = constant_fan_in_mask(shape, 0.8, g)  # k0 = 4, nnz = 16, min_neurons = ceil(16/5) = 4
    weight = torch.randn(shape, generator=g) * mask
    weight[0] *= 1e-6
    grad = torch.randn(shape, generator=g)
    grad[0] *= 1e-6
    new, info = srigl_update(weight, mask, grad, 0.3, gamma_sal=1.0)
    assert info["ablated"] == [] and info["k"] == 4
    _check_srigl(new, info, shape)


def test_srigl_budget_below_one_per_row_raises():
    mask = constant_fan_in_mask((4, 6), 0.5, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError):
        srigl_update(torch.randn(4, 6) * mask, mask, torch.randn(4, 6), 0.3, nnz_budget=2)
