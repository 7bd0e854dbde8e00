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


TOP_LAYERS = 20  # per-layer figures: at most this many bars (+1) before layers are grouped
MAX_GROUPS = 24


def _stage_groups(order: list[str]) -> dict[str, str] | None:
    """Layers grouped by a prefix of their dotted module names (``layer1.0.conv1`` ->
    ``layer1.0``, ResNet's blocks; ``encoder.layers.encoder_layer_3.mlp.0`` ->
    ``encoder.layers.encoder_layer_3``): the deepest prefix that gives 3 to ``MAX_GROUPS``
    groups, each group a run of consecutive layers. None when no prefix does."""
    parts = [lay.split(".") for lay in order]
    for depth in range(max(map(len, parts)) - 1, 0, -1):
        keys = [".".join(p[:depth]) for p in parts]
        runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
        if 3 <= len(runs) <= MAX_GROUPS and len(set(runs)) == len(runs):
            size = {k: keys.count(k) for k in runs}
            short = _short_names(runs)
            return {lay: (short[k] if size[k] == 1 else f"{short[k]} ({size[k]})")
                    for lay, k in zip(order, keys, strict=True)}
    return None


def _short_names(keys: list[str]) -> dict[str, str]:
    """Each dotted key by its shortest tail that no other key ends with:
    ``encoder.layers.encoder_layer_3`` -> ``encoder_layer_3``; ``layer1.0`` stays (``0``
    would not tell ``layer2.0`` apart)."""
    out = {}
    for k in keys:
        parts = k.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if not any(o != k and (o == tail or o.endswith("." + tail)) for o in keys):
                out[k] = tail
                break
        else:
            out[k] = k
    return out


def _layer_groups(runs: list[Run]) -> tuple[list[str], dict[str, str], str]:
    """The bars of a per-layer figure: every layer when there are at most ``TOP_LAYERS + 1``;
    else the layers grouped by stage (``_stage_groups``); else the ``TOP_LAYERS`` with the most
    cycles (the largest of each layer's cycles over the runs, dense baselines included) in
    network order, then one bar summing the others. Returns the bar names, each layer's bar, and
    a sentence for the caption (empty when every layer has its bar)."""
    order: list[str] = []
    most: dict[str, float] = {}
    for r in runs:
        g = r.gemms
        n = max(len(r.steps), 1)
        for lay in _layer_order(r):
            if lay not in most and lay not in order:
                order.append(lay)
        cyc = _elapsed(g).groupby(g["Layer"]).sum() / n
        if "Dense Cycles" in g.columns:
            cyc = np.maximum(cyc, g["Dense Cycles"].fillna(0).groupby(g["Layer"]).sum() / n)
        for lay, v in cyc.items():
            most[lay] = max(most.get(lay, 0.0), float(v))
    if len(order) <= TOP_LAYERS + 1:
        return order, {lay: lay for lay in order}, ""
    stages = _stage_groups(order)
    if stages is not None:
        bars = list(dict.fromkeys(stages[lay] for lay in order))
        return bars, stages, (f" The {len(order)} layers are grouped into {len(bars)} stages "
                              "by their module names, in network order; a bar sums its "
                              "layers (their number in brackets).")
    keep = set(sorted(order, key=lambda lay: (-most.get(lay, 0.0), order.index(lay)))
               [:TOP_LAYERS])
    rest = len(order) - TOP_LAYERS
    other = f"other {rest} layers"
    names = {lay: lay if lay in keep else other for lay in order}
    return ([lay for lay in order if lay in keep] + [other], names,
            f" Shown: the {TOP_LAYERS} of {len(order)} layers with the most cycles, in network "
            f"order; the last bar sums the other {rest}.")


def _renamed(df: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    return df.assign(Layer=df["Layer"].map(names).fillna(df["Layer"]))


#: engineering prefixes for axes: (scale, prefix), the largest that keeps the top value >= 1
_PREFIXES = ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""))


def _eng(vmax: float) -> tuple[float, str]:
    """(scale, prefix) for values up to ``vmax``: 4.6e8 -> (1e6, 'M')."""
    for scale, prefix in _PREFIXES:
        if vmax >= scale:
            return scale, prefix
    return 1.0, ""


