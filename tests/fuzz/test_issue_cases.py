"""The hostile inputs the probe of issue 17 found, one by one: each is refused on one line (or,
for the output rules, leaves nothing behind), quickly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.fuzz.contract import deep_yaml, yaml_bomb
from tests.fuzz.test_hostile_paths import TOPOLOGY, cli, refused


@pytest.fixture()
def work(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.csv").write_text(TOPOLOGY)
    return tmp_path


def arch_file(work: Path, body: str) -> str:
    (work / "a.yaml").write_text("name: x\narray: {rows: 8, cols: 8}\n" + body)
    return "a.yaml"


@pytest.mark.parametrize(
    "body, needle",
    [
        ("clock_ghz: 1.8e308\n", "clock_ghz: expected a number > 0 and at most"),
        ("clock_ghz: " + "9" * 400 + "\n", "clock_ghz: expected a number > 0"),
        ("sram: {ifmap: {kib: 9223372036854775808}}\n", "sram.ifmap.kib"),
        ("energy: {mac_pj: 1.8e308}\n", "energy.mac_pj"),
        (
            "array: {rows: 8, cols: 8, lanes: 4}\nsparse: {window: {lookahead: "
            "1000000000000000000000000000000, lookaside: 0}}\n",
            "sparse.window.lookahead",
        ),
        (
            "sparse: {taps: {shape: T, lookahead: " + "1" + "0" * 30 + ", lookaside: 1}}\n",
            "sparse.taps",
        ),
        ("sparse: {nm: '²:4'}\n", "sparse.nm"),
        ("dram: {channels: " + "1" * 5000 + "}\n", "digits"),
        ("x: \x07\n", "not valid YAML"),
    ],
)
def test_architecture_values(work, body, needle):
    if body.startswith("array:"):
        (work / "a.yaml").write_text("name: x\n" + body)
    else:
        arch_file(work, body)
    refused(["simulate", "net.csv", "--arch", "a.yaml", "-o", "o"], needle)
    assert not (work / "o").exists()


@pytest.mark.parametrize(
    "text, needle",
    [
        (yaml_bomb(9, 10), "billion laughs"),
        (deep_yaml(2000, flow=True), "nested deeper"),
        (deep_yaml(1000, flow=False), "nested deeper"),
    ],
)
@pytest.mark.parametrize("kind", ["arch", "sweep"])
def test_yaml_bombs_and_depth_are_refused_at_once(work, text, needle, kind):
    (work / "f.yaml").write_text(text)
    t0 = time.perf_counter()
    if kind == "arch":
        refused(["simulate", "net.csv", "--arch", "f.yaml", "-o", "o"], needle)
    else:
        refused(["sweep", "f.yaml", "-o", "o", "-q"], needle)
    assert time.perf_counter() - t0 < 10
    assert not (work / "o").exists()


def test_synth_beyond_the_trace_limits_is_refused_up_front(work):
    refused(
        ["synth", "--model", "lenet5", "--sparsity", "0.5", "--batch", "100000", "-q", "-o", "o"],
        "--batch",
    )
    (work / "wide.csv").write_text("Layer, M, N, K,\ng1, 65537, 2, 2,\n")
    refused(["synth", "--model", "wide.csv", "--sparsity", "0.5", "-q", "-o", "o"], "65536")
    assert not (work / "o").exists() and not list(work.glob(".o.*"))


def test_a_sweep_beyond_the_limits_is_refused_before_any_point(work):
    rows = list(range(1, 1001))
    (work / "s.yaml").write_text(
        "arch: scalesim-32\nsynth: {model: lenet5, sparsity: 0.5}\n"
        f"grid: {{array.rows: {rows}, array.cols: {rows}}}\n"
    )
    t0 = time.perf_counter()
    refused(["sweep", "s.yaml", "-o", "o", "-q"], "makes 1,000,000 points")
    assert time.perf_counter() - t0 < 10
    (work / "b.yaml").write_text(
        "arch: scalesim-32\nsynth: {model: lenet5, sparsity: 0.5, "
        "batch: 18446744073709551616}\ngrid: {array.rows: [8, 16]}\n"
    )
    refused(["sweep", "b.yaml", "-o", "o", "-q"], "synth: batch")
    assert not (work / "o").exists()


def test_a_topology_of_many_rows_is_refused_at_once(work):
    (work / "big.csv").write_text(
        "Layer, M, N, K,\n" + "".join(f"g{i}, 8, 8, 8,\n" for i in range(200_000))
    )
    refused(["simulate", "big.csv", "--arch", "scalesim-32", "-o", "o"], "200,000 layer rows")


def test_report_of_results_missing_a_report_is_refused(work):
    assert cli("simulate", "net.csv", "--arch", "scalesim-32", "-o", "res")[0] == 0
    (work / "res" / "DETAILED_ACCESS_REPORT.csv").unlink()
    refused(["report", "res", "-o", "rep", "-q"], "DETAILED_ACCESS_REPORT.csv: missing")
    assert not (work / "rep").exists()


@pytest.mark.parametrize("cell", ["1e400", "-inf"])
def test_report_of_results_with_an_infinite_number_is_refused(work, cell):
    """A number beyond float64 in a results CSV reads as infinity, which no figure can scale
    to: refused on load with the file, column and line (it reached matplotlib before)."""
    assert cli("simulate", "net.csv", "--arch", "scalesim-32", "-o", "res")[0] == 0
    path = work / "res" / "COMPUTE_REPORT.csv"
    lines = path.read_text().splitlines()
    col = lines[0].split(",").index("Compute Cycles")
    cells = lines[2].split(",")
    cells[col] = cell
    lines[2] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    refused(["report", "res", "-o", "rep", "-q"],
            "COMPUTE_REPORT.csv: Compute Cycles: line 3: expected a finite number, got")
    assert not (work / "rep").exists()
