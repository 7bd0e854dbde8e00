"""Generated command lines (``synth``, ``simulate``, ``info``): exit 0 with the output written,
or exit 2 with one line on stderr and no output left; never a traceback or a hang."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from cli.main import main
from tests.fuzz.contract import FUZZ, HUGE_INTS, ODD_TEXT, TALLY, no_hang

TOPOLOGY = "Layer, M, N, K,\ng1, 24, 20, 28,\ng2, 16, 24, 20,\n"


def odd(*valid: str):
    """Mostly one of ``valid``, sometimes a hostile text."""
    bad = st.one_of(
        st.sampled_from(ODD_TEXT + [str(x) for x in HUGE_INTS]), st.text(min_size=1, max_size=10)
    )
    return st.integers(0, 15).flatmap(lambda n: st.sampled_from(valid) if n else bad)


def run_cli(parser: str, argv: list[str], out: Path) -> None:
    err = io.StringIO()
    try:
        with no_hang(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as exit_:
                code = exit_.code
    except BaseException:
        TALLY[parser]["traceback"] += 1
        raise
    text = err.getvalue()
    if code == 0:
        TALLY[parser]["accepted"] += 1
        assert out.exists() or argv[0] == "info", f"exit 0 but no {out}"
        return
    TALLY[parser]["refused"] += 1
    assert code == 2, (code, text)
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], text
    assert not out.exists(), f"refused ({lines[0]}) but {out} was left"
    assert not list(out.parent.glob(f".{out.name}.*")), "a temporary output was left"


@FUZZ
@given(
    model=odd("lenet5", "lenet5", "net.csv"),
    sparsity=odd("0.5", "0", "1", "0.9"),
    batch=odd("1", "2", "3"),
    steps=odd("1", "2"),
    seed=odd("0", "7"),
    pattern=odd("random", "2:4", "clustered", "block:2x2", "channel"),
    method=odd("swat", "static", "rigl", "srigl", "dense"),
    dtype=odd("float32", "float16", "bfloat16"),
    relu=odd("0", "0.5"),
    layer_sparsity=st.one_of(st.none(), odd("0.5,0.5,0.5,0.5,0.5", "0.1")),
)
def test_synth_command_line(
    model, sparsity, batch, steps, seed, pattern, method, dtype, relu, layer_sparsity
):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "net.csv").write_text(TOPOLOGY)
        out = Path(d) / "out"
        argv = [
            "synth",
            "--model",
            model if model != "net.csv" else str(Path(d) / model),
            "--sparsity",
            sparsity,
            "--batch",
            batch,
            "--steps",
            steps,
            "--seed",
            seed,
            "--pattern",
            pattern,
            "--method",
            method,
            "--dtype",
            dtype,
            "--relu-sparsity",
            relu,
            "-q",
            "-o",
            str(out),
        ]
        if layer_sparsity is not None:
            argv += ["--layer-sparsity", layer_sparsity]
        run_cli("cli synth", argv, out)


@FUZZ
@given(
    arch=odd("scalesim-32", "tensordash", "scalesim-32"),
    dataflow=odd("os", "ws", "is"),
    memory=odd("ideal", "modeled"),
    phases=odd("fwd", "train"),
    sets=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "array.rows",
                    "array.cols",
                    "array.lanes",
                    "sram.ifmap.kib",
                    "dram.bandwidth_gbps",
                    "clock_ghz",
                    "sparse.nm",
                    "sparse.window",
                    "energy.mac_pj",
                    "dram.channels",
                    "bogus",
                ]
            ),
            odd("8", "16", "64", "2:4", "1.5", "{lookahead: 2, lookaside: 1}"),
        ),
        max_size=2,
    ),
)
def test_simulate_command_line(arch, dataflow, memory, phases, sets):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "net.csv").write_text(TOPOLOGY)
        out = Path(d) / "res"
        argv = [
            "simulate",
            str(Path(d) / "net.csv"),
            "--arch",
            arch,
            "--dataflow",
            dataflow,
            "--memory",
            memory,
            "--phases",
            phases,
            "-o",
            str(out),
        ]
        for key, value in sets:
            argv += ["--set", f"{key}={value}"]
        run_cli("cli simulate", argv, out)


@FUZZ
@given(target=odd("lenet5", "resnet18", "net.csv", "trace"))
def test_info_command_line(target):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "net.csv").write_text(TOPOLOGY)
        if target in ("net.csv",):
            target = str(Path(d) / target)
        run_cli("cli info", ["info", target], Path(d) / "none")
