"""What bounds a run, or a layer: the largest share of its cycles, from the recorded columns.

A GEMM's elapsed cycles are ``Compute Cycles`` plus its five stall causes (``docs/metrics.md``);
the training overheads (top-K, mask updates) are compute cycles of the top-K unit. The share of
each of the six parts is its cycles over the elapsed cycles; the largest names the bound:

=================  ======================================  ====================================
bound              cycles                                  what would move it
=================  ======================================  ====================================
compute            ``Compute Cycles``                      fewer MACs: more skipping, more
                                                           sparsity, a larger array
DRAM bandwidth     ``Stall Cycles (DRAM Bandwidth)``       fewer bytes (compressed formats,
                                                           larger buffers) or more GB/s
DRAM latency       ``Stall Cycles (DRAM Latency/Bank)``    more channels / banks, larger bursts
SRAM ports         ``Stall Cycles (SRAM Bank Conflict)``   more banks or wider banks
load imbalance     ``Stall Cycles (Load Imbalance)``       a wider scheduler window, balanced
                                                           (N:M) sparsity
fill/drain         ``Stall Cycles (Fill/Drain)``           longer steps (larger batch)
=================  ======================================  ====================================

Pure functions of the tables ``simulate`` writes: the CLI calls them on the in-memory table
(``Results.data()``, a ``simulator.table.Table``: no pandas), the report on the table read back
(a DataFrame); nothing is re-simulated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from simulator.results import STALL_COLUMNS, Table, column_sum  # a run's table (simulator.table)

if TYPE_CHECKING:  # a verdict of a Table (``sparsesim simulate``) needs no pandas
    import pandas as pd

#: the parts of the elapsed cycles, by the name a verdict gives them
PARTS = {
    "compute": "Compute Cycles",
    "DRAM bandwidth": STALL_COLUMNS["dram_bandwidth"],
    "DRAM latency": STALL_COLUMNS["dram_latency"],
    "SRAM ports": STALL_COLUMNS["sram_conflict"],
    "load imbalance": STALL_COLUMNS["load_imbalance"],
    "fill/drain": STALL_COLUMNS["fill_drain"],
}
HEADLINE = {
    "compute": "Compute bound",
    "DRAM bandwidth": "DRAM-bandwidth bound",
    "DRAM latency": "DRAM-latency bound",
    "SRAM ports": "SRAM-port bound",
    "load imbalance": "Load-imbalance bound",
    "fill/drain": "Fill/drain bound",
}
WAITING_ON = {
    "DRAM bandwidth": "waiting on DRAM bandwidth",
    "DRAM latency": "waiting on DRAM latency, row misses and bank conflicts",
    "SRAM ports": "waiting on SRAM ports (bank conflicts)",
    "load imbalance": "lost to load imbalance (lanes waiting for the slowest)",
    "fill/drain": "filling the first tile and draining the last",
}


def _sum(table: Table | pd.DataFrame, col: str) -> Any:
    """The column's sum, NaN as 0 (``Series.fillna(0).sum()``; a Table's as numpy adds it,
    in the same order)."""
    if isinstance(table, Table):
        return column_sum(table[col])
    return table[col].fillna(0).sum()


def shares(df: Table | pd.DataFrame) -> dict[str, float]:
    """Share of the elapsed cycles of the rows ``df`` in each part (``PARTS``); sums to 1 (all
    zero for rows with no cycles)."""
    return _shares_of({c: _sum(df, c) for c in PARTS.values() if c in df.columns})


def _shares_of(sums: dict[str, Any]) -> dict[str, float]:
    """``shares`` from each column's sum (a column not there: 0)."""
    cyc = {k: float(sums[c]) if c in sums else 0.0 for k, c in PARTS.items()}
    total = sum(cyc.values())
    return {k: (v / total if total else 0.0) for k, v in cyc.items()}


def bound(df: Table | pd.DataFrame) -> tuple[str, float]:
    """(the part with the largest share, its share); ties go to the earlier part in
    ``PARTS``."""
    s = shares(df)
    name = max(s, key=lambda k: (s[k], -list(PARTS).index(k)))
    return name, s[name]


def layer_bounds(table: Table | pd.DataFrame) -> pd.DataFrame:
    """One row per layer (all phases, steps and training overheads): its elapsed cycles, the
    share of each part and its bound, largest layers first."""
    import pandas as pd

    out = pd.DataFrame(_layer_rows(table))
    return (
        out.sort_values(["Cycles", "LayerID"], ascending=[False, True], kind="stable").reset_index(
            drop=True
        )
        if len(out)
        else out
    )


