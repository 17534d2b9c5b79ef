"""trainscale drill: a throughput run with checkpoints and one injected fault, recovered by the
launcher's engine (torchrun's elastic agent; Ray Train's FailureConfig with --launcher ray; Slurm's
requeue with --launcher slurm, run inside an sbatch job), and the recovery timeline, checkpoint cost,
goodput and optimal checkpoint intervals of it (faults/drill.py)."""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from typing import TYPE_CHECKING

from trainscale.scaling.cli import common as cli_common
from trainscale.scaling.cli.progress import LiveProgress, console

if TYPE_CHECKING:
    from trainscale.faults.plan import DrillPlan


HELP = "inject a fault into a checkpointed run and time the recovery"


def register(sub) -> None:
    from trainscale.faults.kinds import FAULT_KINDS
    from trainscale.faults.plan import DrillPlan

    p = cli_common.add_subcommand(
        sub, "drill", HELP,
        "trainscale drill --fault kill-rank --at-step 12 --ckpt-every 5 --workload gpt --set model.preset=tiny "
        "--nproc 2 --steps 30 --warmup 2 --batch-size 4",
        description=__doc__)
    g = p.add_argument_group("drill")
    what = g.add_mutually_exclusive_group(required=True)
    what.add_argument("--fault", choices=FAULT_KINDS.names(), help=FAULT_KINDS.help())
    what.add_argument("--faults", type=int, help="a failure trace of N faults: a Poisson process in run time "
                                                 "(mean gap --mtbf-s) drawn from --seed, written as fault_trace.json")
    what.add_argument("--trace", help="replay a fault_trace.json exactly")
    g.add_argument("--fault-mix", dest="fault_mix",
                   help="--faults: weights of the kinds, e.g. kill-rank=3,exception=1 (default: the Llama 3 405B "
                        "interruption causes, docs/failure-campaigns.md)")
    when = g.add_mutually_exclusive_group()
    when.add_argument("--at-step", dest="at_step", type=int, help="fire before this step (0-based)")
    when.add_argument("--at-time", dest="at_time", type=cli_common.finite_float,
                      help="fire at the first step starting this many seconds after run_start")
    when.add_argument("--random", action="store_true",
                      help="draw the time from an exponential with mean --mtbf-s and the rank uniformly, "
                           "both from --seed (recorded)")
    g.add_argument("--rank", type=int, help="the faulty rank (default: the last rank)")
    g.add_argument("--node", type=int, help="kill-node: the node whose ranks die (default: the last node)")
    g.add_argument("--engine", help="the recovery engine: torchrun, ray, slurm or torchft (pip install "
                                    "'trainscale[torchft]'); a comma list (torchrun,torchft) runs the same workload "
                                    "and trace under each and writes a comparison (default: the --launcher's engine)")
    g.add_argument("--ckpt-every", dest="ckpt_every", type=int,
                   help=f"checkpoint every C steps (0: off; default {DrillPlan.ckpt_every}, under torchft 0: it "
                        "recovers from a live peer)")
    g.add_argument("--ckpt-every-s", dest="ckpt_every_s", type=cli_common.finite_float, default=0.0,
                   help="checkpoint at the first step boundary T seconds after the last save (0: off)")
    g.add_argument("--async-ckpt", dest="async_ckpt", action="store_true", help="dcp.async_save")
    g.add_argument("--detect-timeout", dest="detect_timeout", type=cli_common.finite_float,
                   help="collective timeout in seconds, how a hang is detected (default 10 for hang)")
    g.add_argument("--partition-s", dest="partition_s", type=cli_common.finite_float, default=DrillPlan.partition_s,
                   help="partition: seconds the link stays down (longer than --detect-timeout to force a restart)")
    g.add_argument("--slow-factor", dest="slow_factor", type=cli_common.finite_float, default=DrillPlan.slow_factor,
                   help="slow: the straggler's slowdown")
    g.add_argument("--mtbf-s", dest="mtbf_s", type=cli_common.finite_float, default=DrillPlan.mtbf_s,
                   help="mean time between failures: for --random and for Young's/Daly's intervals")
    g.add_argument("--max-requeues", dest="max_requeues", type=int, default=1,
                   help="--launcher slurm: times a failed attempt requeues the job (scontrol requeue)")
    cli_common.add_spec_flags(p)
    cli_common.add_launch_flags(p)
    p.set_defaults(handler=handle)


def drill_plan(args: argparse.Namespace) -> DrillPlan:
    from trainscale.faults.plan import DrillPlan

    return DrillPlan(fault=args.fault or "", trace=args.trace or "", rank=args.rank, node=args.node,
                     at_step=args.at_step, at_time_s=args.at_time, random=args.random, seed=args.seed or 0,
                     mtbf_s=args.mtbf_s, ckpt_every=ckpt_every(args, args.launcher),
                     ckpt_every_s=args.ckpt_every_s, async_ckpt=args.async_ckpt, detect_timeout_s=args.detect_timeout,
                     partition_s=args.partition_s, slow_factor=args.slow_factor)


