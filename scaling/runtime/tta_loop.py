"""The per-rank loop of a time-to-accuracy run (a run with a target_accuracy), by MLPerf's timing rules.

- init (process start, model build, strategy set-up) is timed apart and ends with ``init_stop``;
  before it, the MLPerf submission keys and ``cache_clear`` (scaling/runtime/mlperf_submission.py);
- the clock starts at ``run_start``, before the first touch of training or validation data (the data
  loaders are made after it), and never pauses: evaluations, epoch turns and warmup steps are inside;
- training runs epoch by epoch and evaluates every ``eval.every_epochs`` epochs (or every
  ``eval.every_steps`` steps), and always at the end of the last allowed epoch;
- the clock stops at the first evaluation whose global accuracy reaches the target (its
  ``eval_accuracy`` event); ``run_stop`` then says status "success";
- a run still below the target after ``eval.max_epochs`` epochs stops with status "aborted": it is
  INVALID, has no TTA and counts as the slowest run (analysis/tta.py).
``steps`` does not apply; ``warmup`` only marks the first steps as warmup in the samples, so the
throughput figures of the run leave them out (the TTA clock does not).

Checkpoints (checkpoint.every_steps / every_s) save the model, optimizer, RNG and data position like a
throughput run's, with the TTA clock counted so far. How a resumed run's time is counted:
- restarted inside its job (a fault, a restart from the run's own checkpoint): the clock is rank 0's
  from the first attempt's ``run_start``, so the failure, the restart and the steps run again are in
  the TTA (analysis/tta.py reads the first run_start of the log);
- resumed from another run's checkpoint (checkpoint.resume_from): the saving run's clock at that save
  is carried (a ``ts_tta_carried_clock`` event) and added to this run's; the time between the two
  runs is not counted. Either way MLPerf would not accept the run (it counts one uninterrupted run).
"""
from __future__ import annotations

import time
from pathlib import Path

from trainscale.scaling.results import schema
from trainscale.workloads.data import sharded_eval_loader, sharded_loader

from trainscale.scaling.runtime.checkpoint_schedule import batches_from, restore_or_resume
from trainscale.scaling.runtime.distributed import DistContext, device_name
from trainscale.scaling.runtime.evaluation import global_accuracy
from trainscale.scaling.runtime.events import EventLog, mlc
from trainscale.scaling.runtime.mlperf_submission import log_submission
from trainscale.scaling.runtime.progress_file import ProgressFile
from trainscale.scaling.runtime.recorder import SampleRecorder
from trainscale.scaling.spec import RunSpec
from trainscale.scaling.runtime.step import TimedStep, end_init, set_up


def _eval_due(spec: RunSpec, step: int, epoch: int, last_in_epoch: bool) -> bool:
    final = epoch == spec.eval.max_epochs and last_in_epoch
    if spec.eval.every_steps > 0:
        return step % spec.eval.every_steps == 0 or final
    return last_in_epoch and (epoch % spec.eval.every_epochs == 0 or final)


