"""Synthetic traces: method presets, densities, patterns and determinism, read back from disk."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from common.errors import ConfigError
from simulator.arch import load_arch
from simulator.run import simulate_trace
from tests.traces.legacy import write_version_1
from traces.codec import GAPS_ZSTD
from traces.format import CODEC_KEY, Trace
from traces.models import get_model
from traces.patterns import keep_count
from traces.synth import SynthConfig, plan, synthesize


def _synth(tmp_path, name="t", **kw) -> Trace:
    kw.setdefault("model", "lenet5")
    kw.setdefault("batch", 2)
    synthesize(SynthConfig(**kw), tmp_path / name)
    return Trace(tmp_path / name)


def test_swat_operands_per_phase(tmp_path):
    trace = _synth(tmp_path, method="swat", sparsity=0.8)
    m = trace.manifest
    assert m.method == "swat" and m.generator["seed"] == 0
    step = next(iter(trace))
    dens = m.sparsity["layer_density"]
    assert dens[0] == 1.0 and all(d == pytest.approx(0.2) for d in dens[1:])
    for li, layer in enumerate(m.layers):
        ops = step.layers[layer.name]
        w = ops["fwd"]["filter"]
        # the same weight mask in fwd and bwd_input
        np.testing.assert_array_equal(w.unpack(), ops["bwd_input"]["filter"].unpack())
        assert ops["fwd"]["ifmap"].dense
        assert ops["bwd_input"]["grad_out"].dense and ops["bwd_weight"]["grad_out"].dense
        a = ops["bwd_weight"]["ifmap"]
        if li == 0:
            assert w.dense and a.dense
        else:
            assert w.nnz == keep_count(0.2, layer.weight_numel)
            assert a.nnz == keep_count(0.2, a.numel)
        assert "grad_w" not in ops["bwd_weight"]


def test_static_masks_weight_gradient(tmp_path):
    trace = _synth(tmp_path, method="static", sparsity=0.7)
    step = next(iter(trace))
    for layer in trace.manifest.layers[1:]:
        ops = step.layers[layer.name]
        np.testing.assert_array_equal(ops["bwd_weight"]["grad_w"].unpack(),
                                      ops["fwd"]["filter"].unpack())
        assert ops["bwd_weight"]["ifmap"].dense


def test_dense_method_with_relu_sparsity(tmp_path):
    trace = _synth(tmp_path, method="dense", relu_sparsity=0.5)
    step = next(iter(trace))
    layers = trace.manifest.layers
    assert step.layers[layers[0].name]["fwd"]["ifmap"].dense  # the network input
    for layer in layers[1:]:
        ops = step.layers[layer.name]
        assert ops["fwd"]["filter"].dense
        a = ops["fwd"]["ifmap"]
        assert a.nnz == keep_count(0.5, a.numel)
        np.testing.assert_array_equal(a.unpack(), ops["bwd_weight"]["ifmap"].unpack())


@pytest.mark.parametrize("clustered", [False, True])
def test_swat_topk_picks_among_natural_nonzeros(tmp_path, clustered):
    pattern = "clustered" if clustered else "random"
    trace = _synth(tmp_path, method="swat", sparsity=0.75, relu_sparsity=0.5, pattern=pattern)
    step = next(iter(trace))
    for layer in trace.manifest.layers[1:]:
        ops = step.layers[layer.name]
        natural = ops["fwd"]["ifmap"].unpack()
        sparse = ops["bwd_weight"]["ifmap"].unpack()
        assert not (sparse & ~natural).any()
        assert sparse.sum() == min(keep_count(0.25, sparse.size), natural.sum())


def test_erk_is_default_for_rigl_and_densities_recorded(tmp_path):
    trace = _synth(tmp_path, method="rigl", sparsity=0.9, model="resnet20")
    m = trace.manifest
    assert m.sparsity["density"] == "erk"
    dens = np.array(m.sparsity["layer_density"])
    sizes = np.array([la.weight_numel for la in m.layers])
    assert (dens * sizes).sum() / sizes.sum() == pytest.approx(0.1, abs=1e-9)
    assert len(set(np.round(dens, 6))) > 2  # not uniform
    step = next(iter(trace))
    for layer, d in zip(m.layers, dens, strict=True):
        w = step.layers[layer.name]["fwd"]["filter"]
        assert w.nnz == (w.numel if d >= 1 else keep_count(d, layer.weight_numel))


def test_srigl_constant_fan_in_kept_across_updates(tmp_path):
    trace = _synth(tmp_path, method="srigl", sparsity=0.8, model="mlp3", steps=3)
    masks = {}
    for step in trace:
        for layer in trace.manifest.layers:
            w = step.layers[layer.name]["fwd"]["filter"]
            if w.dense:
                continue
            rows = w.unpack().reshape(layer.out_channels, -1).sum(axis=1)
            assert len(set(rows.tolist())) == 1  # constant fan-in
            masks.setdefault(layer.name, []).append(w.unpack())
        if step.step:
            assert {e["type"] for e in step.events} == {"mask_update"}
    for seq in masks.values():
        assert seq[0].sum() == seq[1].sum() == seq[2].sum()  # density constant
        assert (seq[0] != seq[1]).any()  # but the mask moved


def test_nm_pattern_implies_sparsity_and_holds(tmp_path):
    trace = _synth(tmp_path, method="static", pattern="2:4", model="mlp3")
    assert trace.manifest.sparsity["sparsity"] == 0.5
    step = next(iter(trace))
    for layer in trace.manifest.layers[1:]:
        w = step.layers[layer.name]["fwd"]["filter"].unpack().reshape(layer.out_channels, -1)
        full = w[:, : (w.shape[1] // 4) * 4].reshape(w.shape[0], -1, 4)
        assert (full.sum(axis=2) == 2).all()


def test_explicit_layer_sparsity(tmp_path):
    n = len(get_model("lenet5").layers)
    sp = tuple(np.linspace(0.0, 0.9, n).round(3))
    trace = _synth(tmp_path, method="swat", layer_sparsity=sp)
    assert trace.manifest.sparsity["density"] == "explicit"
    assert trace.manifest.sparsity["layer_density"] == pytest.approx([1 - s for s in sp])


def test_same_seed_byte_identical_other_seed_differs(tmp_path):
    kw = dict(method="swat", sparsity=0.9, pattern="clustered", relu_sparsity=0.3, steps=2)
    a = _synth(tmp_path, "a", seed=7, **kw)
    b = _synth(tmp_path, "b", seed=7, **kw)
    c = _synth(tmp_path, "c", seed=8, **kw)
    for s in a.manifest.steps:
        fa = (a.path / s["file"]).read_bytes()
        assert fa == (b.path / s["file"]).read_bytes()
        assert fa != (c.path / s["file"]).read_bytes()
    assert (a.path / "manifest.json").read_bytes() == (b.path / "manifest.json").read_bytes()


@pytest.mark.parametrize("kw, flag", [
    (dict(model="nope", sparsity=0.5), "model"),
    (dict(sparsity=1.5), "--sparsity"),
    (dict(sparsity=-0.1), "--sparsity"),
    (dict(sparsity=0.5, method="magic"), "--method"),
    (dict(sparsity=0.9, pattern="2:4"), "--sparsity"),
    (dict(sparsity=0.5, pattern="7:4"), "--pattern"),
    (dict(sparsity=0.5, batch=0), "--batch"),
    (dict(layer_sparsity=(0.5, 0.5)), "--layer-sparsity"),
    (dict(sparsity=0.5, relu_sparsity=1.0), "--relu-sparsity"),
    (dict(method="swat"), "--sparsity"),
    (dict(method="dense", sparsity=0.5), "--sparsity"),
])
def test_bad_config_raises_config_error(kw, flag):
    kw.setdefault("model", "lenet5")
    with pytest.raises(ConfigError) as info:
        plan(SynthConfig(**kw))
    assert flag in str(info.value)


def test_failed_synth_leaves_no_output(tmp_path):
    with pytest.raises(ConfigError):
        synthesize(SynthConfig(model="lenet5", sparsity=2.0), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_trace_is_version_2_with_gaps_zstd_masks(tmp_path):
    trace = _synth(tmp_path, method="swat", sparsity=0.8, steps=2)
    assert trace.manifest.format_version == 2
    first = trace.manifest.layers[0].name
    for sd in trace:
        assert sd.meta == {"synthetic": True, "bwd_input_not_computed": [first]}
        with np.load(sd.file) as npz:
            assert json.loads(npz["index"].tobytes())[CODEC_KEY] == GAPS_ZSTD


def test_simulates_as_the_version_1_trace_of_its_masks(tmp_path):
    """What synth wrote before (version 1, packbits, the first layer's input gradient left out
    by position) and what it writes now give the same outputs (the modeled memory's timing
    included), but for the trace's path and identity."""
    trace = _synth(tmp_path, method="swat", sparsity=0.9)
    write_version_1(trace, tmp_path / "v1")
    arch = load_arch("tensordash")
    new, v1 = (simulate_trace(p, arch, "os", memory="modeled", timeline=True)
               for p in (tmp_path / "t", tmp_path / "v1"))
    pd.testing.assert_frame_equal(new.table, v1.table)
    pd.testing.assert_frame_equal(new.baseline, v1.baseline)
    np.testing.assert_array_equal(new.events, v1.events)
    differ = {k for k in new.meta.keys() | v1.meta.keys() if new.meta.get(k) != v1.meta.get(k)}
    assert differ == {"trace", "trace_id"}
