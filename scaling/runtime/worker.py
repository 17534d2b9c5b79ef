"""The per-rank benchmark loop. Started by a launcher (torchrun, Ray, Slurm) as
``python -m trainscale.scaling.runtime.worker --run-dir DIR``; reads DIR/config.json.

A run with a target_accuracy is a time-to-accuracy run (scaling/runtime/tta_loop.py); otherwise a throughput
run of a fixed number of steps (train() below).

Timing rules (docs/method.md): monotonic clock on each rank; init (process start to the end of model and
data set-up) is timed apart from training; warmup steps are recorded but excluded from the measured
window; a barrier aligns the ranks where the measured window starts; every step's data, compute
(forward + backward, gradient communication included) and optimizer time is kept per rank.
"""
from __future__ import annotations

import argparse
import dataclasses
import signal
import os
import sys
import time
import traceback
from pathlib import Path

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from trainscale.scaling.results import schema
from trainscale.scaling.results.records import RankInfo
from trainscale.scaling.results.files import read_json, write_json_atomic
from trainscale.faults.inject import restart_count
from trainscale.launchers.ownership import die_with_parent
from trainscale.workloads.data import sharded_loader

from trainscale.scaling import provenance
from trainscale.scaling.runtime import torchft_loop
from trainscale.scaling.runtime.checkpoint_schedule import batches_from, restore_or_resume
from trainscale.scaling.runtime.distributed import DistContext, device_name, init_from_env, shutdown
from trainscale.scaling.runtime.events import EventLog, mlc
from trainscale.scaling.runtime.progress_file import ProgressFile
from trainscale.scaling.runtime.recorder import SampleRecorder
from trainscale.scaling.spec import RunSpec, from_dict
from trainscale.scaling.runtime.step import TimedStep, end_init, set_up

EVENT_ATTEMPT = schema.EVENT_ATTEMPT


