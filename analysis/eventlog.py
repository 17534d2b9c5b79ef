"""Reading a run's event log: MLPerf ``:::MLLOG {json}`` lines (written by scaling/runtime/events.py with
mlperf-logging's mllog). Every event of ours carries ``metadata.mono_s``, the writer's monotonic
clock; durations are differences of those, never of the wall-clock ``time_ms``."""
from __future__ import annotations

import json
from pathlib import Path

TOKEN = ":::MLLOG "


def parse_lines(lines) -> list[dict]:
    """The events of the lines that carry the MLLOG token (other lines are ignored)."""
    events = []
    for line in lines:
        if TOKEN in line:
            events.append(json.loads(line.split(TOKEN, 1)[1]))
    return events


def read_events(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return parse_lines(f)


def mono_s(event: dict) -> float:
    return float(event["metadata"]["mono_s"])


def first(events: list[dict], key: str) -> dict | None:
    return next((e for e in events if e["key"] == key), None)


def all_of(events: list[dict], key: str) -> list[dict]:
    return [e for e in events if e["key"] == key]
