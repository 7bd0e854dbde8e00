"""EOI: Exact Orthogonal Initialization (Nowak et al., ICML 2024) — sparse orthogonal weights.

A sparse orthogonal matrix is the identity (padded to n x m, n <= m) right-multiplied by random
Givens rotations: orthogonality is exact by construction, and each rotation can only grow the
support. The number of rotations for a target density comes from the Markov chain of a row's
support size (reference §2.2), not from the stop-when-reached loop of the authors' code, so the
rotation count is fixed before any randomness is drawn.

Densities are fractions of non-zero entries (0..1); everything is computed in float64 and written
to the weight's dtype at the end.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch


def _target(m: int, density: float) -> float:
    # The chain only approaches 1 asymptotically; a "dense" request stops once fewer than half an
    # entry per row is expected to be missing.
    return min(density, 1.0 - 0.5 / m)


def _step(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """One rotation: a row of support x grows to x+1 with probability q[x-1], else stays."""
    nxt = p * (1.0 - q)
    nxt[1:] += p[:-1] * q[:-1]
    return nxt


def _chain(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Support sizes x = 1..m, growth probabilities q(x), start distribution (x0 = 1)."""
    x = np.arange(1, m + 1, dtype=np.float64)
    q = 2.0 * x * (m - x) / (m * (m - 1))
    p = np.zeros(m, dtype=np.float64)
    p[0] = 1.0
    return x, q, p


def expected_density(n_rot: int, m: int) -> float:
    """Expected density of each row after ``n_rot`` random Givens rotations of a width-``m`` row.

    Exact: propagates the distribution of the row support size x (x0 = 1) through ``n_rot`` steps
    of P(x -> x+1) = 2x(m-x)/(m(m-1)); returns E[x]/m. O(n_rot * m) float64 work.
    """
    if m < 1 or n_rot < 0:
        raise ValueError(f"need m >= 1 and n_rot >= 0, got m={m}, n_rot={n_rot}")
    if m == 1:
        return 1.0
    x, q, p = _chain(m)
    for _ in range(n_rot):
        p = _step(p, q)
    return float(p @ x) / m


@lru_cache(maxsize=512)
def rotations_for_density(m: int, density: float) -> int:
    """Smallest number of rotations k with ``expected_density(k, m) >= density``.

    m = 1 or density <= 1/m needs none (the padded identity already has density 1/m). A density
    >= 1 is capped at 1 - 1/(2m): the expectation never reaches 1 exactly. One forward pass of the
    chain (linear search), so O(k * m); results are cached per (m, density).
    """
    if m < 1:
        raise ValueError(f"need m >= 1, got {m}")
    if m == 1 or density <= 1.0 / m + 1e-12:
        return 0
    goal = _target(m, density) * m  # compare E[x] with density * m
    x, q, p = _chain(m)
    k = 0
    while float(p @ x) < goal:
        p = _step(p, q)
        k += 1
    return k


def sparse_orthogonal(n: int, m: int, density: float, generator: torch.Generator) -> torch.Tensor:
    """Random sparse n x m matrix with orthonormal rows (n <= m) or columns (n > m), float32.

    Built in float64 from the padded identity by ``rotations_for_density(max(n, m), density)``
    Givens rotations on column pairs (i != j uniform, theta ~ U[0, 2 pi)); all randomness is drawn
    from ``generator``. Expected density is ``density`` (or 1/max(n, m) if that is larger).
    """
    if n < 1 or m < 1:
        raise ValueError(f"need positive sizes, got {n} x {m}")
    if density <= 0:
        raise ValueError(f"density must be > 0, got {density}")
    if n > m:  # a tall matrix is the transpose of a wide one: work with rows of length max(n, m)
        return sparse_orthogonal(m, n, density, generator).T.contiguous()
    k = rotations_for_density(m, density)
    # Draw everything up front so the draw order does not depend on the arithmetic below.
    cpu = torch.device("cpu")  # the rotations are applied in numpy below
    i = torch.randint(0, m, (k,), generator=generator, device=cpu)
    j = torch.randint(0, max(m - 1, 1), (k,), generator=generator, device=cpu)
    j = j + (j >= i).long()  # uniform over j != i
    theta = torch.rand(k, generator=generator, dtype=torch.float64, device=cpu) * (2.0 * math.pi)
    cos, sin = torch.cos(theta).numpy(), torch.sin(theta).numpy()
    i, j = i.numpy(), j.numpy()
    # Store the transpose so that a column of A is a contiguous row of `at`.
    at = np.zeros((m, n), dtype=np.float64)
    at[np.arange(n), np.arange(n)] = 1.0
    for r in range(k):
        ci, cj = at[i[r]].copy(), at[j[r]]
        at[i[r]] = cos[r] * ci + sin[r] * cj
        at[j[r]] = cos[r] * cj - sin[r] * ci
    return torch.from_numpy(np.ascontiguousarray(at.T)).to(torch.float32)


def eoi_init_(
    weight: torch.Tensor,
    density: float,
    generator: torch.Generator,
    gain: float = 1.0,
    more_nonzeros: bool = False,
) -> torch.Tensor:
    """Initialise ``weight`` in place with EOI; returns the bool mask (trainable support).

    Linear (out, in): W = gain * Q, Q = sparse_orthogonal(out, in, density); mask = W != 0.
    Conv (out, in, *kernel), every kernel size odd (groups = 1): delta-orthogonal embedding,
    W[:, :, centre] = gain * H with H = sparse_orthogonal(out, in, d_H), zero elsewhere;
    d_H = density, or min(density * K, 1, sqrt(density)) with ``more_nonzeros`` (K = kernel
    volume). Zero positions anywhere in the kernel are then made trainable (mask True, value 0)
    at random until the mask holds round(density * numel) entries; if the centre alone already
    has more, nothing is added. density >= 1 gives an all-True mask.
    """
    if not 0 < density:
        raise ValueError(f"density must be > 0, got {density}")
    if weight.dim() < 2:
        raise ValueError(f"need a linear or conv weight, got shape {tuple(weight.shape)}")
    kernel = tuple(weight.shape[2:])
    if any(s % 2 == 0 for s in kernel):
        raise ValueError(f"EOI needs odd kernel sizes (a centre tap), got {kernel}")
    out_f, in_f = weight.shape[:2]
    with torch.no_grad():
        if not kernel:
            weight.copy_(gain * sparse_orthogonal(out_f, in_f, density, generator))
            mask = weight != 0
            return torch.ones_like(mask) if density >= 1 else mask
        vol = math.prod(kernel)
        d_h = min(density * vol, 1.0, math.sqrt(density)) if more_nonzeros else min(density, 1.0)
        h = sparse_orthogonal(out_f, in_f, d_h, generator)
        weight.zero_()
        weight[(slice(None), slice(None)) + tuple(s // 2 for s in kernel)] = gain * h
        mask = (weight != 0).flatten()
        need = min(round(density * mask.numel()), mask.numel()) - int(mask.sum())
        if need > 0:
            free = torch.nonzero(~mask).flatten()
            pick = torch.randperm(free.numel(), generator=generator, device=generator.device)[:need]
            mask[free[pick]] = True
        return mask.view(weight.shape)
