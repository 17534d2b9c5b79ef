"""Checkpointing inside the throughput loop: when to save (every checkpoint.every_steps steps, or at
the first step boundary checkpoint.every_s seconds after the last save), restore before training,
and the event-log records the recovery timeline and the checkpoint figures are computed from.

Events (rank 0, each with mono_s):
  ts_checkpoint_restore  start/end around restore; end metadata: step, path, restore_s, skipped
  ts_checkpoint_fallback one per damaged newer checkpoint passed over (path, reason)
  ts_checkpoint_save     after a save returned to the loop; metadata: step, blocking_s, async
  ts_checkpoint_complete when the checkpoint is complete on disk; metadata: step, total_s, bytes, phases,
                         staging_bytes (async: host memory of the staged copies)
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist

from trainscale.scaling.results import schema
from trainscale.workloads.data import ShardedLoader
from trainscale.scaling.results.files import read_json
from trainscale.faults.checkpoint_store import MARKER, Checkpointer, SaveRecord, checkpoint_to_resume, load_any_world

from trainscale.scaling.runtime.events import EventLog
from trainscale.scaling.runtime.recorder import SampleRecorder
from trainscale.scaling.spec import RunSpec

EVENT_RESTORE = schema.EVENT_CKPT_RESTORE
EVENT_FALLBACK = schema.EVENT_CKPT_FALLBACK
EVENT_SAVE = schema.EVENT_CKPT_SAVE
EVENT_COMPLETE = schema.EVENT_CKPT_COMPLETE


def resume_from(spec: RunSpec, strategy, events: EventLog) -> dict:
    """Start a run from checkpoint.resume_from, written at any world size (faults/checkpoint_store.py:
    load_any_world), between restore events like a restart's. The result says where the data stream goes
    on: "epoch" and "consumed", the samples of that epoch's global order the saving run had taken."""
    events.start(EVENT_RESTORE)
    path = checkpoint_to_resume(Path(spec.checkpoint.resume_from))
    done = load_any_world(path, strategy.model, strategy.optimizer, strategy.scheduler, native_state(strategy))
    loader = done["loader"]
    if "consumed" in loader:
        consumed = int(loader["consumed"])
    elif done["saved_world_size"] == dist.get_world_size():  # written before positions carried the count
        consumed = int(loader.get("batch", 0)) * spec.batch_size * dist.get_world_size()
    else:
        raise ValueError(f"{path}: its data position has no sample count (an older checkpoint): it can be "
                         f"resumed at its own world size ({done['saved_world_size']}) only")
    done.update(epoch=int(loader.get("epoch", 0)), consumed=consumed)
    events.end(EVENT_RESTORE, done["step"], metadata={k: v for k, v in done.items() if k != "loader"})
    return done


def restore_or_resume(spec: RunSpec, strategy, run_dir: Path, events: EventLog
                      ) -> tuple["RunCheckpoints | None", int, dict | None]:
    """Before training: the run's checkpointer (None without checkpoint settings), the step to start at
    and, for a run started from checkpoint.resume_from, what resume_from() said; also (own_checkpoint)
    for the run's own checkpoint written at another world size. The run's own checkpoints (a restart)
    come first."""
    saver = RunCheckpoints(spec, strategy, run_dir, events) if spec.checkpoint.enabled else None
    start_step = saver.restore() if saver else 0
    resumed = None
    if saver and saver.restored["saved_world_size"] not in (None, dist.get_world_size()):
        # The job went on with fewer nodes (an elastic rendezvous after a node was lost): DCP resharded
        # the state into this world; the data goes on after the samples the larger world consumed.
        loader = saver.restored["loader"]
        if "consumed" not in loader:
            raise ValueError(f"{saver.restored['path']}: its data position has no sample count (an older "
                             "checkpoint): it cannot go on at another world size")
        resumed = {"step": start_step, "epoch": int(loader["epoch"]), "consumed": int(loader["consumed"]),
                   "saved_world_size": saver.restored["saved_world_size"], "world_size": dist.get_world_size(),
                   "resharded": True, "path": saver.restored["path"], "loader": loader, "own_checkpoint": True}
    elif start_step == 0 and spec.checkpoint.resume_from:
        resumed = resume_from(spec, strategy, events)
        start_step = resumed["step"]
    return saver, start_step, resumed


