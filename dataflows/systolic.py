"""Dense mapping of a GEMM onto an R×C systolic array: folds, compute cycles and SCALE-Sim's
utilisation figures, in closed form.

``C[M×N] = A[M×K]·B[K×N]`` is folded onto the array as SCALE-Sim does (``docs/metrics.md``):

======  ================  ================  ==========  =================================
df      array rows ←      array cols ←      time ←      cycles per fold
======  ================  ================  ==========  =================================
``os``  M                 N                 K           ⌈K/L⌉ + R + C − 2
``ws``  K (R·L per fold)  N                 M           2R + C + M − 2   (R-cycle preload)
``is``  K (R·L per fold)  M                 N           2R + C + N − 2   (R-cycle preload)
======  ================  ================  ==========  =================================

L is the number of MAC lanes per PE (a dot product of L terms per cycle along K; SCALE-Sim has
L = 1). Folds run one after another with full fill and drain, so a GEMM's compute takes
``folds × cycles per fold`` cycles; a grouped GEMM repeats that per group.

With ``folds: overlapped`` each fold starts right behind the previous one and the fill and drain
(``ovh``: R + C − 2 in ``os``, 2R + C − 2 with the preload in ``ws``/``is``) are paid once per
GEMM. In ``ws``/``is`` the next fold's weights shift down each column (R cycles) into one shadow
register per PE, which the PE copies when the fold's first operand reaches it; the deepest row
takes the current fold's weight R − 1 cycles after the fold's stream starts (plus the column's
skew, which the preload shares), and only then can the next fold's R-cycle preload start down
the column: folds start max(T, 2R − 1) apart (T: the fold's stream length, M in ``ws``, N in
``is``), and a GEMM of F folds takes (F − 1)·max(T, 2R − 1) + T + ovh cycles (``fold_cycles_of``
for folds of different lengths). ``tests/simulator/test_array_model.py`` runs the array cycle by
cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.vocab import DATAFLOWS
from dataflows.gemm import Gemm


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class DenseMapping:
    """How one GEMM (all groups) maps onto the array; all figures dense."""

    dataflow: str
    rows: int
    cols: int
    lanes: int
    row_dim: int  # GEMM extent mapped on the array rows (M for os, K for ws/is)
    col_dim: int  # ... on the array columns (N for os and ws, M for is)
    time_dim: int  # ... streamed in time (K for os, M for ws, N for is)
    row_folds: int
    col_folds: int
    cycles_per_fold: int  # incl. the per-fold fill/drain when folds are serial
    groups: int
    fold_overhead: int = 0  # fill/drain cycles inside cycles_per_fold
    #: paid once per GEMM (overlapped folds): the fill/drain, less the preload wait that
    #: ``cycles_per_fold`` charges the last fold too
    gemm_overhead: int = 0
    #: the least cycles from one fold's start to the next's (overlapped ``ws``/``is``: 2R − 1,
    #: the weight preload behind one shadow register per PE; else 0)
    spacing: int = 0

    @property
    def folds(self) -> int:
        """Folds of one group."""
        return self.row_folds * self.col_folds

    @property
    def compute_cycles(self) -> int:
        """Cycles to compute all groups with no stalls (a count, not SCALE-Sim's last index)."""
        return self.groups * self.folds * self.cycles_per_fold + self.gemm_overhead

    @property
    def mapping_efficiency(self) -> float:
        """Mean over folds of the fraction of PEs mapped (SCALE-Sim's Mapping Efficiency / 100)."""
        per_row = self.rows * self.lanes if self.dataflow != "os" else self.rows
        return (self.row_dim * self.col_dim) / (self.folds * per_row * self.cols)

    @property
    def compute_utilization(self) -> float:
        """Mean over folds of MACs / (PEs × the fold's cycles incl. its fill and drain, as
        SCALE-Sim counts them) — SCALE-Sim's Compute Util / 100."""
        r, c = self.rows, self.cols
        if self.dataflow == "os":
            t = _cdiv(self.time_dim, self.lanes)
            span = t + r + c - 2
        else:
            t = self.time_dim
            span = 2 * r + 2 * c + t - 3
        return self.mapping_efficiency * t / span


def map_dense(gemm: Gemm, rows: int, cols: int, dataflow: str, lanes: int = 1,
              folds: str = "serial") -> DenseMapping:
    """Fold ``gemm`` onto a ``rows`` × ``cols`` array with ``lanes`` MAC lanes per PE.

    ``folds="serial"`` (SCALE-Sim) pays each fold's pipeline fill and drain; ``"overlapped"``
    starts each fold as the previous one's data leaves, so fill and drain are paid once per GEMM
    (and the stationary operand of the next fold preloads in the shadow of the current one, so
    ``ws``/``is`` folds start max(T, 2R − 1) apart: the module docstring);
    ``"broadcast"``: operands are broadcast to the PEs with no systolic skew, so there is no
    fill or drain at all (DNNsim's TensorDash counts none).
    """
    m, k, n = gemm.M, gemm.K, gemm.N
    if dataflow == "os":
        rd, cd, td = m, n, k
        rf, cf = _cdiv(m, rows), _cdiv(n, cols)
        t = _cdiv(k, lanes)
        ovh = rows + cols - 2
    elif dataflow == "ws":
        rd, cd, td = k, n, m
        rf, cf = _cdiv(k, rows * lanes), _cdiv(n, cols)
        t, ovh = m, 2 * rows + cols - 2
    elif dataflow == "is":
        rd, cd, td = k, m, n
        rf, cf = _cdiv(k, rows * lanes), _cdiv(m, cols)
        t, ovh = n, 2 * rows + cols - 2
    else:
        raise ValueError(f"unknown dataflow {dataflow!r}; expected one of {', '.join(DATAFLOWS)}")
    if folds == "broadcast":  # no systolic skew: no fill, no drain
        return DenseMapping(dataflow, rows, cols, lanes, rd, cd, td, rf, cf, t, gemm.groups, 0, 0)
    if folds == "overlapped":
        # os: a fold's operands enter right behind the previous one's; ws/is: no sooner than
        # the previous fold's weights have been taken by its deepest row (module docstring)
        gap = 0 if dataflow == "os" else 2 * rows - 1
        step = max(t, gap)
        return DenseMapping(dataflow, rows, cols, lanes, rd, cd, td, rf, cf, step, gemm.groups,
                            0, ovh - (step - t), gap)
    return DenseMapping(dataflow, rows, cols, lanes, rd, cd, td, rf, cf, t + ovh, gemm.groups,
                        ovh, 0)


def fold_cycles_of(streams: np.ndarray, mapping: DenseMapping) -> np.ndarray:
    """Cycles of every fold of a GEMM (all groups, in tile order) whose slowest streams last
    ``streams`` cycles (per-fold fill/drain included: ``mapping.fold_overhead``), under the
    mapping's fold mode: the GEMM's once-paid overhead goes on the first fold; with overlapped
    ``ws``/``is`` folds, every fold that runs holds the array at least ``mapping.spacing``
    cycles (its weights must reach its deepest row before the next fold's preload starts), and
    the wait of the last one that runs, which no fold follows, comes off that overhead (as
    ``map_dense`` charges a dense GEMM). A fold that streams nothing (every step skipped) runs
    no cycle and loads no weights. Only the last fold's wait depends on the loop order of the
    tiles, and the last tile is the same in either order."""
    fc = np.array(streams, dtype=np.int64)
    if fc.size == 0:
        return fc
    gap = mapping.spacing
    extra = mapping.gemm_overhead
    if gap:
        extra += mapping.cycles_per_fold - mapping.time_dim  # the fill/drain of the GEMM
        busy = np.flatnonzero(fc > 0)
        if busy.size:
            last = fc[busy[-1]]
            fc[busy] = np.maximum(fc[busy], gap)
            extra -= fc[busy[-1]] - last
    fc[0] += extra
    return fc
