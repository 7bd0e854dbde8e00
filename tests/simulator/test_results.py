"""``Results`` holds its tables as ``simulator.table.Table`` (``simulate`` needs no pandas) and
reads them as DataFrames: a run's summary and files are those that pandas made of the same
frames before, and a change made to a frame is the results' own."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from simulator.arch import load_arch
from simulator.results import STALL_COLUMNS, Results, summarize, write_results
from simulator.run import simulate_trace
from simulator.table import Table
from traces.synth import SynthConfig, synthesize


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Results:
    trace = synthesize(SynthConfig(model="lenet5", method="swat", sparsity=0.8, batch=4, seed=5,
                                   steps=2, relu_sparsity=0.5),
                       tmp_path_factory.mktemp("t") / "trace")
    return simulate_trace(str(trace), load_arch("tensordash"), "os", "train", "modeled")


def _summarize_reference(results: Results) -> dict:
    """``summarize`` as it was written first, pandas summing the DataFrames."""
    t, clock = results.table, results.meta.get("clock_ghz", 1.0)

    def totals(df: pd.DataFrame) -> dict:
        cycles = int(df["Compute Cycles"].sum() + df["Stall Cycles"].sum())
        dram = int(df["DRAM Bytes"].sum())
        return {
            "gemms": int(len(df)), "cycles": cycles,
            "compute_cycles": int(df["Compute Cycles"].sum()),
            "stall_cycles": int(df["Stall Cycles"].sum()),
            "stall_cycles_by_cause": {c: int(df[col].sum()) for c, col in STALL_COLUMNS.items()},
            "ideal_cycles": int(df["Ideal Cycles"].sum()),
            "macs": int(df["Algorithmic Computes"].sum()), "dram_bytes": dram,
            "avg_dram_bw_bytes_per_cycle": dram / cycles if cycles else 0.0,
            "avg_dram_bw_gbps": dram / cycles * clock if cycles else 0.0,
            "energy_pj": float(df["Energy (pJ)"].sum()), "time_s": cycles / (clock * 1e9),
        }

    def speedup(df: pd.DataFrame) -> float:
        cyc = df["Compute Cycles"].sum() + df["Stall Cycles"].sum()
        return float(df["Dense Cycles"].sum() / cyc) if cyc else float("nan")

    back = t["Phase"].isin(["bwd_input", "bwd_weight"])
    return {
        **results.meta, "total": totals(t),
        "per_phase": {ph: totals(t[t["Phase"] == ph]) for ph in t["Phase"].unique()},
        "speedup": {
            "baseline": "dense: same layers, batch, architecture and dataflow; masks dropped",
            "step": {int(s): speedup(t[t["Step"] == s]) for s in sorted(t["Step"].unique())},
            "per_phase": {ph: speedup(t[t["Phase"] == ph])
                          for ph in ("fwd", "bwd_input", "bwd_weight") if (t["Phase"] == ph).any()},
            "backward": speedup(t[back]) if back.any() else None,
            "training_step": speedup(t),
        },
        "baseline_per_step": totals(results.baseline),
    }


def _files(d) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_the_tables_are_tables_until_read(run):
    fresh = Results(run.data("table"), run.meta, baseline=run.data("baseline"),
                    dram_timeline=run.data("dram_timeline"), imbalance=run.data("imbalance"))
    assert all(isinstance(fresh.stored(n), Table)
               for n in ("table", "baseline", "dram_timeline", "imbalance"))
    assert isinstance(fresh.table, pd.DataFrame) and isinstance(fresh.stored("table"),
                                                                 pd.DataFrame)
    assert fresh.table is fresh.table  # made once


def test_the_summary_is_pandas_sums(run):
    got = summarize(Results(run.data("table"), run.meta, baseline=run.data("baseline")))
    assert json.dumps(got) == json.dumps(_summarize_reference(run))
    assert got["per_phase"].keys() >= {"fwd", "bwd_input", "bwd_weight", "topk"}


def test_tables_and_frames_write_the_same_files(run, tmp_path):
    tables = Results(run.data("table"), run.meta, baseline=run.data("baseline"),
                     dram_timeline=run.data("dram_timeline"), imbalance=run.data("imbalance"))
    frames = Results(run.table.copy(), run.meta, baseline=run.baseline.copy(),
                     dram_timeline=run.dram_timeline.copy(), imbalance=run.imbalance.copy())
    a = _files(write_results(tables, tmp_path / "tables"))
    b = _files(write_results(frames, tmp_path / "frames"))
    assert a == b and {"LOAD_IMBALANCE.csv", "DRAM_TIMELINE.csv", "summary.json"} <= set(a)


def test_a_change_to_the_frame_is_the_results(run, tmp_path):
    res = Results(run.data("table").copy(), dict(run.meta), baseline=run.data("baseline"))
    before = summarize(res)["total"]["compute_cycles"]
    res.table.loc[0, "Compute Cycles"] += 7
    assert summarize(res)["total"]["compute_cycles"] == before + 7
    out = write_results(res, tmp_path / "res")
    assert pd.read_csv(out / "COMPUTE_REPORT.csv").loc[0, "Compute Cycles"] == (
        res.table.loc[0, "Compute Cycles"])
