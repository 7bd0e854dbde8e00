"""Running sweeps: the local pool and a Dask cluster give the same table; a sweep killed with
SIGKILL resumes without losing or repeating finished points; failed points are retried."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline import sweep as sweep_mod
from pipeline.sweep import SweepFailed, run_sweep
from pipeline.sweepfile import load_sweep
from simulator.results import REPORTS

SWEEP = """\
name: small
arch: scalesim-32
synth: {model: lenet5, method: swat, batch: 2, seed: 3}
points:
  - {dataflow: os, memory: modeled}
  - {dataflow: ws, memory: ideal, array.rows: 16, array.cols: 16}
grid:
  sparsity: [0.5, 0.8]
"""


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("sweep") / "small.yaml"
    p.write_text(SWEEP)
    return p


@pytest.fixture(scope="module")
def local_run(sweep_file, tmp_path_factory):
    return run_sweep(sweep_file, tmp_path_factory.mktemp("local") / "out", workers=2)


def test_table_is_every_points_report_with_its_axes(sweep_file, local_run):
    sw = load_sweep(sweep_file)
    out = local_run.out
    assert local_run.ran and sorted(local_run.ran) == sorted(p.key for p in sw.points)
    table = pd.read_csv(out / "sweep.csv")
    assert list(table.columns[:6]) == ["Point", "dataflow", "memory", "array.rows", "array.cols",
                                      "sparsity"]
    assert list(dict.fromkeys(table["Point"])) == [p.key for p in sw.points]  # expansion order
    for p in sw.points:
        d = out / "points" / p.key
        # a normal results directory, plus the point's configuration
        assert {*REPORTS, "summary.json", "point.json"} <= {f.name for f in d.iterdir()}
        assert json.loads((d / "point.json").read_text()) == {"key": p.key, "config": p.config}
        report = pd.read_csv(d / "COMPUTE_REPORT.csv")
        rows = table[table["Point"] == p.key].reset_index(drop=True)
        pd.testing.assert_frame_equal(rows[report.columns], report)
        for axis in sw.axes:
            assert (rows[axis] == p.axes[axis]).all()
        assert {"fwd", "bwd_input", "bwd_weight"} <= set(rows["Phase"])
        assert "Speedup" in rows.columns
    meta = json.loads((out / "sweep.json").read_text())
    assert list(meta["axes"]) == list(sw.axes)
    assert meta["axes"]["sparsity"] == {"kind": "synth", "values": [0.5, 0.8]}
    assert meta["axes"]["array.rows"] == {"kind": "architecture key", "values": [32, 16]}
    assert meta["rows"] == len(table)
    # two sparsities: two synthetic traces, shared by the points that use them
    assert len(list((out / "traces").iterdir())) == 2


def test_dask_cluster_gives_the_same_table(sweep_file, local_run, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        r = run_sweep(sweep_file, tmp_path / "out", scheduler=cluster.scheduler_address)
    assert r.where.startswith("Dask cluster at ") and len(r.ran) == 4
    for name in ("sweep.csv", "sweep.json"):
        assert (r.out / name).read_bytes() == (local_run.out / name).read_bytes()


def test_a_rerun_skips_finished_points(sweep_file, local_run):
    before = {p: p.stat().st_mtime_ns for p in (local_run.out / "points").rglob("*")}
    r = run_sweep(sweep_file, local_run.out, workers=1)
    assert r.ran == [] and sorted(r.skipped) == sorted(local_run.ran)
    assert {p: p.stat().st_mtime_ns for p in (local_run.out / "points").rglob("*")} == before


def test_failed_points_are_reported_and_retried(sweep_file, tmp_path, monkeypatch):
    sw = load_sweep(sweep_file)
    broken = sw.points[1].key
    real = sweep_mod.run_point

    def flaky(task):
        if task["key"] == broken:
            raise RuntimeError("disk on fire")
        return real(task)

    monkeypatch.setattr(sweep_mod, "run_point", flaky)
    out = tmp_path / "out"
    with pytest.raises(SweepFailed, match=r"1 of 4 points failed; first, point 2 .*disk on fire"):
        run_sweep(sw, out, workers=1)
    assert sorted(p.name for p in (out / "points").iterdir()) == sorted(
        p.key for p in sw.points if p.key != broken)
    assert not (out / "sweep.csv").exists()
    monkeypatch.setattr(sweep_mod, "run_point", real)
    r = run_sweep(sw, out, workers=1)
    assert r.ran == [broken] and len(r.skipped) == 3 and (out / "sweep.csv").is_file()


def test_recorded_traces_as_an_axis(tmp_path):
    from traces.synth import SynthConfig, synthesize

    for name, s in (("a", 0.5), ("b", 0.9)):
        synthesize(SynthConfig("mlp3", sparsity=s, batch=2), tmp_path / name)
    sweep = tmp_path / "rec.yaml"
    sweep.write_text("arch: tensordash\nmemory: ideal\ngrid: {trace: [a, b]}\n")
    r = run_sweep(sweep, tmp_path / "out", workers=1)
    table = pd.read_csv(r.table)
    assert list(dict.fromkeys(table["trace"])) == ["a", "b"]
    assert not any((r.out / "traces").iterdir())  # recorded traces are read where they are
    # the key follows the trace's content, not its name
    keys = [p.key for p in load_sweep(sweep).points]
    synthesize(SynthConfig("mlp3", sparsity=0.6, batch=2), tmp_path / "a", force=True)
    new = [p.key for p in load_sweep(sweep).points]
    assert new[0] != keys[0] and new[1] == keys[1]


# ------------------------------------------------------------------------------------------------
# kill -9 in the middle of a sweep, then run it again
# ------------------------------------------------------------------------------------------------
KILL_SWEEP = """\
arch: scalesim-32
synth: {model: lenet5, method: swat, sparsity: 0.7, batch: 2}
grid:
  dataflow: [os, ws]
  array.rows: [8, 16, 32, 64]