def ckpt_every(args: argparse.Namespace, launcher: str | None) -> int:
    from trainscale.faults.kinds import TORCHFT
    from trainscale.faults.plan import DrillPlan

    if args.ckpt_every is not None:
        return args.ckpt_every
    return 0 if launcher == TORCHFT else DrillPlan.ckpt_every


def engines_of(args: argparse.Namespace) -> list[str]:
    """--engine as a list, each engine checked; --launcher set to a single engine's launcher."""
    from trainscale.faults.head_to_head import ENGINE_LAUNCHERS

    if not args.engine:
        return []
    engines = [e.strip() for e in args.engine.split(",")]
    for e in engines:
        if e not in ENGINE_LAUNCHERS:
            raise cli_common.UsageError(f"--engine: unknown engine {e!r} (choose from {', '.join(ENGINE_LAUNCHERS)})")
    if len(set(engines)) != len(engines):
        raise cli_common.UsageError(f"--engine names an engine twice: {args.engine!r}")
    if args.launcher and (len(engines) > 1 or ENGINE_LAUNCHERS[engines[0]] != args.launcher):
        raise cli_common.UsageError(f"--engine {args.engine} chooses the launcher: drop --launcher {args.launcher}")
    if len(engines) == 1:
        args.launcher = ENGINE_LAUNCHERS[engines[0]]
    return engines


def drill_spec(args: argparse.Namespace, plan: DrillPlan, extra: dict | None = None):
    """The drill's run spec: the plan's settings under the user's flags and --set; and the random draw."""
    from trainscale.scaling.resolve import resolve
    from trainscale.scaling.spec import deep_merge

    flags = cli_common.spec_flags(args)
    base = resolve(args.config, flags, args.sets)  # the world size and steps the plan depends on
    if args.faults is not None:  # draw the trace; the run keeps its copy (fault_trace.json)
        from trainscale.faults import trace as fault_trace

        mix = fault_trace.parse_mix(args.fault_mix) if args.fault_mix else None
        drawn = fault_trace.draw(args.faults, plan.mtbf_s, plan.seed, base.world_size, base.nodes, mix)
        cli_common.writable_folder(base.out, "--out")
        Path(base.out).mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".fault_trace-", suffix=".json", dir=base.out)
        os.close(fd)
        plan.trace = str(drawn.write(Path(name)))
    elif args.fault_mix:
        raise cli_common.UsageError("--fault-mix weights a drawn trace: it needs --faults N")
    settings, draw = plan.settings(base.world_size, base.nodes, base.steps)
    return resolve(args.config, deep_merge(deep_merge(settings, extra or {}), flags), args.sets), draw


def handle(args: argparse.Namespace) -> int:
    from trainscale.faults import drill
    from trainscale.launchers.registry import LAUNCHERS

    engines = engines_of(args)
    if len(engines) > 1:
        return handle_head_to_head(args, engines)
    plan = drill_plan(args)
    if args.launcher == "slurm":
        if not args.fault:
            raise cli_common.UsageError("drill --launcher slurm injects one fault (--fault); traces "
                                        "(--faults, --trace) run under --launcher local or ray")
        return handle_slurm(args, plan)
    try:
        spec, draw = drill_spec(args, plan)
        cli_common.writable_folder(spec.out, "--out")
        launcher = LAUNCHERS.get(spec.launcher)
        drill.check_engine(spec, launcher.engine)
        with LiveProgress() as live:
            outcome, summary = drill.run(spec, launcher.engine_label, plan.mtbf_s, draw, observer=live)
    finally:
        if args.faults is not None and plan.trace:
            Path(plan.trace).unlink(missing_ok=True)  # a drawn trace: the run folder holds its copy
    for r in summary["recovery"]:
        if summary.get("torchft"):
            console.print(f"{r['fault']} of replica group {r['group']} at step {r['step']}: the healthy groups "
                          f"stalled {drill.fmt_seconds(r['stall_s'])}, the group was back (healed to step "
                          f"{r['healed_to_step']}) after {drill.fmt_seconds(r['rejoin_s'])}"
                          + ("" if r.get("process_restarted", True) else " without a restart"))
            continue
        console.print(f"recovery from {r['fault']} at step {r['step']}: detection {drill.fmt_seconds(r['detection_s'])}, "
                      f"total {drill.fmt_seconds(r['total_s'])} (resumed at step {r.get('resumed_step')})")
    g = summary["goodput"]
    if g.get("ettr") is not None:
        console.print(f"ETTR {g['ettr']:.3f}; report: {outcome.run_dir / drill.REPORT}")
    print(outcome.run_dir)
    return 0 if outcome.ok else 1


