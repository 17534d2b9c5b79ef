"""Checkpoints with torch.distributed.checkpoint (DCP): sharded, atomic, synchronous or asynchronous.

Layout under the checkpoint folder:
    stepNNNNNNNN/                 a complete checkpoint (renamed into place only when whole)
        *.distcp, .metadata       DCP's files: model and optimizer (and LR scheduler) state
        rankNNNNN.pt              per-rank state: RNG (torch, numpy, python), data-loader position
        COMPLETE                  the completion marker: step and the size of every file
    .tmp-stepNNNNNNNN/            a checkpoint being written (never read by restore)
    corrupt-stepNNNNNNNN/         a checkpoint restore found damaged, moved aside

Atomicity: every rank writes into the temporary folder; rank 0 writes COMPLETE (with each file's
size) only after DCP's metadata, which DCP writes after every rank's data, and then renames the
folder into place. A crash at any point leaves the last complete checkpoint untouched.
Restore walks complete checkpoints newest first; one whose files do not match the marker
(truncated, missing) or that fails to load is skipped, and the fallback is recorded.

Model and optimizer state go through ``get_state_dict``/``set_state_dict``, so DDP and FSDP (DTensor
shards) save and load the same way. The optimizer's state is flattened to one key per parameter
(``param_groups.<fqn>.lr``, ``state.<fqn>.exp_avg``): pipeline stages hold different parameters, and a
nested ``param_groups`` list, the same key on every rank, would be written once for all of them (a
restored stage then lost its own hyperparameters, AdamW's betas among them). Asynchronous saves use
``dcp.async_save`` (the state is staged to CPU copies before the call returns) on a separate gloo
group, so the background write's collectives never interleave with training's. The copies are
buffers kept for the run: the first save allocates them, later ones copy into them.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemWriter
from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.distributed.tensor import DTensor
from torch.serialization import get_crc32_options, set_crc32_options

from trainscale.scaling.results.files import read_json, write_json_atomic

MARKER = "COMPLETE"
STATE_DICT_OPTIONS = StateDictOptions(flatten_optimizer_state_dict=True)
_STEP_DIR = re.compile(r"^step(\d{8})$")


def step_dir_name(step: int) -> str:
    return f"step{step:08d}"


def rank_state_name(rank: int) -> str:
    return f"rank{rank:05d}.pt"


@dataclass
class SaveRecord:
    step: int
    path: Path
    blocking_s: float  # time the training loop was held by this save
    total_s: float | None = None  # until the checkpoint was complete on disk (async: later than blocking_s)
    bytes: int | None = None
    phases: dict[str, float] = field(default_factory=dict)  # this rank's breakdown (Checkpointer.save)
    staging_bytes: int | None = None  # asynchronous saves: this rank's host memory for the staged copies


@dataclass
class RestoreResult:
    step: int  # the step training resumes at (0: no usable checkpoint, start from scratch)
    path: Path | None
    restore_s: float
    skipped: list[dict] = field(default_factory=list)  # newer checkpoints passed over: {"path", "reason"}
    loader: dict = field(default_factory=dict)  # the data-loader position saved with the checkpoint


# ---------------------------------------------------------------------------------------------
# What a checkpoint holds, beyond DCP's model and optimizer state


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# Finding and checking checkpoints (no process group needed)


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, path) of every folder with a completion marker, newest first."""
    if not Path(root).is_dir():
        return []
    found = []
    for p in Path(root).iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / MARKER).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def newest_complete(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[0][1] if found else None


def state_bytes(state: Any) -> int:
    """Bytes of the tensors in a (nested) state dict, this rank's shards of distributed tensors."""
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    if isinstance(state, DTensor):
        state = state.to_local()
    return state.numel() * state.element_size() if isinstance(state, torch.Tensor) else 0


def file_sizes(folder: Path) -> dict[str, int]:
    """Every file under folder (its path relative to folder) with its size, the marker left out."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MARKER}


def verify(path: Path) -> str | None:
    """None when every file the marker lists is there with its recorded size; else why not."""
    try:
        marker = read_json(path / MARKER)
    except (OSError, ValueError) as e:
        return f"unreadable marker: {e}"
    for name, size in marker["files"].items():
        f = path / name
        if not f.is_file():
            return f"{name} missing"
        actual = f.stat().st_size
        if actual != size:
            return f"{name} is {actual} bytes, the marker says {size} (truncated)"
    return None


def checkpoint_to_resume(path: Path) -> Path:
    """The checkpoint a run resumes from: `path` itself when it is one (a stepNNNNNNNN folder with its
    completion marker), else the newest complete checkpoint under it. ValueError saying why neither."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: not a folder")
    candidates = [path] if (path / MARKER).is_file() else [p for _, p in complete_checkpoints(path)]
    if not candidates:
        raise ValueError(f"{path}: no complete checkpoint (a stepNNNNNNNN folder with a {MARKER} marker)")
    reason = verify(candidates[0])
    if reason is not None:
        raise ValueError(f"{candidates[0]}: damaged checkpoint ({reason})")
    return candidates[0]


