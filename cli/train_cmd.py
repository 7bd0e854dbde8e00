"""`sparsesim train`: argument parsing only (no torch here); the work is in ``trainers``."""

from __future__ import annotations

import argparse


def add_train_parser(sub) -> None:
    """Register the ``train`` subcommand (filled in with the trainers)."""
    del sub


def run(args: argparse.Namespace) -> None:
    raise NotImplementedError
