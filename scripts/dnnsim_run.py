#!/usr/bin/env python3
"""Run DNNsim's TensorDash model (its authors' own simulator) on one step of a sparsesim trace.

    python scripts/dnnsim_run.py TRACE --dnnsim PATH/TO/DNNsim [--step K] [--work DIR] -o OUT.csv
    python scripts/dnnsim_run.py --make-example DIR      # the small test trace described below

Writes DNNsim's inputs (network description and npy traces) into a work directory (default: a
temporary one; with ``--work`` its ``models``, ``net_traces`` and ``results`` are replaced), runs
the TensorDash "Cycles" task with lanes 16, columns 16, rows 16, lookahead H 2, lookaside D 5,
search shape T, parses DNNsim's statistics file and writes one CSV row per layer and phase:
``layer,phase,compute_cycles,base_compute_cycles,ideal_compute_cycles,images`` (cycles summed
over the step's images; DNNsim simulates each image separately).

DNNsim: github isakedo/DNNsim at commit 2ba5177 (the last one holding core/src/TensorDash.cpp),
built beside the project with two defects fixed and nothing else changed (``defects.patch``):
1. ``channel_first_dilated_convolution`` (stride > 1 bwd_input) schedules the weight buffer when
   the weights are the scheduled side (``if (!schedule_in) tactical_schedule`` on each filter-set
   buffer, as ``channel_first_convolution`` does) and counts weight nonzeros for the ideal time.
2. ``spatial_convolution`` (bwd_weight) takes the activation zero fraction that picks the
   scheduled side over the whole padded activation tensor (``act_shape[2] x act_shape[3]``), not
   over ``act[:, :Ox, :Oy]``.
Build (Debian; about three minutes), beside the project::

    apt-get install cmake g++ libprotobuf-dev protobuf-compiler
    git clone --no-checkout https://github.com/isakedo/DNNsim dnnsim/src && cd dnnsim/src
    git checkout 2ba5177     # then make the two changes above (13 lines) by hand
    cmake -H. -B../build -DCMAKE_BUILD_TYPE=Release
    cmake --build ../build --target DNNsim -- -j2     # the binary is dnnsim/DNNsim

Conventions. DNNsim indexes tensors ``get(n, c, x, y)`` with x = axis 2, walks output windows x
fastest and kernel positions y outer, x inner; here x is the WIDTH axis, so every 4-D tensor is
written with its last two axes swapped: act (N, C, W, H), weights (Cout, Cin, kw, kh), output
gradients (N, Cout, Wo, Ho). A linear layer is first viewed as NCHW with H = tokens, W = 1. DNNsim
takes a tensor whose last two axes are 1 x 1 for a 2-D one and crashes on it in a convolution, so
a 1x1 s1 p0 layer on a 1x1 input (a linear layer with one token) goes through its InnerProduct
path (a layer name holding "fc"), and other layers with a 1x1 input or output are refused.
Values are float32 1.0 where the mask is set, 0.0 elsewhere (DNNsim only tests != 0); a dense
operand is all ones.
Padding: DNNsim pads ``p`` on both sides, or ``p`` before and ``p - 1`` after when the output
size formula is fractional (e.g. 3x3 s2 p1 on an even input); either way its windows start at
``s*o - p`` as PyTorch's do, and its own window-size checks are replicated in ``dnnsim_geometry``.

Which operands: DNNsim reads one weight, activation and output-gradient tensor per layer, while a
trace may give each phase its own masks (SWAT's bwd_weight ifmap differs from fwd's). So fwd runs
as a forward-only network (fwd masks); bwd_weight and bwd_input as a backward-only one (filter of
bwd_input, ifmap and grad_out of bwd_weight), plus one with bwd_input's grad_out where it differs.
DNNsim skips bwd_input of its first layer; those rows are left out. Layers DNNsim refuses (groups,
dilation, non-square kernels, unequal stride or padding; strided bwd_input with odd input sizes)
are reported on stderr and left out; one refused only in bwd_input runs alone as a one-layer
network, so that DNNsim skips that phase instead of aborting the whole run.

Files (DNNsim's "Trace" training input; paths relative to the work directory, where it runs):
``models/NET/trace_params.csv`` (``name,Cout,Kx,Ky,stride,padding`` per layer, in trace order),
``net_traces/NET/{weights,input,outGrad}/NAME-0-0-{w,in,outGrad}.npy`` (float32, C order) and
``batch.prototxt``; DNNsim writes ``results/NET/DynamicTactical_*_cycles.csv``.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common.vocab import PHASES
from traces.format import PHASE_OPERANDS, Manifest, Operand, Trace, TraceWriter
from traces.layers import Layer

STATS = {"fwd": "Forward", "bwd_input": "Backward Input", "bwd_weight": "Backward Weights"}
COLUMNS = ["layer", "phase", "compute_cycles", "base_compute_cycles", "ideal_compute_cycles",
           "images"]
EXPERIMENT = ('architecture: "TensorDash" task: "Cycles" n_lanes: 16 n_columns: 16 n_rows: 16 '
              'lookahead_h: 2 lookaside_d: 5 search_shape: "T"')
DUMMY = "D0000fc"  # a one-channel fc layer put first when the trace's first layer cannot be


def is_fc(layer: Layer) -> bool:
    """Whether DNNsim must see the layer as InnerProduct (every operand 1x1 in space)."""
    return (layer.kernel, layer.stride, layer.padding, layer.input_hw) == ((1, 1), (1, 1), (0, 0),
                                                                          (1, 1))


def dnnsim_name(i: int, layer: Layer) -> str:
    """Layer names given to DNNsim (it derives the layer type from substrings of the name)."""
    return f"L{i:04d}" + ("fc" if is_fc(layer) else "")


def dnnsim_geometry(layer: Layer) -> tuple[str | None, bool, bool, bool]:
    """(why unsupported, fwd ok, bwd_weight ok, bwd_input ok) as TensorDash::run() decides."""
    no = False, False, False
    if layer.groups != 1 or layer.dilation != (1, 1):
        return "grouped or dilated convolution", *no
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
    if kh != kw or sh != sw or ph != pw:
        return "non-square kernel or unequal stride/padding", *no
    if not is_fc(layer) and (1, 1) in (layer.input_hw, layer.out_hw):
        return "1x1 input or output of a convolution, which DNNsim takes for 2-D", *no
    k, s, p = kw, sw, pw
    (ny, nx), (oy, ox) = layer.input_hw, layer.out_hw  # x = width
    asym = int(p > 0 and (nx - k + 2 * p) / s + 1 != ox)  # asym_right_zero_pad
    nxp, nyp = (nx + 2 * p - asym, ny + 2 * p - asym) if p > 0 else (nx, ny)
    fwd = (nxp - k) // s + 1 == ox and (nyp - k) // s + 1 == oy
    pad = (nxp - k) % s
    oxd, oyd = ox + (ox - 1) * (s - 1) + pad, oy + (oy - 1) * (s - 1) + pad
    bww = fwd and nxp - oxd + 1 == k and nyp - oyd + 1 == k
    extra = 2 * (p + s - 1) - asym if p > 0 else (2 * (k - 1) if ox - k + 1 != nx else 0)
    bwi = bww and oxd + extra - k + 1 == nx and oyd + extra - k + 1 == ny
    return None, fwd, bww, bwi


def dnnsim_array(layer: Layer, op: Operand) -> np.ndarray:
    """An operand as DNNsim reads it: NCHW (linear: H = tokens, W = 1), last two axes swapped."""
    a = op.unpack()
    if layer.kind == "linear":
        a = a[:, :, None, None] if op.role == "filter" else a.transpose(0, 2, 1)[..., None]
    return np.ascontiguousarray(np.swapaxes(a, 2, 3), dtype=np.float32)


def same_mask(a: Operand, b: Operand) -> bool:
    if a.dense or b.dense:
        return a.dense and b.dense
    return a.shape == b.shape and np.array_equal(a.mask.bits, b.mask.bits)


def write_network(work: Path, net: str, entries: list, only: str, batch: int) -> str:
    """entries: (dnnsim name, layer, weights, act, out_grad) tuples of Operand (None: dummy).
    Writes models/NET/trace_params.csv and net_traces/NET/*; returns the batch-file block."""
    (work / "models" / net).mkdir(parents=True)
    rows = []
    for name, layer, *ops in entries:
        if layer is None:  # the dummy: fc, one input, one output, all ones
            arrays = [np.ones((1, 1, 1, 1), np.float32)] + [np.ones((batch, 1, 1, 1),
                                                                     np.float32)] * 2
            rows.append(f"{name},1,1,1,1,0")
        else:
            arrays = [dnnsim_array(layer, op) for op in ops]
            k, s, p = layer.kernel[1], layer.stride[1], layer.padding[1]
            rows.append(f"{name},{layer.out_channels},{k},{k},{s},{p}")
        for sub, suffix, arr in zip(("weights", "input", "outGrad"), ("w", "in", "outGrad"),
                                    arrays, strict=True):
            (work / "net_traces" / net / sub).mkdir(parents=True, exist_ok=True)
            np.save(work / "net_traces" / net / sub / f"{name}-0-0-{suffix}.npy", arr)
    (work / "models" / net / "trace_params.csv").write_text("\n".join(rows) + "\n")
    return (f'simulate {{\n  network: "{net}"\n  model: "Trace"\n  data_type: "BFloat16"\n'
            f'  training: true\n  {only}: true\n  epochs: 1\n  batch: 0\n'
            f'  experiment {{ {EXPERIMENT} }}\n}}\n')


def read_stats(work: Path, net: str) -> dict[str, dict[str, int]]:
    """{dnnsim layer name: {stat: value}} of the "... compute cycles" columns of the "Per epoch
    scalar results" table (one epoch: the sums over the images of the step)."""
    files = sorted((work / "results" / net).glob("DynamicTactical_*_cycles.csv"))
    if len(files) != 1:
        raise RuntimeError(f"DNNsim wrote no statistics for network {net!r} (see dnnsim.log)")
    lines = files[0].read_text().splitlines()
    i = lines.index("Per epoch scalar results:")
    header = lines[i + 1].split(",")
    out = {}
    for line in lines[i + 2:]:
        if not line.strip():
            break
        row = dict(zip(header, line.split(","), strict=True))
        out[row["Layer"]] = {k: int(v) for k, v in row.items() if k.endswith("compute cycles")}
    return out


def run(trace_dir: str, dnnsim: str, step: int | None, work: Path, out_csv: str) -> None:
    trace = Trace(trace_dir)
    trace.require_steps()
    sd = trace.read_step(trace.steps[0] if step is None else step)
    batch = trace.manifest.batch_size
    layers = list(trace.manifest.layers)
    dn = [dnnsim_name(i, layer) for i, layer in enumerate(layers)]
    names = dict(zip(dn, (layer.name for layer in layers), strict=True))
    geo = [dnnsim_geometry(layer) for layer in layers]
    for sub in ("models", "net_traces", "results"):
        shutil.rmtree(work / sub, ignore_errors=True)

    def ops(i: int, *spec: tuple[str, str]) -> tuple:
        layer = layers[i]
        return (dn[i], layer, *(sd.layers[layer.name][ph][r] for ph, r in spec))

    fw = ("fwd", "filter"), ("fwd", "ifmap"), ("bwd_weight", "grad_out")
    bw = ("bwd_input", "filter"), ("bwd_weight", "ifmap"), ("bwd_weight", "grad_out")
    bg = ("bwd_input", "filter"), ("bwd_weight", "ifmap"), ("bwd_input", "grad_out")
    blocks, take = [], []  # take: (network, dnnsim layer, phases read from it)
    fwd_idx = [i for i, g in enumerate(geo) if g[1]]
    if fwd_idx:
        blocks.append(write_network(work, "fwd", [ops(i, *fw) for i in fwd_idx], "only_forward",
                                    batch))
        take += [("fwd", dn[i], ("fwd",)) for i in fwd_idx]
    main = [i for i, g in enumerate(geo) if g[2] and (g[3] or i == 0)]
    solo = [i for i, g in enumerate(geo) if g[2] and not g[3] and i > 0]
    if main:
        entries = [ops(i, *bw) for i in main]
        if main[0] != 0:  # keep DNNsim's "first layer" (no bwd_input) the trace's first layer
            entries.insert(0, (DUMMY, None, None, None, None))
        blocks.append(write_network(work, "bwd", entries, "only_backward", batch))
        differ = {i for i in main if i > 0 and not same_mask(
            sd.layers[layers[i].name]["bwd_input"]["grad_out"],
            sd.layers[layers[i].name]["bwd_weight"]["grad_out"])}
        if differ:
            gentries = [e if e[1] is None else ops(dn.index(e[0]), *bg) for e in entries]
            blocks.append(write_network(work, "bwdg", gentries, "only_backward", batch))
        for i in main:
            take.append(("bwd", dn[i], ("bwd_weight",) if i in differ or i == 0
                         else ("bwd_weight", "bwd_input")))
            if i in differ:
                take.append(("bwdg", dn[i], ("bwd_input",)))
    for i in solo:
        blocks.append(write_network(work, f"solo{i:04d}", [ops(i, *bw)], "only_backward", batch))
        take.append((f"solo{i:04d}", dn[i], ("bwd_weight",)))
    for i, (why, f, bww, bwi) in enumerate(geo):
        lost = [ph for ph, ok in (("fwd", f), ("bwd_weight", bww), ("bwd_input", bwi)) if not ok]
        if lost and (i > 0 or lost != ["bwd_input"]):
            print(f"dnnsim_run: layer {layers[i].name!r}: DNNsim refuses {', '.join(lost)}"
                  f" ({why or 'its window-size check fails for this geometry'}); left out",
                  file=sys.stderr)
    (work / "batch.prototxt").write_text("".join(blocks))
    t0 = time.perf_counter()
    with open(work / "dnnsim.log", "w") as log:
        proc = subprocess.run([str(Path(dnnsim).resolve()), "--quiet", "batch.prototxt"],
                              cwd=work, stdout=log, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or "error" in proc.stderr.lower():
        raise RuntimeError(f"DNNsim failed (exit {proc.returncode}): {proc.stderr.strip()}")
    stats = {net: read_stats(work, net) for net in {t[0] for t in take}}
    rows = []
    for net, name, phases in take:
        for ph in phases:
            s = stats[net][name]
            rows.append({"layer": names[name], "phase": ph,
                         "compute_cycles": s[f"{STATS[ph]} compute cycles"],
                         "base_compute_cycles": s[f"{STATS[ph]} base compute cycles"],
                         "ideal_compute_cycles": s[f"{STATS[ph]} ideal compute cycles"],
                         "images": batch})
    order = {layer.name: i for i, layer in enumerate(layers)}
    rows.sort(key=lambda r: (order[r["layer"]], PHASES.index(r["phase"])))
    with open(out_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    print(f"dnnsim_run: {len(rows)} rows to {out_csv}; DNNsim ran {elapsed:.1f} s",
          file=sys.stderr)


def make_example(out: str, seed: int = 0, density: float = 0.3, batch: int = 2) -> None:
    """A small trace: 3x3 s1 p1, 3x3 s2 p1 and 1x1 s2 p0 convolutions on 8x8, a 3x3 s2 p1 on 7x7
    (DNNsim refuses its bwd_input) and a linear layer; random masks of density ~0.3 for filter,
    ifmap and grad_out, bwd_weight's ifmap a random subset of fwd's (as SWAT's is)."""
    layers = (Layer.conv("conv1", 3, 20, 3, 8, 1, 1), Layer.conv("conv2", 20, 24, 3, 8, 2, 1),
              Layer.conv("down", 20, 24, 1, 8, 2, 0), Layer.conv("odd", 24, 16, 3, 7, 2, 1),
              Layer.linear("fc", 64, 10))
    write_trace(out, "dnnsim-example", "random", layers, batch, seed, 0.7,
                lambda rng, shape: rng.random(shape) < density, 0.7,
                "scripts/dnnsim_run.py --make-example")
    print(f"dnnsim_run: example trace written to {out}", file=sys.stderr)


def write_trace(out, model: str, method: str, layers, batch: int, seed: int, sparsity: float,
                draw, keep: float, tool: str) -> None:
    """One step of a trace with every operand of ``layers`` masked by ``draw(rng, shape)``
    (filter, ifmap, grad_out in turn); bwd_weight's ifmap keeps a ``keep`` share of fwd's (as
    SWAT's is)."""
    manifest = Manifest(model=model, method=method, sparsity={"sparsity": sparsity}, seed=seed,
                        batch_size=batch, dtype="float32", layers=tuple(layers),
                        producer={"name": "sparsesim", "version": "0.1.0", "tool": tool})
    rng = np.random.default_rng(seed)
    operands = {}
    for layer in layers:
        m = {r: draw(rng, layer.operand_shape(r, batch)) for r in ("filter", "ifmap", "grad_out")}
        phases = {ph: {r: m[r] for r in PHASE_OPERANDS[ph]} for ph in PHASES}
        phases["bwd_weight"]["ifmap"] = m["ifmap"] & (rng.random(m["ifmap"].shape) < keep)
        operands[layer.name] = phases
    TraceWriter(str(out), manifest).write_step(0, operands)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace", nargs="?", help="sparsesim trace directory")
    ap.add_argument("--dnnsim", help="the DNNsim binary (built as the docstring says)")
    ap.add_argument("--step", type=int, help="trace step (default: the first listed)")
    ap.add_argument("--work", help="work directory for DNNsim's inputs and results "
                                   "(default: a temporary directory, removed afterwards)")
    ap.add_argument("-o", "--output", help="CSV to write")
    ap.add_argument("--make-example", metavar="DIR", help="write the small test trace to DIR")
    args = ap.parse_args(argv)
    if args.make_example:
        make_example(args.make_example)
        return 0
    if not (args.trace and args.dnnsim and args.output):
        ap.error("TRACE, --dnnsim and -o are required (or --make-example DIR)")
    if args.work:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        run(args.trace, args.dnnsim, args.step, Path(args.work), args.output)
    else:
        with tempfile.TemporaryDirectory(prefix="dnnsim-") as tmp:
            run(args.trace, args.dnnsim, args.step, Path(tmp), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
