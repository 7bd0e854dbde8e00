"""Whole GEMMs under the scheduler keys (``sync``, ``taps``, ``order``, ``free_rows``, ``side``)
and the lowering choices, against a per-step reference built from the explicit lowered
matrices (``test_lowering`` checks those against torch) and the literal rules of
``test_taps``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import InputError
from dataflows.features import SparseFeatures, parse_features
from dataflows.lowering import CHOICES, Lowering, lowered_parts
from dataflows.sparse import sparse_work
from dataflows.systolic import map_dense
from dataflows.taps import strided_order
from tests.dataflows.test_sparse import case
from tests.dataflows.test_taps import TD_TAPS, ref_count, ref_schedule, ref_window_lockstep

SETTINGS = dict(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def _unpack(pack, k):
    return np.unpackbits(pack.view(np.uint8), axis=1, bitorder="little")[:, :k].astype(bool)


def _steps(bits: np.ndarray, L: int) -> np.ndarray:
    """(streams, K) → (T, streams, L), K padded with zeros to the lanes."""
    s, k = bits.shape
    t = -(-k // L)
    out = np.zeros((s, t * L), bool)
    out[:, :k] = bits
    return out.reshape(s, t, L).transpose(1, 0, 2)


def reference(layer, batch, phase, masks, R, C, L, df, feats: SparseFeatures):
    """Per GEMM the phase runs: (fold cycles of the skipping candidate and their imbalance,
    column folds outer, from the literal rules; the GEMM); None when nothing is skipped."""
    ra, rb = {"fwd": ("ifmap", "filter"), "bwd_input": ("grad_out", "filter"),
              "bwd_weight": ("grad_out", "ifmap")}[phase]
    masks = dict(masks)
    if not feats.lowering.default or feats.side == "tensor":
        for r in (ra, rb):  # a dense operand of a skipped role: ones, zeros where padded
            if masks[r] is None and r in feats.skip:
                masks[r] = np.ones(layer.operand_shape(r, batch), dtype=bool)
    parts = lowered_parts(layer, batch, phase, feats.lowering, L, masks[ra], masks[rb])
    out = [_reference_part(gemm, packs, fracs, phase, (ra, rb), masks, R, C, L, df, feats)
           for gemm, packs, fracs in parts]
    return None if out[0] is None else out


def _reference_part(gemm, packs, fracs, phase, rs, masks, R, C, L, df, feats):
    ra, rb = rs
    M, K, N = gemm.M, gemm.K, gemm.N
    streamed = {"os": "AB", "ws": "A", "is": "B"}[df]
    roles = {"A": ra, "B": rb}
    masked = {"A": masks[ra] is not None, "B": masks[rb] is not None}
    skip = [x for x in streamed if roles[x] in feats.skip and masked[x]]
    if not skip:
        return None
    mats = [(None if a is None else _unpack(a, K), None if b is None else _unpack(b, K))
            for a, b in packs]
    if len(skip) == 2:
        if feats.side == "tensor":
            win = "B" if phase == "bwd_weight" else "A"
            oth = "A" if win == "B" else "B"
            xs = [win if f["AB".index(win)] > f["AB".index(oth)] else oth for f in fracs]
        else:
            da = sum(int(a.sum()) for a, _ in mats) / (len(mats) * M * K)
            db = sum(int(b.sum()) for _, b in mats) / (len(mats) * K * N)
            xs = ["A" if da <= db else "B"] * len(mats)
    else:
        xs = skip * len(mats)
    fill = (R + C - 2) if df == "os" else (2 * R + C - 2)
    order = (list(feats.lane_order(L)) if feats.taps is not None else None)
    F = feats.free_run()
    out = []
    for (a, b), x in zip(mats, xs, strict=True):
        x_bits = a if x == "A" else b  # streams × K (os) or time × K
        if df == "os":
            R_ = R if x == "A" else C
            nr, nc = -(-M // R), -(-N // C)
            groups = [x_bits[i:i + R_] for i in range(0, x_bits.shape[0], R_)]
            bufs = [_steps(gb, L) for gb in groups]
            fold_of = (lambda i, j: i) if x == "A" else (lambda i, j: j)
        else:
            nr = -(-K // (L * R))
            nc = -(-(N if df == "ws" else M) // C)
            T = x_bits.shape[0]
            kp = -(-K // L) * L
            padded = np.zeros((T, kp), bool)
            padded[:, :K] = x_bits
            sl = padded.reshape(T, -1, L)  # (time, slices, L)
            bufs = [sl[:, q:q + R] for q in range(0, sl.shape[1], R)]
            fold_of = lambda i, j: i  # noqa: E731
        # tiles in column-folds-outer order (j outer, i inner); walk order for the carry
        tiles = [(i, j) for j in range(nc) for i in range(nr)]
        if feats.sync == "lockstep" and feats.taps is not None:
            sched = [ref_schedule(bf, feats.taps, order, F) for bf in bufs]
            walk = ([(i, j) for i in range(nr) for j in range(nc)]
                    if df == "os" and phase != "bwd_weight" else tiles)
            cyc, s = {}, 0
            for t in walk:
                cyc[t], s = ref_count(sched[fold_of(*t)], F, s)
            per = {t: (cyc[t], 0) for t in tiles}
        elif feats.sync == "lockstep":
            lens = [ref_window_lockstep(bf, feats.lookahead, feats.lookaside)
                    if feats.lookahead >= 0 else
                    max(-(-int(bf[:, s_].sum()) // L) for s_ in range(bf.shape[1]))
                    for bf in bufs]
            per = {t: (lens[fold_of(*t)], 0) for t in tiles}
        else:  # barrier: every stream alone, the fold waits for its slowest
            per = {}
            for f, bf in enumerate(bufs):
                ls = []
                for s_ in range(bf.shape[1]):
                    one = bf[:, s_:s_ + 1]
                    ls.append(ref_count(ref_schedule(one, feats.taps, order, F), F)[0])
                mx = max(ls)
                for t in tiles:
                    if fold_of(*t) == f:
                        per[t] = (mx, mx - (-(-sum(ls) // len(ls))))
        out += [[per[t][0] + fill, per[t][1]] for t in tiles]
    return np.array(out, dtype=np.int64), gemm


@st.composite
def feats(draw):
    sync = draw(st.sampled_from(["lockstep", "barrier"]))
    use_taps = sync == "barrier" or draw(st.booleans())
    d = {"skip": draw(st.lists(st.sampled_from(["filter", "ifmap", "grad_out"]), unique=True,
                               min_size=1)), "sync": sync,
         "side": draw(st.sampled_from(["gemm", "tensor"])),
         "lowering": {k: draw(st.sampled_from(v)) for k, v in CHOICES.items()}}
    if use_taps:
        d["taps"] = draw(st.sampled_from([[list(t) for t in TD_TAPS], [[1, 0]],
                                          [[1, 1], [2, -1], [1, 0]]]))
        d["order"] = draw(st.sampled_from(["sequential", {"stride": 3}]))
        if draw(st.booleans()):
            d["free_rows"] = draw(st.integers(0, 3))
    else:
        d["window"] = {"lookahead": draw(st.integers(0, 2)), "lookaside": draw(st.integers(0, 2))}
    return parse_features(d, "t.yaml")


@settings(**SETTINGS)
@given(c=case(), phase=st.sampled_from(["fwd", "bwd_input", "bwd_weight"]),
       df=st.sampled_from(["os", "ws", "is"]), R=st.integers(1, 3), C=st.integers(1, 3),
       L=st.sampled_from([1, 2, 4, 16]), f=feats())
def test_scheduler_keys_equal_reference(c, phase, df, R, C, L, f):
    layer, batch, masks = c
    w = sparse_work(layer, batch, phase, masks, R, C, L, df, f)
    ref = reference(layer, batch, phase, masks, R, C, L, df, f)
    # a dense operand is an all-ones mask under a lowering of its own (built or not)
    ones = {r: (np.ones(layer.operand_shape(r, batch), bool) if m is None and r in f.skip
                else m) for r, m in masks.items()}
    if not f.lowering.default or f.side == "tensor":
        w1 = sparse_work(layer, batch, phase, ones, R, C, L, df, f)
        for k in ("mode", "compute_cycles", "imbalance_cycles", "algorithmic", "actual",
                  "effectual", "gated"):
            assert getattr(w1, k) == getattr(w, k), k
    works = w.parts or [w]
    if ref is None:
        assert all(p.mode == "dense" for p in works)
        assert w.compute_cycles == sum(map_dense(p.gemm, R, C, df, L).compute_cycles
                                       for p in works)
        return
    assert len(ref) == len(works) and (len(works) == 1) == (w.parts is None)
    total = 0
    for p, (folds, gemm) in zip(works, ref, strict=True):
        assert p.gemm == gemm
        dense = map_dense(gemm, R, C, df, L).compute_cycles
        want = min(int(folds[:, 0].sum()), dense)
        assert p.compute_cycles + p.imbalance_cycles == want
        total += want
        if p.mode != "dense":
            np.testing.assert_array_equal(p.fold_cycles, folds[:, 0])
            np.testing.assert_array_equal(p.fold_imbalance, folds[:, 1])
    assert w.compute_cycles + w.imbalance_cycles == total


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("df", ["os", "ws", "is"])
def test_per_image_weight_gradient_of_a_dense_operand(batch, df):
    """``batch: per_image`` pads each image's positions of ``bwd_weight`` to the lanes; the
    counts of a dense operand held as ones (not built) are padded the same way (they were the
    folded lowering's: 3 positions against 4)."""
    from traces.layers import Layer

    layer = Layer.linear("fc", 1, 1, tokens=3)
    f = parse_features({"skip": ["filter", "ifmap", "grad_out"], "sync": "lockstep",
                        "lowering": {"batch": "per_image"}}, "t.yaml")
    dz = np.random.default_rng(batch).random((batch, 3, 1)) < 0.4
    masks = {"filter": None, "ifmap": None, "grad_out": dz}
    test_scheduler_keys_equal_reference.hypothesis.inner_test(
        (layer, batch, masks), "bwd_weight", df, 1, 1, 2, f)


def test_order_and_taps_parse():
    f = parse_features({"skip": ["ifmap"], "sync": "lockstep",
                        "taps": {"shape": "T", "lookahead": 2, "lookaside": 5},
                        "order": {"stride": 5}}, "a.yaml", 16)
    assert f.taps == tuple(TD_TAPS) and f.free_run() == 2
    assert f.lane_order(16).tolist() == strided_order(16, 5)
    assert f.baseline() == SparseFeatures(lowering=f.lowering)
    assert Lowering().default
    # a key set to null is a key left out (an override can remove the taps' companions)
    g = parse_features({"skip": ["ifmap"], "taps": None, "order": None, "free_rows": None},
                       "a.yaml", 16)
    assert g.taps is None and g.free_rows == -1


def test_free_run_carries_in_dnnsim_tile_order():
    """Very sparse windows on many small folds: the run of free steps carried from tile to
    tile decides cycles, and it is walked window folds outer (DNNsim's loop) in ``fwd``."""
    from traces.layers import Layer

    layer = Layer.conv("c", 3, 6, 3, 6, padding=1)
    f = parse_features({"skip": ["ifmap"], "sync": "lockstep", "taps": [[1, 0], [2, 0]]},
                       "t.yaml")
    hits = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        masks = {"ifmap": rng.random((2, 3, 6, 6)) < 0.04, "filter": None, "grad_out": None}
        w = sparse_work(layer, 2, "fwd", masks, 2, 2, 4, "os", f)
        ((folds, _),) = reference(layer, 2, "fwd", masks, 2, 2, 4, "os", f)
        np.testing.assert_array_equal(w.fold_cycles, folds[:, 0])
        lens = w.fold_cycles
        hits += len(set(lens.tolist())) > 1
    assert hits  # the folds differ: the case is not trivial


def test_more_than_64_lanes_with_skipping_is_refused(tmp_path):
    """A step of a stream is one 64-bit word: a wider PE with skipping is one clear error naming
    array.lanes (and nothing is refused without skipping)."""
    from simulator.arch import load_arch

    with pytest.raises(InputError) as e:
        load_arch("tensordash").with_overrides({"array.lanes": 128})
    assert "array.lanes" in str(e.value) and "at most 64" in str(e.value)
    ok = load_arch("tensordash").with_overrides({"array.lanes": 64})
    assert ok.lanes == 64
    dense = load_arch("scalesim-32").with_overrides({"array.lanes": 128})
    assert dense.lanes == 128
    with pytest.raises(InputError):
        parse_features({"skip": ["ifmap"]}, "a.yaml", 65)


BAD_KEYS = [
    ({"sync": "foo"}, "sparse.sync: expected one of barrier, lockstep"),
    ({"taps": [[0, 1]]}, "sparse.taps: expected a list of distinct [h, d]"),
    ({"taps": [[1, 0], [1, 0]]}, "sparse.taps: expected a list of distinct"),
    ({"taps": {"shape": "T", "lookahead": 0, "lookaside": 5}}, "sparse.taps.lookahead"),
    ({"taps": [[1, 0]], "window": {"lookahead": 1, "lookaside": 1}}, "not both"),
    ({"taps": [[1, 0]], "order": [0, 1]}, "sparse.order: expected sequential"),
    ({"order": "sequential"}, "sparse.order: a visiting order needs taps"),
    ({"taps": [[1, 0]], "free_rows": -1}, "sparse.free_rows: expected an integer >= 0"),
    ({"free_rows": 2}, "sparse.free_rows: the free-row rule needs taps"),
    ({"side": "both"}, "sparse.side: expected one of gemm, tensor"),
]


@pytest.mark.parametrize("bad,msg", BAD_KEYS)
def test_scheduler_keys_refused_in_one_line(bad, msg):
    with pytest.raises(InputError) as e:
        parse_features({"skip": ["ifmap"], **bad}, "a.yaml", 16)
    assert msg in str(e.value) and str(e.value).startswith("a.yaml: ")


def _fields(w) -> dict:
    """A work's figures, arrays as lists and parts as their figures (for equality)."""
    out = {}
    for k, v in vars(w).items():
        if k == "parts":
            v = None if v is None else [_fields(p) for p in v]
        elif isinstance(v, np.ndarray):
            v = (v.dtype.str, v.tolist())
        out[k] = v
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=case(), df=st.sampled_from(["os", "ws", "is"]), L=st.sampled_from([1, 4, 16]),
       f=feats(), seed=st.integers(0, 2**31))
