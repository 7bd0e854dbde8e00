"""Trace format v2: the weightless ``matmul`` layer (two activations, batched over heads), the
``coverage`` object, and version 1 still read."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import InputError, TraceError
from dataflows.gemm import lower
from dataflows.sparse import pack_operands, sparse_work
from simulator.arch import load_arch
from simulator.run import simulate_trace
from traces.format import MANIFEST, Manifest, Trace, TraceWriter
from traces.layers import Layer

PRODUCER = {"name": "test", "version": "0", "tool": "test"}


def _layers() -> tuple[Layer, ...]:
    return (Layer.linear("qkv", 8, 24, tokens=5),
            Layer.matmul("attn.qk", 5, 4, 5, heads=2),
            Layer.matmul("attn.av", 5, 5, 4, heads=2),
            Layer.linear("proj", 8, 8, tokens=5))


def _write(path, version: int = 2, coverage=None, batch: int = 2, meta=None):
    layers = _layers()
    m = Manifest(model="toy", method="dense", sparsity={"sparsity": 0.0}, seed=0,
                 batch_size=batch, dtype="float32", layers=layers, producer=PRODUCER,
                 format_version=version, coverage=coverage)
    w = TraceWriter(path, m)
    rng = np.random.default_rng(0)
    ops = {}
    for la in layers:
        def mk(role, la=la):
            return rng.random(la.operand_shape(role, batch)) < 0.6
        f, x, g = mk("filter"), mk("ifmap"), mk("grad_out")
        ops[la.name] = {"fwd": {"filter": f, "ifmap": x},
                        "bwd_input": {"filter": f, "grad_out": g},
                        "bwd_weight": {"ifmap": x, "grad_out": g}}
    w.write_step(0, ops, meta=meta)
    return ops


def test_matmul_layer_shapes_macs_and_entry():
    la = Layer.matmul("qk", 7, 3, 5, heads=4)
    assert la.ifmap_shape(2) == (2, 4, 7, 3)
    assert la.operand_shape("filter", 2) == (2, 4, 3, 5)
    assert la.grad_out_shape(2) == (2, 4, 7, 5)
    assert la.macs(2) == 2 * 4 * 7 * 3 * 5 and la.params == 0 and la.weight_numel == 0
    d = la.to_dict()
    assert d["kind"] == "matmul" and d["heads"] == 4
    assert "heads" not in Layer.linear("fc", 3, 4).to_dict()  # version-1 entries unchanged
    assert Layer.from_dict(d) == la
    with pytest.raises(InputError, match="heads"):
        Layer.from_dict({**Layer.linear("fc", 3, 4).to_dict(), "heads": 2})
    with pytest.raises(InputError, match="heads"):
        Layer.from_dict({**d, "heads": 0})


def test_v2_round_trip_with_coverage(tmp_path):
    cov = {"recorded_macs": 10, "training_macs": 10, "percent": 100.0, "unrecorded": []}
    ops = _write(tmp_path / "t", coverage=cov)
    t = Trace(tmp_path / "t")
    assert t.manifest.format_version == 2 and t.manifest.coverage == cov
    (st_,) = list(t)
    qk = st_.layers["attn.qk"]
    assert np.array_equal(qk["fwd"]["filter"].unpack(), ops["attn.qk"]["fwd"]["filter"])
    assert qk["bwd_weight"]["grad_out"].shape == (2, 2, 5, 5)


def test_version_1_is_read_and_cannot_hold_a_matmul(tmp_path):
    d = tmp_path / "v1"
    m = Manifest(model="toy", method="dense", sparsity={}, seed=0, batch_size=1,
                 dtype="float32", layers=(Layer.linear("fc", 3, 4),), producer=PRODUCER)
    assert m.to_dict()["format_version"] == 1  # the default: what synth wrote before
    TraceWriter(d, m)
    assert Trace(d).manifest.format_version == 1
    with pytest.raises(ValueError, match="format_version 2"):
        TraceWriter(tmp_path / "bad", Manifest(model="toy", method="dense", sparsity={},
                                               seed=0, batch_size=1, dtype="float32",
                                               layers=_layers(), producer=PRODUCER))
    _write(tmp_path / "t")
    raw = json.loads((tmp_path / "t" / MANIFEST).read_text())
    raw["format_version"] = 1
    (tmp_path / "t" / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(TraceError, match=r"layers\[1\].kind: a matmul layer needs "
                                         r"format_version 2"):
        Trace(tmp_path / "t")


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 6), k=st.integers(1, 6), n=st.integers(1, 6), heads=st.integers(1, 3),
       batch=st.integers(1, 2), phase=st.sampled_from(["fwd", "bwd_input", "bwd_weight"]),
       seed=st.integers(0, 2**16))
def test_matmul_gemms_multiply_to_torch_autograd(m, k, n, heads, batch, phase, seed):
    """The packed operands of every group, multiplied as the GEMM says (in float64, 0/1
    values), give the product, dA or dB that torch autograd computes from the same masks."""
    la = Layer.matmul("mm", m, k, n, heads=heads)
    rng = np.random.default_rng(seed)
    x = rng.random(la.ifmap_shape(batch)) < 0.6
    y = rng.random(la.operand_shape("filter", batch)) < 0.6
    dz = rng.random(la.grad_out_shape(batch)) < 0.6
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ty = torch.tensor(y, dtype=torch.float64, requires_grad=True)
    z = tx @ ty
    z.backward(torch.tensor(dz, dtype=torch.float64))
    want = {"fwd": z.detach().numpy(), "bwd_input": tx.grad.numpy(),
            "bwd_weight": ty.grad.numpy()}[phase]
    masks = {"fwd": (x, y), "bwd_input": (dz, y), "bwd_weight": (dz, x)}[phase]
    g = lower(la, batch, phase)
    assert g.groups == batch * heads and g.macs == la.macs(batch)
    for grp in range(g.groups):
        a, bt = pack_operands(la, batch, phase, *masks, grp)
        a = np.unpackbits(a.view(np.uint8), axis=1, bitorder="little")[:, :g.K]
        bt = np.unpackbits(bt.view(np.uint8), axis=1, bitorder="little")[:, :g.K]
        c = a.astype(np.float64) @ bt.astype(np.float64).T  # M × N
        ref = want.reshape(g.groups, *want.shape[-2:])[grp]
        # bwd_weight computes dBᵀ (N×K of B): the GEMM's C is its transpose
        assert np.array_equal(c, ref.T if phase == "bwd_weight" else ref)


def test_matmul_sparse_work_counts_the_effectual_products():
    arch = load_arch("tensordash")
    la = Layer.matmul("qk", 5, 3, 4, heads=2)
    rng = np.random.default_rng(1)
    x = rng.random(la.ifmap_shape(2)) < 0.5
    y = rng.random(la.operand_shape("filter", 2)) < 0.5
    w = sparse_work(la, 2, "fwd", {"ifmap": x, "filter": y}, arch.rows, arch.cols, arch.lanes,
                    "ws", arch.features)
    assert w.effectual == int(np.einsum("nhmk,nhkj->", x.astype(int), y.astype(int)))
    assert w.algorithmic == la.macs(2)


def test_v2_trace_simulates_and_the_first_layers_bwd_input_follows_the_meta(tmp_path):
    arch = load_arch("tensordash")
    _write(tmp_path / "a")
    res = simulate_trace(str(tmp_path / "a"), arch, "ws", memory="ideal")
    rows = set(zip(res.table["Layer"], res.table["Phase"], strict=True))
    assert ("qkv", "bwd_input") in rows  # v2: nothing dropped by position
    assert ("attn.qk", "bwd_weight") in rows and ("attn.av", "bwd_input") in rows
    _write(tmp_path / "b", meta={"bwd_input_not_computed": ["qkv"]})
    res = simulate_trace(str(tmp_path / "b"), arch, "ws", memory="ideal")
    assert ("qkv", "bwd_input") not in set(zip(res.table["Layer"], res.table["Phase"],
                                               strict=True))
