"""What every per-rank loop shares: the set-up of a run (workload, strategy, layout) and one training
step, timed and instrumented the same way in throughput and time-to-accuracy runs.

A step: the fault plan is consulted; then data (next batch, moved to the device), compute (forward
and backward, gradient communication included) and optimizer time. On CPU these are readings of the
rank's monotonic clock; on CUDA, CUDA events at the parts' edges read after the step's one end
synchronisation (scaling/runtime/timing.py), with the step's own time on the host clock after that
synchronisation. The comm probe's per-step columns (time in gradient collectives) and the strategy
probe (collectives and state of one probe step) ride along.

Set-up applies the run's precision and speed options (scaling/runtime/precision.py) in one place: TF32 flags,
channels_last model (inputs: scaling/runtime/device_data.py), then autocast, gradient scaler and torch.compile
in the strategy's step; and starts this node's GPU telemetry (scaling/runtime/telemetry.py, local rank 0).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from trainscale.scaling.results import schema
from trainscale.faults.inject import FaultInjector
from trainscale.workloads.registry import WORKLOADS, Built

from trainscale.scaling.runtime.comm_probe import CommProbe
from trainscale.scaling.runtime.device_data import DeviceBatches
from trainscale.scaling.runtime.distributed import DistContext
from trainscale.scaling.runtime.events import EventLog, mlc
from trainscale.scaling.runtime.flops import count_training_flops, measure_matmul_peak
from trainscale.scaling.strategies.mesh import Layout
from trainscale.scaling.runtime.measure import MemoryWatch, StrategyProbe
from trainscale.scaling.runtime.precision import StepOptions
from trainscale.scaling.spec import RunSpec
from trainscale.scaling.strategies.base import Strategy
from trainscale.scaling.strategies.registry import STRATEGIES
from trainscale.scaling.runtime.telemetry import NodeTelemetry
from trainscale.scaling.runtime.timing import PhaseClock


@dataclass
class Session:
    """A rank's run, set up: the workload's parts, the strategy wrapping them, this rank's place."""
    built: Built
    strategy: Strategy
    layout: Layout  # data is sharded over data-parallel ranks only (layout.dp_rank, layout.dp_size)
    memory: MemoryWatch
    options: StepOptions
    telemetry: NodeTelemetry  # marks run_start, window_start, run_stop; a no-op off local rank 0 or GPUs
    matmul_peak: dict  # this rank's measured matmul FLOP/s (scaling/runtime/flops.py)


def set_up(spec: RunSpec, ctx: DistContext, min_train_samples: int) -> Session:
    torch.manual_seed(spec.seed)
    memory = MemoryWatch(ctx.device)
    options = StepOptions.from_spec(spec, ctx.device)
    options.apply_global_flags()
    workload = WORKLOADS.get(spec.workload)
    built = workload.build(spec.model_config(), spec.data, spec.seed, min_train_samples=min_train_samples)
    if ctx.rank == 0:  # the same on every rank: counted once, recorded with rank 0's facts
        built.extra["flops"] = count_training_flops(built.model, built.loss_fn, built.train_set, built.samples_per_item)
    peak = measure_matmul_peak(ctx.device, spec.precision, torch.get_num_threads())
    strategy = STRATEGIES.get(spec.parallel).create()
    strategy.setup(options.prepare_model(built.model), built.loss_fn, spec, ctx)
    strategy.configure_step(options)  # validation refused options the strategy cannot apply
    return Session(built, strategy, strategy.layout_of(ctx.rank, ctx.world_size), memory, options,
                   NodeTelemetry.start(spec, ctx), peak)


def end_init(events: EventLog, spec: RunSpec, t_main: float) -> float:
    """All ranks set up: the barrier that ends init, init_stop and the run's MLPerf keys; init_s."""
    torch.distributed.barrier()
    init_s = time.monotonic() - t_main
    events.end(mlc.INIT_STOP)
    events.event(mlc.GLOBAL_BATCH_SIZE, spec.global_batch)
    events.event(mlc.SEED, spec.seed)
    events.event(mlc.NUM_WARMUP_STEPS, spec.warmup)
    return init_s


