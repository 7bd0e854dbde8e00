"""The verdict names the part with the largest share of the cycles: checked on tables built by
hand and on runs whose bound is known by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reports.verdict import PARTS, bound, layer_bounds, layers_sentence, run_verdict, shares
from simulator.arch import load_arch
from simulator.run import simulate
from traces.models import get_model


def _table(rows: list[dict]) -> pd.DataFrame:
    """Rows with the compute and stall columns; missing parts are 0."""
    out = []
    for i, r in enumerate(rows):
        row = {
            "LayerID": r.get("LayerID", i),
            "Layer": r.get("Layer", f"l{i}"),
            "Phase": "fwd",
            "Step": 0,
            **{c: r.get(k, 0) for k, c in PARTS.items()},
        }
        row["Stall Cycles"] = sum(v for k, v in row.items() if k in list(PARTS.values())[1:])
        row.update({k: v for k, v in r.items() if k not in PARTS and k not in row})
        out.append(row)
    return pd.DataFrame(out)


def test_dram_bandwidth_share_and_advice():
    t = _table(
        [
            {
                "compute": 100,
                "DRAM bandwidth": 300,
                "DRAM Bytes": 1000,
                "A Role": "ifmap",
                "A Density": 1.0,
                "A Format": "dense",
                "B Role": "filter",
                "B Density": 0.1,
                "B Format": "dense",
            }
        ]
    )
    summary = {
        "method": "swat",
        "sparsity": 0.9,
        "steps": [0],
        "baseline_per_step": {"dram_bytes": 1000},
    }
    v = run_verdict(t, summary)
    assert (v.bound, v.share) == ("DRAM bandwidth", 0.75)
    assert v.text.startswith("DRAM-bandwidth bound: 75 % of cycles waiting on DRAM bandwidth")
    assert "SWAT-90 moves 1.00x dense's bytes" in v.text
    assert "store filter compressed (`sparse.formats`)" in v.text  # the sparse role, not A


def test_compressed_roles_are_not_advised_again():
    t = _table(
        [
            {
                "compute": 1,
                "DRAM bandwidth": 3,
                "DRAM Bytes": 10,
                "B Role": "filter",
                "B Density": 0.1,
                "B Format": "bitmap",
            }
        ]
    )
    v = run_verdict(t, {"steps": [0], "baseline_per_step": {"dram_bytes": 40}})
    assert "sparse.formats" not in v.text and "0.25x dense's bytes" in v.text


@pytest.mark.parametrize("part", list(PARTS))
def test_each_part_can_be_the_bound(part):
    rows = [{p: 10 for p in PARTS}]
    rows[0][part] = 100
    name, share = bound(_table(rows))
    assert name == part and share == pytest.approx(100 / 150)


def test_shares_sum_to_one_and_empty_is_compute():
    t = _table([{"compute": 3, "SRAM ports": 1}, {"compute": 0, "fill/drain": 4}])
    assert sum(shares(t).values()) == pytest.approx(1.0)
    assert bound(_table([{}])) == ("compute", 0.0)


def test_layer_bounds_per_layer_largest_first():
    t = _table(
        [
            {"Layer": "a", "LayerID": 0, "compute": 10, "load imbalance": 30},
            {"Layer": "b", "LayerID": 1, "compute": 90, "DRAM latency": 10},
            {"Layer": "b", "LayerID": 1, "compute": 10, "DRAM latency": 5},
        ]
    )
    lb = layer_bounds(t)
    assert list(lb["Layer"]) == ["b", "a"]
    assert list(lb["Bound"]) == ["compute", "load imbalance"]
    assert lb.loc[1, "Bound Share %"] == pytest.approx(75.0)
    assert layers_sentence(t) == "layers: 1 compute bound, 1 load-imbalance bound"


def test_tiny_dram_bandwidth_is_dram_bandwidth_bound():
    """A run starved of DRAM bandwidth (0.5 GB/s for an array of 256 MACs) waits on it."""
    arch = load_arch("scalesim-32").with_overrides({"dram.bandwidth_gbps": 0.5})
    res = simulate(get_model("mlp3").layers, 4, arch, "os", "train", "modeled")
    v = run_verdict(res.table, {})
    assert v.bound == "DRAM bandwidth" and v.share > 0.4
    assert v.text.startswith("DRAM-bandwidth bound: ")


def test_ideal_memory_and_imbalanced_masks_is_load_imbalance_bound():
    """Ideal memory leaves compute and load imbalance; weights whose output neurons are either
    half full or empty but one make the streams of every fold wait for the half-full ones."""
    layers = get_model("mlp3").layers
    arch = load_arch("scalesim-32").with_overrides(
        {"sparse": {"skip": ["filter"], "sync": "barrier"}}
    )
    masks = {}
    for layer in layers:
        w = np.zeros((layer.out_channels, layer.in_channels), dtype=bool)
        w[:, 0] = True
        w[::8, : layer.in_channels // 2] = True  # one output neuron in 8 keeps half its weights
        masks[layer.name] = {"filter": w, "ifmap": None}
    res = simulate(layers, 4, arch, "os", "fwd", "ideal", masks=masks)
    v = run_verdict(res.table, {})
    assert v.bound == "load imbalance", v.text
    assert v.text.startswith("Load-imbalance bound: ")
    assert res.table["Stall Cycles (DRAM Bandwidth)"].sum() == 0
