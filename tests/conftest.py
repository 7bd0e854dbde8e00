"""Test-wide setup: commands the tests run keep the dense baselines they cache in a temporary
directory of the session, never in the user's cache. With pytest-xdist (the README's ``-n``),
each worker has its own such directory, and the fuzz outcomes each worker tallied are summed
here, in the process that prints the session's summary."""

from __future__ import annotations

import os

import pytest

from tests.fuzz.contract import PEAK_RSS, TALLY, write_summary

# pytest-xdist's workers share the cores: torch's intra-op threads (one per core by default, in
# each worker) would outnumber them, and each parallel region of a training would then wait for
# a thread descheduled in favour of another worker (a training test took several times as long).
# So each worker gets its share of the cores; it must be set before torch is first imported.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))


@pytest.fixture(autouse=True, scope="session")
def _baseline_cache_in_tmp(tmp_path_factory):
    old = os.environ.get("SPARSESIM_CACHE_DIR")
    os.environ["SPARSESIM_CACHE_DIR"] = str(tmp_path_factory.mktemp("baseline-cache"))
    yield
    if old is None:
        os.environ.pop("SPARSESIM_CACHE_DIR", None)
    else:
        os.environ["SPARSESIM_CACHE_DIR"] = old


def pytest_sessionfinish(session) -> None:
    out = getattr(session.config, "workeroutput", None)
    if out is not None:  # an xdist worker: its tally goes to the controller with it
        out["fuzz_tally"] = {parser: dict(counts) for parser, counts in TALLY.items()}
        out["fuzz_peak_rss"] = list(PEAK_RSS)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown when the plugin is not loaded
def pytest_testnodedown(node, error) -> None:
    out = getattr(node, "workeroutput", {})
    for parser, counts in out.get("fuzz_tally", {}).items():
        TALLY[parser].update(counts)
    PEAK_RSS.extend((rss, what) for rss, what in out.get("fuzz_peak_rss", []))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    write_summary(terminalreporter)
