"""Trace format v2 (reads v1 too): a directory with ``manifest.json`` and one ``.npz`` per
recorded step, its masks coded by a mask codec (``traces.codec``) the step's index names.

The full specification is ``docs/trace-format.md``; this module is its only reader and writer.

* ``TraceWriter`` writes steps one at a time; each step file and each manifest update is written
  to a temporary name and renamed, so a trace on disk is always complete up to its last listed step.
* ``Trace`` opens a trace, validates the manifest, and streams validated ``StepData`` one step at a
  time. Every problem raises ``TraceError`` naming the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InputError, TraceError
from common.jsonio import load_json
from common.vocab import PHASES
from common.yamlio import float_value
from traces import codec as mask_codec
from traces.codec import CODECS, GAPS_ZSTD, PACKBITS, CodecError
from traces.layers import Layer

FORMAT_NAME = "sparsesim-trace"
FORMAT_VERSION = 2
#: versions this reader reads. Version 2 adds ``matmul`` layers (two activation operands, no
#: weight), the optional ``coverage`` object, gives every layer's ``bwd_input`` by the step's
#: ``bwd_input_not_computed`` alone (version 1 also leaves the first layer's out by position),
#: and lets a step file code its masks with another codec than ``packbits`` (``mask_codec``).
READ_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
INDEX_KEY = "index"
#: the index key naming the step file's mask codec (absent: ``packbits``, all a version 1 has)
CODEC_KEY = "mask_codec"

#: The two operands each training GEMM multiplies, and the result it produces.
PHASE_OPERANDS: dict[str, tuple[str, str]] = {
    "fwd": ("filter", "ifmap"),
    "bwd_input": ("filter", "grad_out"),
    "bwd_weight": ("ifmap", "grad_out"),
}
PHASE_RESULT = {"fwd": "ofmap", "bwd_input": "grad_in", "bwd_weight": "grad_w"}
#: step-meta keys listing the layers whose GEMM of that phase did not run in the step
NOT_COMPUTED = {"bwd_input_not_computed": "bwd_input", "bwd_weight_not_computed": "bwd_weight"}
DTYPES = ("float32", "float16", "bfloat16")
VALUE_DTYPES = ("float32", "float16")

#: Sanity limits checked when a manifest is read, far above any real network (ResNet-50 at
#: batch 4096 peaks at 2**31.6 elements per operand), so that a corrupt size is one clear error
#: instead of a simulation that dies allocating terabytes.
MAX_BATCH = 65536  # batch_size
MAX_SPATIAL = 65536  # each of input_hw (H, W or tokens), kernel, stride, padding, dilation
MAX_CHANNELS = 2**24  # in_channels, out_channels (features of a linear layer)
MAX_OPERAND_ELEMENTS = 2**32  # elements of each operand at batch_size (simulate: ~1.4 GiB RSS)
MAX_LAYERS = 10_000  # layers of a trace, as of a topology (real networks have hundreds)
MAX_MANIFEST_BYTES = 16 << 20  # manifest.json (a few kB per layer; decoded, ~20x in memory)
MAX_INDEX_BYTES = 16 << 20  # the JSON index of one step file (decoded, ~20x in memory)
MAX_EVENTS = 1 << 16  # events listed in one step's index (mask updates: one per layer)
MAX_STEP_ARRAY_BYTES = 1 << 32  # any array of a step file read by name alone
_NPY_HEADER_BYTES = 1 << 16  # the .npy header before an array's data
LIMITS_NOTE = "a sanity limit no real network reaches"


# ------------------------------------------------------------------------------------------------
# operands
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PackedMask:
    """A bit-packed boolean tensor: bit i of the C-order flattening is bit ``7 - i % 8`` of byte
    ``i // 8`` (``numpy.packbits`` order); padding bits in the last byte are zero."""

    shape: tuple[int, ...]
    bits: np.ndarray  # uint8, length ceil(prod(shape) / 8)
    nnz: int

    @staticmethod
    def from_bool(mask: np.ndarray) -> PackedMask:
        mask = np.asarray(mask, dtype=bool)
        bits = np.packbits(mask.reshape(-1))
        return PackedMask(tuple(int(s) for s in mask.shape), bits, int(np.count_nonzero(mask)))

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def density(self) -> float:
        return self.nnz / self.numel if self.numel else 0.0

    def unpack(self) -> np.ndarray:
        """The mask as a boolean array of ``shape``."""
        flat = np.unpackbits(self.bits, count=self.numel).astype(bool, copy=False)
        return flat.reshape(self.shape)


