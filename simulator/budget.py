"""What a run will cost, before it starts: CPU time and peak memory in closed form.

A few hundred bytes can describe days of work (a topology row of 65 536 channels, a sweep grid,
a trace of 10 000 layers of 2^32 elements). The subcommands that start such work ask
``estimate_network`` first and refuse (``check``) an estimate over ``MAX_CPU_SECONDS`` of CPU
or over the memory cap, unless the user confirms it (``--allow-huge``). The estimate must be
cheap on any input: one closed form per GEMM, nothing allocated per fold or tile.

The counts (per GEMM of the default lowering, ``dataflows.gemm.lower``):

* folds: ``map_dense``'s row folds × column folds × groups, exactly what the tile schedule
  walks (``dataflows.tiles.schedule`` has one fold record per fold of every group);
* tiles: an upper bound on the dense schedule's tiles: every fold its own tile, split into as
  many chunks as its largest fresh operand needs half buffers (``_group_tiles``' own bound:
  merging small folds only lowers it). A sparse run's tiles are fewer or as many when its
  operands are held in SRAM at most as large as dense;
* mask bits: the elements of the A and B operands of every GEMM of a step (each a mask a trace
  step may hold, unpacked when the GEMM is planned); 0 for a topology (dense).

The cost law turns counts into seconds and bytes (``COST``; docs/limits.md says how its
constants were measured): time adds up over every simulation of the run (a trace's steps and
its dense baseline), memory is the largest single simulation (a step's plan is held whole).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass

from common.errors import InputError
from dataflows.lowering import part_gemms
from dataflows.systolic import map_dense
from traces.layers import Layer

#: the flag that confirms a run over the limits below
ALLOW_FLAG = "--allow-huge"
#: CPU seconds a run may take without ``--allow-huge``
MAX_CPU_SECONDS = 3600.0
#: peak memory a run may take without ``--allow-huge`` (docs/limits.md: no input under 10 MB
#: makes a subcommand use more than 2 GiB), and never more than the machine has available
MAX_MEMORY_BYTES = 2 << 30
PHASES = {"fwd": ("fwd",), "train": ("fwd", "bwd_input", "bwd_weight")}
#: the operand roles of A and B in each phase (what a step's masks cover)
_AB_ROLES = {"fwd": ("ifmap", "filter"), "bwd_input": ("grad_out", "filter"),
             "bwd_weight": ("grad_out", "ifmap")}


@dataclass(frozen=True)
class CostLaw:
    """CPU seconds ``base_s + tile_s·tiles + fold_s·folds + bit_s·mask bits`` and peak bytes
    ``base_bytes + tile_bytes·tiles + fold_bytes·folds + bit_bytes·mask bits +
    operand_bytes·elements of the largest operand`` (a simulation: the largest forward GEMM's
    A, the input im2col expanded; ``synth``: the largest mask drawn)."""

    base_s: float
    tile_s: float
    fold_s: float
    bit_s: float
    base_bytes: float
    tile_bytes: float
    fold_bytes: float
    bit_bytes: float
    operand_bytes: float


#: ``simulate``, fitted to this module's own counts (tiles: the bound) of runs measured on
#: the project's 2-core machine (docs/limits.md, "Work")
COST = CostLaw(base_s=1.2, tile_s=14e-6, fold_s=0.3e-6, bit_s=1e-9,
               base_bytes=201 * 2**20, tile_bytes=250, fold_bytes=0, bit_bytes=1 / 16,
               operand_bytes=0.15)  # operands are packed bits: no byte per im2col element
#: ``simulate --timeline``, per tile (bound) of the sparse run: the event log kept and written
#: (the reference trace on ``os``: 19.8 s and 894 MiB with it, 15.7 s and 449 MiB without)
TIMELINE_TILE_S = 6e-6
TIMELINE_TILE_BYTES = 800
#: ``synth``: per mask element written (drawn, packed, compressed); memory: the largest mask
#: drawn (its random numbers), every weight mask (kept across steps), a step's packed masks
SYNTH_COST = CostLaw(base_s=0.5, tile_s=0.0, fold_s=0.0, bit_s=25e-9,
                     base_bytes=100 * 2**20, tile_bytes=0, fold_bytes=0, bit_bytes=1 / 8,
                     operand_bytes=11)


@dataclass(frozen=True)
class Estimate:
    """Counts of one run and what they cost."""

    what: str  # "simulate", "synth", "sweep", ...
    gemms: int
    folds: int  # over every simulation of the run
    tiles: int  # upper bound, over every simulation
    mask_bits: int  # over every simulation
    simulations: int
    cpu_s: float
    peak_bytes: float
    partial: bool = False  # counted until past the limit, not to the end: "at least"

    def describe(self) -> str:
        about = "at least" if self.partial else "about"
        parts = [f"{about} {_duration(self.cpu_s)} of CPU",
                 f"{_bytes(self.peak_bytes)} of memory"]
        counts = [f"{self.simulations:,} simulation(s)" if self.simulations else "",
                  f"{self.gemms:,} GEMMs" if self.gemms else "",
                  f"{self.tiles:,} tiles" if self.tiles else "",
                  f"{self.mask_bits:,} mask bits" if self.mask_bits else ""]
        counts = [c for c in counts if c]
        return ", ".join(parts) + (f" ({', '.join(counts)})" if counts else "")


def _duration(s: float) -> str:
    if s >= 86400 * 365:
        years = s / (86400 * 365)
        return f"{years:,.0f} years" if years >= 10 else f"{years:.1f} years"
    if s >= 86400:
        return f"{s / 86400:,.1f} days"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 60:
        return f"{s / 60:.0f} min"
    return f"{s:.0f} s"


def _bytes(b: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if b >= scale:
            return f"{b / scale:,.1f} {unit}"
    return f"{b / 1024:.0f} KiB"


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _fresh_words(m: int, k: int, n: int, rows: int, cols: int, lanes: int, dataflow: str,
                 caps: tuple[int, int, int], rows_outer: bool) -> tuple[int, int, int]:
    """Upper bounds on the words of A, B and C (written and read back) one group's folds
    fetch in one loop order, as ``dataflows.tiles._folds_*`` keeps operands on chip (a block
    that fits only at the edge is counted as not kept)."""
    cap_a, cap_b, cap_c = caps
    kr = rows * lanes
    if dataflow == "os":
        rf, cf = _cdiv(m, rows), _cdiv(n, cols)
        a_keep = rows * k <= cap_a if rows_outer else m * k <= cap_a
        b_keep = k * n <= cap_b if rows_outer else k * min(cols, n) <= cap_b
        return (m * k * (1 if a_keep else cf), k * n * (1 if b_keep else rf), m * n)
    if dataflow == "ws":
        rf, cf = _cdiv(k, kr), _cdiv(n, cols)
        a_keep = m * min(kr, k) <= cap_a if rows_outer else m * k <= cap_a
        psum = m * n <= cap_c if rows_outer else m * min(cols, n) <= cap_c
        return (m * k * (1 if a_keep else cf), k * n, m * n * (1 if psum else 2 * rf - 1))
    rf, cf = _cdiv(k, kr), _cdiv(m, cols)
    b_keep = min(kr, k) * n <= cap_b if rows_outer else k * n <= cap_b
    psum = m * n <= cap_c if rows_outer else min(cols, m) * n <= cap_c
    return (m * k, k * n * (1 if b_keep else cf), m * n * (1 if psum else 2 * rf - 1))


def gemm_counts(gemm, rows: int, cols: int, lanes: int, dataflow: str, folds_mode: str,
                caps: tuple[int, int, int]) -> tuple[int, int]:
    """(folds, an upper bound on tiles) of one GEMM's dense tile schedule; ``caps`` are the
    half buffers' words of A, B and C (``simulator.run.half_buffer_words``).

    Tiles are bounded twice, and the smaller bound is kept: (1) every fold its own tile, split
    into the chunks its largest fresh operand needs; (2) the merge is next-fit: a tile closes
    only when the next chunk overflows some half buffer, so two tiles in a row hold more than
    one buffer's worth of some operand, and tiles ≤ 2·Σ (fresh words / half buffer) + 1 (with
    a word of rounding per fold and operand)."""
    mp = map_dense(gemm, rows, cols, dataflow, lanes, folds_mode)
    folds = mp.folds * gemm.groups
    m, k, n = gemm.M, gemm.K, gemm.N
    scale = (gemm.stored("A") / (m * k), gemm.stored("B") / (k * n), gemm.stored("C") / (m * n))
    kr = rows * lanes
    # the fresh words of the largest fold of each operand (``dataflows.tiles._folds_*``)
    if dataflow == "os":
        a, b, c = min(rows, m) * k, k * min(cols, n), min(rows, m) * min(cols, n)
    elif dataflow == "ws":
        a, b, c = m * min(kr, k), min(kr, k) * min(cols, n), 2 * m * min(cols, n)
    else:
        a, b, c = min(cols, m) * min(kr, k), min(kr, k) * n, 2 * min(cols, m) * n
    cap = tuple(max(1, int(x)) for x in caps)
    chunks = max(1, *(_cdiv(math.ceil(w * s + 0.5), cp) for w, s, cp
                      in zip((a, b, c), scale, cap, strict=True)))
    chunks = min(chunks, max(1, mp.cycles_per_fold + mp.gemm_overhead))
    merged = 0
    for outer in (False, True):  # whichever loop order the schedule takes
        words = _fresh_words(m, k, n, rows, cols, lanes, dataflow, cap, outer)
        load = sum((w * s * gemm.groups + folds) / cp for w, s, cp
                   in zip(words, scale, cap, strict=True))
        merged = max(merged, 2 * math.ceil(load) + 1)
    return folds, min(folds * chunks, merged)


def estimate_network(layers: Iterable[Layer], batch: int, arch, dataflow: str, phases: str,
                     steps: int = 1, masked: bool = False, baseline: bool = False,
                     extra_simulations: int = 0, what: str = "simulate",
                     timeline: bool = False, startup: bool = True) -> Estimate:
    """The cost of simulating ``layers`` at ``batch`` on ``arch``: ``steps`` simulations (a
    trace's recorded steps; ``masked``: they read masks), plus one dense one with ``baseline``
    (a trace's dense baseline) and ``extra_simulations`` more of the same size (``--explain``'s
    chain). ``timeline``: the sparse run keeps its event log and writes it as a Chrome trace
    (``TIMELINE``). ``startup``: a process of its own (``COST.base_s``); without, a simulation
    run inside another's (a sweep's shared baseline). Unknown dataflows or phases count as
    the most expensive (``train``)."""
    from simulator.run import half_buffer_words

    caps = half_buffer_words(arch)
    order = PHASES.get(phases, PHASES["train"])
    df = dataflow if dataflow in ("os", "ws", "is") else "os"
    low = arch.features.lowering
    gemms = folds = tiles = bits = largest = 0
    for layer in layers:
        for ph in order:
            for g in part_gemms(layer, batch, ph, low, arch.lanes):
                f, t = gemm_counts(g, arch.rows, arch.cols, arch.lanes, df, arch.folds, caps)
                gemms, folds, tiles = gemms + 1, folds + f, tiles + t
                if ph == "fwd":  # the forward's im2col expansion of the input
                    largest = max(largest, g.groups * g.M * (g.k_data or g.K))
            if masked:
                bits += sum(math.prod(layer.operand_shape(r, batch)) for r in _AB_ROLES[ph])
    sims = max(1, steps) + (1 if baseline else 0) + extra_simulations
    dense_sims = sims - max(1, steps) if masked else sims
    cpu = ((COST.base_s if startup else 0.0) + sims * (COST.tile_s * tiles + COST.fold_s * folds)
           + COST.bit_s * bits * (sims - dense_sims))
    peak = (COST.base_bytes + COST.tile_bytes * tiles + COST.fold_bytes * folds
            + COST.bit_bytes * bits + COST.operand_bytes * largest)
    if timeline:  # every step's events are kept to the end
        cpu += TIMELINE_TILE_S * tiles * max(1, steps)
        peak += TIMELINE_TILE_BYTES * tiles * max(1, steps)
    return Estimate(what, gemms * sims, folds * sims, tiles * sims,
                    bits * (sims - dense_sims), sims, cpu, peak)


def combine(estimates: Iterable[Estimate], what: str, partial: bool = False) -> Estimate:
    """Several runs one after another (a sweep's points): the CPU time adds up; the memory is
    the largest run's (each worker is a process of its own). ``partial``: the runs counted
    are only some of them."""
    est = list(estimates)
    if not est:
        return Estimate(what, 0, 0, 0, 0, 0, 0.0, COST.base_bytes)
    return Estimate(what, sum(e.gemms for e in est), sum(e.folds for e in est),
                    sum(e.tiles for e in est), sum(e.mask_bits for e in est),
                    sum(e.simulations for e in est), sum(e.cpu_s for e in est),
                    max(e.peak_bytes for e in est), partial)


def estimate_synth(layers: Iterable[Layer], batch: int, steps: int) -> Estimate:
    """``synth``: every operand mask of every layer (filter, ifmap, grad_out) drawn for each
    step (``SYNTH_COST``)."""
    per_step = largest = weights = 0
    for layer in layers:
        sizes = [math.prod(layer.operand_shape(r, batch)) for r in ("filter", "ifmap",
                                                                    "grad_out")]
        per_step += sum(sizes)
        largest = max(largest, *sizes)
        weights += sizes[0]
    total = per_step * max(1, steps)
    cpu = SYNTH_COST.base_s + SYNTH_COST.bit_s * total
    peak = (SYNTH_COST.base_bytes + SYNTH_COST.bit_bytes * per_step
            + SYNTH_COST.operand_bytes * largest + weights)
    return Estimate("synth", 0, 0, 0, total, 0, cpu, peak)


def available_memory() -> int | None:
    """Bytes the machine can give a new process now (``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_cap() -> int:
    """The memory a run may take without confirmation: ``MAX_MEMORY_BYTES``, or less when the
    machine has less available."""
    avail = available_memory()
    return MAX_MEMORY_BYTES if avail is None else min(MAX_MEMORY_BYTES, avail)


def check(est: Estimate, allow: bool, field: str | None = None,
          source: str | None = None) -> None:
    """Refuse (``InputError``, one line with the estimate and the flag) a run over the limits,
    unless ``allow``. With ``allow``, a run over the machine's available memory is still
    refused: it could only end killed."""
    cap = memory_cap()
    over = []
    if est.cpu_s > MAX_CPU_SECONDS:
        over.append(f"over {_duration(MAX_CPU_SECONDS)} of CPU")
    if est.peak_bytes > cap:
        over.append(f"over the {_bytes(cap)} memory cap")
    if not over:
        return
    if allow:
        avail = available_memory()
        if avail is not None and est.peak_bytes > avail:
            raise InputError(source or est.what, field,
                             f"this {est.what} would need {est.describe()}, more than the "
                             f"{_bytes(avail)} this machine has available; even {ALLOW_FLAG} "
                             "cannot run it here (docs/limits.md)")
        return
    raise InputError(source or est.what, field,
                     f"this {est.what} would need {est.describe()}: {' and '.join(over)}; "
                     f"refused before starting. Add {ALLOW_FLAG} to run it anyway "
                     "(docs/limits.md)")
