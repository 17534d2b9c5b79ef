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
"""
from __future__ import annotations

from pathlib import Path


from trainscale.scaling.results import schema
from trainscale.workloads.data import sharded_eval_loader, sharded_loader

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
    log_submission(events, spec, ctx, built)  # before init_stop, whose compliance rule reads the division
    init_s = end_init(events, spec, t_main)
    events.event(schema.EVENT_TARGET_ACCURACY, spec.target_accuracy)
    events.event(schema.EVENT_EVAL_CADENCE, {"every_steps": spec.eval.every_steps} if spec.eval.every_steps
                 else {"every_epochs": spec.eval.every_epochs})
    events.event(schema.EVENT_MAX_EPOCHS, spec.eval.max_epochs)

    run_start = events.start(mlc.RUN_START)
    session.telemetry.mark(schema.MARK_RUN_START)
    step_fn = TimedStep(session, spec, ctx, run_start)
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

    step, epoch, reached, accuracy = 0, 0, False, None
    for epoch in range(1, spec.eval.max_epochs + 1):
        events.start(mlc.EPOCH_START, metadata={"epoch_num": epoch})
        loader.sampler.set_epoch(epoch - 1)
        if hasattr(built.train_set, "set_epoch"):
            built.train_set.set_epoch(epoch - 1)
        batches = iter(loader.loader)
        epoch_open = True
        for i in range(steps_per_epoch):
            if step == spec.warmup:
                step_fn.align()  # the throughput window starts with the ranks aligned
            phase = schema.PHASE_WARMUP if step < spec.warmup else schema.PHASE_MEASURED
            row = dict(phase=phase, **step_fn(step, batches), epoch=epoch, eval_s=0.0)
            step += 1
            last_in_epoch = i == steps_per_epoch - 1
            if last_in_epoch:
                events.end(mlc.EPOCH_STOP, metadata={"epoch_num": epoch})
                epoch_open = False
            if _eval_due(spec, step, epoch, last_in_epoch):
                epoch_num = epoch if last_in_epoch else round(step / steps_per_epoch, 4)
                accuracy, row["eval_s"] = evaluate(epoch_num, step)
                reached = accuracy >= spec.target_accuracy
            recorder.add(**row)
            progress.update(step, f"epoch {epoch}" + (f" acc {accuracy:.4f}" if accuracy is not None else ""))
            if reached:
                break
        if epoch_open:  # the target was reached part-way through this epoch
            events.end(mlc.EPOCH_STOP, metadata={"epoch_num": epoch})
        if reached:
            break
    recorder.close()
    progress.update(step, "reached the target" if reached else "target not reached", force=True)
    status = mlc.SUCCESS if reached else mlc.ABORTED
    session.telemetry.mark(schema.MARK_RUN_STOP)
    run_stop = events.end(mlc.RUN_STOP, metadata={"status": status, "epochs": epoch, "steps": step})
    session.telemetry.finish(run_dir)
    return {"init_s": init_s, "run_s": run_stop - run_start, "sample_unit": built.sample_unit,
            "tta_reached": reached, "epochs": epoch, "steps": step, "device_name": device_name(ctx.device),
            **step_fn.facts()}
