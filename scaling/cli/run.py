"""trainscale run: one benchmark run."""
from __future__ import annotations

import argparse

from trainscale.scaling.cli import common as cli_common
from trainscale.scaling.cli.progress import LiveProgress, console


HELP = "run one benchmark (one world size)"


def register(sub) -> None:
    p = cli_common.add_subcommand(
        sub, "run", HELP,
        "trainscale run --workload digits --nproc 2   (time to accuracy: digits' default target 0.97)\n  "
        "trainscale run --workload resnet50 --parallel ddp --launcher local --nproc 2 --steps 20 --warmup 5 "
        "--set model.width=0.25 --set model.resolution=64",
        description="run one benchmark (one world size)\n\n" + cli_common.MODES_HELP)
    cli_common.add_spec_flags(p)
    cli_common.add_launch_flags(p)
    p.add_argument("--resume-from", dest="resume_from", metavar="CHECKPOINT",
                   help="start from a checkpoint (a stepNNNNNNNN folder, or a checkpoints folder: its newest) "
                        "written at any world size: DCP reshards the state, the data goes on after the samples "
                        "the saving run consumed (ddp, fsdp)")
    p.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="torchrun: print the command to run on each node, and run nothing")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from trainscale.scaling.orchestration.runner import execute
    from trainscale.scaling.resolve import resolve

    if args.dry_run and args.node_rank is None:
        args.node_rank = 0  # the dry run prints every node's command; any rank resolves the spec
    sets = list(args.sets or [])
    if args.resume_from:
        from pathlib import Path

        sets.append(f"checkpoint.resume_from={Path(args.resume_from).resolve()}")
    spec = resolve(args.config, cli_common.spec_flags(args), sets)
    cli_common.writable_folder(spec.out, "--out")
    if args.dry_run:
        if spec.launcher != "torchrun":
            raise cli_common.UsageError(f"--dry-run prints torchrun's per-node commands: it needs --launcher "
                                        f"torchrun, got {spec.launcher!r}")
        from trainscale.launchers.torchrun import dry_run

        print(dry_run(spec, args.argv[1:]))
        return 0
    with LiveProgress() as live:
        outcome = execute(spec, observer=live)
    if outcome.summary.get("gpu") is not None:
        from trainscale.analysis.gpu_telemetry import summary_line

        console.print(f"gpu: {summary_line(outcome.summary['gpu'])}")
    console.print(f"results: {outcome.run_dir}")
    print(outcome.run_dir)
    return 0 if outcome.ok else 1
