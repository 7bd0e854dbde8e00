"""The report's figures: each function takes loaded runs (``simulator.results``) and returns a
``Figure`` plus the table it draws, or ``None`` when the runs give nothing to draw.

Conventions, for figures that go into papers: every axis names its quantity and unit; series
differ by grey level *and* by hatch, marker or line style, so a greyscale print keeps them apart;
cycles of a training step are the mean over the recorded steps unless the figure is about steps.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from common.errors import InputError  # noqa: E402
from common.vocab import PHASES  # noqa: E402
from simulator.results import OVERHEAD_PHASES, STALL_CAUSE_COLUMNS, Run, Sweep  # noqa: E402

GREYS = ("#1a1a1a", "#6e6e6e", "#b4b4b4", "#e6e6e6", "#4a4a4a", "#969696")
HATCHES = ("", "///", "...", "xx", "\\\\\\", "++")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")
PHASE_LABEL = {"fwd": "fwd", "bwd_input": "bwd_input", "bwd_weight": "bwd_weight",
               "overhead": "training overheads (top-K, mask updates)"}
MAX_PANELS = 8  # per-run panels of one figure; the caption says when runs were left out


def _first(items: list, what: str = "runs") -> tuple[list, str]:
    """The first MAX_PANELS items and, when some were left out, a sentence saying so."""
    if len(items) <= MAX_PANELS:
        return items, ""
    return items[:MAX_PANELS], (f" Shown: the first {MAX_PANELS} of {len(items)} {what} "
                                "(report fewer directories at a time to see the others).")

plt.rcParams.update({
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "axes.spines.top": False, "axes.spines.right": False, "hatch.linewidth": 0.6,
    "svg.hashsalt": "sparsesim", "figure.dpi": 100,
})


@dataclass
class Drawn:
    """One figure of the report: name (file stem), title, caption, the figure and its table."""

    name: str
    title: str
    caption: str
    figure: Figure
    table: pd.DataFrame


def _style(i: int) -> dict:
    return {"color": GREYS[i % len(GREYS)], "hatch": HATCHES[i % len(HATCHES)],
            "edgecolor": "black", "linewidth": 0.5}


LINE_GREYS = ("#000000", "#5a5a5a", "#8c8c8c", "#2d2d2d", "#a8a8a8")


def _line(i: int) -> dict:
    """Line style ``i``: marker, marker fill and dash pattern tell the first 16 apart without
    colour (series ``i`` and ``i + 8`` share a marker, one filled, one hollow)."""
    return {"color": LINE_GREYS[i % len(LINE_GREYS)],
            "marker": MARKERS[i % len(MARKERS)], "linestyle": LINESTYLES[i % len(LINESTYLES)],
            "markersize": 5, "linewidth": 1.2,
            "markerfacecolor": "white" if (i // len(MARKERS)) % 2 else None}


def _panels(n: int, width: float = 7.0, height: float = 3.0, sharey: bool = False):
    fig, axes = plt.subplots(n, 1, figsize=(width, height * n), squeeze=False, sharey=sharey)
    return fig, [a[0] for a in axes]


def _top_legend(fig: Figure, handles, labels) -> None:
    """One legend above all panels, outside the plotting area."""
    height = fig.get_figheight()
    fig.legend(handles, labels, loc="upper center", ncols=min(len(labels), 4), frameon=False)
    rows = -(-len(labels) // 4)
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.22 * rows + 0.1) / height))


def _elapsed(df: pd.DataFrame) -> pd.Series:
    return df["Compute Cycles"] + df["Stall Cycles"]


def _per_step_mean(run: Run, df: pd.DataFrame, value: pd.Series, by: list[str]) -> pd.Series:
    """Sum ``value`` over the rows of each (step, *by) and average over the run's steps."""
    n = max(len(run.steps), 1)
    return value.groupby([df[c] for c in by]).sum() / n


def _layer_order(run: Run) -> list[str]:
    g = run.gemms
    return list(g.sort_values("LayerID")["Layer"].drop_duplicates())


