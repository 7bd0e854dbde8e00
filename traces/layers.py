"""Layer geometry: the one description of a conv2d, linear or matmul layer that every package
shares.

A ``Layer`` holds geometry only (no tensors, no torch). A linear layer is described with the same
fields as a 1×1 convolution: ``kernel`` (1, 1), ``stride`` (1, 1), no padding, and ``input_hw`` =
(tokens, 1), where ``tokens`` is the number of rows each sample contributes (1 for an MLP, 197 for
ViT-B/16's encoder). Tensor shapes of the operands that the three training GEMMs multiply:

============  =============================  =========================
operand       conv2d                          linear
============  =============================  =========================
``filter``    (Cout, Cin/groups, kh, kw)      (out, in)
``ifmap``     (N, Cin, H, W)                  (N, tokens, in)
``grad_out``  (N, Cout, Ho, Wo)               (N, tokens, out)
============  =============================  =========================

A ``matmul`` layer is a product of two activations with no weight (attention's Q·Kᵀ and
softmax·V), batched over ``heads`` per sample: C[n, h] = A[n, h] · B[n, h], A (M×K), B (K×N).
It reuses the fields of a linear layer, ``in_channels`` = K, ``out_channels`` = N and
``input_hw`` = (M, 1), and the roles: ``ifmap`` is A (N, heads, M, K), ``filter`` is B
(N, heads, K, N) and ``grad_out`` is dC (N, heads, M, N), so that ``bwd_input`` (dA = dC·Bᵀ)
and ``bwd_weight`` (dB = Aᵀ·dC) are the gradients of the two operands.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from common.errors import InputError

KINDS = ("conv2d", "linear", "matmul")


def _pair(value: Any, source: str | None, fld: str) -> tuple[int, int]:
    if isinstance(value, bool):
        raise InputError(source, fld, f"expected an integer or a pair of integers, got {value!r}")
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return (int(value[0]), int(value[1]))
    raise InputError(source, fld, f"expected an integer or a pair of integers, got {value!r}")


@dataclass(frozen=True)
class Layer:
    """Geometry of one conv2d, linear or matmul layer (sizes in elements)."""

    name: str
    kind: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    input_hw: tuple[int, int] = (1, 1)
    bias: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    #: independent products per sample of a ``matmul`` layer (attention heads); 1 otherwise
    heads: int = 1

    def __post_init__(self) -> None:
        # accept a bare int for a square pair; anything else is left for checked() to reject
        for fld in ("kernel", "stride", "padding", "dilation", "input_hw"):
            v = getattr(self, fld)
            if isinstance(v, int) and not isinstance(v, bool):
                object.__setattr__(self, fld, (v, v))
            elif isinstance(v, list) and len(v) == 2:
                object.__setattr__(self, fld, tuple(v))

    # ---- construction -------------------------------------------------------------------------
    @staticmethod
    def conv(
        name: str,
        cin: int,
        cout: int,
        k: int | tuple[int, int],
        hw: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        groups: int = 1,
        dilation: int | tuple[int, int] = 1,
        bias: bool = False,
    ) -> Layer:
        """A conv2d layer; ``hw`` is the input height × width (before padding)."""
        return Layer(
            name=name,
            kind="conv2d",
            in_channels=cin,
            out_channels=cout,
            kernel=_pair(k, None, "kernel"),
            stride=_pair(stride, None, "stride"),
            padding=_pair(padding, None, "padding"),
            dilation=_pair(dilation, None, "dilation"),
            groups=groups,
            input_hw=_pair(hw, None, "input_hw"),
            bias=bias,
        ).checked()

    @staticmethod
    def linear(name: str, fin: int, fout: int, tokens: int = 1, bias: bool = True) -> Layer:
        """A linear layer applied to ``tokens`` rows per sample."""
        return Layer(
            name=name,
            kind="linear",
            in_channels=fin,
            out_channels=fout,
            input_hw=(tokens, 1),
            bias=bias,
        ).checked()

    @staticmethod
    def matmul(name: str, m: int, k: int, n: int, heads: int = 1) -> Layer:
        """A product of two activations, A (m×k) · B (k×n), ``heads`` of them per sample."""
        return Layer(name=name, kind="matmul", in_channels=k, out_channels=n,
                     input_hw=(m, 1), heads=heads).checked()

    def checked(self, source: str | None = None) -> Layer:
        """Return self after checking every field; raise ``InputError`` naming the bad one."""
        where = f"layer {self.name!r}" if self.name else "layer"
        src = f"{source}: {where}" if source else where
        if not isinstance(self.name, str) or not self.name:
            raise InputError(source, "name", "expected a non-empty string")
        if self.kind not in KINDS:
            raise InputError(src, "kind", f"expected one of {', '.join(KINDS)}, got {self.kind!r}")
        for fld in ("in_channels", "out_channels", "groups", "heads"):
            v = getattr(self, fld)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(src, fld, f"expected a positive integer, got {v!r}")
        for fld, low in (("kernel", 1), ("stride", 1), ("dilation", 1), ("input_hw", 1),
                         ("padding", 0)):
            pair = _pair(getattr(self, fld), src, fld)
            if any(isinstance(v, bool) for v in pair):
                raise InputError(src, fld, f"expected integers, got {list(pair)}")
            if min(pair) < low:
                kind = "positive" if low else "non-negative"
                raise InputError(src, fld, f"expected {kind} integers, got {list(pair)}")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise InputError(
                src, "groups",
                f"groups={self.groups} must divide in_channels={self.in_channels} and "
                f"out_channels={self.out_channels}",
            )
        if self.kind != "matmul" and self.heads != 1:
            raise InputError(src, "heads", f"only a matmul layer has heads, got {self.heads}")
        if self.kind == "matmul" and self.bias:
            raise InputError(src, "bias", "a matmul layer has no bias")
        if self.kind in ("linear", "matmul"):
            if (self.kernel, self.stride, self.padding, self.dilation, self.groups) != (
                (1, 1), (1, 1), (0, 0), (1, 1), 1
            ) or self.input_hw[1] != 1:
                raise InputError(
                    src, "kind",
                    f"a {self.kind} layer takes kernel 1, stride 1, padding 0, dilation 1, "
                    "groups 1 and input_hw [tokens, 1]",
                )
        ho, wo = self.out_hw_unchecked()
        if ho < 1 or wo < 1:
            raise InputError(
                src, "input_hw",
                f"input {list(self.input_hw)} with kernel {list(self.kernel)}, padding "
                f"{list(self.padding)}, dilation {list(self.dilation)} gives an empty output",
            )
        return self

    # ---- derived sizes ------------------------------------------------------------------------
    def out_hw_unchecked(self) -> tuple[int, int]:
        out = []
        for i in range(2):
            span = self.dilation[i] * (self.kernel[i] - 1) + 1
            out.append((self.input_hw[i] + 2 * self.padding[i] - span) // self.stride[i] + 1)
        return (out[0], out[1])

    @property
    def out_hw(self) -> tuple[int, int]:
        """Output height × width (PyTorch's formula, floor division)."""
        return self.out_hw_unchecked()

    @property
    def tokens(self) -> int:
        """Rows per sample of a linear layer (``input_hw[0]``)."""
        return self.input_hw[0] * self.input_hw[1]

    @property
    def fan_in(self) -> int:
        """Inputs that feed one output: Cin/groups · kh · kw."""
        return (self.in_channels // self.groups) * self.kernel[0] * self.kernel[1]

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """The weight's shape; () for a matmul layer, which has none."""
        if self.kind == "matmul":
            return ()
        if self.kind == "linear":
            return (self.out_channels, self.in_channels)
        return (self.out_channels, self.in_channels // self.groups, *self.kernel)

    @property
    def weight_numel(self) -> int:
        return math.prod(self.weight_shape) if self.weight_shape else 0

    @property
    def params(self) -> int:
        """Weights plus bias."""
        return self.weight_numel + (self.out_channels if self.bias else 0)

    def ifmap_shape(self, batch: int) -> tuple[int, ...]:
        if self.kind == "matmul":
            return (batch, self.heads, self.tokens, self.in_channels)
        if self.kind == "linear":
            return (batch, self.tokens, self.in_channels)
        return (batch, self.in_channels, *self.input_hw)

    def grad_out_shape(self, batch: int) -> tuple[int, ...]:
        if self.kind == "matmul":
            return (batch, self.heads, self.tokens, self.out_channels)
        if self.kind == "linear":
            return (batch, self.tokens, self.out_channels)
        return (batch, self.out_channels, *self.out_hw)

    def operand_shape(self, role: str, batch: int) -> tuple[int, ...]:
        """Shape of an operand role (``filter``/``grad_w``, ``ifmap``/``grad_in``, ``grad_out``/
        ``ofmap``) for a batch of ``batch`` samples. A matmul layer's ``filter`` is its second
        activation B (batch, heads, K, N)."""
        if role in ("filter", "grad_w") and self.kind == "matmul":
            return (batch, self.heads, self.in_channels, self.out_channels)
        if role in ("filter", "grad_w"):
            return self.weight_shape
        if role in ("ifmap", "grad_in"):
            return self.ifmap_shape(batch)
        if role in ("grad_out", "ofmap"):
            return self.grad_out_shape(batch)
        raise KeyError(role)

    def macs(self, batch: int) -> int:
        """Multiply-accumulates of the forward GEMM for ``batch`` samples."""
        ho, wo = self.out_hw
        rows = batch * self.heads * (ho * wo if self.kind == "conv2d" else self.tokens)
        return rows * self.out_channels * self.fan_in

    # ---- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("kernel", "stride", "padding", "dilation", "input_hw"):
            d[k] = list(d[k])
        if not d["extra"]:
            del d["extra"]
        if self.kind != "matmul":  # the layer entries of version 1, unchanged
            del d["heads"]
        return d

    @staticmethod
    def from_dict(d: Any, source: str | None = None, where: str = "layer") -> Layer:
        """Build a checked ``Layer`` from a manifest entry; errors name ``source`` and the key."""
        if not isinstance(d, dict):
            raise InputError(source, where, f"expected an object, got {type(d).__name__}")
        required = ("name", "kind", "in_channels", "out_channels")
        for k in required:
            if k not in d:
                raise InputError(source, f"{where}.{k}", "missing")
        known = {f for f in Layer.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(source, f"{where}.{unknown[0]}", "unknown key")
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k in ("kernel", "stride", "padding", "dilation", "input_hw"):
                kw[k] = _pair(v, source, f"{where}.{k}")
            elif k == "bias":
                if not isinstance(v, bool):
                    raise InputError(source, f"{where}.bias", f"expected true/false, got {v!r}")
                kw[k] = v
            elif k == "extra":
                if not isinstance(v, dict):
                    raise InputError(source, f"{where}.extra", "expected an object")
                kw[k] = v
            else:
                kw[k] = v
        layer = Layer(**kw).checked(f"{source}: {where}" if source else where)
        if "scalesim_ifmap_hw" in layer.extra:
            _check_scalesim_hw(layer, layer.extra["scalesim_ifmap_hw"], source,
                               f"{where}.extra.scalesim_ifmap_hw")
        return layer


def _check_scalesim_hw(layer: Layer, value: Any, source: str | None, fld: str) -> None:
    """SCALE-Sim's own IFMAP size of a topology conv whose input was extended so that floor
    division gives SCALE-Sim's output size: [H, W], the filter fits, at most the stored size."""
    pair = (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value))
    if not pair or layer.kind != "conv2d" or not all(
            layer.kernel[i] <= value[i] <= layer.input_hw[i] for i in range(2)):
        raise InputError(source, fld, f"expected [H, W] of a conv layer with kernel "
                                      f"{list(layer.kernel)} <= [H, W] <= input_hw "
                                      f"{list(layer.input_hw)}, got {value!r}")


def total_params(layers: Iterable[Layer]) -> int:
    return sum(layer.params for layer in layers)
