"""Trace format v1 and v2: write → read round trips (both mask codecs) and validation of every
malformed piece."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import TraceError
from traces.codec import CODECS, GAPS_ZSTD, PACKBITS
from traces.format import (
    CODEC_KEY,
    MANIFEST,
    PHASE_OPERANDS,
    PHASES,
    Manifest,
    PackedMask,
    Trace,
    TraceWriter,
    _set_bits,
    write_npz,
)
from traces.layers import Layer
from traces.patterns import parse_pattern, weight_mask

PATTERNS = ["random", "clustered", "2:4", "fanin", "channel", "filter", "kernel", "block:2x2"]


@st.composite
def layers_st(draw):
    n = draw(st.integers(1, 3))
    out = []
    for i in range(n):
        if draw(st.booleans()):
            g = draw(st.sampled_from([1, 2]))
            cin = g * draw(st.integers(1, 3))
            cout = g * draw(st.integers(1, 3))
            k = draw(st.integers(1, 3))
            hw = draw(st.integers(k, 6))
            out.append(Layer.conv(f"c{i}", cin, cout, k, hw, stride=draw(st.integers(1, 2)),
                                  padding=draw(st.integers(0, 1)), groups=g))
        else:
            out.append(Layer.linear(f"l{i}", draw(st.integers(1, 9)), draw(st.integers(1, 9)),
                                    tokens=draw(st.integers(1, 3))))
    return out


def _manifest(layers, batch=2, **kw) -> Manifest:
    base = dict(model="test", method="swat", sparsity={"sparsity": 0.5}, seed=0,
                batch_size=batch, dtype="float32", layers=tuple(layers),
                producer={"name": "sparsesim", "version": "test", "tool": "test"})
    base.update(kw)
    return Manifest(**base)


def _random_step(layers, batch, rng, pattern, with_values):
    ops, expect, values = {}, {}, {}
    for layer in layers:
        d = float(rng.uniform(0.05, 1.0))
        w = weight_mask(layer, d, parse_pattern(pattern), rng)
        a = rng.random(layer.ifmap_shape(batch)) < rng.uniform(0, 1)
        dz = None if rng.random() < 0.5 else rng.random(layer.grad_out_shape(batch)) < 0.3
        ops[layer.name] = {
            "fwd": {"filter": w, "ifmap": None},
            "bwd_input": {"filter": w, "grad_out": dz},
            "bwd_weight": {"ifmap": a, "grad_out": dz, "grad_w": w},
        }
        if with_values:
            values[(layer.name, "bwd_weight", "ifmap")] = rng.standard_normal(
                int(a.sum())).astype(np.float32)
        expect[layer.name] = ops[layer.name]
    return ops, expect, values


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layers=layers_st(), batch=st.integers(1, 3), pattern=st.sampled_from(PATTERNS),
       seed=st.integers(0, 2**16), nsteps=st.integers(1, 2), with_values=st.booleans(),
       codec=st.sampled_from(CODECS))
def test_round_trip(tmp_path_factory, layers, batch, pattern, seed, nsteps, with_values, codec):
    rng = np.random.default_rng(seed)
    path = tmp_path_factory.mktemp("trace")
    version = 1 if codec == PACKBITS else 2
    writer = TraceWriter(path, _manifest(layers, batch, format_version=version), codec=codec)
    written = []
    for s in range(nsteps):
        ops, expect, values = _random_step(layers, batch, rng, pattern, with_values)
        writer.write_step(s * 10, ops, values=values, meta={"k": s}, events=[{"s": s}])
        written.append((expect, values))
    trace = Trace(path)
    assert trace.steps == [s * 10 for s in range(nsteps)]
    assert [la.to_dict() for la in trace.manifest.layers] == [la.to_dict() for la in layers]
    for step, (expect, values) in zip(trace, written, strict=True):
        assert step.meta == {"k": step.step // 10}
        assert step.codec == codec
        index = trace.read_index(step.step)
        assert (index.codec, index.meta, index.events, index.layers) == (
            codec, step.meta, step.events, {})
        for layer in layers:
            for phase in PHASES:
                got = step.layers[layer.name][phase]
                for role, want in expect[layer.name][phase].items():
                    op = got[role]
                    assert op.shape == layer.operand_shape(role, batch)
                    if want is None:
                        assert op.dense and op.nnz == op.numel
                    else:
                        np.testing.assert_array_equal(op.unpack(), want)
                        assert op.nnz == int(want.sum())
                    v = values.get((layer.name, phase, role))
                    if v is not None:
                        np.testing.assert_array_equal(op.values, v)
            assert set(step.layers[layer.name]["bwd_weight"]) == {"ifmap", "grad_out", "grad_w"}


def test_identical_masks_stored_once(tmp_path):
    layer = Layer.conv("c", 4, 8, 3, 6)
    w = np.random.default_rng(0).random(layer.weight_shape) < 0.3
    writer = TraceWriter(tmp_path, _manifest([layer]))
    f = writer.write_step(0, {"c": {"fwd": {"filter": w, "ifmap": None},
                                    "bwd_input": {"filter": w.copy(), "grad_out": None},
                                    "bwd_weight": {"ifmap": None, "grad_out": None,
                                                   "grad_w": w}}})
    with zipfile.ZipFile(f) as zf:
        names = zf.namelist()
    assert sorted(names) == ["L0000.fwd.filter.mask.npy", "index.npy"]


def test_writes_are_deterministic(tmp_path):
    layer = Layer.linear("fc", 30, 7)
    w = np.random.default_rng(1).random(layer.weight_shape) < 0.5
    ops = {"fc": {ph: dict.fromkeys(PHASE_OPERANDS[ph]) for ph in PHASES}}
    ops["fc"]["fwd"]["filter"] = w
    blobs = []
    for name in ("a", "b"):
        TraceWriter(tmp_path / name, _manifest([layer])).write_step(3, ops)
        blobs.append([(tmp_path / name / f).read_bytes() for f in (MANIFEST, "step_00000003.npz")])
    assert blobs[0] == blobs[1]


def test_packed_mask_bit_order():
    m = np.zeros(10, dtype=bool)
    m[[0, 9]] = True
    pm = PackedMask.from_bool(m)
    assert pm.bits.tolist() == [0b10000000, 0b01000000]
    assert pm.nnz == 2 and pm.density == 0.2


@given(st.integers(0, 40), st.integers(0, 2**31))
def test_set_bits_counts_every_byte(n, seed):
    """The nonzero count of a packed mask, eight bytes to a word and the tail byte by byte,
    equals the count of its unpacked bits."""
    bits = np.random.default_rng(seed).integers(0, 256, size=n, dtype=np.uint8)
    assert _set_bits(bits) == int(np.unpackbits(bits).sum())


def test_writer_refuses_existing_trace(tmp_path):
    layer = Layer.linear("fc", 3, 2)
    TraceWriter(tmp_path, _manifest([layer]))
    with pytest.raises(TraceError, match="already holds a trace"):
        TraceWriter(tmp_path, _manifest([layer]))


# ------------------------------------------------------------------------------------------------
# malformed traces: each gives one TraceError naming the file and what is wrong
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def good(tmp_path) -> Path:
    layers = [Layer.conv("c1", 3, 4, 3, 5, padding=1), Layer.linear("fc", 8, 5)]
    rng = np.random.default_rng(0)
    writer = TraceWriter(tmp_path / "t", _manifest(layers))
    ops, _, _ = _random_step(layers, 2, rng, "random", False)
    writer.write_step(0, ops)
    return tmp_path / "t"


def _edit_manifest(path: Path, fn) -> None:
    d = json.loads((path / MANIFEST).read_text())
    fn(d)
    (path / MANIFEST).write_text(json.dumps(d))


def _read_all(path: Path) -> None:
    for _ in Trace(path):
        pass


def _rewrite_step(path: Path, fn) -> None:
    f = path / "step_00000000.npz"
    with np.load(f) as npz:
        arrays = {k: npz[k] for k in npz.files}
    fn(arrays)
    write_npz(f, arrays)


def _index_edit(fn):
    def edit(arrays):
        idx = json.loads(arrays["index"].tobytes())
        fn(idx)
        arrays["index"] = np.frombuffer(json.dumps(idx).encode(), dtype=np.uint8)
    return edit


def _first_mask_key(arrays):
    return sorted(k for k in arrays if k.endswith(".mask"))[0]


def _set(arrays, key, value):
    arrays[key] = value


CASES = {
    "unknown version": (lambda p: _edit_manifest(p, lambda d: d.update(format_version=3)),
                        "format_version"),
    "not a trace": (lambda p: (p / MANIFEST).unlink(), "not a trace directory"),
    "bad json": (lambda p: (p / MANIFEST).write_text("{oops"), "not valid JSON"),
    "missing field": (lambda p: _edit_manifest(p, lambda d: d.pop("batch_size")), "batch_size"),
    "negative batch": (lambda p: _edit_manifest(p, lambda d: d.update(batch_size=-4)),
                       "batch_size"),
    "bad geometry": (lambda p: _edit_manifest(p, lambda d: d["layers"][0].update(kernel=[0, 3])),
                     "kernel"),
    "batch changed": (lambda p: _edit_manifest(p, lambda d: d.update(batch_size=3)), "shape"),
    "geometry changed": (lambda p: _edit_manifest(
        p, lambda d: d["layers"][1].update(in_channels=9)), "expected"),
    "truncated npz": (lambda p: (p / "step_00000000.npz").write_bytes(
        (p / "step_00000000.npz").read_bytes()[:200]), "truncated"),
    "missing step file": (lambda p: (p / "step_00000000.npz").unlink(), "missing"),
    "missing mask array": (lambda p: _rewrite_step(
        p, lambda a: a.pop(_first_mask_key(a))), "missing from the step file"),
    "short mask": (lambda p: _rewrite_step(
        p, lambda a: _set(a, _first_mask_key(a), a[_first_mask_key(a)][:-1])),
        "packed length"),
    "missing index": (lambda p: _rewrite_step(p, lambda a: a.pop("index")), "index"),
    "missing layer": (lambda p: _rewrite_step(
        p, _index_edit(lambda i: i["layers"].pop("fc"))), "layer 'fc'"),
    "missing phase": (lambda p: _rewrite_step(
        p, _index_edit(lambda i: i["layers"]["fc"].pop("bwd_weight"))), "bwd_weight"),
    "missing operand": (lambda p: _rewrite_step(
        p, _index_edit(lambda i: i["layers"]["c1"]["fwd"].pop("filter"))), "missing operand"),
    "unknown role": (lambda p: _rewrite_step(
        p, _index_edit(lambda i: i["layers"]["c1"]["fwd"].update(grad_w={"dense": True}))),
        "unknown role"),
    "wrong nnz": (lambda p: _rewrite_step(
        p, _index_edit(lambda i: i["layers"]["c1"]["fwd"]["filter"].update(nnz=-1))), "nnz"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_trace_raises_trace_error(good, case):
    damage, expect = CASES[case]
    damage(good)
    with pytest.raises(TraceError) as info:
        _read_all(good)
    msg = str(info.value)
    assert expect in msg
    assert "\n" not in msg
    assert str(good) in msg


def test_padding_bits_must_be_zero(tmp_path):
    layer = Layer.linear("fc", 3, 3)  # 9 weights: 7 padding bits in the second byte
    ops = {"fc": {ph: dict.fromkeys(PHASE_OPERANDS[ph]) for ph in PHASES}}
    ops["fc"]["fwd"]["filter"] = np.ones((3, 3), dtype=bool)
    TraceWriter(tmp_path, _manifest([layer])).write_step(0, ops)

    def set_padding(a):
        key = _first_mask_key(a)
        bits = a[key].copy()
        bits[-1] |= 0b00000001
        a[key] = bits
    _rewrite_step(tmp_path, set_padding)
    with pytest.raises(TraceError, match="padding bits"):
        _read_all(tmp_path)


# ------------------------------------------------------------------------------------------------
# the gaps-zstd mask codec in step files
# ------------------------------------------------------------------------------------------------
def _one_layer_trace(path: Path, codec: str, version: int = 2) -> Path:
    layer = Layer.conv("c", 4, 8, 3, 6)
    rng = np.random.default_rng(3)
    w = rng.random(layer.weight_shape) < 0.2
    a = rng.random(layer.ifmap_shape(2)) < 0.7  # more than half set: the clear ones are coded
    TraceWriter(path, _manifest([layer], format_version=version), codec=codec).write_step(
        0, {"c": {"fwd": {"filter": w, "ifmap": None}, "bwd_input": {"filter": w, "grad_out": None},
                  "bwd_weight": {"ifmap": a, "grad_out": None}}})
    return path


def test_codec_named_in_the_index_and_masks_stored_as_coded(tmp_path):
    f = _one_layer_trace(tmp_path / "z", GAPS_ZSTD) / "step_00000000.npz"
    with zipfile.ZipFile(f) as zf:
        kinds = {i.filename: i.compress_type for i in zf.infolist()}
    assert kinds == {"L0000.fwd.filter.mask.npy": zipfile.ZIP_STORED,
                     "L0000.bwd_weight.ifmap.mask.npy": zipfile.ZIP_STORED,
                     "index.npy": zipfile.ZIP_DEFLATED}
    with np.load(f) as npz:
        assert json.loads(npz["index"].tobytes())[CODEC_KEY] == GAPS_ZSTD
    p = _one_layer_trace(tmp_path / "p", PACKBITS)
    with np.load(p / "step_00000000.npz") as npz:  # packbits: the index as version 1 wrote it
        assert CODEC_KEY not in json.loads(npz["index"].tobytes())
    a, b = next(iter(Trace(tmp_path / "z"))), next(iter(Trace(p)))
    for phase in PHASES:
        for role, op in a.layers["c"][phase].items():
            other = b.layers["c"][phase][role]
            assert op.nnz == other.nnz
            if not op.dense:
                np.testing.assert_array_equal(op.mask.bits, other.mask.bits)


def test_gaps_zstd_needs_version_2(tmp_path):
    with pytest.raises(ValueError, match="format_version 2"):
        _one_layer_trace(tmp_path / "t", GAPS_ZSTD, version=1)
    with pytest.raises(ValueError, match="codec 'lz4'"):
        TraceWriter(tmp_path / "u", _manifest([Layer.linear("fc", 3, 2)]), codec="lz4")


def _coded_mask_edit(fn):
    def edit(arrays):
        arrays["L0000.bwd_weight.ifmap.mask"] = fn(arrays["L0000.bwd_weight.ifmap.mask"])
    return edit


CODED_CASES = {
    "v1 trace names gaps-zstd": (lambda p: _edit_manifest(p, lambda d: d.update(
        format_version=1)), f"index.{CODEC_KEY}: expected one of packbits (a version-1"),
    "unknown codec": (lambda p: _rewrite_step(p, _index_edit(lambda i: i.update(
        {CODEC_KEY: "lz4"}))), "expected one of packbits, gaps-zstd, got 'lz4'"),
    "truncated stream": (lambda p: _rewrite_step(p, _coded_mask_edit(lambda a: a[:-9])),
                         "bwd_weight.ifmap.mask: gaps-zstd array 'L0000.bwd_weight.ifmap.mask'"),
    "flipped byte": (lambda p: _rewrite_step(p, _coded_mask_edit(
        lambda a: np.concatenate([a[:20], a[20:21] ^ 4, a[21:]]))), "corrupt Zstandard frame"),
    "packbits under gaps-zstd": (lambda p: _rewrite_step(p, _coded_mask_edit(
        lambda a: np.zeros(72, np.uint8))), "not a Zstandard frame"),
    "wrong nnz": (lambda p: _rewrite_step(p, _index_edit(
        lambda i: i["layers"]["c"]["bwd_weight"]["ifmap"].update(nnz=5))),
        "index says 5 nonzeros, the mask holds"),
    "oversized array": (lambda p: _rewrite_step(p, _coded_mask_edit(
        lambda a: np.zeros(2000, np.uint8))), "expected at most"),
}


@pytest.mark.parametrize("case", sorted(CODED_CASES))
def test_bad_coded_mask_raises_trace_error(tmp_path, case):
    path = _one_layer_trace(tmp_path / "t", GAPS_ZSTD)
    damage, expect = CODED_CASES[case]
    damage(path)
    with pytest.raises(TraceError) as info:
        _read_all(path)
    msg = str(info.value)
    assert expect in msg and "\n" not in msg
    assert str(path / "step_00000000.npz") in msg


def test_read_meta_reads_the_index_alone(tmp_path):
    layer = Layer.linear("fc", 3, 2)
    ops = {"fc": {ph: dict.fromkeys(PHASE_OPERANDS[ph]) for ph in PHASES}}
    ops["fc"]["fwd"]["filter"] = np.ones((2, 3), dtype=bool)
    w = TraceWriter(tmp_path, _manifest([layer], format_version=2), codec=GAPS_ZSTD)
    w.write_step(0, ops, meta={"bwd_input_not_computed": ["fc"]})
    _rewrite_step(tmp_path, lambda a: a.pop(_first_mask_key(a)).size)  # masks are not read
    t = Trace(tmp_path)
    assert t.read_meta(0) == {"bwd_input_not_computed": ["fc"]}
    with pytest.raises(TraceError, match="missing from the step file"):
        t.read_step(0)
    with pytest.raises(TraceError, match="no step 5"):
        t.read_meta(5)
