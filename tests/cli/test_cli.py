"""The console script, run as a user runs it: exit codes, one-line errors, nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                          text=True, cwd=cwd, env=ENV, timeout=300)


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "lenet"
    r = run("synth", "--model", "lenet5", "--method", "swat", "--sparsity", "0.9",
            "--batch", "4", "--seed", "0", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert f"trace written to {out}" in r.stdout
    return out


def test_synth_then_info(trace):
    r = run("info", str(trace))
    assert r.returncode == 0, r.stderr
    assert "model lenet5, method swat, batch 4" in r.stdout
    assert "on disk, masks coded gaps-zstd" in r.stdout  # what synth writes
    # the table lists every layer with its densities; conv2's weight density is 0.1
    row = next(line for line in r.stdout.splitlines() if line.strip().startswith("conv2"))
    assert float(row.split()[1]) == pytest.approx(0.1, abs=0.01)


def test_info_model_and_topology(tmp_path):
    r = run("info", "resnet18")
    assert r.returncode == 0 and "11,689,512 parameters" in r.stdout
    csv = tmp_path / "net.csv"
    csv.write_text("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, "
                   "Channels, Num Filter, Strides,\nconv1,10,10,3,3,4,8,1,\n")
    r = run("info", str(csv))
    assert r.returncode == 0 and "conv1" in r.stdout and "8x8" in r.stdout


def test_synth_from_topology_csv(tmp_path):
    csv = tmp_path / "gemms.csv"
    csv.write_text("Layer, M, N, K,\nG1, 64, 32, 48,\nG2, 16, 16, 16,\n")
    out = tmp_path / "t"
    r = run("synth", "--model", str(csv), "--method", "static", "--sparsity", "0.5",
            "--no-first-dense", "--batch", "1", "-o", str(out))
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"] == "gemms" and [la["name"] for la in m["layers"]] == ["G1", "G2"]


def _bad(*args: str, out: Path | None = None) -> str:
    r = run(*args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    if out is not None:
        assert not out.exists()
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    return lines[0]


def test_unknown_model(tmp_path):
    out = tmp_path / "o"
    msg = _bad("synth", "--model", "resnet9000", "--sparsity", "0.5", "-o", str(out), out=out)
    assert "unknown model 'resnet9000'" in msg and "resnet50" in msg


@pytest.mark.parametrize("value", ["1.5", "-0.2", "nan"])
def test_sparsity_outside_unit_interval(tmp_path, value):
    out = tmp_path / "o"
    msg = _bad("synth", "--model", "lenet5", "--sparsity", value, "-o", str(out), out=out)
    assert "--sparsity" in msg


def test_sparsity_not_a_number(tmp_path):
    msg = _bad("synth", "--model", "lenet5", "--sparsity", "lots", "-o", str(tmp_path / "o"))
    assert "--sparsity" in msg and "lots" in msg


def test_unknown_pattern_and_method(tmp_path):
    assert "pattern" in _bad("synth", "--model", "lenet5", "--sparsity", "0.5", "--pattern",
                             "zigzag", "-o", str(tmp_path / "o"))
    assert "--method" in _bad("synth", "--model", "lenet5", "--method", "magic",
                              "-o", str(tmp_path / "o"))


def test_unreadable_csv(tmp_path):
    missing = tmp_path / "missing.csv"
    assert "missing.csv" in _bad("info", str(missing))
    bad = tmp_path / "bad.csv"
    bad.write_text("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, "
                   "Channels, Num Filter, Strides,\nconv1,ten,10,3,3,4,8,1,\n")
    msg = _bad("synth", "--model", str(bad), "--sparsity", "0.5", "-o", str(tmp_path / "o"),
               out=tmp_path / "o")
    assert "bad.csv" in msg and "line 2" in msg
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert "bin.csv" in _bad("info", str(binary))


def _copy_trace(trace: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in trace.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_truncated_npz(trace, tmp_path):
    t = _copy_trace(trace, tmp_path / "t")
    step = t / "step_00000000.npz"
    step.write_bytes(step.read_bytes()[: step.stat().st_size // 2])
    msg = _bad("info", str(t))
    assert "step_00000000.npz" in msg and "truncated" in msg


def test_unknown_version(trace, tmp_path):
    t = _copy_trace(trace, tmp_path / "t")
    m = json.loads((t / "manifest.json").read_text())
    m["format_version"] = 99
    (t / "manifest.json").write_text(json.dumps(m))
    msg = _bad("info", str(t))
    assert "manifest.json" in msg and "format_version" in msg and "99" in msg


def test_shape_mismatch(trace, tmp_path):
    t = _copy_trace(trace, tmp_path / "t")
    m = json.loads((t / "manifest.json").read_text())
    m["layers"][1]["out_channels"] = 17
    (t / "manifest.json").write_text(json.dumps(m))
    msg = _bad("info", str(t))
    assert "step_00000000.npz" in msg and "conv2" in msg and "shape" in msg


def test_existing_output_is_not_overwritten(trace):
    before = {f.name: f.read_bytes() for f in trace.iterdir()}
    msg = _bad("synth", "--model", "mlp3", "--sparsity", "0.5", "-o", str(trace))
    assert "--force" in msg
    assert {f.name: f.read_bytes() for f in trace.iterdir()} == before


def test_output_parents_are_created(tmp_path):
    out = tmp_path / "runs" / "deep" / "t"
    r = run("synth", "--model", "mlp3", "--sparsity", "0.5", "-q", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "manifest.json").is_file()


def test_output_under_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    msg = _bad("synth", "--model", "mlp3", "--sparsity", "0.5", "-o", str(tmp_path / "f" / "t"))
    assert "not a directory" in msg


def test_force_replaces(tmp_path):
    out = tmp_path / "t"
    assert run("synth", "--model", "mlp3", "--sparsity", "0.5", "-o", str(out)).returncode == 0
    r = run("synth", "--model", "lenet5", "--sparsity", "0.5", "--force", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "manifest.json").read_text())["model"] == "lenet5"