@dataclass(frozen=True)
class Operand:
    """One operand (or masked result) of one phase of one layer in one step.

    ``mask`` is None for an operand marked dense (every element participates, nothing stored).
    ``values`` optionally holds the nonzero values in C order (length ``nnz``).
    """

    role: str
    shape: tuple[int, ...]
    mask: PackedMask | None
    values: np.ndarray | None = None

    @property
    def dense(self) -> bool:
        return self.mask is None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nnz(self) -> int:
        return self.numel if self.mask is None else self.mask.nnz

    @property
    def density(self) -> float:
        return 1.0 if self.mask is None else self.mask.density

    def unpack(self) -> np.ndarray:
        """The boolean mask (all True when dense)."""
        if self.mask is None:
            return np.ones(self.shape, dtype=bool)
        return self.mask.unpack()


@dataclass(frozen=True)
class StepData:
    """All operands of one recorded step: ``layers[name][phase][role] -> Operand``."""

    step: int
    file: Path
    layers: dict[str, dict[str, dict[str, Operand]]]
    meta: dict[str, Any] = field(default_factory=dict)
    events: list[Any] = field(default_factory=list)
    codec: str = PACKBITS  #: how the step file codes its masks (``traces.codec.CODECS``)

    def masks(self) -> dict[str, dict[str, dict[str, PackedMask | None]]]:
        """``layers`` as ``TraceWriter.write_step`` takes them: each operand's ``PackedMask``,
        None when dense (to write the step again, e.g. with another codec)."""
        return {name: {phase: {role: op.mask for role, op in roles.items()}
                       for phase, roles in phases.items()}
                for name, phases in self.layers.items()}


# ------------------------------------------------------------------------------------------------
# manifest
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Manifest:
    """The validated contents of ``manifest.json``."""

    model: str
    method: str
    sparsity: dict[str, Any]
    seed: int
    batch_size: int
    dtype: str
    layers: tuple[Layer, ...]
    producer: dict[str, Any]
    steps: tuple[dict[str, Any], ...] = ()
    generator: dict[str, Any] | None = None
    #: written as version 1 unless asked (the recorder and synth write 2, synth with the
    #: gaps-zstd mask codec)
    format_version: int = 1
    #: version 2, optional: what share of the model's training MACs the trace holds
    #: (``training_macs``, ``recorded_macs``, ``unrecorded``: the ops left out with their MACs)
    coverage: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "producer": self.producer,
            "model": self.model,
            "method": self.method,
            "sparsity": self.sparsity,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "dtype": self.dtype,
        }
        if self.generator is not None:
            d["generator"] = self.generator
        if self.coverage is not None:
            d["coverage"] = self.coverage
        d["layers"] = [layer.to_dict() for layer in self.layers]
        d["steps"] = list(self.steps)
        return d

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)


def _want(d: Mapping[str, Any], key: str, types: type | tuple[type, ...], src: str,
          what: str) -> Any:
    if key not in d:
        raise TraceError(src, key, f"missing (expected {what})")
    v = d[key]
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise TraceError(src, key, f"expected {what}, got {v!r}")
    if not isinstance(v, types):
        raise TraceError(src, key, f"expected {what}, got {v!r}")
    return v


def _check_limits(layer: Layer, batch: int, src: str, where: str) -> None:
    """Reject sizes beyond the sanity limits (``MAX_*``) before anything is allocated."""
    for fld in ("in_channels", "out_channels", "heads"):
        v = getattr(layer, fld)
        if v > MAX_CHANNELS:
            raise TraceError(src, f"{where}: {fld}",
                             f"expected at most {MAX_CHANNELS} = 2**24 ({LIMITS_NOTE}), got {v}")
    for fld in ("input_hw", "kernel", "stride", "padding", "dilation"):
        pair = list(getattr(layer, fld))
        if max(pair) > MAX_SPATIAL:
            raise TraceError(src, f"{where}: {fld}",
                             f"expected sizes of at most {MAX_SPATIAL} ({LIMITS_NOTE}), "
                             f"got {pair}")
    for role in ("filter", "ifmap", "grad_out"):
        shape = layer.operand_shape(role, batch)
        n = math.prod(shape)
        if n > MAX_OPERAND_ELEMENTS:
            raise TraceError(src, where,
                             f"operand {role} {list(shape)} at batch_size {batch} has {n} "
                             f"elements; expected at most {MAX_OPERAND_ELEMENTS} = "
                             f"2**{MAX_OPERAND_ELEMENTS.bit_length() - 1} ({LIMITS_NOTE})")


def _is_number(v: Any) -> bool:
    x = float_value(v) if isinstance(v, (int, float)) else None
    return x is not None and not math.isnan(x)


