"""Writing a run's results: SCALE-Sim-named CSVs plus ``summary.json`` (``docs/metrics.md``)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from common.fsutil import atomic_output_dir
from simulator.run import STALL_COLUMNS, Results

KEYS = ["LayerID", "Layer", "Phase", "Step"]
COMPUTE_COLUMNS = KEYS + [
    "Total Cycles (incl. prefetch)", "Total Cycles", "Stall Cycles", "Overall Util %",
    "Mapping Efficiency %", "Compute Util %", "Compute Cycles", *STALL_COLUMNS.values(),
    "Ideal Cycles", "M", "K", "N", "Groups", "Algorithmic Computes", "Actual Computes",
    "Skipped Computes", "Gated Computes", "Effectual Computes",
    "Energy MAC (pJ)", "Energy SRAM (pJ)", "Energy DRAM (pJ)", "Energy (pJ)",
]
SPARSE_COLUMNS = KEYS + [
    "Mode", "A Role", "A Density", "A Format", "A SRAM Format", "A Data Bytes",
    "A Metadata Bytes", "B Role", "B Density", "B Format", "B SRAM Format", "B Data Bytes",
    "B Metadata Bytes",
    "DRAM IFMAP Reads", "DRAM Filter Reads", "Algorithmic Computes", "Actual Computes",
    "Skipped Computes", "Gated Computes", "Effectual Computes", "Ideal Cycles",
    "Stall Cycles (Load Imbalance)",
]
BANDWIDTH_COLUMNS = KEYS + [
    "Avg IFMAP SRAM BW", "Avg FILTER SRAM BW", "Avg OFMAP SRAM BW", "Avg IFMAP DRAM BW",
    "Avg FILTER DRAM BW", "Avg OFMAP DRAM BW", "Avg DRAM BW (bytes/cycle)", "Avg DRAM BW (GB/s)",
]
# Counters: written as integers (a float column would print 3.77645e+09 for 3776446464). The
# other number columns are written to full precision (the shortest text that reads back equal).
COUNT_COLUMNS = (
    "M", "K", "N", "Groups", "Algorithmic Computes", "Actual Computes", "Skipped Computes",
    "Gated Computes", "Effectual Computes", "A Data Bytes", "A Metadata Bytes", "B Data Bytes",
    "B Metadata Bytes", "SRAM IFMAP Reads", "SRAM Filter Reads", "SRAM OFMAP Writes",
    "DRAM IFMAP Reads", "DRAM Filter Reads", "DRAM OFMAP Reads", "DRAM OFMAP Writes",
    "DRAM Bytes", "DRAM Bytes Moved", "Dense Cycles", "Ideal Cycles",
)
ACCESS_COLUMNS = KEYS + [
    "SRAM IFMAP Reads", "SRAM Filter Reads", "SRAM OFMAP Writes", "DRAM IFMAP Reads",
    "DRAM Filter Reads", "DRAM OFMAP Reads", "DRAM OFMAP Writes", "DRAM Bytes",
    "DRAM Bytes Moved",
]
REPORTS = {"COMPUTE_REPORT.csv": COMPUTE_COLUMNS, "BANDWIDTH_REPORT.csv": BANDWIDTH_COLUMNS,
           "DETAILED_ACCESS_REPORT.csv": ACCESS_COLUMNS, "SPARSE_REPORT.csv": SPARSE_COLUMNS}


def summarize(results: Results) -> dict[str, Any]:
    """Totals of a run: cycles (elapsed, i.e. compute + stalls), stalls by cause, MACs, DRAM
    bytes, energy, overall and per phase."""
    t = results.table
    clock = results.meta.get("clock_ghz", 1.0)

    def totals(df: pd.DataFrame) -> dict[str, Any]:
        cycles = int(df["Compute Cycles"].sum() + df["Stall Cycles"].sum())
        dram = int(df["DRAM Bytes"].sum())
        return {
            "gemms": int(len(df)),
            "cycles": cycles,
            "compute_cycles": int(df["Compute Cycles"].sum()),
            "stall_cycles": int(df["Stall Cycles"].sum()),
            "stall_cycles_by_cause": {c: int(df[col].sum()) for c, col in STALL_COLUMNS.items()},
            "ideal_cycles": int(df["Ideal Cycles"].sum()),
            "macs": int(df["Algorithmic Computes"].sum()),
            "dram_bytes": dram,
            "avg_dram_bw_bytes_per_cycle": dram / cycles if cycles else 0.0,
            "avg_dram_bw_gbps": dram / cycles * clock if cycles else 0.0,
            "energy_pj": float(df["Energy (pJ)"].sum()),
            "time_s": cycles / (clock * 1e9),
        }

    out = {
        **results.meta,
        "total": totals(t),
        "per_phase": {ph: totals(t[t["Phase"] == ph]) for ph in t["Phase"].unique()},
    }
    if "Dense Cycles" in t.columns:
        # speedup over the dense baseline: baseline GEMM cycles / sparse cycles, where the sparse
        # side also pays its training overheads (top-K, mask updates)
        def speedup(df: pd.DataFrame) -> float:
            cyc = df["Compute Cycles"].sum() + df["Stall Cycles"].sum()
            return float(df["Dense Cycles"].sum() / cyc) if cyc else float("nan")

        steps = sorted(t["Step"].unique())
        out["speedup"] = {
            "baseline": "dense: same layers, batch, architecture and dataflow; masks dropped",
            "step": {int(st): speedup(t[t["Step"] == st]) for st in steps},
            "per_phase": {ph: speedup(t[t["Phase"] == ph]) for ph in ("fwd", "bwd_input",
                                                                      "bwd_weight")
                          if (t["Phase"] == ph).any()},
            "backward": speedup(t[t["Phase"].isin(["bwd_input", "bwd_weight"])])
            if t["Phase"].isin(["bwd_input", "bwd_weight"]).any() else None,
            "training_step": speedup(t),
        }
    if results.baseline is not None:
        # the dense baseline's own totals for one step (every GEMM of the layer table): what
        # the sparse run's per-step cycles, DRAM bytes and energy compare with
        out["baseline_per_step"] = totals(results.baseline)
    return out


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """``df`` as CSV without losing a digit: counters (``COUNT_COLUMNS``, when every value is a
    whole number) as integers, an empty cell where a row has none; other floats at full
    precision."""
    out = df.copy()
    for c in out.columns:
        if c in COUNT_COLUMNS and out[c].dtype.kind == "f":
            v = out[c].dropna()
            if (v == v.round()).all() and (v.abs() < 2**53).all():
                out[c] = out[c].astype("Int64")
    out.to_csv(path, index=False)


def write_results(results: Results, out: str | os.PathLike, force: bool = False,
                  extra: dict[str, Callable[[Path], None]] | None = None) -> Path:
    """Write the reports and ``summary.json`` into ``out`` (atomically: a temporary directory
    renamed into place when complete). ``extra`` maps more file names to writers, each called
    with its destination path inside the temporary directory (e.g. the timeline)."""
    with atomic_output_dir(out, force=force) as tmp:
        for name, writer in (extra or {}).items():
            writer(tmp / name)
        for name, cols in REPORTS.items():
            if name == "COMPUTE_REPORT.csv":
                cols = cols + [c for c in ("Dense Cycles", "Speedup")
                               if c in results.table.columns]
            present = [c for c in cols if c in results.table.columns]
            write_csv(results.table[present], tmp / name)
        for name, df in (("DRAM_TIMELINE.csv", results.dram_timeline),
                         ("LOAD_IMBALANCE.csv", results.imbalance)):
            if df is not None and len(df):
                write_csv(df, tmp / name)
        (tmp / "summary.json").write_text(json.dumps(summarize(results), indent=1) + "\n")
    return Path(out)
