"""Tests for simulator.arch: architecture YAML files, presets, overrides, SCALE-Sim .cfg."""

from __future__ import annotations

import copy
import dataclasses
import os
import pickle
import re
from pathlib import Path

import pytest
import yaml

from common.errors import InputError
from simulator.arch import (
    KEY_PATHS,
    ArchError,
    Architecture,
    DramSpec,
    SramSpec,
    load_arch,
    preset_names,
)
from simulator.scalesim_cfg import ScaleSimSparsity, read_scalesim_cfg, read_scalesim_sparsity

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
PRESETS = ["dnnsim-tensordash", "eyeriss", "scalesim-32", "stc-2to4", "tensordash", "tpu-v1"]

from tests.scalesim_cfg import CFG  # noqa: E402

#: the config with SCALE-Sim's layer-wise sparsity on
SPARSE = CFG.replace("SparsitySupport : false", "SparsitySupport : true")
CFG_DEFAULTS = dict(run="calc_32_os", rows=32, cols=32, ifmap=64, filt=64, ofmap=64, bw=10, df="os")


def _cfg(tmp_path: Path, name: str = "calc_32_os.cfg", **values) -> Path:
    path = tmp_path / name
    path.write_text(CFG.format(**{**CFG_DEFAULTS, **values}), encoding="utf-8")
    return path


def _valid() -> dict:
    """A complete, valid architecture file as a mapping."""
    return load_arch("scalesim-32").to_dict() | {"name": "mine", "description": "test"}


def _write_yaml(tmp_path: Path, data, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _error(spec) -> str:
    with pytest.raises(ArchError) as info:
        load_arch(spec)
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------------------
# presets
# ------------------------------------------------------------------------------------------------
def test_preset_names():
    assert preset_names() == PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_and_round_trips(name, tmp_path):
    arch = load_arch(name)
    assert arch.name == name
    assert arch.source == f"preset {name}"
    assert arch.description
    # to_dict -> YAML -> file -> load gives an equal architecture
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(arch.to_dict(), sort_keys=False), encoding="utf-8")
    again = load_arch(path)
    assert again == arch
    assert again.to_dict() == arch.to_dict()
    assert again.source == str(path)
    assert Architecture.from_dict(yaml.safe_load(arch.to_yaml())) == arch
    # frozen, hashable, picklable (sweeps send architectures to worker processes)
    assert hash(again) == hash(arch)
    assert pickle.loads(pickle.dumps(arch)) == arch
    with pytest.raises(dataclasses.FrozenInstanceError):
        arch.rows = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        arch.sram["ifmap"] = arch.sram["filter"]  # type: ignore[index]
    # a dense array never stalls on SRAM: every buffer serves a full array edge per cycle
    demand = max(arch.rows, arch.cols) * arch.lanes
    assert all(s.words_per_cycle >= demand for s in arch.sram.values()), arch.sram


def test_scalesim_32_values():
    a = load_arch("scalesim-32")
    assert (a.rows, a.cols, a.lanes, a.dataflow, a.clock_ghz) == (32, 32, 1, "os", 1.0)
    assert dict(a.word_bytes) == {"ifmap": 1, "filter": 1, "ofmap": 1}
    for spec in a.sram.values():
        assert spec == SramSpec(kib=64, banks=32, ports=1, bank_width_words=1)
        assert spec.capacity_bytes == 65536 and spec.active_bytes == 32768
    assert a.dram.bandwidth_gbps == 10.0 and a.dram_bytes_per_cycle == 10.0
    assert a.macs_per_cycle == 1024
    assert a.topk_elements_per_cycle == 32
    assert dict(a.sparse) == {}


