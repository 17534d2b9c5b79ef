"""trainscale sweep: runs over several world sizes, then the report."""
from __future__ import annotations

import argparse

from . import cli_common
from .progress import console


def register(sub) -> None:
    p = cli_common.add_subcommand(
        sub, "sweep", "scaling sweep over world sizes, ending in a report with plots",
        "trainscale sweep --workload resnet50 --nproc 1,2,4 --scaling weak --steps 20 --warmup 5 "
        "--set model.width=0.25 --set model.resolution=64\n  "
        "trainscale sweep --workload digits --nproc 1,2,4 --repeats 5   (time to accuracy, olympic mean)",
        description="scaling sweep over world sizes, ending in a report with plots\n\n" + cli_common.MODES_HELP)
    cli_common.add_spec_flags(p, lists=True)
    cli_common.add_launch_flags(p)
    p.add_argument("--scaling", default="weak", help="strong (fixed global batch) or weak (fixed per-rank batch)")
    p.add_argument("--global-batch-size", dest="global_batch", type=int,
                   help="strong scaling: the fixed global batch (default: batch size x smallest world size)")
    p.add_argument("--repeats", type=int, default=1, help="runs per world size, with seeds seed, seed+1, ...")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from .spec import resolve
    from .sweep import execute_sweep, parse_int_list, plan

    nprocs = parse_int_list(args.nproc, "--nproc")
    nodes = parse_int_list(args.nodes, "--nodes")
    flags = cli_common.spec_flags(args, skip=("nproc", "nodes"))
    # The base spec is validated at the largest size; plan() validates every point again.
    base = resolve(args.config, {**flags, "nproc": nprocs[-1], "nodes": nodes[-1]}, args.sets)
    points = plan(base, nprocs, nodes, args.scaling, args.repeats, args.global_batch)
    sweep_dir = execute_sweep(base, points, args.scaling)
    console.print(f"sweep: {sweep_dir}")
    if not args.no_report:
        from trainscale.analysis.report import print_report, write_report

        report = write_report(sweep_dir)
        print_report(report, console)
        console.print(f"report: {report.markdown}")
    print(sweep_dir)
    return 0
