"""``record`` on the models and loops a researcher brings: it trains to the same bits, writes a
trace that loads and simulates, with the right layer table, or refuses with a clear error.

What a trace cannot say (a layer run twice per step or only inside the backward, a conv whose
batch is not the model's) is refused in one line.
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from cli.main import main
from traces.format import Trace
from trainers.recorder import record

Batch = tuple[torch.Tensor, torch.Tensor]
Step = Callable[[nn.Module, torch.optim.Optimizer, int, torch.Tensor, torch.Tensor], float]


# ---- models ------------------------------------------------------------------------------------
class Permute(nn.Module):
    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


def conv_zoo() -> nn.Module:
    """Every conv geometry torch offers with zero padding, on a non-square input."""
    return nn.Sequential(
        nn.Conv2d(3, 12, (3, 5), stride=(2, 1), padding=(1, 2), bias=False),  # non-square
        nn.ReLU(),
        nn.Conv2d(12, 24, 3, padding=1, groups=12),  # depthwise, channel multiplier 2
        nn.ReLU(),
        nn.Conv2d(24, 24, 3, padding=1, groups=24, bias=False),  # depthwise
        nn.ReLU(),
        nn.Conv2d(24, 24, 3, padding=(2, 1), dilation=(2, 1), groups=4),  # grouped, dilated
        nn.ReLU(),
        nn.Conv2d(24, 16, (1, 3), stride=2),  # strided, no padding
        Permute(0, 2, 3, 1),
        nn.Linear(16, 16),  # a ConvNeXt-style pointwise layer on (N, H, W, C)
        nn.GELU(),
        nn.Flatten(1, 2),
        nn.Linear(16, 10),  # on (N, H·W, C): tokens
        nn.Flatten(),
        nn.Linear(10 * 3 * 6, 10),
    )


class TinyViT(nn.Module):
    """Patch conv, blocks in a ModuleList of ModuleDicts, a tied weight, an unused layer."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 4, stride=4)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"qkv": nn.Linear(16, 48), "proj": nn.Linear(16, 16, bias=False),
                           "mlp": nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))})
            for _ in range(2))
        self.blocks[1]["proj"].weight = self.blocks[0]["proj"].weight  # shared projection
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 10)
        self.unused = nn.Linear(16, 16)  # defined, never called

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)  # non-contiguous tokens
        for b in self.blocks:
            q, k, v = b["qkv"](t).chunk(3, -1)
            t = t + b["proj"](torch.softmax(q @ k.transpose(1, 2) / 4, -1) @ v)
            t = t + b["mlp"](t)
        return self.head(self.norm(t).mean(1))


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.c2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.c2(F.relu(self.bn(self.c1(x)))))


def resnetish() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), Block(8), Block(8),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 10))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


# ---- helpers -----------------------------------------------------------------------------------
def batches(shape: tuple[int, ...], n: int = 3, seed: int = 1, classes: int = 10) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(*shape, generator=g), torch.randint(0, classes, (shape[0],), generator=g))
            for _ in range(n)]


def plain_step(model, opt, i, x, y) -> float:
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def train(make: Callable[[], nn.Module], data: list[Batch], out: Path | None = None,
          step: Step = plain_step, every: int = 1, **kwargs):
    """Seeded model and SGD, the loop ``step`` over ``data``, inside ``record`` when ``out`` is
    given. Returns the losses, the state afterwards, the model, and each conv/linear module's
    (input shape, output shape) at its first call, in call order."""
    torch.manual_seed(0)
    model = make()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05,
                          momentum=0.9)
    seen: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def shapes(name: str):
        def hook(m: nn.Module, args: tuple, z: torch.Tensor) -> None:
            seen.setdefault(name, (tuple(args[0].shape), tuple(z.shape)))
        return hook

    if out is None:
        losses = [step(model, opt, i, x, y) for i, (x, y) in enumerate(data)]
    else:
        with record(model, out, every=every, **kwargs):
            hooks = [m.register_forward_hook(shapes(n)) for n, m in model.named_modules()
                     if isinstance(m, (nn.Conv2d, nn.Linear))]
            losses = [step(model, opt, i, x, y) for i, (x, y) in enumerate(data)]
            for h in hooks:
                h.remove()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return losses, state, model, seen


def same_training(make, data, out: Path, step: Step = plain_step, **kwargs):
    """Train without and with recording; the losses and the state must be the same bits."""
    losses, state, _, _ = train(make, data, None, step)
    rec_losses, rec_state, model, seen = train(make, data, out, step, **kwargs)
    assert rec_losses == losses
    assert state.keys() == rec_state.keys()
    assert all(torch.equal(state[k], rec_state[k]) for k in state)
    return model, seen


