"""Run a network (a trace or a topology) on an architecture: lower, map, tile, simulate, tabulate.

``simulate(layers, batch, arch, dataflow, phases, memory)`` returns a ``Results`` with one row per
(layer, phase) GEMM. ``docs/metrics.md`` defines every column.

* ``memory="ideal"``: SCALE-Sim's stall-free model. Compute cycles are the closed form, stalls
  are zero, and ``Total Cycles (incl. prefetch)`` adds SCALE-Sim's initial fill and final drain.
* ``memory="modeled"``: the SimPy model (``simulator.engine``) over the DRAM timing model replays
  the tile schedule of every GEMM in training order; stalls are measured and split by cause.

Training order: ``fwd`` for every layer in order, then per layer from last to first its
``bwd_input`` and ``bwd_weight``. The first layer has no ``bwd_input`` (the network input needs no
gradient).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from dataflows.gemm import Gemm, lower
from dataflows.systolic import DATAFLOWS, map_dense
from dataflows.tiles import TileSchedule, schedule
from simulator.engine import STALL_CAUSES, GemmTiming, simulate_tiles
from traces.errors import InputError
from traces.layers import Layer

MEMORY_MODES = ("ideal", "modeled")
PHASE_SETS = {"fwd": ("fwd",), "train": ("fwd", "bwd_input", "bwd_weight")}
BUFFERS = ("ifmap", "filter", "ofmap")  # hold A, B and C of every GEMM
STALL_COLUMNS = {
    "dram_bandwidth": "Stall Cycles (DRAM Bandwidth)",
    "dram_latency": "Stall Cycles (DRAM Latency/Bank)",
    "sram_conflict": "Stall Cycles (SRAM Bank Conflict)",
    "fill_drain": "Stall Cycles (Fill/Drain)",
}


def training_order(layers: list[Layer] | tuple[Layer, ...], phases: tuple[str, ...]
                   ) -> list[tuple[int, str]]:
    """(layer index, phase) pairs in the order a training step runs them."""
    order = [(i, "fwd") for i in range(len(layers))] if "fwd" in phases else []
    for i in reversed(range(len(layers))):
        if "bwd_input" in phases and i > 0:
            order.append((i, "bwd_input"))
        if "bwd_weight" in phases:
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


@dataclass
class Results:
    """The per-GEMM table of one run plus what produced it."""

    table: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)


def _incl_prefetch(layer: Layer, gemm: Gemm, arch, dataflow: str, total: int) -> int:
    """SCALE-Sim's ``Total Cycles (incl. prefetch)`` for ideal memory: its CALC-mode initial
    DRAM fill and final drain around ``total`` (``simulator.scalesim_compat``)."""
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
                                         layer.stride[0]) * (gemm.M // (layer.out_hw[0]
                                                                        * layer.out_hw[1]))
    try:
        fill, drain = prefetch_cycles(gemm.M, gemm.K, gemm.N, arch.rows, arch.cols, dataflow,
                                      *words, ifmap_unique_words=unique)
    except (ValueError, NotImplementedError):
        # outside what SCALE-Sim itself can run (buffers under 100 words, an output buffer
        # narrower than the array): no prefetch figure to reproduce
        return total
    return fill + total + drain


def simulate(layers: list[Layer] | tuple[Layer, ...], batch: int, arch, dataflow: str,
             phases: str = "fwd", memory: str = "modeled", step: int = 0) -> Results:
    """Simulate one step of ``layers`` at ``batch`` on ``arch``; see the module docstring."""
    if dataflow not in DATAFLOWS:
        raise InputError("--dataflow", None,
                         f"unknown dataflow {dataflow!r}; expected one of {', '.join(DATAFLOWS)}")
    if phases not in PHASE_SETS:
        raise InputError("--phases", None, f"expected fwd or train, got {phases!r}")
    if memory not in MEMORY_MODES:
        raise InputError("--memory", None, f"expected ideal or modeled, got {memory!r}")
    check_buffers(arch)
    order = training_order(layers, PHASE_SETS[phases])
    caps = half_buffer_words(arch)
    gemms: list[Gemm] = []
    scheds: list[TileSchedule] = []
    for li, ph in order:
        g = lower(layers[li], batch, ph)
        mp = map_dense(g, arch.rows, arch.cols, dataflow, arch.lanes)
        gemms.append(g)
        scheds.append(schedule(g, mp, caps))
    if memory == "modeled":
        timings = simulate_tiles(scheds, arch)
    else:
        timings = [GemmTiming(compute=s.mapping.compute_cycles) for s in scheds]
    rows = []
    wb = [arch.word_bytes[b] for b in BUFFERS]
    macs_per_cycle = arch.rows * arch.cols * arch.lanes
    en = arch.energy
    for (li, ph), g, sch, tm in zip(order, gemms, scheds, timings, strict=True):
        mp = sch.mapping
        compute = mp.compute_cycles
        stalls = {c: int(round(tm.stalls[c])) for c in STALL_CAUSES}
        stall = sum(stalls.values())
        total = compute + stall - 1
        incl = (_incl_prefetch(layers[li], g, arch, dataflow, total) if memory == "ideal"
                else total)
        sram = {"A": sch.total("a_sram"), "B": sch.total("b_sram"), "C": sch.total("c_sram")}
        dram_r = {"A": sch.total("a_dram"), "B": sch.total("b_dram"), "C": sch.total("c_read")}
        dram_w = sch.total("c_write")
        cycles = compute + stall
        dram_bytes = dram_r["A"] * wb[0] + dram_r["B"] * wb[1] + (dram_r["C"] + dram_w) * wb[2]
        e_mac = g.macs * en.mac_pj
        e_sram = (sram["A"] * wb[0] * en.sram_pj_per_byte["ifmap"]
                  + sram["B"] * wb[1] * en.sram_pj_per_byte["filter"]
                  + sram["C"] * wb[2] * en.sram_pj_per_byte["ofmap"])
        e_dram = dram_bytes * en.dram_pj_per_byte
        row: dict[str, Any] = {
            "LayerID": li,
            "Layer": layers[li].name,
            "Phase": ph,
            "Step": step,
            "Total Cycles (incl. prefetch)": incl,
            "Total Cycles": total,
            "Stall Cycles": stall,
            "Overall Util %": 100.0 * g.macs / (max(total, 1) * macs_per_cycle),
            "Mapping Efficiency %": 100.0 * mp.mapping_efficiency,
            "Compute Util %": 100.0 * mp.compute_utilization,
            "Compute Cycles": compute,
            **{STALL_COLUMNS[c]: stalls[c] for c in STALL_CAUSES},
            "Ideal Cycles": -(-g.macs // macs_per_cycle),
            "M": g.M, "K": g.K, "N": g.N, "Groups": g.groups,
            "Algorithmic Computes": g.macs,
            "Actual Computes": g.macs,
            "SRAM IFMAP Reads": sram["A"], "SRAM Filter Reads": sram["B"],
            "SRAM OFMAP Writes": sram["C"],
            "DRAM IFMAP Reads": dram_r["A"], "DRAM Filter Reads": dram_r["B"],
            "DRAM OFMAP Reads": dram_r["C"], "DRAM OFMAP Writes": dram_w,
            "DRAM Bytes": dram_bytes,
            "DRAM Bytes Moved": tm.dram_moved_bytes if memory == "modeled" else dram_bytes,
            "Avg IFMAP SRAM BW": sram["A"] / cycles,
            "Avg FILTER SRAM BW": sram["B"] / cycles,
            "Avg OFMAP SRAM BW": sram["C"] / cycles,
            "Avg IFMAP DRAM BW": dram_r["A"] / cycles,
            "Avg FILTER DRAM BW": dram_r["B"] / cycles,
            "Avg OFMAP DRAM BW": (dram_r["C"] + dram_w) / cycles,
            "Avg DRAM BW (bytes/cycle)": dram_bytes / cycles,
            "Avg DRAM BW (GB/s)": dram_bytes / cycles * arch.clock_ghz,
            "Energy MAC (pJ)": e_mac,
            "Energy SRAM (pJ)": e_sram,
            "Energy DRAM (pJ)": e_dram,
            "Energy (pJ)": e_mac + e_sram + e_dram,
        }
        rows.append(row)
    table = pd.DataFrame(rows)
    meta = {"arch": arch.name, "arch_source": arch.source, "dataflow": dataflow,
            "phases": phases, "memory": memory, "batch": batch,
            "array": [arch.rows, arch.cols, arch.lanes], "clock_ghz": arch.clock_ghz}
    return Results(table, meta)


@dataclass(frozen=True)
class Network:
    """What to simulate: the layers, the batch and where they came from."""

    name: str
    layers: tuple[Layer, ...]
    batch: int
    kind: str  # "trace" or "topology"
    source: str
    step: int = 0


def load_network(path: str) -> Network:
    """A trace directory (its manifest's layers, batch and first step) or a SCALE-Sim topology
    CSV (batch 1, as SCALE-Sim)."""
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        from traces.format import Trace

        trace = Trace(p)
        m = trace.manifest
        step = trace.steps[0] if trace.steps else 0
        return Network(m.model, m.layers, m.batch_size, "trace", str(p), step)
    if p.suffix.lower() == ".csv" or p.is_file():
        from traces.topology import read_topology

        topo = read_topology(p)
        return Network(topo.name, topo.layers, 1, "topology", str(p))
    raise InputError(str(p), None, "not found: expected a trace directory or a topology CSV")
