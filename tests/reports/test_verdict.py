"""The verdict names the part with the largest share of the cycles: checked on tables built by
hand and on runs whose bound is known by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reports import verdict
from reports.verdict import PARTS, bound, layer_bounds, layers_sentence, run_verdict, shares
from simulator.arch import load_arch
from simulator.run import simulate
from simulator.table import Table
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


def _layer_bounds_reference(table: pd.DataFrame) -> pd.DataFrame:
    """``layer_bounds`` as it was written first: pandas sums each layer's frame."""
    rows = []
    for (lid, lay), df in table.groupby(["LayerID", "Layer"], sort=True):
        s = shares(df)
        name, share = bound(df)
        cyc = float(df["Compute Cycles"].sum() + df["Stall Cycles"].sum())
        rows.append(
            {
                "LayerID": int(lid),
                "Layer": lay,
                "Cycles": cyc,
                "Bound": name,
                "Bound Share %": 100 * share,
                **{f"{k} %": 100 * v for k, v in s.items()},
            }
        )
    out = pd.DataFrame(rows)
    return (
        out.sort_values(["Cycles", "LayerID"], ascending=[False, True], kind="stable").reset_index(
            drop=True
        )
        if len(out)
        else out
    )


_CYCLES = st.one_of(
    st.integers(0, 10**6),
    st.floats(0, 1e17, allow_nan=False),
    st.sampled_from([0.1, 0.7, 1.0, 1e16, -1e16, float("nan")]),
)


@st.composite
def _tables(draw) -> pd.DataFrame:
    """Tables of the columns ``layer_bounds`` reads: integer or float cycles (fractions, large
    magnitudes, NaN: where the order of the additions shows), rows of a layer spread over the
    table, a layer id shared by two names."""
    n = draw(st.integers(0, 30))
    floats = draw(st.booleans())
    rows = []
    for _ in range(n):
        lid = draw(st.integers(0, 5))
        row = {"LayerID": lid, "Layer": draw(st.sampled_from([f"l{lid}", f"m{lid}"]))}
        for c in (*PARTS.values(), "Stall Cycles"):
            v = draw(_CYCLES)
            row[c] = float(v) if floats else (int(v) if v == v and abs(v) < 2**62 else 0)
        rows.append(row)
    cols = ["LayerID", "Layer", *PARTS.values(), "Stall Cycles"]
    t = pd.DataFrame(rows, columns=cols)
    drop = draw(st.sampled_from([None, *list(PARTS.values())[1:]]))
    return t.drop(columns=[drop]) if drop else t


@settings(max_examples=100, deadline=None)
@given(_tables())
def test_layer_bounds_equal_the_per_frame_sums(t):
    pd.testing.assert_frame_equal(layer_bounds(t), _layer_bounds_reference(t), check_exact=True)


def test_layer_bounds_other_dtypes_summed_by_pandas():
    t = _table([{"Layer": "a", "LayerID": 0, "compute": 10, "load imbalance": 30}])
    t["Compute Cycles"] = t["Compute Cycles"].astype("Float64")  # not a numpy dtype
    pd.testing.assert_frame_equal(layer_bounds(t), _layer_bounds_reference(t), check_exact=True)


def test_layer_bounds_check_sees_the_order_of_the_additions(monkeypatch):
    # a deliberately wrong variant, each layer's values added last to first, fails the check
    t = pd.DataFrame(
        {
            "LayerID": [0, 0, 0],
            "Layer": ["a"] * 3,
            "Stall Cycles": [0.0] * 3,
            **{c: [1.0, 1e16, -1e16] for c in PARTS.values()},
        }
    )
    pd.testing.assert_frame_equal(layer_bounds(t), _layer_bounds_reference(t), check_exact=True)

    right = verdict._groups_by_column

    def reversed_sums(table):
        for lid, lay, sums, stall in right(table):
            idx = table.groupby(["LayerID", "Layer"]).indices[(lid, lay)][::-1]
            yield lid, lay, {c: table[c].to_numpy()[idx].sum() for c in sums}, stall

    monkeypatch.setattr(verdict, "_groups_by_column", reversed_sums)
    with pytest.raises(AssertionError):
        pd.testing.assert_frame_equal(layer_bounds(t), _layer_bounds_reference(t), check_exact=True)


def _sentence_reference(table: pd.DataFrame) -> str:
    """``layers_sentence`` as it was written first: pandas counts the bounds."""
    lb = _layer_bounds_reference(table)
    if not len(lb):
        return ""
    counts = lb["Bound"].value_counts()

    def lower(h: str) -> str:
        return h[0].lower() + h[1:] if h[1].islower() else h

    return "layers: " + ", ".join(f"{n} {lower(verdict.HEADLINE[b])}" for b, n in counts.items())


@settings(max_examples=100, deadline=None)
@given(_tables())
def test_a_table_gets_the_verdict_of_its_frame(t):
    """``sparsesim simulate`` gives the verdict a ``Table`` (no pandas): the same sums, layer
    bounds, order and sentence as of the DataFrame."""
    tab = Table.from_frame(t)
    pd.testing.assert_frame_equal(layer_bounds(tab), _layer_bounds_reference(t), check_exact=True)
    assert layers_sentence(tab) == layers_sentence(t) == _sentence_reference(t)
    assert shares(tab) == shares(t) and bound(tab) == bound(t)
    t = t.assign(**{"DRAM Bytes": np.arange(len(t)) * 0.5})
    summary = {"steps": [0, 1], "baseline_per_step": {"dram_bytes": 7}, "method": "swat"}
    assert run_verdict(Table.from_frame(t), summary) == run_verdict(t, summary)


def test_ties_between_bounds_keep_the_order_of_the_largest_layers():
    rows = [{"Layer": f"l{i}", "LayerID": i, part: 10 + i} for i, part in
            enumerate(["compute", "fill/drain", "fill/drain", "compute", "SRAM ports"])]
    t = _table(rows)
    assert layers_sentence(Table.from_frame(t)) == _sentence_reference(t) == (
        "layers: 2 compute bound, 2 fill/drain bound, 1 SRAM-port bound")  # l3 before l2


@pytest.mark.parametrize("rows", [
    [{"compute": 1, "DRAM bandwidth": 3, "DRAM Bytes": 10, "A Role": "ifmap", "A Density": 0.2,
      "A Format": "dense", "B Role": "filter", "B Density": 0.1, "B Format": "dense"},
     {"compute": 1, "DRAM bandwidth": 3, "DRAM Bytes": 10, "A Role": "ifmap", "A Density": 0.2,
      "A Format": "dense", "B Role": "filter", "B Density": 0.9, "B Format": "dense"}],
    [{"compute": 5, "Algorithmic Computes": 10, "Actual Computes": 4}],
    [{"compute": 5, "Algorithmic Computes": 10, "Actual Computes": 10}],
])
def test_run_verdict_of_a_table_is_that_of_its_frame(rows):
    t = _table(rows)
    summary = {"steps": [0], "baseline_per_step": {"dram_bytes": 40}, "method": "swat",
               "sparsity": 0.9}
    assert run_verdict(Table.from_rows(t.to_dict("records")), summary) == run_verdict(t, summary)
