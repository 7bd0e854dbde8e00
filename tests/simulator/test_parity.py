"""Dense parity with SCALE-Sim: our `simulate(..., memory="ideal")` against scalesim itself.

(a) a differential test that runs scalesim (the test extra) on small layers and compares every
    layer's figures; (b) the golden table of whole networks (ResNet-18 and a set of GEMMs on
    32x32 and 128x128 arrays), generated once by tests/golden/make_scalesim_golden.py.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from simulator.arch import load_arch
from simulator.run import simulate
from traces.models import get_model
from traces.topology import read_topology, write_topology

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
sys.path.insert(0, str(GOLDEN))
import make_scalesim_golden as golden  # noqa: E402

EXACT = ["Total Cycles", "Total Cycles (incl. prefetch)", "Stall Cycles", "SRAM IFMAP Reads",
         "SRAM Filter Reads"]
CLOSE = ["Overall Util %", "Mapping Efficiency %", "Compute Util %"]

CONV = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
        "Num Filter, Strides,\nc1,12,12,3,3,3,8,1,\nc2,11,11,3,3,8,16,2,\nc3,9,9,1,1,16,12,1,\n"
        "c4,10,10,5,5,4,4,3,\n")
GEMM = "Layer, M, N, K,\ng1, 20, 12, 28,\ng2, 7, 33, 5,\ng3, 64, 16, 40,\n"


def _scalesim(tmp: Path, cfg: Path, topo: Path, gemm: bool,
              layout: Path | None = None) -> list[dict[str, str]]:
    """scalesim's per-layer report rows; ``layout``: the layout file it also reads (default
    the topology itself)."""
    from scalesim.scale_sim import scalesim

    sim = scalesim(save_disk_space=True, verbose=False, config=str(cfg), topology=str(topo),
                   layout=str(layout or topo), input_type_gemm=gemm)
    sim.run_scale(top_path=str(tmp))
    run = next(p for p in tmp.iterdir() if p.is_dir())
    rows: dict[str, dict[str, str]] = {}
    for name in ("COMPUTE_REPORT.csv", "DETAILED_ACCESS_REPORT.csv"):
        for r in golden._read(run / name):
            rows.setdefault(r["LayerID"], {}).update(r)
    return [rows[k] for k in sorted(rows, key=int)]


def _compare(ours, theirs, where: str) -> None:
    assert len(ours) == len(theirs), where
    for i, (o, t) in enumerate(zip(ours, theirs, strict=True)):
        for col in EXACT:
            assert int(o[col]) == int(float(t[col])), f"{where} layer {i} {col}"
        for col in CLOSE:
            assert float(o[col]) == pytest.approx(float(t[col]), rel=1e-9), \
                f"{where} layer {i} {col}"


@pytest.mark.parametrize("form", ["conv", "gemm"])
@pytest.mark.parametrize("rows, cols", [(8, 8), (16, 12)])
@pytest.mark.parametrize("df", ["os", "ws", "is"])
def test_differential_against_scalesim(tmp_path, form, rows, cols, df):
    pytest.importorskip("scalesim")
    topo = tmp_path / f"{form}.csv"
    topo.write_text(CONV if form == "conv" else GEMM)
    cfg = tmp_path / "run.cfg"
    text = golden.CFG.format(run="run", rows=rows, cols=cols, df=df)
    cfg.write_text(text.replace("64\n", "2\n") if rows == 16 else text)  # 2 KiB SRAMs too
    theirs = _scalesim(tmp_path / "out", cfg, topo, form == "gemm")
    arch = load_arch(cfg)  # our reader of SCALE-Sim's .cfg
    net = read_topology(topo)
    ours = simulate(net.layers, 1, arch, df, "fwd", "ideal").table.to_dict("records")
    _compare(ours, theirs, f"{form} {rows}x{cols} {df}")


def _golden_rows():
    path = GOLDEN / "scalesim_golden.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


GOLDEN_ROWS = _golden_rows()
RUNS = sorted({(r["network"], r["array"], r["dataflow"]) for r in GOLDEN_ROWS})


@pytest.mark.skipif(not GOLDEN_ROWS, reason="tests/golden/scalesim_golden.csv not generated")
@pytest.mark.parametrize("network, array, df", RUNS)
def test_golden_table(tmp_path, network, array, df):
    theirs = [r for r in GOLDEN_ROWS if (r["network"], r["array"], r["dataflow"])
              == (network, array, df)]
    size = int(array.split("x")[0])
    topo = tmp_path / "t.csv"
    if network == "resnet18":
        write_topology(topo, get_model("resnet18").layers, form="conv")
    else:
        topo.write_text("Layer, M, N, K,\n" + "".join(f"{n}, {m}, {nn}, {k},\n"
                                                       for n, m, nn, k in golden.GEMMS))
    arch = load_arch("scalesim-32").with_overrides({"array.rows": size, "array.cols": size})
    ours = simulate(read_topology(topo).layers, 1, arch, df, "fwd", "ideal").table
    assert list(ours["Layer"]) == [r["Layer"] for r in theirs]
    _compare(ours.to_dict("records"), theirs, f"{network} {array} {df}")
