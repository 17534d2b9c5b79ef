"""Run and sweep folders: unique names, created exclusively."""
from __future__ import annotations
import time
from pathlib import Path



def new_run_dir(parent: Path, name: str) -> Path:
    """parent/name, or parent/name-2, -3 ... if taken; created exclusively (no two runs share one)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        candidate = parent / (name if i == 1 else f"{name}-{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"no free run folder name under {parent} for {name}")


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