def _check_sparsity(sp: dict[str, Any], n_layers: int, src: str) -> None:
    """The keys of the sparsity config that readers use: ``sparsity`` (global weight sparsity,
    in [0, 1]; 1 is what ``synth --sparsity 1`` writes), ``layer_density`` (one density in
    [0, 1] per layer) and ``topk_period`` (SWAT's top-K period; null or absent for methods
    without one). Other keys are free-form."""
    if "sparsity" in sp:
        v = sp["sparsity"]
        if not _is_number(v) or not 0.0 <= v <= 1.0:
            raise TraceError(src, "sparsity.sparsity",
                             f"expected a number in [0, 1] (the global weight sparsity), "
                             f"got {v!r}")
    if "layer_density" in sp:
        dens = sp["layer_density"]
        if not isinstance(dens, list) or len(dens) != n_layers:
            got = f"{len(dens)} values" if isinstance(dens, list) else repr(dens)
            raise TraceError(src, "sparsity.layer_density",
                             f"expected a list of {n_layers} densities (one per layer, in "
                             f"layer order), got {got}")
        for i, v in enumerate(dens):
            if not _is_number(v) or not 0.0 <= v <= 1.0:
                raise TraceError(src, f"sparsity.layer_density[{i}]",
                                 f"expected a density in [0, 1], got {v!r}")
    period = sp.get("topk_period")
    if period is not None and (isinstance(period, bool) or not isinstance(period, int)
                               or period < 1):
        raise TraceError(src, "sparsity.topk_period",
                         f"expected a positive integer (SWAT's top-K period in steps) or null, "
                         f"got {period!r}")


