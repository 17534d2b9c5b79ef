"""trainscale report: tables and plots from a results folder; the review report as HTML or markdown;
export to MLflow."""
from __future__ import annotations

import argparse
from pathlib import Path

from trainscale.scaling.cli import common as cli_common
from trainscale.scaling.cli.common import UsageError
from trainscale.scaling.cli.progress import console


HELP = "tables and plots (efficiency curves etc.) from a results folder"


def register(sub) -> None:
    p = cli_common.add_subcommand(sub, "report", HELP,
                                  "trainscale report results/20261124-120000-sweep-resnet50-ddp\n  "
                                  "trainscale report results/sweep --html review.html --markdown review.md "
                                  "--comm results/comm --drills results/drills   # the review report")
    p.add_argument("results", help="a sweep folder, a run folder, a folder of runs, or a trainscale comm folder")
    p.add_argument("--out", help="where to write report.md and the plots (default: RESULTS/report)")
    p.add_argument("--straggler-threshold", type=straggler_threshold, default=None, metavar="R",
                   help="name a rank a straggler when its own time is R times the median rank's or more, "
                        "over 2 consecutive 10-step windows (default: 1.5)")
    add_review_flags(p)
    p.set_defaults(handler=handle)


def straggler_threshold(text: str) -> float:
    """argparse type: a ratio above 1 (a rank as fast as the median one is no straggler)."""
    value = cli_common.finite_float(text)
    if value <= 1:
        raise argparse.ArgumentTypeError(f"must be more than 1 (a ratio to the median rank), got {text!r}")
    return value


def add_review_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("review report")
    g.add_argument("--html", help="write the review report as one self-contained HTML file (plots embedded)")
    g.add_argument("--markdown", help="write the review report as markdown (its plots in FILE_files/ beside it)")
    g.add_argument("--plan", help="a plan folder (trainscale plan --out; default RESULTS/plan when it exists)")
    g.add_argument("--comm", help="a trainscale comm folder for the communication section (default: the plan's)")
    g.add_argument("--drills", help="drill results for the faults section (default: the plan's, or drills in RESULTS)")
    g.add_argument("--screenshot", help="also save a PNG screenshot of the HTML report (needs Chromium)")
    g.add_argument("--mlflow", metavar="URI", help="also log the results to MLflow tracking at URI "
                                                   "(e.g. sqlite:///mlflow.db or http://server:5000)")
    g.add_argument("--experiment", default="trainscale", help="MLflow experiment name")


def check_review_flags(args: argparse.Namespace) -> None:
    for flag in ("plan", "comm", "drills"):
        if getattr(args, flag) is not None:
            cli_common.results_folder(getattr(args, flag), f"--{flag} folder")
    if args.screenshot and not args.html:
        raise UsageError("--screenshot needs --html FILE (it is a picture of that page)")
    if args.screenshot:
        from trainscale.analysis.browser import find_chromium

        if find_chromium() is None:
            raise UsageError("--screenshot needs Chromium: install it with tools/system-deps.sh browser")
    for flag in ("html", "markdown", "screenshot"):
        if getattr(args, flag) is not None:
            cli_common.writable_file(getattr(args, flag), f"--{flag}")
    if args.plan and not (Path(args.plan) / "plan.json").exists():
        raise UsageError(f"--plan {args.plan}: no plan.json in it (write one with trainscale plan)")
    if args.comm:
        from trainscale.scaling.results import schema
        if not (Path(args.comm) / schema.COMM_RESULTS).exists():
            raise UsageError(f"--comm {args.comm}: not a trainscale comm folder (no {schema.COMM_RESULTS})")
    if args.mlflow is not None:
        check_mlflow(args.mlflow)


def check_mlflow(uri: str) -> None:
    """Before anything is written: a URI, and MLflow installed."""
    if not uri.strip():
        raise UsageError("--mlflow URI is empty")
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        raise UsageError("--mlflow: MLflow is not installed (pip install -c constraints.txt 'trainscale[mlflow]')")
    from trainscale.analysis.mlflow_export import ExportError, check_uri

    try:
        check_uri(uri)
    except ExportError as e:
        raise UsageError(f"--mlflow: {e}") from None


def handle(args: argparse.Namespace) -> int:
    from trainscale.analysis.report import NoRunsError, write_report
    from trainscale.scaling.cli.tables import print_report

    cli_common.results_folder(args.results)
    check_review_flags(args)
    cli_common.writable_folder(args.out or Path(args.results) / "report", "--out")
    from trainscale.analysis.comm_report import is_comm_folder

    if is_comm_folder(Path(args.results)):
        if args.html or args.markdown or args.mlflow:
            raise UsageError("--html, --markdown and --mlflow take training results; a comm folder goes in --comm")
        return _comm_report(Path(args.results), Path(args.out) if args.out else None)
    review = review_inputs(args) if (args.html or args.markdown) else None
    try:
        report = write_report(Path(args.results), Path(args.out) if args.out else None,
                              straggler_threshold=args.straggler_threshold)
    except NoRunsError as e:
        raise UsageError(str(e)) from None
    print_report(report, console)
    console.print(f"report: {report.markdown}")
    if review is not None:
        write_review_files(report, review, args)
    if args.mlflow:
        export_mlflow(report, args.mlflow, args.experiment, [Path(p) for p in (args.html, args.markdown) if p])
    return 0


def review_inputs(args: argparse.Namespace):
    from trainscale.analysis.drills import DrillError
    from trainscale.analysis.review import find_inputs

    try:
        return find_inputs(Path(args.results), *(Path(v) if v else None for v in (args.plan, args.comm, args.drills)))
    except DrillError as e:
        raise UsageError(f"drills: {e}") from None


def write_review_files(report, inputs, args: argparse.Namespace) -> None:
    from trainscale.analysis.review import write_review

    write_review(report, inputs, Path(args.html) if args.html else None,
                 Path(args.markdown) if args.markdown else None)
    if args.html:
        console.print(f"html: {args.html}")
    if args.markdown:
        console.print(f"markdown: {args.markdown}")
    if args.screenshot:
        from trainscale.analysis.browser import BrowserError, screenshot

        try:
            console.print(f"screenshot: {screenshot(Path(args.html), Path(args.screenshot))}")
        except BrowserError as e:
            raise UsageError(f"--screenshot: {e}") from None


def export_mlflow(report, uri: str, experiment: str, extra: list[Path]) -> None:
    from trainscale.analysis.mlflow_export import ExportError, export, report_folders, summary_of

    try:
        result = export(report, uri, experiment, report_folders(report, extra))
    except ExportError as e:
        raise UsageError(str(e)) from None
    console.print(summary_of(result))


def _comm_report(folder: Path, out: Path | None) -> int:
    """A trainscale comm folder: the table, fits and busbw plot recomputed from its raw files."""
    import sys

    from trainscale.analysis.comm_report import text_table, write_comm_report

    doc = write_comm_report(folder, out_dir=out)
    sys.stdout.write(text_table(doc))
    console.print(f"report: {(out or folder)}")
    return 0
