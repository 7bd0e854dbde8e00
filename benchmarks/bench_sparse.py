"""Benchmark: the sparse engine.

Figures to reach (issue "Sparse engine"):
1. ResNet-50 SWAT 90 % full training step (batch 32), modeled memory, ``tensordash`` preset:
   < 30 s for the whole ``sparsesim simulate`` command (it also runs the dense baseline).
2. The work-model kernels process >= 1 G mask bits per second on one core (best of five runs;
   other processes may share the cores, so the load average is printed with the figures).

3. With ``--against REV``: the same ``sparsesim simulate`` command timed alternately on this
   checkout and on REV (a git worktree made for the run), ``--repeat`` times each; prints the
   median wall times, the median CPU times (user + system), the peak RSS and their ratios
   (this / REV), measured in one run on one machine. Every run starts from an empty
   dense-baseline cache, or with ``--warm`` from one that holds it.

Run:  python benchmarks/bench_sparse.py [--against REV [--repeat 3] [--warm]]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dataflows import kernels as kx
from traces.format import PackedMask


def _best(fn, repeat: int) -> float:
    """Seconds of the fastest of ``repeat`` calls (other processes share the cores)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def kernel_rates(repeat: int = 5) -> list[tuple[str, float]]:
    """Mask bits per second of each work-model kernel, on one core (best of ``repeat``)."""
    rng = np.random.default_rng(0)
    # a ResNet-50 layer1 3x3 conv at batch 8, 90 % sparse activations: im2col A is 25088 x 576
    # bits; its transpose (the bwd_weight B operand) 576 x 25088
    # the feature map as the trace packs it, repacked once into the kernels' words
    fmap = kx.Bits.of(PackedMask.from_bool(rng.random((8, 64, 56, 56)) < 0.1)).words
    view = (64, 56, 56, 0, 8, 0, 64, 0, 0)  # C, H, W; images 0..8, channels 0..64, no crop
    geo = (3, 3, 1, 1, 1, 1, 1, 1, 56, 56)
    kx.im2col_rows(fmap, 64, 56, 56, 0, 1, 0, 64, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 8, 8)  # compile
    kx.im2col_cols(fmap, 64, 56, 56, 0, 1, 0, 64, 0, 0, 3, 3, 1, 1, 1, 1, 1, 1, 8, 8)
    bits = 8 * 56 * 56 * 576
    a = kx.im2col_rows(fmap, *view, *geo)
    out = [("im2col packing, rows (bits/s)",
            bits / _best(lambda: kx.im2col_rows(fmap, *view, *geo), repeat)),
           ("im2col packing, columns (bits/s)",
            bits / _best(lambda: kx.im2col_cols(fmap, *view, *geo), repeat))]
    kx.col_popcounts(a[:4], 576)
    out.append(("per-k popcounts (bits/s)", bits / _best(lambda: kx.col_popcounts(a, 576),
                                                         repeat)))
    for name, h, d in (("window H=2 D=5", 2, 5), ("unbounded window", -1, 0)):
        kx.row_stream_lengths(a[:4], 576, 16, h, d)
        kx.slice_stream_lengths(a[:64], 576, 16, h, d)
        t_rows = _best(lambda h=h, d=d: kx.row_stream_lengths(a, 576, 16, h, d), repeat)
        t_slice = _best(lambda h=h, d=d: kx.slice_stream_lengths(a, 576, 16, h, d), repeat)
        out.append((f"os row streams, {name} (bits/s)", bits / t_rows))
        out.append((f"ws/is column streams, {name} (bits/s)", bits / t_slice))
    return out


def make_trace(work: Path, cwd: Path | None = None) -> Path:
    """The ResNet-50 SWAT-90 batch-32 step, written by the checkout at ``cwd`` (None: this
    one): against an older revision, that revision writes it, so that both can read it."""
    trace = work / "r50-swat90"
    subprocess.run([sys.executable, "-m", "cli.main", "synth", "--model", "resnet50", "--method",
                    "swat", "--sparsity", "0.9", "--batch", "32", "-q", "-o", str(trace)],
                   check=True, stdout=subprocess.DEVNULL, cwd=cwd)
    return trace


