"""Benchmark: the tile schedule with feature-map footprints against the same GEMMs counted as
a share of the matrix, in one run.

``dataflows.tiles.schedule`` counts an im2col operand's blocks in the feature-map words they
touch (``docs/validation.md``, "DRAM traffic: what is fetched"). This times ``schedule`` over
every GEMM of a model's training step twice — as lowered (with the geometry), and with the
geometry dropped (the old share-of-the-matrix count) — per dataflow, best of ``--repeat``, and
prints both times, their ratio and the DRAM words each way.

Run:  python benchmarks/bench_traffic.py [--model resnet50] [--batch 32] [--array 32x32x1]
                                         [--kib 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from dataflows import tiles
from dataflows.gemm import lower_all
from dataflows.systolic import map_dense
from dataflows.tiles import schedule
from traces.models import get_model


def _time(gemms, maps, cap, repeat: int) -> tuple[float, int]:
    best, words = float("inf"), 0
    for _ in range(repeat):
        tiles._CHOSEN.clear()  # plan every pass afresh, not from the loop orders it remembers
        t = time.perf_counter()
        words = 0
        for g, mp in zip(gemms, maps, strict=True):
            s = schedule(g, mp, (cap, cap, cap))
            words += s.total("a_dram") + s.total("b_dram")
        best = min(best, time.perf_counter() - t)
    return best, words


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--array", default="32x32x1", help="rows x cols x lanes")
    ap.add_argument("--kib", type=int, default=64, help="SRAM per operand (1-byte words)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows, cols, lanes = (int(x) for x in args.array.split("x"))
    cap = args.kib * 1024 // 2
    gemms = [g for la in get_model(args.model).layers for g in lower_all(la, args.batch)]
    plain = [dataclasses.replace(g, im2col=None) for g in gemms]
    print(f"{args.model} batch {args.batch}, {len(gemms)} GEMMs, {args.array}, {args.kib} KiB")
    for df in ("os", "ws", "is"):
        maps = [map_dense(g, rows, cols, df, lanes) for g in gemms]
        _time(gemms[:2], maps[:2], cap, 1)  # load the kernels
        t_geo, w_geo = _time(gemms, maps, cap, args.repeat)
        t_share, w_share = _time(plain, maps, cap, args.repeat)
        print(f"{df}: footprints {t_geo:.2f} s, share of the matrix {t_share:.2f} s "
              f"({t_geo / t_share:.1f}x); A+B words {w_geo:,} vs {w_share:,}")


if __name__ == "__main__":
    main()
