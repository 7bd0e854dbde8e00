"""Sparsity patterns: shapes, exact nonzero counts, structure, determinism and parsing."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import ConfigError
from traces.layers import Layer
from traces.patterns import (
    Pattern,
    activation_mask,
    exact_random,
    keep_count,
    parse_pattern,
    topk_mask,
    weight_mask,
)

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])

WEIGHT_PATTERNS = ("random", "clustered", "2:4", "1:3", "4:8", "fanin", "channel", "filter",
                   "kernel", "block", "block:2x3", "block:1x1")
DENSITY_PATTERNS = tuple(p for p in WEIGHT_PATTERNS if ":" not in p or p.startswith("block"))


# ------------------------------------------------------------------------------------------------
# strategies and helpers
# ------------------------------------------------------------------------------------------------
@st.composite
def conv_layers(draw) -> Layer:
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if draw(st.booleans()):  # depthwise (groups == Cin), with a channel multiplier
        cin = draw(st.integers(1, 6))
        g, cout = cin, cin * draw(st.integers(1, 3))
    else:
        g = draw(st.integers(1, 3))
        cin, cout = g * draw(st.integers(1, 4)), g * draw(st.integers(1, 5))
    hw = (kh + draw(st.integers(0, 3)), kw + draw(st.integers(0, 3)))
    return Layer.conv("c", cin, cout, (kh, kw), hw, groups=g)


@st.composite
def linear_layers(draw) -> Layer:
    return Layer.linear("l", draw(st.integers(1, 40)), draw(st.integers(1, 12)),
                        tokens=draw(st.integers(1, 3)))


layers_st = st.one_of(conv_layers(), linear_layers())
densities_st = st.floats(min_value=0.0, max_value=1.0, exclude_min=True, allow_nan=False)
seeds_st = st.integers(0, 2**32 - 1)


def _is_ceil(k: int, d: float, n: int) -> bool:
    """``k`` is ceil(d·n) up to float noise, clipped to [0, n]."""
    if not 0 <= k <= n:
        return False
    return k == n or (k >= d * n - 1e-6 and k - 1 < d * n)


def _rows(layer: Layer, mask: np.ndarray) -> np.ndarray:
    """The row × fan_in matrix view (C order of weight_shape[1:])."""
    return mask.reshape(layer.out_channels, layer.fan_in)


def check_weight_mask(layer: Layer, d: float, text: str, mask: np.ndarray) -> None:
    """Every property the module table states for ``text`` at density ``d``."""
    p = parse_pattern(text)
    shape = layer.weight_shape
    assert mask.shape == shape
    assert mask.dtype == np.bool_
    assert mask.flags.c_contiguous and mask.flags.writeable  # synth edits masks in place
    n = layer.weight_numel
    nnz = int(np.count_nonzero(mask))
    rows = _rows(layer, mask)
    cout, cin, g = layer.out_channels, layer.in_channels, layer.groups
    if d >= 1.0:
        assert mask.all()
        return
    if p.kind in ("random", "clustered"):
        assert nnz == keep_count(d, n)
        assert _is_ceil(nnz, d, n)
    elif p.kind == "nm":
        groups, tail = divmod(layer.fan_in, p.m)
        if groups:
            per_group = rows[:, : groups * p.m].reshape(cout, groups, p.m).sum(axis=2)
            assert (per_group == p.n).all()
        if tail:
            assert (rows[:, groups * p.m:].sum(axis=1) == min(p.n, tail)).all()
        assert nnz == cout * (groups * p.n + min(p.n, tail))
    elif p.kind == "fanin":
        k = keep_count(d, layer.fan_in)
        assert _is_ceil(k, d, layer.fan_in)
        assert (rows.sum(axis=1) == k).all()
    elif p.kind == "channel":
        # (Cout, Cin/g, taps): a channel is kept or dropped for every filter of its group
        taps = mask.reshape(cout, cin // g, -1)
        assert (taps == taps[:, :, :1]).all()
        per_group = taps[:, :, 0].reshape(g, cout // g, cin // g)
        assert (per_group == per_group[:, :1, :]).all()
        kept = int(per_group[:, 0, :].sum())
        assert kept == keep_count(d, cin)
        assert _is_ceil(kept, d, cin)
        assert nnz == kept * (cout // g) * layer.kernel[0] * layer.kernel[1]
    elif p.kind == "filter":
        assert (rows == rows[:, :1]).all()
        kept = int(rows[:, 0].sum())
        assert kept == keep_count(d, cout)
        assert _is_ceil(kept, d, cout)
    elif p.kind == "kernel":
        slices = mask.reshape(cout * (cin // g), -1)
        assert (slices == slices[:, :1]).all()
        kept = int(slices[:, 0].sum())
        assert kept == keep_count(d, cout * (cin // g))
        assert nnz == kept * layer.kernel[0] * layer.kernel[1]
    elif p.kind == "block":
        br, bc = p.block
        kept = 0
        nblocks = 0
        for r0 in range(0, cout, br):
            for c0 in range(0, layer.fan_in, bc):
                blk = rows[r0:r0 + br, c0:c0 + bc]
                assert blk.all() or not blk.any(), (r0, c0)
                kept += bool(blk[0, 0])
                nblocks += 1
        assert nblocks == math.ceil(cout / br) * math.ceil(layer.fan_in / bc)
        # whole blocks until ceil(d*n) weights are held: less than one block over
        target = keep_count(d, layer.weight_numel)
        assert target <= nnz < target + br * bc
        assert kept <= nblocks
    else:  # pragma: no cover
        raise AssertionError(p.kind)


# ------------------------------------------------------------------------------------------------
# weight masks
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", WEIGHT_PATTERNS)
@settings(max_examples=40, **SETTINGS)
@given(layer=layers_st, d=densities_st, seed=seeds_st)
def test_weight_mask_properties(text, layer, d, seed):
    mask = weight_mask(layer, d, parse_pattern(text), np.random.default_rng(seed))
    check_weight_mask(layer, d, text, mask)


@pytest.mark.parametrize("text", WEIGHT_PATTERNS)
@pytest.mark.parametrize("layer", [
    Layer.conv("c", 12, 18, 3, 8, groups=3),
    Layer.conv("dw", 6, 12, (3, 1), 5, groups=6),
    Layer.conv("pw", 10, 7, 1, 4),
    Layer.linear("fc", 37, 11),
], ids=["grouped", "depthwise", "pointwise", "linear"])
@pytest.mark.parametrize("d", [0.01, 0.1, 0.25, 1 / 3, 0.5, 0.7, 0.999])
def test_weight_mask_grid(text, layer, d):
    mask = weight_mask(layer, d, parse_pattern(text), np.random.default_rng(7))
    check_weight_mask(layer, d, text, mask)


@pytest.mark.parametrize("text", WEIGHT_PATTERNS)
@settings(max_examples=15, **SETTINGS)
@given(layer=layers_st, seed=seeds_st)
def test_density_one_is_dense(text, layer, seed):
    mask = weight_mask(layer, 1.0, parse_pattern(text), np.random.default_rng(seed))
    assert mask.shape == layer.weight_shape and mask.dtype == np.bool_
    assert mask.all()


@pytest.mark.parametrize("text", DENSITY_PATTERNS)
@settings(max_examples=15, **SETTINGS)
@given(layer=layers_st, seed=seeds_st)
def test_density_zero_is_empty(text, layer, seed):
    mask = weight_mask(layer, 0.0, parse_pattern(text), np.random.default_rng(seed))
    assert mask.shape == layer.weight_shape and mask.dtype == np.bool_
    assert not mask.any()


@settings(max_examples=60, **SETTINGS)
@given(layer=layers_st, m=st.integers(1, 9), data=st.data(), seed=seeds_st)
def test_weight_mask_any_nm(layer, m, data, seed):
    text = f"{data.draw(st.integers(1, m))}:{m}"
    mask = weight_mask(layer, 0.5, parse_pattern(text), np.random.default_rng(seed))
    check_weight_mask(layer, 0.5, text, mask)


@settings(max_examples=40, **SETTINGS)
@given(br=st.integers(1, 4), bc=st.integers(1, 4), a=st.integers(1, 5), b=st.integers(1, 5),
       d=densities_st, seed=seeds_st)
def test_block_density_within_one_block_when_blocks_tile(br, bc, a, b, d, seed):
    layer = Layer.linear("fc", bc * b, br * a)  # rows and fan_in are multiples of the block
    mask = weight_mask(layer, d, Pattern("block", block=(br, bc)), np.random.default_rng(seed))
    n = layer.weight_numel
    assert d * n - 1e-6 <= np.count_nonzero(mask) < d * n + br * bc


def test_block_density_within_one_block_with_edge_blocks():
    layer = Layer.linear("fc", 9, 9)  # 4x4 blocks: 4 full, 4 of 4x1/1x4, one 1x1
    d = 5 / 9  # keep 5 of 9 blocks, d*n = 45
    mask = weight_mask(layer, d, parse_pattern("block"), np.random.default_rng(194))
    assert 0 <= np.count_nonzero(mask) - d * layer.weight_numel < 16


def test_nm_realized_density_without_tail():
    layer = Layer.conv("c", 16, 8, 3, 6)  # fan_in 144: divisible by 4 and 3
    for text, want in (("2:4", 0.5), ("1:3", 1 / 3), ("4:8", 0.5)):
        mask = weight_mask(layer, 0.3, parse_pattern(text), np.random.default_rng(1))
        assert np.count_nonzero(mask) / mask.size == pytest.approx(want, abs=1e-12)


BIG = Layer.conv("big", 32, 32, 3, 8)


@pytest.mark.parametrize("text", WEIGHT_PATTERNS)
def test_same_seed_same_mask_other_seed_differs(text):
    p = parse_pattern(text)
    a = weight_mask(BIG, 0.5, p, np.random.default_rng(123))
    b = weight_mask(BIG, 0.5, p, np.random.default_rng(123))
    c = weight_mask(BIG, 0.5, p, np.random.default_rng(124))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.count_nonzero(a) == np.count_nonzero(c)


def test_clustered_is_clustered():
    """Per-filter and per-channel densities vary far more than under ``random``."""
    layer = Layer.linear("fc", 128, 64)
    rng = np.random.default_rng(0)
    clu = weight_mask(layer, 0.3, Pattern("clustered"), rng)
    rnd = weight_mask(layer, 0.3, Pattern("random"), rng)
    assert np.count_nonzero(clu) == np.count_nonzero(rnd)
    for axis in (0, 1):
        assert clu.sum(axis=axis).var() > 4 * rnd.sum(axis=axis).var()


# ------------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d, n, want", [
    (0.0, 10, 0), (-0.5, 10, 0), (1.0, 10, 10), (2.0, 10, 10), (0.5, 10, 5), (0.51, 10, 6),
    (0.07, 100, 7),  # 0.07·100 = 7.000000000000001 in floats: still 7
    (0.57, 100, 57),  # 56.99999999999999
    (0.7, 10, 7), (1 / 3, 3, 1), (0.001, 7, 1), (0.2, 0, 0),
])
def test_keep_count_values(d, n, want):
    assert keep_count(d, n) == want


@pytest.mark.parametrize("d, n, want", [
    (0.0, 10, 1), (0.001, 10, 1), (0.9, 1000, 900),  # 0.9·1000 = 900.0000000000001
    (1.0 - 0.9, 1000, 100), (0.5, 0, 0),  # the floor never exceeds n
])
def test_keep_count_floor(d, n, want):
    """The trainers' rule (at least one weight kept per layer) is the same ceil."""
    assert keep_count(d, n, at_least=1) == want


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 10_000), d=densities_st)
def test_keep_count_is_ceil(n, d):
    assert _is_ceil(keep_count(d, n), d, n)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=st.integers(0, 300), seed=seeds_st)