def step_run(trace: Path, out: Path, cwd: Path | None = None,
             cache: Path | None = None) -> tuple[float, str, float, float]:
    """Wall seconds of the whole ``sparsesim simulate`` command (run from ``cwd``, whose
    packages it then imports, with its dense-baseline cache in ``cache``: None, a fresh one),
    the speedup line it printed, its peak RSS (MiB) and its CPU seconds (user + system: less
    swayed than the wall time by other processes on the cores)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log, tempfile.TemporaryDirectory() as fresh:
        env = {**os.environ, "SPARSESIM_CACHE_DIR": str(cache or fresh)}
        # timed as on a user's machine, where Python keeps the modules' compiled bytecode
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "simulate", str(trace),
                                 "--arch", "tensordash", "-o", str(out), "--force"],
                                stdout=log, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                                env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        log.seek(0)
        text = log.read()
    if proc.returncode:
        raise SystemExit(f"simulate failed ({proc.returncode}):\n{text}")
    speed = next(line for line in text.splitlines() if "speedup" in line).strip()
    return wall, speed, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime  # KiB on Linux


def step_time(trace: Path, out: Path, cwd: Path | None = None) -> tuple[float, str]:
    """``step_run`` without the memory figure."""
    wall, speed, _, _ = step_run(trace, out, cwd)
    return wall, speed


def against(rev: str, repeat: int, warm: bool) -> int:
    """This checkout against ``rev``: alternate runs, median wall times and their ratio.
    ``warm``: each tree's dense baseline is in its cache before the timed runs (a tree that
    has no cache simulates it anyway); else every run starts from an empty cache."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="bench-sparse-") as tmp:
        work = Path(tmp)
        other = work / "rev"
        subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", "-q", str(other),
                        rev], check=True)
        try:
            trace = make_trace(work, other)
            times: dict[str, list[float]] = {"this": [], rev: []}
            cpus: dict[str, list[float]] = {"this": [], rev: []}
            rss: dict[str, list[float]] = {"this": [], rev: []}
            caches = {"this": work / "cache-this", rev: work / "cache-rev"}
            for name, cwd in (("this", root), (rev, other)):  # warm-up: numba compiles and
                step_run(trace, work / "res", cwd, caches[name])  # caches the kernels
            for _ in range(repeat):
                for name, cwd in (("this", root), (rev, other)):
                    wall, _, mib, cpu = step_run(trace, work / "res", cwd,
                                                 caches[name] if warm else None)
                    times[name].append(wall)
                    cpus[name].append(cpu)
                    rss[name].append(mib)
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force",
                            str(other)], check=False)
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu = {k: statistics.median(v) for k, v in cpus.items()}
    print(f"ResNet-50 SWAT 90 % step (batch 32), tensordash, modeled memory, "
          f"{'warm' if warm else 'cold'} baseline cache; {repeat} runs each, alternating; load "
          f"average {os.getloadavg()[0]:.2f}")
    for k, v in times.items():
        print(f"  {k:<12} median {med[k]:6.1f} s   runs " + " ".join(f"{x:.1f}" for x in v)
              + f"   CPU median {cpu[k]:6.1f} s   peak RSS {max(rss[k]):.0f} MiB")
    print(f"  ratio this / {rev}: time {med['this'] / med[rev]:.2f}, CPU time "
          f"{cpu['this'] / cpu[rev]:.2f}, peak RSS {max(rss['this']) / max(rss[rev]):.2f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", metavar="REV", help="time against this git revision too")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warm", action="store_true",
                    help="with --against: the dense baseline cached before the timed runs")
    args = ap.parse_args()
    if args.against:
        return against(args.against, args.repeat, args.warm)
    rows = []
    ok = True
    for name, rate in kernel_rates():
        good = rate >= 1e9
        ok &= good
        rows.append((name, f"{rate / 1e9:.2f} G", ">= 1 G", "yes" if good else "NO"))
    with tempfile.TemporaryDirectory(prefix="bench-sparse-") as tmp:
        wall, speed = step_time(make_trace(Path(tmp)), Path(tmp) / "res")
    ok &= wall < 30
    rows.append(("ResNet-50 SWAT 90 % step, tensordash, modeled (s)", f"{wall:.1f}", "< 30",
                 "yes" if wall < 30 else "NO"))
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; kernels: best of 5")
    print(f"{'figure':<56}{'value':>10}{'target':>10}{'ok':>5}")
    for r in rows:
        print(f"{r[0]:<56}{r[1]:>10}{r[2]:>10}{r[3]:>5}")
    print("  " + speed)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
