"""No input under 10 MB makes a subcommand use more than 2 GiB of memory (docs/limits.md).

Each case runs one ``sparsesim`` command in a child interpreter and reads the child's peak
resident set (``os.wait4``'s ``ru_maxrss``): RSS, not address space (numba and LLVM reserve
large virtual ranges they never touch). A fresh interpreter, not a fork of this process: a
forked child would start with the test session's pages (over 1 GiB once the session has
compiled the kernels into a cold numba cache), which is not the command's memory. The child
may exit 0 or 2 (refused, on one line); it must not die, hang (``HANG_SECONDS``) or print a
traceback.

The hand-made cases are the issue's (a 10 000-row topology, one layer at the trace limits, a
trace whose manifest names 10 000 layers of 2^32 elements, a sweep of 10^6 points, a YAML
bomb, ``synth`` at the largest batch); the generated ones are topologies of the fuzz suite's
kind with numbers up to the limits, simulated and synthesized (``EXAMPLES // 150`` of them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.contract import EXAMPLES, FUZZ, HANG_SECONDS, PEAK_RSS, TALLY, yaml_bomb
from traces.synth import SynthConfig, synthesize

MAX_RSS = 2 << 30
MAX_INPUT = 10 * 10**6


#: the child: a fresh interpreter that runs ``sparsesim ARGV`` (argv[2:]) with
#: ``simulator.budget.MAX_CPU_SECONDS`` = argv[1] (``-``: as it is), exits with its code and
#: writes a traceback, which the contract forbids, with exit 70
CHILD = """
import signal, sys
signal.alarm(int(sys.argv[1]))
code = 70
try:
    from cli.main import main
    if sys.argv[2] != "-":
        import simulator.budget
        simulator.budget.MAX_CPU_SECONDS = float(sys.argv[2])
    try:
        code = main(sys.argv[3:])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
except BaseException:
    import traceback
    traceback.print_exc()
