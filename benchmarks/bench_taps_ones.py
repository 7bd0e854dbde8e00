"""Benchmark: TensorDash's tap scheduler on the dense operands held as ones, a period at a time.

Runs ``sparsesim simulate TRACE --arch tensordash --dataflow D`` in this process for each
dataflow asked (``os``, ``ws``, ``is``), keeps the arguments of every call of the fold kernels
for operands held as ones (``dataflows.taps.lockstep_row_folds_periodic`` and
``lockstep_slice_folds_periodic``: the dense operand of a skipped role, ones in its data and
zeros where the lowering pads), then times on those same calls, in one run, best of
``--repeat`` (CPU seconds of this process):

* ``plain``: the fold kernel that schedules every step (``lockstep_row_folds`` /
  ``lockstep_slice_folds``);
* ``periodic``: the one the work model calls for such operands, which finds the steps'
  period and copies the periods whose scheduling state comes back;

and checks that both give the same (z, rest, out, T) arrays for every call. These results are
kept per process by the operand's digest (``dataflows.sparse._ONES_RESULTS``): each distinct
operand is scheduled once per command, so the sum here is what a command spends on them.

Run:  python benchmarks/bench_taps_ones.py [--trace DIR] [--dataflow os ws is] [--repeat 3]
      (without ``--trace``: the ResNet-50 SWAT-90 batch-32 step, synthesized first; minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np

from dataflows import taps

PLAIN = {"lockstep_row_folds_periodic": taps.lockstep_row_folds,
         "lockstep_slice_folds_periodic": taps.lockstep_slice_folds}


def capture(trace: Path, dataflow: str) -> list[tuple]:
    """(kernel name, arguments) of every periodic fold kernel call of the step on ``trace``."""
    from cli.main import main

    calls: list[tuple] = []
    kept = {name: getattr(taps, name) for name in PLAIN}

    def recorder(name):
        def record(*args):
            calls.append((name, tuple(a.copy() if isinstance(a, np.ndarray) else a
                                      for a in args)))
            return kept[name](*args)
        return record

    for name in PLAIN:
        setattr(taps, name, recorder(name))
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            main(["simulate", str(trace), "--arch", "tensordash", "--dataflow", dataflow,
                  "--memory", "ideal", "--no-cache", "-o", str(Path(tmp) / "out")])
    finally:
        for name, fn in kept.items():
            setattr(taps, name, fn)
    return calls


def _best(calls: list[tuple], pick, repeat: int) -> float:
    """CPU seconds of the fastest of ``repeat`` passes over every call, with ``pick(name)``."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for name, args in calls:
            pick(name)(*args)
        best = min(best, time.process_time() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", type=Path, help="trace directory (default: synthesize the "
                    "ResNet-50 SWAT-90 batch-32 step)")
    ap.add_argument("--dataflow", nargs="+", default=["os", "ws", "is"],
                    choices=["os", "ws", "is"])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-taps-ones-") as tmp:
        trace = args.trace
        if trace is None:
            from bench_sparse import make_trace  # benchmarks/ is on the path as a script

            trace = make_trace(Path(tmp))
        for df in args.dataflow:
            calls = capture(trace, df)
            if not calls:
                print(f"{df}: no operand held as ones reaches the tap scheduler")
                continue
            same = all(all(np.array_equal(x, y) for x, y in
                           zip(PLAIN[n](*a), getattr(taps, n)(*a), strict=True))
                       for n, a in calls)  # also compiles (or loads) both
            plain = _best(calls, PLAIN.__getitem__, args.repeat)
            periodic = _best(calls, lambda n: getattr(taps, n), args.repeat)
            folds = sum(len(getattr(taps, n)(*a)[0]) for n, a in calls)
            print(f"{df}: calls {len(calls)}, folds {folds}, results identical: {same}; "
                  f"plain {plain:.3f} s, periodic {periodic:.3f} s CPU (best of "
                  f"{args.repeat}), plain / periodic = {plain / max(periodic, 1e-9):.2f}x")
            ok = ok and same
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
