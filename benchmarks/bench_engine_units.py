"""Benchmark: the engine's buffer halves and queues, lean (``simulator.engine``) against SimPy's
own ``Container`` and ``Store``.

The PE array and the DMAs hand tiles to each other through two input and two output
half-buffers. The engine keeps them in ``_Slots`` (a counter) and ``_Queue`` (a deque), which
cost no event when a slot is free or a tile is queued. SimPy's ``Container.get`` and
``Store.get`` schedule an event every time, even when they succeed at once. This benchmark
replays the same tile schedules both ways, in one run, and prints the engine's time per tile,
the ratio, and whether the two give the same timings (a process that resumes through the
event queue may act later in the same cycle, so the order of DRAM requests can change).

Run:  python benchmarks/bench_engine_units.py [--layers N] [--batch B] [--repeat R]
"""

from __future__ import annotations

import argparse
import time

import simpy

import simulator.engine as engine
from simulator.arch import load_arch
from simulator.run import _plan
from traces.models import get_model


class _ContainerSlots:
    """The half-buffers as SimPy's ``Container`` (``take``/``give`` as the engine calls them)."""

    def __init__(self, env: simpy.Environment, n: int) -> None:
        self.c = simpy.Container(env, capacity=n, init=n)

    def take(self):
        return self.c.get(1)

    def give(self) -> None:
        self.c.put(1)


class _StoreQueue:
    """The tile queues as SimPy's ``Store``."""

    def __init__(self, env: simpy.Environment) -> None:
        self.s = simpy.Store(env)

    def put(self, item) -> None:
        self.s.put(item)

    def get(self):
        return None, self.s.get()


def _time(scheds, arch, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = engine.simulate_tiles(scheds, arch, runs=False)  # every tile through the units
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=20, help="first N layers of ResNet-50")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    arch = load_arch("tensordash")
    layers = get_model("resnet50").layers[: args.layers]
    plan = _plan(layers, args.batch, arch, "os", "train", None, arch.features.baseline(),
                 frozenset())
    scheds = [p.sched for p in plan]
    tiles = sum(len(s) for s in scheds)
    engine.simulate_tiles(scheds[:1], arch)  # compile the DRAM kernels outside the timing
    lean, t_lean = _time(scheds, arch, args.repeat)  # seconds, timings
    real = (engine._Slots, engine._Queue)
    engine._Slots, engine._Queue = _ContainerSlots, _StoreQueue
    try:
        simpy_s, t_simpy = _time(scheds, arch, args.repeat)
    finally:
        engine._Slots, engine._Queue = real
    same = t_lean == t_simpy
    print(f"{len(scheds)} GEMMs, {tiles:,} tiles (ResNet-50 first {args.layers} layers, batch "
          f"{args.batch}, tensordash os, dense, modeled memory), best of {args.repeat}")
    print(f"  lean slots/queues:          {lean:.3f} s  ({1e6 * lean / tiles:.1f} us/tile)")
    print(f"  SimPy Container/Store:      {simpy_s:.3f} s  ({1e6 * simpy_s / tiles:.1f} us/tile)")
    print(f"  ratio SimPy / lean:         {simpy_s / lean:.2f}")
    print(f"  same timings:               {same}")


if __name__ == "__main__":
    main()
