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
import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from trainscale.scaling.results import schema
from trainscale.scaling.results.files import read_json, write_json_atomic

from trainscale.scaling import provenance
from trainscale.scaling.comm.spec import DTYPES, CommSpec, pattern_modulus
from trainscale.scaling.runtime.distributed import DistContext, init_from_env, shutdown


@dataclass
class Buffers:
    """One op's tensors for one message size: what goes in, what comes out (the same tensor for
    in-place ops), the elements per rank chunk, and the size in nccl-tests' sense."""
    op: str
    inp: torch.Tensor
    out: torch.Tensor
    chunk: int
    nbytes: int
    count: int


def make_buffers(op: str, size: int, world: int, dtype: torch.dtype, element_size: int,
                 device: torch.device) -> Buffers | None:
    """Zero-filled tensors for `size` bytes (rounded down to whole elements, and to whole chunks for
    ops that split the message over the ranks); None when that leaves nothing to send."""
    def zeros(n: int) -> torch.Tensor:
        return torch.zeros(n, dtype=dtype, device=device)

    if op in ("all_gather", "reduce_scatter", "all_to_all"):
        chunk = size // (world * element_size)
        if chunk == 0:
            return None
        total = chunk * world
        inp = zeros(chunk) if op == "all_gather" else zeros(total)
        out = zeros(chunk) if op == "reduce_scatter" else zeros(total)
        return Buffers(op, inp, out, chunk, total * element_size, total)
    count = size // element_size
    if count == 0:
        return None
    buf = zeros(count)
    if op == "send_recv":
        return Buffers(op, buf, zeros(count), count, count * element_size, count)
    return Buffers(op, buf, buf, count, count * element_size, count)


def collective(b: Buffers, rank: int, world: int, root: int) -> Callable[[], None]:
    """One blocking call of the op on its buffers (on CUDA: enqueued, the current stream waits)."""
    all_gather = getattr(dist, "all_gather_single", dist.all_gather_into_tensor)
    reduce_scatter = getattr(dist, "reduce_scatter_single", dist.reduce_scatter_tensor)
    if b.op == "all_reduce":
        return lambda: dist.all_reduce(b.out)
    if b.op == "all_gather":
        return lambda: all_gather(b.out, b.inp)
    if b.op == "reduce_scatter":
        return lambda: reduce_scatter(b.out, b.inp)
    if b.op == "broadcast":
        return lambda: dist.broadcast(b.out, src=root)
    if b.op == "all_to_all":
        return lambda: dist.all_to_all_single(b.out, b.inp)
    if b.op == "send_recv":
        peers = ((rank + 1) % world, (rank - 1) % world)

        def send_recv() -> None:
            ops = [dist.P2POp(dist.isend, b.inp, peers[0]), dist.P2POp(dist.irecv, b.out, peers[1])]
            for work in dist.batch_isend_irecv(ops):
                work.wait()

        return send_recv
    raise ValueError(f"unknown collective {b.op!r}")


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


def fill_check_inputs(b: Buffers, rank: int, world: int, root: int, modulus: int) -> None:
    """Known inputs; outputs (when separate) set to a value no correct result holds."""
    n = b.inp.numel()
    if b.op == "broadcast" and rank != root:
        b.inp.copy_((pattern(root, 0, n, modulus, b.inp.device) + 1) % modulus)  # must be overwritten
    else:
        b.inp.copy_(pattern(rank, 0, n, modulus, b.inp.device))
    if b.out is not b.inp:
        b.out.fill_(modulus)


def expected_output(b: Buffers, rank: int, world: int, root: int, modulus: int) -> torch.Tensor:
    dev, c = b.out.device, b.chunk
    if b.op == "all_reduce":
        return sum(pattern(q, 0, b.out.numel(), modulus, dev) for q in range(world))
    if b.op == "all_gather":
        return torch.cat([pattern(q, 0, c, modulus, dev) for q in range(world)])
    if b.op == "reduce_scatter":
        return sum(pattern(q, rank * c, c, modulus, dev) for q in range(world))
    if b.op == "broadcast":
        return pattern(root, 0, b.out.numel(), modulus, dev)
    if b.op == "all_to_all":
        return torch.cat([pattern(q, rank * c, c, modulus, dev) for q in range(world)])
    if b.op == "send_recv":
        return pattern((rank - 1) % world, 0, b.out.numel(), modulus, dev)
    raise ValueError(f"unknown collective {b.op!r}")


def count_wrong(b: Buffers, rank: int, world: int, root: int, modulus: int) -> int:
    """Elements of this rank's result that differ from what the op must produce."""
    got = b.out.to(torch.int64) if b.out.is_floating_point() else b.out.long()
    if b.out.is_floating_point():
        # NaN or inf can never be a correct result; int64 conversion of them is undefined.
        bad = ~torch.isfinite(b.out)
        got = torch.where(bad, torch.full_like(got, -1), got)
    return int((got != expected_output(b, rank, world, root, modulus)).sum().item())


def corrupt_one_element(b: Buffers) -> None:
    """What --corrupt-rank does: change the first element of the result by one (exactly, in any type)."""
    flat = b.out.view(-1)
    flat[0] = flat[0] - 1 if flat[0].item() > 0 else flat[0] + 1


def check(fn: Callable[[], None], b: Buffers, ctx: DistContext, root: int, modulus: int, corrupt: bool) -> int:
    fill_check_inputs(b, ctx.rank, ctx.world_size, root, modulus)
    ctx.synchronize()
    dist.barrier()
    fn()
    ctx.synchronize()
    if corrupt:
        corrupt_one_element(b)
    return count_wrong(b, ctx.rank, ctx.world_size, root, modulus)


# ---------------------------------------------------------------------------------------------


class Progress:
    """Rank 0 tells the launcher how far it is (the same progress file as training runs)."""

    def __init__(self, out: Path, enabled: bool, total: int) -> None:
        self.path, self.enabled, self.total, self._last = out / schema.PROGRESS, enabled, total, 0.0

    def update(self, done: int, phase: str) -> None:
        now = time.monotonic()
        if self.enabled and (now - self._last >= 0.5 or done == self.total):
            write_json_atomic(self.path, {"step": done, "steps": self.total, "phase": phase})
            self._last = now


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
    progress = Progress(out, ctx.is_main, len(ops) * len(sizes))
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
                writer.writerows([op, b.nbytes, b.count, i, f"{t:.9g}"] for i, t in enumerate(times))
                wrong = check(fn, b, ctx, spec.root, modulus, corrupt=ctx.rank == spec.corrupt_rank)
                checks.append({"op": op, "bytes": b.nbytes, "count": b.count, "wrong": wrong,
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
    spec = CommSpec.from_dict(read_json(args.config))
    threads = int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads()
    torch.set_num_threads(threads)
    ctx = init_from_env(spec.backend, timeout_s=spec.timeout_s)
    checks = run(spec, ctx, args.out)
    write_json_atomic(schema.rank_info_path(args.out, ctx.rank), {
        "rank": ctx.rank, "local_rank": ctx.local_rank, "world_size": ctx.world_size, "pid": os.getpid(),
        "threads": threads, "device": str(ctx.device), "backend": ctx.backend, "checks": checks,
        **provenance.host_facts(),
    })
    shutdown()


if __name__ == "__main__":
    main()
