"""Our DRAM reads of the forward GEMM's operands next to SCALE-Sim's (``docs/validation.md``,
"DRAM traffic: what is fetched").

Default: per ResNet-18 layer, SCALE-Sim's counts read from ``tests/golden/scalesim_golden.csv``
(its CALC runs: batch 1, 64 KiB SRAMs of 1-byte words, inputs pre-padded) and ours from the tile
schedule with the same half buffers (32 768 words). ``--tiny``: runs ``scalesim`` (the test
extra; a few CPU-minutes) on a 3×3 convolution over a 30×30×64 input with 32 and 64 filters,
32×32 array, 1 KiB SRAMs, in each dataflow, beside ours with 512-word half buffers. Prints
markdown tables:

    python scripts/dram_vs_scalesim.py [--array 32x32] [--dataflow os] [--tiny]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataflows.gemm import lower  # noqa: E402
from dataflows.systolic import map_dense  # noqa: E402
from dataflows.tiles import schedule  # noqa: E402
from traces.models import get_model  # noqa: E402


def _tiny() -> None:
    from scalesim.scale_sim import scalesim

    from tests.scalesim_cfg import CFG
    from traces.layers import Layer

    print("| filters | df | ours | SCALE-Sim | feature map | im2col matrix |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        topo = work / "tiny.csv"
        topo.write_text("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, "
                        "Channels, Num Filter, Strides,\nL32,30,30,3,3,64,32,1,\n"
                        "L64,30,30,3,3,64,64,1,\n")
        for df in ("os", "ws", "is"):
            cfg = work / f"{df}.cfg"
            cfg.write_text(CFG.format(run=f"tiny_{df}", rows=32, cols=32, ifmap=1, filt=1,
                                      ofmap=1, bw=10, df=df))
            sim = scalesim(save_disk_space=True, verbose=False, config=str(cfg),
                           topology=str(topo), layout=str(topo), input_type_gemm=False)
            sim.run_scale(top_path=str(work / df))
            run = next(p for p in (work / df).iterdir() if p.is_dir())
            with open(run / "DETAILED_ACCESS_REPORT.csv", newline="") as f:
                theirs = [{k.strip(): v for k, v in r.items()}
                          for r in csv.DictReader(f, skipinitialspace=True)]
            for n, t in zip((32, 64), theirs, strict=True):
                g = lower(Layer.conv(f"L{n}", 64, n, 3, 30), 1, "fwd")
                ours = schedule(g, map_dense(g, 32, 32, df), (512, 512, 512)).total("a_dram")
                print(f"| {n} | `{df}` | {ours} | {int(float(t['DRAM IFMAP Reads']))} "
                      f"| {g.stored('A')} | {g.M * g.K} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--array", default="32x32")
    ap.add_argument("--dataflow", default="os", choices=("os", "ws", "is"))
    ap.add_argument("--tiny", action="store_true", help="1 KiB buffers: runs scalesim")
    args = ap.parse_args()
    if args.tiny:
        _tiny()
        return
    size = int(args.array.split("x")[0])
    with open(ROOT / "tests" / "golden" / "scalesim_golden.csv", newline="") as f:
        theirs = {r["Layer"]: r for r in csv.DictReader(f)
                  if (r["network"], r["array"], r["dataflow"]) == ("resnet18", args.array,
                                                                    args.dataflow)}
    cap = 64 * 1024 // 2
    print("| layer | input feature map (words) | SCALE-Sim ifmap reads | ours | loop order "
          "| SCALE-Sim filter reads | ours |")
    print("|---|---|---|---|---|---|---|")
    for layer in get_model("resnet18").layers:
        if layer.name not in theirs:
            continue
        g = lower(layer, 1, "fwd")
        s = schedule(g, map_dense(g, size, size, args.dataflow), (cap, cap, cap))
        t = theirs[layer.name]
        fmap = layer.in_channels * layer.input_hw[0] * layer.input_hw[1]
        print(f"| {layer.name} | {fmap} | {t['DRAM IFMAP Reads']} | {s.total('a_dram')} "
              f"| {s.outer} outer | {t['DRAM Filter Reads']} | {s.total('b_dram')} |")


if __name__ == "__main__":
    main()
