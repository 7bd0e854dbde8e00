"""The sparse features of an architecture: the ``sparse:`` section, validated once
(``SparseFeatures``; ``docs/sparse.md`` defines every key). The work model
(``dataflows.sparse``) reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.errors import InputError
from common.yamlio import describe
from dataflows.formats import FORMATS
from dataflows.lowering import Lowering, parse_lowering
from dataflows.taps import dnnsim_taps, strided_order

SKIP_ROLES = ("filter", "ifmap", "grad_out")
FORMAT_LEVELS = ("dram", "sram")
FEATURE_KEYS = ("skip", "two_sided", "window", "gate", "nm", "fanin", "structured", "formats",
                "sync", "taps", "order", "free_rows", "side", "lowering")
SYNCS = ("barrier", "lockstep")
SIDES = ("gemm", "tensor")
MAX_SKIP_LANES = 64  # a step of a stream is one 64-bit word
#: largest window / tap offset / free-row count / order stride / N:M group (docs/limits.md):
#: hardware looks a few steps ahead; the bound keeps tap lists small and numba's int64
#: arithmetic far from overflow
MAX_REACH = 1 << 16


def _small_int(x: Any, minimum: int) -> bool:
    """An integer (not a boolean) in [minimum, MAX_REACH]."""
    return isinstance(x, int) and not isinstance(x, bool) and minimum <= x <= MAX_REACH


@dataclass(frozen=True)
class SparseFeatures:
    """The validated ``sparse:`` section of an architecture."""

    skip: tuple[str, ...] = ()
    two_sided: bool = False
    lookahead: int = -1  # -1: unbounded window
    lookaside: int = 0
    gate: tuple[str, ...] = ()
    nm: tuple[int, int] | None = None
    fanin: bool = False
    structured: bool = False
    formats: dict[str, str] = field(default_factory=dict)  # role -> format in DRAM
    sram_formats: dict[str, str] = field(default_factory=dict)  # role -> format in SRAM
    #: fold synchronisation: ``barrier`` (every stream on its own, the fold waits for the
    #: slowest) or ``lockstep`` (one step index shared by the fold's streams)
    sync: str = "barrier"
    #: the multiplexer as a tap list ((step offset h >= 1, lane offset d), tried in order, lanes
    #: wrapping inside the stream's lane group); None: the window (lookahead, lookaside)
    taps: tuple[tuple[int, int], ...] | None = None
    #: the order the empty lanes of a step are visited (taps): a permutation of the lanes, or
    #: an int s (strides of s, ``dataflows.taps.strided_order``); 1 = lanes in order
    order: tuple[int, ...] | int = 1
    #: taps: the most consecutive steps empty in every stream that retire for free; -1 = the
    #: largest step offset of the taps
    free_rows: int = -1
    #: which operand is skipped when both could be: ``gemm`` (the sparser by its density in the
    #: GEMM) or ``tensor`` (per group, the larger zero fraction of the stored tensor with its
    #: padding; ties to the operand that is not windowed)
    side: str = "gemm"
    lowering: Lowering = field(default_factory=Lowering)

    @property
    def any(self) -> bool:
        """True when some feature can change cycles (skipping or a structured mode)."""
        return bool(self.skip or self.nm or self.fanin or self.structured)

    def baseline(self) -> SparseFeatures:
        """The dense baseline's features: none, but the same lowering."""
        return SparseFeatures(lowering=self.lowering)

    def free_run(self) -> int:
        """The free-row cap of the tap scheduler."""
        if self.free_rows >= 0:
            return self.free_rows
        return max(h for h, _ in self.taps) if self.taps else 0

    def lane_order(self, lanes: int) -> np.ndarray:
        """The visiting order of the lanes (taps)."""
        if isinstance(self.order, int):
            return np.array(strided_order(lanes, self.order), dtype=np.int64)
        return np.array(self.order, dtype=np.int64)

    def format_of(self, role: str, level: str = "dram") -> str:
        """The format ``role`` is held in at ``level`` (``dram`` or ``sram``); dense if unset."""
        return (self.formats if level == "dram" else self.sram_formats).get(role, "dense")