def test_other_preset_values():
    tpu = load_arch("tpu-v1")
    assert (tpu.rows, tpu.cols, tpu.dataflow, tpu.clock_ghz) == (256, 256, "ws", 0.7)
    assert tpu.sram["ifmap"].kib == 24 * 1024 and tpu.word_bytes["filter"] == 1
    assert (tpu.dram.channels, tpu.dram.bandwidth_gbps) == (2, 34.0)
    assert tpu.dram.bytes_per_cycle(tpu.clock_ghz) == pytest.approx(34.0 / 0.7)
    eye = load_arch("eyeriss")
    assert (eye.rows, eye.cols, eye.dataflow, eye.clock_ghz) == (12, 14, "ws", 0.2)
    assert sum(s.kib for s in eye.sram.values()) == 108
    assert set(eye.word_bytes.values()) == {2}
    td = load_arch("tensordash")
    assert (td.rows, td.cols, td.lanes, td.dataflow, td.clock_ghz) == (16, 16, 16, "os", 1.0)
    assert td.macs_per_cycle == 4096 and set(td.word_bytes.values()) == {2}
    stc = load_arch("stc-2to4")
    assert stc.sparse == {"nm": "2:4"} and set(stc.word_bytes.values()) == {2}


def test_omitted_keys_take_scalesim_32_values(tmp_path):
    path = _write_yaml(
        tmp_path, {"name": "scalesim-32", "array": {"rows": 32, "cols": 32}}, "minimal.yaml"
    )
    minimal = load_arch(path)
    preset = load_arch("scalesim-32")
    assert minimal.replace(description=preset.description) == preset


def test_written_yaml_file_loads(tmp_path):
    path = tmp_path / "mine.yml"
    path.write_text(
        "name: mine\n"
        "array: {rows: 8, cols: 4, lanes: 2, dataflow: is}\n"
        "clock_ghz: 0.5\n"
        "word_bytes: {ifmap: 2, filter: 2, ofmap: 4}\n"
        "sram:\n  ofmap: {kib: 16, banks: 2, ports: 2, bank_width_words: 8}\n"
        "dram: {bandwidth_gbps: 4.0, channels: 2, row_buffer_bytes: 1024, burst_bytes: 32}\n"
        "energy: {sram_pj_per_byte: {filter: 0.7}}\n"
        "topk: {elements_per_cycle: 3}\n"
        "sparse: {nm: '1:4', window: {lookahead: 1, lookaside: 2}}\n",
        encoding="utf-8",
    )
    a = load_arch(str(path))
    assert (a.rows, a.cols, a.lanes, a.dataflow, a.macs_per_cycle) == (8, 4, 2, "is", 64)
    assert a.sram["ofmap"] == SramSpec(16, 2, 2, 8) and a.sram["ofmap"].words_per_cycle == 32
    assert a.sram["ifmap"] == SramSpec(64, 8, 1, 2)  # defaults: max(rows, cols) banks x lanes
    assert a.dram.bytes_per_cycle(a.clock_ghz) == 8.0
    assert a.energy.sram_pj_per_byte == {"ifmap": 1.25, "filter": 0.7, "ofmap": 1.25}
    assert a.topk_elements_per_cycle == 3
    assert a.sparse == {"nm": "1:4", "window": {"lookahead": 1, "lookaside": 2}}
    assert a.to_dict()["sparse"] == {"nm": "1:4", "window": {"lookahead": 1, "lookaside": 2}}
    assert (a.features.nm, a.features.lookahead, a.features.lookaside) == ((1, 4), 1, 2)


def test_formats_per_memory_level(tmp_path):
    """A role's format is one name (DRAM and SRAM) or a mapping per level; an override can set
    one level; a bad level names its key."""
    base = load_arch("tensordash").with_overrides(
        {"sparse.formats": {"filter": "bitmap", "ifmap": {"dram": "csr", "sram": "bitmap"}}})
    f = base.features
    assert [f.format_of("filter", lv) for lv in ("dram", "sram")] == ["bitmap", "bitmap"]
    assert [f.format_of("ifmap", lv) for lv in ("dram", "sram")] == ["csr", "bitmap"]
    assert yaml.safe_load(yaml.safe_dump(base.to_dict()))["sparse"]["formats"]["ifmap"] == {
        "dram": "csr", "sram": "bitmap"}
    new = base.with_overrides({"sparse.formats.ifmap.sram": "rle"})
    assert [new.features.format_of("ifmap", lv) for lv in ("dram", "sram")] == ["csr", "rle"]
    with pytest.raises(ArchError, match=r"sparse\.formats\.ifmap\.l2"):
        base.with_overrides({"sparse.formats.ifmap.l2": "csr"})