def check_trace(out: Path, model: nn.Module, seen: dict) -> Trace:
    """The trace loads, every step validates, and the layer table is what ran."""
    trace = Trace(out)
    assert len(list(trace)) == len(trace.steps) > 0
    m = trace.manifest
    batch = m.batch_size
    mods = dict(model.named_modules())
    # every layer that ran, in order; the products of two activations beside them
    assert [la.name for la in m.layers if la.kind != "matmul"] == list(seen)
    for la in m.layers:
        if la.kind == "matmul":
            continue
        mod, (x_shape, z_shape) = mods[la.name], seen[la.name]
        assert la.bias == (mod.bias is not None)
        assert la.weight_shape == tuple(mod.weight.shape)
        if isinstance(mod, nn.Conv2d):
            assert la.kind == "conv2d"
            assert (la.in_channels, la.out_channels, la.groups) == (
                mod.in_channels, mod.out_channels, mod.groups)
            assert (la.kernel, la.stride, la.padding, la.dilation) == (
                tuple(mod.kernel_size), tuple(mod.stride), tuple(mod.padding),
                tuple(mod.dilation))
            assert la.ifmap_shape(batch) == x_shape
            assert la.grad_out_shape(batch) == z_shape
        else:
            assert la.kind == "linear"
            assert (la.in_channels, la.out_channels) == (mod.in_features, mod.out_features)
            assert la.tokens == math.prod(x_shape[1:-1])
            assert math.prod(la.ifmap_shape(batch)) == math.prod(x_shape)
            assert math.prod(la.grad_out_shape(batch)) == math.prod(z_shape)
    return trace


def simulate(trace: Path, out: Path) -> None:
    assert main(["simulate", str(trace), "--arch", "tensordash", "--dataflow", "ws",
                 "-o", str(out)]) == 0
    assert (out / "summary.json").is_file()


def is_clear(err: BaseException) -> bool:
    """One line, and not numpy's or torch's words for a symptom."""
    text = str(err)
    return bool(text) and "\n" not in text and "reshape" not in text


# ---- models that work --------------------------------------------------------------------------
def test_conv_geometries_train_identically_and_simulate(tmp_path, capsys):
    model, seen = same_training(conv_zoo, batches((6, 3, 11, 14)), tmp_path / "t")
    trace = check_trace(tmp_path / "t", model, seen)
    assert trace.steps == [0, 1, 2]
    assert trace.manifest.layer("10").tokens == 3 * 6  # a linear on (N, H, W, C)
    simulate(tmp_path / "t", tmp_path / "sim")


def test_token_model_with_nested_containers_and_shared_weights(tmp_path, capsys):
    model, seen = same_training(TinyViT, batches((4, 3, 16, 16)), tmp_path / "t")
    trace = check_trace(tmp_path / "t", model, seen)
    names = [la.name for la in trace.manifest.layers]
    assert "unused" not in names  # never ran: not in the table
    # the model's own q @ kᵀ and softmax @ v, named after the module that ran them (the root)
    assert names[:6] == ["patch", "blocks.0.qkv", "matmul", "matmul#1", "blocks.0.proj",
                         "blocks.0.mlp.0"]
    assert [la.heads for la in trace.manifest.layers if la.kind == "matmul"] == [1] * 4
    assert trace.manifest.layer("blocks.1.qkv").tokens == 16
    assert model.blocks[1]["proj"].weight is model.blocks[0]["proj"].weight  # still tied
    simulate(tmp_path / "t", tmp_path / "sim")


def test_sequential_of_custom_blocks_channels_last_masks_are_the_inputs(tmp_path):
    """BatchNorm in the blocks, channels-last tensors: masks in logical (N, C, H, W) order."""
    data = [(x.to(memory_format=torch.channels_last), y) for x, y in batches((4, 3, 8, 8))]
    inputs: list[torch.Tensor] = []

    def step(model, opt, i, x, y):
        if i == 0:  # each run: the last one's inputs are the recorded run's
            inputs.clear()
            model[2].c2.register_forward_pre_hook(
                lambda m, a: inputs.append(a[0].detach().clone()))
        return plain_step(model, opt, i, x, y)

    def make():
        return resnetish().to(memory_format=torch.channels_last)

    model, seen = same_training(make, data, tmp_path / "t", step)
    trace = check_trace(tmp_path / "t", model, seen)
    for st in trace:
        ifmap = st.layers["2.c2"]["fwd"]["ifmap"]
        assert np.array_equal(ifmap.unpack(), (inputs[st.step] != 0).numpy())