def parse_manifest(d: Any, src: str) -> Manifest:
    """Validate a decoded ``manifest.json`` and return a ``Manifest``."""
    if not isinstance(d, dict):
        raise TraceError(src, None, "expected a JSON object at the top level")
    fmt = d.get("format")
    if fmt != FORMAT_NAME:
        raise TraceError(src, "format", f"expected {FORMAT_NAME!r}, got {fmt!r}")
    version = d.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise TraceError(src, "format_version",
                         f"expected the integer 1 or {FORMAT_VERSION}, got {version!r}")
    if version not in READ_VERSIONS:
        raise TraceError(
            src, "format_version",
            f"unsupported version {version!r}; this sparsesim reads versions "
            f"{', '.join(map(str, READ_VERSIONS))}",
        )
    producer = _want(d, "producer", dict, src, "an object")
    model = _want(d, "model", str, src, "a model name")
    method = _want(d, "method", str, src, "a method name")
    sparsity = _want(d, "sparsity", dict, src, "an object")
    seed = _want(d, "seed", int, src, "an integer")
    batch = _want(d, "batch_size", int, src, "a positive integer")
    if batch < 1:
        raise TraceError(src, "batch_size", f"expected a positive integer, got {batch}")
    if batch > MAX_BATCH:
        raise TraceError(src, "batch_size",
                         f"expected at most {MAX_BATCH} ({LIMITS_NOTE}), got {batch}")
    dtype = _want(d, "dtype", str, src, f"one of {', '.join(DTYPES)}")
    if dtype not in DTYPES:
        raise TraceError(src, "dtype", f"expected one of {', '.join(DTYPES)}, got {dtype!r}")
    generator = d.get("generator")
    if generator is not None and not isinstance(generator, dict):
        raise TraceError(src, "generator", "expected an object")
    coverage = d.get("coverage")
    if coverage is not None and (version < 2 or not isinstance(coverage, dict)):
        raise TraceError(src, "coverage", "expected an object, in a version-2 trace")
    raw_layers = _want(d, "layers", list, src, "a list of layers")
    if not raw_layers:
        raise TraceError(src, "layers", "expected at least one layer")
    if len(raw_layers) > MAX_LAYERS:
        raise TraceError(src, "layers", f"{len(raw_layers):,} layers; a trace holds at most "
                                        f"{MAX_LAYERS:,} (the limit: each is simulated)")
    layers = []
    try:
        for i, entry in enumerate(raw_layers):
            layers.append(Layer.from_dict(entry, None, f"layers[{i}]"))
    except InputError as err:
        inner = ": ".join(str(p) for p in (err.source, err.field) if p)
        raise TraceError(src, inner or "layers", err.reason) from None
    for i, layer in enumerate(layers):
        if layer.kind == "matmul" and version < 2:
            raise TraceError(src, f"layers[{i}].kind",
                             "a matmul layer needs format_version 2, the manifest says 1")
    names = [layer.name for layer in layers]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise TraceError(src, "layers", f"duplicate layer name {dup[0]!r}")
    for i, layer in enumerate(layers):
        _check_limits(layer, batch, src, f"layers[{i}]: layer {layer.name!r}")
    _check_sparsity(sparsity, len(layers), src)
    raw_steps = _want(d, "steps", list, src, "a list of steps")
    steps = []
    seen: set[int] = set()
    for i, s in enumerate(raw_steps):
        where = f"steps[{i}]"
        if not isinstance(s, dict):
            raise TraceError(src, where, "expected an object with 'step' and 'file'")
        num = _want(s, "step", int, f"{src}: {where}", "a non-negative integer")
        name = _want(s, "file", str, f"{src}: {where}", "a file name")
        if num < 0 or num in seen:
            raise TraceError(src, f"{where}.step", f"expected a new non-negative step, got {num}")
        if os.path.basename(name) != name or not name.endswith(".npz"):
            raise TraceError(src, f"{where}.file", f"expected a .npz file name, got {name!r}")
        seen.add(num)
        steps.append(dict(s))
    return Manifest(
        model=model, method=method, sparsity=sparsity, seed=seed, batch_size=batch,
        dtype=dtype, layers=tuple(layers), producer=producer, steps=tuple(steps),
        generator=generator, format_version=version, coverage=coverage,
    )


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------
def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def write_npz(path: Path, arrays: Mapping[str, np.ndarray], level: int = 6,
              stored: frozenset[str] = frozenset()) -> None:
    """Write a deterministic ``.npz`` (fixed timestamps, sorted entries), atomically; the arrays
    named in ``stored`` (already compressed) go in uncompressed."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED,
                             compresslevel=level, allowZip64=True) as zf:
            for key in sorted(arrays):
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = (zipfile.ZIP_STORED if key in stored
                                      else zipfile.ZIP_DEFLATED)
                info.external_attr = 0o644 << 16
                zf.writestr(info, _npy_bytes(arrays[key]), compresslevel=level)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class TraceWriter:
    """Write a trace directory step by step.

    ``operands[layer][phase][role]`` is a boolean mask, a ``PackedMask``, or None (dense). Every
    phase must give both of its operands (``PHASE_OPERANDS``); the result role of a phase
    (``PHASE_RESULT``) may be given as well when the result is masked (e.g. ``grad_w`` of static
    sparse training). Identical masks within a step are stored once.

    ``level``: the deflate level of the step files' members (``packbits`` masks, the index,
    values). ``codec``: the mask codec (``traces.codec.CODECS``); ``gaps-zstd`` needs a
    version-2 manifest, and its masks are stored as coded, not deflated again.
    """

    def __init__(self, path: str | os.PathLike, manifest: Manifest, level: int = 6,
                 codec: str = PACKBITS) -> None:
        if codec not in CODECS:
            raise ValueError(f"codec {codec!r}: expected one of {', '.join(CODECS)}")
        if codec != PACKBITS and manifest.format_version < 2:
            raise ValueError(f"mask codec {codec!r} needs format_version 2")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        if (self.path / MANIFEST).exists():
            raise TraceError(str(self.path), None,
                             "already holds a trace; choose another directory")
        if manifest.steps:
            raise ValueError("a new trace starts with no steps")
        if manifest.format_version not in READ_VERSIONS:
            raise ValueError(f"format_version {manifest.format_version}: expected one of "
                             f"{READ_VERSIONS}")
        if manifest.format_version < 2 and (
                manifest.coverage is not None
                or any(la.kind == "matmul" for la in manifest.layers)):
            raise ValueError("matmul layers and coverage need format_version 2")
        self.manifest = manifest
        self.level = level
        self.codec = codec
        self._steps: list[dict[str, Any]] = []
        self._write_manifest()

    @property
    def written(self) -> list[int]:
        """The steps written so far, in order."""
        return [s["step"] for s in self._steps]

    def _write_manifest(self) -> None:
        d = self.manifest.to_dict()
        d["steps"] = self._steps
        text = json.dumps(d, indent=1, sort_keys=False) + "\n"
        _atomic_write_bytes(self.path / MANIFEST, text.encode())

    def write_step(
        self,
        step: int,
        operands: Mapping[str, Mapping[str, Mapping[str, Any]]],
        values: Mapping[tuple[str, str, str], np.ndarray] | None = None,
        meta: Mapping[str, Any] | None = None,
        events: list[Any] | None = None,
    ) -> Path:
        """Write one step file and list it in the manifest. Returns the file's path."""
        if any(s["step"] == step for s in self._steps):
            raise ValueError(f"step {step} was already written")
        batch = self.manifest.batch_size
        arrays: dict[str, np.ndarray] = {}
        by_digest: dict[bytes, str] = {}
        index_layers: dict[str, Any] = {}
        values = values or {}
        for li, layer in enumerate(self.manifest.layers):
            if layer.name not in operands:
                raise ValueError(f"step {step}: no operands for layer {layer.name!r}")
            phases = operands[layer.name]
            entry: dict[str, Any] = {}
            for phase in PHASES:
                if phase not in phases:
                    raise ValueError(f"step {step}: layer {layer.name!r} lacks phase {phase}")
                roles = phases[phase]
                allowed = (*PHASE_OPERANDS[phase], PHASE_RESULT[phase])
                for role in PHASE_OPERANDS[phase]:
                    if role not in roles:
                        raise ValueError(f"{layer.name}/{phase}: missing operand {role!r}")
                pe: dict[str, Any] = {}
                for role, spec in roles.items():
                    if role not in allowed:
                        raise ValueError(f"{layer.name}/{phase}: unknown role {role!r}")
                    shape = layer.operand_shape(role, batch)
                    if spec is None:
                        pe[role] = {"dense": True, "shape": list(shape)}
                        continue
                    pm = spec if isinstance(spec, PackedMask) else PackedMask.from_bool(spec)
                    if pm.shape != shape:
                        raise ValueError(
                            f"{layer.name}/{phase}/{role}: mask shape {pm.shape} != {shape}")
                    digest = hashlib.sha1(pm.bits.tobytes()).digest() + repr(shape).encode()
                    key = by_digest.get(digest)
                    if key is None:
                        key = f"L{li:04d}.{phase}.{role}.mask"
                        arrays[key] = (pm.bits if self.codec == PACKBITS else
                                       mask_codec.encode(pm.bits, pm.numel, pm.nnz))
                        by_digest[digest] = key
                    op: dict[str, Any] = {"mask": key, "nnz": pm.nnz, "shape": list(shape)}
                    val = values.get((layer.name, phase, role))
                    if val is not None:
                        val = np.asarray(val)
                        if val.dtype.name not in VALUE_DTYPES or val.shape != (pm.nnz,):
                            raise ValueError(f"{layer.name}/{phase}/{role}: values must be "
                                             f"float32/float16 of length nnz={pm.nnz}")
                        vkey = f"L{li:04d}.{phase}.{role}.values"
                        arrays[vkey] = val
                        op["values"] = vkey
                    pe[role] = op
                entry[phase] = pe
            index_layers[layer.name] = entry
        index = {"step": step, "layers": index_layers, "meta": dict(meta or {}),
                 "events": list(events or [])}
        if self.codec != PACKBITS:  # a packbits step file stays what version-1 readers read
            index[CODEC_KEY] = self.codec
        arrays[INDEX_KEY] = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
        fname = f"step_{step:08d}.npz"
        stored = frozenset(by_digest.values()) if self.codec != PACKBITS else frozenset()
        write_npz(self.path / fname, arrays, self.level, stored)
        self._steps.append({"step": step, "file": fname})
        self._steps.sort(key=lambda s: s["step"])  # a step may finish after a later one
        self._write_manifest()
        return self.path / fname


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
class Trace:
    """A trace directory opened for reading; ``iter(trace)`` streams validated steps."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        mpath = self.path / MANIFEST
        src = str(mpath)
        if not self.path.is_dir():
            raise TraceError(str(self.path), None, "not a trace directory (no such directory)")
        if not mpath.is_file():
            raise TraceError(str(self.path), None, f"not a trace directory (no {MANIFEST})")
        size = mpath.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise TraceError(src, None, f"is {size:,} bytes; a manifest holds at most "
                                        f"{MAX_MANIFEST_BYTES:,} (the limit)")
        try:
            data = mpath.read_bytes()
        except OSError as err:
            raise TraceError(src, None, f"cannot read: {err.strerror or err}") from None
        raw = load_json(data, src, error=TraceError)
        self.manifest = parse_manifest(raw, src)
        #: the manifest's SHA-256 (hex): the trace's identity in results (``trace_id``)
        self.digest = hashlib.sha256(data).hexdigest()

    @property
    def steps(self) -> list[int]:
        return [s["step"] for s in self.manifest.steps]

    def __len__(self) -> int:
        return len(self.manifest.steps)

    def require_steps(self) -> None:
        """Raise ``TraceError`` (naming ``manifest.json`` and ``steps``) when the trace lists
        no step. Such a manifest opens: the writer writes it before the first step, so a
        recording that stopped early leaves one. It has nothing to read or simulate."""
        if not self.manifest.steps:
            raise TraceError(str(self.path / MANIFEST), "steps",
                             "expected at least one recorded step, the trace lists none (a "
                             "recording that stopped before its first step?)")

    def __iter__(self) -> Iterator[StepData]:
        """Every listed step, validated; ``require_steps`` first."""
        self.require_steps()
        for s in self.manifest.steps:
            yield self._read(s)

    def read_step(self, step: int) -> StepData:
        for s in self.manifest.steps:
            if s["step"] == step:
                return self._read(s)
        raise TraceError(str(self.path / MANIFEST), "steps", f"no step {step} in this trace")

    def read_meta(self, step: int) -> dict[str, Any]:
        """The ``meta`` of a step's index, checked as ``read_step`` checks it, without reading
        the step's masks (``bwd_input_not_computed`` and the like, before a simulation)."""
        return self.read_index(step).meta

    def read_index(self, step: int) -> StepData:
        """A step's index, checked as ``read_step`` checks it, without its masks: the
        ``StepData`` with ``meta``, ``events`` and ``codec`` and no ``layers``."""
        for s in self.manifest.steps:
            if s["step"] == step:
                return self._read(s, index_only=True)
        raise TraceError(str(self.path / MANIFEST), "steps", f"no step {step} in this trace")

    def _read(self, entry: Mapping[str, Any], index_only: bool = False) -> StepData:
        fpath = self.path / entry["file"]
        src = str(fpath)
        if not fpath.is_file():
            if fpath.exists() or fpath.is_symlink():
                what = ("a directory" if fpath.is_dir() else "a broken symbolic link"
                        if not fpath.exists() else "a special file")
                raise TraceError(src, None, f"step file listed in the manifest is not a regular "
                                            f"file ({what}); expected a .npz file")
            raise TraceError(src, None, "step file listed in the manifest is missing")
        try:
            with np.load(fpath, allow_pickle=False) as npz:
                # lazily: an array is read when the index refers to it, its size checked first
                arrays = _StepArrays(npz, src)
                if index_only:
                    _, meta, events, codec = _parse_index(arrays, entry["step"], src,
                                                          self.manifest)
                    return StepData(step=entry["step"], file=fpath, layers={}, meta=meta,
                                    events=events, codec=codec)
                return _parse_step(arrays, entry["step"], fpath, self.manifest)
        except TraceError:  # already names the file and the field
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as err:
            reason = " ".join(str(err).split())
            raise TraceError(src, None, f"unreadable or truncated step file ({reason})") from None


