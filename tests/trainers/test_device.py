"""Device placement of the trainers, checked without a GPU.

`sparsesim train --device cuda` moves the model and the data to the GPU while torch's default
device stays the CPU; a tensor made without an explicit device then lands on the wrong device
and the step fails (or, indexing across devices, silently reads other data). The same bug class
shows on a CPU-only machine when the roles are swapped: the model and the data live on the CPU
while the default device is ``meta`` (shape-only tensors without data). Every tensor the
trainers make without naming a device then either fails (``Tensor on device meta is not on the
expected device cpu``, ``Cannot copy out of meta tensor``) or gives different numbers. A run
under a foreign default device must give exactly the losses, masks and trace of a plain run.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

import trainers.methods as methods
import trainers.train as train_mod
from traces.format import Trace
from trainers.data import load_dataset
from trainers.train import TrainConfig, train

CASES = [
    dict(method="dense", sparsity=0.0),
    dict(method="swat"),
    dict(method="swat-erk"),
    dict(method="swat-m"),
    dict(method="swat", structured=True),
    dict(method="swat", topk_period=2),
    dict(method="static", density="uniform"),
    dict(method="static", density="erk", init="eoi"),
    dict(method="static", density="snip"),
    dict(method="static", density="grasp"),
    dict(method="static", density="synflow"),
    dict(method="rigl"),
    dict(method="srigl"),
]
# convolutions with BatchNorm and shortcuts, and attention, on a few methods
CASES += [dict(model="resnet20", **c) for c in (CASES[1], CASES[7], CASES[12])]
CASES += [dict(model="vit-mini", **c) for c in (CASES[1], CASES[9], CASES[11])]


@pytest.fixture(scope="module")
def synthetic():
    return {hw: load_dataset("synthetic", hw, seed=0) for hw in ((28, 28), (32, 32))}


@contextlib.contextmanager
def foreign_default_device(monkeypatch):
    """The model is built on the CPU (as `setup` builds it before `model.to(device)`);
    everything else runs with ``meta`` as torch's default device."""
    build = train_mod.build_model

    def build_on_cpu(*a, **k):
        with torch.device("cpu"):
            return build(*a, **k)

    with monkeypatch.context() as mp:
        mp.setattr(train_mod, "build_model", build_on_cpu)
        torch.set_default_device("meta")
        try:
            yield
        finally:
            torch.set_default_device(None)


def _run(cfg, data, out):
    res = train(cfg, out, record_every=2, data=data)
    return res.losses, res.test_accuracy, Trace(out)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_a_foreign_default_device_changes_nothing(case, synthetic, tmp_path, monkeypatch):
    case = {"model": "lenet5", "sparsity": 0.8, **case}
    # mask updates (drop/grow, SRigL ablation) at steps 2 and 4, inside the recorded window
    orig = methods.RigL.__init__

    def fast(self, *a, **k):
        orig(self, *a, **k)
        self.delta_t = 2

    monkeypatch.setattr(methods.RigL, "__init__", fast)
    cfg = TrainConfig(dataset="synthetic", steps=8, batch=8, **case)
    data = synthetic[(28, 28) if case["model"] == "lenet5" else (32, 32)]
    plain = _run(cfg, data, tmp_path / "plain")
    with foreign_default_device(monkeypatch):
        foreign = _run(cfg, data, tmp_path / "foreign")
    assert foreign[0] == plain[0]  # the same loss at every step, bit for bit
    assert foreign[1] == plain[1]
    a, b = plain[2], foreign[2]
    assert a.steps == b.steps == [0, 2, 4, 6]
    for sa, sb in zip(a, b, strict=True):
        assert sa.meta == sb.meta and sa.events == sb.events
        assert sa.layers.keys() == sb.layers.keys()
        assert sa.file.read_bytes() == sb.file.read_bytes()  # every mask of every phase
    if case["method"] in ("rigl", "srigl"):
        assert any(st.events for st in a)  # the updates did happen


def test_the_foreign_device_check_catches_an_implicit_device(synthetic, tmp_path, monkeypatch):
    """The check above is not vacuous: a batch order drawn without a device fails under it."""
    def batches(n, batch, generator):
        while True:
            perm = torch.randperm(n, generator=generator)  # no device: the default one
            for i in range(0, n - batch + 1, batch):
                yield perm[i:i + batch]

    monkeypatch.setattr(train_mod, "batches", batches)
    cfg = TrainConfig(model="lenet5", dataset="synthetic", steps=2, batch=8)
    train(cfg, data=synthetic[28, 28])  # fine while the default device is the model's
    with foreign_default_device(monkeypatch), pytest.raises((RuntimeError, NotImplementedError)):
        train(cfg, data=synthetic[28, 28])
