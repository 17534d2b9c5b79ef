"""trainscale drill: a throughput run with checkpoints and one injected fault, recovered by the
launcher's engine (torchrun's elastic agent; Ray Train's FailureConfig with --launcher ray; Slurm's
requeue with --launcher slurm, run inside an sbatch job: faults/slurm_requeue.py), and the recovery timeline, checkpoint cost, goodput
and optimal checkpoint intervals of it (faults/drill.py)."""
from __future__ import annotations

import argparse

import numpy as np

from trainscale.scaling.cli import common as cli_common
from trainscale.scaling.cli.progress import LiveProgress, console

DRILL_FAULTS = ("kill-rank", "kill-node", "hang", "slow", "ckpt-corrupt", "partition", "exception")


def register(sub) -> None:
    p = cli_common.add_subcommand(
        sub, "drill", "inject a fault into a checkpointed run and time the recovery",
        "trainscale drill --fault kill-rank --at-step 12 --ckpt-every 5 --workload gpt --set model.preset=tiny "
        "--nproc 2 --steps 30 --warmup 2 --batch-size 4",
        description=__doc__)
    g = p.add_argument_group("drill")
    g.add_argument("--fault", required=True, choices=DRILL_FAULTS,
                   help="kill-rank: SIGKILL a rank; hang: SIGSTOP a rank (found by the collective timeout); "
                        "slow: a straggler rank; ckpt-corrupt: truncate the newest checkpoint, then SIGKILL; "
                        "exception: a rank raises")
    when = g.add_mutually_exclusive_group()
    when.add_argument("--at-step", dest="at_step", type=int, help="fire before this step (0-based)")
    when.add_argument("--at-time", dest="at_time", type=float,
                      help="fire at the first step starting this many seconds after run_start")
    when.add_argument("--random", action="store_true",
                      help="draw the time from an exponential with mean --mtbf-s and the rank uniformly, "
                           "both from --seed (recorded)")
    g.add_argument("--rank", type=int, help="the faulty rank (default: the last rank)")
    g.add_argument("--node", type=int, help="kill-node: the node whose ranks die (default: the last node)")
    g.add_argument("--ckpt-every", dest="ckpt_every", type=int, default=5, help="checkpoint every C steps (0: off)")
    g.add_argument("--ckpt-every-s", dest="ckpt_every_s", type=float, default=0.0,
                   help="checkpoint at the first step boundary T seconds after the last save (0: off)")
    g.add_argument("--async-ckpt", dest="async_ckpt", action="store_true", help="dcp.async_save")
    g.add_argument("--detect-timeout", dest="detect_timeout", type=float,
                   help="collective timeout in seconds, how a hang is detected (default 10 for hang)")
    g.add_argument("--partition-s", dest="partition_s", type=float, default=6.0,
                   help="partition: seconds the link stays down (longer than --detect-timeout to force a restart)")
    g.add_argument("--slow-factor", dest="slow_factor", type=float, default=3.0, help="slow: the straggler's slowdown")
    g.add_argument("--mtbf-s", dest="mtbf_s", type=float, default=3600.0,
                   help="mean time between failures: for --random and for Young's/Daly's intervals")
    g.add_argument("--max-requeues", dest="max_requeues", type=int, default=1,
                   help="--launcher slurm: times a failed attempt requeues the job (scontrol requeue)")
    cli_common.add_spec_flags(p)
    cli_common.add_launch_flags(p)
    p.set_defaults(handler=handle)


def drill_sets(args: argparse.Namespace, world_size: int, steps_hint: int) -> tuple[list[str], dict | None]:
    """--set items the drill flags stand for (before the user's own --set), and the random draw."""
    if args.mtbf_s <= 0:
        raise cli_common.UsageError(f"--mtbf-s must be positive, got {args.mtbf_s}")
    rank = args.rank if args.rank is not None else world_size - 1
    node = args.node if args.node is not None else max(0, (args.nodes or 1) - 1)
    sets = [f"fault.kind={args.fault}", f"fault.rank={rank}", f"fault.node={node}", "comm.no_sync_steps=0",
            f"checkpoint.every_steps={args.ckpt_every}", f"checkpoint.every_s={args.ckpt_every_s}",
            f"checkpoint.async_save={str(args.async_ckpt).lower()}", f"fault.slow_factor={args.slow_factor}",
            f"fault.partition_s={args.partition_s}"]
    draw = None
    if args.random:
        rng = np.random.default_rng(args.seed or 0)
        at_time = float(rng.exponential(args.mtbf_s))
        rank = int(rng.integers(world_size))
        draw = {"seed": args.seed or 0, "mtbf_s": args.mtbf_s, "at_time_s": at_time, "rank": rank}
        sets += [f"fault.at_time_s={at_time}", f"fault.rank={rank}"]
    elif args.at_time is not None:
        if args.at_time < 0:
            raise cli_common.UsageError(f"--at-time must be 0 or more, got {args.at_time}")
        sets.append(f"fault.at_time_s={args.at_time}")
    else:
        sets.append(f"fault.at_step={args.at_step if args.at_step is not None else steps_hint // 2}")
    if args.fault != "slow":
        sets.append("launch.max_restarts=1")
    timeout = args.detect_timeout if args.detect_timeout is not None else (10.0 if args.fault in ("hang", "partition") else 0.0)
    if timeout < 0:
        raise cli_common.UsageError(f"--detect-timeout must be 0 or more, got {timeout}")
    sets.append(f"fault.detect_timeout_s={timeout}")
    return sets, draw


