"""trainscale plan: capacity planning from measured scaling curves."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from trainscale.analysis.engine_goodput import LLAMA3_GPU_FAILURES_PER_DAY
from trainscale.scaling.cli import common as cli_common
from trainscale.scaling.cli.common import UsageError
from trainscale.scaling.cli.progress import console

DESCRIPTION = """\
Fits the step-time model (compute measured per device + exposed communication from the alpha-beta
collective fit of --comm, a ring over links of --link-bandwidth, or the ring all-reduce term fitted on
the runs) to the measured runs, then
per node count: predicted throughput and efficiency (labelled fitted or extrapolated; measured where
that world size was run), time to train, node-hours and cost, and with --mtbf-hours the expected
goodput under failures (job MTBF = node MTBF / nodes; checkpoint interval from Daly's formula, or
Young's with --interval young; restart and save times from --drills or --restart-s/--ckpt-save-s).
Marks the node count with the lowest cost meeting --deadline-hours, where efficiency falls below
--efficiency-threshold, and the time-vs-cost Pareto frontier. With --drills of several recovery engines
(an engines head-to-head campaign: torchrun, ray, slurm, torchft), each engine's measured recovery
costs give its modelled goodput per node count under a per-GPU failure rate (--gpu-failures-per-day,
default Llama 3's 419 interruptions in 54 days on 16,384 GPUs; the node MTBF with --mtbf-hours), and
the better engine is named per size. Writes plan.json, plan.md and plots
into --out (default RESULTS/plan); `trainscale report RESULTS --html FILE` includes the plan.
Model validation (with 3 or more measured world sizes): the model is also fitted on all but the largest
measured world size and predicts the largest; the error is reported (and, with --comm or
--link-bandwidth, the predicted time in collectives against the time measured inside them)."""


HELP = "capacity planning from measured curves: throughput, time, cost, goodput per node count"


def register(sub) -> None:
    p = cli_common.add_subcommand(
        sub, "plan", HELP,
        "trainscale plan results/sweep --nodes 8,16,32,64,128 --gpus-per-node 8 --cost-per-node-hour 98.32 "
        "--target-samples 1.2e9 --mtbf-hours 5000 --drills results/drills --comm results/comm --deadline-hours 72",
        description=DESCRIPTION)
    p.add_argument("results", help="a sweep folder (or run folder / folder of runs) of one strategy")
    p.add_argument("--nodes", required=True, help="node counts to plan for, comma-separated, e.g. 8,16,32,64,128")
    p.add_argument("--gpus-per-node", dest="gpus_per_node", type=int, default=1,
                   help="devices (ranks) per node; world size = nodes x this")
    p.add_argument("--cost-per-node-hour", dest="cost", type=cli_common.finite_float, help="price of one node for one hour")
    p.add_argument("--mtbf-hours", dest="mtbf", type=cli_common.finite_float, help="mean time between failures of ONE node, in hours")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-samples", dest="target_samples", type=cli_common.finite_float,
                        help="training samples (tokens for gpt) the job must process")
    target.add_argument("--target-accuracy", dest="target_accuracy", action="store_true",
                        help="plan to the accuracy target of the time-to-accuracy runs in RESULTS (their samples "
                             "to target)")
    comm = p.add_mutually_exclusive_group()
    comm.add_argument("--comm", help="a trainscale comm folder: its alpha-beta fits predict the collectives")
    comm.add_argument("--link-bandwidth", dest="link", metavar="RATE",
                      help="instead of --comm: a network of known link rate per direction (e.g. 100mbit, 25gbit; "
                           "a shaped emulated link or the planned cluster's NICs): collectives as a ring over it")
    p.add_argument("--drills", help="drill results (trainscale drill): restart and checkpoint-save times")
    p.add_argument("--gpu-failures-per-day", dest="gpu_rate", type=cli_common.finite_float,
                   help="failures per GPU per day for the recovery engines' projection (default "
                        f"{LLAMA3_GPU_FAILURES_PER_DAY:.3g}: 419 in 54 days on 16,384 GPUs)")
    p.add_argument("--restart-s", dest="restart_s", type=cli_common.finite_float,
                   help="restart time per failure in seconds (detection to restored), without --drills")
    p.add_argument("--ckpt-save-s", dest="save_s", type=cli_common.finite_float, help="checkpoint save time in seconds, without --drills")
    p.add_argument("--interval", default="daly", help="checkpoint interval formula: daly or young")
    p.add_argument("--deadline-hours", dest="deadline", type=cli_common.finite_float, help="the job must finish within this")
    p.add_argument("--efficiency-threshold", dest="threshold", type=cli_common.finite_float, default=0.8,
                   help="efficiency below which a node count is flagged")
    p.add_argument("--out", help="where plan.json, plan.md and the plots go (default: RESULTS/plan)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON on stdout")
    p.set_defaults(handler=handle)


def _positive(name: str, v: float | None, allow_zero: bool = False) -> None:
    if v is None:
        return
    ok = math.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        raise UsageError(f"{name} must be {'0 or more' if allow_zero else 'positive'}, got {v:g}")


def check_args(args: argparse.Namespace) -> list[int]:
    nodes = cli_common.parse_int_list(args.nodes, "--nodes")
    if args.gpus_per_node < 1:
        raise UsageError(f"--gpus-per-node must be at least 1, got {args.gpus_per_node}")
    _positive("--cost-per-node-hour", args.cost, allow_zero=True)
    _positive("--mtbf-hours", args.mtbf)
    _positive("--target-samples", args.target_samples)
    _positive("--gpu-failures-per-day", args.gpu_rate)
    if args.gpu_rate is not None and not args.drills:
        raise UsageError("--gpu-failures-per-day projects the recovery engines of --drills: give --drills")
    if args.gpu_rate is not None and args.mtbf is not None:
        raise UsageError("--gpu-failures-per-day and --mtbf-hours are two failure rates: give one")
    _positive("--restart-s", args.restart_s, allow_zero=True)
    _positive("--ckpt-save-s", args.save_s, allow_zero=True)
    _positive("--deadline-hours", args.deadline)
    if not 0 < args.threshold <= 1:
        raise UsageError(f"--efficiency-threshold must be in (0, 1], got {args.threshold:g}")
    if args.interval not in ("daly", "young"):
        raise UsageError(f"--interval must be daly or young, got {args.interval!r}")
    cli_common.results_folder(args.results)
    for flag, v in (("--comm", args.comm), ("--drills", args.drills)):
        if v is not None:
            cli_common.results_folder(v, f"{flag} folder")
    cli_common.writable_folder(args.out or Path(args.results) / "plan", "--out")
    if args.drills and (args.restart_s is not None or args.save_s is not None):
        raise UsageError("--restart-s/--ckpt-save-s replace --drills: give one or the other")
    if (args.restart_s is None) != (args.save_s is None):
        raise UsageError("--restart-s and --ckpt-save-s go together")
    if args.mtbf is not None and not args.drills and args.restart_s is None:
        raise UsageError("--mtbf-hours needs restart and checkpoint-save times: --drills DRILL_RESULTS, "
                         "or --restart-s and --ckpt-save-s")
    return nodes


def load_inputs(args: argparse.Namespace, nodes: list[int]):
    """The report, model data, collective model and plan inputs, or a UsageError naming what is wrong."""
    from trainscale.analysis.drills import DrillError, FailureInputs, failure_inputs, load_drills
    from trainscale.analysis.models import ModelError, scaling_data
    from trainscale.analysis.plan import PlanInputs
    from trainscale.analysis.report import NoRunsError, build

    try:
        report = build(Path(args.results))
        data = scaling_data(report)
    except (NoRunsError, ModelError) as e:
        raise UsageError(str(e)) from None
    comm_model = None
    if args.comm:
        from trainscale.analysis.collectives import CollectiveModel

        try:
            comm_model = CollectiveModel.load(Path(args.comm))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UsageError(f"--comm {args.comm}: not a trainscale comm folder with fits ({e})") from None
        if not comm_model.fits:
            raise UsageError(f"--comm {args.comm}: no alpha-beta fits in its results")
    if args.link:
        from trainscale.analysis.models import link_model
        from trainscale.launchers.namespaces import parse_rate
        from trainscale.scaling.spec import SpecError

        try:
            comm_model = link_model(parse_rate(args.link) / 8)
        except SpecError:
            raise UsageError(f"--link-bandwidth must look like 100mbit or 25gbit, got {args.link!r}") from None
    failures, engines = None, []
    if args.drills:
        from trainscale.analysis.engine_goodput import engine_costs

        try:
            engines, restart_drills = engine_costs(Path(args.drills))
            # The main table's failure model is the restart engines' (torchft has no checkpoint cadence).
            if restart_drills:
                failures = failure_inputs(restart_drills)
            elif args.mtbf is not None or not engines:
                load_drills(Path(args.drills))  # raises the DrillError that says why there is none
        except DrillError as e:
            raise UsageError(f"--drills: {e}") from None
    elif args.restart_s is not None:
        failures = FailureInputs(restart_s=args.restart_s, restart_basis="given (--restart-s)", save_s=args.save_s,
                                 save_basis="given (--ckpt-save-s)")
    inputs = PlanInputs(nodes=nodes, gpus_per_node=args.gpus_per_node, cost_per_node_hour=args.cost,
                        node_mtbf_hours=args.mtbf, target_samples=args.target_samples,
                        target_accuracy=args.target_accuracy, deadline_hours=args.deadline,
                        efficiency_threshold=args.threshold, interval_method=args.interval, failures=failures,
                        comm_source=str(Path(args.comm).resolve()) if args.comm else None, link_bandwidth=args.link,
                        drills_source=str(Path(args.drills).resolve()) if args.drills else None, engines=engines,
                        gpu_failures_per_day=args.gpu_rate or LLAMA3_GPU_FAILURES_PER_DAY)
    return report, data, comm_model, inputs


def handle(args: argparse.Namespace) -> int:
    nodes = check_args(args)
    from trainscale.analysis.plan import PlanError, build_plan, write_plan
    from trainscale.scaling.cli.tables import print_plan

    report, data, comm_model, inputs = load_inputs(args, nodes)
    try:
        plan = build_plan(report, data, inputs, comm_model)
    except PlanError as e:
        raise UsageError(str(e)) from None
    out = Path(args.out) if args.out else Path(args.results) / "plan"
    path = write_plan(plan, out)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2, default=str))
        return 0
    print_plan(plan, console)
    console.print(f"plan: {path}")
    return 0
