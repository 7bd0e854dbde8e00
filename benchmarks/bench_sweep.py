"""Benchmark: a sweep on 1 and on 2 local workers.

Figure to reach (issue "Sweeps"): on this 2-core machine a 2-worker sweep of 16 ResNet-18 points
runs >= 1.7x faster than 1 worker.

The sweep: ResNet-18, SWAT synthetic traces (batch 32 by default), the ``tensordash`` preset with
modeled memory; 4 architecture variants (os, ws, is on 16x16x16; os on 32x32x16 with 512 KiB
buffers) x 4 sparsities (0.5, 0.7, 0.9, 0.95) = 16 points and 4 traces. Both runs are the
``sparsesim sweep`` command from a cold start (``--workers 1`` runs in its one process; ``--workers
2`` starts two), each into a new directory, so each builds its 4 traces and runs its 16 points.
A warm-up sweep (batch 1, same variants) fills numba's on-disk cache first, so that no process pays
for compiling the kernels. The two tables must be byte-identical.

Other work on the machine skews the ratio: the load averages are printed before and after.

Run:  python benchmarks/bench_sweep.py [--batch 32] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

VARIANTS = [
    {"dataflow": "os"},
    {"dataflow": "ws"},
    {"dataflow": "is"},
    {"dataflow": "os", "array.rows": 32, "array.cols": 32, "sram.ifmap.kib": 512,
     "sram.filter.kib": 512, "sram.ofmap.kib": 512},
]
SPARSITIES = [0.5, 0.7, 0.9, 0.95]


def sweep_spec(batch: int, sparsities: list[float]) -> dict:
    return {"name": f"resnet18-b{batch}", "arch": "tensordash", "memory": "modeled",
            "synth": {"model": "resnet18", "method": "swat", "batch": batch, "seed": 0},
            "points": VARIANTS, "grid": {"sparsity": sparsities}}


def timed_sweep(sweep: Path, out: Path, workers: int) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cli.main", "sweep", str(sweep), "-o", str(out),
                    "--workers", str(workers), "-q"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32, help="samples per step (default: 32)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the sweeps in this directory")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    warm, sweep = work / "warm.yaml", work / "sweep.yaml"
    warm.write_text(yaml.safe_dump(sweep_spec(1, [0.9]), sort_keys=False))
    sweep.write_text(yaml.safe_dump(sweep_spec(args.batch, SPARSITIES), sort_keys=False))

    print(f"{os.cpu_count()} CPUs; load average before: {load()}")
    t_warm = timed_sweep(warm, work / "warm", 1)
    print(f"warm-up (4 points at batch 1, fills the numba cache): {t_warm:.1f} s")
    times = {}
    for workers in (1, 2):
        times[workers] = timed_sweep(sweep, work / f"w{workers}", workers)
        print(f"16 ResNet-18 points (batch {args.batch}), {workers} worker(s): "
              f"{times[workers]:.1f} s   (load average now: {load()})")
    same = (work / "w1" / "sweep.csv").read_bytes() == (work / "w2" / "sweep.csv").read_bytes()
    print(f"sweep.csv identical for 1 and 2 workers: {same}")
    ratio = times[1] / times[2]
    print(f"speed-up of 2 workers over 1: {ratio:.2f}x (target >= 1.7x)")
    if args.keep is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
