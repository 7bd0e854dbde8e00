"""``sparsesim report``: figures, tables and one self-contained HTML page from results and sweep
directories. Reads what ``simulate`` / ``sweep`` wrote; never re-runs a simulation.

Layout of the report directory (written atomically)::

    report.html               figures embedded (PNG data URIs), opens offline
    figures/NAME.png, .svg    every figure in both forms
    tables/runs.csv           one row per run: what ran and its step totals
    tables/NAME.csv           the numbers behind figure NAME
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from common.errors import InputError
from common.fsutil import atomic_output_dir, check_output_dir
from common.vocab import PHASES
from reports.figures import RUN_FIGURES, Drawn, cycles_text, sweep_figure
from reports.verdict import bound, layer_bounds, run_verdict
from simulator.results import OVERHEAD_PHASES, Run, load_any

PNG_DPI = 150


def runs_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: configuration and training-step totals (means over recorded steps)."""
    rows = []
    for r in runs:
        c = r.compute
        n = max(len(r.steps), 1)
        cyc = float((c["Compute Cycles"] + c["Stall Cycles"]).sum()) / n
        sp = r.speedup or {}
        row = {
            "Run": r.label, "Directory": r.path.name, "Model": r.model, "Method": r.method,
            "Sparsity %": 100 * r.sparsity, "Arch": r.arch, "Dataflow": r.dataflow,
            "Memory": r.memory, "Batch": r.summary.get("batch"), "Steps": len(r.steps),
            "Cycles per Step": cyc,
            "Overhead Cycles per Step": float(
                (c.loc[c["Phase"].isin(OVERHEAD_PHASES), "Compute Cycles"]
                 + c.loc[c["Phase"].isin(OVERHEAD_PHASES), "Stall Cycles"]).sum()) / n,
            "Training Step Speedup": sp.get("training_step"),
            **{f"{ph} Speedup": (sp.get("per_phase") or {}).get(ph) for ph in PHASES},
            "DRAM MB per Step": float(c["DRAM Bytes"].fillna(0).sum()) / n / 1e6
            if "DRAM Bytes" in c.columns else None,
            "Energy uJ per Step": float(c["Energy (pJ)"].fillna(0).sum()) / n / 1e6
            if "Energy (pJ)" in c.columns else None,
            "Time per Step (ms)": cyc / (float(r.summary.get("clock_ghz") or 1.0) * 1e6),
        }
        name, share = bound(c)
        row["Bound"] = name
        row["Bound Share %"] = 100 * share
        rows.append(row)
    return pd.DataFrame(rows)


#: the runs table as the page shows it (the CSV has every column): fits a printed page
PAGE_COLUMNS = {"Run": "Run", "Arch": "Arch", "Dataflow": "Dataflow", "Memory": "Memory",
                "Cycles per Step": "M cycles / step", "Time per Step (ms)": "ms / step",
                "Training Step Speedup": "Speedup ×", "DRAM MB per Step": "DRAM MB / step",
                "Energy uJ per Step": "Energy µJ / step", "Bound": "Bound"}


def page_runs_table(df: pd.DataFrame) -> pd.DataFrame:
    """The columns of ``runs_table`` the page shows, with short headers; cycles in millions."""
    out = df[[c for c in PAGE_COLUMNS if c in df.columns]].copy()
    out["Cycles per Step"] = out["Cycles per Step"] / 1e6
    return out.rename(columns=PAGE_COLUMNS)


def fastest(runs: list[Run], df: pd.DataFrame) -> list[str]:
    """For each workload run in several configurations: which one has the fewest cycles per
    training step (speedups against different baselines do not rank them)."""
    out = []
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(runs):
        groups.setdefault(r.trace_key, []).append(i)
    for idx in groups.values():
        if len(idx) < 2:
            continue
        sub = df.iloc[idx]
        best = sub.loc[sub["Cycles per Step"].idxmin()]
        sp = best["Training Step Speedup"]
        out.append(f"Fastest of the {len(idx)} runs of {runs[idx[0]].model}, "
                   f"{best['Method']}: {best['Run']}, {cycles_text(best['Cycles per Step'])} "
                   f"({best['Time per Step (ms)']:.3g} ms) per step"
                   + (f", {sp:.2f}× its dense baseline" if pd.notna(sp) else "") + ".")
    return out


