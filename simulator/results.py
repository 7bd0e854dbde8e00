"""A run's results, written and read back here only: the SCALE-Sim-named CSVs plus
``summary.json`` (``docs/metrics.md``) of ``sparsesim simulate``, and the ``sweep.csv`` of
``sparsesim sweep`` (``docs/sweeps.md``).

Writing: ``write_results`` (``summarize`` makes ``summary.json``), of the ``Results`` tables as
``simulator.table`` holds them, without pandas (``sparsesim simulate`` does not import it; the
CSVs are the bytes pandas' ``to_csv`` wrote). Reading (pandas DataFrames), checked at the
boundary: a *results directory* holds ``summary.json`` and ``COMPUTE_REPORT.csv`` (plus the other
reports); a *sweep directory* holds ``sweep.csv`` (one row per point × layer × phase). Anything
else is refused with one message naming the directory and what is missing.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.errors import InputError
from common.fsutil import atomic_output_dir, check_regular_file
from common.jsonio import load_json
from common.vocab import PHASES
from common.yamlio import float_value
from simulator.table import Table, column_sum

if TYPE_CHECKING:  # pandas is imported where a frame is made or read, not by simulate
    import pandas as pd

#: the stall columns of the tables, by the engine's name of their cause
STALL_COLUMNS = {
    "dram_bandwidth": "Stall Cycles (DRAM Bandwidth)",
    "dram_latency": "Stall Cycles (DRAM Latency/Bank)",
    "sram_conflict": "Stall Cycles (SRAM Bank Conflict)",
    "load_imbalance": "Stall Cycles (Load Imbalance)",
    "fill_drain": "Stall Cycles (Fill/Drain)",
}

#: the event log (``Results.events``, the timeline): one row per event, these fields; ``kind``
#: is the index of one of ``EVENT_KINDS``
EVENT_FIELDS = ("kind", "gemm", "start", "end", "x", "y", "z")
EVENT_KINDS = ("read", "compute", "write", "wait_read", "wait_write", "gemm", "overhead")
READ, COMPUTE, WRITE, WAIT_READ, WAIT_WRITE, GEMM, OVERHEAD = range(len(EVENT_KINDS))


class _Frame:
    """A table of ``Results``, set to a ``simulator.table.Table`` or a DataFrame. Read, it is a
    DataFrame: made of the Table on the first read (importing pandas) and kept in its place, so
    that changes made to the frame are the results' own. ``Results.data`` reads it without
    pandas."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.slot]
        if isinstance(value, Table):
            value = obj.__dict__[self.slot] = value.to_frame()
        return value

    def __set__(self, obj: Any, value: Table | pd.DataFrame | None) -> None:
        obj.__dict__[self.slot] = value


class Results:
    """The per-GEMM table of one run plus what produced it (and, for a trace, the dense
    baseline's table); ``events`` is the event log of a ``timeline=True`` run (module
    docstring). ``dram_timeline``: DRAM traffic over each step's time in equal bins (modeled
    memory; ``simulator.series``); ``imbalance``: per GEMM with a per-fold work model, folds per
    5 % bin of load-imbalance share.

    The four tables read as DataFrames (``_Frame``); ``data(name)`` gives one as a ``Table``,
    which ``simulate`` sums and writes without importing pandas."""

    table = _Frame()
    baseline = _Frame()
    dram_timeline = _Frame()
    imbalance = _Frame()

    def __init__(self, table: Table | pd.DataFrame, meta: dict[str, Any] | None = None,
                 baseline: Table | pd.DataFrame | None = None, events: np.ndarray | None = None,
                 dram_timeline: Table | pd.DataFrame | None = None,
                 imbalance: Table | pd.DataFrame | None = None) -> None:
        self.table = table
        self.meta = {} if meta is None else meta
        self.baseline = baseline
        self.events = events
        self.dram_timeline = dram_timeline
        self.imbalance = imbalance

    def stored(self, name: str = "table") -> Table | pd.DataFrame | None:
        """The table ``name`` as it is held: a ``Table``, or the DataFrame read of it."""
        return self.__dict__[f"_{name}"]

    def data(self, name: str = "table") -> Table | None:
        """The table ``name`` (``table``, ``baseline``, ``dram_timeline``, ``imbalance``) as a
        ``Table``; of the DataFrame, with its changes, once one was read."""
        value = self.stored(name)
        return value if value is None or isinstance(value, Table) else Table.from_frame(value)


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
#: ``ATTRIBUTION.csv`` (``sparsesim simulate --explain``; ``pipeline.explain``): one row per step
#: of the speedup attribution chain, and the modeled dense baseline as a reference row
ATTRIBUTION_COLUMNS = (
    "Step", "Kind", "Configuration", "Adds", "Memory", "Cycles per Step",
    "Compute Cycles per Step", "Stall Cycles per Step", "DRAM MB per Step",
    "Energy uJ per Step", "Factor", "Speedup over Dense", "Dense Baseline",
)
REPORTS = {"COMPUTE_REPORT.csv": COMPUTE_COLUMNS, "BANDWIDTH_REPORT.csv": BANDWIDTH_COLUMNS,
           "DETAILED_ACCESS_REPORT.csv": ACCESS_COLUMNS, "SPARSE_REPORT.csv": SPARSE_COLUMNS}