# ------------------------------------------------------------------------------------------------
# overrides
# ------------------------------------------------------------------------------------------------
def test_with_overrides():
    base = load_arch("scalesim-32")
    new = base.with_overrides(
        {"array.rows": 64, "dram.bandwidth_gbps": 25.6, "sram.ifmap.kib": 128, "sparse.nm": "2:4"}
    )
    assert (new.rows, new.cols, new.dram.bandwidth_gbps) == (64, 32, 25.6)
    assert new.sram["ifmap"].kib == 128 and new.sram["filter"].kib == 64
    # banks were left to their default in the preset, so they follow the array
    assert new.sram["filter"].banks == 64
    assert new.sparse == {"nm": "2:4"}
    assert new.source == base.source
    assert base.rows == 32 and base.sram["ifmap"].kib == 64  # the original is unchanged
    # a whole section as a mapping replaces the section
    assert base.with_overrides({"sram.ofmap": {"kib": 8}}).sram["ofmap"] == SramSpec(8, 32, 1, 1)
    # overrides chain
    assert new.with_overrides({"array.cols": 128}).sram["ifmap"].banks == 128


@pytest.mark.parametrize(
    ("overrides", "field", "expected"),
    [
        ({"array.rows": 0}, "array.rows", "integer >= 1"),
        ({"array.rows": True}, "array.rows", "boolean"),
        ({"dram.bandwidth_gbps": -1}, "dram.bandwidth_gbps", "> 0"),
        ({"sram.ifmap.kib": "big"}, "sram.ifmap.kib", "number"),
        ({"array.dataflow": "rs"}, "array.dataflow", "os, ws, is"),
        ({"array.rwos": 4}, "array.rwos", "did you mean 'array.rows'"),
        ({"dram.burst_bytes": 4096}, "dram.burst_bytes", "divisor"),
    ],
)
def test_bad_override_raises(overrides, field, expected):
    base = load_arch("scalesim-32")
    with pytest.raises(ArchError) as info:
        base.with_overrides(overrides, source="sweep.yaml")
    message = str(info.value)
    assert message.startswith(f"sweep.yaml: {field}: "), message
    assert expected in message
    with pytest.raises(ArchError, match=r"^preset scalesim-32 \(overrides\): "):
        base.with_overrides(overrides)


def test_replace_validates():
    base = load_arch("tpu-v1")
    new = base.replace(rows=128, dram=DramSpec(1, 5.0, 10, 8, 2048, 64, 1, 2, 3))
    assert new.rows == 128 and new.dram.bandwidth_gbps == 5.0
    with pytest.raises(ArchError, match=r"array\.lanes"):
        base.replace(lanes=0)
    with pytest.raises(TypeError):
        base.replace(colour="red")
    # the stdlib replace and direct construction are validated too
    assert dataclasses.replace(base, cols=8).cols == 8
    with pytest.raises(ArchError, match=r"array\.cols"):
        dataclasses.replace(base, cols=-8)
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init}
    with pytest.raises(ArchError, match=r"word_bytes\.ifmap: expected one of 1, 2, 4, 8"):
        Architecture(**{**fields, "word_bytes": {"ifmap": 3, "filter": 1, "ofmap": 4}})


# ------------------------------------------------------------------------------------------------
# bad architecture files: one ArchError naming the file and the dotted field
# ------------------------------------------------------------------------------------------------
def _set(data: dict, dotted: str, value) -> dict:
    data = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
    return data


def _drop(data: dict, dotted: str) -> dict:
    data = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node[part]
    del node[last]
    return data


