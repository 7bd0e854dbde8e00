"""Benchmark: our DRAM timing model (``simulator/dram.py``) against DRAMsim3.

The same request streams (streaming, strided, random, mixed read/write; one burst per request)
go to our ``Dram`` in-process (``Dram.stream``: each request offered to its channel's
controller queues at its time) and to DRAMsim3 (University of Maryland, built beside the project,
never part of it) through a small driver, ``dram_vs_outside_dramsim3.cc``, that reports each
read's completion cycle. Two presets: ``tensordash`` (four DDR4-3200 channels) and ``stc-2to4``
(an HBM2-like part, two pseudo-channels). Printed per stream and preset:

* achieved bandwidth (GB/s): every request offered at time 0, bytes over the time the last read
  is back (and, in DRAMsim3, the last write is taken by its write buffer: writes are posted);
* mean read latency (ns) at a light load (requests offered evenly at ``--load`` of the preset's
  peak), from the time a request is offered to the end of its data. The preset's fixed
  controller + interconnect latency (``latency_cycles``) is left out of both: our model adds it
  as a constant and DRAMsim3 has no such term.

How DRAMsim3 is configured from a preset (``dramsim3_config``): the DRAMsim3 file of the same
part (DDR4_8Gb_x8_3200.ini, HBM2_8Gb_x128.ini) with channels, banks (4 groups), page size, bus
width and burst length set to give the preset's burst bytes and rows; tCK set so that one
channel's peak is the preset's (bandwidth / channels); CL, tRCD, tRP and, where the preset sets
them, tCCD_L, tRRD_S/L, tFAW, tRAS, tRFC, tREFI, tWR and our tWTR and tRTW (DRAMsim3's tWTR_S
and tRTRS) set to the preset's in ns, rounded to DRAMsim3 cycles; DRAMsim3's other timings
(tWTR_L, tRTP, CWL, ...) kept in ns from its file; address mapping the preset's
``dram.mapping`` in DRAMsim3's notation (``DRAMSIM3_MAPPING``); DRAMsim3's own queues (32
requests per channel, 8 per bank) and write buffer (32 writes, drained when full or, past 8,
when its command queues are empty): the presets set the same. Both models run twice: with the
preset's refresh and with refresh off (tREFI beyond the run in DRAMsim3, ``tREFI = 0`` in
ours). To show what a difference comes from: ``--set KEY=CLOCKS`` overrides a DRAMsim3 timing,
``--system KEY=VALUE`` a DRAMsim3 ``[system]`` key (``cmd_queue_size``, ``trans_queue_size``),
``--ours KEY=VALUE`` a field of our ``DramTiming``, ``--mapping`` the mapping of both, and
``--all-reads`` issues every request as a read to both.

Build DRAMsim3 (outside this repository) and run:
    git clone https://github.com/umd-memsys/DRAMsim3 && cd DRAMsim3
    mkdir build && cd build && cmake .. && make            # libdramsim3.so lands in DRAMsim3/
    python benchmarks/dram_vs_outside.py --dramsim3 PATH/TO/DRAMsim3
The script compiles the driver with g++ against that checkout (into ``--work``, a temporary
folder by default) or uses ``--driver`` if given.
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulator.arch import load_arch
from simulator.dram import Dram, DramTiming

HERE = Path(__file__).resolve().parent
DRIVER_SRC = HERE / "dram_vs_outside_dramsim3.cc"

#: preset -> (the DRAMsim3 configuration file of that part, protocol, device width in bits)
PARTS = {
    "tensordash": ("DDR4_8Gb_x8_3200.ini", "DDR4", 8),
    "stc-2to4": ("HBM2_8Gb_x128.ini", "HBM2", 64),
}
STREAMS = ("streaming", "strided", "random", "mixed r/w", "mixed r/w fine")
#: DRAMsim3 timings that are set from the preset (the rest keep their ns)
SET_TIMINGS = {"CL", "tRCD", "tRCDRD", "tRCDWR", "tRP", "tCK"}
#: our dram.* timing -> DRAMsim3's, set from the preset when the preset sets it (not 0)
PRESET_TIMINGS = {"tCCD_L": "tCCD_L", "tRRD_S": "tRRD_S", "tRRD_L": "tRRD_L", "tFAW": "tFAW",
                  "tRAS": "tRAS", "tREFI": "tREFI", "tRFC": "tRFC", "tWTR": "tWTR_S",
                  "tRTW": "tRTRS", "tWR": "tWR"}
#: our dram.mapping -> DRAMsim3's address_mapping (most significant field first)
DRAMSIM3_MAPPING = {"channel_column_bank": "rorababgcoch",
                    "channel_group_column_bank": "rorabacobgch"}


def fail(msg: str) -> None:
    print(f"dram_vs_outside: {msg}", file=sys.stderr)
    raise SystemExit(2)


@dataclass(frozen=True)
class Setting:
    preset: str
    timing: DramTiming  # our model, latency_cycles = 0
    clock_ghz: float
    tck_ns: float  # DRAMsim3 clock period
    ini: str  # DRAMsim3 configuration text
    notes: str


def dramsim3_config(preset: str, dramsim3: Path, no_refresh: bool,
                    overrides: dict[str, int] | None = None, mapping: str | None = None,
                    mine: dict[str, float] | None = None, system: dict[str, int] | None = None
                    ) -> Setting:
    """DRAMsim3's configuration for ``preset``'s DRAM and our timing of it (see the module
    docstring); ``no_refresh`` turns refresh off in both, ``mapping`` (one of ours) replaces the
    preset's address mapping in both; ``overrides`` sets DRAMsim3 timings (clocks), ``system``
    its ``[system]`` keys, ``mine`` our ``DramTiming`` fields (after the preset's)."""
    arch = load_arch(preset)
    d = arch.dram
    mapping = mapping or d.mapping
    part, protocol, dev_bits = PARTS[preset]
    src = dramsim3 / "configs" / part
    if not src.is_file():
        fail(f"{src}: not found (expected a DRAMsim3 checkout with its configs/)")
    cfg = configparser.ConfigParser()
    cfg.optionxform = str  # keep the keys' case
    cfg.read(src)
    old_tck = float(cfg["timing"]["tCK"])
    if d.banks_per_channel % 4:
        fail(f"{preset}: dram.banks_per_channel {d.banks_per_channel} is not 4 groups x n")
    burst_bits = d.burst_bytes * 8
    bus_bits = 64
    bl = burst_bits // bus_bits
    per_channel_gbps = d.bandwidth_gbps / d.channels
    tck = d.burst_bytes / ((bl / 2) * per_channel_gbps)  # double data rate: bl/2 clocks
    devices = bus_bits // dev_bits
    page_per_device = d.row_buffer_bytes // devices
    columns = page_per_device * 8 // dev_bits
    if protocol == "HBM2":
        columns //= 2  # DRAMsim3 doubles an HBM column (2n prefetch)
    rows = int(cfg["dram_structure"]["rows"])
    megs = page_per_device * (rows // 1024) // 1024 * d.banks_per_channel * devices
    s = cfg["dram_structure"]
    s["protocol"] = protocol
    s["bankgroups"] = "4"
    s["banks_per_group"] = str(d.banks_per_channel // 4)
    s["columns"] = str(columns)
    s["device_width"] = str(dev_bits)
    s["BL"] = str(bl)
    s.pop("num_dies", None)
    t = cfg["timing"]
    for key, value in list(t.items()):
        if key not in SET_TIMINGS and key != "AL":
            t[key] = str(max(1, round(int(value) * old_tck / tck)))
    ns = 1.0 / arch.clock_ghz  # one accelerator cycle in ns
    t["tCK"] = f"{tck:.6f}"
    t["CL"] = str(round(d.tCL * ns / tck))
    t["tRP"] = str(round(d.tRP * ns / tck))
    for key in ("tRCD", "tRCDRD", "tRCDWR"):
        if key in t:
            t[key] = str(round(d.tRCD * ns / tck))
    for ours, theirs in PRESET_TIMINGS.items():  # the preset's, where it sets them
        value = getattr(d, ours)
        if value:
            t[theirs] = str(max(1, round(value * ns / tck)))
    if d.bank_groups != 4:
        fail(f"{preset}: dram.bank_groups {d.bank_groups}: the DRAMsim3 parts here have 4")
    if no_refresh:
        t["tREFI"] = str(2**30)
        if "tREFIb" in t:
            t["tREFIb"] = str(2**30)
    if mapping not in DRAMSIM3_MAPPING:
        fail(f"--mapping {mapping!r}: expected one of {', '.join(DRAMSIM3_MAPPING)}")
    for key, value in (overrides or {}).items():
        if key not in t:
            fail(f"--set {key}: not a timing of {part}; expected one of {list(t)}")
        t[key] = str(value)
    y = cfg["system"]
    y["channels"] = str(d.channels)
    y["channel_size"] = str(megs)
    y["bus_width"] = str(bus_bits)
    y["address_mapping"] = DRAMSIM3_MAPPING[mapping]
    y["row_buf_policy"] = "OPEN_PAGE"
    for key, value in (system or {}).items():
        if key not in y:
            fail(f"--system {key}: not a [system] key of {part}; expected one of {list(y)}")
        y[key] = str(value)
    cfg["other"]["output_level"] = "0"
    cfg["other"]["epoch_period"] = str(2**31)
    lines = []
    for section in cfg.sections():
        lines.append(f"[{section}]")
        lines += [f"{k} = {v}" for k, v in cfg[section].items()]
        lines.append("")
    timing = dataclasses.replace(DramTiming.from_spec(d, arch.clock_ghz), latency_cycles=0,
                                 mapping=mapping)
    if no_refresh:
        timing = dataclasses.replace(timing, tREFI=0.0, tRFC=0.0)
    fields = {f.name for f in dataclasses.fields(DramTiming)}
    for key in mine or {}:
        if key not in fields:
            fail(f"--ours {key}: not a field of our DRAM timing; expected one of {sorted(fields)}")
    try:
        timing = dataclasses.replace(timing, **(mine or {}))
    except ValueError as e:
        fail(f"--ours: {e}")
    notes = (f"{protocol} {part}: tCK {tck:.3f} ns, BL{bl} x {bus_bits} bit, "
             f"CL-tRCD-tRP {t['CL']}-{t.get('tRCD', t.get('tRCDRD'))}-{t['tRP']} clocks, "
             f"{d.channels} ch x {d.banks_per_channel} banks, {d.row_buffer_bytes} B rows")
    return Setting(preset, timing, arch.clock_ghz, tck, "\n".join(lines), notes)


def make_stream(kind: str, timing: DramTiming, n: int, seed: int = 1
                ) -> tuple[np.ndarray, np.ndarray]:
    """``(addresses, is_write)`` of ``n`` one-burst requests."""
    bb = timing.burst_bytes
    i = np.arange(n, dtype=np.int64)
    writes = np.zeros(n, dtype=bool)
    if kind == "streaming":
        addr = i * bb
    elif kind == "strided":
        # a column walk of a row-major matrix whose rows are a burst more than one DRAM row
        # of every channel (and bank group, when groups are interleaved) apart: every request
        # opens a new row, in the next bank and the next channel
        groups = timing.bank_groups if timing.mapping == "channel_group_column_bank" else 1
        addr = i * (timing.row_buffer_bytes * timing.channels * groups + bb)
    elif kind == "random":
        rng = np.random.default_rng(seed)
        addr = rng.choice(1 << 22, size=n, replace=False).astype(np.int64) * bb  # 128-256 MiB
    elif kind in ("mixed r/w", "mixed r/w fine"):
        # a tile's traffic: two regions read (A, B), one written (C), 64 MiB apart (the same
        # bank, other rows); "mixed r/w" in runs of 32 bursts (A, B, C, A, ...), as the
        # engine's DMA moves whole runs, "fine" one burst of each in turn
        region = 1 << 26
        run = 32 if kind == "mixed r/w" else 1
        which = (i // run) % 3
        k = (i // (3 * run)) * run + i % run
        addr = which * region + k * bb
        writes = which == 2
    else:
        raise ValueError(kind)
    return addr, writes


def run_ours(s: Setting, addr: np.ndarray, writes: np.ndarray, offered_ns: np.ndarray
             ) -> tuple[float, float]:
    """(achieved GB/s over the whole stream, mean read latency ns) of our model: the requests
    go to ``Dram.stream`` (each channel's queue of the preset's ``dram.queue_depth``)."""
    dram = Dram(s.timing)
    done = dram.stream(offered_ns * s.clock_ghz, addr, writes) / s.clock_ghz
    lat = (done - offered_ns)[~writes]
    return len(addr) * s.timing.burst_bytes / done.max(), float(lat.mean())


def run_dramsim3(s: Setting, driver: Path, work: Path, addr: np.ndarray, writes: np.ndarray,
                 offered_ns: np.ndarray) -> tuple[float, float]:
    """The same with DRAMsim3 (offer times rounded to its clock; ours uses the same times)."""
    ini = work / f"{s.preset}.ini"
    ini.write_text(s.ini)
    trace = work / "trace.txt"
    cyc = np.rint(offered_ns / s.tck_ns).astype(np.int64)
    with trace.open("w") as f:
        for c, a, w in zip(cyc.tolist(), addr.tolist(), writes.tolist(), strict=True):
            f.write(f"{c} {a:x} {'W' if w else 'R'}\n")
    out = work / "out"
    out.mkdir(exist_ok=True)
    p = subprocess.run([str(driver), str(ini), str(trace), str(out)], capture_output=True,
                       text=True)
    if p.returncode:
        fail(f"{driver} failed on {s.preset}:\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    done = np.zeros(len(addr))
    end = None
    for line in p.stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in ("R", "W"):
            done[int(parts[1])] = int(parts[2])
        elif parts and parts[0] == "END":
            end = int(parts[1])
    if end is None:
        fail(f"{driver}: no END line in its output")
    lat = (done * s.tck_ns - cyc * s.tck_ns)[~writes]
    return len(addr) * s.timing.burst_bytes / (end * s.tck_ns), float(lat.mean())


def controller_pipeline(s: Setting, driver: Path, work: Path) -> float:
    """ns DRAMsim3 adds to one read on an idle channel beyond tRCD + CL + the burst."""
    addr = np.array([0], dtype=np.int64)
    offered = np.array([100 * s.tck_ns])
    bw, lat = run_dramsim3(s, driver, work, addr, np.zeros(1, dtype=bool), offered)
    ns = 1.0 / s.clock_ghz
    return lat - (s.timing.tRCD + s.timing.tCL) * ns - s.timing.burst_cycles * ns


def build_driver(dramsim3: Path, work: Path) -> Path:
    lib = dramsim3 / "libdramsim3.so"
    if not lib.is_file():
        fail(f"{lib}: not found. Build DRAMsim3 first: cd {dramsim3} && mkdir -p build && "
             "cd build && cmake .. && make (see this script's docstring)")
    gxx = shutil.which("g++")
    if gxx is None:
        fail("g++ not found: needed to compile the DRAMsim3 driver (or pass --driver)")
    exe = work / "dramsim3_stream"
    cmd = [gxx, "-O2", "-std=c++11", f"-I{dramsim3 / 'src'}", f"-I{dramsim3 / 'ext/headers'}",
           f"-I{dramsim3 / 'ext/fmt/include'}", "-DFMT_HEADER_ONLY=1", str(DRIVER_SRC),
           f"-L{dramsim3}", f"-Wl,-rpath,{dramsim3}", "-ldramsim3", "-o", str(exe)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        fail(f"compiling {DRIVER_SRC.name} failed:\n{p.stderr[-3000:]}")
    return exe


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dramsim3", type=Path, required=True,
                    help="a DRAMsim3 checkout, built (libdramsim3.so at its root)")
    ap.add_argument("--driver", type=Path, help="an already compiled driver (default: compile)")
    ap.add_argument("--work", type=Path, help="folder for the configs, traces and the driver")
    ap.add_argument("--requests", type=int, default=20000, help="requests per stream")
    ap.add_argument("--load", type=float, default=0.1,
                    help="offered load of the latency runs, fraction of the peak")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=CLOCKS",
                    help="override one DRAMsim3 timing (e.g. tCCD_L=4), to test a difference")
    ap.add_argument("--presets", default=",".join(PARTS), help="comma-separated presets")
    ap.add_argument("--mapping", choices=tuple(DRAMSIM3_MAPPING),
                    help="the address mapping of both models (default: the preset's dram.mapping)")
    ap.add_argument("--ours", action="append", default=[], metavar="KEY=VALUE",
                    help="override one field of our DRAM timing (e.g. tWR=0, bank_queue_depth=1)")
    ap.add_argument("--system", action="append", default=[], metavar="KEY=VALUE",
                    help="override one DRAMsim3 [system] key (e.g. cmd_queue_size=1)")
    ap.add_argument("--all-reads", action="store_true",
                    help="the streams' writes issued as reads, to both models")
    ap.add_argument("--streams", default=",".join(STREAMS),
                    help="comma-separated streams (default: all)")
    args = ap.parse_args(argv)
    if not args.dramsim3.is_dir():
        fail(f"--dramsim3 {args.dramsim3}: not a folder. Clone and build DRAMsim3 beside the "
             "project (see this script's docstring)")
    if args.requests < 100:
        fail(f"--requests: expected >= 100, got {args.requests}")
    if not 0 < args.load <= 1:
        fail(f"--load: expected a fraction in (0, 1], got {args.load}")
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if not value.isdigit():
            fail(f"--set {item!r}: expected KEY=CLOCKS, e.g. tCCD_L=4")
        overrides[key] = int(value)
    ours, system = {}, {}
    for item in args.ours:
        key, _, value = item.partition("=")
        try:
            ours[key] = float(value) if key.startswith("t") else int(value)
        except ValueError:
            fail(f"--ours {item!r}: expected KEY=NUMBER, e.g. tWR=0")
    for item in args.system:
        key, _, value = item.partition("=")
        if not value.isdigit():
            fail(f"--system {item!r}: expected KEY=INTEGER, e.g. cmd_queue_size=1")
        system[key] = int(value)
    streams = [k for k in args.streams.split(",") if k]
    for k in streams:
        if k not in STREAMS:
            fail(f"--streams: {k!r} is not a stream; expected some of {list(STREAMS)}")
    presets = [p for p in args.presets.split(",") if p]
    for p in presets:
        if p not in PARTS:
            fail(f"--presets: {p!r} has no DRAMsim3 part here; expected some of {list(PARTS)}")
    # both DRAMsim3 configurations of every preset, before any output (they check the input)
    settings = {p: (dramsim3_config(p, args.dramsim3, True, overrides, args.mapping, ours, system),
                    dramsim3_config(p, args.dramsim3, False, overrides, args.mapping, ours,
                                    system))
                for p in presets}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.driver is not None:
            if not args.driver.is_file():
                fail(f"--driver {args.driver}: not found")
            driver = args.driver
        else:
            driver = build_driver(args.dramsim3.resolve(), work)
        print(f"{args.requests} one-burst requests per stream; bandwidth: all offered at 0; "
              f"latency: offered evenly at {args.load:.0%} of the peak, DRAM only "
              f"(latency_cycles left out); DRAMsim3 timings set: {overrides or 'none'}, "
              f"[system]: {system or 'as the preset'}; ours: {ours or 'the preset'}"
              f"{'; every request a read' if args.all_reads else ''}")
        rows = []
        for preset in presets:
            s, sr = settings[preset]
            pipe = controller_pipeline(s, driver, work)
            print(f"  {preset}: {s.notes}; DRAMsim3's controller adds {pipe:.2f} ns to an "
                  f"isolated read (ratio*: DRAMsim3's latency less that)")
            peak = s.timing.bytes_per_cycle * s.clock_ghz  # GB/s
            for kind in streams:
                addr, writes = make_stream(kind, s.timing, args.requests)
                if args.all_reads:
                    writes = np.zeros_like(writes)
                zero = np.zeros(len(addr))
                gap = s.timing.burst_bytes / (peak * args.load)
                spaced = np.rint(np.arange(len(addr)) * gap / s.tck_ns) * s.tck_ns
                bw_o, _ = run_ours(s, addr, writes, zero)
                bw_or, _ = run_ours(sr, addr, writes, zero)
                bw_d, _ = run_dramsim3(s, driver, work, addr, writes, zero)
                bw_r, _ = run_dramsim3(sr, driver, work, addr, writes, zero)
                _, lat_o = run_ours(s, addr, writes, spaced)
                _, lat_or = run_ours(sr, addr, writes, spaced)
                _, lat_d = run_dramsim3(s, driver, work, addr, writes, spaced)
                _, lat_r = run_dramsim3(sr, driver, work, addr, writes, spaced)
                rows.append((preset, kind, bw_or, bw_r, bw_o, bw_d, lat_or, lat_r, lat_r - pipe,
                             lat_o, lat_d, lat_d - pipe))
    print()
    print("GB/s and ns, ours / DRAMsim3; 'no ref': both with refresh off; ratio*: DRAMsim3's "
          "latency less its controller pipeline")
    print("| preset | stream | BW ours | BW DRAMsim3 | ratio | BW no ref: ours | DRAMsim3 | "
          "ratio | latency ours | latency DRAMsim3 | ratio | ratio* | latency no ref: ours | "
          "DRAMsim3 | ratio* |")
    print("|---|---|" + "---:|" * 13)
    for (preset, kind, bw_or, bw_r, bw_o, bw_d, lat_or, lat_r, lat_rp, lat_o, lat_d,
         lat_dp) in rows:
        print(f"| {preset} | {kind} | {bw_or:.1f} | {bw_r:.1f} | {bw_or / bw_r:.2f} | "
              f"{bw_o:.1f} | {bw_d:.1f} | {bw_o / bw_d:.2f} | {lat_or:.1f} | {lat_r:.1f} | "
              f"{lat_or / lat_r:.2f} | {lat_or / lat_rp:.2f} | {lat_o:.1f} | {lat_d:.1f} | "
              f"{lat_o / lat_dp:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
