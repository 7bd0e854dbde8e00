"""Closed forms and a small event model that reproduce SCALE-Sim 3.0.0's dense CALC-mode numbers.

SCALE-Sim (``scalesim`` 3.0.0, ``InterfaceBandwidth: CALC``, batch 1, 1-byte words) reports per
layer ``Total Cycles`` and ``Total Cycles (incl. prefetch)``. This module gives both, plus the SRAM
access counts, without running its cycle-by-cycle Python loop. Notation: GEMM ``M×K · K×N``
(a conv has ``M`` = output pixels per filter, ``K`` = window size, ``N`` = filters), array ``R``
rows × ``C`` cols.

``Total Cycles`` (:func:`dense_cycles`)
    ``folds · cycles_per_fold − 1``: the 0-based index of the last row of the concatenated
    demand matrices (``double_buffered_scratchpad_mem.service_memory_requests`` keeps the serviced
    cycle of the last OFMAP demand row; stalls are 0 in CALC).

``Total Cycles (incl. prefetch)`` (:func:`prefetch_cycles`)
    ``single_layer_sim.calc_report_data`` sets it to ``DRAM OFMAP stop cycle −
    min(DRAM IFMAP start cycle, DRAM Filter start cycle)``, with no ``+1``.
    We therefore write it as ``fill + Total Cycles + drain`` with

    * ``fill = −min(IFMAP start, Filter start)``: how many cycles before cycle 0 the first DRAM read
      is issued (the initial SRAM fill), and
    * ``drain = OFMAP stop − Total Cycles``: how many cycles after the last compute cycle the last
      OFMAP line is written to DRAM.

    (So the ``fill + (Total Cycles + 1) + drain`` split one might expect is off by one: the report
    counts from the first fill cycle to the last write cycle without counting both ends.)

How the fill is computed (``memory/read_buffer_estimate_bw.py``, class ``ReadBufferEstimateBw``)
    In CALC mode ``single_layer_sim.run`` builds the IFMAP and Filter read buffers in "estimate
    bandwidth" mode with a DRAM rate of **10 words/cycle, hard-coded** (the config's ``Bandwidth``
    key is not read in CALC; our ``bandwidth_words`` argument is that constant), a DRAM read latency
    of 1 (``read_port``) and half of the SRAM as the active buffer. The buffer never stalls; it only
    tracks the *new* addresses it sees, in sets of ``floor(words/100)`` addresses, 50 sets per half
    buffer. Its first DRAM prefetch (which gives the ``DRAM … Start Cycle``) is placed in one of two
    ways (``manage_prefetches`` vs ``complete_all_prefetches``):

    * the operand has fewer than ``50·floor(words/100)`` distinct addresses (it fits in half the
      SRAM): the whole operand is prefetched at the end of the run, back-dated so that it ends just
      before cycle 0: ``start = −ceil(ceil(U/set)·set / 10)`` (``U`` distinct addresses, whole sets
      counted);
    * otherwise the 50th set closes during the run and the first half-buffer is back-dated to end
      just before the operand's first demand cycle ``t0``: ``start = t0 − ceil(50·set / 10)``.

    ``U`` is ``M·K`` (GEMM IFMAP), ``K·N`` (Filter) or the number of IFMAP pixels a conv's windows
    touch (pass ``ifmap_unique_words``). ``t0`` follows from the demand-matrix layout in
    ``compute/systolic_compute_{os,ws,is}.py``: OS 0/0 (IFMAP/Filter); WS ``R`` / ``R − min(R, K)``
    (the first weight fold is flipped, so its unused rows come first); IS ``R − min(R, K)`` / ``R``.

How the drain is computed (``memory/write_buffer.py``, class ``write_buffer``)
    The OFMAP buffer packs every write into lines of ``C`` words (the CALC drain rate is ``C``
    words/cycle, one line per cycle, write latency 0). Once more than the active half
    (``ceil(words/2)``) is occupied, at the first write at or after the end of the previous drain
    (``service_writes``), it force-closes the current (possibly partial) line and drains the next
    ``ceil((words − ceil(words/2))/C)`` lines starting at that cycle (``empty_drain_buf``); freed
    space is ``lines·C`` minus the empty slots of the *last* drained line only, so partial lines in
    the middle of a drain count as full (this is why ``DRAM OFMAP Writes`` exceeds the SRAM
    writes). After the last compute cycle ``T``, ``empty_all_buffers(T)`` writes the remaining
    lines one per cycle from cycle ``T`` on. The OFMAP stop cycle is the latest of these drain
    cycles. This depends only on how many OFMAP writes happen in each cycle, which follows from
    the demand matrices: per fold, array column ``c < cols_used`` writes during ``L`` consecutive
    cycles starting at ``a + c``, with (OS) ``a = K − 1 + R − rows_used, L = rows_used``, (WS)
    ``a = 2R − 1, L = M``, (IS) ``a = 2R − 1, L = N``, the array-column fold being the outer
    loop. There is no closed form for the whole drain sequence (each drain's start depends on the
    previous one's end), so we replay the buffer's rule on the cumulative write count (closed
    form per fold, binary search for its inverse), one step per drain: exact, O(folds) memory,
    O(drains · log) time (0.2 s for a 924 M-write GEMM). If a write found the OFMAP buffer full
    during a drain, SCALE-Sim would stall even in CALC; with its fixed half/half split we never
    saw it (not even with 2×512 arrays on 1 KiB), and we raise ``NotImplementedError`` rather
    than model it.

Measured (tests/simulator/test_scalesim_compat.py has the live differential runs): both columns,
plus ``DRAM OFMAP Writes``, exact on every run compared: 30 golden GEMM rows (32²/128², 64 KiB),
241 of our own GEMM/conv runs (arrays 2×512 to 16×4, SRAMs 1–64 KiB, K < R, N < C, odd
sizes, operands on either side of the half-SRAM threshold, Bandwidth 3/10/50), and the
whole-network sums of ResNet-18 (6 array × dataflow runs) in the project's SCALE-Sim notes (§5.3).
Sparsity: SCALE-Sim's layer-wise N:M (``[sparsity] SparsitySupport: true``, ``OptimizedMapping:
false``) is a dense GEMM on the condensed K' (end of this module). Not covered: its row-wise
``OptimizedMapping: true``, USER bandwidth mode, custom layouts, Ramulator traces.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from common.vocab import DATAFLOWS

CALC_READ_BANDWIDTH = 10  # words/cycle, hard-coded in single_layer_sim.run for CALC mode
_ACTIVE_SETS = 50  # int(0.5 * 100): sets per half buffer in ReadBufferEstimateBw
_SETS_PER_BUFFER = 100


def _check(M: int, K: int, N: int, rows: int, cols: int, dataflow: str) -> str:
    for name, v in (("M", M), ("K", K), ("N", N), ("rows", rows), ("cols", cols)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    df = str(dataflow).lower()
    if df not in DATAFLOWS:
        raise ValueError(f"dataflow: expected one of os, ws, is, got {dataflow!r}")
    return df


def _folds(M: int, K: int, N: int, rows: int, cols: int, df: str) -> tuple[int, int]:
    """(number of folds, cycles per fold) of SCALE-Sim's serialized fold schedule."""
    if df == "os":
        return math.ceil(M / rows) * math.ceil(N / cols), K + rows + cols - 2
    if df == "ws":
        return math.ceil(K / rows) * math.ceil(N / cols), 2 * rows + cols + M - 2
    return math.ceil(K / rows) * math.ceil(M / cols), 2 * rows + cols + N - 2


