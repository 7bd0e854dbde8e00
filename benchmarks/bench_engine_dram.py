"""Benchmark: the DRAM unit's share of the engine (``simulator.dram._serve_kernel``).

Plans a ResNet-50 training step's dense GEMMs on a preset (as ``sparsesim simulate`` plans
them), replays them once with every tile through the per-tile processes while recording each
DRAM request the DMA units make (time, bytes of A, B and C, GEMM, read or write; the same
requests in the same order as with runs of tiles), then serves the recorded requests again
through ``_serve_kernel`` alone, in one numba loop, from the same starting state. Prints the
requests, the bursts they moved, the CPU seconds of the whole replay (runs on) and of the DRAM
requests alone (best of ``--repeat``), and whether every request finished at the same cycle
as in the replay (it must).

Run:  python benchmarks/bench_engine_dram.py [--preset P] [--layers N] [--batch B] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import time
from array import array

import numpy as np

import simulator.engine as engine
from common.jit import njit
from simulator.arch import load_arch
from simulator.dram import _serve_kernel
from simulator.run import _plan
from traces.models import get_model


@njit(cache=True)
def _serve_all(calls, ints, floats, acc):
    """Serve the recorded requests (rows: now, ra, rb, rc, gemm, write, finish) in order;
    returns how many finished at another cycle than recorded."""
    wrong = 0
    for i in range(calls.shape[0]):
        c = calls[i]
        finish = _serve_kernel(c[0], np.int64(c[1]), np.int64(c[2]), np.int64(c[3]),
                               np.int64(c[4]), ints, floats, acc, np.int64(c[5]))
        if finish != c[6]:
            wrong += 1
    return wrong


def _record(scheds, arch) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The DRAM requests of one replay (runs off), the DRAM state before the first and the
    number of GEMMs."""
    calls: list[tuple] = []
    start: dict = {}

    def serve(now, ra, rb, rc, gi, ints, floats, counts, write=0):
        if not start:
            start["ints"], start["floats"] = ints.copy(), floats.copy()
        finish = _serve_kernel(now, ra, rb, rc, gi, ints, floats, counts, write)
        calls.append((now, ra, rb, rc, gi, write, finish))
        return finish

    saved = engine.DramUnit.call
    engine.DramUnit.call = property(lambda self: (serve, self.ints, self.floats, self.counts))
    try:
        engine.replay(scheds, arch, array("d"), dram_only=True, runs=False)
    finally:
        engine.DramUnit.call = saved
    return np.array(calls, dtype=np.float64), start["ints"], start["floats"], len(scheds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tensordash")
    ap.add_argument("--dataflow", default="os")
    ap.add_argument("--layers", type=int, default=0, help="first N layers of ResNet-50 (0: all)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    layers = get_model("resnet50").layers
    layers = layers[: args.layers] if args.layers else layers
    arch = load_arch(args.preset)
    plan = _plan(layers, args.batch, arch, args.dataflow, "train", None,
                 arch.features.baseline(), frozenset(), True)
    scheds = [p.sched for p in plan]
    engine.replay(scheds[:2], arch, array("d"))  # the kernels compiled or loaded outside timing
    whole = float("inf")
    for _ in range(args.repeat):
        t0 = time.process_time()
        engine.replay(scheds, arch, array("d"), dram_only=True)
        whole = min(whole, time.process_time() - t0)
    calls, ints0, floats0, n = _record(scheds, arch)
    _serve_all(calls[:1], ints0.copy(), floats0.copy(), np.zeros((n, 4), np.int64))
    alone, wrong, bursts = float("inf"), 0, 0
    for _ in range(args.repeat):
        ints, floats, acc = ints0.copy(), floats0.copy(), np.zeros((n, 4), np.int64)
        t0 = time.process_time()
        wrong = _serve_all(calls, ints, floats, acc)
        alone = min(alone, time.process_time() - t0)
        bursts = int(acc[:, 0].sum()) // int(ints[0])
    writes = int(calls[:, 5].sum()) if len(calls) else 0
    print(f"ResNet-50 training step ({len(layers)} layers, batch {args.batch}, dense) on "
          f"{args.preset} {args.dataflow}, CPU seconds (best of {args.repeat}); load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"requests {len(calls)} ({writes} writes), bursts {bursts}: replay {whole:.2f}s, "
          f"DRAM requests alone {alone:.2f}s ({alone / whole:.0%}); same finish times: "
          f"{'yes' if wrong == 0 else f'NO ({wrong} differ)'}")
    return 0 if wrong == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