class _StepArrays(Mapping):
    """The arrays of an open step file, read one at a time when asked for (``fetch``): its
    stored size is checked against what the manifest implies before anything is decompressed
    or allocated, so a small file cannot ask for gigabytes."""

    def __init__(self, npz: Any, src: str) -> None:
        self.npz = npz
        self.src = src
        self.names = set(npz.files)

    def __contains__(self, key: object) -> bool:
        return key in self.names

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.names))

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, key: str) -> np.ndarray:
        return self.fetch(key, MAX_STEP_ARRAY_BYTES, key)

    def fetch(self, key: str, max_bytes: int, field: str) -> np.ndarray:
        """Array ``key``, refused (``TraceError`` naming ``field``) when it stores more than
        ``max_bytes`` of data."""
        if key not in self.names:
            raise KeyError(key)
        member = f"{key}.npy" if f"{key}.npy" in self.npz.zip.NameToInfo else key
        stored = self.npz.zip.getinfo(member).file_size
        declared = stored
        if stored <= max_bytes + _NPY_HEADER_BYTES:
            with self.npz.zip.open(member) as f:  # the header first: shape and dtype
                version = np.lib.format.read_magic(f)
                plain = _plain_header(f, version)
                if plain is not None:
                    declared = math.prod(plain[0]) * plain[1].itemsize
                    if max(stored - _NPY_HEADER_BYTES, declared) <= max_bytes:
                        return _read_plain(f, *plain)  # as numpy would, header parsed once
            if plain is None:  # another form of header: numpy reads it (or refuses it)
                with self.npz.zip.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(f)
                    declared = math.prod(shape) * dtype.itemsize
        if max(stored - _NPY_HEADER_BYTES, declared) > max_bytes:
            raise TraceError(self.src, field, f"array {key!r} holds {declared:,} bytes; expected "
                                              f"at most {max_bytes:,} for its place in the "
                                              "manifest")
        return self.npz[key]