def dense_cycles(M: int, K: int, N: int, rows: int, cols: int, dataflow: str) -> int:
    """SCALE-Sim's ``Total Cycles`` (stall-free): ``folds · cycles_per_fold − 1``."""
    df = _check(M, K, N, rows, cols, dataflow)
    folds, per_fold = _folds(M, K, N, rows, cols, df)
    return folds * per_fold - 1


def sram_accesses(M: int, K: int, N: int, rows: int, cols: int, dataflow: str) -> dict[str, int]:
    """SCALE-Sim's SRAM access counts: keys ``ifmap_reads``, ``filter_reads``, ``ofmap_writes``.

    These are its counters, not the demand matrices: OS adds ``rows + cols`` phantom OFMAP writes
    per fold (``systolic_compute_os.create_ofmap_demand_mat``), and WS/IS write every K-fold's
    partial sums.
    """
    df = _check(M, K, N, rows, cols, dataflow)
    folds, _ = _folds(M, K, N, rows, cols, df)
    if df == "os":
        return {"ifmap_reads": math.ceil(N / cols) * M * K,
                "filter_reads": math.ceil(M / rows) * K * N,
                "ofmap_writes": M * N + folds * (rows + cols)}
    if df == "ws":
        return {"ifmap_reads": math.ceil(N / cols) * M * K, "filter_reads": K * N,
                "ofmap_writes": math.ceil(K / rows) * M * N}
    return {"ifmap_reads": K * M, "filter_reads": math.ceil(M / cols) * K * N,
            "ofmap_writes": math.ceil(K / rows) * M * N}


