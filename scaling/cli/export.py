"""trainscale export: results to MLflow tracking (one parent run per results folder, a child run per run)."""
from __future__ import annotations

import argparse
from pathlib import Path

from trainscale.scaling.cli import common as cli_common
from trainscale.scaling.cli.common import UsageError


HELP = "log a results folder to MLflow tracking, so teams keep the history"


def register(sub) -> None:
    p = cli_common.add_subcommand(
        sub, "export", HELP,
        "trainscale export --mlflow sqlite:///mlflow.db results/20261124-120000-sweep-resnet50-ddp",
        description="Logs a results folder to MLflow: a parent run with the scaling figures as metrics (step = "
                    "world size), provenance and warnings as tags and the report files as artifacts; one child run "
                    "per run folder with its config as params and its summary metrics. Needs the optional extra: "
                    "pip install -c constraints.txt 'trainscale[mlflow]'.")
    p.add_argument("results", help="a sweep folder, a run folder or a folder of runs")
    p.add_argument("--mlflow", required=True, metavar="URI",
                   help="tracking URI, e.g. sqlite:///mlflow.db (artifacts beside it in mlartifacts/) or http://host:5000")
    p.add_argument("--experiment", default="trainscale", help="MLflow experiment name")
    p.add_argument("--out", help="where the report files are written first (default: RESULTS/report)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from trainscale.scaling.cli.report import check_mlflow, export_mlflow

    cli_common.results_folder(args.results)
    cli_common.writable_folder(args.out or Path(args.results) / "report", "--out")
    check_mlflow(args.mlflow)
    from trainscale.analysis.comm_report import is_comm_folder
    from trainscale.analysis.report import NoRunsError, write_report

    if is_comm_folder(Path(args.results)):
        raise UsageError(f"{args.results} is a trainscale comm folder: export takes training results")
    try:
        report = write_report(Path(args.results), Path(args.out) if args.out else None)
    except NoRunsError as e:
        raise UsageError(str(e)) from None
    export_mlflow(report, args.mlflow, args.experiment, [])
    return 0
