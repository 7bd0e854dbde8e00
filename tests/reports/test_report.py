"""`sparsesim report`: the figures draw what the result files say, the page is self-contained,
the output is deterministic, and bad input is refused with exit code 2 and nothing written."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb

from cli.main import main
from common.vocab import PHASES
from pipeline.explain import attribution
from reports import figures
from reports.report import make_report
from simulator.arch import load_arch
from simulator.results import load_any, write_csv, write_results
from simulator.run import simulate, simulate_trace
from traces.models import get_model
from traces.synth import SynthConfig, synthesize

ALL_RUN_FIGURES = {"layer_cycles", "speedup_vs_sparsity", "dataflow_comparison",
                   "stall_attribution", "dram_bandwidth", "roofline", "load_imbalance",
                   "speedup_over_steps", "attribution_waterfall", "run_cycles",
                   "energy_breakdown", "utilization", "traffic_by_operand"}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Path]:
    """Results directories of small LeNet-5 traces: SWAT 90 % (2 steps) on os and ws, SWAT 50 %
    on os, all on tensordash with modeled memory (its streams with a barrier, not in lockstep,
    so that folds lose cycles to load imbalance); and a dense topology run on eyeriss."""
    root = tmp_path_factory.mktemp("results")
    arch = load_arch("tensordash").with_overrides({"sparse.sync": "barrier"})
    out = {}
    for sparsity, steps in ((0.9, 2), (0.5, 1)):
        trace = synthesize(SynthConfig(model="lenet5", method="swat", sparsity=sparsity, batch=4,
                                       seed=1, steps=steps, relu_sparsity=0.4),
                           root / f"trace{sparsity}")
        for df in (("os", "ws") if sparsity == 0.9 else ("os",)):
            name = f"swat{int(sparsity * 100)}-{df}"
            res = simulate_trace(str(trace), arch, df, "train", "modeled")
            extra = None
            if name == "swat90-os":  # as `simulate --explain` writes it
                at = attribution(str(trace), arch, df, "train", "modeled", run=res)
                extra = {"ATTRIBUTION.csv": lambda p, at=at: write_csv(at, p)}
            write_results(res, root / name, extra=extra)
            out[name] = root / name
    topo = simulate(get_model("lenet5").layers, 4, load_arch("eyeriss"), "ws", "fwd", "ideal")
    write_results(topo, root / "eyeriss-dense")
    out["eyeriss-dense"] = root / "eyeriss-dense"
    return out


def _elapsed(df: pd.DataFrame) -> pd.Series:
    return df["Compute Cycles"] + df["Stall Cycles"]


def test_report_writes_every_figure_embedded_and_as_files(results, tmp_path):
    dirs = [results[k] for k in ("swat90-os", "swat90-ws", "swat50-os")]
    out = make_report(dirs, tmp_path / "rep")
    pngs = {p.stem for p in (out / "figures").glob("*.png")}
    assert pngs == ALL_RUN_FIGURES
    assert {p.stem for p in (out / "figures").glob("*.svg")} == pngs
    assert {p.stem for p in (out / "tables").glob("*.csv")} == pngs | {"runs", "verdicts",
                                                                        "layer_bounds"}
    page = (out / "report.html").read_text()
    embedded = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(embedded) == len(pngs)
    # every embedded image is byte for byte the PNG file of the same figure
    files = {(out / "figures" / f"{n}.png").read_bytes() for n in pngs}
    assert {base64.b64decode(e) for e in embedded} == files
    # self-contained: nothing fetched from anywhere (links only to the files beside it)
    assert not re.search(r"(src|href)=['\"](https?:|//)", page)
    for svg in (out / "figures").glob("*.svg"):
        assert svg.read_text().lstrip().startswith("<?xml")


def test_figure_tables_equal_the_result_files(results, tmp_path):
    run_dirs = [results["swat90-os"], results["swat90-ws"], results["swat50-os"]]
    out = make_report(run_dirs, tmp_path / "rep")
    # layer cycles: per layer and phase, the mean over steps of compute + stalls
    lc = pd.read_csv(out / "tables" / "layer_cycles.csv")
    runs_df = pd.read_csv(out / "tables" / "runs.csv")
    for d in run_dirs:
        comp = pd.read_csv(d / "COMPUTE_REPORT.csv")
        label = runs_df.loc[runs_df["Directory"] == d.name, "Run"].item()
        nsteps = comp["Step"].nunique()
        for ph in PHASES:
            rows = comp[comp["Phase"] == ph]
            mine = lc[(lc["Run"] == label) & (lc["Phase"] == ph)]
            assert mine["Cycles"].sum() == pytest.approx(_elapsed(rows).sum() / nsteps)
            assert mine["Dense Cycles"].sum() == pytest.approx(rows["Dense Cycles"].sum()
                                                               / nsteps)
    # speedup vs sparsity: the training-step speedups of summary.json
    sv = pd.read_csv(out / "tables" / "speedup_vs_sparsity.csv")
    for d in run_dirs:
        summary = json.loads((d / "summary.json").read_text())
        label = runs_df.loc[runs_df["Directory"] == d.name, "Run"].item()
        assert sv.loc[sv["Run"] == label, "Training Step Speedup"].item() == pytest.approx(
            summary["speedup"]["training_step"])
    # dataflow comparison: one workload (SWAT 90 %), os and ws, per-phase speedups as summary
    dc = pd.read_csv(out / "tables" / "dataflow_comparison.csv")
    assert set(dc["Dataflow"]) == {"os", "ws"}
    for d, df in ((results["swat90-os"], "os"), (results["swat90-ws"], "ws")):
        summary = json.loads((d / "summary.json").read_text())
        for ph in PHASES:
            got = dc[(dc["Dataflow"] == df) & (dc["Phase"] == ph)]["Speedup"].item()
            assert got == pytest.approx(summary["speedup"]["per_phase"][ph])
    # stall attribution: the parts of each layer add up to its cycles
    st = pd.read_csv(out / "tables" / "stall_attribution.csv")
    lc_tot = lc[lc["Phase"].isin(PHASES)].groupby(["Run", "Layer"])["Cycles"].sum()
    st_tot = st.groupby(["Run", "Layer"])["Cycles"].sum()
    pd.testing.assert_series_equal(st_tot.sort_index(), lc_tot.sort_index(), check_names=False)
    # DRAM bandwidth over the first step: bandwidth x time gives the step's DRAM bytes
    bw = pd.read_csv(out / "tables" / "dram_bandwidth.csv")
    acc = pd.read_csv(results["swat90-os"] / "DETAILED_ACCESS_REPORT.csv")
    label = runs_df.loc[runs_df["Directory"] == "swat90-os", "Run"].item()
    first = acc[acc["Step"] == acc["Step"].min()]
    mine = bw[bw["Run"] == label]
    assert set(mine["Source"]) == {"transfers"}
    clock = json.loads((results["swat90-os"] / "summary.json").read_text())["clock_ghz"]
    assert (mine["DRAM BW (GB/s)"] * mine["Cycles"] / clock).sum() == pytest.approx(
        first["DRAM Bytes"].sum(), rel=1e-4)
    # load imbalance: the worst layer-phases of LOAD_IMBALANCE.csv, their fold counts summed
    li = pd.read_csv(out / "tables" / "load_imbalance.csv")
    src = None
    for run_dir in run_dirs:
        label = runs_df.loc[runs_df["Directory"] == run_dir.name, "Run"].item()
        if label != li["Run"].iloc[0]:
            continue
        src = pd.read_csv(run_dir / "LOAD_IMBALANCE.csv")
        worst = src.groupby(["Layer", "Phase"])["Imbalance Cycles"].sum().nlargest(4)
        assert set(zip(li["Layer"], li["Phase"], strict=True)) == set(worst.index)
        for (lay, ph), grp in li.groupby(["Layer", "Phase"]):
            rows = src[(src["Layer"] == lay) & (src["Phase"] == ph)]
            assert grp["Folds"].sum() == rows["Folds"].sum()
    assert src is not None
    # speedup over steps: only the 2-step traces, and their per-step speedups
    so = pd.read_csv(out / "tables" / "speedup_over_steps.csv")
    s90 = json.loads((results["swat90-os"] / "summary.json").read_text())
    label = runs_df.loc[runs_df["Directory"] == "swat90-os", "Run"].item()
    got = so[(so["Run"] == label) & (so["Phase"] == "training step")].set_index("Step")["Speedup"]
    assert got.to_dict() == pytest.approx({int(k): v for k, v in s90["speedup"]["step"].items()})
    assert not (so["Run"] == runs_df.loc[runs_df["Directory"] == "swat50-os", "Run"].item()).any()


def _grey_key(handle) -> tuple:
    """What tells a legend entry apart on a greyscale print: grey level of its face (or line),
    hatch, marker, line style and marker fill."""
    from matplotlib.lines import Line2D

    if isinstance(handle, Line2D):
        rgb = to_rgb(handle.get_color())
        extra = (handle.get_marker(), handle.get_linestyle(), str(handle.get_markerfacecolor()))
    else:
        face = np.asarray(handle.get_facecolor(), dtype=float).reshape(-1, 4)
        rgb = tuple(face[0][:3]) if len(face) else (1.0, 1.0, 1.0)
        extra = (handle.get_hatch(), getattr(handle, "get_paths", lambda: None)() is not None
                 and type(handle).__name__)
    grey = round(float(np.dot(rgb, (0.299, 0.587, 0.114))), 2)
    return (grey, *extra)


def test_every_axis_labelled_and_series_apart_in_greyscale(results):
    runs, _ = load_any([results["swat90-os"], results["swat90-ws"], results["swat50-os"]])
    for fn in figures.RUN_FIGURES:
        drawn = fn(runs)
        assert drawn is not None, fn.__name__
        for ax in drawn.figure.axes:
            if not ax.get_visible():
                continue
            assert ax.get_xlabel().strip(), (fn.__name__, "x")
            assert ax.get_ylabel().strip(), (fn.__name__, "y")
            numeric = ax.get_xlabel() if fn.__name__ == "run_cycles" else ax.get_ylabel()
            assert re.search(r"\(|cycles|number", numeric), (fn.__name__, "unit")
        # every unit in the label, none in an offset text ("1e8") at an axis end
        drawn.figure.canvas.draw()
        for ax in drawn.figure.axes:
            for axis in (ax.xaxis, ax.yaxis):
                assert axis.get_offset_text().get_text() == "", (fn.__name__, "offset")
        import matplotlib.pyplot as plt

        plt.close(drawn.figure)
        # legend entries must differ in grey level, hatch, marker or line style
        legends = [lg for lg in [*drawn.figure.legends, *(a.get_legend() for a in
                                                           drawn.figure.axes)] if lg]
        for lg in legends:
            keys = [_grey_key(h) for h in lg.legend_handles]
            assert len(set(keys)) == len(keys), (fn.__name__, keys)


def test_line_styles_apart_without_grey():
    """Up to 16 lines (a sweep draws 12) differ in marker, its fill or the dash pattern, not
    only in a shade of grey that a print may lose."""
    keys = [(st["marker"], st["linestyle"], str(st["markerfacecolor"]))
            for st in (figures._line(i) for i in range(16))]
    assert len(set(keys)) == 16


def test_report_is_deterministic(results, tmp_path):
    dirs = [results["swat90-os"], results["swat50-os"]]
    a = make_report(dirs, tmp_path / "a")
    b = make_report(dirs, tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_topology_run_without_baseline_says_what_is_not_drawn(results, tmp_path):
    out = make_report([results["eyeriss-dense"]], tmp_path / "rep")
    names = {p.stem for p in (out / "figures").glob("*.png")}
    assert "layer_cycles" in names and "stall_attribution" in names
    assert "speedup_vs_sparsity" not in names
    page = (out / "report.html").read_text()
    assert "no run has a dense baseline" in page


def test_cli_report(results, tmp_path, capsys):
    rc = main(["report", str(results["swat90-os"]), str(results["swat90-ws"]), "-o",
               str(tmp_path / "rep"), "-q"])
    assert rc == 0
    out = capsys.readouterr().out
    assert f"report written to {tmp_path / 'rep' / 'report.html'}" in out
    assert (tmp_path / "rep" / "report.html").is_file()


def _bad(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_mixed_architectures_on_speedup_figure_are_refused(results, tmp_path, capsys):
    other = tmp_path / "eyeriss-swat"
    trace = tmp_path / "t"
    synthesize(SynthConfig(model="lenet5", method="swat", sparsity=0.9, batch=4, seed=1), trace)
    write_results(simulate_trace(str(trace), load_arch("eyeriss"), "os", "train", "ideal"), other)
    err = _bad(["report", str(results["swat90-os"]), str(other), "-o", str(tmp_path / "r")],
               capsys)
    assert "different architectures" in err and "tensordash" in err and "eyeriss" in err
    assert not (tmp_path / "r").exists()


def test_one_preset_with_other_keys_is_another_architecture(results, tmp_path, capsys):
    """A sweep point over dram.bandwidth_gbps keeps the preset's name: the runs are told apart
    by the keys that differ, in labels and tables, and a speedup figure refuses to mix them."""
    from simulator.results import load_any

    slow = tmp_path / "slow"
    trace = tmp_path / "t"
    synthesize(SynthConfig(model="lenet5", method="swat", sparsity=0.9, batch=4, seed=1), trace)
    arch = load_arch("tensordash").with_overrides({"dram.bandwidth_gbps": 25.6,
                                                   "sparse.sync": "barrier"})
    assert arch.name == "tensordash"
    write_results(simulate_trace(str(trace), arch, "os", "train", "modeled"), slow)
    runs, _ = load_any([str(results["swat90-os"]), str(slow)])
    assert [r.arch for r in runs] == ["tensordash (dram.bandwidth_gbps=102.4)",
                                      "tensordash (dram.bandwidth_gbps=25.6)"]
    assert all("dram.bandwidth_gbps" in r.label for r in runs)
    err = _bad(["report", str(results["swat90-os"]), str(slow), "-o", str(tmp_path / "r")],
               capsys)
    assert "different architectures" in err and "bandwidth_gbps=25.6" in err
    # runs on the same keys keep the plain name
    runs, _ = load_any([str(results["swat90-os"]), str(results["swat50-os"])])
    assert {r.arch for r in runs} == {"tensordash"}


@pytest.mark.parametrize("case", ["missing", "empty_dir", "no_summary", "bad_json", "bad_csv",
                                  "file", "truncated", "bad_key", "bad_number", "other_rows",
                                  "truncated_timeline"])
def test_not_a_results_dir(results, tmp_path, capsys, case):
    bad = tmp_path / "bad"
    if case == "empty_dir":
        bad.mkdir()
    elif case == "file":
        bad.write_text("x")
    elif case != "missing":
        shutil.copytree(results["swat90-os"], bad)
        if case == "no_summary":
            (bad / "summary.json").unlink()
        elif case == "bad_json":
            (bad / "summary.json").write_text("{not json")
        elif case == "bad_csv":
            (bad / "COMPUTE_REPORT.csv").write_text("LayerID,Layer\n0,conv1\n")
        elif case in ("truncated", "truncated_timeline"):
            f = bad / ("COMPUTE_REPORT.csv" if case == "truncated" else "DRAM_TIMELINE.csv")
            f.write_bytes(f.read_bytes()[:1500])
        elif case in ("bad_key", "bad_number"):
            df = pd.read_csv(bad / "COMPUTE_REPORT.csv")
            df = df.astype({"Step": object, "Compute Cycles": object})
            df.loc[1, "Step" if case == "bad_key" else "Compute Cycles"] = "x"
            df.to_csv(bad / "COMPUTE_REPORT.csv", index=False)
        else:  # another run's access report
            df = pd.read_csv(bad / "DETAILED_ACCESS_REPORT.csv")
            df.iloc[:-3].to_csv(bad / "DETAILED_ACCESS_REPORT.csv", index=False)
    err = _bad(["report", str(bad), "-o", str(tmp_path / "r")], capsys)
    assert str(bad) in err
    assert not (tmp_path / "r").exists()
    if case in ("bad_key", "bad_number"):
        assert "line 3" in err and "'x'" in err


@pytest.mark.parametrize(("edit", "field"), [
    (lambda s: s.update(speedup="fast"), "speedup: expected an object or null"),
    (lambda s: s["speedup"].update(training_step="2x"), "speedup.training_step"),
    (lambda s: s["speedup"]["per_phase"].update(fwd=None), "speedup.per_phase"),
    (lambda s: s.update(sparsity="high"), "sparsity: expected a number in [0, 1]"),
    (lambda s: s.update(arch=5), "arch: expected text"),
    (lambda s: s.update(batch=0), "batch: expected a positive integer"),
    (lambda s: s.update(steps="x"), "steps: expected a list of step numbers"),
    (lambda s: s.pop("total"), "total: missing"),
    (lambda s: s["total"].update(cycles="many"), "total.cycles: expected a number"),
    (lambda s: s.update(dram_peak_gbps=-1), "dram_peak_gbps: expected a number > 0"),
])
def test_a_summary_with_a_wrong_field_is_named(results, tmp_path, capsys, edit, field):
    bad = tmp_path / "bad"
    shutil.copytree(results["swat90-os"], bad)
    summary = json.loads((bad / "summary.json").read_text())
    edit(summary)
    (bad / "summary.json").write_text(json.dumps(summary))
    err = _bad(["report", str(bad), "-o", str(tmp_path / "r")], capsys)
    assert f"{bad / 'summary.json'}: {field}" in err
    assert not (tmp_path / "r").exists()


def test_report_never_replaces_its_inputs(results, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(results["swat90-os"], run)
    for out in (run, tmp_path):
        err = _bad(["report", str(run), "-o", str(out), "--force"], capsys)
        assert "is (or contains) the input" in err
    assert (run / "COMPUTE_REPORT.csv").is_file() and (run / "summary.json").is_file()


def test_a_trace_by_another_path_is_the_same_trace(results, tmp_path):
    """The dataflow comparison groups runs of one trace, whatever path named it."""
    moved = tmp_path / "ws-copy"
    shutil.copytree(results["swat90-ws"], moved)
    summary = json.loads((moved / "summary.json").read_text())
    summary["trace"] = "some/other/path/to/it"
    (moved / "summary.json").write_text(json.dumps(summary))
    out = make_report([results["swat90-os"], moved], tmp_path / "rep")
    dc = pd.read_csv(out / "tables" / "dataflow_comparison.csv")
    assert set(dc["Dataflow"]) == {"os", "ws"}


def test_hints_for_directories_that_hold_results_or_are_traces(results, tmp_path, capsys):
    err = _bad(["report", str(results["swat90-os"].parent), "-o", str(tmp_path / "r")], capsys)
    assert "holds results directories" in err and "swat90-os" in err
    trace = results["swat90-os"].parent / "trace0.9"
    err = _bad(["report", str(trace), "-o", str(tmp_path / "r")], capsys)
    assert "it is a trace: simulate it first" in err


def test_sweep_dir_is_drawn(tmp_path):
    """A sweep table (documented in docs/sweeps.md) gets its own figure: speedup per point
    against the numeric axis, one line per value of the other axis."""
    rows = []
    for pi, (df, sp) in enumerate([(d, s) for d in ("os", "ws") for s in (0.5, 0.9)]):
        for layer in ("conv1", "fc1"):
            for ph in PHASES:
                cyc = 100 * (1 - sp) + (10 if df == "ws" else 0) + 5
                rows.append({"Point": f"p{pi}", "dataflow": df, "sparsity": sp, "Step": 0,
                             "LayerID": 0, "Layer": layer, "Phase": ph, "Compute Cycles": cyc,
                             "Stall Cycles": 5, "Dense Cycles": 120})
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    pd.DataFrame(rows).to_csv(sweep / "sweep.csv", index=False)
    (sweep / "sweep.json").write_text(json.dumps({"name": "bw-study",
                                                  "axes": ["dataflow", "sparsity"]}))
    out = make_report([sweep], tmp_path / "rep")
    page = (out / "report.html").read_text()
    assert "Sweep bw-study" in page  # the sweep's name, not its directory's
    assert ">0.9<" in page and ">0.5<" in page  # axis values as written
    from reports.report import _html_table

    html_bw = _html_table(pd.DataFrame({"dram.bandwidth_gbps": [25.6, 102.4, 409.6]}))
    assert all(f">{v}<" in html_bw for v in ("25.6", "102.4", "409.6"))
    pts = pd.read_csv(out / "tables" / "sweep_sweep.csv")
    assert len(pts) == 4
    for r in pts.itertuples():
        per_gemm = 100 * (1 - r.sparsity) + (10 if r.dataflow == "ws" else 0) + 10
        assert r.Speedup == pytest.approx(120 / per_gemm)
    assert (out / "figures" / "sweep_sweep.png").is_file()
    # a second sweep in a directory of the same name gets its own figure and table
    other = tmp_path / "b" / "sweep"
    shutil.copytree(sweep, other)
    out2 = make_report([sweep, other], tmp_path / "rep2")
    assert len(list((out2 / "figures").glob("sweep_sweep*.png"))) == 2
    assert len(list((out2 / "tables").glob("sweep_sweep*.csv"))) == 2


def test_report_in_a_real_browser(results, tmp_path):
    """scripts/check_report_in_browser.py in headless Chromium: every figure decodes, the
    console stays silent, a screenshot is written. Skipped where Chromium is not installed."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "scripts" / "check_report_in_browser.py"
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_report_in_browser", script)
    checker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checker)
    if checker.find_chromium() is None:
        pytest.skip("Chromium is not installed (apt install chromium)")
    out = make_report([results["swat90-os"], results["swat90-ws"], results["swat50-os"]],
                      tmp_path / "rep")
    shot = tmp_path / "shot.png"
    run = subprocess.run([sys.executable, str(script), str(out / "report.html"),
                          "--screenshot", str(shot)], capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("image ok") == len(list((out / "figures").glob("*.png")))
    assert "console:" not in run.stdout
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # and the check does fail on a page with a broken image and a script error
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><html><body><img src='missing.png' alt='m'>"
                      "<script>notDefined();</script></body></html>")
    run = subprocess.run([sys.executable, str(script), str(broken)], capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == 1
    assert "image broken" in run.stdout and "notDefined" in run.stdout