def _totals(df: Table, clock: float) -> dict[str, Any]:
    """The totals of ``summarize`` over the rows of ``df``."""
    compute, stall = column_sum(df["Compute Cycles"]), column_sum(df["Stall Cycles"])
    cycles = int(compute + stall)
    dram = int(column_sum(df["DRAM Bytes"]))
    return {
        "gemms": int(len(df)),
        "cycles": cycles,
        "compute_cycles": int(compute),
        "stall_cycles": int(stall),
        "stall_cycles_by_cause": {c: int(column_sum(df[col])) for c, col in STALL_COLUMNS.items()},
        "ideal_cycles": int(column_sum(df["Ideal Cycles"])),
        "macs": int(column_sum(df["Algorithmic Computes"])),
        "dram_bytes": dram,
        "avg_dram_bw_bytes_per_cycle": dram / cycles if cycles else 0.0,
        "avg_dram_bw_gbps": dram / cycles * clock if cycles else 0.0,
        "energy_pj": float(column_sum(df["Energy (pJ)"])),
        "time_s": cycles / (clock * 1e9),
    }


def _speedups(t: Table) -> dict[str, Any]:
    """Speedup over the dense baseline: baseline GEMM cycles / sparse cycles, where the sparse
    side also pays its training overheads (top-K, mask updates)."""
    def speedup(df: Table) -> float:
        cyc = column_sum(df["Compute Cycles"]) + column_sum(df["Stall Cycles"])
        return float(column_sum(df["Dense Cycles"]) / cyc) if cyc else float("nan")

    phase = t["Phase"]
    back = (phase == "bwd_input") | (phase == "bwd_weight")
    return {
        "baseline": "dense: same layers, batch, architecture and dataflow; masks dropped",
        "step": {int(st): speedup(t.take(t["Step"] == st))
                 for st in sorted(set(t["Step"].tolist()))},
        "per_phase": {ph: speedup(t.take(phase == ph)) for ph in ("fwd", "bwd_input",
                                                                  "bwd_weight")
                      if (phase == ph).any()},
        "backward": speedup(t.take(back)) if back.any() else None,
        "training_step": speedup(t),
    }


def summarize(results: Results) -> dict[str, Any]:
    """Totals of a run: cycles (elapsed, i.e. compute + stalls), stalls by cause, MACs, DRAM
    bytes, energy, overall and per phase."""
    t = results.data("table")
    clock = results.meta.get("clock_ghz", 1.0)
    phase = t["Phase"]
    out = {
        **results.meta,
        "total": _totals(t, clock),
        "per_phase": {ph: _totals(t.take(phase == ph), clock)
                      for ph in dict.fromkeys(phase.tolist())},
    }
    if "Dense Cycles" in t.columns:
        out["speedup"] = _speedups(t)
    if results.stored("baseline") is not None:
        # the dense baseline's own totals for one step (every GEMM of the layer table): what
        # the sparse run's per-step cycles, DRAM bytes and energy compare with
        out["baseline_per_step"] = _totals(results.data("baseline"), clock)
    return out


