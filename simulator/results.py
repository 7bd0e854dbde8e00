"""Writing a run's results: SCALE-Sim-named CSVs plus ``summary.json`` (``docs/metrics.md``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from simulator.run import STALL_COLUMNS, Results
from traces.fsutil import atomic_output_dir

KEYS = ["LayerID", "Layer", "Phase", "Step"]
COMPUTE_COLUMNS = KEYS + [
    "Total Cycles (incl. prefetch)", "Total Cycles", "Stall Cycles", "Overall Util %",
    "Mapping Efficiency %", "Compute Util %", "Compute Cycles", *STALL_COLUMNS.values(),
    "Ideal Cycles", "M", "K", "N", "Groups", "Algorithmic Computes", "Actual Computes",
    "Energy MAC (pJ)", "Energy SRAM (pJ)", "Energy DRAM (pJ)", "Energy (pJ)",
]
BANDWIDTH_COLUMNS = KEYS + [
    "Avg IFMAP SRAM BW", "Avg FILTER SRAM BW", "Avg OFMAP SRAM BW", "Avg IFMAP DRAM BW",
    "Avg FILTER DRAM BW", "Avg OFMAP DRAM BW", "Avg DRAM BW (bytes/cycle)", "Avg DRAM BW (GB/s)",
]
ACCESS_COLUMNS = KEYS + [
    "SRAM IFMAP Reads", "SRAM Filter Reads", "SRAM OFMAP Writes", "DRAM IFMAP Reads",
    "DRAM Filter Reads", "DRAM OFMAP Reads", "DRAM OFMAP Writes", "DRAM Bytes",
    "DRAM Bytes Moved",
]
REPORTS = {"COMPUTE_REPORT.csv": COMPUTE_COLUMNS, "BANDWIDTH_REPORT.csv": BANDWIDTH_COLUMNS,
           "DETAILED_ACCESS_REPORT.csv": ACCESS_COLUMNS}


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

    return {
        **results.meta,
        "total": totals(t),
        "per_phase": {ph: totals(t[t["Phase"] == ph]) for ph in t["Phase"].unique()},
    }


def write_results(results: Results, out: str | os.PathLike, force: bool = False) -> Path:
    """Write the reports and ``summary.json`` into ``out`` (atomically: a temporary directory
    renamed into place when complete)."""
    with atomic_output_dir(out, force=force) as tmp:
        for name, cols in REPORTS.items():
            results.table[cols].to_csv(tmp / name, index=False, float_format="%.6g")
        (tmp / "summary.json").write_text(json.dumps(summarize(results), indent=1) + "\n")
    return Path(out)
