"""The timeline: the engine's event log agrees with its own totals, and the Chrome trace built
from it is valid, one non-overlapping named track per unit, deterministic and within its cap."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dataflows.gemm import lower
from dataflows.systolic import map_dense
from dataflows.tiles import schedule
from reports.timeline import MAX_EVENTS, TRACKS, chrome_trace, write_chrome_trace
from simulator.arch import load_arch
from simulator.engine import simulate_tiles
from simulator.results import (
    COMPUTE,
    EVENT_FIELDS,
    GEMM,
    OVERHEAD,
    READ,
    WAIT_READ,
    WAIT_WRITE,
    WRITE,
)
from simulator.run import PHASE_SETS, half_buffer_words, simulate, simulate_trace, training_order
from traces.models import get_model
from traces.synth import SynthConfig, synthesize

K, G, S, E, X, Y, Z = range(len(EVENT_FIELDS))
REQUIRED = {"X": {"name", "ph", "ts", "dur", "pid", "tid", "args"},
            "M": {"name", "ph", "pid", "tid", "args"},
            "C": {"name", "ph", "ts", "pid", "args"}}


def small_arch(**over):
    """Small buffers, slow DRAM and SRAM with few banks: every stall cause shows up."""
    base = {"array.rows": 8, "array.cols": 8, "sram.ifmap.kib": 2.0, "sram.filter.kib": 2.0,
            "sram.ofmap.kib": 2.0, "dram.bandwidth_gbps": 4.0, "sram.ifmap.banks": 2,
            "clock_ghz": 0.7}
    base.update(over)
    return load_arch("scalesim-32").with_overrides(base)


def schedules(arch, dataflow, model="lenet5", batch=2):
    layers = get_model(model).layers
    out = []
    for li, ph in training_order(layers, PHASE_SETS["train"]):
        g = lower(layers[li], batch, ph)
        out.append(schedule(g, map_dense(g, arch.rows, arch.cols, dataflow), half_buffer_words(
            arch)))
    return out


def spans(ev, kinds):
    """Records of ``kinds`` in time order."""
    r = ev[np.isin(ev[:, K], kinds)]
    return r[np.argsort(r[:, S], kind="stable")]


def assert_no_overlap(r):
    assert (r[:, E] >= r[:, S]).all()
    assert (r[1:, S] >= r[:-1, E] - 1e-9).all()


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_log_agrees_with_the_timings(dataflow):
    arch = small_arch()
    scheds = schedules(arch, dataflow)
    buf: list[float] = []
    timings = simulate_tiles(scheds, arch, log=buf)
    assert timings == simulate_tiles(scheds, arch)  # logging changes nothing
    ev = np.array(buf).reshape(-1, len(EVENT_FIELDS))
    assert set(ev[:, K].astype(int)) == {READ, COMPUTE, WRITE, WAIT_READ, WAIT_WRITE}
    stalls_seen = {c: 0.0 for c in ("dram_bandwidth", "dram_latency", "sram_conflict")}
    for gi, tm in enumerate(timings):
        mine = ev[ev[:, G] == gi]
        busy = mine[mine[:, K] == COMPUTE]
        assert (busy[:, E] - busy[:, S]).sum() == pytest.approx(
            tm.compute + tm.stalls["sram_conflict"])
        assert busy[:, X].sum() == tm.compute and len(busy) == len(scheds[gi])
        assert busy[:, Y].sum() == tm.stalls["sram_conflict"]
        reads = mine[mine[:, K] == READ]
        assert dict(zip("ABC", reads[:, X:Z + 1].sum(axis=0).tolist(), strict=True)) == \
            tm.dram_read_bytes
        assert mine[mine[:, K] == WRITE][:, X].sum() == tm.dram_write_bytes
        waits = mine[np.isin(mine[:, K], (WAIT_READ, WAIT_WRITE))]
        assert np.allclose(waits[:, X:Z + 1].sum(axis=1), waits[:, E] - waits[:, S])
        for col, cause in ((X, "dram_bandwidth"), (Y, "dram_latency"), (Z, "fill_drain")):
            assert waits[:, col].sum() == pytest.approx(tm.stalls[cause], abs=1e-6)
        # the array's busy and stalled spans fill the GEMM exactly
        pe = mine[np.isin(mine[:, K], (COMPUTE, WAIT_READ, WAIT_WRITE))]
        assert (pe[:, E] - pe[:, S]).sum() == pytest.approx(tm.end - tm.start)
        assert pe[:, S].min() >= tm.start - 1e-9 and pe[:, E].max() <= tm.end + 1e-9
        for c in stalls_seen:
            stalls_seen[c] += tm.stalls[c]
    # the case exercises the causes (the is mapping of this arch needs no more SRAM ports)
    assert stalls_seen["dram_bandwidth"] > 0 and stalls_seen["dram_latency"] > 0
    assert stalls_seen["sram_conflict"] > 0 or dataflow == "is"
    for kinds in ((READ,), (WRITE,), (COMPUTE, WAIT_READ, WAIT_WRITE)):  # one unit each
        assert_no_overlap(spans(ev, kinds))


def gemm_spans_cover(res):
    ev, t = res.events, res.table
    g = ev[ev[:, K] == GEMM]
    assert g[:, G].tolist() == list(range(len(g)))  # in row order
    assert g[0, S] == 0 and (g[1:, S] == g[:-1, E]).all()
    assert g[-1, E] == pytest.approx(ev[:, E].max())
    elapsed = (t["Compute Cycles"] + t["Stall Cycles"]).to_numpy()[:len(g)]
    return g[:, E] - g[:, S], elapsed


@pytest.mark.parametrize("memory", ["modeled", "ideal"])
def test_run_events_and_table(memory):
    arch = small_arch()
    layers = get_model("lenet5").layers
    res = simulate(layers, 2, arch, "ws", "train", memory, timeline=True)
    plain = simulate(layers, 2, arch, "ws", "train", memory)
    pd.testing.assert_frame_equal(res.table, plain.table)
    assert plain.events is None
    dur, elapsed = gemm_spans_cover(res)
    # the table rounds each stall cause to whole cycles
    assert np.abs(dur - elapsed).max() <= (2.5 if memory == "modeled" else 0)
    ev, t = res.events, res.table
    busy = ev[ev[:, K] == COMPUTE]
    per_row = np.bincount(busy[:, G].astype(int), weights=busy[:, E] - busy[:, S],
                          minlength=len(t))
    assert per_row.tolist() == pytest.approx((t["Compute Cycles"]
                                              + t["Stall Cycles (SRAM Bank Conflict)"]).tolist())
    if memory == "modeled":
        wb = arch.word_bytes
        reads = ev[ev[:, K] == READ]
        got = np.bincount(reads[:, G].astype(int), weights=reads[:, X:Z + 1].sum(axis=1),
                          minlength=len(t))
        want = (t["DRAM IFMAP Reads"] * wb["ifmap"] + t["DRAM Filter Reads"] * wb["filter"]
                + t["DRAM OFMAP Reads"] * wb["ofmap"])
        assert got.tolist() == want.tolist()
    else:
        assert set(ev[:, K].astype(int)) == {GEMM, COMPUTE}


def events_by_track(trace):
    out: dict[int, list[dict]] = {}
    for e in trace["traceEvents"]:
        if e["ph"] == "X":
            out.setdefault(e["tid"], []).append(e)
    return out


def ns(us):
    return round(us * 1000)


def check_schema(trace):
    """Every event has its phase's keys; every track with spans is named; on a track, ts never
    goes back and spans never overlap (in the whole nanoseconds a viewer reads)."""
    evs = trace["traceEvents"]
    for e in evs:
        assert REQUIRED[e["ph"]] <= set(e), e
        assert isinstance(e["args"], dict)
    named = {e["tid"]: e["args"]["name"] for e in evs if e["name"] == "thread_name"}
    assert {e["name"] for e in evs if e["name"] == "process_name"}
    tracks = events_by_track(trace)
    assert set(tracks) <= set(named) and all(named[t] == TRACKS[t] for t in named)
    for spans_ in tracks.values():
        start = [ns(e["ts"]) for e in spans_]
        end = [ns(e["ts"]) + ns(e["dur"]) for e in spans_]
        assert start == sorted(start)
        assert all(e0 <= s1 for e0, s1 in zip(end, start[1:], strict=False))
        assert all(e["dur"] >= 0 for e in spans_)
    return named, tracks


def test_chrome_trace_of_a_modeled_run(tmp_path):
    arch = small_arch()
    res = simulate(get_model("lenet5").layers, 2, arch, "os", "train", "modeled",
                   timeline=True)
    trace = chrome_trace(res)
    named, tracks = check_schema(trace)
    assert set(named.values()) == {"GEMM", "DRAM read DMA", "PE array", "DRAM write DMA"}
    t = res.table
    gemm = tracks[2]
    assert [e["name"] for e in gemm] == [f"{a} {b}" for a, b in zip(t["Layer"], t["Phase"],
                                                                    strict=True)]
    # microseconds from cycles at the clock, whole nanoseconds
    ev = res.events[res.events[:, K] == GEMM]
    assert [ns(e["ts"]) for e in gemm] == np.rint(ev[:, S] / arch.clock_ghz).tolist()
    assert [e["args"]["cycles"] for e in gemm] == pytest.approx((ev[:, E] - ev[:, S]).tolist(),
                                                                abs=1e-3)
    read_bytes = sum(e["args"].get(f"{x}_bytes", 0) for e in tracks[3] for x in "ABC")
    wb = arch.word_bytes
    assert read_bytes == pytest.approx((t["DRAM IFMAP Reads"] * wb["ifmap"]
                                        + t["DRAM Filter Reads"] * wb["filter"]
                                        + t["DRAM OFMAP Reads"] * wb["ofmap"]).sum())
    pe = tracks[4]
    assert sum(e["args"].get("compute_cycles", 0) for e in pe) == t["Compute Cycles"].sum()
    stalls = {e["name"] for e in pe if e["cat"] == "stall"}
    drain = (res.events[:, K] == WAIT_WRITE) & (res.events[:, Z] > 0)
    assert stalls >= {"fill", "stall: read"} and ("drain" in stalls) == drain.any()
    assert stalls <= {"fill", "drain", "stall: read", "stall: write-back"}
    # one bandwidth sample at the start of every transfer: its bytes over its cycles, in GB/s
    counters = {(e["name"], ns(e["ts"])): e["args"]["GB/s"] for e in trace["traceEvents"]
                if e["ph"] == "C"}
    for tid, name in ((3, "DRAM read"), (5, "DRAM write")):
        for e in tracks[tid]:
            nbytes = sum(v for k, v in e["args"].items() if k.endswith("bytes"))
            if e["dur"] > 0:
                assert counters[(name, ns(e["ts"]))] == pytest.approx(
                    nbytes / e["args"]["cycles"] * arch.clock_ghz, abs=1e-3)
    assert trace["otherData"]["merged_records_per_span"] == 1
    assert trace["otherData"]["events"] == len(trace["traceEvents"]) <= MAX_EVENTS
    path = write_chrome_trace(trace, tmp_path / "timeline.json")
    assert json.loads(path.read_text()) == trace
    assert not list(tmp_path.glob("*.tmp"))


def test_ideal_memory_lays_gemms_end_to_end():
    res = simulate(get_model("mlp3").layers, 4, small_arch(), "is", "train", "ideal",
                   timeline=True)
    trace = chrome_trace(res)
    named, tracks = check_schema(trace)
    assert set(named.values()) == {"GEMM", "PE array"}
    assert "ideal memory" in trace["otherData"]["source"]
    labels = [e for e in trace["traceEvents"] if e["name"] == "process_labels"]
    assert "ideal memory" in labels[0]["args"]["labels"]
    cyc = (res.table["Compute Cycles"] + res.table["Stall Cycles"]).tolist()
    for tid in (2, 4):
        assert [e["args"]["cycles"] for e in tracks[tid]] == cyc
        assert [e["args"]["start_cycle"] for e in tracks[tid]] == np.cumsum([0] + cyc[:-1]
                                                                             ).tolist()


def test_trace_steps_and_training_overheads(tmp_path):
    path = tmp_path / "t"
    synthesize(SynthConfig(model="mlp3", method="rigl", sparsity=0.8, batch=4, steps=3), path)
    # streams with a barrier (not in lockstep): folds lose cycles to load imbalance
    arch = load_arch("tensordash").with_overrides({"sparse.sync": "barrier"})
    res = simulate_trace(str(path), arch, "os", memory="modeled", timeline=True)
    assert res.baseline is not None
    t = res.table
    ev = res.events
    over = ev[ev[:, K] == OVERHEAD]
    rows = t.index[t["Phase"].isin(["topk", "mask_update"])].tolist()
    assert sorted(over[:, G].astype(int).tolist()) == rows and rows
    assert over[:, X].tolist() == t.loc[over[:, G].astype(int), "Compute Cycles"].tolist()
    gemm = ev[ev[:, K] == GEMM]
    assert len(gemm) + len(over) == len(t)
    # sparse tiles last as long as their slowest stream: the load imbalance is inside them
    busy = ev[ev[:, K] == COMPUTE]
    per_row = np.bincount(busy[:, G].astype(int), weights=busy[:, E] - busy[:, S],
                          minlength=len(t))[gemm[:, G].astype(int)]
    g_rows = t.loc[gemm[:, G].astype(int)]
    assert (g_rows["Stall Cycles (Load Imbalance)"] > 0).any()
    assert per_row.tolist() == pytest.approx((g_rows["Compute Cycles"]
                                              + g_rows["Stall Cycles (Load Imbalance)"]
                                              + g_rows["Stall Cycles (SRAM Bank Conflict)"]
                                              ).tolist())
    # steps one after the other; a step's overheads after its last GEMM, end to end
    step = t["Step"].to_numpy()
    for st in sorted(set(step)):
        g = gemm[step[gemm[:, G].astype(int)] == st]
        o = over[step[over[:, G].astype(int)] == st]
        later = ev[step[ev[:, G].astype(int)] > st]
        end = max(g[:, E].max(), o[:, E].max() if len(o) else 0)
        assert (later[:, S] >= end - 1e-9).all()
        if len(o):
            assert o[0, S] == pytest.approx(g[:, E].max()) and (o[1:, S] == o[:-1, E]).all()
    trace = chrome_trace(res)
    named, tracks = check_schema(trace)
    assert {"training step", "top-K unit"} <= set(named.values())
    assert [e["name"] for e in tracks[1]] == [f"step {s}" for s in sorted(set(step))]
    assert [e["name"] for e in tracks[6]] == [f"{t.loc[r, 'Layer']} {t.loc[r, 'Phase']}"
                                              for r in over[np.argsort(over[:, S]), G]]


def test_cap_merges_tiles_of_one_gemm():
    arch = small_arch()
    res = simulate(get_model("lenet5").layers, 2, arch, "os", "train", "modeled",
                   timeline=True)
    full = chrome_trace(res)
    cap = len(full["traceEvents"]) // 4
    merged = chrome_trace(res, max_events=cap)
    k = merged["otherData"]["merged_records_per_span"]
    assert k > 1 and len(merged["traceEvents"]) <= cap
    assert merged["otherData"]["events"] == len(merged["traceEvents"])
    labels = [e for e in merged["traceEvents"] if e["name"] == "process_labels"]
    assert f"{k} consecutive records merged" in labels[0]["args"]["labels"]
    _, a = check_schema(full)
    _, b = check_schema(merged)
    assert a[2] == b[2]  # GEMM spans are never merged
    for tid in (3, 4, 5):
        assert len(b[tid]) < len(a[tid])
        # the merged spans keep what they add up and stay inside one GEMM
        for key in ("A_bytes", "B_bytes", "C_bytes", "bytes", "compute_cycles",
                    "sram_conflict", "dram_bandwidth", "dram_latency", "fill_drain"):
            # (args are rounded to 3 decimals)
            assert sum(e["args"].get(key, 0) for e in b[tid]) == pytest.approx(
                sum(e["args"].get(key, 0) for e in a[tid]), abs=1e-3 * len(a[tid]))
        assert sum(e["args"].get("tiles", 0) for e in b[tid]) == sum(
            e["name"] not in ("fill", "drain", "stall: read", "stall: write-back")
            for e in a[tid])
        assert max(e["args"].get("tiles", 0) for e in b[tid]) <= k
    gemm_of = {e["name"]: (ns(e["ts"]), ns(e["ts"]) + ns(e["dur"])) for e in a[2]}
    for e in b[4]:  # the array's merged spans stay inside their GEMM
        lo, hi = gemm_of[e["name"]]
        assert lo <= ns(e["ts"]) and ns(e["ts"]) + ns(e["dur"]) <= hi
    # a cap too small for even one span per GEMM and track: as merged as it gets, and said so
    tiny = chrome_trace(res, max_events=10)
    assert tiny["otherData"]["events"] == len(tiny["traceEvents"]) > 10
    _, c = check_schema(tiny)
    for tid in (3, 4, 5):
        assert sorted(e["name"] for e in c[tid]) == sorted({e["name"] for e in a[tid]
                                                           if e["cat"] != "stall"})


def test_same_run_same_bytes(tmp_path):
    arch = small_arch()
    layers = get_model("lenet5").layers
    paths = []
    for i in range(2):
        res = simulate(layers, 2, arch, "is", "train", "modeled", timeline=True)
        paths.append(write_chrome_trace(chrome_trace(res, max_events=400),
                                        tmp_path / f"{i}.json"))
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_a_run_without_a_log_is_refused():
    res = simulate(get_model("mlp3").layers, 2, small_arch(), "os", "fwd", "ideal")
    with pytest.raises(ValueError, match="timeline=True"):
        chrome_trace(res)
