"""`sparsesim demo`: trains both models, simulates six runs, writes the report, and prints the
speedup per dataflow that the results directories hold."""

from __future__ import annotations

import json
import re

import pytest

from cli.main import main

pytest.importorskip("mlxtend")


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--steps", "100", "--memory", "ideal", "-q"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report' / 'report.html'}" in printed
    assert (out / "report" / "report.html").is_file()
    figs = {p.stem for p in (out / "report" / "figures").glob("*.png")}
    # six runs of two traces on three dataflows: the dataflow comparison and speedup figures
    assert {"layer_cycles", "dataflow_comparison", "speedup_vs_sparsity",
            "stall_attribution", "roofline"} <= figs
    for name in ("dense", "swat90"):
        assert (out / "traces" / name / "manifest.json").is_file()
    lines = [ln for ln in printed.splitlines() if re.match(r"^(os|ws|is): ", ln)]
    assert [ln[:2] for ln in lines] == ["os", "ws", "is"]
    for ln in lines:
        df = ln[:2]
        summary = json.loads((out / "results" / f"swat90-{df}" / "summary.json").read_text())
        assert summary["dataflow"] == df and summary["arch"] == "tensordash"
        assert f"{summary['speedup']['training_step']:.2f}x" in ln
        # the cycles of the step beside its speedup
        cyc = summary["total"]["cycles"] / len(summary["steps"])
        assert f"{cyc / 1e3:.3g} k cycles per step" in ln
        assert (out / "results" / f"swat90-{df}" / "ATTRIBUTION.csv").is_file()
    assert "attribution_waterfall" in figs
    best = min(("os", "ws", "is"), key=lambda d: json.loads(
        (out / "results" / f"swat90-{d}" / "summary.json").read_text())["total"]["cycles"])
    assert re.search(rf"^fastest: {best}, ", printed, re.M)
    assert (out / "summary.txt").read_text().count("SWAT-U 90 %") >= 3


def test_demo_refuses_a_used_directory(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as exc:
        main(["demo", "-o", str(tmp_path / "d")])
    assert exc.value.code == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "d" / "keep.txt").read_text() == "mine"
