"""A step file's arrays read as numpy reads them: the header of numpy's usual form parsed by a
pattern, the data read once; every other header left to numpy. Checked against ``np.load`` on
generated arrays and headers, with deliberately wrong variants that the checks catch."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import TraceError
from traces import format as fmt
from traces.format import _plain_header, _StepArrays, write_npz

DTYPES = [
    "|u1",
    "|i1",
    "<u2",
    ">i4",
    "<i8",
    "<f2",
    "<f4",
    ">f8",
    "|b1",
    "<c16",
    "<m8",
    "|S3",
    "<U2",
    "|V4",
]


def _arrays(draw, n: int) -> dict[str, np.ndarray]:
    out = {}
    for i in range(n):
        dtype = np.dtype(draw(st.sampled_from(DTYPES)))
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
        raw = draw(
            st.binary(
                min_size=dtype.itemsize * int(np.prod(shape)),
                max_size=dtype.itemsize * int(np.prod(shape)),
            )
        )
        a = np.frombuffer(raw, dtype=np.uint8).view(dtype).reshape(shape).copy()
        if a.ndim >= 2 and draw(st.booleans()):
            a = np.asfortranarray(a)  # its header says fortran_order: True (numpy reads it)
        out[f"a{i}"] = a
    return out


def _npz(path: Path, arrays: dict[str, np.ndarray], how: str) -> Path:
    if how == "savez":
        np.savez(path, **arrays)
    elif how == "compressed":
        np.savez_compressed(path, **arrays)
    else:
        write_npz(path, arrays)
    return path


def _same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()  # bit for bit (NaNs, the bytes of void and string types)
    assert a.flags.writeable == b.flags.writeable and a.flags.c_contiguous == b.flags.c_contiguous


def _read(path: Path, key: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as npz:
        return _StepArrays(npz, str(path)).fetch(key, 1 << 20, key)


@st.composite
def _files(draw):
    return _arrays(draw, draw(st.integers(1, 4))), draw(
        st.sampled_from(["savez", "compressed", "write_npz"])
    )


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_files())
def test_arrays_read_as_numpy_reads_them(tmp_path, file):
    arrays, how = file
    path = _npz(tmp_path / "s.npz", arrays, how)
    with np.load(path, allow_pickle=False) as npz:
        for key in arrays:
            _same(_read(path, key), npz[key])


def _header(text: str, version: tuple[int, int] = (1, 0)) -> bytes:
    """A .npy file's header of ``text`` (padded as numpy pads it) after the magic."""
    width = 2 if version == (1, 0) else 4
    body = text.encode("latin1")
    body += b" " * (63 - (len(body) + 8 + width) % 64) + b"\n"
    return len(body).to_bytes(width, "little") + body


def _numpy_header(data: bytes, version: tuple[int, int]):
    read = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read(io.BytesIO(data))
    return shape, fortran, dtype


SHAPES = st.one_of(
    st.sampled_from(
        [
            "()",
            "(0,)",
            "(3,)",
            "(2, 3)",
            "(007,)",
            "(3)",
            "(-1,)",
            "(2,3)",
            "(2, 3,)",
            "(1, 2, 3, 4)",
            "(10000000000,)",
            "(True,)",
            "(2.0,)",
            "[3]",
        ]
    ),
    st.lists(st.integers(0, 10**6), max_size=4).map(
        lambda v: f"({', '.join(map(str, v))}{',' if len(v) == 1 else ''})"
    ),
)
DESCRS = st.sampled_from(
    ["|u1", "<f4", ">i8", "=u2", "<x9", "|O8", "<U3", "<i0", "u1", "|V0", "<m8", "<f4 ", "|b1"]
)


@st.composite
def _header_texts(draw):
    descr, shape = draw(DESCRS), draw(SHAPES)
    fortran = draw(st.sampled_from(["False", "True", "0", "false"]))
    order = draw(st.permutations(["descr", "fortran_order", "shape"]))
    items = {"descr": f"'{descr}'", "fortran_order": fortran, "shape": shape}
    sep = draw(st.sampled_from([", ", ",", ",  "]))
    text = (
        "{"
        + sep.join(f"'{k}': {items[k]}" for k in order)
        + draw(st.sampled_from([", }", "}", ",}", ", 'extra': 1, }"]))
    )
    return text, draw(st.sampled_from([(1, 0), (2, 0)]))


