"""What every per-rank loop shares: the set-up of a run (workload, strategy, layout) and one training
step, timed and instrumented the same way in throughput and time-to-accuracy runs.

A step: the fault plan is consulted; then data (next batch, moved to the device), compute (forward
and backward, gradient communication included) and optimizer time on this rank's monotonic clock,
synchronised with the accelerator before each reading so host timers are honest; the comm probe's
per-step columns (time in gradient collectives) and the strategy probe (collectives and state of one
probe step) ride along.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from trainscale.analysis import schema
from trainscale.faults.inject import FaultInjector
from trainscale.workloads import registry as workload_registry
from trainscale.workloads.registry import Built

from .comm_probe import CommProbe
from .distributed import DistContext
from .parallel.config import Layout
from .parallel.measure import MemoryWatch, StrategyProbe
from .spec import RunSpec
from .strategies import Strategy, layout_of
from .strategies import build as build_strategy

clock = time.monotonic


@dataclass
class Session:
    """A rank's run, set up: the workload's parts, the strategy wrapping them, this rank's place."""
    built: Built
    strategy: Strategy
    layout: Layout  # data is sharded over data-parallel ranks only (layout.dp_rank, layout.dp_size)
    memory: MemoryWatch


def set_up(spec: RunSpec, ctx: DistContext, min_train_samples: int) -> Session:
    torch.manual_seed(spec.seed)
    memory = MemoryWatch(ctx.device)
    workload = workload_registry.get(spec.workload)
    built = workload.build(spec.model_config(), spec.data, spec.seed, min_train_samples=min_train_samples)
    strategy = build_strategy(spec.parallel)
    strategy.setup(built.model, built.loss_fn, spec, ctx)
    return Session(built, strategy, layout_of(strategy, ctx.rank, ctx.world_size), memory)


class TimedStep:
    def __init__(self, session: Session, spec: RunSpec, ctx: DistContext, run_start: float,
                 run_dir: Path | None = None, checkpoint_root: Path | None = None) -> None:
        self.session, self.spec, self.ctx, self.run_start = session, spec, ctx, run_start
        self.faults = FaultInjector(spec.fault, ctx.rank, run_start,
                                    run_dir / schema.EVENTS if run_dir is not None else None, checkpoint_root,
                                    node_rank=ctx.node_rank)
        self.comm_probe = CommProbe(session.strategy, spec)
        self.extra_columns = tuple(getattr(session.strategy, "extra_sample_columns", ()))
        self.strategy_probe = StrategyProbe(session.strategy, spec.warmup - 1 if spec.warmup else None)

    @property
    def columns(self) -> tuple[str, ...]:
        """Sample columns beyond schema.SAMPLE_COLUMNS that each step's row carries."""
        return self.comm_probe.columns + self.extra_columns

    def align(self) -> None:
        """All ranks start the measured window together."""
        self.ctx.synchronize()
        torch.distributed.barrier()

    def __call__(self, step: int, batches: Iterator[Any]) -> dict[str, Any]:
        """Run training step `step` on the next batch; the sample row (all but the phase)."""
        spec, ctx, strategy = self.spec, self.ctx, self.session.strategy
        self.faults.before_step(step)
        self.comm_probe.begin_step()
        self.strategy_probe.begin(step)
        t0 = clock()
        inputs, targets = next(batches)
        inputs = inputs.to(ctx.device, non_blocking=True)
        targets = targets.to(ctx.device, non_blocking=True)
        ctx.synchronize()
        t1 = clock()
        loss = strategy.forward_backward(inputs, targets)
        ctx.synchronize()
        self.faults.slow_down(step, clock() - t1)
        t2 = clock()
        strategy.optimizer_step()
        ctx.synchronize()
        t3 = clock()
        self.strategy_probe.end(step)
        # One rank per data-parallel replica counts its samples, so the ranks' sum is the global batch.
        samples = len(targets) * self.session.built.samples_per_item if self.session.layout.holds_loss else 0
        return dict(step=step, t_start=t0 - self.run_start, data_s=t1 - t0, compute_s=t2 - t1, optimizer_s=t3 - t2,
                    step_s=t3 - t0, samples=samples, loss=loss, **self.comm_probe.step_columns(),
                    **(strategy.step_extras() if self.extra_columns else {}))

    def facts(self) -> dict[str, Any]:
        """Per-rank facts for ranks/rankN.json: layout, memory, the probe step's collectives and state."""
        s = self.session
        return {"parallel": {"strategy": self.spec.parallel, **s.layout.to_dict()}, "memory": s.memory.facts(),
                "workload_facts": s.built.extra, **self.strategy_probe.facts()}