# ------------------------------------------------------------------------------------------------
def layer_cycles(runs: list[Run]) -> Drawn | None:
    """Per-layer cycles of a training step stacked by phase, dense baseline and sparse run side
    by side (one panel per run)."""
    shown, cut = _first(runs)
    if not shown:
        return None
    fig, axes = _panels(len(shown), width=max(7.0, 0.45 * len(_layer_order(shown[0])) + 2))
    rows = []
    for ax, run in zip(axes, shown, strict=True):
        layers = _layer_order(run)
        g = run.gemms
        sparse = _per_step_mean(run, g, _elapsed(g), ["Layer", "Phase"])
        has_dense = "Dense Cycles" in g.columns and g["Dense Cycles"].notna().any()
        dense = _per_step_mean(run, g, g["Dense Cycles"], ["Layer", "Phase"]) if has_dense else None
        ov = run.compute[run.compute["Phase"].isin(OVERHEAD_PHASES)]
        over = (_per_step_mean(run, ov, _elapsed(ov), ["Layer"]) if len(ov)
                else pd.Series(dtype=float))
        x = np.arange(len(layers))
        width = 0.38 if has_dense else 0.7
        for side, (series, offset) in enumerate(
                ((dense, -width / 2), (sparse, width / 2)) if has_dense else ((sparse, 0.0),)):
            bottom = np.zeros(len(layers))
            for pi, ph in enumerate(PHASES):
                vals = np.array([series.get((lay, ph), 0.0) for lay in layers], dtype=float)
                ax.bar(x + offset, vals, width, bottom=bottom, color=GREYS[pi],
                       hatch="////" if (has_dense and side == 0) else "", edgecolor="black",
                       linewidth=0.4)
                bottom += vals
            if side == (1 if has_dense else 0) and len(over):
                vals = np.array([over.get(lay, 0.0) for lay in layers], dtype=float)
                ax.bar(x + offset, vals, width, bottom=bottom, color="white", hatch="xx",
                       edgecolor="black", linewidth=0.4)
        for lay in layers:
            for ph in PHASES:
                if (lay, ph) in sparse.index:
                    rows.append({"Run": run.label, "Layer": lay, "Phase": ph,
                                 "Cycles": float(sparse[(lay, ph)]),
                                 "Dense Cycles": float(dense[(lay, ph)]) if has_dense else None})
            if lay in over.index:
                rows.append({"Run": run.label, "Layer": lay, "Phase": "overhead",
                             "Cycles": float(over[lay]), "Dense Cycles": 0.0})
        ax.set_xticks(x, layers, rotation=60, ha="right", fontsize=7)
        ax.set_xlabel("layer")
        ax.set_ylabel("cycles per training step")
        ax.set_title(run.label + ("  (left: dense baseline, hatched; right: sparse)"
                                  if has_dense else ""), pad=12)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=GREYS[i], edgecolor="black", linewidth=0.4)
               for i in range(len(PHASES))]
    labels = [PHASE_LABEL[p] for p in PHASES]
    if any(r.compute["Phase"].isin(OVERHEAD_PHASES).any() for r in shown):
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", hatch="xx",
                                     edgecolor="black", linewidth=0.4))
        labels.append(PHASE_LABEL["overhead"])
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="white", hatch="////",
                                 edgecolor="black", linewidth=0.4))
    labels.append("dense baseline")
    _top_legend(fig, handles, labels)
    return Drawn("layer_cycles", "Cycles per layer and phase",
                 "Cycles of one training step per layer, stacked by phase (mean over the recorded "
                 "steps). Left bar: the dense baseline (same layers, batch, architecture and "
                 "dataflow, masks dropped); right bar: the sparse run, with its training overheads "
                 "on top." + cut, fig, pd.DataFrame(rows))


# ------------------------------------------------------------------------------------------------
def _check_one_arch(runs: list[Run], what: str) -> None:
    archs = sorted({r.arch for r in runs})
    if len(archs) > 1:
        first = {a: next(r for r in runs if r.arch == a) for a in archs}
        listing = ", ".join(f"{first[a].path} ({a})" for a in archs)
        raise InputError("RESULT_DIR", "arch",
                         f"results from different architectures on one {what}: {listing}; "
                         "a speedup is only defined against a dense baseline on the same "
                         "architecture, so report them separately")


