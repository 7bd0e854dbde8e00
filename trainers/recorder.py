"""Record real traces from a training run: ``with record(model, out_dir, every=N): train...``.

Every matrix product of a training step goes into the trace, with the masks of the operands it
really multiplied, in its three phases (``docs/design.md``, "The recorder"):

* the sparse twins of ``trainers.sparse_fn`` (the layers a sparsity method masks) hand their
  operands over where ``SparseGemm`` multiplies them (``tap``): W~ and A of the forward, W~
  and dZ of bwd_input, the stashed A~ and dZ of bwd_weight, and the mask of dW when only part
  of it is computed;
* every other product is seen at the torch-function level: on a recorded step a
  ``TorchFunctionMode`` watches the training forward and takes ``F.linear``, ``F.conv1d/2d``,
  ``matmul``/``@``, ``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``einsum`` and
  ``F.scaled_dot_product_attention`` with the tensors they are called with (a pruned or
  parametrized weight as multiplied, ``W_orig · mask``), and a gradient hook on the result
  gives dZ as the backward multiplies it (``trainers.gemm_ops``). ``torch.nn.functional``'s
  Python functions (``multi_head_attention_forward``) run their own code with the mode
  watching inside, so MultiheadAttention's packed ``in_proj`` and its attention products are
  seen too. A bwd GEMM is recorded as computed when its operand needs a gradient (the first
  layer's bwd_input too, when its input does), else listed as not computed.

What cannot be recorded (torch's recurrent kernels, a custom op, a product run with autograd
off inside the training forward) is named in one warning and listed in the manifest's
``coverage`` with its MACs (its forward MACs counted by torch's flop formulas, × 3).

A mask in the trace is the set of nonzeros of the operand as multiplied (natural ReLU zeros
included); an operand with no zero is marked dense.

Steps are the model's training forward passes (``model.training`` and grad enabled), counted from
``start``; steps ``start, start + every, ...`` are recorded. A step's backward reports to the
step of its forward, so eval passes, several forwards before one backward and activation
checkpointing's recompute (non-reentrant) keep each step's operands apart; a step is written
once its backward ended. The layer table is what the first forward pass shows: every product
that ran, in execution order, named by module path (``<module>.<op>`` for a product of two
activations, ``#1``, ``#2``... for a module's later calls), with the sizes it saw. Recording
reads tensors and never writes them, draws no random numbers, and changes no state of the model
or the optimizer: a run gives the same numbers with and without it. With a ``method``, each step
file holds the thresholds of that step in ``meta`` and the mask-update events that happened
since the previous recorded step (each with its ``step``); events after the last recorded step
are not written.

Step files are packed and written on a background thread (``traces.format.TraceWriter``), so the
training thread only pays for ``t != 0``. They are stored without deflate by default: compressing
near-random mask bits takes 7× the CPU time of storing them (ResNet-20, batch 128: 146 ms
against 21 ms per recorded step) for a 25 % smaller file.
"""

from __future__ import annotations

import math
import queue
import threading
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from traces.codec import GAPS_ZSTD
from traces.format import MANIFEST, PHASE_OPERANDS, Manifest, TraceWriter
from traces.layers import Layer
from trainers import gemm_ops as ops_
from trainers.sparse_fn import SparseModule, sparse_layers

