"""The architecture schema: frozen, validated dataclasses of one accelerator.

Every key of the file format, with its unit, type and default, is documented in
``docs/architecture.md``; this module holds the schema and checks it. The files that carry it
(a preset, a ``.yaml`` file, a SCALE-Sim ``.cfg``) are read by ``simulator.arch`` and
``simulator.scalesim_cfg``, which hand a plain mapping to ``Architecture.from_dict``.

Every field is checked here, once; a bad value raises one ``ArchError`` whose ``str()`` is one line
naming the file (or ``preset NAME``), the dotted field (``sram.ifmap.kib``) and what was expected.
Code that receives an ``Architecture`` can rely on it and never re-validates.

Omitted keys take the ``scalesim-32`` values, except three that follow the array so that the
default never stalls a dense array: ``sram.<buffer>.banks`` = max(rows, cols),
``sram.<buffer>.bank_width_words`` = lanes and ``topk.elements_per_cycle`` = cols * lanes.
``Architecture.with_overrides`` applies dotted-key overrides to the file *as written*, so these
three are derived again when a sweep overrides ``array.rows``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import yaml

from common.errors import InputError
from common.vocab import DATAFLOWS
from common.yamlio import describe

#: The three on-chip buffers: A operand, B operand, result / partial sums.
BUFFERS = ("ifmap", "filter", "ofmap")
WORD_SIZES = (1, 2, 4, 8)

_TOP_KEYS = (
    "name", "description", "array", "clock_ghz", "word_bytes", "sram", "dram", "energy", "topk",
    "sparse",
)  # fmt: skip
_ARRAY_KEYS = ("rows", "cols", "lanes", "dataflow", "folds")
FOLD_MODES = ("serial", "overlapped", "broadcast")
_SRAM_KEYS = ("kib", "banks", "ports", "bank_width_words")
_DRAM_KEYS = (
    "channels", "bandwidth_gbps", "latency_cycles", "banks_per_channel", "row_buffer_bytes",
    "burst_bytes", "tRCD", "tCL", "tRP", "bank_groups", "mapping", "tCCD_L", "tRRD_S", "tRRD_L",
    "tFAW", "tRAS", "tREFI", "tRFC", "queue_depth", "bank_queue_depth", "write_queue_depth",
    "write_drain_threshold", "tWTR", "tRTW", "tWR",
)  # fmt: skip
#: ``dram.mapping``: the address mappings of ``simulator.dram`` (its ``MAPPINGS``), default first
DRAM_MAPPINGS = ("channel_column_bank", "channel_group_column_bank")
#: the DRAM keys beyond the first timing model: their defaults turn their rule off, and
#: ``Architecture.to_dict`` leaves them out while they are at it (so that a file that does not
#: set them has the same dict, summary and cache key as before they existed)
_DRAM_LATER = {"bank_groups": 1, "mapping": "channel_column_bank", "tCCD_L": 0, "tRRD_S": 0,
               "tRRD_L": 0, "tFAW": 0, "tRAS": 0, "tREFI": 0, "tRFC": 0, "queue_depth": 1,
               "bank_queue_depth": 0, "write_queue_depth": 0, "write_drain_threshold": 0,
               "tWTR": 0, "tRTW": 0, "tWR": 0}
_ENERGY_KEYS = ("mac_pj", "mac_gated_pj", "sram_pj_per_byte", "dram_pj_per_byte")
_TOPK_KEYS = ("elements_per_cycle",)

#: Defaults of every optional key: the values of the ``scalesim-32`` preset (a test checks that).
#: ``sram.*.banks``, ``sram.*.bank_width_words`` and ``topk.elements_per_cycle`` are derived from
#: the array instead (see the module docstring).
DEFAULTS: dict[str, Any] = {
    "description": "",
    "array.lanes": 1,
    "array.dataflow": "os",
    "array.folds": "serial",
    "clock_ghz": 1.0,
    "word_bytes": 1,
    "sram.kib": 64.0,
    "sram.ports": 1,
    "dram.channels": 1,
    "dram.bandwidth_gbps": 10.0,
    "dram.latency_cycles": 20,
    "dram.banks_per_channel": 8,
    "dram.row_buffer_bytes": 2048,
    "dram.burst_bytes": 64,
    "dram.tRCD": 14,
    "dram.tCL": 14,
    "dram.tRP": 14,
    **{f"dram.{k}": v for k, v in _DRAM_LATER.items()},
    "energy.mac_pj": 0.3,
    "energy.mac_gated_pj": 0.03,
    "energy.sram_pj_per_byte": 1.25,
    "energy.dram_pj_per_byte": 160.0,
}

#: Upper bounds of the numbers of a file (docs/limits.md): far beyond any real
#: accelerator, low enough that every product the model forms (rows x cols x lanes x bytes x
#: cycles ...) stays inside int64 and a finite float.
MAX_INT = 1 << 20  # any count: rows, cols, banks, ports, channels, cycles, topk rate
MAX_LANES = 1 << 10  # array.lanes
MAX_BYTES = 1 << 30  # dram.row_buffer_bytes, dram.burst_bytes
MAX_QUEUE = 1 << 10  # dram.queue_depth (the model scans the queue when a burst leaves a gap)
MAX_KIB = float(1 << 30)  # sram.*.kib (1 TiB)
MAX_REAL = 1e6  # dram.bandwidth_gbps, energy.* (pJ)
#: clock / bandwidth sets the cycles of a transfer: at most 100 GHz over at least 0.01 GB/s
#: keeps the cycles of the largest trace's traffic (~3e13 B) far inside int64
MAX_CLOCK_GHZ, MIN_CLOCK_GHZ = 100.0, 1e-3
MIN_BANDWIDTH_GBPS = 0.01
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\Z")
_MISSING = object()


class ArchError(InputError):
    """An architecture file, preset name, SCALE-Sim ``.cfg`` or override is not valid."""


# ------------------------------------------------------------------------------------------------
# immutable containers
# ------------------------------------------------------------------------------------------------
class _FrozenDict(dict):
    """A ``dict`` that refuses changes after construction; hashable and picklable."""

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("architecture mappings are read-only; use Architecture.with_overrides")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _read_only

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple:
        return (type(self), (dict(self),))

    def __copy__(self) -> _FrozenDict:
        return self

    def __deepcopy__(self, memo: dict) -> _FrozenDict:
        return self


def _thaw(value: Any) -> Any:
    """Plain, mutable, YAML-dumpable copy: mappings -> dict, tuples -> list, specs -> dict."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------------
