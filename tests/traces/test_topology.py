"""Tests for traces.topology: SCALE-Sim topology CSVs <-> Layer."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from common.errors import TopologyError
from traces.layers import Layer
from traces.topology import Topology, per_channel, read_topology, write_topology

CONV_HEADER = (
    "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, "
    "Strides,"
)
CONV_HEADER_SP = CONV_HEADER + " Sparsity,"
GEMM_HEADER = "Layer, M, N, K,"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _scalesim_topo(path: Path, gemm: bool = False):
    topology_utils = pytest.importorskip("scalesim.topology_utils")
    topo = topology_utils.topologies()
    topo.load_arrays(topofile=str(path), mnk_inputs=gemm)
    topo.topo_calc_hyperparams()
    return topo


# ---- conv form -----------------------------------------------------------------------------------

SCALESIM_CONV = f"""{CONV_HEADER}
conv1,229,229,7,7,3,64,2,
conv2,56,56,3,3,64,64,1,
conv3,224,224,7,7,3,64,2,
conv4,57,40,3,5,16,32,3,
fc,1,1,1,1,2048,1000,1,
"""


def test_conv_rows_give_the_expected_layers(tmp_path):
    topo = read_topology(_write(tmp_path / "net.csv", SCALESIM_CONV))
    assert isinstance(topo, Topology)
    assert topo.name == "net"
    assert topo.form == "conv"
    assert topo.nm_sparsity == (None,) * 5
    conv1, conv2, conv3, conv4, fc = topo.layers
    assert conv1 == Layer.conv("conv1", 3, 64, 7, 229, stride=2)
    assert conv1.padding == (0, 0) and conv1.groups == 1 and conv1.bias is False
    assert conv1.out_hw == (112, 112)
    assert conv1.extra == {}
    assert conv2 == Layer.conv("conv2", 64, 64, 3, 56)
    assert conv2.out_hw == (54, 54)
    assert conv4.kernel == (3, 5) and conv4.stride == (3, 3)
    assert fc == Layer.conv("fc", 2048, 1000, 1, 1)
    assert fc.macs(1) == 2048 * 1000
    # (224 - 7) % 2 == 1: SCALE-Sim's ceil formula gives 110, PyTorch's floor on 224 gives 109.
    # The input is extended by the one implicit padding row/column SCALE-Sim's last window uses.
    assert Layer.conv("x", 3, 64, 7, 224, stride=2).out_hw == (109, 109)
    assert conv3.input_hw == (225, 225)
    assert conv3.out_hw == (110, 110)
    assert conv3.extra == {"scalesim_ifmap_hw": [224, 224]}
    assert conv4.input_hw == (57, 41)  # (57-3)%3 == 0; (40-5)%3 == 2 -> +1
    assert conv4.out_hw == (19, 13)


def test_conv_output_size_and_macs_match_scalesim(tmp_path):
    path = _write(tmp_path / "net.csv", SCALESIM_CONV)
    ours = read_topology(path).layers
    theirs = _scalesim_topo(path)
    assert theirs.get_num_layers() == len(ours)
    for i, layer in enumerate(ours):
        assert theirs.get_layer_name(i) == layer.name
        assert tuple(theirs.get_layer_ofmap_dims(i)) == layer.out_hw, layer.name
        assert theirs.get_layer_mac_ops(i) == layer.macs(1), layer.name
        assert theirs.get_layer_window_size(i) == layer.fan_in


@pytest.mark.parametrize(
    "h,w,r,s,stride",
    [(5, 5, 3, 3, 1), (7, 7, 3, 3, 2), (8, 8, 3, 3, 2), (10, 9, 4, 2, 3), (3, 3, 3, 3, 5),
     (224, 224, 11, 11, 4), (6, 13, 1, 1, 4)],
)
def test_conv_output_size_matches_scalesim_formula(tmp_path, h, w, r, s, stride):
    path = _write(tmp_path / "one.csv", f"{CONV_HEADER}\nL,{h},{w},{r},{s},2,4,{stride},\n")
    (layer,) = read_topology(path).layers
    theirs = _scalesim_topo(path)
    assert tuple(theirs.get_layer_ofmap_dims(0)) == layer.out_hw
    assert theirs.get_layer_mac_ops(0) == layer.macs(1)


def test_lenient_rows_parse_like_scalesim_rows(tmp_path):
    strict = read_topology(_write(tmp_path / "a.csv", SCALESIM_CONV))
    loose_text = (
        "\ufeff  " + CONV_HEADER.rstrip(",") + "  \r\n\r\n"
        "  conv1 , 229, 229, 7, 7, 3, 64, 2\r\n"
        "\tconv2,56,56,3,3,64,64,1,   \r\n"
        "\n"
        "conv3, 224, 224, 7, 7, 3, 64, 2 ,\r\n"
        "conv4,57,40,3,5,16,32,3\n"
        "fc,1,1,1,1,2048,1000,1,#a comment after the last comma\n\n"
    )
    loose = read_topology(_write(tmp_path / "a2.csv", loose_text))
    assert loose.layers == strict.layers
    assert [lay.input_hw for lay in loose.layers] == [lay.input_hw for lay in strict.layers]
    assert loose.nm_sparsity == strict.nm_sparsity


def test_headerless_and_explicit_kind(tmp_path):
    path = _write(tmp_path / "nohdr.csv", "conv1,229,229,7,7,3,64,2,\nconv2,56,56,3,3,64,64,1\n")
    auto = read_topology(path)
    assert auto.form == "conv" and [lay.name for lay in auto.layers] == ["conv1", "conv2"]
    assert read_topology(path, kind="conv").layers == auto.layers
    gemm = _write(tmp_path / "g.csv", "q,8,16,32,\n")
    assert read_topology(gemm).form == "gemm"
    assert read_topology(gemm, kind="gemm").layers[0].macs(1) == 8 * 16 * 32


def test_depthwise_rows_become_grouped_convs(tmp_path):
    text = f"""{CONV_HEADER}
