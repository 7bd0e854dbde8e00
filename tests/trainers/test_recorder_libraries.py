"""``record`` on models from libraries nobody here wrote, each from a small config on the CPU:
every matrix product of the step is in the trace (checked against torch's flop counter), the
training is the same bits with and without recording, and the trace simulates."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cli.main import main
from traces.format import Trace
from trainers.flops import training_macs
from trainers.recorder import record

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()


# ---- models ------------------------------------------------------------------------------------
def gpt2() -> nn.Module:
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=16,
                                  attn_implementation="eager")
    return transformers.GPT2LMHeadModel(cfg)


def bert() -> nn.Module:
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, vocab_size=64,
                                  max_position_embeddings=16, attn_implementation="eager")
    return transformers.BertForMaskedLM(cfg)


def llama() -> nn.Module:
    """A decoder on scaled_dot_product_attention, grouped-query (4 heads, 2 key/value heads)."""
    cfg = transformers.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=64, vocab_size=64,
                                   max_position_embeddings=16, attn_implementation="sdpa")
    return transformers.LlamaForCausalLM(cfg)


def efficientnet() -> nn.Module:
    ep = pytest.importorskip("efficientnet_pytorch")
    return ep.EfficientNet.from_name("efficientnet-b0", num_classes=10, image_size=32,
                                     width_coefficient=0.25, depth_coefficient=0.25)


class Encoder(nn.Module):
    """torch's TransformerEncoder on token embeddings (its MultiheadAttention's packed in_proj
    is a bare parameter, its out_proj a Linear subclass called functionally)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(64, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 64)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(ids)))


def _tokens(i: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(i)
    ids = torch.randint(0, 64, (2, 12), generator=g)
    return {"input_ids": ids, "labels": ids}


def _lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).loss


def _encoder_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    ids = batch["input_ids"]
    return F.cross_entropy(model(ids).flatten(0, 1), ids.flatten())


def _images(i: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(i)
    return {"x": torch.randn(2, 3, 32, 32, generator=g), "y": torch.randint(0, 10, (2,),
                                                                               generator=g)}


def _image_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(model(batch["x"]), batch["y"])


MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[int], dict], Callable]] = {
    "gpt2": (gpt2, _tokens, _lm_loss),
    "bert": (bert, _tokens, _lm_loss),
    "llama-sdpa": (llama, _tokens, _lm_loss),
    "efficientnet-b0": (efficientnet, _images, _image_loss),
    "transformer-encoder": (Encoder, _tokens, _encoder_loss),
}


# ---- helpers -----------------------------------------------------------------------------------
def train(make, data, loss_fn, out: Path | None, steps: int = 2, every: int = 1, **kwargs):
    """Seeded model and Adam, ``steps`` steps (dropout on: the recorder draws no random
    number); inside ``record`` when ``out`` is given. Returns losses, state, model."""
    torch.manual_seed(0)
    model = make()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    torch.manual_seed(1)

    def loop() -> list[float]:
        losses = []
        for i in range(steps):
            loss = loss_fn(model, data(i))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    if out is None:
        losses = loop()
    else:
        with record(model, out, every=every, **kwargs):
            losses = loop()
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}, model


def trace_macs(trace: Trace, step: int | None = None) -> int:
    """Training MACs the trace holds for one step: every layer's GEMMs that the step says
    ran."""
    m = trace.manifest
    st = trace.read_step(step if step is not None else trace.steps[0])
    skip_x = set(st.meta.get("bwd_input_not_computed", ()))
    skip_w = set(st.meta.get("bwd_weight_not_computed", ()))
    return sum(la.macs(m.batch_size) * (1 + (la.name not in skip_x) + (la.name not in skip_w))
               for la in m.layers)


def reference_macs(make, data, loss_fn) -> int:
    torch.manual_seed(0)
    model = make()
    model.train()
    return training_macs(lambda: loss_fn(model, data(0)).backward())


def simulate(trace: Path, out: Path) -> None:
    assert main(["simulate", str(trace), "--arch", "tensordash", "--dataflow", "ws",
                 "--memory", "ideal", "-o", str(out)]) == 0


