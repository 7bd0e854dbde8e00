"""Speedup attribution: where a sparse run's speedup over dense comes from and where it goes.

For one trace on one architecture and dataflow, a chain of configurations, each one a
simulation that is actually run (``simulator.run.simulate_trace``), each adding one feature or
limit to the one before:

1. dense, ideal memory: the array alone, no sparse features (the dense baseline's cycles);
2. + each group of sparse compute features the architecture enables, in turn (structured, N:M,
   fan-in, then skipping with its scheduler and gating), ideal memory, no compressed formats;
3. + memory as modeled (DRAM, SRAM ports, fill/drain), when the run's memory is modeled;
4. + each role's compressed format (``sparse.formats``), one role at a time.

The last step is the configuration as given; with modeled memory a reference row follows, the
dense baseline with memory as modeled, against which the run's reported speedup is measured.
Every row's ``Speedup over Dense`` is against the dense baseline with the same memory model (so
the last row's equals the run's training-step speedup); ``Factor`` is the previous step's
cycles over this one's: what the step it adds gains (> 1) or costs (< 1).

``ATTRIBUTION.csv`` (written by ``sparsesim simulate --explain``; ``docs/metrics.md``) holds the
table; ``reports.figures.attribution_waterfall`` draws it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from simulator.results import ATTRIBUTION_COLUMNS, Results, summarize

#: the compute features of ``sparse:``, in the order the chain adds them; each group's keys go in
#: together (a scheduler's keys mean nothing without skipping)
COMPUTE_GROUPS = (
    ("structured", ("structured",)),
    ("nm", ("nm",)),
    ("fanin", ("fanin",)),
    ("skip", ("skip", "two_sided", "window", "taps", "sync", "order", "free_rows", "side", "gate")),
)
#: kept in every step, the dense baseline included (how the GEMMs are laid out on the array)
ALWAYS = ("lowering",)


@dataclass(frozen=True)
class Stage:
    """One configuration of the chain: its ``sparse:`` section and memory model, and the
    feature or limit it adds to the stage before (``adds``)."""

    label: str
    adds: str
    sparse: dict[str, Any]
    memory: str


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _describe_skip(sp: dict[str, Any]) -> str:
    """Skipping and its scheduler in words, e.g. ``skip zeros of filter, ifmap, grad_out
    (taps T lookahead 2 lookaside 5, lockstep)``."""
    parts = []
    if sp.get("skip"):
        roles = sp["skip"] if isinstance(sp["skip"], list) else [sp["skip"]]
        how = []
        taps = sp.get("taps")
        if isinstance(taps, dict):
            how.append(
                f"taps {taps.get('shape', 'T')} lookahead {taps.get('lookahead')} "
                f"lookaside {taps.get('lookaside')}"
            )
        elif taps:
            how.append(f"{len(taps)} taps")
        elif isinstance(sp.get("window"), dict):
            w = sp["window"]
            how.append(f"window lookahead {w.get('lookahead')} lookaside {w.get('lookaside')}")
        else:
            how.append("unbounded window")
        how.append(sp.get("sync", "barrier"))
        if sp.get("two_sided"):
            how.append("two-sided")
        parts.append(f"skipping zeros of {', '.join(roles)} ({', '.join(how)})")
    if sp.get("gate"):
        roles = sp["gate"] if isinstance(sp["gate"], list) else [sp["gate"]]
        parts.append(f"gating zeros of {', '.join(roles)} (energy only)")
    return "; ".join(parts)


def _describe_format(role: str, fmt: Any) -> str:
    if isinstance(fmt, dict):
        where = ", ".join(f"{fmt[lv]} in {lv.upper()}" for lv in ("dram", "sram") if lv in fmt)
    else:
        where = f"{fmt} in DRAM and SRAM"
    return f"{role} stored {where} (sparse.formats)"


def stages(arch, memory: str) -> list[Stage]:
    """The chain for ``arch`` with ``memory`` (``ideal`` or ``modeled``): see the module
    docstring. The first stage is the dense array with ideal memory."""
    sp = _plain(dict(arch.sparse or {}))
    base = {k: sp[k] for k in ALWAYS if k in sp}
    out = [Stage("dense, ideal memory", "dense array, no sparse features", dict(base), "ideal")]
    current = dict(base)
    labels = {
        "structured": (
            "+ structured execution",
            "structured execution on the reduced GEMM (sparse.structured)",
        ),
        "nm": (
            f"+ {sp.get('nm')} execution",
            f"N:M execution of the weights, {sp.get('nm')} (sparse.nm)",
        ),
        "fanin": ("+ fan-in execution", "constant fan-in execution (sparse.fanin)"),
    }
    for name, keys in COMPUTE_GROUPS:
        present = {k: sp[k] for k in keys if k in sp and sp[k] not in (None, False, [], {})}
        if not present:
            continue
        current = {**current, **present}
        if name == "skip":
            label = "+ skipping" if present.get("skip") else "+ gating"
            label += " (" + ", ".join(present.get("skip") or present.get("gate")) + ")"
            adds = _describe_skip(present)
        else:
            label, adds = labels[name]
        out.append(Stage(label, adds, dict(current), "ideal"))
    if len(out) == 1:  # no compute feature: the sparse masks on a dense array
        out.append(
            Stage(
                "+ the trace's masks",
                "the trace's masks on the dense array (no compute feature enabled)",
                dict(current),
                "ideal",
            )
        )
    if memory == "modeled":
        dram = arch.dram
        adds = (
            f"memory as modeled: DRAM {dram.bandwidth_gbps:g} GB/s, {dram.channels} "
            "channel(s), SRAM ports, fill and drain"
        )
        out.append(Stage("+ memory as modeled", adds, dict(current), "modeled"))
    for role, fmt in (sp.get("formats") or {}).items():
        if fmt in (None, "dense") or (
            isinstance(fmt, dict) and all(v == "dense" for v in fmt.values())
        ):
            continue
        current = {**current, "formats": {**current.get("formats", {}), role: fmt}}
        out.append(
            Stage(f"+ {role} compressed", _describe_format(role, fmt), dict(current), memory)
        )
    return out


def _same(sparse: dict[str, Any], arch) -> bool:
    """Whether ``sparse`` means what the architecture's own section means (``two_sided:
    false`` left out or not)."""
    from dataflows.features import parse_features

    return parse_features(sparse, arch.source, arch.lanes) == arch.features


def _row(
    i: int, kind: str, label: str, adds: str, memory: str, s: dict[str, Any], n: int
) -> dict[str, Any]:
    return {
        "Step": i,
        "Kind": kind,
        "Configuration": label,
        "Adds": adds,
        "Memory": memory,
        "Cycles per Step": s["cycles"] / n,
        "Compute Cycles per Step": s["compute_cycles"] / n,
        "Stall Cycles per Step": s["stall_cycles"] / n,
        "DRAM MB per Step": s["dram_bytes"] / n / 1e6,
        "Energy uJ per Step": s["energy_pj"] / n / 1e6,
    }


def attribution(
    trace: str,
    arch,
    dataflow: str,
    phases: str = "train",
    memory: str = "modeled",
    run: Results | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    baseline_cache=None,
) -> pd.DataFrame:
    """The attribution table (``ATTRIBUTION_COLUMNS``) of the trace at ``trace`` on ``arch``.

    ``run``: the results of the configuration as given (``simulate_trace`` with the same
    arguments), when the caller has them already: the chain's last step reuses them instead of
    running them again. Every other step is simulated here. ``baseline_cache``: the dense
    baselines' cache directory (``simulator.baseline``), or None.
    """
    from simulator.run import simulate_trace

    chain = stages(arch, memory)
    summaries: list[dict[str, Any]] = []
    dense: dict[str, dict[str, Any]] = {}  # memory -> the dense baseline's per-step totals
    for i, st in enumerate(chain):
        if progress:
            progress(i, len(chain), st.adds[:30])
        if i == 0:
            summaries.append({})  # filled from the next stage's baseline (same arch, no masks)
            continue
        final = st.memory == memory and _same(st.sparse, arch) and i == len(chain) - 1
        if final and run is not None:
            res = run
        else:
            a = (
                arch
                if _same(st.sparse, arch)
                else arch.with_overrides(
                    {"sparse": st.sparse}, source=f"{arch.source} (attribution)"
                )
            )
            res = simulate_trace(trace, a, dataflow, phases, st.memory,
                                 baseline_cache=baseline_cache)
        s = summarize(res)
        summaries.append(s)
        dense.setdefault(st.memory, s["baseline_per_step"])
    if progress:
        progress(len(chain), len(chain), "done")
    rows = []
    for i, (st, s) in enumerate(zip(chain, summaries, strict=True)):
        if i == 0:
            rows.append(_row(0, "step", st.label, st.adds, "ideal", dense["ideal"], 1))
            continue
        n = max(len(s.get("steps") or [0]), 1)
        rows.append(_row(i, "step", st.label, st.adds, st.memory, s["total"], n))
    if memory == "modeled":
        rows.append(
            _row(
                len(chain),
                "reference",
                "dense baseline, memory as modeled",
                "the baseline of the run's reported speedup",
                "modeled",
                dense["modeled"],
                1,
            )
        )
    table = pd.DataFrame(rows)
    prev = table["Cycles per Step"].shift(1)
    table["Factor"] = (prev / table["Cycles per Step"]).where(table["Kind"] == "step")
    table.loc[0, "Factor"] = float("nan")
    base = {m: d["cycles"] for m, d in dense.items()}
    table["Speedup over Dense"] = [
        base[m] / c for m, c in zip(table["Memory"], table["Cycles per Step"], strict=True)
    ]
    table["Dense Baseline"] = [f"dense, {m} memory" for m in table["Memory"]]
    return table[list(ATTRIBUTION_COLUMNS)]


def describe(table: pd.DataFrame) -> list[str]:
    """The attribution table as lines for a terminal."""
    lines = []
    width = max(len(c) for c in table["Configuration"])
    for r in table.to_dict("records"):
        step = "ref" if r["Kind"] == "reference" else str(r["Step"])
        factor = "" if pd.isna(r["Factor"]) else f"  (this step x{r['Factor']:.2f})"
        lines.append(
            f"{step:>4}  {r['Configuration']:<{width}} {r['Cycles per Step']:>14,.0f} "
            f"cycles  {r['Speedup over Dense']:5.2f}x over {r['Dense Baseline']}"
            f"{factor}"
        )
    return lines
