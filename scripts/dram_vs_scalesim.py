"""Our DRAM reads of the forward GEMM's operands next to SCALE-Sim's, per ResNet-18 layer.

Reads SCALE-Sim's counts from ``tests/golden/scalesim_golden.csv`` (its CALC runs: batch 1,
64 KiB SRAMs of 1-byte words, inputs pre-padded) and computes ours from the tile schedule with
the same half buffers (32 768 words). Prints a markdown table for ``docs/validation.md``:

    python scripts/dram_vs_scalesim.py [--array 32x32] [--dataflow os]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataflows.gemm import lower  # noqa: E402
from dataflows.systolic import map_dense  # noqa: E402
from dataflows.tiles import schedule  # noqa: E402
from traces.models import get_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--array", default="32x32")
    ap.add_argument("--dataflow", default="os", choices=("os", "ws", "is"))
    args = ap.parse_args()
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
