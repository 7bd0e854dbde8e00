"""Benchmark: the walk of an im2col operand whose feature map is stored compressed
(``dataflows.tiles._MapOp``: its blocks' words and nonzeros, the words pairs of blocks share),
this checkout against another revision's, in CPU seconds.

Two figures, each the median of ``--repeat`` rounds:

* ``kernels`` (default): runs ``sparsesim simulate TRACE --arch tensordash --dataflow DF
  --memory modeled`` with the filter, activations and output gradient stored as bitmaps in this
  process, and on every ``_MapOp`` it builds (and every ``fill`` of it) times this checkout's
  and, with ``--against REV``, ``dataflows/tiles.py`` of revision REV (loaded as a module of its
  own) in turn, on the same arguments, checking that both count the same bits;
* ``--step``: the whole command, with the bitmap formats and without (dense formats), run
  alternately from this checkout and from REV (a git worktree made for the run), each from a
  dense-baseline cache filled by a first run; CPU seconds (user + system) of each.

Run:  python benchmarks/bench_map_walk.py [--trace DIR] [--dataflow os] [--against REV]
                                          [--repeat 3] [--step]
      (without ``--trace``: the ResNet-50 SWAT-90 batch-32 step, synthesized first; minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from revisions import module_at  # this folder's; run as python benchmarks/...

import dataflows.tiles as tiles

ROOT = Path(__file__).resolve().parent.parent
BITMAP = [
    "--set",
    "sparse.formats.filter=bitmap",
    "--set",
    "sparse.formats.ifmap=bitmap",
    "--set",
    "sparse.formats.grad_out=bitmap",
]


def _tiles_at(rev: str, work: Path):
    """``dataflows/tiles.py`` at git revision ``rev``, loaded as a module of its own."""
    return module_at(rev, "dataflows/tiles.py", work, "tiles_against")


def _bits(op) -> list[np.ndarray]:
    """What a ``_MapOp`` counted: its blocks' bits and counts, and the whole map's bits."""
    return [op.fetch, op.fhold, op.hold, op.words, op.whole]


class _Rounds:
    """Per kind (this checkout, REV), its CPU seconds in each round, summed over the calls."""

    def __init__(self, kinds: dict, repeat: int) -> None:
        self.kinds, self.repeat = kinds, repeat
        self.secs = {k: [0.0] * repeat for k in kinds}
        self.same = True
        self.calls = 0

    def time(self, prepare, run) -> dict:
        """``run(kind, prepare(kind))`` for each kind, ``repeat`` rounds in turn (only ``run``
        timed); each kind's last result."""
        out = {}
        for r in range(self.repeat):
            for name in self.kinds:
                args = prepare(name)
                t = time.process_time()
                out[name] = run(name, args)
                self.secs[name][r] += time.process_time() - t
        self.calls += 1
        return out


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def kernels(trace: Path, dataflow: str, rev: str | None, repeat: int) -> int:
    """Time ``_MapOp`` (building it, and each ``fill``) of this checkout and of ``rev`` on the
    calls the step makes; 1 where they count different bits."""
    from cli.main import main

    with tempfile.TemporaryDirectory(prefix="bench-map-walk-") as tmp:
        kinds = {"this": tiles._MapOp}
        if rev:
            kinds[rev] = _tiles_at(rev, Path(tmp))._MapOp
        rounds = _Rounds(kinds, repeat)
        init, fill = tiles._MapOp.__init__, tiles._MapOp.fill

        def build(kind, args):
            if kind != "this":
                return kinds[kind](*args)
            op = object.__new__(tiles._MapOp)
            init(op, *args)
            return op

        def timed_init(self, *args):
            ops = rounds.time(lambda k: args, build)
            self.__dict__.update(ops["this"].__dict__)
            self._others = {k: o for k, o in ops.items() if k != "this"}
            rounds.same &= all(_same(_bits(self), _bits(o)) for o in self._others.values())

        def run_fill(kind, args):
            op, folds = args
            (fill if kind == "this" else type(op).fill)(op, folds, col_of[0])
            return op, folds

        col_of = [0]

        def timed_fill(self, out, col):
            col_of[0] = col
            ops = {"this": self, **self._others}
            got = rounds.time(lambda k: (ops[k], [f.copy() for f in out]), run_fill)
            for f, g in zip(out, got["this"][1], strict=True):
                f[...] = g
            for k in self._others:
                rounds.same &= _same(out, got[k][1]) and _same(self.occ, ops[k].occ)

        tiles._MapOp.__init__, tiles._MapOp.fill = timed_init, timed_fill
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                main(
                    [
                        "simulate",
                        str(trace),
                        "--arch",
                        "tensordash",
                        "--dataflow",
                        dataflow,
                        "--memory",
                        "modeled",
                        *BITMAP,
                        "-o",
                        str(Path(tmp) / "out"),
                    ]
                )
        finally:
            tiles._MapOp.__init__, tiles._MapOp.fill = init, fill
    print(
        f"{rounds.calls} calls (_MapOp builds and fills), {dataflow}; CPU seconds summed "
        f"over them, median of {repeat} rounds; load average {os.getloadavg()[0]:.2f}"
    )
    med = {k: statistics.median(v) for k, v in rounds.secs.items()}
    for name, s in med.items():
        print(f"{name:>10}: {s:7.3f} s CPU (min {min(rounds.secs[name]):.3f})")
    if rev:
        print(
            f"{rev} / this = {med[rev] / max(med['this'], 1e-9):5.2f}x; bits identical: "
            f"{'yes' if rounds.same else 'NO'}"
        )
    return 0 if rounds.same else 1