def cycles_text(cycles: float) -> str:
    """Cycles as a reader says them: ``61.5 k cycles``, ``447 M cycles``."""
    scale, prefix = _eng(cycles)
    return f"{cycles / scale:.3g} {prefix + ' ' if prefix else ''}cycles"


def _eng_axis(ax, vmax: float, unit: str, what: str, axis: str = "y") -> None:
    """Label an axis ``what (M unit)`` and its ticks in that unit: no offset text."""
    from matplotlib.ticker import FuncFormatter

    scale, prefix = _eng(vmax)
    fmt = FuncFormatter(lambda v, _pos: f"{v / scale:g}")
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(fmt)
    sep = " " if prefix and len(unit) > 2 else ""
    label = f"{what} ({prefix}{sep}{unit})" if prefix or unit else what
    (ax.set_ylabel if axis == "y" else ax.set_xlabel)(label)


# ------------------------------------------------------------------------------------------------
def layer_cycles(runs: list[Run]) -> Drawn | None:
    """Per-layer cycles of a training step stacked by phase, dense baseline and sparse run side
    by side (one panel per run)."""
    shown, cut = _first(runs)
    if not shown:
        return None
    layers, names, grouped = _layer_groups(shown)
    fig, axes = _panels(len(shown), width=max(7.0, 0.32 * len(layers) + 2), height=3.8)
    rows = []
    for ax, run in zip(axes, shown, strict=True):
        g = _renamed(run.gemms, names)
        sparse = _per_step_mean(run, g, _elapsed(g), ["Layer", "Phase"])
        has_dense = "Dense Cycles" in g.columns and g["Dense Cycles"].notna().any()
        dense = _per_step_mean(run, g, g["Dense Cycles"], ["Layer", "Phase"]) if has_dense else None
        ov = _renamed(run.compute[run.compute["Phase"].isin(OVERHEAD_PHASES)], names)
        over = (_per_step_mean(run, ov, _elapsed(ov), ["Layer"]) if len(ov)
                else pd.Series(dtype=float))
        x = np.arange(len(layers))
        width = 0.38 if has_dense else 0.7
        top = 0.0
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
                bottom += vals
            top = max(top, float(bottom.max()) if len(bottom) else 0.0)
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
        _eng_axis(ax, top, "cycles", "cycles per training step")
        ax.set_title(run.label + ("  (left: dense baseline, hatched; right: sparse)"
                                  if has_dense else ""), pad=12)
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
                 "on top." + grouped + cut, fig, pd.DataFrame(rows))


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
    ax.annotate("dense baseline", (-2, 1.0), fontsize=7, va="bottom", ha="left")
    ax.set_xlabel("weight sparsity of the trace (%)")
    ax.set_ylabel("training-step speedup over dense (×)")
    ax.set_title(f"Speedup vs sparsity on {with_sp[0].arch}")
    ax.legend(frameon=False, loc="lower right", fontsize=7)
    # the whole sparsity range, and room above the highest point: one run is one point, which
    # must neither fill the axes nor sit on their edge
    ax.set_xlim(-3, 103)
    ax.set_ylim(0, max(1.0, float(table["Training Step Speedup"].max())) * 1.25)
    for line in ax.get_lines():
        line.set_clip_on(False)
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
        top = 0.0
        steps: dict[str, float] = {}
        speed: dict[str, float] = {}
        first_row = len(rows)
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
            top = max(top, *sp, *(d for d in dn if not np.isnan(d)))
            steps[run.dataflow] = sp[-1]
            if has_dense and sp[-1]:
                speed[run.dataflow] = dn[-1] / sp[-1]
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
        _eng_axis(ax, top, "cycles", "cycles per training step")
        best = min(steps, key=lambda k: steps[k])
        scale, prefix = _eng(steps[best])
        sp_best = f", {speed[best]:.2f}× its dense" if best in speed else ""
        ax.set_title(f"{grp[0].model}, {grp[0].label.split(' · ')[0]} on {arch}, {memory} "
                     f"memory (labels: speedup over dense)\nfastest: {best}, "
                     f"{steps[best] / scale:.3g} {prefix} cycles per step{sp_best}",
                     pad=12, fontsize=9)
        ax.set_ylim(top=top * 1.12)
        ax.legend(ncols=len(grp), frameon=False, fontsize=7)
        for r in rows[first_row:]:
            r["Fastest"] = r["Dataflow"] == best if r["Phase"] == "step" else None
    fig.tight_layout()
    return Drawn("dataflow_comparison", "Dataflow comparison",
                 "Cycles per phase and per training step for each dataflow on the same trace "
                 "and architecture: solid bars the sparse run, hatched bars its dense baseline; "
                 "the label over each pair is the speedup over that dataflow's own dense "
                 "baseline, so rank dataflows by their cycles (the title names the fastest), "
                 "not by their speedups." + cut, fig, pd.DataFrame(rows))


