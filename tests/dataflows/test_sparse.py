"""The sparse work model against a per-cycle reference built from explicit matrices."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import event, given, settings
from hypothesis import strategies as st

from dataflows.features import SparseFeatures, parse_features
from dataflows.formats import FORMATS, block_bits
from dataflows.gemm import lower
from dataflows.kernels import pack_rows
from dataflows.sparse import pack_operands, sparse_work, work_candidates
from dataflows.systolic import map_dense
from tests.dataflows.test_kernels import reference_schedule
from traces.format import PackedMask
from traces.layers import Layer

SETTINGS = dict(deadline=None, max_examples=150)


def _im2col(fmap, layer, group):
    """Explicit (N·Ho·Wo, Cin/g·kh·kw) im2col of a bool feature map."""
    n_, _, h, w = fmap.shape
    ho, wo = layer.out_hw
    cpg = layer.in_channels // layer.groups
    rows = []
    for n in range(n_):
        for oh in range(ho):
            for ow in range(wo):
                r = []
                for c in range(cpg):
                    for i in range(layer.kernel[0]):
                        for j in range(layer.kernel[1]):
                            y = oh * layer.stride[0] - layer.padding[0] + i * layer.dilation[0]
                            x = ow * layer.stride[1] - layer.padding[1] + j * layer.dilation[1]
                            r.append(bool(0 <= y < h and 0 <= x < w
                                          and fmap[n, group * cpg + c, y, x]))
                rows.append(r)
    return np.array(rows, dtype=bool)


def explicit_ab(layer, batch, phase, masks, group):
    """A (M×K) and B (K×N) of one group as explicit bool matrices (the reference lowering)."""
    g = lower(layer, batch, phase)
    ones = {"filter": np.ones(layer.weight_shape, bool),
            "ifmap": np.ones(layer.ifmap_shape(batch), bool),
            "grad_out": np.ones(layer.grad_out_shape(batch), bool)}
    m = {k: (ones[k] if v is None else v) for k, v in masks.items()}
    opg = layer.out_channels // layer.groups
    w = m["filter"][group * opg:(group + 1) * opg].reshape(opg, -1)  # (Cout_g, K_fwd)
    if layer.kind == "conv2d":
        # an operand marked dense is all nonzero, padding included (no zero detection)
        cols = (np.ones((g.M if phase != "bwd_weight" else g.K, w.shape[1]), bool)
                if masks["ifmap"] is None else _im2col(m["ifmap"], layer, group))
        dz = m["grad_out"][:, group * opg:(group + 1) * opg].transpose(0, 2, 3, 1).reshape(-1, opg)
    else:
        cols = m["ifmap"].reshape(-1, layer.in_channels)
        dz = m["grad_out"].reshape(-1, layer.out_channels)
    if phase == "fwd":
        a, b = cols, w.T
    elif phase == "bwd_input":
        a, b = dz, w
    else:
        a, b = dz.T, cols
    assert a.shape == (g.M, g.K) and b.shape == (g.K, g.N)
    return a, b


def _lane_matrix(bits, lanes):
    t = -(-len(bits) // lanes)
    out = np.zeros((t, lanes), bool)
    out.reshape(-1)[: len(bits)] = bits
    return out


def reference_folds_ab(abs_, roles, masked, R, C, L, df, feats, folds="serial"):
    """Per fold, per stream, cycle by cycle: the one-sided/two-sided skipping model of a GEMM
    given explicitly, per group (A M×K, B K×N bool).
    Returns the (cycles, load imbalance) of every fold in tile order: the slowest stream plus
    the fill/drain, and the slowest stream minus ceil(mean). Serial folds each pay the pipeline
    fill/drain; overlapped folds pay it once per GEMM (added to the first fold), and in ws/is
    start at least 2R - 1 apart (``tests/simulator/test_array_model.py``)."""
    fill = (R + C - 2) if df == "os" else (2 * R + C - 2)
    per_fold = fill if folds == "serial" else 0
    out = []

    def fold(lens):
        out.append([max(lens) + per_fold, max(lens) - (-(-sum(lens) // len(lens)))])

    skip = [x for x in {"os": "AB", "ws": "A", "is": "B"}[df]
            if roles["AB".index(x)] in feats.skip and masked["AB".index(x)]]
    # the sparser operand of the whole step (all groups) is the one skipped
    dens = {x: (sum(int(ab[i].sum()) for ab in abs_) / sum(ab[i].size for ab in abs_))
            for i, x in enumerate("AB") if x in skip}
    H, D = feats.lookahead, feats.lookaside
    for a, b in abs_:
        (M, K), N = a.shape, b.shape[1]
        if df == "os":
            for j0 in range(0, N, C):
                for i0 in range(0, M, R):
                    ii, jj = range(i0, min(M, i0 + R)), range(j0, min(N, j0 + C))
                    if len(skip) == 2 and feats.two_sided:
                        lens = [math.ceil(int((a[i] & b[:, j]).sum()) / L)
                                for i in ii for j in jj]
                    elif skip:
                        x = min(skip, key=lambda o: dens[o])
                        lens = ([reference_schedule(_lane_matrix(a[i], L), H, D) for i in ii]
                                if x == "A" else
                                [reference_schedule(_lane_matrix(b[:, j], L), H, D)
                                 for j in jj])
                    else:
                        lens = [-(-K // L)]
                    fold(lens)
        else:
            streamed = a if df == "ws" else b.T  # (time × K)
            outer = N if df == "ws" else M
            for _ in range(0, outer, C):
                for k0 in range(0, K, R * L):
                    lens = []
                    for r0 in range(k0, min(K, k0 + R * L), L):
                        lanes = streamed[:, r0:r0 + L]
                        mat = np.zeros((streamed.shape[0], L), bool)
                        mat[:, : lanes.shape[1]] = lanes
                        lens.append(reference_schedule(mat, H, D) if skip
                                    else streamed.shape[0])
                    fold(lens)
    if folds == "overlapped":
        # ws/is: a fold that runs holds the array until its weights reach row R - 1
        # (2R - 1 cycles); the last one does not wait: its wait comes off the fill and drain
        ran = [f for f in out if f[0] > 0] if df != "os" else []
        waits = [max(f[0], 2 * R - 1) - f[0] for f in ran]
        for f, w in zip(ran, waits, strict=True):
            f[0] += w
        out[0][0] += fill - (waits[-1] if waits else 0)
    return np.array(out, dtype=np.int64)


def reference_folds(layer, batch, phase, masks, R, C, L, df, feats, folds="serial"):
    """``reference_folds_ab`` of the GEMM as written (explicit im2col matrices)."""
    g = lower(layer, batch, phase)
    ra, rb, _ = g.roles
    abs_ = [explicit_ab(layer, batch, phase, masks, grp) for grp in range(g.groups)]
    return reference_folds_ab(abs_, (ra, rb), (masks[ra] is not None, masks[rb] is not None),
                              R, C, L, df, feats, folds)


def reference_cycles(layer, batch, phase, masks, R, C, L, df, feats, folds="serial"):
    """Total cycles of ``reference_folds``."""
    return int(reference_folds(layer, batch, phase, masks, R, C, L, df, feats, folds)[:, 0]
               .sum())


def _layer(draw):
    """A small conv (maybe grouped, strided, padded) or linear layer."""
    if draw(st.booleans()):
        g = draw(st.sampled_from([1, 2]))
        k = draw(st.integers(1, 3))
        return Layer.conv("c", g * draw(st.integers(1, 3)), g * draw(st.integers(1, 3)), k,
                          draw(st.integers(k, 5)), stride=draw(st.integers(1, 2)),
                          padding=draw(st.integers(0, 1)), groups=g)
    return Layer.linear("fc", draw(st.integers(1, 20)), draw(st.integers(1, 12)),
                        tokens=draw(st.integers(1, 3)))


@st.composite
def case(draw):
    layer = _layer(draw)
    batch = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    masks = {}
    for role, shape in (("filter", layer.weight_shape), ("ifmap", layer.ifmap_shape(batch)),
                        ("grad_out", layer.grad_out_shape(batch))):
        masks[role] = (None if draw(st.booleans()) else
                       rng.random(shape) < draw(st.floats(0.0, 1.0)))
    return layer, batch, masks


@settings(**SETTINGS)
@given(c=case(), phase=st.sampled_from(["fwd", "bwd_input", "bwd_weight"]),
       df=st.sampled_from(["os", "ws", "is"]), R=st.integers(1, 4), C=st.integers(1, 4),
       L=st.integers(1, 4), H=st.integers(-1, 2), D=st.integers(0, 2),
       roles=st.lists(st.sampled_from(["filter", "ifmap", "grad_out"]), unique=True),
       two=st.booleans(), folds=st.sampled_from(["serial", "overlapped"]))
def test_skipping_equals_per_cycle_reference(c, phase, df, R, C, L, H, D, roles, two, folds):
    layer, batch, masks = c
    feats = SparseFeatures(skip=tuple(roles), two_sided=two, lookahead=H, lookaside=D)
    w = sparse_work(layer, batch, phase, masks, R, C, L, df, feats, folds)
    ref = reference_folds(layer, batch, phase, masks, R, C, L, df, feats, folds)
    want = int(ref[:, 0].sum())
    dense = map_dense(lower(layer, batch, phase), R, C, df, L, folds).compute_cycles
    # the model takes the cheaper of skipping and dense (a window can lose to dense)
    assert w.compute_cycles + w.imbalance_cycles == min(want, dense)
    if w.fold_cycles is None:
        assert w.fold_imbalance is None
    else:  # per fold, in tile order: cycles and load imbalance
        np.testing.assert_array_equal(w.fold_cycles, ref[:, 0])
        np.testing.assert_array_equal(w.fold_imbalance, ref[:, 1])
        assert int(w.fold_imbalance.sum()) == w.imbalance_cycles


@settings(**SETTINGS)
@given(c=case(), phase=st.sampled_from(["fwd", "bwd_input", "bwd_weight"]),
       df=st.sampled_from(["os", "ws", "is"]), R=st.integers(1, 4), C=st.integers(1, 4),
       L=st.integers(1, 4))
def test_counters_and_invariants(c, phase, df, R, C, L):
    layer, batch, masks = c
    g = lower(layer, batch, phase)
    feats = SparseFeatures(skip=("filter", "ifmap", "grad_out"), gate=("filter", "ifmap"))
    w = sparse_work(layer, batch, phase, masks, R, C, L, df, feats)
    eff = 0
    for grp in range(g.groups):
        a, b = explicit_ab(layer, batch, phase, masks, grp)
        eff += int((a.astype(int) @ b.astype(int)).sum())
    assert w.effectual == eff
    assert w.algorithmic == g.macs
    assert eff <= w.actual <= w.algorithmic
    assert w.skipped + w.actual == w.algorithmic
    assert 0 <= w.gated <= w.actual - eff
    dense = map_dense(g, R, C, df, L).compute_cycles
    ideal = math.ceil(eff / (R * C * L))
    assert ideal <= w.compute_cycles + w.imbalance_cycles <= dense  # zero-overhead skipping


@settings(**SETTINGS)
@given(c=case(), phase=st.sampled_from(["fwd", "bwd_input", "bwd_weight"]),
       df=st.sampled_from(["os", "ws", "is"]), seed=st.integers(0, 99))
def test_unbounded_cycles_do_not_grow_when_nonzeros_are_removed(c, phase, df, seed):
    layer, batch, masks = c
    feats = SparseFeatures(skip=("filter", "ifmap", "grad_out"))
    before = sparse_work(layer, batch, phase, masks, 3, 2, 2, df, feats)
    rng = np.random.default_rng(seed)
    fewer = {k: (None if v is None else v & (rng.random(v.shape) < 0.7))
             for k, v in masks.items()}
    # keep which operand is the sparser one: thinning both keeps the choice comparable only if
    # the same operand is skipped, so compare each operand's own one-sided cycles
    for role in ("filter", "ifmap", "grad_out"):
        one = SparseFeatures(skip=(role,))
        a = sparse_work(layer, batch, phase, masks, 3, 2, 2, df, one)
        b = sparse_work(layer, batch, phase, fewer, 3, 2, 2, df, one)
        assert b.compute_cycles + b.imbalance_cycles <= a.compute_cycles + a.imbalance_cycles
    assert before.effectual >= sparse_work(layer, batch, phase, fewer, 3, 2, 2, df,
                                           feats).effectual


def test_nm_is_exactly_half_k_when_valid_and_dense_otherwise():
    layer = Layer.linear("fc", 64, 16, tokens=8)
    rng = np.random.default_rng(0)
    w = np.zeros(layer.weight_shape, bool)
    for r in range(16):
        for g0 in range(0, 64, 4):
            w[r, g0 + rng.choice(4, 2, replace=False)] = True
    feats = SparseFeatures(nm=(2, 4))
    masks = {"filter": w, "ifmap": None, "grad_out": None}
    fwd = sparse_work(layer, 1, "fwd", masks, 4, 4, 1, "os", feats)
    assert fwd.mode == "nm" and fwd.gemm.K == 32  # K halved: the time dimension exactly 2x
    assert fwd.compute_cycles == map_dense(lower(layer, 1, "fwd").__class__(
        "fc", "fwd", 8, 32, 16), 4, 4, "os").compute_cycles
    bad = w.copy()
    bad[0, :3] = True
    assert sparse_work(layer, 1, "fwd", {**masks, "filter": bad}, 4, 4, 1, "os",
                       feats).mode == "dense"
    # bwd_input reads W transposed: its K is the output channels, not 2:4 along them
    assert sparse_work(layer, 1, "bwd_input", masks, 4, 4, 1, "os", feats).mode == "dense"


def test_nm_slots_hold_a_narrow_last_group():
    """K = 6 under 2:4: a full group and a group of width 2, which can hold 2 nonzeros, so 4
    slots (K·N/M rounded up, 3, would not hold them)."""
    layer = Layer.linear("fc", 6, 2, tokens=4)
    w = np.array([[1, 0, 1, 0, 1, 1], [0, 1, 0, 0, 1, 0]], dtype=bool)
    masks = {"filter": w, "ifmap": None, "grad_out": None}
    got = sparse_work(layer, 1, "fwd", masks, 2, 2, 1, "os", SparseFeatures(nm=(2, 4)))
    assert got.mode == "nm" and got.gemm.K == 4


def test_fanin_and_structured_reduce_dimensions():
    layer = Layer.linear("fc", 40, 12, tokens=4)
    rng = np.random.default_rng(1)
    w = np.zeros(layer.weight_shape, bool)
    for r in range(10):  # two ablated neurons, fan-in 5 for the rest
        w[r, rng.choice(40, 5, replace=False)] = True
    masks = {"filter": w, "ifmap": None, "grad_out": None}
    fan = sparse_work(layer, 2, "fwd", masks, 4, 4, 1, "os", SparseFeatures(fanin=True))
    assert fan.mode == "fanin" and (fan.gemm.K, fan.gemm.N) == (5, 10)
    st_ = sparse_work(layer, 2, "fwd", masks, 4, 4, 1, "os", SparseFeatures(structured=True))
    assert st_.mode == "structured" and st_.gemm.N == 10
    assert st_.gemm.K == int(w.any(axis=0).sum())


@settings(deadline=None, max_examples=100)
@given(fmt=st.sampled_from(FORMATS), r=st.integers(1, 50), c=st.integers(1, 50),
       w=st.sampled_from([8, 16, 32]), data=st.data())
def test_formats_hold_at_least_the_nonzeros(fmt, r, c, w, data):
    nnz = data.draw(st.integers(0, r * c))
    d, m = block_bits(fmt, r, c, nnz, w)
    assert d + m >= nnz * w  # compulsory: every nonzero value
    if fmt != "dense":
        assert d == nnz * w and m >= 0
    assert block_bits(fmt, r, c, max(0, nnz - 1), w)[0] <= d


def test_bad_features_name_the_key():
    import pytest

    from common.errors import InputError

    for bad, key in (({"skip": ["weights"]}, "sparse.skip"), ({"nm": "4:2"}, "sparse.nm"),
                     ({"window": {"lookahead": -1}}, "sparse.window.lookahead"),
                     ({"window": {"lookahead": 2}}, "sparse.window.lookaside: missing"),
                     ({"window": {}}, "sparse.window.lookahead: missing"),
                     ({"formats": {"filter": "zip"}}, "sparse.formats.filter"),
                     ({"skipp": []}, "sparse.skipp"), ({"fanin": "yes"}, "sparse.fanin")):
        with pytest.raises(InputError, match=key.replace(".", r"\.")):
            parse_features(bad, "arch.yaml")


@settings(**SETTINGS)
@given(c=case(), phase=st.sampled_from(["fwd", "bwd_input", "bwd_weight"]),
       df=st.sampled_from(["os", "ws", "is"]), R=st.integers(1, 4), C=st.integers(1, 4),
       L=st.integers(1, 3))
def test_fold_blocks_cover_each_operand(c, phase, df, R, C, L):
    """The blocks each fold reads, summed the right way, give back each operand's nonzeros."""
    layer, batch, masks = c
    fmts = {"filter": "bitmap", "ifmap": "csr", "grad_out": "coo"}
    w = sparse_work(layer, batch, phase, masks, R, C, L, df, SparseFeatures(formats=fmts))
    if w.fold_blocks is None:
        return
    g = lower(layer, batch, phase)
    mp = map_dense(g, R, C, df, L)
    blocks = w.fold_blocks.reshape(g.groups, mp.col_folds, mp.row_folds, 6)
    for grp in range(g.groups):
        a, b = explicit_ab(layer, batch, phase, masks, grp)
        blk = blocks[grp]
        if df == "os":  # every column fold reads all of A once; B blocks partition B
            assert (blk[:, :, 2].sum(axis=1) == a.sum()).all()
            assert blk[:, 0, 5].sum() == b.sum()
        elif df == "ws":
            assert (blk[:, :, 2].sum(axis=1) == a.sum()).all()
            assert blk[:, :, 5].sum() == b.sum()
        else:
            assert blk[:, :, 2].sum() == a.sum()
            assert (blk[:, :, 5].sum(axis=1) == b.sum()).all()
        assert (blk[..., 0] * blk[..., 1] >= blk[..., 2]).all()


