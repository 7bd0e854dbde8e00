"""simulator.scalesim_compat against SCALE-Sim 3.0.0 (CALC mode): live runs and the golden table."""

from __future__ import annotations

import contextlib
import csv
import functools
import importlib.util
import io
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from simulator.scalesim_compat import (
    _OfmapWrites,
    conv_ifmap_unique_words,
    dense_cycles,
    dram_ofmap_writes,
    nm_condensed_k,
    nm_window_mask,
    prefetch_cycles,
    sram_accesses,
    total_cycles_incl_prefetch,
)

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"
GOLDEN = GOLDEN_DIR / "scalesim_golden.csv"
KIB = 1024

# --------------------------------------------------------------------------------------------------
# Measured with scalesim 3.0.0 (numpy 2.3.5), CALC, 64 KiB SRAMs, so these run without scalesim:
# (M, N, K, array, dataflow, Total Cycles, Total Cycles (incl. prefetch), DRAM OFMAP Writes)
MEASURED = [
    (64, 64, 64, 32, "is", 631, 1345, 8192),
    (256, 128, 512, 32, "ws", 22399, 26698, 524319),
    (1000, 512, 64, 32, "os", 64511, 68426, 512031),
    (49, 512, 4608, 128, "is", 32183, 35602, 903295),
    (100, 37, 77, 128, "ws", 481, 1295, 3700),
    (100, 37, 77, 32, "os", 1111, 2012, 3700),
]


@pytest.mark.parametrize("M,N,K,a,df,total,incl,dram_of", MEASURED)
def test_measured_rows(M, N, K, a, df, total, incl, dram_of):
    words = 64 * KIB
    assert dense_cycles(M, K, N, a, a, df) == total
    fill, drain = prefetch_cycles(M, K, N, a, a, df, words, words, words)
    assert fill + total + drain == incl
    assert total_cycles_incl_prefetch(M, K, N, a, a, df, words, words, words) == incl
    assert dram_ofmap_writes(M, K, N, a, a, df, words) == dram_of


def test_fill_threshold_depends_on_distinct_addresses():
    # WS: the IFMAP is first read at cycle R. 499 distinct words fit in half of a 1 KiB SRAM (50
    # sets of 10), so they are fetched before cycle 0; 500 close the 50th set during the run and
    # the first half-buffer is back-dated from cycle R = 8 instead (measured: 632 vs 625).
    assert total_cycles_incl_prefetch(499, 1, 1, 8, 8, "ws", KIB, KIB, KIB) == 632
    assert total_cycles_incl_prefetch(500, 1, 1, 8, 8, "ws", KIB, KIB, KIB) == 625


def test_bad_input():
    with pytest.raises(ValueError, match="dataflow"):
        dense_cycles(4, 4, 4, 8, 8, "rs")
    with pytest.raises(ValueError, match="M"):
        sram_accesses(0, 4, 4, 8, 8, "os")
    with pytest.raises(ValueError, match="100 words"):
        prefetch_cycles(4, 4, 4, 8, 8, "os", 99, 1024, 1024)


# --------------------------------------------------------------------------------------------------
# A slow, obvious reference for the OFMAP write buffer: per-cycle write counts built column by
# column, then every write replayed one by one through write_buffer's rules.


def _ref_writes_per_cycle(M, K, N, rows, cols, df):
    if df == "os":  # column c of a fold writes rows_used results, the last at K - 1 + rows - 1 + c
        per_fold, outer, inner = K + rows + cols - 2, N, M
    else:  # column c writes one result per cycle for M (ws) or N (is) cycles from 2R - 1 + c
        per_fold = 2 * rows + cols + (M if df == "ws" else N) - 2
        outer, inner = (N, K) if df == "ws" else (M, K)
    out = []
    for fc in range(math.ceil(outer / cols)):
        for fr in range(math.ceil(inner / rows)):
            f = np.zeros(per_fold, dtype=np.int64)
            for c in range(min(cols, outer - fc * cols)):
                if df == "os":
                    used = min(rows, M - fr * rows)
                    f[K - 1 + rows - used + c: K - 1 + rows + c] += 1
                else:
                    f[2 * rows - 1 + c: per_fold - cols + 1 + c] += 1
            out.append(f)
    return np.concatenate(out)


