"""The run's event log in MLPerf's ``:::MLLOG {json}`` format, written with mlperf-logging's mllog.

MLPerf keys (init_start, run_start, run_stop, ...) plus trainscale's own (prefixed ``ts_``) for
checkpoints, failures and recovery. Only rank 0 writes, as in MLPerf reference code. Each event also
carries ``mono_s``, the writer's monotonic clock, so durations never depend on wall-clock steps.
Each call returns the ``mono_s`` it logged (on every rank, logging or not), so a rank can time
itself on exactly the clock readings the log holds.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from mlperf_logging.mllog.mllog import MLLogger
from mlperf_logging.mllog import constants as mlc

__all__ = ["EventLog", "mlc"]


class EventLog:
    def __init__(self, path: Path | None) -> None:
        """path None: a rank that does not log (events are dropped)."""
        self._mllogger = None
        if path is not None:
            # One logger per instance: two logs of one file in a process must not share handlers.
            logger = logging.getLogger(f"trainscale.events.{path}.{id(self)}")
            logger.propagate = False
            logger.setLevel(logging.INFO)
            handler = logging.FileHandler(path)
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
            self._handler = handler
            self._mllogger = MLLogger(logger=logger, default_stack_offset=2)

    def _meta(self, metadata: dict[str, Any] | None, mono_s: float) -> dict[str, Any]:
        return {**(metadata or {}), "mono_s": mono_s}

    def event(self, key: str, value: Any = None, metadata: dict[str, Any] | None = None) -> float:
        mono_s = time.monotonic()
        if self._mllogger:
            self._mllogger.event(key=key, value=value, metadata=self._meta(metadata, mono_s))
        return mono_s

    def start(self, key: str, value: Any = None, metadata: dict[str, Any] | None = None) -> float:
        mono_s = time.monotonic()
        if self._mllogger:
            self._mllogger.start(key=key, value=value, metadata=self._meta(metadata, mono_s))
        return mono_s

    def end(self, key: str, value: Any = None, metadata: dict[str, Any] | None = None) -> float:
        mono_s = time.monotonic()
        if self._mllogger:
            self._mllogger.end(key=key, value=value, metadata=self._meta(metadata, mono_s))
        return mono_s

    def close(self) -> None:
        if self._mllogger:
            self._handler.close()
            self._mllogger.logger.removeHandler(self._handler)
