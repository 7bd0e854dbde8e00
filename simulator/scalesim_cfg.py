"""Reading a SCALE-Sim ``.cfg`` (ConfigParser) file as an ``Architecture``: the mapping of its
keys (``docs/architecture.md`` has the table) onto an architecture spec, built and validated as
an architecture file is."""

from __future__ import annotations

import configparser
import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulator.arch import _read_text
from simulator.archspec import _MISSING, BUFFERS, ArchError, Architecture, _build

_CFG_SECTION = "architecture_presets"
#: The keys SCALE-Sim 3.0.0 reads from [architecture_presets] (lower case -> its spelling).
_CFG_NAMES = (
    "ArrayHeight", "ArrayWidth", "IfmapSramSzkB", "FilterSramSzkB", "OfmapSramSzkB",
    "IfmapOffset", "FilterOffset", "OfmapOffset", "Bandwidth", "Dataflow", "MemoryBanks",
    "ReadRequestBuffer", "WriteRequestBuffer",
)  # fmt: skip
_CFG_KEYS = {k.lower(): k for k in _CFG_NAMES}
#: Dotted file key -> the .cfg key it came from, to name the right key in an error.
_CFG_FIELDS = {
    "name": "[general] run_name",
    "array.rows": "[architecture_presets] ArrayHeight",
    "array.cols": "[architecture_presets] ArrayWidth",
    "array.dataflow": "[architecture_presets] Dataflow",
    "sram.ifmap.kib": "[architecture_presets] IfmapSramSzkB",
    "sram.filter.kib": "[architecture_presets] FilterSramSzkB",
    "sram.ofmap.kib": "[architecture_presets] OfmapSramSzkB",
    "dram.bandwidth_gbps": "[architecture_presets] Bandwidth",
}
_SPARSITY = "sparsity"
#: SparseRep values SCALE-Sim 3.0.0 knows (single_layer_sim.calculate_filter_metadata_storage)
SPARSE_REPS = ("csr", "csc", "ellpack_block")
#: SCALE-Sim hard-codes 1-byte words and counts cycles only; we take 1 GHz so that
#: Bandwidth words/cycle * 1 B * 1 GHz is GB/s.
CFG_WORD_BYTES = 1
CFG_CLOCK_GHZ = 1.0


def _cfg_section(path: Path, source: str) -> tuple[configparser.ConfigParser, Any]:
    """The parsed ``.cfg`` file and its architecture section, its keys checked."""
    text = _read_text(path)
    parser = configparser.ConfigParser(inline_comment_prefixes=("#", ";"), interpolation=None)
    try:
        parser.read_string(text, source=source)
    except configparser.Error as err:
        reason = " ".join(str(err).split())
        raise ArchError(source, None, f"not a valid SCALE-Sim config: {reason}") from None

    if not parser.has_section(_CFG_SECTION):
        raise ArchError(
            source,
            f"[{_CFG_SECTION}]",
            "missing section (it holds ArrayHeight, ArrayWidth, the SRAM sizes and Dataflow)",
        )
    section = parser[_CFG_SECTION]
    for key in section:
        if key not in _CFG_KEYS:
            close = difflib.get_close_matches(key, list(_CFG_KEYS), n=1, cutoff=0.6)
            hint = f"did you mean {_CFG_KEYS[close[0]]!r}? " if close else ""
            raise ArchError(
                source,
                f"[{_CFG_SECTION}] {key}",
                f"unknown key; {hint}(SCALE-Sim reads: {', '.join(_CFG_KEYS.values())})",
            )
    return parser, section


