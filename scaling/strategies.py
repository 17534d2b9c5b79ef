"""Parallel strategies: how a model is wrapped, how a step's forward/backward runs, and how the
optimizer steps. The per-rank loop only talks to this interface."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from .comm_timing import CollectiveTimer, timed_allreduce_hook
from .distributed import DistContext
from .spec import OptimConfig, RunSpec


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

    def forward_backward(self, inputs: Any, targets: Any) -> torch.Tensor:
        """Run forward and backward for one step; return the (detached) loss."""

    def optimizer_step(self) -> None: ...

    # Optional, for the all-reduce overhead (scaling.comm_probe): a strategy may also have
    #   comm_timer: CollectiveTimer | None   timing its gradient collectives (scaling.comm_timing)
    #   no_grad_sync() -> context manager    a forward/backward inside it skips gradient synchronisation


class DDPStrategy:
    """torch DistributedDataParallel: gradients all-reduced in buckets, overlapped with backward."""

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

    def forward_backward(self, inputs: Any, targets: Any) -> torch.Tensor:
        loss = self.loss_fn(self.model(inputs), targets)
        loss.backward()
        return loss.detach()

    def optimizer_step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


STRATEGIES: dict[str, type] = {
    "ddp": DDPStrategy,
}


def build(name: str) -> Strategy:
    return STRATEGIES[name]()
