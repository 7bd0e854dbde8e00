"""Per-layer weight densities: uniform, ERK (against a slow reference), explicit, overall."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from common.errors import ConfigError
from traces import density as dens
from traces.layers import Layer
from traces.models import get_model

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODELS = ("resnet50", "vgg16-cifar", "lenet5", "mlp3")


# ------------------------------------------------------------------------------------------------
# strategies and the reference
# ------------------------------------------------------------------------------------------------
@st.composite
def any_layer(draw) -> Layer:
    if draw(st.booleans()):
        return Layer.linear("fc", draw(st.integers(1, 2000)), draw(st.integers(1, 500)))
    g = draw(st.sampled_from([1, 1, 2, 4]))
    cin, cout = g * draw(st.integers(1, 64)), g * draw(st.integers(1, 64))
    k = draw(st.integers(1, 5))
    return Layer.conv("conv", cin, cout, k, k + 2, groups=g)


@st.composite
def layer_lists(draw, max_size: int = 8) -> list[Layer]:
    layers = draw(st.lists(any_layer(), min_size=1, max_size=max_size))
    # distinct names so an error can name the layer
    return [Layer(**{**layer.__dict__, "name": f"{layer.name}{i}"}).checked()
            for i, layer in enumerate(layers)]


def _raw(layer: Layer, power: float = 1.0) -> float:
    shape = layer.weight_shape
    return (sum(shape) / math.prod(shape)) ** power


def erk_reference(layers, sparsity, dense=(), power=1.0):
    """RigL's loop, one layer at a time: solve ε over the non-dense layers; if the largest ε·raw
    exceeds 1, make that layer dense and solve again. ``None`` when the target is unreachable."""
    sizes = [math.prod(layer.weight_shape) for layer in layers]
    raw = [_raw(layer, power) for layer in layers]
    budget = (1.0 - sparsity) * sum(sizes)
    dense_set = set(dense)
    while True:
        fixed = sum(sizes[i] for i in dense_set)
        if fixed > budget:
            return None
        rest = [i for i in range(len(layers)) if i not in dense_set]
        if not rest:
            return [1.0] * len(layers)
        eps = (budget - fixed) / sum(raw[i] * sizes[i] for i in rest)
        top = max(rest, key=lambda i: raw[i])
        if eps * raw[top] > 1.0:
            dense_set.add(top)
            continue
        return [1.0 if i in dense_set else eps * raw[i] for i in range(len(layers))]


def check_erk(layers, sparsity, dense, got, power=1.0):
    """The ERK invariants of a reachable target."""
    n = len(layers)
    assert len(got) == n
    sizes = [layer.weight_numel for layer in layers]
    fixed = sum(sizes[i] for i in set(dense))
    slack = (1.0 - sparsity) * sum(sizes) - fixed
    for i in dense:
        assert got[i] == 1.0
    if slack > 0:
        assert all(0.0 < d <= 1.0 for d in got), got
    else:
        assert all(0.0 <= d <= 1.0 for d in got), got
    assert dens.weight_density(layers, got) == pytest.approx(1.0 - sparsity, abs=1e-9)
    free = [i for i in range(n) if i not in set(dense)]
    raw = [_raw(layer, power) for layer in layers]
    # density is non-decreasing in raw (fewer weights per summed dimension -> denser)...
    by_raw = sorted(free, key=lambda i: raw[i])
    for a, b in zip(by_raw, by_raw[1:], strict=False):
        assert got[a] <= got[b] * (1 + 1e-12) + 1e-15, (layers[a], layers[b])
    # ...and proportional to raw among the layers that were not made dense
    sparse = [i for i in free if got[i] < 1.0]
    ratios = [got[i] / raw[i] for i in sparse]
    if ratios:
        assert max(ratios) == pytest.approx(min(ratios), rel=1e-9)
        # every layer made dense really needed it at that ε
        for i in free:
            if got[i] == 1.0:
                assert ratios[0] * raw[i] >= 1.0 - 1e-9


# ------------------------------------------------------------------------------------------------
# uniform
# ------------------------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(layers=layer_lists(), s=st.floats(0.0, 1.0))
def test_uniform(layers, s):
    got = dens.uniform(layers, s, first_dense=True)
    assert got[0] == 1.0
    assert got[1:] == [1.0 - s] * (len(layers) - 1)
    assert dens.uniform(layers, s, first_dense=False) == [1.0 - s] * len(layers)


def test_uniform_values():
    layers = get_model("lenet5").layers
    assert dens.uniform(layers, 0.8) == [1.0] + [pytest.approx(0.2)] * 4
    assert dens.uniform(layers, 0.8, first_dense=False) == [pytest.approx(0.2)] * 5
    assert dens.uniform([], 0.5) == []


# ------------------------------------------------------------------------------------------------
# erk
# ------------------------------------------------------------------------------------------------
def _erk_matches_reference(layers, s, dense):
    want = erk_reference(layers, s, dense)
    if want is None:
        with pytest.raises(ConfigError):
            dens.erk(layers, s, dense=dense)
        return
    got = dens.erk(layers, s, dense=dense)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    check_erk(layers, s, dense, got)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("first_dense", [False, True])
@pytest.mark.parametrize("s", [0.0, 0.5, 0.8, 0.9, 0.95, 0.99])
def test_erk_models(model, first_dense, s):
    layers = get_model(model).layers
    dense = [0] if first_dense else []
    _erk_matches_reference(layers, s, dense)


def test_erk_models_spot_values():
    """Hand-checked facts: at 90% ResNet-50's first conv and fc stay sparse-ish but denser than
    the 3x3 bottleneck convs; mlp3 cannot reach 50% with its 784x300 layer kept dense."""
    r50 = get_model("resnet50").layers
    got = dens.erk(r50, 0.9)
    names = [layer.name for layer in r50]
    conv1, fc = got[names.index("conv1")], got[names.index("fc")]
    l4 = got[names.index("layer4.0.conv2")]  # 512x512x3x3
    assert l4 < fc < 1.0 and l4 < conv1
    mlp = get_model("mlp3").layers
    assert mlp[0].weight_numel / sum(layer.weight_numel for layer in mlp) > 0.5
    with pytest.raises(ConfigError) as exc:
        dens.erk(mlp, 0.5, dense=[0])
    assert exc.value.field == "sparsity"


def test_erk_two_layer_by_hand():
    # raw: a (10x10) = 20/100 = 0.2; b (10x40) = 50/400 = 0.125. Budget 0.5·500 = 250.
    # ε = 250 / (0.2·100 + 0.125·400) = 250/70; ε·0.2 = 0.714 < 1.
    a, b = Layer.linear("a", 10, 10), Layer.linear("b", 40, 10)
    got = dens.erk([a, b], 0.5)
    assert got == pytest.approx([250 / 70 * 0.2, 250 / 70 * 0.125])
    # at 20%: ε = 400/70, ε·0.2 = 1.14 > 1 -> a dense, b gets (400 - 100)/400 = 0.75
    assert dens.erk([a, b], 0.2) == pytest.approx([1.0, 0.75])


@settings(max_examples=150, **SETTINGS)
@given(layers=layer_lists(), s=st.floats(0.0, 0.999), data=st.data())
def test_erk_random_layers(layers, s, data):
    dense = data.draw(st.lists(st.integers(0, len(layers) - 1), unique=True,
                               max_size=len(layers) - 1))
    _erk_matches_reference(layers, s, dense)


@settings(max_examples=40, **SETTINGS)
@given(layers=layer_lists(), s=st.floats(0.05, 0.95), power=st.floats(0.25, 2.0))
def test_erk_power(layers, s, power):
    want = erk_reference(layers, s, power=power)
    got = dens.erk(layers, s, power=power)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    check_erk(layers, s, [], got, power=power)


@settings(max_examples=40, **SETTINGS)
@given(layers=layer_lists(), s=st.floats(0.05, 0.95))
def test_erk_invariant_to_layer_order(layers, s):
    got = dens.erk(layers, s)
    rev = dens.erk(layers[::-1], s)
    assert got == pytest.approx(rev[::-1], rel=1e-9)


def test_erk_unreachable_first_dense():
    # the first layer is 60% of all weights: at 99% sparsity its weights alone exceed the budget
    layers = [Layer.linear("big", 300, 20), Layer.linear("small", 40, 100)]
    assert layers[0].weight_numel / sum(layer.weight_numel for layer in layers) == 0.6
    with pytest.raises(ConfigError) as exc:
        dens.erk(layers, 0.99, dense=[0])
    assert exc.value.field == "sparsity"
    assert "0.99" in str(exc.value)
    assert dens.erk(layers, 0.3, dense=[0])[0] == 1.0  # reachable: 70% > 60%


@settings(max_examples=30, **SETTINGS)
@given(layers=layer_lists(), data=st.data())
def test_erk_unreachable_random(layers, data):
    assume(len(layers) >= 2)
    dense = data.draw(st.lists(st.integers(0, len(layers) - 1), unique=True, min_size=1,
                               max_size=len(layers) - 1))
    share = sum(layers[i].weight_numel for i in dense) / sum(x.weight_numel for x in layers)
    assume(share > 2e-6)  # else no sparsity lies between 1 - share + 1e-6 and 1
    s = data.draw(st.floats(1.0 - share + 1e-6, 1.0, exclude_min=True))
    assume(1.0 - s < share * (1 - 1e-9))
    with pytest.raises(ConfigError):
        dens.erk(layers, s, dense=dense)


@pytest.mark.parametrize("s", [0.5, 0.9])
def test_erk_all_forced_dense_with_sparsity_raises(s):
    layers = [Layer.linear("a", 10, 10), Layer.linear("b", 20, 10)]
    with pytest.raises(ConfigError):
        dens.erk(layers, s, dense=[0, 1])


def test_erk_all_forced_dense_without_sparsity():
    layers = [Layer.linear("a", 10, 10), Layer.linear("b", 20, 10)]
    assert dens.erk(layers, 0.0, dense=[0, 1]) == [1.0, 1.0]


# ------------------------------------------------------------------------------------------------
# explicit
# ------------------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(layers=layer_lists(), data=st.data())
def test_explicit_valid(layers, data):
    sp = data.draw(st.lists(st.floats(0.0, 1.0), min_size=len(layers), max_size=len(layers)))
    assert dens.explicit(layers, sp, "--ls") == [1.0 - s for s in sp]


@settings(max_examples=40, deadline=None)
@given(layers=layer_lists(), data=st.data())
def test_explicit_wrong_length(layers, data):
    count = data.draw(st.integers(0, len(layers) + 3).filter(lambda c: c != len(layers)))
    with pytest.raises(ConfigError) as exc:
        dens.explicit(layers, [0.5] * count, "--ls")
    assert exc.value.source == "--ls"
    assert f"expected {len(layers)}" in str(exc.value) and f"got {count}" in str(exc.value)


@settings(max_examples=60, deadline=None)
@given(layers=layer_lists(), data=st.data())
def test_explicit_out_of_range_names_layer(layers, data):
    bad_at = data.draw(st.integers(0, len(layers) - 1))
    bad = data.draw(st.sampled_from([math.nan, math.inf, -math.inf])
                    | st.floats(max_value=-1e-12) | st.floats(min_value=1.0 + 1e-12))
    sp = [0.5] * len(layers)
    sp[bad_at] = bad
    with pytest.raises(ConfigError) as exc:
        dens.explicit(layers, sp, "--ls")
    assert exc.value.source == "--ls"
    assert exc.value.field == layers[bad_at].name
    assert layers[bad_at].name in str(exc.value)


# ------------------------------------------------------------------------------------------------
# weight_density
# ------------------------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(layers=layer_lists(), data=st.data())
def test_weight_density(layers, data):
    d = data.draw(st.lists(st.floats(0.0, 1.0), min_size=len(layers), max_size=len(layers)))
    kept = sum(di * math.prod(layer.weight_shape) for di, layer in zip(d, layers, strict=True))
    total = sum(math.prod(layer.weight_shape) for layer in layers)
    assert dens.weight_density(layers, d) == pytest.approx(kept / total, rel=1e-12, abs=1e-15)


def test_weight_density_values():
    a, b = Layer.linear("a", 10, 10), Layer.linear("b", 30, 10)  # 100 and 300 weights
    assert dens.weight_density([a, b], [1.0, 0.0]) == pytest.approx(0.25)
    assert dens.weight_density([a, b], [0.0, 1.0]) == pytest.approx(0.75)
    assert dens.weight_density([a, b], [0.5, 0.5]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        dens.weight_density([a, b], [0.5])