def _ref_drain(counts, last_cycle, cols, words):
    """(last DRAM write cycle, DRAM writes) of write_buffer, replayed write by write."""
    active = math.ceil(words * 0.5)
    per_drain = math.ceil((words - active) / cols)
    lines, fill = [], 0  # words in each closed line; in the open one
    state = {"free": words, "next": 0, "dram": 0, "last": -1}

    def close_line():
        nonlocal fill
        if fill:
            lines.append(fill)
            fill = 0

    def drain(cycle):  # one half-buffer's worth of lines, one line per cycle; returns its end
        first, end = state["next"], min(state["next"] + per_drain, len(lines))
        data = (end - first) * cols - (cols - lines[end - 1])  # only the last line is trimmed
        state["free"] += data
        state["dram"] += data
        state["next"] = end
        state["last"] = max(state["last"], cycle + end - first - 1)
        return cycle + end - first - 1

    drain_end = 0
    for cycle, n in enumerate(counts):
        for _ in range(int(n)):
            fill += 1
            state["free"] -= 1
            if fill == cols:
                close_line()
            if cycle < drain_end:
                assert state["free"] > 0, "SCALE-Sim would stall here"
            elif state["free"] < active:
                close_line()
                drain_end = drain(cycle)
    close_line()
    cycle = last_cycle
    while state["next"] < len(lines):
        cycle = drain(cycle) + 1
    return state["last"], state["dram"]


@settings(deadline=None, max_examples=60)
@given(M=st.integers(1, 60), K=st.integers(1, 60), N=st.integers(1, 60),
       rows=st.integers(1, 9), cols=st.integers(1, 9), df=st.sampled_from(["os", "ws", "is"]),
       words=st.integers(100, 700))