class TimedStep:
    def __init__(self, session: Session, spec: RunSpec, ctx: DistContext, run_start: float,
                 run_dir: Path | None = None, checkpoint_root: Path | None = None) -> None:
        self.session, self.spec, self.ctx, self.run_start = session, spec, ctx, run_start
        self.faults = FaultInjector(spec.fault, ctx.rank, run_start,
                                    run_dir / schema.EVENTS if run_dir is not None else None, checkpoint_root,
                                    node_rank=ctx.node_rank)
        self.comm_probe = CommProbe(session.strategy, spec)
        self.extra_columns = session.strategy.extra_sample_columns
        if spec.compile:  # a first call under the probe's TorchDispatchMode makes dynamo skip the model for good
            self.strategy_probe = StrategyProbe(session.strategy, None, "not measured: with compile on, the probe's "
                                                "dispatch mode would keep torch.compile from tracing the model")
        else:
            self.strategy_probe = StrategyProbe(session.strategy, spec.warmup - 1 if spec.warmup else None)
        self.clock = PhaseClock(ctx.device, edges=4)
        self._source: Iterator | None = None
        self._device_batches: DeviceBatches | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        """Sample columns beyond schema.SAMPLE_COLUMNS that each step's row carries."""
        return self.comm_probe.columns + self.extra_columns

    def device_batches(self, batches: Iterator) -> DeviceBatches:
        """The device-side view of a loader's batch iterator (one per iterator: a new epoch's iterator
        gets a new one)."""
        if batches is not self._source:
            self._source = batches
            self._device_batches = DeviceBatches(batches, self.ctx.device, self.session.options)
        return self._device_batches

    def align(self) -> None:
        """All ranks start the measured window together; the node's GPU telemetry marks it."""
        self.ctx.synchronize()
        torch.distributed.barrier()
        self.session.telemetry.mark(schema.MARK_WINDOW_START)

    def __call__(self, step: int, batches: Iterator[Any]) -> dict[str, Any]:
        """Run training step `step` on the next batch; the sample row (all but the phase)."""
        strategy, phases = self.session.strategy, self.clock
        self.faults.before_step(step)
        self.comm_probe.begin_step()
        self.strategy_probe.begin(step)
        phases.mark()
        inputs, targets = next(self.device_batches(batches))
        phases.mark()
        loss = strategy.forward_backward(inputs, targets)
        self.faults.after_compute(step, phases.since_last)  # a straggler's sleep is compute time
        phases.mark()
        strategy.optimizer_step()
        phases.mark()
        (data_s, compute_s, optimizer_s), t0, t3 = phases.finish()
        self.strategy_probe.end(step)
        # One rank per data-parallel replica counts its samples, so the ranks' sum is the global batch.
        samples = len(targets) * self.session.built.samples_per_item if self.session.layout.holds_loss else 0
        return dict(step=step, t_start=t0 - self.run_start, data_s=data_s, compute_s=compute_s,
                    optimizer_s=optimizer_s, step_s=t3 - t0, samples=samples, loss=loss,
                    **self.comm_probe.step_columns(),
                    **strategy.step_extras())

    def facts(self) -> dict[str, Any]:
        """Per-rank facts for ranks/rankN.json: layout, memory, the probe step's collectives and state."""
        s = self.session
        return {"parallel": {"strategy": self.spec.parallel, **s.layout.to_dict()}, "memory": s.memory.facts(),
                "workload_facts": s.built.extra, "matmul_peak": s.matmul_peak, "step_options": s.options.facts(),
                "step_timing": "CUDA events, read after each step's end synchronisation" if self.clock.cuda
                else "host monotonic clock", **self.strategy_probe.facts()}