def verdicts(runs: list[Run]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per run: its verdict; one row per run and layer: the layer's bound)."""
    per_run, per_layer = [], []
    for r in runs:
        v = run_verdict(r.compute, r.summary)
        per_run.append({"Run": r.label, "Bound": v.bound, "Share %": 100 * v.share,
                        "Stalled %": 100 * v.stalled, "Verdict": v.text})
        lb = layer_bounds(r.compute)
        lb.insert(0, "Run", r.label)
        per_layer.append(lb)
    return pd.DataFrame(per_run), (pd.concat(per_layer, ignore_index=True) if per_layer
                                   else pd.DataFrame())


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PNG_DPI, metadata={"Software": None})
    return buf.getvalue()


def _html_table(df: pd.DataFrame, max_rows: int = 60) -> str:
    shown = df.head(max_rows)
    out = "<div class='scroll'>" + shown.to_html(
        index=False, border=0, classes="t", na_rep="–",
        float_format=lambda v: f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}") + "</div>"
    if len(df) > max_rows:
        out += f"<p class='more'>first {max_rows} of {len(df)} rows; all in the CSV</p>"
    return out


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#111;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}
h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
.sub{color:#555}figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#333;font-size:.92em;margin-top:.4em}
table.t{border-collapse:collapse;font-size:.82em;margin:.6em 0}
table.t th,table.t td{padding:2px 8px;border-bottom:1px solid #e4e4e4;text-align:right}
table.t th{background:#f3f3f3}table.t td:first-child,table.t th:first-child{text-align:left}
.files a{margin-right:1em;font-size:.88em}.more{color:#666;font-size:.85em}
details{margin:.4em 0 1em}summary{cursor:pointer;color:#333}.scroll{overflow-x:auto}
"""


def _page(title: str, intro: str, runs_df: pd.DataFrame, sections: list[tuple[Drawn, bytes]],
          skipped: list[str], notes: list[str] = (), verdict_html: str = "") -> str:
    parts = [
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>", f"<p class='sub'>{intro}</p>",
    ]
    if len(runs_df):
        parts += ["<h2 id='runs'>Runs</h2>", _html_table(page_runs_table(runs_df)),
                  *(f"<p>{html.escape(n)}</p>" for n in notes),
                  "<p class='files'><a href='tables/runs.csv'>tables/runs.csv</a> (every "
                  "column)</p>"]
    parts.append(verdict_html)
    parts.append("<nav><ul>" + "".join(
        f"<li><a href='#{d.name}'>{html.escape(d.title)}</a></li>" for d, _ in sections)
        + "</ul></nav>")
    for d, png in sections:
        data = base64.b64encode(png).decode("ascii")
        parts += [
            f"<h2 id='{d.name}'>{html.escape(d.title)}</h2>",
            f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(d.title)}'>",
            f"<figcaption>{html.escape(d.caption)}</figcaption></figure>",
            f"<p class='files'><a href='figures/{d.name}.png'>PNG</a>"
            f"<a href='figures/{d.name}.svg'>SVG</a><a href='tables/{d.name}.csv'>CSV</a></p>",
            f"<details><summary>numbers behind the figure</summary>{_html_table(d.table)}"
            "</details>",
        ]
    if skipped:
        parts.append("<h2>Not drawn</h2><ul>" + "".join(
            f"<li>{html.escape(s)}</li>" for s in skipped) + "</ul>")
    parts.append("<p class='sub'>Definitions of every figure: docs/metrics.md of sparsesim."
                 "</p></body></html>")
    return "\n".join(parts) + "\n"


_WHY_NOT = {
    "attribution_waterfall": "no run has ATTRIBUTION.csv (simulate a trace with --explain)",
    "run_cycles": "no runs",
    "energy_breakdown": "no run reports energy",
    "utilization": "no run reports executed MACs",
    "traffic_by_operand": "no run reports DRAM traffic per operand",
    "layer_cycles": "no runs",
    "speedup_vs_sparsity": "no run has a dense baseline (simulate a trace to get one)",
    "dataflow_comparison": "no trace was simulated with more than one dataflow on one "
                           "architecture and memory mode",
    "stall_attribution": "no runs",
    "dram_bandwidth": "no run reports DRAM bytes",
    "roofline": "no run reports executed MACs",
    "load_imbalance": "no run lost cycles to load imbalance",
    "speedup_over_steps": "no trace with more than one recorded step",
}


def make_report(inputs: list[str | os.PathLike], out: str | os.PathLike, force: bool = False,
                title: str | None = None,
                progress: Callable[[int, int, str], None] | None = None) -> Path:
    """Write the report of ``inputs`` (results and/or sweep directories) into ``out``."""
    if not inputs:
        raise InputError("RESULT_DIR", None, "give at least one results directory")
    seen: dict[str, str] = {}
    for src in inputs:
        key = os.path.realpath(src)
        if key in seen:
            raise InputError("RESULT_DIR", None, f"{src} is given twice (also as {seen[key]})")
        seen[key] = str(src)
    check_output_dir(out, force, inputs=inputs)  # before the figures are drawn
    runs, sweeps = load_any(inputs)
    jobs: list[tuple[str, Callable[[], Drawn | None]]] = [
        (f.__name__, (lambda f=f: f(runs))) for f in RUN_FIGURES if runs]
    names: list[str] = []
    for s in sweeps:  # unique file names, also for two sweeps in directories of one name
        base = f"sweep_{s.path.name}"
        names.append(base if base not in names else f"{base}_{len(names) + 1}")
        jobs.append((names[-1], (lambda s=s, n=names[-1]: sweep_figure(s, n))))
    drawn: list[Drawn] = []
    skipped = []
    for i, (name, job) in enumerate(jobs):
        if progress:
            progress(i, len(jobs), name)
        d = job()  # may raise InputError (e.g. architectures mixed on a speedup figure)
        if d is None:
            skipped.append(f"{name.replace('_', ' ')}: {_WHY_NOT.get(name, 'nothing to draw')}")
        else:
            drawn.append(d)
    if progress:
        progress(len(jobs), len(jobs), "writing")
    runs_df = runs_table(runs)
    run_v, layer_v = verdicts(runs)
    verdict_html = ""
    if len(run_v):
        items = "".join(f"<li><b>{html.escape(a)}</b>: {html.escape(b)}</li>"
                        for a, b in zip(run_v["Run"], run_v["Verdict"], strict=True))
        layers = "".join(
            f"<details><summary>{html.escape(lab)}: the bound of each layer (largest first)"
            f"</summary>{_html_table(layer_v[layer_v['Run'] == lab].drop(columns='Run'), 20)}"
            "</details>" for lab in run_v["Run"])
        verdict_html = ("<h2 id='verdicts'>What bounds each run</h2><ul>" + items + "</ul>"
                        + layers + "<p class='files'><a href='tables/verdicts.csv'>"
                        "tables/verdicts.csv</a><a href='tables/layer_bounds.csv'>"
                        "tables/layer_bounds.csv</a></p>")
    models = sorted({r.model for r in runs})
    title = title or "sparsesim report" + (f": {', '.join(models)}" if models else "")
    intro = html.escape(
        f"{len(runs)} run(s)" + (f" and {len(sweeps)} sweep(s)" if sweeps else "") + " from "
        + ", ".join(Path(p).name for p in inputs)
        + ". Cycles of a training step are means over the recorded steps; speedups are against "
          "the dense baseline on the same architecture and dataflow.")
    import matplotlib.pyplot as plt

    with atomic_output_dir(out, force=force) as tmp:
        (tmp / "figures").mkdir()
        (tmp / "tables").mkdir()
        runs_df.to_csv(tmp / "tables" / "runs.csv", index=False, float_format="%.10g")
        if len(run_v):
            run_v.to_csv(tmp / "tables" / "verdicts.csv", index=False, float_format="%.10g")
            layer_v.to_csv(tmp / "tables" / "layer_bounds.csv", index=False,
                           float_format="%.10g")
        sections = []
        for d in drawn:
            png = _png(d.figure)
            (tmp / "figures" / f"{d.name}.png").write_bytes(png)
            d.figure.savefig(tmp / "figures" / f"{d.name}.svg", format="svg",
                             metadata={"Date": None})
            d.table.to_csv(tmp / "tables" / f"{d.name}.csv", index=False, float_format="%.10g")
            sections.append((d, png))
            plt.close(d.figure)
        (tmp / "report.html").write_text(_page(title, intro, runs_df, sections, skipped,
                                               fastest(runs, runs_df), verdict_html),
                                         encoding="utf-8")
    return Path(out)

