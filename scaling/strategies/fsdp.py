"""FSDP2 (``torch.distributed.fsdp.fully_shard``): parameters, gradients and optimizer state sharded
over the data-parallel ranks; parameters all-gathered per unit for forward and backward, gradients
reduce-scattered. Units are the workload's ``fsdp_units`` (GPT: each block), then the root."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from torch import nn

from trainscale.scaling.strategies.base import WholeModelStep, make_optimizer
from trainscale.workloads.registry import WORKLOADS, Workload

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

    from trainscale.scaling.runtime.distributed import DistContext
    from trainscale.scaling.spec import RunSpec


def shard_data_parallel(model: nn.Module, mesh: DeviceMesh, workload: Workload) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for unit in workload.fsdp_units(model):
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


class FSDPStrategy(WholeModelStep):
    name = "fsdp"
    summary = "parameters, gradients and optimizer state sharded over data-parallel ranks"
    built_on = "FSDP2 fully_shard (per block, then the root)"
    checkpoints = True

    def setup(self, model: nn.Module, loss_fn: Callable[..., Any], spec: RunSpec, ctx: DistContext) -> None:
        mesh = self.place(spec, ctx, ("dp",))
        self.model = shard_data_parallel(model.to(ctx.device), mesh, WORKLOADS.get(spec.workload))
        self.optimizer = make_optimizer(spec.optim, self.model.parameters())
        self.loss_fn = loss_fn
