"""SCALE-Sim's sparse files and depthwise rows, read as they are, against scalesim itself.

A ``.cfg`` with ``[sparsity] SparsitySupport: true`` and a topology with a ``Sparsity`` column
(2:4, 1:4, 3:8, and 4:4 = dense) run through ``topology_run_inputs`` (what ``sparsesim
simulate`` does with them) must give scalesim's ``Total Cycles`` and ``Total Cycles (incl.
prefetch)`` on every layer-run, for os / ws / is on two arrays (8x8 with 64 KiB SRAMs, 16x12
with 2 KiB, where the operands no longer fit in half a buffer). Depthwise (``DP``) rows under
``--memory ideal`` are split per channel as scalesim splits them and match row by row; the
grouped GEMM of our own model is checked against the sum of scalesim's rows.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from simulator.arch import load_arch
from simulator.run import simulate
from simulator.scalesim_compat import topology_run_inputs
from traces.topology import per_channel, read_topology

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
sys.path.insert(0, str(GOLDEN))
import make_scalesim_golden as golden  # noqa: E402

from tests.simulator.test_parity import _scalesim  # noqa: E402

HEAD = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
        "Num Filter, Strides, Sparsity,\n")
# every ratio on convs of strides 1-3 and kernels 1-5 (K not a multiple of M included), a row
# with no Sparsity field (SCALE-Sim: 1:1), and depthwise rows, one of them sparse
CONV = HEAD + ("c1,12,12,3,3,3,8,1,2:4,\nc2,11,11,3,3,8,16,2,1:4,\nc3,9,9,1,1,16,12,1,3:8,\n"
               "c4,10,10,5,5,4,4,3,2:4,\nc5,8,8,3,3,6,10,1,4:4,\nc6,9,9,3,3,5,7,2,\n"
               "c7DP,10,10,3,3,3,1,1,2:4,\nc8DP,9,9,3,3,2,2,2,3:8,\n")
GEMM = ("Layer, M, N, K, Sparsity,\ng1, 20, 12, 28, 2:4,\ng2, 7, 33, 5, 3:8,\n"
        "g3, 64, 16, 40, 1:4,\ng4, 9, 20, 30, 1:4,\n")
DEPTHWISE = HEAD.replace(" Sparsity,", "") + ("d1DP,12,12,3,3,4,1,1,\nd2DP,11,11,3,3,3,2,2,\n"
                                              "p1,10,10,1,1,6,8,1,\nd3DP,9,9,5,5,2,1,1,\n")


def _layout(topo: str) -> str:
    """scalesim reads the topology again as a layout file, whose reader refuses a Sparsity
    field: the same rows without it (the layout is not used: no custom layout)."""
    lines = topo.splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        fields = line.rstrip(",").split(",")
        if ":" in fields[-1]:
            fields = fields[:-1]
        out.append(",".join(fields) + ",")
    return "\n".join(out) + "\n"


def _cfg(tmp: Path, rows: int, cols: int, df: str, sparse: bool) -> Path:
    text = golden.CFG.format(run="run", rows=rows, cols=cols, df=df)
    if rows == 16:
        text = text.replace("64\n", "2\n")  # 2 KiB SRAMs
    if sparse:
        text = text.replace("SparsitySupport : false", "SparsitySupport : true")
    cfg = tmp / "run.cfg"
    cfg.write_text(text)
    return cfg


def _theirs(tmp: Path, topo_text: str, cfg: Path, gemm: bool) -> list[dict[str, str]]:
    topo, layout = tmp / "topo.csv", tmp / "layout.csv"
    topo.write_text(topo_text)
    layout.write_text(_layout(topo_text))
    return _scalesim(tmp / "out", cfg, topo, gemm, layout)


def _ours(topo: Path, cfg: Path, df: str, memory: str = "ideal"):
    arch = load_arch(cfg)
    layers, masks, feats, notes = topology_run_inputs(read_topology(topo), arch, cfg, memory)
    res = simulate(layers, 1, arch, df, "fwd", memory, masks=masks or None,
                   layer_features=feats or None)
    return layers, res.table.to_dict("records"), notes


def _nm(topo: Path) -> list[tuple[int, int] | None]:
    """Per layer of SCALE-Sim's split, the ratio of a sparse row (N < M), else None."""
    out = []
    for nm in per_channel(read_topology(topo)).nm_sparsity:
        n, m = map(int, nm.split(":")) if nm else (1, 1)
        out.append((n, m) if n < m else None)
    return out


