"""trainscale slurm render|submit: sbatch scripts for N nodes x G GPUs, and submitting one."""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path

from trainscale.scaling.cli import common as cli_common
from trainscale.scaling.cli.common import UsageError
from trainscale.scaling.cli.progress import console


HELP = "Slurm: render an sbatch script for N nodes x G GPUs, or submit one"


def register(sub) -> None:
    p = cli_common.add_subcommand(
        sub, "slurm", HELP,
        "trainscale slurm render --workload resnet50 --nodes 16 --gpus-per-node 8 --data-path /datasets/imagenet "
        "--output slurm/resnet50_128.sh")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=cli_common.OneLineParser)
    actions.required = True
    r = cli_common.add_subcommand(
        actions, "render", "write an sbatch script: srun starts one torchrun agent per node, c10d rendezvous "
                           "on the first node, results in a shared folder",
        "trainscale slurm render --workload resnet50 --nodes 2 --gpus-per-node 0 --nproc-per-node 1 "
        "--backend gloo --output smoke.sh -- --steps 20 --set model.width=0.125")
    r.add_argument("--workload", required=True, help="workload name")
    size = r.add_mutually_exclusive_group(required=True)
    size.add_argument("--nodes", type=int, help="one run on this many nodes (#SBATCH --nodes)")
    size.add_argument("--sweep-nodes", dest="sweep_nodes", metavar="N,N,...",
                      help="a campaign: one job of the largest count's nodes runs the scaling sweep over these node "
                           "counts (trainscale sweep --launcher slurm), resumed by itself when requeued")
    r.add_argument("--scaling", default="weak", choices=("weak", "strong"), help="a campaign's scaling mode")
    r.add_argument("--repeats", type=cli_common.positive_int, default=1, help="a campaign's runs per point")
    r.add_argument("--gpus-per-node", dest="gpus_per_node", type=int, required=True,
                   help="GPUs per node (0 for CPU nodes)")
    r.add_argument("--nproc-per-node", dest="nproc_per_node", type=cli_common.positive_int,
                   help="ranks per node (default: the GPUs per node, or 1 on CPU nodes)")
    r.add_argument("--cpus-per-task", dest="cpus_per_task", type=cli_common.positive_int,
                   help="CPUs for the node's task (default: 8 per rank)")
    r.add_argument("--parallel", default="ddp", help="parallel strategy")
    r.add_argument("--backend", choices=("gloo", "nccl"), help="default: nccl with GPUs, gloo without")
    r.add_argument("--time", default="01:00:00", help="time limit (#SBATCH --time)")
    r.add_argument("--job-name", dest="job_name", help="default: trainscale-WORKLOAD")
    r.add_argument("--partition", help="#SBATCH --partition")
    r.add_argument("--account", help="#SBATCH --account")
    r.add_argument("--exclusive", action="store_true", help="whole nodes only (#SBATCH --exclusive)")
    r.add_argument("--data-path", dest="data_path",
                   help="real image folder (DATA_PATH in the script; overridable from the environment)")
    r.add_argument("--results-dir", dest="results_dir",
                   help="shared results folder (default: $SLURM_SUBMIT_DIR/results)")
    r.add_argument("--rdzv-port", dest="rdzv_port", type=int, default=29400, help="c10d rendezvous port")
    r.add_argument("--steps", type=int, help="total steps, warmup included")
    r.add_argument("--warmup", type=int, help="steps excluded from the measured window")
    r.add_argument("--batch-size", dest="batch_size", type=int, help="batch size per data-parallel rank")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="run-spec override passed to trainscale run (repeatable)")
    r.add_argument("--unchecked", action="store_true",
                   help="pass workload, strategy and settings on without checking them against this "
                        "installation (for a cluster running a newer trainscale)")
    r.add_argument("--output", "-o", help="script file to write (default: print it)")
    r.add_argument("run_args", nargs="*", metavar="-- RUN_ARGS",
                   help="further `trainscale run` arguments, passed on quoted, after --")
    r.set_defaults(handler=handle_render)

    s = cli_common.add_subcommand(actions, "submit", "sbatch a script; with --wait, until the job ends",
                                  "trainscale slurm submit slurm/resnet50_cpu_smoke.sh --wait")
    s.add_argument("script", help="sbatch script")
    s.add_argument("--wait", action="store_true", help="wait for the job to end (sbatch --wait)")
    s.add_argument("--timeout", type=cli_common.finite_float, default=3600.0, help="seconds to wait with --wait")
    s.set_defaults(handler=handle_submit)