def load_any_world(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   scheduler: Any | None = None, native: NativeState | None = None) -> dict:
    """Load a complete checkpoint written at any world size into this run's model and optimizer (DCP
    reshards: FSDP's DTensor shards are re-cut for this mesh, DDP's replicated tensors load whole on
    every rank). Every rank reads rank 0's per-rank file for the data position; its own RNG state is
    restored only at the same world size (a different one cannot continue the same random streams).
    An engine's own checkpoint (``native``) at another world size goes through the engine's own
    resharding (DeepSpeed's universal checkpoint). Returns what was done, for the run's record."""
    marker = read_json(path / MARKER)
    saved_world, world, rank = marker.get("world_size"), dist.get_world_size(), dist.get_rank()
    t0 = time.monotonic()
    payload = torch.load(path / rank_state_name(0), weights_only=False)
    if native is not None:
        if saved_world == world:
            native.load_state(path)
        else:
            native.load_state_resharded(path)
    else:
        model_sd, optim_sd = get_state_dict(model, optimizer, options=STATE_DICT_OPTIONS)
        state = {"model": model_sd, "optim": optim_sd}
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        dcp.load(state, checkpoint_id=str(path))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                       options=STATE_DICT_OPTIONS)
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
    same_world = saved_world == world
    if same_world:
        set_rng_state(torch.load(path / rank_state_name(rank), weights_only=False)["rng"])
    dist.barrier()
    return {"path": str(path), "step": int(payload["step"]), "loader": payload.get("loader", {}),
            "saved_world_size": saved_world, "world_size": world, "resharded": not same_world,
            "rng": "restored" if same_world else f"this run's seed (saved at world size {saved_world})",
            "restore_s": time.monotonic() - t0}


