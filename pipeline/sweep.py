"""Run a sweep: every point of a sweep file, resumable, on a local process pool or a Dask cluster.

``run_sweep("sweep.yaml", "out/")`` lays out the output directory as::

    out/traces/<trace key>/    synthetic traces, one per distinct synth recipe, shared by points
    out/points/<point key>/    one results directory per point (the reports of ``sparsesim
                               simulate`` plus point.json, the point's full configuration)
    out/sweep.csv              every point's COMPUTE_REPORT rows, with the point key and axes
    out/sweep.json             the sweep: name, axes, points (key and axis values), columns

Every directory is built under a temporary name beside its final one and renamed into place when
complete, so a point directory exists only when the point finished. Re-running skips finished
points; a run killed at any moment (SIGKILL included) loses nothing that had finished. A re-run
checks what it reuses: a finished point whose results do not read back (``simulator.results``) is
removed and run again, and a synthetic trace that does not read back (``traces.format``) is
built again; a recorded trace (``trace:``) is the user's, so a bad one stops the sweep before
anything runs, naming the trace file and the problem.
``sweep.csv`` and ``sweep.json`` are written last, once every point has finished; their rows follow
the sweep file's expansion order, so the same sweep gives the same bytes whatever the number of
workers or the order they finish in.

Workers (local or Dask) each run whole points and write them straight into the output directory,
so Dask workers must see it at the same path (a shared file system).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import InputError, TraceError
from common.fsutil import pid_alive
from pipeline.sweepfile import (
    SYNTH_KEYS,
    Point,
    Sweep,
    SweepError,
    format_value,
    load_sweep,
    version,
)

Progress = Callable[[int, int, str], None]
POINT_FILE = "point.json"
_STAGE = ".stage-"  # prefix of a directory being built


class SweepFailed(RuntimeError):
    """Some points raised; the finished ones are kept and a re-run retries the rest."""


@dataclass
class SweepRun:
    """What ``run_sweep`` did: points run and skipped (finished before), where the table is."""

    sweep: Sweep
    out: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: points that had finished but whose results were damaged: removed and run again (in ``ran``)
    rerun: list[str] = field(default_factory=list)
    #: synthetic traces (keys) that were there but damaged: built again
    rebuilt: list[str] = field(default_factory=list)
    seconds: float = 0.0
    where: str = ""  # "1 local worker", "2 local workers", "Dask cluster at ..."

    @property
    def table(self) -> Path:
        return self.out / "sweep.csv"


# ------------------------------------------------------------------------------------------------
# the work of one point (runs in a worker)
# ------------------------------------------------------------------------------------------------
def _stage_name(key: str) -> str:
    return f"{_STAGE}{key}-{socket.gethostname()}-{os.getpid()}"


def _publish(stage: Path, final: Path) -> bool:
    """Rename a complete directory into place; if another worker got there first, drop ours."""
    try:
        os.rename(stage, final)
        return True
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(stage, ignore_errors=True)
        return False


def build_trace(task: Mapping[str, Any]) -> str:
    """Synthesize a point's trace into the cache unless it is there; returns its path.
    (``run_sweep`` has checked a trace that was there before, and removed it if damaged.)"""
    from traces.synth import SynthConfig, synthesize

    final = Path(task["out"]) / "traces" / task["trace_key"]
    if not final.is_dir():
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in task["synth"].items()}
        stage = final.with_name(_stage_name(task["trace_key"]))
        shutil.rmtree(stage, ignore_errors=True)
        synthesize(SynthConfig(**fields), stage, command=["sweep", task["trace_key"]])
        _publish(stage, final)
    return str(final)


def run_point(task: Mapping[str, Any]) -> dict[str, Any]:
    """Simulate one point and write its results directory; returns its key and seconds."""
    from simulator.arch import Architecture
    from simulator.results import write_results
    from simulator.run import simulate_trace

    t0 = time.perf_counter()
    final = Path(task["out"]) / "points" / task["key"]
    if final.is_dir():
        return {"key": task["key"], "seconds": 0.0}
    trace = task["trace"] or build_trace(task)
    arch = Architecture.from_dict(task["arch"], source=task["arch_source"])
    results = simulate_trace(trace, arch, task["dataflow"], task["phases"], task["memory"],
                             baseline_cache=task.get("baseline_cache"))
    stage = final.with_name(_stage_name(task["key"]))
    shutil.rmtree(stage, ignore_errors=True)
    write_results(results, stage)
    (stage / POINT_FILE).write_text(json.dumps(
        {"key": task["key"], "config": task["config"]}, indent=1, sort_keys=True) + "\n")
    _publish(stage, final)
    return {"key": task["key"], "seconds": time.perf_counter() - t0}


def _task(point: Point, out: Path, baseline_cache: str | None = None) -> dict[str, Any]:
    """A point as plain data (what travels to a worker)."""
    return {"out": str(out), "key": point.key, "arch": point.arch,
            "arch_source": point.arch_source, "dataflow": point.dataflow,
            "memory": point.memory, "phases": point.phases, "trace": point.trace,
            "synth": point.synth, "trace_key": point.trace_key, "config": point.config,
            "baseline_cache": baseline_cache}


# ------------------------------------------------------------------------------------------------
# executors: the same submit / wait on a local pool, in-process, or on Dask
# ------------------------------------------------------------------------------------------------
def _watch_parent(parent: int) -> None:
    """Pool worker initializer: exit when the sweep process is gone (e.g. killed with SIGKILL),
    instead of lingering as an orphan."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class _Inline:
    """One worker: run in this process, one task per ``wait`` in submission order (no start-up
    cost; a debugger sees the points)."""

    where = "1 local worker"

    def __init__(self) -> None:
        self.queue: list[tuple[futures.Future, Callable, tuple]] = []

    def submit(self, fn: Callable, *args: Any) -> futures.Future:
        fut: futures.Future = futures.Future()
        self.queue.append((fut, fn, args))
        return fut

    def wait(self, pending: set) -> set:
        fut, fn, args = self.queue.pop(0)
        try:
            fut.set_result(fn(*args))
        except Exception as err:  # reported per point by the caller
            fut.set_exception(err)
        return {fut}

    def close(self, cancel: bool) -> None:
        self.queue.clear()