def _accumulate(model, opt, i, x, y):  # two forwards (each with its backward) per update
    loss = F.cross_entropy(model(x), y) / 2
    loss.backward()
    if i % 2:
        opt.step()
        opt.zero_grad()
    return loss.item()


def _eval_passes(model, opt, i, x, y):  # validation inside the loop, three ways
    loss = plain_step(model, opt, i, x, y)
    with torch.no_grad():
        model(x)
    with torch.inference_mode():
        model(x)
    model.eval()
    model(x)  # grad enabled, eval mode: not a training step
    model.train()
    return loss


def _retain_graph(model, opt, i, x, y):  # two losses, two backward passes through one graph
    z = model(x)
    loss = F.cross_entropy(z, y)
    opt.zero_grad()
    loss.backward(retain_graph=True)
    z.pow(2).mean().backward()
    opt.step()
    return loss.item()


def _gradient_penalty(model, opt, i, x, y):  # WGAN-GP style double backward
    x = x.clone().requires_grad_(True)
    z = model(x)
    (gx,) = torch.autograd.grad(z.sum(), x, create_graph=True)
    loss = F.cross_entropy(z, y) + gx.pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


@pytest.mark.parametrize("step", [_accumulate, _eval_passes, _retain_graph, _gradient_penalty],
                         ids=lambda f: f.__name__.strip("_"))
def test_training_loops(step, tmp_path):
    model, seen = same_training(small_cnn, batches((4, 3, 8, 8), n=4), tmp_path / "t", step)
    trace = check_trace(tmp_path / "t", model, seen)
    assert trace.steps == [0, 1, 2, 3]  # one step per training forward


def test_last_partial_batch_is_skipped_with_a_warning(tmp_path):
    data = batches((4, 3, 8, 8), n=3) + batches((3, 3, 8, 8), n=1, seed=2)
    with pytest.warns(UserWarning, match="step 3 has batch 3"):
        model, seen = same_training(small_cnn, data, tmp_path / "t")
    trace = check_trace(tmp_path / "t", model, seen)
    assert trace.steps == [0, 1, 2] and trace.manifest.batch_size == 4


def test_frozen_weight_trains_identically(tmp_path):
    def make():
        model = small_cnn()
        model[2].weight.requires_grad_(False)  # frozen weight, trained bias
        return model

    model, seen = same_training(make, batches((4, 3, 8, 8)), tmp_path / "t")
    check_trace(tmp_path / "t", model, seen)


@pytest.mark.filterwarnings("ignore:Dynamo does not know how to trace")  # graph breaks
def test_record_then_compile(tmp_path):
    compiled: dict[int, nn.Module] = {}

    def step(model, opt, i, x, y):
        if id(model) not in compiled:
            compiled[id(model)] = torch.compile(model, backend="eager")
        cm = compiled[id(model)]
        return plain_step(cm, opt, i, x, y)

    torch._dynamo.reset()
    model, seen = same_training(small_cnn, batches((4, 3, 8, 8)), tmp_path / "t", step)
    check_trace(tmp_path / "t", model, seen)


# ---- what used to be refused ------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's own
@pytest.mark.parametrize("kwargs", [{"padding": "same"}, {"padding": "valid"},
                                    {"padding": 1, "padding_mode": "reflect"},
                                    {"padding": 1, "padding_mode": "circular"},
                                    {"kernel_size": 4, "padding": "same"}],
                         ids=["same", "valid", "reflect", "circular", "same-even"])
def test_string_and_non_zero_padding_record_the_conv_as_computed(kwargs, tmp_path):
    """The conv is recorded as torch ran it: 'same' as its zero padding (an even kernel's
    extra zero after the input), reflect/circular on the input torch padded first."""
    kwargs = {"kernel_size": 3, **kwargs}

    def make():
        return nn.Sequential(nn.Conv2d(3, 4, **kwargs), nn.Flatten(), nn.LazyLinear(10))

    data = batches((2, 3, 6, 6), n=2)
    same_training(make, data, tmp_path / "t")
    trace = Trace(tmp_path / "t")
    conv = trace.manifest.layer("0")
    ho = 4 if kwargs.get("padding") == "valid" else 6
    assert conv.out_hw == (ho, ho)
    if "padding_mode" in kwargs:  # torch padded the input: the conv itself has none
        assert conv.input_hw == (8, 8) and conv.padding == (0, 0)
    assert len(list(trace)) == 2


