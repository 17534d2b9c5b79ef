"""trainscale report: tables and plots from a results folder."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import cli_common
from .cli_common import UsageError
from .progress import console


def register(sub) -> None:
    p = cli_common.add_subcommand(sub, "report", "tables and plots (efficiency curves etc.) from a results folder",
                                  "trainscale report results/20261124-120000-sweep-resnet50-ddp")
    p.add_argument("results", help="a sweep folder, a run folder, or a folder of runs")
    p.add_argument("--out", help="where to write report.md and the plots (default: RESULTS/report)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from trainscale.analysis.report import NoRunsError, print_report, write_report

    if not Path(args.results).is_dir():
        raise UsageError(f"results folder not found: {args.results}")
    try:
        report = write_report(Path(args.results), Path(args.out) if args.out else None)
    except NoRunsError as e:
        raise UsageError(str(e)) from None
    print_report(report, console)
    console.print(f"report: {report.markdown}")
    return 0
