"""The torch models record exactly the geometry of the built-in layer table of the same name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cli.train_cmd import MODELS as CLI_MODELS
from traces.format import Trace
from traces.models import get_model, model_names
from trainers.models import MODELS, build_model
from trainers.recorder import layer_geometry, record
from trainers.sparse_fn import sparse_layers, sparsify

TABLED = ["mlp3", "lenet5", "resnet20", "resnet32", "resnet56", "resnet18", "vgg16-cifar",
          "wrn16-8"]


def _one_recorded_step(model: nn.Module, shape: tuple[int, ...], out) -> Trace:
    x = torch.rand(1, *shape)
    with record(model, out, every=1, model_name="m"):
        model(x).sum().backward()
    return Trace(out)


@pytest.mark.parametrize("name", TABLED)
def test_recorded_geometry_equals_the_layer_table(name, tmp_path):
    torch.manual_seed(0)
    table = get_model(name)
    model = build_model(name)
    trace = _one_recorded_step(model, table.input_shape, tmp_path / "t")
    got = [layer.to_dict() for layer in trace.manifest.layers]
    assert got == [layer.to_dict() for layer in table.layers]
    # registration order is forward order (the methods' first/last layer rules rely on it)
    assert [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))] == [
        layer.name for layer in table.layers]
    assert sum(p.numel() for p in model.parameters()) == table.params
    assert len(trace) == 1 and next(iter(trace)).step == 0


def test_vit_b16_geometry_and_parameters_match_the_table():
    """The ViT class at the B/16 setting, probed on the meta device (no memory, no compute)."""
    table = get_model("vit-b16")
    with torch.device("meta"):
        model = sparsify(build_model("vit-b16"))
        seen = []
        for name, m in sparse_layers(model):
            m.register_forward_pre_hook(
                lambda mod, args, name=name: seen.append(layer_geometry(name, mod,
                                                                        args[0].shape, 2)))
        with torch.no_grad():
            model(torch.empty(2, *table.input_shape))
    assert [la.to_dict() for la in seen] == [la.to_dict() for la in table.layers]
    assert sum(p.numel() for p in model.parameters()) == table.params


def test_vit_mini_records_tokens_and_names(tmp_path):
    torch.manual_seed(0)
    model = build_model("vit-mini")
    trace = _one_recorded_step(model, (3, 32, 32), tmp_path / "t")
    layers = {la.name: la for la in trace.manifest.layers}
    names = list(layers)
    assert names[0] == "conv_proj" and names[-1] == "heads.head"
    qkv = layers["encoder.layers.encoder_layer_0.self_attention.in_proj"]
    assert (qkv.in_channels, qkv.out_channels, qkv.tokens) == (64, 192, 65)
    assert layers["encoder.layers.encoder_layer_3.mlp.3"].tokens == 65
    assert layers["heads.head"].tokens == 1
    # the attention of each block: Q·Kᵀ and softmax·V, 4 heads of 16 features over 65 tokens
    assert len(names) == 2 + 4 * 4 + 4 * 2
    qk = layers["encoder.layers.encoder_layer_0.self_attention.sdpa.qk"]
    av = layers["encoder.layers.encoder_layer_0.self_attention.sdpa.av"]
    assert (qk.kind, qk.heads, qk.tokens, qk.in_channels, qk.out_channels) == (
        "matmul", 4, 65, 16, 65)
    assert (av.heads, av.tokens, av.in_channels, av.out_channels) == (4, 65, 65, 16)
    assert names.index(qk.name) == names.index(qkv.name) + 1
    step = next(iter(trace))
    assert step.layers["heads.head"]["fwd"]["ifmap"].shape == (1, 1, 64)


def test_registry_agrees_with_the_cli_and_the_tables():
    assert sorted(CLI_MODELS) == sorted(MODELS)
    assert set(TABLED) | {"vit-b16"} <= set(model_names())
    assert "vit-mini" not in model_names()  # no built-in table: nothing added to traces/


def test_models_adapt_to_the_dataset():
    for name in MODELS:
        if name == "vit-b16":
            continue
        hw = MODELS[name].train_hw
        model = build_model(name, in_channels=1, num_classes=7, input_hw=hw)
        with torch.no_grad():
            assert model(torch.rand(2, 1, *hw)).shape == (2, 7)
