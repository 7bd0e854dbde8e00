"""Generated SCALE-Sim topology CSVs (conv and GEMM forms, odd numbers, encodings): each reads,
or is refused on one line; one that reads also plans a synthetic trace (the limits of a trace
are checked up front, so nothing a topology accepts fails later)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from dataflows.features import SparseFeatures
from simulator.scalesim_compat import topology_nm_inputs
from tests.fuzz.contract import FUZZ, ODD_TEXT, outcome
from traces.synth import SynthConfig, plan
from traces.topology import per_channel, read_topology

CONV_HEADER = (
    "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
    "Num Filter, Strides,"
)
GEMM_HEADER = "Layer, M, N, K,"
#: Sparsity fields: well formed (N = M too), malformed, and hostile
WELL_FORMED = st.sampled_from(["2:4", "1:4", "3:8", "4:4", "1:1", " 2 : 4 ", ""])
SPARSITY = st.one_of(
    WELL_FORMED, WELL_FORMED, WELL_FORMED, WELL_FORMED,
    st.sampled_from(["5:4", "0:4", "2:0", "a:b", "²:4", "2:４", "-1:4", "2:4:8", "2", "dense",
                     "1" * 5000 + ":4", "2:" + "9" * 7, "1:999999", "1e3:4", ":", "2;4"]),
    st.builds(lambda n, m: f"{n}:{m}", st.integers(0, 20), st.integers(0, 20)),
    st.sampled_from(ODD_TEXT),
)
NUMBERS = st.one_of(
    st.integers(1, 64).map(str),
    st.sampled_from(
        [
            "0",
            "-1",
            "65536",
            "65537",
            "100000",
            "4294967297",
            "1" * 19,
            "9" * 5000,
            "1.5",
            "1e3",
            " 7 ",
            "+3",
            "²",
            "١٢",
            "１２",
            "0x10",
            "",
        ]
    ),
    st.sampled_from(ODD_TEXT),
)


@st.composite
def topologies(draw) -> bytes:
    form = draw(st.sampled_from(["conv", "conv", "gemm", "gemm", "none", "junk"]))
    with_column = draw(st.booleans())
    header = {
        "conv": CONV_HEADER + (" Sparsity," if with_column else ""),
        "gemm": GEMM_HEADER + (" Sparsity," if with_column else ""),
        "none": None,
        "junk": draw(st.text(max_size=40)),
    }[form]
    ncols = 8 if form == "conv" else 4
    rows = []
    for i in range(draw(st.integers(0, 5))):
        clean = draw(st.integers(0, 2)) > 0  # most rows are well formed but one field
        fields = [f"l{i}" if clean else draw(st.sampled_from(["l0", "", "名前", "a,b", "x" * 300,
                                                               "dwDP"]))]
        width = ncols - 1 if clean else ncols - 1 + draw(st.integers(-1, 2))
        fields += [draw(st.integers(1, 8).map(str) if clean else NUMBERS) for _ in range(width)]
        if clean and form != "gemm":  # an input at least as large as the kernel
            fields[1:3] = [str(int(f) + 8) for f in fields[1:3]]
        if clean and draw(st.integers(0, 3)) == 0:
            fields[draw(st.integers(1, width))] = draw(NUMBERS)
        if draw(st.booleans()):
            fields.append(draw(SPARSITY))
        rows.append(", ".join(fields) + ",")
    text = "\n".join(([header] if header is not None else []) + rows)
    text += draw(st.sampled_from(["", "\n", "\r\n", "\n\n\n", "\x00", "\x1a"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    return text.encode(encoding, errors="replace")


def _read_and_plan(path: Path) -> None:
    topo = read_topology(path)
    plan(SynthConfig(model=str(path), sparsity=0.5, batch=1))
    # what simulate does with the rows as SCALE-Sim runs them: its depthwise split and the
    # Sparsity column on the N:M feature
    split = per_channel(topo)
    masks, feats = topology_nm_inputs(split.layers, split.nm_sparsity, SparseFeatures())
    for name, mask in masks.items():
        layer = next(la for la in split.layers if la.name == name)
        assert mask["filter"].shape == layer.operand_shape("filter", 1)
        assert feats[name].nm is not None
    return topo


@FUZZ
@given(data=topologies())
def test_topology_csv(data):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "net.csv"
        path.write_bytes(data)
        outcome("topology.csv", _read_and_plan, path)