# the specs
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SramSpec:
    """One on-chip buffer. Double-buffered: half of the capacity is the active buffer, the other
    half is being filled (or drained) at the same time."""

    kib: float  # capacity, KiB (1024 bytes)
    banks: int
    ports: int  # per bank
    bank_width_words: int  # words per port per cycle

    @property
    def capacity_bytes(self) -> int:
        """Total capacity, bytes (both halves)."""
        return round(self.kib * 1024)

    @property
    def active_bytes(self) -> int:
        """The active half, bytes."""
        return self.capacity_bytes // 2

    @property
    def words_per_cycle(self) -> int:
        """Peak access bandwidth, words/cycle: banks * ports * bank_width_words."""
        return self.banks * self.ports * self.bank_width_words


@dataclass(frozen=True)
class DramSpec:
    """Off-chip DRAM. Timings and latency are in accelerator clock cycles."""

    channels: int
    bandwidth_gbps: float  # total peak over all channels, GB/s (1e9 bytes/s)
    latency_cycles: int  # fixed controller + interconnect latency per request
    banks_per_channel: int
    row_buffer_bytes: int
    burst_bytes: int
    tRCD: int  # row activate to column command
    tCL: int  # column command to data (CAS latency)
    tRP: int  # precharge
    # the later rules (simulator/dram.py; their defaults turn them off). Timings in cycles,
    # fractional allowed (a DRAM clock's timings converted to the accelerator clock)
    bank_groups: int = 1
    mapping: str = "channel_column_bank"  # or channel_group_column_bank (groups interleaved)
    tCCD_L: float = 0  # column to column in one bank group (0: the burst, tCCD_S)
    tRRD_S: float = 0  # activate to activate, any two banks of a channel
    tRRD_L: float = 0  # activate to activate in one bank group
    tFAW: float = 0  # at most four activates per tFAW per channel
    tRAS: float = 0  # activate to precharge of one bank
    tREFI: float = 0  # refresh interval (0: no refresh)
    tRFC: float = 0  # refresh cycle time
    queue_depth: int = 1  # a channel's transaction queue, requests (1 and no bank queues: in order)
    bank_queue_depth: int = 0  # a bank's command queue, requests (0: none)
    write_queue_depth: int = 0  # a channel's write buffer, writes (0: writes queue as reads)
    write_drain_threshold: int = 0  # an idle controller drains once more writes than this wait
    tWTR: float = 0  # end of write data to read command (0: no write-to-read turnaround)
    tRTW: float = 0  # end of read data to write data (read-to-write turnaround)
    tWR: float = 0  # end of write data to precharge of its bank (write recovery)

    def bytes_per_cycle(self, clock_ghz: float) -> float:
        """Peak bandwidth of all channels together, bytes per accelerator cycle."""
        return self.bandwidth_gbps / clock_ghz