def test_exact_random_count(data, n, seed):
    k = data.draw(st.sampled_from([0, n]) | st.integers(0, n))
    mask = exact_random(n, k, np.random.default_rng(seed))
    assert mask.shape == (n,) and mask.dtype == np.bool_
    assert int(np.count_nonzero(mask)) == k


def _exact_random_by_positions(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """exact_random as first written: the corrections drawn from the list of every position."""
    if k <= 0 or k >= n:
        return np.full(n, k >= n > 0)
    mask = rng.random(n, dtype=np.float32) < np.float32(k / n)
    count = int(np.count_nonzero(mask))
    if count > k:
        mask[rng.choice(np.flatnonzero(mask), count - k, replace=False)] = False
    elif count < k:
        mask[rng.choice(np.flatnonzero(~mask), k - count, replace=False)] = True
    return mask


@settings(max_examples=60, deadline=None)
@given(n=st.sampled_from([1, 7, 64, 1001, 20_000, 300_007, 2_500_001]), d=st.floats(0.0, 1.0),
       seed=seeds_st)
def test_exact_random_draws_the_masks_it_always_drew(n, d, seed):
    """Uniform draws in chunks, the corrections picked by rank: the same masks, and the
    generator left in the same state (traces stay byte-identical)."""
    k = keep_count(d, n)
    new, old = np.random.default_rng(seed), np.random.default_rng(seed)
    np.testing.assert_array_equal(exact_random(n, k, new), _exact_random_by_positions(n, k, old))
    assert new.random() == old.random()


@pytest.mark.parametrize("n", [1, 2, 5, 17, 1000])
def test_exact_random_extremes(n):
    rng = np.random.default_rng(0)
    assert not exact_random(n, 0, rng).any()
    assert exact_random(n, n, rng).all()
    assert int(exact_random(n, n - 1, rng).sum()) == n - 1
    assert int(exact_random(n, 1, rng).sum()) == 1


def test_exact_random_uniform():
    """Positions and whole 2-subsets of 6 are drawn uniformly (chi-square, loose bounds)."""
    n, k, draws = 6, 2, 6000
    rng = np.random.default_rng(2024)
    pos = np.zeros(n)
    subsets = {c: 0 for c in itertools.combinations(range(n), k)}
    for _ in range(draws):
        m = exact_random(n, k, rng)
        pos += m
        subsets[tuple(np.flatnonzero(m))] += 1
    exp_pos = draws * k / n
    chi_pos = float(((pos - exp_pos) ** 2 / exp_pos).sum())
    assert chi_pos < 30.0  # 5 dof; p ≈ 1e-5
    exp_sub = draws / len(subsets)
    chi_sub = sum((c - exp_sub) ** 2 / exp_sub for c in subsets.values())
    assert chi_sub < 50.0  # 14 dof; p ≈ 1e-5


def _topk_ref(score: np.ndarray, k: int) -> np.ndarray:
    flat = score.reshape(-1)
    order = sorted(range(flat.size), key=lambda i: (-flat[i], i))
    out = np.zeros(flat.size, dtype=bool)
    out[order[:max(k, 0)]] = True
    return out.reshape(score.shape)


@settings(max_examples=200, deadline=None)
@given(data=st.data(),
       shape=st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple),
       hi=st.integers(0, 4))
