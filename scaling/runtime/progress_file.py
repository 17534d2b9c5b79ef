"""Rank 0 tells the launcher how far it is: progress.json in the run (or comm world) folder, written
atomically at most every INTERVAL_S, and always for the last unit of work. The launcher's supervisor
reads it for the live display (launchers/base.py)."""
from __future__ import annotations

import time
from pathlib import Path

from trainscale.scaling.results import schema
from trainscale.scaling.results.files import write_json_atomic

INTERVAL_S = 0.5


class ProgressFile:
    def __init__(self, folder: Path, enabled: bool, total: int) -> None:
        self.path, self.enabled, self.total, self._last = Path(folder) / schema.PROGRESS, enabled, total, 0.0

    def update(self, done: int, phase: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (force or done >= self.total or now - self._last >= INTERVAL_S):
            write_json_atomic(self.path, {"step": done, "steps": self.total, "phase": phase})
            self._last = now