def _first_demand_cycles(K: int, rows: int, df: str) -> tuple[int, int]:
    """Cycle of the first IFMAP and the first Filter SRAM request (``t0`` in the docstring)."""
    if df == "os":
        return 0, 0
    flipped = rows - min(rows, K)
    return (rows, flipped) if df == "ws" else (flipped, rows)


def _fill_start(unique: int, first_demand: int, sram_words: int, bandwidth: int) -> int:
    """``DRAM … Start Cycle`` of one read buffer (see the module docstring)."""
    per_set = sram_words // _SETS_PER_BUFFER
    if per_set < 1:
        raise ValueError(f"SRAM of {sram_words} words: SCALE-Sim needs at least 100 words")
    if unique < _ACTIVE_SETS * per_set:
        return -math.ceil(math.ceil(unique / per_set) * per_set / bandwidth)
    return first_demand - math.ceil((_SETS_PER_BUFFER - _ACTIVE_SETS) * per_set / bandwidth)


class _OfmapWrites:
    """When the OFMAP SRAM writes happen: cumulative count and its inverse, no per-cycle arrays.

    Per fold, array column ``c < cu`` writes once per cycle during ``[a + c, a + c + L)``
    (fold-local cycles; see the module docstring), so the writes up to fold-local cycle ``t`` are
    ``ramp(t − a) − ramp(t − a − L)`` with ``ramp(x) = Σ_{y=0..x} min(y + 1, cu)``.
    """

    def __init__(self, M: int, K: int, N: int, rows: int, cols: int, df: str) -> None:
        self.folds, self.per_fold = _folds(M, K, N, rows, cols, df)
        if df == "os":  # fc over N (array cols) outside, fr over M (array rows) inside
            outer, inner = N, M
        elif df == "ws":  # fc over N, fr over K
            outer, inner = N, K
        else:  # fc over M, fr over K
            outer, inner = M, K
        n_out, n_in = math.ceil(outer / cols), math.ceil(inner / rows)
        fc = np.repeat(np.arange(n_out, dtype=np.int64), n_in)
        fr = np.tile(np.arange(n_in, dtype=np.int64), n_out)
        self.cu = np.minimum(cols, outer - fc * cols)
        if df == "os":
            ru = np.minimum(rows, inner - fr * rows)
            self.a = K - 1 + rows - ru
            self.length = ru
        else:
            self.a = np.full(self.folds, 2 * rows - 1, dtype=np.int64)
            self.length = np.full(self.folds, M if df == "ws" else N, dtype=np.int64)
        self.ends = np.cumsum(self.cu * self.length)  # writes up to the end of each fold
        self.total = int(self.ends[-1])

    @staticmethod
    def _ramp(x: int, cu: int) -> int:
        if x < 0:
            return 0
        if x < cu:
            return (x + 1) * (x + 2) // 2
        return cu * (cu + 1) // 2 + (x - cu + 1) * cu

    def _in_fold(self, f: int, t: int) -> int:
        a, length, cu = int(self.a[f]), int(self.length[f]), int(self.cu[f])
        return self._ramp(t - a, cu) - self._ramp(t - a - length, cu)

    def upto(self, cycle: int) -> int:
        """Writes in cycles ``0..cycle`` (inclusive)."""
        if cycle < 0:
            return 0
        f, t = divmod(cycle, self.per_fold)
        if f >= self.folds:
            return self.total
        return (int(self.ends[f - 1]) if f else 0) + self._in_fold(f, t)

    def cycle_of(self, w: int) -> int:
        """Cycle of the ``w``-th write (1-based, ``w <= total``)."""
        f = int(np.searchsorted(self.ends, w))  # first fold whose end count reaches w
        r = w - (int(self.ends[f - 1]) if f else 0)
        lo, hi = 0, self.per_fold - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self._in_fold(f, mid) >= r:
                hi = mid
            else:
                lo = mid + 1
        return f * self.per_fold + lo