# ------------------------------------------------------------------------------------------------
def stall_attribution(runs: list[Run]) -> Drawn | None:
    """Per layer, the cycles of a training step split into compute and each stall cause."""
    shown, cut = _first(runs)
    if not shown:
        return None
    layers, names, grouped = _layer_groups(shown)
    fig, axes = _panels(len(shown), width=max(7.0, 0.32 * len(layers) + 2), height=3.8)
    rows = []
    parts = {"compute": "Compute Cycles", **STALL_CAUSE_COLUMNS}
    for ax, run in zip(axes, shown, strict=True):
        g = _renamed(run.gemms, names)
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
        _eng_axis(ax, float(bottom.max()) if len(bottom) else 0.0, "cycles",
                  "cycles per training step")
        ax.set_title(f"{run.label}: where the cycles go ({run.memory} memory)", pad=12)
    _top_legend(fig, *axes[0].get_legend_handles_labels())
    return Drawn("stall_attribution", "Stall attribution",
                 "Cycles of one training step per layer (all three phases), split into compute "
                 "and stalls by cause (docs/metrics.md defines each cause)." + grouped + cut, fig,
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
        clock = float(run.summary.get("clock_ghz") or 1.0)  # absent or null: 1 GHz
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
    from matplotlib.ticker import FuncFormatter

    span = max(float(r["Start (us)"]) for r in rows) if rows else 0.0
    unit, div = (("s", 1e6) if span >= 1e7 else ("ms", 1e3) if span >= 1e4 else ("µs", 1.0))
    for ax in axes:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v / div:g}"))
        ax.set_xlabel(f"time into the training step ({unit})", fontsize=7)
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
    shown, cut = _first([r for r in runs if {"Actual Computes", "DRAM Bytes"}
                         <= set(r.compute.columns)])
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
        ax.set_ylim(bottom=0.7)  # from one fold up: a bar of 1 is visible, none starts mid-air
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
            _eng_axis(ax, float(pts["Cycles"].max()), "cycles", "cycles per training step")
            ax.set_ylim(bottom=0, top=float(pts["Cycles"].max()) * 1.15)
    axes[-1].set_xlabel(_axis_label(x_axis))
    title = sweep.description.get("name")
    title = title if isinstance(title, str) and title else sweep.path.name
    best = pts.loc[pts["Cycles"].idxmin()]
    where = ", ".join(f"{a}={best[a]}" for a in sweep.axes) or str(best["Point"])
    bx = best[x_axis] if x_axis in numeric else str(best[x_axis])
    axes[-1].plot([bx], [best["Cycles"]], marker="*", markersize=11, color="black",
                  linestyle="none", zorder=5, clip_on=False)
    sp_best = (f", {best['Speedup']:.2f}× its dense" if has_speedup
               and pd.notna(best.get("Speedup")) else "")
    axes[0].set_title(f"Sweep {title}: {len(pts)} points\nfastest (★): {where}, "
                      f"{cycles_text(float(best['Cycles']))} per step{sp_best}", fontsize=9)
    pts = pts.assign(Fastest=pts.index == best.name)
    handles, labels = axes[0].get_legend_handles_labels()
    if len(labels) > 1:  # below the axes: the labels name every other axis and can be long
        fig.set_figheight(fig.get_figheight() + 0.2 * len(labels))
        fig.legend(handles, labels, loc="lower center", ncols=1, frameon=False, fontsize=7)
        fig.tight_layout(rect=(0, (0.2 * len(labels) + 0.1) / fig.get_figheight(), 1, 1))
    else:
        fig.tight_layout()
    what = ("Training-step speedup over each point's own dense baseline (top) and cycles of a "
            "training step (bottom; the fastest point, starred and named in the title, is the "
            "lowest)" if has_speedup else "Cycles of a training step (the fastest starred)")
    return Drawn(fig_name or f"sweep_{sweep.path.name}", f"Sweep {title}",
                 f"{what} for each point of the sweep against '{x_axis}'; one line per "
                 "combination of the other axes (first 12).", fig, pts)


