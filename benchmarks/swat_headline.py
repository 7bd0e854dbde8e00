"""Reproduce SWAT's simulated-accelerator headline (ResNet-50, 80 % and 90 % top-K sparsity).

SWAT (Raihan & Aamodt, NeurIPS 2020) reports forward / backward speed-ups of 3.3x / 3.4x at 80 %
and 5.6x / 6.3x at 90 % on a TensorDash-like sparse training accelerator simulated in DNNsim
(16x16 PEs x 16 lanes, one operand skipped per pass, off-chip memory not counted). This script
builds a ResNet-50 SWAT-U trace per sparsity, simulates one training step on the ``tensordash``
preset with ideal memory (what the paper counted) and with modeled memory (what it did not), also
with an unbounded scheduling window, and prints one table. Speed-ups are against the dense
baseline on the same architecture and dataflow. With ``--dnnsim PATH`` (DNNsim built beside the
project, ``scripts/dnnsim_run.py``) it adds the speed-ups DNNsim's own TensorDash model counts on
the same masks (base over compute cycles). ``docs/validation.md`` discusses the numbers.

Run:  python benchmarks/swat_headline.py [--batch 4] [--pattern random|clustered] [--dnnsim PATH]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from simulator.arch import load_arch
from simulator.results import summarize
from simulator.run import simulate_trace
from traces.synth import SynthConfig, synthesize

PAPER = {0.8: (3.3, 3.4), 0.9: (5.6, 6.3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--pattern", default="random")
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--dnnsim", help="DNNsim's binary, for its column on the same masks")
    args = ap.parse_args()
    td = load_arch("tensordash")
    variants = [
        ("tensordash, ideal memory", td, "ideal"),
        ("dnnsim-tensordash, ideal memory", load_arch("dnnsim-tensordash"), "ideal"),
        ("unbounded window, ideal memory",
         td.with_overrides({"sparse.taps": None, "sparse.order": None,
                            "sparse.free_rows": None}), "ideal"),
        ("tensordash, modeled memory", td, "modeled"),
        ("same, bitmap-compressed W and A in DRAM",
         td.with_overrides({"sparse.formats": {"filter": "bitmap", "ifmap": "bitmap"}}),
         "modeled"),
    ]
    print(f"{args.model} SWAT-U, batch {args.batch}, pattern {args.pattern}, one training step, "
          "os dataflow; speed-up over dense on the same architecture")
    print(f"{'sparsity':<9}{'configuration':<38}{'fwd':>7}{'bwd':>7}{'step':>7}"
          f"{'paper fwd/bwd':>15}{'s':>6}")
    with tempfile.TemporaryDirectory(prefix="swat-headline-") as tmp:
        for sp in (0.8, 0.9):
            trace = Path(tmp) / f"swat{int(sp * 100)}"
            synthesize(SynthConfig(model=args.model, method="swat", sparsity=sp,
                                   batch=args.batch, pattern=args.pattern), trace)
            paper = "{:.1f} / {:.1f}".format(*PAPER[sp])
            for name, arch, memory in variants:
                t0 = time.perf_counter()
                s = summarize(simulate_trace(str(trace), arch, "os", "train", memory))["speedup"]
                print(f"{sp:<9.0%}{name:<38}{s['per_phase']['fwd']:>7.2f}{s['backward']:>7.2f}"
                      f"{s['training_step']:>7.2f}{paper:>15}{time.perf_counter() - t0:>6.1f}",
                      flush=True)
            if args.dnnsim:
                t0 = time.perf_counter()
                fwd, bwd = dnnsim_speedups(trace, args.dnnsim, Path(tmp) / f"dn{sp}")
                print(f"{sp:<9.0%}{'DNNsim (its own model), same masks':<38}{fwd:>7.2f}"
                      f"{bwd:>7.2f}{'-':>7}{paper:>15}{time.perf_counter() - t0:>6.1f}",
                      flush=True)
    return 0


def dnnsim_speedups(trace: Path, dnnsim: str, work: Path) -> tuple[float, float]:
    """DNNsim's forward and backward speed-ups (base over compute cycles, all layers)."""
    csv = work / "dnnsim.csv"
    script = Path(__file__).resolve().parent.parent / "scripts" / "dnnsim_run.py"
    subprocess.run([sys.executable, str(script), str(trace), "--dnnsim", dnnsim, "--work",
                    str(work), "-o", str(csv)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    t = pd.read_csv(csv)
    f = t[t["phase"] == "fwd"]
    b = t[t["phase"] != "fwd"]
    return (f["base_compute_cycles"].sum() / f["compute_cycles"].sum(),
            b["base_compute_cycles"].sum() / b["compute_cycles"].sum())


if __name__ == "__main__":
    raise SystemExit(main())
