"""trainscale run: one benchmark run."""
from __future__ import annotations

import argparse

from . import cli_common
from .progress import LiveProgress, console


def register(sub) -> None:
    p = cli_common.add_subcommand(
        sub, "run", "run one benchmark (one world size)",
        "trainscale run --workload digits --nproc 2   (time to accuracy: digits' default target 0.97)\n  "
        "trainscale run --workload resnet50 --parallel ddp --launcher local --nproc 2 --steps 20 --warmup 5 "
        "--set model.width=0.25 --set model.resolution=64",
        description="run one benchmark (one world size)\n\n" + cli_common.MODES_HELP)
    cli_common.add_spec_flags(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from .runner import execute
    from .spec import resolve

    spec = resolve(args.config, cli_common.spec_flags(args), args.sets)
    label = f"{spec.workload} {spec.parallel} {spec.nodes}x{spec.nproc}"
    with LiveProgress() as live:
        task, on_progress = live.start_run(label, spec.steps)
        outcome = execute(spec, on_progress=on_progress)
        live.finish_run(task, label, outcome.summary)
    console.print(f"results: {outcome.run_dir}")
    print(outcome.run_dir)
    return 0 if outcome.ok else 1
