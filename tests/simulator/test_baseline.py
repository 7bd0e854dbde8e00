"""The dense baseline's cache: a hit gives the bytes a fresh simulation gives, the key follows
every input and the code, damaged entries are simulated again, ``--no-cache`` bypasses it."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys

import pytest

import simulator.baseline as bl
from simulator.arch import load_arch
from simulator.results import write_results
from simulator.run import simulate_trace
from traces.synth import SynthConfig, synthesize


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("bl") / "t"
    synthesize(SynthConfig(model="lenet5", batch=4, method="swat", sparsity=0.9), path)
    return str(path)


@pytest.fixture(autouse=True)
def _fresh_memory():
    bl._MEMORY.clear()
    yield
    bl._MEMORY.clear()


def _entries(cache):
    return sorted((cache / "baselines").glob("*.json"))


def _same_dirs(a, b) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(
        filecmp.cmp(a / n, b / n, shallow=False) for n in names)


@pytest.mark.parametrize("memory", ["modeled", "ideal"])
def test_a_hit_writes_the_same_bytes(trace, tmp_path, memory):
    arch = load_arch("tensordash")
    cache = tmp_path / "cache"
    fresh = write_results(simulate_trace(trace, arch, "os", memory=memory), tmp_path / "fresh")
    miss = write_results(simulate_trace(trace, arch, "os", memory=memory, baseline_cache=cache),
                         tmp_path / "miss")
    assert len(_entries(cache)) == 1
    bl._MEMORY.clear()  # the next one reads the file
    hit = write_results(simulate_trace(trace, arch, "os", memory=memory, baseline_cache=cache),
                        tmp_path / "hit")
    assert _same_dirs(fresh, miss) and _same_dirs(fresh, hit)


def test_a_hit_does_not_simulate(trace, tmp_path, monkeypatch):
    arch = load_arch("tensordash")
    cache = tmp_path / "cache"
    simulate_trace(trace, arch, "ws", memory="ideal", baseline_cache=cache)
    bl._MEMORY.clear()
    import simulator.run as run

    seen = []
    real = run.simulate
    monkeypatch.setattr(run, "simulate", lambda *a, **k: seen.append(
        a[8] if len(a) > 8 else k.get("features")) or real(*a, **k))
    simulate_trace(trace, arch, "ws", memory="ideal", baseline_cache=cache)
    # only the sparse step ran (the architecture's own features): the baseline came from the
    # cache; without it, the baseline runs too (features off)
    assert seen == [None]
    simulate_trace(trace, arch, "ws", memory="ideal")
    assert seen[1:] == [arch.features.baseline(), None]


def test_the_key_follows_every_input(trace, tmp_path, monkeypatch):
    arch = load_arch("tensordash")
    cache = tmp_path / "cache"
    runs = [(arch, "os", "train", "ideal"), (arch, "ws", "train", "ideal"),
            (arch, "os", "fwd", "ideal"), (arch, "os", "train", "modeled"),
            (arch.with_overrides({"dram.bandwidth_gbps": 20}), "os", "train", "modeled")]
    for a, df, ph, mem in runs:
        simulate_trace(trace, a, df, ph, mem, baseline_cache=cache)
    assert len(_entries(cache)) == len(runs)
    for a, df, ph, mem in runs:  # all hits now
        simulate_trace(trace, a, df, ph, mem, baseline_cache=cache)
    assert len(_entries(cache)) == len(runs)
    from traces.models import get_model

    layers = get_model("lenet5").layers
    key = bl.baseline_key(layers, 4, arch, "os", "train", "ideal")
    assert key != bl.baseline_key(layers, 8, arch, "os", "train", "ideal")
    assert key != bl.baseline_key(layers[:-1], 4, arch, "os", "train", "ideal")
    assert key != bl.baseline_key(layers, 4, arch, "os", "train", "ideal", input_grad=True)
    assert key != bl.baseline_key(layers, 4, arch, "os", "train", "ideal",
                                  skip=[(layers[1].name, "bwd_weight")])
    monkeypatch.setattr(bl, "code_digest", lambda: "another version of the model")
    assert key != bl.baseline_key(layers, 4, arch, "os", "train", "ideal")


@pytest.mark.parametrize("damage", ["truncated", "other key", "not json", "wrong dtype",
                                    "deep", "short column", "a directory"])
def test_a_damaged_entry_is_simulated_again(trace, tmp_path, damage):
    arch = load_arch("tensordash")
    cache = tmp_path / "cache"
    good = write_results(simulate_trace(trace, arch, "os", memory="ideal", baseline_cache=cache),
                         tmp_path / "good")
    (entry,) = _entries(cache)
    text = entry.read_text()
    raw = json.loads(text)
    if damage == "truncated":
        entry.write_text(text[: len(text) // 2])
    elif damage == "other key":
        raw["key"] = "0" * 64
        entry.write_text(json.dumps(raw))
    elif damage == "not json":
        entry.write_bytes(b"\xff\xfe binary")
    elif damage == "deep":
        entry.write_text("[" * 100_000 + "]" * 100_000)
    elif damage == "short column":
        raw["data"][0] = raw["data"][0][:-1]
        entry.write_text(json.dumps(raw))
    elif damage == "a directory":
        entry.unlink()
        entry.mkdir()
    else:
        raw["dtypes"][0] = "no such dtype"
        entry.write_text(json.dumps(raw))
    bl._MEMORY.clear()
    again = write_results(simulate_trace(trace, arch, "os", memory="ideal",
                                         baseline_cache=cache), tmp_path / "again")
    assert _same_dirs(good, again)
    if damage != "a directory":  # a directory in its place stays (the entry is not written)
        assert entry.read_text() == text  # replaced by a whole, good entry


def test_an_unwritable_cache_only_costs_time(trace, tmp_path):
    arch = load_arch("tensordash")
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory would be")
    res = simulate_trace(trace, arch, "os", memory="ideal", baseline_cache=blocker / "cache")
    assert len(res.table) > 0 and blocker.is_file()


def test_cli_no_cache_leaves_the_cache_alone(trace, tmp_path):
    env = {**os.environ, bl.CACHE_ENV: str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "cli.main", "simulate", trace, "--arch", "tensordash",
           "--memory", "ideal"]
    subprocess.run(cmd + ["-o", str(tmp_path / "a"), "--no-cache"], env=env, check=True,
                   capture_output=True)
    assert not (tmp_path / "cache").exists()
    subprocess.run(cmd + ["-o", str(tmp_path / "b")], env=env, check=True, capture_output=True)
    subprocess.run(cmd + ["-o", str(tmp_path / "c")], env=env, check=True, capture_output=True)
    assert len(_entries(tmp_path / "cache")) == 1
    assert _same_dirs(tmp_path / "a", tmp_path / "b") and _same_dirs(tmp_path / "a",
                                                                     tmp_path / "c")


def _frozen_trace(tmp_path, source, frozen_in):
    """A copy of ``source`` whose step i lists ``frozen_in[i]`` (layer names) as
    ``bwd_weight_not_computed`` (rewritten in its step file's index)."""
    import shutil

    import numpy as np

    from traces.format import INDEX_KEY, MANIFEST, write_npz

    out = tmp_path / "frozen"
    shutil.copytree(source, out)
    steps = json.loads((out / MANIFEST).read_text())["steps"]
    for entry, frozen in zip(steps, frozen_in, strict=True):
        path = out / entry["file"]
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
        index = json.loads(arrays[INDEX_KEY].tobytes().decode())
        index["meta"]["bwd_weight_not_computed"] = list(frozen)
        arrays[INDEX_KEY] = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
        write_npz(path, arrays)
    return str(out)


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory):
    path = tmp_path_factory.mktemp("bl2") / "t"
    synthesize(SynthConfig(model="lenet5", batch=4, method="static", sparsity=0.8, steps=2),
               path)
    return str(path)


