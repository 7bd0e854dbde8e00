"""Generated architecture files (YAML and SCALE-Sim .cfg) and ``--set`` overrides: each reads,
or is refused on one line; one that reads also simulates a small GEMM without a traceback (a
value that passes the checks must not overflow the model downstream)."""

from __future__ import annotations

import copy
import tempfile
from importlib import resources
from pathlib import Path

import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from simulator.arch import KEY_PATHS, load_arch, parse_overrides
from simulator.run import simulate
from simulator.scalesim_cfg import read_scalesim_sparsity
from tests.fuzz.contract import (
    FUZZ,
    HOSTILE_YAML,
    ODD_TEXT,
    outcome,
    plausible,
    scalars,
    values,
)
from traces.layers import Layer

PRESET = yaml.safe_load(
    (resources.files("simulator") / "presets" / "scalesim-32.yaml").read_text(encoding="utf-8")
)
SPARSE_KEYS = [
    "sparse.skip",
    "sparse.two_sided",
    "sparse.window",
    "sparse.window.lookahead",
    "sparse.window.lookaside",
    "sparse.nm",
    "sparse.taps",
    "sparse.taps.lookahead",
    "sparse.taps.lookaside",
    "sparse.gate",
    "sparse.order",
    "sparse.free_rows",
    "sparse.formats",
    "sparse.sync",
    "sparse.side",
    "sparse.fanin",
    "sparse.lowering",
]
PATHS = [*KEY_PATHS, *SPARSE_KEYS, "array", "sram", "dram", "unknown", "array.rowz"]
GEMM = (Layer.linear("g", 24, 20, tokens=3),)


def _set(spec: dict, dotted: str, value) -> None:
    node = spec
    *parents, last = dotted.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


@st.composite
def arch_texts(draw) -> str:
    """A preset with a few keys set to hostile values, or a hostile YAML text."""
    if draw(st.integers(0, 4)) == 0:
        return draw(HOSTILE_YAML)
    spec = copy.deepcopy(PRESET)
    for _ in range(draw(st.integers(0, 3))):  # 0: the preset as it is
        _set(spec, draw(st.sampled_from(PATHS)), draw(st.one_of(plausible, plausible, values)))
    try:
        return yaml.safe_dump(spec, allow_unicode=draw(st.booleans()))
    except (ValueError, yaml.YAMLError):  # a value PyYAML cannot write: write a text instead
        return draw(HOSTILE_YAML)


def _run_small(arch) -> None:
    for memory in ("ideal", "modeled"):
        simulate(GEMM, 1, arch, arch.dataflow, "fwd", memory)


def _load_and_run(text: str, suffix: str, check=None) -> None:
    """Write ``text`` as an architecture file ``arch.SUFFIX``, read it (parser ``arch.SUFFIX``)
    and, when accepted, run a small GEMM on it (``arch.SUFFIX+run``) and ``check(path)``."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"arch.{suffix}"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        kind, arch = outcome(f"arch.{suffix}", load_arch, path)
        if kind == "accepted":
            outcome(f"arch.{suffix}+run", _run_small, arch)
            if check is not None:
                check(path)


@FUZZ
@given(text=arch_texts())
def test_architecture_yaml(text):
    _load_and_run(text, "yaml")


CFG_KEYS = [
    "ArrayHeight",
    "ArrayWidth",
    "IfmapSramSzkB",
    "FilterSramSzkB",
    "OfmapSramSzkB",
    "Dataflow",
    "Bandwidth",
    "MemoryBanks",
    "Nonsense",
]
CFG_BASE = {
    "ArrayHeight": "32",
    "ArrayWidth": "32",
    "IfmapSramSzkB": "64",
    "FilterSramSzkB": "64",
    "OfmapSramSzkB": "64",
    "Dataflow": "os",
}


@st.composite
def cfg_texts(draw) -> str:
    fields = dict(CFG_BASE)
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(CFG_KEYS))
        if draw(st.booleans()):
            fields.pop(key, None)
        else:
            fields[key] = str(draw(st.one_of(plausible, scalars, st.sampled_from(ODD_TEXT))))
    section = draw(
        st.sampled_from(
            ["architecture_presets", "architecture_presets", "Architecture_Presets", "general", ""]
        )
    )
    body = "\n".join(f"{k} = {v}" for k, v in fields.items())
    extra = draw(
        st.sampled_from(
            [
                "",
                "[general]\nrun_name = x\n",
                "[general]\nrun_name =\n",
                "[architecture_presets]\nArrayHeight = 8\n",
                "%(x)s\n",
                "\x00",
                "[x\n",
            ]
        )
    )
    sparsity = ""
    if draw(st.integers(0, 3)) == 0:  # SCALE-Sim's [sparsity] section, with odd values
        keys = {"SparsitySupport": st.sampled_from(["true", "false", "True", "yes", "", "1"]),
                "SparseRep": st.sampled_from(["csr", "csc", "ellpack_block", "bitmap", "CSR", ""]),
                "OptimizedMapping": st.sampled_from(["false", "true", "maybe"]),
                "BlockSize": st.sampled_from(["4", "8", "x", "-1"]),
                "RandomNumberGeneratorSeed": st.sampled_from(["40", "-3", "4.5", "9" * 30, ""])}
        lines = [f"{k} : {draw(v)}" for k, v in keys.items() if draw(st.integers(0, 5))]
        if draw(st.booleans()):
            lines.append(f"{draw(st.sampled_from(list(keys)))} : {draw(st.sampled_from(ODD_TEXT))}")
        sparsity = "[sparsity]\n" + "\n".join(lines) + "\n"
    return f"[{section}]\n{body}\n{extra}{sparsity}"


@FUZZ
@given(text=cfg_texts())
def test_scalesim_cfg(text):
    # the [sparsity] section was checked with the rest: reading it cannot fail once accepted
    _load_and_run(text, "cfg", read_scalesim_sparsity)


@FUZZ
@given(
    key=st.sampled_from(PATHS),
    text=st.one_of(
        st.sampled_from(ODD_TEXT),
        st.text(max_size=30),
        st.builds(str, scalars),
        st.builds(str, plausible),
        st.builds(str, plausible),
    ),
)
def test_set_overrides(key, text):
    assume(text.strip())
    base = load_arch("scalesim-32")

    def apply():
        return base.with_overrides(parse_overrides([f"{key}={text}"]), source="--set")

    kind, arch = outcome("--set", apply)
    if kind == "accepted":
        outcome("--set+run", _run_small, arch)
