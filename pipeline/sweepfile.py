"""Sweep files: a base configuration and axes, expanded into checked, keyed points.

A sweep file (YAML, ``docs/sweeps.md``) names a base architecture, a trace (a recorded trace
directory, or a ``synth`` recipe for a synthetic one), run options and axes, combined as a ``grid``
(every combination), as listed ``points``, or both (every listed point crossed with the grid).
An axis is any architecture key (``array.rows``, ``sram.ifmap.kib``, ``sparse.nm``, ...), ``arch``
itself (a preset or file), a run option (``dataflow``, ``memory``, ``phases``), ``trace``, or a
synth key (``model``, ``method``, ``sparsity``, ``pattern``, ``batch``, ``seed``, ...).

``load_sweep`` checks every point up front (the architecture as a whole, the synth recipe, the
buffers against the array) before anything runs; a problem raises one ``InputError`` naming the
sweep file, where in it (``grid: array.rows``, ``points item 3: sparsity``, or the point's
assignments when only their combination is wrong) and what was expected.

Each point gets a key: a hash of its full configuration (every architecture key with defaults
filled in, the trace recipe or the recorded trace's content, dataflow, memory mode, phases and the
sparsesim version), so the same point in two sweeps is the same result directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from common.errors import InputError
from common.yamlio import (
    MAX_FILE_BYTES,
    StrictLoader,
    describe,
    float_value,
    yaml_error_line,
)
from simulator.arch import KEY_PATHS, Architecture, load_arch
from traces.synth import SynthConfig, plan, version

RUN_KEYS = ("dataflow", "memory", "phases")
SYNTH_KEYS = tuple(f.name for f in dataclasses.fields(SynthConfig))
TOP_KEYS = ("name", "description", "arch", "overrides", "trace", "synth", *RUN_KEYS, "grid",
            "points")
RUN_DEFAULTS = {"memory": "modeled", "phases": "train"}  # dataflow: the architecture's
KEY_LENGTH = 16  # hex digits of a point key
MAX_POINTS = 10_000  # points of one sweep (docs/limits.md)


class SweepError(InputError):
    """A sweep file (or sweep mapping) is not valid."""


@dataclass(frozen=True)
class Point:
    """One configuration to simulate. ``axes`` holds the effective value of every axis of the
    sweep (also those this point left to the base); ``config`` is what ``key`` hashes."""

    index: int
    key: str
    axes: dict[str, Any]
    arch: dict[str, Any]  # Architecture.to_dict(): every key, defaults filled in
    arch_source: str
    dataflow: str
    memory: str
    phases: str
    trace: str | None  # a recorded trace directory (absolute), or None for a synthetic one
    synth: dict[str, Any] | None  # SynthConfig fields (a topology CSV model as an absolute path)
    trace_key: str | None  # the synthetic trace's cache key
    config: dict[str, Any]

    def label(self) -> str:
        """``key=value`` for each axis, for progress lines and messages."""
        return ", ".join(f"{k}={format_value(v)}" for k, v in self.axes.items())


@dataclass(frozen=True)
class Sweep:
    """A checked sweep: its axes (table columns, in order) and its points, in expansion order."""

    name: str
    description: str
    source: str
    axes: tuple[str, ...]
    points: tuple[Point, ...]


def format_value(value: Any) -> str:
    """An axis value as a table cell: text as is, numbers in Python's shortest round-trip form,
    booleans ``true``/``false``, nothing as empty, lists and mappings as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def digest(value: Any) -> str:
    """sha256 of a JSON-able value's canonical form."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
def load_sweep(spec: str | os.PathLike | Mapping[str, Any]) -> Sweep:
    """A checked ``Sweep`` from a YAML file or an equivalent mapping (paths in a mapping are
    relative to the working directory, in a file to the file's directory)."""
    if isinstance(spec, Mapping):
        return _Reader("<sweep>", Path.cwd()).read(spec)
    path = Path(spec)
    source = str(path)
    if path.is_dir():
        raise SweepError(source, None, "is a directory, expected a sweep file (YAML)")
    if path.exists() and not path.is_file():
        raise SweepError(source, None, "is not a regular file, expected a sweep file (YAML)")
    if path.is_file() and path.stat().st_size > MAX_FILE_BYTES:
        raise SweepError(source, None, f"is {path.stat().st_size:,} bytes; expected a sweep "
                                       f"file (at most {MAX_FILE_BYTES:,})")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SweepError(source, None, "no such file") from None
    except UnicodeDecodeError:
        raise SweepError(source, None, "not UTF-8 text") from None
    except OSError as err:
        raise SweepError(source, None, f"cannot read: {err.strerror or err}") from None
    try:
        raw = yaml.load(text, Loader=StrictLoader)  # SafeLoader that refuses duplicate keys
    except yaml.YAMLError as err:
        where, what = yaml_error_line(err)
        raise SweepError(source, where, f"not valid YAML: {what}") from None
    return _Reader(source, path.resolve().parent).read(raw)


class _Reader:
    """Reads one sweep mapping; the first problem raises ``SweepError``."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        self._archs: dict[str, Architecture] = {}
        self._hashes: dict[str, str] = {}
        self._plans: set[str] = set()
        self.version = version()  # read from the package metadata once, not twice a point

    def fail(self, field: str | None, reason: str) -> SweepError:
        return SweepError(self.source, field, reason)

    # -- top level -------------------------------------------------------------------------------
    def read(self, raw: Any) -> Sweep:
        if not isinstance(raw, Mapping):
            raise self.fail(None, f"expected a mapping of sweep keys ({', '.join(TOP_KEYS)}), "
                                  f"got {describe(raw)}")
        for key in raw:
            if key not in TOP_KEYS:
                raise self.fail(None, self.unknown(key, TOP_KEYS, "keys"))
        default_name = Path(self.source).stem if self.source != "<sweep>" else "sweep"
        name = self.text(raw, "name", default_name)
        description = self.text(raw, "description", "")
        if "trace" in raw and "synth" in raw:
            raise self.fail("trace", "give a recorded trace or a synth recipe, not both")
        base: dict[str, Any] = {k: raw[k] for k in ("arch", "trace", *RUN_KEYS) if k in raw}
        for k, v in base.items():
            if v is None:
                raise self.fail(k, "is empty; give a value or leave the key out")
        overrides = raw.get("overrides", {})
        if not isinstance(overrides, Mapping):
            raise self.fail("overrides", f"expected a mapping of architecture keys "
                                         f"(e.g. array.rows: 64), got {describe(overrides)}")
        for k in overrides:
            self.axis_kind(k, "overrides", arch_only=True)
        synth = raw.get("synth")
        if synth is not None and not isinstance(synth, Mapping):
            raise self.fail("synth", f"expected a mapping of synth keys ({', '.join(SYNTH_KEYS)})"
                                     f", got {describe(synth)}")
        for k in synth or {}:
            if k not in SYNTH_KEYS:
                raise self.fail(f"synth: {k}", self.unknown(k, SYNTH_KEYS, "synth keys"))

        assignments, origin, axes = self.expand(raw)
        points: list[Point] = []
        seen: dict[str, int] = {}
        for i, point in enumerate(assignments):
            p = self.point(i, point, origin, base, dict(overrides), synth, axes)
            if p.key in seen:
                raise self.fail(f"point {i + 1} ({p.label()})",
                                f"the same configuration as point {seen[p.key] + 1}")
            seen[p.key] = i
            points.append(p)
        return Sweep(name, description, self.source, tuple(axes), tuple(points))

    def text(self, raw: Mapping, key: str, default: str) -> str:
        value = raw.get(key, default)
        if not isinstance(value, str):
            raise self.fail(key, f"expected text, got {describe(value)}")
        return value

    def unknown(self, key: Any, allowed: tuple[str, ...], what: str) -> str:
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key {key!r}{hint} (valid {what}: {', '.join(allowed)})"

    def axis_kind(self, key: Any, where: str, arch_only: bool = False) -> str:
        """``run``, ``synth``, ``arch`` (the architecture itself), ``trace`` or ``key`` (an
        architecture key); an unknown key fails naming ``where``."""
        if not isinstance(key, str) or not key:
            raise self.fail(where, f"axis names are text, got {describe(key)}")
        parts = key.split(".")
        if key in KEY_PATHS or (parts[0] == "sparse" and len(parts) > 1 and all(parts)):
            return "key"
        if arch_only:
            close = difflib.get_close_matches(key, KEY_PATHS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise self.fail(f"{where}: {key}", f"unknown architecture key{hint} "
                                               "(see docs/architecture.md)")
        if key in RUN_KEYS:
            return "run"
        if key in SYNTH_KEYS:
            return "synth"
        if key in ("arch", "trace"):
            return key
        close = difflib.get_close_matches(key, (*RUN_KEYS, *SYNTH_KEYS, "arch", "trace",
                                                *KEY_PATHS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise self.fail(f"{where}: {key}",
                        f"unknown axis; {hint}(an axis is an architecture key such as array.rows "
                        f"or sram.ifmap.kib, arch, trace, {', '.join(RUN_KEYS)}, or a synth key: "
                        f"{', '.join(SYNTH_KEYS)})")

    def expand(self, raw: Mapping) -> tuple[list[dict[str, Any]], dict[tuple[int, str], str],
                                            list[str]]:
        """The assignments of every point (listed points outer, grid inner); per (point, axis),
        where in the file its value was written; the axes (the points' keys as they first
        appear, then the grid's)."""
        grid = raw.get("grid")
        listed = raw.get("points")
        if grid is None and listed is None:
            raise self.fail(None, "no axes: give a grid, a list of points, or both")
        if grid is not None and (not isinstance(grid, Mapping) or not grid):
            raise self.fail("grid", f"expected a mapping of axis: [values], got {describe(grid)}")
        if listed is not None and (not isinstance(listed, list) or not listed):
            raise self.fail("points", f"expected a non-empty list of mappings (axis: value), got "
                                      f"{describe(listed)}")
        grid = dict(grid or {})
        for k, values in grid.items():
            self.axis_kind(k, "grid")
            if not isinstance(values, list) or not values:
                raise self.fail(f"grid: {k}", f"expected a non-empty list of values, got "
                                              f"{describe(values)}")
        rows: list[tuple[int | None, dict[str, Any]]] = []
        for i, item in enumerate(listed or [None]):
            if item is None and listed is None:
                rows.append((None, {}))
                continue
            where = f"points item {i + 1}"
            if not isinstance(item, Mapping) or not item:
                raise self.fail(where, f"expected a mapping of axis: value, got {describe(item)}")
            for k in item:
                self.axis_kind(k, where)
                if k in grid:
                    raise self.fail(f"{where}: {k}", "also a grid axis; an axis belongs to the "
                                                     "grid or to the points, not both")
            rows.append((i, dict(item)))
        total = len(rows) * math.prod(len(v) for v in grid.values())
        if total > MAX_POINTS:  # refused before a single point is built or checked
            sizes = " x ".join(([f"{len(listed)} listed"] if listed else [])
                               + [f"{len(v)} {k}" for k, v in grid.items()])
            raise self.fail("grid" if grid else "points",
                            f"makes {total:,} points ({sizes}); "
                            f"a sweep runs at most {MAX_POINTS:,} (the limit: at seconds to "
                            "minutes a point, more would run for days); split it")
        axes = list(dict.fromkeys(k for _, item in rows for k in item)) + list(grid)
        out: list[dict[str, Any]] = []
        origin: dict[tuple[int, str], str] = {}
        for i, item in rows:
            for combo in itertools.product(*grid.values()):
                n = len(out)
                out.append({**item, **dict(zip(grid, combo, strict=True))})
                origin.update({(n, k): f"points item {i + 1}" for k in item})
                origin.update({(n, k): "grid" for k in grid})
        return out, origin, axes

    # -- one point -------------------------------------------------------------------------------
    def point(self, index: int, assign: dict[str, Any], origin: dict, base: dict[str, Any],
              overrides: dict[str, Any], synth: Mapping | None, axes: list[str]) -> Point:
        def loc(k: str) -> str:
            """Where the value of ``k`` for this point was written."""
            if (index, k) in origin:
                return f"{origin[index, k]}: {k}"
            if k in overrides:
                return f"overrides: {k}"
            return f"synth: {k}" if k in SYNTH_KEYS else k

        def combo() -> str:
            shown = ", ".join(f"{k}={format_value(v)}" for k, v in assign.items())
            return f"point {index + 1} ({shown})"

        for k, v in assign.items():
            if v is None:
                raise self.fail(loc(k), "is empty; give a value")
        values = {**base, **assign}
        if "arch" not in values:
            raise self.fail("arch", "required: a preset name or an architecture file, at the top "
                                    "level or as an axis")
        arch_keys = {k: v for k, v in assign.items() if self.axis_kind(k, "") == "key"}
        try:
            arch = self.base_arch(values["arch"], loc("arch")).with_overrides(
                {**overrides, **arch_keys}, source=self.source)
        except SweepError:
            raise
        except InputError as err:
            if err.field in arch_keys or err.field in overrides:
                raise self.fail(loc(err.field), err.reason) from None
            raise self.fail(combo(), f"{err.field}: {err.reason}" if err.field
                            else err.reason) from None
        dataflow = values.get("dataflow", arch.dataflow)
        memory = values.get("memory", RUN_DEFAULTS["memory"])
        phases = values.get("phases", RUN_DEFAULTS["phases"])
        self.check_run({"dataflow": dataflow, "memory": memory, "phases": phases}, loc)
        from simulator.run import check_buffers

        try:
            check_buffers(arch)
        except InputError as err:
            raise self.fail(combo(), f"{err.field}: {err.reason}") from None

        synth_assign = {k: v for k, v in assign.items() if k in SYNTH_KEYS}
        trace_path = recipe = None
        if "trace" in values:
            if synth is not None or synth_assign:
                k = "trace" if "trace" in assign else next(iter(synth_assign), "synth")
                raise self.fail(loc(k), "a sweep uses recorded traces (trace) or a synth recipe "
                                        "(synth and its keys), not both")
            trace_path = self.trace_dir(values["trace"], loc("trace"))
            trace_id: dict[str, Any] = {"recorded": self.tree_hash(trace_path)}
        else:
            if synth is None:
                raise self.fail("synth", "required: a synth recipe (at least its model) or a "
                                         "recorded trace")
            fields = {**synth, **synth_assign}
            recipe = self.recipe(fields, set(synth_assign), loc, combo)
            trace_id = {"synth": recipe["identity"]}
        config = {"sparsesim": self.version, "arch": arch.to_dict(), "trace": trace_id,
                  "dataflow": dataflow, "memory": memory, "phases": phases}
        effective = {"arch": values["arch"], "trace": values.get("trace"), "dataflow": dataflow,
                     "memory": memory, "phases": phases}
        if recipe is not None:
            effective.update(recipe["fields"], model=fields["model"])
        shown = {k: effective[k] if k in effective else _dotted(config["arch"], k) for k in axes}
        return Point(
            index=index, key=digest(config)[:KEY_LENGTH], axes=shown, arch=config["arch"],
            arch_source=arch.source, dataflow=dataflow, memory=memory, phases=phases,
            trace=trace_path, synth=recipe["fields"] if recipe else None,
            trace_key=digest({"sparsesim": self.version, **trace_id})[:KEY_LENGTH] if recipe
            else None,
            config=config)

    def base_arch(self, spec: Any, field: str) -> Architecture:
        if not isinstance(spec, str) or not spec:
            raise self.fail(field, f"expected a preset name or a file path, got {describe(spec)}")
        if spec not in self._archs:
            target: str | Path = spec
            if "/" in spec or os.sep in spec or Path(spec).suffix:
                target = self.base_dir / spec
            try:
                self._archs[spec] = load_arch(target)
            except InputError as err:
                raise self.fail(field, str(err)) from None
        return self._archs[spec]

    def check_run(self, values: dict[str, Any], loc) -> None:
        from common.vocab import DATAFLOWS
        from simulator.run import MEMORY_MODES, PHASE_SETS

        options = {"dataflow": DATAFLOWS, "memory": MEMORY_MODES, "phases": tuple(PHASE_SETS)}
        for key, value in values.items():
            if value not in options[key]:
                raise self.fail(loc(key), f"expected one of {', '.join(options[key])}, got "
                                          f"{describe(value)}")

    def trace_dir(self, value: Any, field: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(field, f"expected a trace directory, got {describe(value)}")
        path = (self.base_dir / value).resolve()
        from traces.format import Trace

        try:
            Trace(path)
        except InputError as err:
            raise self.fail(field, str(err)) from None
        return str(path)

    def tree_hash(self, path: str) -> str:
        """sha256 over the relative names and contents of every file of a directory."""
        if path not in self._hashes:
            h = hashlib.sha256()
            for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
                h.update(str(f.relative_to(path)).encode() + b"\0")
                h.update(f.read_bytes())
            self._hashes[path] = h.hexdigest()
        return self._hashes[path]

    def recipe(self, fields: dict[str, Any], assigned: set[str], loc, combo) -> dict[str, Any]:
        """Type-check a synth recipe, resolve a topology file and ``plan`` it. Returns the
        fields to run (``fields``, a topology as an absolute path) and to hash (``identity``,
        a topology by name and content)."""
        def bad(k: str, expected: str, hint: str = "") -> SweepError:
            return self.fail(loc(k), f"expected {expected}, got {describe(fields[k])}{hint}")

        if "model" not in fields:
            raise self.fail("synth: model", "required: a built-in model name or a topology CSV")
        out: dict[str, Any] = {}
        defaults = {f.name: f.default for f in dataclasses.fields(SynthConfig)}
        for k in SYNTH_KEYS:
            v = fields.get(k, defaults[k])
            if k in ("model", "method", "pattern", "dtype") or (k == "density" and v is not None):
                if not isinstance(v, str) or not v:
                    raise bad(k, "text")
            elif k in ("batch", "seed", "steps"):
                if not isinstance(v, int) or isinstance(v, bool):
                    raise bad(k, "an integer")
            elif k in ("sparsity", "relu_sparsity") and (v is not None or k == "relu_sparsity"):
                x = float_value(v)
                if x is None or not math.isfinite(x):
                    raise bad(k, "a number")
                v = x
            elif k == "first_dense" and v is not None and not isinstance(v, bool):
                raise bad(k, "true or false")
            elif k == "layer_sparsity" and v is not None:
                if not isinstance(v, list) or not all(float_value(x) is not None for x in v):
                    raise bad(k, "a list of numbers")
                v = [float(x) for x in v]
            out[k] = v
        identity = dict(out)
        model = out["model"]
        if model.lower().endswith(".csv") or "/" in model or os.sep in model:
            path = (self.base_dir / model).resolve()
            if not path.is_file():
                raise self.fail(loc("model"), f"no such topology file {model!r}")
            out["model"] = str(path)
            # the recipe's identity is the topology's name and content, not where it lies
            identity["model"] = {"file": path.name, "sha256": self.file_hash(path)}
        token = json.dumps(out, sort_keys=True)
        if token not in self._plans:
            cfg = SynthConfig(**{k: tuple(v) if isinstance(v, list) else v
                                 for k, v in out.items()})
            try:
                plan(cfg)
            except InputError as err:
                k = (err.field or err.source or "").lstrip("-").replace("-", "_")
                if k in SYNTH_KEYS:
                    raise self.fail(loc(k), err.reason) from None
                raise self.fail(combo() if assigned else "synth", str(err)) from None
            self._plans.add(token)
        return {"fields": out, "identity": identity}

    def file_hash(self, path: Path) -> str:
        key = str(path)
        if key not in self._hashes:
            self._hashes[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        return self._hashes[key]


def _dotted(mapping: Mapping[str, Any], key: str) -> Any:
    node: Any = mapping
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node
