"""The import graph holds to the one-way flow of docs/design.md.

Every ``import`` and ``from ... import`` of every module of the packages (at any depth, lazy
imports inside functions included) is read with ``ast``; an import of another sparsesim package
must be allowed by ``ALLOWED``. The edges that break the picture today are listed in
``KNOWN_BACK_EDGES`` with the module that makes them: the list may only shrink — a new back edge
fails, and so does an entry that no longer exists (remove it when it is fixed).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "traces", "dataflows", "simulator", "reports", "trainers", "pipeline",
            "cli")

#: package -> the sparsesim packages it may import (the flow of docs/design.md)
ALLOWED = {
    "common": set(),
    "traces": {"common"},
    "dataflows": {"common", "traces"},
    "simulator": {"common", "traces", "dataflows"},
    "reports": {"common", "traces"},
    "trainers": {"common", "traces"},
    "pipeline": {"common", "traces", "dataflows", "simulator", "reports", "trainers"},
    "cli": {"common", "traces", "dataflows", "simulator", "reports", "trainers", "pipeline"},
}
#: module-level exceptions inside an allowed package edge: reports reads results, which
#: simulator/results.py writes
ALLOWED_MODULES = {("reports", "simulator.results")}

#: (importing module, imported module) edges that break the picture today; only shrinks
KNOWN_BACK_EDGES: set[tuple[str, str]] = set()


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def edges() -> set[tuple[str, str, str]]:
    """(importing package, importing module path, imported module) across packages."""
    found = set()
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for mod in _imports(path):
                top = mod.split(".")[0]
                if top in PACKAGES and top != pkg:
                    found.add((pkg, rel, mod))
    return found


def _bad(found):
    bad = set()
    for pkg, rel, mod in found:
        top = mod.split(".")[0]
        if top in ALLOWED[pkg]:
            continue
        if any(pkg == p and (mod == m or mod.startswith(m + ".")) for p, m in ALLOWED_MODULES):
            continue
        bad.add((rel, ".".join(mod.split(".")[:2])))
    return bad


def test_imports_follow_the_one_way_flow():
    bad = _bad(edges())
    new = sorted(bad - KNOWN_BACK_EDGES)
    assert not new, f"imports against docs/design.md's flow: {new}"
    gone = sorted(KNOWN_BACK_EDGES - bad)
    assert not gone, f"fixed: remove from KNOWN_BACK_EDGES: {gone}"


def test_common_imports_none_of_the_packages():
    assert not [e for e in edges() if e[0] == "common"]


def test_the_check_sees_a_back_edge(tmp_path, monkeypatch):
    """The reader finds lazy imports inside functions, the form back edges take."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from simulator.results import load_run\n    import simulator.run\n")
    assert {"simulator.results", "simulator.results.load_run", "simulator.run"} <= _imports(f)
    found = {("dataflows", "dataflows/x.py", "simulator.run")}
    assert _bad(found) == {("dataflows/x.py", "simulator.run")}


def test_no_cli_module_imports_the_entry_point():
    """cli.main imports the subcommands; they share cli.helpers, never cli.main (no cycle)."""
    users = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "cli").glob("*.py")
                   if p.name != "main.py" and any(m == "cli.main" or m.startswith("cli.main.")
                                                  for m in _imports(p)))
    assert not users
    assert not any(m.startswith("cli.main") for m in _imports(ROOT / "cli" / "helpers.py"))


def test_functions_are_short_or_say_why():
    """No function over 60 lines in simulator/ and dataflows/, except numba kernels whose
    docstring says why they are one function."""
    long_ = []
    for pkg in ("simulator", "dataflows"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.FunctionDef) or node.end_lineno - node.lineno < 60:
                    continue
                jit = any("njit" in ast.unparse(d) for d in node.decorator_list)
                doc = ast.get_docstring(node) or ""
                if not (jit and "One function, long:" in doc):
                    long_.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} "
                                 f"({node.end_lineno - node.lineno + 1} lines)")
    assert not long_, long_