def test_layer_called_twice_per_forward_is_two_products(tmp_path):
    """Recurrence through one module: each call is a GEMM of the step, the later one named
    ``#1``; both get their own dZ."""

    class Recurrent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.cell(torch.tanh(self.cell(x)))

    model = Recurrent()
    with record(model, tmp_path / "t", every=1):
        model(torch.rand(2, 4)).sum().backward()
    trace = Trace(tmp_path / "t")
    assert [la.name for la in trace.manifest.layers] == ["cell", "cell#1"]
    (st,) = list(trace)
    assert st.meta["bwd_input_not_computed"] == ["cell"]  # the input needs no gradient


def test_a_bare_layer_as_the_model(tmp_path):
    model = nn.Linear(4, 3)
    with record(model, tmp_path / "t", every=1):
        model(torch.rand(2, 4)).sum().backward()
    assert [la.name for la in Trace(tmp_path / "t").manifest.layers] == ["linear"]
    assert type(model) is nn.Linear


# ---- exceptions inside the block ---------------------------------------------------------------
def test_exception_keeps_the_finished_steps(tmp_path):
    model = small_cnn()
    data = batches((4, 3, 8, 8), n=3)
    with pytest.raises(RuntimeError, match="diverged"):
        with record(model, tmp_path / "t", every=1):
            for x, y in data:
                F.cross_entropy(model(x), y).backward()
            model(data[0][0])  # a forward whose backward never comes
            raise RuntimeError("diverged")
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert torch._C._len_torch_function_stack() == 0  # the function mode is off
    assert not torch.nn.modules.module._global_forward_hooks
    trace = Trace(tmp_path / "t")
    assert trace.steps == [0, 1, 2] and len(list(trace)) == 3
    simulate(tmp_path / "t", tmp_path / "sim")


def test_exception_in_the_first_step_leaves_nothing_and_a_rerun_works(tmp_path):
    model = small_cnn()
    with pytest.raises(IndexError):
        with record(model, tmp_path / "t"):
            F.cross_entropy(model(torch.rand(4, 3, 8, 8)), torch.tensor([0, 1, 2, 99]))
    assert not (tmp_path / "t").exists()  # no trace that cannot be read
    with record(model, tmp_path / "t", every=1):  # the fixed loop, into the same directory
        F.cross_entropy(model(torch.rand(4, 3, 8, 8)), torch.tensor([0, 1, 2, 3])).backward()
    assert Trace(tmp_path / "t").steps == [0]


def test_no_training_step_warns_and_writes_nothing(tmp_path):
    """A model left in eval mode, or training forwards whose backward never comes: one warning
    and no trace; a directory that existed before is left in place, empty."""
    model = small_cnn().eval()
    with pytest.warns(UserWarning, match="no training step was recorded"):
        with record(model, tmp_path / "t", every=1):
            model(torch.rand(4, 3, 8, 8)).sum().backward()
    assert not (tmp_path / "t").exists()
    model.train()
    (tmp_path / "u").mkdir()
    with pytest.warns(UserWarning, match="no training step was recorded"):
        with record(model, tmp_path / "u", every=1):
            model(torch.rand(4, 3, 8, 8))  # no backward
    assert (tmp_path / "u").is_dir() and not any((tmp_path / "u").iterdir())


