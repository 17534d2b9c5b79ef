"""trainscale comm: nccl-tests-style collective sweeps over torch.distributed (gloo or NCCL)."""
from __future__ import annotations

import argparse
import json
import sys

from trainscale.scaling.cli import common as cli_common
from trainscale.scaling.cli.progress import LiveProgress, console, styled

EPILOG_NOTE = ("Sizes take K/M/G suffixes (powers of 1024, as nccl-tests); bandwidths are GB/s with GB = 1e9 B. "
               "Exit 0: all sizes ran and every result element passed the check; 1: a launch failed or a "
               "result was wrong; 2: bad input.")


HELP = "collective bandwidth sweep (nccl-tests style) with a correctness check and alpha-beta fit"


def register(sub) -> None:
    p = cli_common.add_subcommand(
        sub, "comm", HELP,
        "trainscale comm --op all_reduce -b 1K -e 64M -f 2 --nproc 2", description=(
            "Sweeps message sizes for torch.distributed collectives and prints, per size: time (mean, p50, "
            "p99), algbw, busbw and #wrong, like nccl-tests. " + EPILOG_NOTE))
    from trainscale.scaling.results.collectives import COLLECTIVES

    p.add_argument("--op", default="all_reduce",
                   help=f"comma-separated, or all: {COLLECTIVES.help()}")
    p.add_argument("-b", "--minbytes", default="1K", help="smallest message size")
    p.add_argument("-e", "--maxbytes", default="64M", help="largest message size")
    p.add_argument("-f", "--stepfactor", default="2", help="multiply the size by this between steps")
    p.add_argument("-n", "--iters", default="20", help="timed iterations per size")
    p.add_argument("-w", "--warmup_iters", "--warmup-iters", dest="warmup_iters", default="5",
                   help="untimed iterations per size, before the timed ones")
    p.add_argument("-d", "--dtype", default="float32",
                   help="float32, float64, float16, bfloat16, int8, uint8, int32, int64")
    p.add_argument("-r", "--root", default="0",
                   help=f"root rank of {', '.join(o.name for o in COLLECTIVES if o.rooted)}")
    p.add_argument("--nproc", default="2", help="world sizes (processes on this machine), comma-separated")
    p.add_argument("--backend", default="gloo", help="gloo (CPU) or nccl (CUDA GPUs)")
    p.add_argument("--threads-per-rank", dest="threads_per_rank", default="0",
                   help="CPU threads per process; 0: usable cores / processes")
    p.add_argument("--timeout", default="600", help="seconds before a launch is killed and failed")
    p.add_argument("--out", default="results", help="folder under which the results folder is made")
    p.add_argument("--json", action="store_true",
                   help="print the results (same fields as the table, plus fits and provenance) as JSON")
    p.add_argument("--corrupt-rank", dest="corrupt_rank", default="-1",
                   help="testing the check: this rank changes one element of every result before checking it")
    p.set_defaults(handler=handle)


def _int(text: str, flag: str) -> int:
    from trainscale.scaling.spec import SpecError

    try:
        return int(str(text).strip())
    except ValueError:
        raise SpecError(f"{flag} must be an integer, got {text!r}") from None


def _float(text: str, flag: str) -> float:
    from trainscale.scaling.spec import SpecError

    try:
        return cli_common.finite_float(text)
    except argparse.ArgumentTypeError as e:
        raise SpecError(f"{flag} {e}") from None


def spec_from_args(args: argparse.Namespace):
    from trainscale.scaling.comm.spec import CommSpec, parse_dtype, parse_ops, parse_size, validate

    spec = CommSpec(
        ops=parse_ops(args.op), min_bytes=parse_size(args.minbytes, "-b"), max_bytes=parse_size(args.maxbytes, "-e"),
        step_factor=_int(args.stepfactor, "-f"), iters=_int(args.iters, "-n"),
        warmup_iters=_int(args.warmup_iters, "-w"), dtype=parse_dtype(args.dtype), root=_int(args.root, "--root"),
        nproc=cli_common.parse_int_list(args.nproc, "--nproc"), backend=args.backend,
        threads_per_rank=_int(args.threads_per_rank, "--threads-per-rank"), timeout_s=_float(args.timeout, "--timeout"),
        out=args.out, corrupt_rank=_int(args.corrupt_rank, "--corrupt-rank"),
    )
    validate(spec)
    return spec


def handle(args: argparse.Namespace) -> int:
    from trainscale.analysis.comm_report import text_table
    from trainscale.scaling.results.files import read_json
    from trainscale.scaling.results import schema
    from trainscale.scaling.comm.runner import execute_comm

    spec = spec_from_args(args)
    cli_common.writable_folder(spec.out, "--out")
    with LiveProgress(total_runs=len(spec.nproc) if len(spec.nproc) > 1 else None) as live:
        outcome = execute_comm(spec, observer=live)
    if args.json:
        doc = {**outcome.results, "summary": outcome.summary, "comm_dir": str(outcome.comm_dir),
               "provenance": read_json(outcome.comm_dir / schema.PROVENANCE)}
        json.dump(doc, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text_table(outcome.results))
        print(outcome.comm_dir)
    if not outcome.ok:
        console.print(styled("failed", "red", f": {outcome.summary['reason']}"))
    console.print(f"results: {outcome.comm_dir}")
    return cli_common.EXIT_OK if outcome.ok else cli_common.EXIT_FAILED
