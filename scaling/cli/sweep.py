"""trainscale sweep: runs over several world sizes, then the report."""
from __future__ import annotations

import argparse
from pathlib import Path

from trainscale.scaling.cli import common as cli_common
from trainscale.scaling.cli.progress import LiveProgress, console


HELP = "scaling sweep over world sizes, ending in a report with plots"


def register(sub) -> None:
    p = cli_common.add_subcommand(
        sub, "sweep", HELP,
        "trainscale sweep --workload resnet50 --nproc 1,2,4 --scaling weak --steps 20 --warmup 5 "
        "--set model.width=0.25 --set model.resolution=64\n  "
        "trainscale sweep --workload digits --nproc 1,2,4 --repeats 5   (time to accuracy, olympic mean)\n  "
        "trainscale sweep --workload gpt --parallel ddp,fsdp,tp,pp --nproc 2,4 --scaling strong --batch-size 8 "
        "--set model.preset=tiny --set model.tie_embeddings=false   # compare strategies",
        description="scaling sweep over world sizes, ending in a report with plots\n\n" + cli_common.MODES_HELP)
    cli_common.add_spec_flags(p, lists=True)
    cli_common.add_launch_flags(p)
    p.add_argument("--scaling", default="weak", help="strong (fixed global batch) or weak (fixed per-rank batch)")
    p.add_argument("--global-batch-size", dest="global_batch", type=cli_common.positive_int,
                   help="strong scaling: the fixed global batch (default: batch size x smallest world size)")
    p.add_argument("--repeats", type=int, default=1, help="runs per world size, with seeds seed, seed+1, ...")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    g = p.add_argument_group("stopping and resuming")
    g.add_argument("--resume", metavar="SWEEP_DIR",
                   help="continue a stopped sweep with its recorded plan (its finished points stay as they are; "
                        "the flags that plan a sweep are not used)")
    g.add_argument("--sweep-dir", dest="sweep_dir", metavar="DIR",
                   help="the sweep's folder: made for a new sweep, resumed when it already holds one (a requeued "
                        "batch job continues its own sweep; default: a new folder under --out)")
    p.set_defaults(handler=handle)


def parse_strategies(text: str | None) -> list[str | None]:
    """``ddp,fsdp`` -> ["ddp", "fsdp"]; no flag -> [None] (the config file's or the default strategy)."""
    if text is None:
        return [None]
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        from trainscale.scaling.spec import SpecError

        raise SpecError(f"--parallel is empty: {text!r}")
    return names


def unused_degrees(parallel: str | None) -> tuple[str, ...]:
    """--tp and --pp flags apply to the strategies that have that dimension (a sweep comparing ddp and
    tp with --tp 2 gives ddp no tensor-parallel degree)."""
    from trainscale.scaling.strategies.registry import STRATEGIES

    if parallel is None or parallel not in STRATEGIES:
        return ()
    return tuple(d for d in ("tp", "pp") if d not in STRATEGIES.get(parallel).dims)


def handle(args: argparse.Namespace) -> int:
    from trainscale.scaling.orchestration.sweep import execute_sweep, plan, resume_sweep
    from trainscale.scaling.resolve import resolve
    from trainscale.scaling.results import schema

    resume = args.resume or (args.sweep_dir if args.sweep_dir and (Path(args.sweep_dir) / schema.SWEEP_INDEX).exists()
                             else None)
    if resume:
        folder = cli_common.results_folder(resume, "sweep folder")
        with LiveProgress() as live:
            kept, ran = resume_sweep(folder, observer=live)
        console.print(f"resumed {folder}: {len(kept)} finished point(s) kept, {len(ran)} run")
        return _finish(folder, args)
    if args.sweep_dir:
        cli_common.writable_folder(args.sweep_dir, "--sweep-dir")
    nprocs = cli_common.parse_int_list(args.nproc, "--nproc")
    nodes = cli_common.parse_int_list(args.nodes, "--nodes")
    strategies = parse_strategies(args.parallel)
    bases = []
    for parallel in strategies:
        flags = cli_common.spec_flags(args, skip=("nproc", "nodes", "parallel", *unused_degrees(parallel)))
        if parallel is not None:
            flags["parallel"] = parallel
        # Each base spec is validated at the largest size; plan() validates every point again.
        bases.append(resolve(args.config, {**flags, "nproc": nprocs[-1], "nodes": nodes[-1]}, args.sets))
    points = plan(bases, nprocs, nodes, args.scaling, args.repeats, args.global_batch)
    cli_common.writable_folder(bases[0].out, "--out")
    with LiveProgress(total_runs=len(points)) as live:
        sweep_dir = execute_sweep(bases[0], points, args.scaling, observer=live,
                                  sweep_dir=Path(args.sweep_dir) if args.sweep_dir else None)
    console.print(f"sweep: {sweep_dir}")
    return _finish(sweep_dir, args)


def _finish(sweep_dir: Path, args: argparse.Namespace) -> int:
    if not args.no_report:
        from trainscale.analysis.report import write_report
        from trainscale.scaling.cli.tables import print_report

        report = write_report(sweep_dir)
        print_report(report, console)
        console.print(f"report: {report.markdown}")
    print(sweep_dir)
    return 0
