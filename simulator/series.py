"""Two small tables a run keeps beside its per-GEMM reports (``docs/metrics.md``):

* ``DRAM_TIMELINE.csv``: DRAM traffic over the time of each step, in equal bins, from the
  engine's event log (modeled memory only). A transfer's time is queueing and latency followed by
  its data phase; its bytes are placed evenly in the last ``bytes / peak`` cycles before it
  finished (the data phase at the DRAM's peak rate), so prefetching a GEMM's tiles during the
  previous GEMM shows where it happened, not where the GEMM ran.
* ``LOAD_IMBALANCE.csv``: per GEMM with a per-fold work model, how many folds lost what share of
  their cycles to load imbalance (the slowest lane's cycles minus the balanced length, over the
  fold's cycles), in 5 % bins.
"""

from __future__ import annotations

import numpy as np

from simulator.results import READ, WRITE
from simulator.table import Table

TIMELINE_BINS = 200
IMBALANCE_BINS = np.linspace(0.0, 100.0, 21)
IMBALANCE_COLUMNS = [f"Folds {lo:g}-{hi:g} %" for lo, hi in
                     zip(IMBALANCE_BINS[:-1], IMBALANCE_BINS[1:], strict=True)]


def transferred_by(starts: np.ndarray, ends: np.ndarray, nbytes: np.ndarray,
                   at: np.ndarray) -> np.ndarray:
    """Bytes moved by the times ``at`` (sorted) when transfer ``i`` moves ``nbytes[i]`` evenly
    over ``[starts[i], ends[i]]`` (all at ``starts[i]`` when it takes no time)."""
    at = np.asarray(at, dtype=np.float64)
    out = np.zeros(len(at))
    flat = ends <= starts
    if flat.any():  # instantaneous: a step at the start
        s, b = starts[flat], nbytes[flat]
        order = np.argsort(s, kind="stable")
        cum = np.concatenate([[0.0], np.cumsum(b[order])])
        out += cum[np.searchsorted(s[order], at, side="right")]
    keep = ~flat
    if keep.any():
        # a step's transfers can number millions: temporaries are dropped as soon as used
        s, e, b = starts[keep], ends[keep], nbytes[keep]
        rate = b / (e - s)
        pts = np.concatenate([s, e])
        delta = np.concatenate([rate, -rate])
        del s, e, b, rate
        order = np.argsort(pts, kind="stable")
        pts, delta = pts[order], delta[order]
        del order
        level = np.cumsum(delta, out=delta)  # rate in force after each change point
        step = np.diff(pts)
        step *= level[:-1]
        del level, delta
        cum = np.empty(len(step) + 1)
        cum[0] = 0.0
        np.cumsum(step, out=cum[1:])
        del step
        inside = np.interp(at, pts, cum)  # piecewise linear between change points
        inside[at >= pts[-1]] = cum[-1]
        inside[at <= pts[0]] = 0.0
        out += inside
    return out


def dram_timeline(events: np.ndarray, duration: float, clock_ghz: float, step: int,
                  peak_bytes_per_cycle: float, bins: int = TIMELINE_BINS) -> Table:
    """One step's DRAM traffic in ``bins`` equal bins over ``[0, duration]`` cycles."""
    edges = np.linspace(0.0, max(duration, 1.0), bins + 1)
    cols = {}
    for kind, name in ((READ, "Read"), (WRITE, "Write")):
        r = events[events[:, 0] == kind]
        nbytes = r[:, 4] + r[:, 5] + r[:, 6]
        start = np.maximum(r[:, 2], r[:, 3] - nbytes / peak_bytes_per_cycle)
        end = r[:, 3].copy()
        del r
        cols[name] = np.diff(transferred_by(start, end, nbytes, edges))
        del start, end, nbytes
    width = np.diff(edges)
    read_gbs = cols["Read"] / width * clock_ghz
    write_gbs = cols["Write"] / width * clock_ghz
    return Table({
        "Step": np.full(bins, step), "Bin": np.arange(bins), "Start Cycle": edges[:-1],
        "End Cycle": edges[1:], "Read Bytes": cols["Read"], "Write Bytes": cols["Write"],
        "Read GB/s": read_gbs, "Write GB/s": write_gbs, "DRAM GB/s": read_gbs + write_gbs,
    })


def imbalance_histogram(fold_cycles: np.ndarray, fold_imbalance: np.ndarray) -> np.ndarray:
    """Counts of folds per 5 % bin of ``imbalance / cycles`` (the last bin includes 100 %)."""
    cyc = np.asarray(fold_cycles, dtype=np.float64)
    imb = np.asarray(fold_imbalance, dtype=np.float64)
    share = np.divide(100.0 * imb, cyc, out=np.zeros_like(cyc), where=cyc > 0)
    counts, _ = np.histogram(np.clip(share, 0.0, 100.0), bins=IMBALANCE_BINS)
    return counts
