"""Sparsity methods decide the masks the issue asks for (tiny models and budgets)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from traces import density as dens
from traces.format import Trace
from traces.patterns import keep_count
from trainers.condensed import CondensedLinear
from trainers.methods import (
    SWAT,
    RigL,
    SRigL,
    Static,
    make_method,
    weight_layer,
)
from trainers.models import build_model
from trainers.recorder import record
from trainers.sparse_fn import BWW_IFMAP, FWD_FILTER, GRAD_W, sparse_layers, sparsify


def _setup(name: str, method, seed: int = 0, batch: int = 16, steps: int = 20):
    torch.manual_seed(seed)
    model = sparsify(build_model(name))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch * 4, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (batch * 4,), generator=g)
    method.attach(model, opt, steps, (x[:batch], y[:batch]), torch.Generator().manual_seed(1))
    return model, opt, x, y


def _step(model, opt, method, step, x, y, batch=16, after=None):
    i = (step * batch) % len(y)
    method.before_step(step)
    loss = F.cross_entropy(model(x[i:i + batch]), y[i:i + batch])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    stepped = method.before_optimizer(step)
    if stepped:
        opt.step()
    method.after_optimizer(step)
    if after is not None:
        after(step, stepped)
    return loss.item()


# ---- SWAT -------------------------------------------------------------------------------------
def test_swat_u_realized_sparsity_is_nominal_at_recompute_steps(tmp_path):
    method = SWAT(0.9, "U", period=3)
    model, opt, x, y = _setup("lenet5", method)
    with record(model, tmp_path / "t", every=1, method=method):
        for step in range(7):
            _step(model, opt, method, step, x, y)
    trace = Trace(tmp_path / "t")
    layers = {la.name: la for la in trace.manifest.layers}
    assert trace.manifest.sparsity["layer_density"] == [1.0, 0.1, 0.1, 0.1, 0.1]
    thresholds = {}
    for st in trace:
        meta = st.meta["thresholds"]
        assert "conv1" not in meta  # SWAT-U: first layer dense (weights and activations)
        assert st.layers["conv1"]["fwd"]["filter"].dense
        assert (st.layers["conv1"]["bwd_weight"]["ifmap"].nnz
                == st.layers["conv1"]["fwd"]["ifmap"].nnz)
        for name in ("conv2", "fc1", "fc2", "fc3"):
            ops = st.layers[name]
            assert meta[name]["recomputed"] == (st.step % 3 == 0)
            if st.step % 3 == 0:
                thresholds[name] = meta[name]["filter_threshold"]
                n_w = layers[name].weight_numel
                assert ops["fwd"]["filter"].nnz == keep_count(1 - 0.9, n_w, at_least=1)
                assert ops["bwd_input"]["filter"].nnz == keep_count(1 - 0.9, n_w, at_least=1)
                a = ops["fwd"]["ifmap"]
                assert (ops["bwd_weight"]["ifmap"].nnz
                        == min(keep_count(1 - 0.9, a.numel, at_least=1), a.nnz))
            else:  # thresholds are reused between recomputations
                assert meta[name]["filter_threshold"] == thresholds[name]
            # A~ is a subset of the A the forward multiplied
            a_used = ops["fwd"]["ifmap"].unpack()
            assert not (ops["bwd_weight"]["ifmap"].unpack() & ~a_used).any()
            assert ops["bwd_input"]["grad_out"].nnz == ops["bwd_weight"]["grad_out"].nnz


def test_swat_channel_variant_keeps_whole_kernel_slices():
    method = SWAT(0.9, "U", structured=True, period=5)
    model, opt, x, y = _setup("lenet5", method)
    method.before_step(0)
    conv2 = dict(sparse_layers(model))["conv2"]
    mask = conv2.masks[FWD_FILTER](conv2.weight.detach())
    per_slice = mask.reshape(16, 6, 25).sum(-1)
    assert set(per_slice.unique().tolist()) <= {0, 25}
    assert int((per_slice == 25).sum()) == keep_count(1 - 0.9, 16 * 6, at_least=1)
    act = conv2.masks[BWW_IFMAP](torch.rand(4, 6, 14, 14))  # activations stay unstructured
    assert int(act.sum()) == keep_count(1 - 0.9, 4 * 6 * 14 * 14, at_least=1)


def test_swat_erk_sparsifies_every_layer_with_erk_densities():
    method = SWAT(0.8, "ERK")
    model, *_ = _setup("lenet5", method)
    layers = sparse_layers(model)
    want = dens.erk([weight_layer(n, m) for n, m in layers], 0.8)
    assert [method.density[n] for n, _ in layers] == want
    assert set(method.rules) == {n for (n, _), d in zip(layers, want, strict=True) if d < 1}


def test_swat_m_reallocates_from_momentum_within_the_budget():
    method = SWAT(0.9, "M")
    model, opt, x, y = _setup("lenet5", method)
    assert method.period == 20 and list(method.density.values()) == pytest.approx([0.1] * 5)
    for step in range(4):
        _step(model, opt, method, step, x, y)
    sizes = {n: m.weight.numel() for n, m in sparse_layers(model)}
    d = method.density
    assert len({round(v, 6) for v in d.values()}) > 1  # no longer uniform
    assert all(0 < v <= 1 for v in d.values())
    kept = sum(d[n] * sizes[n] for n in sizes)
    assert kept == pytest.approx(0.1 * sum(sizes.values()), abs=len(sizes) + 1)
    for name, (w_rule, a_rule) in method.rules.items():
        assert w_rule.sparsity == a_rule.sparsity == pytest.approx(1 - d[name])


# ---- static -----------------------------------------------------------------------------------
def test_static_uniform_masks_stay_fixed_and_only_kept_weights_learn():
    method = Static(0.9, "uniform")
    model, opt, x, y = _setup("lenet5", method)
    masks = {n: m.clone() for n, m in method.mask.items()}
    assert masks["conv1"].all()  # uniform keeps the first layer dense
    for m in list(masks.values())[1:]:
        assert int(m.sum()) == round(0.1 * m.numel())
    for step in range(5):
        _step(model, opt, method, step, x, y)
    for name, layer in sparse_layers(model):
        assert torch.equal(method.mask[name], masks[name])
        assert not layer.weight[~masks[name]].any()
        assert not layer.weight.grad[~masks[name]].any()  # dW computed only where kept
        assert layer.masks[GRAD_W] is method.mask[name]


@pytest.mark.parametrize("kind", ["snip", "grasp", "synflow"])
def test_static_saliency_densities_meet_the_global_budget(kind):
    method = Static(0.9, kind)
    model, *_ = _setup("lenet5", method)
    kept = sum(int(m.sum()) for m in method.mask.values())
    total = sum(m.numel() for m in method.mask.values())
    assert kept == pytest.approx(0.1 * total, abs=len(method.mask))
    assert method.config()["density"] == kind


def test_static_eoi_weights_are_orthogonal_with_the_layer_density():
    for name in ("mlp3", "lenet5"):
        method = Static(0.8, "erk", init="eoi")
        model, opt, x, y = _setup(name, method)
        for lname, layer in sparse_layers(model):
            w = layer.weight.detach().double()
            h = w if w.dim() == 2 else w[:, :, w.shape[2] // 2, w.shape[3] // 2]
            gram = h @ h.T if h.shape[0] <= h.shape[1] else h.T @ h
            torch.testing.assert_close(gram, torch.eye(gram.shape[0], dtype=gram.dtype),
                                       atol=1e-5, rtol=0)
            assert not w[~method.mask[lname]].any()
        # the masks keep the ERK densities (EOI's expected density: loosely, it is random)
        want = dens.erk([weight_layer(n, m) for n, m in sparse_layers(model)], 0.8)
        got = [method.layer_density()[n] for n, _ in sparse_layers(model)]
        assert got == pytest.approx(want, abs=0.06)
        _step(model, opt, method, 0, x, y)  # and it trains


# ---- RigL / SRigL -----------------------------------------------------------------------------
def test_rigl_updates_keep_layer_densities_and_grow_zero_weights():
    steps = 24
    method = RigL(0.9, "erk", delta_t=4)
    model, opt, x, y = _setup("mlp3", method, steps=steps)
    assert method.t_end == 18
    nnz0 = {n: int(m.sum()) for n, m in method.mask.items()}
    dynamic = [not bool(m.all()) for m in method.mask.values()]
    assert dynamic == [True, True, False]  # ERK 90 %: fc3 (10 x 100) comes out dense
    seen = []

    def check(step, stepped):
        update = step > 0 and step % 4 == 0 and step < 18
        assert stepped == (not update)  # an update step replaces the optimizer step
        for name, layer in sparse_layers(model):
            assert int(method.mask[name].sum()) == nnz0[name]
            assert not layer.weight[~method.mask[name]].any()
        if update:
            events = method.pop_events()
            seen.append(step)
            assert {e["layer"] for e in events} == {"fc1", "fc2"}
            for e in events:
                assert e["step"] == step and e["nnz"] == nnz0[e["layer"]]
                assert e["dropped"] == e["grown"] > 0
                assert e["fraction"] == pytest.approx(0.15 * (1 + math.cos(math.pi * step / 18)))

    def grad_w_mode(step):
        method.before_step(step)
        return [layer.masks[GRAD_W] is None for _, layer in sparse_layers(model)]

    assert grad_w_mode(4) == dynamic  # dense dW for the growth criterion
    assert grad_w_mode(5) == [False, False, False]
    for step in range(steps):
        _step(model, opt, method, step, x, y, after=check)
    assert seen == [4, 8, 12, 16]


@pytest.mark.parametrize(("density", "gamma"), [("erk", 0.3), ("uniform", 0.9)])
def test_srigl_constant_fan_in_and_ablation_after_every_update(density, gamma):
    steps = 30
    method = SRigL(0.9, density, delta_t=2, gamma_sal=gamma)
    model, opt, x, y = _setup("mlp3", method, steps=steps)
    layers = sparse_layers(model)
    budget = method.budget
    # ERK 90 % makes fc3 (10 x 100) dense; uniform keeps fc1 (the first layer) dense
    assert list(budget) == (["fc1", "fc2"] if density == "erk" else ["fc2", "fc3"])
    ablated = {n: [] for n in budget}

    def check(step, stepped):
        if stepped:
            return
        events = {e["layer"]: e for e in method.pop_events()}
        assert set(events) == set(budget)
        for name, layer in layers:
            if name not in budget:
                assert method.mask[name].all()
                continue
            rows = method.mask[name].reshape(layer.weight.shape[0], -1)
            counts = rows.sum(1)
            e = events[name]
            active = counts > 0
            assert set(counts[active].tolist()) == {e["k"]}  # exactly k per active neuron
            assert not layer.weight[~active].any()  # ablated neurons are all zero
            assert e["ablated"] == int((~active).sum())
            assert 0 <= budget[name] - int(counts.sum()) < int(active.sum())  # density held
            ablated[name].append(e["ablated"])

    for step in range(steps):
        _step(model, opt, method, step, x, y, after=check)
    assert all(len(v) == len(range(2, 22, 2)) for v in ablated.values())
    if density == "uniform":
        assert max(ablated["fc2"]) > 0  # a high gamma_sal ablates neurons ...
        assert max(ablated["fc3"]) == 0  # ... but never in the last layer

    # a trained SRigL layer condenses to the same function
    fc2 = dict(layers)["fc2"]
    cond = CondensedLinear.from_linear(fc2, method.mask["fc2"], full_output=True)
    h = torch.rand(5, 300)
    with torch.no_grad():
        torch.testing.assert_close(cond(h), fc2(h))


def test_make_method_names():
    for name in ("dense", "swat", "swat-erk", "swat-m", "static", "rigl", "srigl"):
        assert make_method(name, 0.5).name == name
    assert make_method("rigl", 0.5).density_kind == "erk"
    assert make_method("static", 0.5).density_kind == "uniform"
