"""Built-in layer tables of well-known models (geometry only, no torch).

Each table lists every conv2d and linear layer in forward (execution) order, named by its PyTorch
module path, with the input height × width it sees at the model's standard input size. Parameters
outside those layers (BatchNorm, LayerNorm, embeddings) are counted by the builder as it adds the
modules, so ``ModelTable.params`` matches the real model's parameter count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from common.errors import ConfigError
from traces.layers import Layer

Shape = tuple[int, tuple[int, int]]  # (channels, (height, width)) of an activation


@dataclass(frozen=True)
class ModelTable:
    """The conv2d/linear layers of one model plus the count of its other parameters."""

    name: str
    layers: tuple[Layer, ...]
    input_shape: tuple[int, int, int]
    num_classes: int
    other_params: int

    @property
    def params(self) -> int:
        """All trainable parameters: conv/linear weights and biases plus ``other_params``."""
        return sum(layer.params for layer in self.layers) + self.other_params


class _Net:
    """Tracks the current activation shape while a model's layers are appended in forward order."""

    def __init__(self, c: int, h: int, w: int) -> None:
        self.input_shape = (c, h, w)
        self.c = c
        self.hw = (h, w)
        self.layers: list[Layer] = []
        self.other = 0

    @property
    def shape(self) -> Shape:
        return (self.c, self.hw)

    def conv(self, name: str, cout: int, k: int, stride: int = 1, padding: int = 0,
             groups: int = 1, bias: bool = False, bn: bool = False) -> None:
        """Append a conv2d on the current activation; ``bn`` adds a BatchNorm2d after it."""
        layer = Layer.conv(name, self.c, cout, k, self.hw, stride, padding, groups, bias=bias)
        self.layers.append(layer)
        self.c, self.hw = cout, layer.out_hw
        if bn:
            self.bn()

    def bn(self) -> None:
        """A BatchNorm over the current channels (weight + bias)."""
        self.other += 2 * self.c

    def norm(self) -> None:
        """A LayerNorm over the current features (weight + bias)."""
        self.other += 2 * self.c

    def pool(self, k: int, stride: int | None = None, padding: int = 0) -> None:
        """Max/avg pooling (floor mode, as PyTorch's default)."""
        s = k if stride is None else stride
        self.hw = ((self.hw[0] + 2 * padding - k) // s + 1, (self.hw[1] + 2 * padding - k) // s + 1)

    def adaptive_pool(self, h: int, w: int) -> None:
        self.hw = (h, w)

    def flatten(self) -> None:
        self.c, self.hw = self.c * self.hw[0] * self.hw[1], (1, 1)

    def linear(self, name: str, fout: int, tokens: int = 1, bias: bool = True) -> None:
        """Append a linear layer on the current (flattened) features."""
        if self.hw != (1, 1):
            raise ValueError(f"{name}: linear on an unflattened {self.hw} activation")
        self.layers.append(Layer.linear(name, self.c, fout, tokens=tokens, bias=bias))
        self.c = fout

    def shortcut(self, name: str, src: Shape, bn: bool = True) -> None:
        """A 1×1 projection of the block input ``src`` onto the current (main-path) shape."""
        (cin, hw), (cout, out_hw) = src, self.shape
        stride = hw[0] // out_hw[0]
        layer = Layer.conv(name, cin, cout, 1, hw, stride=stride)
        if layer.out_hw != out_hw:
            raise ValueError(f"{name}: shortcut gives {layer.out_hw}, main path {out_hw}")
        self.layers.append(layer)
        if bn:
            self.other += 2 * cout

    def table(self, name: str, num_classes: int) -> ModelTable:
        if self.c != num_classes:
            raise ValueError(f"{name}: ends with {self.c} outputs, expected {num_classes}")
        return ModelTable(name, tuple(self.layers), self.input_shape, num_classes, self.other)


# ---- MLPs and LeNet ---------------------------------------------------------------------------
def _mlp3() -> ModelTable:
    """LeNet-300-100 on flattened 28×28 MNIST."""
    net = _Net(1, 28, 28)
    net.flatten()
    for i, width in enumerate((300, 100, 10), start=1):
        net.linear(f"fc{i}", width)
    return net.table("mlp3", 10)


def _lenet5() -> ModelTable:
    """LeNet-5 on 1×28×28 MNIST (first conv padded to keep 28×28)."""
    net = _Net(1, 28, 28)
    net.conv("conv1", 6, 5, padding=2, bias=True)
    net.pool(2)
    net.conv("conv2", 16, 5, bias=True)
    net.pool(2)
    net.flatten()
    for i, width in enumerate((120, 84, 10), start=1):
        net.linear(f"fc{i}", width)
    return net.table("lenet5", 10)


# ---- ResNets ----------------------------------------------------------------------------------
def _basic_block(net: _Net, name: str, planes: int, stride: int, project: bool) -> None:
    """Two 3×3 convs; a 1×1 ``downsample`` projection when the shape changes and ``project``."""
    src = net.shape
    net.conv(f"{name}.conv1", planes, 3, stride, 1, bn=True)
    net.conv(f"{name}.conv2", planes, 3, 1, 1, bn=True)
    if project and net.shape != src:
        net.shortcut(f"{name}.downsample.0", src)


def _bottleneck(net: _Net, name: str, planes: int, stride: int) -> None:
    """torchvision Bottleneck (stride on the 3×3 conv), expansion 4."""
    src = net.shape
    net.conv(f"{name}.conv1", planes, 1, bn=True)
    net.conv(f"{name}.conv2", planes, 3, stride, 1, bn=True)
    net.conv(f"{name}.conv3", planes * 4, 1, bn=True)
    if net.shape != src:
        net.shortcut(f"{name}.downsample.0", src)


def _resnet_imagenet(name: str, blocks: tuple[int, ...], bottleneck: bool) -> ModelTable:
    """torchvision ResNet at 3×224×224."""
    net = _Net(3, 224, 224)
    net.conv("conv1", 64, 7, 2, 3, bn=True)
    net.pool(3, 2, 1)
    for stage, (n, planes) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True), start=1):
        for i in range(n):
            stride = 2 if i == 0 and stage > 1 else 1
            if bottleneck:
                _bottleneck(net, f"layer{stage}.{i}", planes, stride)
            else:
                _basic_block(net, f"layer{stage}.{i}", planes, stride, project=True)
    net.adaptive_pool(1, 1)
    net.flatten()
    net.linear("fc", 1000)
    return net.table(name, 1000)