# ------------------------------------------------------------------------------------------------
def _wrap(text: str, width: int = 16) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def attribution_waterfall(runs: list[Run]) -> Drawn | None:
    """The speedup attribution of each run that has one (``ATTRIBUTION.csv``): cycles per step
    after each step of the chain, as a waterfall."""
    shown, cut = _first([r for r in runs if r.attribution is not None and len(r.attribution)])
    if not shown:
        return None
    fig, axes = _panels(len(shown), width=7.0, height=3.6)
    rows = []
    for ax, run in zip(axes, shown, strict=True):
        at = run.attribution.reset_index(drop=True)
        cyc = at["Cycles per Step"].to_numpy(dtype=float)
        top = float(cyc.max()) * 1.18
        steps = at[at["Kind"] == "step"].index.tolist()
        for i, r in at.iterrows():
            c = cyc[i]
            if r["Kind"] == "reference":
                ax.bar(i + 0.3, c, 0.6, color="white", hatch="////", edgecolor="black",
                       linewidth=0.6)
                label = f"{c / _eng(top)[0]:.3g}"
            elif i == 0 or i == steps[-1]:
                ax.bar(i, c, 0.6, color=GREYS[0] if i else GREYS[2], edgecolor="black",
                       linewidth=0.6)
                label = f"{c / _eng(top)[0]:.3g}"
            else:
                prev = cyc[i - 1]
                gain = c < prev
                ax.bar(i, c - prev, 0.6, bottom=prev, color=GREYS[3] if gain else GREYS[1],
                       hatch="" if gain else "xx", edgecolor="black", linewidth=0.6)
                ax.plot([i - 1 + 0.3, i - 0.3], [prev, prev], color="black", linewidth=0.5,
                        linestyle=":")
                label = f"{c / _eng(top)[0]:.3g}"
            if r["Kind"] == "step" and not pd.isna(r["Factor"]):
                label += f"\nstep ×{r['Factor']:.2f}"
            label += f"\n{r['Speedup over Dense']:.2f}× dense"
            x = i + (0.3 if r["Kind"] == "reference" else 0)
            ax.annotate(label, (x, max(c, cyc[i - 1] if i and r["Kind"] == "step" else c)),
                        fontsize=6, ha="center", va="bottom", xytext=(0, 2),
                        textcoords="offset points")
            rows.append({"Run": run.label, **r.to_dict()})
        if len(steps) > 1 and steps[-1] > 0:  # the last step: also drawn as its change
            i = steps[-1]
            prev = cyc[i - 1]
            ax.bar(i, cyc[i] - prev, 0.6, bottom=prev, fill=False, edgecolor="black",
                   linewidth=0.6, linestyle="--")
        names = [_wrap(str(c), 14) if k == "step" else _wrap("dense baseline, memory as "
                                                             "modeled", 14)
                 for c, k in zip(at["Configuration"], at["Kind"], strict=True)]
        pos = [i + (0.3 if k == "reference" else 0) for i, k in enumerate(at["Kind"])]
        ax.set_xticks(pos, names, fontsize=7)
        if (at["Kind"] == "reference").any():
            ax.axvline(len(at) - 1.5 + 0.15, color="black", linewidth=0.5)
        ax.set_ylim(0, top * 1.1)
        ax.set_xlabel("step of the attribution chain (each a simulation)")
        _eng_axis(ax, top, "cycles", "cycles per training step")
        ax.set_title(f"{run.label} on {run.arch}: where the speedup comes from and goes",
                     fontsize=9)
    fig.tight_layout()
    return Drawn("attribution_waterfall", "Speedup attribution",
                 "Each bar is a simulation that was run (sparsesim simulate --explain, "
                 "ATTRIBUTION.csv): from the dense array with ideal memory, each step adds one "
                 "feature or limit — the sparse compute features (ideal memory), then memory as "
                 "modeled, then each compressed format — and shows the cycles of a training step "
                 "after it (light: cycles saved, dark and crossed: cycles added), the step's "
                 "factor and the speedup over the dense baseline with the same memory model. "
                 "The last full dark bar is the run as configured; the hatched bar right of the "
                 "line is the dense baseline with memory as modeled, the reference of the run's "
                 "reported speedup." + cut, fig, pd.DataFrame(rows))