def test_operands_held_as_ones_are_shared_by_geometry(c, df, L, f, seed):
    """The lowered operands held as ones and their kernels' results are looked up by the
    layer's geometry and the operand's words (``dataflows.sparse._ones_parts``): a layer of the
    same geometry, other name and other masks, and the other phases, run before, between or
    after, change nothing; each layer's work names its own GEMM."""
    from dataclasses import replace

    from dataflows import sparse

    layer, batch, masks = c
    twin = replace(layer, name=layer.name + "-twin")
    rng = np.random.default_rng(seed)
    masks2 = {r: None if m is None else rng.random(m.shape) < 0.3 for r, m in masks.items()}
    runs = [(lay, ms, ph) for ph in ("fwd", "bwd_input", "bwd_weight")
            for lay, ms in ((layer, masks), (twin, masks2))]

    def work(lay, ms, ph):
        return _fields(sparse_work(lay, batch, ph, ms, 2, 2, L, df, f))

    want = []
    for run in runs:
        sparse._ONES_PARTS.clear()
        sparse._ONES_RESULTS.clear()
        want.append(work(*run))
    for i in [1, 0, 3, 2, 5, 4, 0, 2, 4, 1, 3, 5]:
        got = work(*runs[i])
        assert got == want[i]
        assert got["gemm"].layer == runs[i][0].name


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=case(), phase=st.sampled_from(["fwd", "bwd_input", "bwd_weight"]),
       L=st.sampled_from([1, 4, 16]), low=st.fixed_dictionaries(
           {k: st.sampled_from(v) for k, v in CHOICES.items()}), side=st.integers(0, 1))