def _check_run_settings(args: argparse.Namespace, backend: str, nproc: int, points: list[int]) -> None:
    """The run-spec part, checked as far as it can be away from the cluster: names known here,
    settings that exist with values of the right type, the model and its parallel layout. Host checks
    (GPUs, data path) happen on the cluster, where `trainscale run` validates again before any
    process starts."""
    from trainscale.scaling.resolve import build, validate_portable
    from trainscale.scaling.strategies.registry import STRATEGIES
    from trainscale.workloads.registry import WORKLOADS

    for flag, name, registry in (("workload", args.workload, WORKLOADS), ("parallel", args.parallel, STRATEGIES)):
        if name not in registry:
            raise UsageError(f"unknown {registry.kind} {name!r} (known here: {', '.join(registry.names())}; "
                             "--unchecked passes it on)")
    if args.run_args:
        raise UsageError(f"extra run arguments {' '.join(args.run_args)!r} cannot be checked here; "
                         "use --set, or --unchecked")
    flags = {k: getattr(args, k) for k in ("steps", "warmup", "batch_size") if getattr(args, k) is not None}
    for nodes in points:
        validate_portable(build(None, {"workload": args.workload, "parallel": args.parallel, "backend": backend,
                                       "nodes": nodes, "nproc": nproc, **flags}, args.sets))


def handle_render(args: argparse.Namespace) -> int:
    from trainscale.launchers.slurm_script import SlurmJob, render

    if args.output:
        cli_common.writable_file(args.output, "--output")
    nproc = args.nproc_per_node if args.nproc_per_node is not None else max(1, args.gpus_per_node)
    backend = args.backend or ("nccl" if args.gpus_per_node > 0 else "gloo")
    sweep_nodes = cli_common.parse_int_list(args.sweep_nodes, "--sweep-nodes") if args.sweep_nodes else []
    nodes = max(sweep_nodes) if sweep_nodes else args.nodes
    if not args.unchecked:
        _check_run_settings(args, backend, nproc, sweep_nodes or [nodes])
    run_args = ["--parallel", args.parallel] if args.parallel != "ddp" else []
    for flag, value in (("--steps", args.steps), ("--warmup", args.warmup), ("--batch-size", args.batch_size)):
        if value is not None:
            run_args += [flag, str(value)]
    for item in args.sets:
        run_args += ["--set", item]
    run_args += args.run_args
    job = SlurmJob(workload=args.workload, nodes=nodes, gpus_per_node=args.gpus_per_node,
                   nproc_per_node=nproc, cpus_per_task=8 * nproc if args.cpus_per_task is None else args.cpus_per_task, time=args.time,
                   job_name=args.job_name or "trainscale-" + re.sub(r"[^A-Za-z0-9._-]", "_", args.workload)[:40], partition=args.partition,
                   account=args.account, exclusive=args.exclusive, results_dir=args.results_dir,
                   data_path=args.data_path, rdzv_port=args.rdzv_port, backend=backend, run_args=run_args,
                   rendered_by=args.argv[2:], sweep_nodes=sweep_nodes, scaling=args.scaling,
                   repeats=args.repeats)
    text = render(job)
    if args.output:
        from trainscale.scaling.results.files import write_text_atomic

        out = Path(args.output)
        write_text_atomic(out, text)
        out.chmod(0o755)
        what = f"a campaign over {args.sweep_nodes} node(s)" if sweep_nodes else f"{job.nodes} node(s)"
        console.print(f"wrote {out}: {what} x {job.nproc_per_node} rank(s), {backend}")
    else:
        print(text, end="")
    return 0


def handle_submit(args: argparse.Namespace) -> int:
    if shutil.which("sbatch") is None:
        raise UsageError("sbatch not found: Slurm is not installed here (tools/slurm-up.sh sets up a local "
                         "one-machine Slurm)")
    if not Path(args.script).is_file():
        raise UsageError(f"script not found: {args.script}")
    cmd = ["sbatch", "--parsable", *(["--wait"] if args.wait else []), args.script]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout if args.wait else 60)
    except subprocess.TimeoutExpired:
        raise UsageError(f"sbatch --wait did not return within {args.timeout:g} s") from None
    job = proc.stdout.strip().split(";")[0]
    if not job.isdigit():
        raise UsageError(f"sbatch refused {args.script}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    console.print(f"job {job}" + (f" ended with exit code {proc.returncode}" if args.wait else " submitted"))
    print(job)
    return 0 if proc.returncode == 0 else 1
