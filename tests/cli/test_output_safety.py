"""Output directories: --force never deletes an input or the current directory, a killed run
leaves nothing half-written, empty arguments are usage errors; named per-layer sparsity files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from traces.format import Trace

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env=ENV)


def one_line_error(r: subprocess.CompletedProcess, needle: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "t"
    r = run("synth", "--model", "lenet5", "--method", "swat", "--sparsity", "0.9", "--batch",
            "2", "-q", "-o", str(out))
    assert r.returncode == 0, r.stderr
    return out


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_force_never_replaces_an_input(trace, tmp_path):
    copy = tmp_path / "t"
    copy.mkdir()
    for name, data in _files(trace).items():
        (copy / name).write_bytes(data)
    before = _files(copy)
    for out in (copy, tmp_path):  # the input itself, and a directory holding it
        r = run("simulate", str(copy), "--arch", "tensordash", "-o", str(out), "--force")
        one_line_error(r, "is (or contains) the input")
        assert _files(copy) == before
    arch = tmp_path / "a" / "arch.yaml"
    arch.parent.mkdir()
    arch.write_text((REPO / "simulator" / "presets" / "tensordash.yaml").read_text())
    r = run("simulate", str(trace), "--arch", str(arch), "-o", str(arch.parent), "--force")
    one_line_error(r, "is (or contains) the input")
    assert arch.exists()
    (tmp_path / "ls.txt").write_text("0.5\n" * 5)
    r = run("synth", "--model", "lenet5", "--method", "static", "--layer-sparsity",
            str(tmp_path / "ls.txt"), "-o", str(tmp_path), "--force", "-q")
    one_line_error(r, "is (or contains) the input")
    r = run("report", str(trace), str(trace), "-o", str(tmp_path / "rep"))
    one_line_error(r, "is given twice")


@pytest.mark.parametrize("out", [".", "e/..", "e/../.."])
def test_the_current_directory_is_never_an_output(trace, tmp_path, out):
    (tmp_path / "e").mkdir()
    (tmp_path / "keep").write_text("x")
    r = run("simulate", str(trace), "--arch", "tensordash", "-o", out, "--force", cwd=tmp_path)
    one_line_error(r, "is (or contains) the current directory")
    assert (tmp_path / "keep").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e", "keep"]


@pytest.mark.parametrize(("args", "needle"), [
    (["simulate", "T", "--arch", "tensordash", "-o", ""], "argument -o/--output: expected a path"),
    (["simulate", "", "--arch", "tensordash", "-o", "r"], "argument input: expected a path"),
    (["simulate", "T", "--arch", "", "-o", "r"], "argument --arch: expected a name"),
    (["simulate", "T", "--arch", "tensordash", "--dataflow", "", "-o", "r"],
     "argument --dataflow: expected a name"),
    (["info", ""], "argument target: expected a name"),
    (["report", "", "-o", "r"], "argument RESULT_DIR: expected a path"),
    (["sweep", "", "-o", "r"], "argument SWEEP.yaml: expected a path"),
    (["train", "--seed", "-1"], "--seed: expected a non-negative integer"),
])
def test_empty_and_negative_arguments(args, needle, tmp_path):
    one_line_error(run(*args, cwd=tmp_path), needle)
    assert list(tmp_path.iterdir()) == []


def test_an_output_that_cannot_be_created_is_named_as_given(trace, tmp_path):
    (tmp_path / "file").write_text("x")
    r = run("simulate", str(trace), "--arch", "tensordash", "-o", str(tmp_path / "file" / "r"))
    assert r.returncode == 2 and "partial" not in r.stderr and "Traceback" not in r.stderr
    assert str(tmp_path / "file") in r.stderr


def test_sigterm_leaves_nothing_half_written_and_stale_leftovers_are_cleared(tmp_path):
    out = tmp_path / "big"
    p = subprocess.Popen([sys.executable, "-m", "cli.main", "synth", "--model", "resnet50",
                          "--method", "swat", "--sparsity", "0.9", "--batch", "16", "--steps",
                          "4", "-q", "-o", str(out)], env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".big.partial-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob(".big.partial-*")), "the run never started writing"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM and "terminated" in err
    assert list(tmp_path.iterdir()) == []
    # a leftover of a process killed with SIGKILL (its PID no longer runs) goes on the next run
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".big.partial-{dead.pid}"
    stale.mkdir()
    (stale / "step_00000000.npz").write_bytes(b"half")
    r = run("synth", "--model", "lenet5", "--method", "swat", "--sparsity", "0.9", "--batch", "2",
            "-q", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big"]


def test_named_layer_sparsity_file_is_matched_by_name(tmp_path):
    f = tmp_path / "ls.txt"
    f.write_text("# name,value in any order\nfc3,0.9\nfc2,0.8\nfc1,0.7\nconv2,0.6\nconv1,0.0\n")
    out = tmp_path / "t"
    r = run("synth", "--model", "lenet5", "--method", "static", "--layer-sparsity", str(f),
            "--batch", "2", "-q", "-o", str(out))
    assert r.returncode == 0, r.stderr
    step = next(iter(Trace(out)))
    dens = {name: ops["fwd"]["filter"].density
            for name, ops in step.layers.items()}
    assert dens == pytest.approx({"conv1": 1.0, "conv2": 0.4, "fc1": 0.3, "fc2": 0.2,
                                  "fc3": 0.1}, abs=0.01)
    for text, needle in (("fc3,0.9\nbogus,0.2\n", "lenet5 has no layer 'bogus'"),
                         ("fc3,0.9\n0.2\n", "name every line"),
                         ("fc3,0.9\nfc3,0.8\n", "given twice"),
                         ("fc3,0.9\nfc2,0.8\n", "no value for layer(s) conv1, conv2, fc1")):
        f.write_text(text)
        one_line_error(run("synth", "--model", "lenet5", "--method", "static",
                           "--layer-sparsity", str(f), "-q", "-o", str(tmp_path / "x")), needle)
        assert not (tmp_path / "x").exists()
