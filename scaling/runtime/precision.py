"""Precision and speed options of a run, applied in one place (runtime/step.py's set-up and the whole-model
step of strategies/base.py); checked before launch against the strategy's capability row (scaling/resolve.py).

- ``precision`` (top-level spec field; the fair-comparison guard of analysis/compare.py reads it):
  ``fp32``  float32 everywhere, TF32 tensor-core math off for matmuls and cuDNN convolutions (torch's
            matmul default; cuDNN's default would allow TF32, so the run says exactly what it computed);
  ``tf32``  float32 storage, TF32 tensor-core math allowed for matmuls and convolutions (CUDA only);
  ``bf16``  torch.autocast to bfloat16 around forward and loss (parameters, gradients and optimizer
            state stay float32), on CUDA and on CPU;
  ``fp16``  torch.autocast to float16 with a gradient scaler: torch.amp.GradScaler under DDP (its
            gradients are already identical on every rank), the ShardedGradScaler under FSDP and TP
            (sharded gradients: the inf/NaN check is all-reduced so every rank skips the same steps).
            CUDA only: refused with backend gloo (CPU float16 autocast is slow and no one trains that way).
  Autocast lives in the whole-model step (strategies/base.py), so bf16/fp16 apply to the strategies whose
  capability row has it (ddp, fsdp, tp); the others are refused (exit 2) rather than silently run in fp32.
- ``model.channels_last`` (resnet50): model and input batches in NHWC memory format (tensor cores' layout
  for convolutions); inputs are converted where they are moved to the device.
- ``compile``: torch.compile of the wrapped model (DDP's graph breaks at its buckets, FSDP2 and DTensor
  compile as they are), used for training steps; evaluation runs the model eagerly. With pp or zero* it
  is refused (exit 2).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from trainscale.scaling.spec import RunSpec

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class StepOptions:
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    device_type: str = "cpu"

    @classmethod
    def from_spec(cls, spec: RunSpec, device: torch.device) -> StepOptions:
        return cls(precision=spec.precision, channels_last=bool(spec.model.get("channels_last", False)),
                   compile=spec.compile, device_type=device.type)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return AUTOCAST_DTYPES.get(self.precision)

    def apply_global_flags(self) -> None:
        """TF32 math on or off for the whole process (matmuls and cuDNN convolutions)."""
        tf32 = self.precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = self.autocast_dtype
        return torch.autocast(self.device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def grad_scaler(self, sharded: bool) -> Any | None:
        """fp16 only. sharded: the gradients are shards (FSDP, TP), so found-inf is all-reduced."""
        if self.precision != "fp16":
            return None
        if sharded:
            from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

            return ShardedGradScaler(self.device_type)
        return torch.amp.GradScaler(self.device_type)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def prepare_inputs(self, inputs: Any) -> Any:
        if self.channels_last and isinstance(inputs, torch.Tensor) and inputs.dim() == 4:
            return inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def compiled(self, module: nn.Module) -> nn.Module:
        return torch.compile(module) if self.compile else module

    def facts(self) -> dict[str, Any]:
        """What the rank actually ran with (ranks/rankN.json, provenance)."""
        return {"precision": self.precision,
                "autocast_dtype": str(self.autocast_dtype).removeprefix("torch.") if self.autocast_dtype else None,
                "grad_scaler": self.precision == "fp16",
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
                "channels_last": self.channels_last, "compile": self.compile,
                "compile_backend": "inductor" if self.compile else None,
                # frames dynamo compiled in this process: 0 with compile on means the model ran eagerly
                "compiled_frames": _compiled_frames() if self.compile else None,
                "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}


def _compiled_frames() -> int:
    from torch._dynamo.utils import counters

    return int(counters["frames"]["ok"])