def speedup_vs_sparsity(runs: list[Run]) -> Drawn | None:
    """Training-step speedup over dense against the trace's sparsity, one line per method (and
    per dataflow / memory mode when those vary)."""
    with_sp = [r for r in runs if r.speedup]
    if not with_sp:
        return None
    _check_one_arch(with_sp, "speedup figure")
    extra = [a for a in ("dataflow", "memory", "model")
             if len({getattr(r, a) for r in with_sp}) > 1]
    rows = [{"Method": r.method, **{a.capitalize(): getattr(r, a) for a in extra},
             "Sparsity %": 100 * r.sparsity, "Training Step Speedup": r.speedup["training_step"],
             **{f"{ph} Speedup": r.speedup["per_phase"].get(ph) for ph in PHASES},
             "Run": r.label} for r in with_sp]
    table = pd.DataFrame(rows).sort_values(["Method", *[a.capitalize() for a in extra],
                                            "Sparsity %"]).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    keys = ["Method", *[a.capitalize() for a in extra]]
    others = [k for k in keys if k != "Method"]
    dense = table[table["Method"] == "dense"]
    sparse_methods = set(table["Method"]) - {"dense"}
    for i, (key, grp) in enumerate(table.groupby(keys, sort=True)):
        key = key if isinstance(key, tuple) else (key,)
        name = " · ".join(str(k) for k in key)
        if key[0] == "dense" and sparse_methods:
            continue  # drawn as the 0 % point of every method's line (open marker, dotted)
        if len(dense):  # the dense-trained run of the same dataflow etc. starts the line
            same = dense
            for col, val in zip(others, key[1:], strict=True):
                same = same[same[col] == val]
            if len(same):
                start = same.iloc[[0]]
                ax.plot([*start["Sparsity %"], grp["Sparsity %"].iloc[0]],
                        [*start["Training Step Speedup"], grp["Training Step Speedup"].iloc[0]],
                        color=_line(i)["color"], linestyle=":", linewidth=0.8)
                ax.plot(start["Sparsity %"], start["Training Step Speedup"], marker="o",
                        markerfacecolor="white", markeredgecolor="black", linestyle="none",
                        markersize=6, zorder=1)
        style = _line(i)
        if len(grp) == 1:  # one point: a marker, no line in the plot or the legend
            style["linestyle"] = "none"
        ax.plot(grp["Sparsity %"], grp["Training Step Speedup"], label=name, **style)
    if len(dense) and sparse_methods:
        ax.plot([], [], marker="o", markerfacecolor="white", markeredgecolor="black",
                linestyle=":", color="black", label="dense-trained (0 %)")
    ax.axhline(1.0, color="black", linewidth=0.6, linestyle=":")
    ax.annotate("dense baseline", (ax.get_xlim()[1], 1.0), fontsize=7, va="bottom", ha="right")
    ax.set_xlabel("weight sparsity of the trace (%)")
    ax.set_ylabel("training-step speedup over dense (×)")
    ax.set_title(f"Speedup vs sparsity on {with_sp[0].arch}")
    ax.legend(frameon=False)
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    return Drawn("speedup_vs_sparsity", "Training speedup vs sparsity",
                 "Speedup of a whole training step (fwd + bwd_input + bwd_weight + training "
                 "overheads) over the dense baseline, against the nominal weight sparsity of the "
                 "trace; one line per method (and dataflow, memory or model where those vary). A "
                 "dense-trained trace is the 0 % point, joined to each line by a dotted segment: "
                 "its speedup comes from the zeros ReLU leaves in activations and gradients.",
                 fig, table)