#: the header numpy's writer gives a C-order array of a plain dtype (``numpy.lib.format``): the
#: dict in this order and spelling, then spaces and a newline; anything else is read by numpy
_NUM = rb"(?:0|[1-9][0-9]*)"
_PLAIN_HEADER = re.compile(rb"\{'descr': '([<>|=][a-z][0-9]+)', 'fortran_order': False, "
                           rb"'shape': \((" + _NUM + rb",|" + _NUM + rb"(?:, " + _NUM +
                           rb")+|)\), \} *\n")
_MAX_NPY_HEADER = 10000  # numpy's own limit on a header's length (``max_header_size``)


def _plain_header(f: Any, version: tuple[int, int]) -> tuple[tuple[int, ...], np.dtype] | None:
    """(shape, dtype) of the .npy header at ``f`` (after the magic) when it has the form of
    ``_PLAIN_HEADER``, else None. numpy parses a header as a Python literal, 0.1 ms each (a
    ResNet-50 step file has 214 to read); this form needs a pattern alone."""
    if version not in ((1, 0), (2, 0)):
        return None
    width = 2 if version == (1, 0) else 4
    prefix = f.read(width)
    length = int.from_bytes(prefix, "little")
    if len(prefix) != width or length > _MAX_NPY_HEADER:
        return None
    m = _PLAIN_HEADER.fullmatch(f.read(length))
    if m is None:
        return None
    try:
        dtype = np.dtype(m[1].decode("ascii"))
    except TypeError:  # not a dtype: numpy's reader says so
        return None
    if dtype.hasobject or dtype.itemsize == 0:
        return None
    return tuple(int(x) for x in m[2].split(b",") if x.strip()), dtype


