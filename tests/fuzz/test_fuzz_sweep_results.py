"""Generated sweep files and damaged results directories: each reads (a sweep: every point
checked up front), or is refused on one line."""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from pipeline.sweepfile import load_sweep
from simulator.arch import load_arch
from simulator.results import load_run, write_results
from simulator.run import simulate
from tests.fuzz.contract import (
    EXAMPLES,
    FUZZ,
    HOSTILE_YAML,
    ODD_TEXT,
    outcome,
    plausible,
    values,
)
from traces.layers import Layer

BASE_SWEEP = {
    "arch": "scalesim-32",
    "synth": {"model": "lenet5", "sparsity": 0.5, "batch": 2},
    "phases": "fwd",
    "grid": {"array.rows": [8, 16]},
}
SWEEP_PATHS = [
    "name",
    "arch",
    "trace",
    "memory",
    "phases",
    "dataflow",
    "overrides",
    "overrides.array.cols",
    "synth",
    "synth.batch",
    "synth.sparsity",
    "synth.steps",
    "synth.seed",
    "synth.model",
    "synth.method",
    "synth.pattern",
    "synth.layer_sparsity",
    "grid",
    "grid.array.rows",
    "grid.sparsity",
    "grid.batch",
    "grid.sram.ifmap.kib",
    "grid.sparse.nm",
    "points",
    "unknown",
]


def _set(doc: dict, dotted: str, value) -> None:
    top, _, rest = dotted.partition(".")
    if not rest:
        doc[top] = value
    elif isinstance(doc.get(top), dict):
        doc[top][rest] = value  # an axis or key keeps its dots
    else:
        doc[top] = {rest: value}


@st.composite
def sweep_texts(draw) -> str:
    if draw(st.integers(0, 5)) == 0:
        return draw(HOSTILE_YAML)
    doc = copy.deepcopy(BASE_SWEEP)
    for _ in range(draw(st.integers(0, 2))):  # 0: the base sweep as it is
        path = draw(st.sampled_from(SWEEP_PATHS))
        value = draw(
            st.one_of(
                plausible,
                values,
                st.lists(plausible, min_size=1, max_size=4),
                st.sampled_from([2**64, [2**64], [1] * 200, list(range(200))]),
            )
        )
        _set(doc, path, value)
    try:
        return yaml.safe_dump(doc, allow_unicode=True)
    except (ValueError, yaml.YAMLError):
        return draw(HOSTILE_YAML)


@FUZZ
@given(text=sweep_texts())
def test_sweep_file(text):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "sweep.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        outcome("sweep.yaml", load_sweep, path)


@pytest.fixture(scope="module")
def base_results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fuzz-results") / "r"
    layers = (Layer.linear("a", 24, 20, tokens=3), Layer.linear("b", 20, 16, tokens=3))
    write_results(simulate(layers, 2, load_arch("scalesim-32"), "os", "fwd", "ideal"), out)
    return out


SUMMARY_PATHS = [
    "arch",
    "dataflow",
    "memory",
    "batch",
    "steps",
    "sparsity",
    "model",
    "total",
    "total.cycles",
    "total.energy_pj",
    "total.dram_bytes",
    "clock_ghz",
    "dram_peak_gbps",
    "speedup",
    "trace",
    "unknown",
]
CSVS = [
    "COMPUTE_REPORT.csv",
    "BANDWIDTH_REPORT.csv",
    "DETAILED_ACCESS_REPORT.csv",
    "SPARSE_REPORT.csv",
]


@st.composite
def result_damage(draw):
    kind = draw(
        st.sampled_from(["summary", "summary", "summary-text", "csv-cell", "csv-drop", "csv-text"])
    )
    if kind == "summary":
        return kind, [
            (draw(st.sampled_from(SUMMARY_PATHS)), draw(st.one_of(plausible, values)))
            for _ in range(draw(st.integers(1, 3)))
        ]
    if kind == "summary-text":
        return kind, draw(
            st.sampled_from(
                [
                    "",
                    "{",
                    "[" * 100000,
                    '{"total": ' + "9" * 5000 + "}",
                    '{"total": {"cycles": 1e999}}',
                    "\xff",
                ]
            )
        )
    if kind == "csv-cell":
        return kind, (
            draw(st.sampled_from(CSVS)),
            draw(st.integers(0, 3)),
            draw(st.integers(0, 30)),
            draw(st.sampled_from([*ODD_TEXT, "1e400", "-5", "nan", "inf", ""])),
        )
    if kind == "csv-drop":
        return kind, draw(st.sampled_from(CSVS))
    return kind, (
        draw(st.sampled_from(CSVS)),
        draw(
            st.sampled_from(
                ["", "\n", "a,b\n1,2\n", "\x00\x01", '"unterminated\n', "Layer\n" + "x\n" * 10]
            )
        ),
    )


def _damage_results(run: Path, what) -> None:
    kind, arg = what
    if kind == "summary":
        doc = json.loads((run / "summary.json").read_text())
        for path, value in arg:
            top, _, rest = path.partition(".")
            value = copy.deepcopy(value)  # the drawn value stays as drawn for the next paths
            if rest and isinstance(doc.get(top), dict):
                doc[top][rest] = value
            else:
                doc[top] = value
        (run / "summary.json").write_text(json.dumps(doc), encoding="utf-8", errors="surrogatepass")
    elif kind == "summary-text":
        (run / "summary.json").write_text(arg, encoding="utf-8", errors="surrogatepass")
    elif kind == "csv-cell":
        name, row, col, text = arg
        lines = (run / name).read_text().splitlines()
        cells = lines[min(row, len(lines) - 1)].split(",")
        cells[min(col, len(cells) - 1)] = text
        lines[min(row, len(lines) - 1)] = ",".join(cells)
        (run / name).write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    elif kind == "csv-drop":
        (run / arg).unlink()
    else:
        name, text = arg
        (run / name).write_text(text, encoding="utf-8", errors="surrogatepass")


@contextlib.contextmanager
def _damaged_copy(base_results: Path, what):
    """A copy of the results directory with ``what`` done to it, and its reading outcome."""
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "r"
        shutil.copytree(base_results, run)
        _damage_results(run, what)
        yield run, outcome("results", load_run, run)[0]


@FUZZ
@given(what=result_damage())
def test_results_directory(base_results, what):
    with _damaged_copy(base_results, what):
        pass


@settings(FUZZ, max_examples=max(EXAMPLES // 30, 3))  # a report draws for ~2 s
@example(what=("summary", [("clock_ghz", None), ("macs_per_cycle", None),
                           ("dram_peak_bytes_per_cycle", None), ("dram_peak_gbps", None)]))
# the access report's "DRAM Bytes" header cell emptied: the run reads without that column
@example(what=("csv-cell", ("DETAILED_ACCESS_REPORT.csv", 0, 11, "")))
@given(what=result_damage())
def test_report_of_damaged_results(base_results, what):
    """What ``load_run`` accepts, ``sparsesim report`` draws (or refuses on one line)."""
    from reports.report import make_report

    with _damaged_copy(base_results, what) as (run, kind):
        assume(kind == "accepted")
        rep = run.parent / "rep"
        kind, _ = outcome("report", make_report, [run], rep)
        if kind == "refused":
            assert not rep.exists(), "a refused report left its output"