def write_csv(df: Table | pd.DataFrame, path: Path) -> None:
    """``df`` as CSV without losing a digit: counters (``COUNT_COLUMNS``, when every value is a
    whole number) as integers, an empty cell where a row has none; other floats at full
    precision. A ``Table`` is written without pandas, to the same bytes."""
    if isinstance(df, Table):
        df.to_csv(path, whole=COUNT_COLUMNS)
        return
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
        table = results.stored("table")
        for name, cols in REPORTS.items():
            if name == "COMPUTE_REPORT.csv":
                cols = cols + [c for c in ("Dense Cycles", "Speedup") if c in table.columns]
            write_csv(table[[c for c in cols if c in table.columns]], tmp / name)
        for name, df in (("DRAM_TIMELINE.csv", results.stored("dram_timeline")),
                         ("LOAD_IMBALANCE.csv", results.stored("imbalance"))):
            if df is not None and len(df):
                write_csv(df, tmp / name)
        summary = summarize(results)
        bad = [k for k, v in _flat(summary).items() if isinstance(v, float) and math.isinf(v)]
        if bad:  # JSON has no infinity (json.dumps would write the non-standard Infinity)
            raise InputError(str(out), "summary.json", f"{', '.join(bad[:3])} is not a finite "
                                                       "number (the inputs' numbers are too "
                                                       "large); nothing written")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return Path(out)


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
#: rows that are training overheads, not GEMMs (top-K unit, RigL/SRigL mask updates)
OVERHEAD_PHASES = ("topk", "mask_update")
REQUIRED_COLUMNS = (*KEYS, "Compute Cycles", "Stall Cycles")
MERGED_REPORTS = ("BANDWIDTH_REPORT.csv", "DETAILED_ACCESS_REPORT.csv", "SPARSE_REPORT.csv")
#: the stall columns by the name a figure's legend gives them
STALL_CAUSE_COLUMNS = dict(zip(("DRAM bandwidth", "DRAM latency/bank", "SRAM bank conflict",
                                "load imbalance", "fill/drain"), STALL_COLUMNS.values(),
                               strict=True))
MAX_JSON_BYTES = 16 << 20  # summary.json, sweep.json (a few kB)
NOT_A_RESULT = ("is not a sparsesim results directory (expected summary.json and "
                "COMPUTE_REPORT.csv from 'sparsesim simulate ... -o DIR', or sweep.csv from "
                "'sparsesim sweep')")


@dataclass
class Run:
    """One simulated run: its per-GEMM table and its summary."""

    path: Path
    compute: pd.DataFrame
    summary: dict[str, Any]
    imbalance: pd.DataFrame | None = None
    dram_timeline: pd.DataFrame | None = None
    #: the speedup attribution (``ATTRIBUTION.csv``), when ``simulate --explain`` wrote one
    attribution: pd.DataFrame | None = None
    label: str = ""
    #: the architecture's name, with the keys that set it apart from others of that name in the
    #: same report (``name_archs``)
    arch_label: str = ""

    @property
    def arch(self) -> str:
        return self.arch_label or str(self.summary.get("arch", "?"))

    @property
    def dataflow(self) -> str:
        return str(self.summary.get("dataflow", "?"))

    @property
    def memory(self) -> str:
        return str(self.summary.get("memory", "?"))

    @property
    def method(self) -> str:
        return str(self.summary.get("method") or "topology")

    @property
    def sparsity(self) -> float:
        """The nominal sparsity of the trace (0 for a dense method or a topology)."""
        s = self.summary.get("sparsity")
        return float(s) if s is not None else 0.0

    @property
    def model(self) -> str:
        return str(self.summary.get("model") or self.path.name)

    @property
    def speedup(self) -> dict[str, Any] | None:
        return self.summary.get("speedup")

    @property
    def steps(self) -> list[int]:
        return sorted(int(s) for s in self.compute["Step"].unique())

    @property
    def gemms(self) -> pd.DataFrame:
        """The GEMM rows (no overhead rows)."""
        return self.compute[self.compute["Phase"].isin(PHASES)]

    @property
    def trace_key(self) -> tuple:
        """What identifies the workload: runs with equal keys simulated the same masks."""
        src = self.summary.get("trace_id")  # the manifest's hash: the same trace by any path
        if src is None:
            where = self.summary.get("trace") or self.summary.get("topology")
            src = str(Path(where).resolve()) if where else self.model
        return (src, self.model, self.method, self.summary.get("sparsity"),
                self.summary.get("batch"))


@dataclass
class Sweep:
    """A sweep directory: the tidy table and its description."""

    path: Path
    table: pd.DataFrame
    axes: list[str] = field(default_factory=list)
    description: dict[str, Any] = field(default_factory=dict)