_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def layer_geometry(name: str, m: SparseModule, x_shape: tuple[int, ...], batch: int) -> Layer:
    """The ``Layer`` of module ``m`` run on an input of shape ``x_shape`` in a batch of
    ``batch`` samples (a linear layer's tokens per sample: numel / (batch · in_features))."""
    bias = m.bias is not None
    if isinstance(m, nn.Conv2d):
        return Layer.conv(name, m.in_channels, m.out_channels, tuple(m.kernel_size),
                          tuple(x_shape[-2:]), tuple(m.stride), tuple(m.padding), m.groups,
                          tuple(m.dilation), bias=bias)
    rows = math.prod(x_shape) // m.in_features
    if rows % batch:
        raise ValueError(f"{name}: {rows} input rows do not split over a batch of {batch}")
    return Layer.linear(name, m.in_features, m.out_features, tokens=rows // batch, bias=bias)


def _nz(t: torch.Tensor) -> torch.Tensor:
    return (t != 0).cpu()


class _Step:
    """One recorded step: the operands of each layer, filled in by its forward and backward."""

    __slots__ = ("step", "ops", "meta", "pending", "skipped_dx", "skipped_dw", "ended")

    def __init__(self, step: int) -> None:
        self.step = step
        self.ops: dict[str, dict[tuple[str, str], torch.Tensor | None]] = {}
        self.meta: dict[str, Any] = {}
        self.pending: set[str] = set()  # layers whose backward has not run yet
        self.skipped_dx: list[str] = []
        self.skipped_dw: list[str] = []
        self.ended = False  # a callback at the end of the running backward is queued


def _in_backward() -> bool:
    """Whether autograd is running a backward pass on this thread (activation checkpointing
    recomputes forwards there)."""
    return torch._C._current_graph_task_id() != -1


class _Hook:
    """A forward hook of the recorder; a copy or a pickle of the model holds an inert one."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    @torch._dynamo.disable  # a compiled model runs the hooks as they are, not traced
    def __call__(self, *args: Any) -> None:
        if self.fn is not None:
            self.fn(*args)

    def __getstate__(self) -> dict[str, Any]:
        return {"fn": None}


class _GradHook:
    """The gradient hook on a recorded product's result: dZ as its backward multiplies it."""

    def __init__(self, rec: Recorder, st: _Step, named: list, grads: Any) -> None:
        self.rec, self.st, self.named, self.grads = rec, st, named, grads

    def __call__(self, g: torch.Tensor) -> None:
        masks = (self.grads(g) if self.grads is not None
                 else [p.grad(g) for _, p in self.named])
        for (name, p), m in zip(self.named, masks, strict=True):
            self.rec._got(self.st, name, m, m, p.need_x, p.need_w)


def _closed_macs(args: tuple[Any, ...], out: Any) -> int:
    """Forward MACs of a product read from its result and the contracted size of its first
    operand (a closed form for products ``gemm_ops`` could not read)."""
    ts = [a for a in args if isinstance(a, torch.Tensor)]
    if not isinstance(out, torch.Tensor) or not ts:
        return 0
    return out.numel() * (int(ts[0].shape[-1]) if ts[0].dim() else 1)


def _custom_namespace(func: Any) -> str | None:
    """The namespace of a ``torch.ops`` op outside torch's own, else None."""
    if not isinstance(func, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return None
    space = str(getattr(func, "_qualified_op_name", "")).split("::")[0]
    return None if space in ("aten", "prim", "prims", "") else space


def _sizes(layer: Layer) -> str:
    return (f"{layer.kind} {layer.in_channels}->{layer.out_channels} over "
            f"{list(layer.input_hw)}" + (f" x{layer.heads}" if layer.heads > 1 else ""))


def _false(*args: Any, **kwargs: Any) -> bool:
    return False


#: torch functions that are matrix products, by how ``_FnMode`` reads their arguments
_LINEAR = {F.linear}
_CONV = {F.conv1d: 1, F.conv2d: 2}
_MATMUL = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm,
           torch.Tensor.bmm}
_RMATMUL = {torch.Tensor.__rmatmul__}
_MM = {torch.mm, torch.Tensor.mm}
_ADDMM = {torch.addmm, torch.Tensor.addmm}
_BADDBMM = {torch.baddbmm, torch.Tensor.baddbmm}
_EINSUM = {torch.einsum}
_SDPA = {F.scaled_dot_product_attention}
_RNN = {torch.lstm: "lstm", torch.gru: "gru", torch.rnn_tanh: "rnn", torch.rnn_relu: "rnn"}
_SUFFIX = {"matmul": ".matmul", "__matmul__": ".matmul", "__rmatmul__": ".matmul",
           "bmm": ".bmm", "mm": ".mm", "addmm": ".addmm", "baddbmm": ".baddbmm",
           "einsum": ".einsum", "scaled_dot_product_attention": ".sdpa"}


def _fn_name(func: Any) -> str:
    """``torch.conv2d``, ``Tensor.matmul``, ``torch.nn.functional.linear``: how users call it."""
    name = getattr(func, "__name__", None) or str(func)
    qual = getattr(func, "__qualname__", "") or ""
    mod = getattr(func, "__module__", None) or ""
    if qual.startswith(("Tensor.", "TensorBase.")):
        return f"Tensor.{name}"
    if mod.startswith("torch.") and not mod.startswith("torch._"):
        return f"{mod}.{name}"
    return f"torch.{name}" if "." not in name else name


class _Count(TorchDispatchMode):
    """Forward MACs of the aten ops below a torch function (torch's flop formulas / 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.macs = 0

    def __torch_dispatch__(self, func: Any, types_: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.macs += int(formula(*args, **kwargs, out_val=out)) // 2
        return out


class _FnMode(TorchFunctionMode):
    """Watches the torch functions of a recorded training forward (``Recorder``): products are
    recorded, ``torch.nn.functional``'s Python functions run with the mode inside them, and on
    the first step every other function's GEMM MACs are counted (``_Count``)."""

    def __init__(self, rec: Recorder) -> None:
        super().__init__()
        self.rec = rec
        self.count = False  # count the MACs of other functions (the first step)
        self._opened: dict[Any, Any] = {}
        self._inside: set[Any] = set()  # functions running opened (a wrapper comes back)

    @torch._dynamo.disable  # a compiled model's functions are watched as they run
    def __torch_function__(self, func: Any, types_: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        rec = self.rec
        if func in _PRODUCTS:
            return rec._product(func, args, kwargs)
        if getattr(func, "__globals__", None) is F.__dict__ and func not in self._inside:
            self._inside.add(func)
            try:
                with self:  # its own code, the mode watching the functions it calls
                    return self._open(func)(*args, **kwargs)
            finally:
                self._inside.discard(func)
        if func in _RNN:
            rec._rnn(func, args)
        if not self.count:
            return func(*args, **kwargs)
        space = _custom_namespace(func)
        if space is not None:  # its kernel is out of sight: MACs from its sizes
            out = func(*args, **kwargs)
            rec._unrecorded(f"torch.ops.{space}.{getattr(func, '__name__', func)}",
                            _closed_macs(args, out), "a custom op, opaque to the recorder "
                            "(MACs estimated: output elements × the first input's last size)")
            return out
        counter = _Count()
        with counter:
            out = func(*args, **kwargs)
        if counter.macs:
            rec._unrecorded(_fn_name(func), counter.macs, "not a product the recorder reads")
        return out

    def _open(self, func: Any) -> Any:
        """``func`` with its ``has_torch_function`` checks off: the same code, run again."""
        f = self._opened.get(func)
        if f is None:
            g = dict(func.__globals__)
            g.update(has_torch_function=_false, has_torch_function_unary=_false,
                     has_torch_function_variadic=_false)
            f = types.FunctionType(func.__code__, g, func.__name__, func.__defaults__,
                                   func.__closure__)
            f.__kwdefaults__ = func.__kwdefaults__
            self._opened[func] = f
        return f


_PRODUCTS = set().union(_LINEAR, _CONV, _MATMUL, _RMATMUL, _MM, _ADDMM, _BADDBMM, _EINSUM, _SDPA)


class Recorder:
    """Hooks on one model that write a trace; use through ``record``.

    A step's operands reach it from the forward (a twin's ``forward`` tap, or ``_product`` of
    the function mode) and, later, from the backward (``backward``, or a gradient hook, told
    which step by the autograd context). A step is written once a newer training forward has
    begun (or recording ends) and its backward has ended; until then it waits, so several
    forwards before one backward (two views of a batch) are recorded as their own steps. At
    most ``MAX_WAITING`` steps wait; older ones are dropped."""

    MAX_WAITING = 4

    def __init__(self, model: nn.Module, out_dir: str | Path, every: int = 10, *,
                 method: Any = None, model_name: str | None = None, seed: int = 0,
                 start: int = 0, level: int = 0, command: list[str] | None = None,
                 background: bool = True, codec: str = GAPS_ZSTD) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        if hasattr(model, "_orig_mod") and hasattr(model, "dynamo_ctx"):
            raise ValueError("trace: record the model before torch.compile: "
                             "record(model, ...) first, then compile it inside the block")
        if not isinstance(model, nn.Module):
            raise ValueError(f"trace: expected a torch.nn.Module to record, got "
                             f"{type(model).__name__}")
        self.model = model
        self.out_dir = Path(out_dir)
        self._made_dir = not self.out_dir.exists()
        self.every, self.start = every, start
        self.method = method
        self.model_name = model_name or type(model).__name__.lower()
        self.seed, self.level, self.command, self.codec = seed, level, command, codec
        self.modules = [m for _, m in sparse_layers(self.model)]  # the twins: tapped
        self.names = {id(m): n for n, m in sparse_layers(self.model)}
        self.step = start - 1  # the step now running
        self.writer: TraceWriter | None = None
        self.layers: list[Layer] | None = None
        self._table: dict[str, Layer] = {}
        self.batch = 0
        self.dtype = "float32"
        self._probe: list[Layer] | None = None  # the first forward's products, in order
        self._needs: dict[str, tuple[bool, bool]] = {}  # per layer of the probe: bwd runs
        self._unrec: dict[tuple[str, str], dict[str, Any]] = {}  # (op, module) -> entry
        self._cur: _Step | None = None  # the recorded step whose forward runs or just ran
        self._waiting: list[_Step] = []  # older steps whose backward has not finished
        self._last: dict[str, _Step] = {}  # per layer: the step of its last forward
        self._warned: set[str] = set()
        self._handles: list[Any] = []
        self._hooks: list[_Hook] = []
        self._queue: queue.Queue | None = queue.Queue(maxsize=2) if background else None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        # the function mode of recorded forwards, and the modules it runs in
        self._mode = _FnMode(self)
        self._mode_on = False
        self._stack: list[nn.Module] = []
        self._global: list[Any] = []
        self._paths: dict[int, str] = {}
        self._owner: dict[int, str] = {}
        self._used: dict[str, int] = {}

    # ---- hooks ---------------------------------------------------------------------------------
    def install(self) -> None:
        self._hooks = [_Hook(self._pre), _Hook(self._post)]
        self._handles = [self.model.register_forward_pre_hook(self._hooks[0], with_kwargs=True),
                         self.model.register_forward_hook(self._hooks[1], always_call=True)]
        if torch._dynamo.config.skip_nnmodule_hook_guards:
            # code compiled before (a plain run of the same model class) does not check for
            # hooks, and would run without them: compile again
            torch._dynamo.reset()
        if self._queue is not None:
            self._thread = threading.Thread(target=self._drain, name="trace-writer", daemon=True)
            self._thread.start()

    def _training_pass(self) -> bool:
        return self.model.training and torch.is_grad_enabled()

    def _warn(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(text, stacklevel=4)

    def _pre(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not self._training_pass() or _in_backward():
            return
        self._mode_off()  # a forward that raised left it on
        self._retire()
        self.step += 1
        x = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        n = int(x.shape[0]) if x is not None and x.dim() > 0 else 0
        recording = self.step >= self.start and (self.step - self.start) % self.every == 0
        if self.layers is None:
            self._probe, self.batch = [], n
        elif recording and n and n != self.batch:
            self._warn("batch", f"trace: step {self.step} has batch {n}, the trace has "
                                f"{self.batch}; such steps are not recorded")
            recording = False
        self._cur = _Step(self.step) if recording else None
        on = self if (recording or self._probe is not None) else None
        for m in self.modules:
            m.tap = on
        if on is not None:
            self._mode_start()

    def _post(self, module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        self._mode_off()
        if not self._training_pass() or _in_backward():
            return
        if self._probe is not None:
            self._open()
        if self._cur is not None and self.method is not None:
            self._cur.meta = dict(self.method.step_meta())

    # ---- the function mode -------------------------------------------------------------------
    def _mode_start(self) -> None:
        """Watch this forward's torch functions, and the modules they run in."""
        self._paths = {}
        self._owner = {}
        for path, m in self.model.named_modules(remove_duplicate=False):
            self._paths.setdefault(id(m), path)
            for pname, p in m._parameters.items():
                if p is not None and id(p) not in self._owner:
                    stem = pname.removesuffix("weight").rstrip("_.")
                    self._owner[id(p)] = ".".join(s for s in (path, stem) if s)
        self._used = {}
        self._stack = []
        mm = torch.nn.modules.module
        self._global = [mm.register_module_forward_pre_hook(self._enter),
                        mm.register_module_forward_hook(self._leave, always_call=True)]
        self._mode.count = self._probe is not None
        self._mode.__enter__()
        self._mode_on = True

    def _mode_off(self) -> None:
        if not self._mode_on:
            return
        self._mode_on = False
        self._mode.__exit__(None, None, None)
        for h in self._global:
            h.remove()
        self._global, self._stack = [], []

    @torch._dynamo.disable
    def _enter(self, module: nn.Module, args: Any) -> None:
        self._stack.append(module)

    @torch._dynamo.disable
    def _leave(self, module: nn.Module, args: Any, out: Any) -> None:
        if self._stack and self._stack[-1] is module:
            self._stack.pop()

    def _where(self) -> tuple[nn.Module, str]:
        top = self._stack[-1] if self._stack else self.model
        return top, self._paths.get(id(top), "")

    def _name(self, base: str) -> str:
        """``base``, then ``base#1``, ``base#2``... for later calls in the same forward."""
        n = self._used.get(base, 0)
        self._used[base] = n + 1
        return base if n == 0 else f"{base}#{n}"

    def _base(self, func: Any, w: torch.Tensor | None) -> str:
        top, path = self._where()
        short = getattr(func, "__name__", "product")
        if isinstance(w, nn.Parameter):
            own = next((n for n, p in top._parameters.items() if p is w), None)
            if own is not None:  # the module's weight (a packed in_proj_weight: "in_proj")
                stem = own.removesuffix("weight").rstrip("_.")
                return ".".join(s for s in (path, stem) if s) or short
            owner = self._owner.get(id(w))
            if owner:
                return owner
        suffix = _SUFFIX.get(short, "")
        return f"{path}{suffix}" if path else (suffix.lstrip(".") or short)

    def _unrecorded(self, op: str, macs: int, why: str) -> None:
        """A product of the first step that is not in the trace: named, with its forward MACs."""
        _, path = self._where()
        entry = self._unrec.setdefault((op, path), {"op": op, "module": path, "why": why,
                                                    "calls": 0, "forward_macs": 0})
        entry["calls"] += 1
        entry["forward_macs"] += int(macs)

    def _rnn(self, func: Any, args: tuple[Any, ...]) -> None:
        """torch's recurrent kernels: their GEMMs happen inside one op (not recordable); the
        MACs per time step and sample are the weights' elements."""
        if not self._mode.count:
            return
        x = args[0]
        lists = [a for a in args if isinstance(a, (list, tuple))
                 and all(isinstance(t, torch.Tensor) for t in a)]
        per = max((sum(t.numel() for t in ts if t.dim() == 2) for ts in lists), default=0)
        rows = x.numel() // max(1, x.shape[-1])
        self._unrecorded(f"torch.{_RNN[func]}", per * rows,
                         "a recurrent kernel: its GEMMs run inside one op")

    def _product(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run a product; record it (its forward operands now, dZ from a hook on its result)."""
        out = func(*args, **kwargs)
        top, _ = self._where()
        if isinstance(top, SparseModule) and top.tap is not None:
            return out  # inside a twin's SparseGemm: the tap records it
        if not self.batch:
            self.batch = next((int(a.shape[0]) for a in args
                               if isinstance(a, torch.Tensor) and a.dim() > 1), 1)
        try:
            prods, w, grads = self._read(func, args, kwargs, out)
        except ops_.Unrecordable as err:
            if self._mode.count:
                self._unrecorded(_fn_name(func), _closed_macs(args, out), str(err))
            return out
        if not torch.is_grad_enabled():
            if self._mode.count:
                self._unrecorded(_fn_name(func), sum(p.layer.macs(self.batch) for p in prods),
                                 "ran with autograd off in the training forward (torch.no_grad,"
                                 " a custom autograd.Function, reentrant activation "
                                 "checkpointing: use torch.utils.checkpoint(..., "
                                 "use_reentrant=False))")
            return out
        if self._probe is not None and len(self._probe) == 0 and not self._table:
            dev = out.device.type
            if torch.is_autocast_enabled(dev):
                self.dtype = _DTYPES.get(torch.get_autocast_dtype(dev), "float32")
            else:
                self.dtype = _DTYPES.get(out.dtype, "float32")
        base = self._base(func, w)
        st = self._cur
        named = []
        for p in prods:
            name = self._name(base + p.suffix)
            layer = replace(p.layer, name=name)
            if self._probe is not None:
                self._probe.append(layer)
                self._needs[name] = (p.need_x, p.need_w)
            elif self._table.get(name) != layer:
                self._drop_step(name, layer)
                st = None
            named.append((name, p))
        st = self._cur if st is not None else None
        if st is None:
            return out
        backward = out.requires_grad and any(p.need_x or p.need_w for p in prods)
        for name, p in named:
            ops = {("fwd", "filter"): p.filter, ("fwd", "ifmap"): p.ifmap,
                   ("bwd_input", "filter"): p.filter, ("bwd_weight", "ifmap"): p.ifmap}
            st.ops[name] = ops
            if not backward:
                ops[("bwd_input", "grad_out")] = ops[("bwd_weight", "grad_out")] = None
                st.skipped_dx.append(name)
                st.skipped_dw.append(name)
            else:
                st.pending.add(name)
        if backward:
            out.register_hook(_GradHook(self, st, named, grads))
        return out

    def _read(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any
              ) -> tuple[list[ops_.Product], torch.Tensor | None, Any]:
        """The products of one call: (products, the weight-like operand, dZ's function)."""
        b = self.batch

        def arg(i: int, name: str, default: Any = None) -> Any:
            return args[i] if len(args) > i else kwargs.get(name, default)

        if func in _LINEAR:
            x, w, bias = arg(0, "input"), arg(1, "weight"), arg(2, "bias")
            return [ops_.linear(x, w, b, bias=bias is not None)], w, None
        if func in _CONV:
            x, w, bias = arg(0, "input"), arg(1, "weight"), arg(2, "bias")
            return [ops_.conv(x, w, arg(3, "stride", 1), arg(4, "padding", 0),
                              arg(5, "dilation", 1), arg(6, "groups", 1), b, _CONV[func],
                              bias=bias is not None)], w, None
        if func in _MATMUL or func in _RMATMUL:
            x, y = (args[0], args[1]) if func in _MATMUL else (args[1], args[0])
            return [ops_.batched(x, y, b)], y, None
        if func in _MM:
            return [ops_.linear(args[0], args[1], b, w_is_kn=True)], args[1], None
        if func in _ADDMM:
            x, y = arg(1, "mat1"), arg(2, "mat2")
            return [ops_.linear(x, y, b, w_is_kn=True, bias=True)], y, None
        if func in _BADDBMM:
            x, y = arg(1, "batch1"), arg(2, "batch2")
            return [ops_.batched(x, y, b)], y, None
        if func in _EINSUM:
            eq, operands = args[0], args[1:]
            if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
                operands = tuple(operands[0])
            if len(operands) != 2:
                raise ops_.Unrecordable(f"einsum with {len(operands)} operands")
            return [ops_.einsum(eq, operands[0], operands[1], b)], operands[1], None
        # scaled_dot_product_attention
        q, k, v = arg(0, "query"), arg(1, "key"), arg(2, "value")
        if arg(4, "dropout_p", 0.0):
            self._warn("dropout", "trace: scaled_dot_product_attention with dropout: the "
                                  "zeros dropout puts in the attention weights stay inside "
                                  "the fused kernel and are not in the trace's masks")
        p1, p2, grads = ops_.sdpa(q, k, v, out, arg(3, "attn_mask"), bool(arg(5, "is_causal")),
                                  arg(6, "scale"), b, bool(arg(4, "dropout_p", 0.0)))
        return [p1, p2], None, grads

    def _drop_step(self, name: str, layer: Layer) -> None:
        old = self._table.get(name)
        what = ("is not in the trace's layer table" if old is None else
                f"has another shape than in the trace ({_sizes(layer)} against {_sizes(old)})")
        self._warn(f"shape:{name}", f"trace: step {self.step}: product {name!r} {what}; such "
                                    "steps are not recorded")
        self._cur = None

    # ---- taps (called by SparseGemm) -----------------------------------------------------------
    def forward(self, layer: SparseModule, x: torch.Tensor, w_f: torch.Tensor, x_f: torch.Tensor,
                w_b: torch.Tensor, x_b: torch.Tensor, grad_w: torch.Tensor | None,
                needs: tuple[bool, bool, bool]) -> _Step | None:
        """Take the forward operands of ``layer``; returns the step its backward reports to
        (None: not recorded)."""
        name = self.names.get(id(layer))
        if name is None:
            return None
        if _in_backward():  # activation checkpointing's recompute: the step already has it
            st = self._last.get(name)
            if self.layers is not None and name not in self._table:
                raise ValueError(f"trace: layer {name!r} ran only inside the backward pass "
                                 "(reentrant activation checkpointing); the recorder needs "
                                 "torch.utils.checkpoint(..., use_reentrant=False)")
            return st if st is not None and name in st.pending else None
        if not self.model.training:  # an eval pass with grad: not a step
            return None
        if self._probe is not None:
            if not self.batch:
                self.batch = int(x.shape[0])
            if isinstance(layer, nn.Conv2d) and x.shape[0] != self.batch:
                raise ValueError(f"trace: conv layer {name!r} ran on {x.shape[0]} images, the "
                                 f"model's input batch is {self.batch}; the recorder needs "
                                 "every conv to see the batch (no frames or crops folded into "
                                 "it)")
            self._probe.append(layer_geometry(name, layer, tuple(x.shape), self.batch))
            self._needs[name] = (bool(needs[0]), bool(needs[1]))
            dev = x.device.type
            if torch.is_autocast_enabled(dev):
                self.dtype = _DTYPES.get(torch.get_autocast_dtype(dev), "float32")
            else:
                self.dtype = _DTYPES.get(layer.weight.dtype, "float32")
        if isinstance(layer, nn.Conv2d) and self.batch and x.shape[0] != self.batch:
            raise ValueError(f"trace: conv layer {name!r} ran on {x.shape[0]} images, the "
                             f"model's input batch is {self.batch}; the recorder needs every "
                             "conv to see the batch (no frames or crops folded into it)")
        st = self._cur
        if st is None:
            return None
        if name in st.ops:
            raise ValueError(f"trace: layer {name!r} ran twice in step {self.step}; the "
                             "recorder supports one call per sparse layer per step")
        fw, fx = _nz(w_f), _nz(x_f)
        ops = {("fwd", "filter"): fw, ("fwd", "ifmap"): fx,
               ("bwd_input", "filter"): fw if w_b is w_f else _nz(w_b),
               ("bwd_weight", "ifmap"): fx if x_b is x_f else _nz(x_b)}
        if grad_w is not None:
            ops[("bwd_weight", "grad_w")] = grad_w.expand(w_f.shape).to("cpu", copy=True)
        st.ops[name] = ops
        if not any(needs):  # frozen, input needs no gradient: no backward will come
            ops[("bwd_input", "grad_out")] = ops[("bwd_weight", "grad_out")] = None
            st.skipped_dx.append(name)
            st.skipped_dw.append(name)
            return None
        st.pending.add(name)
        self._last[name] = st
        return st

    def backward(self, st: _Step, layer: SparseModule, dz_i: torch.Tensor, dz_w: torch.Tensor,
                 need_x: bool, need_w: bool) -> None:
        """Take the gradient operands of ``layer`` for step ``st`` (its forward's)."""
        name = self.names.get(id(layer))
        if name is None:
            return
        gi = _nz(dz_i)
        self._got(st, name, gi, gi if dz_w is dz_i else _nz(dz_w), need_x, need_w)

    def _got(self, st: _Step, name: str, gi: torch.Tensor, gw: torch.Tensor, need_x: bool,
             need_w: bool) -> None:
        """The gradient operands of layer ``name`` for step ``st`` arrived."""
        if name not in st.ops:
            return
        if name not in st.pending and st is not self._cur:
            return  # already written
        ops = st.ops[name]
        ops[("bwd_input", "grad_out")] = gi
        ops[("bwd_weight", "grad_out")] = gw
        if not need_x and name not in st.skipped_dx:
            st.skipped_dx.append(name)
        if not need_w and name not in st.skipped_dw:
            st.skipped_dw.append(name)
        st.pending.discard(name)
        if not st.ended:  # at the end of this backward, what got no gradient did not run
            st.ended = True
            torch.autograd.Variable._execution_engine.queue_callback(
                lambda: self._backward_ended(st))
        if not st.pending and st in self._waiting:
            self._waiting.remove(st)
            self._finish(st)

    def _backward_ended(self, st: _Step) -> None:
        """A backward that reached ``st`` ended: products whose result got no gradient (an
        output the loss does not use) ran no backward GEMM."""
        st.ended = False
        for name in sorted(st.pending):
            ops = st.ops[name]
            ops[("bwd_input", "grad_out")] = ops[("bwd_weight", "grad_out")] = None
            for lst in (st.skipped_dx, st.skipped_dw):
                if name not in lst:
                    lst.append(name)
        st.pending.clear()
        if st in self._waiting:
            self._waiting.remove(st)
            self._finish(st)

    # ---- writing -------------------------------------------------------------------------------
    def _open(self) -> None:
        """Build the manifest from the first forward pass and start the trace."""
        from traces.synth import version

        layers, self._probe = self._probe or [], None
        seen = set()
        for la in layers:
            if la.name in seen:
                raise ValueError(f"trace: layer {la.name!r} ran twice in one forward pass; the "
                                 "recorder supports one call per sparse layer per step")
            seen.add(la.name)
        if not layers:
            raise ValueError("trace: no matrix product (conv, linear, matmul, attention) ran "
                             "in the training forward pass")
        self.layers = layers
        self._table = {la.name: la for la in layers}
        sparsity: dict[str, Any] = {"sparsity": 0.0, "method": "dense"}
        method_name = "dense"
        if self.method is not None:
            sparsity = dict(self.method.config())
            method_name = self.method.name
            ld = self.method.layer_density()
            sparsity["layer_density"] = [round(float(ld.get(la.name, 1.0)), 9) for la in layers]
        producer = {"name": "sparsesim", "version": version(), "tool": "train"}
        if self.command is not None:
            producer["command"] = list(self.command)
        manifest = Manifest(model=self.model_name, method=method_name, sparsity=sparsity,
                            seed=self.seed, batch_size=self.batch, dtype=self.dtype,
                            layers=tuple(layers), producer=producer, format_version=2,
                            coverage=self._coverage(layers))
        self.writer = TraceWriter(self.out_dir, manifest, level=self.level, codec=self.codec)

    def _coverage(self, layers: list[Layer]) -> dict[str, Any]:
        """The share of the step's training MACs the trace holds, and what it leaves out (each
        left-out product at 3× its forward MACs, as a GEMM whose operands need gradients)."""
        recorded = sum(la.macs(self.batch) * (1 + sum(self._needs.get(la.name, (True, True))))
                       for la in layers)
        left = sorted(self._unrec.values(), key=lambda e: -e["forward_macs"])
        missing = sum(3 * e["forward_macs"] for e in left)
        total = recorded + missing
        out: dict[str, Any] = {"recorded_macs": recorded, "training_macs": total,
                               "percent": round(100.0 * recorded / total, 4) if total else 100.0,
                               "unrecorded": []}
        for e in left:
            macs = 3 * e["forward_macs"]
            out["unrecorded"].append({"op": e["op"], "module": e["module"], "calls": e["calls"],
                                      "macs": macs, "why": e["why"],
                                      "percent": round(100.0 * macs / total, 4) if total
                                      else 0.0})
        if left:
            names = "; ".join(f"{e['op']} in {e['module'] or 'the model'!r} "
                              f"({u['percent']:.2f} % of the step's MACs: {e['why']})"
                              for e, u in zip(left, out["unrecorded"], strict=True))
            self._warn("unrecorded", f"trace: products not in the trace ({100 - out['percent']:.2f}"
                                     f" % of the training MACs): {names}")
        return out

    def _retire(self) -> None:
        """The current step's forward is over: write it if its backward has run, else let it
        wait for its backward."""
        st, self._cur = self._cur, None
        if st is None or self.layers is None:
            return
        if st.pending:
            self._waiting.append(st)
            if len(self._waiting) > self.MAX_WAITING:
                self._waiting.pop(0)  # a forward whose backward never came
        else:
            self._finish(st)

    def _finish(self, st: _Step) -> None:
        """Hand a step to the writer if every layer ran forward and backward in it."""
        assert self.layers is not None
        if any(("bwd_weight", "grad_out") not in st.ops.get(la.name, {}) for la in self.layers):
            return  # not every layer ran, or not every backward: not a training step
        events = self.method.pop_events() if self.method is not None else []
        meta = dict(st.meta)
        if st.skipped_dx:
            meta["bwd_input_not_computed"] = list(st.skipped_dx)
        if st.skipped_dw:
            meta["bwd_weight_not_computed"] = list(st.skipped_dw)
        item = (st.step, st.ops, meta, events)
        for name, last in list(self._last.items()):
            if last is st:
                del self._last[name]
        if self._queue is None:
            self._write(*item)
        else:
            self._raise_if_failed()
            self._queue.put(item)

    def _write(self, step: int, cur: dict[str, dict[tuple[str, str], torch.Tensor | None]],
               meta: dict[str, Any], events: list[Any]) -> None:
        assert self.writer is not None and self.layers is not None
        operands: dict[str, dict[str, dict[str, np.ndarray | None]]] = {}
        for la in self.layers:
            packed: dict[int, np.ndarray | None] = {}
            phases: dict[str, dict[str, np.ndarray | None]] = {p: {} for p in PHASE_OPERANDS}
            for (phase, role), t in cur[la.name].items():
                if t is None:  # the dZ of a layer with no backward: a GEMM not computed
                    phases[phase][role] = None
                    continue
                if id(t) not in packed:
                    a = t.numpy().reshape(la.operand_shape(role, self.batch))
                    # a mask with every element set is a dense operand (nothing stored)
                    packed[id(t)] = None if a.all() else a
                if packed[id(t)] is not None or role != "grad_w":  # no all-set result mask
                    phases[phase][role] = packed[id(t)]
            operands[la.name] = phases
        self.writer.write_step(step, operands, meta=meta, events=events)

    def _drain(self) -> None:
        assert self._queue is not None
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._write(*item)
                except BaseException as err:  # reported on the training thread
                    self._error = err

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def close(self, failed: bool = False) -> None:
        """Write the last recorded step, wait for the writer, remove hooks and taps. A trace
        that got no step is removed (``Trace`` could not read it, and it would block a rerun
        into the same directory); unless the block ``failed``, a warning says so."""
        try:
            self._mode_off()
            self._retire()
            self._waiting.clear()  # forwards whose backward never came
        finally:
            for h in self._handles:
                h.remove()
            for hook in self._hooks:  # compiled code may still call them: inert
                hook.fn = None
            for m in self.modules:
                m.tap = None
            if self._thread is not None and self._queue is not None:
                self._queue.put(None)
                self._thread.join()
        self._raise_if_failed()
        if self.writer is not None and self.writer.written:
            return
        if self.writer is not None:
            (self.out_dir / MANIFEST).unlink(missing_ok=True)
            if self._made_dir and not any(self.out_dir.iterdir()):
                self.out_dir.rmdir()
        if not failed:
            warnings.warn(f"trace: no training step was recorded (a step is a training-mode "
                          f"forward with its backward, every {self.every} from step "
                          f"{self.start}); nothing was written to {self.out_dir}", stacklevel=3)

    @property
    def path(self) -> Path:
        return self.out_dir


@contextmanager
def record(model: nn.Module, out_dir: str | Path, every: int = 10, **kwargs: Any
           ) -> Iterator[Recorder]:
    """Record every ``every``-th training step of ``model`` into the trace directory
    ``out_dir`` (created; it must not hold a trace yet).

    The model is not changed: its products are watched where torch computes them (the module
    docstring; a sparsity method's twins are tapped). Keyword arguments: ``method`` (a
    ``trainers.methods`` method: its config, thresholds and mask-update events go into the
    trace), ``model_name``, ``seed``, ``start`` (number of the first step), ``codec`` (how the
    step files code the masks: ``gaps-zstd``, the default, near their entropy; ``packbits``, 1
    bit per element, with ``level`` the deflate level of the step files: 0, the default, stores
    them as they are; docs/trace-format.md "Size" compares them on ResNet-20), ``command`` (for
    the manifest), ``background`` (write on a thread).
    """
    rec = Recorder(model, out_dir, every, **kwargs)
    rec.install()
    try:
        yield rec
    except BaseException:
        rec.close(failed=True)
        raise
    rec.close()
