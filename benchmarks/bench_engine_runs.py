"""Benchmark: the engine alone with runs of tiles (``simulator.engine._run_kernel``) against
every tile through the per-tile SimPy processes.

Replays the same tile schedules (a ResNet-50 training step's dense GEMMs, as ``sparsesim
simulate`` plans them) both ways, in one run, keeping every record and keeping only the
transfers (what a run without ``--timeline`` keeps), with two top-K jobs; prints the CPU
seconds of each (best of ``--repeat``), their ratio, the share of tiles that went through runs
and whether the event logs and the timings are the same byte for byte (they must be).

Run:  python benchmarks/bench_engine_runs.py [--layers N] [--batch B] [--repeat R]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from array import array

from simulator.arch import load_arch
from simulator.engine import replay
from simulator.run import _plan
from traces.models import get_model

CASES = (("tensordash", "os"), ("scalesim-32", "os"), ("scalesim-32", "ws"),
         ("scalesim-32", "is"))


def _once(scheds, arch, dram_only: bool, runs: bool, repeat: int):
    """(best CPU seconds, digest of the log and the timings, share of tiles in runs)."""
    best = float("inf")
    for _ in range(repeat):
        log = array("d")
        t0 = time.process_time()
        timings, share = replay(scheds, arch, log, dram_only=dram_only, topk=[5, 7], runs=runs)
        best = min(best, time.process_time() - t0)
    h = hashlib.blake2b(log.tobytes(), digest_size=12)
    h.update(json.dumps([t.__dict__ for t in timings], sort_keys=True, default=str).encode())
    return best, h.hexdigest(), share


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=0, help="first N layers of ResNet-50 (0: all)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    layers = get_model("resnet50").layers
    layers = layers[: args.layers] if args.layers else layers
    print(f"ResNet-50 training step ({len(layers)} layers, batch {args.batch}, dense), engine "
          f"alone, CPU seconds (best of {args.repeat}); load average {os.getloadavg()[0]:.2f}")
    print(f"{'preset':<12}{'df':<4}{'records':<10}{'tiles':>9}{'per tile':>10}{'runs':>8}"
          f"{'ratio':>7}{'in runs':>9}  same")
    same_all = True
    for preset, dataflow in CASES:
        arch = load_arch(preset)
        plan = _plan(layers, args.batch, arch, dataflow, "train", None,
                     arch.features.baseline(), frozenset(), True)
        scheds = [p.sched for p in plan]
        tiles = sum(len(s) for s in scheds)
        replay(scheds[:2], arch, array("d"))  # the kernels compiled or loaded outside timing
        for dram_only in (True, False):
            off, h_off, _ = _once(scheds, arch, dram_only, False, args.repeat)
            on, h_on, share = _once(scheds, arch, dram_only, True, args.repeat)
            same = h_on == h_off
            same_all &= same
            print(f"{preset:<12}{dataflow:<4}{'transfers' if dram_only else 'all':<10}"
                  f"{tiles:>9}{off:>9.2f}s{on:>7.2f}s{on / off:>7.2f}{share:>9.1%}  "
                  f"{'yes' if same else 'NO'}")
    return 0 if same_all else 1


if __name__ == "__main__":
    raise SystemExit(main())
