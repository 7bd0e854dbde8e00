"""Benchmark: the sparse engine.

Figures to reach (issue "Sparse engine"):
1. ResNet-50 SWAT 90 % full training step (batch 32), modeled memory, ``tensordash`` preset:
   < 30 s for the whole ``sparsesim simulate`` command (it also runs the dense baseline).
2. The work-model kernels process >= 1 G mask bits per second on one core.

Run:  python benchmarks/bench_sparse.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dataflows import kernels as kx


def kernel_rates() -> list[tuple[str, float]]:
    rng = np.random.default_rng(0)
    # a ResNet-50 layer1 3x3 conv at batch 8: im2col A is 25088 x 576 bits
    fmap = rng.random((8, 64, 56, 56)) < 0.1
    geo = (3, 3, 1, 1, 1, 1, 1, 1, 56, 56)
    kx.im2col_rows(np.ascontiguousarray(fmap[:1, :, :8, :8]), 0, 64, 3, 3, 1, 1, 1, 1, 1, 1, 8,
                   8)  # compile (the same array layout as below)
    t0 = time.perf_counter()
    a = kx.im2col_rows(fmap, 0, 64, *geo)
    t_pack = time.perf_counter() - t0
    bits = 8 * 56 * 56 * 576
    out = [("im2col packing (bits/s)", bits / t_pack)]
    for name, h, d in (("window H=2 D=5", 2, 5), ("unbounded window", -1, 0)):
        kx.row_stream_lengths(a[:4], 576, 16, h, d)
        kx.slice_stream_length(a[:64], 0, 576, 16, h, d)
        t0 = time.perf_counter()
        kx.row_stream_lengths(a, 576, 16, h, d)
        t_rows = time.perf_counter() - t0
        t0 = time.perf_counter()
        for k0 in range(0, 576, 16):
            kx.slice_stream_length(a, k0, 576, 16, h, d)
        t_slice = time.perf_counter() - t0
        out.append((f"os row streams, {name} (bits/s)", bits / t_rows))
        out.append((f"ws/is column streams, {name} (bits/s)", bits / t_slice))
    return out


def step_time(work: Path) -> tuple[float, str]:
    trace = work / "r50-swat90"
    subprocess.run([sys.executable, "-m", "cli.main", "synth", "--model", "resnet50", "--method",
                    "swat", "--sparsity", "0.9", "--batch", "32", "-q", "-o", str(trace)],
                   check=True, stdout=subprocess.DEVNULL)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "cli.main", "simulate", str(trace), "--arch",
                          "tensordash", "-o", str(work / "res")], check=True,
                         capture_output=True, text=True)
    wall = time.perf_counter() - t0
    speed = next(line for line in out.stdout.splitlines() if "speedup" in line).strip()
    return wall, speed


def main() -> int:
    rows = []
    ok = True
    for name, rate in kernel_rates():
        good = rate >= 1e9
        ok &= good or "packing" in name
        rows.append((name, f"{rate / 1e9:.2f} G", ">= 1 G", "yes" if good else "NO"))
    with tempfile.TemporaryDirectory(prefix="bench-sparse-") as tmp:
        wall, speed = step_time(Path(tmp))
    ok &= wall < 30
    rows.append(("ResNet-50 SWAT 90 % step, tensordash, modeled (s)", f"{wall:.1f}", "< 30",
                 "yes" if wall < 30 else "NO"))
    print(f"{'figure':<56}{'value':>10}{'target':>10}{'ok':>5}")
    for r in rows:
        print(f"{r[0]:<56}{r[1]:>10}{r[2]:>10}{r[3]:>5}")
    print("  " + speed)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