def test_operands_lowered_one_at_a_time(c, phase, L, low, side):
    """A GEMM's two operands lower independently: the operands of a lowering with one operand
    left dense (None), merged with those of a lowering of the other one alone
    (``dataflows.sparse._with_ones``), are those of the lowering of both."""
    from dataflows.sparse import _with_ones

    layer, batch, masks = c
    ra, rb = {"fwd": ("ifmap", "filter"), "bwd_input": ("grad_out", "filter"),
              "bwd_weight": ("grad_out", "ifmap")}[phase]
    lw = Lowering(**low)
    both = [masks[ra], masks[rb]]
    for i, r in enumerate((ra, rb)):
        if both[i] is None:
            both[i] = np.ones(layer.operand_shape(r, batch), dtype=bool)
    only = [both[0], None] if side == 0 else [None, both[1]]
    rest = [None, both[1]] if side == 0 else [both[0], None]
    ones = [side == 0, side == 1]
    got = _with_ones(lowered_parts(layer, batch, phase, lw, L, *rest),
                     lowered_parts(layer, batch, phase, lw, L, *only), ones)
    want = lowered_parts(layer, batch, phase, lw, L, *both)
    assert len(got) == len(want)
    for (g1, p1, f1), (g2, p2, f2) in zip(got, want, strict=True):
        assert g1 == g2 and f1 == [tuple(f) for f in f2]
        for ab1, ab2 in zip(p1, p2, strict=True):
            for x, y in zip(ab1, ab2, strict=True):
                assert (x is None) == (y is None)
                if x is not None:
                    np.testing.assert_array_equal(x, y)
