"""What a re-run of a sweep reuses is checked first: a finished point whose results are damaged
is run again, a damaged synthetic trace is built again, and a bad recorded trace (the user's
input) stops the sweep before anything runs, naming the trace file."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cli.main import main
from pipeline import sweep as sweep_mod
from pipeline.sweep import SweepFailed, run_sweep, write_table
from pipeline.sweepfile import SweepError, load_sweep
from traces.format import Trace

SWEEP = """\
arch: scalesim-32
memory: ideal
synth: {model: lenet5, method: swat, batch: 2, seed: 3}
grid:
  dataflow: [os, ws]
  sparsity: [0.5, 0.8]
"""


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A finished 4-point sweep (2 synthetic traces); tests damage copies of it."""
    sweep = tmp_path_factory.mktemp("resume") / "small.yaml"
    sweep.write_text(SWEEP)
    run = run_sweep(sweep, sweep.parent / "out", workers=1)
    return sweep, run.out, run.table.read_bytes()


@pytest.fixture
def copy(pristine, tmp_path):
    sweep, out, table = pristine
    shutil.copytree(out, tmp_path / "out")
    return sweep, tmp_path / "out", table


def _leftovers(out: Path) -> list[str]:
    return [p.name for sub in ("points", "traces") for p in (out / sub).iterdir()
            if p.name.startswith(".")]


DAMAGE = {
    "garbage report": lambda d: (d / "COMPUTE_REPORT.csv").write_text("garbage\n"),
    "report deleted": lambda d: (d / "COMPUTE_REPORT.csv").unlink(),
    "report truncated": lambda d: os.truncate(d / "COMPUTE_REPORT.csv",
                                              (d / "COMPUTE_REPORT.csv").stat().st_size - 7),
    "other report truncated": lambda d: os.truncate(d / "SPARSE_REPORT.csv", 50),
    "summary deleted": lambda d: (d / "summary.json").unlink(),
    "point.json of another point": lambda d: (d / "point.json").write_text('{"key": "x"}\n'),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_finished_point_is_run_again(copy, damage):
    sweep, out, table = copy
    keys = [p.key for p in load_sweep(sweep).points]
    DAMAGE[damage](out / "points" / keys[2])
    (out / "sweep.csv").unlink()
    r = run_sweep(sweep, out, workers=1)
    assert r.rerun == [keys[2]] and r.ran == [keys[2]]
    assert r.skipped == keys[:2] + keys[3:]
    assert r.table.read_bytes() == table  # every point's rows, as in the first run
    assert not _leftovers(out)


def test_cli_reruns_a_point_whose_report_was_deleted(copy, capsys):
    sweep, out, table = copy
    key = load_sweep(sweep).points[0].key
    (out / "points" / key / "COMPUTE_REPORT.csv").unlink()
    assert main(["sweep", str(sweep), "-o", str(out), "--workers", "1", "-q"]) == 0
    assert ("4 points, 1 run (1 of them again: their results were damaged) and 3 already done"
            in capsys.readouterr().out)
    assert (out / "sweep.csv").read_bytes() == table


def test_the_table_is_never_made_from_a_damaged_point(copy):
    sweep, out, _ = copy
    sw = load_sweep(sweep)
    (out / "points" / sw.points[1].key / "COMPUTE_REPORT.csv").write_text("garbage\n")
    (out / "sweep.csv").unlink()
    with pytest.raises(SweepFailed, match=r"point 2 \(dataflow=os, sparsity=0.8\): its results "
                                          r"are damaged: .*COMPUTE_REPORT.csv"):
        write_table(sw, out)
    assert not (out / "sweep.csv").exists()


TRACE_DAMAGE = {
    "step deleted": lambda t: next(t.glob("step_*.npz")).unlink(),
    "step truncated": lambda t: os.truncate(next(t.glob("step_*.npz")), 100),
    "manifest garbage": lambda t: (t / "manifest.json").write_text("garbage"),
    "empty": lambda t: [f.unlink() for f in t.iterdir()],
}


@pytest.mark.parametrize("damage", list(TRACE_DAMAGE))
def test_a_damaged_synthetic_trace_is_built_again(copy, damage):
    sweep, out, table = copy
    points = load_sweep(sweep).points
    tkey = points[0].trace_key
    users = [p.key for p in points if p.trace_key == tkey]
    TRACE_DAMAGE[damage](out / "traces" / tkey)
    for key in users:  # the points that use it must run again
        shutil.rmtree(out / "points" / key)
    r = run_sweep(sweep, out, workers=1)
    assert r.rebuilt == [tkey] and sorted(r.ran) == sorted(users)
    assert len(list(Trace(out / "traces" / tkey))) == 1
    assert r.table.read_bytes() == table
    assert not _leftovers(out)


def test_a_damaged_trace_is_left_alone_when_no_point_needs_it(copy):
    sweep, out, table = copy
    tkey = load_sweep(sweep).points[0].trace_key
    next((out / "traces" / tkey).glob("step_*.npz")).unlink()
    r = run_sweep(sweep, out, workers=1)
    assert r.ran == [] and r.rebuilt == [] and r.table.read_bytes() == table


@pytest.fixture
def recorded(tmp_path):
    """A sweep over a recorded 2-step trace whose second step file is truncated."""
    from traces.synth import SynthConfig, synthesize

    synthesize(SynthConfig("lenet5", sparsity=0.8, batch=2, steps=2), tmp_path / "tr")
    step = sorted((tmp_path / "tr").glob("step_*.npz"))[1]
    os.truncate(step, 100)
    sweep = tmp_path / "rec.yaml"
    sweep.write_text("arch: scalesim-32\nmemory: ideal\ntrace: tr\ngrid: {dataflow: [os, ws]}\n")
    return sweep, step


def test_a_bad_recorded_trace_stops_the_sweep_before_anything_runs(recorded, tmp_path, capsys):
    sweep, step = recorded
    out = tmp_path / "out"
    with pytest.raises(SweepError, match=rf"^{sweep}: trace: {step}: unreadable or truncated "):
        run_sweep(sweep, out, workers=1)
    assert not out.exists()  # nothing written
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(sweep), "-o", str(out), "--workers", "1", "-q"])
    assert exc.value.code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert err.startswith(f"sparsesim: error: {sweep}: trace: {step}: ")
    assert err.count("\n") == 1 and "again" not in err


def test_a_recorded_trace_that_breaks_mid_run_is_named_not_retried(recorded, tmp_path,
                                                                   monkeypatch):
    sweep, step = recorded
    monkeypatch.setattr(sweep_mod, "_check_recorded_traces", lambda sw, todo: None)
    with pytest.raises(SweepFailed) as exc:
        run_sweep(sweep, tmp_path / "out", workers=1)
    msg = str(exc.value)
    assert str(step) in msg and f"the recorded trace {step.parent} is not valid" in msg
    assert "retry" not in msg


def test_a_directory_replaced_after_the_check_is_not_removed(tmp_path):
    """Two runs of one sweep may both find a point damaged; the second must not remove what the
    first has run again meanwhile."""
    final = tmp_path / "0123456789abcdef"
    final.mkdir()
    seen = sweep_mod._identity(final)
    (tmp_path / ".other").mkdir()  # the other run's, published over the damaged one
    (tmp_path / ".other" / "fresh").write_text("x")
    final.rmdir()
    (tmp_path / ".other").rename(final)
    sweep_mod._discard(final, seen)
    assert (final / "fresh").is_file() and [p.name for p in tmp_path.iterdir()] == [final.name]
    sweep_mod._discard(final, sweep_mod._identity(final))
    assert not any(tmp_path.iterdir())
