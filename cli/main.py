"""The ``sparsesim`` console script: a thin layer over the packages' Python APIs.

Subcommands import their package lazily, so ``sparsesim synth`` never pays for importing torch.
Bad input of any kind prints one line (``sparsesim: error: ...``) on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from cli.helpers import (
    EXIT_BAD_INPUT,
    Progress,
    add_allow_huge,
    path_arg,
    print_trace_summary,
    size,
    word_arg,
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _fail(message: str) -> NoReturn:
    print(f"sparsesim: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT)


# ------------------------------------------------------------------------------------------------
# synth
# ------------------------------------------------------------------------------------------------
def _layer_sparsity(text: str | None, model: str) -> tuple[float, ...] | None:
    """A comma-separated list of per-layer sparsities in layer order, or a file with one value
    per line, either all bare (layer order) or all ``name,value`` (any order, every layer of
    ``model`` named once)."""
    if text is None:
        return None
    from common.errors import ConfigError

    path = Path(text)
    named: dict[str, tuple[str, str]] = {}
    if path.is_file():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(str(path), None, f"cannot read: {err}") from None
        items = []
        for no, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path}: line {no}"
            parts = [x.strip() for x in line.split(",")]
            if len(parts) > 2:
                raise ConfigError(where, None, f"expected 'value' or 'name,value', got {line!r}")
            if len(parts) == 2:
                if parts[0] in named:
                    raise ConfigError(where, None, f"layer {parts[0]!r} given twice (also "
                                                   f"{named[parts[0]][0]})")
                named[parts[0]] = (where, parts[1])
            items.append((where, parts[-1]))
        if named and len(named) != len(items):
            raise ConfigError(str(path), None, "name every line ('name,value') or none")
    else:
        items = [(f"--layer-sparsity item {i + 1}", v.strip()) for i, v in
                 enumerate(text.split(","))]
    if named:
        from traces.synth import _load_layers

        layers = [la.name for la in _load_layers(model)[1]]
        unknown = [n for n in named if n not in layers]
        if unknown:
            where = named[unknown[0]][0]
            raise ConfigError(where, None, f"{model} has no layer {unknown[0]!r}; its layers: "
                                           f"{', '.join(layers)}")
        missing = [n for n in layers if n not in named]
        if missing:
            raise ConfigError(str(path), None, f"no value for layer(s) {', '.join(missing)} of "
                                               f"{model}")
        items = [named[n] for n in layers]
    out = []
    for where, value in items:
        try:
            out.append(float(value))
        except ValueError:
            raise ConfigError(where, None, f"expected a number, got {value!r}") from None
    return tuple(out)


def _cmd_synth(args: argparse.Namespace) -> None:
    from common.fsutil import check_output_dir
    from traces.synth import SynthConfig, synthesize

    given = (args.model, args.layer_sparsity)  # files among them must survive --force
    check_output_dir(args.output, args.force, inputs=[p for p in given if p and Path(p).exists()])
    cfg = SynthConfig(
        model=args.model, method=args.method, sparsity=args.sparsity, batch=args.batch,
        seed=args.seed, density=args.density,
        layer_sparsity=_layer_sparsity(args.layer_sparsity, args.model),
        pattern=args.pattern or ("fanin" if args.method == "srigl" else "random"),
        first_dense=args.first_dense, relu_sparsity=args.relu_sparsity, steps=args.steps,
        dtype=args.dtype,
    )
    from simulator.budget import check, estimate_synth
    from traces.synth import plan

    planned = plan(cfg)  # the config checked, the layers resolved: what the estimate needs
    check(estimate_synth(planned.layers, cfg.batch, cfg.steps), args.allow_huge,
          source=str(args.model))
    out = synthesize(cfg, args.output, force=args.force,
                     progress=Progress("synth", not args.quiet), command=sys.argv[1:])
    print_trace_summary(out)
    for line in natural_zeros(cfg.relu_sparsity):
        print(f"  {line}")


def natural_zeros(relu_sparsity: float) -> list[str]:
    """What ``synth`` added beside the method's masks: the natural zeros of a real training run
    (ReLU's in the activations; the gradients'), which change the speedup a skipping array gets."""
    if relu_sparsity > 0:
        acts = (f"natural zeros added: ReLU zeros, {relu_sparsity:.0%} of the inputs of every "
                "layer but the first (fwd and bwd_weight ifmap)")
    else:
        acts = ("natural zeros NOT added: activations hold no ReLU zeros, only the method's "
                "masks (a real run's ReLU leaves about half its activations zero; "
                "--relu-sparsity R adds them)")
    return [acts, "natural zeros NOT added: output gradients (grad_out) are dense in every "
                  "method (BatchNorm spreads ReLU's zeros; no flag adds them)"]


# ------------------------------------------------------------------------------------------------
# info
# ------------------------------------------------------------------------------------------------
def _print_coverage(m) -> None:
    """The share of the training MACs the trace holds (version-2 traces the recorder wrote)
    and the products it names as left out."""
    products = sum(la.kind == "matmul" for la in m.layers)
    if products:
        print(f"  {products} of the {len(m.layers)} layers are products of two activations "
              "(matmul: attention)")
    cov = m.coverage
    if not isinstance(cov, dict) or "percent" not in cov:
        return
    print(f"  coverage: {cov['percent']:.2f} % of the step's training MACs are in the trace "
          f"({cov.get('recorded_macs', 0):,} of {cov.get('training_macs', 0):,})")
    for u in cov.get("unrecorded", ()):
        where = u.get("module") or "the model"
        print(f"    not recorded: {u.get('op')} in {where!r}: {u.get('percent', 0):.2f} % "
              f"({u.get('why')})")


def _cmd_info(args: argparse.Namespace) -> None:
    target = args.target
    path = Path(target)
    if path.is_dir():
        from traces.format import Trace
        from traces.summary import trace_summary

        trace = Trace(path)
        m = trace.manifest
        s = trace_summary(trace, first_step_only=False)
        print(f"trace {path}: format v{m.format_version}, produced by "
              f"{m.producer.get('name')} {m.producer.get('version')} ({m.producer.get('tool')})")
        print(f"  model {m.model}, method {m.method}, batch {m.batch_size}, dtype {m.dtype}, "
              f"seed {m.seed}, {len(m.layers)} layers, steps {trace.steps}")
        how = ", ".join(f"{k} {m.sparsity[k]}" for k in ("density", "pattern")
                        if m.sparsity.get(k) is not None)
        print(f"  sparsity: {m.sparsity.get('sparsity')}" + (f" ({how})" if how else ""))
        codecs = sorted({trace.read_index(st).codec for st in trace.steps})
        print(f"  {size(s['bytes'])} on disk, masks coded {', '.join(codecs) or 'n/a'}")
        _print_coverage(m)
        print(f"  {'layer':<28}{'fwd.filter':>11}{'fwd.ifmap':>11}{'bwd_w.ifmap':>12}"
              f"{'bwd_w.grad_out':>15}")
        for name, d in s["layers"].items():
            print(f"  {name:<28}{d['fwd']['filter']:>11.4f}{d['fwd']['ifmap']:>11.4f}"
                  f"{d['bwd_weight']['ifmap']:>12.4f}{d['bwd_weight']['grad_out']:>15.4f}")
        return
    if path.suffix.lower() == ".csv":
        from traces.topology import read_topology

        topo = read_topology(path)
        name, layers, params = topo.name, topo.layers, None
    else:
        from traces.models import get_model

        table = get_model(target)
        name, layers, params = table.name, table.layers, table.params
    print(f"{name}: {len(layers)} layers" + (f", {params:,} parameters" if params else ""))
    width = max(28, *(len(layer.name) + 2 for layer in layers))
    print(f"  {'layer':<{width}}{'kind':<8}{'in':>6}{'out':>6}{'kernel':>8}{'stride':>8}"
          f"{'input':>10}{'output':>10}{'MACs/sample':>14}")
    for layer in layers:
        k, st = layer.kernel, layer.stride
        print(f"  {layer.name:<{width}}{layer.kind:<8}{layer.in_channels:>6}{layer.out_channels:>6}"
              f"{f'{k[0]}x{k[1]}':>8}{f'{st[0]}x{st[1]}':>8}"
              f"{'x'.join(map(str, layer.input_hw)):>10}{'x'.join(map(str, layer.out_hw)):>10}"
              f"{layer.macs(1):>14,}")


# ------------------------------------------------------------------------------------------------
# simulate
# ------------------------------------------------------------------------------------------------
def _cmd_simulate(args: argparse.Namespace) -> None:
    import time

    from common.fsutil import check_output_dir
    from simulator.arch import load_arch, parse_overrides
    from simulator.results import summarize, write_results
    from simulator.run import load_network, simulate, simulate_trace

    t0 = time.perf_counter()
    net = load_network(args.input)
    arch = load_arch(args.arch)
    if args.overrides:
        arch = arch.with_overrides(parse_overrides(args.overrides), source="--set")
    dataflow = args.dataflow or arch.dataflow
    phases = args.phases or ("train" if net.kind == "trace" else "fwd")
    if args.explain and net.kind != "trace":
        _fail(f"--explain: {args.input} is a topology; the speedup attribution needs a trace "
              "(its masks and its dense baseline)")
    inputs = [args.input] + ([args.arch] if Path(args.arch).exists() else [])
    check_output_dir(args.output, args.force, inputs=inputs)  # before a long run
    _check_simulate_budget(net, arch, dataflow, phases, args)
    from common.jit import compile_mark, compiled_note

    mark = compile_mark()  # a first run compiles the kernels: it says so with its results
    from cli.process import started
    from simulator.baseline import default_cache_dir

    started()  # the imports are done: the console script's collector runs again (cli.process)
    cache = None if args.no_cache else default_cache_dir()
    if net.kind == "trace":
        results = simulate_trace(net.trace, arch, dataflow, phases, args.memory,
                                 baseline_cache=cache, timeline=args.timeline)
    else:
        from simulator.scalesim_compat import topology_run_inputs

        layers, masks, feats, notes = topology_run_inputs(net.topology, arch, args.arch,
                                                          args.memory)
        for note in notes:
            print(f"note: {note}")
        results = simulate(layers, net.batch, arch, dataflow, phases, args.memory,
                           masks=masks or None, layer_features=feats or None,
                           timeline=args.timeline)
    if net.kind != "trace":  # a topology: name the network as a trace names its model
        results.meta.setdefault("model", net.name)
        results.meta.setdefault("topology", str(args.input))
    extra = {}
    if args.timeline:
        from reports.timeline import chrome_trace, write_chrome_trace

        extra["timeline.json"] = lambda p: write_chrome_trace(chrome_trace(results), p)
    attribution = None
    if args.explain:
        from pipeline.explain import attribution as attribute
        from simulator.results import write_csv

        attribution = attribute(net.source, arch, dataflow, phases, args.memory, run=results,
                                progress=Progress("explain", True), baseline_cache=cache)
        extra["ATTRIBUTION.csv"] = lambda p: write_csv(attribution, p)
    write_results(results, args.output, force=args.force, extra=extra or None)
    summary = summarize(results)
    s = summary["total"]
    print(f"simulated {net.name} ({len(net.layers)} layers, batch {net.batch}, {phases}) on "
          f"{arch.name} {arch.rows}x{arch.cols}x{arch.lanes} {dataflow}, {args.memory} memory "
          f"in {time.perf_counter() - t0:.1f} s")
    n = len(summary.get("steps") or [0])
    print(f"  cycles {s['cycles']:,} (compute {s['compute_cycles']:,}, stalls "
          f"{s['stall_cycles']:,}), DRAM {s['dram_bytes'] / 1e6:.1f} MB, "
          f"{s['avg_dram_bw_gbps']:.1f} GB/s average, energy {s['energy_pj'] / 1e6:.2f} uJ"
          + (f", all {n} recorded steps added up" if n > 1 else ""))
    b = summary.get("baseline_per_step")
    if b:
        print(f"  per step: cycles {s['cycles'] / n:,.0f}, DRAM {s['dram_bytes'] / n / 1e6:.1f} "
              f"MB, energy {s['energy_pj'] / n / 1e6:.2f} uJ; dense baseline: cycles "
              f"{b['cycles']:,}, DRAM {b['dram_bytes'] / 1e6:.1f} MB, energy "
              f"{b['energy_pj'] / 1e6:.2f} uJ")
    sp = summary.get("speedup")
    if sp:
        per = ", ".join(f"{ph} {v:.2f}x" for ph, v in sp["per_phase"].items())
        print(f"  speedup over dense: training step {sp['training_step']:.2f}x ({per})")
    from reports.verdict import layers_sentence, run_verdict

    table = results.data("table")  # a Table: the verdict needs no pandas
    print(f"  {run_verdict(table, summary).text}")
    if (lay := layers_sentence(table)):
        print(f"  {lay}")
    if attribution is not None:
        from pipeline.explain import describe

        print("  speedup attribution (cycles per step; every row a simulation, "
              "ATTRIBUTION.csv):")
        for line in describe(attribution):
            print(f"  {line}")
    print(f"  results in {args.output}"
          + (f" (timeline: {args.output / 'timeline.json'}, opens in ui.perfetto.dev)"
             if args.timeline else ""))
    note = compiled_note(mark)
    if note:
        print(note)


def _check_simulate_budget(net, arch, dataflow: str, phases: str, args) -> None:
    """Refuse a run estimated over the limits of ``simulator.budget`` before it starts."""
    from simulator.budget import check, estimate_network

    steps = len(net.trace.steps) if net.kind == "trace" else 1
    extra = 0
    if args.explain:
        from pipeline.explain import stages

        extra = (len(stages(arch, args.memory)) - 1) * (steps + 1)
    est = estimate_network(net.layers, net.batch, arch, dataflow, phases, steps=steps,
                           masked=net.kind == "trace", baseline=net.kind == "trace",
                           extra_simulations=extra, timeline=args.timeline)
    check(est, args.allow_huge, source=str(args.input))


# ------------------------------------------------------------------------------------------------
#: ``traces.synth``'s METHODS and DENSITY_KINDS (a test holds them equal), here so that building
#: the parser imports neither it nor numpy and numba: ``--help`` and usage errors answer at once
SYNTH_METHODS = ("dense", "swat", "static", "rigl", "srigl")
SYNTH_DENSITY_KINDS = ("uniform", "erk", "explicit")


class _Version(argparse._VersionAction):
    """argparse's ``version`` action, the version looked up when the flag is given (the
    installed package's metadata, through ``traces.synth``), not each time the parser is built."""

    def __call__(self, parser, namespace, values, option_string=None) -> NoReturn:
        self.version = f"sparsesim {_version()}"
        super().__call__(parser, namespace, values, option_string)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sparsesim",
                     description="Cycle-level simulator of sparse DNN training on sparse "
                                 "MAC-array accelerators.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("synth", help="build a trace from a sparsity config, without training",
                       description="Build a synthetic trace: per-layer masks drawn from a "
                                   "sparsity config (method preset, density allocation, "
                                   "pattern), seeded and deterministic.")
    p.add_argument("--model", required=True,
                   help="built-in model (see 'sparsesim info MODEL') or a SCALE-Sim topology CSV")
    p.add_argument("--method", default="swat", choices=SYNTH_METHODS,
                   help="which operands are sparse in which phase (default: swat)")
    p.add_argument("--sparsity", type=float, default=None,
                   help="global weight sparsity S in [0, 1] (SWAT also uses it for activations)")
    p.add_argument("--batch", type=int, default=32, help="samples per step (default: 32)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--density", choices=SYNTH_DENSITY_KINDS, default=None,
                   help="per-layer density allocation (default: uniform; erk for rigl/srigl; "
                        "explicit when --layer-sparsity is given)")
    p.add_argument("--layer-sparsity", default=None, metavar="LIST|FILE",
                   help="per-layer sparsities, comma-separated in layer order, or a file with "
                        "one value (or 'name,value') per line")
    p.add_argument("--pattern", default=None,
                   help="random (default), clustered, N:M (e.g. 2:4), fanin, channel, filter, "
                        "kernel, block[:RxC]")
    fd = p.add_mutually_exclusive_group()
    fd.add_argument("--first-dense", dest="first_dense", action="store_true", default=None,
                    help="keep the first layer dense (default with uniform density)")
    fd.add_argument("--no-first-dense", dest="first_dense", action="store_false",
                    help="sparsify the first layer too")
    p.add_argument("--relu-sparsity", type=float, default=0.0,
                   help="natural zeros in the inputs of all layers but the first (default: 0)")
    p.add_argument("--steps", type=int, default=1, help="recorded steps (default: 1)")
    p.add_argument("--dtype", default="float32", help="element type: float32, float16, bfloat16")
    p.add_argument("-o", "--output", required=True, type=path_arg,
                   help="trace directory to write")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_allow_huge(p)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("simulate", help="simulate a trace or a SCALE-Sim topology on an "
                                        "accelerator",
                       description="Simulate a trace directory or a SCALE-Sim topology CSV on an "
                                   "architecture (preset name, YAML file or SCALE-Sim .cfg).")
    p.add_argument("input", type=path_arg, help="trace directory or SCALE-Sim topology CSV")
    p.add_argument("--arch", required=True, type=word_arg,
                   help="preset name, architecture YAML or .cfg file")
    p.add_argument("--dataflow", default=None, type=word_arg,
                   help="os, ws or is (default: the architecture's)")
    p.add_argument("--phases", default=None,
                   help="fwd or train (default: train for a trace, fwd for a topology)")
    p.add_argument("--memory", default="modeled",
                   help="modeled (SimPy + DRAM timing, default) or ideal (no memory "
                        "stalls, as SCALE-Sim)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="change one key of the architecture, e.g. --set "
                        "dram.bandwidth_gbps=25.6 --set sram.ifmap.kib=128 (repeatable; keys "
                        "as in the architecture file)")
    p.add_argument("-o", "--output", required=True, type=path_arg, help="results directory")
    p.add_argument("--timeline", action="store_true",
                   help="also write timeline.json: the SimPy event log as a Chrome trace (one "
                        "track per hardware unit) that opens in Perfetto")
    p.add_argument("--explain", action="store_true",
                   help="also attribute the speedup: simulate the chain dense -> sparse compute "
                        "(ideal memory) -> + memory as modeled -> + each compressed format, and "
                        "write ATTRIBUTION.csv (a trace only; costs a few more simulations)")
    p.add_argument("--force", action="store_true", help="replace an existing results directory")
    p.add_argument("--no-cache", action="store_true", dest="no_cache",
                   help="simulate the dense baseline afresh: neither read nor write the "
                        "baseline cache ($SPARSESIM_CACHE_DIR, else ~/.cache/sparsesim)")
    add_allow_huge(p)
    p.set_defaults(func=_cmd_simulate)

    from cli.demo_cmd import add_demo_parser
    from cli.report_cmd import add_report_parser
    from cli.sweep_cmd import add_sweep_parser
    from cli.train_cmd import add_train_parser

    add_train_parser(sub)
    add_report_parser(sub)
    add_sweep_parser(sub)
    add_demo_parser(sub)

    p = sub.add_parser("info", help="describe a trace, a topology CSV or a built-in model")
    p.add_argument("target", type=word_arg,
                   help="trace directory, SCALE-Sim topology CSV, or model name")
    p.set_defaults(func=_cmd_info)
    return parser


def _version() -> str:
    from traces.synth import version

    return version()


def _terminated(signum, frame) -> NoReturn:
    print("sparsesim: terminated", file=sys.stderr)
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    from common.errors import InputError
    from common.fsutil import NO_SPACE

    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None:  # the console script, not a caller of the Python API: cli.process
        from cli.process import tune

        tune(args.command)
    if threading.current_thread() is threading.main_thread():
        # `kill PID` unwinds like an error: half-written outputs are removed
        signal.signal(signal.SIGTERM, _terminated)
    try:
        args.func(args)
    except InputError as err:
        _fail(str(err))
    except BrokenPipeError:  # e.g. `sparsesim info T | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:
        where = err.filename or (getattr(args, "output", None) if err.errno in NO_SPACE else None)
        _fail(f"{where or ''}: {err.strerror or err}".lstrip(": "))
    except RecursionError:
        _fail("an input is nested too deeply to read (see docs/limits.md)")
    except KeyboardInterrupt:
        print("sparsesim: interrupted", file=sys.stderr)
        return 130
    except MemoryError as err:
        _fail(f"out of memory: {err or 'an allocation failed'} (the input is too large for "
              "this machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