def _spec(run: Run, *keys: str) -> float | None:
    """A number of the run's recorded architecture (``summary.json``'s ``arch_spec``)."""
    v: object = run.summary.get("arch_spec") or {}
    for k in keys:
        v = v.get(k) if isinstance(v, dict) else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _energy_parts(run: Run) -> tuple[list[float], list[float] | None]:
    """(MAC, SRAM, DRAM) energy in pJ of one training step: the run's, and its dense
    baseline's (from summary.json's baseline: MACs × mac_pj, DRAM bytes × dram_pj_per_byte, SRAM
    the rest of its total), or None without a baseline."""
    c = run.compute
    n = max(len(run.steps), 1)
    cols = ("Energy MAC (pJ)", "Energy SRAM (pJ)", "Energy DRAM (pJ)")
    sparse = [float(c[k].fillna(0).sum()) / n if k in c.columns else 0.0 for k in cols]
    base = run.summary.get("baseline_per_step")
    mac_pj, dram_pj = _spec(run, "energy", "mac_pj"), _spec(run, "energy", "dram_pj_per_byte")
    if not base or mac_pj is None or dram_pj is None or "Algorithmic Computes" not in c.columns:
        return sparse, None
    g = run.gemms
    mac = float(g["Algorithmic Computes"].fillna(0).sum()) / n * mac_pj
    dram = float(base["dram_bytes"]) * dram_pj
    return sparse, [mac, max(float(base["energy_pj"]) - mac - dram, 0.0), dram]


def energy_breakdown(runs: list[Run]) -> Drawn | None:
    """Energy of a training step by component, the dense baseline beside each run."""
    shown, cut = _first([r for r in runs if "Energy (pJ)" in r.compute.columns], "runs")
    if not shown:
        return None
    parts = [_energy_parts(r) for r in shown]
    vmax = max(max(sum(s), sum(d) if d else 0.0) for s, d in parts)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(shown) + 2.5), 3.6))
    names = ("MAC", "SRAM", "DRAM")
    rows = []
    for i, (run, (sp, dn)) in enumerate(zip(shown, parts, strict=True)):
        for side, vals in ((0, dn), (1, sp)):
            if vals is None:
                continue
            bottom = 0.0
            for j, v in enumerate(vals):
                ax.bar(i + (side - 0.5) * 0.38, v, 0.36, bottom=bottom, color=GREYS[j],
                       hatch="////" if side == 0 else "", edgecolor="black", linewidth=0.5,
                       label=names[j] if (i, side) == (0, 1) else None)
                bottom += v
            rows += [{"Run": run.label, "Side": "dense baseline" if side == 0 else "sparse",
                      "Part": names[j], "Energy uJ per Step": v / 1e6}
                     for j, v in enumerate(vals)]
        if dn and sum(sp):
            ax.annotate(f"{sum(dn) / sum(sp):.2f}× less" if sum(sp) < sum(dn)
                        else f"{sum(sp) / sum(dn):.2f}× more", (i, max(sum(sp), sum(dn))),
                        fontsize=7, ha="center", va="bottom")
    ax.bar(0, 0, 0, color="white", hatch="////", edgecolor="black", label="dense baseline")
    ax.set_ylim(0, vmax * 1.15)
    # µJ: energy_pj / 1e6; the axis prefix on top of µJ (k µJ = mJ) is spelled as mJ / J
    scale, prefix = _eng(vmax / 1e6)
    unit = {"": "µJ", "k": "mJ", "M": "J", "G": "kJ"}[prefix]
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v / 1e6 / scale:g}"))
    ax.set_ylabel(f"energy per training step ({unit})")
    _per_run_axes(ax, shown, 4)
    fig.tight_layout()
    return Drawn("energy_breakdown", "Energy breakdown",
                 "Energy of one training step by component: MAC operations, SRAM reads and "
                 "writes of the array, DRAM transfers (docs/metrics.md). Left, hatched: the dense "
                 "baseline (MACs × mac_pj, DRAM bytes × dram_pj_per_byte, SRAM the rest of its "
                 "total in summary.json); right: the sparse run (its gated MACs at "
                 "mac_gated_pj)." + cut, fig, pd.DataFrame(rows))