def _run(trace: Path, cwd: Path, cache: Path, out: Path, extra: list[str]) -> float:
    """CPU seconds (user + system) of ``sparsesim simulate`` run from ``cwd`` (whose packages
    it imports) with its dense-baseline cache in ``cache``."""
    env = {**os.environ, "SPARSESIM_CACHE_DIR": str(cache)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # timed as on a user's machine
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli.main",
                "simulate",
                str(trace),
                "--arch",
                "tensordash",
                "--dataflow",
                "os",
                "--memory",
                "modeled",
                *extra,
                "-o",
                str(out),
                "--force",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status):
            log.seek(0)
            raise SystemExit(f"simulate failed:\n{log.read()}")
    return usage.ru_utime + usage.ru_stime


def step(trace: Path, rev: str, repeat: int, work: Path) -> int:
    """The whole ``os`` step with bitmap and with dense formats, this checkout and ``rev`` in
    turn, warm dense-baseline caches: median CPU seconds of each."""
    other = work / "rev"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(other), rev], check=True
    )
    trees = {"this": ROOT, rev: other}
    runs = {"bitmap": BITMAP, "dense": []}
    secs = {(t, r): [] for t in trees for r in runs}
    try:
        for t, cwd in trees.items():  # numba compiles (or loads) its kernels; caches fill
            for extra in runs.values():
                _run(trace, cwd, work / f"cache-{t}", work / "out", extra)
        for _ in range(repeat):
            for r, extra in runs.items():
                for t, cwd in trees.items():
                    secs[t, r].append(_run(trace, cwd, work / f"cache-{t}", work / "out", extra))
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)], check=False
        )
    print(
        f"ResNet-50 step, tensordash, os, modeled memory, warm baseline cache; CPU seconds "
        f"(user + system), median of {repeat}; load average {os.getloadavg()[0]:.2f}"
    )
    med = {k: statistics.median(v) for k, v in secs.items()}
    for (t, r), v in secs.items():
        print(
            f"  {t:<10} {r:<7} median {med[t, r]:6.2f} s   runs " + " ".join(f"{x:.2f}" for x in v)
        )
    for r in runs:
        print(f"  {r}: {rev} / this = {med[rev, r] / med['this', r]:.2f}x")
    print(f"  this: bitmap / dense = {med['this', 'bitmap'] / med['this', 'dense']:.2f}x")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--trace",
        type=Path,
        help="trace directory (default: synthesize the ResNet-50 SWAT-90 batch-32 step)",
    )
    ap.add_argument("--dataflow", default="os", choices=("os", "ws", "is"))
    ap.add_argument("--against", metavar="REV", help="also time this git revision")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--step", action="store_true", help="time the whole command instead (needs --against)"
    )
    args = ap.parse_args()
    if args.step and not args.against:
        ap.error("--step needs --against REV")
    with tempfile.TemporaryDirectory(prefix="bench-map-walk-") as tmp:
        trace = args.trace
        if trace is None:
            from bench_sparse import make_trace  # benchmarks/ is on the path as a script

            trace = make_trace(Path(tmp))
        if args.step:
            return step(trace, args.against, args.repeat, Path(tmp))
        return kernels(trace, args.dataflow, args.against, args.repeat)


if __name__ == "__main__":
    raise SystemExit(main())
