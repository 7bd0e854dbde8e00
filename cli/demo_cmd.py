"""`sparsesim demo [-o DIR]`: the whole pipeline in one command (``pipeline.demo``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.helpers import Progress, add_allow_huge, path_arg


def add_demo_parser(sub) -> None:
    """Register the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo", help="the main job in one command: train, record, simulate, report",
        description="Train LeNet-5 on MNIST-5k dense and with SWAT-U 90 %, record both "
                    "traces, simulate them on the tensordash preset with the os, ws and is "
                    "dataflows, write the report and print the speedup per dataflow.")
    p.add_argument("-o", "--output", type=path_arg, default=Path("runs/demo"),
                   help="directory to write everything into (default: runs/demo)")
    p.add_argument("--steps", type=int, default=1500,
                   help="training steps of each model (default: 1500, the budget of "
                        "'sparsesim train')")
    p.add_argument("--memory", default="modeled", choices=("modeled", "ideal"),
                   help="memory model of the simulations (default: modeled)")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("--no-cache", action="store_true", dest="no_cache",
                   help="simulate the dense baseline afresh: neither read nor write the "
                        "baseline cache ($SPARSESIM_CACHE_DIR, else ~/.cache/sparsesim)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    add_allow_huge(p)
    p.set_defaults(func=run)


#: CPU seconds of one LeNet-5 training step at batch 64 (one thread; SWAT's top-K and the
#: recording included) and of starting a training process; resident bytes of one
#: (docs/limits.md, "Work")
TRAIN_STEP_S = 7e-3
TRAIN_START_S = 6.0
TRAIN_BYTES = 500 * 2**20


def estimate_demo(steps: int, memory: str):
    """The demo's cost: two trainings of ``steps`` steps, then each trace (one recorded step in
    100) simulated on three dataflows, the SWAT one with its speedup attribution."""
    from pipeline.demo import ARCH
    from pipeline.explain import stages
    from simulator.arch import load_arch
    from simulator.budget import Estimate, combine, estimate_network
    from traces.models import get_model

    arch = load_arch(ARCH)
    layers = get_model("lenet5").layers
    recorded = max(1, steps // 100)
    chain = (len(stages(arch, memory)) - 1) * (recorded + 1)
    sims = [estimate_network(layers, 64, arch, df, "train", steps=recorded, masked=True,
                             baseline=True, extra_simulations=extra, what="demo")
            for df in ("os", "ws", "is") for extra in (0, chain)]
    train = Estimate("demo", 0, 0, 0, 0, 0, 2 * (TRAIN_START_S + TRAIN_STEP_S * steps),
                     TRAIN_BYTES)
    return combine([train, *sims], "demo")


def run(args: argparse.Namespace) -> None:
    from common.fsutil import check_output_dir
    from pipeline.demo import run_demo
    from simulator.baseline import default_cache_dir
    from simulator.budget import check

    check_output_dir(args.output, args.force)
    if args.steps >= 100 and args.memory in ("modeled", "ideal"):  # run_demo refuses the rest
        check(estimate_demo(args.steps, args.memory), args.allow_huge, field="--steps",
              source="sparsesim demo")
    import simulator.run  # noqa: F401  (loads the kernels, to say whether they need compiling)
    from common.jit import compile_mark, compiled_note

    mark = compile_mark()
    res = run_demo(args.output, args.steps, args.memory, args.force, args.quiet,
                   progress=lambda label: Progress(label, not args.quiet),
                   baseline_cache=None if args.no_cache else default_cache_dir())
    print(f"report: {res.report}")
    for line in res.summary_lines():
        print(line)
    low = [n for n, a in res.accuracy.items() if a < 0.5]
    if low:
        print(f"warning: {', '.join(low)} reached under 50 % test accuracy in {args.steps} "
              "steps; its masks are those of a model that has not learned yet (use more --steps)",
              file=sys.stderr)
    print(f"(test accuracy dense {100 * res.accuracy['dense']:.1f} %, SWAT-U 90 % "
          f"{100 * res.accuracy['swat90']:.1f} %; {res.seconds:.0f} s in all; everything in "
          f"{res.out})")
    note = compiled_note(mark)
    if note:
        print(note)
