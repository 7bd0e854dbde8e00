"""Generate the SCALE-Sim golden tables that the dense-parity tests compare against.

Runs ``scalesim`` 3.0.0 (the test extra; it needs numpy < 2.4) in its stall-free mode
(``InterfaceBandwidth: CALC``) on

* SCALE-Sim-style ResNet-18 at 224×224 (20 convs + fc, inputs pre-padded so the output sizes are
  PyTorch's; written from our own ``resnet18`` layer table by ``traces.topology.write_topology``),
* a set of GEMMs (``Layer, M, N, K``),

for the ``os``, ``ws`` and ``is`` dataflows on 32×32 and 128×128 arrays, and writes every column of
its ``COMPUTE_REPORT.csv``, ``BANDWIDTH_REPORT.csv`` and ``DETAILED_ACCESS_REPORT.csv`` to
``tests/golden/scalesim_golden.csv`` (one row per network × array × dataflow × layer).

SCALE-Sim emulates its memory cycle by cycle: ResNet-18 at 32×32 takes about 10 CPU-minutes per
dataflow and several GiB of RAM. Generate once and commit the CSV:

    python tests/golden/make_scalesim_golden.py [--workers 2] [--only gemms]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "scalesim_golden.csv"

GEMMS = [("G64x64x64", 64, 64, 64), ("G256x128x512", 256, 128, 512),
         ("G1000x512x64", 1000, 512, 64), ("G49x512x4608", 49, 512, 4608),
         ("G100x37x77", 100, 37, 77)]

sys.path.insert(0, str(HERE.parents[1]))
from tests.scalesim_cfg import CFG as _TEMPLATE  # noqa: E402

#: 64 KiB SRAMs and Bandwidth 10; run name, array and dataflow left to fill in
CFG = _TEMPLATE.replace("{ifmap}", "64").replace("{filt}", "64").replace("{ofmap}", "64").replace(
    "{bw}", "10")


def _topologies(work: Path) -> dict[str, tuple[Path, bool, list[str]]]:
    sys.path.insert(0, str(HERE.parents[1]))
    from traces.models import get_model
    from traces.topology import write_topology

    r18 = work / "resnet18.csv"
    layers = get_model("resnet18").layers
    write_topology(r18, layers, form="conv")
    gemm = work / "gemms.csv"
    gemm.write_text("Layer, M, N, K,\n" + "".join(f"{n}, {m}, {nn}, {k},\n"
                                                   for n, m, nn, k in GEMMS))
    return {"resnet18": (r18, False, [la.name for la in layers]),
            "gemms": (gemm, True, [g[0] for g in GEMMS])}


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    head = [h.strip() for h in rows[0] if h.strip()]
    return [dict(zip(head, [v.strip() for v in r], strict=False)) for r in rows[1:] if r]


def _run(job: tuple[str, str, bool, list[str], int, str, str]) -> list[dict[str, str]]:
    network, topo, is_gemm, names, size, df, work = job
    from scalesim.scale_sim import scalesim

    run = f"{network}_{size}_{df}"
    cfg = Path(work) / f"{run}.cfg"
    cfg.write_text(CFG.format(run=run, rows=size, cols=size, df=df))
    t0 = time.process_time()
    sim = scalesim(save_disk_space=True, verbose=False, config=str(cfg), topology=topo,
                   layout=topo, input_type_gemm=is_gemm)
    sim.run_scale(top_path=work)
    cpu = time.process_time() - t0
    rep = Path(work) / run
    merged: dict[str, dict[str, str]] = {}
    for name in ("COMPUTE_REPORT.csv", "BANDWIDTH_REPORT.csv", "DETAILED_ACCESS_REPORT.csv"):
        for row in _read(rep / name):
            merged.setdefault(row["LayerID"], {}).update(row)
    out = []
    for lid in sorted(merged, key=int):
        row = {"network": network, "array": f"{size}x{size}", "dataflow": df,
               "Layer": names[int(lid)], **merged[lid]}
        out.append(row)
    print(f"{run}: {len(out)} layers, {cpu:.0f} CPU-s", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", choices=("resnet18", "gemms"), default=None)
    ap.add_argument("-o", "--output", type=Path, default=OUT)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="scalesim-golden-"))
    topos = _topologies(work)
    jobs = []
    for network, (topo, is_gemm, names) in topos.items():
        if args.only and network != args.only:
            continue
        for size in (32, 128):
            for df in ("os", "ws", "is"):
                jobs.append((network, str(topo), is_gemm, names, size, df, str(work)))
    # longest first: ResNet-18 at 32x32
    jobs.sort(key=lambda j: (j[0] != "resnet18", j[4], {"is": 0, "ws": 1, "os": 2}[j[5]]))
    with Pool(args.workers) as pool:
        results = pool.map(_run, jobs, chunksize=1)
    rows = [r for res in results for r in res]
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    tmp = args.output.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, args.output)
    print(f"wrote {len(rows)} rows to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
