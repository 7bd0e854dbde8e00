"""The one place where masks are applied: an autograd function for conv2d and linear.

A sparsity method *decides* masks and puts them in ``layer.masks``, keyed by (phase, role) as in
the trace format:

=====================  =====================================================================
key                    operand it masks
=====================  =====================================================================
(fwd, filter)          W in Z = W·A
(fwd, ifmap)           A in Z = W·A
(bwd_input, filter)    W in dA = Wᵀ·dZ (SWAT, RigL, static: the same mask as the forward)
(bwd_input, grad_out)  dZ in dA = Wᵀ·dZ
(bwd_weight, ifmap)    the A stashed for dW = dZ·Aᵀ (SWAT's A~)
(bwd_weight, grad_out) dZ in dW = dZ·Aᵀ
(bwd_weight, grad_w)   the result dW: only the masked entries are computed (static, RigL)
=====================  =====================================================================

A mask is ``None`` (dense), a bool tensor broadcastable to the operand, or a callable that takes
the operand and returns one (a threshold rule that needs the real activation). ``SparseGemm``
applies them in forward and backward and, when ``layer.tap`` is set (a recording step), hands
every operand it actually multiplied to the recorder. Nothing here decides anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Mask = torch.Tensor | Callable[[torch.Tensor], torch.Tensor | None] | None
Key = tuple[str, str]

FWD_FILTER = ("fwd", "filter")
FWD_IFMAP = ("fwd", "ifmap")
BWI_FILTER = ("bwd_input", "filter")
BWI_GRAD_OUT = ("bwd_input", "grad_out")
BWW_IFMAP = ("bwd_weight", "ifmap")
BWW_GRAD_OUT = ("bwd_weight", "grad_out")
GRAD_W = ("bwd_weight", "grad_w")
KEYS = (FWD_FILTER, FWD_IFMAP, BWI_FILTER, BWI_GRAD_OUT, BWW_IFMAP, BWW_GRAD_OUT, GRAD_W)


def _realize(mask: Mask, t: torch.Tensor) -> torch.Tensor | None:
    return mask(t) if callable(mask) else mask


def _apply(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return t if mask is None else t * mask


class SparseGemm(torch.autograd.Function):
    """conv2d / linear with a mask on each operand of each of the three training GEMMs."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                layer: SparseConv2d | SparseLinear) -> torch.Tensor:
        masks, tap = layer.masks, layer.tap
        realized: dict[int, torch.Tensor | None] = {}  # one evaluation per mask object

        def masked(key: Key, t: torch.Tensor) -> torch.Tensor:
            m = masks.get(key)
            if m is None:
                return t
            if id(m) not in realized:
                realized[id(m)] = _realize(m, t)
            return _apply(t, realized[id(m)])

        w_f = masked(FWD_FILTER, weight)
        x_f = masked(FWD_IFMAP, x)
        z = layer.gemm(x_f, w_f, bias)
        w_b = masked(BWI_FILTER, weight)
        x_b = masked(BWW_IFMAP, x)  # the stash: A~ for SWAT
        grad_w = masks.get(GRAD_W)
        ctx.grad_w = _realize(grad_w, weight) if grad_w is not None else None
        ctx.layer = layer
        # under autocast the GEMMs above ran in its dtype: the backward's GEMMs do too
        dev = x.device.type
        ctx.amp = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
        ctx.save_for_backward(x_b, w_b)
        # a recording step: the tap sees the operands and says which step they belong to;
        # the backward reports to the same step, whenever it runs
        ctx.tap = ctx.token = None
        if tap is not None:
            ctx.token = tap.forward(layer, x, w_f, x_f, w_b, x_b, ctx.grad_w,
                                    ctx.needs_input_grad[:3])
            ctx.tap = tap if ctx.token is not None else None
        return z

    @staticmethod
    def backward(ctx: Any, dz: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x_b, w_b = ctx.saved_tensors
        layer = ctx.layer
        masks = layer.masks
        m_i, m_w = masks.get(BWI_GRAD_OUT), masks.get(BWW_GRAD_OUT)
        dz_i = _apply(dz, _realize(m_i, dz))
        dz_w = dz_i if m_w is m_i else _apply(dz, _realize(m_w, dz))
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        amp = ctx.amp
        if amp is not None:  # as autocast's own backward: operands cast, results cast back
            x_dtype, w_dtype = x_b.dtype, w_b.dtype
            x_b, w_b = x_b.to(amp), w_b.to(amp)
        dx, dw, db = layer.gemm_backward(dz, dz_i, dz_w, x_b, w_b, need_x, need_w, need_b)
        if amp is not None:
            dx = None if dx is None else dx.to(x_dtype)
            dw = None if dw is None else dw.to(w_dtype)
            db = None if db is None else db.to(layer.bias.dtype)
        if dw is not None and ctx.grad_w is not None:
            dw = dw * ctx.grad_w
        if ctx.tap is not None:
            ctx.tap.backward(ctx.token, layer, dz_i, dz_w, need_x, need_w)
        return dx, dw, db, None


class _Sparse:
    """What SparseConv2d and SparseLinear add to their torch parent: masks and a tap."""

    masks: dict[Key, Mask]
    tap: Any

    def _init_sparse(self) -> None:
        self.masks = {}
        self.tap = None

    def __getstate__(self) -> dict[str, Any]:
        """A copy or a pickle of a twin (a model snapshot taken while recording) holds no
        recorder: it does not record."""
        state = self.__dict__.copy()
        state["tap"] = None
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return SparseGemm.apply(x, self.weight, self.bias, self)
        # inference (evaluation): only the forward operands, no stash, nothing recorded
        w, m = self.weight, self.masks
        w = _apply(w, _realize(m.get(FWD_FILTER), w))
        x = _apply(x, _realize(m.get(FWD_IFMAP), x))
        return self.gemm(x, w, self.bias)


class SparseConv2d(_Sparse, nn.Conv2d):
    """``nn.Conv2d`` (zero padding) whose GEMMs go through ``SparseGemm``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_sparse()
        problem = _unsupported(self)
        if problem:
            raise ValueError(f"SparseConv2d supports numeric zero padding only, got {problem}")

    def gemm(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def gemm_backward(self, dz: torch.Tensor, dz_i: torch.Tensor, dz_w: torch.Tensor,
                      x: torch.Tensor, w: torch.Tensor, need_x: bool, need_w: bool, need_b: bool
                      ) -> tuple[torch.Tensor | None, ...]:
        """dx from dz_i, dW from dz_w, the bias gradient from the unmasked dz."""
        args = (self.stride, self.padding, self.dilation, False, [0, 0], self.groups)
        bias = [self.out_channels]
        if dz_i is dz_w is dz:  # one call, as autograd's own conv backward: the same bits
            return tuple(torch.ops.aten.convolution_backward(
                dz, x, w, bias, *args, [need_x, need_w, need_b]))
        if dz_i is dz_w:
            dx, dw, _ = torch.ops.aten.convolution_backward(
                dz_i, x, w, None, *args, [need_x, need_w, False])
        else:
            dx = dw = None
            if need_x:
                dx = torch.ops.aten.convolution_backward(dz_i, x, w, None, *args,
                                                         [True, False, False])[0]
            if need_w:
                dw = torch.ops.aten.convolution_backward(dz_w, x, w, None, *args,
                                                         [False, True, False])[1]
        db = None
        if need_b:
            db = torch.ops.aten.convolution_backward(dz, x, w, bias, *args,
                                                     [False, False, True])[2]
        return dx, dw, db


class SparseLinear(_Sparse, nn.Linear):
    """``nn.Linear`` whose GEMMs go through ``SparseGemm``; inputs (N, in) or (N, tokens, in)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_sparse()

    @staticmethod
    def gemm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, w, b)

    @staticmethod
    def gemm_backward(dz: torch.Tensor, dz_i: torch.Tensor, dz_w: torch.Tensor, x: torch.Tensor,
                      w: torch.Tensor, need_x: bool, need_w: bool, need_b: bool
                      ) -> tuple[torch.Tensor | None, ...]:
        """dx from dz_i, dW from dz_w, the bias gradient from the unmasked dz."""
        dx = dz_i.matmul(w) if need_x else None
        dw = None
        if need_w:
            dw = dz_w.reshape(-1, dz_w.shape[-1]).t().mm(x.reshape(-1, x.shape[-1]))
        db = dz.reshape(-1, dz.shape[-1]).sum(0) if need_b else None
        return dx, dw, db