def _resnet_cifar(depth: int) -> ModelTable:
    """He et al. CIFAR ResNet-(6n+2): 16/32/64 channels, option-A (parameter-free) shortcuts."""
    n = (depth - 2) // 6
    net = _Net(3, 32, 32)
    net.conv("conv1", 16, 3, 1, 1, bn=True)
    for stage, planes in enumerate((16, 32, 64), start=1):
        for i in range(n):
            stride = 2 if i == 0 and stage > 1 else 1
            _basic_block(net, f"layer{stage}.{i}", planes, stride, project=False)
    net.adaptive_pool(1, 1)
    net.flatten()
    net.linear("fc", 10)
    return net.table(f"resnet{depth}", 10)


def _wrn(depth: int, width: int) -> ModelTable:
    """Wide-ResNet-depth-width for CIFAR-10 (pre-activation blocks, 1×1 conv shortcuts)."""
    n = (depth - 4) // 6
    net = _Net(3, 32, 32)
    net.conv("conv1", 16, 3, 1, 1)
    for g, planes in enumerate((16 * width, 32 * width, 64 * width), start=1):
        for i in range(n):
            name = f"block{g}.layer.{i}"
            stride = 2 if i == 0 and g > 1 else 1
            net.bn()  # bn1 on the block input (pre-activation)
            src = net.shape
            net.conv(f"{name}.conv1", planes, 3, stride, 1, bn=True)
            net.conv(f"{name}.conv2", planes, 3, 1, 1)
            if net.shape != src:
                net.shortcut(f"{name}.convShortcut", src, bn=False)
    net.bn()
    net.pool(8)
    net.flatten()
    net.linear("fc", 10)
    return net.table(f"wrn{depth}-{width}", 10)


# ---- VGG --------------------------------------------------------------------------------------
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _vgg16_features(net: _Net, bn: bool) -> None:
    """VGG-16 ``features`` (3×3 convs with bias, 2×2 max-pools), named by Sequential index."""
    idx = 0
    for v in _VGG16:
        if v == "M":
            net.pool(2)
            idx += 1
        else:
            assert isinstance(v, int)
            net.conv(f"features.{idx}", v, 3, 1, 1, bias=True, bn=bn)
            idx += 3 if bn else 2  # conv, [bn,] relu


