"""The launchers by name. Each module provides

    launch(spec, run_dir, on_progress) -> LaunchResult   start the processes, wait, report
    preflight(spec)                   checks before anything is written (SpecError naming the value)
    records_run(spec) -> bool         whether this process writes the run record (only node rank 0
                                      of a multi-node torchrun run does)
and optionally
    run_dir_for(spec) -> Path | None  a fixed results folder (one shared by every node)
    after_record(spec, run_dir, summary)  what to do once the summary is written (Slurm requeue)
"""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from trainscale.scaling.spec import RunSpec

LAUNCHERS = {
    "local": "trainscale.launchers.local",
    "torchrun": "trainscale.launchers.torchrun",
    "ray": "trainscale.launchers.ray_train",
}


def get(name: str) -> ModuleType:
    if name not in LAUNCHERS:
        raise ValueError(f"unknown launcher {name!r}")
    return importlib.import_module(LAUNCHERS[name])


def preflight(spec: RunSpec) -> None:
    get(spec.launcher).preflight(spec)


def run_dir_for(spec: RunSpec) -> Path | None:
    fn = getattr(get(spec.launcher), "run_dir_for", None)
    return fn(spec) if fn else None
