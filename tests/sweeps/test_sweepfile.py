"""Sweep files: expansion, effective axis values, point keys, and every bad file as one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from textwrap import dedent

import pytest
import yaml

from cli.main import main
from pipeline.sweepfile import load_sweep

BASE = """\
arch: scalesim-32
memory: ideal
synth: {model: lenet5, method: swat, sparsity: 0.5, batch: 1}
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_points_cross_the_grid_in_file_order(tmp_path):
    sw = load_sweep(write(tmp_path, BASE + dedent("""\
        points:
          - {dataflow: os}
          - {dataflow: ws, array.rows: 16, array.cols: 8}
        grid:
          sparsity: [0.5, 0.9]
          sram.ifmap.kib: [32, 64]
        """)))
    assert sw.axes == ("dataflow", "array.rows", "array.cols", "sparsity", "sram.ifmap.kib")
    got = [(p.axes["dataflow"], p.axes["array.rows"], p.axes["sparsity"],
            p.axes["sram.ifmap.kib"]) for p in sw.points]
    # listed points outer, grid inner (last axis fastest); the first point leaves array.rows to
    # the base, so its column shows the base's value
    assert got == [("os", 32, 0.5, 32), ("os", 32, 0.5, 64), ("os", 32, 0.9, 32),
                   ("os", 32, 0.9, 64), ("ws", 16, 0.5, 32), ("ws", 16, 0.5, 64),
                   ("ws", 16, 0.9, 32), ("ws", 16, 0.9, 64)]
    assert [p.index for p in sw.points] == list(range(8))
    assert len({p.key for p in sw.points}) == 8
    # points with the same synth recipe share one trace
    assert sw.points[0].trace_key == sw.points[4].trace_key != sw.points[2].trace_key
    ws = sw.points[6]
    assert (ws.arch["array"]["rows"], ws.arch["array"]["cols"], ws.dataflow) == (16, 8, "ws")
    assert ws.arch["sram"]["ifmap"]["kib"] == 32 and ws.synth["sparsity"] == 0.9


def test_unquoted_nm_patterns_and_exponents_are_what_they_look_like(tmp_path):
    """YAML 1.1 (PyYAML) reads 2:4 as 124 and 1e9 as text; a sweep file reads them as YAML 1.2
    does."""
    sw = load_sweep(write(tmp_path, BASE.replace("sparsity: 0.5, ", "") + dedent("""\
        grid:
          pattern: [2:4, 1:4]
          dram.bandwidth_gbps: [1e2, 2.5e+1]
        """)))
    got = [(p.synth["pattern"], p.arch["dram"]["bandwidth_gbps"]) for p in sw.points]
    assert got == [("2:4", 100.0), ("2:4", 25.0), ("1:4", 100.0), ("1:4", 25.0)]


def test_a_point_has_the_same_key_in_any_sweep(tmp_path):
    a = load_sweep(write(tmp_path, BASE + "grid: {sparsity: [0.5, 0.7], array.rows: [16, 32]}\n",
                         "a.yaml"))
    b = load_sweep(write(tmp_path, BASE.replace("memory: ideal\n", "") + dedent("""\
        points:
          - {array.rows: 16, sparsity: 0.7, memory: ideal}
          - {array.rows: 16, sparsity: 0.7}
        """), "b.yaml"))
    keys = {(p.axes["sparsity"], p.axes["array.rows"]): p.key for p in a.points}
    assert b.points[0].key == keys[(0.7, 16)]
    assert b.points[1].key not in keys.values()  # modeled memory: another configuration


def test_the_key_follows_the_architecture_file_content(tmp_path):
    arch = tmp_path / "mine.yaml"
    arch.write_text("name: mine\narray: {rows: 8, cols: 8}\n")
    sweep = write(tmp_path, BASE.replace("scalesim-32", "mine.yaml") + "grid: {sparsity: [0.5]}\n")
    before = load_sweep(sweep).points[0]
    assert before.arch["array"]["rows"] == 8
    arch.write_text("name: mine\narray: {rows: 8, cols: 8}\ndram: {bandwidth_gbps: 20.0}\n")
    after = load_sweep(sweep).points[0]
    assert after.key != before.key and after.trace_key == before.trace_key


def test_a_sweep_from_a_mapping_equals_the_file(tmp_path):
    text = BASE + "grid: {dataflow: [os, is]}\n"
    from_file = load_sweep(write(tmp_path, text))
    from_dict = load_sweep(yaml.safe_load(text))
    assert [p.key for p in from_file.points] == [p.key for p in from_dict.points]