SparseModule = SparseConv2d | SparseLinear


def _unsupported(m: nn.Module) -> str | None:
    """What keeps a plain conv from having a twin, or None."""
    if isinstance(m, nn.Conv2d):
        if isinstance(m.padding, str):
            return f"padding={m.padding!r}"
        if m.padding_mode != "zeros":
            return f"padding_mode={m.padding_mode!r}"
    return None


def _convert(m: nn.Module) -> nn.Module:
    """A sparse twin of a plain conv/linear that takes over its Parameter objects (an optimizer
    built on the old module keeps working)."""
    if isinstance(m, nn.Conv2d):
        new: nn.Module = SparseConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride,
                                      m.padding, m.dilation, m.groups, m.bias is not None,
                                      m.padding_mode, device="meta")
    else:
        new = SparseLinear(m.in_features, m.out_features, m.bias is not None, device="meta")
    new.weight, new.bias = m.weight, m.bias
    new.train(m.training)
    return new


def _plain_slots(model: nn.Module, prefix: str = "", seen: set[int] | None = None
                 ) -> list[tuple[nn.Module, str, str, nn.Module]]:
    """(parent, slot, module path, plain conv/linear) of every slot under ``model``, a module
    shared by several slots once per slot (``named_children`` would list it once)."""
    seen = set() if seen is None else seen
    out = []
    for slot, child in model._modules.items():
        path = f"{prefix}{slot}"
        if child is None or isinstance(child, SparseModule):
            continue
        if type(child) in (nn.Conv2d, nn.Linear):  # exact types: a subclass may override forward
            out.append((model, slot, path, child))
        elif id(child) not in seen:
            seen.add(id(child))
            out += _plain_slots(child, f"{path}.", seen)
    return out


def sparsify(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Conv2d`` and ``nn.Linear`` of ``model`` in place by its sparse twin
    (same name, same parameters; with no masks it computes the same bits). A module in several
    slots gets one twin in all of them. Nothing is replaced when some conv has no twin (string
    or non-zero padding): the ValueError names it. Returns ``model``."""
    if type(model) in (nn.Conv2d, nn.Linear):
        raise ValueError(f"a bare {type(model).__name__} cannot be swapped for its sparse twin "
                         "in place; wrap it, e.g. nn.Sequential(layer)")
    slots = _plain_slots(model)
    for _, _, path, child in slots:
        problem = _unsupported(child)
        if problem:
            raise ValueError(f"module {path!r}: {problem}; the sparse twins support numeric "
                             "zero padding only")
    twins: dict[int, nn.Module] = {}
    for parent, slot, _, child in slots:
        if id(child) not in twins:
            twins[id(child)] = _convert(child)
        setattr(parent, slot, twins[id(child)])
    return model


def sparse_layers(model: nn.Module) -> list[tuple[str, SparseModule]]:
    """(module path, module) of every sparse conv/linear, in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, SparseModule)]
