"""EOI: the density chain against simulation and the reference table, orthogonality, masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainers.eoi import eoi_init_, expected_density, rotations_for_density, sparse_orthogonal


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _simulated_density(n: int, m: int, k: int, samples: int, seed: int) -> float:
    """Mean density of supports after k random column-pair unions (the slow, obvious model)."""
    rng = np.random.default_rng(seed)
    s = np.zeros((samples, n, m), dtype=bool)
    s[:, np.arange(n), np.arange(n)] = True
    rows = np.arange(samples)
    for _ in range(k):
        i = rng.integers(0, m, samples)
        j = (i + rng.integers(1, m, samples)) % m  # uniform over j != i
        union = s[rows, :, i] | s[rows, :, j]
        s[rows, :, i] = union
        s[rows, :, j] = union
    return float(s.mean())


@pytest.mark.parametrize("k", [16, 64, 128, 256])
def test_chain_matches_simulated_supports(k):
    assert abs(expected_density(k, 64) - _simulated_density(64, 64, k, 200, seed=k)) < 0.01


@pytest.mark.parametrize("k, value", [(50, 0.0266), (156, 0.1689), (249, 0.4915), (510, 0.9832)])
def test_chain_reference_table(k, value):
    assert abs(expected_density(k, 100) - value) < 1e-3


def test_rotation_counts_reference():
    assert [rotations_for_density(100, d) for d in (0.14, 0.5, 0.99)] == [144, 252, 542]
    assert rotations_for_density(256, 0.1) == 439
    assert rotations_for_density(1, 0.5) == 0 and rotations_for_density(100, 0.01) == 0
    k = rotations_for_density(100, 0.3)
    assert expected_density(k, 100) >= 0.3 > expected_density(k - 1, 100)


@given(st.integers(2, 200), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
@settings(max_examples=40, deadline=None)
def test_rotations_monotone_in_density(m, a, b):
    lo, hi = sorted((a, b))
    assert rotations_for_density(m, lo) <= rotations_for_density(m, hi)


@pytest.mark.parametrize("n, m, d", [(40, 40, 0.2), (24, 60, 0.3), (60, 24, 0.3), (1, 10, 0.5)])
def test_sparse_orthogonal_is_orthogonal(n, m, d):
    q = sparse_orthogonal(n, m, d, _gen(1)).double()
    assert q.shape == (n, m) and q.dtype == torch.float64
    gram = q @ q.T if n <= m else q.T @ q
    assert torch.allclose(gram, torch.eye(min(n, m), dtype=torch.float64), atol=1e-5)


def test_linear_mask_density_and_orthogonality():
    # Rows share the same rotations, so one matrix's density scatters around the chain's mean
    # (std about 0.016 at 128 x 128, d = 0.2): each draw within 0.06, the mean of 8 within 0.02.
    dens = []
    for seed in range(8):
        w = torch.empty(128, 128)
        mask = eoi_init_(w, 0.2, _gen(seed), gain=2.0)
        assert torch.equal(mask, w != 0)
        assert torch.allclose(w @ w.T, 4 * torch.eye(128), atol=1e-5 * 4)
        dens.append(mask.float().mean().item())
        assert abs(dens[-1] - 0.2) < 0.06
    assert abs(np.mean(dens) - 0.2) < 0.02


@pytest.mark.parametrize("more", [False, True])
def test_conv_delta_orthogonal(more):
    w = torch.empty(32, 16, 3, 3)
    d = 0.1
    mask = eoi_init_(w, d, _gen(2), more_nonzeros=more)
    centre = w[:, :, 1, 1]
    assert torch.allclose(centre.T @ centre, torch.eye(16), atol=1e-5)  # tall: columns
    off = w.clone()
    off[:, :, 1, 1] = 0
    assert torch.count_nonzero(off) == 0  # all other taps start at zero
    assert (mask | (w == 0)).all() and mask[w != 0].all()
    assert mask.sum().item() == round(d * w.numel())  # unfrozen up to exactly d
    if more:  # d_H = min(0.9, 1, 0.316): denser centre than plain EOI
        assert (centre != 0).float().mean() > 0.2


def test_dense_request_and_errors():
    assert eoi_init_(torch.empty(8, 8), 1.0, _gen()).all()
    assert eoi_init_(torch.empty(4, 4, 3, 3), 1.0, _gen()).all()
    with pytest.raises(ValueError):
        eoi_init_(torch.empty(4, 4, 2, 2), 0.5, _gen())
    with pytest.raises(ValueError):
        eoi_init_(torch.empty(4, 4), 0.0, _gen())


def test_deterministic_with_seed():
    a, b, c = torch.empty(16, 8, 3, 3), torch.empty(16, 8, 3, 3), torch.empty(16, 8, 3, 3)
    ma, mb = eoi_init_(a, 0.2, _gen(5)), eoi_init_(b, 0.2, _gen(5))
    mc = eoi_init_(c, 0.2, _gen(6))
    assert torch.equal(a, b) and torch.equal(ma, mb)
    assert not torch.equal(ma, mc)
