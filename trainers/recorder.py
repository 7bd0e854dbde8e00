"""Record real traces from a training run: ``with record(model, out_dir, every=N): train...``.

The recorder observes the operands where ``sparse_fn.SparseGemm`` multiplies them: on a recorded
step every sparse layer's ``tap`` is set, and the function hands over the tensors it actually
used — W~ and A of the forward, W~ and dZ of bwd_input, the stashed A~ and dZ of bwd_weight, and
the mask of dW when only part of it is computed. A mask in the trace is the set of nonzeros of
the operand as multiplied (natural ReLU zeros included); an operand with no zero is marked dense.

Steps are the model's training forward passes (``model.training`` and grad enabled), counted from
``start``; steps ``start, start + every, ...`` are recorded. The layer table is what the first
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

from traces.format import PHASE_OPERANDS, Manifest, TraceWriter
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


class Recorder:
    """Hooks on one model that write a trace; use through ``record``."""

    def __init__(self, model: nn.Module, out_dir: str | Path, every: int = 10, *,
                 method: Any = None, model_name: str | None = None, seed: int = 0,
                 start: int = 0, level: int = 0, command: list[str] | None = None,
                 background: bool = True) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.model = sparsify(model)
        self.out_dir = Path(out_dir)
        self.every, self.start = every, start
        self.method = method
        self.model_name = model_name or type(model).__name__.lower()
        self.seed, self.level, self.command = seed, level, command
        self.modules = [m for _, m in sparse_layers(self.model)]
        self.names = {id(m): n for n, m in sparse_layers(self.model)}
        self.step = start - 1  # the step now running
        self.writer: TraceWriter | None = None
        self.layers: list[Layer] | None = None
        self.batch = 0
        self._probe: list[tuple[str, SparseModule, tuple[int, ...]]] | None = None
        self._cur: dict[str, dict[tuple[str, str], torch.Tensor]] | None = None
        self._meta: dict[str, Any] = {}
        self._skipped_dx: list[str] = []
        self._warned = False
        self._handles: list[Any] = []
        self._queue: queue.Queue | None = queue.Queue(maxsize=2) if background else None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # ---- hooks ---------------------------------------------------------------------------------
    def install(self) -> None:
        self._handles = [self.model.register_forward_pre_hook(self._pre),
                         self.model.register_forward_hook(self._post)]
        if self._queue is not None:
            self._thread = threading.Thread(target=self._drain, name="trace-writer", daemon=True)
            self._thread.start()

    def _training_pass(self) -> bool:
        return self.model.training and torch.is_grad_enabled()

    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not self._training_pass():
            return
        self._finish_step()
        self.step += 1
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        n = int(x.shape[0]) if x is not None and x.dim() > 0 else 0
        recording = self.step >= self.start and (self.step - self.start) % self.every == 0
        if self.layers is None:
            self._probe, self.batch = [], n
        elif recording and n and n != self.batch:
            if not self._warned:
                warnings.warn(f"trace: step {self.step} has batch {n}, the trace has "
                              f"{self.batch}; such steps are not recorded", stacklevel=2)
                self._warned = True
            recording = False
        self._cur = {} if recording else None
        self._skipped_dx = []
        on = self if (recording or self._probe is not None) else None
        for m in self.modules:
            m.tap = on

    def _post(self, module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        if not self._training_pass():
            return
        if self._probe is not None:
            self._open()
        if self._cur is not None and self.method is not None:
            self._meta = self.method.step_meta()
        else:
            self._meta = {}

    # ---- taps (called by SparseGemm) -----------------------------------------------------------
    def forward(self, layer: SparseModule, x: torch.Tensor, w_f: torch.Tensor, x_f: torch.Tensor,
                w_b: torch.Tensor, x_b: torch.Tensor, grad_w: torch.Tensor | None) -> None:
        name = self.names.get(id(layer))
        if name is None or not self.model.training:  # an eval pass with grad: not a step
            return
        if self._probe is not None:
            self._probe.append((name, layer, tuple(x.shape)))
            if not self.batch:
                self.batch = int(x.shape[0])
        if self._cur is None:
            return
        if name in self._cur:
            raise ValueError(f"trace: layer {name!r} ran twice in step {self.step}; the "
                             "recorder supports one call per layer per step")
        fw, fx = _nz(w_f), _nz(x_f)
        ops = {("fwd", "filter"): fw, ("fwd", "ifmap"): fx,
               ("bwd_input", "filter"): fw if w_b is w_f else _nz(w_b),
               ("bwd_weight", "ifmap"): fx if x_b is x_f else _nz(x_b)}
        if grad_w is not None:
            ops[("bwd_weight", "grad_w")] = grad_w.expand(w_f.shape).to("cpu", copy=True)
        self._cur[name] = ops

    def backward(self, layer: SparseModule, dz_i: torch.Tensor, dz_w: torch.Tensor,
                 need_x: bool) -> None:
        name = self.names.get(id(layer))
        if self._cur is None or name is None or name not in self._cur:
            return
        gi = _nz(dz_i)
        self._cur[name][("bwd_input", "grad_out")] = gi
        self._cur[name][("bwd_weight", "grad_out")] = gi if dz_w is dz_i else _nz(dz_w)
        if not need_x:
            self._skipped_dx.append(name)

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
        weight = probe[0][1].weight
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
                            seed=self.seed, batch_size=self.batch,
                            dtype=_DTYPES.get(weight.dtype, "float32"), layers=tuple(layers),
                            producer=producer)
        self.writer = TraceWriter(self.out_dir, manifest, level=self.level)

    def _finish_step(self) -> None:
        """Hand the step that just ran to the writer, if it was recorded and is complete."""
        cur, self._cur = self._cur, None
        if cur is None or self.layers is None:
            return
        for la in self.layers:
            ops = cur.get(la.name)
            if ops is None or ("bwd_weight", "grad_out") not in ops:
                return  # no backward pass ran (or not for every layer): not a training step
        events = self.method.pop_events() if self.method is not None else []
        meta = dict(self._meta)
        if self._skipped_dx:
            meta["bwd_input_not_computed"] = list(self._skipped_dx)
        item = (self.step, cur, meta, events)
        if self._queue is None:
            self._write(*item)
        else:
            self._raise_if_failed()
            self._queue.put(item)

    def _write(self, step: int, cur: dict[str, dict[tuple[str, str], torch.Tensor]],
               meta: dict[str, Any], events: list[Any]) -> None:
        assert self.writer is not None and self.layers is not None
        operands: dict[str, dict[str, dict[str, np.ndarray | None]]] = {}
        for la in self.layers:
            packed: dict[int, np.ndarray | None] = {}
            phases: dict[str, dict[str, np.ndarray | None]] = {p: {} for p in PHASE_OPERANDS}
            for (phase, role), t in cur[la.name].items():
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

    def close(self) -> None:
        """Write the last recorded step, wait for the writer, remove hooks and taps."""
        try:
            self._finish_step()
        finally:
            for h in self._handles:
                h.remove()
            for m in self.modules:
                m.tap = None
            if self._thread is not None and self._queue is not None:
                self._queue.put(None)
                self._thread.join()
        self._raise_if_failed()

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
    finally:
        rec.close()