# ------------------------------------------------------------------------------------------------
def dataflow_comparison(runs: list[Run]) -> Drawn | None:
    """For each workload simulated with several dataflows on one architecture: cycles per phase
    for each dataflow, sparse and dense."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault((r.trace_key, r.arch, r.memory), []).append(r)
    groups = {k: v for k, v in groups.items() if len({r.dataflow for r in v}) > 1}
    if not groups:
        return None
    shown, cut = _first(list(groups.items()), "workloads")
    fig, axes = _panels(len(shown), width=7.0, height=3.2)
    rows = []
    cats = [*PHASES, "step"]
    for ax, ((_key, arch, memory), grp) in zip(axes, shown, strict=True):
        grp = sorted(grp, key=lambda r: ("os", "ws", "is").index(r.dataflow)
                     if r.dataflow in ("os", "ws", "is") else 9)
        n = len(grp)
        width = 0.8 / (2 * n)
        x = np.arange(len(cats))
        for i, run in enumerate(grp):
            g = run.gemms
            ov = run.compute[run.compute["Phase"].isin(OVERHEAD_PHASES)]
            nst = max(len(run.steps), 1)
            sp = [float(_elapsed(g[g["Phase"] == ph]).sum()) / nst for ph in PHASES]
            sp.append(sum(sp) + float(_elapsed(ov).sum()) / nst)
            has_dense = "Dense Cycles" in g.columns
            dn = ([float(g.loc[g["Phase"] == ph, "Dense Cycles"].sum()) / nst for ph in PHASES]
                  if has_dense else [np.nan] * 3)
            dn.append(sum(dn))
            pos = x - 0.4 + width * (2 * i) + width / 2
            st = _style(i)
            ax.bar(pos, sp, width, color=st["color"], edgecolor="black", linewidth=0.5,
                   label=f"{run.dataflow}")
            if has_dense:
                ax.bar(pos + width, dn, width, color="white", hatch=HATCHES[(i % 5) + 1],
                       edgecolor="black", linewidth=0.5,
                       label=f"{run.dataflow} dense baseline")
                for xp, s, d in zip(pos, sp, dn, strict=True):
                    if s > 0:
                        ax.annotate(f"{d / s:.2f}×", (xp + width / 2, max(s, d)), fontsize=6,
                                    ha="center", va="bottom")
            for c, s, d in zip(cats, sp, dn, strict=True):
                rows.append({"Workload": grp[0].label.split(" · ")[0], "Arch": arch,
                             "Memory": memory, "Dataflow": run.dataflow, "Phase": c,
                             "Cycles": s, "Dense Cycles": d,
                             "Speedup": d / s if s and not np.isnan(d) else None})
        ax.set_xticks(x, cats)
        ax.set_xlabel("phase (step: the whole training step incl. overheads)")
        ax.set_ylabel("cycles per training step")
        ax.set_title(f"{grp[0].model}, {grp[0].label.split(' · ')[0]} on {arch}, {memory} "
                     "memory (labels: speedup over dense)", pad=12)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        ax.legend(ncols=len(grp), frameon=False, fontsize=7)
    fig.tight_layout()
    return Drawn("dataflow_comparison", "Dataflow comparison",
                 "Cycles per phase and per training step for each dataflow on the same trace "
                 "and architecture: solid bars the sparse run, hatched bars its dense baseline; "
                 "the label over each pair is the speedup." + cut, fig, pd.DataFrame(rows))


# ------------------------------------------------------------------------------------------------
def stall_attribution(runs: list[Run]) -> Drawn | None:
    """Per layer, the cycles of a training step split into compute and each stall cause."""
    shown, cut = _first(runs)
    if not shown:
        return None
    fig, axes = _panels(len(shown), width=max(7.0, 0.45 * len(_layer_order(shown[0])) + 2))
    rows = []
    parts = {"compute": "Compute Cycles", **STALL_CAUSE_COLUMNS}
    for ax, run in zip(axes, shown, strict=True):
        layers = _layer_order(run)
        g = run.gemms
        x = np.arange(len(layers))
        bottom = np.zeros(len(layers))
        for i, (cause, col) in enumerate(parts.items()):
            if col not in g.columns:
                continue
            s = _per_step_mean(run, g, g[col].fillna(0), ["Layer"])
            vals = np.array([s.get(lay, 0.0) for lay in layers], dtype=float)
            st = _style(i)
            ax.bar(x, vals, 0.7, bottom=bottom, label=cause, **st)
            bottom += vals
            for lay, v in zip(layers, vals, strict=True):
                rows.append({"Run": run.label, "Layer": lay, "Part": cause, "Cycles": v})
        ax.set_xticks(x, layers, rotation=60, ha="right", fontsize=7)
        ax.set_xlabel("layer")
        ax.set_ylabel("cycles per training step")
        ax.set_title(f"{run.label}: where the cycles go ({run.memory} memory)", pad=12)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    _top_legend(fig, *axes[0].get_legend_handles_labels())
    return Drawn("stall_attribution", "Stall attribution",
                 "Cycles of one training step per layer (all three phases), split into compute "
                 "and stalls by cause (docs/metrics.md defines each cause)." + cut, fig,
                 pd.DataFrame(rows))


# ------------------------------------------------------------------------------------------------
def _peaks(run: Run) -> tuple[float | None, float | None]:
    """(peak MACs per cycle, peak DRAM bytes per cycle) of the run's architecture."""
    arr = run.summary.get("array")
    macs = float(np.prod(arr)) if isinstance(arr, list) and arr else None
    # recorded by the run (results older than that field draw no peak line: reports never
    # re-derive what the simulator computed)
    bw = run.summary.get("dram_peak_bytes_per_cycle")
    return macs, bw


