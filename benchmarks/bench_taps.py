"""Benchmark: TensorDash's tap scheduler on the real folds of a training step.

Runs ``sparsesim simulate TRACE --arch tensordash --dataflow os`` in this process, keeps the
arguments of every ``dataflows.taps.lockstep_row_folds`` call (the packed operand, K, L, the
fold size, the taps, the lane order, the free-row run), then times on those same calls, in one
run, best of ``--repeat`` (CPU seconds of this process):

* ``before``: the scheduler as it was before the rank-space tables (kept below, verbatim: the
  lanes of a step visited one by one in ``order``, every tap word rotated per stream and step);
* ``looped``: the packed scheduler before its per-step lookups were written out (kept below,
  verbatim) on every fold and row;
* ``kernel``: today's scheduler (``_schedule_with``: the packed one for TensorDash's 16 lanes
  and 7 taps) on every fold and row, without the fold-level shortcuts;
* ``folds``: today's ``lockstep_row_folds`` (empty rows left out, repeated folds looked up,
  the others scheduled sliced, up to 64 live rows at once: ``bench_taps_real.py`` times it
  against another revision's).

and checks that the four give the same (z, rest, out) arrays for every call. Prints the calls,
folds, distinct folds, the seconds and the ratios.

Run:  python benchmarks/bench_taps.py [--trace DIR] [--repeat 3]
      (without ``--trace``: the ResNet-50 SWAT-90 batch-32 step, synthesized first; minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from common.jit import njit
from dataflows import taps

_U1 = np.uint64(1)
_Z = np.uint64(0)


@njit(cache=True)
def _rotr_before(x, r, L, full):
    """Lane word ``x`` rotated so that bit p holds lane (p + r) mod L."""
    if r == 0:
        return x
    return ((x >> np.uint64(r)) | (x << np.uint64(L - r))) & full


@njit(cache=True)
def schedule_buffer_before(buf, T, G, L, th, td, order, F):
    """``taps.schedule_buffer`` before the rank-space tables (same rule, same results)."""
    full = (_U1 << np.uint64(L)) - _U1 if L < 64 else ~_Z
    ntaps = th.shape[0]
    rot = np.empty(ntaps, dtype=np.int64)
    for s in range(ntaps):
        rot[s] = td[s] % L
        if rot[s] < 0:
            rot[s] += L
    cand = np.zeros(ntaps, dtype=np.uint64)
    skip = 0
    for t in range(T):
        zero = True
        for g in range(G):
            if buf[t, g] != 0:
                zero = False
                break
        if skip < F and zero:
            skip += 1
            continue
        skip = 0
        if t + 1 >= T:
            break
        for g in range(G):
            w = buf[t, g]
            if w == full:
                continue
            anyc = _Z
            for s in range(ntaps):
                tt = t + th[s]
                c = _rotr_before(buf[tt, g], rot[s], L, full) if tt < T else _Z
                cand[s] = c
                anyc |= c
            elig = anyc & ~w & full
            if elig == 0:
                continue
            for p in order:
                bp = _U1 << np.uint64(p)
                if elig & bp == 0:
                    continue
                for s in range(ntaps):
                    if cand[s] & bp:
                        h = th[s]
                        src = p + rot[s]
                        if src >= L:
                            src -= L
                        buf[t + h, g] ^= _U1 << np.uint64(src)
                        w |= bp
                        anyc = _Z
                        for s2 in range(ntaps):
                            if th[s2] == h:
                                q = src - rot[s2]
                                if q < 0:
                                    q += L
                                cand[s2] &= ~(_U1 << np.uint64(q))
                            anyc |= cand[s2]
                        elig = anyc & ~w & full
                        break
                if elig == 0:
                    break
            buf[t, g] = w
    return taps._count(buf, T, G, F)


@njit(cache=True)
def schedule_packed_looped(buf, T, G, L, F, ptab, wtab, cm, sb, lanebit):
    """``taps._schedule_packed`` before its lookups were written out (loops over the steps
    and bytes of every stream step; same results)."""
    full = (_U1 << np.uint64(L)) - _U1
    hmax = ptab.shape[1] - 1
    nb = ptab.shape[2]
    low = np.uint64(0x0001000100010001)  # bit 0 of every field
    gather = np.uint64((1 << 48) | (1 << 33) | (1 << 18) | (1 << 3))  # those bits -> 48..51
    f16 = np.uint64(0xFFFF)
    skip = 0
    for t in range(T):
        if skip < F and taps._empty_step(buf, t, G):
            skip += 1
            continue
        skip = 0
        if t + 1 >= T:
            break
        hlim = min(hmax, T - 1 - t)
        for g in range(G):
            w = buf[t, g]
            sv = _Z
            for h in range(1, hlim + 1):
                sv |= buf[t + h, g] << np.uint64(16 * h)
            if sv == 0 or w == full:
                continue
            p0 = _Z
            p1 = _Z
            for h in range(1, hlim + 1):
                for k in range(nb):
                    v = (sv >> np.uint64(16 * h + 8 * k)) & np.uint64(255)
                    p0 |= ptab[0, h, k, v]
                    p1 |= ptab[1, h, k, v]
            wr = _Z
            for k in range(nb):
                wr |= wtab[k, (w >> np.uint64(8 * k)) & np.uint64(255)]
            x = p0 | p1
            x |= x >> np.uint64(32)
            x |= x >> np.uint64(16)
            elig = x & f16 & ~wr
            while elig != 0:
                i = trailing_zeros(elig)
                a = (((p0 >> np.uint64(i)) & low) * gather) >> np.uint64(48)
                b = (((p1 >> np.uint64(i)) & low) * gather) >> np.uint64(44)
                s = trailing_zeros((a & np.uint64(15)) | (b & np.uint64(240)))
                p0 &= cm[s, i, 0]
                p1 &= cm[s, i, 1]
                sv ^= sb[s, i]
                wr |= _U1 << np.uint64(i)
                w |= lanebit[i]
                x = p0 | p1
                x |= x >> np.uint64(32)
                x |= x >> np.uint64(16)
                elig = x & f16 & ~wr
            buf[t, g] = w
            for h in range(1, hlim + 1):
                buf[t + h, g] = (sv >> np.uint64(16 * h)) & f16
    return taps._count(buf, T, G, F)


@njit(cache=True)
def row_folds_plain(pack, K, L, R, th, td, order, F, which):
    """Every fold of ``lockstep_row_folds``, every row of it, no fold-level shortcut: with the
    scheduler before the rank-space tables (``which`` 0), the packed one before its lookups
    were written out (1; where the taps fit it), or today's (2: ``_schedule_with``, the packed
    one for TensorDash's 16 lanes and 7 taps)."""
    S = pack.shape[0]
    T = (K + L - 1) // L
    nf = (S + R - 1) // R
    z = np.zeros(nf, dtype=np.int64)
    rest = np.zeros(nf, dtype=np.int64)
    out = np.zeros(nf, dtype=np.int64)
    buf = np.zeros((max(T, 1), R), dtype=np.uint64)
    tabs = taps._tables(L, th, td, order)
    rows = np.arange(R)
    for f in range(nf):
        G = min(R, S - f * R)
        taps._row_buffer(pack, rows + f * R, G, T, L, buf)
        if which == 0:
            z[f], rest[f], out[f] = schedule_buffer_before(buf, T, G, L, th, td, order, F)
        elif which == 1 and tabs[3].shape[0] > 0:
            z[f], rest[f], out[f] = schedule_packed_looped(buf, T, G, L, F, tabs[3], tabs[4],
                                                           tabs[5], tabs[6], tabs[7])
        else:
            z[f], rest[f], out[f] = taps._schedule_with(buf, T, G, L, th, order, F, tabs)
    return z, rest, out, np.full(nf, T, dtype=np.int64)