@settings(deadline=None, max_examples=100)
@given(fmt=st.sampled_from(FORMATS), r=st.integers(1, 40), c=st.integers(1, 40),
       w=st.sampled_from([8, 16]), data=st.data())
def test_block_ratio_matches_block_bits(fmt, r, c, w, data):
    from dataflows.formats import block_ratio

    nnz = data.draw(st.integers(0, r * c))
    d, m = block_bits(fmt, r, c, nnz, w)
    got = block_ratio(fmt, np.array([r]), np.array([c]), np.array([nnz]), w)[0]
    assert got == (d + m) / (r * c * w)


# ------------------------------------------------------------------------------------------------
# stacking: skipping inside a reduced GEMM
# ------------------------------------------------------------------------------------------------
def _cycles(w):
    return w.compute_cycles + w.imbalance_cycles


def _by_mode(cands):
    out = {c.mode: c for c in cands}
    assert len(out) == len(cands)  # one candidate per mode
    return out


def reduce_structured(abs_):
    """Explicit structured reduction of every group: the rows of A and columns of B holding a
    nonzero, the k where both A's column and B's row hold one; padded with zeros to the
    largest group (at least 1 × 1 × 1)."""
    keep = [(a.any(axis=1), a.any(axis=0) & b.any(axis=1), b.any(axis=0)) for a, b in abs_]
    m2, k2, n2 = (max(1, max(int(kp[i].sum()) for kp in keep)) for i in range(3))
    out = []
    for (a, b), (km, kk, kn) in zip(abs_, keep, strict=True):
        a2, b2 = np.zeros((m2, k2), bool), np.zeros((k2, n2), bool)
        a2[: km.sum(), : kk.sum()] = a[km][:, kk]
        b2[: kk.sum(), : kn.sum()] = b[kk][:, kn]
        out.append((a2, b2))
    return out


