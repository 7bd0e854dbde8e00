"""Pruning at initialisation: SNIP, GraSP and SynFlow masks from one global score threshold.

All three score every weight of the given modules, then keep the (1 - sparsity) highest scores of
all modules together. The model is left as it was: weights, buffers and ``.grad`` are untouched
(gradients are taken with ``torch.autograd.grad``; SynFlow runs on a deep copy).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# GraSP divides the logits by this temperature before its loss (Wang et al. 2020, official code),
# which keeps the Hessian-gradient product from vanishing on confident outputs.
GRASP_TEMPERATURE = 200.0


def _global_keep(scores: list[torch.Tensor], n_keep: int) -> list[torch.Tensor]:
    """Bool masks keeping the n_keep highest scores overall, at least one per tensor.

    Each tensor's best entry is forced in (score +inf) before the global top-k, so no module is
    left empty and the kept count is still exactly n_keep. NaN and -inf scores rank last.
    """
    flat = []
    for s in scores:
        s = torch.nan_to_num(s.detach().flatten().double(), nan=-torch.inf, posinf=torch.inf)
        s[torch.argmax(s)] = torch.inf
        flat.append(s)
    allv = torch.cat(flat)
    keep = torch.zeros(allv.numel(), dtype=torch.bool, device=allv.device)
    keep[torch.topk(allv, n_keep, sorted=False).indices] = True
    out, start = [], 0
    for s in scores:
        out.append(keep[start : start + s.numel()].view(s.shape).to(s.device))
        start += s.numel()
    return out


def _snapshot_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # A train-mode forward updates BatchNorm running statistics; restore them afterwards.
    return {name: b.detach().clone() for name, b in model.named_buffers()}


def _restore_buffers(model: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(saved[name])


def _snip_scores(model, weights, batch, loss_fn) -> list[torch.Tensor]:
    """|g * w|: first-order change of the loss when a weight is removed (Lee et al. 2019)."""
    x, y = batch
    grads = torch.autograd.grad(loss_fn(model(x), y), weights)
    return [(g * w).abs().detach() for g, w in zip(grads, weights, strict=True)]


def _grasp_scores(model, weights, batch, loss_fn) -> list[torch.Tensor]:
    """w * (H g): keep the highest, i.e. remove the highest -w * (H g) as GraSP does.

    GraSP's score S(-w) = -w * Hg estimates how much removing w changes the gradient norm g^T g;
    its code removes the top S(-w) and keeps the rest, which is keeping the top w * Hg.
    """
    x, y = batch
    # The fused attention kernels (flash, memory-efficient) have no double backward; the math
    # one does, and gives the same product.
    with sdpa_kernel(SDPBackend.MATH):
        loss = loss_fn(model(x) / GRASP_TEMPERATURE, y)
    grads = torch.autograd.grad(loss, weights, create_graph=True)
    # d/dw (g . stop_grad(g)) = H g
    z = sum((g * g.detach()).sum() for g in grads)
    hg = torch.autograd.grad(z, weights)
    return [(w * h).detach() for w, h in zip(weights, hg, strict=True)]


def _synflow_masks(
    model: torch.nn.Module,
    modules: list[torch.nn.Module],
    x: torch.Tensor,
    density: float,
    n_keep: int,
    iterations: int,
) -> list[torch.Tensor]:
    """Iterative SynFlow (Tanaka et al. 2020): data-free |w * dR/dw| on the |w|-linearised net.

    R = sum of the outputs for an all-ones input; round r of ``iterations`` keeps the global top
    density**(r / iterations) fraction (exponential schedule), with pruned weights held at zero.
    Runs in float64 (deep nets overflow float32 with positive weights) on a deep copy, in eval
    mode as the reference code does.
    """
    names = {id(m): n for n, m in model.named_modules()}
    work = copy.deepcopy(model).double().eval()
    sub = dict(work.named_modules())
    mods = [sub[names[id(m)]] for m in modules]
    with torch.no_grad():
        for t in list(work.parameters()) + list(work.buffers()):
            if t.is_floating_point():
                t.abs_()
    base = [m.weight.detach().clone() for m in mods]
    weights = [m.weight for m in mods]
    ones = torch.ones_like(x[:1], dtype=torch.float64)
    total = sum(w.numel() for w in weights)
    masks = [torch.ones_like(w, dtype=torch.bool) for w in weights]
    for r in range(1, iterations + 1):
        with torch.no_grad():
            for w, b, m in zip(weights, base, masks, strict=True):
                w.copy_(b * m)
        grads = torch.autograd.grad(work(ones).sum(), weights)
        scores = [
            torch.where(m, (g * w).abs(), -torch.inf)
            for g, w, m in zip(grads, weights, masks, strict=True)
        ]
        keep = n_keep if r == iterations else max(round(density ** (r / iterations) * total), 1)
        masks = _global_keep(scores, max(keep, len(weights)))
    return masks


def prune_at_init(
    model: torch.nn.Module,
    modules: list[torch.nn.Module],
    method: str,
    sparsity: float,
    batch: tuple[torch.Tensor, torch.Tensor],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    iterations: int = 1,
) -> list[torch.Tensor]:
    """Bool masks (one per module, shaped like ``module.weight``) from a global score threshold.

    Keeps round((1 - sparsity) * N) weights of the N in ``modules`` together, at least one per
    module. ``method``: "snip" |g w|, "grasp" w (H g) (see ``_grasp_scores`` for the sign),
    "synflow" (data-free; ``batch`` only gives the input shape; ``iterations`` rounds). The
    model's weights, buffers and gradients are unchanged afterwards.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if not modules:
        return []
    weights = [m.weight for m in modules]
    total = sum(w.numel() for w in weights)
    n_keep = min(max(round((1.0 - sparsity) * total), len(weights)), total)
    if method == "synflow":
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        return _synflow_masks(model, modules, batch[0], 1.0 - sparsity, n_keep, iterations)
    score_fn = {"snip": _snip_scores, "grasp": _grasp_scores}.get(method)
    if score_fn is None:
        raise ValueError(f"unknown method {method!r}; expected snip, grasp or synflow")
    saved = _snapshot_buffers(model)
    try:
        scores = score_fn(model, weights, batch, loss_fn)
    finally:
        _restore_buffers(model, saved)
    return _global_keep(scores, n_keep)
