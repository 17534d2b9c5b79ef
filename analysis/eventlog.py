"""Reading a run's event log: MLPerf ``:::MLLOG {json}`` lines (written by scaling/runtime/events.py with
mlperf-logging's mllog). Every event of ours carries ``metadata.mono_s``, the writer's monotonic
clock; durations are differences of those, never of the wall-clock ``time_ms``."""
from __future__ import annotations

import json
from pathlib import Path

from trainscale.scaling.results.files import ResultsError, read_text

TOKEN = ":::MLLOG "


def parse_lines(lines, where: str = "event log") -> list[dict]:
    """The events of the lines that carry the MLLOG token (other lines are ignored); ResultsError
    naming the line of one that is not a whole event."""
    events = []
    for n, line in enumerate(lines, 1):
        if TOKEN in line:
            try:
                event = json.loads(line.split(TOKEN, 1)[1])
            except json.JSONDecodeError:
                raise ResultsError(f"{where} line {n}: not a whole MLLOG event (truncated or damaged)") from None
            if not isinstance(event, dict) or not isinstance(event.get("key"), str) \
                    or not isinstance(event.get("metadata"), dict):
                raise ResultsError(f"{where} line {n}: an MLLOG event needs a key and metadata")
            events.append(event)
    return events


def read_events(path: Path) -> list[dict]:
    return parse_lines(read_text(path).splitlines(), str(path))


def mono_s(event: dict) -> float:
    value = event["metadata"].get("mono_s")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ResultsError(f"event {event.get('key')!r} has no monotonic time (metadata.mono_s is {value!r})")
    return float(value)


def first(events: list[dict], key: str) -> dict | None:
    return next((e for e in events if e["key"] == key), None)


def all_of(events: list[dict], key: str) -> list[dict]:
    return [e for e in events if e["key"] == key]
