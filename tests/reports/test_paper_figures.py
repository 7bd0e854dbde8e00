"""Figures a paper can use: per-layer figures stay readable for large networks, the waterfall
draws ATTRIBUTION.csv, rankings name the fastest configuration, the runs table fits a page."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from reports import figures
from reports.report import PAGE_COLUMNS, fastest, make_report, page_runs_table, runs_table
from simulator.arch import load_arch
from simulator.results import load_any, write_results
from simulator.run import simulate
from traces.models import get_model


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory):
    """ResNet-50's 54 layers, forward at batch 1 with ideal memory (closed forms: fast)."""
    out = tmp_path_factory.mktemp("r50") / "r50"
    res = simulate(get_model("resnet50").layers, 1, load_arch("tensordash"), "os", "fwd", "ideal")
    res.meta["model"] = "resnet50"
    write_results(res, out)
    return out


def test_stage_groups_of_known_networks():
    r50 = [la.name for la in get_model("resnet50").layers]
    groups = figures._stage_groups(r50)
    bars = list(dict.fromkeys(groups.values()))
    assert bars[0] == "conv1" and bars[-1] == "fc" and "layer1.0 (4)" in bars
    assert len(bars) == 18
    vit = [la.name for la in get_model("vit-b16").layers]
    assert 3 <= len(set(figures._stage_groups(vit).values())) <= figures.MAX_GROUPS
    assert figures._stage_groups([f"conv{i}" for i in range(60)]) is None


def test_per_layer_figures_readable_at_resnet50_size(resnet50):
    runs, _ = load_any([resnet50])
    for fn in (figures.layer_cycles, figures.stall_attribution):
        d = fn(runs)
        ax = d.figure.axes[0]
        assert len(ax.get_xticks()) == 18  # stages, not 54 layers
        assert d.figure.get_figwidth() * 150 < 2000  # px at the report's dpi
        assert "grouped into 18 stages" in d.caption
        # the grouped bars still add up to the run's cycles
        total = float((runs[0].gemms["Compute Cycles"] + runs[0].gemms["Stall Cycles"]).sum())
        col = "Cycles"
        assert d.table[col].sum() == pytest.approx(total)
        plt.close(d.figure)


def test_top_layers_and_the_rest_when_names_have_no_stages(resnet50, tmp_path):
    runs, _ = load_any([resnet50])
    run = runs[0]
    run.compute["Layer"] = [f"c{i}" for i in run.compute["LayerID"]]
    bars, names, note = figures._layer_groups([run])
    assert len(bars) == figures.TOP_LAYERS + 1 and bars[-1] == "other 34 layers"
    assert "the last bar sums the other 34" in note
    cyc = (
        (run.gemms["Compute Cycles"] + run.gemms["Stall Cycles"]).groupby(run.gemms["Layer"]).sum()
    )
    assert set(bars[:-1]) == set(cyc.nlargest(figures.TOP_LAYERS).index)


def test_the_fastest_is_named_by_cycles_not_speedup(tmp_path):
    rows = pd.DataFrame(
        {
            "Run": ["a", "b"],
            "Method": ["swat", "swat"],
            "Cycles per Step": [71.5e3, 61.5e3],
            "Time per Step (ms)": [0.07, 0.06],
            "Training Step Speedup": [1.97, 1.02],
        }
    )

    class R:  # the two runs of one workload
        trace_key = ("t",)
        model = "lenet5"

    text = fastest([R(), R()], rows)[0]
    assert text == (
        "Fastest of the 2 runs of lenet5, swat: b, 61.5 k cycles (0.06 ms) per "
        "step, 1.02× its dense baseline."
    )


def test_runs_table_on_the_page_is_short(resnet50, tmp_path):
    runs, _ = load_any([resnet50])
    df = runs_table(runs)
    page = page_runs_table(df)
    assert list(page.columns) == [PAGE_COLUMNS[c] for c in PAGE_COLUMNS]
    assert page["M cycles / step"].iloc[0] == pytest.approx(df["Cycles per Step"].iloc[0] / 1e6)
    assert df["Bound"].iloc[0] == "compute"  # ideal memory, dense: nothing else to wait on
    out = make_report([resnet50], tmp_path / "rep")
    html = (out / "report.html").read_text()
    assert "What bounds each run" in html and "Compute bound: 100 % of cycles compute" in html
