"""Benchmark: the fixed costs of a ``sparsesim simulate`` command, apart from the simulation.

The ResNet-50 SWAT-90 batch-32 step (``bench_sparse.make_trace``), ``tensordash``, ``os``,
modeled memory, the dense baseline cached, numba's cache warm. Each run is the console script's
``simulate`` in a fresh interpreter, timed from inside (CPU seconds, user + system):

* ``imports``: the modules the command imports before it starts (``cli.main`` and what
  ``_cmd_simulate`` imports), under the console script's process settings;
* ``numba first load``: the first cached kernel numba loads (it loads its compiler's registries
  then, which import scipy's BLAS for numba's ``np.dot``);
* ``numba loads``: every cached kernel loaded (the first one included) and how many;
* ``trace read``: reading the trace's steps (``Trace._read``), numba's loads left out;
* ``verdict``: the bound of the run and of its layers (``reports.verdict``);
* ``write results``: the CSV reports and ``summary.json``;
* ``garbage collection``: CPU of CPython's cyclic collector over the whole command;
* ``whole command``: the process's CPU time (``wait4``).

With ``--against REV`` the same runs alternate between this checkout and REV (a git worktree
made for the run), ``--repeat`` times each, and the medians are printed side by side with their
ratio (this / REV): an A/B measured in one run on one machine.

Run:  python benchmarks/bench_startup.py [--against REV] [--repeat 5] [--trace DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

#: the child: the console script's ``simulate`` in this interpreter, with its phases timed
CHILD = r"""
import gc, json, resource, sys, time

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

out = {"gc": 0.0, "loads": 0.0, "load_count": 0, "first_load": 0.0, "trace": 0.0,
       "verdict": 0.0, "write": 0.0}
started = {}

def on_gc(phase, info):
    if phase == "start":
        started["gc"] = time.process_time()
    elif "gc" in started:
        out["gc"] += time.process_time() - started.pop("gc")

gc.callbacks.append(on_gc)
argv = sys.argv[1:]
sys.argv = ["sparsesim", *argv]
from cli import process
process.tune("simulate")  # what main() does first when the console script runs
t = cpu()
import cli.main, common.fsutil, common.jit, reports.verdict, simulator.arch, simulator.baseline
import simulator.budget, simulator.results, simulator.run, traces.format
out["imports"] = cpu() - t
from numba.core import caching

inside = []

def timed(owner, name, key, nested_loads=False):
    fn = getattr(owner, name)

    def run(*a, **k):
        t0, loads0 = cpu(), out["loads"]
        try:
            return fn(*a, **k)
        finally:
            spent = cpu() - t0
            if nested_loads:  # numba's loads inside are counted as loads
                spent -= out["loads"] - loads0
            out[key] += spent

    setattr(owner, name, run)

def load(self, sig, ctx, _load=caching.Cache.load_overload):
    t0 = cpu()
    try:
        return _load(self, sig, ctx)
    finally:
        spent = cpu() - t0
        if not out["load_count"]:
            out["first_load"] = spent
        out["loads"] += spent
        out["load_count"] += 1

caching.Cache.load_overload = load
timed(traces.format.Trace, "_read", "trace", nested_loads=True)
timed(reports.verdict, "run_verdict", "verdict")
timed(reports.verdict, "layers_sentence", "verdict")
timed(simulator.results, "write_results", "write")
import io, contextlib
with contextlib.redirect_stdout(io.StringIO()):
    code = cli.main.main()
out["code"] = code
print(json.dumps(out), file=sys.stderr)
"""

ROWS = (
    ("imports", "imports"),
    ("numba first load", "first_load"),
    ("numba loads", "loads"),
    ("trace read (no numba loads)", "trace"),
    ("verdict", "verdict"),
    ("write results", "write"),
    ("garbage collection", "gc"),
    ("whole command", "cpu"),
)


def run_once(tree: Path, trace: Path, out: Path, cache: Path) -> dict[str, float]:
    """One ``simulate`` of ``trace`` with the packages of ``tree``: its phases' CPU seconds."""
    env = {**os.environ, "SPARSESIM_CACHE_DIR": str(cache), "PYTHONPATH": str(tree)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as on a user's machine: bytecode cached
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                "simulate",
                str(trace),
                "--arch",
                "tensordash",
                "--dataflow",
                "os",
                "--memory",
                "modeled",
                "-o",
                str(out),
                "--force",
            ],
            cwd=tree,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        log.seek(0)
        text = log.read()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"simulate failed in {tree}:\n{text}")
    got = json.loads(text.strip().splitlines()[-1])
    got["cpu"] = usage.ru_utime + usage.ru_stime
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", default=None, help="a git revision to compare with")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each tree (default 5)")
    ap.add_argument(
        "--trace",
        type=Path,
        default=None,
        help="the trace to simulate (default: synthesized, as bench_sparse does)",
    )
    args = ap.parse_args()
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "benchmarks"))
    from bench_sparse import make_trace

    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work = Path(tmp)
        trees = {"this": root}
        if args.against:
            other = work / "rev"
            subprocess.run(
                [
                    "git",
                    "-C",
                    str(root),
                    "worktree",
                    "add",
                    "--detach",
                    "-q",
                    str(other),
                    args.against,
                ],
                check=True,
            )
            trees[args.against] = other
        try:
            trace = args.trace or make_trace(work, trees.get(args.against, root))
            runs: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
            for name, tree in trees.items():  # warm-up: the baseline cached, kernels compiled
                run_once(tree, trace, work / "res", work / f"cache-{name}")
            for _ in range(args.repeat):
                for name, tree in trees.items():
                    runs[name].append(run_once(tree, trace, work / "res", work / f"cache-{name}"))
        finally:
            if args.against:
                subprocess.run(
                    [
                        "git",
                        "-C",
                        str(root),
                        "worktree",
                        "remove",
                        "--force",
                        str(trees[args.against]),
                    ],
                    check=False,
                )
    print(
        f"fixed costs of 'sparsesim simulate' (ResNet-50 SWAT-90 step, tensordash, os, "
        f"modeled memory, warm caches): median CPU s of {args.repeat} runs each, "
        f"alternating; load average {os.getloadavg()[0]:.2f}"
    )
    names = list(trees)
    print(
        f"  {'':30}"
        + "".join(f"{n:>12}" for n in names)
        + ("       ratio" if len(names) == 2 else "")
    )
    for label, key in ROWS:
        med = [statistics.median(r[key] for r in runs[n]) for n in names]
        ratio = f"{med[0] / med[1]:12.2f}" if len(names) == 2 and med[1] else ""
        print(f"  {label:30}" + "".join(f"{m:12.3f}" for m in med) + ratio)
    counts = [statistics.median(r["load_count"] for r in runs[n]) for n in names]
    print(f"  {'kernels loaded (count)':30}" + "".join(f"{c:12.0f}" for c in counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
