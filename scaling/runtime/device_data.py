"""Batches on their way to the rank's device, in the memory format the step wants.

CPU: each batch is taken when the step asks for it (the loader's own worker processes, if any, work
ahead). CUDA: the loader pins its batches (DataLoader pin_memory) and the next batch is copied to the
GPU on a side stream while the current step computes, as torchvision's and timm's GPU loaders do; the
step's stream waits for the copy only when it uses the batch, so host-to-device copies overlap compute
instead of sitting on the step's stream. The batch order is the loader's, unchanged.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch

from trainscale.scaling.runtime.precision import StepOptions


class DeviceBatches:
    def __init__(self, source: Iterator, device: torch.device, options: StepOptions) -> None:
        self.source, self.device, self.options = source, device, options
        self.cuda = device.type == "cuda"
        self._stream = torch.cuda.Stream(device) if self.cuda else None
        self._next: tuple[Any, Any] | None = None
        self._started = False

    def __iter__(self) -> DeviceBatches:
        return self

    def _copy(self) -> tuple[Any, Any] | None:
        try:
            inputs, targets = next(self.source)
        except StopIteration:
            return None
        with torch.cuda.stream(self._stream):
            inputs = self.options.prepare_inputs(inputs.to(self.device, non_blocking=True))
            targets = targets.to(self.device, non_blocking=True)
        return inputs, targets

    def __next__(self) -> tuple[Any, Any]:
        if not self.cuda:
            inputs, targets = next(self.source)
            return self.options.prepare_inputs(inputs.to(self.device)), targets.to(self.device)
        if not self._started:
            self._next, self._started = self._copy(), True
        if self._next is None:
            raise StopIteration
        stream = torch.cuda.current_stream(self.device)
        stream.wait_stream(self._stream)
        inputs, targets = self._next
        for t in (inputs, targets):
            t.record_stream(stream)  # the caching allocator must not reuse them before this stream is done
        self._next = self._copy()  # the following batch is copied while this one is used
        return inputs, targets