@settings(**SETTINGS)
@given(c=case(), phase=st.sampled_from(["fwd", "bwd_input", "bwd_weight"]),
       df=st.sampled_from(["os", "ws", "is"]), R=st.integers(1, 4), C=st.integers(1, 4),
       L=st.integers(1, 4), H=st.integers(-1, 2), D=st.integers(0, 2),
       roles=st.lists(st.sampled_from(["filter", "ifmap", "grad_out"]), unique=True,
                      min_size=1),
       two=st.booleans(), folds=st.sampled_from(["serial", "overlapped"]))
def test_structured_with_skipping_equals_reference(c, phase, df, R, C, L, H, D, roles, two,
                                                   folds):
    """Structured reduction, then the skipping rules on the reduced operands: per fold equal
    to the per-cycle reference on explicitly reduced matrices; never slower than the reduced
    GEMM at dense speed, never faster than ideal; the chosen mode is the cheapest."""
    layer, batch, masks = c
    feats = SparseFeatures(skip=tuple(roles), two_sided=two, lookahead=H, lookaside=D,
                           structured=True)
    cands = _by_mode(work_candidates(layer, batch, phase, masks, R, C, L, df, feats, folds))
    stacked = [m for m in cands if m.startswith("structured+")]
    if not stacked:
        return
    (mode,) = stacked
    event(mode)
    w = cands[mode]
    g = lower(layer, batch, phase)
    ra, rb, _ = g.roles
    abs_ = reduce_structured([explicit_ab(layer, batch, phase, masks, grp)
                              for grp in range(g.groups)])
    ref = reference_folds_ab(abs_, (ra, rb), (masks[ra] is not None, masks[rb] is not None),
                             R, C, L, df, feats, folds)
    np.testing.assert_array_equal(w.fold_cycles, ref[:, 0])
    np.testing.assert_array_equal(w.fold_imbalance, ref[:, 1])
    assert (w.gemm.M, w.gemm.K, w.gemm.N) == abs_[0][0].shape + abs_[0][1].shape[1:]
    assert w.effectual == cands["dense"].effectual
    assert w.effectual <= w.actual <= cands["structured"].actual
    assert math.ceil(w.effectual / (R * C * L)) <= _cycles(w) <= _cycles(cands["structured"])
    assert _cycles(cands["structured"]) <= _cycles(cands["dense"])
    best = sparse_work(layer, batch, phase, masks, R, C, L, df, feats, folds)
    assert _cycles(best) == min(_cycles(x) for x in cands.values())


