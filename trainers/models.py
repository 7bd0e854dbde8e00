"""The networks of the built-in layer tables, in plain torch (no torchvision on CPU here).

Every conv2d/linear module is named by the same module path as in ``traces.models`` and runs in
the same forward order, so a recorded trace of ``build_model(name)`` at the table's input shape
has exactly the table's geometry (``tests/trainers/test_models.py`` checks every model).

``build_model(name, in_channels, num_classes, input_hw)`` adapts the stem and the head to a
dataset: the training resolution is ``train_hw(name)`` (28×28 for the MNIST nets, 32×32 for the
CIFAR-style ones, and for ResNet-18 too, which keeps its ImageNet stem).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import ConfigError


# ---- MLP and LeNet ----------------------------------------------------------------------------
class MLP3(nn.Module):
    """LeNet-300-100 on the flattened image."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 input_hw: tuple[int, int] = (28, 28)) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_channels * input_hw[0] * input_hw[1], 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max-pooling; conv1 is padded to keep 28×28."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 input_hw: tuple[int, int] = (28, 28)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        h, w = ((input_hw[0] // 2) - 4) // 2, ((input_hw[1] // 2) - 4) // 2
        self.fc1 = nn.Linear(16 * h * w, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2).flatten(1)
        x = F.relu(self.fc2(F.relu(self.fc1(x))))
        return self.fc3(x)


# ---- ResNets ----------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """Two 3×3 convs with BN. ``shortcut``: "A" = parameter-free (subsample + zero channels, the
    CIFAR ResNets), "B" = 1×1 conv + BN named ``downsample`` (torchvision), when the shape
    changes."""

    def __init__(self, cin: int, planes: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = 0
        self.stride = stride
        if stride != 1 or cin != planes:
            if shortcut == "B":
                self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False),
                                                nn.BatchNorm2d(planes))
            else:
                self.pad = planes - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if hasattr(self, "downsample"):  # after conv2, as torchvision (the tables' order)
            x = self.downsample(x)
        elif self.pad or self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + x)


class ResNet(nn.Module):
    """CIFAR ResNet-(6n+2) (``stem="cifar"``: 3×3 stem, 16/32/64 channels, option-A shortcuts)
    or torchvision's ResNet-18 layout (``stem="imagenet"``: 7×7/2 stem + max-pool, 64..512,
    1×1 projection shortcuts)."""

    def __init__(self, blocks: tuple[int, ...], stem: str, in_channels: int = 3,
                 num_classes: int = 10) -> None:
        super().__init__()
        if stem == "cifar":
            widths, shortcut = (16, 32, 64), "A"
            self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            widths, shortcut = (64, 128, 256, 512), "B"
            self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for stage, (n, planes) in enumerate(zip(blocks, widths, strict=True), start=1):
            layers = []
            for i in range(n):
                layers.append(BasicBlock(cin, planes, 2 if i == 0 and stage > 1 else 1, shortcut))
                cin = planes
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
        self.stages = len(blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for stage in range(1, self.stages + 1):
            x = getattr(self, f"layer{stage}")(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class WideBlock(nn.Module):
    """Pre-activation wide block (Zagoruyko & Komodakis); ``convShortcut`` when the shape
    changes, applied to the activated input after conv2 (the table's order)."""

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.equal = cin == planes and stride == 1
        if not self.equal:
            self.convShortcut = nn.Conv2d(cin, planes, 1, stride, bias=False)  # noqa: N815

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(a))))
        return out + (x if self.equal else self.convShortcut(a))