@dataclass(frozen=True)
class EnergySpec:
    """Energy per event, picojoules."""

    mac_pj: float  # per MAC
    mac_gated_pj: float  # per gated (zero-operand) MAC
    sram_pj_per_byte: dict[str, float]  # per byte read or written, by buffer
    dram_pj_per_byte: float  # per byte read or written


#: ``Architecture`` field -> dotted key of the file, for ``Architecture.replace``.
_FIELD_KEYS = {
    "name": "name",
    "description": "description",
    "rows": "array.rows",
    "cols": "array.cols",
    "lanes": "array.lanes",
    "dataflow": "array.dataflow",
    "folds": "array.folds",
    "clock_ghz": "clock_ghz",
    "word_bytes": "word_bytes",
    "sram": "sram",
    "dram": "dram",
    "energy": "energy",
    "topk_elements_per_cycle": "topk.elements_per_cycle",
    "sparse": "sparse",
}


@dataclass(frozen=True)
class Architecture:
    """An accelerator: a rows x cols array of PEs with ``lanes`` MAC lanes each, three
    double-buffered on-chip buffers, DRAM, energy costs and a top-K unit.

    Build one with ``load_arch`` (a preset, a YAML file or a SCALE-Sim ``.cfg``),
    ``Architecture.from_dict`` or from another with ``with_overrides`` / ``replace``; every one
    of them validates. Direct construction validates too (and freezes the mappings).
    ``source`` (the file or ``preset NAME``) is not part of equality.
    """

    name: str
    description: str
    rows: int
    cols: int
    lanes: int  # MAC lanes per PE: dot-product width along K
    dataflow: str  # default dataflow: os | ws | is
    folds: str  # serial (SCALE-Sim: every fold fills and drains) | overlapped (once per GEMM)
    clock_ghz: float
    word_bytes: dict[str, int]  # bytes per element, by buffer
    sram: dict[str, SramSpec]  # by buffer
    dram: DramSpec
    energy: EnergySpec
    topk_elements_per_cycle: int  # elements the top-K / threshold unit compares per cycle
    sparse: dict  # sparse-engine features; keys defined by the sparse engine
    source: str = field(default="<python>", compare=False)
    # The file as written (defaults not filled in), for with_overrides. Not part of equality.
    _spec: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kwargs = _parse(self._mapping(), self.source or "<python>")
        for key, value in kwargs.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "_spec", _freeze_plain(self.to_dict()))

    # -- derived quantities ------------------------------------------------------------------
    @property
    def macs_per_cycle(self) -> int:
        """Peak MACs per cycle: rows * cols * lanes."""
        return self.rows * self.cols * self.lanes

    @functools.cached_property
    def features(self):
        """The sparse features (``dataflows.features.SparseFeatures``) of ``sparse:``, parsed
        once per architecture (they were checked with the rest of the file)."""
        from dataflows.features import parse_features

        return parse_features(_thaw(self.sparse), self.source, self.lanes)

    @property
    def dram_bytes_per_cycle(self) -> float:
        """Peak DRAM bandwidth of all channels, bytes per accelerator cycle."""
        return self.dram.bytes_per_cycle(self.clock_ghz)

    # -- conversion --------------------------------------------------------------------------
    def _mapping(self) -> dict[str, Any]:
        """The fields as a file mapping; tolerates unvalidated values (direct construction)."""
        return {
            "name": self.name,
            "description": self.description,
            "array": {
                "rows": self.rows,
                "cols": self.cols,
                "lanes": self.lanes,
                "dataflow": self.dataflow,
                "folds": self.folds,
            },
            "clock_ghz": self.clock_ghz,
            "word_bytes": _thaw(self.word_bytes),
            "sram": _thaw(self.sram),
            "dram": {k: v for k, v in _thaw(self.dram).items()
                     if k not in _DRAM_LATER or v != _DRAM_LATER[k]},
            "energy": _thaw(self.energy),
            "topk": {"elements_per_cycle": self.topk_elements_per_cycle},
            "sparse": _thaw(self.sparse),
        }

    def to_dict(self) -> dict[str, Any]:
        """Every key, defaults filled in, as plain dicts / lists / scalars. ``yaml.safe_dump`` of
        it loads back (``Architecture.from_dict`` or a file) into an equal Architecture."""
        return self._mapping()

    def to_yaml(self) -> str:
        """``to_dict()`` as a YAML document, keys in file order."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    @staticmethod
    def from_dict(mapping: Any, source: str = "<python>") -> Architecture:
        """Validate a mapping shaped like an architecture file; ``source`` names it in errors."""
        return _build(mapping, source)

    # -- derived architectures ---------------------------------------------------------------
    def with_overrides(
        self, overrides: Mapping[str, Any], *, source: str | None = None
    ) -> Architecture:
        """A new Architecture with dotted keys of the file set, e.g. ``{"array.rows": 64,
        "dram.bandwidth_gbps": 25.6, "sram.ifmap.kib": 128}``, then validated as a whole.

        The overrides apply to the file as written, so keys it left to their default keep being
        derived (``sram.*.banks`` follows ``array.rows``). A value that is a mapping replaces the
        whole section. ``source`` names where the overrides came from (a sweep file, a flag) in
        error messages; by default ``"<self.source> (overrides)"``.
        """
        where = source or f"{self.source} (overrides)"
        if not isinstance(overrides, Mapping):
            raise ArchError(where, None, f"overrides must be a mapping, got {describe(overrides)}")
        spec = _thaw(self._spec)
        for key, value in overrides.items():
            _set_dotted(spec, key, _thaw(value), where)
        arch = _build(spec, where)
        object.__setattr__(arch, "source", self.source)
        return arch

    def replace(self, **changes: Any) -> Architecture:
        """``dataclasses.replace`` by field name (``rows=64``, ``dram=DramSpec(...)``), validated
        like ``with_overrides``. A mapping field (``sram``, ``word_bytes``, ...) is replaced
        whole: buffers it leaves out take their defaults."""
        overrides = {}
        for name, value in changes.items():
            if name not in _FIELD_KEYS:
                if name == "source":
                    continue
                raise TypeError(f"Architecture has no field {name!r}")
            overrides[_FIELD_KEYS[name]] = value
        arch = self.with_overrides(overrides, source=f"{self.source} (replace)")
        object.__setattr__(arch, "source", changes.get("source", self.source))
        return arch


# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------
def _join(path: str | None, key: str) -> str:
    return f"{path}.{key}" if path else key


def _string_hint(value: Any) -> str:
    """A hint when a number was written as text."""
    if not isinstance(value, str):
        return ""
    try:
        if not math.isfinite(float(value)):
            return ""
    except ValueError:
        return ""
    return " (write the number without quotes)"


def _all_paths() -> list[str]:
    paths = [*_TOP_KEYS]
    paths += [f"array.{k}" for k in _ARRAY_KEYS]
    paths += [f"word_bytes.{b}" for b in BUFFERS]
    paths += [f"sram.{b}" for b in BUFFERS]
    paths += [f"sram.{b}.{k}" for b in BUFFERS for k in _SRAM_KEYS]
    paths += [f"dram.{k}" for k in _DRAM_KEYS]
    paths += [f"energy.{k}" for k in _ENERGY_KEYS]
    paths += [f"energy.sram_pj_per_byte.{b}" for b in BUFFERS]
    paths += [f"topk.{k}" for k in _TOPK_KEYS]
    return paths


#: Every dotted key a file may hold (``sparse.*`` keys aside).
KEY_PATHS: tuple[str, ...] = tuple(_all_paths())


def _unknown_key(key: str, allowed: tuple[str, ...], section: str | None) -> str:
    reason = f"unknown key {key!r}"
    by_case = {a.lower(): a for a in allowed}
    close = [by_case[key.lower()]] if key.lower() in by_case else None
    close = close or difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"{reason}; did you mean {close[0]!r}? (valid keys: {', '.join(allowed)})"
    # The key may belong to another section (``rows`` at the top level, ``kib`` under ``dram``).
    elsewhere = [p for p in KEY_PATHS if p.rpartition(".")[0] != (section or "")]
    leaves = {p.rsplit(".", 1)[-1]: p for p in reversed(elsewhere)}
    near = difflib.get_close_matches(key, list(leaves), n=1, cutoff=0.75)
    if near:
        return (
            f"{reason}; did you mean {leaves[near[0]]!r}? (valid keys here: {', '.join(allowed)})"
        )
    return f"{reason} (valid keys: {', '.join(allowed)})"


class _Checker:
    """Reads one mapping shaped like an architecture file; the first problem raises ArchError."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str | None, reason: str) -> NoReturn:
        raise ArchError(self.source, path, reason)

    def section(self, value: Any, path: str | None, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is _MISSING or value is None:  # omitted, or written as an empty section
            return {}
        if not isinstance(value, Mapping):
            keys = ", ".join(allowed)
            self.fail(path, f"expected a mapping with keys {keys}, got {describe(value)}")
        for key in value:
            if not isinstance(key, str):
                self.fail(_join(path, str(key)), f"keys must be text, got {describe(key)}")
            if key not in allowed:
                self.fail(_join(path, key), _unknown_key(key, allowed, path))
        return dict(value)

    def get(self, mapping: dict, path: str, key: str, default: Any) -> tuple[Any, str]:
        full = _join(path, key)
        value = mapping.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                self.fail(full, "missing required key")
            return default, full
        return value, full

    def integer(self, mapping: dict, path: str, key: str, default: Any, minimum: int,
                maximum: int = MAX_INT) -> int:
        value, full = self.get(mapping, path, key, default)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            if minimum <= int(value) <= maximum:
                return int(value)
            if int(value) > maximum:
                self.fail(full, f"expected an integer >= {minimum} and at most {maximum:,} (the "
                                f"limit), got {describe(value)}")
        self.fail(
            full, f"expected an integer >= {minimum}, got {describe(value)}" + _string_hint(value)
        )

    def real(self, mapping: dict, path: str, key: str, default: Any, positive: bool,
             maximum: float = MAX_REAL, minimum: float = 0.0) -> float:
        value, full = self.get(mapping, path, key, default)
        want = "a number > 0" if positive else "a number >= 0"
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            try:
                x = float(value)
            except OverflowError:  # an integer beyond any float
                x = math.inf
            if math.isfinite(x) and (x > 0 if positive else x >= 0) and minimum <= x <= maximum:
                return x
            if x > maximum:
                want += f" and at most {maximum:g} (the limit)"
            elif 0 < x < minimum:
                want += f" and at least {minimum:g} (the limit)"
        self.fail(full, f"expected {want}, got {describe(value)}" + _string_hint(value))

    def choice(self, mapping: dict, path: str, key: str, default: Any, options: tuple) -> Any:
        value, full = self.get(mapping, path, key, default)
        if isinstance(value, bool) or value not in options:
            shown = ", ".join(str(o) for o in options)
            self.fail(full, f"expected one of {shown}, got {describe(value)}")
        return value

    def text(self, mapping: dict, path: str, key: str, default: Any) -> str:
        value, full = self.get(mapping, path, key, default)
        if not isinstance(value, str):
            self.fail(full, f"expected text, got {describe(value)}")
        return value

    def plain(self, value: Any, path: str) -> Any:
        """Freeze plain YAML data (sparse features): str-keyed mappings, lists, scalars."""
        if isinstance(value, Mapping):
            for key in value:
                if not isinstance(key, str):
                    self.fail(_join(path, str(key)), f"keys must be text, got {describe(key)}")
            return _FrozenDict({k: self.plain(v, _join(path, k)) for k, v in value.items()})
        if isinstance(value, (list, tuple)):
            return tuple(self.plain(v, f"{path}[{i}]") for i, v in enumerate(value))
        if value is None or isinstance(value, (str, bool, int, float)):
            if isinstance(value, float) and not math.isfinite(value):
                self.fail(path, f"expected a finite number, got {value}")
            return value
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real):
            return self.plain(float(value), path)
        self.fail(
            path, f"expected text, a number, a boolean, a list or a mapping, got {describe(value)}"
        )


