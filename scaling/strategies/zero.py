"""DeepSpeed ZeRO stages 1, 2 and 3 (optimizer state; + gradients; + parameters partitioned over the
data-parallel ranks), with the run's torch optimizer as DeepSpeed's client optimizer, in fp32.

DeepSpeed joins the process group torchrun's worker already made (``deepspeed.init_distributed``
with the run's backend, gloo on CPU). On first use it compiles C++ ops (the CPU accelerator's
shared-memory communication op) into TORCH_EXTENSIONS_DIR: kept in a cache folder
(``$TRAINSCALE_CACHE``, else ``$XDG_CACHE_HOME/trainscale``, else ``~/.cache/trainscale``), so only the
first run on a machine pays for it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from trainscale.scaling.strategies.base import Strategy, make_optimizer
from trainscale.scaling.strategies.mesh import Layout

if TYPE_CHECKING:
    from trainscale.scaling.runtime.distributed import DistContext
    from trainscale.scaling.spec import RunSpec


def extensions_dir() -> Path:
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"])
    root = os.environ.get("TRAINSCALE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trainscale"
    return Path(root) / "torch_extensions"


def deepspeed_config(spec: RunSpec, stage: int) -> dict:
    return {
        "train_micro_batch_size_per_gpu": spec.batch_size,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": stage},
        "zero_allow_untested_optimizer": True,  # the run's own torch optimizer (SGD/AdamW) as client
        "gradient_clipping": 0.0,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


STATE_TAG = "deepspeed"  # the engine's checkpoint subfolder inside trainscale's checkpoint folder


class ZeROStrategy(Strategy):
    stage: int = 0
    built_on = "deepspeed.initialize"
    requires = ("deepspeed", "DeepSpeed")
    # DeepSpeed's own checkpoints (each rank its optimizer partition, ZeRO-3 its parameter shards),
    # inside trainscale's folder, marker and atomic rename; loaded at the same world size only.
    checkpoints = native_checkpoints = True

    def setup(self, model: nn.Module, loss_fn: Callable[..., Any], spec: RunSpec, ctx: DistContext) -> None:
        os.environ["TORCH_EXTENSIONS_DIR"] = str(extensions_dir())
        import deepspeed

        deepspeed.init_distributed(dist_backend=spec.backend)
        self.layout = Layout(spec.degrees, ctx.rank)
        model = model.to(ctx.device)
        client = make_optimizer(spec.optim, model.parameters())
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=client, config=deepspeed_config(spec, self.stage), dist_init_required=False)
        self.model = self.engine
        self.loss_fn = loss_fn

    def forward_backward(self, inputs: Any, targets: Any) -> torch.Tensor:
        loss = self.loss_fn(self.engine(inputs), targets)
        self.engine.backward(loss)
        return loss.detach()

    def optimizer_step(self) -> None:
        self.engine.step()  # steps the optimizer and zeroes the gradients

    def save_state(self, folder: Path) -> None:
        self.engine.save_checkpoint(str(folder), tag=STATE_TAG, save_latest=False)

    def load_state(self, folder: Path) -> None:
        path, _client = self.engine.load_checkpoint(str(folder), tag=STATE_TAG, load_optimizer_states=True,
                                                    load_lr_scheduler_states=True)
        if path is None:
            raise RuntimeError(f"DeepSpeed found no checkpoint under {folder}/{STATE_TAG}")

    @property
    def stepping_optimizer(self) -> torch.optim.Optimizer:
        """The torch optimizer that steps DeepSpeed's fp32 partitions (what the state count looks at)."""
        return getattr(self.optimizer, "optimizer", None) or self.optimizer


class ZeRO1Strategy(ZeROStrategy):
    name, stage = "zero1", 1
    summary = "DeepSpeed ZeRO stage 1 (optimizer state partitioned over data-parallel ranks)"


class ZeRO2Strategy(ZeROStrategy):
    name, stage = "zero2", 2
    summary = "DeepSpeed ZeRO stage 2 (optimizer state and gradients partitioned)"


class ZeRO3Strategy(ZeROStrategy):
    name, stage = "zero3", 3
    summary = "DeepSpeed ZeRO stage 3 (optimizer state, gradients and parameters partitioned)"
