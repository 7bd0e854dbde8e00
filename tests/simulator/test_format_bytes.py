"""``SPARSE_REPORT``'s ``A/B Data Bytes`` and ``A/B Metadata Bytes``: each operand as it is
stored in DRAM in its role's format. A compressed im2col operand is its feature map, each
stored element once, compressed by the map's own nonzeros one run per group of the GEMM;
checked against the explicit feature-map tensor of the masks, compressed per the format's
definition (``dataflows.formats``), over conv geometries, groups and lowerings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dataflows.formats import FORMATS, block_bits
from dataflows.sparse import nm_slots
from simulator.arch import load_arch
from simulator.run import simulate
from traces.layers import Layer

#: the architecture's lowerings: the two K orders, a transposed bwd_input per output phase
#: (its output gradient an im2col operand), a GEMM per image
LOWERINGS = [
    {},
    {"k_order": "channel_inner"},
    {"bwd_input": "phases"},
    {"bwd_input": "phases", "k_order": "channel_inner"},
    {"batch": "per_image"},
]
COLUMNS = ["A Data Bytes", "A Metadata Bytes", "B Data Bytes", "B Metadata Bytes"]


def _arch(lowering: dict, formats: dict, lanes: int = 4):
    return load_arch("tensordash").with_overrides(
        {
            "array.rows": 4,
            "array.cols": 4,
            "array.lanes": lanes,
            "sparse.lowering": lowering,
            "sparse.formats": formats,
        }
    )


@st.composite
def _convs(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    hw = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    pad = (draw(st.integers(0, k[0] - 1)), draw(st.integers(0, k[1] - 1)))
    dil = (draw(st.integers(1, 2)), 1)
    assume(all(hw[i] + 2 * pad[i] >= dil[i] * (k[i] - 1) + 1 for i in range(2)))
    return Layer.conv(
        "c",
        groups * draw(st.integers(1, 3)),
        groups * draw(st.integers(1, 3)),
        k,
        hw,
        stride=(draw(st.integers(1, 3)), draw(st.integers(1, 2))),
        padding=pad,
        groups=groups,
        dilation=dil,
    )


def _run_bits(fmt: str, nonzero: np.ndarray, value_bits: int) -> tuple[int, int]:
    """The explicit tensor ``nonzero`` (bool) stored as one run of its elements in ``fmt``:
    a 1 × n block of ``block_bits``, the format's definition."""
    return (
        block_bits(fmt, 1, nonzero.size, int(nonzero.sum()), value_bits) if nonzero.size else (0, 0)
    )