"""


def _snapshot(points: Path) -> dict[str, tuple[int, int]]:
    return {str(f.relative_to(points)): (f.stat().st_ino, f.stat().st_mtime_ns)
            for f in points.rglob("*")}


def _stat(pid: int) -> list[str] | None:
    """State, parent, ... of a process from /proc (None when it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _state(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[0] if fields else None


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid``."""
    pids = (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    return [c for c in pids if (_stat(c) or ["", ""])[1] == str(pid)]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_sigkill_then_resume_loses_and_repeats_nothing(tmp_path):
    sweep = tmp_path / "kill.yaml"
    sweep.write_text(KILL_SWEEP)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cli.main", "sweep", str(sweep), "-o", str(out), "--workers",
           "2", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    points = out / "points"

    def finished() -> list[Path]:
        return [p for p in points.iterdir() if not p.name.startswith(".")] \
            if points.is_dir() else []

    deadline = time.monotonic() + 120
    while len(finished()) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the sweep ended before it was killed: {proc.communicate()}"
    workers = _children(proc.pid)
    assert len(workers) >= 2  # the two pool workers (and multiprocessing's resource tracker)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the pool's workers notice that their parent is gone and exit
    while workers and time.monotonic() < deadline:
        workers = [w for w in workers if _state(w) not in (None, "Z")]
        time.sleep(0.05)
    assert not workers, "pool workers outlived the killed sweep"
    done = finished()
    assert 2 <= len(done) < 8, "the sweep should be killed half-way"
    assert not (out / "sweep.csv").exists()
    before = _snapshot(points)

    # resume in the command's own process (any worker count gives the same points)
    r = subprocess.run(cmd[:-2] + ["1", "-q"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    m = re.search(r"8 points, (\d+) run and (\d+) already done", r.stdout)
    assert m and (int(m[1]), int(m[2])) == (8 - len(done), len(done)), r.stdout
    after = _snapshot(points)
    assert {k: after[k] for k in before if not k.startswith(".")} == \
        {k: v for k, v in before.items() if not k.startswith(".")}  # not rewritten
    assert len(finished()) == 8
    assert not [p for p in points.iterdir() if p.name.startswith(".")]  # no leftovers

    fresh = run_sweep(sweep, tmp_path / "fresh", workers=1)
    assert (out / "sweep.csv").read_bytes() == fresh.table.read_bytes()


def test_points_share_their_dense_baselines_through_the_cache(sweep_file, local_run, tmp_path):
    """Four points, two distinct dense baselines (the sparsity changes only the masks): a
    cached run keeps two, and its table is the uncached run's."""
    cache = tmp_path / "cache"
    r = run_sweep(sweep_file, tmp_path / "out", workers=1, baseline_cache=cache)
    assert len(r.ran) == 4
    assert len(list((cache / "baselines").glob("*.json"))) == 2
    assert (r.out / "sweep.csv").read_bytes() == (local_run.out / "sweep.csv").read_bytes()
