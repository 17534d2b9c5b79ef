"""The results folder: file names and record layouts shared by the writers and the analysis.

A run folder holds:
    config.json        the fully resolved run spec
    provenance.json    where and with what the run was made (METHOD.md "Provenance")
    events.log         MLPerf ``:::MLLOG {json}`` lines from rank 0
    samples/rankNNNNN.csv   one row per step per rank (raw timings, never aggregated)
    ranks/rankNNNNN.json    per-rank facts (host, pid, threads, device, init time)
    logs/              launcher and worker output
    summary.json       status and the metrics computed from the samples; written last

A sweep folder holds ``sweep.json`` (the index) and ``runs/<run-id>/``.
Analysis reads only these files, so a folder copied off a cluster can be reported anywhere.
"""
from __future__ import annotations

from pathlib import Path

SCHEMA_VERSION = 1

CONFIG = "config.json"
PROVENANCE = "provenance.json"
EVENTS = "events.log"
SUMMARY = "summary.json"
PROGRESS = "progress.json"
FAILURES = "failures.json"
SAMPLES_DIR = "samples"
RANKS_DIR = "ranks"
LOGS_DIR = "logs"
SWEEP_INDEX = "sweep.json"
SWEEP_RUNS_DIR = "runs"

# Columns of a per-rank samples file. Times are seconds from a monotonic clock on that rank;
# t_start is relative to the rank's run_start. Workloads or strategies may append columns.
SAMPLE_COLUMNS = (
    "step",
    "phase",  # "warmup" or "measured"
    "t_start",
    "data_s",
    "compute_s",
    "optimizer_s",
    "step_s",
    "samples",
    "loss",
)
# Time-to-accuracy runs append these: the epoch (1-based) a step belongs to, and the seconds of
# evaluation this rank spent right after the step (0 for most steps). The throughput window of such
# a run leaves the evaluations out (analysis/runs.py); the TTA clock does not (analysis/tta.py).
TTA_SAMPLE_COLUMNS = ("epoch", "eval_s")
PHASE_WARMUP = "warmup"
PHASE_MEASURED = "measured"

# trainscale's own event-log keys (MLPerf keys come from mlperf_logging.mllog.constants)
EVENT_TARGET_ACCURACY = "ts_target_accuracy"  # value: the quality target of a time-to-accuracy run
EVENT_EVAL_CADENCE = "ts_eval_cadence"  # value: {"every_epochs": E} or {"every_steps": S}
EVENT_MAX_EPOCHS = "ts_max_epochs"

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_STARTED = "started"  # a summary still saying this after the run ended means the orchestrator died


def samples_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / SAMPLES_DIR / f"rank{rank:05d}.csv"


def rank_info_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / RANKS_DIR / f"rank{rank:05d}.json"
