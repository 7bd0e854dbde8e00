"""Benchmark: `sparsesim synth` on the ResNet-50 SWAT 90 % trace (batch 32, one step).

Figures to reach (issue "Foundation"): the trace is <= 48 MB on disk and is written in < 30 s.
Run:  python benchmarks/bench_synth.py [--batch 32] [--repeat 1]
It runs the real console script in a subprocess (import time included) and prints one table.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from traces.format import Trace

TARGET_MB, TARGET_S = 48.0, 30.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--sparsity", default="0.9")
    ap.add_argument("--batch", default="32")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-synth-"))
    try:
        times = []
        for i in range(args.repeat):
            out = work / f"t{i}"
            cmd = [sys.executable, "-m", "cli.main", "synth", "--model", args.model,
                   "--method", "swat", "--sparsity", args.sparsity, "--batch", args.batch,
                   "--seed", "0", "-q", "-o", str(out)]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
        out = work / "t0"
        size = sum(f.stat().st_size for f in out.iterdir())
        trace = Trace(out)
        step = next(iter(trace))
        stored, sparse_elems, all_elems = set(), 0, 0
        for phases in step.layers.values():
            for roles in phases.values():
                for op in roles.values():
                    all_elems += op.numel
                    if op.mask is not None and id(op.mask.bits) not in stored:
                        stored.add(id(op.mask.bits))
                        sparse_elems += op.numel
        best = min(times)
        mb = size / 1e6
        print(f"model {args.model}, SWAT {args.sparsity}, batch {args.batch}, one step, "
              f"three phases")
        print(f"{'figure':<44}{'value':>12}{'target':>10}{'ok':>5}")
        print(f"{'trace size on disk (MB)':<44}{mb:>12.1f}{TARGET_MB:>10.0f}"
              f"{'yes' if mb <= TARGET_MB else 'NO':>5}")
        print(f"{'synth wall time, best of ' + str(args.repeat) + ' (s)':<44}{best:>12.2f}"
              f"{TARGET_S:>10.0f}{'yes' if best < TARGET_S else 'NO':>5}")
        print(f"{'elements of stored (sparse) masks (M)':<44}{sparse_elems / 1e6:>12.1f}")
        print(f"{'elements of all operand slots (M)':<44}{all_elems / 1e6:>12.1f}")
        print(f"{'bits on disk per stored mask element':<44}{8 * size / sparse_elems:>12.3f}")
        print(f"{'size / one-bit-per-sparse-element ratio':<44}"
              f"{size / math.ceil(sparse_elems / 8):>12.3f}")
        return 0 if mb <= TARGET_MB and best < TARGET_S else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
