"""Process-group set-up from torchrun's environment, and the clean shutdown gloo needs.

Devices: with NCCL every process drives one GPU, the one at its LOCAL_RANK among the GPUs visible to it
(CUDA_VISIBLE_DEVICES, which Slurm's --gpus-per-node and container runtimes set, renumbers them from 0);
with gloo every process runs on the CPU."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def synchronize(self) -> None:
        """Make host timers honest on accelerators (a no-op on CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def visible_gpus_note() -> str:
    return f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r}" if "CUDA_VISIBLE_DEVICES" in os.environ \
        else "CUDA_VISIBLE_DEVICES unset"


def device_for(backend: str, local_rank: int) -> torch.device:
    """The device of the process at local_rank: GPU local_rank for NCCL, the CPU for gloo."""
    if backend != "nccl":
        return torch.device("cpu")
    visible = torch.cuda.device_count()
    if local_rank >= visible:
        raise RuntimeError(f"local rank {local_rank} has no GPU: {visible} visible ({visible_gpus_note()}); "
                           f"run at most {visible} processes per node")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_from_env(backend: str, timeout_s: float = 600.0) -> DistContext:
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = device_for(backend, local_rank)
    if not dist.is_initialized():  # Ray Train, for one, sets the group up before the loop starts
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s),
                                device_id=device if device.type == "cuda" else None)
    return DistContext(
        rank=rank,
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
        node_rank=int(os.environ.get("GROUP_RANK", 0)),
        backend=backend,
        device=device,
    )


def device_name(device: torch.device) -> str:
    """The device's name as analysis.mfu matches it against its table of peaks (CPUs: their model)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from trainscale.scaling.provenance import cpu_model

    return f"cpu: {cpu_model()}"


def shutdown() -> None:
    """Every rank ends with a barrier, then destroys the group: without both, multi-process gloo
    runs abort at exit in a good share of runs ("terminate called without an active exception")."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
