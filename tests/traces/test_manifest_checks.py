"""Trace validation gaps found by fuzzing: each malformed manifest or step file is one
``TraceError`` naming the file and the field (the CLI prints it as one line, exit 2), never a
traceback, a silent default or a huge allocation."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from common.errors import TraceError
from traces.codec import GAPS_ZSTD, encode
from traces.format import (
    CODEC_KEY,
    INDEX_KEY,
    MANIFEST,
    MAX_BATCH,
    MAX_CHANNELS,
    MAX_OPERAND_ELEMENTS,
    MAX_SPATIAL,
    Trace,
    write_npz,
)
from traces.models import get_model
from traces.synth import SynthConfig, synthesize


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("checks") / "T"
    synthesize(SynthConfig(model="lenet5", method="swat", sparsity=0.9, batch=2, seed=0), out)
    return out


@pytest.fixture
def trace(base, tmp_path) -> Path:
    """A fresh copy of the base trace to damage."""
    out = tmp_path / "T"
    shutil.copytree(base, out)
    return out


def edit_manifest(path: Path, fn) -> Path:
    mpath = path / MANIFEST
    d = json.loads(mpath.read_text())
    fn(d)
    mpath.write_text(json.dumps(d))
    return path


def edit_index(path: Path, fn) -> Path:
    """Rewrite the first step file with ``fn(index, arrays)`` applied."""
    d = json.loads((path / MANIFEST).read_text())
    spath = path / d["steps"][0]["file"]
    with np.load(spath) as npz:
        arrays = {k: npz[k] for k in npz.files}
    original = arrays[INDEX_KEY]
    index = json.loads(original.tobytes().decode())
    fn(index, arrays)
    if arrays[INDEX_KEY] is original:  # fn edited the index, not the array that holds it
        arrays[INDEX_KEY] = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
    write_npz(spath, arrays)
    return path


def read_all(path: Path) -> list:
    return list(Trace(path))


def rejects(path: Path, *words: str) -> str:
    """Opening and reading every step raises one TraceError mentioning ``words``."""
    with pytest.raises(TraceError) as err:
        read_all(path)
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg
    return msg


def cli_fails(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ---- 1. sparsity.topk_period --------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["x", -5, 0, True, 2.5, [10]])
def test_topk_period_must_be_a_positive_integer(trace, bad):
    edit_manifest(trace, lambda d: d["sparsity"].update(topk_period=bad))
    msg = rejects(trace, "manifest.json", "sparsity.topk_period", "positive integer")
    assert repr(bad) in msg


@pytest.mark.parametrize("ok", [None, 1, 25, "absent"])
def test_topk_period_absent_null_or_positive_is_read(trace, ok):
    if ok == "absent":
        edit_manifest(trace, lambda d: d["sparsity"].pop("topk_period", None))
    else:
        edit_manifest(trace, lambda d: d["sparsity"].update(topk_period=ok))
    assert len(read_all(trace)) == 1


def test_simulate_with_bad_topk_period_is_one_line(trace, tmp_path, capsys):
    edit_manifest(trace, lambda d: d["sparsity"].update(topk_period="x"))
    err = cli_fails(capsys, "simulate", str(trace), "--arch", "tensordash", "--memory", "ideal",
                    "-o", str(tmp_path / "o"))
    assert "manifest.json: sparsity.topk_period" in err
    assert not (tmp_path / "o").exists()


# ---- 2. sparsity.sparsity and layer_density -----------------------------------------------------
@pytest.mark.parametrize("bad", ["high", 1.5, -0.1, float("nan"), True, None, [0.5]])
def test_sparsity_must_be_a_number_in_unit_interval(trace, bad):
    edit_manifest(trace, lambda d: d["sparsity"].update(sparsity=bad))
    rejects(trace, "manifest.json", "sparsity.sparsity", "[0, 1]")


@pytest.mark.parametrize("ok", [0, 0.0, 0.9, 1.0])
def test_sparsity_in_unit_interval_is_read(trace, ok):
    # 1.0 is legitimate: `synth --sparsity 1` and an all-1 --layer-sparsity write it
    edit_manifest(trace, lambda d: d["sparsity"].update(sparsity=ok))
    assert len(read_all(trace)) == 1


@pytest.mark.parametrize("bad", ["dense", [1.0, 0.1], [1.0, 0.1, 0.1, 0.1, "x"],
                                 [1.0, 0.1, 0.1, 0.1, 1.5], [1.0, 0.1, 0.1, 0.1, -0.1],
                                 [1.0, 0.1, 0.1, 0.1, True], {"conv1": 1.0}])
def test_layer_density_must_be_one_density_per_layer(trace, bad):
    edit_manifest(trace, lambda d: d["sparsity"].update(layer_density=bad))
    rejects(trace, "manifest.json", "sparsity.layer_density")


def test_sparsity_without_the_optional_keys_is_read(trace):
    edit_manifest(trace, lambda d: d.update(sparsity={}))
    assert len(read_all(trace)) == 1


# ---- 3. format_version --------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [True, 1.0, "1", None])
def test_format_version_must_be_the_integer_1(trace, bad):
    edit_manifest(trace, lambda d: d.update(format_version=bad))
    rejects(trace, "manifest.json", "format_version", repr(bad))


# ---- 4. index dtype -----------------------------------------------------------------------------
def test_index_must_be_uint8(trace):
    def to_int32(index, arrays):
        arrays[INDEX_KEY] = arrays[INDEX_KEY].astype(np.int32)

    edit_index(trace, to_int32)
    rejects(trace, "step_00000000.npz", "index", "uint8", "int32")


def test_index_must_be_one_dimensional(trace):
    def to_2d(index, arrays):
        raw = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
        arrays[INDEX_KEY] = raw.reshape(1, -1)

    edit_index(trace, to_2d)
    rejects(trace, "step_00000000.npz", "index", "1-D")


# ---- 5. operand entries -------------------------------------------------------------------------
def test_dense_operand_with_a_mask_is_rejected(trace):
    def both(index, arrays):
        op = index["layers"]["conv2"]["fwd"]["filter"]
        assert "mask" in op
        op["dense"] = True

    edit_index(trace, both)
    rejects(trace, "step_00000000.npz", "layer 'conv2' fwd.filter", "dense", "mask")


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_dense_flag_must_be_a_boolean(trace, bad):
    def flag(index, arrays):
        index["layers"]["conv2"]["fwd"]["filter"]["dense"] = bad

    edit_index(trace, flag)
    rejects(trace, "step_00000000.npz", "layer 'conv2' fwd.filter.dense")


@pytest.mark.parametrize("bad", [5, "abc", {"a": 1}])
def test_operand_shape_must_be_a_list(trace, bad):
    def shape(index, arrays):
        index["layers"]["conv2"]["fwd"]["filter"]["shape"] = bad

    edit_index(trace, shape)
    rejects(trace, "step_00000000.npz", "layer 'conv2' fwd.filter.shape")


@pytest.mark.parametrize("bad", [["x"], 3, True])
def test_operand_array_names_must_be_strings(trace, bad):
    def values(index, arrays):
        index["layers"]["conv2"]["fwd"]["filter"]["values"] = bad

    edit_index(trace, values)
    rejects(trace, "step_00000000.npz", "layer 'conv2' fwd.filter.values")


def test_nnz_must_not_be_a_boolean(trace):
    def nnz(index, arrays):
        # a mask with one nonzero: nnz true == 1 in Python, but true is not a count
        op = index["layers"]["conv2"]["fwd"]["filter"]
        op["nnz"] = True
        numel = 16 * 6 * 5 * 5
        bits = np.packbits(np.eye(1, numel, dtype=bool).ravel())
        coded = index.get(CODEC_KEY) == GAPS_ZSTD  # synth's codec
        arrays[op["mask"]] = encode(bits, numel, 1) if coded else bits

    edit_index(trace, nnz)
    rejects(trace, "step_00000000.npz", "fwd.filter.nnz")


# ---- 6. mask_update events ----------------------------------------------------------------------
@pytest.mark.parametrize("event", [
    {"type": "mask_update", "layer": "nope", "dropped": 1, "grown": 1},
    {"type": "mask_update", "dropped": 1, "grown": 1},
    {"type": "mask_update", "layer": None},
    {"type": "mask_update", "layer": ["conv2"]},
])
def test_mask_update_must_name_a_layer_of_the_trace(trace, event):
    def add(index, arrays):
        index["events"] = [{"type": "note"}, event]

    edit_index(trace, add)
    rejects(trace, "step_00000000.npz", "index.events[1].layer")


def test_mask_update_of_a_known_layer_and_free_form_events_are_read(trace):
    def add(index, arrays):
        index["events"] = [{"type": "mask_update", "layer": "fc1", "dropped": 1, "grown": 1},
                           {"type": "something else"}, "free text", 3]

    edit_index(trace, add)
    assert len(read_all(trace)[0].events) == 4


# ---- 7. a trace with no recorded step -----------------------------------------------------------
def test_no_recorded_step_is_one_error_naming_manifest_steps(trace, tmp_path, capsys):
    edit_manifest(trace, lambda d: d.update(steps=[]))
    t = Trace(trace)  # a recording writes its manifest before its first step: it opens
    assert len(t) == 0
    with pytest.raises(TraceError) as err:
        list(t)
    msg = str(err.value)
    assert msg.startswith(str(trace / MANIFEST)) and ": steps: " in msg
    assert "expected at least one recorded step" in msg and "None" not in msg
    for args in (["simulate", str(trace), "--arch", "tensordash", "--memory", "ideal",
                  "-o", str(tmp_path / "o")], ["info", str(trace)]):
        err_line = cli_fails(capsys, *args)
        assert "manifest.json: steps: expected at least one recorded step" in err_line
    assert not (tmp_path / "o").exists()


# ---- 8. a step path that is not a regular file --------------------------------------------------
def test_step_path_that_is_a_directory(trace):
    step = trace / "step_00000000.npz"
    step.unlink()
    step.mkdir()
    msg = rejects(trace, "step_00000000.npz", "not a regular file")
    assert "missing" not in msg


def test_missing_step_file_still_says_missing(trace):
    (trace / "step_00000000.npz").unlink()
    rejects(trace, "step_00000000.npz", "missing")


# ---- 9. sanity limits on sizes ------------------------------------------------------------------
@pytest.mark.parametrize("field,value,words", [
    ("batch_size", 10**12, ["batch_size", str(MAX_BATCH)]),
    ("batch_size", MAX_BATCH + 1, ["batch_size", str(MAX_BATCH)]),
    ("input_hw", [10**9, 10**9], ["layers[0]", "input_hw", str(MAX_SPATIAL)]),
    ("kernel", [70000, 1], ["layers[0]", "kernel", str(MAX_SPATIAL)]),  # padding 35000
    ("padding", [0, 70000], ["layers[0]", "padding", str(MAX_SPATIAL)]),
    ("out_channels", 2**25, ["layers[0]", "out_channels", str(MAX_CHANNELS)]),
    ("in_channels", 2**24 + 1, ["layers[0]", "in_channels"]),
])
def test_absurd_sizes_are_rejected_at_manifest_read(trace, field, value, words):
    def edit(d):
        if field == "batch_size":
            d["batch_size"] = value
        else:
            d["layers"][0][field] = value
            if field == "kernel":  # a non-empty output: only the limit is wrong
                d["layers"][0]["padding"] = [35000, 2]
    edit_manifest(trace, edit)
    with pytest.raises(TraceError) as err:
        Trace(trace)
    msg = str(err.value)
    assert "manifest.json" in msg and "sanity limit" in msg
    for w in words:
        assert w in msg, msg


def test_operand_element_limit(trace):
    # every size within its own limit, but the ifmap at this batch is 2**16 * 2**10 * 2**9 elements
    def edit(d):
        d["batch_size"] = MAX_BATCH
        d["layers"][0].update(in_channels=1024, input_hw=[512, 1], kernel=[1, 1], padding=[0, 0])
    edit_manifest(trace, edit)
    with pytest.raises(TraceError) as err:
        Trace(trace)
    msg = str(err.value)
    assert "layers[0]" in msg and "ifmap" in msg and str(MAX_OPERAND_ELEMENTS) in msg


def test_simulate_with_huge_batch_is_one_line(trace, tmp_path, capsys):
    edit_manifest(trace, lambda d: d.update(batch_size=10**12))
    err = cli_fails(capsys, "simulate", str(trace), "--arch", "tensordash", "-o",
                    str(tmp_path / "o"))
    assert "manifest.json: batch_size" in err


@pytest.mark.parametrize("name", ["vgg16", "resnet50", "vit-b16", "mobilenetv2", "wrn16-8"])
def test_real_networks_are_far_within_the_limits(name):
    batch = 1024  # the operand limit (2**32 elements) keeps simulate under 2 GiB of memory
    for layer in get_model(name).layers:
        assert max(layer.in_channels, layer.out_channels) <= MAX_CHANNELS
        assert max(*layer.input_hw, *layer.kernel, *layer.padding) <= MAX_SPATIAL
        for role in ("filter", "ifmap", "grad_out"):
            assert math.prod(layer.operand_shape(role, batch)) <= MAX_OPERAND_ELEMENTS


# ---- layer extra: SCALE-Sim's own IFMAP size of an imported topology conv ------------------------
@pytest.mark.parametrize("layer, bad", [(0, "x"), (0, [28]), (0, [4, 28]), (0, [29, 28]),
                                        (0, [True, 28]), (0, {"h": 28}), (-1, [1, 1])])
def test_scalesim_ifmap_hw_must_fit_the_layer(trace, layer, bad):
    edit_manifest(trace, lambda d: d["layers"][layer].setdefault("extra", {}).update(
        scalesim_ifmap_hw=bad))
    with pytest.raises(TraceError) as err:
        Trace(trace)
    msg = str(err.value)
    assert "manifest.json" in msg and "scalesim_ifmap_hw" in msg and "kernel" in msg, msg


def test_scalesim_ifmap_hw_within_the_layer_is_read(trace):
    edit_manifest(trace, lambda d: d["layers"][0].update(extra={"scalesim_ifmap_hw": [27, 26]}))
    assert Trace(trace).manifest.layers[0].extra == {"scalesim_ifmap_hw": [27, 26]}


# ---- step meta: the GEMMs a step did not compute -------------------------------------------------
@pytest.mark.parametrize("key", ["bwd_input_not_computed", "bwd_weight_not_computed"])
@pytest.mark.parametrize("bad", ["conv1", ["nope"], [1], {"conv1": True}])
def test_not_computed_lists_must_name_layers(trace, key, bad):
    edit_index(trace, lambda index, arrays: index["meta"].update({key: bad}))
    msg = rejects(trace, f"index.meta.{key}", "layer names")
    assert "step_" in msg


def test_not_computed_lists_of_layers_are_read(trace):
    edit_index(trace, lambda index, arrays: index["meta"].update(
        bwd_weight_not_computed=["conv2"], bwd_input_not_computed=[]))
    meta = read_all(trace)[0].meta
    assert meta["bwd_weight_not_computed"] == ["conv2"]