# ---- every product, the same training ----------------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_library_model_records_every_product_and_trains_the_same(name, tmp_path):
    make, data, loss_fn = MODELS[name]
    losses, state, _ = train(make, data, loss_fn, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left out, nothing to warn about
        warnings.filterwarnings("ignore", "trace: scaled_dot_product_attention with dropout")
        rec_losses, rec_state, _ = train(make, data, loss_fn, tmp_path / "t")
    assert rec_losses == losses  # bit for bit
    assert all(torch.equal(state[k], rec_state[k]) for k in state)
    trace = Trace(tmp_path / "t")
    assert trace.steps == [0, 1]
    ref = reference_macs(make, data, loss_fn)
    got = trace_macs(trace)
    assert got / ref >= 0.995, (got, ref)
    assert got == ref  # every product, no more: the corrected counter agrees to the MAC
    cov = trace.manifest.coverage
    assert cov["percent"] >= 99.5 and cov["recorded_macs"] == got and not cov["unrecorded"]
    kinds = {la.kind for la in trace.manifest.layers}
    if name != "efficientnet-b0":
        assert "matmul" in kinds  # attention's activation products
    if name == "efficientnet-b0":
        simulate(tmp_path / "t", tmp_path / "sim")


def test_gpt2_layer_table_and_the_first_layers_input_gradient(tmp_path):
    """GPT-2's Conv1D layers, its attention products (per head), the tied lm_head; the first
    product's input comes from a trainable embedding, so its bwd_input runs and is simulated."""
    make, data, loss_fn = MODELS["gpt2"]
    train(make, data, loss_fn, tmp_path / "t", steps=1)
    trace = Trace(tmp_path / "t")
    layers = {la.name: la for la in trace.manifest.layers}
    names = list(layers)
    assert names[:4] == ["transformer.h.0.attn.c_attn", "transformer.h.0.attn.matmul",
                         "transformer.h.0.attn.matmul#1", "transformer.h.0.attn.c_proj"]
    assert names[-1] == "lm_head"
    qk = layers["transformer.h.0.attn.matmul"]
    assert (qk.kind, qk.heads, qk.tokens, qk.in_channels, qk.out_channels) == (
        "matmul", 2, 12, 16, 12)
    c_attn = layers["transformer.h.0.attn.c_attn"]
    assert (c_attn.kind, c_attn.in_channels, c_attn.out_channels, c_attn.tokens) == (
        "linear", 32, 96, 12)
    (st,) = list(trace)
    assert "bwd_input_not_computed" not in st.meta  # every input needs its gradient
    simulate(tmp_path / "t", tmp_path / "sim")
    import pandas as pd

    rows = pd.read_csv(tmp_path / "sim" / "COMPUTE_REPORT.csv")
    first = rows[(rows["Layer"] == names[0]) & (rows["Phase"] == "bwd_input")]
    assert len(first) == 1


# ---- the masks are the operands multiplied -----------------------------------------------------
def test_attention_masks_are_the_operands_and_gradients(tmp_path):
    """A causal SDPA and an einsum/matmul attention: the recorded masks equal the operands
    computed here and the gradients autograd gives (P = 0 above the diagonal, so is dS)."""

    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(8, 24)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k, v = self.qkv(x).view(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            s = torch.einsum("bhld,bhsd->bhls", q, k).softmax(-1)
            return a + s @ v

    torch.manual_seed(0)
    model = Attn()
    x = torch.randn(2, 5, 8)
    seen: dict[str, torch.Tensor] = {}
    with record(model, tmp_path / "t", every=1):
        out = model(x)
        out.register_hook(lambda g: seen.__setitem__("dout", g.clone()))
        out.pow(2).sum().backward()
    trace = Trace(tmp_path / "t")
    names = [la.name for la in trace.manifest.layers]
    assert names == ["qkv", "sdpa.qk", "sdpa.av", "einsum", "matmul"]
    (st,) = list(trace)
    with torch.no_grad():
        q, k, v = model.qkv(x).view(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
        p = torch.softmax((q @ k.transpose(-2, -1) / 2).masked_fill(
            ~torch.ones(5, 5, dtype=torch.bool).tril(), float("-inf")), -1)
    qk, av = st.layers["sdpa.qk"], st.layers["sdpa.av"]
    assert np.array_equal(qk["fwd"]["ifmap"].unpack(), (q != 0).numpy())
    assert np.array_equal(qk["fwd"]["filter"].unpack(), (k.transpose(-2, -1) != 0).numpy())
    assert np.array_equal(av["fwd"]["ifmap"].unpack(), (p != 0).numpy())
    assert not av["fwd"]["ifmap"].unpack()[..., 0, 1:].any()  # causal: P's upper triangle
    assert not qk["bwd_input"]["grad_out"].unpack()[..., 0, 1:].any()  # dS = P ⊙ (...)
    assert np.array_equal(av["bwd_weight"]["grad_out"].unpack(), (seen["dout"] != 0).numpy())
    mm = st.layers["matmul"]
    assert np.array_equal(mm["bwd_input"]["grad_out"].unpack(), (seen["dout"] != 0).numpy())
    layer = trace.manifest.layer("einsum")
    assert (layer.heads, layer.tokens, layer.in_channels, layer.out_channels) == (2, 5, 4, 5)


# ---- pruning: the mask multiplied --------------------------------------------------------------
def _cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))


def _prune(model: nn.Module, api: str) -> Any:
    if api == "nn.utils.prune":
        from torch.nn.utils import prune

        for i in (0, 2, 5):
            prune.l1_unstructured(model[i], "weight", amount=0.6)
        return None
    from torch.ao.pruning import WeightNormSparsifier

    sp = WeightNormSparsifier(sparsity_level=0.6, sparse_block_shape=(1, 1),
                              zeros_per_block=1)
    sp.prepare(model, [{"tensor_fqn": "5.weight"}])  # its norm rule takes 2-D weights
    sp.step()
    return sp


def _pruned_run(api: str, when: str, out: Path | None):
    """Three steps; the model is pruned before ``record`` or after its first recorded step.
    Returns losses, state, and the weight masks multiplied at each step."""
    torch.manual_seed(0)
    model = _cnn()
    if when == "before":
        _prune(model, api)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g))
            for _ in range(3)]
    masks: list[torch.Tensor] = []
    watched = model[5] if api.startswith("ao") else model[2]
    losses: list[float] = []

    def loop(ctx: Any) -> None:
        with ctx:
            for i, (x, y) in enumerate(data):
                if i == 1 and when == "after":
                    _prune(model, api)
                masks.append((watched.weight != 0).clone())
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())

    import contextlib

    loop(record(model, out, every=1) if out is not None else contextlib.nullcontext())
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}, masks


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("api", ["nn.utils.prune", "ao.WeightNormSparsifier"])
def test_pruned_layers_record_the_mask_multiplied(api, when, tmp_path):
    losses, state, _ = _pruned_run(api, when, None)
    rec_losses, rec_state, masks = _pruned_run(api, when, tmp_path / "t")
    assert rec_losses == losses
    assert state.keys() == rec_state.keys()
    assert all(torch.equal(state[k], rec_state[k]) for k in state)
    trace = Trace(tmp_path / "t")
    assert [la.name for la in trace.manifest.layers] == ["0", "2", "5"]
    name = "5" if api.startswith("ao") else "2"
    for st in trace:
        got = st.layers[name]["fwd"]["filter"].unpack()
        assert np.array_equal(got, masks[st.step].numpy())
        if st.step >= 1 or when == "before":
            assert got.mean() < 0.5  # pruned to 40 %
        assert st.layers[name]["bwd_input"]["filter"].unpack().sum() == got.sum()
    layer = trace.manifest.layer("2")
    assert layer.groups == 2
    # the corrected counter (a grouped conv's dW counted once, the first conv's dX not
    # computed: its input needs no gradient) agrees with the trace
    torch.manual_seed(0)
    model = _cnn()
    x = torch.randn(4, 3, 8, 8)
    assert trace_macs(trace, 0) == training_macs(lambda: model(x).sum().backward())
    assert trace.read_step(0).meta["bwd_input_not_computed"] == ["0"]


