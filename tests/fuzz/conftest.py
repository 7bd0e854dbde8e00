"""Print (and with ``SPARSESIM_FUZZ_TALLY=FILE`` write) the fuzz outcomes per parser."""

from __future__ import annotations

import json
import os

from tests.fuzz.contract import EXAMPLES, PEAK_RSS, TALLY


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not TALLY:
        return
    tr = terminalreporter
    tr.section(f"fuzz outcomes ({EXAMPLES} examples per test)")
    total = 0
    for parser in sorted(TALLY):
        counts = TALLY[parser]
        total += sum(counts.values())
        shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        tr.write_line(f"{parser:<16} {sum(counts.values()):>7}  {shown}")
    tr.write_line(f"{'total':<16} {total:>7}")
    if PEAK_RSS:
        rss, what = max(PEAK_RSS)
        tr.write_line(f"peak RSS of {len(PEAK_RSS)} subcommands in children: "
                      f"{rss / 2**20:.0f} MiB ({what})")
    path = os.environ.get("SPARSESIM_FUZZ_TALLY")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            out = {p: dict(c) for p, c in TALLY.items()}
            if PEAK_RSS:
                out["peak_rss"] = [{"bytes": r, "command": w} for r, w in sorted(PEAK_RSS)]
            json.dump(out, f, indent=1, sort_keys=True)
