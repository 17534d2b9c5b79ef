"""The per-rank collective benchmark of ``trainscale comm``. Started by torchrun as
``python -m trainscale.scaling.comm.bench --config COMM_CONFIG --out WORLD_DIR``.

Per op and message size, as nccl-tests does: -w untimed iterations, a barrier, then -n timed
iterations back to back, each one timed on its own (host monotonic clock around blocking gloo calls;
CUDA events between iterations on the stream for NCCL, no host sync inside the loop), so the
iterations tile the timed span exactly. Then one more iteration on known data whose result every
rank checks element by element (#wrong). Every timed iteration is written to samples/rankNNNNN.csv;
analysis.collectives turns them into the table.
"""
from __future__ import annotations

import argparse
import signal
import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from trainscale.launchers.ownership import die_with_parent
from trainscale.scaling.results import schema
from trainscale.scaling.results.records import RankInfo
from trainscale.scaling.results.collectives import COLLECTIVES, Buffers, CollectiveOp
from trainscale.scaling.results.files import read_json, write_json_atomic

from trainscale.scaling import provenance
from trainscale.scaling.comm.spec import DTYPES, CommSpec, pattern_modulus
from trainscale.scaling.runtime.progress_file import ProgressFile
from trainscale.scaling.runtime.distributed import DistContext, init_from_env, shutdown


@dataclass
class OpBuffers:
    """One op's tensors for one message size: what goes in, what comes out (the same tensor for
    in-place ops), their element counts (Buffers) and the size in nccl-tests' sense."""
    op: CollectiveOp
    shape: Buffers
    inp: torch.Tensor
    out: torch.Tensor
    nbytes: int


def make_buffers(op: str, size: int, world: int, dtype: torch.dtype, element_size: int,
                 device: torch.device) -> OpBuffers | None:
    """Zero-filled tensors for `size` bytes as the op defines them (results/collectives.py); None
    when that leaves nothing to send."""
    definition = COLLECTIVES.get(op)
    shape = definition.buffers(size, world, element_size)
    if shape is None:
        return None
    inp = torch.zeros(shape.inp, dtype=dtype, device=device)
    out = inp if shape.in_place else torch.zeros(shape.out, dtype=dtype, device=device)
    return OpBuffers(definition, shape, inp, out, shape.count * element_size)


def collective(b: OpBuffers, rank: int, world: int, root: int) -> Callable[[], None]:
    """One blocking call of the op on its buffers (on CUDA: enqueued, the current stream waits)."""
    return b.op.call(dist, b.inp, b.out, rank, world, root)


def time_iterations(fn: Callable[[], None], iters: int, device: torch.device) -> list[float]:
    """Seconds of each of `iters` back-to-back calls."""
    if device.type == "cuda":
        events = [torch.cuda.Event(enable_timing=True) for _ in range(iters + 1)]
        events[0].record()
        for i in range(iters):
            fn()
            events[i + 1].record()
        torch.cuda.synchronize(device)
        return [events[i].elapsed_time(events[i + 1]) / 1e3 for i in range(iters)]
    clock = time.perf_counter
    times = [0.0] * iters
    last = clock()
    for i in range(iters):
        fn()
        now = clock()
        times[i] = now - last
        last = now
    return times


# ---------------------------------------------------------------------------------------------
# The correctness check: rank q's element j holds pattern(q, j) = (j + 7q + 1) mod M, small integers
# that every data type holds exactly, and whose sums over the ranks it holds exactly too.


def pattern(rank: int, start: int, n: int, modulus: int, device: torch.device) -> torch.Tensor:
    return (torch.arange(start, start + n, dtype=torch.int64, device=device) + 7 * rank + 1) % modulus


def fill_check_inputs(b: OpBuffers, rank: int, world: int, root: int, modulus: int) -> None:
    """Known inputs; outputs (when separate) set to a value no correct result holds."""
    whose, offset = b.op.input_pattern(rank, root)
    b.inp.copy_((pattern(whose, 0, b.inp.numel(), modulus, b.inp.device) + offset) % modulus)
    if b.out is not b.inp:
        b.out.fill_(modulus)


