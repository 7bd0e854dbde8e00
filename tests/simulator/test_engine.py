"""The dense engine: tile schedules, the SimPy model and the run table."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import InputError
from dataflows.gemm import Gemm, lower
from dataflows.systolic import map_dense
from dataflows.tiles import schedule
from simulator.arch import load_arch
from simulator.run import half_buffer_words, simulate, training_order
from simulator.scalesim_compat import dense_cycles, sram_accesses
from traces.layers import Layer
from traces.models import get_model

SETTINGS = dict(deadline=None, max_examples=40)


def arch(rows=8, cols=8, lanes=1, kib=4.0, gbps=16.0, **over):
    base = {"array.rows": rows, "array.cols": cols, "array.lanes": lanes,
            "sram.ifmap.kib": kib, "sram.filter.kib": kib, "sram.ofmap.kib": kib,
            "dram.bandwidth_gbps": gbps}
    base.update(over)
    return load_arch("scalesim-32").with_overrides(base)


gemm_st = st.builds(lambda m, k, n, g: Gemm("g", "fwd", m, k, n, g),
                    st.integers(1, 80), st.integers(1, 80), st.integers(1, 80),
                    st.sampled_from([1, 1, 2]))


@settings(**SETTINGS)
@given(g=gemm_st, df=st.sampled_from(["os", "ws", "is"]), rows=st.integers(2, 9),
       cols=st.integers(2, 9), cap=st.integers(16, 2000))
def test_tiles_preserve_work_and_sram_reads(g, df, rows, cols, cap):
    mp = map_dense(g, rows, cols, df)
    s = schedule(g, mp, (cap, cap, cap))
    assert s.total("compute") == mp.compute_cycles
    assert s.total("folds") == mp.folds * g.groups
    want = sram_accesses(g.M, g.K, g.N, rows, cols, df)
    assert s.total("a_sram") == g.groups * want["ifmap_reads"]
    assert s.total("b_sram") == g.groups * want["filter_reads"]
    if df != "os":  # SCALE-Sim's os count adds folds*(R+C) phantom writes
        assert s.total("c_sram") == g.groups * want["ofmap_writes"]
    # compulsory traffic: every stored element read at least once, every output written once
    assert s.total("a_dram") >= g.groups * g.stored("A") - s.tiles.shape[0]
    assert s.total("b_dram") >= g.groups * g.stored("B") - s.tiles.shape[0]
    assert s.total("c_write") >= g.groups * g.stored("C") - s.tiles.shape[0]
    # a tile carries at most half a buffer of fresh data unless one fold chunk alone is larger
    assert (s.column("folds") >= 0).all() and len(s) >= 1


def test_tiles_reuse_when_operand_fits():
    g = Gemm("g", "fwd", 64, 32, 64)
    mp = map_dense(g, 8, 8, "os")
    big = schedule(g, mp, (10_000, 10_000, 10_000))
    small = schedule(g, mp, (300, 300, 300))
    assert big.total("a_dram") == 64 * 32 and big.total("b_dram") == 32 * 64
    assert small.total("a_dram") > big.total("a_dram")


@settings(**SETTINGS)
@given(g=gemm_st, df=st.sampled_from(["os", "ws", "is"]))
def test_ideal_memory_is_the_closed_form(g, df):
    layer = Layer.linear("fc", g.K, g.N, tokens=g.M, bias=False)
    res = simulate([layer], 1, arch(), df, "fwd", "ideal").table.iloc[0]
    assert res["Total Cycles"] == dense_cycles(g.M, g.K, g.N, 8, 8, df)
    assert res["Stall Cycles"] == 0


@pytest.mark.parametrize("df", ["os", "ws", "is"])
def test_modeled_memory_stalls_follow_bandwidth(df):
    layers = get_model("lenet5").layers
    cycles = []
    for gbps in (1.0, 4.0, 16.0, 1000.0):
        t = simulate(layers, 4, arch(gbps=gbps, **{"dram.latency_cycles": 1}), df, "train",
                     "modeled").table
        assert (t["Stall Cycles"] >= 0).all()
        assert (t["Total Cycles"] + 1 == t["Compute Cycles"] + t["Stall Cycles"]).all()
        cycles.append(int((t["Compute Cycles"] + t["Stall Cycles"]).sum()))
    assert cycles == sorted(cycles, reverse=True)
    assert cycles[0] > 1.5 * cycles[-1]  # 1 GB/s is badly memory bound
    compute = int(t["Compute Cycles"].sum())
    assert cycles[-1] < 1.1 * compute  # with plenty of bandwidth almost nothing stalls


def test_stall_causes_add_up_and_are_attributed():
    layers = get_model("lenet5").layers
    t = simulate(layers, 8, arch(gbps=2.0), "os", "train", "modeled").table
    causes = [c for c in t.columns if c.startswith("Stall Cycles (")]
    assert (t[causes].sum(axis=1) == t["Stall Cycles"]).all()
    assert t["Stall Cycles (DRAM Bandwidth)"].sum() > 0
    assert t.iloc[0]["Stall Cycles (Fill/Drain)"] > 0  # the very first fill


def test_sram_ports_cause_bank_conflict_stalls():
    layers = [Layer.linear("fc", 64, 64, tokens=64, bias=False)]
    one_port = {f"sram.{b}.banks": 1 for b in ("ifmap", "filter", "ofmap")}
    t = simulate(layers, 1, arch(**one_port), "os", "fwd", "modeled").table.iloc[0]
    assert t["Stall Cycles (SRAM Bank Conflict)"] > 0
    t = simulate(layers, 1, arch(), "os", "fwd", "modeled").table.iloc[0]
    assert t["Stall Cycles (SRAM Bank Conflict)"] == 0


def test_training_order_and_first_layer_has_no_bwd_input():
    layers = get_model("lenet5").layers
    order = training_order(layers, ("fwd", "bwd_input", "bwd_weight"))
    n = len(layers)
    assert order[:n] == [(i, "fwd") for i in range(n)]
    assert (0, "bwd_input") not in order and (0, "bwd_weight") in order
    assert order[n] == (n - 1, "bwd_input") and order[-1] == (0, "bwd_weight")
    t = simulate(layers, 2, arch(), "ws", "train", "ideal").table
    assert len(t) == 3 * n - 1
    macs = t.groupby("Phase")["Algorithmic Computes"].sum()
    assert macs["fwd"] == sum(la.macs(2) for la in layers)
    assert macs["bwd_weight"] == macs["fwd"]


def test_dram_traffic_at_least_compulsory():
    layers = get_model("resnet20").layers
    t = simulate(layers, 2, arch(kib=8.0), "ws", "train", "modeled").table
    for (li, ph), row in zip(training_order(layers, ("fwd", "bwd_input", "bwd_weight")),
                             t.itertuples(index=False), strict=True):
        g = lower(layers[li], 2, ph)
        assert row[t.columns.get_loc("DRAM IFMAP Reads")] >= g.groups * g.stored("A") * 0.99
        assert row[t.columns.get_loc("DRAM Filter Reads")] >= g.groups * g.stored("B") * 0.99
        assert row[t.columns.get_loc("DRAM OFMAP Writes")] >= g.groups * g.stored("C") * 0.99


def test_buffer_too_small_for_one_tile():
    ok = arch(rows=32, cols=32, kib=0.0625)
    assert half_buffer_words(ok)[0] == 32
    with pytest.raises(InputError, match="sram.ifmap.kib"):
        simulate(get_model("lenet5").layers, 1, ok.with_overrides({"array.lanes": 2}), "os",
                 "fwd", "ideal")


@pytest.mark.parametrize("bad, field", [(dict(dataflow="rs"), "--dataflow"),
                                        (dict(phases="bwd"), "--phases"),
                                        (dict(memory="perfect"), "--memory")])
def test_bad_options(bad, field):
    kw = dict(dataflow="os", phases="fwd", memory="ideal")
    kw.update(bad)
    with pytest.raises(InputError, match=field):
        simulate(get_model("lenet5").layers, 1, arch(), **kw)


def test_energy_counts_macs_sram_and_dram():
    a = arch()
    t = simulate(get_model("mlp3").layers, 4, a, "os", "fwd", "modeled").table
    mac = t["Algorithmic Computes"] * a.energy.mac_pj
    np.testing.assert_allclose(t["Energy MAC (pJ)"], mac)
    np.testing.assert_allclose(t["Energy DRAM (pJ)"], t["DRAM Bytes"] * a.energy.dram_pj_per_byte)
    assert (t["Energy (pJ)"] > t["Energy MAC (pJ)"] + t["Energy DRAM (pJ)"]).all()