class _Pool:
    """A local process pool (spawned processes: numba and threads do not survive fork)."""

    def __init__(self, workers: int) -> None:
        import multiprocessing

        self.where = f"{workers} local workers"
        self.pool = futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_watch_parent, initargs=(os.getpid(),))

    def submit(self, fn: Callable, *args: Any) -> futures.Future:
        return self.pool.submit(fn, *args)

    def wait(self, pending: set) -> set:
        return futures.wait(pending, return_when=futures.FIRST_COMPLETED).done

    def close(self, cancel: bool) -> None:
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


class _Dask:
    """A Dask cluster: a scheduler address, or a ``distributed.Client`` a notebook holds."""

    def __init__(self, scheduler: Any) -> None:
        try:
            import distributed
        except ImportError:
            raise InputError("--scheduler", None, "a Dask cluster needs the cluster extra: "
                                                  "pip install 'dask[distributed]' (from a "
                                                  "checkout: pip install -e '.[cluster]')"
                             ) from None
        self.distributed = distributed
        self.own = not isinstance(scheduler, distributed.Client)
        if self.own:
            try:
                self.client = distributed.Client(scheduler, timeout="20s")
            except (OSError, TimeoutError, ValueError) as err:
                raise InputError("--scheduler", None, f"cannot reach a Dask scheduler at "
                                                      f"{scheduler!r}: {err}") from None
        else:
            self.client = scheduler
        self.where = f"Dask cluster at {self.client.scheduler.address}"

    def submit(self, fn: Callable, *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False)

    def wait(self, pending: set) -> set:
        return set(self.distributed.wait(list(pending), return_when="FIRST_COMPLETED").done)

    def close(self, cancel: bool) -> None:
        if self.own:
            self.client.close()