def dram_bandwidth(runs: list[Run]) -> Drawn | None:
    """DRAM bandwidth over the time of the first recorded step, one panel per run: from the
    event log's transfers (``DRAM_TIMELINE.csv``, modeled memory), else each GEMM's average."""
    shown, cut = _first([r for r in runs if r.dram_timeline is not None
                         or "DRAM Bytes" in r.compute.columns])
    if not shown:
        return None
    fig, axes = plt.subplots(len(shown), 1, figsize=(7.0, 0.6 + 2.0 * len(shown)),
                             squeeze=False, sharex=True, sharey=True)
    axes = [a[0] for a in axes]
    rows = []
    averaged = False
    for ax, run in zip(axes, shown, strict=True):
        clock = float(run.summary.get("clock_ghz", 1.0))
        st = run.steps[0]
        if run.dram_timeline is not None:
            tl = run.dram_timeline[run.dram_timeline["Step"] == st]
            start = tl["Start Cycle"].to_numpy(dtype=float)
            cyc = (tl["End Cycle"] - tl["Start Cycle"]).to_numpy(dtype=float)
            gbps = tl["DRAM GB/s"].to_numpy(dtype=float)
            names = [f"bin {b}" for b in tl["Bin"]]
            source = "transfers"
        else:
            averaged = True
            df = run.compute[run.compute["Step"] == st]
            cyc = _elapsed(df).to_numpy(dtype=float)
            byt = df["DRAM Bytes"].fillna(0).to_numpy(dtype=float)
            start = np.concatenate([[0.0], np.cumsum(cyc)[:-1]])
            gbps = np.divide(byt, cyc, out=np.zeros_like(byt), where=cyc > 0) * clock
            names = [f"{a} {b}" for a, b in zip(df["Layer"], df["Phase"], strict=True)]
            source = "GEMM average"
        t_us = start / (clock * 1e3)
        end_us = (start[-1] + cyc[-1]) / (clock * 1e3)
        ax.fill_between(np.append(t_us, end_us), np.append(gbps, gbps[-1]), step="post",
                        color=GREYS[2], edgecolor="black", linewidth=0.6)
        _m, peak = _peaks(run)
        if peak:
            ax.axhline(peak * clock, color="black", linewidth=0.8, linestyle="--")
        ax.set_title(f"{run.label}" + (f"  (dashed: DRAM peak {peak * clock:.0f} GB/s)"
                                        if peak else "") + ("" if source == "transfers"
                                                            else "  (GEMM averages)"),
                     fontsize=8, loc="left")
        ax.set_ylabel("DRAM (GB/s)")
        ax.set_ylim(bottom=0)
        rows += [{"Run": run.label, "Step": st, "Span": n, "Start (us)": t, "Cycles": c,
                  "DRAM BW (GB/s)": bw, "Source": source}
                 for n, t, c, bw in zip(names, t_us, cyc, gbps, strict=True)]
    for ax in axes:
        ax.set_xlabel("time into the training step (µs)", fontsize=7)
        ax.tick_params(labelbottom=True)
    fig.tight_layout()
    how = ("reads and writes of the event log in 200 equal bins (each transfer's bytes in its "
           "data phase at peak rate, after queueing and latency)")
    if averaged:
        how += "; runs without a log (ideal memory): the average of each GEMM in turn"
    return Drawn("dram_bandwidth", "DRAM bandwidth over time",
                 f"DRAM bandwidth over the first recorded step of each run: {how}. The dashed "
                 "line is the DRAM peak." + cut, fig, pd.DataFrame(rows))


