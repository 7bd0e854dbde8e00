"""Benchmark: the DRAM unit's share of the engine (``simulator.dram._serve_kernel``).

Plans a ResNet-50 training step's dense GEMMs on a preset (as ``sparsesim simulate`` plans
them), replays them once with every tile through the per-tile processes while recording each
DRAM request the DMA units make (time, bytes of A, B and C, GEMM, read or write; the same
requests in the same order as with runs of tiles), then serves the recorded requests again
through ``_serve_kernel`` alone, in one numba loop, from the same starting state. Prints the
requests, the bursts they moved, the CPU seconds of the whole replay (runs on) and of the DRAM
requests alone (best of ``--repeat``), and whether every request finished at the same cycle
as in the replay (it must). With ``--against REV``: the same recorded requests served, in
turn, ``--repeat`` times each, by this checkout's ``_serve_kernel`` and by REV's
(``simulator/dram.py`` at REV, loaded beside this one); prints both CPU times (medians) and
their ratio, and whether both end every request at the recorded cycle and leave the same
state and counters.

Run:  python benchmarks/bench_engine_dram.py [--preset P] [--layers N] [--batch B] [--repeat R]
          [--against REV]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

import numpy as np

import simulator.engine as engine
from common.jit import njit
from simulator.arch import load_arch
from simulator.dram import _IH, _serve_kernel
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


def _serve_all_with(kernel):
    """``_serve_all`` over another revision's ``_serve_kernel`` (compiled here, not cached)."""

    @njit
    def serve_all(calls, ints, floats, acc):
        wrong = 0
        for i in range(calls.shape[0]):
            c = calls[i]
            finish = kernel(c[0], np.int64(c[1]), np.int64(c[2]), np.int64(c[3]),
                            np.int64(c[4]), ints, floats, acc, np.int64(c[5]))
            if finish != c[6]:
                wrong += 1
        return wrong

    return serve_all


def _kernel_at(rev: str, work: Path):
    """``_serve_kernel`` of ``simulator/dram.py`` at git revision ``rev``, loaded as a module
    of its own from a copy in ``work``."""
    root = Path(__file__).resolve().parent.parent
    text = subprocess.run(["git", "-C", str(root), "show", f"{rev}:simulator/dram.py"],
                          check=True, capture_output=True, text=True).stdout
    path = work / "dram_against.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("dram_against", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["dram_against"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module._serve_kernel


def against(rev: str, calls, ints0, floats0, n, repeat: int) -> int:
    """This checkout's request kernel against REV's on the recorded requests, in turn."""
    with tempfile.TemporaryDirectory(prefix="bench-dram-") as tmp:
        runs = {"this": _serve_all, rev: _serve_all_with(_kernel_at(rev, Path(tmp)))}
        times: dict[str, list[float]] = {k: [] for k in runs}
        ends: dict[str, tuple] = {}
        for serve in runs.values():  # compiled outside timing
            serve(calls[:1], ints0.copy(), floats0.copy(), np.zeros((n, 4), np.int64))
        for _ in range(repeat):
            for name, serve in runs.items():
                ints, floats, acc = ints0.copy(), floats0.copy(), np.zeros((n, 4), np.int64)
                t0 = time.process_time()
                wrong = serve(calls, ints, floats, acc)
                times[name].append(time.process_time() - t0)
                ends[name] = (wrong, ints, floats, acc)
    a, b = ends["this"], ends[rev]
    kept = _IH + int(ints0[1] * ints0[2])  # the header and open rows; the queues are scratch
    same = (a[0] == 0 and b[0] == 0 and np.array_equal(a[1][:kept], b[1][:kept])
            and np.array_equal(a[2], b[2]) and np.array_equal(a[3], b[3]))
    this, other = statistics.median(times["this"]), statistics.median(times[rev])
    print(f"{len(calls)} requests, CPU seconds (median of {repeat}); load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"this {this:.3f}s, {rev} {other:.3f}s, ratio {this / other:.2f}; same finish "
          f"times, state and counters: {'yes' if same else 'NO'}")
    return 0 if same else 1


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
    ap.add_argument("--against", metavar="REV",
                    help="also serve the requests with this git revision's kernel, in turn")
    args = ap.parse_args()
    layers = get_model("resnet50").layers
    layers = layers[: args.layers] if args.layers else layers
    arch = load_arch(args.preset)
    plan = _plan(layers, args.batch, arch, args.dataflow, "train", None,
                 arch.features.baseline(), frozenset(), True)
    scheds = [p.sched for p in plan]
    engine.replay(scheds[:2], arch, array("d"))  # the kernels compiled or loaded outside timing
    if args.against:
        calls, ints0, floats0, n = _record(scheds, arch)
        return against(args.against, calls, ints0, floats0, n, args.repeat)
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