def _executor(workers: int | None, scheduler: Any) -> Any:
    if scheduler is not None:
        if workers is not None:
            raise InputError("--workers", None, "sets the local pool; a Dask cluster has its "
                                                "own workers (leave out --workers or --scheduler)")
        return _Dask(scheduler)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError("--workers", None, f"expected a positive integer, got {workers!r}")
    return _Inline() if workers == 1 else _Pool(workers)


# ------------------------------------------------------------------------------------------------
# the sweep
# ------------------------------------------------------------------------------------------------
def check_sweep_dir(out: Path, flag: str = "-o") -> None:
    """An output directory is new, empty, or one that a sweep wrote (it has ``points/``)."""
    if out.exists() and not out.is_dir():
        raise InputError(flag, None, f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "points").is_dir():
        raise InputError(flag, None, f"{out} exists, is not empty and holds no sweep (no "
                                     "points/); choose another directory")
    ancestor = out.resolve()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
        raise InputError(flag, None, f"directory {ancestor} is not writable")


def _remove_stale(folder: Path) -> None:
    """Remove directories that a killed run of this host left half-built."""
    host = socket.gethostname()
    for p in folder.iterdir():
        name = p.name.lstrip(".")
        if not (p.name.startswith(".") and ("stage-" in name) and f"-{host}-" in name):
            continue
        pid = name.rsplit("-", 1)[-1].split(".")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# checking what a re-run reuses