def roofline(runs: list[Run]) -> Drawn | None:
    """Per layer and phase: executed MACs per cycle against MACs per DRAM byte, under the
    architecture's compute and bandwidth roofs."""
    shown, cut = _first([r for r in runs if "Actual Computes" in r.compute.columns])
    if not shown:
        return None
    cols = min(len(shown), 2)
    nrow = -(-len(shown) // cols)
    fig, axes = plt.subplots(nrow, cols, figsize=(4.2 * cols, 3.6 * nrow), squeeze=False)
    flat = [a for row in axes for a in row]
    rows = []
    for ax, run in zip(flat, shown, strict=False):
        g = run.gemms
        agg = g.groupby(["LayerID", "Layer", "Phase"], sort=True).agg(
            macs=("Actual Computes", "sum"), dram=("DRAM Bytes", "sum"),
            cyc=("Compute Cycles", "sum"), stall=("Stall Cycles", "sum")).reset_index()
        agg["oi"] = agg["macs"] / agg["dram"].where(agg["dram"] > 0)
        agg["perf"] = agg["macs"] / (agg["cyc"] + agg["stall"])
        for i, ph in enumerate(PHASES):
            a = agg[agg["Phase"] == ph]
            ax.scatter(a["oi"], a["perf"], marker=MARKERS[i], s=22,
                       facecolor=GREYS[i] if i != 1 else "white", edgecolor="black",
                       linewidth=0.6, label=ph, zorder=3)
        macs_pc, bw = _peaks(run)
        lo = np.nanmin(agg["oi"]) if agg["oi"].notna().any() else 1.0
        hi = np.nanmax(agg["oi"]) if agg["oi"].notna().any() else 10.0
        xs = np.logspace(np.log10(max(lo / 4, 1e-3)), np.log10(hi * 4), 200)
        if macs_pc and bw:
            ax.plot(xs, np.minimum(macs_pc, bw * xs), color="black", linewidth=1.0,
                    label="roof")
            ax.annotate(f"{macs_pc:.0f} MACs/cycle", (xs[-1], macs_pc), fontsize=7, ha="right",
                        va="bottom")
        elif macs_pc:
            ax.axhline(macs_pc, color="black", linewidth=1.0, label="compute roof")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("operational intensity (executed MACs / DRAM byte)")
        ax.set_ylabel("throughput (executed MACs / cycle)")
        ax.set_title(run.label, fontsize=9)
        ax.legend(frameon=False, fontsize=7)
        for r in agg.itertuples():
            rows.append({"Run": run.label, "Layer": r.Layer, "Phase": r.Phase,
                         "MACs per DRAM Byte": r.oi, "MACs per Cycle": r.perf,
                         "Peak MACs per Cycle": macs_pc, "Peak DRAM Bytes per Cycle": bw})
    for ax in flat[len(shown):]:
        ax.set_visible(False)
    fig.tight_layout()
    return Drawn("roofline", "Per-layer roofline",
                 "Each point is one layer's GEMM in one phase (all recorded steps): MACs the "
                 "array executed per DRAM byte against MACs executed per cycle. The roof is the "
                 "array's peak and the DRAM peak bandwidth times the intensity. Cycles are the "
                 "ones the GEMM is charged (compute and its stalls); its DRAM transfers can "
                 "overlap its neighbours' cycles (the reader prefetches the next GEMM's first "
                 "tiles, the writer drains the last outputs during the next GEMM), so a point "
                 "above the bandwidth roof is a GEMM whose traffic was partly hidden that way."
                 + cut, fig,
                 pd.DataFrame(rows))


# ------------------------------------------------------------------------------------------------
def load_imbalance(runs: list[Run]) -> Drawn | None:
    """Histogram of the load imbalance of the worst layer-phases, over their folds
    (``LOAD_IMBALANCE.csv``, all recorded steps), for the run that loses the largest share."""
    cand = [r for r in runs if r.imbalance is not None and len(r.imbalance)
            and r.imbalance["Imbalance Cycles"].sum() > 0]
    if not cand:
        return None
    run = max(cand, key=lambda r: r.imbalance["Imbalance Cycles"].sum()
              / max(float(_elapsed(r.gemms).sum()), 1.0))
    imb = run.imbalance
    bins = [c for c in imb.columns if c.startswith("Folds ") and c.endswith(" %")]
    per = imb.groupby(["Layer", "Phase"], sort=False)
    worst = per["Imbalance Cycles"].sum().sort_values(ascending=False, kind="stable").head(4)
    worst = worst[worst > 0]
    counts = per[bins].sum()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    lows = np.array([float(b.split()[1].split("-")[0]) for b in bins])
    width = (lows[1] - lows[0]) if len(lows) > 1 else 5.0
    n = len(worst)
    rows = []
    for i, ((lay, ph), cyc) in enumerate(worst.items()):
        c = counts.loc[(lay, ph)].to_numpy(dtype=float)
        ax.bar(lows + width * (i + 0.5) / n, c, width / n, label=f"{lay} {ph}", **_style(i))
        rows += [{"Run": run.label, "Layer": lay, "Phase": ph, "Bin": b, "Folds": int(v),
                  "Imbalance Cycles (all steps)": int(cyc)} for b, v in zip(bins, c, strict=True)]
    ax.set_xlabel("cycles of a fold lost to load imbalance (%)")
    ax.set_ylabel("number of folds (all recorded steps)")
    ax.set_title(f"Load imbalance of the worst layers: {run.label}")
    ax.set_xlim(0, 100)
    if counts.to_numpy().max() > 50:
        ax.set_yscale("log")
        ax.set_ylabel("number of folds (all recorded steps, log scale)")
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return Drawn("load_imbalance", "Load-imbalance histogram",
                 "For the four layer-phases that lose the most cycles to load imbalance: how many "
                 "folds of the array lost what share of their cycles waiting for the slowest "
                 "lane (slowest lane's cycles minus the balanced length, over the fold's "
                 "cycles), summed over the recorded steps.", fig, pd.DataFrame(rows))


# ------------------------------------------------------------------------------------------------
def speedup_over_steps(runs: list[Run]) -> Drawn | None:
    """Speedup per recorded step, for traces with several steps (dynamic sparsity)."""
    multi = [r for r in runs if r.speedup and len(r.steps) > 1]
    if not multi:
        return None
    _check_one_arch(multi, "speedup-over-steps figure")
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    rows = []
    for i, run in enumerate(multi[:8]):
        st = sorted((int(k), float(v)) for k, v in run.speedup["step"].items())
        xs, ys = zip(*st, strict=True)
        ax.plot(xs, ys, label=run.label, **_line(i))
        if len(multi) == 1:  # one run: show the phases too
            g = run.gemms
            for j, ph in enumerate(PHASES):
                p = g[g["Phase"] == ph]
                s = (p.groupby("Step")["Dense Cycles"].sum()
                     / _elapsed(p).groupby(p["Step"]).sum())
                ax.plot(s.index, s.values, label=ph, **_line(j + 1))
                rows += [{"Run": run.label, "Step": int(k), "Phase": ph, "Speedup": float(v)}
                         for k, v in s.items()]
        rows += [{"Run": run.label, "Step": x, "Phase": "training step", "Speedup": y}
                 for x, y in st]
    ax.axhline(1.0, color="black", linewidth=0.6, linestyle=":")
    ax.set_xlabel("training step")
    ax.set_ylabel("speedup over dense (×)")
    ax.set_title("Speedup across training")
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False, fontsize=7, ncols=2)
    fig.tight_layout()
    return Drawn("speedup_over_steps", "Speedup across training steps",
                 "Speedup over the dense baseline at each recorded step of the trace: as the "
                 "masks change during training (SWAT's top-K, RigL/SRigL drop and grow), so does "
                 "the speedup.", fig, pd.DataFrame(rows))


