"""A minimal hand-written torch.distributed all_reduce bandwidth loop: the yardstick for
`trainscale comm`.

    torchrun --standalone --nproc-per-node 2 benchmarks/plain_allreduce.py --sizes 16M,64M --out r.json

Per size: warmup calls, a barrier, then ITERS back-to-back all_reduce calls timed as one span on each
rank; time = the slowest rank's span / ITERS; busbw = bytes / time * 2(n-1)/n (nccl-tests).
"""
import argparse
import json
import os
import time

import torch
import torch.distributed as dist

p = argparse.ArgumentParser()
p.add_argument("--sizes", default="16M,32M,64M")
p.add_argument("--iters", type=int, default=20)
p.add_argument("--warmup", type=int, default=5)
p.add_argument("--out", required=True)
a = p.parse_args()
units = {"K": 2**10, "M": 2**20, "G": 2**30}
sizes = [int(s[:-1]) * units[s[-1]] if s[-1] in units else int(s) for s in a.sizes.split(",")]

dist.init_process_group("gloo")
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
n = dist.get_world_size()
result = {}
for size in sizes:
    buf = torch.zeros(size // 4, dtype=torch.float32)
    for _ in range(a.warmup):
        dist.all_reduce(buf)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(a.iters):
        dist.all_reduce(buf)
    span = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
    dist.all_reduce(span, op=dist.ReduceOp.MAX)
    seconds = span.item() / a.iters
    result[str(size)] = {"time_s": seconds, "busbw_gbps": size / seconds / 1e9 * 2 * (n - 1) / n}
if dist.get_rank() == 0:
    with open(a.out, "w") as f:
        json.dump(result, f)
dist.barrier()
dist.destroy_process_group()
