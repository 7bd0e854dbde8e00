"""Benchmark: the tile planner (``dataflows.tiles.schedule``) over every GEMM of a model's
training step, as a ``simulate`` run plans them, in CPU seconds.

Two figures per dataflow, each the median of ``--repeat`` passes:

* ``fresh``: every GEMM planned once, nothing remembered (a run whose dense baseline is cached
  plans each GEMM once);
* ``again``: every GEMM planned a second time with other cycles per fold, after a first plan
  with the dense cycles (a run with an empty baseline cache plans each GEMM for the dense
  baseline, then for the sparse run); only the second plan is timed.

It also prints a digest of every schedule made (loop order and tiles), so that two checkouts
can be compared for identical plans. The script imports only ``schedule`` and reads the
remembered loop orders (if the checkout has them) to forget them between passes, so it runs
against an older checkout too: put its root first on ``PYTHONPATH``.

Run:  python benchmarks/bench_tiles.py [--model resnet50] [--batch 32] [--array 16x16x16]
                                       [--kib 128] [--dataflows os,ws,is] [--repeat 5]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time

import numpy as np

import dataflows.tiles as tiles
from dataflows.gemm import lower_all
from dataflows.systolic import map_dense
from traces.models import get_model


def _forget() -> None:
    """Forget the loop orders chosen so far (a checkout that remembers none: nothing)."""
    getattr(tiles, "_CHOSEN", {}).clear()


def _plan(gemms, maps, caps, cycles) -> tuple[float, list]:
    """CPU seconds to plan every GEMM (with ``cycles`` per fold, None: the dense ones), and
    the schedules."""
    t = time.process_time()
    out = [tiles.schedule(g, mp, caps, c) for g, mp, c in zip(gemms, maps, cycles, strict=True)]
    return time.process_time() - t, out


def _digest(schedules) -> str:
    h = hashlib.sha256()
    for s in schedules:
        h.update(s.outer.encode())
        h.update(np.ascontiguousarray(s.tiles, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--array", default="16x16x16", help="rows x cols x lanes")
    ap.add_argument("--kib", type=int, default=128, help="SRAM per operand (1-byte words)")
    ap.add_argument("--dataflows", default="os,ws,is")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rows, cols, lanes = (int(x) for x in args.array.split("x"))
    cap = args.kib * 1024 // 2
    caps = (cap, cap, cap)
    gemms = [g for la in get_model(args.model).layers for g in lower_all(la, args.batch)]
    print(f"{args.model} batch {args.batch}, {len(gemms)} GEMMs, {args.array}, {args.kib} KiB")
    rng = np.random.default_rng(0)
    for df in args.dataflows.split(","):
        maps = [map_dense(g, rows, cols, df, lanes) for g in gemms]
        dense = [None] * len(gemms)
        # other cycles per fold, as a sparse run's work model gives them
        sparse = [rng.integers(1, mp.cycles_per_fold + 1, mp.folds * g.groups)
                  for g, mp in zip(gemms, maps, strict=True)]
        _forget()
        _plan(gemms[:2], maps[:2], caps, dense[:2])  # load the kernels
        fresh, again = [], []
        for _ in range(args.repeat):
            _forget()
            t, made = _plan(gemms, maps, caps, dense)
            fresh.append(t)
            t, made_again = _plan(gemms, maps, caps, sparse)
            again.append(t)
        print(f"{df}: fresh {statistics.median(fresh):.3f} s, again {statistics.median(again):.3f}"
              f" s (CPU, median of {args.repeat}); digest {_digest(made + made_again)}")


if __name__ == "__main__":
    main()