# ------------------------------------------------------------------------------------------------
def sweep_points(sweep: Sweep) -> pd.DataFrame:
    """One row per sweep point: its axis values and training-step totals."""
    t = sweep.table
    t = t.assign(_cyc=t["Compute Cycles"] + t["Stall Cycles"])
    keys = ["Point", *sweep.axes]
    nsteps = t.groupby("Point")["Step"].nunique() if "Step" in t.columns else None
    agg = {"Cycles": ("_cyc", "sum")}
    if "Dense Cycles" in t.columns:
        agg["Dense Cycles"] = ("Dense Cycles", "sum")
    if "DRAM Bytes" in t.columns:
        agg["DRAM Bytes"] = ("DRAM Bytes", "sum")
    pts = t.groupby(keys, dropna=False, sort=False).agg(**agg).reset_index()
    if nsteps is not None:
        n = pts["Point"].map(nsteps).clip(lower=1)
        for c in agg:
            pts[c] = pts[c] / n
    if "Dense Cycles" in pts.columns:
        pts["Speedup"] = pts["Dense Cycles"] / pts["Cycles"]
    return pts


_UNITS = {"relu_sparsity": "fraction of activations zero", "_gbps": "GB/s", ".kib": "KiB",
          "_ghz": "GHz", "_cycles": "cycles", "_bytes": "bytes", "_pj": "pJ",
          "_pj_per_byte": "pJ/byte", "word_bytes": "bytes", ".banks": "banks",
          "per_cycle": "per cycle", "sparsity": "fraction of weights zero", "batch": "samples",
          "rows": "PEs", "cols": "PEs", "lanes": "MACs per PE", "seed": "seed",
          "steps": "recorded steps"}


