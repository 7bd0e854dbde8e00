"""Pruning at init: exact global budget, scores against direct computations, no side effects."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainers.saliency import GRASP_TEMPERATURE, prune_at_init

METHODS = ("snip", "grasp", "synflow")


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 5)
    )


def _convnet(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 4),
    )


def _batch(shape, classes, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randint(0, classes, (shape[0],), generator=g)


def _layers(model):
    return [m for m in model if isinstance(m, (nn.Linear, nn.Conv2d))]


def _topk_mask(scores, n_keep):
    flat = torch.cat([s.flatten() for s in scores])
    return flat >= torch.topk(flat, n_keep).values[-1]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_global_budget_and_no_side_effects(method, sparsity):
    model = _convnet()
    layers = _layers(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = prune_at_init(model, layers, method, sparsity, _batch((6, 3, 6, 6), 4, 0), iterations=3)
    total = sum(m.weight.numel() for m in layers)
    kept = sum(int(m.sum()) for m in masks)
    assert abs(kept - (1 - sparsity) * total) <= 1
    for mask, layer in zip(masks, layers, strict=True):
        assert mask.dtype == torch.bool and mask.shape == layer.weight.shape and mask.any()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN buffers
    assert all(p.grad is None for p in model.parameters())


def _grasp_reference(model, x, y):
    """w * (H g) with H g = d/dw (||g||^2 / 2), by torch.func on a functional copy."""
    names = [n for n, _ in model.named_parameters() if n.endswith("weight")]
    fixed = {n: p.detach() for n, p in model.named_parameters() if not n.endswith("weight")}
    ws = [dict(model.named_parameters())[n].detach().clone().requires_grad_() for n in names]

    def loss(*v):
        out = torch.func.functional_call(model, {**fixed, **dict(zip(names, v, strict=True))}, (x,))
        return F.cross_entropy(out / GRASP_TEMPERATURE, y)

    g = torch.autograd.grad(loss(*ws), ws, create_graph=True)
    hg = torch.autograd.grad(0.5 * sum((gi * gi).sum() for gi in g), ws)
    return [(w * h).detach() for w, h in zip(ws, hg, strict=True)]


def _snip_reference(model, x, y):
    ws = [m.weight for m in _layers(model)]
    g = torch.autograd.grad(F.cross_entropy(model(x), y), ws)
    return [(gi * w).abs().detach() for gi, w in zip(g, ws, strict=True)]


def _synflow_reference(model):
    """One-shot SynFlow score: |w * dR/dw| of the |w| network on an all-ones input."""
    lin = copy.deepcopy(model).double()
    for p in lin.parameters():
        p.data.abs_()
    ws = [m.weight for m in _layers(lin)]
    g = torch.autograd.grad(lin(torch.ones(1, 20, dtype=torch.float64)).sum(), ws)
    return [(gi * w).abs().detach() for gi, w in zip(g, ws, strict=True)]


def test_snip_keeps_largest_g_times_w():
    model = _mlp()
    x, y = _batch((8, 20), 5, 1)
    scores = _snip_reference(model, x, y)
    n_keep = round(0.2 * sum(s.numel() for s in scores))
    masks = prune_at_init(model, _layers(model), "snip", 0.8, (x, y))
    assert torch.equal(torch.cat([m.flatten() for m in masks]), _topk_mask(scores, n_keep))


def test_grasp_keeps_largest_w_times_hessian_gradient():
    model = _mlp(3)
    x, y = _batch((8, 20), 5, 2)
    scores = _grasp_reference(model, x, y)
    n_keep = round(0.3 * sum(s.numel() for s in scores))
    masks = prune_at_init(model, _layers(model), "grasp", 0.7, (x, y))
    assert torch.equal(torch.cat([m.flatten() for m in masks]), _topk_mask(scores, n_keep))


def test_synflow_is_data_independent_and_not_magnitude():
    model = _convnet()
    layers = _layers(model)
    a = prune_at_init(model, layers, "synflow", 0.9, _batch((4, 3, 6, 6), 4, 0), iterations=5)
    b = prune_at_init(model, layers, "synflow", 0.9, _batch((9, 3, 6, 6), 4, 7), iterations=5)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    # SynFlow balances layers: not the same as global magnitude pruning
    mag = _topk_mask([m.weight.abs() for m in layers], sum(int(m.sum()) for m in a))
    assert not torch.equal(torch.cat([m.flatten() for m in a]), mag)


@pytest.mark.parametrize("method", METHODS)
def test_masks_beat_random(method):
    """Each method's kept set scores far higher on its own criterion than a random set."""
    model = _mlp(1)
    x, y = _batch((16, 20), 5, 3)
    masks = prune_at_init(model, _layers(model), method, 0.8, (x, y))
    kept = torch.cat([m.flatten() for m in masks])
    rand = kept[torch.randperm(kept.numel(), generator=torch.Generator().manual_seed(0))]
    assert not torch.equal(kept, rand)
    ref = {
        "snip": lambda: _snip_reference(model, x, y),
        "grasp": lambda: _grasp_reference(model, x, y),
        "synflow": lambda: _synflow_reference(model),
    }[method]()
    score = torch.cat([s.flatten() for s in ref]).double()
    assert score[kept].sum() > score[rand].sum() + 0.5 * score[kept].abs().sum()


def test_at_least_one_weight_per_module():
    model = _mlp()
    layers = _layers(model)
    with torch.no_grad():
        layers[1].weight.mul_(1e-12)  # a layer SNIP would wipe out entirely
    masks = prune_at_init(model, layers, "snip", 0.95, _batch((8, 20), 5, 0))
    assert int(masks[1].sum()) >= 1
    with pytest.raises(ValueError):
        prune_at_init(model, layers, "magnitude", 0.5, _batch((8, 20), 5, 0))


def test_grasp_through_fused_attention_matches_the_reference():
    """GraSP needs a double backward; the fused attention kernels have none (it used to fail
    with "derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward")."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from trainers.models import build_model

    torch.manual_seed(0)
    model = build_model("vit-mini", 3, 10, (32, 32))
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    x, y = _batch((4, 3, 32, 32), 10, 5)
    with pytest.raises(RuntimeError, match="derivative"):  # what a plain double backward does
        g = torch.autograd.grad(F.cross_entropy(model(x), y), [layers[0].weight],
                                create_graph=True)
        torch.autograd.grad(g[0].sum(), [layers[0].weight])
    masks = prune_at_init(model, layers, "grasp", 0.9, (x, y))
    names = {id(m): n + ".weight" for n, m in model.named_modules()}
    wanted = [names[id(m)] for m in layers]
    fixed = {n: p.detach() for n, p in model.named_parameters() if n not in wanted}
    ws = [m.weight.detach().clone().requires_grad_() for m in layers]
    with sdpa_kernel(SDPBackend.MATH):
        out = torch.func.functional_call(model, {**fixed, **dict(zip(wanted, ws, strict=True))},
                                         (x,))
        g = torch.autograd.grad(F.cross_entropy(out / GRASP_TEMPERATURE, y), ws,
                                create_graph=True)
        hg = torch.autograd.grad(0.5 * sum((gi * gi).sum() for gi in g), ws)
    scores = [(w * h).detach() for w, h in zip(ws, hg, strict=True)]
    total = sum(s.numel() for s in scores)
    n_keep = round(0.1 * total)
    got = torch.cat([m.flatten() for m in masks])
    assert int(got.sum()) == n_keep
    assert torch.equal(got, _topk_mask(scores, n_keep))
