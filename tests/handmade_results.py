"""Hand-made results folders in the schema of scaling/results/schema.py, with step times chosen so the
analysis has known answers (planning, review report and export tests)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from trainscale.scaling.results import schema
from trainscale.scaling.results.files import write_json_atomic
from trainscale.analysis.runs import load_rank_samples, run_metrics

JITTER = 0.01  # steps alternate t(1 + JITTER), t(1 - JITTER): the mean is exactly t, the scatter not zero


def write_rank(run_dir: Path, rank: int, step_s: float, steps: int, warmup: int, batch: int) -> None:
    path = schema.samples_path(run_dir, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = 0.0
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=schema.SAMPLE_COLUMNS)
        w.writeheader()
        for i in range(steps):
            s = step_s * (1 + JITTER if i % 2 == 0 else 1 - JITTER)
            w.writerow({"step": i, "phase": schema.PHASE_WARMUP if i < warmup else schema.PHASE_MEASURED,
                        "t_start": t, "data_s": 0.1 * s, "compute_s": 0.8 * s, "optimizer_s": 0.1 * s, "step_s": s,
                        "samples": batch, "loss": 1.0})
            t += s


def write_run(root: Path, world: int, step_s: float, repeat: int = 0, batch: int = 8, steps: int = 22,
              warmup: int = 2, allreduce_bytes: int | None = None) -> Path:
    """One ok run of `world` single-node processes whose every rank takes step_s per step (on average);
    allreduce_bytes: the gradient all_reduce payload per step its probe recorded (summary.parallelism)."""
    run = root / "runs" / f"1x{world}-r{repeat}"
    run.mkdir(parents=True)
    config = {"workload": "resnet50", "parallel": "ddp", "launcher": "local", "backend": "gloo", "nodes": 1,
              "nproc": world, "batch_size": batch, "steps": steps, "warmup": warmup, "data": {"kind": "synthetic"},
              "seed": 0}
    (run / schema.CONFIG).write_text(json.dumps(config))
    (run / schema.PROVENANCE).write_text(json.dumps({"hosts": ["handmade"], "time_utc": "2026-01-01T00:00:00Z"}))
    for rank in range(world):
        write_rank(run, rank, step_s, steps, warmup, batch)
    write_json_atomic(run / schema.SUMMARY, {  # the metrics as the runner computes them (scaling/orchestration/runner.py)
        "schema_version": schema.SCHEMA_VERSION, "status": schema.STATUS_OK, "reason": None, "run_id": run.name,
        "workload": "resnet50", "parallel": "ddp", "nodes": 1, "nproc": world, "world_size": world,
        "batch_size_per_rank": batch, "global_batch": batch * world, "data_kind": "synthetic", "wall_s": 1.0,
        "sample_unit": "images", "launch": {"threads_per_rank": 1, "cores": 64, "oversubscribed": False},
        "metrics": run_metrics(load_rank_samples(run)),
        "parallelism": {"per_rank": {"0": {"comm_by_kind": {"all_reduce": {
            "calls": 1, "payload_bytes": allreduce_bytes}}}}} if allreduce_bytes else None})
    return run


def write_sweep(root: Path, step_of_world: dict[int, float], repeats: int = 1, batch: int = 8,
                allreduce_bytes: int | None = None) -> Path:
    """A weak-scaling sweep folder (sweep.json and runs/) of hand-made runs."""
    root.mkdir(parents=True, exist_ok=True)
    runs = []
    for world, step_s in step_of_world.items():
        for r in range(repeats):
            run = write_run(root, world, step_s, r, batch, allreduce_bytes=allreduce_bytes)
            runs.append({"path": str(run.relative_to(root)), "nodes": 1, "nproc": world, "repeat": r})
    (root / schema.SWEEP_INDEX).write_text(json.dumps({"scaling": "weak", "runs": runs}))
    return root


def write_drill(folder: Path, recoveries: list[dict], save_samples: list[float], badput: dict | None = None) -> Path:
    """A drill folder's summary.json in the contract of issue 7 (trainscale drill)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / schema.SUMMARY).write_text(json.dumps({
        "status": "ok",
        "drill": {"fault": "kill", "engine": "torchrun"},
        "recovery": recoveries,
        "checkpoint": {"save_s_mean": sum(save_samples) / len(save_samples), "save_s_samples": save_samples,
                       "bytes": 3 * 2**20, "every_steps": 10, "async": False},
        "goodput": {"ettr": 0.9, "badput_s": badput or {"restart": 5.0, "lost_work": 2.0}}}))
    return folder


def write_torchft_drill(folder: Path, recoveries: list[dict], groups: int = 2) -> Path:
    """A torchft drill's summary.json: per fault the healthy groups' stall and the victim's return."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / schema.SUMMARY).write_text(json.dumps({
        "status": "ok", "drill": {"fault": "trace", "engine": "torchft (Lighthouse quorum)", "launcher": "torchft"},
        "recovery": recoveries, "torchft": {"replicas": {"groups": groups}}, "goodput": {"ettr": 0.5}}))
    return folder