def _per_run_axes(ax, shown: list[Run], ncols: int, above: float = 1.14) -> None:
    """One group of bars per run: the runs' names under them, the legend above the axes."""
    ax.set_xticks(range(len(shown)), [_wrap(r.label, 18) for r in shown], fontsize=7)
    ax.set_xlabel("run")
    ax.legend(frameon=False, fontsize=7, ncols=ncols, loc="upper center",
              bbox_to_anchor=(0.5, above))


def utilization(runs: list[Run]) -> Drawn | None:
    """How busy the MAC array is over a training step: dense baseline, sparse run executed
    and effectual MACs, each over the run's cycles × peak MACs per cycle."""
    shown, cut = _first([r for r in runs if "Actual Computes" in r.compute.columns])
    if not shown:
        return None
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(shown) + 2.5), 3.4))
    measures = ("dense baseline: dense MACs", "sparse: executed MACs",
                "sparse: effectual MACs")
    rows = []
    for i, run in enumerate(shown):
        g = run.gemms
        n = max(len(run.steps), 1)
        peak, _bw = _peaks(run)
        cyc = float(_elapsed(run.compute).sum()) / n
        base = run.summary.get("baseline_per_step")
        algo = float(g["Algorithmic Computes"].sum()) / n
        vals = [100 * algo / (base["cycles"] * peak) if base and peak else np.nan,
                100 * float(g["Actual Computes"].sum()) / n / (cyc * peak) if peak else np.nan,
                100 * float(g["Effectual Computes"].sum()) / n / (cyc * peak)
                if peak and "Effectual Computes" in g.columns else np.nan]
        for j, v in enumerate(vals):
            ax.bar(i + (j - 1) * 0.27, 0 if np.isnan(v) else v, 0.25, **_style(j),
                   label=measures[j] if i == 0 else None)
            if not np.isnan(v):
                ax.annotate(f"{v:.0f}", (i + (j - 1) * 0.27, v), fontsize=6, ha="center",
                            va="bottom")
            rows.append({"Run": run.label, "Measure": measures[j], "Utilization %": v})
    ax.set_ylabel("MAC array utilization (%)")
    ax.set_ylim(0, 115)
    _per_run_axes(ax, shown, 3)
    fig.tight_layout()
    return Drawn("utilization", "MAC array utilization",
                 "MACs over a training step's cycles × the array's peak MACs per cycle: the "
                 "dense baseline's (every MAC), and the sparse run's executed MACs (what the "
                 "multipliers did) and effectual MACs (both operands nonzero). The gap between "
                 "the last two is work on zeros the array could not skip; the gap to 100 % is "
                 "stalls, fill/drain and idle PEs." + cut, fig, pd.DataFrame(rows))


