"""Per-layer weight densities from a global sparsity target.

* ``uniform``: every sparsified layer gets density 1 − S; the first layer stays dense by default
  (SWAT-U and RigL's uniform keep it dense).
* ``erk``: Erdős–Rényi-Kernel, RigL's formula. raw_l = (Σ dims(W_l) / Π dims(W_l))^p; density_l =
  ε·raw_l with ε chosen so that Σ_l density_l·|W_l| = (1 − S)·Σ_l |W_l|. A layer whose ε·raw_l
  exceeds 1 is made dense and ε is re-solved over the rest, until none exceeds 1.
* ``explicit``: a per-layer list of sparsities given by the user.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from common.errors import ConfigError
from traces.layers import Layer


def uniform(layers: Sequence[Layer], sparsity: float, first_dense: bool = True) -> list[float]:
    """Density per layer: 1 − ``sparsity`` everywhere, 1.0 for the first layer if asked."""
    dens = [1.0 - sparsity] * len(layers)
    if first_dense and dens:
        dens[0] = 1.0
    return dens


def erk(
    layers: Sequence[Layer],
    sparsity: float,
    dense: Sequence[int] = (),
    power: float = 1.0,
) -> list[float]:
    """ERK densities (RigL), with the layers at indices ``dense`` forced dense.

    Raises ``ConfigError`` when the target cannot be met (the forced-dense layers alone exceed
    the budget).
    """
    sizes = [layer.weight_numel for layer in layers]
    total = sum(sizes)
    budget = (1.0 - sparsity) * total
    is_dense = set(dense)
    raw = [(sum(layer.weight_shape) / math.prod(layer.weight_shape)) ** power for layer in layers]
    if sum(sizes[i] for i in is_dense) > budget * (1 + 1e-12):
        raise ConfigError(None, "sparsity",
                          f"{sparsity} is unreachable with the dense layers kept dense")
    while True:
        fixed = sum(sizes[i] for i in is_dense)
        rest = [i for i in range(len(layers)) if i not in is_dense]
        if not rest:
            break
        divisor = sum(raw[i] * sizes[i] for i in rest)
        eps = (budget - fixed) / divisor
        if eps < 0:
            raise ConfigError(None, "sparsity",
                              f"{sparsity} is unreachable with the dense layers kept dense")
        over = [i for i in rest if eps * raw[i] > 1.0]
        if not over:
            break
        is_dense.update(over)
    return [1.0 if i in is_dense else min(1.0, eps * raw[i]) for i in range(len(layers))]


def explicit(layers: Sequence[Layer], sparsities: Sequence[float], source: str) -> list[float]:
    """Densities from a per-layer list of sparsities (one per layer, in layer order)."""
    if len(sparsities) != len(layers):
        raise ConfigError(source, None,
                          f"expected {len(layers)} per-layer sparsities (one per layer), "
                          f"got {len(sparsities)}")
    out = []
    for layer, s in zip(layers, sparsities, strict=True):
        if not 0.0 <= s <= 1.0 or math.isnan(s):
            raise ConfigError(source, layer.name, f"sparsity must be in [0, 1], got {s}")
        out.append(1.0 - s)
    return out


def weight_density(layers: Sequence[Layer], densities: Sequence[float]) -> float:
    """Overall density of all weights: Σ d_l·|W_l| / Σ |W_l|."""
    total = sum(layer.weight_numel for layer in layers)
    return sum(d * layer.weight_numel for d, layer in zip(densities, layers, strict=True)) / total
