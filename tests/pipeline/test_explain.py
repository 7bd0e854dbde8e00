"""Speedup attribution: every step of the chain is a run of its own, the chain ends at the run
as configured, and ``simulate --explain`` writes ATTRIBUTION.csv that reads back."""

from __future__ import annotations

import pandas as pd
import pytest

from cli.main import main
from pipeline.explain import attribution, stages
from simulator.arch import load_arch
from simulator.results import ATTRIBUTION_COLUMNS, load_run, summarize
from simulator.run import simulate_trace
from traces.synth import SynthConfig, synthesize


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    out = tmp_path_factory.mktemp("explain") / "lenet5-swat90"
    synthesize(
        SynthConfig(
            model="lenet5", method="swat", sparsity=0.9, batch=2, seed=3, relu_sparsity=0.5
        ),
        out,
    )
    return str(out)


def _arch():
    return load_arch("tensordash").with_overrides(
        {"sparse.formats": {"filter": "bitmap", "ifmap": {"dram": "csr", "sram": "dense"}}}
    )


def test_stages_add_one_feature_or_limit_each():
    ideal = [s.label for s in stages(load_arch("tensordash"), "ideal")]
    assert ideal == ["dense, ideal memory", "+ skipping (filter, ifmap, grad_out)"]
    chain = stages(_arch(), "modeled")
    assert [s.label for s in chain] == [
        "dense, ideal memory",
        "+ skipping (filter, ifmap, grad_out)",
        "+ memory as modeled",
        "+ filter compressed",
        "+ ifmap compressed",
    ]
    assert [s.memory for s in chain] == ["ideal", "ideal", "modeled", "modeled", "modeled"]
    assert "formats" not in chain[2].sparse and chain[3].sparse["formats"] == {"filter": "bitmap"}
    assert chain[0].sparse == {"lowering": {"bwd_input": "phases", "k_order": "channel_inner"}}
    assert "taps T lookahead 2 lookaside 5, lockstep" in chain[1].adds
    nm = [s.label for s in stages(load_arch("stc-2to4"), "modeled")]
    assert nm == ["dense, ideal memory", "+ 2:4 execution", "+ memory as modeled"]


def test_chain_ends_at_the_run_and_each_step_is_a_run(trace):
    arch = _arch()
    run = simulate_trace(trace, arch, "os", "train", "modeled")
    table = attribution(trace, arch, "os", "train", "modeled")  # the last step run again
    assert list(table.columns) == list(ATTRIBUTION_COLUMNS)
    assert list(table["Kind"]) == ["step"] * 5 + ["reference"]
    s = summarize(run)
    last, ref = table.iloc[4], table.iloc[5]
    assert last["Cycles per Step"] == s["total"]["cycles"]
    assert last["Speedup over Dense"] == pytest.approx(s["speedup"]["training_step"])
    assert ref["Cycles per Step"] == s["baseline_per_step"]["cycles"]
    # step 1: the sparse run with ideal memory and no formats, against the ideal dense array
    plain = load_arch("tensordash")
    ideal = summarize(simulate_trace(trace, plain, "os", "train", "ideal"))
    assert table.loc[0, "Cycles per Step"] == ideal["baseline_per_step"]["cycles"]
    assert table.loc[1, "Cycles per Step"] == ideal["total"]["cycles"]
    assert table.loc[1, "Stall Cycles per Step"] == ideal["total"]["stall_cycles"]
    modeled = summarize(simulate_trace(trace, plain, "os", "train", "modeled"))
    assert table.loc[2, "Cycles per Step"] == modeled["total"]["cycles"]
    # factors chain the steps; formats cut the DRAM bytes
    f = table["Factor"]
    assert pd.isna(f[0]) and pd.isna(f[5])
    assert f[1:5].prod() == pytest.approx(table.loc[0, "Cycles per Step"] / last["Cycles per Step"])
    assert table.loc[4, "DRAM MB per Step"] < table.loc[2, "DRAM MB per Step"]
    assert table.loc[0, "Stall Cycles per Step"] == 0


@pytest.mark.parametrize("extra", [{}, {"sparse.two_sided": False}])
def test_reuses_the_run_given(trace, extra):
    arch = load_arch("tensordash").with_overrides(extra) if extra else load_arch("tensordash")
    run = simulate_trace(trace, arch, "ws", "train", "ideal")
    run.table["Compute Cycles"] *= 2  # a marker: the last step must come from `run`
    table = attribution(trace, arch, "ws", "train", "ideal", run=run)
    assert table.iloc[-1]["Cycles per Step"] == summarize(run)["total"]["cycles"]
    assert list(table["Memory"]) == ["ideal", "ideal"]


def test_simulate_explain_writes_attribution_and_verdict(trace, tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["simulate", trace, "--arch", "tensordash", "-o", str(out), "--explain"]) == 0
    text = capsys.readouterr().out
    assert "speedup attribution" in text and "+ memory as modeled" in text
    assert " bound: " in text  # the verdict sentence
    run = load_run(out)
    assert run.attribution is not None and len(run.attribution) == 4
    assert run.attribution.iloc[-2]["Speedup over Dense"] == pytest.approx(
        run.summary["speedup"]["training_step"]
    )


def test_explain_refuses_a_topology(tmp_path, capsys):
    topo = tmp_path / "t.csv"
    topo.write_text("Layer, M, N, K,\nfc, 16, 16, 16,\n")
    with pytest.raises(SystemExit) as err:
        main(
            ["simulate", str(topo), "--arch", "tensordash", "-o", str(tmp_path / "o"), "--explain"]
        )
    assert err.value.code == 2
    assert "needs a trace" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
