"""DDP: torch DistributedDataParallel, gradients all-reduced in buckets while backward runs."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable

from torch import nn

from trainscale.scaling.runtime.comm_timing import CollectiveTimer, time_buffer_syncs, timed_allreduce_hook
from trainscale.scaling.strategies.base import WholeModelStep, make_optimizer

if TYPE_CHECKING:
    from trainscale.scaling.runtime.distributed import DistContext
    from trainscale.scaling.spec import RunSpec


class DDPStrategy(WholeModelStep):
    name = "ddp"
    summary = "data parallel (gradients all-reduced in buckets)"
    built_on = "DistributedDataParallel"
    checkpoints = True
    skips_grad_sync = True
    sharded_grads = False

    def setup(self, model: nn.Module, loss_fn: Callable[..., Any], spec: RunSpec, ctx: DistContext) -> None:
        from torch.nn.parallel import DistributedDataParallel

        model = model.to(ctx.device)
        self.model = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        self.optimizer = make_optimizer(spec.optim, self.model.parameters())
        self.loss_fn = loss_fn
        # The hook does what DDP's built-in all-reduce does, timing each bucket (and, for tests of
        # the overhead figure, completing it comm.delay_ms later).
        self.comm_timer = CollectiveTimer(ctx.device) if spec.comm.measure else None
        if self.comm_timer is not None or spec.comm.delay_ms > 0:
            self.model.register_comm_hook(None, timed_allreduce_hook(self.comm_timer, spec.comm.delay_ms / 1e3,
                                                                     ctx.device))
        if self.comm_timer is not None:
            time_buffer_syncs(self.model, self.comm_timer)

    def no_grad_sync(self) -> contextlib.AbstractContextManager:
        return self.model.no_sync()
