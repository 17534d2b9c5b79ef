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
    p.add_argument("results", help="a sweep folder, a run folder, a folder of runs, or a trainscale comm folder")
    p.add_argument("--out", help="where to write report.md and the plots (default: RESULTS/report)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from trainscale.analysis.report import NoRunsError, print_report, write_report

    if not Path(args.results).is_dir():
        raise UsageError(f"results folder not found: {args.results}")
    from trainscale.analysis.comm_report import is_comm_folder

    if is_comm_folder(Path(args.results)):
        return _comm_report(Path(args.results), Path(args.out) if args.out else None)
    try:
        report = write_report(Path(args.results), Path(args.out) if args.out else None)
    except NoRunsError as e:
        raise UsageError(str(e)) from None
    print_report(report, console)
    console.print(f"report: {report.markdown}")
    return 0


def _comm_report(folder: Path, out: Path | None) -> int:
    """A trainscale comm folder: the table, fits and busbw plot recomputed from its raw files."""
    import sys

    from trainscale.analysis.comm_report import text_table, write_comm_report

    doc = write_comm_report(folder, out_dir=out)
    sys.stdout.write(text_table(doc))
    console.print(f"report: {(out or folder)}")
    return 0