#: columns of the results CSVs that hold text; every other column holds numbers
TEXT_COLUMNS = {"Layer", "Phase", "Mode", "A Role", "B Role", "A Format", "B Format",
                "A SRAM Format", "B SRAM Format", "Point", "Kind", "Configuration", "Adds",
                "Memory", "Dense Baseline"}
INTEGER_KEYS = ("LayerID", "Step", "Bin")


def _read_csv(path: Path, required: tuple[str, ...], text: set[str] | None = None
              ) -> pd.DataFrame:
    """A CSV the simulator wrote, checked: complete (ends with a newline), the ``required``
    columns present, keys filled in, and numbers where numbers belong (``text``: the columns
    that may hold text; None: do not check the other columns)."""
    import pandas as pd

    try:
        raw = path.read_bytes()
        df = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputError(str(path), None, f"cannot read as CSV: {err}".splitlines()[0]) from None
    if raw and not raw.endswith(b"\n"):
        raise InputError(str(path), None, "truncated: the last line is incomplete")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(str(path), missing[0], "column missing (is this a sparsesim report of "
                                                "the current version?)")
    for col in df.columns:
        if col in INTEGER_KEYS or col in ("Layer", "Phase", "Point"):
            bad = df[col].isna()
            if col in INTEGER_KEYS:
                num = pd.to_numeric(df[col], errors="coerce")
                bad |= num.isna() | (num != num.round()) | (num.abs() >= 2**63)
            if bad.any():
                row = int(bad.to_numpy().nonzero()[0][0]) + 2
                raise InputError(str(path), col, f"line {row}: expected "
                                 + ("an integer" if col in INTEGER_KEYS else "a name")
                                 + f", got {df[col].iloc[row - 2]!r}")
            if col in INTEGER_KEYS:
                df[col] = num.astype(np.int64)
        elif (text is not None and col not in text
              and not pd.api.types.is_numeric_dtype(df[col]) and df[col].notna().any()):
            num = pd.to_numeric(df[col], errors="coerce")
            bad = num.isna() & df[col].notna()
            if not bad.any():  # numbers all, some beyond int64 (pandas kept them as objects)
                df[col] = num.astype(float)
                continue
            row = int(bad.to_numpy().nonzero()[0][0]) + 2
            raise InputError(str(path), col, f"line {row}: expected a number, got "
                                             f"{str(df[col].iloc[row - 2])[:80]!r}")
    if text is not None:  # simulate writes finite numbers only (1e400 reads as infinity)
        for col in df.columns:
            if col in text or not pd.api.types.is_float_dtype(df[col]):
                continue
            inf = np.isinf(df[col].to_numpy())
            if inf.any():
                row = int(inf.nonzero()[0][0]) + 2
                raise InputError(str(path), col, f"line {row}: expected a finite number, got "
                                                 f"{float(df[col].iloc[row - 2])!r}")
    return df


def _read_json(path: Path) -> dict[str, Any]:
    check_regular_file(path, "a JSON file")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise InputError(str(path), None, f"is {path.stat().st_size:,} bytes; expected at most "
                                          f"{MAX_JSON_BYTES:,} (the limit)")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise InputError(str(path), None, f"cannot read as JSON: {err.strerror or err}") from None
    data = load_json(raw, str(path))
    if not isinstance(data, dict):
        raise InputError(str(path), None, "expected a JSON object")
    return data


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and float_value(v) is not None


