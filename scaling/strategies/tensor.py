"""Tensor parallel: torch's ``parallelize_module`` with the workload's plan over the "tp" dimension of a
DeviceMesh (Megatron-style column/row sharding with DTensor). With a data-parallel degree above 1
this is 2D parallelism as torchtitan does it: TP inside, FSDP2 over the "dp" dimension."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from trainscale.scaling.strategies.base import WholeModelStep, make_optimizer
from trainscale.scaling.strategies.fsdp import shard_data_parallel
from trainscale.scaling.strategies.mesh import Degrees
from trainscale.workloads.registry import WORKLOADS

if TYPE_CHECKING:
    from trainscale.scaling.runtime.distributed import DistContext
    from trainscale.scaling.spec import RunSpec


def param_groups(model: nn.Module) -> list[dict]:
    """Parameters grouped by the mesh they live on (plain tensors apart): the optimizer's foreach
    kernels run per group and cannot mix DTensors of different meshes with plain tensors. Without
    FSDP, norms and the position embedding stay plain tensors: their inputs are replicated
    activations, so every tensor-parallel rank computes the same gradient for them."""
    groups: dict[Any, list] = {}
    for p in model.parameters():
        groups.setdefault(getattr(p, "device_mesh", None), []).append(p)
    return [{"params": ps} for ps in groups.values()]


def reshard_gradients_like_parameters(model: nn.Module) -> None:
    """torch 2.13's DTensor returns the gradient of the row-wise sharded embedding Replicate (the whole
    table on every rank), and the optimizer's state would follow it. Re-sharding it like its parameter
    is a local slice (no communication, same values) and keeps gradient and state at a 1/tp share."""
    def reshard(p: torch.Tensor) -> None:
        if p.grad is not None and p.grad.placements != p.placements:
            p.grad = p.grad.redistribute(p.device_mesh, p.placements)

    for p in model.parameters():
        if hasattr(p, "placements"):
            p.register_post_accumulate_grad_hook(reshard)


class TensorParallelStrategy(WholeModelStep):
    name = "tp"
    summary = ("tensor parallel (q, k, v, MLP-in column-wise, projections row-wise, embedding and head over "
               "the vocabulary)")
    built_on = "parallelize_module over the tp dimension of a DeviceMesh"
    dims = ("dp", "tp")
    workload_split = "tp"
    checkpoints = True  # DCP saves and loads the DTensor shards (TP, and FSDP2 over dp in 2D)

    def validate(self, spec: RunSpec) -> Degrees:
        degrees = super().validate(spec)
        if degrees.tp < 2:
            raise ValueError(f"parallel 'tp' needs a tensor-parallel degree of at least 2, got tp {degrees.tp} "
                             f"(world size {spec.world_size})")
        return degrees

    def setup(self, model: nn.Module, loss_fn: Callable[..., Any], spec: RunSpec, ctx: DistContext) -> None:
        from torch.distributed.tensor.parallel import parallelize_module

        degrees = spec.degrees
        mesh = self.place(spec, ctx, ("dp", "tp"))
        workload = WORKLOADS.get(spec.workload)
        model = model.to(ctx.device)
        parallelize_module(model, mesh["tp"], workload.tensor_parallel_plan(model))
        workload.retie(model)
        if degrees.dp > 1:
            shard_data_parallel(model, mesh["dp"], workload)  # FSDP2 reduce-scatters into sharded gradients
        else:
            reshard_gradients_like_parameters(model)
        self.model = model
        self.optimizer = make_optimizer(spec.optim, param_groups(model))
        self.loss_fn = loss_fn