def row_folds_before(*args):
    return row_folds_plain(*args, 0)


def row_folds_looped(*args):
    return row_folds_plain(*args, 1)


def row_folds_kernel(*args):
    return row_folds_plain(*args, 2)


def capture(trace: Path) -> list[tuple]:
    """The arguments of every ``lockstep_row_folds`` call of the ``os`` step on ``trace``."""
    from cli.main import main

    calls: list[tuple] = []
    kernel = taps.lockstep_row_folds

    def record(*args):
        calls.append(tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args))
        return kernel(*args)

    taps.lockstep_row_folds = record
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            main(["simulate", str(trace), "--arch", "tensordash", "--dataflow", "os",
                  "--memory", "ideal", "-o", str(Path(tmp) / "out")])
    finally:
        taps.lockstep_row_folds = kernel
    return calls


def _best(fn, calls: list[tuple], repeat: int) -> float:
    """CPU seconds of the fastest of ``repeat`` passes of ``fn`` over every call."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for args in calls:
            fn(*args)
        best = min(best, time.process_time() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", type=Path, help="trace directory (default: synthesize the "
                    "ResNet-50 SWAT-90 batch-32 step)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-taps-") as tmp:
        trace = args.trace
        if trace is None:
            from bench_sparse import make_trace  # benchmarks/ is on the path when run as a script

            trace = make_trace(Path(tmp))
        calls = capture(trace)
    if not calls:
        raise SystemExit("no lockstep_row_folds call: is the architecture's sync lockstep?")
    kinds = {"before": row_folds_before, "looped": row_folds_looped,
             "kernel": row_folds_kernel, "folds": taps.lockstep_row_folds}
    for fn in kinds.values():  # compile (or load from numba's cache)
        fn(*calls[0])
    same = all(
        all(np.array_equal(x, y) for x, y in zip(row_folds_before(*a), fn(*a), strict=True))
        for a in calls for fn in (row_folds_looped, row_folds_kernel, taps.lockstep_row_folds))
    folds = sum(-(-a[0].shape[0] // a[3]) for a in calls)
    distinct = len({(a[0][f:f + a[3]].tobytes(), a[1], a[0].shape[1])
                    for a in calls for f in range(0, a[0].shape[0], a[3])})
    secs = {name: _best(fn, calls, args.repeat) for name, fn in kinds.items()}
    print(f"calls {len(calls)}, folds {folds}, distinct folds {distinct}, "
          f"results identical: {same}")
    for name, s in secs.items():
        print(f"{name:>7}: {s:7.3f} s CPU (best of {args.repeat}), before / {name} "
              f"= {secs['before'] / s:5.2f}x")
    print(f"written-out lookups: looped / kernel = {secs['looped'] / secs['kernel']:5.2f}x")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