sys.stdout.flush()
sys.stderr.flush()
import os
os._exit(code)
"""


def run_child(argv: list[str], cwd: Path, max_cpu: float | None = None
              ) -> tuple[int, str, int]:
    """Exit code, stderr and peak RSS (bytes) of ``sparsesim ARGV`` in a child interpreter;
    ``max_cpu``: the child's ``simulator.budget.MAX_CPU_SECONDS`` (work it accepts must end
    inside the hang guard)."""
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(int(HANG_SECONDS) + 1),
         "-" if max_cpu is None else repr(max_cpu), *argv],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err_bytes = child.stderr.read()  # until the child closes it (exits)
    child.stderr.close()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = 0  # reaped here, not by Popen
    err = err_bytes.decode(errors="replace")
    rss = usage.ru_maxrss * 1024  # kilobytes on Linux
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        what = "hang" if sig == signal.SIGALRM else f"killed by signal {sig}"
        raise AssertionError(f"sparsesim {' '.join(argv)}: {what} (peak RSS {rss >> 20} MiB)")
    return os.WEXITSTATUS(status), err, rss


def check(argv: list[str], cwd: Path, label: str, max_cpu: float | None = None) -> int:
    code, err, rss = run_child(argv, cwd, max_cpu)
    PEAK_RSS.append((rss, f"{label}: sparsesim {' '.join(argv)}"))
    TALLY["memory"]["refused" if code == 2 else "accepted" if code == 0 else "other"] += 1
    assert "Traceback" not in err, err
    assert code in (0, 2), (code, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err
    assert rss < MAX_RSS, f"{label}: peak RSS {rss / 2**30:.2f} GiB"
    return code


def inputs_small(work: Path) -> None:
    for p in work.rglob("*"):
        if p.is_file():
            assert p.stat().st_size < MAX_INPUT, p


CONV = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
        "Num Filter, Strides,\n")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("memory")
    (d / "rows.csv").write_text(CONV + "".join(f"l{i}, 224, 224, 3, 3, 256, 256, 1,\n"
                                               for i in range(10_000)))
    (d / "one.csv").write_text(CONV + "big, 65536, 65536, 3, 3, 1, 1, 1,\n")
    (d / "gemm.csv").write_text("Layer, M, N, K,\n" +
                                "".join(f"g{i}, 65536, 65536, 65536,\n" for i in range(10_000)))
    (d / "bomb.yaml").write_text(yaml_bomb(9, 9))
    (d / "grid.yaml").write_text(
        "name: g\narch: tensordash\nsynth: {model: lenet5, method: dense, batch: 1}\n"
        "grid: {dram.bandwidth_gbps: [" + ", ".join(str(i + 1) for i in range(1000)) +
        "], sram.ifmap.kib: [" + ", ".join(str(i + 64) for i in range(1000)) + "]}\n")
    (d / "sweep.yaml").write_text(  # every point checked: ~1.5 ms each
        "name: s\narch: tensordash\nsynth: {model: resnet50, method: dense, batch: 256}\n"
        "grid: {dram.bandwidth_gbps: [" + ", ".join(str(i + 1) for i in range(40)) +
        "], sram.ifmap.kib: [" + ", ".join(str(i + 64) for i in range(50)) + "]}\n")
    synthesize(SynthConfig(model="lenet5", sparsity=0.5, batch=2), d / "t")
    # a trace whose manifest names 10 000 layers at the trace limits (2^32 elements each)
    synthesize(SynthConfig(model="lenet5", sparsity=0.5, batch=1), d / "huge")
    man = json.loads((d / "huge" / "manifest.json").read_text())
    big = {**man["layers"][0], "kind": "conv2d", "in_channels": 1024, "out_channels": 1024,
           "input_hw": [2048, 2048], "kernel": [3, 3], "stride": [1, 1], "padding": [1, 1],
           "groups": 1, "dilation": [1, 1]}
    man["layers"] = [{**big, "name": f"l{i}"} for i in range(10_000)]
    man["sparsity"]["layer_density"] = [0.5] * 10_000
    (d / "huge" / "manifest.json").write_text(json.dumps(man))
    inputs_small(d)
    return d


CASES = [
    ("10 000-row topology", ["simulate", "rows.csv", "--arch", "tensordash", "-o", "o1"]),
    ("10 000-row topology", ["info", "rows.csv"]),
    ("10 000-row topology", ["synth", "--model", "rows.csv", "--method", "dense", "--steps",
                             "10000", "-o", "o2"]),
    ("one layer at the limits", ["simulate", "one.csv", "--arch", "tensordash", "-o", "o3"]),
    ("10 000 GEMMs of 2^48 MACs", ["simulate", "gemm.csv", "--arch", "scalesim-32", "-o",
                                   "o4"]),
    ("manifest of 10 000 layers of 2^32", ["simulate", "huge", "--arch", "tensordash", "-o",
                                           "o5"]),
    ("manifest of 10 000 layers of 2^32", ["info", "huge"]),
    ("YAML bomb", ["simulate", "t", "--arch", "bomb.yaml", "-o", "o6"]),
    ("10^6-point grid", ["sweep", "grid.yaml", "-o", "o7", "-q"]),
    ("2 000 points of ResNet-50", ["sweep", "sweep.yaml", "-o", "o8", "-q"]),
    ("synth at the largest batch", ["synth", "--model", "resnet50", "--method", "dense",
                                    "--batch", "65536", "-o", "o9"]),
    ("synth over the limits", ["synth", "--model", "vgg16", "--method", "dense", "--batch",
                               "4096", "--steps", "100", "-o", "o10"]),
    ("a small trace", ["simulate", "t", "--arch", "tensordash", "-o", "o11"]),
    ("a small trace", ["info", "t"]),
]


@pytest.mark.parametrize("label, argv", CASES, ids=[f"{i}" for i in range(len(CASES))])
def test_hand_made_hostile_inputs_stay_under_2_gib(work, label, argv):
    code = check(argv, work, label)
    out = argv[argv.index("-o") + 1] if "-o" in argv else None
    if code == 2 and out:
        assert not (work / out).exists(), "a refused run left its output"


NUMBER = st.one_of(st.integers(1, 64), st.sampled_from([224, 1024, 4096, 16384, 65536]))


@st.composite
def big_topologies(draw) -> str:
    rows = []
    for i in range(draw(st.integers(1, 4))):
        h, w = draw(NUMBER), draw(NUMBER)
        k = draw(st.integers(1, 3))
        rows.append(f"l{i}, {h + k}, {w + k}, {k}, {k}, {draw(NUMBER)}, {draw(NUMBER)}, "
                    f"{draw(st.integers(1, 4))},")
    return CONV + "\n".join(rows) + "\n"


@settings(FUZZ, max_examples=max(EXAMPLES // 150, 2))
@given(text=big_topologies(), command=st.sampled_from(["simulate", "synth"]))
def test_generated_topologies_up_to_the_limits_stay_under_2_gib(text, command):
    """What the estimate accepts (its CPU limit lowered to a third of the hang guard, so that
    an accepted run ends in time; the memory cap as it is) stays under 2 GiB."""
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "net.csv").write_text(text)
        argv = (["simulate", "net.csv", "--arch", "tensordash", "--memory", "ideal", "-o", "o"]
                if command == "simulate" else
                ["synth", "--model", "net.csv", "--method", "dense", "--batch", "1", "-o", "o"])
        check(argv, Path(d), "generated topology", max_cpu=HANG_SECONDS / 3)