def test_topk_mask_matches_reference(data, shape, hi):
    n = math.prod(shape)
    vals = data.draw(st.lists(st.integers(-hi, hi), min_size=n, max_size=n))
    score = np.array(vals, dtype=data.draw(st.sampled_from([np.float32, np.float64, np.int64])))
    score = score.reshape(shape)
    k = data.draw(st.integers(-1, n + 1))
    got = topk_mask(score, k)
    assert got.shape == shape and got.dtype == np.bool_
    np.testing.assert_array_equal(got, _topk_ref(score, k))


def test_topk_mask_ties_by_position():
    score = np.array([1.0, 3.0, 1.0, 3.0, 1.0, 2.0])
    assert topk_mask(score, 3).tolist() == [False, True, False, True, False, True]
    assert topk_mask(score, 4).tolist() == [True, True, False, True, False, True]
    assert topk_mask(np.zeros((2, 3)), 2).tolist() == [[True, True, False], [False, False, False]]


# ------------------------------------------------------------------------------------------------
# activation masks
# ------------------------------------------------------------------------------------------------
act_shapes = st.one_of(
    st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 9), st.integers(1, 9)),
    st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 20)),
)


@settings(max_examples=80, **SETTINGS)
@given(shape=act_shapes, d=densities_st, clustered=st.booleans(), seed=seeds_st)
def test_activation_mask_count(shape, d, clustered, seed):
    mask = activation_mask(shape, d, clustered, np.random.default_rng(seed))
    assert mask.shape == shape and mask.dtype == np.bool_
    assert int(np.count_nonzero(mask)) == keep_count(d, math.prod(shape))


