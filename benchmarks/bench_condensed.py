"""Benchmark: SRigL's condensed layer against dense and CSR on CPU (reference §3.4).

Layer: Linear 3072 -> 768 (ViT-B/16 encoder_layer_11.mlp.3), 90 % sparse with constant fan-in
k = 307 (SRigL-like, no ablated rows), fp32, batch 1 and 256, torch.set_num_threads(2) (this
machine has 2 cores; SRigL's harness used 4 threads and a different, unrecorded CPU). Each time is
torch.utils.benchmark.Timer.blocked_autorange(min_run_time=1) median, in microseconds.

Run:  python benchmarks/bench_condensed.py [--no-compile] [--threads N]
The condensed layer is also timed under torch.compile (inductor, C++ codegen via the local
compiler; no network) unless --no-compile; the table says which rows are compiled.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn
from torch.utils import benchmark

from trainers.condensed import CondensedLinear
from trainers.dst import constant_fan_in_mask

IN_F, OUT_F, SPARSITY = 3072, 768, 0.90
PUBLISHED = {  # SRigL CPU, 90 %, 4 threads, inductor (reference §3.4), microseconds
    1: {"dense": 148.2, "csr": 106.7, "condensed": 43.6},
    256: {"dense": 2024.0, "csr": 4675.7, "condensed": 4175.2},
}


def _time(fn, x: torch.Tensor) -> float:
    """Median microseconds of fn(x)."""
    timer = benchmark.Timer(
        stmt="fn(x)", globals={"fn": fn, "x": x}, num_threads=torch.get_num_threads()
    )
    return timer.blocked_autorange(min_run_time=1).median * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    dense = nn.Linear(IN_F, OUT_F)
    mask = constant_fan_in_mask((OUT_F, IN_F), 1 - SPARSITY, torch.Generator().manual_seed(0))
    with torch.no_grad():
        dense.weight.mul_(mask)
    w_csr = dense.weight.detach().to_sparse_csr()
    bias_col = dense.bias.detach()[:, None]
    condensed = CondensedLinear.from_linear(dense, mask)

    def csr(x: torch.Tensor) -> torch.Tensor:
        # (out, in) CSR times x^T (in, B): the layout torch's sparse CPU kernels accept
        return torch.addmm(bias_col, w_csr, x.t()).t()

    fns = {"dense": dense, "csr": csr, "condensed": condensed}
    compile_note = "eager only (--no-compile)"
    if not args.no_compile:
        try:
            compiled = torch.compile(condensed)
            t0 = time.perf_counter()
            with torch.no_grad():
                compiled(torch.randn(1, IN_F))
                compiled(torch.randn(256, IN_F))
            compile_note = f"inductor, first calls took {time.perf_counter() - t0:.1f} s"
            fns["condensed+compile"] = compiled
        except Exception as exc:  # noqa: BLE001 - no compiler or backend: report and go eager
            compile_note = f"torch.compile failed ({type(exc).__name__}); eager only"

    # SRigL's published condensed row is the inductor-compiled layer: compare like with like
    published_as = {
        "dense": "dense",
        "csr": "csr",
        "condensed+compile" if "condensed+compile" in fns else "condensed": "condensed",
    }
    print(
        f"Linear {IN_F}->{OUT_F}, {SPARSITY:.0%} sparse, constant fan-in "
        f"k={condensed.Idx.shape[1]}, fp32, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; torch.compile: {compile_note}"
    )
    hdr = f"{'batch':>5} {'layer':<18} {'us':>9} {'x dense':>8} {'x CSR':>7} | "
    hdr += "SRigL: us x dense x CSR"
    print(hdr)
    print("-" * len(hdr))
    with torch.no_grad():
        for batch in (1, 256):
            x = torch.randn(batch, IN_F)
            ref = dense(x)
            times = {}
            for name, fn in fns.items():
                out = fn(x)
                assert torch.allclose(out, ref, atol=1e-4), name
                times[name] = _time(fn, x)
            pub = PUBLISHED[batch]
            for name, t in times.items():
                p = pub[published_as[name]] if name in published_as else None
                ref_txt = f"{p:8.1f} {pub['dense'] / p:6.2f} {pub['csr'] / p:6.2f}" if p else ""
                print(
                    f"{batch:>5} {name:<18} {t:9.1f} {times['dense'] / t:8.2f} "
                    f"{times['csr'] / t:7.2f} | {ref_txt}"
                )
    # other jobs on the 2 cores make multi-threaded ops wait for a descheduled thread
    print(f"load average after the run (1, 5, 15 min): {os.getloadavg()}")
    print(
        "SRigL's headline (batch 1, CPU, 90 %): 3.4x vs dense, 2.5x vs CSR; its published "
        "condensed row is the inductor-compiled layer."
    )


if __name__ == "__main__":
    main()
