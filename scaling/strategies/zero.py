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
import shutil
import subprocess
import sys
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
    # inside trainscale's folder, marker and atomic rename; at another world size through DeepSpeed's
    # universal checkpoint.
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

    def load_state_resharded(self, folder: Path) -> None:
        """A checkpoint of another world size: rank 0 converts DeepSpeed's files into a universal
        checkpoint (deepspeed.checkpoint.ds_to_universal: every parameter's fp32 value and optimizer
        state whole) beside the checkpoint, which must be writable and seen by every rank; every rank
        loads it with DeepSpeed's load_universal on, cutting its own partition; the copy is removed."""
        import torch.distributed as dist

        scratch = folder.parent / f".universal-{folder.name}"
        status = [None]
        if dist.get_rank() == 0:
            shutil.rmtree(scratch, ignore_errors=True)
            proc = subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal",
                                   "--input_folder", str(folder / STATE_TAG), "--output_folder", str(scratch / STATE_TAG),
                                   "--inject_missing_state", "--num_extract_workers", "1", "--num_merge_workers", "1"],
                                  capture_output=True, text=True, timeout=3600)
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            status[0] = None if proc.returncode == 0 else (lines[-1] if lines else f"exit code {proc.returncode}")
        dist.broadcast_object_list(status, src=0)
        if status[0] is not None:
            raise RuntimeError(f"DeepSpeed could not convert {folder} to a universal checkpoint: {status[0]}")
        self.engine._config.load_universal_checkpoint = True  # the engine reads it at load time
        try:
            self.load_state(scratch)
        finally:
            self.engine._config.load_universal_checkpoint = False
            dist.barrier()
            if dist.get_rank() == 0:
                shutil.rmtree(scratch, ignore_errors=True)

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