def _ofmap_drain(writes: _OfmapWrites, last_cycle: int, cols: int,
                 sram_words: int) -> tuple[int, int]:
    """Replay ``write_buffer``: (DRAM OFMAP stop cycle, DRAM OFMAP writes)."""
    total = writes.total
    active = math.ceil(sram_words * 0.5)
    drain_size = sram_words - active
    lines_per_drain = math.ceil(drain_size / cols)
    seg_end_line: list[int] = []  # cumulative line count at the end of each closed segment
    seg_last_fill: list[int] = []  # words in the last line of each segment
    seg_start = 0  # write count at which the open segment began
    lines = 0
    start_line = 0
    freed = 0
    drain_end = 0
    stop = None
    dram_writes = 0

    def close_segment(upto: int) -> None:
        nonlocal seg_start, lines
        n = upto - seg_start
        if n > 0:
            k = math.ceil(n / cols)
            lines += k
            seg_end_line.append(lines)
            seg_last_fill.append(n - (k - 1) * cols)
        seg_start = upto

    def line_fill(idx: int) -> int:
        j = bisect.bisect_right(seg_end_line, idx)
        return seg_last_fill[j] if seg_end_line[j] == idx + 1 else cols

    def drain(cycle: int, n_lines_max: int) -> int:
        nonlocal start_line, freed, dram_writes, stop
        end_line = min(start_line + n_lines_max, lines)
        n = end_line - start_line
        data = n * cols - (cols - line_fill(end_line - 1))
        freed += data
        dram_writes += data
        start_line = end_line
        end = cycle + n - 1
        stop = end if stop is None else max(stop, end)
        return end

    while True:
        w_space = sram_words - active + freed + 1  # first write that leaves < active words free
        done = writes.upto(drain_end - 1)  # writes before the end of the last drain
        if sram_words + freed <= done:  # one of them found no free space
            raise NotImplementedError("the OFMAP SRAM fills up during a drain (SCALE-Sim stalls)")
        w = max(w_space, done + 1)
        if w > total:
            break
        cycle = writes.cycle_of(w)
        close_segment(w)
        drain_end = drain(cycle, lines_per_drain)
    close_segment(total)
    cycle = last_cycle
    while start_line < lines:
        cycle = drain(cycle, lines_per_drain) + 1
    return int(stop), dram_writes