def _layer_rows(table: Table | pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``layer_bounds``, in the order of the layers' (id, name)."""
    if isinstance(table, Table):
        return _layer_bounds_of(_groups_by_table(table))
    cols = [c for c in (*PARTS.values(), "Stall Cycles") if c in table.columns]
    if all(isinstance(table[c].dtype, np.dtype) and table[c].dtype.kind in "iuf" for c in cols):
        return _layer_bounds_of(_groups_by_column(table))
    return _layer_bounds_of(_groups_by_frame(table))  # other dtypes: as pandas sums them


def _groups_by_frame(table: pd.DataFrame) -> Any:
    """(layer id, layer, {column: that layer's sum}) per layer, pandas summing each group."""
    for (lid, lay), df in table.groupby(["LayerID", "Layer"], sort=True):
        sums = {c: df[c].fillna(0).sum() for c in PARTS.values() if c in df.columns}
        yield lid, lay, sums, df["Stall Cycles"].sum()


def _groups_by_column(table: pd.DataFrame) -> Any:
    """``_groups_by_frame`` for numeric columns, each column taken out of the table once (a
    layer's pandas frame and its sums were most of a ResNet-50 run's verdict): numpy adds each
    layer's values in the same order as ``Series.sum`` (NaN as 0), so the sums are the same."""
    cols = {c: table[c].fillna(0).to_numpy() for c in PARTS.values() if c in table.columns}
    stall = table["Stall Cycles"].fillna(0).to_numpy()
    for (lid, lay), idx in table.groupby(["LayerID", "Layer"], sort=True).indices.items():
        yield lid, lay, {c: v[idx].sum() for c, v in cols.items()}, stall[idx].sum()


def _groups_by_table(table: Table) -> Any:
    """``_groups_by_column`` of a Table: the layers in the order of their (id, name), as
    ``groupby`` sorts them (a row without either is left out, as ``groupby`` leaves it)."""

    def filled(v: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(v), 0.0, v) if v.dtype.kind == "f" else v

    cols = {c: filled(table[c]) for c in PARTS.values() if c in table.columns}
    stall = filled(table["Stall Cycles"])
    rows: dict[tuple, list[int]] = {}
    for i, key in enumerate(zip(table["LayerID"].tolist(), table["Layer"].tolist(), strict=True)):
        if not any(k is None or k != k for k in key):
            rows.setdefault(key, []).append(i)
    for (lid, lay), idx in sorted(rows.items(), key=lambda kv: kv[0]):
        idx = np.array(idx, dtype=np.intp)
        yield lid, lay, {c: v[idx].sum() for c, v in cols.items()}, stall[idx].sum()


def _layer_bounds_of(groups: Any) -> list[dict[str, Any]]:
    rows = []
    for lid, lay, sums, stall in groups:
        s = _shares_of(sums)
        name = max(s, key=lambda k: (s[k], -list(PARTS).index(k)))
        cyc = float(sums["Compute Cycles"] + stall)
        rows.append(
            {
                "LayerID": int(lid),
                "Layer": lay,
                "Cycles": cyc,
                "Bound": name,
                "Bound Share %": 100 * s[name],
                **{f"{k} %": 100 * v for k, v in s.items()},
            }
        )
    return rows


@dataclass(frozen=True)
class Verdict:
    """A run's bound, its share, and the sentence that says it."""

    bound: str
    share: float
    stalled: float  # share of all cycles that are stalls of any cause
    text: str


def _method(summary: dict[str, Any]) -> str:
    m = summary.get("method")
    if not m:
        return "the run"
    sp = summary.get("sparsity")
    m = {"swat": "SWAT"}.get(str(m), str(m))
    return f"{m}-{round(100 * sp)}" if sp else m


def _uncompressed_sparse_roles(table: Table | pd.DataFrame) -> list[str]:
    """Operand roles that are sparse (density under 0.5 somewhere) but stored dense in DRAM."""
    roles = []
    for x in ("A", "B"):
        cols = [f"{x} Role", f"{x} Density", f"{x} Format"]
        if not all(c in table.columns for c in cols):
            continue
        if isinstance(table, Table):
            sub = (table[f"{x} Density"] < 0.5) & (table[f"{x} Format"] == "dense")
            found = dict.fromkeys(
                r for r in table[f"{x} Role"][sub].tolist() if r is not None and r == r
            )
        else:
            sub = table[(table[f"{x} Density"] < 0.5) & (table[f"{x} Format"] == "dense")]
            found = sub[f"{x} Role"].dropna().unique()
        roles += [r for r in found if r not in roles]
    return sorted(roles)


def _advice(name: str, table: Table | pd.DataFrame) -> str:
    if name == "DRAM bandwidth":
        loose = _uncompressed_sparse_roles(table)
        first = f"store {' and '.join(loose)} compressed (`sparse.formats`) or " if loose else ""
        return (
            f"{first}enlarge the buffers (`sram.*.kib`) or the DRAM bandwidth "
            "(`dram.bandwidth_gbps`)"
        )
    if name == "DRAM latency":
        return "more DRAM channels or banks (`dram.channels`, `dram.banks_per_channel`)"
    if name == "SRAM ports":
        return (
            "the buffers' ports feed fewer words per cycle than the array asks: more banks "
            "(`sram.ifmap.banks`, likewise filter and ofmap)"
        )
    if name == "load imbalance":
        return (
            "lanes wait for the slowest stream of a fold: a wider scheduler window "
            "(`sparse.window`) or a balanced pattern (N:M) evens them out"
        )
    if name == "fill/drain":
        return "each step pays its first fill and last drain: a larger batch amortises them"
    algo = (
        float(_sum(table, "Algorithmic Computes"))
        if "Algorithmic Computes" in table.columns
        else 0.0
    )
    actual = float(_sum(table, "Actual Computes")) if "Actual Computes" in table.columns else 0.0
    if algo and actual < algo:
        return (
            f"the array performs {100 * actual / algo:.0f} % of the dense MACs; only "
            "skipping more (`sparse.skip`) or a larger array shortens it"
        )
    return (
        "the array performs every dense MAC; skipping zeros (`sparse.skip`) or a larger "
        "array shortens it"
    )


def run_verdict(table: Table | pd.DataFrame, summary: dict[str, Any]) -> Verdict:
    """The verdict of a whole run: ``table`` its rows (every GEMM and overhead of every step),
    ``summary`` its ``summary.json`` (for the dense baseline's bytes and the method)."""
    name, share = bound(table)
    s = shares(table)
    stalled = 1.0 - s["compute"]
    if name == "compute":
        text = f"{HEADLINE[name]}: {100 * share:.0f} % of cycles compute"
        if stalled > 0.005:
            other = max((k for k in s if k != "compute"), key=lambda k: s[k])
            text += f", {100 * stalled:.0f} % stalled (most: {other}, {100 * s[other]:.0f} %)"
    else:
        text = f"{HEADLINE[name]}: {100 * share:.0f} % of cycles {WAITING_ON[name]}" + (
            f" ({100 * stalled:.0f} % stalled in all)" if stalled - share > 0.005 else ""
        )
    base = summary.get("baseline_per_step")
    steps = max(len(summary.get("steps") or [0]), 1)
    if name in ("DRAM bandwidth", "DRAM latency") and base and base.get("dram_bytes"):
        per_step = float(_sum(table, "DRAM Bytes")) / steps
        text += f"; {_method(summary)} moves {per_step / base['dram_bytes']:.2f}x dense's bytes"
    text += f" — {_advice(name, table)}."
    return Verdict(name, share, stalled, text)


def layers_sentence(table: Table | pd.DataFrame) -> str:
    """How many layers each bound holds, largest first: ``layers: 40 DRAM-bandwidth bound,
    14 compute bound`` (a tie in the order of the largest layer each bound holds)."""
    rows = sorted(_layer_rows(table), key=_largest_first)
    if not rows:
        return ""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["Bound"]] = counts.get(r["Bound"], 0) + 1
    order = sorted(counts, key=lambda b: -counts[b])  # stable: ties as they came

    def lower(h: str) -> str:  # "Compute bound" -> "compute bound"; "DRAM-..." stays
        return h[0].lower() + h[1:] if h[1].islower() else h

    return "layers: " + ", ".join(f"{counts[b]} {lower(HEADLINE[b])}" for b in order)


def _largest_first(row: dict[str, Any]) -> tuple:
    """``layer_bounds``' order: by cycles, largest first (NaN last), then by layer id."""
    cyc = row["Cycles"]
    return (cyc != cyc, -cyc if cyc == cyc else 0.0, row["LayerID"])