def batches_from(loader: ShardedLoader, start_step: int, resumed: dict | None) -> Iterator:
    """The training batches from start_step on: after the samples the resumed checkpoint's run consumed,
    or at the loader's own position of that step."""
    if resumed is not None:
        stream = loader.resume(start_step, resumed["epoch"], resumed["consumed"])
    else:
        position = loader.position(start_step)
        stream = loader.batches(position["epoch"], position["batch"])
    return (batch for _epoch, batch in stream)


def native_state(strategy):
    """The strategy itself when its engine checkpoints its own state (DeepSpeed ZeRO), else None (DCP)."""
    return strategy if strategy.native_checkpoints else None


def checkpoint_root(spec: RunSpec, run_dir: Path) -> Path:
    return Path(spec.checkpoint.dir) if spec.checkpoint.dir else Path(run_dir) / schema.CHECKPOINTS_DIR


class RunCheckpoints:
    def __init__(self, spec: RunSpec, strategy, run_dir: Path, events: EventLog) -> None:
        self.cfg, self.events = spec.checkpoint, events
        self.root = checkpoint_root(spec, run_dir)
        self.ckpt = Checkpointer(self.root, strategy.model, strategy.optimizer, strategy.scheduler,
                                 async_save=self.cfg.async_save, keep=self.cfg.keep,
                                 write_threads=self.cfg.write_threads, native=native_state(strategy))
        self._last_save = time.monotonic()
        self._logged = 0
        self.restored: dict | None = None

    def restore(self) -> int:
        """Load the newest usable checkpoint; the step to resume at (0 when there is none)."""
        self.events.start(EVENT_RESTORE)
        result = self.ckpt.restore()
        for s in result.skipped:
            self.events.event(EVENT_FALLBACK, s["step"], metadata={"path": s["path"], "reason": s["reason"]})
        saved_world = read_json(result.path / MARKER).get("world_size") if result.path else None
        self.restored = {"step": result.step, "path": str(result.path) if result.path else None,
                         "restore_s": result.restore_s, "skipped": result.skipped, "loader": result.loader,
                         "saved_world_size": saved_world}
        self.events.end(EVENT_RESTORE, result.step, metadata={k: v for k, v in self.restored.items()})
        self._last_save = time.monotonic()
        return result.step

    def _due(self, step: int) -> bool:
        if self.cfg.every_steps and step % self.cfg.every_steps == 0:
            return True
        if self.cfg.every_s:
            # Rank 0's clock decides for everyone, so all ranks enter the save's collectives together.
            due = torch.tensor([int(time.monotonic() - self._last_save >= self.cfg.every_s)], dtype=torch.int32)
            dist.broadcast(due, 0)
            return bool(due.item())
        return False

    def after_step(self, step: int, position: dict, recorder: SampleRecorder) -> None:
        """Called after `step` steps are done (step = index of the next step)."""
        self.ckpt.poll()
        self._log_completed()
        if self._due(step):
            self._save(step, position, recorder)

    def finish(self, steps: int, position: dict, recorder: SampleRecorder) -> None:
        if self.cfg.final:
            self._save(steps, position, recorder)
        self.ckpt.wait()
        self._log_completed()

    def _save(self, step: int, position: dict, recorder: SampleRecorder) -> None:
        recorder.flush()  # the rows up to a checkpoint survive a crash after it
        record = self.ckpt.save(step, position)
        self._last_save = time.monotonic()
        self.events.event(EVENT_SAVE, step, metadata={"blocking_s": record.blocking_s, "async": self.cfg.async_save})
        self._log_completed()

    def _log_completed(self) -> None:
        for record in self.ckpt.saves[self._logged:]:
            self.events.event(EVENT_COMPLETE, record.step, metadata={
                "total_s": record.total_s, "bytes": record.bytes, "path": str(record.path), "phases": record.phases,
                "staging_bytes": record.staging_bytes})
        self._logged = len(self.ckpt.saves)

    def facts(self) -> dict:
        saves: list[SaveRecord] = self.ckpt.saves
        return {"root": str(self.root), "restored": self.restored, "write_threads": self.ckpt.write_threads,
                "saves": [{"step": r.step, "blocking_s": r.blocking_s, "total_s": r.total_s, "bytes": r.bytes,
                           "phases": r.phases, "staging_bytes": r.staging_bytes} for r in saves]}
