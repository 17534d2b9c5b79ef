"""When a rank's fault fires, and the record of it: a rank injects its fault (faults/kinds.py) into
itself at a given step, or at the first step that starts a given time after run_start (on that
rank's monotonic clock).

A single fault (fault.kind) fires once per run: in the first attempt only (TORCHELASTIC_RESTART_COUNT
0) and only while the run folder has no fault_fired.json (engines without torchrun's count, e.g. Ray
Train; fault.marker puts it elsewhere: a Slurm drill's attempts share one), so a restarted group runs
on. A fault trace (fault.trace, faults/trace.py) fires each of its faults in whichever attempt reaches
its time, counted from the job's first run_start (the first in the event log; the machine's monotonic
clock is shared by every attempt): each rank the fault targets fires it once, remembered by a marker
per fault and rank under faults_fired/. Before firing, the rank appends a ``ts_fault`` event (kind,
rank, step, whether the rank stops, mono_s, the trace index) to the run's event log: the time the
recovery timeline starts from.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from trainscale.faults.kinds import FAULT_KINDS, NO_FAULT, FaultKind
from trainscale.scaling.results import schema

EVENT_FAULT = schema.EVENT_FAULT


def restart_count() -> int:
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


FIRED_DIR = "faults_fired"


def job_start(events_path: Path | None, run_start: float) -> float:
    """The job's first run_start (an earlier attempt's, when there was one), else this attempt's."""
    if events_path is None or not events_path.exists():
        return run_start
    from trainscale.analysis.eventlog import mono_s, read_events

    try:
        first = next((e for e in read_events(events_path) if e["key"] == "run_start"), None)
    except (OSError, ValueError):
        return run_start
    return min(run_start, mono_s(first)) if first is not None else run_start


class FaultInjector:
    """One rank's view of the run's fault plan (a spec.FaultConfig): one fault, or a trace's faults."""

    def __init__(self, fault: Any, rank: int, run_start: float, events_path: Path | None = None,
                 checkpoint_root: Path | None = None, node_rank: int = 0) -> None:
        self.fault, self.rank, self.run_start = fault, rank, run_start
        self.events_path, self.checkpoint_root = events_path, checkpoint_root
        self.run_dir = events_path.parent if events_path is not None else None
        self.slow_from: int | None = None  # the step a straggler starts at
        self.pending: list[tuple[int, Any]] = []  # the trace's faults this rank fires: (index, TracedFault)
        self.kind: FaultKind | None = None
        if getattr(fault, "trace", ""):
            from trainscale.faults.trace import NODE_KINDS, read

            self.trace_start = job_start(events_path, run_start)
            self.pending = [(i, f) for i, f in enumerate(read(Path(fault.trace)).faults)
                            if (f.node == node_rank if f.kind in NODE_KINDS else f.rank == rank)
                            and not self._fired_marker(i).exists()]
            self.armed = bool(self.pending)
            return
        self.kind = FAULT_KINDS.get(fault.kind) if fault.kind != NO_FAULT else None
        # Fire once per run, whatever restarts the group (torchrun's count; the marker for Ray and others).
        self.marker = events_path.parent / schema.FAULT_FIRED if events_path is not None else None
        if getattr(fault, "marker", ""):  # shared by the attempts of a requeued Slurm job
            self.marker = Path(fault.marker)
        mine = self.kind is not None and (node_rank == fault.node if self.kind.targets_node else rank == fault.rank)
        self.armed = mine and restart_count() == 0 and not (self.marker is not None and self.marker.exists())

    def _fired_marker(self, index: int) -> Path:
        return Path(self.fault.trace).parent / FIRED_DIR / f"fault{index}-rank{self.rank}.json"

    def _due(self, step: int) -> bool:
        if self.fault.at_time_s >= 0:
            return time.monotonic() - self.run_start >= self.fault.at_time_s
        return step >= self.fault.at_step  # at that step, or the first after it the kind is ready at

    def before_step(self, step: int) -> None:
        """Called before each step: the fault fires here when it is due."""
        if self.pending:
            self._trace_step(step)
            return
        if not self.armed or not self._due(step) or not self.kind.ready(self):
            return
        self.armed = False
        self._log(self.fault.kind, self.kind, step, self.kind.prepare(self, step), self.marker)
        self.kind.fire(self, step)

    def _trace_step(self, step: int) -> None:
        index, traced = self.pending[0]
        if time.monotonic() - self.trace_start < traced.at_time_s:
            return
        kind = FAULT_KINDS.get(traced.kind)
        if not kind.ready(self):
            return
        self.pending.pop(0)
        self.armed = bool(self.pending)
        self._log(traced.kind, kind, step, {**kind.prepare(self, step), "trace_index": index,
                                            "trace_at_time_s": traced.at_time_s,
                                            "job_time_s": time.monotonic() - self.trace_start},
                  self._fired_marker(index))
        kind.fire(self, step)

    @property
    def slows_compute(self) -> bool:
        return self.kind is not None and self.kind.straggler

    def after_compute(self, step: int, compute_s: Callable[[], float]) -> float:
        """Called after each step's forward/backward with a reading of its time so far; a straggler
        sleeps there, so its sleep is compute time. Returns the seconds slept."""
        return self.kind.after_compute(self, step, compute_s()) if self.slows_compute else 0.0

    def _log(self, kind_name: str, kind: FaultKind, step: int, extra: dict, marker: Path | None) -> None:
        if self.events_path is not None:
            from trainscale.scaling.results.files import write_json_atomic
            from trainscale.scaling.runtime.events import EventLog

            if marker is not None:
                marker.parent.mkdir(parents=True, exist_ok=True)
                write_json_atomic(marker, {"kind": kind_name, "rank": self.rank, "step": step})
            log = EventLog(self.events_path)  # appends; rank 0 may be writing too (whole lines, O_APPEND)
            log.event(EVENT_FAULT, kind_name, metadata={"rank": self.rank, "step": step,
                                                        "stops_rank": kind.stops_rank, **extra})
            log.close()
        if kind.stops_rank:
            sys.stdout.flush()
            sys.stderr.flush()
