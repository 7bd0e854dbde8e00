"""Runs on traces: the dense baseline, speedups per row / phase / step, overhead rows."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.arch import load_arch
from simulator.results import summarize
from simulator.run import simulate, simulate_trace
from traces.format import Trace
from traces.synth import SynthConfig, synthesize


def _trace(tmp_path, name="t", **kw):
    kw.setdefault("model", "lenet5")
    kw.setdefault("batch", 4)
    synthesize(SynthConfig(**kw), tmp_path / name)
    return str(tmp_path / name)


def test_dense_trace_has_speedup_one(tmp_path):
    """With SCALE-Sim's lowering a trace without a zero gains nothing; with tensordash's own
    (channels padded to the lanes, transposed bwd_input) the array skips the padding zeros its
    buffers hold, and nothing else: never slower, and only where there is padding."""
    path = _trace(tmp_path, method="dense")
    flat = load_arch("tensordash").with_overrides({"sparse.lowering": {}})
    t = simulate_trace(path, flat, "os", memory="ideal").table
    assert (t["Speedup"] == 1.0).all() and set(t["Mode"]) == {"dense"}
    t = simulate_trace(path, load_arch("tensordash"), "os", memory="ideal").table
    t = t[t["Phase"].isin(["fwd", "bwd_input", "bwd_weight"])]
    assert (t["Speedup"] >= 1.0).all()
    # LeNet-5's conv1 has one input channel, padded to 16 lanes: skipped
    assert t[(t["Layer"] == "conv1") & (t["Phase"] == "fwd")]["Speedup"].iloc[0] > 1.5


def test_speedup_is_against_the_dense_baseline(tmp_path):
    arch = load_arch("tensordash")
    path = _trace(tmp_path, method="swat", sparsity=0.9)
    res = simulate_trace(path, arch, "ws", memory="modeled")
    t = res.table[res.table["Phase"].isin(["fwd", "bwd_input", "bwd_weight"])]
    base = simulate(Trace(path).manifest.layers, 4, arch, "ws", "train", "modeled",
                    features=arch.features.baseline()).table
    want = (base["Compute Cycles"] + base["Stall Cycles"]).tolist()
    assert t["Dense Cycles"].tolist() == want
    assert t["Speedup"].tolist() == pytest.approx(
        [d / (c + s) for d, c, s in zip(want, t["Compute Cycles"], t["Stall Cycles"],
                                        strict=True)])
    s = summarize(res)["speedup"]
    assert set(s["per_phase"]) == {"fwd", "bwd_input", "bwd_weight"}
    assert s["step"] == {0: pytest.approx(s["training_step"])}
    # SWAT: the top-K unit rows, one per sparsified layer, count against the speedup
    topk = res.table[res.table["Phase"] == "topk"]
    assert list(topk["Layer"]) == ["conv2", "fc1", "fc2", "fc3"]
    gemm_speedup = t["Dense Cycles"].sum() / (t["Compute Cycles"] + t["Stall Cycles"]).sum()
    assert s["training_step"] < gemm_speedup


def test_every_step_of_a_dynamic_trace(tmp_path):
    path = _trace(tmp_path, method="rigl", sparsity=0.8, model="mlp3", steps=3)
    res = simulate_trace(path, load_arch("tensordash"), "os", memory="ideal")
    t = res.table
    assert sorted(set(t["Step"])) == [0, 1, 2]
    updates = t[t["Phase"] == "mask_update"]
    events = [(sd.step, e["layer"]) for sd in Trace(path) for e in sd.events]
    assert sorted(zip(updates["Step"], updates["Layer"], strict=True)) == sorted(events)
    assert {st for st, _ in events} == {1, 2}
    assert set(summarize(res)["speedup"]["step"]) == {0, 1, 2}


def test_format_bytes_follow_the_nonzeros(tmp_path):
    path = _trace(tmp_path, method="static", sparsity=0.75, model="mlp3", batch=2)
    arch = load_arch("tensordash").with_overrides(
        {"sparse.formats": {"filter": "bitmap", "ifmap": "coo"}})
    t = simulate_trace(path, arch, "os", memory="ideal").table
    row = t[(t["Layer"] == "fc2") & (t["Phase"] == "fwd")].iloc[0]
    n = 300 * 100  # fc2 weights: 100 x 300 at density 0.25
    assert row["B Data Bytes"] == n // 4 * 2  # bfloat16 values
    assert row["B Metadata Bytes"] == n // 8  # one bit per element
    assert row["A Format"] == "coo" and row["B Format"] == "bitmap"
    dense = simulate_trace(path, load_arch("tensordash"), "os", memory="ideal").table
    drow = dense[(dense["Layer"] == "fc2") & (dense["Phase"] == "fwd")].iloc[0]
    assert row["DRAM Filter Reads"] < drow["DRAM Filter Reads"]  # compressed weights


def test_sram_format_per_level(tmp_path):
    """A format for the on-chip level only: DRAM traffic per tile stays dense-sized words, but
    compressed tiles occupy less buffer, so tiles are larger and fewer; the report names both
    levels."""
    path = _trace(tmp_path, method="static", sparsity=0.9, model="mlp3", batch=64)
    base = load_arch("tensordash").with_overrides({"sram.filter.kib": 16})
    sram_only = base.with_overrides({"sparse.formats": {"filter": {"dram": "dense",
                                                                   "sram": "bitmap"}}})
    a = simulate_trace(path, base, "os", memory="modeled").table
    b = simulate_trace(path, sram_only, "os", memory="modeled").table
    ra = a[(a["Layer"] == "fc1") & (a["Phase"] == "fwd")].iloc[0]
    rb = b[(b["Layer"] == "fc1") & (b["Phase"] == "fwd")].iloc[0]
    assert rb["B Format"] == "dense" and rb["B SRAM Format"] == "bitmap"
    assert ra["B SRAM Format"] == "dense"
    # the weights as stored in DRAM are the same; operands are re-read less with more on chip
    assert rb["B Data Bytes"] == ra["B Data Bytes"]
    reads = ["DRAM IFMAP Reads", "DRAM Filter Reads"]
    assert (b[reads].sum(axis=1) <= a[reads].sum(axis=1)).all()
    assert b[reads].to_numpy().sum() < a[reads].to_numpy().sum()


def test_nm_reads_the_dense_activations_once(tmp_path):
    """2:4 execution computes on half the K slots but reads the activations dense: its ifmap
    traffic is the dense run's (an im2col A stays its feature map), not the im2col matrix."""
    path = _trace(tmp_path, method="static", sparsity=0.5, pattern="2:4", model="resnet20",
                  batch=8)
    res = simulate_trace(path, load_arch("stc-2to4"), "os", memory="ideal")
    t = res.table
    base = res.baseline.set_index(["LayerID", "Phase"])
    nm = t[t["Mode"] == "nm"]
    assert len(nm) > 0
    reads = nm["DRAM IFMAP Reads"].to_numpy()
    dense = np.array([base.loc[(r.LayerID, r.Phase), "DRAM IFMAP Reads"]
                      for r in nm.itertuples()])
    assert (reads <= dense).all() and (reads >= dense // 2).all()


def test_result_files_keep_every_digit(tmp_path):
    """Counters of 9 and more digits come back from the CSVs exactly (they were once written
    with 6 significant digits, so Skipped != Algorithmic - Actual in the file)."""
    import pandas as pd

    from simulator.results import COUNT_COLUMNS, write_results

    res = simulate_trace(_trace(tmp_path, model="resnet20", batch=64, method="swat",
                                sparsity=0.9), load_arch("tensordash"), "ws", memory="modeled")
    out = write_results(res, tmp_path / "res")
    comp = pd.read_csv(out / "COMPUTE_REPORT.csv")
    t = res.table
    assert comp["Algorithmic Computes"].max() >= 10**8  # beyond 6 significant digits
    for name in ("COMPUTE_REPORT.csv", "SPARSE_REPORT.csv", "BANDWIDTH_REPORT.csv",
                 "DETAILED_ACCESS_REPORT.csv"):
        df = pd.read_csv(out / name)
        for c in df.columns:
            if df[c].dtype.kind in "if":
                assert np.array_equal(df[c].to_numpy(float), t[c].to_numpy(float),
                                      equal_nan=True), (name, c)
            if c in COUNT_COLUMNS:  # whole numbers, written without a decimal point
                assert df[c].dtype.kind == "i" or df[c].isna().any(), (name, c)
    g = comp.dropna(subset=["Actual Computes"])
    assert (g["Skipped Computes"] == g["Algorithmic Computes"] - g["Actual Computes"]).all()
    assert (out / "DRAM_TIMELINE.csv").exists()
    for name, df in (("DRAM_TIMELINE.csv", res.dram_timeline),
                     ("LOAD_IMBALANCE.csv", res.imbalance)):
        if df is None or not len(df):
            continue
        back = pd.read_csv(out / name)
        num = [c for c in df.columns if df[c].dtype.kind in "if"]
        assert np.array_equal(back[num].to_numpy(float), df[num].to_numpy(float)), name


def test_a_replay_of_the_same_tiles_is_computed_once(tmp_path, monkeypatch):
    """On an architecture without sparse features the steps' tiles equal the dense baseline's:
    the engine replays them once and makes their tile schedules once (``engine.Replays``), and
    the results are those of replaying and scheduling every time. Another step's masks on a
    sparse architecture give other tiles: no copy."""
    import simulator.engine as engine
    import simulator.run as run

    path = _trace(tmp_path, model="resnet20", method="swat", sparsity=0.8, steps=2)
    made, calls = [], []
    real_replays, real_sim = engine.Replays, engine.simulate_tiles

    def counting(*a, **kw):
        calls.append(1)
        return real_sim(*a, **kw)

    def recording():
        made.append(real_replays())
        return made[-1]

    monkeypatch.setattr(engine, "simulate_tiles", counting)
    monkeypatch.setattr(run, "simulate_tiles", counting)
    monkeypatch.setattr(run, "Replays", recording)
    dense = load_arch("scalesim-32")
    got = simulate_trace(path, dense, "ws", memory="modeled", baseline_cache=None)
    assert len(made) == 1 and made[0].hits == 2 and len(calls) == 1  # baseline + 2 steps
    # the two steps' tile schedules are the baseline's, made once
    n_sched = len(made[0]._schedules)
    assert n_sched > 0 and made[0].schedule_hits == 2 * n_sched

    class Never(real_replays):  # the same runs, every replay and schedule computed
        def simulate_tiles(self, *a, **kw):
            self.key = None
            return super().simulate_tiles(*a, **kw)

        def schedule(self, key, make):
            return make()

    monkeypatch.setattr(run, "Replays", Never)
    want = simulate_trace(path, dense, "ws", memory="modeled", baseline_cache=None)
    assert len(calls) == 4
    assert got.table.equals(want.table) and got.baseline.equals(want.baseline)
    assert got.dram_timeline.equals(want.dram_timeline)
    calls.clear()
    simulate_trace(path, load_arch("tensordash"), "os", memory="modeled", baseline_cache=None)
    assert len(calls) == 3  # sparse features: no memo, each step its own replay


def test_a_schedule_key_tells_apart_ratios_that_carry_different_maps():
    """Two GEMMs whose ratios are equal but whose compressed feature maps differ are planned
    apart (``MapRatios`` carries the map; a key of the array's bytes alone would share one
    schedule between them)."""
    from dataflows.formats import MapFormat, MapRatios
    from dataflows.gemm import lower
    from dataflows.systolic import map_dense
    from simulator.run import _schedule_key
    from traces.layers import Layer

    layer = Layer("c", "conv", 2, 2, kernel=(3, 3), padding=(1, 1), input_hw=(4, 4))
    g = lower(layer, 1, "fwd")
    mp = map_dense(g, 4, 4, "os", 1)
    nz = np.zeros((1, 1, 2, 4, 4), dtype=np.uint8)
    nz2 = nz.copy()
    nz2[0, 0, 1, 2, 3] = 1
    maps = [MapFormat("A", "bitmap", 16, 0, z) for z in (nz, nz, nz2)]
    keys = [_schedule_key(g, mp, (64, 64, 64), 7, MapRatios.of([0.5, 1.0], m), (1.0, 1.0))
            for m in maps]
    assert keys[0] == keys[1] and hash(keys[0]) == hash(keys[1])
    assert keys[0] != keys[2]
