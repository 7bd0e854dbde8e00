"""Run a network (a trace or a topology) on an architecture: lower, map, tile, simulate, tabulate.

``simulate(layers, batch, arch, dataflow, phases, memory)`` returns a ``Results`` with one row per
(layer, phase) GEMM. ``docs/metrics.md`` defines every column.

* ``memory="ideal"``: SCALE-Sim's stall-free model. Compute cycles are the closed form, stalls
  are zero, and ``Total Cycles (incl. prefetch)`` adds SCALE-Sim's initial fill and final drain.
* ``memory="modeled"``: the SimPy model (``simulator.engine``) over the DRAM timing model replays
  the tile schedule of every GEMM in training order; stalls are measured and split by cause.

Timeline. With ``timeline=True``, ``Results.events`` holds the run's event log: a float64 array of
shape ``(n, len(EVENT_FIELDS))``, one record per row, as ``simulator.engine`` documents, where
``gemm`` is the row of ``Results.table`` the record belongs to and times are cycles from the start
of the run. On top of the engine's per-tile records it has one ``gemm`` record per GEMM row (from
the GEMM's first wait or compute to its last compute; the last GEMM also to the final drain). With
ideal memory there is no SimPy run: each GEMM is one ``compute`` record of its elapsed cycles,
laid end to end. A trace's steps follow each other; after each step's GEMMs come its
``overhead`` rows (top-K, mask updates), end to end, because the step totals count them serially
(``x`` = their cycles). ``reports.timeline`` turns this into a Chrome trace.

Training order: ``fwd`` for every layer in order, then per layer from last to first its
``bwd_input`` and ``bwd_weight``. The first layer has no ``bwd_input`` (the network input needs no
gradient) unless ``input_grad`` (a version-2 trace: its steps say which ``bwd_input`` ran, the
first layer's too); a trace step also leaves out the GEMMs its meta lists as not computed
(``bwd_input_not_computed``, ``bwd_weight_not_computed``: frozen layers), in the sparse run and,
through the per-GEMM ``Dense Cycles``, in its baseline.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InputError
from common.vocab import DATAFLOWS
from dataflows.features import SparseFeatures
from dataflows.formats import block_bits
from dataflows.gemm import Gemm, lower
from dataflows.sparse import SparseWork, operand_compression, sparse_work, work_candidates
from dataflows.systolic import map_dense
from dataflows.tiles import TileSchedule, schedule
from dataflows.tiles import concat as concat_schedules
from simulator.baseline import dense_baseline
from simulator.dram import DramTiming
from simulator.engine import STALL_CAUSES, GemmTiming, Replays, simulate_tiles
from simulator.results import (
    COMPUTE,
    EVENT_FIELDS,
    GEMM,
    OVERHEAD,
    READ,
    STALL_COLUMNS,
    WRITE,
    Results,
)
from simulator.series import IMBALANCE_COLUMNS, dram_timeline, imbalance_histogram
from simulator.table import Table, concat
from traces.layers import Layer

MEMORY_MODES = ("ideal", "modeled")
PHASE_SETS = {"fwd": ("fwd",), "train": ("fwd", "bwd_input", "bwd_weight")}
BUFFERS = ("ifmap", "filter", "ofmap")  # hold A, B and C of every GEMM


def training_order(layers: list[Layer] | tuple[Layer, ...], phases: tuple[str, ...],
                   skip: frozenset[tuple[str, str]] = frozenset(), input_grad: bool = False
                   ) -> list[tuple[int, str]]:
    """(layer index, phase) pairs in the order a training step runs them, leaving out the
    (layer name, phase) GEMMs in ``skip`` (not computed in that step: a frozen weight's dW) and,
    unless ``input_grad``, the first layer's ``bwd_input``."""
    order = [(i, "fwd") for i in range(len(layers))] if "fwd" in phases else []
    for i in reversed(range(len(layers))):
        first = i == 0 and not input_grad
        if "bwd_input" in phases and not first and (layers[i].name, "bwd_input") not in skip:
            order.append((i, "bwd_input"))
        if "bwd_weight" in phases and (layers[i].name, "bwd_weight") not in skip:
            order.append((i, "bwd_weight"))
    return order


def half_buffer_words(arch) -> tuple[int, int, int]:
    """Words of A, B and C one half of each double-buffered SRAM holds."""
    return tuple(arch.sram[b].capacity_bytes // 2 // arch.word_bytes[b] for b in BUFFERS)


def check_buffers(arch) -> None:
    """A half buffer must hold at least one vector along the array edge for every operand."""
    need = max(arch.rows * arch.lanes, arch.cols)
    for b, words in zip(BUFFERS, half_buffer_words(arch), strict=True):
        if words < need:
            raise InputError(arch.source, f"sram.{b}.kib",
                             f"{arch.sram[b].kib} KiB holds {words} words per half-buffer; one "
                             f"tile of a {arch.rows}x{arch.cols}x{arch.lanes} array needs at "
                             f"least {need}")


def _events(log, timings: list[GemmTiming] | None, compute: list[int]) -> np.ndarray:
    """The event array of one ``simulate`` run: the engine's records plus one ``gemm`` record
    per GEMM (modeled memory), or per GEMM a ``compute`` and a ``gemm`` record of its
    ``compute`` cycles laid end to end (ideal memory: ``timings`` is None)."""
    n = len(compute)
    gemms = np.zeros((n, len(EVENT_FIELDS)))
    gemms[:, 0], gemms[:, 1] = GEMM, np.arange(n)
    if timings is not None:
        gemms[:, 2:4] = [(tm.start, tm.end) for tm in timings]
        recs = np.frombuffer(log, dtype=np.float64).reshape(-1, len(EVENT_FIELDS))
    else:
        cycles = np.asarray(compute, dtype=np.float64)
        gemms[:, 3] = np.cumsum(cycles)
        gemms[:, 2] = gemms[:, 3] - cycles
        recs = gemms.copy()
        recs[:, 0], recs[:, 4] = COMPUTE, cycles
    return np.concatenate([gemms, recs])


def _fold_mean(work: SparseWork, figure: str) -> float:
    """A mapping figure (a mean over folds) of the work's GEMM, or over the folds of all the
    GEMMs a phase runs."""
    maps = [p.mapping for p in work.parts or [work]]
    n = [m.folds * m.groups for m in maps]
    return sum(getattr(m, figure) * k for m, k in zip(maps, n, strict=True)) / sum(n)


def _incl_prefetch(layer: Layer, gemm: Gemm, arch, dataflow: str, total: int,
                   nm: tuple[int, int] | None = None) -> int:
    """SCALE-Sim's ``Total Cycles (incl. prefetch)`` for ideal memory: its CALC-mode initial
    DRAM fill and final drain around ``total`` (``simulator.scalesim_compat``). ``nm``: the
    GEMM runs N:M-condensed (``gemm`` is the condensed one), as SCALE-Sim's layer-wise sparsity
    runs it: its conv reads only the window positions its N:M pattern keeps."""
    from simulator.scalesim_compat import conv_ifmap_unique_words, prefetch_cycles

    words = [arch.sram[b].capacity_bytes // arch.word_bytes[b] for b in BUFFERS]
    unique = None
    if gemm.phase == "fwd" and layer.kind == "conv2d" and layer.stride[0] == layer.stride[1]:
        # the distinct input pixels SCALE-Sim's windows touch (its input is pre-padded)
        h, w = layer.extra.get("scalesim_ifmap_hw", layer.input_hw)
        if "scalesim_ifmap_hw" not in layer.extra:
            h, w = h + 2 * layer.padding[0], w + 2 * layer.padding[1]
        span = [layer.dilation[i] * (layer.kernel[i] - 1) + 1 for i in range(2)]
        unique = conv_ifmap_unique_words(h, w, span[0], span[1], layer.in_channels // layer.groups,
                                         layer.stride[0], nm) * (gemm.M // (layer.out_hw[0]
                                                                        * layer.out_hw[1]))
    try:
        fill, drain = prefetch_cycles(gemm.M, gemm.K, gemm.N, arch.rows, arch.cols, dataflow,
                                      *words, ifmap_unique_words=unique)
    except (ValueError, NotImplementedError):
        # outside what SCALE-Sim itself can run (buffers under 100 words, an output buffer
        # narrower than the array): no prefetch figure to reproduce
        return total
    return fill + total + drain


def _map_read(im2col: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The stored rows and columns of the feature map of ``Gemm.im2col`` that some window
    reads (bool, over the map's stored pixels: the rows and columns of zeros a transposed
    ``bwd_input`` inserts left out), as ``dataflows.tiles`` walks the windows: row
    oy·sh − ph + i·dh of every position oy and tap i inside the map, likewise the columns."""
    g = (list(im2col[1:]) + [0] * 6)[:20]
    out = []
    for n, k, s, p, d, o, ins in ((g[2], g[4], g[6], g[8], g[10], g[12], g[18]),
                                  (g[3], g[5], g[7], g[9], g[11], g[13], g[19])):
        at = (np.arange(o)[:, None] * s - p + np.arange(k)[None, :] * d).ravel()
        hit = np.zeros(n, dtype=bool)
        hit[at[(at >= 0) & (at < n)]] = True
        out.append(hit[:: max(1, ins)])
    return out[0], out[1]


def _stored_map_bits(work: SparseWork, x: str, feats: SparseFeatures,
                     wbits: tuple[int, int]) -> tuple[int, int] | None:
    """(data bits, metadata bits) of the feature map operand ``x`` of ``work`` expands, stored
    compressed in DRAM: per group of the GEMM, its words that some window reads, each once, as
    one run compressed by its own nonzeros, ``block_bits`` of a ``1 × n`` block (``run_bits``:
    what ``dataflows.tiles`` counts for the whole map fetched once). A phase lowered to
    several GEMMs reads one map in all: the words any of them reads. None where no GEMM of the
    work carries that map (``SparseWork.map_nonzero``)."""
    nz = rows = cols = fmap = None
    for p in work.parts or [work]:
        f = getattr(operand_compression(p, feats, wbits, "dram"), "fmap", None)
        if f is None or f.which != x:
            continue
        r, c = _map_read(p.gemm.im2col)
        g = (list(p.gemm.im2col[1:]) + [0] * 6)[:20]
        if fmap is None:
            fmap, rows, cols = f, r, c
            nz = f.nonzero[..., :: max(1, g[18]), :: max(1, g[19])]
        else:
            rows, cols = rows | r, cols | c
    if fmap is None:
        return None
    if not (rows.all() and cols.all()):  # else no copy of the map
        nz = nz[..., rows, :][..., cols]
    words = int(np.prod(nz.shape[1:]))
    data = meta = 0
    for z in nz.sum(axis=tuple(range(1, nz.ndim)), dtype=np.int64).tolist():
        if words:  # a run of no words is no bits
            d, m = block_bits(fmap.fmt, 1, words, z, fmap.value_bits, fmap.nm_m)
            data, meta = data + d, meta + m
    return data, meta


def _format_bytes(full: Gemm, work: SparseWork, feats: SparseFeatures, arch) -> dict[str, int]:
    """Data and metadata bytes of A and B (all groups) in their roles' DRAM formats, as the
    operand is stored in DRAM (each element once, however often the GEMM reads it):

    * an im2col operand whose map is stored compressed: the feature map itself, from its own
      nonzeros, one run per group of the GEMM (``_stored_map_bits``): each word some window
      reads once, however many windows read it; padding and the zeros a transposed
      ``bwd_input`` inserts are not stored, and words no window reads (three in four of a
      stride-2 1×1 convolution's) are not counted: the schedule never fetches them, and the
      dense count (``Gemm.stored``, at most the matrix's elements) leaves them out too;
    * a reduced mode's GEMM (``nm``, ``fanin``, ``structured``, alone or with skipping): what
      it stores (``Gemm.stored`` of the executed GEMM: the condensed weight slots, the kept
      share of a structured operand, the dense activations), in words: its operands are moved
      compact, with no format or metadata (``docs/sparse.md``, "Traffic");
    * any other operand: its matrix (``full``'s) as one block in its format from its nonzeros
      (per group, the groups' mean), scaled by the elements stored / the matrix's elements (a
      dense im2col operand is the feature map it expands)."""
    out = {}
    wbits = (8 * arch.word_bytes["ifmap"], 8 * arch.word_bytes["filter"])
    for x, (r, c), i in (("A", (full.M, full.K), 0), ("B", (full.K, full.N), 1)):
        fmt = feats.format_of(full.roles[i], "dram")
        if work.reduction is not None:
            g = work.gemm
            bits = (g.groups * g.stored(x) * wbits[i], 0)
        else:
            bits = None if fmt == "dense" else _stored_map_bits(work, x, feats, wbits)
        if bits is not None:
            out[f"{x} Data Bytes"], out[f"{x} Metadata Bytes"] = bits[0] // 8, bits[1] // 8
            continue
        nnz = work.nnz[x] // max(1, full.groups)
        data, meta = block_bits(fmt, r, c, nnz, wbits[i], feats.nm[1] if feats.nm else 4)
        stored = full.stored(x) / (r * c)
        out[f"{x} Data Bytes"] = int(full.groups * data * stored / 8)
        out[f"{x} Metadata Bytes"] = int(full.groups * meta * stored / 8)
    return out


@dataclass(frozen=True)
class _Planned:
    """One GEMM of a run, planned: its layer and phase, the GEMM as the layer lowers it (its
    M, K, N and roles in the table, lowered once), its work (cycles and counters from the
    masks, under the architecture's lowering) and its tile schedule (what moves between DRAM,
    SRAM and the array)."""

    li: int
    phase: str
    full: Gemm
    work: SparseWork
    sched: TileSchedule


def _check_run(arch, dataflow: str, phases: str, memory: str) -> None:
    if dataflow not in DATAFLOWS:
        raise InputError("--dataflow", None,
                         f"unknown dataflow {dataflow!r}; expected one of {', '.join(DATAFLOWS)}")
    if phases not in PHASE_SETS:
        raise InputError("--phases", None, f"expected fwd or train, got {phases!r}")
    if memory not in MEMORY_MODES:
        raise InputError("--memory", None, f"expected ideal or modeled, got {memory!r}")
    check_buffers(arch)


def _work(layer: Layer, batch: int, g: Gemm, arch, dataflow: str, masks,
          feats: SparseFeatures, condensed: bool = False) -> SparseWork:
    """The work of GEMM ``g`` (``layer``'s, lowered): from the masks (or with a lowering of the
    architecture's own), or the closed form of a dense GEMM. The phase's masks go to the work
    model packed, as the trace holds them. ``condensed``: the N:M mode whenever the masks allow
    it, even where dense is as fast (SCALE-Sim's sparse array has no dense mode)."""
    if (masks is not None and layer.name in masks) or not feats.lowering.default:
        lm = {} if masks is None else masks.get(layer.name, {})
        lm = lm.for_phase(g.phase) if hasattr(lm, "for_phase") else lm
        if condensed and feats.nm is not None:
            nm = [c for c in work_candidates(layer, batch, g.phase, lm, arch.rows, arch.cols,
                                             arch.lanes, dataflow, feats, arch.folds)
                  if c.mode == "nm" or c.mode.startswith("nm+")]
            if nm:
                return min(nm, key=lambda c: c.compute_cycles + c.imbalance_cycles)
        return sparse_work(layer, batch, g.phase, lm, arch.rows, arch.cols, arch.lanes,
                           dataflow, feats, arch.folds, lowered=g)
    mp = map_dense(g, arch.rows, arch.cols, dataflow, arch.lanes, arch.folds)
    return SparseWork(g, mp, "dense", None, mp.compute_cycles, 0, g.macs, g.macs, g.macs, 0,
                      {"A": 1.0, "B": 1.0}, {"A": g.groups * g.M * g.K, "B": g.groups * g.K * g.N})


def _tiles(work: SparseWork, arch, feats: SparseFeatures,
           replays: Replays | None = None) -> TileSchedule:
    """The tile schedule of one GEMM (a phase lowered to several GEMMs runs them in turn);
    through ``replays`` (``Replays.schedule``) one made before from the same inputs."""
    wbits = (8 * arch.word_bytes["ifmap"], 8 * arch.word_bytes["filter"])
    subs = []
    for p in work.parts or [work]:
        squeeze = operand_compression(p, feats, wbits, "dram")
        held = operand_compression(p, feats, wbits, "sram")
        args = (p.gemm, p.mapping, half_buffer_words(arch), p.fold_cycles, squeeze, held)
        key = None if replays is None else _schedule_key(*args)
        subs.append(schedule(*args) if key is None
                    else replays.schedule(key, lambda a=args: schedule(*a)))
    return subs[0] if len(subs) == 1 else concat_schedules(subs)


def _schedule_key(gemm, mapping, caps, fold_cycles, squeeze, held) -> tuple | None:
    """What ``dataflows.tiles.schedule`` depends on, as a hashable key (arrays by their
    bytes), or None when some input cannot be one."""

    def frozen(x):
        if isinstance(x, np.ndarray):  # a ``MapRatios`` also carries its stored map
            a = np.ascontiguousarray(x)
            return (a.dtype.str, a.shape, a.tobytes(), getattr(x, "fmap", None))
        return x

    key = (gemm, mapping, tuple(caps), frozen(fold_cycles), frozen(squeeze), frozen(held))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _plan(layers, batch: int, arch, dataflow: str, phases: str, masks,
          feats: SparseFeatures, skip, input_grad: bool = False,
          layer_features: dict[str, SparseFeatures] | None = None,
          replays: Replays | None = None) -> list[_Planned]:
    """Stage 1: every GEMM of the step in training order, with its work and tiles (through
    ``replays``, schedules made once per command)."""
    out = []
    for li, ph in training_order(layers, PHASE_SETS[phases], skip, input_grad):
        full = lower(layers[li], batch, ph)
        f = (layer_features or {}).get(layers[li].name, feats)
        w = _work(layers[li], batch, full, arch, dataflow, masks, f,
                  condensed=layers[li].name in (layer_features or {}))
        out.append(_Planned(li, ph, full, w, _tiles(w, arch, f, replays)))
    return out


def _time(plan: list[_Planned], arch, memory: str, timeline: bool, topk: list[int],
          replays: Replays | None = None) -> tuple[list[GemmTiming], array | None]:
    """Stage 2: the GEMMs' timings: the SimPy engine over the tiles, then the top-K unit's
    ``topk`` jobs (modeled memory), or their compute cycles (ideal). The event log also gives
    the DRAM timeline, so a modeled run always keeps one. ``replays``: a replay of the same
    tiles as its last is a copy of it (``engine.Replays``)."""
    log = array("d") if timeline or memory == "modeled" else None
    scheds = [p.sched for p in plan]
    if memory == "modeled":
        run = simulate_tiles if replays is None else replays.simulate_tiles
        return run(scheds, arch, log, dram_only=not timeline, topk=topk), log
    return [GemmTiming(compute=s.total("compute")) for s in scheds], log


def _energy(w: SparseWork, sram: dict, dram_bytes: int, arch) -> tuple[float, float, float]:
    """MAC, SRAM and DRAM energy (pJ) of one GEMM."""
    en = arch.energy
    wb = [arch.word_bytes[b] for b in BUFFERS]
    e_mac = (w.actual - w.gated) * en.mac_pj + w.gated * en.mac_gated_pj
    e_sram = (sram["A"] * wb[0] * en.sram_pj_per_byte["ifmap"]
              + sram["B"] * wb[1] * en.sram_pj_per_byte["filter"]
              + sram["C"] * wb[2] * en.sram_pj_per_byte["ofmap"])
    return e_mac, e_sram, dram_bytes * en.dram_pj_per_byte


def _dram_bytes(sch: TileSchedule, arch) -> int:
    wb = [arch.word_bytes[b] for b in BUFFERS]
    return (sch.total("a_dram") * wb[0] + sch.total("b_dram") * wb[1]
            + (sch.total("c_read") + sch.total("c_write")) * wb[2])


def _operand_columns(full: Gemm, w: SparseWork, feats: SparseFeatures, arch) -> dict[str, Any]:
    """Densities, roles, formats and formatted bytes of the GEMM's A and B."""
    return {
        "A Density": w.density.get("A", 1.0),
        "B Density": w.density.get("B", 1.0),
        "A Role": full.roles[0], "B Role": full.roles[1],
        "A Format": feats.format_of(full.roles[0], "dram"),
        "B Format": feats.format_of(full.roles[1], "dram"),
        "A SRAM Format": feats.format_of(full.roles[0], "sram"),
        "B SRAM Format": feats.format_of(full.roles[1], "sram"),
        **_format_bytes(full, w, feats, arch),
    }


def _traffic_columns(sch: TileSchedule, moved: int | None, cycles: int, arch
                     ) -> dict[str, Any]:
    """SRAM and DRAM accesses of the tiles, bytes and average bandwidths; ``moved``: the DRAM
    bytes the engine moved (whole bursts; None with ideal memory: the useful bytes)."""
    sram = {"A": sch.total("a_sram"), "B": sch.total("b_sram"), "C": sch.total("c_sram")}
    dram_r = {"A": sch.total("a_dram"), "B": sch.total("b_dram"), "C": sch.total("c_read")}
    dram_w = sch.total("c_write")
    dram_bytes = _dram_bytes(sch, arch)
    return {
        "SRAM IFMAP Reads": sram["A"], "SRAM Filter Reads": sram["B"],
        "SRAM OFMAP Writes": sram["C"],
        "DRAM IFMAP Reads": dram_r["A"], "DRAM Filter Reads": dram_r["B"],
        "DRAM OFMAP Reads": dram_r["C"], "DRAM OFMAP Writes": dram_w,
        "DRAM Bytes": dram_bytes,
        "DRAM Bytes Moved": dram_bytes if moved is None else moved,
        "Avg IFMAP SRAM BW": sram["A"] / cycles,
        "Avg FILTER SRAM BW": sram["B"] / cycles,
        "Avg OFMAP SRAM BW": sram["C"] / cycles,
        "Avg IFMAP DRAM BW": dram_r["A"] / cycles,
        "Avg FILTER DRAM BW": dram_r["B"] / cycles,
        "Avg OFMAP DRAM BW": (dram_r["C"] + dram_w) / cycles,
        "Avg DRAM BW (bytes/cycle)": dram_bytes / cycles,
        "Avg DRAM BW (GB/s)": dram_bytes / cycles * arch.clock_ghz,
    }


def _row(p: _Planned, tm: GemmTiming, layers, batch: int, arch, dataflow: str, memory: str,
         feats: SparseFeatures, step: int) -> dict[str, Any]:
    """Stage 3: one GEMM's row of the table (``docs/metrics.md`` defines every column)."""
    li, ph, full, w, sch = p.li, p.phase, p.full, p.work, p.sched
    g = w.gemm
    macs_per_cycle = arch.rows * arch.cols * arch.lanes
    compute = w.compute_cycles
    stalls = {c: int(round(tm.stalls[c])) for c in STALL_CAUSES}
    stalls["load_imbalance"] = w.imbalance_cycles
    stall = sum(stalls.values())
    total = compute + stall - 1
    exact_dense = (w.mode == "dense" and w.fold_cycles is None and arch.folds == "serial"
                   and g == full)
    # N:M-condensed, dense on the condensed GEMM: SCALE-Sim's layer-wise sparse run of it
    condensed = (w.mode == "nm" and w.fold_cycles is None and arch.folds == "serial"
                 and feats.nm is not None)
    incl = total
    if memory == "ideal" and (exact_dense or condensed):
        incl = _incl_prefetch(layers[li], g, arch, dataflow, total,
                              feats.nm if condensed else None)
    sram = {"A": sch.total("a_sram"), "B": sch.total("b_sram"), "C": sch.total("c_sram")}
    cycles = compute + stall
    e_mac, e_sram, e_dram = _energy(w, sram, _dram_bytes(sch, arch), arch)
    row: dict[str, Any] = {
        "LayerID": li,
        "Layer": layers[li].name,
        "Phase": ph,
        "Step": step,
        "Total Cycles (incl. prefetch)": incl,
        "Total Cycles": total,
        "Stall Cycles": stall,
        "Overall Util %": 100.0 * w.algorithmic / (max(total, 1) * macs_per_cycle),
        "Mapping Efficiency %": 100.0 * _fold_mean(w, "mapping_efficiency"),
        "Compute Util %": 100.0 * _fold_mean(w, "compute_utilization"),
        "Compute Cycles": compute,
        **{STALL_COLUMNS[c]: stalls[c] for c in STALL_COLUMNS},
        "Ideal Cycles": -(-w.effectual // macs_per_cycle),
        "M": full.M, "K": full.K, "N": full.N, "Groups": full.groups,
        "Mode": w.mode,
        "Algorithmic Computes": w.algorithmic,
        "Actual Computes": w.actual,
        "Skipped Computes": w.skipped,
        "Gated Computes": w.gated,
        "Effectual Computes": w.effectual,
        **_operand_columns(full, w, feats, arch),
        **_traffic_columns(sch, tm.dram_moved_bytes if memory == "modeled" else None, cycles,
                           arch),
        "Energy MAC (pJ)": e_mac,
        "Energy SRAM (pJ)": e_sram,
        "Energy DRAM (pJ)": e_dram,
        "Energy (pJ)": e_mac + e_sram + e_dram,
    }
    return row


def _imbalance_row(p: _Planned, layers, step: int) -> dict[str, Any] | None:
    """A GEMM's row of ``LOAD_IMBALANCE.csv`` (those with a per-fold work model)."""
    w = p.work
    if w.fold_cycles is None or w.fold_imbalance is None:
        return None
    return {"LayerID": p.li, "Layer": layers[p.li].name, "Phase": p.phase, "Step": step,
            "Folds": int(len(w.fold_cycles)), "Fold Cycles": int(np.sum(w.fold_cycles)),
            "Imbalance Cycles": int(np.sum(w.fold_imbalance)),
            **dict(zip(IMBALANCE_COLUMNS,
                       imbalance_histogram(w.fold_cycles, w.fold_imbalance).tolist(),
                       strict=True))}


def simulate(layers: list[Layer] | tuple[Layer, ...], batch: int, arch, dataflow: str,
             phases: str = "fwd", memory: str = "modeled", step: int = 0,
             masks: dict[str, dict[str, np.ndarray | None]] | None = None,
             features: SparseFeatures | None = None, timeline: bool = False,
             skip: frozenset[tuple[str, str]] = frozenset(), topk: list[int] | None = None,
             input_grad: bool = False, replays: Replays | None = None,
             layer_features: dict[str, SparseFeatures] | None = None
             ) -> Results:
    """Simulate one step of ``layers`` at ``batch`` on ``arch``; see the module docstring.

    ``masks[layer][role]`` are the operand masks of the step (layer-shaped bool tensors, None
    for dense); without them every operand is dense. ``features`` defaults to the
    architecture's sparse features; pass ``arch.features.baseline()`` for the dense baseline.
    ``timeline`` keeps the event log in ``Results.events``. ``skip``: (layer name, phase)
    backward GEMMs the step did not compute (``training_order``); ``input_grad``: the first
    layer's ``bwd_input`` runs unless ``skip`` names it (version-2 traces). ``layer_features``:
    layer name -> the features of that layer's GEMMs in place of ``features`` (SCALE-Sim's
    per-layer N:M, ``simulator.scalesim_compat.topology_nm_inputs``); such a layer runs its
    N:M mode wherever its masks allow, even where dense is as fast. ``topk``: cycles of
    the step's top-K / mask-update jobs (``overhead_rows``), which the modeled engine's top-K
    unit runs after the GEMMs (their ``overhead`` records follow the GEMMs' in the event log);
    the table leaves their rows to the caller. ``replays``: an ``engine.Replays`` shared by
    the runs of one command (a replay of the same tiles, and a tile schedule of the same
    inputs, is computed once).

    Three stages: plan the GEMMs (work and tiles), time them (the engine), tabulate.
    """
    _check_run(arch, dataflow, phases, memory)
    feats = arch.features if features is None else features
    plan = _plan(layers, batch, arch, dataflow, phases, masks, feats, skip, input_grad,
                 layer_features, replays)
    timings, log = _time(plan, arch, memory, timeline, list(topk or ()), replays)
    lf = layer_features or {}
    table = Table.from_rows([_row(p, tm, layers, batch, arch, dataflow, memory,
                                  lf.get(layers[p.li].name, feats), step)
                             for p, tm in zip(plan, timings, strict=True)])
    imb_rows = [r for r in (_imbalance_row(p, layers, step) for p in plan) if r is not None]
    peak = DramTiming.from_spec(arch.dram, arch.clock_ghz).bytes_per_cycle
    meta = {"arch": arch.name, "arch_source": arch.source, "dataflow": dataflow,
            "phases": phases, "memory": memory, "batch": batch,
            "array": [arch.rows, arch.cols, arch.lanes], "clock_ghz": arch.clock_ghz,
            "macs_per_cycle": arch.rows * arch.cols * arch.lanes,
            "dram_peak_bytes_per_cycle": peak, "dram_peak_gbps": peak * arch.clock_ghz,
            "arch_spec": arch.to_dict()}
    events = series = None
    if timeline:
        events = _events(log, timings if memory == "modeled" else None,
                         [tm.compute for tm in timings])
    if memory == "modeled":
        # the table's cycles are whole (stall causes rounded): the engine's own end can be a
        # fraction later, and the last write's bytes belong in the bins too
        duration = max(float((table["Compute Cycles"] + table["Stall Cycles"]).sum()),
                       float(timings[-1].end) if timings else 0.0)
        series = dram_timeline(events if timeline else _transfers(log), duration,
                               arch.clock_ghz, step, peak)
    return Results(table, meta, events=events, dram_timeline=series,
                   imbalance=Table.from_rows(imb_rows) if imb_rows else None)


def _transfers(log: array) -> np.ndarray:
    """The DRAM transfers (``read`` and ``write`` records) of an event log, in order: what
    the DRAM timeline needs, without a copy of the whole log."""
    rec = np.frombuffer(log, dtype=np.float64).reshape(-1, len(EVENT_FIELDS))
    keep = (rec[:, 0] == READ) | (rec[:, 0] == WRITE)
    return rec if keep.all() else rec[keep]


@dataclass(frozen=True)
class Network:
    """What to simulate: the layers, the batch and where they came from."""

    name: str
    layers: tuple[Layer, ...]
    batch: int
    kind: str  # "trace" or "topology"
    source: str
    step: int = 0
    trace: Any = None  # the opened ``traces.format.Trace`` (a trace), for ``simulate_trace``
    topology: Any = None  # the ``traces.topology.Topology`` read (a topology)


def load_network(path: str) -> Network:
    """A trace directory (its manifest's layers, batch and first step) or a SCALE-Sim topology
    CSV (batch 1, as SCALE-Sim)."""
    p = Path(path)
    if p.is_dir():
        from traces.format import Trace

        trace = Trace(p)
        trace.require_steps()  # before the dense baseline runs, not after
        m = trace.manifest
        step = trace.steps[0]
        return Network(m.model, m.layers, m.batch_size, "trace", str(p), step, trace)
    if p.suffix.lower() == ".csv" or p.is_file():
        from traces.topology import read_topology

        topo = read_topology(p)
        return Network(topo.name, topo.layers, 1, "topology", str(p), topology=topo)
    raise InputError(str(p), None, "not found: expected a trace directory or a topology CSV")


# ------------------------------------------------------------------------------------------------
# whole traces: every step, its dense baseline, speedups and training overheads
# ------------------------------------------------------------------------------------------------
def _step_masks(step_data) -> dict[str, _PhaseView]:
    """Layer → masks of one trace step, still packed as read. A role used by two phases may
    differ between them (SWAT multiplies a dense A in fwd and its top-K A~ in bwd_weight)."""
    return {name: _PhaseView(phases) for name, phases in step_data.layers.items()}


class _PhaseView:
    """A layer's packed operands per phase; ``for_phase`` gives one phase's role masks as the
    trace packs them (``PackedMask``; None for a dense operand): the work model's kernels read
    those bits, nothing is unpacked."""

    def __init__(self, phases) -> None:
        self.phases = phases

    def for_phase(self, phase: str) -> dict:
        return {role: op.mask for role, op in self.phases.get(phase, {}).items()}


def overhead_rows(layers, batch: int, arch, manifest, step_data, step: int) -> list[dict]:
    """Training work beside the GEMMs, as their own rows: SWAT's top-K (a threshold compare per
    weight and activation every step, plus an O(n) selection — two passes — every P steps) and
    RigL/SRigL mask updates (a selection over |W| and one over |G| of each updated layer)."""
    rate = arch.topk_elements_per_cycle
    rows = []
    method = manifest.method
    if method.startswith("swat"):
        period = int(manifest.sparsity.get("topk_period", 10) or 10)
        for li, layer in enumerate(layers):
            dens = manifest.sparsity.get("layer_density")
            if dens and dens[li] >= 1.0:
                continue
            n = layer.weight_numel + int(np.prod(layer.ifmap_shape(batch)))
            work = n + (2 * n if step % period == 0 else 0)
            rows.append((li, layer.name, "topk", -(-work // rate)))
    for ev in step_data.events if step_data is not None else []:
        if isinstance(ev, dict) and ev.get("type") == "mask_update":
            names = [la.name for la in layers]
            if ev.get("layer") in names:
                li = names.index(ev["layer"])
                n = layers[li].weight_numel
                rows.append((li, ev["layer"], "mask_update", -(-(2 * n) // rate)))
    out = []
    for li, name, phase, cycles in rows:
        out.append({"LayerID": li, "Layer": name, "Phase": phase, "Step": step,
                    "Total Cycles (incl. prefetch)": cycles - 1, "Total Cycles": cycles - 1,
                    "Stall Cycles": 0, "Compute Cycles": cycles,
                    **dict.fromkeys(STALL_COLUMNS.values(), 0), "Mode": "topk-unit"})
    return out


def _step_events(events: np.ndarray, extra: list[dict], row0: int, t0: float) -> np.ndarray:
    """One step's events moved to rows from ``row0`` and times from ``t0``, followed by its
    overhead rows (which follow its GEMM rows in the table) end to end after its last event."""
    ev = events.copy()
    ev[:, 1] += row0
    ev[:, 2:4] += t0
    t = float(ev[:, 3].max()) if len(ev) else t0
    n = len(ev[ev[:, 0] == GEMM])
    over = np.zeros((len(extra), len(EVENT_FIELDS)))
    for i, row in enumerate(extra):
        c = row["Compute Cycles"]
        over[i] = (OVERHEAD, row0 + n + i, t, t + c, c, 0, 0)
        t += c
    return np.concatenate([ev, over])


def _computed(baseline: Table, table: Table) -> Table:
    """The baseline's rows of the GEMMs some step computed: a GEMM no step ran (a frozen
    layer's weight gradient, the first layer's input gradient in a version-2 trace whose input
    needs none) is not in the dense step either (``baseline_per_step``)."""
    done = set(zip(table["LayerID"].tolist(), table["Phase"].tolist(), strict=True))
    keep = [(li, ph) in done for li, ph in zip(baseline["LayerID"].tolist(),
                                               baseline["Phase"].tolist(), strict=True)]
    return baseline if all(keep) else baseline.take(np.flatnonzero(keep))


def _trace_baseline(trace, steps: list[int] | None, arch, dataflow: str, phases: str,
                    memory: str, cache, replays: Replays | None) -> Results:
    """The dense baseline of a trace's ``steps`` (all when None; ``simulator.baseline``),
    without the GEMMs none of them ran (a frozen layer's ``bwd_weight``; in a version-2 trace
    the first layer's ``bwd_input`` runs only when some step ran it): such a GEMM would still
    shift its neighbours' memory timing in the baseline."""
    from traces.format import NOT_COMPUTED

    m = trace.manifest
    metas = [trace.read_meta(s) for s in trace.steps if steps is None or s in steps]
    grad = m.format_version >= 2 and any(
        m.layers[0].name not in meta.get("bwd_input_not_computed", ()) for meta in metas)
    never = frozenset.intersection(*(
        frozenset((name, phase) for key, phase in NOT_COMPUTED.items()
                  for name in meta.get(key, ())) for meta in metas)) if metas else frozenset()
    base = dense_baseline(m.layers, m.batch_size, arch, dataflow, phases, memory, cache,
                          lambda: simulate(m.layers, m.batch_size, arch, dataflow, phases,
                                           memory, 0, None, arch.features.baseline(),
                                           skip=never, input_grad=grad, replays=replays),
                          input_grad=grad, skip=never)
    # a cached baseline's meta may be another architecture's (one that differs in sparse
    # features only, or the same read from another file): it says this one's
    base.meta.update(arch_source=arch.source, arch_spec=arch.to_dict())
    return base


def _with_speedup(t: Table, elapsed: dict[tuple[int, str], int]) -> Table:
    """A step's table with ``Dense Cycles`` (``elapsed``: the dense baseline's cycles by layer
    id and phase) and ``Speedup`` (those over the row's cycles)."""
    t["Dense Cycles"] = np.array([int(elapsed[key]) for key in zip(
        t["LayerID"].tolist(), t["Phase"].tolist(), strict=True)], dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):  # as pandas divides: inf, NaN
        t["Speedup"] = t["Dense Cycles"] / (t["Compute Cycles"] + t["Stall Cycles"])
    return t


def simulate_trace(path, arch, dataflow: str, phases: str = "train",
                   memory: str = "modeled", steps: list[int] | None = None,
                   timeline: bool = False, baseline_cache=None) -> Results:
    """Every recorded step of a trace (or ``steps``) with its real masks, plus the dense
    baseline (same layers, batch, architecture and dataflow; masks dropped, features off), with
    ``Dense Cycles`` and ``Speedup`` per row. Overhead rows (top-K, mask updates) count in the
    sparse run's step totals. ``timeline`` keeps the sparse run's event log, steps one after
    the other (module docstring); the baseline keeps none. ``path``: the trace directory, or
    the ``traces.format.Trace`` already opened on it. ``baseline_cache``: a cache directory
    for the dense baseline (``simulator.baseline``), or None to simulate it afresh."""
    from traces.format import NOT_COMPUTED, Trace

    trace = path if isinstance(path, Trace) else Trace(path)
    path = str(trace.path) if isinstance(path, Trace) else str(path)
    m = trace.manifest
    layers, batch = m.layers, m.batch_size
    v2 = m.format_version >= 2  # its steps say whether the first layer's bwd_input ran
    # without sparse features a step's tiles can equal the baseline's: replayed once
    replays = Replays() if arch.features == arch.features.baseline() else None
    base = _trace_baseline(trace, steps, arch, dataflow, phases, memory, baseline_cache,
                           replays)
    bt = base.data("table")
    elapsed = dict(zip(zip(bt["LayerID"].tolist(), bt["Phase"].tolist(), strict=True),
                       (bt["Compute Cycles"] + bt["Stall Cycles"]).tolist(), strict=True))
    tables, events, series, imbalance = [], [], [], []
    rows, t_end = 0, 0.0
    for sd in trace:
        if steps is not None and sd.step not in steps:
            continue
        skip = frozenset((name, phase) for key, phase in NOT_COMPUTED.items()
                         for name in sd.meta.get(key, ()))
        extra = overhead_rows(layers, batch, arch, m, sd, sd.step)
        res = simulate(layers, batch, arch, dataflow, phases, memory, sd.step, _step_masks(sd),
                       timeline=timeline, skip=skip, input_grad=v2,
                       topk=[r["Compute Cycles"] for r in extra], replays=replays)
        t = _with_speedup(res.data("table"), elapsed)
        series += [res.data("dram_timeline")] if res.stored("dram_timeline") is not None else []
        imbalance += [res.data("imbalance")] if res.stored("imbalance") is not None else []
        if timeline:
            laid = extra if memory == "ideal" else []  # the engine's top-K unit timed them
            events.append(_step_events(res.events, laid, rows, t_end))
            t_end = float(events[-1][:, 3].max()) if len(events[-1]) else t_end
        if extra:
            t = concat([t, Table.from_rows(extra)])
        tables.append(t)
        rows += len(t)
    if not tables:
        raise InputError(str(path), "steps", f"none of the steps {steps} are in the trace")
    table = concat(tables)
    meta = {**base.meta, "trace": str(path), "trace_id": trace.digest[:16], "model": m.model,
            "method": m.method,
            "sparsity": m.sparsity.get("sparsity"), "steps": sorted(set(table["Step"].tolist())),
            "features": dict(arch.sparse)}
    return Results(table, meta, baseline=_computed(base.data("table"), table),
                   events=np.concatenate(events) if timeline else None,
                   dram_timeline=concat(series) if series else None,
                   imbalance=concat(imbalance) if imbalance else None)

