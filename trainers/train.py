"""The training loop behind ``sparsesim train``: SGD with momentum 0.9, cosine learning rate,
seeded and deterministic (on CPU: same config and seed, same losses), optionally recording a
trace.

Defaults (``TrainConfig``) are the budget that takes dense LeNet-5 on MNIST-5k past 95 % test
accuracy in well under a minute on two CPU cores.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import ConfigError
from trainers.data import Dataset, batches, load_dataset
from trainers.methods import Method, make_method
from trainers.models import build_model, get_spec
from trainers.sparse_fn import sparsify

Progress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``steps`` are optimizer iterations of ``batch`` samples."""

    model: str = "lenet5"
    dataset: str = "mnist"
    method: str = "dense"
    sparsity: float = 0.9
    steps: int = 1500
    batch: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    density: str | None = None
    init: str = "default"
    structured: bool = False
    topk_period: int | None = None
    device: str = "cpu"


@dataclass
class TrainResult:
    config: TrainConfig
    test_accuracy: float  # fraction in [0, 1]
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    trace: Path | None = None


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    """Top-1 accuracy (fraction) in eval mode, without gradients."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            correct += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    model.train()
    return correct / max(len(y), 1)


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` as a device this machine has, else a ``--device`` error."""
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError("--device", None, f"expected cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device", None, f"{name} requested but no CUDA GPU is visible")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError("--device", None, f"{name} requested but only {count} CUDA GPU(s) "
                                                f"are visible (cuda:0 to cuda:{count - 1})")
    return device


def setup(cfg: TrainConfig, data: Dataset | None = None
          ) -> tuple[nn.Module, Method, torch.optim.Optimizer, Dataset, torch.Generator]:
    """Seeded model, method (masks decided), optimizer and data of a run."""
    spec = get_spec(cfg.model)
    device = resolve_device(cfg.device)
    data = data or load_dataset(cfg.dataset, spec.train_hw)  # the same data for every seed
    torch.manual_seed(cfg.seed)
    model = sparsify(build_model(cfg.model, data.channels, data.num_classes, spec.train_hw))
    model.to(device)
    # separate streams: masks and batch order do not shift when one of them draws more
    mask_gen = torch.Generator().manual_seed(cfg.seed * 2 + 1)
    data_gen = torch.Generator().manual_seed(cfg.seed * 2 + 2)
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.dim() > 1 else no_decay).append(p)  # no weight decay on BN, LN, biases
    opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=cfg.lr, momentum=cfg.momentum)
    method = make_method(cfg.method, cfg.sparsity, cfg.density, cfg.init, cfg.structured,
                         cfg.topk_period)
    # masks and batch orders are drawn on the CPU, so a seed gives the same run on any device
    first = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(cfg.seed),
                           device="cpu")
    idx = first[:min(cfg.batch * 4, len(first))]  # saliency criteria score on 4 batches' worth
    method.attach(model, opt, cfg.steps, (data.x_train[idx].to(device),
                                          data.y_train[idx].to(device)), mask_gen)
    return model, method, opt, data, data_gen


#: steps timed before ``train`` asks its ``budget`` about the whole run
PROBE_STEPS = 2


def train(cfg: TrainConfig, trace_dir: str | Path | None = None, record_every: int = 100,
          progress: Progress | None = None, data: Dataset | None = None,
          command: Sequence[str] | None = None,
          budget: Callable[[float], None] | None = None) -> TrainResult:
    """Train ``cfg`` and return the test accuracy; record a trace into ``trace_dir`` if given.
    ``budget``: called once ``PROBE_STEPS`` steps have run (of a longer run) with the seconds
    the whole run would take at their pace (set-up included); it may raise to stop the run
    before the long part starts."""
    device = resolve_device(cfg.device)
    t0 = time.perf_counter()
    model, method, opt, data, gen = setup(cfg, data)
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1.0 + math.cos(math.pi * t / cfg.steps)))
    losses: list[float] = []
    ctx = nullcontext()
    if trace_dir is not None:
        from trainers.recorder import record

        ctx = record(model, trace_dir, record_every, method=method, model_name=cfg.model,
                     seed=cfg.seed, command=list(command) if command is not None else None)
    order = batches(len(y_train), cfg.batch, gen)
    model.train()
    t_loop = time.perf_counter()
    with ctx:
        for step in range(cfg.steps):
            if budget is not None and step == PROBE_STEPS < cfg.steps:
                now = time.perf_counter()
                budget(now - t0 + (now - t_loop) / PROBE_STEPS * (cfg.steps - PROBE_STEPS))
            idx = next(order).to(device)
            method.before_step(step)
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if method.before_optimizer(step):
                opt.step()
            method.after_optimizer(step)
            sched.step()
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                raise ConfigError("--lr", None, f"training diverged at step {step} "
                                                f"(loss {losses[-1]}); try a smaller --lr")
            if progress is not None:
                progress(step + 1, cfg.steps, losses[-1])
    acc = evaluate(model, data.x_test.to(device), data.y_test.to(device))
    return TrainResult(cfg, acc, losses, time.perf_counter() - t0,
                       Path(trace_dir) if trace_dir is not None else None)


class TextProgress:
    """``train [#####.....] 300/1500 loss 0.123  12 s`` on stderr: redrawn in place on a
    terminal, one line per 10 % otherwise."""

    def __init__(self, label: str = "train", stream=None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.perf_counter()
        self.last = -1

    def __call__(self, done: int, total: int, loss: float) -> None:
        tenth = 10 * done // max(total, 1)
        if not self.tty and tenth == self.last:
            return
        if self.tty and done not in (1, total) and done % max(total // 200, 1):
            return
        self.last = tenth
        fill = 30 * done // max(total, 1)
        line = (f"{self.label} [{'#' * fill}{'.' * (30 - fill)}] {done}/{total} "
                f"loss {loss:.3f}  {time.perf_counter() - self.t0:.0f} s")
        self.stream.write(f"\r{line}" if self.tty else f"{line}\n")
        if self.tty and done >= total:
            self.stream.write("\n")
        self.stream.flush()
