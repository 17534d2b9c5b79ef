"""The records of a results folder, typed: what summary.json, ranks/rankNNNNN.json, sweep.json, a
drill's keys and a comm folder's summary hold (file names and layout: schema.py).

Writers build a record and write ``record.to_dict()``; readers turn a file's dict back into its record
with ``from_dict``, which names the file and the field when one is missing or of the wrong type. A
field set to ABSENT is left out of the JSON (as a section a run does not have), unlike None, which is
written as null. A record with an ``extra`` field keeps the keys it does not declare there (and
writes them at its top level), so that the loop's facts and newer writers' keys pass through.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from trainscale.scaling.results.files import ResultsError
from trainscale.scaling.results.schema import SCHEMA_VERSION, STATUS_STARTED


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


ABSENT: Any = _Absent()


class RecordError(ResultsError):
    """A results file that does not hold its record: the message names the file and the field."""


R = TypeVar("R", bound="Record")


def _matches(value: Any, tp: Any) -> bool:
    """Whether a JSON value fits a declared type (int for float is fine; bool is never a number)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if dataclasses.is_dataclass(tp):
        return isinstance(value, dict)
    return isinstance(value, origin or tp)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "an object"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "an object",
            list: "a list"}.get(typing.get_origin(tp) or tp, str(tp))


