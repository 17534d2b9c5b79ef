"""Pipeline parallel with ``torch.distributed.pipelining``: the workload cuts its model into equal
consecutive stages (``pipeline_stage``), one per rank of the "pp" mesh dimension, each a manual
``PipelineStage``; a GPipe or 1F1B schedule runs the per-rank batch as ``pipeline.microbatches``
microbatches. Gradients are scaled by 1/microbatches (the schedule's scale_grads), so with a
mean-reduced loss a step equals the whole batch's step. With a data-parallel degree above 1, each
stage is sharded with FSDP2 over the "dp" dimension (2D dp x pp).

The stage's compute time per step (forward and backward of its microbatches and the loss) is timed
around the stage's own methods; the rest of the step is waiting and communication, from which the
report takes the measured bubble."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from trainscale.scaling.runtime.measure import BusyTimer
from trainscale.scaling.strategies.base import Strategy, make_optimizer
from trainscale.scaling.strategies.fsdp import shard_data_parallel
from trainscale.scaling.strategies.mesh import Degrees
from trainscale.workloads.registry import WORKLOADS

if TYPE_CHECKING:
    from trainscale.scaling.runtime.distributed import DistContext
    from trainscale.scaling.spec import RunSpec


class PipelineStrategy(Strategy):
    name = "pp"
    summary = ("pipeline parallel (equal consecutive groups of blocks per stage, GPipe or 1F1B over "
               "--microbatches)")
    built_on = "torch.distributed.pipelining (PipelineStage, ScheduleGPipe, Schedule1F1B)"
    dims = ("dp", "pp")
    workload_split = "pp"
    extra_sample_columns = ("busy_s",)
    checkpoints = True  # each stage saves its own parameters (original names) and flattened optimizer state

    def validate(self, spec: RunSpec) -> Degrees:
        degrees = super().validate(spec)
        if degrees.pp < 2:
            raise ValueError(f"parallel 'pp' needs at least 2 pipeline stages, got pp {degrees.pp} "
                             f"(world size {spec.world_size})")
        pipe = spec.pipeline
        if spec.batch_size % pipe.microbatches:
            raise ValueError(f"pipeline.microbatches ({pipe.microbatches}) does not divide the per-rank batch size "
                             f"({spec.batch_size})")
        if pipe.schedule == "1f1b" and pipe.microbatches < degrees.pp:
            raise ValueError(f"pipeline.microbatches ({pipe.microbatches}) must be at least the number of stages "
                             f"pp ({degrees.pp}) for the 1F1B schedule")
        return degrees

    def setup(self, model: nn.Module, loss_fn: Callable[..., Any], spec: RunSpec, ctx: DistContext) -> None:
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

        degrees = spec.degrees
        mesh = self.place(spec, ctx, ("pp", "dp"))
        workload = WORKLOADS.get(spec.workload)
        stage_index, stages = self.layout.pp_rank, degrees.pp
        self.is_first, self.is_last = stage_index == 0, stage_index == stages - 1
        model = workload.pipeline_stage(model, stage_index, stages).to(ctx.device)
        if degrees.dp > 1:
            shard_data_parallel(model, mesh["dp"], workload)
        self.model = model
        self.optimizer = make_optimizer(spec.optim, model.parameters())
        self.timer = BusyTimer()
        self.stage = PipelineStage(model, stage_index, stages, ctx.device, group=mesh["pp"].get_group())
        self.stage.forward_one_chunk = self.timer.wrap(self.stage.forward_one_chunk)
        self.stage.backward_one_chunk = self.timer.wrap(self.stage.backward_one_chunk)
        schedules = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}
        self.schedule = schedules[spec.pipeline.schedule](
            self.stage, n_microbatches=spec.pipeline.microbatches, loss_fn=self.timer.wrap(loss_fn))
        self._busy_s = 0.0

    def forward_backward(self, inputs: Any, targets: Any) -> torch.Tensor | None:
        losses: list[torch.Tensor] = []
        args = (inputs,) if self.is_first else ()
        target = targets if self.is_last else None
        self.schedule.step(*args, target=target, losses=losses if self.is_last else None, return_outputs=False)
        self._busy_s = self.timer.take()
        return torch.stack(losses).mean().detach() if self.is_last else None

    def step_extras(self) -> dict[str, float]:
        return {"busy_s": self._busy_s}

    def optimizer_step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