BAD_FILES = [
    # unknown keys (typos) name the key and the closest valid key
    ("typo", lambda d: _set(d, "array.rwos", 32), "array.rwos", "did you mean 'rows'"),
    ("typo-case", lambda d: _set(d, "dram.trcd", 3), "dram.trcd", "did you mean 'tRCD'"),
    (
        "misplaced",
        lambda d: _set(d, "bandwith_gbps", 3.0),
        "bandwith_gbps",
        "did you mean 'dram.bandwidth_gbps'",
    ),
    ("typo-top", lambda d: _set(d, "clock_gz", 1.0), "clock_gz", "did you mean 'clock_ghz'"),
    # missing required keys
    ("no-cols", lambda d: _drop(d, "array.cols"), "array.cols", "missing required key"),
    ("no-name", lambda d: _drop(d, "name"), "name", "missing required key"),
    ("no-array", lambda d: _drop(d, "array"), "array", "missing required section"),
    # wrong types
    ("str-int", lambda d: _set(d, "array.rows", "32"), "array.rows", "without quotes"),
    ("str-float", lambda d: _set(d, "clock_ghz", "fast"), "clock_ghz", "expected a number > 0"),
    ("float-int", lambda d: _set(d, "array.cols", 32.5), "array.cols", "expected an integer"),
    ("list", lambda d: _set(d, "dram.channels", [1, 2]), "dram.channels", "got a list"),
    ("section", lambda d: _set(d, "dram", 5), "dram", "expected a mapping"),
    ("sparse", lambda d: _set(d, "sparse", "2:4"), "sparse", "expected a mapping"),
    ("name", lambda d: _set(d, "name", "my arch/1"), "name", "expected letters"),
    ("name-type", lambda d: _set(d, "name", 7), "name", "expected text"),
    # booleans are not numbers
    ("bool-int", lambda d: _set(d, "sram.ifmap.banks", True), "sram.ifmap.banks", "boolean"),
    ("bool-float", lambda d: _set(d, "clock_ghz", False), "clock_ghz", "boolean"),
    # zero or negative sizes
    ("zero-kib", lambda d: _set(d, "sram.ifmap.kib", 0), "sram.ifmap.kib", "> 0"),
    ("neg-bw", lambda d: _set(d, "dram.bandwidth_gbps", -10.0), "dram.bandwidth_gbps", "> 0"),
    ("zero-bw", lambda d: _set(d, "dram.bandwidth_gbps", 0), "dram.bandwidth_gbps", "> 0"),
    ("zero-rows", lambda d: _set(d, "array.rows", 0), "array.rows", ">= 1"),
    ("neg-lanes", lambda d: _set(d, "array.lanes", -1), "array.lanes", ">= 1"),
    ("zero-banks", lambda d: _set(d, "sram.ofmap.banks", 0), "sram.ofmap.banks", ">= 1"),
    ("neg-latency", lambda d: _set(d, "dram.latency_cycles", -1), "dram.latency_cycles", ">= 0"),
    (
        "neg-energy",
        lambda d: _set(d, "energy.sram_pj_per_byte.ofmap", -0.1),
        "energy.sram_pj_per_byte.ofmap",
        ">= 0",
    ),
    ("tiny-kib", lambda d: _set(d, "sram.filter.kib", 0.03125), "sram.filter.kib", "too small"),
    ("frac-byte", lambda d: _set(d, "sram.filter.kib", 1.0001), "sram.filter.kib", "whole number"),
    ("nan", lambda d: _set(d, "clock_ghz", float("nan")), "clock_ghz", "> 0"),
    # enumerations
    ("dataflow", lambda d: _set(d, "array.dataflow", "rs"), "array.dataflow", "os, ws, is"),
    ("word", lambda d: _set(d, "word_bytes.filter", 3), "word_bytes.filter", "1, 2, 4, 8"),
    ("word-float", lambda d: _set(d, "word_bytes.ofmap", 2.0), "word_bytes.ofmap", "got 2.0"),
    # DRAM geometry
    ("burst-pow2", lambda d: _set(d, "dram.burst_bytes", 96), "dram.burst_bytes", "power of two"),
    ("burst-div", lambda d: _set(d, "dram.burst_bytes", 4096), "dram.burst_bytes", "divisor"),
    ("gated", lambda d: _set(d, "energy.mac_gated_pj", 1.0), "energy.mac_gated_pj", "at most"),
]