# ------------------------------------------------------------------------------------------------
def _identity(path: Path) -> tuple[int, int, int] | None:
    """What tells one directory from another that replaced it at the same name."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns)


def _point_problem(folder: Path, key: str) -> str | None:
    """Why a finished point's directory cannot be used (None: it can): its reports must read
    back as ``sparsesim report`` reads them, and point.json must name the point."""
    from simulator.results import load_run

    try:
        load_run(folder)
    except InputError as err:
        return str(err)
    try:
        meta = json.loads((folder / POINT_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{folder / POINT_FILE}: cannot read: {err}"
    if not isinstance(meta, dict) or meta.get("key") != key:
        return f"{folder / POINT_FILE}: key: expected {key!r}"
    return None


def _trace_problem(folder: str | os.PathLike) -> TraceError | None:
    """The first problem of a trace directory (manifest and every step file), or None."""
    from traces.format import Trace

    try:
        for _ in Trace(folder):
            pass
    except TraceError as err:
        return err
    return None


def _discard(final: Path, seen: tuple[int, int, int] | None) -> None:
    """Remove a damaged directory safely: rename it out of the way (atomically, to a stage name
    that a later run's clean-up also removes if this one is killed), then delete it. If what was
    renamed is not the directory found damaged (another run of the sweep replaced it meanwhile),
    it is put back."""
    grave = final.with_name(_stage_name(final.name) + ".damaged")
    shutil.rmtree(grave, ignore_errors=True)
    try:
        os.rename(final, grave)
    except FileNotFoundError:
        return  # another run removed it already
    if _identity(grave) != seen:
        _publish(grave, final)
        return
    shutil.rmtree(grave, ignore_errors=True)


def _check_recorded_traces(sw: Sweep, todo: list[Point]) -> None:
    """A recorded trace is the user's input: read every one the points to run use, manifest and
    step files, before anything is written; the first problem is a ``SweepError``."""
    for path in dict.fromkeys(p.trace for p in todo if p.trace is not None):
        err = _trace_problem(path)
        if err is not None:
            raise SweepError(sw.source, "trace", str(err)) from None


def run_sweep(sweep: str | os.PathLike | Mapping[str, Any] | Sweep, out: str | os.PathLike,
              workers: int | None = None, scheduler: Any = None,
              progress: Progress | None = None,
              baseline_cache: str | os.PathLike | None = None,
              allow_huge: bool = False) -> SweepRun:
    """Run every point of ``sweep`` (a file, a mapping or a loaded ``Sweep``) not yet finished in
    ``out``, then write ``out/sweep.csv`` and ``out/sweep.json``.

    ``workers``: local processes (default: one per CPU; 1 runs in this process). ``scheduler``:
    a Dask scheduler address (``tcp://host:8786``) or a ``distributed.Client``; the workers must
    see ``out`` at the same path. ``progress(done, total, label)`` is called as points finish
    (finished points found on disk count as done at once). A bad sweep, or a recorded trace that
    does not read back (manifest or a step file), raises ``InputError`` before anything is
    written; points that raise make ``SweepFailed`` after the others ran. Finished points whose
    results do not read back are removed and run again (``SweepRun.rerun``), and so are damaged
    synthetic traces built again (``SweepRun.rebuilt``). ``baseline_cache``: a directory the
    points share their dense baselines through (``simulator.baseline``; None: each point
    simulates its own). A sweep estimated over an hour of CPU or the memory cap
    (``simulator.budget``) is refused before anything is written, unless ``allow_huge``.
    """
    t0 = time.perf_counter()
    sw = sweep if isinstance(sweep, Sweep) else load_sweep(sweep)
    from simulator.budget import MAX_CPU_SECONDS, check

    # before anything is written; confirmed (allow_huge), only the memory is checked
    check(estimate_sweep(sw, None if allow_huge else MAX_CPU_SECONDS,
                         shared=baseline_cache is not None), allow_huge,
          source=sw.source)
    if Path(out).is_symlink() and not Path(out).exists():
        raise InputError("-o", None, f"{out} is a symbolic link to {os.readlink(out)}, which "
                                     "does not exist; name a directory, not a dangling link")
    out = Path(out).resolve()
    check_sweep_dir(out)
    # what a run before finished: a point whose results do not read back is run again
    finished: set[str] = set()
    damaged: dict[str, tuple[int, int, int] | None] = {}
    for p in sw.points:
        folder = out / "points" / p.key
        if folder.is_dir():
            seen = _identity(folder)
            if _point_problem(folder, p.key) is None:
                finished.add(p.key)
            else:
                damaged[p.key] = seen
    todo = [p for p in sw.points if p.key not in finished]
    _check_recorded_traces(sw, todo)  # bad input: stop before anything is written
    if (scheduler is None and isinstance(workers, int) and not isinstance(workers, bool)
            and workers > len(sw.points) > 0):
        workers = len(sw.points)  # no more processes than points
    executor = _executor(workers, scheduler)
    run = SweepRun(sw, out, where=executor.where)
    total = len(sw.points)

    def tick(label: str) -> None:
        if progress:
            progress(len(run.ran) + len(run.skipped), total, label)

    try:
        for sub in ("points", "traces"):
            try:
                (out / sub).mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise InputError("-o", None, f"cannot create {out / sub}: "
                                             f"{err.strerror or err}") from None
            _remove_stale(out / sub)
        for key, seen in damaged.items():
            _discard(out / "points" / key, seen)
        run.rerun = list(damaged)
        for key in dict.fromkeys(p.trace_key for p in todo if p.trace_key is not None):
            folder = out / "traces" / key
            if folder.is_dir():  # built by a run before: it must read back, or it is built again
                seen = _identity(folder)
                if _trace_problem(folder) is not None:
                    _discard(folder, seen)
                    run.rebuilt.append(key)
        run.skipped = [p.key for p in sw.points if p.key in finished]
        tick(f"{len(damaged)} damaged, to run again" if damaged
             else "finished before" if run.skipped else "starting")
        failures = _run(executor, todo, out, run, tick,
                        None if baseline_cache is None else str(baseline_cache))
    except BaseException:
        executor.close(cancel=True)
        raise
    executor.close(cancel=False)
    if failures:
        first_point, err = failures[0]
        then = "run the sweep again to retry the others"
        if first_point.trace is not None and isinstance(err, TraceError):
            then = (f"the recorded trace {first_point.trace} is not valid: fix or replace it "
                    "(running the sweep again as it is will not help)")
        raise SweepFailed(
            f"{len(failures)} of {len(sw.points)} points failed; first, point "
            f"{first_point.index + 1} ({first_point.label()}): {type(err).__name__}: {err}. "
            f"The {len(run.ran) + len(run.skipped)} finished points are kept in {out}/points; "
            + then)
    write_table(sw, out, checked=finished)
    run.seconds = time.perf_counter() - t0
    return run


def estimate_sweep(sw: Sweep, stop_above: float | None = None, shared: bool = False):
    """The whole sweep's cost (``simulator.budget``): every point's simulations (its steps and
    its dense baseline: with ``shared``, the points share their baselines through a cache, so
    each distinct baseline counts once) and every distinct synthetic trace's building; memory
    is the largest point's (each worker is a process). Points of the same network,
    architecture, dataflow and phases are estimated once; with ``stop_above`` (CPU seconds)
    the sum stops once past it (``Estimate.partial``)."""
    from simulator.arch import Architecture
    from simulator.baseline import dense_arch_spec
    from simulator.budget import combine, estimate_network, estimate_synth
    from traces.format import Trace
    from traces.synth import _load_layers

    networks: dict[Any, tuple] = {}  # trace path or synth (model, batch, steps) -> network
    per_key: dict[tuple, Any] = {}
    built: dict[str, Any] = {}  # synthetic trace key -> its building's estimate
    bases: dict[tuple, Any] = {}  # shared: a distinct baseline -> its estimate
    points = []
    cpu = 0.0
    for p in sw.points:
        if p.trace is not None:
            nkey: Any = p.trace
            if nkey not in networks:
                trace = Trace(p.trace)
                networks[nkey] = (trace.manifest.layers, trace.manifest.batch_size,
                                  len(trace.steps))
        else:
            syn = p.synth or {}
            nkey = (str(syn.get("model")), syn.get("batch", 32), syn.get("steps", 1))
            if nkey not in networks:
                networks[nkey] = (_load_layers(nkey[0])[1], nkey[1], nkey[2])
            if p.trace_key not in built:
                built[p.trace_key] = estimate_synth(*networks[nkey])
                cpu += built[p.trace_key].cpu_s
        key = (nkey, json.dumps(p.arch, sort_keys=True, default=str), p.dataflow, p.phases)
        if key not in per_key:
            layers, batch, steps = networks[key[0]]
            arch = Architecture.from_dict(p.arch, source=p.arch_source)
            per_key[key] = estimate_network(layers, batch, arch, p.dataflow, p.phases,
                                            steps=steps, masked=True, baseline=not shared,
                                            what="sweep")
            bkey = (nkey, json.dumps(dense_arch_spec(arch), sort_keys=True, default=str),
                    p.dataflow, p.phases, p.memory)
            if shared and bkey not in bases:  # one dense simulation, in the first point's run
                bases[bkey] = estimate_network(layers, batch, arch, p.dataflow, p.phases,
                                               what="sweep", startup=False)
                cpu += bases[bkey].cpu_s
        points.append(per_key[key])
        cpu += per_key[key].cpu_s
        if stop_above is not None and cpu > stop_above:
            return combine(points + list(bases.values()) + list(built.values()), "sweep",
                           partial=True)
    return combine(points + list(bases.values()) + list(built.values()), "sweep")


def _run(executor: Any, todo: list[Point], out: Path, run: SweepRun,
         tick: Callable[[str], None], cache: str | None) -> list[tuple[Point, BaseException]]:
    """Build the missing traces (one task per distinct recipe), then each point once its trace
    is there (``cache``: the dense baselines' cache directory, or None). Returns the points
    that raised."""
    waiting: dict[str, list[Point]] = {}
    pending: dict[Any, tuple[str, Any]] = {}
    failures: list[tuple[Point, BaseException]] = []

    def start(p: Point) -> None:
        pending[executor.submit(run_point, _task(p, out, cache))] = ("point", p)

    for p in todo:
        if p.trace_key is None or (out / "traces" / p.trace_key).is_dir():
            continue
        if p.trace_key not in waiting:
            waiting[p.trace_key] = []
            pending[executor.submit(build_trace, _task(p, out))] = ("trace", p.trace_key)
        waiting[p.trace_key].append(p)
    for p in todo:
        if p.trace_key not in waiting:
            start(p)
    while pending:
        for fut in executor.wait(set(pending)):
            kind, what = pending.pop(fut)
            try:
                err = fut.exception()
            except Exception as lost:  # cancelled: e.g. a Dask worker died
                err = lost
            if kind == "trace":
                for p in waiting.pop(what):
                    if err is None:
                        start(p)
                    else:
                        failures.append((p, err))
            elif err is None:
                run.ran.append(what.key)
                tick(what.label())
            else:
                failures.append((what, err))
    failures.sort(key=lambda f: f[0].index)
    return failures


# ------------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------------
def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8", newline="")
        os.replace(tmp, path)
    except OSError as err:  # a full disk: name the file (the one before stays)
        tmp.unlink(missing_ok=True)
        raise InputError(str(path), None, f"cannot write: {err.strerror or err}") from None


def write_table(sw: Sweep, out: Path, checked: set[str] | frozenset[str] = frozenset()) -> Path:
    """``sweep.csv``: one row per point x COMPUTE_REPORT row (layer x phase x step), columns
    ``Point``, the axes, then the report's; and ``sweep.json``. Cells are copied as the point's
    report wrote them. Every point's results are checked first (but those in ``checked``); a
    damaged one raises ``SweepFailed`` and nothing is written."""
    header: list[str] = []
    blocks = []
    for p in sw.points:
        if p.key not in checked:
            problem = _point_problem(out / "points" / p.key, p.key)
            if problem is not None:
                raise SweepFailed(
                    f"point {p.index + 1} ({p.label()}): its results are damaged: {problem}. "
                    "No table was written; run the sweep again to run the point again")
        with open(out / "points" / p.key / "COMPUTE_REPORT.csv", newline="",
                  encoding="utf-8") as f:
            rows = list(csv.reader(f))
        cols = rows[0]
        header += [c for c in cols if c not in header]
        blocks.append((p, cols, rows[1:]))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["Point", *sw.axes, *header])
    n = 0
    for p, cols, rows in blocks:
        lead = [p.key, *(format_value(p.axes[a]) for a in sw.axes)]
        for row in rows:
            cells = dict(zip(cols, row, strict=True))
            w.writerow(lead + [cells.get(c, "") for c in header])
            n += 1
    _write_atomic(out / "sweep.csv", buf.getvalue())
    kinds = {"arch": "architecture", "trace": "trace", "dataflow": "run", "memory": "run",
             "phases": "run"}
    axes = {}
    for a in sw.axes:
        values = list({format_value(p.axes[a]): p.axes[a] for p in sw.points}.values())
        kind = kinds.get(a, "synth" if a in SYNTH_KEYS else "architecture key")
        axes[a] = {"kind": kind, "values": values}
    meta = {"name": sw.name, "description": sw.description, "sparsesim": version(),
            "axes": axes, "points": [{"point": p.key, **{a: p.axes[a] for a in sw.axes}}
                                     for p in sw.points],
            "columns": ["Point", *sw.axes, *header], "rows": n}
    _write_atomic(out / "sweep.json", json.dumps(meta, indent=1) + "\n")
    return out / "sweep.csv"