def _check_summary(summary: dict[str, Any], src: str) -> None:
    """The fields of ``summary.json`` the report reads, each of the type ``simulate`` writes."""
    def bad(key: str, expected: str) -> InputError:
        head, _, rest = key.partition(".")  # one level of nesting: total.cycles
        value = summary.get(head)
        value = value.get(rest) if rest and isinstance(value, dict) else value
        return InputError(src, key, f"expected {expected}, got {value!r}")

    for key in ("arch", "dataflow", "memory"):
        if key not in summary:
            raise InputError(src, key, "missing")
        if not isinstance(summary[key], str) or not summary[key]:
            raise bad(key, "text")
    for key in ("phases", "model", "method", "trace", "topology", "trace_id", "arch_source"):
        if summary.get(key) is not None and not isinstance(summary[key], str):
            raise bad(key, "text")
    b = summary.get("batch")
    if b is not None and (not isinstance(b, int) or isinstance(b, bool) or b < 1):
        raise bad("batch", "a positive integer")
    sp = summary.get("sparsity")
    if sp is not None and (not _is_number(sp) or not 0 <= sp <= 1):
        raise bad("sparsity", "a number in [0, 1] or null")
    spec = summary.get("arch_spec")
    if spec is not None and not isinstance(spec, dict):
        raise bad("arch_spec", "an object (the architecture's keys)")
    for key in ("clock_ghz", "macs_per_cycle", "dram_peak_bytes_per_cycle", "dram_peak_gbps"):
        v = summary.get(key)
        if v is not None and (not _is_number(v) or not v > 0):
            raise bad(key, "a number > 0")
    steps = summary.get("steps")
    if steps is not None and (not isinstance(steps, list)
                              or not all(isinstance(x, int) and not isinstance(x, bool)
                                         for x in steps)):
        raise bad("steps", "a list of step numbers")
    total = summary.get("total")
    if not isinstance(total, dict):
        raise InputError(src, "total", "missing" if total is None else
                         f"expected an object, got {total!r}")
    for k, v in total.items():
        if not (_is_number(v) or (isinstance(v, dict) and all(map(_is_number, v.values())))):
            raise bad(f"total.{k}", "a number")
    speed = summary.get("speedup")
    if speed is None:
        return
    if not isinstance(speed, dict):
        raise bad("speedup", "an object or null")
    for key in ("training_step", "backward"):
        v = speed.get(key)
        if (v is not None or key == "training_step") and not _is_number(v):
            raise bad(f"speedup.{key}", "a number")  # the figures read training_step
    for key in ("per_phase", "step"):
        v = speed.get(key, {} if key == "step" else None)
        if not isinstance(v, dict) or not all(map(_is_number, v.values())):
            raise bad(f"speedup.{key}", "an object of numbers")
    if not all(isinstance(k, str) and k.isascii() and k.isdigit() for k in speed.get("step", {})):
        raise bad("speedup.step", "an object keyed by step numbers")


def load_run(path: str | os.PathLike) -> Run:
    """Load one results directory written by ``sparsesim simulate``."""
    p = Path(path)
    if not p.is_dir():
        raise InputError(str(p), None, "no such directory" if not p.exists() else NOT_A_RESULT)
    if not (p / "summary.json").is_file() or not (p / "COMPUTE_REPORT.csv").is_file():
        raise InputError(str(p), None, NOT_A_RESULT + _hint(p))
    summary = _read_json(p / "summary.json")
    _check_summary(summary, str(p / "summary.json"))
    compute = _read_csv(p / "COMPUTE_REPORT.csv", REQUIRED_COLUMNS, TEXT_COLUMNS)
    if compute.empty:
        raise InputError(str(p / "COMPUTE_REPORT.csv"), None, "has no rows")
    keys = set(map(tuple, compute[KEYS].itertuples(index=False)))
    for name in MERGED_REPORTS:  # one wide table: the other reports' columns joined on the keys
        if not (p / name).is_file():
            raise InputError(str(p / name), None, "missing (every 'sparsesim simulate' writes "
                                                  "it): the results directory is incomplete")
        other = _read_csv(p / name, tuple(KEYS), TEXT_COLUMNS)
        if set(map(tuple, other[KEYS].itertuples(index=False))) != keys:
            raise InputError(str(p / name), None, f"has {len(other)} rows for other layers, "
                                                  "phases or steps than COMPUTE_REPORT.csv "
                                                  f"({len(compute)} rows): not from the same run")
        fresh = [c for c in other.columns if c not in compute.columns]
        if fresh:
            if other.duplicated(KEYS).any():
                raise InputError(str(p / name), None, "has two rows for one layer, phase and step")
            compute = compute.merge(other[KEYS + fresh], on=KEYS, how="left", sort=False)
    imbalance = (_read_csv(p / "LOAD_IMBALANCE.csv", (*KEYS, "Folds", "Folds 0-5 %"),
                           TEXT_COLUMNS) if (p / "LOAD_IMBALANCE.csv").is_file() else None)
    timeline = (_read_csv(p / "DRAM_TIMELINE.csv", ("Step", "Bin", "Start Cycle", "End Cycle",
                                                    "Read GB/s", "Write GB/s", "DRAM GB/s"),
                          TEXT_COLUMNS) if (p / "DRAM_TIMELINE.csv").is_file() else None)
    attribution = (_read_csv(p / "ATTRIBUTION.csv", ATTRIBUTION_COLUMNS, TEXT_COLUMNS)
                   if (p / "ATTRIBUTION.csv").is_file() else None)
    return Run(p, compute, summary, imbalance, timeline, attribution)