def test_write_model_matches_slow_reference(M, K, N, rows, cols, df, words):
    counts = _ref_writes_per_cycle(M, K, N, rows, cols, df)
    fast = _OfmapWrites(M, K, N, rows, cols, df)
    assert fast.total == counts.sum()
    cum = np.cumsum(counts)
    for t in (0, len(counts) // 3, len(counts) - 1, len(counts) + 5):
        assert fast.upto(t) == cum[min(t, len(cum) - 1)]
    for w in {1, fast.total // 2 + 1, fast.total}:
        assert fast.cycle_of(w) == int(np.searchsorted(cum, w))
    last = dense_cycles(M, K, N, rows, cols, df)
    assert len(counts) == last + 1
    stop, dram = _ref_drain(counts, last, cols, words)
    _, drain = prefetch_cycles(M, K, N, rows, cols, df, KIB, KIB, words)
    assert drain == stop - last
    assert dram_ofmap_writes(M, K, N, rows, cols, df, words) == dram


# --------------------------------------------------------------------------------------------------
# Live differential runs of scalesim (skipped when it is not installed).

from tests.scalesim_cfg import CFG  # noqa: E402

# (M, N, K): odd sizes, K < R, N < C, one operand larger than half an SRAM; the last two make the
# fill depend on the first demand cycle R - K of the flipped first fold (WS filter, IS IFMAP)
LIVE_GEMMS = [(7, 5, 3), (13, 40, 9), (33, 17, 70), (64, 64, 64), (100, 37, 77), (20, 1, 25),
              (30, 120, 9), (100, 10, 9)]
# (H, W, R, S, C, N, stride): overlapping windows, and stride > kernel (untouched IFMAP pixels)
LIVE_CONVS = [(10, 10, 3, 3, 4, 8, 1), (11, 12, 3, 2, 3, 5, 2), (9, 9, 1, 1, 16, 20, 3)]
# array, SRAM KiB (ifmap, filter, ofmap): everything fits / nothing fits and the OFMAP drains
LIVE_CONFIGS = [((8, 8), (64, 64, 64)), ((16, 16), (1, 2, 1))]


def _read_report(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    head = [h.strip() for h in rows[0] if h.strip()]
    return [dict(zip(head, [v.strip() for v in r], strict=False)) for r in rows[1:] if r]


def _run_scalesim(tmp: Path, run: str, rows: int, cols: int, df: str, kb, layers, conv: bool):
    pytest.importorskip("scalesim")
    from scalesim.scale_sim import scalesim

    cfg = tmp / f"{run}.cfg"
    cfg.write_text(CFG.format(run=run, rows=rows, cols=cols, df=df, ifmap=kb[0], filt=kb[1],
                              ofmap=kb[2], bw=10))
    topo = tmp / f"{run}.csv"
    head = ("Layer, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, "
            "Strides," if conv else "Layer, M, N, K,")
    topo.write_text(head + "\n" + "".join(f"L{i}," + ",".join(map(str, la)) + ",\n"
                                          for i, la in enumerate(layers)))
    with contextlib.redirect_stdout(io.StringIO()):
        scalesim(save_disk_space=True, verbose=False, config=str(cfg), topology=str(topo),
                 layout=str(topo), input_type_gemm=not conv).run_scale(top_path=str(tmp))
    merged: dict[str, dict[str, str]] = {}
    for name in ("COMPUTE_REPORT.csv", "DETAILED_ACCESS_REPORT.csv"):
        for row in _read_report(tmp / run / name):
            merged.setdefault(row["LayerID"], {}).update(row)
    return [merged[str(i)] for i in range(len(layers))]


def _check_row(report: dict[str, str], M, K, N, rows, cols, df, kb, unique=None):
    def got(column: str) -> int:
        return int(float(report[column]))

    words = [k * KIB for k in kb]
    where = f"{df} {rows}x{cols} kb={kb} M,K,N={M},{K},{N}"
    assert got("Stall Cycles") == 0, where
    total = dense_cycles(M, K, N, rows, cols, df)
    assert total == got("Total Cycles"), where
    fill, drain = prefetch_cycles(M, K, N, rows, cols, df, *words, ifmap_unique_words=unique)
    assert fill + total + drain == got("Total Cycles (incl. prefetch)"), where
    assert -fill == min(got("DRAM IFMAP Start Cycle"), got("DRAM Filter Start Cycle")), where
    assert total + drain == got("DRAM OFMAP Stop Cycle"), where
    acc = sram_accesses(M, K, N, rows, cols, df)
    assert acc["ifmap_reads"] == got("SRAM IFMAP Reads"), where
    assert acc["filter_reads"] == got("SRAM Filter Reads"), where
    assert acc["ofmap_writes"] == got("SRAM OFMAP Writes"), where
    assert dram_ofmap_writes(M, K, N, rows, cols, df, words[2]) == got("DRAM OFMAP Writes"), where


@pytest.mark.parametrize("config", LIVE_CONFIGS, ids=lambda c: f"{c[0][0]}x{c[0][1]}-{c[1]}")
@pytest.mark.parametrize("df", ["os", "ws", "is"])
def test_live_gemms(tmp_path, config, df):
    (rows, cols), kb = config
    got = _run_scalesim(tmp_path, f"g_{df}", rows, cols, df, kb, LIVE_GEMMS, conv=False)
    for (M, N, K), g in zip(LIVE_GEMMS, got, strict=True):
        _check_row(g, M, K, N, rows, cols, df, kb)


@pytest.mark.parametrize("df", ["os", "ws", "is"])
def test_live_convs(tmp_path, df):
    kb = (1, 1, 1)
    got = _run_scalesim(tmp_path, f"c_{df}", 8, 8, df, kb, LIVE_CONVS, conv=True)
    for (H, W, R, S, C, N, s), g in zip(LIVE_CONVS, got, strict=True):
        E, F = math.ceil((H - R + s) / s), math.ceil((W - S + s) / s)
        unique = conv_ifmap_unique_words(H, W, R, S, C, s)
        _check_row(g, E * F, R * S * C, N, 8, 8, df, kb, unique)


# --------------------------------------------------------------------------------------------------
# The committed golden table (tests/golden/make_scalesim_golden.py), when present.


@functools.cache
def _golden_geometry() -> dict[tuple[str, str], tuple[int, int, int, int | None]]:
    """(network, layer) -> (M, K, N, distinct IFMAP words or None)."""
    spec = importlib.util.spec_from_file_location("make_scalesim_golden",
                                                  GOLDEN_DIR / "make_scalesim_golden.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    out = {("gemms", name): (m, k, n, None) for name, m, n, k in gen.GEMMS}
    from traces.models import get_model
    from traces.topology import _conv_row  # the generator writes its topology with this

    for layer in get_model("resnet18").layers:
        H, W, R, S, C, N, s = _conv_row(layer)
        E, F = math.ceil((H - R + s) / s), math.ceil((W - S + s) / s)
        out[("resnet18", layer.name)] = (E * F, R * S * C, N,
                                         conv_ifmap_unique_words(H, W, R, S, C, s))
    return out


def _golden_rows() -> list[dict[str, str]]:
    if not GOLDEN.exists():
        return []
    with open(GOLDEN, newline="") as f:
        return list(csv.DictReader(f))


GOLDEN_ROWS = _golden_rows()


@pytest.mark.parametrize(
    "row", GOLDEN_ROWS or [None],
    ids=[f"{r['network']}-{r['array']}-{r['dataflow']}-{r['Layer']}" for r in GOLDEN_ROWS]
    or ["absent"])
def test_golden_table(row):
    if row is None:
        pytest.skip(f"{GOLDEN} not generated yet")
    M, K, N, unique = _golden_geometry()[(row["network"], row["Layer"])]
    rows, cols = map(int, row["array"].split("x"))
    _check_row(row, M, K, N, rows, cols, row["dataflow"], (64, 64, 64), unique)


# --------------------------------------------------------------------------------------------------
# SCALE-Sim's layer-wise N:M: the window positions it keeps and the IFMAP addresses it reads
def _scalesim_sparse_ifmap(h, w, r, s, c, stride, n, m) -> np.ndarray:
    """SCALE-Sim's IFMAP operand matrix of a conv under layer-wise N:M, written out slowly from
    ``operand_matrix.calc_ifmap_elem_addr`` and ``create_ifmap_matrix``: one row per output
    pixel, one column per kept window position, -1 past the IFMAP edge."""
    eh, ew = math.ceil((h - r + stride) / stride), math.ceil((w - s + stride) / stride)
    rows = []
    for oy in range(eh):
        for ox in range(ew):
            row = []
            for j in range(r * s * c):
                if j % m >= n:  # the pattern: the first n of every m window positions
                    continue
                cr, k = divmod(j, s * c)
                cc, ch = divmod(k, c)
                y, x = oy * stride + cr, ox * stride + cc
                row.append((y * w + x) * c + ch if y < h and x < w else -1)
            rows.append(row)
    return np.array(rows)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), r=st.integers(1, 5), s=st.integers(1, 5),
       c=st.integers(1, 9), stride=st.integers(1, 4), m=st.integers(2, 9), data=st.data())
def test_sparse_conv_ifmap_addresses_match_slow_reference(h, w, r, s, c, stride, m, data):
    assume(r <= h and s <= w)
    n = data.draw(st.integers(1, m))
    mat = _scalesim_sparse_ifmap(h, w, r, s, c, stride, n, m)
    assert mat.shape[1] == nm_condensed_k(r * s * c, n, m)  # the filter's K' too
    unique = len(set(mat[mat >= 0].tolist()))
    assert conv_ifmap_unique_words(h, w, r, s, c, stride, (n, m)) == unique
    if n == m:
        assert unique == conv_ifmap_unique_words(h, w, r, s, c, stride)


def test_condensed_k_against_scalesims_filter_matrix():
    """K' and the kept positions against SCALE-Sim's own ``create_filter_matrix``."""
    om = pytest.importorskip("scalesim.compute.operand_matrix")
    for K, N, (n, m) in [(28, 12, (2, 4)), (5, 33, (3, 8)), (40, 16, (1, 4)), (9, 3, (3, 8)),
                         (7, 2, (2, 4)), (30, 20, (1, 4))]:
        mat = om.operand_matrix()
        mat.config = type("C", (), {"sparsity_support": True,
                                    "sparsity_optimized_mapping": False})()
        mat.conv_window_size, mat.num_filters = K, N
        mat.filter_rows, mat.filter_cols, mat.num_input_channels = 1, K, 1
        mat.filter_offset = 10_000_000
        mat.sparsity_ratio_N, mat.sparsity_ratio_M = n, m
        mat.params_set_flag = True
        assert mat.create_filter_matrix() == 0
        assert mat.filter_addr_matrix.shape == (nm_condensed_k(K, n, m), N)
        kept = np.flatnonzero(nm_window_mask(K, n, m))
        assert (mat.filter_addr_matrix[:, 0] - 10_000_000 == kept).all()
