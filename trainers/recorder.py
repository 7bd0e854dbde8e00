"""Record real traces from a training run: ``with record(model, out_dir, every=N): train...``.

The recorder observes the operands where ``sparse_fn.SparseGemm`` multiplies them: on a recorded
step every sparse layer's ``tap`` is set, and the function hands over the tensors it actually
used — W~ and A of the forward, W~ and dZ of bwd_input, the stashed A~ and dZ of bwd_weight, and
the mask of dW when only part of it is computed. A mask in the trace is the set of nonzeros of
the operand as multiplied (natural ReLU zeros included); an operand with no zero is marked dense.

Steps are the model's training forward passes (``model.training`` and grad enabled), counted from
``start``; steps ``start, start + every, ...`` are recorded. A step's backward reports to the
step of its forward (the autograd context carries it), so eval passes, several forwards before
one backward and activation checkpointing's recompute (non-reentrant) keep each step's operands
apart; a step is written once every layer's backward ran in it. The layer table is what the first
forward pass shows: every conv/linear that ran, in execution order, named by module path, with
the input size it saw. Recording reads tensors and never writes them, draws no random numbers,
and changes no state of the model or the optimizer: a run gives the same numbers with and
without it. With a ``method``, each step file holds the thresholds of that step in ``meta`` and
the mask-update events that happened since the previous recorded step (each with its ``step``);
events after the last recorded step are not written.

Step files are packed and written on a background thread (``traces.format.TraceWriter``), so the
training thread only pays for ``t != 0``. They are stored without deflate by default: compressing
near-random mask bits takes 7× the CPU time of storing them (ResNet-20, batch 128: 146 ms
against 21 ms per recorded step) for a 25 % smaller file.
"""

from __future__ import annotations

import math
import queue
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from traces.format import MANIFEST, PHASE_OPERANDS, Manifest, TraceWriter
from traces.layers import Layer
from trainers.sparse_fn import SparseModule, sparse_layers, sparsify

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

    __slots__ = ("step", "ops", "meta", "pending", "skipped_dx", "skipped_dw")

    def __init__(self, step: int) -> None:
        self.step = step
        self.ops: dict[str, dict[tuple[str, str], torch.Tensor | None]] = {}
        self.meta: dict[str, Any] = {}
        self.pending: set[str] = set()  # layers whose backward has not run yet
        self.skipped_dx: list[str] = []
        self.skipped_dw: list[str] = []


def _in_backward() -> bool:
    """Whether autograd is running a backward pass on this thread (activation checkpointing
    recomputes forwards there)."""
    return torch._C._current_graph_task_id() != -1


