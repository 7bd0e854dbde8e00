"""A run's event log as a Chrome trace (Trace Event Format JSON) that opens in Perfetto
(ui.perfetto.dev) and chrome://tracing: one named track per hardware unit. ``docs/timeline.md``
describes the tracks.

    results = simulate_trace(path, arch, "os", timeline=True)   # or simulate(..., timeline=True)
    write_chrome_trace(chrome_trace(results), "timeline.json")

Time. The log is in accelerator cycles; Chrome traces count microseconds. Every boundary is
converted once, ``ns = round(cycles / clock_ghz)``, and written as ``ts = ns / 1000`` and
``dur = (end_ns - start_ns) / 1000``: whole nanoseconds, so a span that ends where the next one
starts ends on exactly the same timestamp when a viewer reads them back (Perfetto rounds to
nanoseconds) and spans on one track never overlap. The exact cycles are in each span's ``args``
(``start_cycle``, ``cycles``).

Size. A modeled run logs a few records per buffer tile. When the trace would exceed
``max_events`` events, consecutive records of the same GEMM on a tile track (read DMA, PE array,
write DMA) are merged, ``k`` at a time, into one span whose ``args`` sum theirs; ``otherData``
and the process label say ``k``. This module only draws what the log holds: it simulates nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from simulator.results import (
    COMPUTE,
    EVENT_FIELDS,
    GEMM,
    OVERHEAD,
    READ,
    WAIT_READ,
    WAIT_WRITE,
    WRITE,
    Results,
)

MAX_EVENTS = 1_000_000
PID = 1
# tid → track name, in display order
TRACKS = {1: "training step", 2: "GEMM", 3: "DRAM read DMA", 4: "PE array",
          5: "DRAM write DMA", 6: "top-K unit"}
STEP_TID, GEMM_TID, READ_TID, PE_TID, WRITE_TID, TOPK_TID = TRACKS
# per tile track: the kinds it shows and the args its spans sum (from the records' x, y, z)
TILE_TRACKS = {
    READ_TID: ((READ,), ("A_bytes", "B_bytes", "C_bytes")),
    PE_TID: ((COMPUTE, WAIT_READ, WAIT_WRITE),
             ("compute_cycles", "sram_conflict", "dram_bandwidth", "dram_latency", "fill_drain")),
    WRITE_TID: ((WRITE,), ("bytes",)),
}
COUNTERS = {READ_TID: "DRAM read", WRITE_TID: "DRAM write"}  # bandwidth series, GB/s
_K, _G, _S, _E, _X, _Y, _Z = range(len(EVENT_FIELDS))


def _nums(values) -> list[int | float]:
    """Cycle or byte counts for ``args``: ints when whole, else to 3 decimals."""
    r = np.round(np.asarray(values, dtype=np.float64), 3)
    out = r.astype(object)
    whole = r == np.floor(r)
    out[whole] = r[whole].astype(np.int64).astype(object)
    return out.tolist()


def _track_rows(ev: np.ndarray, tid: int) -> tuple[np.ndarray, np.ndarray]:
    """The records of a tile track in time order, and their args columns: for the PE array a
    ``compute`` record fills ``compute_cycles, sram_conflict`` and a wait the three stall
    causes."""
    kinds, names = TILE_TRACKS[tid]
    rec = ev[np.isin(ev[:, _K], kinds)]
    rec = rec[np.argsort(rec[:, _S], kind="stable")]
    vals = np.zeros((len(rec), len(names)))
    if tid == PE_TID:
        busy = rec[:, _K] == COMPUTE
        vals[busy, 0:2] = rec[busy][:, [_X, _Y]]
        vals[~busy, 2:5] = rec[~busy][:, [_X, _Y, _Z]]
    else:
        vals[:] = rec[:, _X:_X + len(names)]
    return rec, vals


def _group_starts(gemm: np.ndarray, k: int) -> np.ndarray:
    """First index of each group of at most ``k`` consecutive records of one GEMM."""
    n = len(gemm)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.r_[True, gemm[1:] != gemm[:-1]]
    first = np.flatnonzero(change)
    pos = np.arange(n) - first[np.cumsum(change) - 1]
    return np.flatnonzero(pos % k == 0)


def _merge_factor(tracks: dict[int, tuple], fixed: int, cap: int) -> int:
    """The smallest ``k`` for which the trace stays within ``cap`` events: a tile track's span
    costs one event, plus up to two bandwidth-counter events on a DMA track (its value, and a
    zero before it after an idle gap)."""
    def count(k: int) -> int:
        return fixed + sum((3 if tid in COUNTERS else 1) * len(_group_starts(rec[:, _G], k))
                           for tid, (rec, _) in tracks.items())

    hi = max([len(rec) for rec, _ in tracks.values()] + [1])
    if count(1) <= cap:
        return 1
    if count(hi) > cap:
        return hi
    lo = 1  # count(lo) > cap >= count(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if count(mid) <= cap else (mid, hi)
    return hi


def chrome_trace(results: Results, max_events: int = MAX_EVENTS) -> dict[str, Any]:
    """The Chrome trace of a run made with ``timeline=True``: "X" spans on the tracks
    ``TRACKS``, "C" DRAM bandwidth counters (GB/s) and "M" names, plus ``otherData`` saying
    how the trace was made. At most ``max_events`` events (module docstring)."""
    ev = results.events
    if ev is None:
        raise ValueError("the run has no event log: simulate it with timeline=True")
    meta = results.meta
    clock = float(meta.get("clock_ghz", 1.0))
    table = results.data("table")  # the columns: no DataFrame (and no pandas) needed
    names = [f"{la} {ph}" for la, ph in zip(table["Layer"], table["Phase"], strict=True)]
    steps = [int(s) for s in table["Step"]]

    def ns(cycles: np.ndarray) -> list[int]:
        return np.rint(np.asarray(cycles, dtype=np.float64) / clock).astype(np.int64).tolist()

    gemm_rec = ev[ev[:, _K] == GEMM]
    over_rec = ev[ev[:, _K] == OVERHEAD]
    tracks = {tid: _track_rows(ev, tid) for tid in TILE_TRACKS}
    tracks = {tid: t for tid, t in tracks.items() if len(t[0])}
    step_ids = sorted(set(steps)) if "steps" in meta else []
    used = ([STEP_TID] if step_ids else []) + [GEMM_TID] + sorted(tracks) + (
        [TOPK_TID] if len(over_rec) else [])
    # names, spans that are never merged, the counters' closing zeros
    fixed = 2 + 2 * len(used) + len(step_ids) + len(gemm_rec) + len(over_rec) + len(COUNTERS)
    k = _merge_factor(tracks, fixed, max_events)

    ideal = meta.get("memory") == "ideal"
    source = ("ideal memory: no SimPy run; each GEMM's compute cycles laid end to end on the PE "
              "array" if ideal else "SimPy event log, one span per buffer tile and unit")
    label = source if k == 1 else f"{source}; {k} consecutive records merged per span"
    title = f"sparsesim {meta.get('arch', '')} {meta.get('dataflow', '')}".strip()
    out: list[dict] = [
        {"name": "process_name", "ph": "M", "pid": PID, "tid": 0, "args": {"name": title}},
        {"name": "process_labels", "ph": "M", "pid": PID, "tid": 0, "args": {"labels": label}},
    ]
    for i, tid in enumerate(used):
        out.append({"name": "thread_name", "ph": "M", "pid": PID, "tid": tid,
                    "args": {"name": TRACKS[tid]}})
        out.append({"name": "thread_sort_index", "ph": "M", "pid": PID, "tid": tid,
                    "args": {"sort_index": i}})

    def span(tid: int, cat: str, name: str, s_ns: int, e_ns: int, args: dict) -> dict:
        return {"name": name, "cat": cat, "ph": "X", "ts": s_ns / 1000,
                "dur": (e_ns - s_ns) / 1000, "pid": PID, "tid": tid, "args": args}

    rows_rec = np.concatenate([gemm_rec, over_rec])
    rec_step = np.asarray(steps)[rows_rec[:, _G].astype(int)]
    for st in step_ids:  # a step spans its GEMMs and its overheads
        mine = rows_rec[rec_step == st]
        lo, hi = mine[:, _S].min(), mine[:, _E].max()
        s_ns, e_ns = ns([lo, hi])
        start, cycles = _nums([lo, hi - lo])
        out.append(span(STEP_TID, "step", f"step {st}", s_ns, e_ns,
                        {"start_cycle": start, "cycles": cycles}))
    layer, phase = table["Layer"].astype(str).tolist(), table["Phase"].astype(str).tolist()
    compute, stall = table["Compute Cycles"].tolist(), table["Stall Cycles"].tolist()
    for tid, cat, recs in ((GEMM_TID, "gemm", gemm_rec), (TOPK_TID, "overhead", over_rec)):
        recs = recs[np.argsort(recs[:, _S], kind="stable")]
        for row, s, c, s_ns, e_ns in zip(recs[:, _G].astype(int).tolist(), _nums(recs[:, _S]),
                                         _nums(recs[:, _E] - recs[:, _S]), ns(recs[:, _S]),
                                         ns(recs[:, _E]), strict=True):
            args = {"layer": layer[row], "phase": phase[row], "step": steps[row],
                    "start_cycle": s, "cycles": c}
            if tid == GEMM_TID:
                args.update({"compute_cycles": int(compute[row]),
                             "stall_cycles": int(stall[row])})
            out.append(span(tid, cat, names[row], s_ns, e_ns, args))

    counters: list[dict] = []
    for tid, (rec, vals) in tracks.items():
        first = _group_starts(rec[:, _G], k)
        lo = np.minimum.reduceat(rec[:, _S], first)
        hi = np.maximum.reduceat(rec[:, _E], first)
        sums = np.add.reduceat(vals, first, axis=0)
        tiles = np.add.reduceat(np.isin(rec[:, _K], (READ, COMPUTE, WRITE)), first)
        kinds = rec[first, _K].astype(int).tolist()
        fields = TILE_TRACKS[tid][1]
        s_ns, e_ns = ns(lo), ns(hi)
        rows = rec[first, _G].astype(int).tolist()
        cols = [_nums(col) for col in sums.T]
        for i, (row, s, c) in enumerate(zip(rows, _nums(lo), _nums(hi - lo), strict=True)):
            args = {"start_cycle": s, "cycles": c}
            args.update({f: col[i] for f, col in zip(fields, cols, strict=True) if col[i]})
            if k > 1:
                args["tiles"] = int(tiles[i])
            name, cat = names[row], "dma" if tid in COUNTERS else "compute"
            if tid == PE_TID and not tiles[i]:  # a stall on its own
                args = {"gemm": names[row], **args}
                cat = "stall"
                if kinds[i] == WAIT_READ:
                    name = "fill" if args.get("fill_drain") else "stall: read"
                else:
                    name = "drain" if args.get("fill_drain") else "stall: write-back"
            out.append(span(tid, cat, name, s_ns[i], e_ns[i], args))
        if tid in COUNTERS:
            counters += _bandwidth(COUNTERS[tid], sums.sum(axis=1), hi - lo, s_ns, e_ns, clock)
    out += counters

    other = {"generator": "sparsesim", **{key: meta[key] for key in (
        "arch", "dataflow", "phases", "memory", "batch", "model", "method", "clock_ghz")
        if key in meta}}
    other.update({
        "time": "ts and dur in microseconds: ns = round(cycles / clock_ghz), ts = ns / 1000; "
                "exact cycles in args",
        "source": source,
        "overheads": "top-K / mask-update rows run on the top-K unit after their step's GEMMs, "
                     "end to end (they count serially in the step's cycles)",
        "merged_records_per_span": k,
        "max_events": max_events,
        "events": len(out),
    })
    return {"traceEvents": out, "displayTimeUnit": "ns", "otherData": other}


def _bandwidth(name: str, nbytes: np.ndarray, cycles: np.ndarray, s_ns: list[int],
               e_ns: list[int], clock: float) -> list[dict]:
    """A DMA's bandwidth as a step function: each transfer's bytes / its duration (GB/s =
    bytes/cycle × clock_ghz) from its start, back to 0 at its end unless the next one starts
    right then."""
    gbps = np.divide(nbytes * clock, cycles, out=np.zeros(len(cycles)), where=cycles > 0)
    out = []
    last_end = None
    for i, v in enumerate(gbps.tolist()):
        if s_ns[i] == e_ns[i]:
            continue
        if last_end is not None and last_end < s_ns[i]:
            out.append(_counter(name, last_end, 0.0))
        out.append(_counter(name, s_ns[i], round(v, 3)))
        last_end = e_ns[i]
    if last_end is not None:
        out.append(_counter(name, last_end, 0.0))
    return out


def _counter(name: str, t_ns: int, gbps: float) -> dict:
    return {"name": name, "ph": "C", "ts": t_ns / 1000, "pid": PID, "tid": 0,
            "args": {"GB/s": gbps}}


def write_chrome_trace(trace: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``trace`` as JSON, one event a line, the same bytes for the same trace; written to
    a temporary name and renamed into place."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    dump = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
    with open(tmp, "w", encoding="utf-8") as f:
        f.write('{"traceEvents":[\n')
        events = trace["traceEvents"]
        for i in range(0, len(events), 4096):
            f.write(",\n".join(dump(e) for e in events[i:i + 4096]))
            f.write(",\n" if i + 4096 < len(events) else "\n")
        f.write("]")
        for key, value in trace.items():
            if key != "traceEvents":
                f.write(f",\n{dump(key)}:{dump(value)}")
        f.write("}\n")
    os.replace(tmp, path)
    return path