@pytest.mark.parametrize("form", ["conv", "gemm"])
@pytest.mark.parametrize("rows, cols", [(8, 8), (16, 12)])
@pytest.mark.parametrize("df", ["os", "ws", "is"])
def test_sparse_parity_against_scalesim(tmp_path, form, rows, cols, df):
    pytest.importorskip("scalesim")
    text = CONV if form == "conv" else GEMM
    cfg = _cfg(tmp_path, rows, cols, df, sparse=True)
    theirs = _theirs(tmp_path, text, cfg, form == "gemm")
    layers, ours, _ = _ours(tmp_path / "topo.csv", cfg, df)
    where = f"{form} {rows}x{cols} {df}"
    assert len(ours) == len(theirs), where
    nms = _nm(tmp_path / "topo.csv")
    for i, (o, t, nm) in enumerate(zip(ours, theirs, nms, strict=True)):
        assert o["Mode"] == ("nm" if nm else "dense"), f"{where} {layers[i].name}"
        for col in ("Total Cycles", "Total Cycles (incl. prefetch)", "Stall Cycles",
                    "SRAM Filter Reads"):
            assert int(o[col]) == int(t[col]), f"{where} {layers[i].name} {col}"
        # SRAM IFMAP reads: equal, but SCALE-Sim's ws counts every one M/N times (a float)
        factor = nm[1] / nm[0] if nm and df == "ws" else 1.0
        assert o["SRAM IFMAP Reads"] * factor == pytest.approx(float(t["SRAM IFMAP Reads"]),
                                                               rel=1e-12), \
            f"{where} {layers[i].name} SRAM IFMAP Reads"
        # util counts the dense MACs over the sparse run's cycles, in both
        for col in ("Overall Util %", "Mapping Efficiency %", "Compute Util %"):
            assert o[col] == pytest.approx(float(t[col]), rel=1e-9), \
                f"{where} {layers[i].name} {col}"


@pytest.mark.parametrize("rows, cols", [(8, 8), (16, 12)])
@pytest.mark.parametrize("df", ["os", "ws", "is"])
def test_depthwise_rows_against_scalesim(tmp_path, rows, cols, df):
    pytest.importorskip("scalesim")
    cfg = _cfg(tmp_path, rows, cols, df, sparse=False)
    theirs = _theirs(tmp_path, DEPTHWISE, cfg, False)
    topo = tmp_path / "topo.csv"
    layers, ours, notes = _ours(topo, cfg, df)
    where = f"{rows}x{cols} {df}"
    # --memory ideal: SCALE-Sim's layers, one per channel of a DP row
    assert [la.name for la in layers] == (
        [f"d1DPChannel_{c}" for c in range(4)] + [f"d2DPChannel_{c}" for c in range(3)]
        + ["p1", "d3DPChannel_0", "d3DPChannel_1"])
    assert any("depthwise" in n for n in notes)
    assert len(ours) == len(theirs), where
    for i, (o, t) in enumerate(zip(ours, theirs, strict=True)):
        for col in ("Total Cycles", "Total Cycles (incl. prefetch)", "SRAM IFMAP Reads",
                    "SRAM Filter Reads"):
            assert int(o[col]) == int(t[col]), f"{where} {layers[i].name} {col}"
        for col in ("Overall Util %", "Mapping Efficiency %", "Compute Util %"):
            assert o[col] == pytest.approx(float(t[col]), rel=1e-9), f"{where} {col}"
    # our own model keeps one grouped GEMM per DP row: SCALE-Sim's per-channel Total Cycles
    # (each a last-cycle index) summed, plus groups - 1
    grouped = read_topology(topo)
    table = simulate(grouped.layers, 1, load_arch(cfg), df, "fwd", "ideal").table
    spans = {"d1DP": range(0, 4), "d2DP": range(4, 7), "p1": range(7, 8), "d3DP": range(8, 10)}
    for name, span in spans.items():
        row = table[table["Layer"] == name].iloc[0]
        assert row["Groups"] == (len(span) if "DP" in name else 1)
        assert row["Total Cycles"] == sum(int(theirs[i]["Total Cycles"]) for i in span) \
            + len(span) - 1, f"{where} {name}"