def expected_output(b: OpBuffers, rank: int, world: int, root: int, modulus: int) -> torch.Tensor:
    e = b.op.expected(b.shape, rank, world, root)
    parts = [pattern(q, start, n, modulus, b.out.device) for q, start, n in e.pieces]
    return sum(parts) if e.combine == "sum" else torch.cat(parts)


def count_wrong(b: OpBuffers, rank: int, world: int, root: int, modulus: int) -> int:
    """Elements of this rank's result that differ from what the op must produce."""
    got = b.out.to(torch.int64) if b.out.is_floating_point() else b.out.long()
    if b.out.is_floating_point():
        # NaN or inf can never be a correct result; int64 conversion of them is undefined.
        bad = ~torch.isfinite(b.out)
        got = torch.where(bad, torch.full_like(got, -1), got)
    return int((got != expected_output(b, rank, world, root, modulus)).sum().item())


def corrupt_one_element(b: OpBuffers) -> None:
    """What --corrupt-rank does: change the first element of the result by one (exactly, in any type)."""
    flat = b.out.view(-1)
    flat[0] = flat[0] - 1 if flat[0].item() > 0 else flat[0] + 1


def check(fn: Callable[[], None], b: OpBuffers, ctx: DistContext, root: int, modulus: int, corrupt: bool) -> int:
    fill_check_inputs(b, ctx.rank, ctx.world_size, root, modulus)
    ctx.synchronize()
    dist.barrier()
    fn()
    ctx.synchronize()
    if corrupt:
        corrupt_one_element(b)
    return count_wrong(b, ctx.rank, ctx.world_size, root, modulus)


# ---------------------------------------------------------------------------------------------


def human_bytes(n: int) -> str:
    for unit, size in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B"


def run(spec: CommSpec, ctx: DistContext, out: Path) -> list[dict]:
    """Every op and size of the spec on this rank; returns the correctness checks."""
    dtype = getattr(torch, DTYPES[spec.dtype][0])
    ops, sizes = spec.ops_for_world(ctx.world_size), spec.sizes()
    final = schema.samples_path(out, ctx.rank)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_suffix(".csv.partial")
    progress = ProgressFile(out, ctx.is_main, len(ops) * len(sizes))
    checks: list[dict] = []
    with open(partial, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(schema.COMM_SAMPLE_COLUMNS)
        done = 0
        for op in ops:
            modulus = pattern_modulus(op, spec.dtype, ctx.world_size)
            for size in sizes:
                done += 1
                b = make_buffers(op, size, ctx.world_size, dtype, spec.element_size, ctx.device)
                if b is None or any(c["op"] == op and c["bytes"] == b.nbytes for c in checks):
                    progress.update(done, f"{op} {human_bytes(size)}")
                    continue  # rounds to nothing, or to a size already measured
                fn = collective(b, ctx.rank, ctx.world_size, spec.root)
                for _ in range(spec.warmup_iters):
                    fn()
                ctx.synchronize()
                dist.barrier()
                times = time_iterations(fn, spec.iters, ctx.device)
                writer.writerows([op, b.nbytes, b.shape.count, i, f"{t:.9g}"] for i, t in enumerate(times))
                wrong = check(fn, b, ctx, spec.root, modulus, corrupt=ctx.rank == spec.corrupt_rank)
                checks.append({"op": op, "bytes": b.nbytes, "count": b.shape.count, "wrong": wrong,
                               "checked": b.out.numel()})
                progress.update(done, f"{op} {human_bytes(size)}")
                del b, fn
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, final)
    return checks


@record
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    die_with_parent(signal.SIGKILL)  # a rank whose agent is gone has no one to report to
    spec = CommSpec.from_dict(read_json(args.config))
    threads = int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads()
    torch.set_num_threads(threads)
    ctx = init_from_env(spec.backend, timeout_s=spec.timeout_s)
    checks = run(spec, ctx, args.out)
    info = RankInfo(rank=ctx.rank, local_rank=ctx.local_rank, world_size=ctx.world_size, pid=os.getpid(),
                    threads=threads, device=str(ctx.device), backend=ctx.backend, **provenance.host_facts(),
                    extra={"checks": checks})
    write_json_atomic(schema.rank_info_path(args.out, ctx.rank), info.to_dict())
    shutdown()


if __name__ == "__main__":
    main()