@settings(max_examples=80, **SETTINGS)
@given(shape=act_shapes, d=densities_st, clustered=st.booleans(), seed=seeds_st,
       natural=st.floats(0.0, 1.0))
def test_activation_mask_within(shape, d, clustered, seed, natural):
    rng = np.random.default_rng(seed)
    within = rng.random(shape) < natural
    before = within.copy()
    mask = activation_mask(shape, d, clustered, rng, within=within)
    assert mask.shape == shape and mask.dtype == np.bool_
    assert int(np.count_nonzero(mask)) == min(keep_count(d, math.prod(shape)),
                                              int(within.sum()))
    assert not (mask & ~within).any()
    np.testing.assert_array_equal(within, before)  # the caller's array is left alone
    assert mask is not within


@pytest.mark.parametrize("shape", [(2, 8, 12, 12), (2, 10, 64)])
@pytest.mark.parametrize("clustered", [False, True])
def test_activation_mask_deterministic(shape, clustered):
    a = activation_mask(shape, 0.3, clustered, np.random.default_rng(5))
    b = activation_mask(shape, 0.3, clustered, np.random.default_rng(5))
    c = activation_mask(shape, 0.3, clustered, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_clustered_activation_varies_by_channel():
    shape = (4, 32, 16, 16)
    rng = np.random.default_rng(3)
    clu = activation_mask(shape, 0.3, True, rng)
    rnd = activation_mask(shape, 0.3, False, rng)
    assert np.count_nonzero(clu) == np.count_nonzero(rnd)
    assert clu.sum(axis=(0, 2, 3)).var() > 4 * rnd.sum(axis=(0, 2, 3)).var()


# ------------------------------------------------------------------------------------------------
# parsing
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, want", [
    ("random", Pattern("random")),
    ("clustered", Pattern("clustered")),
    ("fanin", Pattern("fanin")),
    ("channel", Pattern("channel")),
    ("filter", Pattern("filter")),
    ("kernel", Pattern("kernel")),
    ("block", Pattern("block", block=(4, 4))),
    ("block:2x3", Pattern("block", block=(2, 3))),
    ("2:4", Pattern("nm", n=2, m=4)),
    ("1:3", Pattern("nm", n=1, m=3)),
    ("4:4", Pattern("nm", n=4, m=4)),
    ("  Block:8X1 ", Pattern("block", block=(8, 1))),
    (" RANDOM", Pattern("random")),
])
def test_parse_pattern_values(text, want):
    got = parse_pattern(text)
    assert got == want
    assert parse_pattern(str(got)) == got