def _parse_word_bytes(c: _Checker, top: Mapping) -> dict[str, int]:
    wb = c.section(top.get("word_bytes", _MISSING), "word_bytes", BUFFERS)
    word_bytes = {}
    for b in BUFFERS:
        value, full = c.get(wb, "word_bytes", b, DEFAULTS["word_bytes"])
        integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if not (integral and int(value) in WORD_SIZES):
            c.fail(full, f"expected one of 1, 2, 4, 8 (bytes), got {describe(value)}")
        word_bytes[b] = int(value)
    return word_bytes


def _parse_sram(c: _Checker, top: Mapping, rows: int, cols: int, lanes: int,
                word_bytes: dict[str, int]) -> dict[str, SramSpec]:
    sram_raw = c.section(top.get("sram", _MISSING), "sram", BUFFERS)
    sram = {}
    for b in BUFFERS:
        path = f"sram.{b}"
        s = c.section(sram_raw.get(b, _MISSING), path, _SRAM_KEYS)
        kib = c.real(s, path, "kib", DEFAULTS["sram.kib"], positive=True, maximum=MAX_KIB)
        banks = c.integer(s, path, "banks", max(rows, cols), 1)
        ports = c.integer(s, path, "ports", DEFAULTS["sram.ports"], 1)
        width = c.integer(s, path, "bank_width_words", lanes, 1)
        if not (kib * 1024).is_integer():
            c.fail(f"{path}.kib", f"expected a whole number of bytes (kib * 1024), got {kib}")
        need = 2 * banks * width * word_bytes[b]
        if kib * 1024 < need:
            c.fail(
                f"{path}.kib",
                f"{kib:g} KiB is too small: each half of the double buffer must "
                f"hold one word per bank lane ({banks} banks x {width} words x "
                f"{word_bytes[b]} B), i.e. at least {need} B in all",
            )
        sram[b] = SramSpec(kib, banks, ports, width)
    return sram