def _read_plain(f: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """The array of ``shape`` and ``dtype`` whose data follows at ``f``, read as
    ``numpy.lib.format.read_array`` reads it (a writable array, ``ValueError`` when the data
    is cut short)."""
    out = np.empty(math.prod(shape), dtype=dtype)
    want = out.nbytes
    got = f.readinto(out.view(np.uint8)) if want else 0
    if got != want:
        raise ValueError(f"EOF: reading array data, expected {want} bytes got {got}")
    return out.reshape(shape)


def _fetch(arrays: Mapping[str, np.ndarray], key: str, max_bytes: int, src: str,
           field: str) -> np.ndarray:
    """``arrays[key]``, its size checked first when ``arrays`` is a step file (``_StepArrays``)."""
    if isinstance(arrays, _StepArrays):
        return arrays.fetch(key, max_bytes, field)
    return arrays[key]


def _parse_index(arrays: Mapping[str, np.ndarray], step: int, src: str,
                 manifest: Manifest) -> tuple[dict[str, Any], dict[str, Any], list[Any], str]:
    """The step file's index, checked: (its layers, meta, events, mask codec)."""
    if INDEX_KEY not in arrays:
        raise TraceError(src, INDEX_KEY, "missing (every step file holds its index)")
    raw_index = _fetch(arrays, INDEX_KEY, MAX_INDEX_BYTES, src, INDEX_KEY)
    if raw_index.dtype != np.uint8 or raw_index.ndim != 1:
        raise TraceError(src, INDEX_KEY, f"expected a 1-D uint8 array of UTF-8 JSON, got "
                                         f"{raw_index.dtype} {raw_index.shape}")
    index = load_json(raw_index.tobytes(), src, INDEX_KEY, TraceError)
    if not isinstance(index, dict):
        raise TraceError(src, INDEX_KEY, "expected a JSON object")
    if index.get("step") != step:
        raise TraceError(src, "index.step",
                         f"expected {step} (as the manifest lists), got {index.get('step')!r}")
    raw_layers = index.get("layers")
    if not isinstance(raw_layers, dict):
        raise TraceError(src, "index.layers", "expected an object keyed by layer name")
    meta = index.get("meta", {})
    events = index.get("events", [])
    if not isinstance(meta, dict) or not isinstance(events, list):
        raise TraceError(src, "index.meta", "expected meta to be an object and events a list")
    if len(events) > MAX_EVENTS:
        raise TraceError(src, "index.events", f"{len(events):,} events; a step holds at most "
                                              f"{MAX_EVENTS:,} (the limit)")
    known = {layer.name for layer in manifest.layers}
    for i, ev in enumerate(events):
        if isinstance(ev, dict) and ev.get("type") == "mask_update":
            name = ev.get("layer")
            if not isinstance(name, str) or name not in known:
                got = "no layer" if "layer" not in ev else repr(name)
                raise TraceError(src, f"index.events[{i}].layer",
                                 f"a mask_update names the layer it updates; expected a layer "
                                 f"of the manifest, got {got}")
    for key in NOT_COMPUTED:
        names = meta.get(key)
        if names is not None and (not isinstance(names, list)
                                  or not all(isinstance(n, str) and n in known for n in names)):
            raise TraceError(src, f"index.meta.{key}",
                             f"expected a list of layer names of the manifest, got {names!r}")
    extra = sorted(set(raw_layers) - known)
    if extra:
        raise TraceError(src, f"index.layers.{extra[0]}", "layer not in the manifest")
    codec = index.get(CODEC_KEY, PACKBITS)
    if codec not in (CODECS if manifest.format_version >= 2 else (PACKBITS,)):
        allowed = ", ".join(CODECS) if manifest.format_version >= 2 else (
            f"{PACKBITS} (a version-1 trace has no other)")
        raise TraceError(src, f"index.{CODEC_KEY}", f"expected one of {allowed}, got {codec!r}")
    return raw_layers, meta, events, codec


def _parse_step(arrays: Mapping[str, np.ndarray], step: int, fpath: Path,
                manifest: Manifest) -> StepData:
    src = str(fpath)
    raw_layers, meta, events, codec = _parse_index(arrays, step, src, manifest)
    batch = manifest.batch_size
    unpacked_cache: dict[str, PackedMask] = {}
    layers: dict[str, dict[str, dict[str, Operand]]] = {}
    for layer in manifest.layers:
        lw = f"layer {layer.name!r}"
        le = raw_layers.get(layer.name)
        if not isinstance(le, dict):
            raise TraceError(src, lw, "missing from the step file")
        out: dict[str, dict[str, Operand]] = {}
        for phase in PHASES:
            pe = le.get(phase)
            if not isinstance(pe, dict):
                raise TraceError(src, f"{lw} phase {phase}", "missing")
            allowed = (*PHASE_OPERANDS[phase], PHASE_RESULT[phase])
            for role in PHASE_OPERANDS[phase]:
                if role not in pe:
                    raise TraceError(src, f"{lw} {phase}.{role}", "missing operand")
            ops: dict[str, Operand] = {}
            for role, oe in pe.items():
                where = f"{lw} {phase}.{role}"
                if role not in allowed:
                    raise TraceError(src, where,
                                     f"unknown role; {phase} takes {', '.join(allowed)}")
                ops[role] = _parse_operand(arrays, oe, role, layer.operand_shape(role, batch),
                                           src, where, unpacked_cache, codec)
            out[phase] = ops
        layers[layer.name] = out
    return StepData(step=step, file=fpath, layers=layers, meta=meta, events=events, codec=codec)


def _set_bits(bits: np.ndarray) -> int:
    """Set bits of a uint8 array, counted eight bytes to a word."""
    whole = bits.size - bits.size % 8
    return (int(np.bitwise_count(bits[:whole].view(np.uint64)).sum(dtype=np.int64))
            + int(np.bitwise_count(bits[whole:]).sum(dtype=np.int64)))


def _parse_operand(arrays: Mapping[str, np.ndarray], oe: Any, role: str,
                   shape: tuple[int, ...], src: str, where: str, cache: dict[str, PackedMask],
                   codec: str = PACKBITS) -> Operand:
    if not isinstance(oe, dict):
        raise TraceError(src, where, "expected an object")
    declared = oe.get("shape")
    if declared is not None and (not isinstance(declared, list) or declared != list(shape)
                                 or any(isinstance(v, bool) for v in declared)):
        raise TraceError(src, f"{where}.shape",
                         f"expected {list(shape)} from the layer geometry, got {declared!r}")
    dense = oe.get("dense", False)
    if not isinstance(dense, bool):
        raise TraceError(src, f"{where}.dense", f"expected true or false, got {dense!r}")
    if dense:
        stored = [k for k in ("mask", "nnz", "values") if k in oe]
        if stored:
            raise TraceError(src, where, f"a dense operand stores nothing; expected either "
                                         f"\"dense\": true or a \"mask\", got both \"dense\" "
                                         f"and {', '.join(repr(k) for k in stored)}")
        return Operand(role=role, shape=shape, mask=None)
    key = oe.get("mask")
    if not isinstance(key, str):
        raise TraceError(src, where, "expected either \"dense\": true or a \"mask\" array name")
    if key not in arrays:
        raise TraceError(src, f"{where}.mask", f"array {key!r} missing from the step file")
    pm = cache.get(key)
    numel = math.prod(shape)
    if (pm is None or pm.shape != shape) and codec == GAPS_ZSTD:
        stated = oe.get("nnz")  # bounds the array's stored size; a wrong count is refused below
        if isinstance(stated, bool) or not isinstance(stated, int) or not 0 <= stated <= numel:
            stated = None
        coded = _fetch(arrays, key, mask_codec.max_coded_bytes(numel, stated), src,
                       f"{where}.mask")
        try:
            bits, nnz = mask_codec.decode(coded, numel)
        except CodecError as err:
            raise TraceError(src, f"{where}.mask", f"{codec} array {key!r}: {err}") from None
        pm = PackedMask(shape, bits, nnz)
        cache[key] = pm
    if pm is None or pm.shape != shape:
        want = (numel + 7) // 8
        bits = _fetch(arrays, key, want, src, f"{where}.mask")
        if bits.dtype != np.uint8 or bits.ndim != 1:
            raise TraceError(src, f"{where}.mask",
                             f"expected a 1-D uint8 array, got {bits.dtype} {bits.shape}")
        want = (numel + 7) // 8
        if bits.size != want:
            raise TraceError(src, f"{where}.mask",
                             f"packed length {bits.size} bytes, expected {want} for shape "
                             f"{list(shape)}")
        tail = numel % 8
        if tail and bits[-1] & ((1 << (8 - tail)) - 1):
            raise TraceError(src, f"{where}.mask", "padding bits after the last element are set")
        nnz = _set_bits(bits)
        pm = PackedMask(shape, bits, nnz)
        cache[key] = pm
    stated = oe.get("nnz")
    if isinstance(stated, bool) or stated != pm.nnz:
        raise TraceError(src, f"{where}.nnz",
                         f"index says {stated!r} nonzeros, the mask holds {pm.nnz}")
    vals = None
    vkey = oe.get("values")
    if vkey is not None:
        if not isinstance(vkey, str):
            raise TraceError(src, f"{where}.values", f"expected an array name, got {vkey!r}")
        if vkey not in arrays:
            raise TraceError(src, f"{where}.values", f"array {vkey!r} missing from the step file")
        vals = _fetch(arrays, vkey, 4 * pm.nnz, src, f"{where}.values")
        if vals.dtype.name not in VALUE_DTYPES or vals.shape != (pm.nnz,):
            raise TraceError(src, f"{where}.values",
                             f"expected float32/float16 of length {pm.nnz}, got {vals.dtype} "
                             f"{vals.shape}")
    return Operand(role=role, shape=shape, mask=pm, values=vals)
