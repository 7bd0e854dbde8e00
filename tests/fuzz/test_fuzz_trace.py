"""Generated damage to a trace directory (manifest fields, step index fields, arrays whose
stored size or declared shape lies, unused huge entries, deep nesting, truncation, cut or
corrupted gaps-zstd streams), of either mask codec: every trace opens and reads step by step, or
is refused on one line, without allocating what a lying file asks for."""

from __future__ import annotations

import copy
import io
import json
import re
import resource
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.contract import FUZZ, outcome, plausible, values
from tests.traces.legacy import write_version_1
from traces.codec import GAPS_ZSTD, PACKBITS
from traces.format import INDEX_KEY, MANIFEST, Trace
from traces.synth import SynthConfig, synthesize

#: a damaged step must not raise this process's peak memory by more than this
MEMORY_SLACK_MB = 512


@pytest.fixture(scope="module")
def base_traces(tmp_path_factory) -> dict[str, Path]:
    """The synthetic trace (version 2, gaps-zstd) and its masks as version 1 wrote them
    (packbits)."""
    out = tmp_path_factory.mktemp("fuzz-trace")
    synthesize(SynthConfig(model="lenet5", sparsity=0.5, batch=2, steps=2), out / "t")
    return {GAPS_ZSTD: out / "t", PACKBITS: write_version_1(Trace(out / "t"), out / "v1")}


MANIFEST_PATHS = [
    "format",
    "format_version",
    "model",
    "method",
    "seed",
    "batch_size",
    "dtype",
    "producer",
    "sparsity",
    "sparsity.sparsity",
    "sparsity.layer_density",
    "layers",
    "layers.0",
    "layers.0.name",
    "layers.0.in_channels",
    "layers.1.out_channels",
    "layers.1.kernel",
    "layers.1.input_hw",
    "layers.2.stride",
    "layers.2.groups",
    "layers.3.kind",
    "layers.0.padding",
    "steps",
    "steps.0",
    "steps.0.step",
    "steps.0.file",
    "steps.1.file",
    "extra",
]
INDEX_PATHS = [
    "step",
    "layers",
    "meta",
    "events",
    "layers.conv2",
    "layers.conv2.fwd",
    "layers.conv2.fwd.filter",
    "layers.conv2.fwd.filter.mask",
    "layers.conv2.fwd.filter.nnz",
    "layers.conv2.fwd.filter.shape",
    "layers.conv2.fwd.filter.dense",
    "layers.conv2.fwd.filter.values",
    "layers.conv2.bwd_weight.ifmap.mask",
    "layers.fc1.fwd.ifmap",
    "layers.fc1.fwd.ifmap.dense",
    "layers.fc1.fwd.ofmap",
    "meta.not_computed",
]


def _set(doc, dotted: str, value) -> None:
    """Set the value at a dotted path (list items by index), making mappings on the way; a
    path through a list item that is not there, or through a scalar, is left alone."""
    node = doc
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return
            key = int(part)
        elif isinstance(node, dict):
            key = part
        else:
            return
        if i == len(parts) - 1:
            node[key] = value
            return
        if not isinstance(node[key] if isinstance(node, list) else node.get(key), (dict, list)):
            node[key] = {}
        node = node[key]


DEEP = "__deep__"


def _deep(depth: int) -> str:
    """A stand-in for ``depth`` nested lists, written into the JSON text by ``_dumps`` (a
    generated value this deep would overflow Python's own stack in copies and reprs)."""
    return f"{DEEP}{depth}"


def _npy(shape_text: str, dtype: str, payload: bytes) -> bytes:
    """A .npy member whose header claims ``shape_text`` over ``payload`` bytes of data."""
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape_text}, }}"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + payload


LIES = st.sampled_from(
    [
        ("(1099511627776,)", "|u1", b"\x00" * 64),  # 1 TiB declared, 64 B stored
        ("(4294967296,)", "|u1", b""),
        ("(-1,)", "|u1", b""),
        ("(3, 3)", "|u1", b"\x00" * 9),
        ("(16,)", "<f8", b"\x00" * 128),
        ("(16,)", "|O", b"\x00" * 16),  # pickled objects: refused
    ]
)


