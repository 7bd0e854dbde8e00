"""The dense baseline, simulated once per (layers, batch, architecture, dataflow, phases,
memory; and, for a trace, the GEMMs none of its steps ran, which it leaves out) and
reused: within a process (a demo, a sweep worker) from memory, across commands and
sweep workers from a content-addressed cache directory.

A baseline is the same layers at the same batch on the same architecture and dataflow, masks
dropped and sparse features off (``simulator.run.simulate_trace``); it is about half of every
``simulate`` of a trace, and a sweep that varies only the method or the sparsity simulates the
same one at every point.

The cache. ``<dir>/baselines/<key>.json`` holds the baseline's table (its columns, their dtypes
and values; JSON keeps every float64 exactly) and meta, where ``key`` is the SHA-256 of
everything the baseline depends on: the layers, the batch, every architecture key as
simulated (of the sparse features only the lowering: the baseline runs without the others),
the dataflow, the phases, the memory model and the source code of the packages that
compute it (``common``, ``traces``, ``dataflows``, ``simulator``), so a change to the model
never reads an old answer. An entry is written under a temporary name and renamed into place,
so concurrent sweep workers read a whole entry or none; an entry that cannot be read, or whose
stored key differs, is simulated again and replaced. Nothing in it is executable (no pickle).

The directory is ``$SPARSESIM_CACHE_DIR``, else ``$XDG_CACHE_HOME/sparsesim``, else
``~/.cache/sparsesim``; ``--no-cache`` (``simulate``, ``sweep``, ``demo``) neither reads nor
writes it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from simulator.results import Results
from simulator.table import Table

CACHE_ENV = "SPARSESIM_CACHE_DIR"
FORMAT = 2  # the entry layout; a change makes old entries unreadable (recomputed)
_CODE_PACKAGES = ("common", "traces", "dataflows", "simulator")
_MEMORY: dict[str, Results] = {}  # this process's baselines by key
_MEMORY_MAX = 16
_MAX_ENTRY_BYTES = 64 << 20  # a 10 000-layer network's baseline is a few MB


def default_cache_dir() -> Path:
    """``$SPARSESIM_CACHE_DIR``, else ``$XDG_CACHE_HOME/sparsesim``, else
    ``~/.cache/sparsesim``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sparsesim"


@cache
def code_digest() -> str:
    """SHA-256 of the sources of the packages a baseline's numbers come from."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    try:  # an install without its sources still changes key with its version
        h.update(metadata.version("sparsesim").encode())
    except metadata.PackageNotFoundError:
        pass
    for pkg in _CODE_PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def dense_arch_spec(arch) -> dict[str, Any]:
    """What a dense baseline depends on of ``arch``: every key (``to_dict``) but the sparse
    features, of which only the lowering: the baseline runs without the others
    (``SparseFeatures.baseline``), so architectures that differ only in them (a sweep over
    a sparse feature) share one."""
    spec = arch.to_dict()
    spec["sparse"] = {"lowering": asdict(arch.features.lowering)}
    return spec


def baseline_key(layers, batch: int, arch, dataflow: str, phases: str, memory: str,
                 input_grad: bool = False, skip: Iterable[tuple[str, str]] = ()) -> str:
    """The content address of a baseline (hex SHA-256); ``input_grad``: the first layer's
    ``bwd_input`` runs (a version-2 trace); ``skip``: the (layer, phase) GEMMs left out (no
    step of the trace ran them)."""
    spec = {"format": FORMAT, "code": code_digest(), "layers": [asdict(la) for la in layers],
            "batch": batch, "arch": dense_arch_spec(arch), "dataflow": dataflow,
            "phases": phases,
            "memory": memory, "input_grad": input_grad, "skip": sorted(skip)}
    text = json.dumps(spec, sort_keys=True, default=list, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _encode(key: str, res: Results) -> str:
    t = res.data("table")
    text = t.pandas_types  # "str": a text column (an object array of str and NaN)
    return json.dumps({"format": FORMAT, "key": key, "meta": res.meta,
                       "columns": t.columns,
                       "dtypes": [text.get(c, str(d)) for c, d in zip(t.columns, t.dtypes,
                                                                      strict=True)],
                       "data": [t[c].tolist() for c in t.columns]})


def _decode(text: str, key: str) -> Results | None:
    raw = json.loads(text)
    if raw.get("format") != FORMAT or raw.get("key") != key:
        return None
    if len({len(raw["columns"]), len(raw["dtypes"]), len(raw["data"])}) != 1 or len(
            {len(v) for v in raw["data"]}) > 1:
        return None  # columns of different lengths: damaged
    cols = {c: _column(v, d) for c, d, v in zip(raw["columns"], raw["dtypes"], raw["data"],
                                                  strict=True)}
    if any(col is None for col in cols.values()):
        return None
    text = {c: d for c, d in zip(raw["columns"], raw["dtypes"], strict=True)
            if d in ("str", "object")}
    return Results(Table(cols, len(raw["data"][0]) if raw["data"] else 0, text), raw["meta"])


def _column(values: list, dtype: str) -> np.ndarray | None:
    """A column of an entry, or None where its values are not of its type (damaged)."""
    want = {"int64": (int,), "float64": (float,), "bool": (bool,), "str": (str,),
            "object": (str, bool)}.get(dtype)
    text = dtype in ("str", "object")
    if want is None or not all(type(v) in want or (text and type(v) is float and v != v)
                               for v in values):
        return None  # NaN stands in a text column for a row without one
    col = np.empty(len(values), dtype=object if text else dtype)
    col[:] = values
    return col


def _read(path: Path, key: str) -> Results | None:
    try:
        if not path.is_file() or path.stat().st_size > _MAX_ENTRY_BYTES:
            return None  # missing, a FIFO or the like, or far larger than any baseline
        return _decode(path.read_text(encoding="utf-8"), key)
    except (OSError, ValueError, KeyError, TypeError, IndexError, RecursionError):
        return None  # half-written by another tool, or damaged: simulate again


def _write(path: Path, key: str, res: Results) -> None:
    """Write the entry under a temporary name and rename it into place; a cache that cannot be
    written (read-only, full) only costs the next command the simulation."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(_encode(key, res))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass


def dense_baseline(layers, batch: int, arch, dataflow: str, phases: str, memory: str,
                   cache_dir: str | os.PathLike | None, simulate: Callable[[], Results],
                   input_grad: bool = False, skip: Iterable[tuple[str, str]] = ()) -> Results:
    """The dense baseline's ``Results`` (table and meta). With ``cache_dir``: from this
    process's memory, else from the cache there, else ``simulate()`` and kept in both.
    Without: ``simulate()``."""

    def run() -> Results:
        full = simulate()
        return Results(full.stored("table"), full.meta)

    if cache_dir is None:
        return run()
    key = baseline_key(layers, batch, arch, dataflow, phases, memory, input_grad, skip)
    res = _MEMORY.get(key)
    if res is None:
        path = Path(cache_dir) / "baselines" / f"{key}.json"
        res = _read(path, key)
        if res is None:
            res = run()
            _write(path, key, res)
        if len(_MEMORY) >= _MEMORY_MAX:
            _MEMORY.pop(next(iter(_MEMORY)))
        _MEMORY[key] = res
    return Results(res.stored("table").copy(), copy.deepcopy(res.meta))


def stats(cache_dir: str | os.PathLike) -> dict[str, Any]:
    """Entries and bytes of the baseline cache in ``cache_dir``."""
    files = list((Path(cache_dir) / "baselines").glob("*.json"))
    return {"entries": len(files), "bytes": sum(f.stat().st_size for f in files)}