class WideResNet(nn.Module):
    def __init__(self, depth: int = 16, width: int = 8, in_channels: int = 3,
                 num_classes: int = 10) -> None:
        super().__init__()
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        cin = 16
        for g, planes in enumerate((16 * width, 32 * width, 64 * width), start=1):
            blocks = []
            for i in range(n):
                blocks.append(WideBlock(cin, planes, 2 if i == 0 and g > 1 else 1))
                cin = planes
            group = nn.Module()
            group.layer = nn.Sequential(*blocks)
            self.add_module(f"block{g}", group)
        self.bn1 = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for g in (1, 2, 3):
            x = getattr(self, f"block{g}").layer(x)
        x = F.relu(self.bn1(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# ---- VGG --------------------------------------------------------------------------------------
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16Cifar(nn.Module):
    """VGG-16 for 32×32 inputs (kuangliu): 3×3 conv + BN + ReLU, five max-pools, one linear."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                assert isinstance(v, int)
                layers += [nn.Conv2d(cin, v, 3, 1, 1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


# ---- ViT --------------------------------------------------------------------------------------
class SelfAttention(nn.Module):
    """Multi-head self-attention with q, k, v from one linear ``in_proj`` (torchvision's
    ``MultiheadAttention`` keeps it as a bare parameter; a module lets it be traced)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.in_proj(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(y.transpose(1, 2).reshape(n, t, d))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = SelfAttention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(0.0),
                                 nn.Linear(mlp_dim, dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class ViT(nn.Module):
    """Vision transformer with torchvision's module names (``conv_proj``, ``encoder.layers.
    encoder_layer_i``, ``heads.head``); the head reads the class token."""

    def __init__(self, image_hw: tuple[int, int] = (32, 32), patch: int = 4, dim: int = 64,
                 depth: int = 4, heads: int = 4, mlp_dim: int = 128, in_channels: int = 3,
                 num_classes: int = 10) -> None:
        super().__init__()
        if image_hw[0] % patch or image_hw[1] % patch:
            raise ConfigError(None, "input", f"{image_hw} is not divisible by patch {patch}")
        self.conv_proj = nn.Conv2d(in_channels, dim, patch, patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        tokens = (image_hw[0] // patch) * (image_hw[1] // patch) + 1
        self.encoder = nn.Module()
        self.encoder.pos_embedding = nn.Parameter(torch.empty(1, tokens, dim).normal_(std=0.02))
        self.encoder.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderBlock(dim, heads, mlp_dim)) for i in range(depth)))
        self.encoder.ln = nn.LayerNorm(dim, eps=1e-6)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(dim, num_classes)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.encoder.ln(self.encoder.layers(x + self.encoder.pos_embedding))
        return self.heads(x[:, 0])


# ---- registry ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """How to build a model: ``build(in_channels, num_classes, input_hw)``, the table's input
    shape and classes (the defaults), and the resolution used to train it on small datasets."""

    build: Callable[[int, int, tuple[int, int]], nn.Module]
    input_shape: tuple[int, int, int]
    num_classes: int
    train_hw: tuple[int, int]


def _cifar(depth: int) -> ModelSpec:
    n = (depth - 2) // 6
    return ModelSpec(lambda c, k, hw: ResNet((n, n, n), "cifar", c, k), (3, 32, 32), 10, (32, 32))


MODELS: dict[str, ModelSpec] = {
    "mlp3": ModelSpec(lambda c, k, hw: MLP3(c, k, hw), (1, 28, 28), 10, (28, 28)),
    "lenet5": ModelSpec(lambda c, k, hw: LeNet5(c, k, hw), (1, 28, 28), 10, (28, 28)),
    "resnet20": _cifar(20),
    "resnet32": _cifar(32),
    "resnet56": _cifar(56),
    "resnet18": ModelSpec(lambda c, k, hw: ResNet((2, 2, 2, 2), "imagenet", c, k),
                          (3, 224, 224), 1000, (32, 32)),
    "vgg16-cifar": ModelSpec(lambda c, k, hw: VGG16Cifar(c, k), (3, 32, 32), 10, (32, 32)),
    "wrn16-8": ModelSpec(lambda c, k, hw: WideResNet(16, 8, c, k), (3, 32, 32), 10, (32, 32)),
    "vit-mini": ModelSpec(lambda c, k, hw: ViT(hw, 4, 64, 4, 4, 128, c, k), (3, 32, 32), 10,
                          (32, 32)),
    "vit-b16": ModelSpec(lambda c, k, hw: ViT(hw, 16, 768, 12, 12, 3072, c, k), (3, 224, 224),
                         1000, (224, 224)),
}


def model_names() -> list[str]:
    return sorted(MODELS)


def get_spec(name: str) -> ModelSpec:
    spec = MODELS.get(name)
    if spec is None:
        raise ConfigError("--model", None,
                          f"unknown model {name!r}; known: {', '.join(model_names())}")
    return spec


def build_model(name: str, in_channels: int | None = None, num_classes: int | None = None,
                input_hw: tuple[int, int] | None = None) -> nn.Module:
    """A freshly initialised model (uses torch's global RNG: seed it first). Defaults are the
    layer table's input shape and number of classes."""
    spec = get_spec(name)
    c, h, w = spec.input_shape
    return spec.build(in_channels or c, num_classes or spec.num_classes, input_hw or (h, w))