@st.composite
def damage(draw):
    """(what to do, its arguments): a manifest edit, an index edit, an array swap, an unused
    big entry, or a truncation."""
    kind = draw(
        st.sampled_from(
            [
                "manifest",
                "manifest",
                "manifest-text",
                "index",
                "index",
                "array",
                "unused",
                "truncate",
                "deep-index",
                "coded",
                "coded",
            ]
        )
    )
    if kind == "manifest":
        edits = [
            (
                draw(st.sampled_from(MANIFEST_PATHS)),
                draw(st.one_of(plausible, values, st.integers(100, 5000).map(_deep))),
            )
            for _ in range(draw(st.integers(1, 3)))
        ]
        return kind, edits
    if kind == "manifest-text":
        return kind, draw(
            st.sampled_from(
                [
                    "",
                    "{",
                    "[]",
                    "null",
                    '{"format": 1e999}',
                    "[" * 100000 + "]" * 100000,
                    '{"batch_size": ' + "9" * 5000 + "}",
                    "\xff\xfe",
                    '{"a": NaN}',
                ]
            )
        )
    if kind in ("index", "deep-index"):
        if kind == "deep-index":
            return kind, [("meta.x", _deep(draw(st.integers(100, 5000))))]
        return kind, [
            (draw(st.sampled_from(INDEX_PATHS)), draw(st.one_of(plausible, values)))
            for _ in range(draw(st.integers(1, 3)))
        ]
    if kind == "array":
        return kind, (
            draw(
                st.sampled_from(["L0001.fwd.filter.mask", INDEX_KEY, "L0001.bwd_weight.ifmap.mask"])
            ),
            draw(LIES),
        )
    if kind == "unused":
        return kind, draw(st.sampled_from([8 << 20, 64 << 20]))  # zeros: compresses to kB
    if kind == "coded":  # the bytes of one stored mask (a gaps-zstd stream, or packed bits)
        how = draw(st.sampled_from(["cut", "flip", "append", "replace"]))
        at = draw(st.integers(0, 400))
        junk = draw(st.binary(min_size=1, max_size=64))
        return kind, (draw(st.sampled_from(CODED)), how, at, junk)
    return kind, draw(st.integers(0, 4000))


CODED = ["L0001.fwd.filter.mask", "L0001.bwd_weight.ifmap.mask", "L0003.bwd_weight.ifmap.mask"]


def _damage_bytes(data: bytes, how: str, at: int, junk: bytes) -> bytes:
    at = min(at, max(len(data) - 1, 0))
    if how == "cut":
        return data[:at]
    if how == "flip" and data:
        return data[:at] + bytes([data[at] ^ junk[0] or 1]) + data[at + 1:]
    if how == "append":
        return data + junk
    return junk  # replaced outright


def _rewrite_step(step: Path, members: dict[str, bytes]) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    step.write_bytes(buf.getvalue())


def _members(step: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(step) as z:
        return {n: z.read(n) for n in z.namelist()}


def _apply(trace: Path, what) -> None:
    kind, arg = what
    mpath = trace / MANIFEST
    step = trace / json.loads(mpath.read_text())["steps"][0]["file"]
    if kind == "manifest":
        doc = json.loads(mpath.read_text())
        for path, value in arg:
            _set(doc, path, copy.deepcopy(value))
        mpath.write_text(_dumps(doc), encoding="utf-8", errors="surrogatepass")
    elif kind == "manifest-text":
        mpath.write_text(arg, encoding="utf-8", errors="surrogatepass")
    elif kind in ("index", "deep-index"):
        members = _members(step)
        index = json.loads(np.load(io.BytesIO(members[f"{INDEX_KEY}.npy"])).tobytes())
        for path, value in arg:
            _set(index, path, copy.deepcopy(value))
        arr = np.frombuffer(_dumps(index).encode("utf-8", "surrogatepass"), np.uint8)
        out = io.BytesIO()
        np.save(out, arr)
        members[f"{INDEX_KEY}.npy"] = out.getvalue()
        _rewrite_step(step, members)
    elif kind == "array":
        name, (shape, dtype, payload) = arg
        members = _members(step)
        members[f"{name}.npy"] = _npy(shape, dtype, payload)
        _rewrite_step(step, members)
    elif kind == "unused":
        members = _members(step)
        out = io.BytesIO()
        np.save(out, np.zeros(arg, np.uint8))
        members["unused.npy"] = out.getvalue()
        _rewrite_step(step, members)
    elif kind == "coded":
        name, how, at, junk = arg
        members = _members(step)
        if f"{name}.npy" in members:
            arr = np.load(io.BytesIO(members[f"{name}.npy"]))
            bad = np.frombuffer(_damage_bytes(arr.tobytes(), how, at, junk), np.uint8)
            out = io.BytesIO()
            np.save(out, bad)
            members[f"{name}.npy"] = out.getvalue()
            _rewrite_step(step, members)
    else:
        data = step.read_bytes()
        step.write_bytes(data[: min(arg, len(data) - 1)])


def _dumps(doc) -> str:
    text = json.dumps(doc, allow_nan=True)
    return re.sub(f'"{DEEP}([0-9]+)"', lambda m: "[" * int(m[1]) + "]" * int(m[1]), text)


def _read_all(trace: Path) -> int:
    t = Trace(trace)
    return sum(1 for _ in t)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@FUZZ
@given(codec=st.sampled_from([GAPS_ZSTD, PACKBITS]), what=damage())
def test_damaged_trace(base_traces, codec, what):
    with tempfile.TemporaryDirectory() as d:
        trace = Path(d) / "t"
        shutil.copytree(base_traces[codec], trace)
        _apply(trace, what)
        before = _peak_mb()
        outcome("trace", _read_all, trace)
        assert _peak_mb() - before < MEMORY_SLACK_MB, f"{what[0]} raised the peak memory"