def _parse_dram(c: _Checker, top: Mapping) -> DramSpec:
    d = c.section(top.get("dram", _MISSING), "dram", _DRAM_KEYS)

    def dram_int(key: str, minimum: int, maximum: int = MAX_INT) -> int:
        return c.integer(d, "dram", key, DEFAULTS[f"dram.{key}"], minimum, maximum)

    dram = DramSpec(
        channels=dram_int("channels", 1),
        bandwidth_gbps=c.real(d, "dram", "bandwidth_gbps", DEFAULTS["dram.bandwidth_gbps"], True,
                              minimum=MIN_BANDWIDTH_GBPS),
        latency_cycles=dram_int("latency_cycles", 0),
        banks_per_channel=dram_int("banks_per_channel", 1),
        row_buffer_bytes=dram_int("row_buffer_bytes", 1, MAX_BYTES),
        burst_bytes=dram_int("burst_bytes", 1, MAX_BYTES),
        tRCD=dram_int("tRCD", 0),
        tCL=dram_int("tCL", 0),
        tRP=dram_int("tRP", 0),
        bank_groups=dram_int("bank_groups", 1),
        queue_depth=dram_int("queue_depth", 1, MAX_QUEUE),
        bank_queue_depth=dram_int("bank_queue_depth", 0, MAX_QUEUE),
        write_queue_depth=dram_int("write_queue_depth", 0, MAX_QUEUE),
        write_drain_threshold=dram_int("write_drain_threshold", 0, MAX_QUEUE),
        mapping=c.choice(d, "dram", "mapping", DEFAULTS["dram.mapping"], DRAM_MAPPINGS),
        **{k: c.real(d, "dram", k, DEFAULTS[f"dram.{k}"], False, maximum=MAX_INT)
           for k in ("tCCD_L", "tRRD_S", "tRRD_L", "tFAW", "tRAS", "tREFI", "tRFC", "tWTR",
                     "tRTW", "tWR")},
    )
    if dram.banks_per_channel % dram.bank_groups:
        c.fail("dram.bank_groups", f"expected a divisor of dram.banks_per_channel "
                                   f"({dram.banks_per_channel}), got {dram.bank_groups}")
    if dram.tRFC and not dram.tREFI:
        c.fail("dram.tRFC", f"expected 0 when dram.tREFI is 0 (no refresh), got {dram.tRFC:g}")
    if dram.tREFI and not dram.tRP + dram.tRFC < dram.tREFI:
        c.fail("dram.tREFI", f"expected more than dram.tRP + dram.tRFC "
                             f"({dram.tRP + dram.tRFC:g} cycles), got {dram.tREFI:g}")
    if dram.burst_bytes & (dram.burst_bytes - 1):
        c.fail("dram.burst_bytes", f"expected a power of two, got {dram.burst_bytes}")
    if dram.row_buffer_bytes % dram.burst_bytes:
        c.fail(
            "dram.burst_bytes",
            f"expected a divisor of dram.row_buffer_bytes "
            f"({dram.row_buffer_bytes}), got {dram.burst_bytes}",
        )
    return dram


