"""When a rank's fault fires, and the record of it: a rank injects its fault (faults/kinds.py) into
itself at a given step, or at the first step that starts a given time after run_start (on that
rank's monotonic clock).

Faults fire once per run: in the first attempt only (TORCHELASTIC_RESTART_COUNT 0) and only while the
run folder has no fault_fired.json (engines without torchrun's count, e.g. Ray Train; fault.marker puts
it elsewhere: a Slurm drill's attempts share one), so a restarted group runs on. Before firing, the
rank appends a ``ts_fault`` event (kind, rank, step, whether the rank stops, mono_s) to the run's event
log: the time the recovery timeline starts from.
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


class FaultInjector:
    """One rank's view of the run's fault plan (a spec.FaultConfig)."""

    def __init__(self, fault: Any, rank: int, run_start: float, events_path: Path | None = None,
                 checkpoint_root: Path | None = None, node_rank: int = 0) -> None:
        self.fault, self.rank, self.run_start = fault, rank, run_start
        self.events_path, self.checkpoint_root = events_path, checkpoint_root
        self.run_dir = events_path.parent if events_path is not None else None
        self.kind: FaultKind | None = FAULT_KINDS.get(fault.kind) if fault.kind != NO_FAULT else None
        # Fire once per run, whatever restarts the group (torchrun's count; the marker for Ray and others).
        self.marker = events_path.parent / schema.FAULT_FIRED if events_path is not None else None
        if getattr(fault, "marker", ""):  # shared by the attempts of a requeued Slurm job
            self.marker = Path(fault.marker)
        mine = self.kind is not None and (node_rank == fault.node if self.kind.targets_node else rank == fault.rank)
        self.armed = mine and restart_count() == 0 and not (self.marker is not None and self.marker.exists())
        self.slow_from: int | None = None  # the step a straggler starts at

    def _due(self, step: int) -> bool:
        if self.fault.at_time_s >= 0:
            return time.monotonic() - self.run_start >= self.fault.at_time_s
        return step >= self.fault.at_step  # at that step, or the first after it the kind is ready at

    def before_step(self, step: int) -> None:
        """Called before each step: the fault fires here when it is due."""
        if not self.armed or not self._due(step) or not self.kind.ready(self):
            return
        self.armed = False
        self._log(step, self.kind.prepare(self, step))
        if self.kind.stops_rank:
            sys.stdout.flush()
            sys.stderr.flush()
        self.kind.fire(self, step)

    @property
    def slows_compute(self) -> bool:
        return self.kind is not None and self.kind.straggler

    def after_compute(self, step: int, compute_s: Callable[[], float]) -> float:
        """Called after each step's forward/backward with a reading of its time so far; a straggler
        sleeps there, so its sleep is compute time. Returns the seconds slept."""
        return self.kind.after_compute(self, step, compute_s()) if self.slows_compute else 0.0

    def _log(self, step: int, extra: dict) -> None:
        if self.events_path is None:
            return
        from trainscale.scaling.results.files import write_json_atomic
        from trainscale.scaling.runtime.events import EventLog

        write_json_atomic(self.marker, {"kind": self.fault.kind, "rank": self.rank, "step": step})
        log = EventLog(self.events_path)  # appends; rank 0 may be writing too (whole lines, O_APPEND)
        log.event(EVENT_FAULT, self.fault.kind, metadata={"rank": self.rank, "step": step,
                                                          "stops_rank": self.kind.stops_rank, **extra})
        log.close()
