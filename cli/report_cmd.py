"""`sparsesim report RESULT_DIR... -o REPORT_DIR`: figures, tables and a self-contained
``report.html`` from results directories (``sparsesim simulate``) and sweep directories
(``sparsesim sweep``). The work is in ``reports.report``."""

from __future__ import annotations

import argparse
import sys

from cli.helpers import path_arg


def add_report_parser(sub) -> None:
    """Register the ``report`` subcommand."""
    p = sub.add_parser(
        "report", help="figures, CSV tables and an HTML report from results directories",
        description="Draw the figures of one or more results directories (from 'sparsesim "
                    "simulate') and sweep directories (from 'sparsesim sweep'): cycles per "
                    "layer and phase against dense, speedup vs sparsity per method, dataflow "
                    "comparison, stall attribution, DRAM bandwidth over time, roofline, load "
                    "imbalance and speedup across training steps. Writes report.html (opens "
                    "offline), every figure as PNG and SVG, and the numbers as CSV.")
    p.add_argument("inputs", nargs="+", metavar="RESULT_DIR", type=path_arg,
                   help="results directory of 'sparsesim simulate' or a sweep directory")
    p.add_argument("-o", "--output", required=True, type=path_arg, help="report directory to write")
    p.add_argument("--title", default=None, help="title of the HTML page")
    p.add_argument("--force", action="store_true", help="replace an existing report directory")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> None:
    from cli.helpers import Progress
    from common.fsutil import check_output_dir
    from reports.report import make_report

    check_output_dir(args.output, args.force, inputs=args.inputs)
    out = make_report(args.inputs, args.output, force=args.force, title=args.title,
                      progress=Progress("report", not args.quiet))
    figs = sorted(p.stem for p in (out / "figures").glob("*.png"))
    print(f"report written to {out / 'report.html'}")
    print(f"  {len(figs)} figures (PNG + SVG in {out / 'figures'}): {', '.join(figs)}",
          file=sys.stdout)