def _axis_label(name: str) -> str:
    """A sweep axis with its unit, where the key's name says it."""
    if name in ("dataflow", "method", "pattern", "arch", "memory", "phases", "trace", "model",
                "density", "dtype"):
        return name  # a category, no unit
    for key, unit in _UNITS.items():  # a key's ending, or the section it is in
        if name.endswith(key) or name.startswith(key + "."):
            return f"{name} ({unit})"
    return f"{name} (as in the sweep file)"


def sweep_figure(sweep: Sweep, fig_name: str | None = None) -> Drawn | None:
    """The sweep's headline against its first numeric axis, one line per combination of the
    other axes: the speedup over each point's own dense baseline and, below it, the cycles of
    a training step (which point is fastest; speedups against different baselines do not say)."""
    pts = sweep_points(sweep)
    if pts.empty:
        return None
    has_speedup = "Speedup" in pts.columns and pts["Speedup"].notna().any()
    metrics = ["Speedup", "Cycles"] if has_speedup else ["Cycles"]
    numeric = [a for a in sweep.axes if pd.api.types.is_numeric_dtype(pts[a])
               and pts[a].nunique() > 1]
    x_axis = numeric[0] if numeric else (sweep.axes[0] if sweep.axes else "Point")
    others = [a for a in sweep.axes if a != x_axis and pts[a].nunique() > 1]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(6.4, 3.2 * len(metrics)), sharex=True,
                             squeeze=False)
    axes = [a[0] for a in axes]
    groups = list(itertools.islice(pts.groupby(others, sort=True, dropna=False) if others
                                   else [((), pts)], 12))
    for ax, metric in zip(axes, metrics, strict=True):
        for i, (key, grp) in enumerate(groups):
            key = key if isinstance(key, tuple) else (key,)
            name = ", ".join(f"{a}={v}" for a, v in zip(others, key, strict=True)) or metric
            grp = grp.sort_values(x_axis)
            xs = grp[x_axis] if x_axis in numeric else grp[x_axis].astype(str)
            ax.plot(xs, grp[metric], label=name, **_line(i))
        if metric == "Speedup":
            ax.axhline(1.0, color="black", linewidth=0.6, linestyle=":")
            ax.set_ylabel("training-step speedup\nover its dense baseline (×)")
            ax.set_ylim(bottom=0)
        else:
            ax.set_ylabel("cycles per training step")
            ax.set_ylim(bottom=0)
    axes[-1].set_xlabel(_axis_label(x_axis))
    title = sweep.description.get("name")
    title = title if isinstance(title, str) and title else sweep.path.name
    axes[0].set_title(f"Sweep {title}: {len(pts)} points")
    handles, labels = axes[0].get_legend_handles_labels()
    if len(labels) > 1:  # below the axes: the labels name every other axis and can be long
        fig.set_figheight(fig.get_figheight() + 0.2 * len(labels))
        fig.legend(handles, labels, loc="lower center", ncols=1, frameon=False, fontsize=7)
        fig.tight_layout(rect=(0, (0.2 * len(labels) + 0.1) / fig.get_figheight(), 1, 1))
    else:
        fig.tight_layout()
    what = ("Training-step speedup over each point's own dense baseline (top) and cycles of a "
            "training step (bottom; the fastest point is the lowest)" if has_speedup
            else "Cycles of a training step")
    return Drawn(fig_name or f"sweep_{sweep.path.name}", f"Sweep {title}",
                 f"{what} for each point of the sweep against '{x_axis}'; one line per "
                 "combination of the other axes (first 12).", fig, pts)


RUN_FIGURES: tuple[Callable[[list[Run]], Drawn | None], ...] = (
    layer_cycles, speedup_vs_sparsity, dataflow_comparison, stall_attribution, dram_bandwidth,
    roofline, load_imbalance, speedup_over_steps,
)
