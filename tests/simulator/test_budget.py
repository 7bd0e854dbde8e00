"""The up-front cost estimate (``simulator.budget``): its fold counts are the tile schedule's,
its tile counts an upper bound on the schedule's, and the subcommands refuse work estimated over
the limits before starting (one line, the estimate and the flag, nothing written), and run it
with ``--allow-huge``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import simulator.budget as budget
from simulator.arch import load_arch
from simulator.budget import estimate_network, estimate_synth, gemm_counts
from simulator.run import _plan, half_buffer_words
from tests.fuzz.test_hostile_paths import cli, refused
from traces.layers import Layer
from traces.models import get_model
from traces.synth import SynthConfig, synthesize

#: layers whose schedules exercise chunking (big fresh operands), merging (small folds),
#: im2col storage (stride > kernel), grouped and depthwise convolutions, products of two
#: activations and a strided bwd_input lowered per output phase
LAYERS = (
    Layer.conv("c1", 3, 16, 3, 32, stride=1, padding=1),
    Layer.conv("c2", 16, 32, 3, 16, stride=2, padding=1),
    Layer.conv("c3", 64, 64, 1, 14, stride=3),
    Layer.conv("dw", 32, 32, 3, 16, stride=1, padding=1, groups=32),
    Layer.conv("gr", 32, 64, 3, 8, stride=2, padding=1, groups=4),
    Layer.linear("fc", 2048, 1000),
    Layer.linear("tok", 96, 300, tokens=50),
    Layer.matmul("qk", 40, 24, 40, heads=2),
)


def _real(layers, batch, arch, dataflow):
    """(folds, tiles) per GEMM of the dense plan the simulator builds."""
    plan = _plan(layers, batch, arch, dataflow, "train", None, arch.features.baseline(),
                 frozenset(), True)
    return [(int(p.sched.tiles[:, 8].sum()), len(p.sched)) for p in plan]


@pytest.mark.parametrize("preset", ["tensordash", "scalesim-32", "eyeriss"])
@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_folds_are_the_schedules_and_tiles_a_bound(preset, dataflow):
    arch = load_arch(preset)
    for batch in (1, 4):
        real = _real(LAYERS, batch, arch, dataflow)
        folds = tiles = 0
        for layer in LAYERS:
            one = estimate_network([layer], batch, arch, dataflow, "train")
            folds, tiles = folds + one.folds, tiles + one.tiles
        assert folds == sum(f for f, _ in real)
        assert tiles >= sum(t for _, t in real)
        assert tiles <= 4 * sum(t for _, t in real) + 6 * len(real)  # a bound, not a guess


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_each_gemm_tile_bound_holds_with_small_buffers(dataflow):
    """Small half buffers make every fold chunk; the bound holds GEMM by GEMM."""
    arch = load_arch("scalesim-32")
    for kib in (1, 4, 64):
        a = arch.with_overrides({"sram": {b: {"kib": kib} for b in ("ifmap", "filter",
                                                                    "ofmap")}},
                                source="test")
        plan = _plan(LAYERS[:6], 2, a, dataflow, "train", None, a.features.baseline(),
                     frozenset(), True)
        for p in plan:
            f, t = gemm_counts(p.sched.gemm, a.rows, a.cols, a.lanes, dataflow, a.folds,
                               half_buffer_words(a))
            assert f == int(p.sched.tiles[:, 8].sum()), p.full
            assert t >= len(p.sched), (p.full, kib, t, len(p.sched))


def test_a_whole_network_counts_every_simulation():
    arch = load_arch("tensordash")
    layers = get_model("resnet18").layers
    one = estimate_network(layers, 2, arch, "ws", "train")
    trace = estimate_network(layers, 2, arch, "ws", "train", steps=3, masked=True,
                             baseline=True)
    assert one.simulations == 1 and trace.simulations == 4
    assert trace.folds == 4 * one.folds and trace.tiles == 4 * one.tiles
    # the masks: A and B of every GEMM of each of the 3 steps, in elements
    per_step = sum(
        sum(_numel(la, r, 2) for r in roles)
        for la in layers
        for roles in (("ifmap", "filter"), ("grad_out", "filter"), ("grad_out", "ifmap")))
    assert trace.mask_bits == 3 * per_step
    assert trace.cpu_s > one.cpu_s and trace.peak_bytes > one.peak_bytes
    fwd = estimate_network(layers, 2, arch, "ws", "fwd")
    assert fwd.gemms == len(layers) and fwd.folds < one.folds


def _numel(layer, role, batch):
    n = 1
    for s in layer.operand_shape(role, batch):
        n *= s
    return n


def test_the_estimate_of_ten_thousand_huge_layers_is_cheap():
    """The trace limits at their worst (10 000 layers of 2^32 elements) are estimated in
    closed form: nothing per fold or tile is built (the no_hang guard of ``cli`` is 30 s)."""
    layer = Layer.conv("big", 1024, 1024, 3, 2048, stride=1, padding=1)
    est = estimate_network([layer] * 10_000, 1, load_arch("tensordash"), "os", "train",
                           steps=10_000, masked=True, baseline=True)
    assert est.cpu_s > 86400 * 365 and est.tiles > 10**12
    assert "years" in est.describe()


def test_synth_estimate_counts_every_mask_of_every_step():
    layers = get_model("lenet5").layers
    est = estimate_synth(layers, 8, 5)
    per = sum(_numel(la, r, 8) for la in layers for r in ("filter", "ifmap", "grad_out"))
    assert est.mask_bits == 5 * per


# ------------------------------------------------------------------------------------------------
# refusals through the CLI
# ------------------------------------------------------------------------------------------------
HUGE_TOPOLOGY = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
                 "Num Filter, Strides,\n"
                 + "".join(f"l{i}, 224, 224, 3, 3, 256, 256, 1,\n" for i in range(10_000)))


@pytest.fixture()
def work(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "huge.csv").write_text(HUGE_TOPOLOGY)
    (tmp_path / "net.csv").write_text("Layer, M, N, K,\ng1, 24, 20, 28,\ng2, 16, 24, 20,\n")
    synthesize(SynthConfig(model="lenet5", sparsity=0.5, batch=1), tmp_path / "t")
    return tmp_path


def test_simulate_of_a_huge_topology_is_refused_with_the_estimate(work):
    refused(["simulate", "huge.csv", "--arch", "tensordash", "-o", "out"],
            "huge.csv: this simulate would need about ")
    code, err = cli("simulate", "huge.csv", "--arch", "tensordash", "-o", "out")
    assert "h of CPU" in err and "GiB of memory" in err and "--allow-huge" in err
    assert "10,000 GEMMs" in err
    assert not (work / "out").exists()
    assert sorted(p.name for p in work.iterdir()) == ["huge.csv", "net.csv", "t"]


def test_synth_of_huge_work_is_refused_before_writing(work):
    refused(["synth", "--model", "resnet50", "--method", "dense", "--batch", "4096", "--steps",
             "1000", "-o", "s"],
            "resnet50: this synth would need about ")
    assert not (work / "s").exists()


@pytest.fixture()
def tiny_limits(monkeypatch):
    """Limits any run passes over: the refusal and the confirmation on small, quick runs."""
    monkeypatch.setattr(budget, "MAX_CPU_SECONDS", 1e-3)


@pytest.mark.parametrize("argv", [
    ["simulate", "t", "--arch", "tensordash", "-o", "out"],
    ["simulate", "net.csv", "--arch", "tensordash", "--memory", "ideal", "-o", "out"],
    ["synth", "--model", "lenet5", "--method", "dense", "--batch", "1", "-o", "out"],
])
def test_over_the_limit_is_refused_and_allow_huge_runs_it(work, tiny_limits, argv):
    refused(argv, "over 0 s of CPU; refused before starting. Add --allow-huge to run it")
    assert not (work / "out").exists()
    code, err = cli(*argv, "--allow-huge")
    assert code == 0, err
    assert (work / "out").is_dir()


def test_a_sweep_over_the_limit_is_refused_before_any_point(work, tiny_limits):
    (work / "s.yaml").write_text(
        "name: s\narch: tensordash\nsynth: {model: lenet5, method: dense, batch: 1}\n"
        "grid: {dataflow: [os, ws]}\n")
    refused(["sweep", "s.yaml", "-o", "sw", "--workers", "1", "-q"],
            "s.yaml: this sweep would need at least ")
    assert not (work / "sw").exists()
    code, err = cli("sweep", "s.yaml", "-o", "sw", "--workers", "1", "-q", "--allow-huge")
    assert code == 0, err
    assert (work / "sw" / "sweep.csv").is_file()


def test_a_demo_of_a_million_steps_is_refused_before_training(work):
    refused(["demo", "--steps", "1000000", "-o", "d"],
            "sparsesim demo: --steps: this demo would need about ")
    assert not (work / "d").exists()


def test_the_memory_cap_never_exceeds_what_the_machine_has(monkeypatch):
    monkeypatch.setattr(budget, "available_memory", lambda: 1 << 30)
    assert budget.memory_cap() == 1 << 30
    est = dataclasses.replace(estimate_network(get_model("lenet5").layers, 1,
                                               load_arch("tensordash"), "os", "fwd"),
                              peak_bytes=3 << 30)
    with pytest.raises(budget.InputError, match="more than the 1.0 GiB this machine has"):
        budget.check(est, allow=True)
