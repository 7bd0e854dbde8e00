"""`synth` says which natural zeros it added and which it did not: they change the answer."""

from __future__ import annotations

from cli.main import main


def test_synth_says_no_relu_zeros_by_default(tmp_path, capsys):
    assert (
        main(
            [
                "synth",
                "--model",
                "mlp3",
                "--sparsity",
                "0.9",
                "--batch",
                "2",
                "-q",
                "-o",
                str(tmp_path / "t"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "natural zeros NOT added: activations hold no ReLU zeros" in out
    assert "--relu-sparsity R adds them" in out
    assert "natural zeros NOT added: output gradients (grad_out) are dense" in out


def test_synth_says_which_relu_zeros_it_added(tmp_path, capsys):
    assert (
        main(
            [
                "synth",
                "--model",
                "mlp3",
                "--sparsity",
                "0.9",
                "--batch",
                "2",
                "-q",
                "--relu-sparsity",
                "0.4",
                "-o",
                str(tmp_path / "t"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "natural zeros added: ReLU zeros, 40% of the inputs of every layer but the first" in out
    assert "activations hold no ReLU zeros" not in out