@pytest.mark.parametrize(
    ("case", "mutate", "field", "expected"), BAD_FILES, ids=[c[0] for c in BAD_FILES]
)
def test_bad_file(tmp_path, case, mutate, field, expected):
    path = _write_yaml(tmp_path, mutate(_valid()), f"{case}.yaml")
    message = _error(path)
    assert message.startswith(f"{path}: {field}: "), message
    assert expected in message, message


def test_numbers_read_as_yaml_1_2_reads_them(tmp_path):
    """PyYAML (YAML 1.1) reads 1e1 and 1.0e1 as text and 2:4 as the base-60 integer 124; the
    architecture (and sweep) loader reads them as YAML 1.2 does."""
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\narray: {rows: 4, cols: 010}\nclock_ghz: 1.0e0\n"
                    "dram: {bandwidth_gbps: 1e1}\nenergy: {mac_pj: 2.5e-1}\nsparse: {nm: 2:4}\n")
    assert yaml.safe_load(path.read_text())["sparse"]["nm"] == 124  # what plain PyYAML does
    a = load_arch(str(path))
    assert (a.cols, a.clock_ghz, a.dram.bandwidth_gbps) == (10, 1.0, 10.0)
    assert a.energy.mac_pj == 0.25 and a.features.nm == (2, 4)
    path.write_text("name: x\narray: {rows: 4, cols: 4}\ndram: {bandwidth_gbps: '1e1'}\n")
    message = _error(path)
    assert message.startswith(f"{path}: dram.bandwidth_gbps: expected a number > 0")
    assert "without quotes" in message


def test_a_special_or_huge_file_is_refused_without_reading_it(tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)  # reading it would block forever
    assert _error(fifo) == f"{fifo}: is not a regular file, expected an architecture file"
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\nname: x\n")
    assert "bytes; expected an architecture file (at most 1,048,576)" in _error(big)


@pytest.mark.parametrize(
    ("text", "where", "expected"),
    [
        ("name: x\narray: {rows: 4, cols: [4\n", "line ", "not valid YAML"),
        ("name: x\narray:\n  rows: 4\n  rows: 8\n  cols: 4\n", "line 4, column 3", "duplicate key"),
        ("- name: x\n", None, "expected a mapping of architecture keys"),
        ("", None, "the file is empty"),
        ("# only a comment\n", None, "the file is empty"),
        ("just text\n", None, "got the string 'just text'"),
    ],
    ids=["parse", "duplicate", "list", "empty", "comment", "scalar"],
)
def test_malformed_yaml(tmp_path, text, where, expected):
    path = tmp_path / "arch.yaml"
    path.write_text(text, encoding="utf-8")
    message = _error(path)
    assert message.startswith(f"{path}: {where}" if where else f"{path}: "), message
    assert expected in message, message


