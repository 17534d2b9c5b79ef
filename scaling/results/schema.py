"""The results folder: its layout, file names, sample columns, event keys and statuses, shared by
the writers (the runtime, orchestration) and the readers (analysis). The JSON records are typed in
records.py; SCHEMA_VERSION is written into each.

A run folder holds:
    config.json        the fully resolved run spec
    provenance.json    where and with what the run was made (docs/method.md "Provenance")
    events.log         MLPerf ``:::MLLOG {json}`` lines from rank 0
    samples/rankNNNNN.csv   one row per step per rank (raw timings, never aggregated)
    ranks/rankNNNNN.json    per-rank facts (records.RankInfo: host, pid, threads, device, init time ...)
    logs/              launcher and worker output
    telemetry/nodeNNNNN.json  GPU telemetry of a node (or "no GPU telemetry" and why); .csv: its samples
    summary.json       records.RunSummary: status and the metrics computed from the samples; written last
                       (a drill adds records.DrillRecord's keys)

A sweep folder holds ``sweep.json`` (records.SweepIndex) and ``runs/<run-id>/``.

A comm folder (``trainscale comm``) holds ``comm_config.json`` (the resolved CommSpec),
provenance.json, summary.json (records.CommSummary), ``comm_results.json`` (per-size rows and alpha-beta fits, recomputable
from the raw files), ``comm_table.txt``, ``busbw.png`` and, per world size, ``npN/`` with
``samples/rankNNNNN.csv`` (every timed iteration), ``ranks/rankNNNNN.json`` (per-rank facts and
correctness checks) and ``logs/``.
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
ATTEMPTS_DIR = "attempts"  # samples/attempts/rankNNNNN-attemptK.csv: rows of attempts a restart replaced
CHECKPOINTS_DIR = "checkpoints"
FAULT_FIRED = "fault_fired.json"  # written by the faulty rank as it fires: a restarted attempt never fires again
AGENT_EVENTS = "agent_events.jsonl"  # the torchrun agent's failure/restart reactions, with mono_s
RANKS_DIR = "ranks"
LOGS_DIR = "logs"
TELEMETRY_DIR = "telemetry"
SWEEP_INDEX = "sweep.json"
SWEEP_RUNS_DIR = "runs"
PARTIAL_DIR = ".partial"  # SWEEP_RUNS_DIR/.partial/: points a resume ran again, kept aside (hidden from reports)

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
# Extra steps after the measured window with gradient synchronisation skipped (DDP no_sync): the
# compute-only baseline of the exposed-communication figure; never part of throughput.
PHASE_NO_SYNC = "no_sync"
PHASE_NO_SYNC_WARMUP = "no_sync_warmup"  # the first such step, slower, kept but not used
# Appended by strategies that time their gradient collectives: seconds during which at least one
# gradient collective was in flight in the step, and how many collectives ran.
COMM_COLUMNS = ("comm_s", "comm_ops")
# Seconds of the step in DDP's broadcast of module buffers from rank 0 (forward start; not a gradient
# collective): where rank 0 waits for a slow rank. Written beside COMM_COLUMNS.
BUFFER_SYNC_COLUMN = "buffer_sync_s"

# trainscale comm
COMM_CONFIG = "comm_config.json"
COMM_RESULTS = "comm_results.json"
COMM_TABLE = "comm_table.txt"
COMM_SAMPLE_COLUMNS = ("op", "bytes", "count", "iteration", "time_s")

# trainscale's own event-log keys (MLPerf keys come from mlperf_logging.mllog.constants)
EVENT_TARGET_ACCURACY = "ts_target_accuracy"  # value: the quality target of a time-to-accuracy run
EVENT_EVAL_CADENCE = "ts_eval_cadence"  # value: {"every_epochs": E} or {"every_steps": S}
# A TTA run resumed from another run's checkpoint: value: the seconds of TTA clock the saving run had
# counted at that save (added to this run's own); metadata: path, step
EVENT_TTA_CARRIED = "ts_tta_carried_clock"
EVENT_MAX_EPOCHS = "ts_max_epochs"
# Checkpoints, faults and recovery (faults/, scaling/runtime/checkpoint_schedule.py; read by analysis/recovery.py)
EVENT_ATTEMPT = "ts_attempt"  # value: TORCHELASTIC_RESTART_COUNT; metadata: process_start/main/pg_ready mono_s
EVENT_FAULT = "ts_fault"  # value: the fault kind; metadata: rank, step (written by the faulty rank)
EVENT_CKPT_RESTORE = "ts_checkpoint_restore"  # start/end; end value: the step resumed at
EVENT_CKPT_FALLBACK = "ts_checkpoint_fallback"  # value: step of a damaged checkpoint passed over
EVENT_CKPT_SAVE = "ts_checkpoint_save"  # value: step; metadata: blocking_s (the loop's wait), async
EVENT_CKPT_COMPLETE = "ts_checkpoint_complete"  # value: step; metadata: total_s, bytes

# A finished run's per-rank samples and records packed into one file per node (sample_files.py):
# samples/nodeNNNNN.parquet and ranks/nodeNNNNN.json; results.pack: auto (from this many ranks), always, never.
PACK_CHOICES = ("auto", "always", "never")
PACK_AUTO_MIN_RANKS = 64

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_STARTED = "started"  # a summary still saying this after the run ended means the orchestrator died
STATUS_STOPPED = "stopped"  # a signal stopped the run (the reason names it); the record is complete
STATUS_ABANDONED = "abandoned"  # what readers call a "started" record whose trainscale process is gone


def samples_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / SAMPLES_DIR / f"rank{rank:05d}.csv"


def telemetry_paths(run_dir: Path, node_rank: int) -> tuple[Path, Path]:
    """(samples CSV, record JSON) of a node's GPU telemetry."""
    base = Path(run_dir) / TELEMETRY_DIR / f"node{node_rank:05d}"
    return base.with_suffix(".csv"), base.with_suffix(".json")


# Marks of a run's GPU telemetry (energy counters read there): the training run's edges and the start
# of the measured window (which ends at run_stop).
MARK_RUN_START, MARK_WINDOW_START, MARK_RUN_STOP = "run_start", "window_start", "run_stop"


def rank_info_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / RANKS_DIR / f"rank{rank:05d}.json"


def comm_world_dir(comm_dir: Path, world_size: int) -> Path:
    return Path(comm_dir) / f"np{world_size}"