def train_to_accuracy(spec: RunSpec, ctx: DistContext, run_dir: Path, events: EventLog, t_main: float) -> dict:
    session = set_up(spec, ctx, min_train_samples=0)
    built, layout = session.built, session.layout
    if built.eval_set is None:
        raise ValueError(f"workload {spec.workload!r} has no validation set for data.kind {spec.data.kind!r}: "
                         "a time-to-accuracy run needs one")
    saver, start_step, resumed = restore_or_resume(spec, session.strategy, run_dir, events)
    log_submission(events, spec, ctx, built)  # before init_stop, whose compliance rule reads the division
    init_s = end_init(events, spec, t_main)
    events.event(schema.EVENT_TARGET_ACCURACY, spec.target_accuracy)
    events.event(schema.EVENT_EVAL_CADENCE, {"every_steps": spec.eval.every_steps} if spec.eval.every_steps
                 else {"every_epochs": spec.eval.every_epochs})
    events.event(schema.EVENT_MAX_EPOCHS, spec.eval.max_epochs)

    run_start = events.start(mlc.RUN_START, metadata={"first_step": start_step})
    # Another run's clock is carried; the run's own (a restart at a smaller world) is the log's first run_start.
    carried = resumed is not None and not resumed.get("own_checkpoint")
    carried_s = float(resumed["loader"].get("tta_clock_s", 0.0)) if carried else 0.0
    if carried:
        events.event(schema.EVENT_TTA_CARRIED, carried_s, metadata={"path": resumed["path"], "step": start_step})
    session.telemetry.mark(schema.MARK_RUN_START)
    step_fn = TimedStep(session, spec, ctx, run_start, run_dir, saver.root if saver else None)
    recorder = SampleRecorder(run_dir, ctx.rank, extra_columns=schema.TTA_SAMPLE_COLUMNS + step_fn.columns)
    # First touch of the data: after run_start (MLPerf), so reading it is inside the clock.
    loader = sharded_loader(built.train_set, spec.batch_size, layout.dp_rank, layout.dp_size, spec.seed,
                            workers=spec.data.loader_workers, pin_memory=ctx.device.type == "cuda")
    eval_loader = sharded_eval_loader(built.eval_set, spec.eval.batch_size or spec.batch_size, ctx.rank,
                                      ctx.world_size, workers=spec.data.loader_workers)
    eval_samples = len(built.eval_set)
    steps_per_epoch = len(loader.loader)
    events.event(mlc.TRAIN_SAMPLES, len(built.train_set))
    events.event(mlc.EVAL_SAMPLES, eval_samples)
    progress = ProgressFile(run_dir, ctx.is_main, spec.eval.max_epochs * steps_per_epoch)
    session.memory.loop_starts()
    batches = batches_from(loader, start_step, resumed)

    def evaluate(epoch_num: float, step: int) -> tuple[float, float]:
        t_start = events.start(mlc.EVAL_START, metadata={"epoch_num": epoch_num})
        correct, total = global_accuracy(session.strategy, eval_loader, ctx, session.options)
        if total != eval_samples:
            raise RuntimeError(f"evaluation counted {total} samples, the validation set has {eval_samples}")
        accuracy = correct / total
        events.event(mlc.EVAL_ACCURACY, accuracy,
                     metadata={"epoch_num": epoch_num, "step": step, "correct": correct, "total": total})
        t_stop = events.end(mlc.EVAL_STOP, metadata={"epoch_num": epoch_num})
        return accuracy, t_stop - t_start

    def epoch_of(step: int) -> int:  # MLPerf's epochs count from 1; the loader's from 0
        return loader.position(step)["epoch"] + 1

    step, reached, accuracy = start_step, False, None
    epoch, open_epoch = epoch_of(step), None
    while epoch <= spec.eval.max_epochs:
        if open_epoch != epoch:
            events.start(mlc.EPOCH_START, metadata={"epoch_num": epoch})
            open_epoch = epoch
        if step == spec.warmup:
            step_fn.align()  # the throughput window starts with the ranks aligned
        phase = schema.PHASE_WARMUP if step < spec.warmup else schema.PHASE_MEASURED
        row = dict(phase=phase, **step_fn(step, batches), epoch=epoch, eval_s=0.0)
        step += 1
        after = loader.position(step)
        last_in_epoch = after["epoch"] + 1 != epoch
        if last_in_epoch:
            events.end(mlc.EPOCH_STOP, metadata={"epoch_num": epoch})
            open_epoch = None
        if _eval_due(spec, step, epoch, last_in_epoch):
            # Epochs done, fractional part-way through one (at any world size: the samples consumed).
            epoch_num = epoch if last_in_epoch else round(epoch - 1 + after["consumed"] / (
                steps_per_epoch * loader.global_batch), 4)
            accuracy, row["eval_s"] = evaluate(epoch_num, step)
            reached = accuracy >= spec.target_accuracy
        recorder.add(**row)
        progress.update(step, f"epoch {epoch}" + (f" acc {accuracy:.4f}" if accuracy is not None else ""))
        if reached:
            break
        if saver:
            saver.after_step(step, {**after, "tta_clock_s": carried_s + time.monotonic() - run_start}, recorder)
        epoch = after["epoch"] + 1
    if open_epoch is not None:  # the target was reached part-way through this epoch
        events.end(mlc.EPOCH_STOP, metadata={"epoch_num": epoch})
    progress.update(step, "reached the target" if reached else "target not reached", force=True)
    status = mlc.SUCCESS if reached else mlc.ABORTED
    session.telemetry.mark(schema.MARK_RUN_STOP)
    run_stop = events.end(mlc.RUN_STOP, metadata={"status": status, "epochs": min(epoch, spec.eval.max_epochs),
                                                   "steps": step})
    if saver:  # outside the clock, as in a throughput run
        saver.finish(step, {**loader.position(step), "tta_clock_s": carried_s + run_stop - run_start}, recorder)
    recorder.close()
    session.telemetry.finish(run_dir)
    return {"init_s": init_s, "run_s": run_stop - run_start, "sample_unit": built.sample_unit,
            "tta_reached": reached, "epochs": min(epoch, spec.eval.max_epochs), "steps": step,
            "device_name": device_name(ctx.device), "first_step": start_step,
            **({"checkpoint": saver.facts()} if saver else {}), **({"resumed": resumed} if resumed else {}),
            **step_fn.facts()}