def test_missing_and_unreadable_files(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert _error(missing) == f"{missing}: no such file"
    assert _error(str(missing)) == f"{missing}: no such file"
    assert _error(tmp_path / "nope.cfg") == f"{tmp_path / 'nope.cfg'}: no such file"
    (tmp_path / "dir.yaml").mkdir()
    assert "is a directory" in _error(tmp_path / "dir.yaml")
    (tmp_path / "arch.json").write_text("{}")
    assert "unsupported file type '.json'" in _error(tmp_path / "arch.json")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00name")
    assert _error(tmp_path / "bin.yaml") == f"{tmp_path / 'bin.yaml'}: not UTF-8 text"


def test_unknown_preset():
    message = _error("tpu-v2")
    assert message.startswith("preset tpu-v2: unknown preset; did you mean 'tpu-v1'?")
    for name in PRESETS:
        assert name in message
    assert _error("zzz").startswith("preset zzz: unknown preset; presets: dnnsim-tensordash,")
    assert isinstance(pytest.raises(InputError, load_arch, "zzz").value, ArchError)


# ------------------------------------------------------------------------------------------------
# SCALE-Sim .cfg
# ------------------------------------------------------------------------------------------------
def test_read_scalesim_cfg(tmp_path):
    path = _cfg(tmp_path)
    a = read_scalesim_cfg(path)
    assert (a.name, a.rows, a.cols, a.lanes, a.dataflow) == ("calc_32_os", 32, 32, 1, "os")
    assert a.source == str(path)
    assert dict(a.word_bytes) == {"ifmap": 1, "filter": 1, "ofmap": 1} and a.clock_ghz == 1.0
    assert all(s == SramSpec(64, 32, 1, 1) for s in a.sram.values())
    assert a.dram.bandwidth_gbps == 10.0 and a.dram_bytes_per_cycle == 10.0
    # everything else is scalesim-32's
    preset = load_arch("scalesim-32")
    assert a.replace(name=preset.name, description=preset.description) == preset
    assert load_arch(path) == a and load_arch(str(path)) == a


def test_read_scalesim_cfg_other_geometry(tmp_path):
    path = _cfg(
        tmp_path,
        "big.cfg",
        run="big_ws",
        rows=128,
        cols=64,
        ifmap=256,
        filt=32,
        ofmap=16,
        bw="25,30",
        df="ws",
    )
    a = load_arch(path)
    assert (a.name, a.rows, a.cols, a.dataflow) == ("big_ws", 128, 64, "ws")
    assert [a.sram[b].kib for b in ("ifmap", "filter", "ofmap")] == [256, 32, 16]
    assert {s.banks for s in a.sram.values()} == {128}  # max(rows, cols): never stalls dense
    assert a.dram.bandwidth_gbps == 25.0  # Bandwidth words/cycle (first value) x 1 B x 1 GHz
    # banks keep following the array after an override
    assert a.with_overrides({"array.rows": 16}).sram["ifmap"].banks == 64


def test_cfg_agrees_with_scalesim_parser(tmp_path):
    scale_config = pytest.importorskip("scalesim.scale_config")
    path = _cfg(tmp_path, rows=16, cols=8, ifmap=32, filt=128, ofmap=64, df="is")
    theirs = scale_config.scale_config()
    theirs.read_conf_file(str(path))
    ours = read_scalesim_cfg(path)
    assert (ours.rows, ours.cols) == tuple(theirs.get_array_dims())
    assert ours.dataflow == theirs.get_dataflow()
    assert [ours.sram[b].kib for b in ("ifmap", "filter", "ofmap")] == list(theirs.get_mem_sizes())


def test_read_scalesim_sparsity(tmp_path):
    off = read_scalesim_sparsity(_cfg(tmp_path))
    assert not off.support  # SparsitySupport : false; SCALE-Sim reads nothing else then
    on = tmp_path / "on.cfg"
    on.write_text(CFG.format(**CFG_DEFAULTS).replace("SparsitySupport : false",
                                                     "SparsitySupport : TRUE")
                  .replace("ellpack_block", "csc"), encoding="utf-8")
    assert read_scalesim_sparsity(on) == ScaleSimSparsity(True, "csc", 40)
    # the array is the same: the sparsity applies per layer, with the topology's column
    plain = load_arch(_cfg(tmp_path))
    assert load_arch(on).replace(description=plain.description) == plain
    bare = tmp_path / "bare.cfg"  # no [sparsity] section at all: no support
    bare.write_text(CFG.format(**CFG_DEFAULTS).split("[sparsity]")[0], encoding="utf-8")
    assert not read_scalesim_sparsity(bare).support


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        (
            CFG.replace("ArrayHeight:    {rows}\n", ""),
            "[architecture_presets] ArrayHeight",
            "missing key",
        ),
        (
            CFG.replace("ArrayWidth:     {cols}", "ArrayWidth: abc"),
            "[architecture_presets] ArrayWidth",
            "expected an integer >= 1, got 'abc'",
        ),
        (
            CFG.replace("ArrayHeight:    {rows}", "ArrayHeight: 0"),
            "[architecture_presets] ArrayHeight",
            "expected an integer >= 1, got 0",
        ),
        (
            CFG.replace("ArrayHeight:", "ArrayHieght:"),
            "[architecture_presets] arrayhieght",
            "did you mean 'ArrayHeight'",
        ),
        (CFG.replace("{df}", "rs"), "[architecture_presets] Dataflow", "os, ws, is"),
        (
            CFG.replace("OfmapSramSzkB:   {ofmap}", "OfmapSramSzkB: -4"),
            "[architecture_presets] OfmapSramSzkB",
            "> 0",
        ),
        (
            CFG.replace("Bandwidth : {bw}", "Bandwidth : fast"),
            "[architecture_presets] Bandwidth",
            "words/cycle",
        ),
        (
            CFG.replace("Bandwidth : {bw}", "Bandwidth : 0"),
            "[architecture_presets] Bandwidth",
            "> 0",
        ),
        (
            CFG.replace("run_name = {run}", "run_name = my run"),
            "[general] run_name",
            "expected letters",
        ),
        (
            CFG.replace("[architecture_presets]", "[arch]"),
            "[architecture_presets]",
            "missing section",
        ),
        ("ArrayHeight: 32\n", None, "not a valid SCALE-Sim config"),
        (SPARSE.replace(": ellpack_block", ": bitmap"), "[sparsity] SparseRep",
         "expected one of csr, csc, ellpack_block, got 'bitmap'"),
        (SPARSE.replace("Mapping : false", "Mapping : true"), "[sparsity] OptimizedMapping",
         "row-wise mapping"),
        (SPARSE.replace("Support : true", "Support : maybe"), "[sparsity] SparsitySupport",
         "expected true or false, got 'maybe'"),
        (SPARSE.replace("RandomNumberGeneratorSeed : 40\n", ""),
         "[sparsity] RandomNumberGeneratorSeed", "missing key"),
        (
            CFG.replace("ArrayWidth:     {cols}", "ArrayWidth: 4\nArrayWidth: 8"),
            None,
            "not a valid SCALE-Sim config",
        ),
    ],
    ids=[
        "missing",
        "not-int",
        "zero",
        "typo",
        "dataflow",
        "negative-sram",
        "bandwidth",
        "zero-bandwidth",
        "run-name",
        "no-section",
        "no-header",
        "duplicate",
        "sparse-rep",
        "row-wise",
        "sparsity-bool",
        "sparsity-missing",
    ],
)
def test_bad_cfg(tmp_path, text, field, expected):
    path = tmp_path / "bad.cfg"
    path.write_text(text.format(**CFG_DEFAULTS), encoding="utf-8")
    message = _error(path)
    assert message.startswith(f"{path}: {field}: " if field else f"{path}: "), message
    assert expected in message, message


