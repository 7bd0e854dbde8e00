"""A first-principles, cycle-by-cycle model of an R×C systolic array that computes C = A·B by
moving operands through its PEs, against the fold schedules the simulator charges.

The model (slow and plain on purpose): every cycle each PE takes the operand of its left
neighbour (and, in ``os``, of its upper neighbour; in ``ws``/``is`` the partial sum of its upper
neighbour), multiplies, and accumulates. Every operand carries a tag (fold, step); a PE that sees
two tags in one cycle, or a weight of the wrong fold, fails the test, so a schedule that packs
folds too tightly cannot pass. The numeric result must equal ``A @ B``.

* ``os``: A[i, k] enters array row r = i - i0 at cycle s + k + r, B[k, j] enters column
  c = j - j0 at cycle s + k + c; PE (r, c) accumulates C[i, j] and holds it at its last step.
* ``ws``: the fold's B tile (K rows on array rows, N on columns) is shifted down into the PEs
  over R cycles (a chain per column), then A[m, k] enters row r = k - k0 at cycle s + m + r;
  partial sums flow down and leave the bottom of column c at cycle s + m + R - 1 + c; K-folds add.
* ``is``: ``ws`` on the transposed product (A stationary, B streamed): C^T = B^T · A^T.

A schedule is when each fold starts:
* SCALE-Sim's serial schedule: a fold starts when the previous one has left the whole array,
  a partial fold being fed zeros on its unmapped rows and columns (SCALE-Sim pads every fold to
  the full array). Its cycle count is SCALE-Sim's formula (``dense_cycles`` + 1, and SCALE-Sim
  itself on a few GEMMs) — including a partial last fold charged the full array and its idle
  tail: without the padding (operands stop at the fold's last mapped PE) the serial schedule is
  shorter whenever a fold is partial.
* ``folds: overlapped``: a fold starts as soon as the previous fold's operands have all entered
  the array (one fold's stream of T steps behind the other); in ``ws``/``is`` the next fold's
  weights are shifted into a shadow register per PE meanwhile, and since the deepest row takes
  the current fold's weight 2R - 1 cycles after the fold starts, the next fold's weights cannot
  start down the column before: folds start max(T, 2R - 1) apart (T = M in ``ws``, N in ``is``).
  That spacing is the tightest the model allows (one cycle less and two folds meet) and its
  count equals our engine's under ``--memory ideal`` (``map_dense(..., "overlapped")``,
  ``simulate``) for every T.
* the same with row-synchronous skipping in ``ws``/``is`` (``sync: lockstep``, no taps):
  a fold streams only the steps where its slice of the streamed operand has a nonzero, T' of
  them, and starts max(T', 2R - 1) after the previous fold that streamed anything; its count
  equals the sparse work model's (``dataflows.sparse``).
MAC lanes: one per PE (SCALE-Sim's); the lanes only shorten T (os) or widen a fold along K.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dataflows.features import SparseFeatures
from dataflows.gemm import Gemm, lower
from dataflows.sparse import work_candidates
from dataflows.systolic import map_dense
from simulator.scalesim_compat import dense_cycles
from traces.layers import Layer


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class _Clash(AssertionError):
    """Two folds met in one PE (or a PE used the wrong fold's weight)."""


def _edge(starts, lane, t, length, mapped, value, pad, what):
    """The operand entering edge ``lane`` (an array row or column) at cycle ``t``: step
    ``t - s - lane`` of the fold started at ``s``, tagged (value, fold, step); ``length(f)``:
    the fold's steps; ``mapped(f)``: lanes the fold maps, the rest fed zeros when ``pad``
    (SCALE-Sim) and nothing otherwise."""
    got = None
    for f, s in starts.items():
        step = t - s - lane
        if not 0 <= step < length(f):
            continue
        if lane < mapped(f):
            v = (value(f, step), f, step)
        elif pad:
            v = (0, f, step)
        else:
            continue
        if got is not None:
            raise _Clash(f"{what} {lane} fed by two folds at cycle {t}")
        got = v
    return got


# --------------------------------------------------------------------------------------------
# os: both operands move (A right, B down), the output stays


def _os_folds(M, N, R, C):
    return [(i0, j0) for i0 in range(0, M, R) for j0 in range(0, N, C)]


def _run_os(A, B, R, C, starts, pad):
    """Run the os folds ``starts`` names (fold -> first cycle); returns (C, cycles = last MAC
    + 1, the cycle after the last one in which any register held data)."""
    M, K = A.shape
    N = B.shape[1]
    folds = _os_folds(M, N, R, C)
    out = np.zeros((M, N), dtype=A.dtype)
    a = [[None] * C for _ in range(R)]  # (value, fold, k)
    b = [[None] * C for _ in range(R)]
    acc = [[0] * C for _ in range(R)]
    last_mac = -1
    last_busy = -1
    horizon = max(starts.values()) + K + R + C + 2

    def used(f):
        i0, j0 = folds[f]
        return min(R, M - i0), min(C, N - j0)

    def edge_left(r, t):
        return _edge(starts, r, t, lambda f: K, lambda f: used(f)[0],
                     lambda f, k: A[folds[f][0] + r, k], pad, "row")

    def edge_top(c, t):
        return _edge(starts, c, t, lambda f: K, lambda f: used(f)[1],
                     lambda f, k: B[k, folds[f][1] + c], pad, "column")

    for t in range(horizon):
        na = [[a[r][c - 1] if c else edge_left(r, t) for c in range(C)] for r in range(R)]
        nb = [[b[r - 1][c] if r else edge_top(c, t) for c in range(C)] for r in range(R)]
        for r in range(R):
            for c in range(C):
                x, y = na[r][c], nb[r][c]
                # without padding an operand stops at its fold's last mapped PE
                if not pad and x is not None and c >= used(x[1])[1]:
                    na[r][c] = x = None
                if not pad and y is not None and r >= used(y[1])[0]:
                    nb[r][c] = y = None
                if x is None and y is None:
                    continue
                last_busy = t
                if x is None or y is None:
                    continue  # one operand passing through (the other's fold has no row here)
                if x[1:] != y[1:]:
                    raise _Clash(f"PE ({r}, {c}) got fold/step {x[1:]} and {y[1:]} at {t}")
                acc[r][c] += x[0] * y[0]
                last_mac = t
                f, k = x[1], x[2]
                if k == K - 1:  # the fold's last step here: C[i, j] is complete
                    i, j = folds[f][0] + r, folds[f][1] + c
                    if i < M and j < N:
                        out[i, j] = acc[r][c]
                    acc[r][c] = 0
        a, b = na, nb
    return out, last_mac + 1, last_busy + 1


# --------------------------------------------------------------------------------------------
# ws: the weights stay (preloaded down a chain per column), A moves right, partial sums down


def _ws_folds(K, N, R, C):
    return [(k0, j0) for k0 in range(0, K, R) for j0 in range(0, N, C)]


def _run_ws(A, W, R, C, starts, pad, shadow, steps=None):
    """``out = A @ W`` with W stationary. ``starts``: fold -> the cycle its stream starts; its
    weights are shifted in over the R (or, unpadded, the fold's mapped rows) cycles before,
    straight into the PEs (``shadow`` False: the array must be idle) or into a shadow register
    per PE that the PE copies when the fold's first operand reaches it (``shadow`` True).
    ``steps``: fold -> the rows m of A it streams, in order (None: all M; a row left out must be
    zero in the fold's slice of A)."""
    M, K = A.shape
    N = W.shape[1]
    folds = _ws_folds(K, N, R, C)
    out = np.zeros((M, N), dtype=A.dtype)
    every = range(M)

    def rows_of(f):  # the m of each step of fold f
        return every if steps is None else steps[f]

    def used(f):
        k0, j0 = folds[f]
        return min(R, K - k0), min(C, N - j0)

    def depth(f):  # rows the fold's weights are shifted through
        return R if pad else used(f)[0]

    # chain[r][c]: (weight, fold, the row it is for) in the shift chain; active[r][c]: in use
    chain = [[None] * C for _ in range(R)]
    active = [[None] * C for _ in range(R)]
    a = [[None] * C for _ in range(R)]  # (value, fold, m)
    p = [[None] * C for _ in range(R)]  # (partial sum, fold, m)
    last_mac = -1
    last_busy = -1
    horizon = max(starts.values()) + M + R + C + 2 if starts else 0

    def load_start(f, c):
        # the chain of column c is complete one cycle before the fold's first operand gets to
        # row 0 of that column (cycle s + c)
        return starts[f] + (c if shadow else 0) - depth(f)

    for t in range(horizon):
        # 1. weight chains shift: the fold loading in column c feeds row depth-1-i at step i
        nchain = [[None] * C for _ in range(R)]
        for c in range(C):
            feeding = [f for f in starts if 0 <= t - load_start(f, c) < depth(f)]
            if len(feeding) > 1:
                raise _Clash(f"column {c}'s weight chain loads two folds at cycle {t}")
            for r in range(R):  # the chain shifts only while loading
                nchain[r][c] = chain[r - 1][c] if feeding and r else chain[r][c]
            if feeding:
                f = feeding[0]
                i = t - load_start(f, c)
                rr = depth(f) - 1 - i  # the row this value is for: the deepest goes first
                k0, j0 = folds[f]
                rows, cols = used(f)
                w = W[k0 + rr, j0 + c] if rr < rows and c < cols else 0
                nchain[0][c] = (w, f, rr)
                last_busy = t
        # 2. A moves right, partial sums down, each PE multiplies
        na = [[None] * C for _ in range(R)]
        npp = [[None] * C for _ in range(R)]
        for r in range(R):
            for c in range(C):
                if c:
                    x = a[r][c - 1]
                else:
                    x = _edge(starts, r, t, lambda f: len(rows_of(f)), lambda f: used(f)[0],
                              lambda f, i, r=r: A[rows_of(f)[i], folds[f][0] + r], pad,
                              "row")
                if x is not None and not pad and c >= used(x[1])[1]:
                    x = None
                if x is not None and not pad and r >= used(x[1])[0]:
                    x = None
                na[r][c] = x
                if x is None:
                    continue
                last_busy = t
                f, m = x[1], x[2]  # m: the step (partial sums are tagged with it)
                # the weight: taken from the chain when this fold's first operand arrives
                if active[r][c] is None or active[r][c][1] != f:
                    src = chain[r][c]  # the chain as it stood at the end of the last cycle
                    if src is None or src[1:] != (f, r):
                        raise _Clash(f"PE ({r}, {c}) has no weight of fold {f} at cycle {t}")
                    active[r][c] = src
                up = (0, f, m) if r == 0 else p[r - 1][c]
                if up is None or up[1:] != (f, m):
                    raise _Clash(f"PE ({r}, {c}) partial sum {up} for fold {f} row {m} at {t}")
                npp[r][c] = (up[0] + x[0] * active[r][c][0], f, m)
                last_mac = t
                bottom = (R if pad else used(f)[0]) - 1
                if r == bottom:
                    j = folds[f][1] + c
                    if j < N:
                        out[rows_of(f)[m], j] += npp[r][c][0]
        if not shadow:
            # weights go straight into the PEs: the chain is the PEs' weight register, so a
            # fold's chain must not shift while another fold's operands are still in the array
            for r in range(R):
                for c in range(C):
                    if na[r][c] is not None and nchain[r][c] is not None \
                            and nchain[r][c][1] != na[r][c][1]:
                        raise _Clash(f"PE ({r}, {c}) reloaded while computing at cycle {t}")
        chain, a, p = nchain, na, npp
    return out, last_mac + 1, last_busy + 1


# --------------------------------------------------------------------------------------------
# schedules


def _n_folds(df, M, K, N, R, C):
    if df == "os":
        return len(_os_folds(M, N, R, C))
    return len(_ws_folds(K, N if df == "ws" else M, R, C))


def _run(df, A, B, R, C, starts, pad, shadow=False, steps=None):
    if df == "os":
        return _run_os(A, B, R, C, starts, pad)
    if df == "ws":
        return _run_ws(A, B, R, C, starts, pad, shadow, steps)
    out, cycles, busy = _run_ws(B.T.copy(), A.T.copy(), R, C, starts, pad, shadow, steps)
    return out.T, cycles, busy


def serial(df, A, B, R, C, pad):
    """Each fold starts when the previous one has left the array (its weights, if any, are
    loaded then). Folds never meet, so each runs alone from its own cycle 0 and the schedule
    adds them up. Returns (C, cycles)."""
    M, K = A.shape
    N = B.shape[1]
    total = np.zeros((M, N), dtype=A.dtype)
    t = 0
    cycles = 0
    for f in range(_n_folds(df, M, K, N, R, C)):
        if df == "os":
            pre = 0
        elif pad:
            pre = R
        else:  # the preload shifts the fold's mapped rows only
            k0 = (f // _cdiv(N if df == "ws" else M, C)) * R
            pre = min(R, K - k0)
        out, last, busy = _run(df, A, B, R, C, {f: pre}, pad)
        total += out
        cycles = t + last
        t += busy
    return total, cycles


def spacing(df, T, R):
    """The least cycles between two overlapped folds' starts: the stream (T steps), and in
    ws/is the preload of the next fold's weights, which can start down a column only once the
    deepest row (R - 1, reached R - 1 cycles after the stream starts) has taken the current
    fold's weight, and takes R cycles: 2R - 1."""
    return T if df == "os" else max(T, 2 * R - 1)


def overlapped(df, A, B, R, C, gap=None):
    """Each fold's stream starts ``gap`` cycles after the previous one's (by default
    ``spacing``); ws/is preload the first fold's weights before."""
    M, K = A.shape
    N = B.shape[1]
    n = _n_folds(df, M, K, N, R, C)
    T = {"os": K, "ws": M, "is": N}[df]
    step = spacing(df, T, R) if gap is None else gap
    first = 0 if df == "os" else R
    out, cycles, _ = _run(df, A, B, R, C, {f: first + f * step for f in range(n)}, True,
                          shadow=True)
    return out, cycles


def overlapped_skipping(df, A, B, R, C, closer=False):
    """ws/is with row-synchronous skipping: fold f streams only the steps where its slice of
    the streamed operand (A's columns k0..k0+R-1 in ws, B's rows in is) holds a nonzero, T'_f
    of them; a fold that streams nothing is not run (its weights are not loaded); the others
    start max(T'_f, 2R - 1) after the previous one (``closer``: the second one cycle sooner).
    Returns (C, cycles, folds run)."""
    M, K = A.shape
    N = B.shape[1]
    streamed = A if df == "ws" else B.T  # (steps × K)
    folds = _ws_folds(K, N if df == "ws" else M, R, C)
    steps = {f: [m for m in range(streamed.shape[0]) if streamed[m, k0:k0 + R].any()]
             for f, (k0, _) in enumerate(folds)}
    starts = {}
    t = R
    for f in range(len(folds)):
        if steps[f]:
            starts[f] = t
            t += spacing(df, len(steps[f]), R) - (closer and len(starts) == 1)
    out, cycles, _ = _run(df, A, B, R, C, starts, True, shadow=True, steps=steps)
    return out, cycles, len(starts)


# --------------------------------------------------------------------------------------------
# tests

shapes = dict(M=st.integers(1, 9), K=st.integers(1, 9), N=st.integers(1, 9),
              R=st.integers(1, 4), C=st.integers(1, 4), df=st.sampled_from(["os", "ws", "is"]),
              seed=st.integers(0, 2**16))


def _operands(M, K, N, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(-5, 6, (M, K)), rng.integers(-5, 6, (K, N))


@settings(max_examples=40, deadline=None)
@given(**shapes)
def test_scalesim_serial_schedule_is_its_formula(M, K, N, R, C, df, seed):
    """SCALE-Sim's serial schedule (every fold padded to the full array, each after the
    previous has left it) computes A·B in exactly SCALE-Sim's cycles (its Total Cycles is the
    last cycle's index: ``dense_cycles`` = count - 1)."""
    A, B = _operands(M, K, N, seed)
    out, cycles = serial(df, A, B, R, C, pad=True)
    np.testing.assert_array_equal(out, A @ B)
    assert cycles - 1 == dense_cycles(M, K, N, R, C, df)
    assert cycles == map_dense(Gemm("g", "fwd", M, K, N), R, C, df).compute_cycles


@settings(max_examples=40, deadline=None)
@given(**shapes)
def test_partial_folds_are_charged_the_full_array(M, K, N, R, C, df, seed):
    """Without the padding (operands stop at a fold's last mapped PE, a ws/is preload shifts
    only the mapped rows) the serial schedule computes the same A·B and is shorter exactly when
    some fold is partial: the difference is the full-array charge SCALE-Sim's formula puts on
    partial folds (its idle tail)."""
    A, B = _operands(M, K, N, seed)
    out, tight = serial(df, A, B, R, C, pad=False)
    np.testing.assert_array_equal(out, A @ B)
    full = dense_cycles(M, K, N, R, C, df) + 1
    rows_dim, cols_dim = {"os": (M, N), "ws": (K, N), "is": (K, M)}[df]
    partial = rows_dim % R != 0 or cols_dim % C != 0
    if partial:
        assert tight < full
    else:
        assert tight == full


@settings(max_examples=40, deadline=None)
@given(**shapes)
def test_overlapped_folds_are_what_they_claim(M, K, N, R, C, df, seed):
    """``folds: overlapped``: each fold's stream ``spacing`` behind the previous one (ws/is:
    max(T, 2R - 1), the next fold's weights loading behind one shadow register per PE)
    computes A·B with no two folds meeting in a PE, in our count (fill and drain once per
    GEMM) for every stream length T; one cycle closer and two folds meet."""
    T = {"os": K, "ws": M, "is": N}[df]
    n = _n_folds(df, M, K, N, R, C)
    A, B = _operands(M, K, N, seed)
    out, cycles = overlapped(df, A, B, R, C)
    np.testing.assert_array_equal(out, A @ B)
    ours = map_dense(Gemm("g", "fwd", M, K, N), R, C, df, folds="overlapped")
    assert cycles == ours.compute_cycles
    assert ours.compute_cycles == (n - 1) * spacing(df, T, R) + T + (
        R + C - 2 if df == "os" else 2 * R + C - 2)
    if n > 1:
        with pytest.raises(_Clash):
            overlapped(df, A, B, R, C, gap=spacing(df, T, R) - 1)


def test_short_streams_wait_for_the_preload():
    """A stream shorter than 2R - 1 (ws: M = 2 on 4 rows, 3 row folds): the folds start
    2R - 1 = 7 apart, not 2, so 2·7 + 2 + (2·4 + 3 - 2) cycles."""
    M, K, N, R, C = 2, 10, 3, 4, 3
    A, B = _operands(M, K, N, 7)
    with pytest.raises(_Clash):
        overlapped("ws", A, B, R, C, gap=M)
    out, cycles = overlapped("ws", A, B, R, C)
    np.testing.assert_array_equal(out, A @ B)
    assert cycles == 2 * 7 + 2 + (2 * R + C - 2) == 25
    assert map_dense(Gemm("g", "fwd", M, K, N), R, C, "ws", folds="overlapped"
                     ).compute_cycles == 25


def test_mobilenetv2_first_layer_is():
    """docs/validation.md's example: MobileNetV2's first layer in ``is`` on 32×32 (M = 12544,
    K = 27, N = 32: 392 folds of T = 32 < 2R - 1 = 63)."""
    from traces.models import get_model

    layer = get_model("mobilenetv2").layers[0]
    g = lower(layer, 1, "fwd")
    assert (g.M, g.K, g.N) == (12544, 27, 32)
    mp = map_dense(g, 32, 32, "is", folds="overlapped")
    assert mp.folds == 392
    assert mp.compute_cycles == 391 * 63 + 32 + (2 * 32 + 32 - 2) == 24759


@settings(max_examples=30, deadline=None)
@given(M=st.integers(1, 8), K=st.integers(1, 9), N=st.integers(1, 8), R=st.integers(1, 4),
       C=st.integers(1, 3), df=st.sampled_from(["ws", "is"]), density=st.floats(0.05, 0.6),
       seed=st.integers(0, 2**16))
def test_overlapped_skipping_folds(M, K, N, R, C, df, density, seed):
    """Row-synchronous skipping under ``folds: overlapped`` (``sync: lockstep``, no taps):
    the per-cycle model, each fold streaming only its nonempty steps and starting
    max(T', 2R - 1) after the previous fold that ran (one cycle sooner and two folds meet),
    computes A·B in the sparse work model's cycles (whose folds run column folds outer, the
    model's row folds outer: the total is the same)."""
    rng = np.random.default_rng(seed)
    layer = Layer.linear("fc", K, N, tokens=M)
    masks = {"filter": None, "ifmap": None, "grad_out": None}
    role = "ifmap" if df == "ws" else "filter"
    masks[role] = rng.random(layer.operand_shape(role, 1)) < density
    g = lower(layer, 1, "fwd")
    assert (g.M, g.K, g.N) == (M, K, N)
    mask_a = masks["ifmap"].reshape(M, K) if df == "ws" else np.ones((M, K), bool)
    mask_b = masks["filter"].reshape(N, K).T if df == "is" else np.ones((K, N), bool)
    A, B = _operands(M, K, N, seed)
    A, B = np.where(mask_a, A | 1, 0), np.where(mask_b, B | 1, 0)  # nonzero where the mask is
    assume((A if df == "ws" else B).any())  # something to stream
    out, cycles, ran = overlapped_skipping(df, A, B, R, C)
    np.testing.assert_array_equal(out, A @ B)
    if ran > 1:  # the spacing is the tightest
        with pytest.raises(_Clash):
            overlapped_skipping(df, A, B, R, C, closer=True)
    # lockstep with no taps (no element moves) and uncapped free runs: a step costs a cycle
    # unless it is empty in every stream of the fold
    feats = SparseFeatures(skip=(role,), sync="lockstep", taps=(), free_rows=64)
    work = next(w for w in work_candidates(layer, 1, "fwd", masks, R, C, 1, df, feats,
                                           "overlapped") if w.mode.startswith("skip"))
    assert work.imbalance_cycles == 0
    assert work.compute_cycles == cycles


def test_first_layer_saving_example():
    """A GEMM whose last fold is partial: the serial schedule charges it the full array; the
    overlapped one starts each fold right behind the previous."""
    M, K, N, R, C = 7, 3, 5, 4, 4
    A, B = _operands(M, K, N, 3)
    _, scalesim = serial("os", A, B, R, C, pad=True)
    _, ovl = overlapped("os", A, B, R, C)
    assert scalesim == 4 * (K + R + C - 2)  # 4 folds, each charged K + R + C - 2
    assert ovl == 4 * K + R + C - 2


# M, K, N, rows, cols: partial folds; streams T >= 2R - 1, then shorter in ws and is
GEMMS = [(9, 7, 7, 3, 2), (8, 5, 9, 4, 3), (3, 10, 2, 4, 3)]


@pytest.mark.parametrize("df", ["os", "ws", "is"])
def test_against_scalesim_and_simulate(tmp_path, df):
    """The per-cycle counts against SCALE-Sim itself (serial) and our ``simulate`` with ideal
    memory (serial and overlapped), on a few GEMMs with partial folds."""
    from simulator.arch import load_arch
    from simulator.run import simulate
    from traces.topology import read_topology

    topo = tmp_path / "g.csv"
    topo.write_text("Layer, M, N, K,\n" + "".join(f"g{i}, {m}, {n}, {k},\n"
                                                  for i, (m, k, n, _, _) in enumerate(GEMMS)))
    layers = read_topology(topo).layers
    for i, (M, K, N, R, C) in enumerate(GEMMS):
        A, B = _operands(M, K, N, i)
        _, ser = serial(df, A, B, R, C, pad=True)
        _, ovl = overlapped(df, A, B, R, C)
        base = load_arch("scalesim-32").with_overrides({"array.rows": R, "array.cols": C})
        for folds, want in (("serial", ser), ("overlapped", ovl)):
            arch = base.with_overrides({"array.folds": folds})
            row = simulate([layers[i]], 1, arch, df, "fwd", "ideal").table.iloc[0]
            assert int(row["Compute Cycles"]) == want, (M, K, N, R, C, df, folds)
        theirs = _scalesim_total(tmp_path / f"s{i}", M, K, N, R, C, df)
        if theirs is not None:
            assert theirs == ser - 1, (M, K, N, R, C, df)


def _scalesim_total(tmp, M, K, N, R, C, df):
    """SCALE-Sim's Total Cycles of one GEMM (None when scalesim is not installed)."""
    try:
        from scalesim.scale_sim import scalesim
    except ImportError:
        return None
    from tests.scalesim_cfg import CFG

    tmp.mkdir()
    cfg = tmp / "run.cfg"
    cfg.write_text(CFG.format(run="run", rows=R, cols=C, ifmap=64, filt=64, ofmap=64, bw=10,
                              df=df))
    topo = tmp / "t.csv"
    topo.write_text(f"Layer, M, N, K,\ng, {M}, {N}, {K},\n")
    sim = scalesim(save_disk_space=True, verbose=False, config=str(cfg), topology=str(topo),
                   layout=str(topo), input_type_gemm=True)
    sim.run_scale(top_path=str(tmp / "out"))
    run = next(p for p in (tmp / "out").iterdir() if p.is_dir())
    import csv

    with open(run / "COMPUTE_REPORT.csv", newline="") as f:
        rows = [{k.strip(): v.strip() for k, v in r.items() if k} for r in csv.DictReader(f)]
    return int(float(rows[0]["Total Cycles"]))