def process_age_s() -> float | None:
    """Seconds since this process was created (interpreter start and imports), from /proc."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def train(spec: RunSpec, ctx: DistContext, run_dir: Path, events: EventLog, t_main: float) -> dict:
    session = set_up(spec, ctx, min_train_samples=spec.steps * spec.global_batch)
    layout = session.layout
    loader = sharded_loader(session.built.train_set, spec.batch_size, layout.dp_rank, layout.dp_size, spec.seed,
                            workers=spec.data.loader_workers, pin_memory=ctx.device.type == "cuda")
    saver, start_step, resumed = restore_or_resume(spec, session.strategy, run_dir, events)
    init_s = end_init(events, spec, t_main)
    events.event(mlc.MAX_STEPS, spec.steps)

    run_start = events.start(mlc.RUN_START, metadata={"first_step": start_step})
    session.telemetry.mark(schema.MARK_RUN_START)
    step_fn = TimedStep(session, spec, ctx, run_start, run_dir, saver.root if saver else None)
    recorder = SampleRecorder(run_dir, ctx.rank, step_fn.columns)
    progress = ProgressFile(run_dir, ctx.is_main, spec.steps)
    session.memory.loop_starts()
    batches = batches_from(loader, start_step, resumed)
    for step in range(start_step, spec.steps):
        if step == spec.warmup:
            step_fn.align()
        phase = schema.PHASE_WARMUP if step < spec.warmup else schema.PHASE_MEASURED
        recorder.add(phase=phase, **step_fn(step, batches))
        progress.update(step + 1, phase)
        if saver and step + 1 < spec.steps:
            saver.after_step(step + 1, loader.position(step + 1), recorder)
    session.telemetry.mark(schema.MARK_RUN_STOP)  # the last step ended with its synchronisation
    run_s = events.end(mlc.RUN_STOP, metadata={"status": "success"}) - run_start
    if saver:
        saver.finish(spec.steps, loader.position(spec.steps), recorder)
    # Compute-only steps for the exposed-communication figure: after run_stop, outside the window.
    no_sync = step_fn.comm_probe.run_no_sync_block(step_fn.device_batches(batches), ctx, recorder, spec.steps,
                                                   session.built.samples_per_item, run_start)
    events.event("ts_no_sync_steps", no_sync)
    recorder.close()
    session.telemetry.finish(run_dir)
    progress.update(spec.steps, "done", force=True)
    return {"init_s": init_s, "run_s": run_s, "sample_unit": session.built.sample_unit,
            "device_name": device_name(ctx.device), "first_step": start_step,
            **({"checkpoint": saver.facts()} if saver else {}), **({"resumed": resumed} if resumed else {}),
            **step_fn.facts()}


@record
def main(argv: list[str] | None = None) -> None:
    t_main = time.monotonic()
    startup_s = process_age_s()
    die_with_parent(signal.SIGKILL)  # a rank whose agent is gone has no one to report to
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    run_rank(args.run_dir, t_main, startup_s)


def run_rank(run_dir: Path, t_main: float, startup_s: float | None) -> None:
    """One rank, end to end. Also the entry of launchers that start ranks themselves (Ray Train):
    a process group that already exists is used as it is."""
    spec = from_dict(read_json(run_dir / schema.CONFIG))
    threads = int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads()
    torch.set_num_threads(threads)

    # A short collective timeout (fault.detect_timeout_s) is how a hung peer is detected.
    ctx = init_from_env(spec.backend, timeout_s=spec.fault.detect_timeout_s or min(spec.timeout_s, 1800.0))
    pg_ready = time.monotonic()
    group = torchft_loop.replica_group()
    if group is None and ctx.world_size < spec.world_size and ctx.world_size % spec.nproc == 0:
        # An elastic rendezvous went on without a lost node (fault.kind lose-node): this attempt's run is
        # that many nodes, each rank with its batch, so the global batch is smaller from here on.
        spec = dataclasses.replace(spec, nodes=ctx.world_size // spec.nproc)
    if group is not None:  # a torchft replica group: a world of its own; its place among the groups is its rank
        ctx = dataclasses.replace(ctx, rank=group[0], world_size=group[1])
        events = EventLog(torchft_loop.group_events_path(run_dir, group[0]))
    else:
        events = EventLog(run_dir / schema.EVENTS if ctx.is_main else None)
    # Where this attempt's time went before the log opened (the recovery timeline's restart and rendezvous).
    events.event(EVENT_ATTEMPT, restart_count(), metadata={
        "process_start_mono_s": t_main - startup_s if startup_s is not None else None,
        "main_mono_s": t_main, "pg_ready_mono_s": pg_ready, "world_size": ctx.world_size,
        "slurm_restart_count": int(os.environ["SLURM_RESTART_COUNT"]) if "SLURM_RESTART_COUNT" in os.environ else None})
    events.start(mlc.INIT_START)
    try:
        if group is not None:
            facts = torchft_loop.train_replica_group(spec, ctx, run_dir, events, t_main)
        elif spec.is_tta:  # a time-to-accuracy run: epochs to the target (scaling/runtime/tta_loop.py)
            from trainscale.scaling.runtime.tta_loop import train_to_accuracy

            facts = train_to_accuracy(spec, ctx, run_dir, events, t_main)
        else:
            facts = train(spec, ctx, run_dir, events, t_main)
        info = RankInfo(rank=ctx.rank, local_rank=ctx.local_rank, node_rank=ctx.node_rank, world_size=ctx.world_size,
                        pid=os.getpid(), threads=threads, device=str(ctx.device), backend=ctx.backend,
                        startup_s=startup_s, **provenance.host_facts(), extra=facts)
        write_json_atomic(schema.rank_info_path(run_dir, ctx.rank), info.to_dict())
    finally:
        events.close()
    shutdown()


if __name__ == "__main__":
    try:
        main()
    except Exception:
        # @record has written the error for torchrun. Exit now: with a peer that hangs (SIGSTOP), the
        # process group's teardown at interpreter exit blocks for tens of seconds, hiding the failure.
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
