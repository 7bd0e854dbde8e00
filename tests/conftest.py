"""Test-wide setup: commands the tests run keep the dense baselines they cache in a temporary
directory of the session, never in the user's cache."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _baseline_cache_in_tmp(tmp_path_factory):
    old = os.environ.get("SPARSESIM_CACHE_DIR")
    os.environ["SPARSESIM_CACHE_DIR"] = str(tmp_path_factory.mktemp("baseline-cache"))
    yield
    if old is None:
        os.environ.pop("SPARSESIM_CACHE_DIR", None)
    else:
        os.environ["SPARSESIM_CACHE_DIR"] = old
