"""Architecture files: a shipped preset, a YAML file of the user's, or a SCALE-Sim ``.cfg``,
read into the validated ``Architecture`` of ``simulator.archspec``.

* a shipped preset (``load_arch("scalesim-32")``; ``preset_names()`` lists them),
* a ``.yaml`` / ``.yml`` architecture file (``docs/architecture.md``), read with the strict YAML
  loader (duplicate keys and YAML 1.1 surprises refused), or
* a SCALE-Sim ``.cfg`` file (``simulator.scalesim_cfg``; the mapping is documented there and in
  the doc).

This module only reads: it turns a file into a mapping and hands it to the schema, which checks
every field once. The schema's names are re-exported for the modules that load and use an
architecture (``from simulator.arch import Architecture, load_arch``).
"""

from __future__ import annotations

import difflib
import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from common.yamlio import MAX_FILE_BYTES, StrictLoader, describe, yaml_error_line
from simulator.archspec import (  # noqa: F401  (re-exported: the schema's public names)
    BUFFERS,
    DEFAULTS,
    FOLD_MODES,
    KEY_PATHS,
    WORD_SIZES,
    ArchError,
    Architecture,
    DramSpec,
    EnergySpec,
    SramSpec,
    _build,
)

YAML_SUFFIXES = (".yaml", ".yml")
CFG_SUFFIX = ".cfg"

# ------------------------------------------------------------------------------------------------
# reading files and presets
# ------------------------------------------------------------------------------------------------


def _parse_yaml_text(text: str, source: str) -> Architecture:
    try:
        raw = yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        where, what = yaml_error_line(err)
        raise ArchError(source, where, f"not valid YAML: {what}") from None
    return _build(raw, source)


def parse_overrides(items: list[str], flag: str = "--set") -> dict[str, Any]:
    """``KEY=VALUE`` strings (``dram.bandwidth_gbps=25.6``, ``sparse.nm=2:4``) as overrides for
    ``Architecture.with_overrides``; a VALUE reads as it would in an architecture file (YAML
    1.2 numbers, ``true``/``false``, ``[a, b]``, ``{k: v}``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key or not text.strip():
            raise ArchError(flag, None, f"expected KEY=VALUE (e.g. dram.bandwidth_gbps=25.6), "
                                        f"got {item!r}")
        if key in out:
            raise ArchError(flag, key, "given twice")
        try:
            out[key] = yaml.load(text, Loader=StrictLoader)
        except yaml.YAMLError as err:
            raise ArchError(flag, key, f"cannot read the value {text[:80]!r} as a YAML value: "
                                       f"{yaml_error_line(err)[1]}") from None
    return out




def _read_text(path: Path) -> str:
    if path.is_dir():
        raise ArchError(str(path), None, "is a directory, expected an architecture file")
    if path.exists() and not path.is_file():
        raise ArchError(str(path), None, "is not a regular file, expected an architecture file")
    if path.is_file() and path.stat().st_size > MAX_FILE_BYTES:
        raise ArchError(str(path), None, f"is {path.stat().st_size:,} bytes; expected an "
                                         f"architecture file (at most {MAX_FILE_BYTES:,})")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = ""
        if path.stem in preset_names() and path.parent == Path("."):
            hint = f" (to use the preset, write its name alone: {path.stem})"
        raise ArchError(str(path), None, f"no such file{hint}") from None
    except UnicodeDecodeError:
        raise ArchError(str(path), None, "not UTF-8 text") from None
    except OSError as err:
        raise ArchError(str(path), None, f"cannot read: {err.strerror or err}") from None


def _presets_dir() -> Any:
    return resources.files("simulator") / "presets"


def preset_names() -> list[str]:
    """Names of the shipped presets, sorted."""
    return sorted(
        p.name[: -len(".yaml")] for p in _presets_dir().iterdir() if p.name.endswith(".yaml")
    )


def _load_preset(name: str) -> Architecture:
    text = (_presets_dir() / f"{name}.yaml").read_text(encoding="utf-8")
    return _parse_yaml_text(text, f"preset {name}")


def load_arch(spec: str | os.PathLike) -> Architecture:
    """An Architecture from a preset name (``scalesim-32``), a ``.yaml`` / ``.yml`` architecture
    file or a SCALE-Sim ``.cfg`` file. Any problem raises ``ArchError``."""
    if isinstance(spec, Architecture):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise ArchError(None, None, f"expected a preset name or a file path, got {describe(spec)}")
    text = os.fspath(spec)
    if isinstance(spec, str) and text in preset_names():
        return _load_preset(text)
    path = Path(text)
    suffix = path.suffix.lower()
    looks_like_path = (
        isinstance(spec, os.PathLike) or suffix or "/" in text or os.sep in text or path.exists()
    )
    if not looks_like_path:
        names = preset_names()
        close = difflib.get_close_matches(text, names, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ArchError(
            f"preset {text}",
            None,
            f"unknown preset; {hint}presets: "
            f"{', '.join(names)} (or give a .yaml, .yml or .cfg file)",
        )
    if suffix == CFG_SUFFIX:
        from simulator.scalesim_cfg import read_scalesim_cfg

        return read_scalesim_cfg(path)
    if suffix not in YAML_SUFFIXES:
        if not path.exists():
            raise ArchError(str(path), None, "no such file")
        raise ArchError(
            str(path),
            None,
            f"unsupported file type {suffix or '(no suffix)'!r}: "
            "expected .yaml or .yml (architecture) or .cfg "
            "(SCALE-Sim config)",
        )
    return _parse_yaml_text(_read_text(path), str(path))