# ---- nothing silent ----------------------------------------------------------------------------
torch.library.define("sparsesim_test::mix", "(Tensor x, Tensor w) -> Tensor")


@torch.library.impl("sparsesim_test::mix", "cpu")
def _mix(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x @ w


def test_unrecordable_products_are_named_once_and_counted(tmp_path, capsys):
    """An LSTM (torch's recurrent kernel) and a custom op: one warning names both, the
    manifest lists them with their share of the step's MACs, the rest is recorded."""

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(8, 16, batch_first=True)
            self.register_buffer("w", torch.randn(16, 16))
            self.head = nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, _ = self.rnn(x)
            # a custom op has no autograd here: the LSTM gets no gradient, and neither does
            # the head's input
            return self.head(torch.ops.sparsesim_test.mix(h.detach(), self.w))

    model = Mixed()
    with pytest.warns(UserWarning, match="not in the trace") as warned:
        with record(model, tmp_path / "t", every=1):
            model(torch.randn(2, 5, 8)).sum().backward()
    text = [str(w.message) for w in warned if "not in the trace" in str(w.message)]
    assert len(text) == 1 and "torch.lstm in 'rnn'" in text[0] and "mix" in text[0]
    cov = Trace(tmp_path / "t").manifest.coverage
    left = {u["op"]: u for u in cov["unrecorded"]}
    lstm = 3 * 2 * 5 * 4 * 16 * (8 + 16)  # 3 phases × rows × gates·hidden·(in + hidden)
    assert left["torch.lstm"]["macs"] == lstm and left["torch.lstm"]["module"] == "rnn"
    mix = next(u for op, u in left.items() if "mix" in op)
    assert mix["macs"] == 3 * 2 * 5 * 16 * 16
    assert cov["recorded_macs"] == 2 * (2 * 5 * 16 * 4)  # the head's fwd and dW, no dX
    assert cov["training_macs"] == cov["recorded_macs"] + lstm + mix["macs"]
    assert math.isclose(left["torch.lstm"]["percent"], 100 * lstm / cov["training_macs"],
                        abs_tol=1e-3)
    assert main(["info", str(tmp_path / "t")]) in (0, None)
    text = capsys.readouterr().out
    assert f"coverage: {cov['percent']:.2f} % of the step's training MACs" in text
    assert "not recorded: torch.lstm in 'rnn'" in text


def test_a_frozen_encoder_under_no_grad_is_named(tmp_path):
    """A product run with autograd off inside the training forward has no backward to
    observe: named and counted, not silently dropped."""

    class Frozen(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.teacher, self.student = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                t = self.teacher(x)
            return self.student(x) - t

    model = Frozen()
    with pytest.warns(UserWarning, match="'teacher'.*autograd off"):
        with record(copy.deepcopy(model), tmp_path / "t", every=1) as rec:
            rec.model(torch.randn(3, 4)).sum().backward()
    m = Trace(tmp_path / "t").manifest
    assert [la.name for la in m.layers] == ["student"]
    assert m.coverage["unrecorded"][0]["module"] == "teacher"