def _check_header(text: str, version: tuple[int, int], parse=_plain_header) -> None:
    """The pattern's reading of a header is numpy's, and it takes no header numpy refuses."""
    data = _header(text, version)
    got = parse(io.BytesIO(data), version)
    try:
        want = _numpy_header(data, version)
    except ValueError:
        assert got is None
        return
    if got is not None:
        shape, fortran, dtype = want
        assert not fortran and got == (shape, dtype) and got[1].str == dtype.str


@settings(max_examples=400, deadline=None)
@given(_header_texts())
def test_header_pattern_reads_as_numpy_or_leaves_it_to_numpy(header):
    _check_header(*header)


def test_numpy_headers_take_the_pattern():
    # numpy's writer's headers are the common case: the pattern reads them (not left to numpy)
    for dtype, shape in (("|u1", (5,)), ("<f4", (2, 3)), ("<i8", ()), ("|b1", (0, 4))):
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.zeros(shape, dtype))
        buf.seek(0)
        version = np.lib.format.read_magic(buf)
        assert _plain_header(buf, version) == (shape, np.dtype(dtype))


def test_wrong_header_patterns_fail_the_check(monkeypatch):
    # leading zeros (not a Python literal: numpy refuses), any fortran order (numpy transposes)
    loose_num = re.compile(
        rb"\{'descr': '([<>|=][a-z][0-9]+)', 'fortran_order': False, "
        rb"'shape': \(([0-9]+,|[0-9]+(?:, [0-9]+)+|)\), \} *\n"
    )
    monkeypatch.setattr(fmt, "_PLAIN_HEADER", loose_num)
    with pytest.raises(AssertionError):
        _check_header("{'descr': '|u1', 'fortran_order': False, 'shape': (007,), }", (1, 0))
    any_order = re.compile(
        rb"\{'descr': '([<>|=][a-z][0-9]+)', 'fortran_order': (?:False|True), "
        rb"'shape': \((0|[1-9][0-9]*,|(?:0|[1-9][0-9]*)(?:, (?:0|[1-9][0-9]*))+"
        rb"|)\), \} *\n"
    )
    monkeypatch.setattr(fmt, "_PLAIN_HEADER", any_order)
    with pytest.raises(AssertionError):
        _check_header("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", (1, 0))


def test_wrong_data_reader_fails_the_check(tmp_path, monkeypatch):
    a = np.arange(12, dtype=">i4").reshape(3, 4)
    path = _npz(tmp_path / "s.npz", {"a": a}, "write_npz")
    _same(_read(path, "a"), a)
    monkeypatch.setattr(
        fmt,
        "_read_plain",
        lambda f, shape, dtype: np.frombuffer(f.read(), dtype=dtype).reshape(shape),
    )  # read-only: numpy's arrays can be written
    with pytest.raises(AssertionError):
        _same(_read(path, "a"), a)


def test_cut_data_is_an_error(tmp_path):
    # a member whose header promises more data than it holds: refused, as numpy refuses it
    path = tmp_path / "s.npz"
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros(100, np.uint8))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.npy", buf.getvalue()[:-10])
    with pytest.raises(ValueError, match="EOF"):
        _read(path, "a")
    with np.load(path) as npz, pytest.raises(ValueError, match="EOF"):
        npz["a"]


def test_oversized_header_shape_refused_before_reading(tmp_path):
    path = tmp_path / "s.npz"
    header = b"\x93NUMPY\x01\x00" + _header(
        "{'descr': '|u1', 'fortran_order': False, 'shape': (1000000000,), }"
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.npy", header + b"\x00" * 10)
    with pytest.raises(TraceError, match="holds 1,000,000,000 bytes"):
        _read(path, "a")
