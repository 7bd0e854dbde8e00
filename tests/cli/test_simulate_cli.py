"""`sparsesim simulate` as a user runs it: outputs, defaults, and every bad input as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

TOPO = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
        "Num Filter, Strides,\nconv1,18,18,3,3,4,16,1,\nconv2,16,16,3,3,16,8,2,\n")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def topo(tmp_path) -> Path:
    p = tmp_path / "net.csv"
    p.write_text(TOPO)
    return p


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "t"
    r = run("synth", "--model", "lenet5", "--sparsity", "0.5", "--batch", "2", "-q",
            "-o", str(out))
    assert r.returncode == 0, r.stderr
    return out


def test_simulate_topology_writes_reports(topo, tmp_path):
    out = tmp_path / "res"
    r = run("simulate", str(topo), "--arch", "scalesim-32", "--dataflow", "ws",
            "--memory", "ideal", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "BANDWIDTH_REPORT.csv", "COMPUTE_REPORT.csv", "DETAILED_ACCESS_REPORT.csv",
        "SPARSE_REPORT.csv", "summary.json"]
    comp = pd.read_csv(out / "COMPUTE_REPORT.csv")
    assert list(comp["Layer"]) == ["conv1", "conv2"] and set(comp["Phase"]) == {"fwd"}
    # conv1: M = 16*16, K = 36, N = 16 on 32x32 ws: folds 2*1, 2*32+32+256-2 cycles each
    assert comp.loc[0, "Total Cycles"] == 2 * (64 + 32 + 256 - 2) - 1
    s = json.loads((out / "summary.json").read_text())
    assert s["dataflow"] == "ws" and s["memory"] == "ideal" and s["phases"] == "fwd"
    assert s["total"]["cycles"] == int(comp["Total Cycles"].sum() + len(comp))


def test_simulate_trace_defaults_to_training(trace, tmp_path):
    out = tmp_path / "res"
    r = run("simulate", str(trace), "--arch", "tensordash", "-o", str(out))
    assert r.returncode == 0, r.stderr
    comp = pd.read_csv(out / "COMPUTE_REPORT.csv")
    gemms = comp[comp["Phase"].isin(["fwd", "bwd_input", "bwd_weight"])]
    assert len(gemms) == 3 * 5 - 1
    # SWAT's top-K unit: one row per sparsified layer (the first layer stays dense)
    assert sorted(comp[comp["Phase"] == "topk"]["Layer"]) == ["conv2", "fc1", "fc2", "fc3"]
    assert (gemms["Speedup"] > 0).all() and (gemms["Dense Cycles"] > 0).all()
    assert (comp["Stall Cycles"] >= 0).all()
    assert "tensordash 16x16x16 os, modeled memory" in r.stdout
    # the dense baseline's own step: its cycles are the GEMMs' Dense Cycles; its bytes and
    # energy are a dense run's (no skipping, so at least the sparse run's MACs' energy)
    s = json.loads((out / "summary.json").read_text())
    b = s["baseline_per_step"]
    assert b["cycles"] == int(gemms["Dense Cycles"].sum())
    assert b["gemms"] == len(gemms) and b["macs"] == s["total"]["macs"]
    assert b["energy_pj"] > 0 and b["dram_bytes"] > 0
    assert f"dense baseline: cycles {b['cycles']:,}" in r.stdout


def test_simulate_timeline_writes_a_chrome_trace(trace, tmp_path):
    out = tmp_path / "res"
    r = run("simulate", str(trace), "--arch", "tensordash", "--timeline", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "timeline.json" in r.stdout
    events = json.loads((out / "timeline.json").read_text())["traceEvents"]
    tracks = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert {"GEMM", "PE array", "DRAM read DMA", "DRAM write DMA"} <= tracks
    spans = [e for e in events if e["ph"] == "X"]
    assert spans and all(e["dur"] >= 0 and e["ts"] >= 0 for e in spans)
    # the GEMM track has one span per row of the compute report
    tid = next(e["tid"] for e in events if e["name"] == "thread_name"
               and e["args"]["name"] == "GEMM")
    comp = pd.read_csv(out / "COMPUTE_REPORT.csv")
    gemms = comp[comp["Phase"].isin(["fwd", "bwd_input", "bwd_weight"])]
    assert sum(e["tid"] == tid for e in spans) == len(gemms)
    # without the flag: no timeline
    r = run("simulate", str(trace), "--arch", "tensordash", "-o", str(tmp_path / "plain"))
    assert r.returncode == 0 and not (tmp_path / "plain" / "timeline.json").exists()


def _bad(*args: str, out: Path) -> str:
    r = run(*args, "-o", str(out))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    return lines[0]


def _yaml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "arch.yaml"
    p.write_text(text)
    return p


def test_unknown_preset(topo, tmp_path):
    msg = _bad("simulate", str(topo), "--arch", "tpu-v9", out=tmp_path / "o")
    assert "tpu-v9" in msg and "scalesim-32" in msg


def test_unknown_dataflow(topo, tmp_path):
    msg = _bad("simulate", str(topo), "--arch", "scalesim-32", "--dataflow", "rs",
               out=tmp_path / "o")
    assert "--dataflow" in msg and "rs" in msg


def test_bad_phases_and_memory(topo, tmp_path):
    assert "--phases" in _bad("simulate", str(topo), "--arch", "scalesim-32", "--phases",
                              "bwd", out=tmp_path / "o")
    assert "--memory" in _bad("simulate", str(topo), "--arch", "scalesim-32", "--memory",
                              "perfect", out=tmp_path / "o")


def test_missing_and_mistyped_yaml_keys(topo, tmp_path):
    p = _yaml(tmp_path, "name: mine\narray: {cols: 8}\n")
    msg = _bad("simulate", str(topo), "--arch", str(p), out=tmp_path / "o")
    assert "arch.yaml" in msg and "array.rows" in msg
    p = _yaml(tmp_path, "name: mine\narray: {rows: 8, cols: 8, dataflwo: os}\n")
    msg = _bad("simulate", str(topo), "--arch", str(p), out=tmp_path / "o")
    assert "arch.yaml" in msg and "dataflwo" in msg and "dataflow" in msg


@pytest.mark.parametrize("field, value", [("rows", 0), ("rows", -4), ("cols", "many")])
def test_zero_negative_or_wrong_size(topo, tmp_path, field, value):
    other = "cols" if field == "rows" else "rows"
    p = _yaml(tmp_path, f"name: mine\narray: {{{field}: {value}, {other}: 8}}\n")
    msg = _bad("simulate", str(topo), "--arch", str(p), out=tmp_path / "o")
    assert "arch.yaml" in msg and f"array.{field}" in msg


def test_buffer_too_small(topo, tmp_path):
    p = _yaml(tmp_path, "name: mine\narray: {rows: 64, cols: 64, lanes: 2}\n"
                        "sram: {ifmap: {kib: 0.125, banks: 1}}\n")
    msg = _bad("simulate", str(topo), "--arch", str(p), out=tmp_path / "o")
    assert "arch.yaml" in msg and "sram.ifmap.kib" in msg


def test_missing_input(tmp_path):
    msg = _bad("simulate", str(tmp_path / "nope.csv"), "--arch", "scalesim-32",
               out=tmp_path / "o")
    assert "nope.csv" in msg


def test_existing_results_kept(topo, tmp_path):
    out = tmp_path / "res"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = run("simulate", str(topo), "--arch", "scalesim-32", "-o", str(out))
    assert r.returncode == 2 and "--force" in r.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_set_changes_keys_of_the_architecture(trace, tmp_path):
    """--set KEY=VALUE: a slower DRAM gives a slower run of the same work, recorded in
    arch_spec; the preset keeps its name."""
    runs = {}
    for name, extra in (("base", []), ("slow", ["--set", "dram.bandwidth_gbps=1.6",
                                                "--set", "dram.channels=1"])):
        out = tmp_path / name
        r = run("simulate", str(trace), "--arch", "tensordash", *extra, "-o", str(out))
        assert r.returncode == 0, r.stderr
        runs[name] = json.loads((out / "summary.json").read_text())
    base, slow = runs["base"], runs["slow"]
    assert slow["arch"] == base["arch"] == "tensordash"
    assert slow["arch_spec"]["dram"]["bandwidth_gbps"] == 1.6
    assert slow["arch_spec"]["dram"]["channels"] == 1
    assert base["arch_spec"]["dram"]["bandwidth_gbps"] == 102.4
    assert slow["total"]["macs"] == base["total"]["macs"]
    assert slow["total"]["cycles"] > base["total"]["cycles"]


@pytest.mark.parametrize("item, words", [
    ("dram.bandwidth_gbps", "expected KEY=VALUE"),
    ("dram.nope=3", "dram.nope: unknown key"),
    ("dram.bandwidth_gbps=-1", "dram.bandwidth_gbps: expected a number > 0"),
    ("array.rows=[1", "array.rows: cannot read the value"),
])
def test_bad_set_is_one_line(trace, tmp_path, item, words):
    r = run("simulate", str(trace), "--arch", "tensordash", "--set", item,
            "-o", str(tmp_path / "r"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "--set" in r.stderr and words in r.stderr, r.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("how", [["--memory", "modeled"], ["--memory", "ideal", "--no-cache"]])
def test_simulate_does_not_import_pandas(trace, tmp_path, how):
    """pandas costs ``simulate`` about a quarter of a second to import, and it needs none: its
    tables are ``simulator.table`` tables (reports, sweeps and ``--timeline`` still use it)."""
    args = ["simulate", str(trace), "--arch", "tensordash", *how, "-o", str(tmp_path / "r")]
    code = (f"import sys; from cli.main import main; rc = main({args!r}); "
            "print('pandas' in sys.modules, rc)")
    env = {**os.environ, "SPARSESIM_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    assert out.stdout.strip().splitlines()[-1] == "False 0"
    assert (tmp_path / "r" / "COMPUTE_REPORT.csv").is_file()