def _condense_ref(b, kind, nm):
    """Per column of B (K×N), its slots: the k of each nonzero, −1 for an empty slot (N:M: N
    slots per group of M along K, min(N, width) in a narrower last group; fan-in: the nonzeros
    of the columns that have any, all of them the same count). None: not that structure."""
    K, N = b.shape
    cols = []
    for j in range(N):
        nz = [k for k in range(K) if b[k, j]]
        if kind == "fanin":
            if nz:
                cols.append(nz)
            continue
        n, m = nm
        slots = []
        for g0 in range(0, K, m):
            grp = [k for k in nz if g0 <= k < g0 + m]
            if len(grp) > n:
                return None
            slots += grp + [-1] * (min(n, min(K, g0 + m) - g0) - len(grp))
        cols.append(slots)
    if kind == "fanin" and len({len(x) for x in cols}) > 1:
        return None
    return cols


@st.composite
def condensed_case(draw):
    """A layer whose weights are N:M along the fwd K or of constant fan-in, random activation
    and gradient masks."""
    kind = draw(st.sampled_from(["nm", "fanin"]))
    nm = draw(st.sampled_from([(1, 2), (2, 4), (1, 3), (2, 3)]))
    layer = _layer(draw)
    batch = draw(st.integers(1, 2))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    rows = layer.weight_shape[0]
    kf = int(np.prod(layer.weight_shape[1:]))
    w = np.zeros((rows, kf), bool)
    fan = draw(st.integers(1, kf))
    for r in range(rows):
        if kind == "fanin":
            if rng.random() < 0.8:  # some neurons ablated
                w[r, rng.choice(kf, fan, replace=False)] = True
        else:
            n, m = nm
            for g0 in range(0, kf, m):
                width = min(m, kf - g0)
                keep = rng.integers(0, min(n, width) + 1)
                w[r, g0 + rng.choice(width, keep, replace=False)] = True
    p = draw(st.floats(0.0, 1.0))
    masks = {"filter": w.reshape(layer.weight_shape),
             "ifmap": rng.random(layer.ifmap_shape(batch)) < p,
             "grad_out": rng.random(layer.grad_out_shape(batch)) < p}
    return kind, nm, layer, batch, masks