def read_scalesim_cfg(path: str | os.PathLike) -> Architecture:
    """An Architecture from a SCALE-Sim ``.cfg`` (ConfigParser) file.

    Mapping (``docs/architecture.md`` has the table): ``ArrayHeight`` / ``ArrayWidth`` -> rows /
    cols; ``Ifmap/Filter/OfmapSramSzkB`` -> ``sram.*.kib``; ``Dataflow`` -> dataflow;
    ``Bandwidth`` (words/cycle; the first value of a comma list, as SCALE-Sim uses it) ->
    ``dram.bandwidth_gbps`` = Bandwidth * 1 B * 1 GHz (default 10 when absent, SCALE-Sim reads it
    only in USER mode); ``[general] run_name`` -> name (else the file name). Words are 1 byte and
    the clock 1 GHz; SRAM banks = max(rows, cols) so SRAM never stalls a dense array (SCALE-Sim's
    SRAM is unlimited); everything else takes the scalesim-32 defaults. The offsets, MemoryBanks,
    request buffers and the [layout] and [run_presets] sections are not mapped; [sparsity] is
    read by :func:`read_scalesim_sparsity` (it applies per layer, with the topology).
    The [sparsity] section is checked here and read by :func:`read_scalesim_sparsity`.
    """
    path = Path(path)
    source = str(path)
    parser, section = _cfg_section(path, source)
    _sparsity(parser, source)

    def value(key: str, convert: Any, what: str, default: Any = _MISSING) -> Any:
        where = f"[{_CFG_SECTION}] {key}"
        if key.lower() not in section:
            if default is _MISSING:
                raise ArchError(source, where, "missing key")
            return default
        text = section[key].strip()
        try:
            return convert(text)
        except ValueError:
            raise ArchError(source, where, f"expected {what}, got {text!r}") from None

    def first_number(text: str) -> float:
        return float(text.split(",")[0])

    rows = value("ArrayHeight", int, "an integer >= 1")
    cols = value("ArrayWidth", int, "an integer >= 1")
    kib = {b: value(f"{b.capitalize()}SramSzkB", float, "a size in KiB > 0") for b in BUFFERS}
    dataflow = value("Dataflow", str.lower, "one of os, ws, is")
    bandwidth = value("Bandwidth", first_number, "words/cycle > 0", 10.0)
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", path.stem).lstrip("._+-") or "scalesim"
    if parser.has_option("general", "run_name"):
        name = parser.get("general", "run_name").strip() or name

    spec = {
        "name": name,
        "description": f"from SCALE-Sim config {path.name}",
        "array": {"rows": rows, "cols": cols, "lanes": 1, "dataflow": dataflow},
        "clock_ghz": CFG_CLOCK_GHZ,
        "word_bytes": {b: CFG_WORD_BYTES for b in BUFFERS},
        # banks left to their default, max(rows, cols), so that they follow overrides
        "sram": {b: {"kib": kib[b]} for b in BUFFERS},
        "dram": {"bandwidth_gbps": bandwidth * CFG_WORD_BYTES * CFG_CLOCK_GHZ},
    }
    try:
        return _build(spec, source)
    except ArchError as err:
        raise ArchError(source, _CFG_FIELDS.get(err.field or "", err.field), err.reason) from None


@dataclass(frozen=True)
class ScaleSimSparsity:
    """The [sparsity] section of a SCALE-Sim ``.cfg`` as SCALE-Sim 3.0.0 reads it."""

    support: bool  # SparsitySupport: the topology's Sparsity column is applied
    rep: str  # SparseRep (csr, csc, ellpack_block): its SPARSE_REPORT storage only, no cycles
    seed: int  # RandomNumberGeneratorSeed (used by the row-wise mapping only)


def _bool(parser: configparser.ConfigParser, key: str, source: str) -> bool:
    text = parser.get(_SPARSITY, key).strip()
    if text.lower() not in ("true", "false"):
        raise ArchError(source, f"[{_SPARSITY}] {key}", f"expected true or false, got {text!r}")
    return text.lower() == "true"


def _sparsity(parser: configparser.ConfigParser, source: str) -> ScaleSimSparsity:
    """The checked [sparsity] section (absent, or SparsitySupport false: no support).

    SCALE-Sim reads SparseRep, OptimizedMapping and RandomNumberGeneratorSeed only when
    SparsitySupport is true (BlockSize only for OptimizedMapping: true); so do we. Its
    row-wise mapping (OptimizedMapping: true) ignores the Sparsity column and draws each
    filter's N from its random generator; it is not mapped (refused, with the reason)."""
    off = ScaleSimSparsity(False, "", 40)
    if not parser.has_section(_SPARSITY) or not parser.has_option(_SPARSITY, "SparsitySupport"):
        return off
    if not _bool(parser, "SparsitySupport", source):
        return off
    for key in ("SparseRep", "OptimizedMapping", "RandomNumberGeneratorSeed"):
        if not parser.has_option(_SPARSITY, key):
            raise ArchError(source, f"[{_SPARSITY}] {key}",
                            "missing key (SCALE-Sim needs it with SparsitySupport: true)")
    rep = parser.get(_SPARSITY, "SparseRep").strip()
    if rep not in SPARSE_REPS:
        raise ArchError(source, f"[{_SPARSITY}] SparseRep",
                        f"expected one of {', '.join(SPARSE_REPS)}, got {rep[:40]!r}")
    if _bool(parser, "OptimizedMapping", source):
        raise ArchError(source, f"[{_SPARSITY}] OptimizedMapping",
                        "true (SCALE-Sim's row-wise mapping: it ignores the topology's Sparsity "
                        "column and draws each filter's N:BlockSize from its random generator, "
                        "ws only) is not supported; expected false (layer-wise N:M from the "
                        "Sparsity column)")
    seed = parser.get(_SPARSITY, "RandomNumberGeneratorSeed").strip()
    if not re.fullmatch(r"-?[0-9]{1,18}", seed):
        raise ArchError(source, f"[{_SPARSITY}] RandomNumberGeneratorSeed",
                        f"expected an integer, got {seed[:40]!r}")
    return ScaleSimSparsity(True, rep, int(seed))


def read_scalesim_sparsity(path: str | os.PathLike) -> ScaleSimSparsity:
    """The [sparsity] section of a SCALE-Sim ``.cfg`` (checked as :func:`read_scalesim_cfg`
    checks it). With ``support`` the topology's Sparsity column runs as SCALE-Sim's layer-wise
    N:M: ``simulator.scalesim_compat.topology_nm_inputs``."""
    path = Path(path)
    parser, _ = _cfg_section(path, str(path))
    return _sparsity(parser, str(path))
