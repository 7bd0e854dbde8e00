"""Built-in model tables: parameter counts, layer counts, spatial sizes, names, lookup errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from common.errors import ConfigError
from traces.layers import Layer
from traces.models import ModelTable, get_model, model_names

PUBLISHED_PARAMS = {
    "mlp3": 266_610,
    "lenet5": 61_706,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet56": 853_018,
    "vgg16": 138_357_544,
    "vgg16-cifar": 14_728_266,
    "mobilenetv2": 3_504_872,
    "vit-b16": 86_567_656,
}
WRN16_8_PUBLISHED = 11.0e6  # Zagoruyko & Komodakis, Table: WRN-16-8 "11.0M"

LAYER_COUNTS = {
    "mlp3": 3,
    "lenet5": 5,
    "resnet18": 21,  # 17 convs + 3 downsample + fc
    "resnet50": 54,  # 49 convs + 4 downsample + fc
    "resnet20": 20,
    "resnet32": 32,
    "resnet56": 56,
    "vgg16": 16,
    "vgg16-cifar": 14,
    "wrn16-8": 17,  # conv1 + 12 block convs + 3 shortcuts + fc
    "mobilenetv2": 53,
    "vit-b16": 50,  # patch conv + 12 * 4 linears + head
}


def _layer(table: ModelTable, name: str) -> Layer:
    return next(layer for layer in table.layers if layer.name == name)


def test_model_names_are_the_documented_set() -> None:
    assert model_names() == sorted([*PUBLISHED_PARAMS, "wrn16-8"])


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_params_equal_published(name: str) -> None:
    table = get_model(name)
    assert table.params == PUBLISHED_PARAMS[name]
    assert table.params == sum(layer.params for layer in table.layers) + table.other_params


def test_wrn16_8_params_within_one_percent_of_published() -> None:
    params = get_model("wrn16-8").params
    assert params == 10_961_370  # exact count of the architecture
    assert abs(params - WRN16_8_PUBLISHED) / WRN16_8_PUBLISHED < 0.01


@pytest.mark.parametrize("name,expected", sorted(LAYER_COUNTS.items()))
def test_layer_counts(name: str, expected: int) -> None:
    assert len(get_model(name).layers) == expected


@pytest.mark.parametrize("name", sorted(LAYER_COUNTS))
def test_table_is_well_formed(name: str) -> None:
    table = get_model(name)
    assert table.name == name
    names = [layer.name for layer in table.layers]
    assert len(set(names)) == len(names)
    for layer in table.layers:
        assert layer.checked() is layer
    first, last = table.layers[0], table.layers[-1]
    assert last.kind == "linear" and last.out_channels == table.num_classes
    if first.kind == "conv2d":
        assert (first.in_channels, *first.input_hw) == table.input_shape
    else:
        c, h, w = table.input_shape
        assert first.in_channels == c * h * w


def test_other_params_are_norm_and_embedding_counts() -> None:
    assert get_model("mlp3").other_params == 0
    assert get_model("vgg16").other_params == 0
    # resnet20: BN after conv1 and after each of the 18 block convs, 16/32/64 channels.
    assert get_model("resnet20").other_params == 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64)
    # vit-b16: class token + position embedding + 2 LayerNorms per block + final LayerNorm.
    assert get_model("vit-b16").other_params == 768 + 197 * 768 + (2 * 12 + 1) * 2 * 768


@pytest.mark.parametrize("name", ["mlp3", "lenet5", "vgg16", "vgg16-cifar"])
def test_sequential_models_chain(name: str) -> None:
    """In a plain chain each layer consumes the previous one's output (after pooling/flatten)."""
    layers = get_model(name).layers
    for prev, cur in zip(layers, layers[1:], strict=False):
        if cur.kind == prev.kind == "conv2d":
            assert cur.in_channels == prev.out_channels
            ho, wo = prev.out_hw
            assert cur.input_hw in ((ho, wo), (ho // 2, wo // 2))  # optional 2x2 max-pool
        elif cur.kind == prev.kind == "linear":
            assert cur.in_channels == prev.out_channels
        else:  # conv -> flatten -> linear, possibly after a final pool
            ho, wo = prev.out_hw
            assert cur.in_channels in (prev.out_channels * ho * wo,
                                       prev.out_channels * (ho // 2) * (wo // 2))


def test_lenet5_sizes() -> None:
    t = get_model("lenet5")
    assert _layer(t, "conv1").out_hw == (28, 28)
    assert _layer(t, "conv2").input_hw == (14, 14)
    assert _layer(t, "conv2").out_hw == (10, 10)
    assert _layer(t, "fc1").in_channels == 400


def test_resnet50_sizes() -> None:
    t = get_model("resnet50")
    assert _layer(t, "conv1").out_hw == (112, 112)
    assert _layer(t, "layer1.0.conv1").input_hw == (56, 56)  # after the 3x3/2 max-pool
    assert _layer(t, "layer2.0.conv2").stride == (2, 2)
    assert _layer(t, "layer2.0.conv2").out_hw == (28, 28)
    assert _layer(t, "layer4.2.conv3").out_hw == (7, 7)
    assert _layer(t, "layer4.2.conv3").out_channels == 2048
    down = _layer(t, "layer3.0.downsample.0")
    assert (down.in_channels, down.input_hw, down.out_hw) == (512, (28, 28), (14, 14))
    fc = _layer(t, "fc")
    assert (fc.in_channels, fc.tokens, fc.out_channels) == (2048, 1, 1000)


def test_resnet18_has_three_projections_and_cifar_resnets_none() -> None:
    down = [layer.name for layer in get_model("resnet18").layers if "downsample" in layer.name]
    assert down == ["layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"]
    for name in ("resnet20", "resnet32", "resnet56"):
        t = get_model(name)
        assert all(layer.kernel == (3, 3) for layer in t.layers[:-1])
        assert _layer(t, "layer3.0.conv1").out_hw == (8, 8)


def test_vgg_sizes() -> None:
    t = get_model("vgg16")
    assert _layer(t, "features.28").out_hw == (14, 14)  # last conv, before the 5th max-pool
    assert _layer(t, "classifier.0").in_channels == 512 * 7 * 7
    assert _layer(get_model("vgg16-cifar"), "classifier").in_channels == 512


def test_wrn16_8_shapes() -> None:
    t = get_model("wrn16-8")
    sc = _layer(t, "block3.layer.0.convShortcut")
    assert (sc.in_channels, sc.out_channels, sc.input_hw, sc.out_hw) == (256, 512, (16, 16), (8, 8))
    assert _layer(t, "block1.layer.0.conv1").in_channels == 16
    assert _layer(t, "fc").in_channels == 512


def test_mobilenetv2_depthwise_and_sizes() -> None:
    t = get_model("mobilenetv2")
    dw = [layer for layer in t.layers if layer.groups > 1]
    assert len(dw) == 17
    assert all(layer.groups == layer.in_channels == layer.out_channels for layer in dw)
    assert _layer(t, "features.1.conv.0.0").groups == 32
    assert _layer(t, "features.17.conv.2").out_hw == (7, 7)
    assert _layer(t, "features.18.0").in_channels == 320
    assert _layer(t, "classifier.1").in_channels == 1280


def test_vit_b16_tokens() -> None:
    t = get_model("vit-b16")
    patch = t.layers[0]
    assert (patch.name, patch.kernel, patch.stride, patch.out_hw) == (
        "conv_proj", (16, 16), (16, 16), (14, 14))
    encoder = t.layers[1:-1]
    assert all(layer.kind == "linear" and layer.tokens == 197 for layer in encoder)
    qkv = _layer(t, "encoder.layers.encoder_layer_11.self_attention.in_proj")
    assert (qkv.in_channels, qkv.out_channels) == (768, 2304)
    head = t.layers[-1]
    assert (head.name, head.tokens, head.in_channels) == ("heads.head", 1, 768)
    assert t.layers[1].macs(1) == 197 * 768 * 2304


def test_get_model_is_case_insensitive() -> None:
    assert get_model("ResNet18") == get_model("resnet18")


@pytest.mark.parametrize("bad", ["resnet-18", "", "vgg"])
def test_unknown_model_raises_config_error_listing_names(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        get_model(bad)
    msg = str(info.value)
    assert msg.startswith(f"model: unknown model {bad!r}; known: ")
    assert msg.endswith(", ".join(model_names()))
    assert info.value.field == "model"


def test_importing_models_does_not_import_torch() -> None:
    code = "import sys, traces.models; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