# ---- known bugs --------------------------------------------------------------------------------
def test_bfloat16_autocast(tmp_path):
    def step(model, opt, i, x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z = model(x)
        loss = F.cross_entropy(z.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    model, seen = same_training(small_cnn, batches((4, 3, 8, 8)), tmp_path / "t", step)
    trace = check_trace(tmp_path / "t", model, seen)
    assert trace.manifest.dtype == "bfloat16"  # the GEMMs ran in autocast's dtype


def test_frozen_stem_fine_tuning(tmp_path):
    """A layer with no backward at all (frozen, its input needs no gradient): its forward is
    recorded, both of its gradient GEMMs are listed as not computed, and simulate leaves them
    out; training is unchanged."""
    from simulator.arch import load_arch
    from simulator.run import simulate_trace

    def make():
        model = small_cnn()
        model[0].requires_grad_(False)
        return model

    model, seen = same_training(make, batches((4, 3, 8, 8)), tmp_path / "t")
    trace = check_trace(tmp_path / "t", model, seen)
    assert trace.steps == [0, 1, 2]
    for st in trace:
        # layer 2's input comes from the frozen stem: it needs no gradient either
        assert sorted(st.meta["bwd_input_not_computed"]) == ["0", "2"]
        assert st.meta["bwd_weight_not_computed"] == ["0"]
        assert st.layers["0"]["bwd_weight"]["grad_out"].dense  # a placeholder, never simulated
    res = simulate_trace(str(tmp_path / "t"), load_arch("tensordash"), "ws", steps=[0])
    gemms = set(zip(res.table["Layer"], res.table["Phase"], strict=True))
    assert gemms == {("0", "fwd"), ("2", "fwd"), ("5", "fwd"), ("2", "bwd_weight"),
                     ("5", "bwd_input"), ("5", "bwd_weight")}
    # the dense step is the same GEMMs: its totals are the rows' Dense Cycles (they were the
    # whole baseline's, frozen GEMMs included)
    from simulator.results import summarize

    assert set(zip(res.baseline["Layer"], res.baseline["Phase"], strict=True)) == gemms
    rows = res.table[res.table["Phase"].isin(["fwd", "bwd_input", "bwd_weight"])]
    assert summarize(res)["baseline_per_step"]["cycles"] == int(rows["Dense Cycles"].sum())


@pytest.mark.parametrize("frozen", [False, True])
def test_frozen_weight_dw_is_not_computed_nor_simulated(frozen, tmp_path):
    """A frozen weight's dW does not run: the step says so, and simulate leaves that GEMM
    out of the sparse run and of its dense baseline."""
    from simulator.arch import load_arch
    from simulator.run import simulate_trace

    model = mlp()
    model[2].weight.requires_grad_(not frozen)
    with record(model, tmp_path / "t", every=1):
        model(torch.rand(2, 4)).sum().backward()
    (st,) = list(Trace(tmp_path / "t"))
    assert st.meta.get("bwd_weight_not_computed") == (["2"] if frozen else None)
    res = simulate_trace(str(tmp_path / "t"), load_arch("tensordash"), "ws")
    gemms = set(zip(res.table["Layer"], res.table["Phase"], strict=True))
    want = {("0", "fwd"), ("2", "fwd"), ("2", "bwd_input"), ("0", "bwd_weight")}
    assert gemms == want | (set() if frozen else {("2", "bwd_weight")})
    row = res.table[(res.table["Layer"] == "2") & (res.table["Phase"] == "fwd")].iloc[0]
    assert row["Dense Cycles"] > 0


def test_two_views_one_backward(tmp_path):
    model = mlp()
    w = torch.tensor([[1.0, 0, 1], [1, 1, 0]])
    with record(model, tmp_path / "t", every=1):
        a, b = model(torch.rand(2, 4)), model(torch.rand(2, 4))
        ((a * w).sum() + (b * (1 - w)).sum()).backward()
    trace = Trace(tmp_path / "t")
    assert trace.steps == [0, 1]
    for st, dz in zip(trace, (w, 1 - w), strict=True):
        got = st.layers["2"]["bwd_input"]["grad_out"].unpack()
        assert np.array_equal(got, (dz != 0).numpy().reshape(2, 1, 3))


def test_eval_mode_backward_between_steps(tmp_path):
    model = mlp()
    w = torch.tensor([[1.0, 0, 1], [1, 1, 0]])
    with record(model, tmp_path / "t", every=1):
        (model(torch.rand(2, 4)) * w).sum().backward()  # step 0: dZ of layer 2 is w
        model.eval()
        x = torch.rand(2, 4, requires_grad=True)
        (model(x) * (1 - w)).sum().backward()  # an attack's input gradient, not a step
        model.train()
    (st,) = list(Trace(tmp_path / "t"))
    got = st.layers["2"]["bwd_input"]["grad_out"].unpack()
    assert np.array_equal(got, (w != 0).numpy().reshape(2, 1, 3))


def test_module_shared_across_list_slots(tmp_path):
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(4, 8)
            self.layers = nn.ModuleList([nn.Linear(8, 8)] * 3)  # ALBERT-style sharing
            self.out = nn.Linear(8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.inp(x)
            for layer in self.layers:
                h = torch.tanh(layer(h))
            return self.out(h)

    try:
        same_training(Shared, batches((4, 4)), tmp_path / "t")
    except ValueError as err:  # refusing it clearly is a fix too
        assert is_clear(err) and "layers" in str(err)
        return
    assert len(Trace(tmp_path / "t").manifest.layers) == 5


class _Checkpointed(nn.Module):
    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.stem, self.mid, self.head = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 10)
        self.reentrant = reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = checkpoint(lambda t: torch.relu(self.mid(t)), h, use_reentrant=self.reentrant)
        return self.head(h)


def test_activation_checkpointing(tmp_path):
    """The recompute inside the backward is not a second call: the step keeps the first
    forward's operands and gets the dZ of the recomputed layer."""
    model, seen = same_training(lambda: _Checkpointed(False), batches((4, 4)), tmp_path / "t")
    trace = check_trace(tmp_path / "t", model, seen)
    assert [la.name for la in trace.manifest.layers] == ["stem", "mid", "head"]
    assert trace.steps == [0, 1, 2]


def test_reentrant_activation_checkpointing_is_named_and_left_out(tmp_path):
    """Its first pass runs under no_grad: the layer's GEMMs are named in one warning, listed in
    the manifest with their share, and the rest is recorded."""
    model = _Checkpointed(True)
    with pytest.warns(UserWarning, match="use_reentrant=False") as warned:
        with record(model, tmp_path / "t", every=1):
            x, y = batches((4, 4))[0]
            F.cross_entropy(model(x), y).backward()
    assert sum("not in the trace" in str(w.message) for w in warned) == 1
    assert "'mid'" in next(str(w.message) for w in warned if "not in the trace" in
                           str(w.message))
    m = Trace(tmp_path / "t").manifest
    assert [la.name for la in m.layers] == ["stem", "head"]
    (left,) = m.coverage["unrecorded"]
    assert left["module"] == "mid" and left["macs"] == 3 * 4 * 8 * 8


def test_frames_folded_into_the_batch(tmp_path):
    class Frames(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.frames = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n, t = x.shape[:2]
            h = self.frames(x.flatten(0, 1)).mean((2, 3)).view(n, t, 4).mean(1)
            return self.fc(h)

    # a trace's conv sees the batch: this one is named, left out, and counted
    with pytest.warns(UserWarning, match="'frames'.*folded into the batch"):
        same_training(Frames, batches((2, 5, 3, 8, 8)), tmp_path / "t")
    m = Trace(tmp_path / "t").manifest
    assert [la.name for la in m.layers] == ["fc"]
    assert [u["module"] for u in m.coverage["unrecorded"]] == ["frames"]
    assert m.coverage["percent"] < 50


def test_keyword_call_with_a_partial_last_batch(tmp_path):
    class Kw(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 10)

        def forward(self, *, features: torch.Tensor) -> torch.Tensor:
            return self.fc(features)

    model = Kw()
    try:
        with pytest.warns(UserWarning, match="batch 3"):
            with record(model, tmp_path / "t", every=1):
                for n in (4, 4, 3):
                    model(features=torch.rand(n, 4)).sum().backward()
    except ValueError as err:  # a clear refusal is a fix too
        assert is_clear(err) and "batch" in str(err)
        return
    assert Trace(tmp_path / "t").steps == [0, 1]


@pytest.mark.parametrize("snapshot", [copy.deepcopy, lambda m: torch.save(m, io.BytesIO())],
                         ids=["deepcopy", "torch_save"])
def test_snapshot_of_the_model_inside_the_loop(snapshot, tmp_path):
    model = mlp()
    with record(model, tmp_path / "t", every=1):
        model(torch.rand(2, 4)).sum().backward()
        snapshot(model)
    assert Trace(tmp_path / "t").steps == [0]


def test_compile_then_record(tmp_path):
    torch._dynamo.reset()

    def make():
        return torch.compile(small_cnn(), backend="eager")

    try:
        same_training(make, batches((4, 3, 8, 8)), tmp_path / "t")
    except ValueError as err:  # refusing at record() time, saying why, is a fix too
        assert is_clear(err) and "compile" in str(err)
        return
    assert Trace(tmp_path / "t").steps == [0, 1, 2]


def test_a_step_whose_backward_comes_late_is_listed_in_order(tmp_path):
    """Three forwards, then the backwards of the second, the first and the third: all are
    written, and the manifest lists them in step order."""
    model = mlp()
    with record(model, tmp_path / "t", every=1):
        a, b, c = (model(torch.rand(2, 4)) for _ in range(3))
        b.sum().backward()
        a.sum().backward()
        c.sum().backward()
    trace = Trace(tmp_path / "t")
    assert trace.steps == [0, 1, 2]
    assert [s["step"] for s in trace.manifest.steps] == [0, 1, 2]
