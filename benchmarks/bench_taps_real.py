"""Benchmark: ``dataflows.taps.lockstep_row_folds`` on the real calls of a training step, this
checkout against another revision's, in turn.

Runs ``sparsesim simulate TRACE --arch tensordash --dataflow os`` in this process and keeps the
arguments of every ``lockstep_row_folds`` call (``bench_taps.capture``: the packed operand, K,
L, the fold size, the taps, the lane order, the free-row run), or reads them from ``--calls``
(written by an earlier run with ``--save``). Then times, median of ``--repeat`` rounds (CPU
seconds of this process), one pass over every call:

* ``this``: this checkout's ``lockstep_row_folds``;
* ``REV`` (``--against REV``): ``dataflows/taps.py`` of git revision REV, loaded as a module
  of its own, on the same calls, in turn with ``this`` in every round;

and checks that both give the same (z, rest, out, T) arrays for every call. Also prints where
the time of this checkout's sliced scheduler goes on those calls (``--parts``): fold set-up
(empty rows, hashes), the sliced buffers, the pass and the count.

Run:  python benchmarks/bench_taps_real.py [--trace DIR | --calls FILE] [--save FILE]
                                           [--against REV] [--repeat 5] [--parts]
      (without ``--trace`` or ``--calls``: the ResNet-50 SWAT-90 batch-32 step, synthesized
      first; minutes)
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from numba import types
from numba.typed import Dict
from revisions import module_at  # this folder's; run as python benchmarks/...

from common.jit import njit
from dataflows import taps


def _taps_at(rev: str, work: Path):
    """``dataflows/taps.py`` at git revision ``rev``, loaded as a module of its own."""
    return module_at(rev, "dataflows/taps.py", work, "taps_against")


@njit(cache=True)
def sliced_parts(pack, K, L, R, th, td, order, F, upto):
    """``taps._row_folds_sliced`` stopped after part ``upto`` of each set of folds (0: the
    fold set-up: empty rows, hashes, the sets; 1: the sliced buffer; 2: the pass; 3: the
    count); folds of more than 64 live rows left out."""
    S = pack.shape[0]
    T = (K + L - 1) // L
    nf = (S + R - 1) // R
    z = np.zeros(nf, dtype=np.int64)
    rest = np.zeros(nf, dtype=np.int64)
    out = np.zeros(nf, dtype=np.int64)
    rows = np.empty(R, dtype=np.int64)
    other = np.empty(R, dtype=np.int64)
    offs = taps._sliced_tables(L, th, td, order)
    sl = np.zeros((1, max(64 * pack.shape[1], T * L, 1)), dtype=np.uint64)
    srows = np.empty(64, dtype=np.int64)
    folds = np.empty(64, dtype=np.int64)
    masks = np.zeros((64, 1), dtype=np.uint64)
    used = nb = 0
    first = Dict.empty(key_type=types.uint64, value_type=types.int64)
    for f in range(nf + 1):
        G = taps._live_rows(pack, f * R, min(S, f * R + R), rows) if f < nf else 0
        if nb > 0 and (f == nf or used + G > 64):
            if upto >= 1:
                taps._sliced_buffer(pack, srows, used, sl[:1])
            if upto >= 2:
                taps._schedule_sliced(sl[:1], T, L, th, offs, order, F, masks[:nb, :1], nb)
            if upto >= 3:
                taps._count_sliced(sl[:1], T, L, F, masks[:nb, :1], nb, folds, z, rest, out)
            used = nb = 0
        if f == nf or G == 0 or G > 64:
            continue
        key = taps._rows_hash(pack, rows, G)
        j = first[key] if key in first else -1
        if (
            j >= 0
            and taps._live_rows(pack, j * R, min(S, j * R + R), other) == G
            and taps._same_rows(pack, rows, other, G)
        ):
            continue
        if j < 0:
            first[key] = f
        srows[used : used + G] = rows[:G]
        masks[nb, 0] = (
            ((taps._U1 << np.uint64(G)) - taps._U1) if G < 64 else ~taps._Z
        ) << np.uint64(used)
        folds[nb] = f
        used += G
        nb += 1
    return rest.sum()


def _pass(fn, calls) -> tuple[float, list]:
    """CPU seconds of one pass of ``fn`` over every call, and its results."""
    t0 = time.process_time()
    out = [fn(*a) for a in calls]
    return time.process_time() - t0, out


def _same(a: list, b: list) -> bool:
    return all(
        all(np.array_equal(x, y) for x, y in zip(p, q, strict=True))
        for p, q in zip(a, b, strict=True)
    )


def _parts(calls, repeat: int) -> None:
    """Median CPU seconds of each part of the sliced scheduler over every call."""
    for a in calls[:1]:
        sliced_parts(*a, 3)
    names = ("set-up", "+ sliced buffers", "+ pass", "+ count")
    for upto, name in enumerate(names):
        secs = [_pass(lambda *a, u=upto: sliced_parts(*a, u), calls)[0] for _ in range(repeat)]
        print(f"  sliced folds, {name:>16}: {statistics.median(secs):7.3f} s CPU")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--trace",
        type=Path,
        help="trace directory (default: synthesize the ResNet-50 SWAT-90 batch-32 step)",
    )
    ap.add_argument("--calls", type=Path, help="read the calls from this file (--save)")
    ap.add_argument("--save", type=Path, help="write the captured calls to this file")
    ap.add_argument("--against", metavar="REV", help="also time this git revision's kernel")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--parts", action="store_true", help="where the sliced scheduler's time goes")
    args = ap.parse_args()
    if args.calls:
        with args.calls.open("rb") as fh:
            calls = pickle.load(fh)
    else:
        from bench_taps import capture  # benchmarks/ is on the path when run as a script

        with tempfile.TemporaryDirectory(prefix="bench-taps-real-") as tmp:
            trace = args.trace
            if trace is None:
                from bench_sparse import make_trace

                trace = make_trace(Path(tmp))
            calls = capture(trace)
    if args.save:
        with args.save.open("wb") as fh:
            pickle.dump(calls, fh, protocol=pickle.HIGHEST_PROTOCOL)
    if not calls:
        raise SystemExit("no lockstep_row_folds call: is the architecture's sync lockstep?")
    with tempfile.TemporaryDirectory(prefix="bench-taps-real-") as tmp:
        kinds = {"this": taps.lockstep_row_folds}
        if args.against:
            kinds[args.against] = _taps_at(args.against, Path(tmp)).lockstep_row_folds
        for fn in kinds.values():  # compiled (or loaded from numba's cache) outside timing
            fn(*calls[0])
        secs: dict[str, list[float]] = {k: [] for k in kinds}
        results: dict[str, list] = {}
        for _ in range(args.repeat):
            for name, fn in kinds.items():
                s, results[name] = _pass(fn, calls)
                secs[name].append(s)
    folds = sum(-(-a[0].shape[0] // a[3]) for a in calls)
    print(
        f"calls {len(calls)}, folds {folds}; CPU seconds, median of {args.repeat}; load "
        f"average {os.getloadavg()[0]:.2f}"
    )
    med = {k: statistics.median(v) for k, v in secs.items()}
    for name, s in med.items():
        print(f"{name:>10}: {s:7.3f} s CPU (min {min(secs[name]):.3f})")
    same = True
    if args.against:
        same = _same(results["this"], results[args.against])
        print(
            f"{args.against} / this = {med[args.against] / med['this']:5.2f}x; "
            f"results identical: {'yes' if same else 'NO'}"
        )
    if args.parts:
        _parts(calls, args.repeat)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