def _parse_energy(c: _Checker, top: Mapping) -> EnergySpec:
    e = c.section(top.get("energy", _MISSING), "energy", _ENERGY_KEYS)
    mac_pj = c.real(e, "energy", "mac_pj", DEFAULTS["energy.mac_pj"], positive=False)
    gated = c.real(e, "energy", "mac_gated_pj", DEFAULTS["energy.mac_gated_pj"], positive=False)
    if gated > mac_pj:
        c.fail(
            "energy.mac_gated_pj",
            f"expected at most energy.mac_pj ({mac_pj:g}): a gated MAC "
            f"does not cost more than a MAC, got {gated:g}",
        )
    sp = c.section(e.get("sram_pj_per_byte", _MISSING), "energy.sram_pj_per_byte", BUFFERS)
    default_sram_pj = DEFAULTS["energy.sram_pj_per_byte"]
    return EnergySpec(
        mac_pj=mac_pj,
        mac_gated_pj=gated,
        sram_pj_per_byte=_FrozenDict(
            {b: c.real(sp, "energy.sram_pj_per_byte", b, default_sram_pj, False) for b in BUFFERS}
        ),
        dram_pj_per_byte=c.real(
            e, "energy", "dram_pj_per_byte", DEFAULTS["energy.dram_pj_per_byte"], positive=False
        ),
    )


