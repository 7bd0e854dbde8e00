"""A file of the project as it was at a git revision, loaded as a module of its own beside the
current one: what a benchmark that times this checkout against a revision in one process
calls (``bench_map_walk.py``, ``bench_taps_real.py``)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def module_at(rev: str, relpath: str, work: Path, name: str) -> ModuleType:
    """``relpath`` (e.g. ``dataflows/tiles.py``) at git revision ``rev``, copied into ``work``
    and loaded as the module ``name``."""
    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{relpath}"], check=True,
                          capture_output=True, text=True).stdout
    path = work / f"{name}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
