"""Global evaluation: every rank scores its shard of the validation set, the correct/total counts are
all-reduced, so the accuracy is that of the whole set, each sample counted once (see EvalShard)."""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from trainscale.scaling.runtime.distributed import DistContext
from trainscale.scaling.runtime.precision import StepOptions


def global_accuracy(strategy: Any, loader: DataLoader, ctx: DistContext,
                    options: StepOptions = StepOptions()) -> tuple[int, int]:
    """(correct, total) top-1 over all ranks' shards; the same answer on every rank. The model runs
    with the training steps' precision (autocast) and input memory format (options)."""
    model = strategy.model
    was_training = model.training
    model.eval()
    counts = torch.zeros(2, dtype=torch.int64)
    try:
        with torch.no_grad():
            for inputs, targets, valid in loader:
                with options.autocast():
                    logits = strategy.predict(options.prepare_inputs(inputs.to(ctx.device, non_blocking=True)))
                hits = (logits.argmax(dim=1).cpu() == targets) & valid
                counts[0] += hits.sum()
                counts[1] += valid.sum()
    finally:
        model.train(was_training)
    counts = counts.to(ctx.device)
    dist.all_reduce(counts)
    return int(counts[0]), int(counts[1])
