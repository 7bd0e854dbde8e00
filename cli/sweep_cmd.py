"""`sparsesim sweep`: run every point of a sweep file, locally or on a Dask cluster.

    sparsesim sweep sweeps/dataflows.yaml -o runs/dataflows [--workers N] [--scheduler ADDRESS]

The work is in ``pipeline.sweep`` (``run_sweep``); the file format is in ``docs/sweeps.md``.
"""

from __future__ import annotations

import argparse
import sys
import time

from cli.helpers import add_allow_huge, path_arg


def add_sweep_parser(sub) -> None:
    """Register the ``sweep`` subcommand."""
    p = sub.add_parser(
        "sweep", help="run every point of a sweep file (resumable; local pool or Dask)",
        description="Run every point of a sweep file (a base architecture and trace, and axes "
                    "over architecture keys, dataflow, memory, phases and the synthetic trace's "
                    "sparsity config, as a grid or listed points). Each point is written to "
                    "DIR/points/<key>/ as it finishes; a re-run skips finished points. All "
                    "points together make DIR/sweep.csv. See docs/sweeps.md.")
    p.add_argument("sweep_file", metavar="SWEEP.yaml", type=path_arg, help="the sweep file")
    p.add_argument("-o", "--output", required=True, type=path_arg, metavar="DIR",
                   help="sweep directory: new, empty, or one this sweep (or another) wrote")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local worker processes (default: one per CPU)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on the Dask cluster of this scheduler (e.g. tcp://host:8786; needs "
                        "the cluster extra, and DIR on a file system the workers share)")
    p.add_argument("--no-cache", action="store_true", dest="no_cache",
                   help="simulate the dense baseline afresh: neither read nor write the "
                        "baseline cache ($SPARSESIM_CACHE_DIR, else ~/.cache/sparsesim)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_allow_huge(p)
    p.set_defaults(func=run)


class SweepProgress:
    """Points done / total and an ETA from the points run so far (cli.main's bar: on stderr
    when it is a terminal, silent otherwise)."""

    def __init__(self, enabled: bool) -> None:
        from cli.helpers import Progress

        self.bar = Progress("sweep", enabled)
        self.start: tuple[float, int] | None = None

    def __call__(self, done: int, total: int, what: str) -> None:
        now = time.perf_counter()
        if self.start is None:
            self.start = (now, done)
        t0, done0 = self.start
        if done >= total:
            eta = f"in {_clock(now - t0)}"
        elif done > done0:
            eta = f"ETA {_clock((now - t0) / (done - done0) * (total - done))}"
        else:
            eta = "ETA --:--"
        self.bar(done, total, f"{eta} {what}")


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds + 0.5), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m:02d}:{s:02d}"


def run(args: argparse.Namespace) -> None:
    from pipeline.sweep import SweepFailed, run_sweep
    from simulator.baseline import default_cache_dir

    try:
        r = run_sweep(args.sweep_file, args.output, workers=args.workers,
                      baseline_cache=None if args.no_cache else default_cache_dir(),
                      scheduler=args.scheduler, progress=SweepProgress(not args.quiet),
                      allow_huge=args.allow_huge)
    except SweepFailed as err:
        print(f"sparsesim: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    n = len(r.sweep.points)
    rows = sum(1 for _ in r.table.open(encoding="utf-8")) - 1
    again = f" ({len(r.rerun)} of them again: their results were damaged)" if r.rerun else ""
    print(f"sweep {r.sweep.name}: {n} points, {len(r.ran)} run{again} and {len(r.skipped)} "
          f"already done, in {r.seconds:.1f} s on {r.where}")
    if r.rebuilt:
        print(f"  {len(r.rebuilt)} damaged synthetic trace(s) built again")
    print(f"  axes: {', '.join(r.sweep.axes)}")
    print(f"  table: {r.table} ({rows} rows: point x layer x phase x step)")
    print(f"  points: {r.out / 'points'}/<key>/ (a results directory each)")