def _read(layer: Layer, of_output: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per axis, the pixels of the ifmap some window of the convolution covers, or
    (``of_output``) the output positions whose window covers some ifmap pixel (not only
    padding): the output gradient a transposed convolution reads."""
    out = []
    for n, k, s, p, d, o in zip(
        layer.input_hw,
        layer.kernel,
        layer.stride,
        layer.padding,
        layer.dilation,
        layer.out_hw,
        strict=True,
    ):
        hit = np.zeros(o if of_output else n, dtype=bool)
        for oy in range(o):
            for i in range(k):
                if 0 <= oy * s - p + i * d < n:
                    hit[oy if of_output else oy * s - p + i * d] = True
        out.append(hit)
    return out[0], out[1]


def _stored_map(
    fmt: str, fmap: np.ndarray, read: tuple, groups: int, per_image: bool, value_bits: int
) -> tuple[int, int]:
    """(data, metadata) bytes of feature map ``fmap`` (N, C, H, W; bool) stored in ``fmt``:
    one run per group of the GEMM (a convolution group's channels, of one image where the
    GEMM runs image by image) of its pixels the GEMM reads (``read``: rows, columns), every
    element once."""
    fmap = fmap[:, :, read[0], :][:, :, :, read[1]]
    data = meta = 0
    cg = fmap.shape[1] // groups
    for img in [fmap[i : i + 1] for i in range(fmap.shape[0])] if per_image else [fmap]:
        for g in range(groups):
            d, m = _run_bits(fmt, img[:, g * cg : (g + 1) * cg], value_bits)
            data, meta = data + d, meta + m
    return data // 8, meta // 8


def _rows(layer: Layer, batch: int, arch, masks: dict):
    t = simulate(
        [layer], batch, arch, "os", "train", "ideal", masks={layer.name: masks}, input_grad=True
    ).table
    return {ph: {c: int(t[c][i]) for c in COLUMNS} for i, ph in enumerate(t["Phase"])}


@settings(deadline=None, max_examples=150)
@given(
    layer=_convs(),
    batch=st.integers(1, 2),
    low=st.sampled_from(LOWERINGS),
    fmts=st.tuples(*[st.sampled_from(FORMATS[1:])] * 2),
    densities=st.tuples(*[st.floats(0.0, 1.0)] * 3),
    seed=st.integers(0, 2**16),
)
def test_a_compressed_map_is_stored_once_from_its_own_nonzeros(
    layer, batch, low, fmts, densities, seed
):
    """The ifmap (``fwd``'s A, ``bwd_weight``'s B) and, where the lowering makes it an im2col
    operand (a transposed ``bwd_input``), the output gradient are the explicit feature-map
    tensors of the masks, stored compressed; the plain operands are their matrices."""
    rng = np.random.default_rng(seed)
    masks = {
        r: rng.random(layer.operand_shape(r, batch)) < d
        for r, d in zip(("ifmap", "grad_out", "filter"), densities, strict=True)
    }
    arch = _arch(low, {"ifmap": fmts[0], "grad_out": fmts[1], "filter": "bitmap"})
    rows = _rows(layer, batch, arch, masks)
    w = 8 * arch.word_bytes["ifmap"]
    per_image = low.get("batch") == "per_image"
    ifmap = _stored_map(fmts[0], masks["ifmap"], _read(layer, False), layer.groups, per_image, w)
    assert (rows["fwd"]["A Data Bytes"], rows["fwd"]["A Metadata Bytes"]) == ifmap
    assert (rows["bwd_weight"]["B Data Bytes"], rows["bwd_weight"]["B Metadata Bytes"]) == ifmap
    got = (rows["bwd_input"]["A Data Bytes"], rows["bwd_input"]["A Metadata Bytes"])
    if low.get("bwd_input") == "phases":
        assert got == _stored_map(
            fmts[1], masks["grad_out"], _read(layer, True), layer.groups, per_image, w
        )
    else:  # col2im: the output gradient is a plain matrix, n·Ho·Wo × Cout/g a group
        go = masks["grad_out"]
        cg = go.shape[1] // layer.groups
        nnz = int(go.sum()) // layer.groups
        d, m = block_bits(fmts[1], go.size // go.shape[1], cg, nnz, w)
        assert got == (layer.groups * d // 8, layer.groups * m // 8)
    # the weights, a plain operand: a bitmap of the matrix a group (the groups' mean), as the
    # GEMM holds them (a bwd_input run per output phase only the taps that meet an input
    # position, a GEMM per image a copy per image: not checked here)
    f = masks["filter"]
    phases = (
        [] if per_image else ["fwd"] if low.get("bwd_input") == "phases" else ["fwd", "bwd_input"]
    )
    for ph in phases:
        assert rows[ph]["B Data Bytes"] == int(f.sum()) // layer.groups * layer.groups * w // 8
        assert rows[ph]["B Metadata Bytes"] == f.size // 8


def _im2col_nonzeros(x: np.ndarray, layer: Layer) -> int:
    """Nonzeros of the explicit im2col matrix of ifmap ``x`` (N, C, H, W): one per window
    element that lands on a nonzero (padding is zeros), all groups."""
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
    ho, wo = layer.out_hw
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    return sum(
        int(padded[:, :, i + sh * oy, j + sw * ox].sum())
        for oy in range(ho)
        for ox in range(wo)
        for i in range(kh)
        for j in range(kw)
    )


def test_the_scaled_matrix_count_fails_on_a_padded_conv():
    """The count this replaced — the im2col matrix's nonzeros scaled by stored / matrix
    elements — counts a 3×3, padding-1 conv's windows' padding as zeros and each map word up to
    nine times: the reference tells it apart, and the row is the reference."""
    layer = Layer.conv("c", 3, 4, 3, 5, padding=1)
    batch = 2
    x = np.random.default_rng(7).random(layer.ifmap_shape(batch)) < 0.5
    arch = _arch({}, {"ifmap": "bitmap"})
    rows = _rows(layer, batch, arch, {"ifmap": x})
    w = 8 * arch.word_bytes["ifmap"]
    ref = _stored_map("bitmap", x, _read(layer, False), 1, False, w)
    assert (rows["fwd"]["A Data Bytes"], rows["fwd"]["A Metadata Bytes"]) == ref
    m, k = batch * 25, 27
    old = block_bits("bitmap", m, k, _im2col_nonzeros(x, layer), w)[0] * x.size / (m * k) / 8
    assert int(old) != ref[0]


def test_a_dense_format_is_the_stored_words():
    """Dense formats: every element of what is stored, the feature map for an im2col
    operand (not the matrix), no metadata."""
    layer = Layer.conv("c", 4, 6, 3, 6, stride=2, padding=1, groups=2)
    batch = 2
    masks = {"ifmap": np.random.default_rng(1).random(layer.ifmap_shape(batch)) < 0.3}
    for low in LOWERINGS:
        arch = _arch(low, {})
        rows = _rows(layer, batch, arch, masks)
        wb = arch.word_bytes["ifmap"]
        fmap, wts = batch * 4 * 36 * wb, 6 * 2 * 9 * wb
        assert rows["fwd"] == {
            "A Data Bytes": fmap,
            "A Metadata Bytes": 0,
            "B Data Bytes": wts,
            "B Metadata Bytes": 0,
        }
        assert rows["bwd_weight"]["B Data Bytes"] == fmap


@pytest.mark.parametrize("fmt", ["dense", "nm", "bitmap"])
def test_an_nm_condensed_gemm_counts_what_it_stores(fmt):
    """2:4 weights run condensed: the weights are K' = K/2 slots a column, the activations
    the dense feature map, moved compact whatever the roles' formats (no metadata)."""
    layer = Layer.conv("c", 8, 8, 1, 4)
    batch = 1
    filt = np.zeros(layer.weight_shape, dtype=bool)
    filt.reshape(8, -1)[:, ::2] = True  # 2 of every 4 input channels
    arch = load_arch("stc-2to4").with_overrides({"sparse.formats": {"filter": fmt, "ifmap": fmt}})
    t = simulate(
        [layer], batch, arch, "os", "fwd", "ideal", masks={layer.name: {"filter": filt}}
    ).table
    assert t["Mode"][0] == "nm"
    wb = arch.word_bytes["filter"]
    assert int(t["B Data Bytes"][0]) == nm_slots(8, 2, 4) * 8 * wb
    assert int(t["A Data Bytes"][0]) == batch * 8 * 16 * arch.word_bytes["ifmap"]
    assert int(t["A Metadata Bytes"][0]) == int(t["B Metadata Bytes"][0]) == 0
