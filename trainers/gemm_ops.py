"""The matrix products of torch functions, in the trace's terms.

``recorder.Recorder`` sees the torch functions a training forward calls (a
``TorchFunctionMode``); for the ones that multiply matrices this module says which GEMMs they
are: the layer geometry (``traces.layers.Layer``), the operands as multiplied, in the layer's
operand shapes, and how to turn the gradient of the result into the ``grad_out`` operand.

=====================================  =================================================
torch function                         recorded as
=====================================  =================================================
``F.linear``, ``addmm``, ``mm``,       ``linear`` (the weight is B, transposed to
``matmul``/``@`` with a 2-D right      (out, in)): ``nn.Linear`` and its subclasses,
operand, ``einsum`` without batch      transformers' ``Conv1D``, MultiheadAttention's
indices                                packed ``in_proj``
``F.conv1d``, ``F.conv2d``             ``conv2d`` (a 1-D conv as a 1×L image)
``matmul``/``@``, ``bmm``,             ``matmul``: two activations, batched over
``baddbmm``, ``einsum`` with batch     ``heads`` per sample (Q·Kᵀ, softmax·V)
indices
``F.scaled_dot_product_attention``     two ``matmul`` layers, ``<name>.qk`` (Q·Kᵀ) and
                                       ``<name>.av`` (softmax·V)
=====================================  =================================================

A ``Product`` holds boolean masks only (``t != 0``), taken when the function runs; nothing here
changes a value the model computes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from traces.layers import Layer

#: gradient of the result → ``grad_out`` mask in the layer's shape
GradFn = Callable[[torch.Tensor], torch.Tensor]


class Unrecordable(Exception):
    """A matrix product this module cannot put in the trace; the message says why."""


@dataclass
class Product:
    """One GEMM of a forward: its layer, operand masks and which backward GEMMs will run."""

    suffix: str  # appended to the layer name ("" for a layer with a weight)
    layer: Layer
    ifmap: torch.Tensor  # mask, layer-shaped (A of a matmul)
    filter: torch.Tensor  # mask, layer-shaped (B of a matmul)
    need_x: bool  # bwd_input runs (the first operand needs a gradient)
    need_w: bool  # bwd_weight runs
    grad: GradFn | None  # None: ``recorder`` fills grad_out from a shared hook (SDPA)


def nz(t: torch.Tensor) -> torch.Tensor:
    """The nonzero mask of ``t`` on the CPU."""
    return (t.detach() != 0).cpu()


def _rows(shape: torch.Size | tuple[int, ...], batch: int, what: str) -> int:
    rows = math.prod(shape[:-1])
    if batch < 1 or rows % batch:
        raise Unrecordable(f"{what}: {rows} rows do not split over the batch of {batch}")
    return rows // batch


def linear(
    x: torch.Tensor, w: torch.Tensor, batch: int, w_is_kn: bool = False, bias: bool = False
) -> Product:
    """x (..., in) times a weight w, (out, in) as ``F.linear`` takes it or (in, out)
    (``w_is_kn``: ``addmm``, ``mm``, ``x @ w``)."""
    if w.dim() != 2:
        raise Unrecordable(f"weight of shape {tuple(w.shape)}")
    if x.dim() == 1:
        x = x.unsqueeze(0)
    fout, fin = (w.shape[1], w.shape[0]) if w_is_kn else tuple(w.shape)
    tokens = _rows(x.shape, batch, "linear")
    layer = Layer.linear("gemm", int(fin), int(fout), tokens=tokens, bias=bias)
    wm = nz(w.t() if w_is_kn else w)
    return Product(
        "",
        layer,
        nz(x).reshape(batch, tokens, fin),
        wm,
        x.requires_grad,
        w.requires_grad,
        lambda g: nz(g).reshape(batch, tokens, fout),
    )


def _same_padding(k: int, d: int) -> tuple[int, int]:
    total = d * (k - 1)
    return total // 2, total - total // 2


def conv(
    x: torch.Tensor,
    w: torch.Tensor,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: int,
    batch: int,
    dims: int,
    bias: bool = False,
) -> Product:
    """``F.conv1d``/``F.conv2d``; a 1-D conv is a conv2d over a 1×L image."""

    def tup(v: Any) -> tuple[int, ...]:
        return tuple(v) if isinstance(v, (tuple, list)) else (v,) * dims

    unbatched = x.dim() == dims + 1
    xs = x.unsqueeze(0) if unbatched else x
    if xs.shape[0] != batch:
        raise Unrecordable(
            f"conv on {xs.shape[0]} images, the model's batch is {batch} "
            "(frames or crops folded into the batch)"
        )
    k = tuple(w.shape[2:])
    s, d = tup(stride), tup(dilation)
    extra = [0] * dims  # one more zero after the input, where 'same' pads unevenly
    if isinstance(padding, str):
        if padding == "valid":
            p = (0,) * dims
        else:
            pads = [_same_padding(k[i], d[i]) for i in range(dims)]
            p = tuple(a for a, _ in pads)
            extra = [b - a for a, b in pads]
    else:
        p = tup(padding)
    xm = nz(xs)
    if any(extra):
        xm = F.pad(xm, [v for e in reversed(extra) for v in (0, e)])
    if dims == 1:
        xm, wm = xm.unsqueeze(2), nz(w).unsqueeze(2)
        k, s, p, d = (1, *k), (1, *s), (0, *p), (1, *d)
    else:
        wm = nz(w)
    layer = Layer.conv(
        "gemm",
        int(xm.shape[1]),
        int(w.shape[0]),
        k,
        tuple(xm.shape[2:]),
        s,
        p,
        groups,
        d,
        bias=bias,
    )
    shape = layer.grad_out_shape(batch)
    return Product(
        "", layer, xm, wm, x.requires_grad, w.requires_grad, lambda g: nz(g).reshape(shape)
    )


def batched(a: torch.Tensor, b: torch.Tensor, batch: int) -> Product:
    """``a @ b`` over broadcast batch dimensions: a ``matmul`` layer, or a ``linear`` one when
    ``b`` is one matrix (``x @ W``)."""
    if b.dim() <= 2:
        bb = b.unsqueeze(1) if b.dim() == 1 else b
        p = linear(a, bb, batch, w_is_kn=True)
        return p
    a2 = a.unsqueeze(0) if a.dim() == 1 else a
    m, k, n = a2.shape[-2], a2.shape[-1], b.shape[-1]
    lead = torch.broadcast_shapes(a2.shape[:-2], b.shape[:-2])
    prods = math.prod(lead)
    if prods % batch:
        raise Unrecordable(f"{prods} products do not split over the batch of {batch}")
    heads = prods // batch
    layer = Layer.matmul("gemm", int(m), int(k), int(n), heads=heads)
    am = nz(a2).expand(*lead, m, k).reshape(layer.ifmap_shape(batch))
    bm = nz(b).expand(*lead, k, n).reshape(layer.operand_shape("filter", batch))
    shape = layer.grad_out_shape(batch)
    return Product(
        "", layer, am, bm, a.requires_grad, b.requires_grad, lambda g: nz(g).reshape(shape)
    )


_EQ = re.compile(r"^([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]*)$")


def einsum(eq: str, a: torch.Tensor, b: torch.Tensor, batch: int) -> Product:
    """A two-operand ``einsum`` as a batched product: batch indices (in a, b and the result),
    contracted ones (in a and b only), and the free indices of each operand."""
    mt = _EQ.match(eq.replace(" ", ""))
    if mt is None:
        raise Unrecordable(f"einsum {eq!r} (ellipsis, or not two operands)")
    ia, ib, io = mt.groups()
    if len(set(ia)) != len(ia) or len(set(ib)) != len(ib) or any(c not in ia + ib for c in io):
        raise Unrecordable(f"einsum {eq!r} (repeated index)")
    bat = [c for c in io if c in ia and c in ib]
    red = [c for c in ia if c in ib and c not in io]
    fa = [c for c in ia if c not in ib]
    fb = [c for c in ib if c not in ia]
    if any(c not in io for c in fa + fb):
        raise Unrecordable(f"einsum {eq!r} (an index summed within one operand)")
    size = {c: a.shape[i] for i, c in enumerate(ia)} | {c: b.shape[i] for i, c in enumerate(ib)}
    m, k, n = (math.prod(size[c] for c in cs) for cs in (fa, red, fb))
    a3 = a.permute([ia.index(c) for c in bat + fa + red]).reshape(-1, m, k)
    b3 = b.permute([ib.index(c) for c in bat + red + fb]).reshape(-1, k, n)
    perm = [io.index(c) for c in bat + fa + fb]
    if not bat:
        p = linear(a3[0], b3[0], batch, w_is_kn=True)
        p.need_x, p.need_w = a.requires_grad, b.requires_grad
        shape = p.layer.grad_out_shape(batch)
        p.grad = lambda g: nz(g).permute(perm).reshape(shape)
        return p
    p = batched(a3, b3, batch)
    p.need_x, p.need_w = a.requires_grad, b.requires_grad
    shape = p.layer.grad_out_shape(batch)
    p.grad = lambda g: nz(g).permute(perm).reshape(shape)
    return p


def sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    attn_mask: torch.Tensor | None,
    is_causal: bool,
    scale: float | None,
    batch: int,
    dropout: bool,
) -> tuple[Product, Product, Callable[[torch.Tensor], tuple]]:
    """``F.scaled_dot_product_attention`` as its two products, Q·Kᵀ and P·V, with P =
    softmax(scale·Q·Kᵀ + mask) computed again here (the fused kernel keeps it inside), and the
    function that turns dO into (dS, dO) masks: dS = P ⊙ (dO·Vᵀ − rowsum(dO ⊙ O)). Dropout's
    zeros in P are not known outside the kernel (``dropout``: the caller warns)."""
    lq, e = q.shape[-2], q.shape[-1]
    ls, ev = k.shape[-2], v.shape[-1]
    with torch.no_grad():
        qf, kf, vf = q.detach(), k.detach(), v.detach()
        if kf.dim() >= 3 and qf.shape[-3] != kf.shape[-3]:  # grouped-query attention
            rep = qf.shape[-3] // kf.shape[-3]
            kf, vf = kf.repeat_interleave(rep, -3), vf.repeat_interleave(rep, -3)
        sc = 1.0 / math.sqrt(e) if scale is None else scale
        s = torch.matmul(qf.float(), kf.float().transpose(-2, -1)) * sc
        if is_causal:
            keep = torch.ones(lq, ls, dtype=torch.bool, device=s.device).tril()
            s = s.masked_fill(~keep, float("-inf"))
        if attn_mask is not None:
            s = (
                s.masked_fill(~attn_mask, float("-inf"))
                if attn_mask.dtype == torch.bool
                else s + attn_mask.float()
            )
        p = torch.softmax(s, -1).nan_to_num(0.0)
    lead = torch.broadcast_shapes(qf.shape[:-2], kf.shape[:-2])
    prods = math.prod(lead)
    if prods % batch:
        raise Unrecordable(f"attention over {prods} heads does not split over the batch of {batch}")
    heads = prods // batch
    qk = Layer.matmul("gemm", int(lq), int(e), int(ls), heads=heads)
    av = Layer.matmul("gemm", int(lq), int(ls), int(ev), heads=heads)
    pm = nz(p).reshape(av.ifmap_shape(batch))
    p1 = Product(
        ".qk",
        qk,
        nz(qf).expand(*lead, lq, e).reshape(qk.ifmap_shape(batch)),
        nz(kf.transpose(-2, -1)).expand(*lead, e, ls).reshape(qk.operand_shape("filter", batch)),
        q.requires_grad,
        k.requires_grad,
        None,
    )
    p2 = Product(
        ".av",
        av,
        pm,
        nz(vf).expand(*lead, ls, ev).reshape(av.operand_shape("filter", batch)),
        q.requires_grad or k.requires_grad,
        v.requires_grad,
        None,
    )
    o = out.detach()

    def grads(d_o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            g = d_o.detach().float()
            dp = torch.matmul(g, vf.float().transpose(-2, -1))
            ds = p * (dp - (g * o.float()).sum(-1, keepdim=True))
        return nz(ds).reshape(qk.grad_out_shape(batch)), nz(g).reshape(av.grad_out_shape(batch))

    return p1, p2, grads