def traffic_by_operand(runs: list[Run]) -> Drawn | None:
    """DRAM traffic of a training step by operand role, the dense baseline's total beside."""
    need = ("DRAM IFMAP Reads", "DRAM Filter Reads", "DRAM OFMAP Reads", "DRAM OFMAP Writes",
            "A Role", "B Role")
    shown, cut = _first([r for r in runs if all(c in r.compute.columns for c in need)])
    if not shown:
        return None
    roles = ("ifmap", "filter", "grad_out", "outputs")
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(shown) + 2.5), 3.6))
    rows = []
    vmax = 0.0
    for i, run in enumerate(shown):
        g = run.gemms
        n = max(len(run.steps), 1)
        wb = {b: _spec(run, "word_bytes", b) or 1.0 for b in ("ifmap", "filter", "ofmap")}
        by = dict.fromkeys(roles, 0.0)
        for role, v in (g["DRAM IFMAP Reads"] * wb["ifmap"]).groupby(g["A Role"]).sum().items():
            by[role if role in by else "outputs"] += float(v)
        for role, v in (g["DRAM Filter Reads"] * wb["filter"]).groupby(g["B Role"]).sum().items():
            by[role if role in by else "outputs"] += float(v)
        by["outputs"] += float((g["DRAM OFMAP Reads"] + g["DRAM OFMAP Writes"]).sum()) * wb["ofmap"]
        bottom = 0.0
        for j, role in enumerate(roles):
            v = by[role] / n
            ax.bar(i + 0.19, v, 0.36, bottom=bottom, **_style(j),
                   label=role if i == 0 else None)
            bottom += v
            rows.append({"Run": run.label, "Operand": role, "DRAM MB per Step": v / 1e6})
        base = run.summary.get("baseline_per_step")
        vmax = max(vmax, bottom, float(base["dram_bytes"]) if base else 0.0)
        if base:
            ax.bar(i - 0.19, base["dram_bytes"], 0.36, color="white", hatch="////",
                   edgecolor="black", linewidth=0.5,
                   label="dense baseline (all operands)" if i == 0 else None)
            rows.append({"Run": run.label, "Operand": "dense baseline, all",
                         "DRAM MB per Step": base["dram_bytes"] / 1e6})
            ax.annotate(f"{bottom / base['dram_bytes']:.2f}× dense", (i, max(bottom,
                        base["dram_bytes"])), fontsize=7, ha="center", va="bottom")
    ax.set_ylim(0, vmax * 1.15)
    _eng_axis(ax, vmax, "B", "DRAM traffic per training step")
    _per_run_axes(ax, shown, 3, above=1.2)
    fig.tight_layout()
    return Drawn("traffic_by_operand", "DRAM traffic by operand",
                 "DRAM bytes of one training step by the operand moved: activations (ifmap), "
                 "weights (filter), output gradients (grad_out) read into the buffers, and "
                 "outputs (results and partial sums of ofmap, grad_in, grad_w, read back and "
                 "written); hatched: the dense baseline's total. A sparse operand stored dense "
                 "(no sparse.formats) moves as many bytes as dense." + cut, fig,
                 pd.DataFrame(rows))


def run_cycles(runs: list[Run]) -> Drawn | None:
    """Cycles of a training step per run, compute and each stall cause, with its verdict."""
    from reports.verdict import HEADLINE, bound

    shown, cut = _first(runs)
    if not shown:
        return None
    fig, ax = plt.subplots(figsize=(7.0, 0.9 + 0.45 * len(shown)))
    parts = {"compute": "Compute Cycles", **STALL_CAUSE_COLUMNS}
    rows = []
    vmax = 0.0
    for i, run in enumerate(shown):
        c = run.compute
        n = max(len(run.steps), 1)
        left = 0.0
        for j, (name, col) in enumerate(parts.items()):
            v = float(c[col].fillna(0).sum()) / n if col in c.columns else 0.0
            ax.barh(i, v, 0.6, left=left, **_style(j), label=name if i == 0 else None)
            left += v
            rows.append({"Run": run.label, "Part": name, "Cycles per Step": v})
        b, share = bound(c)
        ax.annotate(f" {HEADLINE[b]} ({100 * share:.0f} %)", (left, i), fontsize=7,
                    va="center")
        vmax = max(vmax, left)
    ax.set_yticks(range(len(shown)), [r.label for r in shown], fontsize=7)
    ax.set_ylabel("run")
    ax.invert_yaxis()
    ax.set_xlim(0, vmax * 1.45)
    _eng_axis(ax, vmax, "cycles", "cycles per training step", axis="x")
    ax.legend(frameon=False, fontsize=7, ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    return Drawn("run_cycles", "Cycles and stalls per run",
                 "Cycles of one training step of each run, split into compute (the top-K unit's "
                 "overheads included) and stalls by cause; the label names the largest share, "
                 "the run's bound (docs/metrics.md, Verdicts)." + cut, fig, pd.DataFrame(rows))


RUN_FIGURES: tuple[Callable[[list[Run]], Drawn | None], ...] = (
    attribution_waterfall, run_cycles, layer_cycles, speedup_vs_sparsity, dataflow_comparison,
    stall_attribution, energy_breakdown, utilization, traffic_by_operand, dram_bandwidth,
    roofline, load_imbalance, speedup_over_steps,
)