def handle(args: argparse.Namespace) -> int:
    from trainscale.faults.drill import drill_summary, fmt_seconds, record

    from trainscale.scaling.orchestration.runner import execute
    from trainscale.scaling.spec import resolve

    if args.launcher == "slurm":
        return handle_slurm(args)
    flags = cli_common.spec_flags(args)
    base = resolve(args.config, flags, args.sets)  # the world size and steps the drill flags depend on
    sets, draw = drill_sets(args, base.world_size, base.steps)
    spec = resolve(args.config, flags, sets + args.sets)
    if spec.launcher not in ("local", "ray"):
        raise cli_common.UsageError(f"drill recovers through torchrun's elastic agent (--launcher local), Ray "
                                    f"Train's FailureConfig (--launcher ray) or Slurm's requeue (--launcher slurm), "
                                    f"got {spec.launcher!r}")
    if spec.launcher == "ray" and spec.fault.kind == "hang":
        raise cli_common.UsageError("drill --fault hang needs --launcher local (Ray Train has no stopped-worker "
                                    "handling here)")
    if spec.nodes > 1 and spec.launcher != "local":
        raise cli_common.UsageError(f"multi-node drills run on an emulated cluster (--launcher local), "
                                    f"got --launcher {spec.launcher!r}")
    label = f"drill {spec.fault.kind} {spec.workload} {spec.parallel} x{spec.nproc}"
    with LiveProgress() as live:
        task, on_progress = live.start_run(label, spec.steps)
        outcome = execute(spec, on_progress=on_progress)
        live.finish_run(task, label, outcome.summary)
    summary = record(outcome.run_dir, drill_summary(outcome.run_dir, spec, args.mtbf_s, draw))
    for r in summary["recovery"]:
        console.print(f"recovery from {r['fault']} at step {r['step']}: detection {fmt_seconds(r['detection_s'])}, "
                      f"total {fmt_seconds(r['total_s'])} (resumed at step {r.get('resumed_step')})")
    g = summary["goodput"]
    if g.get("ettr") is not None:
        console.print(f"ETTR {g['ettr']:.3f}; report: {outcome.run_dir / 'drill_report.md'}")
    print(outcome.run_dir)
    return 0 if outcome.ok else 1


def handle_slurm(args: argparse.Namespace) -> int:
    """One attempt of a drill job under Slurm: run with no agent restarts into OUT/job<ID>-<N>; a failed
    attempt requeues the job (up to --max-requeues times); the attempt that ends it merges all
    attempts into OUT/job<ID> and writes the drill record there."""
    import time
    from pathlib import Path

    from trainscale.faults import slurm_requeue
    from trainscale.faults.drill import drill_summary, fmt_seconds, record

    from trainscale.scaling.orchestration.runner import execute
    from trainscale.scaling.spec import resolve

    cli_start = time.monotonic()
    if args.max_requeues < 0:
        raise cli_common.UsageError(f"--max-requeues must be 0 or more, got {args.max_requeues}")
    try:
        job, restart = slurm_requeue.current_attempt()
    except slurm_requeue.NotInSlurmJob as e:
        raise cli_common.UsageError(str(e)) from None
    args.launcher = "local"  # each attempt: torchrun on this Slurm node, restarts left to Slurm
    flags = cli_common.spec_flags(args)
    base = resolve(args.config, flags, args.sets)
    if base.nodes > 1:
        raise cli_common.UsageError(f"drill --launcher slurm runs on one Slurm node, got --nodes {base.nodes}")
    if args.fault == "slow":
        raise cli_common.UsageError("drill --launcher slurm needs a fault that stops the run, got 'slow'")
    out = Path(base.out)
    job_folder = slurm_requeue.job_dir(out, job)
    sets, draw = drill_sets(args, base.world_size, base.steps)
    spec = resolve(args.config, flags, sets + slurm_requeue.attempt_sets(job_folder) + args.sets)
    run_dir = slurm_requeue.attempt_dir(out, job, restart)
    if run_dir.exists():
        raise cli_common.UsageError(f"results folder {run_dir} already exists: attempt {restart} of job {job} ran")
    job_folder.mkdir(parents=True, exist_ok=True)
    console.print(f"drill job {job} attempt {restart} (SLURM_RESTART_COUNT={restart}): {run_dir}")
    label = f"drill {spec.fault.kind} {spec.workload} {spec.parallel} x{spec.nproc} (Slurm attempt {restart})"
    with LiveProgress() as live:
        task, on_progress = live.start_run(label, spec.steps)
        outcome = execute(spec, run_dir, on_progress=on_progress)
        live.finish_run(task, label, outcome.summary)
    if not outcome.ok and restart < args.max_requeues:
        console.print(f"attempt {restart} failed ({outcome.summary.get('reason')}); requeueing job {job}")
        slurm_requeue.record_attempt(run_dir, job, restart, cli_start, time.monotonic())
        slurm_requeue.requeue(job)
        return 1
    slurm_requeue.record_attempt(run_dir, job, restart, cli_start, None)
    attempts = slurm_requeue.attempt_dirs(out, job)
    slurm_requeue.merge_attempts(attempts, job_folder)
    drill = drill_summary(job_folder, spec, args.mtbf_s, draw)
    drill["drill"].update(slurm_requeue.engine_facts(args.max_requeues, attempts))
    for r, phases in zip(drill["recovery"], slurm_requeue.requeue_phases(attempts)):
        r["slurm_requeue"] = phases  # restart_s split: to the requeue, Slurm's wait and start, torchrun's spawn
    summary = record(job_folder, drill)
    for r in summary["recovery"]:
        console.print(f"recovery from {r['fault']} at step {r['step']} through Slurm requeue: detection "
                      f"{fmt_seconds(r['detection_s'])}, total {fmt_seconds(r['total_s'])} "
                      f"(resumed at step {r.get('resumed_step')})")
    print(job_folder)
    return 0 if outcome.ok else 1