conv_DP1,16,16,3,3,8,1,1,
DP_mult2,9,9,3,3,4,2,2,
pw,14,14,1,1,8,16,1,
DPsingle,5,5,3,3,1,6,1,
"""
    path = _write(tmp_path / "mb.csv", text)
    dp1, mult, pw, single = read_topology(path).layers
    assert dp1 == Layer.conv("conv_DP1", 8, 8, 3, 16, groups=8)
    assert mult == Layer.conv("DP_mult2", 4, 8, 3, 9, stride=2, groups=4)
    assert pw.groups == 1
    assert single == Layer.conv("DPsingle", 1, 6, 3, 5)
    theirs = _scalesim_topo(path)
    # SCALE-Sim splits a DP row into `Channels` one-channel layers named <name>Channel_<i>.
    assert theirs.get_num_layers() == 8 + 4 + 1 + 1
    names = theirs.get_layer_names()
    start = 0
    for layer in (dp1, mult, pw, single):
        n = layer.groups if "DP" in layer.name else 1
        part = range(start, start + n)
        if "DP" in layer.name:
            assert [names[i] for i in part] == [f"{layer.name}Channel_{c}" for c in range(n)]
        assert {tuple(theirs.get_layer_ofmap_dims(i)) for i in part} == {layer.out_hw}
        assert sum(theirs.get_layer_mac_ops(i) for i in part) == layer.macs(1)
        start += n


def test_duplicate_names_are_suffixed(tmp_path):
    text = f"""{CONV_HEADER}