def prefetch_cycles(M: int, K: int, N: int, rows: int, cols: int, dataflow: str,
                    ifmap_sram_words: int, filter_sram_words: int, ofmap_sram_words: int,
                    bandwidth_words: int = CALC_READ_BANDWIDTH, *,
                    ifmap_unique_words: int | None = None) -> tuple[int, int]:
    """(fill, drain) with ``Total Cycles (incl. prefetch) == fill + Total Cycles + drain``.

    ``fill``: cycles before cycle 0 at which the first IFMAP/Filter DRAM read is issued;
    ``drain``: cycles after the last compute cycle (``Total Cycles``) at which the last OFMAP DRAM
    write happens. SRAM sizes are in words (1-byte words: ``kB · 1024``). ``bandwidth_words`` is
    SCALE-Sim's hard-coded CALC read rate (10), not the config's ``Bandwidth``.
    ``ifmap_unique_words``: distinct IFMAP addresses (default ``M·K``, right for GEMMs; a conv's
    windows overlap, see :func:`conv_ifmap_unique_words`).
    """
    df = _check(M, K, N, rows, cols, dataflow)
    for name, v in (("ifmap_sram_words", ifmap_sram_words),
                    ("filter_sram_words", filter_sram_words),
                    ("ofmap_sram_words", ofmap_sram_words), ("bandwidth_words", bandwidth_words)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    u_if = M * K if ifmap_unique_words is None else int(ifmap_unique_words)
    t_if, t_fl = _first_demand_cycles(K, rows, df)
    start = min(_fill_start(u_if, t_if, ifmap_sram_words, bandwidth_words),
                _fill_start(K * N, t_fl, filter_sram_words, bandwidth_words))
    last = dense_cycles(M, K, N, rows, cols, df)
    stop, _ = _ofmap_drain(_OfmapWrites(M, K, N, rows, cols, df), last, cols, ofmap_sram_words)
    return -start, stop - last


def total_cycles_incl_prefetch(M: int, K: int, N: int, rows: int, cols: int, dataflow: str,
                               ifmap_sram_words: int, filter_sram_words: int,
                               ofmap_sram_words: int, bandwidth_words: int = CALC_READ_BANDWIDTH,
                               *, ifmap_unique_words: int | None = None) -> int:
    """SCALE-Sim's ``Total Cycles (incl. prefetch)`` in CALC mode."""
    fill, drain = prefetch_cycles(M, K, N, rows, cols, dataflow, ifmap_sram_words,
                                  filter_sram_words, ofmap_sram_words, bandwidth_words,
                                  ifmap_unique_words=ifmap_unique_words)
    return fill + dense_cycles(M, K, N, rows, cols, dataflow) + drain


def dram_ofmap_writes(M: int, K: int, N: int, rows: int, cols: int, dataflow: str,
                      ofmap_sram_words: int) -> int:
    """SCALE-Sim's ``DRAM OFMAP Writes`` in CALC mode (partial lines inside a drain count full)."""
    df = _check(M, K, N, rows, cols, dataflow)
    _, writes = _ofmap_drain(_OfmapWrites(M, K, N, rows, cols, df),
                             dense_cycles(M, K, N, rows, cols, df), cols, ofmap_sram_words)
    return writes


def conv_ifmap_unique_words(ifmap_h: int, ifmap_w: int, filter_h: int, filter_w: int,
                            channels: int, stride: int,
                            nm: tuple[int, int] | None = None) -> int:
    """Distinct IFMAP addresses a SCALE-Sim conv reads (no padding; ``E = ceil((H−R+s)/s)``).

    ``nm``: SCALE-Sim's layer-wise sparsity (``nm_window_mask``): only the window positions the
    mask keeps are read (``operand_matrix.create_ifmap_matrix`` drops the other columns)."""

    def touched(size: int, k: int) -> int:
        out = math.ceil((size - k + stride) / stride)
        if stride <= k:
            return min(size, (out - 1) * stride + k)
        # a window may start past the edge (stride > k): all its addresses are -1
        return sum(max(0, min(k, size - i * stride)) for i in range(out))

    if nm is None or nm[0] >= nm[1]:
        return touched(ifmap_h, filter_h) * touched(ifmap_w, filter_w) * channels
    eh = math.ceil((ifmap_h - filter_h + stride) / stride)
    ew = math.ceil((ifmap_w - filter_w + stride) / stride)
    # window index j = (r·S + q)·C + ch (channel fastest); kept when j % m < n, so channels
    # ch and ch + m keep the same (r, q): one bitmap of the IFMAP plane per class ch % m
    kept = nm_window_mask(filter_h * filter_w * channels, *nm).reshape(
        filter_h, filter_w, channels)
    total = 0
    for cls in range(min(channels, nm[1])):
        plane = np.zeros((ifmap_h, ifmap_w), dtype=bool)
        for r, q in zip(*np.nonzero(kept[:, :, cls]), strict=True):
            # the window rows/cols past the IFMAP edge are -1 (not read) in SCALE-Sim
            plane[r: min(ifmap_h, r + (eh - 1) * stride + 1): stride,
                  q: min(ifmap_w, q + (ew - 1) * stride + 1): stride] = True
        total += int(plane.sum()) * len(range(cls, channels, nm[1]))
    return total


# ---- SCALE-Sim's layer-wise sparsity ([sparsity] SparsitySupport: true) ------------------------
#
# With ``OptimizedMapping: false`` SCALE-Sim gives every filter the same fixed pattern along K:
# the first N of every M window positions kept (``operand_matrix.create_filter_matrix``), the
# filter condensed to K' rows and the matching IFMAP columns dropped (``create_ifmap_matrix``).
# The layer then runs as a dense GEMM M × K' × N; every figure above holds with K' for K
# (IFMAP distinct addresses: ``conv_ifmap_unique_words(..., nm=)``), except that ``ws`` counts
# each IFMAP SRAM read M/N times (``systolic_compute_ws.create_ifmap_demand_mat``: a block of
# the input is shared by M/N array rows, no broadcast assumed) and reports the count as a float.


def nm_window_mask(K: int, n: int, m: int) -> np.ndarray:
    """SCALE-Sim's layer-wise N:M pattern over K window positions: the first ``n`` of every
    ``m`` kept (bool, length ``K``)."""
    return np.arange(K) % m < n


def nm_condensed_k(K: int, n: int, m: int) -> int:
    """K' of SCALE-Sim's condensed filter: ``n`` per whole group of ``m``, ``min(n, K % m)`` for
    a last, narrower group (its trailing all-zero rows are dropped)."""
    return (K // m) * n + min(n, K % m)


def sparse_sram_accesses(M: int, K: int, N: int, rows: int, cols: int, dataflow: str,
                         nm: tuple[int, int]) -> dict[str, float]:
    """SCALE-Sim's SRAM access counts of a layer-wise N:M layer (``K``: the dense K): those of
    the condensed GEMM, with ``ws``'s IFMAP reads multiplied by M/N (a float, as it reports
    them)."""
    n, m = nm
    out: dict[str, float] = dict(sram_accesses(M, nm_condensed_k(K, n, m), N, rows, cols,
                                               dataflow))
    if str(dataflow).lower() == "ws":
        out["ifmap_reads"] = out["ifmap_reads"] * (m / n)
    return out


def topology_nm_inputs(layers, nm_sparsity, features) -> tuple[dict, dict]:
    """What ``simulator.run.simulate`` needs to run a topology's Sparsity column on our N:M
    feature as SCALE-Sim's layer-wise sparsity runs it: ``(masks, layer_features)``.

    Each layer whose ratio is N:M with N < M gets a filter mask holding N of every M weights
    along the forward GEMM's K (the first N, as SCALE-Sim keeps them; our K runs channel-major,
    SCALE-Sim's channel-fastest, which leaves the count of kept weights K' the same) and the
    features ``features`` with ``nm = (N, M)``: the array runs the condensed M × K' × N GEMM.
    N = M, or no ratio: dense, no mask. ``layers`` and ``nm_sparsity`` as in
    ``traces.topology.Topology``."""
    from dataclasses import replace

    from dataflows.gemm import lower

    masks: dict = {}
    layer_features: dict = {}
    for layer, text in zip(layers, nm_sparsity, strict=True):
        if text is None:
            continue
        n, m = (int(x) for x in text.split(":"))
        if n >= m:
            continue
        shape = layer.operand_shape("filter", 1)
        k = lower(layer, 1, "fwd").K  # per group; the filter is (out, K) row-major
        mask = np.broadcast_to(nm_window_mask(k, n, m), (shape[0], k)).reshape(shape).copy()
        masks[layer.name] = {"filter": mask}
        layer_features[layer.name] = replace(features, nm=(n, m))
    return masks, layer_features


def topology_run_inputs(topology, arch, arch_arg, memory: str) -> tuple[tuple, dict, dict,
                                                                        list[str]]:
    """How ``sparsesim simulate`` runs a SCALE-Sim topology on ``arch`` (``arch_arg``: what
    ``--arch`` named): ``(layers, masks, layer_features, notes)`` for ``simulate``.

    * ``memory == "ideal"`` (SCALE-Sim's model): depthwise (``DP``) rows split per channel, as
      SCALE-Sim runs them (``traces.topology.per_channel``), so every row is one of its
      layers; ``modeled`` (our own model) keeps one grouped GEMM per row.
    * The Sparsity column is applied when ``arch_arg`` is a SCALE-Sim ``.cfg`` with
      ``[sparsity] SparsitySupport: true`` (``topology_nm_inputs``); otherwise it is not, as in
      SCALE-Sim, and a note says so.
    """
    from pathlib import Path

    from simulator.scalesim_cfg import read_scalesim_sparsity
    from traces.topology import per_channel

    notes: list[str] = []
    topo = per_channel(topology) if memory == "ideal" else topology
    split = len(topo.layers) - len(topology.layers)
    if memory == "ideal" and split:
        rows = sum(1 for la in topology.layers
                   if la.kind == "conv2d" and "DP" in la.extra.get("scalesim_name", la.name))
        notes.append(f"{rows} depthwise (DP) row(s) run as SCALE-Sim runs them, one layer per "
                     f"channel ({len(topo.layers)} layers in all; --memory modeled runs each as "
                     "one grouped GEMM)")
    masks: dict = {}
    features: dict = {}
    if any(nm is not None for nm in topo.nm_sparsity):
        path = Path(str(arch_arg))
        sparsity = read_scalesim_sparsity(path) if path.suffix.lower() == ".cfg" else None
        if sparsity is not None and sparsity.support:
            masks, features = topology_nm_inputs(topo.layers, topo.nm_sparsity, arch.features)
        else:
            why = ("its [sparsity] SparsitySupport is not true" if sparsity is not None
                   else "it is not a SCALE-Sim .cfg")
            notes.append(f"the topology's Sparsity column is not applied: --arch {arch_arg} "
                         f"does not enable it ({why}); the weights run dense, as SCALE-Sim "
                         "runs them without SparsitySupport: true")
    return topo.layers, masks, features, notes