def test_modeled_memory_keeps_the_grouped_gemm(tmp_path):
    topo = tmp_path / "topo.csv"
    topo.write_text(DEPTHWISE)
    cfg = _cfg(tmp_path, 8, 8, "os", sparse=False)
    arch = load_arch(cfg)
    layers, masks, feats, notes = topology_run_inputs(read_topology(topo), arch, cfg, "modeled")
    assert [la.name for la in layers] == ["d1DP", "d2DP", "p1", "d3DP"]
    assert [la.groups for la in layers] == [4, 3, 1, 2]
    assert (masks, feats, notes) == ({}, {}, [])


def test_sparsity_column_without_support_runs_dense_with_a_note(tmp_path):
    topo = tmp_path / "topo.csv"
    topo.write_text(GEMM)
    for arch_arg in (_cfg(tmp_path, 8, 8, "os", sparse=False), "scalesim-32"):
        arch = load_arch(arch_arg)
        layers, masks, feats, notes = topology_run_inputs(read_topology(topo), arch, arch_arg,
                                                          "ideal")
        assert (masks, feats) == ({}, {})
        assert len(notes) == 1 and "Sparsity column is not applied" in notes[0]
        table = simulate(layers, 1, arch, "os", "fwd", "ideal").table
        assert set(table["Mode"]) == {"dense"}


def test_simulate_command_reads_them_as_they_are(tmp_path):
    """``sparsesim simulate TOPOLOGY --arch FILE.cfg``: the Sparsity column applied, depthwise
    rows per channel under ideal memory, each said in a note; bad values refused in one line."""
    import subprocess

    import pandas as pd

    def run(*args):
        return subprocess.run([sys.executable, "-m", "cli.main", "simulate", *map(str, args)],
                              capture_output=True, text=True, timeout=300)

    topo = tmp_path / "net.csv"
    topo.write_text(HEAD + "c1,12,12,3,3,3,8,1,2:4,\nc2DP,11,11,3,3,2,1,2,1:4,\n")
    cfg = _cfg(tmp_path, 8, 8, "ws", sparse=True)
    r = run(topo, "--arch", cfg, "--memory", "ideal", "-o", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert "note: 1 depthwise (DP) row(s) run as SCALE-Sim runs them" in r.stdout
    comp = pd.read_csv(tmp_path / "out" / "COMPUTE_REPORT.csv")
    assert list(comp["Layer"]) == ["c1", "c2DPChannel_0", "c2DPChannel_1"]
    assert list(comp["K"]) == [27, 9, 9] and list(comp["M"]) == [100, 25, 25]  # the dense GEMMs
    sparse = pd.read_csv(tmp_path / "out" / "SPARSE_REPORT.csv")
    assert set(sparse["Mode"]) == {"nm"}

    bad_cfg = tmp_path / "bad.cfg"
    bad_cfg.write_text(cfg.read_text().replace("ellpack_block", "bitmap"))
    bad_topo = tmp_path / "bad.csv"
    bad_topo.write_text(HEAD + "c1,12,12,3,3,3,8,1,²:4,\n")
    for args, message in (
            ((topo, "--arch", bad_cfg), f"{bad_cfg}: [sparsity] SparseRep: expected one of csr, "
                                        "csc, ellpack_block, got 'bitmap'"),
            ((bad_topo, "--arch", cfg), f"{bad_topo}: line 2, column 9 (Sparsity): expected N:M")):
        r = run(*args, "-o", tmp_path / "never")
        assert r.returncode != 0 and not (tmp_path / "never").exists()
        assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
