"""The recorder: what it writes is what was multiplied, and it never changes the training."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import TraceError
from traces.format import Trace
from trainers.data import load_dataset
from trainers.recorder import record
from trainers.train import TrainConfig, train


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset("synthetic", (28, 28), seed=0)


@pytest.mark.parametrize("method", ["swat", "rigl"])
def test_recording_does_not_change_the_training(method, synthetic, tmp_path):
    cfg = TrainConfig(model="lenet5", dataset="synthetic", method=method, sparsity=0.8,
                      steps=12, batch=16)
    if method == "rigl":  # mask updates inside the recorded window
        import trainers.methods as methods

        orig = methods.RigL.__init__

        def fast(self, *a, **k):
            orig(self, *a, **k)
            self.delta_t = 3

        methods.RigL.__init__ = fast
    try:
        plain = train(cfg, data=synthetic)
        recorded = train(cfg, tmp_path / "t", record_every=2, data=synthetic)
    finally:
        if method == "rigl":
            methods.RigL.__init__ = orig
    assert recorded.losses == plain.losses  # bit for bit
    assert recorded.test_accuracy == plain.test_accuracy
    trace = Trace(tmp_path / "t")
    assert trace.steps == [0, 2, 4, 6, 8, 10]
    steps = list(trace)  # every step validates
    if method == "rigl":
        events = [e for st in steps for e in st.events]
        assert {e["step"] for e in events} == {3, 6}  # t_end = 9
        assert all(e["type"] == "mask_update" for e in events)
        # the dense dW of an update step is not masked; every other step's is
        by_step = {st.step: st for st in steps}
        assert "grad_w" in by_step[4].layers["conv2"]["bwd_weight"]
        assert "grad_w" not in by_step[6].layers["conv2"]["bwd_weight"]
    else:
        assert "thresholds" in steps[0].meta


@pytest.mark.parametrize("codec", [None, "packbits"])
def test_own_model_and_loop_masks_are_the_multiplied_operands(tmp_path, codec):
    """A user's plain model: natural zeros of A and dZ recorded as they were multiplied, in
    the mask codec asked for (``gaps-zstd`` by default)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    xs = [torch.rand(5, 1, 8, 8, generator=g) * (torch.rand(5, 1, 8, 8, generator=g) > 0.5)
          for _ in range(4)]
    inputs: dict[int, torch.Tensor] = {}
    grads: dict[int, torch.Tensor] = {}
    kw = {} if codec is None else {"codec": codec}
    with record(model, tmp_path / "t", every=2, model_name="toy", **kw) as rec:
        model[4].register_forward_pre_hook(
            lambda m, a: inputs.__setitem__(len(inputs), a[0].detach().clone()))
        for x in xs:
            z = model(x)
            z.register_hook(lambda g_: grads.__setitem__(len(grads), g_.clone()))
            loss = F.cross_entropy(z, torch.tensor([0, 1, 2, 0, 1]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert rec.path == tmp_path / "t"
    trace = Trace(tmp_path / "t")
    m = trace.manifest
    assert (m.model, m.method, m.batch_size, m.dtype) == ("toy", "dense", 5, "float32")
    assert [la.name for la in m.layers] == ["0", "4", "6"]
    assert m.layer("4").tokens == 1 and m.layer("0").input_hw == (8, 8)
    assert trace.steps == [0, 2]
    for st in trace:
        assert st.codec == (codec or "gaps-zstd")
        x = xs[st.step]
        conv = st.layers["0"]
        assert np.array_equal(conv["fwd"]["ifmap"].unpack(), x.numpy() != 0)
        assert conv["fwd"]["filter"].dense  # no weight is zero
        fc1 = st.layers["4"]
        want = (inputs[st.step] != 0).numpy().reshape(5, 1, 64)
        assert np.array_equal(fc1["fwd"]["ifmap"].unpack(), want)  # natural ReLU zeros
        assert np.array_equal(fc1["bwd_weight"]["ifmap"].unpack(), want)
        assert not fc1["bwd_input"]["grad_out"].dense  # ReLU backward zeros are real
        out = st.layers["6"]["bwd_input"]["grad_out"]
        assert out.dense == bool((grads[st.step] != 0).all())  # dense only when all nonzero
        assert st.meta.get("bwd_input_not_computed") == ["0"]  # the input needs no gradient


def test_recorded_trace_simulates(tmp_path):
    torch.manual_seed(0)
    data = load_dataset("synthetic", (28, 28), seed=1)
    cfg = TrainConfig(model="lenet5", dataset="synthetic", method="swat", sparsity=0.9,
                      steps=3, batch=8)
    train(cfg, tmp_path / "t", record_every=1, data=data)
    r = subprocess.run([sys.executable, "-m", "cli.main", "simulate", str(tmp_path / "t"),
                        "--arch", "tensordash", "-o", str(tmp_path / "sim")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "simulated lenet5" in r.stdout
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert manifest["producer"]["tool"] == "train" and manifest["method"] == "swat"
    assert manifest["sparsity"]["topk_period"] == 10


def test_odd_batch_steps_are_skipped_and_existing_traces_refused(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3))
    with pytest.warns(UserWarning, match="batch 2"), \
            record(model, tmp_path / "t", every=1, background=False):
        for n in (3, 2, 3):
            model(torch.rand(n, 4)).sum().backward()
    assert Trace(tmp_path / "t").steps == [0, 2]
    with pytest.raises(TraceError, match="already holds a trace"), \
            record(model, tmp_path / "t", every=1):
        model(torch.rand(3, 4)).sum().backward()


def test_eval_passes_and_forward_only_steps_are_not_recorded(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3))
    with record(model, tmp_path / "t", every=1) as rec:
        model(torch.rand(2, 4)).sum().backward()
        with torch.no_grad():
            model(torch.rand(7, 4))  # no step
        model.eval()
        model(torch.rand(7, 4))  # no step
        model.train()
        model(torch.rand(2, 4))  # step 1: no backward, not written
        model(torch.rand(2, 4)).sum().backward()  # step 2
        assert rec.step == 2
    assert Trace(tmp_path / "t").steps == [0, 2]


def test_recording_a_plain_model_does_not_change_its_training(tmp_path):
    """A user's model of plain nn.Conv2d/nn.Linear with biases: recording swaps in the sparse
    twins, and the weights after training are the same bits as without recording."""

    def run(out):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3),
                              nn.ReLU(), nn.Flatten(), nn.Linear(16 * 10 * 10, 10))
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        g = torch.Generator().manual_seed(2)
        batches = [(torch.randn(32, 3, 12, 12, generator=g), torch.randint(0, 10, (32,),
                                                                             generator=g))
                   for _ in range(5)]

        def loop():
            losses = []
            for x, y in batches:
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
            return losses

        if out is None:
            return loop(), [p.detach().clone() for p in model.parameters()]
        with record(model, out, every=2):
            losses = loop()
        return losses, [p.detach().clone() for p in model.parameters()]

    plain_losses, plain = run(None)
    rec_losses, recorded = run(tmp_path / "t")
    assert rec_losses == plain_losses
    assert all(torch.equal(a, b) for a, b in zip(plain, recorded, strict=True))
    assert Trace(tmp_path / "t").steps == [0, 2, 4]
