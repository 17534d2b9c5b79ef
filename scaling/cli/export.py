"""trainscale export: results to MLflow tracking (one parent run per results folder, a child run per run)
and/or to TensorBoard event files (one TensorBoard run per run folder)."""
from __future__ import annotations

import argparse
from pathlib import Path

from trainscale.scaling.cli import common as cli_common
from trainscale.scaling.cli.common import UsageError
from trainscale.scaling.cli.progress import console


HELP = "log a results folder to MLflow tracking and/or TensorBoard, so teams keep the history"


def register(sub) -> None:
    p = cli_common.add_subcommand(
        sub, "export", HELP,
        "trainscale export --mlflow sqlite:///mlflow.db results/20261124-120000-sweep-resnet50-ddp\n  "
        "trainscale export results/20261124-120000-sweep-resnet50-ddp --tensorboard tb && tensorboard --logdir tb",
        description="--mlflow logs a results folder to MLflow: a parent run with the scaling figures as metrics "
                    "(step = world size), provenance and warnings as tags and the report files as artifacts; one "
                    "child run per run folder with its config as params and its summary metrics. --tensorboard "
                    "writes one TensorBoard run per ok run folder (DIR/<run path>): loss, step time and "
                    "throughput per measured step, the summary metrics at step = world size. Give either or "
                    "both. Optional extras: pip install -c constraints.txt 'trainscale[mlflow]' / "
                    "'trainscale[tensorboard]'.")
    p.add_argument("results", help="a sweep folder, a run folder or a folder of runs")
    p.add_argument("--mlflow", metavar="URI",
                   help="tracking URI, e.g. sqlite:///mlflow.db (artifacts beside it in mlartifacts/) or http://host:5000")
    p.add_argument("--tensorboard", metavar="DIR",
                   help="folder for TensorBoard event files, one subfolder per run (earlier event files of "
                        "the same runs are replaced)")
    p.add_argument("--experiment", default="trainscale", help="MLflow experiment name")
    p.add_argument("--out", help="--mlflow: where the report files are written first (default: RESULTS/report)")
    p.set_defaults(handler=handle)


def check_flags(args: argparse.Namespace) -> None:
    """Before anything is read or written: at least one destination, each usable."""
    if args.mlflow is None and args.tensorboard is None:
        raise UsageError("nowhere to export to: give --mlflow URI, --tensorboard DIR or both")
    if args.out is not None and args.mlflow is None:
        raise UsageError("--out is where --mlflow writes the report files first: give --mlflow too")
    cli_common.results_folder(args.results)
    if args.mlflow is not None:
        from trainscale.scaling.cli.report import check_mlflow

        cli_common.writable_folder(args.out or Path(args.results) / "report", "--out")
        check_mlflow(args.mlflow)
    if args.tensorboard is not None:
        check_tensorboard(args.tensorboard)


def check_tensorboard(folder: str) -> None:
    if not folder.strip():
        raise UsageError("--tensorboard DIR is empty")
    from trainscale.analysis.tensorboard_export import ExportError, check_installed

    try:
        check_installed()
    except ExportError as e:
        raise UsageError(f"--tensorboard: {e}") from None
    cli_common.writable_folder(folder, "--tensorboard")


def handle(args: argparse.Namespace) -> int:
    check_flags(args)
    from trainscale.analysis.comm_report import is_comm_folder
    from trainscale.analysis.report import NoRunsError

    if is_comm_folder(Path(args.results)):
        raise UsageError(f"{args.results} is a trainscale comm folder: export takes training results")
    tensorboard = None
    if args.tensorboard is not None:  # every run read before either destination is written
        from trainscale.analysis import tensorboard_export

        try:
            tensorboard = tensorboard_export.collect(Path(args.results))
        except NoRunsError as e:
            raise UsageError(str(e)) from None
    if args.mlflow is not None:
        export_mlflow(args)
    if tensorboard is not None:
        result = tensorboard_export.write(Path(args.tensorboard), *tensorboard)
        for line in tensorboard_export.summary_lines(result):
            console.print(line)
    return 0


def export_mlflow(args: argparse.Namespace) -> None:
    from trainscale.analysis.report import NoRunsError, write_report
    from trainscale.scaling.cli.report import export_mlflow as export

    try:
        report = write_report(Path(args.results), Path(args.out) if args.out else None)
    except NoRunsError as e:
        raise UsageError(str(e)) from None
    export(report, args.mlflow, args.experiment, [])