class _Hook:
    """A forward hook of the recorder; a copy or a pickle of the model holds an inert one."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, *args: Any) -> None:
        if self.fn is not None:
            self.fn(*args)

    def __getstate__(self) -> dict[str, Any]:
        return {"fn": None}


class Recorder:
    """Hooks on one model that write a trace; use through ``record``.

    A step's operands reach it from the forward (``forward``) and, later, from the backward
    (``backward``, told which step by the autograd context). A step is written once a newer
    training forward has begun (or recording ends) and every layer's backward has run; until
    then it waits, so several forwards before one backward (two views of a batch) are recorded
    as their own steps. At most ``MAX_WAITING`` steps wait; older ones are dropped."""

    MAX_WAITING = 4

    def __init__(self, model: nn.Module, out_dir: str | Path, every: int = 10, *,
                 method: Any = None, model_name: str | None = None, seed: int = 0,
                 start: int = 0, level: int = 0, command: list[str] | None = None,
                 background: bool = True) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        if hasattr(model, "_orig_mod") and hasattr(model, "dynamo_ctx"):
            raise ValueError("trace: record the model before torch.compile: "
                             "record(model, ...) first, then compile it inside the block")
        self.model = sparsify(model)
        self.out_dir = Path(out_dir)
        self._made_dir = not self.out_dir.exists()
        self.every, self.start = every, start
        self.method = method
        self.model_name = model_name or type(model).__name__.lower()
        self.seed, self.level, self.command = seed, level, command
        self.modules = [m for _, m in sparse_layers(self.model)]
        if not self.modules:
            raise ValueError("trace: the model has no nn.Conv2d or nn.Linear layer to record")
        self.names = {id(m): n for n, m in sparse_layers(self.model)}
        self.step = start - 1  # the step now running
        self.writer: TraceWriter | None = None
        self.layers: list[Layer] | None = None
        self.batch = 0
        self.dtype = "float32"
        self._probe: list[tuple[str, SparseModule, tuple[int, ...]]] | None = None
        self._cur: _Step | None = None  # the recorded step whose forward runs or just ran
        self._waiting: list[_Step] = []  # older steps whose backward has not finished
        self._last: dict[str, _Step] = {}  # per layer: the step of its last forward
        self._warned: set[str] = set()
        self._handles: list[Any] = []
        self._queue: queue.Queue | None = queue.Queue(maxsize=2) if background else None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # ---- hooks ---------------------------------------------------------------------------------
    def install(self) -> None:
        self._handles = [self.model.register_forward_pre_hook(_Hook(self._pre), with_kwargs=True),
                         self.model.register_forward_hook(_Hook(self._post))]
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

    def _post(self, module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        if not self._training_pass() or _in_backward():
            return
        if self._probe is not None:
            self._open()
        if self._cur is not None and self.method is not None:
            self._cur.meta = dict(self.method.step_meta())

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
            if self.layers is not None and name not in {la.name for la in self.layers}:
                raise ValueError(f"trace: layer {name!r} ran only inside the backward pass "
                                 "(reentrant activation checkpointing); the recorder needs "
                                 "torch.utils.checkpoint(..., use_reentrant=False)")
            return st if st is not None and name in st.pending else None
        if not self.model.training:  # an eval pass with grad: not a step
            return None
        if self._probe is not None:
            self._probe.append((name, layer, tuple(x.shape)))
            if not self.batch:
                self.batch = int(x.shape[0])
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
                             "recorder supports one call per layer per step")
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
        if name is None or name not in st.ops:
            return
        if name not in st.pending and st is not self._cur:
            return  # already written
        gi = _nz(dz_i)
        ops = st.ops[name]
        ops[("bwd_input", "grad_out")] = gi
        ops[("bwd_weight", "grad_out")] = gi if dz_w is dz_i else _nz(dz_w)
        if not need_x and name not in st.skipped_dx:
            st.skipped_dx.append(name)
        if not need_w and name not in st.skipped_dw:
            st.skipped_dw.append(name)
        st.pending.discard(name)
        if not st.pending and st in self._waiting:
            self._waiting.remove(st)
            self._finish(st)

    # ---- writing -------------------------------------------------------------------------------
    def _open(self) -> None:
        """Build the manifest from the first forward pass and start the trace."""
        from traces.synth import version

        probe, self._probe = self._probe or [], None
        seen = set()
        layers = []
        for name, m, shape in probe:
            if name in seen:
                raise ValueError(f"trace: layer {name!r} ran twice in one forward pass; the "
                                 "recorder supports one call per layer per step")
            seen.add(name)
            layers.append(layer_geometry(name, m, shape, self.batch))
        if not layers:
            raise ValueError("trace: no conv2d/linear layer ran in the forward pass")
        self.layers = layers
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
                            layers=tuple(layers), producer=producer)
        self.writer = TraceWriter(self.out_dir, manifest, level=self.level)

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
            self._retire()
            self._waiting.clear()  # forwards whose backward never came
        finally:
            for h in self._handles:
                h.remove()
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

    Plain ``nn.Conv2d``/``nn.Linear`` modules are replaced in place by their sparse twins (same
    parameters) so that their operands can be observed. Keyword arguments: ``method`` (a
    ``trainers.methods`` method: its config, thresholds and mask-update events go into the
    trace), ``model_name``, ``seed``, ``start`` (number of the first step), ``level`` (deflate
    level of the step files: 0, the default, stores the packed bits as they are, 1 bit per
    element; 1 makes ResNet-20's steps 25 % smaller for 7× the CPU time, see
    ``benchmarks/bench_recording.py``), ``command`` (for the manifest), ``background`` (write
    on a thread).
    """
    rec = Recorder(model, out_dir, every, **kwargs)
    rec.install()
    try:
        yield rec
    except BaseException:
        rec.close(failed=True)
        raise
    rec.close()
