"""What every parallel strategy is: its capability row, the checks it makes of a run spec, and the
per-rank object the training loop talks to (set up, forward/backward, optimizer step).

A strategy module defines one subclass of Strategy (capability row as class attributes, setup and
step methods) and strategies/registry.py lists it. Libraries that only some strategies need (FSDP2,
DTensor, pipelining, DeepSpeed) are imported inside setup(), so validation and the command line stay
quick.
"""
from __future__ import annotations

import contextlib
import importlib.util
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from torch import nn

from trainscale.scaling.runtime.precision import StepOptions
from trainscale.scaling.strategies.mesh import Degrees, Layout, MeshConfig, resolve_degrees
from trainscale.workloads.registry import WORKLOADS

if TYPE_CHECKING:  # types only: the spec's validation imports the strategies, never the other way round
    from torch.distributed.device_mesh import DeviceMesh

    from trainscale.scaling.runtime.comm_timing import CollectiveTimer
    from trainscale.scaling.runtime.distributed import DistContext
    from trainscale.scaling.spec import OptimConfig, RunSpec


def make_optimizer(cfg: OptimConfig, params) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


class Strategy:
    # -- capability row ------------------------------------------------------------------------
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # what it does (help texts)
    built_on: ClassVar[str] = ""  # the library piece it uses
    dims: ClassVar[tuple[str, ...]] = ("dp",)  # mesh dimensions; in 2D the dp dimension is FSDP2
    whole_model_step: ClassVar[bool] = False  # bf16/fp16 autocast, the fp16 scaler and torch.compile apply
    checkpoints: ClassVar[bool] = False  # torch.distributed.checkpoint saves and restores it (drills)
    native_checkpoints: ClassVar[bool] = False  # ...through its engine's own save_state/load_state instead
    workload_split: ClassVar[str | None] = None  # "tp"/"pp": the workload must be able to split its model so
    requires: ClassVar[tuple[str, str] | None] = None  # (module, name) of an optional package it needs
    # (the pip extra of the module's name); precision, compile and checkpoints are checked against the
    # row by the spec's validation (scaling/resolve.py), which names the strategies that have them

    # -- what the loop reads; set by setup() -----------------------------------------------------
    model: nn.Module
    optimizer: torch.optim.Optimizer
    layout: Layout | None = None  # this rank's place; None: data parallel over all ranks
    comm_timer: CollectiveTimer | None = None  # times the gradient collectives (runtime/comm_timing.py)
    skips_grad_sync: ClassVar[bool] = False  # no_grad_sync() gives compute-only steps (exposed comm)
    extra_sample_columns: ClassVar[tuple[str, ...]] = ()  # per-step values of step_extras() in the samples
    scheduler: Any = None  # an LR scheduler the checkpoints save, when the strategy has one

    def degrees(self, world_size: int, mesh: MeshConfig) -> Degrees:
        """dp x tp x pp at this world size (ValueError naming the degree that does not fit)."""
        return resolve_degrees(self.dims, self.name, world_size, mesh)

    def validate(self, spec: RunSpec) -> Degrees:
        """ValueError naming the value when the run does not suit the strategy; the degrees otherwise."""
        degrees = self.degrees(spec.world_size, spec.mesh)
        workload = WORKLOADS.get(spec.workload)
        if self.workload_split and self.workload_split not in workload.splits:
            raise ValueError(f"parallel {self.name!r} does not support workload {spec.workload!r} "
                             f"(it has no {'tensor-parallel plan' if self.workload_split == 'tp' else 'pipeline split'})")
        if self.requires and importlib.util.find_spec(self.requires[0]) is None:
            raise ValueError(f"parallel {self.name!r} needs {self.requires[1]}, which is not installed "
                             f"(pip install -c constraints.txt 'trainscale[{self.requires[0]}]')")
        workload.validate_layout(spec.model_config(), degrees.dp, degrees.tp, degrees.pp)
        return degrees

    def create(self) -> Strategy:
        """A fresh per-rank object of this strategy (the registry holds one for its capability row)."""
        return type(self)()

    # -- the per-rank interface -----------------------------------------------------------------
    def setup(self, model: nn.Module, loss_fn: Callable[..., Any], spec: RunSpec, ctx: DistContext) -> None:
        raise NotImplementedError

    def configure_step(self, options: StepOptions) -> None:
        """Apply the run's precision and speed options (validate() refused what cannot apply)."""

    def forward_backward(self, inputs: Any, targets: Any) -> torch.Tensor | None:
        """Forward and backward of one step; the (detached) loss, or None on a rank that does not
        compute it (pipeline stages before the last)."""
        raise NotImplementedError

    def optimizer_step(self) -> None:
        raise NotImplementedError

    def no_grad_sync(self) -> contextlib.AbstractContextManager:
        """A forward/backward inside it skips gradient synchronisation (when skips_grad_sync)."""
        raise NotImplementedError(f"parallel {self.name!r} cannot skip gradient synchronisation")

    def step_extras(self) -> dict[str, float]:
        return {}

    def predict(self, inputs: Any) -> Any:
        """Logits for an evaluation batch."""
        return self.model(inputs)

    @property
    def stepping_optimizer(self) -> torch.optim.Optimizer:
        """The torch optimizer that steps the parameters (DeepSpeed wraps one)."""
        return self.optimizer

    def place(self, spec: RunSpec, ctx: DistContext, mesh_dims: tuple[str, ...]) -> DeviceMesh:
        """Set this rank's layout; the device mesh over the named dimensions, in that order."""
        from torch.distributed.device_mesh import init_device_mesh

        degrees = spec.degrees
        self.layout = Layout(degrees, ctx.rank)
        return init_device_mesh(ctx.device.type, tuple(getattr(degrees, d) for d in mesh_dims),
                                mesh_dim_names=mesh_dims)

    def layout_of(self, rank: int, world_size: int) -> Layout:
        return self.layout or Layout.data_parallel(rank, world_size)


class WholeModelStep(Strategy):
    """The step of strategies whose wrapped model takes the whole batch and returns the loss's input
    (DDP, FSDP, TP): forward and loss (under autocast for bf16/fp16), backward (through the gradient
    scaler for fp16); the optimizer steps and clears the gradients."""

    whole_model_step = True
    loss_fn: Callable[..., Any]
    sharded_grads: ClassVar[bool] = True  # FSDP/TP gradients are shards: an fp16 scaler agrees on inf/NaN across ranks
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