def _parse_sparse(c: _Checker, top: Mapping, lanes: int) -> Any:
    sparse = top.get("sparse", _MISSING)
    if sparse is _MISSING or sparse is None:
        sparse = {}
    if not isinstance(sparse, Mapping):
        c.fail("sparse", f"expected a mapping (sparse-engine features), got {describe(sparse)}")
    sparse = c.plain(sparse, "sparse")
    from dataflows.features import parse_features

    try:
        parse_features(_thaw(sparse), c.source, lanes)
    except InputError as err:
        c.fail(err.field, err.reason)
    return sparse


def _parse(raw: Any, source: str) -> dict[str, Any]:
    """Validate a file mapping; returns the keyword arguments of ``Architecture`` (no
    ``source``)."""
    c = _Checker(source)
    if raw is _MISSING or raw is None:
        c.fail(None, "the file is empty: expected a mapping with at least name and array")
    if not isinstance(raw, Mapping):
        c.fail(
            None, f"expected a mapping of architecture keys at the top level, got {describe(raw)}"
        )
    top = c.section(raw, None, _TOP_KEYS)

    name = c.text(top, "", "name", _MISSING)
    if not _NAME_RE.match(name):
        c.fail(
            "name",
            f"expected letters, digits, '.', '_', '+' or '-' (starting with a letter "
            f"or digit; it names output files), got {name!r}",
        )
    description = c.text(top, "", "description", DEFAULTS["description"])

    if "array" not in top:
        c.fail("array", "missing required section (with rows and cols)")
    array = c.section(top["array"], "array", _ARRAY_KEYS)
    rows = c.integer(array, "array", "rows", _MISSING, 1)
    cols = c.integer(array, "array", "cols", _MISSING, 1)
    lanes = c.integer(array, "array", "lanes", DEFAULTS["array.lanes"], 1, MAX_LANES)
    dataflow = c.choice(array, "array", "dataflow", DEFAULTS["array.dataflow"], DATAFLOWS)
    folds = c.choice(array, "array", "folds", DEFAULTS["array.folds"], FOLD_MODES)
    clock_ghz = c.real(top, "", "clock_ghz", DEFAULTS["clock_ghz"], positive=True,
                       maximum=MAX_CLOCK_GHZ, minimum=MIN_CLOCK_GHZ)
    word_bytes = _parse_word_bytes(c, top)
    sram = _parse_sram(c, top, rows, cols, lanes, word_bytes)
    dram = _parse_dram(c, top)
    energy = _parse_energy(c, top)
    t = c.section(top.get("topk", _MISSING), "topk", _TOPK_KEYS)
    topk = c.integer(t, "topk", "elements_per_cycle", cols * lanes, 1, MAX_INT * MAX_LANES)
    sparse = _parse_sparse(c, top, lanes)
    return dict(
        name=name, description=description, rows=rows, cols=cols, lanes=lanes,
        dataflow=dataflow, folds=folds, clock_ghz=clock_ghz, word_bytes=_FrozenDict(word_bytes),
        sram=_FrozenDict(sram), dram=dram, energy=energy, topk_elements_per_cycle=topk,
        sparse=sparse,
    )  # fmt: skip


def _freeze_plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return _FrozenDict({k: _freeze_plain(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze_plain(v) for v in value)
    return value


def _build(raw: Any, source: str) -> Architecture:
    """The Architecture of a file mapping, validated once: the checked fields are set as they
    are (direct construction, which validates in ``__post_init__``, is for Python callers)."""
    arch = object.__new__(Architecture)
    for key, value in _parse(raw, source).items():
        object.__setattr__(arch, key, value)
    object.__setattr__(arch, "source", source)
    # Keep the file as written so that overrides re-derive the defaults it relied on.
    object.__setattr__(arch, "_spec", _freeze_plain(_thaw(raw)))
    return arch


def _set_dotted(spec: dict, key: Any, value: Any, source: str) -> None:
    if not isinstance(key, str) or not key:
        raise ArchError(source, None, f"override keys must be dotted text, got {describe(key)}")
    parts = key.split(".")
    if not (key in KEY_PATHS or (parts[0] == "sparse" and all(parts))):
        close = difflib.get_close_matches(key, KEY_PATHS, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ArchError(source, key, f"unknown key{hint} (see docs/architecture.md)")
    node = spec
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value