@settings(**SETTINGS)
@given(c=condensed_case(), phase=st.sampled_from(["fwd", "bwd_input"]),
       df=st.sampled_from(["os", "ws", "is"]), R=st.integers(1, 4), C=st.integers(1, 4),
       L=st.integers(1, 4), H=st.integers(-1, 2), D=st.integers(0, 2),
       skip_filter=st.booleans(), folds=st.sampled_from(["serial", "overlapped"]))
def test_condensed_with_skipping_equals_reference(c, phase, df, R, C, L, H, D, skip_filter,
                                                  folds):
    """N:M or fan-in execution with skipping stacked on it: the condensed weights' empty slots
    as a shared stream, and (``os``) the other operand per PE through the weights' indices;
    per fold equal to the per-cycle reference, never slower than the condensed GEMM at dense
    speed, never faster than ideal."""
    kind, nm, layer, batch, masks = c
    g = lower(layer, batch, phase)
    ra, rb, _ = g.roles
    roles = (ra, "filter") if skip_filter else (ra,)
    feats = SparseFeatures(skip=roles, lookahead=H, lookaside=D, nm=nm if kind == "nm" else None,
                           fanin=kind == "fanin")
    cands = _by_mode(work_candidates(layer, batch, phase, masks, R, C, L, df, feats, folds))
    abs_ = [explicit_ab(layer, batch, phase, masks, grp) for grp in range(g.groups)]
    slots = [_condense_ref(b, kind, nm) for _, b in abs_]
    if any(s is None for s in slots) or (kind == "fanin" and (
            not any(slots) or len({len(x) for s in slots for x in s}) != 1)):
        assert not any(m.startswith(kind) for m in cands)
        return
    n2 = max(len(s) for s in slots)
    k2 = max(len(x) for s in slots for x in s)
    pad = [[x + [-2] * (k2 - len(x)) for x in s] + [[-2] * k2] * (n2 - len(s)) for s in slots]
    alone = cands[kind]
    assert (alone.gemm.M, alone.gemm.K, alone.gemm.N) == (g.M, k2, n2)
    fill = (R + C - 2) if df == "os" else (2 * R + C - 2)
    ideal = math.ceil(alone.effectual / (R * C * L))
    # the condensed weights' empty slots skipped, a shared stream (B streamed: os and is)
    if skip_filter and df in ("os", "is"):
        w = cands[f"{kind}+skip:filter"]
        event(w.mode)
        b2 = [np.array(p, dtype=np.int64).T >= 0 for p in pad]  # K' × N'
        ref = reference_folds_ab([(np.ones((g.M, k2), bool), b) for b in b2], ("-", "filter"),
                                 (False, True), R, C, L, df, feats, folds)
        np.testing.assert_array_equal(w.fold_cycles, ref[:, 0])
        np.testing.assert_array_equal(w.fold_imbalance, ref[:, 1])
        assert ideal <= _cycles(w) <= _cycles(alone)
    # the other operand per PE, through the weights' indices (os)
    mode = f"{kind}+skip:{ra}"
    if df != "os":
        assert mode not in cands
        return
    w = cands[mode]
    event(mode)
    ref = []
    for (a, _), p in zip(abs_, pad, strict=True):
        for j0 in range(0, n2, C):
            for i0 in range(0, g.M, R):
                lens = [reference_schedule(_lane_matrix(
                    [bool(a[i, k]) if k >= 0 else (k == -1 and not skip_filter) for k in p[j]],
                    L), H, D) for i in range(i0, min(g.M, i0 + R))
                    for j in range(j0, min(n2, j0 + C))]
                ref.append([max(lens) + (fill if folds == "serial" else 0),
                            max(lens) + sum(lens) // -len(lens)])
    ref[0][0] += fill if folds == "overlapped" else 0
    np.testing.assert_array_equal(w.fold_cycles, np.array(ref)[:, 0])
    np.testing.assert_array_equal(w.fold_imbalance, np.array(ref)[:, 1])
    assert ideal <= _cycles(w) <= _cycles(alone) <= _cycles(cands["dense"])
    assert w.effectual <= w.actual <= alone.actual
    if skip_filter or kind == "fanin":  # every pair performed is effectual
        assert w.actual == w.effectual


# ------------------------------------------------------------------------------------------------
# formats per memory level
# ------------------------------------------------------------------------------------------------
def test_formats_per_level_parse():
    f = parse_features({"formats": {"filter": "bitmap",
                                    "ifmap": {"dram": "csr", "sram": "bitmap"},
                                    "grad_out": {"sram": "rle"}}}, "arch.yaml")
    assert [f.format_of("filter", lv) for lv in ("dram", "sram")] == ["bitmap", "bitmap"]
    assert [f.format_of("ifmap", lv) for lv in ("dram", "sram")] == ["csr", "bitmap"]
    assert [f.format_of("grad_out", lv) for lv in ("dram", "sram")] == ["dense", "rle"]
    assert f.formats == {"filter": "bitmap", "ifmap": "csr"}  # DRAM, as the traffic reads it
    assert f.sram_formats == {"filter": "bitmap", "ifmap": "bitmap", "grad_out": "rle"}


def test_bad_level_formats_name_the_key():
    import pytest

    from common.errors import InputError

    for bad, key in (({"filter": {"l2": "csr"}}, "sparse.formats.filter.l2"),
                     ({"filter": {"sram": "zip"}}, "sparse.formats.filter.sram"),
                     ({"ifmap": {"dram": 3}}, "sparse.formats.ifmap.dram")):
        with pytest.raises(InputError, match=key.replace(".", r"\.")):
            parse_features({"formats": bad}, "arch.yaml")


@settings(deadline=None, max_examples=60)
@given(c=case(), phase=st.sampled_from(["fwd", "bwd_input", "bwd_weight"]),
       df=st.sampled_from(["os", "ws", "is"]), dram=st.sampled_from(FORMATS),
       sram=st.sampled_from(FORMATS))
def test_operand_compression_per_level(c, phase, df, dram, sram):
    """Each level's ratio is its own format's bits over dense bits, block by block; a level
    in dense format moves dense words."""
    from dataflows.formats import block_ratio
    from dataflows.sparse import operand_compression

    layer, batch, masks = c
    fmts = {r: {"dram": dram, "sram": sram} for r in ("filter", "ifmap", "grad_out")}
    feats = parse_features({"formats": fmts}, "arch.yaml")
    w = sparse_work(layer, batch, phase, masks, 3, 2, 2, df, feats)
    for level, fmt in (("dram", dram), ("sram", sram)):
        got = np.asarray(operand_compression(w, feats, (16, 8), level))
        if fmt == "dense":
            assert np.all(got == 1.0)
        elif w.fold_blocks is None:  # no operand has a mask: full blocks of the whole GEMM
            g = w.gemm
            for i, ((r, cc), bits) in enumerate(zip(((g.M, g.K), (g.K, g.N)), (16, 8),
                                                    strict=True)):
                assert got[i] == block_ratio(fmt, [r], [cc], [r * cc], bits)[0]
        else:
            blk = w.fold_blocks
            for i, bits in enumerate((16, 8)):
                want = block_ratio(fmt, blk[:, 3 * i], blk[:, 3 * i + 1], blk[:, 3 * i + 2],
                                   bits)
                np.testing.assert_allclose(got[:, i], want)


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 70), k=st.integers(1, 70), n=st.integers(1, 9), heads=st.integers(1, 2),
       batch=st.integers(1, 2), dens=st.sampled_from([0.0, 1.0, 0.3]), seed=st.integers(0, 99))
