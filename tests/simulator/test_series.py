"""DRAM timeline and load-imbalance histograms (simulator.series) against slow references, and
what a run writes from them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.arch import load_arch
from simulator.run import simulate_trace
from simulator.series import (
    IMBALANCE_BINS,
    imbalance_histogram,
    transferred_by,
)
from traces.synth import SynthConfig, synthesize


def _slow_transferred(starts, ends, nbytes, t):
    total = 0.0
    for s, e, b in zip(starts, ends, nbytes, strict=True):
        if e <= s:
            total += b if t >= s else 0.0
        else:
            total += b * min(max((t - s) / (e - s), 0.0), 1.0)
    return total


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 20), st.integers(1, 1000)),
                min_size=1, max_size=12),
       st.lists(st.floats(-5, 80, allow_nan=False), min_size=1, max_size=10))
def test_transferred_by_equals_reference(transfers, times):
    s = np.array([t[0] for t in transfers], dtype=float)
    e = s + np.array([t[1] for t in transfers], dtype=float)
    b = np.array([t[2] for t in transfers], dtype=float)
    at = np.sort(np.array(times))
    got = transferred_by(s, e, b, at)
    want = [_slow_transferred(s, e, b, t) for t in at]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 500), st.integers(0, 500)), min_size=1, max_size=30))
def test_imbalance_histogram_equals_reference(folds):
    cyc = np.array([a + b for a, b in folds])
    imb = np.array([b for _a, b in folds])
    got = imbalance_histogram(cyc, imb)
    want = np.zeros(len(IMBALANCE_BINS) - 1, dtype=int)
    for c, i in zip(cyc, imb, strict=True):
        share = 100.0 * i / c if c else 0.0
        k = min(int(share // 5), len(want) - 1)
        want[k] += 1
    assert got.tolist() == want.tolist()
    assert got.sum() == len(folds)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    trace = synthesize(SynthConfig(model="lenet5", method="swat", sparsity=0.8, batch=4, seed=3,
                                   steps=2, relu_sparsity=0.5),
                       tmp_path_factory.mktemp("t") / "trace")
    return simulate_trace(str(trace), load_arch("tensordash"), "ws", "train", "modeled")


def test_dram_timeline_holds_every_byte_of_each_step(run):
    tl = run.dram_timeline
    t = run.table
    for step, grp in tl.groupby("Step"):
        rows = t[t["Step"] == step]
        moved = (grp["Read Bytes"] + grp["Write Bytes"]).sum()
        assert moved == pytest.approx(rows["DRAM Bytes"].fillna(0).sum(), rel=1e-9)
        gemms = rows[rows["Phase"].isin(["fwd", "bwd_input", "bwd_weight"])]
        cycles = (gemms["Compute Cycles"] + gemms["Stall Cycles"]).sum()  # overheads follow
        # the table's whole cycles, or the engine's own end a fraction later (each GEMM's stall
        # causes are rounded to whole cycles; the DRAM times need not be whole)
        assert 0 <= grp["End Cycle"].max() - cycles < len(gemms)
        # the data phase runs at peak rate at most: no bin much above the DRAM peak
        assert grp["DRAM GB/s"].max() <= run.meta["dram_peak_gbps"] * 1.05


def test_load_imbalance_rows_agree_with_the_compute_report(run):
    imb = run.imbalance.set_index(["LayerID", "Phase", "Step"])
    t = run.table.set_index(["LayerID", "Phase", "Step"])
    bins = [c for c in imb.columns if c.startswith("Folds ") and c.endswith(" %")]
    assert (imb[bins].sum(axis=1) == imb["Folds"]).all()
    for key, row in imb.iterrows():
        assert row["Imbalance Cycles"] == t.loc[key, "Stall Cycles (Load Imbalance)"]


def test_results_directory_has_both_tables(run, tmp_path):
    from simulator.results import write_results

    out = write_results(run, tmp_path / "res")
    assert (out / "DRAM_TIMELINE.csv").is_file() and (out / "LOAD_IMBALANCE.csv").is_file()
    assert run.meta["dram_peak_bytes_per_cycle"] > 0 and run.meta["macs_per_cycle"] == 16 ** 3