# ------------------------------------------------------------------------------------------------
# the doc
# ------------------------------------------------------------------------------------------------
def test_doc_names_every_key_and_preset():
    text = DOC.read_text(encoding="utf-8")
    keys = {re.sub(r"\b(ifmap|filter|ofmap)\b", "<buffer>", p) for p in KEY_PATHS}
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    missing += [n for n in PRESETS if f"`{n}`" not in text]
    assert not missing, f"docs/architecture.md does not mention: {missing}"


def test_doc_examples_load(tmp_path):
    text = DOC.read_text(encoding="utf-8")
    example = re.search(r"## Example file.*?```yaml\n(.*?)```", text, re.S).group(1)
    path = tmp_path / "example.yaml"
    path.write_text(example, encoding="utf-8")
    arch = load_arch(path)
    assert set(arch.to_dict()) == {k for k in KEY_PATHS if "." not in k}
    assert (arch.name, arch.rows, arch.word_bytes["ofmap"]) == ("my-accel", 64, 4)
    cfg = re.search(r"```ini\n(.*?)```", text, re.S).group(1)
    path = tmp_path / "doc.cfg"
    path.write_text(cfg, encoding="utf-8")
    preset = load_arch("scalesim-32")
    assert load_arch(path) == preset.replace(
        name="calc_32_os", description="from SCALE-Sim config doc.cfg"
    )