def handle_slurm(args: argparse.Namespace, plan: DrillPlan) -> int:
    """One attempt of a drill job under Slurm (faults/slurm_requeue.py)."""
    from trainscale.faults import drill, slurm_requeue

    started = time.monotonic()
    if args.max_requeues < 0:
        raise cli_common.UsageError(f"--max-requeues must be 0 or more, got {args.max_requeues}")
    from trainscale.scaling.resolve import resolve

    args.launcher = "local"  # each attempt: torchrun on this Slurm node, restarts left to Slurm
    try:
        attempt = slurm_requeue.Attempt.current(resolve(args.config, cli_common.spec_flags(args), args.sets).out,
                                                started)
    except slurm_requeue.NotInSlurmJob as e:
        raise cli_common.UsageError(str(e)) from None
    spec, draw = drill_spec(args, plan, attempt.settings())
    cli_common.writable_folder(spec.out, "--out")
    drill.check_engine(spec, slurm_requeue.ENGINE_NAME)
    if spec.nodes > 1:
        raise cli_common.UsageError(f"drill --launcher slurm runs on one Slurm node, got --nodes {spec.nodes}")
    console.print(f"drill job {attempt.job} attempt {attempt.restart} (SLURM_RESTART_COUNT={attempt.restart}): "
                  f"{attempt.run_dir}")
    with LiveProgress() as live:
        result = slurm_requeue.run_attempt(attempt, spec, args.max_requeues, plan.mtbf_s, draw, observer=live)
    if result.requeued:
        console.print(f"attempt {attempt.restart} failed ({result.outcome.summary.get('reason')}); "
                      f"requeued job {attempt.job}")
        return 1
    for r in result.summary["recovery"]:
        console.print(f"recovery from {r['fault']} at step {r['step']} through Slurm requeue: detection "
                      f"{drill.fmt_seconds(r['detection_s'])}, total {drill.fmt_seconds(r['total_s'])} "
                      f"(resumed at step {r.get('resumed_step')})")
    print(attempt.job_folder)
    return 0 if result.outcome.ok else 1


def handle_head_to_head(args: argparse.Namespace, engines: list[str]) -> int:
    """The same workload and the same trace under each engine, then their comparison
    (faults/head_to_head.py): OUT/<time>-engines-<workload>/<engine>/ and comparison.md there."""
    import dataclasses

    from trainscale.faults import drill, head_to_head
    from trainscale.faults.kinds import TORCHFT
    from trainscale.launchers.registry import LAUNCHERS
    from trainscale.scaling.orchestration.folders import new_run_dir, timestamp

    if "slurm" in engines:
        raise cli_common.UsageError("--engine slurm runs one fault inside an sbatch job: compare torchrun, ray "
                                    "and torchft head to head")
    if args.faults is None and not args.trace:
        raise cli_common.UsageError("engines head to head run the same failure trace: --faults N or --trace FILE")
    plan = drill_plan(args)
    drawn = args.faults is not None  # a temporary file the run folders copy, removed at the end
    specs = {}
    try:
        for engine in engines:  # every spec checked before anything runs
            args.launcher = head_to_head.ENGINE_LAUNCHERS[engine]
            # --ckpt-every is the restart engines' cadence; torchft recovers from a live peer instead.
            engine_plan = dataclasses.replace(plan, ckpt_every=0 if engine == TORCHFT else ckpt_every(args, args.launcher))
            specs[engine], _draw = drill_spec(args, engine_plan)
            if args.faults is not None:  # drawn once: the other engines replay it
                plan.trace, args.faults, args.fault_mix = engine_plan.trace, None, None
            drill.check_engine(specs[engine], LAUNCHERS.get(specs[engine].launcher).engine)
        first = specs[engines[0]]
        cli_common.writable_folder(first.out, "--out")
        campaign = new_run_dir(Path(first.out), f"{timestamp()}-engines-{first.workload}")
        runs = {}
        with LiveProgress(total_runs=len(engines)) as live:
            for engine, spec in specs.items():
                launcher = LAUNCHERS.get(spec.launcher)
                outcome, _summary = drill.run(spec, launcher.engine_label, plan.mtbf_s, None, observer=live,
                                              run_dir=campaign / engine)
                runs[engine] = outcome.run_dir
        trace = runs[engines[0]] / "fault_trace.json"
        comparison = head_to_head.compare(campaign, runs, trace)
    finally:
        if drawn and plan.trace:
            Path(plan.trace).unlink(missing_ok=True)  # each run folder holds its copy
    from rich.table import Table

    table = Table(title="recovery engines head to head (same trace)")
    for head in head_to_head.TABLE_HEAD:
        table.add_column(head)
    for row in head_to_head.table_rows(comparison):
        table.add_row(*row)
    console.print(table)
    console.print(f"comparison: {campaign / head_to_head.COMPARISON_MD}")
    print(campaign)
    return 0 if all(e["status"] == "ok" for e in comparison["engines"]) else 1