@dataclass
class Record:
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is ABSENT:
                continue
            if f.name == "extra":
                out.update(value)
            elif isinstance(value, Record):
                out[f.name] = value.to_dict()
            elif isinstance(value, list):
                out[f.name] = [v.to_dict() if isinstance(v, Record) else v for v in value]
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls: type[R], d: Any, where: str) -> R:
        """The record of a file's dict; RecordError naming where and the field when it does not fit."""
        if not isinstance(d, dict):
            raise RecordError(f"{where}: expected a JSON object, got {type(d).__name__}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            if f.name not in d:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise RecordError(f"{where}: field {f.name!r} is missing")
                continue
            value, tp = d[f.name], hints[f.name]
            if not _matches(value, tp):
                raise RecordError(f"{where}: field {f.name!r} must be {_type_name(tp)}, got {value!r}"[:300])
            item = _list_item_type(tp)
            if item is not None and isinstance(value, list):
                value = [item.from_dict(v, f"{where} {f.name}[{i}]") for i, v in enumerate(value)]
            kwargs[f.name] = value
        if "extra" in names:
            kwargs["extra"] = {k: v for k, v in d.items() if k not in names}
        return cls(**kwargs)


def _list_item_type(tp: Any) -> type[Record] | None:
    """The record class of a list[SomeRecord] field, else None."""
    for t in (tp, *typing.get_args(tp)):
        if typing.get_origin(t) is list:
            args = typing.get_args(t)
            if args and isinstance(args[0], type) and issubclass(args[0], Record):
                return args[0]
    return None


# ---------------------------------------------------------------------------------------------
# Who wrote a record that is not finished yet ("started", "running"), and whether it still runs


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def process_identity() -> dict:
    """This process, as an unfinished record names its writer: host, boot, pid and its start time
    (a pid alone may be reused)."""
    return {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": os.getpid(),
            "start_ticks": _start_ticks(os.getpid())}


def writer_alive(identity: Any) -> bool | None:
    """Whether the process an unfinished record names still runs: True or False when it ran on this
    machine since its last boot, None when that cannot be known from here (another host, no record)."""
    if not isinstance(identity, dict) or identity.get("host") != socket.gethostname() \
            or not identity.get("boot_id") or identity.get("boot_id") != _boot_id():
        return None
    pid = identity.get("pid")
    return isinstance(pid, int) and _start_ticks(pid) is not None and _start_ticks(pid) == identity.get("start_ticks")


# ---------------------------------------------------------------------------------------------
# A run


@dataclass
class RunSummary(Record):
    """summary.json of a run: written "started" before the launch, then once, last, with the outcome
    (status ok or failed with the reason) and the metrics computed from the raw files."""
    status: str  # schema.STATUS_*: started, ok, failed, stopped
    run_id: str
    schema_version: int = SCHEMA_VERSION
    reason: str | None = None
    started_utc: str = ABSENT
    orchestrator: dict = ABSENT  # the "started" record's writer (process_identity): abandoned when it is gone
    workload: str = ABSENT
    parallel: str = ABSENT
    launcher: str = ABSENT
    nodes: int = ABSENT
    nproc: int = ABSENT
    world_size: int = ABSENT
    batch_size_per_rank: int = ABSENT
    global_batch: int = ABSENT
    data_kind: str = ABSENT
    precision: str = ABSENT
    wall_s: float = ABSENT
    launch: dict = ABSENT  # what the launcher decided (threads, cores, rendezvous ...)
    failures: list = ABSENT  # failed ranks, cause first
    target_accuracy: float = ABSENT  # time-to-accuracy runs
    tta: dict = ABSENT  # time-to-accuracy runs: analysis/tta.py
    metrics: dict | None = ABSENT  # analysis/runs.py; None: a TTA run with no throughput window
    metrics_note: str = ABSENT
    init_s: float | None = ABSENT
    sample_unit: str = ABSENT
    parallelism: dict | None = ABSENT  # analysis/strategies.py
    gpu: dict | None = ABSENT  # analysis/gpu_telemetry.py
    attempts: list = ABSENT  # a Slurm-requeued drill: one entry per attempt
    extra: dict = field(default_factory=dict)  # a drill's keys (DrillRecord) and newer writers' keys

    @property
    def started(self) -> bool:
        return self.status == STATUS_STARTED


@dataclass
class RankInfo(Record):
    """ranks/rankNNNNN.json: who a rank was (identity, host) and, in ``extra``, what its loop
    measured (layout, memory, the probe step's collectives, init time, checkpoints, checks ...)."""
    rank: int
    world_size: int
    pid: int
    threads: int
    device: str
    backend: str
    local_rank: int = ABSENT
    node_rank: int = ABSENT
    startup_s: float | None = ABSENT
    hostname: str = ABSENT
    node_name: str = ABSENT
    addresses: list = ABSENT
    cpu_model: str = ABSENT
    cores: int = ABSENT
    logical_cpus: int | None = ABSENT
    memory_bytes: int | None = ABSENT
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# A sweep


@dataclass
class SweepEntry(Record):
    """One run of a sweep, as the index lists it (readers need only its path; the sweep writes all)."""
    path: str  # relative to the sweep folder
    name: str = ABSENT  # its folder under runs/
    parallel: str = ABSENT
    nodes: int = ABSENT
    nproc: int = ABSENT
    world_size: int = ABSENT
    repeat: int = ABSENT
    seed: int = ABSENT
    batch_size_per_rank: int = ABSENT
    global_batch: int = ABSENT
    status: str = ABSENT
    reason: str | None = None
    degrees: dict = ABSENT  # dp, tp, pp
    extra: dict = field(default_factory=dict)


@dataclass
class SweepIndex(Record):
    """sweep.json: the sweep's plan and each run's outcome as it finishes ("running" until the end)."""
    KIND: ClassVar[str] = "sweep"
    scaling: str
    runs: list[SweepEntry] = field(default_factory=list)
    workload: str = ABSENT
    parallel: str = ABSENT  # comma-separated when the sweep compares strategies
    status: str = ABSENT  # running, done, stopped
    reason: str | None = ABSENT  # why a sweep stopped
    orchestrator: dict = ABSENT  # a running sweep's trainscale process (process_identity)
    plan: list = ABSENT  # every planned point in run order: {name, repeat, spec}; what --resume continues
    resumes: list = ABSENT  # each resume: when, which points it kept and which it ran again
    kind: str = KIND
    schema_version: int = SCHEMA_VERSION
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# A drill: its keys in the run's summary.json (faults/drill.py writes them; analysis/drills.py reads)


@dataclass
class DrillRecord(Record):
    drill: dict  # fault, engine, launcher, max_restarts, rank, node, at_step, at_time_s, fired, restarts ...
    recovery: list  # per fault: detection_s, restart_s, rendezvous_s, restore_s, lost_work_s, other_s, total_s
    checkpoint: dict  # save_s_mean, save_s_samples, bytes, every_steps, async, saves, step_overhead_frac
    goodput: dict  # ettr, wall_s, productive_s, badput_s {category: seconds}
    intervals: dict  # mtbf_s, save_s, young_s, daly_s
    straggler: dict = ABSENT  # a straggler fault: its compute and the global step before and after
    torchft: dict = ABSENT  # the torchft engine: replicas, final state, per-fault stalls (faults/torchft_drill.py)


# ---------------------------------------------------------------------------------------------
# A trainscale comm folder


@dataclass
class CommSummary(Record):
    """summary.json of a comm folder."""
    KIND: ClassVar[str] = "comm"
    status: str
    run_id: str
    kind: str = KIND
    schema_version: int = SCHEMA_VERSION
    reason: str | None = None
    started_utc: str = ABSENT
    orchestrator: dict = ABSENT  # the "started" record's writer (process_identity)
    ops: list = ABSENT
    world_sizes: list = ABSENT
    dtype: str = ABSENT
    backend: str = ABSENT
    wall_s: float = ABSENT
    wrong_total: int = ABSENT
    launches: dict = ABSENT  # per world size: ok, reason, wall_s, failures, threads ...
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# GPU telemetry samples (telemetry/nodeNNNNN.csv), one row per GPU per sampling tick


@dataclass
class GpuSample(Record):
    t: float  # monotonic seconds on this node
    gpu: int
    util_pct: float | None
    mem_util_pct: float | None
    mem_used_bytes: int | None
    power_w: float | None
    sm_clock_mhz: int | None
    mem_clock_mhz: int | None
    temp_c: float | None
    clock_event_mask: int | None
    energy_mj: int | None  # NVML total energy since driver load; None where unsupported


GPU_SAMPLE_FIELDS = tuple(f.name for f in dataclasses.fields(GpuSample))
