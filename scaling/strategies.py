"""Parallel strategies: how a model is wrapped, how a step's forward/backward runs, and how the
optimizer steps. The per-rank loop only talks to this interface."""
from __future__ import annotations

from typing import Any, Callable, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

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


class DDPStrategy:
    """torch DistributedDataParallel: gradients all-reduced in buckets, overlapped with backward."""

    def setup(self, model: nn.Module, loss_fn: Callable[..., Any], spec: RunSpec, ctx: DistContext) -> None:
        model = model.to(ctx.device)
        self.model = DDP(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        self.optimizer = make_optimizer(spec.optim, self.model.parameters())
        self.loss_fn = loss_fn

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