@pytest.mark.parametrize("how", ["preset", "file", "overrides"])
def test_a_file_is_validated_once(how, tmp_path, monkeypatch):
    """Reading checks every field once: the schema's checker runs one time per architecture
    built, not again when the dataclass is made."""
    import simulator.archspec as spec

    calls = []
    real = spec._parse
    monkeypatch.setattr(spec, "_parse", lambda raw, source: calls.append(source) or real(raw,
                                                                                          source))
    if how == "preset":
        load_arch("tensordash")
    elif how == "file":
        path = tmp_path / "a.yaml"
        path.write_text(load_arch("eyeriss").to_yaml(), encoding="utf-8")
        calls.clear()
        load_arch(path)
    else:
        arch = load_arch("scalesim-32")
        calls.clear()
        arch.with_overrides({"array.rows": 64})
    assert len(calls) == 1


def test_dram_later_keys():
    """The DRAM keys beyond the first model: the presets set their parts' values, a file that
    leaves them out gets the first model (and the same dict as before they existed), bad values
    are refused with the key named."""
    td, stc, tpu = load_arch("tensordash"), load_arch("stc-2to4"), load_arch("tpu-v1")
    assert (td.dram.bank_groups, td.dram.mapping, td.dram.tCCD_L, td.dram.tFAW, td.dram.tREFI,
            td.dram.tRFC, td.dram.queue_depth, td.dram.bank_queue_depth) == \
        (4, "channel_group_column_bank", 5, 21.25, 7800, 350, 32, 8)
    assert (stc.dram.tCCD_L, stc.dram.tRRD_S, stc.dram.tRRD_L, stc.dram.tFAW, stc.dram.tRAS,
            stc.dram.tREFI, stc.dram.tRFC) == (2, 4, 6, 30, 34, 3900, 260)
    assert (tpu.dram.bank_groups, tpu.dram.tRRD_S, tpu.dram.queue_depth) == (1, 3.5, 1)
    assert [(a.dram.write_queue_depth, a.dram.write_drain_threshold, a.dram.tWTR, a.dram.tRTW,
             a.dram.tWR) for a in (td, stc, tpu)] == [(32, 8, 2.5, 0.625, 15), (32, 8, 6, 2, 16),
                                                      (0, 0, 0, 0, 0)]
    plain = load_arch("scalesim-32")
    assert "tFAW" not in plain.to_dict()["dram"] and "queue_depth" not in plain.to_dict()["dram"]
    assert not {"tWR", "write_queue_depth"} & set(plain.to_dict()["dram"])
    assert td.to_dict()["dram"]["queue_depth"] == 32
    assert Architecture.from_dict(td.to_dict()) == td
    for key, value, match in [
        ("dram.bank_groups", 3, "divisor of dram.banks_per_channel"),
        ("dram.mapping", "rows", "channel_column_bank, channel_group_column_bank"),
        ("dram.tRFC", 100, "expected 0 when dram.tREFI is 0"),
        ("dram.tREFI", 50, "more than dram.tRP \\+ dram.tRFC \\(54 cycles\\)"),
        ("dram.tFAW", -1, "number >= 0"),
        ("dram.queue_depth", 0, "integer >= 1"),
        ("dram.queue_depth", 5000, "at most 1,024"),
        ("dram.bank_queue_depth", -1, "integer >= 0"),
        ("dram.write_queue_depth", 5000, "at most 1,024"),
        ("dram.write_drain_threshold", -1, "integer >= 0"),
        ("dram.tWTR", -1, "number >= 0"),
        ("dram.tWR", "x", "number"),
    ]:
        with pytest.raises(ArchError, match=f"{re.escape(key)}.*{match}"):
            plain.with_overrides({key: value, "dram.tRFC": 40} if key == "dram.tREFI"
                                 else {key: value})