a,8,8,3,3,2,2,1,
a,8,8,3,3,2,2,1,
a#2,8,8,3,3,2,2,1,
a,8,8,3,3,2,2,1,
b,8,8,3,3,2,2,1,
"""
    topo = read_topology(_write(tmp_path / "dup.csv", text))
    assert [lay.name for lay in topo.layers] == ["a", "a#3", "a#2", "a#4", "b"]
    assert len({lay.name for lay in topo.layers}) == 5
    assert topo.layers[1].extra == {"scalesim_name": "a"}
    assert topo.layers[2].extra == {}
    assert topo.layers[3].kernel == (3, 3) and topo.layers[3].in_channels == 2


def test_nm_sparsity_column(tmp_path):
    text = f"""{CONV_HEADER_SP}
CONV_1,     5,            5,           3,             3,            2,        6,          1,       2:4,
CONV_2,5,5,3,3,2,6,1, 1 : 8 ,
CONV_3,5,5,3,3,2,6,1,
CONV_4,5,5,3,3,2,6,1,,
CONV_5,5,5,3,3,2,6,1,1:1,
"""  # noqa: E501
    path = _write(tmp_path / "sp.csv", text)
    topo = read_topology(path)
    assert topo.nm_sparsity == ("2:4", "1:8", None, None, "1:1")
    assert all(lay.out_hw == (3, 3) for lay in topo.layers)
    gemm = "Layer Name, M, N, K, Sparsity,\nGEMM_1, 1, 5, 16, 2:4,\nGEMM_2, 3, 5, 16,\n"
    g = read_topology(_write(tmp_path / "gs.csv", gemm))
    assert g.nm_sparsity == ("2:4", None)
    # SCALE-Sim reads the same ratios (it needs one on every row of a file with the column).
    strict = "\n".join(text.splitlines()[:3]) + "\n"
    theirs = _scalesim_topo(_write(tmp_path / "strict.csv", strict))
    assert read_topology(tmp_path / "strict.csv").nm_sparsity == ("2:4", "1:8")
    assert [list(theirs.get_layer_sparsity_ratio(i)) for i in range(2)] == [[2, 4], [1, 8]]


# ---- GEMM form -----------------------------------------------------------------------------------

SCALESIM_GEMM = f"""{GEMM_HEADER}
QKT,1024,1024,64,
QKTV,1024,64,1024,
Linear1,1024,4800,1600,
tiny,1,5,16,
"""


def test_gemm_rows_map_to_m_k_n(tmp_path):
    path = _write(tmp_path / "gpt.csv", SCALESIM_GEMM)
    topo = read_topology(path)
    assert topo.form == "gemm" and topo.name == "gpt"
    mnk = [(1024, 1024, 64), (1024, 64, 1024), (1024, 4800, 1600), (1, 5, 16)]
    for layer, (m, n, k) in zip(topo.layers, mnk, strict=True):
        assert layer.kind == "linear"
        assert layer == Layer.linear(layer.name, fin=k, fout=n, tokens=m, bias=False)
        assert layer.ifmap_shape(1) == (1, m, k)
        assert layer.grad_out_shape(1) == (1, m, n)
        assert layer.weight_shape == (n, k)
        assert layer.macs(1) == m * n * k
    theirs = _scalesim_topo(path, gemm=True)
    for i, layer in enumerate(topo.layers):
        assert theirs.get_layer_mac_ops(i) == layer.macs(1)
    # Without trailing commas and with SCALE-Sim's other header spelling.
    loose = "Layer Name, M, N, K\n" + "\n".join(
        line.rstrip(",") for line in SCALESIM_GEMM.splitlines()[1:]
    )
    assert read_topology(_write(tmp_path / "gpt2.csv", loose)).layers == topo.layers


# ---- write_topology ------------------------------------------------------------------------------


def test_write_is_scalesim_format(tmp_path):
    layers = [Layer.conv("c1", 3, 64, 7, 224, stride=2, padding=3),
              Layer.conv("blk_DP", 32, 32, 3, 56, padding=1, groups=32)]
    path = tmp_path / "w.csv"
    write_topology(path, layers, nm_sparsity=["2:4", None])
    lines = path.read_text().splitlines()
    assert lines[0] == CONV_HEADER_SP
    assert all(line.endswith(",") for line in lines)
    # 224 + 2*3 = 230 padded; the windows use (112-1)*2 + 7 = 229 of it.
    assert lines[1] == "c1,229,229,7,7,3,64,2,2:4,"
    assert lines[2] == "blk_DP,58,58,3,3,32,1,1,"
    back = read_topology(path)
    assert back.nm_sparsity == ("2:4", None)
    assert [lay.out_hw for lay in back.layers] == [(112, 112), (56, 56)]
    gpath = tmp_path / "g.csv"
    write_topology(gpath, [Layer.linear("fc", 768, 3072, tokens=197)], form="gemm")
    assert gpath.read_text() == "Layer, M, N, K,\nfc,197,3072,768,\n"


@st.composite
def conv_layers(draw):
    k = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    stride = draw(st.integers(1, 4))
    pad = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    hw = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
    assume(all(hw[i] + 2 * pad[i] >= k[i] for i in range(2)))
    cin = draw(st.integers(1, 12))
    if cin > 1 and draw(st.booleans()):
        cout = cin * draw(st.integers(1, 3))
        return Layer.conv(f"dw{cin}_DP", cin, cout, k, hw, stride, pad, groups=cin)
    cout = draw(st.integers(1, 16))
    return Layer.conv(f"conv{cin}x{cout}", cin, cout, k, hw, stride, pad)


def _same_geometry(a: Layer, b: Layer) -> None:
    for f in ("kind", "in_channels", "out_channels", "kernel", "stride", "groups", "out_hw",
              "fan_in", "weight_shape"):
        assert getattr(a, f) == getattr(b, f), f
    assert a.macs(1) == b.macs(1)
    assert a.macs(3) == b.macs(3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers=st.lists(conv_layers(), min_size=1, max_size=5),
       nm=st.lists(st.one_of(st.none(), st.sampled_from(["2:4", "1:4", "4:8", "1:1"])),
                   min_size=5, max_size=5))
def test_write_read_round_trip_conv(tmp_path_factory, layers, nm):
    path = tmp_path_factory.mktemp("rt") / "rt.csv"
    nm = nm[: len(layers)]
    # Unique names (duplicates are renamed on reading; tested separately).
    layers = [Layer(**{**{f: getattr(lay, f) for f in Layer.__dataclass_fields__},
                       "name": f"{i}_{lay.name}"}).checked() for i, lay in enumerate(layers)]
    write_topology(path, layers, nm_sparsity=nm)
    topo = read_topology(path)
    assert topo.form == "conv"
    assert topo.nm_sparsity == tuple(nm)
    assert len(topo.layers) == len(layers)
    for orig, back in zip(layers, topo.layers, strict=True):
        _same_geometry(orig, back)
        assert back.padding == (0, 0) and back.extra.get("scalesim_ifmap_hw") is None
        # The written IFMAP is the padded input trimmed to the extent the windows use.
        for i in range(2):
            assert orig.kernel[i] <= back.input_hw[i] <= orig.input_hw[i] + 2 * orig.padding[i]
    # Writing what was read gives the same file.
    again = path.with_name("again.csv")
    write_topology(again, topo.layers, nm_sparsity=topo.nm_sparsity)
    assert again.read_text() == path.read_text()
    # SCALE-Sim reads the written file to the same output sizes and MACs.
    theirs = _scalesim_topo(path)
    j = 0
    for layer in layers:
        n = layer.groups if "DP" in layer.name else 1
        part = range(j, j + n)
        assert {tuple(theirs.get_layer_ofmap_dims(i)) for i in part} == {layer.out_hw}
        assert sum(theirs.get_layer_mac_ops(i) for i in part) == layer.macs(1)
        j += n
    assert theirs.get_num_layers() == j


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(
    st.builds(lambda m, n, k, b: Layer.linear("fc", fin=k, fout=n, tokens=m, bias=b),
              st.integers(1, 600), st.integers(1, 600), st.integers(1, 600), st.booleans()),
    conv_layers().filter(lambda lay: lay.groups == 1),
), min_size=1, max_size=4))
def test_write_read_round_trip_gemm(tmp_path_factory, layers):
    path = tmp_path_factory.mktemp("rtg") / "rtg.csv"
    write_topology(path, layers, form="gemm")
    topo = read_topology(path)
    assert topo.form == "gemm"
    assert [lay.name for lay in topo.layers][:1] == [layers[0].name]
    for orig, back in zip(layers, topo.layers, strict=True):
        assert back.kind == "linear" and back.bias is False
        assert back.macs(1) == orig.macs(1)
        if orig.kind == "linear":
            assert (back.tokens, back.in_channels, back.out_channels) == (
                orig.tokens, orig.in_channels, orig.out_channels)
        else:
            assert back.tokens == orig.out_hw[0] * orig.out_hw[1]
            assert back.in_channels == orig.fan_in


@pytest.mark.parametrize(
    "layer,form,fragment",
    [
        (Layer.conv("d", 4, 4, 3, 16, dilation=2), "conv", "dilation"),
        (Layer.conv("s", 4, 4, 3, 16, stride=(1, 2)), "conv", "one stride"),
        (Layer.conv("g", 4, 8, 3, 16, groups=2), "conv", "groups=2"),
        (Layer.conv("depthwise", 4, 4, 3, 16, groups=4), "conv", "'DP'"),
        (Layer.conv("notDP", 4, 4, 3, 16), "conv", "'DP'"),
        (Layer.conv("g_DP", 4, 4, 3, 16, groups=4), "gemm", "not one GEMM"),
        (Layer.conv("a,b", 4, 4, 3, 16), "conv", "cannot be written"),
        (Layer.conv(" pad", 4, 4, 3, 16), "gemm", "cannot be written"),
        (Layer.conv("ok", 4, 4, 3, 16), "csv", "form"),
    ],
)
def test_write_rejects_what_scalesim_cannot_express(tmp_path, layer, form, fragment):
    path = tmp_path / "bad.csv"
    with pytest.raises(ValueError, match=fragment):
        write_topology(path, [layer], form=form)
    assert not path.exists()


def test_write_rejects_bad_sparsity(tmp_path):
    layer = Layer.conv("ok", 4, 4, 3, 16)
    with pytest.raises(ValueError, match="N:M"):
        write_topology(tmp_path / "x.csv", [layer], nm_sparsity=["4:2"])
    with pytest.raises(ValueError, match="entries"):
        write_topology(tmp_path / "x.csv", [layer], nm_sparsity=[None, None])
    assert not (tmp_path / "x.csv").exists()


# ---- malformed input -----------------------------------------------------------------------------

ROW = "c,8,8,3,3,2,4,1,"

MALFORMED = [
    # (file text, kind, expected line, fragments of the message)
    ("", None, None, ["empty"]),
    ("\n  \n\t\n", None, None, ["empty"]),
    (CONV_HEADER + "\n\n", None, "line 2", ["at least one layer row"]),
    (f"{CONV_HEADER}\n{ROW}\nc2,8,8,3,3,2,4,\n", None, "line 3", ["expected 8 fields", "got 7"]),
    (f"{CONV_HEADER}\n{ROW}\nc2,8,8,3,3,2,4,1,2:4,5,\n", None, "line 3", ["got 10"]),
    (f"{CONV_HEADER}\n\nc2,8,x,3,3,2,4,1,\n", None, "line 3, column 3 (IFMAP Width)",
     ["positive integer", "'x'"]),
    (f"{CONV_HEADER}\nc2,8,8,3,3,2.5,4,1,\n", None, "line 2, column 6 (Channels)", ["'2.5'"]),
    (f"{CONV_HEADER}\nc2,8,8,3,3,2,0,1,\n", None, "line 2, column 7 (Num Filter)", ["'0'"]),
    (f"{CONV_HEADER}\nc2,8,8,3,3,2,4,0,\n", None, "line 2, column 8 (Strides)", ["'0'"]),
    (f"{CONV_HEADER}\nc2,-8,8,3,3,2,4,1,\n", None, "line 2, column 2 (IFMAP Height)", ["'-8'"]),
    (f"{CONV_HEADER}\nc2,,8,3,3,2,4,1,\n", None, "line 2, column 2", ["positive integer"]),
    (f"{CONV_HEADER}\n{ROW}\nbig,5,8,7,3,2,4,1,\n", None, "line 3, column 4 (Filter Height)",
     ["filter height 7", "IFMAP height 5"]),
    (f"{CONV_HEADER}\nwide,8,2,3,3,2,4,1,\n", None, "line 2, column 5 (Filter Width)",
     ["filter width 3", "IFMAP width 2"]),
    (f"{CONV_HEADER}\n,8,8,3,3,2,4,1,\n", None, "line 2, column 1 (Layer name)",
     ["layer name"]),
    (f"{CONV_HEADER_SP}\nc,8,8,3,3,2,4,1,4:2,\n", None, "line 2, column 9 (Sparsity)",
     ["N:M", "'4:2'"]),
    (f"{CONV_HEADER_SP}\nc,8,8,3,3,2,4,1,a:b,\n", None, "line 2, column 9", ["'a:b'"]),
    (f"{CONV_HEADER_SP}\nc,8,8,3,3,2,4,1,2,\n", None, "line 2, column 9", ["'2'"]),
    (f"{CONV_HEADER_SP}\nc,8,8,3,3,2,4,1,0:4,\n", None, "line 2, column 9", ["'0:4'"]),
    (f"{CONV_HEADER_SP}\nc,8,8,3,3,2,4,1,2:4:8,\n", None, "line 2, column 9", ["'2:4:8'"]),
    (f"{CONV_HEADER_SP}\nc,8,8,3,3,2,4,1,1.5:4,\n", None, "line 2, column 9", ["'1.5:4'"]),
    ("Layer Name, M, N, K, Sparsity,\ng,1,5,16,1,\n", None, "line 2, column 5 (Sparsity)",
     ["N:M"]),
    (f"{CONV_HEADER_SP}\nc,8,8,3,3,2,4,1,5:4,\n", None, "line 2, column 9 (Sparsity)",
     ["1 <= N <= M", "'5:4'"]),
    (f"{CONV_HEADER_SP}\nc,8,8,3,3,2,4,1,²:4,\n", None, "line 2, column 9", ["'²:4'"]),
    (f"{CONV_HEADER_SP}\nc,8,8,3,3,2,4,1,2:４,\n", None, "line 2, column 9", ["'2:４'"]),
    (f"{CONV_HEADER_SP}\nc,8,8,3,3,2,4,1,{'1' * 5000}:4,\n", None, "line 2, column 9",
     ["at most 6 digits"]),
    ("Layer Name, M, N, K, Sparsity,\ng,1,5,16,2:1234567,\n", None,
     "line 2, column 5 (Sparsity)", ["at most 6 digits"]),
    (f"{GEMM_HEADER}\ng,1,5,\n", None, "line 2", ["expected 4 fields", "got 3"]),
    (f"{GEMM_HEADER}\ng,1,5,0,\n", None, "line 2, column 4 (K)", ["'0'"]),
    (f"{GEMM_HEADER}\ng,1,five,16,\n", None, "line 2, column 3 (N)", ["'five'"]),
    ("name,height,width,\nc,8,8,\n", None, "line 1", ["unrecognised header"]),
    (f"\n\n{CONV_HEADER}\n{ROW}\n", "gemm", "line 3", ["conv header", "kind='gemm'"]),
    (f"{GEMM_HEADER}\ng,1,5,16,\n", "conv", "line 1", ["gemm header", "kind='conv'"]),
    ("c,8,8,3,3,2,\n", None, "line 1", ["no header", "6 fields"]),
    ("c,8,8,3,3,2,4,1,\n", "gemm", "line 1", ["expected 4 fields", "got 8"]),
    ("Layer, IFMAP Height, IFMAP Width,\nc,8,8,\n", None, "line 1", ["conv header", "got 3"]),
]


@pytest.mark.parametrize("text,kind,where,fragments", MALFORMED)
def test_malformed_input_raises_topology_error(tmp_path, text, kind, where, fragments):
    path = _write(tmp_path / "broken_topo.csv", text)
    with pytest.raises(TopologyError) as info:
        read_topology(path, kind=kind)
    msg = str(info.value)
    assert msg.startswith(str(path) + ": ")
    assert info.value.source == str(path)
    if where is not None:
        assert f": {where}" in msg
    for fragment in fragments:
        assert fragment in msg


def test_file_level_errors(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(TopologyError, match=r"nope\.csv: file not found"):
        read_topology(missing)
    with pytest.raises(TopologyError, match=r"cannot read"):
        read_topology(tmp_path)  # a directory
    latin = tmp_path / "latin.csv"
    latin.write_bytes(f"{CONV_HEADER}\n{ROW}\ncaf\xe9,8,8,3,3,2,4,1,\n".encode("latin-1"))
    with pytest.raises(TopologyError) as info:
        read_topology(latin)
    assert "latin.csv: line 3: not UTF-8" in str(info.value)
    ok = _write(tmp_path / "ok.csv", f"{CONV_HEADER}\n{ROW}\n")
    with pytest.raises(TopologyError, match=r"ok\.csv: kind: expected one of conv, gemm"):
        read_topology(ok, kind="fc")


@pytest.mark.parametrize(("text", "needle"), [
    ("Layer, M, N, K,\ng1,99999999999,99999999999,99999999999,\n",
     "line 2: layer g1: operand filter"),
    ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, "
     "Strides,\nC1,100000,100000,3,3,512,512,1,\n", "line 2: layer C1: operand ifmap"),
])
def test_a_layer_too_large_to_simulate_is_refused_when_read(tmp_path, text, needle):

    path = _write(tmp_path / "big.csv", text)
    with pytest.raises(TopologyError, match="expected at most 2\\*\\*32") as err:
        read_topology(path)
    assert needle in str(err.value)


def test_per_channel_is_scalesims_depthwise_split(tmp_path):
    text = (f"{CONV_HEADER_SP}\ndw1DP,10,10,3,3,3,2,2,2:4,\nc1,8,8,3,3,2,4,1,\n"
            "dw1DP,9,9,3,3,2,1,1,1:4,\ndw1DPChannel_1,6,6,3,3,1,1,1,\n")
    topo = read_topology(_write(tmp_path / "dw.csv", text))
    split = per_channel(topo)
    names = [la.name for la in split.layers]
    # SCALE-Sim's names (topology_utils.load_arrays_conv), a repeated one made unique as a
    # duplicate row's is; every name containing DP is split, a split name too
    assert names == ["dw1DPChannel_0", "dw1DPChannel_1", "dw1DPChannel_2", "c1",
                     "dw1DPChannel_0#2", "dw1DPChannel_1#2", "dw1DPChannel_1Channel_0"]
    assert split.nm_sparsity == ("2:4",) * 3 + (None, "1:4", "1:4", None)
    first = split.layers[0]
    # one channel, Num Filter filters, the row's geometry (input extended as for the grouped row)
    assert (first.in_channels, first.out_channels, first.groups) == (1, 2, 1)
    assert first.input_hw == topo.layers[0].input_hw and first.stride == (2, 2)
    assert first.extra == topo.layers[0].extra
    grouped = topo.layers[0]
    assert sum(la.macs(1) for la in split.layers[:3]) == grouped.macs(1)
    assert split.layers[4].extra["scalesim_name"] == "dw1DPChannel_0"
    # GEMM rows are never split
    gemm = read_topology(_write(tmp_path / "g.csv", "Layer, M, N, K,\nxDP,4,4,4,\n"))
    assert per_channel(gemm) == gemm
