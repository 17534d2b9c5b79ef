"""trainscale comm's per-rank measurement and a hand-written loop, alternated inside the same
processes, so machine drift hits both alike (the paired mode of comm_vs_plain.py).

    torchrun --standalone --nproc-per-node 2 benchmarks/paired_allreduce.py --sizes 16M,64M --rounds 10 --out r.json

Per round and size: trainscale's path (comm_bench.make_buffers / collective / time_iterations, then
analysis.collectives.size_result over all ranks' iterations) and the plain loop (one timed span of
ITERS calls, slowest rank), each after its own warmup and barrier; which goes first alternates.
"""
import argparse
import json
import os
import time

import torch
import torch.distributed as dist

from trainscale.analysis.collectives import size_result
from trainscale.scaling.comm.bench import collective, make_buffers, time_iterations
from trainscale.scaling.comm.spec import parse_size

p = argparse.ArgumentParser()
p.add_argument("--sizes", default="16M,32M,64M")
p.add_argument("--rounds", type=int, default=10)
p.add_argument("--iters", type=int, default=20)
p.add_argument("--warmup", type=int, default=5)
p.add_argument("--out", required=True)
a = p.parse_args()
sizes = [parse_size(s, "--sizes") for s in a.sizes.split(",")]

dist.init_process_group("gloo")
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
rank, n = dist.get_rank(), dist.get_world_size()
cpu = torch.device("cpu")


def trainscale_busbw(size: int) -> float:
    b = make_buffers("all_reduce", size, n, torch.float32, 4, cpu)
    fn = collective(b, rank, n, 0)
    for _ in range(a.warmup):
        fn()
    dist.barrier()
    times = torch.tensor(time_iterations(fn, a.iters, cpu), dtype=torch.float64)
    everyone = [torch.empty_like(times) for _ in range(n)]
    dist.all_gather(everyone, times)
    r = size_result("all_reduce", n, b.nbytes, b.count, "float32", 0,
                    {i: t.tolist() for i, t in enumerate(everyone)}, {i: 0 for i in range(n)})
    return r.busbw_gbps


def plain_busbw(size: int) -> float:
    buf = torch.zeros(size // 4, dtype=torch.float32)
    for _ in range(a.warmup):
        dist.all_reduce(buf)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(a.iters):
        dist.all_reduce(buf)
    span = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
    dist.all_reduce(span, op=dist.ReduceOp.MAX)
    return size / (span.item() / a.iters) / 1e9 * 2 * (n - 1) / n


result = {str(s): {"trainscale": [], "plain": []} for s in sizes}
for r in range(a.rounds):
    for s in sizes:
        order = (("trainscale", trainscale_busbw), ("plain", plain_busbw))
        for name, f in (order if r % 2 == 0 else order[::-1]):
            result[str(s)][name].append(f(s))
if rank == 0:
    with open(a.out, "w") as f:
        json.dump(result, f)
dist.barrier()
dist.destroy_process_group()
