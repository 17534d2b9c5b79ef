"""A minimal hand-written torch DDP loop: the yardstick for trainscale's own overhead.

    torchrun --standalone --nproc-per-node 2 benchmarks/plain_ddp.py --steps 40 --warmup 10 --out r.json

Same model class and synthetic data set as trainscale's resnet50 workload, plain DataLoader +
DistributedSampler, SGD; the measured window is timed on each rank between barriers and the
slowest rank's window counts, exactly as trainscale defines global throughput.
"""
import argparse
import json
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from trainscale.workloads.data import SyntheticImages
from trainscale.workloads.resnet import ResNet50

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=40)
p.add_argument("--warmup", type=int, default=10)
p.add_argument("--batch-size", type=int, default=16)
p.add_argument("--width", type=float, default=0.25)
p.add_argument("--resolution", type=int, default=64)
p.add_argument("--classes", type=int, default=100)
p.add_argument("--out", required=True)
a = p.parse_args()

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
torch.manual_seed(0)
model = DDP(ResNet50(num_classes=a.classes, width=a.width))
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
loss_fn = torch.nn.CrossEntropyLoss()
data = SyntheticImages(a.steps * a.batch_size * world, a.resolution, a.classes, seed=0)
sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=0, drop_last=True)
loader = iter(DataLoader(data, batch_size=a.batch_size, sampler=sampler, drop_last=True))
for step in range(a.steps):
    if step == a.warmup:
        dist.barrier()
        t0 = time.perf_counter()
    x, y = next(loader)
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
window = torch.tensor([time.perf_counter() - t0])
dist.all_reduce(window, op=dist.ReduceOp.MAX)
if rank == 0:
    with open(a.out, "w") as f:
        json.dump({"samples_per_s": (a.steps - a.warmup) * a.batch_size * world / window.item()}, f)
dist.barrier()
dist.destroy_process_group()