def test_matmul_operands_from_packed_masks_bit_for_bit(m, k, n, heads, batch, dens, seed):
    """A matmul layer's operands built from the trace's packed masks equal, bit for bit, the
    matrices sliced from the bool tensors: per (sample, head) X (M×K), Y (K×N), dZ (M×N)."""
    la = Layer.matmul("mm", m, k, n, heads=heads)
    rng = np.random.default_rng(seed)
    x = rng.random(la.ifmap_shape(batch)) < dens
    y = rng.random(la.operand_shape("filter", batch)) < dens
    dz = rng.random(la.grad_out_shape(batch)) < dens
    xs, ys, ds = (t.reshape(batch * heads, *t.shape[-2:]) for t in (x, y, dz))
    for phase, (am, bm), want in (("fwd", (x, y), lambda g: (xs[g], ys[g].T)),
                                  ("bwd_input", (dz, y), lambda g: (ds[g], ys[g])),
                                  ("bwd_weight", (dz, x), lambda g: (ds[g].T, xs[g].T))):
        for g in range(batch * heads):
            a, b = pack_operands(la, batch, phase, PackedMask.from_bool(am),
                                 PackedMask.from_bool(bm), g)
            wa, wb = want(g)
            np.testing.assert_array_equal(a, pack_rows(np.ascontiguousarray(wa)))
            np.testing.assert_array_equal(b, pack_rows(np.ascontiguousarray(wb)))
