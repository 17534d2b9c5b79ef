"""Parallel strategies: how a model is wrapped, how a step's forward/backward runs, and how the
optimizer steps. The per-rank loop only talks to this interface. DDP lives here; the model-,
pipeline- and sharded-parallel strategies live in scaling/parallel/ and are imported on use (so
DeepSpeed is only imported by the runs that use it)."""
from __future__ import annotations

import contextlib
import importlib
from typing import Any, Callable, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from trainscale.scaling.runtime.comm_timing import CollectiveTimer, timed_allreduce_hook
from trainscale.scaling.runtime.distributed import DistContext
from trainscale.scaling.strategies.mesh import Layout
from trainscale.scaling.runtime.precision import StepOptions
from trainscale.scaling.spec import OptimConfig, RunSpec


def make_optimizer(cfg: OptimConfig, params) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


class Strategy(Protocol):
    model: nn.Module  # the wrapped model, as used for training
    optimizer: torch.optim.Optimizer

    def setup(self, model: nn.Module, loss_fn: Callable[..., Any], spec: RunSpec, ctx: DistContext) -> None: ...

    def forward_backward(self, inputs: Any, targets: Any) -> torch.Tensor | None:
        """Run forward and backward for one step; return the (detached) loss, or None on a rank that
        does not compute it (pipeline stages before the last)."""

    def optimizer_step(self) -> None: ...

    # Optional, for the all-reduce overhead (scaling.comm_probe): a strategy may also have
    #   comm_timer: CollectiveTimer | None   timing its gradient collectives (scaling.comm_timing)
    #   no_grad_sync() -> context manager    a forward/backward inside it skips gradient synchronisation
    # Optional: ``layout`` (a parallel.config.Layout; data parallel over all ranks when absent),
    # ``extra_sample_columns`` with ``step_extras()`` (per-step values for the samples file), and
    # ``stepping_optimizer`` (the torch optimizer that actually steps, when ``optimizer`` wraps it), and
    # ``configure_step(options)`` (applies scaling.precision.StepOptions: autocast, grad scaler, compile).


class WholeModelStep:
    """The step of strategies whose wrapped model takes the whole batch and returns the loss's input
    (DDP, FSDP, TP): forward and loss (under autocast for bf16/fp16), backward (through the gradient
    scaler for fp16); the optimizer steps and clears the gradients. ``configure_step`` applies the run's
    precision and speed options (scaling/precision.py) once the strategy has wrapped the model."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[..., Any]
    sharded_grads = True  # FSDP/TP gradients are shards: an fp16 scaler must agree on inf/NaN across ranks
    options: StepOptions = StepOptions()
    scaler: Any = None
    _forward: nn.Module | None = None  # the compiled model, when compile is on

    def configure_step(self, options: StepOptions) -> None:
        self.options = options
        self.scaler = options.grad_scaler(self.sharded_grads)
        self._forward = options.compiled(self.model) if options.compile else None

    def forward_backward(self, inputs: Any, targets: Any) -> torch.Tensor:
        model = self.model if self._forward is None else self._forward
        with self.options.autocast():
            loss = self.loss_fn(model(inputs), targets)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return loss.detach()

    def optimizer_step(self) -> None:
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


class DDPStrategy(WholeModelStep):
    """torch DistributedDataParallel: gradients all-reduced in buckets, overlapped with backward."""
    sharded_grads = False

    def setup(self, model: nn.Module, loss_fn: Callable[..., Any], spec: RunSpec, ctx: DistContext) -> None:
        model = model.to(ctx.device)
        self.model = DDP(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        self.optimizer = make_optimizer(spec.optim, self.model.parameters())
        self.loss_fn = loss_fn
        # The hook does what DDP's built-in all-reduce does, timing each bucket (and, for tests of
        # the overhead figure, completing it comm.delay_ms later).
        self.comm_timer = CollectiveTimer(ctx.device) if spec.comm.measure else None
        if self.comm_timer is not None or spec.comm.delay_ms > 0:
            self.model.register_comm_hook(None, timed_allreduce_hook(self.comm_timer, spec.comm.delay_ms / 1e3,
                                                                     ctx.device))

    def no_grad_sync(self) -> contextlib.AbstractContextManager:
        return self.model.no_sync()


STRATEGIES: dict[str, type | str] = {
    "ddp": DDPStrategy,
    "fsdp": "trainscale.scaling.strategies.fsdp:FSDPStrategy",
    "zero1": "trainscale.scaling.strategies.zero:ZeRO1Strategy",
    "zero2": "trainscale.scaling.strategies.zero:ZeRO2Strategy",
    "zero3": "trainscale.scaling.strategies.zero:ZeRO3Strategy",
    "tp": "trainscale.scaling.strategies.tensor:TensorParallelStrategy",
    "pp": "trainscale.scaling.strategies.pipeline:PipelineStrategy",
}


def build(name: str) -> Strategy:
    entry = STRATEGIES[name]
    if isinstance(entry, str):
        module, cls = entry.split(":")
        entry = getattr(importlib.import_module(module), cls)
    return entry()


def layout_of(strategy: Strategy, rank: int, world_size: int) -> Layout:
    """Where this rank sits in the strategy's dp x tp x pp layout (plain data parallel by default)."""
    return getattr(strategy, "layout", None) or Layout.data_parallel(rank, world_size)
