"""FSDP2 (``torch.distributed.fsdp.fully_shard``): parameters, gradients and optimizer state sharded
over the data-parallel ranks; parameters all-gathered per unit for forward and backward, gradients
reduce-scattered. Units are the workload's ``fsdp_units`` (GPT: each block), then the root."""
from __future__ import annotations

from typing import Any, Callable

from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import fully_shard

from trainscale.workloads import registry as workload_registry

from trainscale.scaling.runtime.distributed import DistContext
from trainscale.scaling.spec import RunSpec
from trainscale.scaling.strategies.base import WholeModelStep
from trainscale.scaling.strategies.mesh import Layout


def shard_data_parallel(model: nn.Module, mesh: DeviceMesh, workload: Any) -> nn.Module:
    units = workload.fsdp_units(model) if hasattr(workload, "fsdp_units") else []
    for unit in units:
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


class FSDPStrategy(WholeModelStep):
    def setup(self, model: nn.Module, loss_fn: Callable[..., Any], spec: RunSpec, ctx: DistContext) -> None:
        from trainscale.scaling.strategies.base import make_optimizer

        degrees = spec.degrees
        self.layout = Layout(degrees, ctx.rank)
        mesh = init_device_mesh(ctx.device.type, (degrees.dp,), mesh_dim_names=("dp",))
        self.model = shard_data_parallel(model.to(ctx.device), mesh, workload_registry.get(spec.workload))
        self.optimizer = make_optimizer(spec.optim, self.model.parameters())
        self.loss_fn = loss_fn