# ------------------------------------------------------------------------------------------------
# bad sweep files: one line naming the file and the field, exit 2, nothing written
# ------------------------------------------------------------------------------------------------
BAD = {
    "unknown top-level key": (BASE + "grids: {sparsity: [0.5]}\n",
                              ["unknown key 'grids'", "did you mean 'grid'"]),
    "unknown axis": (BASE + "grid: {array.rowz: [16]}\n",
                     ["grid: array.rowz", "did you mean 'array.rows'"]),
    "unknown architecture key": (BASE + "overrides: {dram.bandwidth: 20}\ngrid: {seed: [1]}\n",
                                 ["overrides: dram.bandwidth", "unknown architecture key"]),
    "wrong type": (BASE + "grid: {sparsity: [0.5, high]}\n",
                   ["grid: sparsity", "expected a number", "'high'"]),
    "grid value not a list": (BASE + "grid: {sparsity: 0.5}\n",
                              ["grid: sparsity", "non-empty list"]),
    "unknown dataflow": (BASE + "points: [{dataflow: os}, {dataflow: xs}]\n",
                         ["points item 2: dataflow", "expected one of os, ws, is", "'xs'"]),
    "negative size": (BASE + "grid: {sram.ifmap.kib: [64, -8]}\n",
                      ["grid: sram.ifmap.kib", "> 0", "-8"]),
    "unknown method": (BASE + "grid: {method: [swat, magic]}\n",
                       ["grid: method", "unknown method 'magic'"]),
    "unknown preset": (BASE.replace("scalesim-32", "scalsim-32") + "grid: {seed: [1]}\n",
                       ["arch", "did you mean 'scalesim-32'"]),
    "a number for a pattern": (BASE + "grid: {pattern: [24]}\n",
                               ["grid: pattern", "expected text, got 24"]),
    "a value the sweep sets is at fault": (
        BASE + "grid: {array.rows: [512], sram.ifmap.kib: [64, 0.25]}\n",
        ["grid: sram.ifmap.kib", "0.25 KiB is too small", "512 banks"]),
    "only the combination is wrong": (  # the base's 64 KiB cannot feed 65536 rows
        BASE + "grid: {array.rows: [32, 65536]}\n",
        ["point 2 (array.rows=65536): sram.ifmap.kib", "too small"]),
    "axis in grid and points": (BASE + "points: [{sparsity: 0.5}]\ngrid: {sparsity: [0.9]}\n",
                                ["points item 1: sparsity", "also a grid axis"]),
    "the same point twice": (BASE + "points: [{sparsity: 0.5}, {seed: 0, sparsity: 0.5}]\n",
                             ["point 2", "the same configuration as point 1"]),
    "no axes": (BASE, ["no axes"]),
    "trace and synth": (BASE + "trace: t\ngrid: {seed: [1]}\n", ["trace", "not both"]),
    "missing sparsity": (BASE.replace("sparsity: 0.5, ", "") + "grid: {seed: [1]}\n",
                         ["synth: sparsity", "required for method swat"]),
    "sparsity out of range": (BASE.replace("0.5", "1.5") + "grid: {seed: [1]}\n",
                         ["synth: sparsity", "[0, 1]"]),
    "malformed YAML": (BASE + "grid: {sparsity: [0.5}\n", ["line 4", "not valid YAML"]),
    "duplicate key": (BASE + "grid: {seed: [1]}\ngrid: {seed: [2]}\n",
                      ["not valid YAML", "duplicate key 'grid'"]),
    "not a mapping": ("- 1\n- 2\n", ["expected a mapping"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_sweep_file_is_one_line_and_writes_nothing(case, tmp_path, capsys):
    text, expected = BAD[case]
    sweep = write(tmp_path, text)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(sweep), "-o", str(out), "--workers", "1", "-q"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"sparsesim: error: {sweep}: "), err
    for part in expected:
        assert part in err, err
    assert not out.exists()


def test_missing_sweep_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(tmp_path / "nope.yaml"), "-o", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert capsys.readouterr().err == f"sparsesim: error: {tmp_path / 'nope.yaml'}: no such file\n"
    assert not (tmp_path / "out").exists()


def test_output_that_is_not_a_sweep_directory_is_refused(tmp_path, capsys):
    sweep = write(tmp_path, BASE + "grid: {sparsity: [0.5]}\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(sweep), "-o", str(out), "-q"])
    assert exc.value.code == 2
    assert "-o: " in capsys.readouterr().err and sorted(out.iterdir()) == [out / "notes.txt"]


def test_output_that_cannot_be_created_names_the_flag(tmp_path, capsys, monkeypatch):
    sweep = write(tmp_path, BASE + "grid: {sparsity: [0.5]}\n")
    real_mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):
        if self.name == "points":
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(sweep), "-o", str(tmp_path / "out"), "-q"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("sparsesim: error: -o: cannot create ")


def test_console_script_prints_no_traceback(tmp_path):
    sweep = write(tmp_path, BASE + "grid: {array.rows: [0]}\n")
    r = subprocess.run([sys.executable, "-m", "cli.main", "sweep", str(sweep), "-o",
                        str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == (f"sparsesim: error: {sweep}: grid: array.rows: expected an integer >= 1, "
                        "got 0\n")