def corrupt_newest(root: Path) -> dict:
    """Fault injection: truncate the largest file of the newest complete checkpoint to half its size
    (the marker stays, as after a torn write). Returns what was done."""
    path = newest_complete(root)
    if path is None:
        raise FileNotFoundError(f"no complete checkpoint under {root} to corrupt")
    victim = max((p for p in path.iterdir() if p.is_file() and p.name != MARKER), key=lambda p: p.stat().st_size)
    size = victim.stat().st_size
    with open(victim, "r+b") as f:
        f.truncate(size // 2)
        os.fsync(f.fileno())
    return {"path": str(path), "file": victim.name, "bytes_before": size, "bytes_after": size // 2}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class TimedWriter(FileSystemWriter):
    """DCP's file writer, timing its phases on this rank: plan (local and, on rank 0, global), write
    (serialising, writing and fsyncing this rank's files, thread_count files at once) and metadata
    (rank 0's .metadata file)."""

    def __init__(self, path: Path, thread_count: int) -> None:
        super().__init__(str(path), thread_count=thread_count, sync_files=True)
        self.phases = {"plan_s": 0.0, "write_s": 0.0, "metadata_s": 0.0}

    def _timed(self, phase: str, fn, *args):
        t0 = time.monotonic()
        try:
            return fn(*args)
        finally:
            self.phases[phase] += time.monotonic() - t0

    def prepare_local_plan(self, plan):
        return self._timed("plan_s", super().prepare_local_plan, plan)

    def prepare_global_plan(self, plans):
        return self._timed("plan_s", super().prepare_global_plan, plans)

    def write_data(self, plan, planner):
        def write():
            # DCP writes each tensor with torch.save, whose zip records carry a CRC32 of every byte:
            # computing it made the write 1.43x slower here. Nothing reads it (torch.load
            # does not check it; the COMPLETE marker's sizes and a failed load are the checks), so it is
            # off while the files are written (process-wide: one save is in flight at a time).
            crc = get_crc32_options()
            set_crc32_options(False)
            try:
                future = super(TimedWriter, self).write_data(plan, planner)
                future.wait()  # FileSystemWriter writes before it returns; wait() makes that explicit
            finally:
                set_crc32_options(crc)
            return future
        return self._timed("write_s", write)

    def finish(self, metadata, results):
        return self._timed("metadata_s", super().finish, metadata, results)


def default_write_threads() -> int:
    """Files each rank writes at once: up to 4, no more than its share of the node's cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, min(4, cores // max(1, per_node)))


# ---------------------------------------------------------------------------------------------


class NativeState(Protocol):
    """A strategy whose engine saves and loads its own state (DeepSpeed ZeRO's partitions), in
    place of DCP: every rank calls both, with the same folder."""

    def save_state(self, folder: Path) -> None: ...

    def load_state(self, folder: Path) -> None: ...

    def load_state_resharded(self, folder: Path) -> None:
        """Load state written at another world size (every rank calls it)."""
        ...


class Checkpointer:
    """Saves and restores one rank's part of a run's checkpoints. Every rank of the job constructs
    it (the async group is a collective) and calls save/restore/wait at the same steps. With
    ``native`` the model and optimizer state are the engine's own files (synchronous saves only),
    inside the same folder, marker and atomic rename."""

    def __init__(self, root: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Any | None = None, async_save: bool = False, keep: int = 2,
                 write_threads: int = 0, native: NativeState | None = None) -> None:
        if native is not None and async_save:
            raise ValueError("asynchronous saves go through DCP; an engine's own checkpoints are synchronous")
        self.root = Path(root)
        self.model, self.optimizer, self.scheduler, self.native = model, optimizer, scheduler, native
        self.async_save, self.keep = async_save, keep
        self.write_threads = write_threads or default_write_threads()
        self.rank = dist.get_rank()
        self.root.mkdir(parents=True, exist_ok=True)
        # The background write's collectives run on their own group (async_save needs a CPU backend).
        self._group = dist.new_group(backend="gloo") if async_save else None
        # One stager for the run: its CPU copies are made at the first save and copied into at every
        # later one (dcp.async_save's own stager is new, and allocates, at every call). One save is in
        # flight at a time, so a copy never overwrites a buffer still being written. Pinned, with
        # non-blocking copies, when the state is on a GPU.
        cuda = torch.cuda.is_available()
        self._stager = DefaultStager(StagingOptions(use_pinned_memory=cuda, use_shared_memory=False,
                                                    use_async_staging=False, use_non_blocking_copy=cuda)
                                     ) if async_save else None
        self._pending: tuple[Future, SaveRecord, float, TimedWriter] | None = None
        self.saves: list[SaveRecord] = []  # completed saves, in order

    # -- state ------------------------------------------------------------------------------

    def _dcp_state(self) -> dict[str, Any]:
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer, options=STATE_DICT_OPTIONS)
        state = {"model": model_sd, "optim": optim_sd}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    # -- save -------------------------------------------------------------------------------

    def save(self, step: int, loader: dict | None = None) -> SaveRecord:
        """Checkpoint the state after `step` steps. Synchronous: returns once it is complete.
        Asynchronous: returns once the state is staged; the write finishes in the background and
        the checkpoint becomes complete in poll()/wait()."""
        t0 = time.monotonic()
        self.wait()  # one save in flight at a time
        tmp = self.root / f".tmp-{step_dir_name(step)}"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)  # left by a crash during an earlier attempt's save
            tmp.mkdir(parents=True)
        dist.barrier()
        torch.save({"step": step, "rng": rng_state(), "loader": loader or {}}, tmp / rank_state_name(self.rank))
        t1 = time.monotonic()
        if self.native is not None:
            self.native.save_state(tmp)
            record = SaveRecord(step, self.root / step_dir_name(step), 0.0,
                                phases={"prepare_s": t1 - t0, "engine_save_s": time.monotonic() - t1})
            dist.barrier()  # every rank's files are written before rank 0 marks the checkpoint complete
            self._finish(record, tmp, t0, {})
            record.blocking_s = record.total_s or 0.0
            return record
        state = self._dcp_state()
        t2 = time.monotonic()
        record = SaveRecord(step, self.root / step_dir_name(step), 0.0,
                            phases={"prepare_s": t1 - t0, "state_dict_s": t2 - t1})
        writer = TimedWriter(tmp, self.write_threads)
        if self.async_save:
            future = dcp.async_save(state, storage_writer=writer, process_group=self._group,
                                    async_stager=self._stager)
            record.blocking_s = time.monotonic() - t0
            record.phases["staging_s"] = time.monotonic() - t2  # the copies to CPU async_save makes first
            record.staging_bytes = state_bytes(state)  # host memory the staged copies hold (kept for the run)
            self._pending = (future, record, t0, writer)
        else:
            dcp.save(state, storage_writer=writer)
            record.phases["dcp_save_s"] = time.monotonic() - t2
            self._finish(record, tmp, t0, writer.phases)
            record.blocking_s = record.total_s or 0.0
        return record

    @property
    def in_flight(self) -> bool:
        """An asynchronous save is still being written."""
        return self._pending is not None

    def poll(self) -> None:
        """Complete a background save whose write has finished (rank 0 renames; no collective)."""
        if self._pending is not None and self._pending[0].done():
            self._complete_pending()

    def wait(self) -> None:
        """Block until the save in flight (if any) is complete."""
        if self._pending is not None:
            self._pending[0].result()
            self._complete_pending()

    def _complete_pending(self) -> None:
        future, record, t0, writer = self._pending
        self._pending = None
        future.result()  # raises if the background write failed
        self._finish(record, self.root / f".tmp-{step_dir_name(record.step)}", t0, writer.phases)

    def _finish(self, record: SaveRecord, tmp: Path, t0: float, write_phases: dict[str, float]) -> None:
        """Rank 0 makes the checkpoint complete: marker, then the atomic rename. DCP's metadata
        (written after every rank's data) exists by now, and so do the per-rank files (written
        before each rank entered the save's collectives)."""
        record.phases.update(write_phases)
        t_finish = time.monotonic()
        if self.rank == 0:
            sizes = file_sizes(tmp)
            write_json_atomic(tmp / MARKER, {"step": record.step, "files": sizes, "world_size": dist.get_world_size(),
                                             "async": self.async_save})
            _fsync_dir(tmp)
            if record.path.exists():  # the same step saved by an earlier attempt: replace it
                shutil.rmtree(record.path)
            os.rename(tmp, record.path)
            _fsync_dir(self.root)
            record.bytes = sum(sizes.values())
            self._prune()
        record.phases["complete_s"] = time.monotonic() - t_finish  # marker, fsyncs, rename, pruning
        record.total_s = time.monotonic() - t0
        self.saves.append(record)

    def _prune(self) -> None:
        for _step, path in complete_checkpoints(self.root)[self.keep:]:
            shutil.rmtree(path, ignore_errors=True)

    # -- restore ----------------------------------------------------------------------------

    def restore(self) -> RestoreResult:
        """Load the newest complete checkpoint that checks out; damaged newer ones are moved aside
        (rank 0) and listed in the result. Nothing usable: step 0, state untouched."""
        t0 = time.monotonic()
        skipped: list[dict] = []
        chosen: tuple[int, Path] | None = None
        payload: dict = {}
        for step, path in complete_checkpoints(self.root):
            reason = verify(path)
            if reason is None:
                try:
                    payload = torch.load(path / rank_state_name(self.rank), weights_only=False)
                    if self.native is not None:
                        self.native.load_state(path)
                    else:
                        state = self._dcp_state()
                        dcp.load(state, checkpoint_id=str(path))
                except Exception as e:  # noqa: BLE001 - any load failure means: try the one before
                    reason = f"load failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            # Ranks decide together: a checkpoint is used only if it loaded on every rank.
            ok = torch.tensor([0 if reason else 1], dtype=torch.int32)
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
            if ok.item() == 1:
                if self.native is None:
                    set_state_dict(self.model, self.optimizer, model_state_dict=state["model"],
                                   optim_state_dict=state["optim"], options=STATE_DICT_OPTIONS)
                    if self.scheduler is not None:
                        self.scheduler.load_state_dict(state["scheduler"])
                set_rng_state(payload["rng"])
                chosen = (step, path)
                break
            skipped.append({"path": str(path), "step": step, "reason": reason or "failed to load on another rank"})
        dist.barrier()
        if self.rank == 0:
            for s in skipped:
                p = Path(s["path"])
                if p.exists():
                    os.rename(p, p.with_name(f"corrupt-{p.name}"))
        dist.barrier()
        if chosen is None:
            return RestoreResult(0, None, time.monotonic() - t0, skipped)
        return RestoreResult(chosen[0], chosen[1], time.monotonic() - t0, skipped, payload.get("loader", {}))