def test_a_gemm_no_step_ran_is_left_out_of_the_baseline(two_steps, tmp_path):
    """A weight gradient frozen in every step is not simulated in the baseline either (it
    would shift its neighbours' DRAM timing): the baseline is a dense run without it. One that
    a step ran stays."""
    from simulator.run import simulate
    from traces.format import Trace

    arch = load_arch("tensordash")
    layers = Trace(two_steps).manifest.layers
    frozen = layers[2].name
    res = simulate_trace(_frozen_trace(tmp_path, two_steps, [[frozen], [frozen]]), arch, "os")
    skip = frozenset({(frozen, "bwd_weight"), (layers[0].name, "bwd_input")})
    alone = simulate(layers, 4, arch, "os", "train", "modeled", 0, None,
                     arch.features.baseline(), skip=skip, input_grad=False).table
    assert (frozen, "bwd_weight") not in set(zip(res.baseline["Layer"], res.baseline["Phase"],
                                                 strict=True))
    cols = ["Layer", "Phase", "Compute Cycles", "Stall Cycles"]
    assert res.baseline[cols].equals(alone[cols])
    once = simulate_trace(_frozen_trace(tmp_path / "b", two_steps, [[frozen], []]), arch, "os")
    assert (frozen, "bwd_weight") in set(zip(once.baseline["Layer"], once.baseline["Phase"],
                                             strict=True))


def test_architectures_that_differ_in_sparse_features_only_share_one(trace, tmp_path):
    """The baseline runs without sparse features (but the lowering): a run whose features
    differ reads the entry another wrote and writes the same bytes as its own fresh run; its
    meta names its own architecture. A different lowering is another baseline."""
    a = load_arch("tensordash")
    b = a.with_overrides({"sparse.taps.lookaside": 3, "sparse.free_rows": 1})
    c = a.with_overrides({"sparse.lowering.k_order": "flat"})
    cache = tmp_path / "cache"
    simulate_trace(trace, a, "os", baseline_cache=cache)
    bl._MEMORY.clear()
    shared = write_results(simulate_trace(trace, b, "os", baseline_cache=cache),
                           tmp_path / "shared")
    assert len(_entries(cache)) == 1
    fresh = write_results(simulate_trace(trace, b, "os"), tmp_path / "fresh")
    assert _same_dirs(fresh, shared)
    summary = json.loads((shared / "summary.json").read_text())
    assert summary["arch_spec"]["sparse"]["free_rows"] == 1
    simulate_trace(trace, c, "os", baseline_cache=cache)
    assert len(_entries(cache)) == 2


def test_an_entry_holds_the_table_exactly(trace):
    """Columns, their types (text as pandas' str, bool, NaN where a row has none) and values."""
    import numpy as np
    import pandas as pd

    from simulator.results import Results
    from simulator.table import Table

    res = simulate_trace(trace, load_arch("tensordash"), "os", memory="modeled")
    t = res.data("table")
    t["Flag"] = np.arange(len(t)) % 2 == 0
    t["Note"] = np.array(["a,b" if i % 3 else np.nan for i in range(len(t))], dtype=object)
    t = Table.from_frame(t.to_frame())
    back = bl._decode(bl._encode("k", Results(t, res.meta)), "k")
    pd.testing.assert_frame_equal(back.table, t.to_frame(), check_exact=True)
    assert back.meta == json.loads(json.dumps(res.meta))
