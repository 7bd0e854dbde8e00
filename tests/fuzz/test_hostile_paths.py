"""Paths that are not what they seem: an input reached through a symbolic link (``--force``
must never replace it), a FIFO or a device where a file is read (refused before it is opened,
never a hang), a dangling link as an output, two runs into one new output."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from pathlib import Path

import pytest

from cli.main import main
from common.errors import InputError
from common.fsutil import atomic_output_dir
from tests.fuzz.contract import no_hang
from traces.synth import SynthConfig, synthesize

TOPOLOGY = "Layer, M, N, K,\ng1, 24, 20, 28,\ng2, 16, 24, 20,\n"


def cli(*argv: str) -> tuple[int, str]:
    """Exit code and stderr of ``sparsesim ARGV`` run in this process (30 s at most)."""
    err = io.StringIO()
    with no_hang(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(list(argv))
        except SystemExit as exit_:
            code = exit_.code
    return code, err.getvalue()


def refused(argv: list[str], needle: str) -> None:
    code, err = cli(*argv)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err


def tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture()
def work(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    synthesize(SynthConfig(model="lenet5", sparsity=0.5, batch=1), tmp_path / "mytrace")
    (tmp_path / "net.csv").write_text(TOPOLOGY)
    return tmp_path


# ------------------------------------------------------------------------------------------------
# never lose data: --force and inputs reached through links
# ------------------------------------------------------------------------------------------------
def test_simulate_force_never_replaces_a_trace_reached_through_a_link(work):
    os.symlink("mytrace", work / "linkt")
    before = tree(work / "mytrace")
    refused(
        ["simulate", "linkt", "--arch", "scalesim-32", "-o", "mytrace", "--force"],
        "is (or contains) the input",
    )
    refused(
        ["simulate", "mytrace", "--arch", "scalesim-32", "-o", "linkt", "--force"],
        "is (or contains) the input",
    )
    assert tree(work / "mytrace") == before


def test_synth_force_never_replaces_a_model_csv_reached_through_a_link(work):
    (work / "d").mkdir()
    shutil.move(work / "net.csv", work / "d" / "net.csv")
    os.symlink("d/net.csv", work / "link.csv")
    refused(
        ["synth", "--model", "link.csv", "--sparsity", "0.5", "-q", "-o", "d", "--force"],
        "is (or contains) the input",
    )
    assert (work / "d" / "net.csv").read_text() == TOPOLOGY


def test_report_force_never_replaces_results_reached_through_a_link(work):
    assert cli("simulate", "net.csv", "--arch", "scalesim-32", "-o", "res")[0] == 0
    os.symlink("res", work / "linkres")
    before = tree(work / "res")
    refused(["report", "linkres", "-o", "res", "--force", "-q"], "is (or contains) the input")
    assert tree(work / "res") == before


def test_a_hard_linked_directory_parent_is_the_same_path(work):
    """By identity too: the output named through a link to a folder that holds the input."""
    os.symlink(".", work / "here")
    refused(
        ["simulate", "mytrace", "--arch", "scalesim-32", "-o", "here/mytrace", "--force"],
        "is (or contains) the input",
    )


def test_sweep_output_through_a_dangling_link_creates_nothing(work):
    (work / "s.yaml").write_text(
        "arch: scalesim-32\ntrace: mytrace\nphases: fwd\ngrid: {array.rows: [8]}\n"
    )
    os.symlink("elsewhere/deep", work / "dangling")
    refused(["sweep", "s.yaml", "-o", "dangling", "-q", "--workers", "1"], "dangling link")
    assert not (work / "elsewhere").exists()


def test_a_dangling_link_as_an_output_is_refused(work):
    os.symlink("nowhere", work / "dangling")
    refused(["simulate", "net.csv", "--arch", "scalesim-32", "-o", "dangling"], "dangling link")
    assert not (work / "nowhere").exists()


def test_two_runs_into_one_new_output_cannot_both_succeed(work):
    """Another run finishes into the same new output while this one works: this one is
    refused at the end and the other's output is kept (without --force nothing is replaced)."""
    out = work / "new"
    with pytest.raises(InputError, match="written by another run meanwhile"):
        with atomic_output_dir(out) as tmp:
            (tmp / "a.txt").write_text("second")
            out.mkdir()
            (out / "a.txt").write_text("first")  # the other run, done in between
    assert (out / "a.txt").read_text() == "first"
    assert not list(work.glob(".new.*"))


def test_disk_full_names_the_file(work, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "summary.json"))

    with pytest.raises(InputError, match="out/summary.json: No space left"):
        with atomic_output_dir("out") as tmp:
            full()
    assert not (work / "out").exists()


# ------------------------------------------------------------------------------------------------
# no hangs: FIFOs where a file is read
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, fifo",
    [
        (["simulate", "{f}", "--arch", "scalesim-32", "-o", "o"], "t.csv"),
        (["info", "{f}"], "t.csv"),
        (["synth", "--model", "{f}", "--sparsity", "0.5", "-q", "-o", "o"], "t.csv"),
        (["simulate", "net.csv", "--arch", "{f}", "-o", "o"], "a.yaml"),
        (["simulate", "net.csv", "--arch", "{f}", "-o", "o"], "a.cfg"),
        (["sweep", "{f}", "-o", "o", "-q"], "s.yaml"),
        (["synth", "--model", "lenet5", "--layer-sparsity", "{f}", "-q", "-o", "o"], "l.txt"),
    ],
)
def test_a_fifo_is_refused_not_waited_on(work, argv, fifo):
    os.mkfifo(work / fifo)
    code, err = cli(*[a.replace("{f}", fifo) for a in argv])
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert not (work / "o").exists()


@pytest.mark.parametrize("name", ["manifest.json", "step"])
def test_a_fifo_inside_a_trace_is_refused(work, name):
    trace = work / "mytrace"
    if name == "step":
        name = next(p.name for p in trace.glob("*.npz"))
    (trace / name).unlink()
    os.mkfifo(trace / name)
    code, err = cli("info", "mytrace")
    assert code == 2 and len(err.strip().splitlines()) == 1, err


def test_a_fifo_inside_results_is_refused(work):
    assert cli("simulate", "net.csv", "--arch", "scalesim-32", "-o", "res")[0] == 0
    (work / "res" / "summary.json").unlink()
    os.mkfifo(work / "res" / "summary.json")
    code, err = cli("report", "res", "-o", "rep", "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert not (work / "rep").exists()


def test_the_hang_guard_stops_a_blocked_wait():
    """A body blocked without using the CPU (as a read of a FIFO nobody writes would be) is
    stopped by ``no_hang``, whatever the machine's load (the limit is stretched, never
    dropped)."""
    import time

    from tests.fuzz.contract import Hang

    start = time.monotonic()
    with pytest.raises(Hang), no_hang(0.2):
        time.sleep(60)
    assert time.monotonic() - start < 30
