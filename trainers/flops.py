"""The reference count of a training step's MACs: ``torch.utils.flop_counter.FlopCounterMode``,
with two miscounts of torch 2.13 corrected.

* A grouped convolution's weight gradient is counted ``groups`` times too high (its formula
  treats the gradient as one ungrouped convolution); here both gradients of a convolution count
  its forward MACs each, as ``traces.layers.Layer.macs`` does.
* ``F.scaled_dot_product_attention`` on the CPU runs
  ``_scaled_dot_product_flash_attention_for_cpu``, for which torch has no formula (it counts
  zero); here it counts Q·Kᵀ and P·V forward, and the four products of its backward (dV, dP,
  dQ, dK).

``training_macs`` runs one training step (forward and backward) under the counter; the recorder's
coverage and the tests compare traces with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


def _conv_backward(
    grad_out_shape: Any,
    x_shape: Any,
    w_shape: Any,
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """FLOPs of ``convolution_backward``: each computed gradient the forward's MACs, × 2."""
    output_mask = args[-1]
    transposed = args[4]
    fwd = math.prod(x_shape if transposed else grad_out_shape) * math.prod(w_shape[1:])
    return 2 * fwd * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _sdpa_macs(q: Any, k: Any, v: Any) -> int:
    lead = math.prod(q[:-2])  # batch × query heads (grouped-query keys are repeated)
    return lead * q[-2] * k[-2] * (q[-1] + v[-1])


def _sdpa_cpu(q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return 2 * _sdpa_macs(q, k, v)


def _sdpa_cpu_backward(
    grad_out: Any, q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    return 4 * _sdpa_macs(q, k, v)


CORRECTIONS = {
    aten.convolution_backward: _conv_backward,
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward,
}


def training_macs(step: Callable[[], Any]) -> int:
    """Multiply-accumulates of ``step()`` (a forward and its backward), by torch's flop counter
    with the corrections above (FLOPs / 2)."""
    with FlopCounterMode(display=False, custom_mapping=CORRECTIONS) as counter:
        step()
    return counter.get_total_flops() // 2