def _short(v: Any) -> str:
    """A value as an error message shows it: its repr, cut short (a huge integer has no repr)."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v).bit_length() > 300:
        return describe(v)
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _parse_taps(v: Any, source: str) -> tuple[tuple[int, int], ...]:
    if isinstance(v, dict):
        extra = set(v) - {"shape", "lookahead", "lookaside"}
        shape = v.get("shape", "T")
        la, ls = v.get("lookahead"), v.get("lookaside")
        bad = [k for k, x in (("lookahead", la), ("lookaside", ls)) if not _small_int(x, 0)]
        if extra or shape not in ("T", "L") or bad:
            key = "sparse.taps" + (f".{bad[0]}" if bad and not extra else "")
            raise InputError(source, key, "expected {shape: T or L, lookahead: H >= 1, "
                             f"lookaside: D >= 0}} (DNNsim's tap lists; H, D at most {MAX_REACH}) "
                             "or a list of [h, d]")
        if la < 1:
            raise InputError(source, "sparse.taps.lookahead", f"expected >= 1, got {la}")
        return tuple(dnnsim_taps(shape, la, ls))
    ok = isinstance(v, (list, tuple)) and len(v) > 0
    out = []
    for t in v if ok else []:
        if (not isinstance(t, (list, tuple)) or len(t) != 2 or not _small_int(t[0], 1)
                or not _small_int(abs(t[1]) if isinstance(t[1], int) else t[1], 0)):
            ok = False
            break
        out.append((int(t[0]), int(t[1])))
    if not ok or len(set(out)) != len(out):
        raise InputError(source, "sparse.taps",
                         f"expected a list of distinct [h, d] (step offset 1 <= h <= {MAX_REACH}, "
                         f"lane offset |d| <= {MAX_REACH}), or {{shape: T, lookahead: H, "
                         f"lookaside: D}}; got {_short(v)}")
    return tuple(out)


def _roles(d: dict, key: str, source: str) -> tuple[str, ...]:
    v = d.get(key, [])
    v = [v] if isinstance(v, str) else v
    if not isinstance(v, (list, tuple)) or any(r not in SKIP_ROLES for r in v):
        raise InputError(source, f"sparse.{key}",
                         f"expected a list of {', '.join(SKIP_ROLES)}, got {d.get(key)!r}")
    return tuple(dict.fromkeys(v))


def _flag(d: dict, key: str, source: str) -> bool:
    v = d.get(key, False)
    if not isinstance(v, bool):
        raise InputError(source, f"sparse.{key}", f"expected true or false, got {v!r}")
    return v


def _choice(d: dict, key: str, options: tuple[str, ...], default: str, source: str) -> str:
    v = d.get(key, default)
    if v not in options:
        raise InputError(source, f"sparse.{key}",
                         f"expected one of {', '.join(options)}, got {v!r}")
    return v


def _parse_window(win: Any, source: str) -> tuple[int, int]:
    """(lookahead, lookaside); (-1, 0) for no window (unbounded)."""
    if win is None:
        return -1, 0
    if not isinstance(win, dict) or set(win) - {"lookahead", "lookaside"}:
        raise InputError(source, "sparse.window",
                         "expected a mapping with lookahead and lookaside (integers >= 0)")
    for k, v in win.items():
        if not _small_int(v, 0):
            raise InputError(source, f"sparse.window.{k}", f"expected an integer >= 0 and at "
                                                           f"most {MAX_REACH}, got {_short(v)}")
    missing = [k for k in ("lookahead", "lookaside") if k not in win]
    if missing:  # a window left out means unbounded; a key left out is not 0
        raise InputError(source, f"sparse.window.{missing[0]}",
                         "missing (expected an integer >= 0; leave out the whole window for an "
                         "unbounded one)")
    return win["lookahead"], win["lookaside"]


def _parse_nm(nm: Any, source: str) -> tuple[int, int] | None:
    if nm is None:
        return None
    parts = str(nm).split(":") if isinstance(nm, str) else []
    # ASCII digits only: str.isdigit() also accepts '²', which int() refuses
    ok = len(parts) == 2 and all(p.strip().isascii() and p.strip().isdigit()
                                 and len(p.strip()) <= 6 for p in parts)
    n, m = (int(parts[0]), int(parts[1])) if ok else (0, 0)
    if not ok or not 1 <= n < m <= MAX_REACH:
        raise InputError(source, "sparse.nm", f"expected 'N:M' with 1 <= N < M <= {MAX_REACH}, "
                                              f"got {_short(nm)}")
    return n, m


def _parse_formats(formats: Any, source: str) -> dict[str, dict[str, str]]:
    """Per memory level, role -> format (dense left out)."""
    formats = formats or {}
    if not isinstance(formats, dict):
        raise InputError(source, "sparse.formats", "expected a mapping role: format")
    levels: dict[str, dict[str, str]] = {"dram": {}, "sram": {}}
    for role, fmt in formats.items():
        if role not in SKIP_ROLES:
            raise InputError(source, f"sparse.formats.{role}",
                             f"unknown role; expected one of {', '.join(SKIP_ROLES)}")
        per = fmt if isinstance(fmt, dict) else dict.fromkeys(FORMAT_LEVELS, fmt)
        for lv in per:
            if lv not in FORMAT_LEVELS:
                raise InputError(source, f"sparse.formats.{role}.{lv}",
                                 f"unknown memory level; expected {' or '.join(FORMAT_LEVELS)}")
        for lv in FORMAT_LEVELS:
            f = per.get(lv, "dense")
            if not isinstance(f, str) or f not in FORMATS:
                key = f"sparse.formats.{role}" + (f".{lv}" if isinstance(fmt, dict) else "")
                raise InputError(source, key,
                                 f"unknown format {f!r}; expected one of {', '.join(FORMATS)}")
            if f != "dense":
                levels[lv][role] = f
    return levels


def _parse_order(ov: Any, taps, lanes: int | None, source: str) -> tuple[int, ...] | int:
    if ov is None:
        return 1
    if isinstance(ov, dict) and set(ov) == {"stride"} and _small_int(ov["stride"], 1):
        order: tuple[int, ...] | int = ov["stride"]
    elif ov == "sequential":
        order = 1
    elif (isinstance(ov, (list, tuple)) and ov
          and all(isinstance(x, int) and not isinstance(x, bool) for x in ov)
          and sorted(ov) == list(range(len(ov))) and (lanes is None or len(ov) == lanes)):
        order = tuple(ov)
    else:
        n = f"0 .. {lanes - 1}" if lanes else "0 .. lanes-1"
        raise InputError(source, "sparse.order", f"expected sequential, {{stride: S >= 1}} or a "
                                                 f"permutation of the lanes {n}; got "
                                                 f"{_short(ov)}")
    if taps is None:
        raise InputError(source, "sparse.order", "a visiting order needs taps")
    return order


def _parse_free_rows(fr: Any, taps, source: str) -> int:
    if fr is None:
        return -1
    if not _small_int(fr, 0):
        raise InputError(source, "sparse.free_rows", f"expected an integer >= 0 and at most "
                                                     f"{MAX_REACH}, got {_short(fr)}")
    if taps is None:
        raise InputError(source, "sparse.free_rows", "the free-row rule needs taps")
    return fr


def parse_features(d: Any, source: str, lanes: int | None = None) -> SparseFeatures:
    """Check the ``sparse:`` mapping of an architecture file; errors name ``sparse.<key>``.
    ``lanes``: the array's, to check lane orders and the 64-lane limit of skipping."""
    if d is None:
        return SparseFeatures()
    if not isinstance(d, dict):
        raise InputError(source, "sparse", "expected a mapping")
    for k in d:
        if k not in FEATURE_KEYS:
            raise InputError(source, f"sparse.{k}",
                             f"unknown key; expected one of {', '.join(FEATURE_KEYS)}")
    la, ls = _parse_window(d.get("window"), source)
    levels = _parse_formats(d.get("formats"), source)
    taps = None
    if d.get("taps") is not None:
        if d.get("window") is not None:
            raise InputError(source, "sparse.taps",
                             "give either window (lookahead, lookaside) or taps, not both")
        taps = _parse_taps(d["taps"], source)
    skip = _roles(d, "skip", source)
    if skip and lanes is not None and lanes > MAX_SKIP_LANES:
        raise InputError(source, "array.lanes",
                         f"at most {MAX_SKIP_LANES} with sparse.skip (a stream step is held in "
                         f"one 64-bit word), got {lanes}")
    return SparseFeatures(
        skip=skip, two_sided=_flag(d, "two_sided", source), lookahead=la, lookaside=ls,
        gate=_roles(d, "gate", source), nm=_parse_nm(d.get("nm"), source),
        fanin=_flag(d, "fanin", source), structured=_flag(d, "structured", source),
        formats=levels["dram"], sram_formats=levels["sram"],
        sync=_choice(d, "sync", SYNCS, "barrier", source), taps=taps,
        order=_parse_order(d.get("order"), taps, lanes, source),
        free_rows=_parse_free_rows(d.get("free_rows"), taps, source),
        side=_choice(d, "side", SIDES, "gemm", source),
        lowering=parse_lowering(d.get("lowering"), source))
