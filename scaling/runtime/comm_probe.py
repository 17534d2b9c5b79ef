"""What the per-rank loop records about gradient communication (docs/method.md "All-reduce overhead inside training").

- Per step, with strategies that time their collectives (a ``comm_timer``, see
  runtime/comm_timing.py): comm_s (seconds with a gradient collective in flight) and comm_ops, as extra
  sample columns.
- After the measured window, with strategies that can skip gradient synchronisation
  (``skips_grad_sync``, ``no_grad_sync()``, e.g. DDP's no_sync): a block of compute-only steps in the same
  run, recorded with phase "no_sync" (after one more recorded as "no_sync_warmup": the first step
  on the no_sync path runs slower). They run forward and backward on the next batches with the
  sync skipped, and no optimizer step; buffers (e.g. BatchNorm statistics) and the RNG are put back
  and gradients cleared afterwards (as after any optimizer step), so the model is exactly as
  training left it. They are outside the measured window and never count towards throughput.

Exposed communication = compute time of measured steps - compute time of no_sync steps
(analysis.comm_overhead). DDP's buffer broadcast at the start of forward is not skipped by no_sync,
so the baseline keeps it: a slight underestimate of the exposed time when buffers exist.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.distributed as dist

from trainscale.scaling.results import schema
from trainscale.scaling.runtime.distributed import DistContext
from trainscale.scaling.spec import RunSpec
from trainscale.scaling.runtime.timing import PhaseClock

AUTO_MIN, AUTO_MAX = 2, 10


def no_sync_steps(spec: RunSpec) -> int:
    """comm.no_sync_steps, with -1 (auto) = a quarter of the measured steps, between 2 and 10."""
    if spec.comm.no_sync_steps >= 0:
        return spec.comm.no_sync_steps
    return min(AUTO_MAX, max(AUTO_MIN, (spec.steps - spec.warmup) // 4))


class CommProbe:
    def __init__(self, strategy: Any, spec: RunSpec) -> None:
        self.strategy = strategy
        self.timer = strategy.comm_timer
        self.no_sync_steps = no_sync_steps(spec) if strategy.skips_grad_sync else 0

    @property
    def columns(self) -> tuple[str, ...]:
        return (*schema.COMM_COLUMNS, schema.BUFFER_SYNC_COLUMN) if self.timer is not None else ()

    def begin_step(self) -> None:
        if self.timer is not None:
            self.timer.begin_step()

    def step_columns(self) -> dict[str, float | int]:
        if self.timer is None:
            return {}
        comm_s, ops, buffer_sync_s = self.timer.end_step()
        return {"comm_s": comm_s, "comm_ops": ops, schema.BUFFER_SYNC_COLUMN: buffer_sync_s}

    def run_no_sync_block(self, batches: Iterator, ctx: DistContext, recorder, first_step: int,
                          samples_per_item: int, run_start: float) -> int:
        """The compute-only steps on the next device batches (timed like training steps, by
        scaling.timing.PhaseClock); returns how many were recorded as no_sync (the warm-up step aside)."""
        if self.no_sync_steps == 0:
            return 0
        model = self.strategy.model
        buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(ctx.device) if ctx.device.type == "cuda" else None
        phases = PhaseClock(ctx.device, edges=3)
        ctx.synchronize()
        dist.barrier()
        # One more step first, recorded as no_sync_warmup: the first step on the no_sync path is slower.
        for k in range(self.no_sync_steps + 1):
            phase = schema.PHASE_NO_SYNC_WARMUP if k == 0 else schema.PHASE_NO_SYNC
            self.begin_step()
            phases.mark()
            inputs, targets = next(batches)
            phases.mark()
            with self.strategy.no_grad_sync():
                loss = self.strategy.forward_backward(inputs, targets)
            phases.mark()
            (data_s, compute_s), t0, t2 = phases.finish()
            recorder.add(step=first_step + k, phase=phase, t_start=t0 - run_start, data_s=data_s,
                         compute_s=compute_s, optimizer_s=0.0, step_s=t2 - t0,
                         samples=len(targets) * samples_per_item, loss=loss, **self.step_columns())
            model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, ctx.device)
        ctx.synchronize()
        dist.barrier()
        return self.no_sync_steps