def _vgg16() -> ModelTable:
    """torchvision VGG-16 (no BN) at 3×224×224."""
    net = _Net(3, 224, 224)
    _vgg16_features(net, bn=False)
    net.adaptive_pool(7, 7)
    net.flatten()
    for idx, width in ((0, 4096), (3, 4096), (6, 1000)):
        net.linear(f"classifier.{idx}", width)
    return net.table("vgg16", 1000)


def _vgg16_cifar() -> ModelTable:
    """kuangliu VGG-16 for CIFAR-10: BN after each conv, one linear 512->10."""
    net = _Net(3, 32, 32)
    _vgg16_features(net, bn=True)
    net.flatten()
    net.linear("classifier", 10)
    return net.table("vgg16-cifar", 10)


# ---- MobileNet-V2 -----------------------------------------------------------------------------
def _mobilenetv2() -> ModelTable:
    """torchvision MobileNet-V2 (width 1.0) at 3×224×224."""
    settings = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))
    net = _Net(3, 224, 224)
    net.conv("features.0.0", 32, 3, 2, 1, bn=True)
    idx = 1
    for t, c, n, s in settings:
        for i in range(n):
            name, j = f"features.{idx}.conv", 0
            if t != 1:
                net.conv(f"{name}.0.0", net.c * t, 1, bn=True)
                j = 1
            net.conv(f"{name}.{j}.0", net.c, 3, s if i == 0 else 1, 1, groups=net.c, bn=True)
            net.conv(f"{name}.{j + 1}", c, 1, bn=True)
            idx += 1
    net.conv(f"features.{idx}.0", 1280, 1, bn=True)
    net.adaptive_pool(1, 1)
    net.flatten()
    net.linear("classifier.1", 1000)
    return net.table("mobilenetv2", 1000)


# ---- ViT --------------------------------------------------------------------------------------
def _vit_b16() -> ModelTable:
    """torchvision ViT-B/16 at 3×224×224: 12 encoder blocks of width 768, MLP 3072."""
    dim, mlp, depth = 768, 3072, 12
    net = _Net(3, 224, 224)
    net.conv("conv_proj", dim, 16, 16, bias=True)
    tokens = net.hw[0] * net.hw[1] + 1  # patches + class token
    net.hw = (1, 1)  # from here on, features of one token
    net.other += dim + tokens * dim  # class_token, encoder.pos_embedding
    for i in range(depth):
        name = f"encoder.layers.encoder_layer_{i}"
        net.norm()  # ln_1
        net.linear(f"{name}.self_attention.in_proj", 3 * dim, tokens=tokens)
        net.c = dim  # attention: softmax(QK^T)V maps q, k, v (3·dim) to dim
        net.linear(f"{name}.self_attention.out_proj", dim, tokens=tokens)
        net.norm()  # ln_2
        net.linear(f"{name}.mlp.0", mlp, tokens=tokens)
        net.linear(f"{name}.mlp.3", dim, tokens=tokens)
    net.norm()  # encoder.ln
    net.linear("heads.head", 1000)  # on the class token only
    return net.table("vit-b16", 1000)


_BUILDERS: dict[str, Callable[[], ModelTable]] = {
    "mlp3": _mlp3,
    "lenet5": _lenet5,
    "resnet18": lambda: _resnet_imagenet("resnet18", (2, 2, 2, 2), bottleneck=False),
    "resnet50": lambda: _resnet_imagenet("resnet50", (3, 4, 6, 3), bottleneck=True),
    "resnet20": lambda: _resnet_cifar(20),
    "resnet32": lambda: _resnet_cifar(32),
    "resnet56": lambda: _resnet_cifar(56),
    "vgg16": _vgg16,
    "vgg16-cifar": _vgg16_cifar,
    "wrn16-8": lambda: _wrn(16, 8),
    "mobilenetv2": _mobilenetv2,
    "vit-b16": _vit_b16,
}


def model_names() -> list[str]:
    """Names of the built-in models, sorted."""
    return sorted(_BUILDERS)


def get_model(name: str) -> ModelTable:
    """The layer table of a built-in model; an unknown name raises ``ConfigError``."""
    builder = _BUILDERS.get(name.lower()) if isinstance(name, str) else None
    if builder is None:
        known = ", ".join(model_names())
        raise ConfigError(None, "model", f"unknown model {name!r}; known: {known}")
    return builder()