@pytest.mark.parametrize("text", ["random", "clustered", "fanin", "channel", "filter", "kernel",
                                  "block:4x4", "block:2x3", "2:4", "1:3", "16:32"])
def test_parse_pattern_canonical_round_trip(text):
    assert str(parse_pattern(text)) == text


@settings(max_examples=100, deadline=None)
@given(m=st.integers(1, 64), data=st.data())
def test_parse_nm_round_trip(m, data):
    n = data.draw(st.integers(1, m))
    p = parse_pattern(f"{n}:{m}")
    assert (p.kind, p.n, p.m) == ("nm", n, m)
    assert str(p) == f"{n}:{m}"
    assert p.nm_density == pytest.approx(n / m)
    assert parse_pattern(str(p)) == p


@settings(max_examples=50, deadline=None)
@given(r=st.integers(1, 64), c=st.integers(1, 64))
def test_parse_block_round_trip(r, c):
    p = parse_pattern(f"block:{r}x{c}")
    assert (p.kind, p.block) == ("block", (r, c))
    assert str(p) == f"block:{r}x{c}"
    assert parse_pattern(str(p)) == p


@pytest.mark.parametrize("text", ["3:2", "0:4", "0:0", "1:0", "block:0x2", "block:2x0",
                                  "block:2x", "block:-1x2", "foo", "2-4", "", "2:4:8", "block2x2",
                                  "nm", "-2:4", "2.0:4"])
def test_parse_pattern_invalid(text):
    with pytest.raises(ConfigError) as exc:
        parse_pattern(text, source="--pat")
    assert exc.value.source == "--pat"
    assert "--pat" in str(exc.value)