def _hint(p: Path) -> str:
    """What the directory looks like instead, as advice."""
    if (p / "manifest.json").is_file():
        return "; it is a trace: simulate it first ('sparsesim simulate DIR --arch ... -o OUT')"
    if (p / "points").is_dir():
        return ("; it looks like a sweep that did not finish: run 'sparsesim sweep' again to "
                "complete it")
    inner = sorted(str(f.parent.relative_to(p)) for pattern in ("*/summary.json",
                                                                 "*/*/summary.json")
                   for f in p.glob(pattern))
    if inner:
        return (f"; it holds results directories ({', '.join(inner[:3])}"
                f"{', ...' if len(inner) > 3 else ''}): pass those")
    return ""


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Load a sweep directory written by ``sparsesim sweep``."""
    p = Path(path)
    table = _read_csv(p / "sweep.csv", ("Point", "Layer", "Phase", "Compute Cycles",
                                        "Stall Cycles"))  # axis columns may hold text
    desc = _read_json(p / "sweep.json") if (p / "sweep.json").is_file() else {}
    axes = desc.get("axes")
    if isinstance(axes, dict):
        axes = list(axes)
    if not isinstance(axes, list):
        axes = []
    axes = [a for a in axes if a in table.columns]
    return Sweep(p, table, axes, desc)


def load_any(paths: list[str | os.PathLike]) -> tuple[list[Run], list[Sweep]]:
    """Results and sweep directories, each recognised by its files, with unique labels."""
    runs, sweeps = [], []
    for path in paths:
        p = Path(path)
        if p.is_dir() and (p / "sweep.csv").is_file():
            sweeps.append(load_sweep(p))
        else:
            runs.append(load_run(p))
    name_archs(runs)
    label_runs(runs)
    return runs, sweeps


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested mapping: ``{"dram": {"channels": 4}}`` -> ``dram.channels``."""
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def name_archs(runs: list[Run]) -> None:
    """Runs on architectures of one name but different keys (a sweep over ``dram.*``, an edited
    preset) are different architectures: each gets the name and the keys that differ, e.g.
    ``tensordash (dram.bandwidth_gbps=25.6)``, so no figure or table takes them for one."""
    by_name: dict[str, list[Run]] = {}
    for r in runs:
        r.arch_label = ""
        by_name.setdefault(r.arch, []).append(r)
    for name, group in by_name.items():
        flats = [_flat(r.summary.get("arch_spec") or {}) for r in group]
        keys = sorted({k for f in flats for k in f} - {"name", "description"})
        differ = [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]
        if not differ:
            continue
        for r, f in zip(group, flats, strict=True):
            shown = ", ".join(f"{k}={f.get(k, '?')}" for k in differ[:3])
            more = f", +{len(differ) - 3} more" if len(differ) > 3 else ""
            r.arch_label = f"{name} ({shown}{more})"


def label_runs(runs: list[Run]) -> None:
    """A short label per run that tells it apart from the others in the same report."""
    def describe(r: Run, parts: tuple[str, ...]) -> str:
        bits = []
        for part in parts:
            if part == "workload":
                bits.append(r.method if r.method in ("dense", "topology")
                            else f"{r.method} {r.sparsity:.0%}")
            elif part == "model":
                bits.append(r.model)
            elif part == "dataflow":
                bits.append(r.dataflow)
            elif part == "memory":
                bits.append(f"{r.memory} mem")
            elif part == "arch":
                bits.append(r.arch)
        return " · ".join(bits)

    varying = ["workload"]
    for attr, part in (("model", "model"), ("dataflow", "dataflow"), ("memory", "memory"),
                       ("arch", "arch")):
        if len({getattr(r, attr) for r in runs}) > 1:
            varying.append(part)
    if len(runs) == 1:
        varying = ["workload", "model", "dataflow"]
    labels = [describe(r, tuple(varying)) for r in runs]
    seen: dict[str, int] = {}
    for r, lab in zip(runs, labels, strict=True):
        if labels.count(lab) > 1:  # still ambiguous: add the directory name
            seen[lab] = seen.get(lab, 0) + 1
            lab = f"{lab} ({r.path.name})"
        r.label = lab
