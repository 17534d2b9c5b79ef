"""Reading run folders and computing a run's metrics from its raw per-step per-rank samples.

Every number in a summary is recomputable from the samples files with the functions here:
- global step time of step k = max over ranks of that rank's step_s (a synchronous step ends
  when its slowest rank does);
- measured window of a rank = end of its last measured step - start of its first measured step,
  on that rank's monotonic clock (never subtracted across ranks or nodes), less the evaluations a
  time-to-accuracy run made inside it (its ``eval_s`` column): throughput is of training alone;
- global throughput = samples of all ranks in the measured steps / the longest rank window;
- time per step = that window / measured steps (what strong-scaling efficiency uses).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainscale.scaling.results import schema
from trainscale.analysis.comm_overhead import comm_overhead
from trainscale.scaling.results.files import ResultsError, read_json, read_text
from trainscale.scaling.results.records import RunSummary, writer_alive
from trainscale.analysis.stats import summarize, t_confidence_interval


def read_samples(path: Path) -> dict[str, np.ndarray]:
    """One rank's samples as columns; 'phase' stays text, everything else is float. ResultsError naming
    the file when a column is missing, a row is short or a value is not a number."""
    reader = csv.reader(io.StringIO(read_text(path)))
    header = next(reader, None)
    missing = [c for c in schema.SAMPLE_COLUMNS if header is None or c not in header]
    if missing:
        raise ResultsError(f"{path}: not a samples file (column {missing[0]!r} missing)")
    rows = list(reader)
    for n, row in enumerate(rows, 2):
        if len(row) != len(header):
            raise ResultsError(f"{path} line {n}: {len(row)} values for {len(header)} columns (truncated?)")
    cols: dict[str, np.ndarray] = {}
    for i, name in enumerate(header):
        values = [r[i] for r in rows]
        if name == "phase":
            cols[name] = np.array(values, dtype=str)
            continue
        try:
            cols[name] = np.array([float(v) if v != "" else np.nan for v in values], dtype=float)
        except ValueError:
            bad = next(v for v in values if v != "" and not _is_number(v))
            raise ResultsError(f"{path}: column {name!r} holds {bad!r}, not a number") from None
    return cols


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def load_rank_samples(run_dir: Path) -> dict[int, dict[str, np.ndarray]]:
    out = {}
    for path in sorted((Path(run_dir) / schema.SAMPLES_DIR).glob("rank*.csv")):
        out[int(path.stem[4:])] = read_samples(path)
    return out


@dataclass
class Run:
    path: Path
    config: dict
    summary: dict
    provenance: dict = field(default_factory=dict)
    _samples: dict | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.summary.get("status") == schema.STATUS_OK

    @property
    def world_size(self) -> int:
        return int(self.config["nproc"]) * int(self.config["nodes"])

    def samples(self) -> dict[int, dict[str, np.ndarray]]:
        """The run's per-rank samples, read once (ResultsError when a file is damaged)."""
        if self._samples is None:
            self._samples = load_rank_samples(self.path)
        return self._samples

    def check_files(self) -> None:
        """Read every raw file analysis will read of an ok run, so that a damaged one shows here, as a
        ResultsError naming it, and the run can be left out whole."""
        if not self.ok:
            return
        self.samples()
        if (self.path / schema.EVENTS).exists():
            from trainscale.analysis.eventlog import read_events

            read_events(self.path / schema.EVENTS)
        for p in sorted((self.path / schema.RANKS_DIR).glob("rank*.json")) + \
                sorted((self.path / schema.TELEMETRY_DIR).glob("node*.json")):
            if not isinstance(read_json(p), dict):
                raise ResultsError(f"{p}: expected a JSON object")


# The config keys analysis reads, and their types (config.json is the run spec).
CONFIG_FIELDS = {"workload": str, "parallel": str, "nodes": int, "nproc": int, "batch_size": int, "data": dict}


def load_run(run_dir: Path) -> Run:
    """A run folder's records, checked: ResultsError naming the file and the field when one is damaged."""
    run_dir = Path(run_dir)
    config = read_json(run_dir / schema.CONFIG)
    where = run_dir / schema.CONFIG
    if not isinstance(config, dict):
        raise ResultsError(f"{where}: expected a JSON object, got {type(config).__name__}")
    for key, tp in CONFIG_FIELDS.items():
        value = config.get(key)
        if not isinstance(value, tp) or isinstance(value, bool) or (tp is int and value < 1):
            raise ResultsError(f"{where}: {key} must be {'a positive integer' if tp is int else tp.__name__}, "
                               f"got {value!r}"[:300])
    summary_path = run_dir / schema.SUMMARY
    if summary_path.exists():
        summary = read_json(summary_path)
        RunSummary.from_dict(summary, str(summary_path))  # the declared fields have their types
    else:
        summary = {"status": schema.STATUS_FAILED, "reason": "no summary.json: the run never finished"}
    if summary.get("status") == schema.STATUS_STARTED:
        summary = {**summary, **unfinished(summary.get("orchestrator"))}
    prov_path = run_dir / schema.PROVENANCE
    provenance = read_json(prov_path) if prov_path.exists() else {}
    if not isinstance(provenance, dict):
        raise ResultsError(f"{prov_path}: expected a JSON object, got {type(provenance).__name__}")
    return Run(path=run_dir, config=config, summary=summary, provenance=provenance)


def unfinished(writer: dict | None) -> dict:
    """Status and reason of a record still saying "started": abandoned when its trainscale process is
    gone, started (running, or not known) otherwise."""
    alive = writer_alive(writer)
    where = f"pid {writer.get('pid')} on {writer.get('host')}" if isinstance(writer, dict) else "unknown"
    if alive is False:
        return {"status": schema.STATUS_ABANDONED,
                "reason": f"abandoned: its trainscale process ({where}) ended without recording an outcome"}
    if alive:
        return {"reason": f"still running (trainscale process {where})"}
    return {"reason": f"not finished: started by a trainscale process ({where}) that this machine cannot see"}


def measured(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    mask = cols["phase"] == schema.PHASE_MEASURED
    return {k: v[mask] for k, v in cols.items()}


def rank_step_tiles(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Per measured step, the wall time from its start to the next step's start, less any evaluation
    run in between; the last tile is the last step itself. The tiles sum to the rank's window, so
    gaps between steps (epoch starts, loader restarts) count against throughput."""
    m = measured(cols)
    if m["step"].size == 0:
        return np.zeros(0)
    tiles = np.append(np.diff(m["t_start"]), m["step_s"][-1])
    if "eval_s" in m:  # evaluations after measured steps, except the last one (it ends the window)
        tiles[:-1] -= np.nan_to_num(m["eval_s"][:-1])
    return tiles


def rank_window_s(cols: dict[str, np.ndarray]) -> float:
    return float(rank_step_tiles(cols).sum())


def global_step_times(by_rank: dict[int, dict[str, np.ndarray]]) -> np.ndarray:
    """Per measured step, the slowest rank's step time."""
    return np.vstack([measured(by_rank[r])["step_s"] for r in sorted(by_rank)]).max(axis=0)


def run_metrics(by_rank: dict[int, dict[str, np.ndarray]]) -> dict:
    """The performance metrics of one run, from its samples alone."""
    if not by_rank:
        raise ValueError("run has no samples")
    ranks = sorted(by_rank)
    meas = {r: measured(by_rank[r]) for r in ranks}
    n_steps = {r: meas[r]["step"].size for r in ranks}
    if len(set(n_steps.values())) != 1 or n_steps[ranks[0]] == 0:
        raise ValueError(f"ranks disagree on measured steps or have none: {n_steps}")
    warmup = int(np.sum(by_rank[ranks[0]]["phase"] == schema.PHASE_WARMUP))

    global_step_s = global_step_times(by_rank)
    samples_per_step = np.vstack([meas[r]["samples"] for r in ranks]).sum(axis=0)
    windows = {r: rank_window_s(by_rank[r]) for r in ranks}
    window_rank = max(ranks, key=lambda r: windows[r])
    window = windows[window_rank]
    measured_steps = n_steps[ranks[0]]
    total_samples = float(samples_per_step.sum())
    throughput = total_samples / window
    mean_global_batch = total_samples / measured_steps
    # The CI belongs to the same estimate: X = global batch / mean tile of the longest-window rank
    # (its tiles sum to the window), with the Student-t CI of that mean, so X always lies inside it.
    lo, hi = t_confidence_interval(rank_step_tiles(by_rank[window_rank]))
    # With few, noisy steps the step-time interval can reach below zero: throughput then has no
    # finite upper bound (inf), never a negative one.
    ci = (mean_global_batch / hi, mean_global_batch / lo if lo > 0 else float("inf"))

    breakdown_cols = [c for c in ("data_s", "compute_s", "optimizer_s") if c in meas[ranks[0]]]
    breakdown = {c: float(np.mean([meas[r][c].mean() for r in ranks])) for c in breakdown_cols}

    per_rank = {}
    for r in ranks:
        s = summarize(meas[r]["step_s"])
        per_rank[str(r)] = {"mean": s.mean, "p50": s.p50, "p95": s.p95, "p99": s.p99,
                            "max": s.max, "window_s": windows[r]}
    slowest = max(ranks, key=lambda r: meas[r]["step_s"].mean())
    world = len(ranks)
    return {
        "world_size": world,
        "warmup_steps_discarded": warmup,
        "measured_steps": int(n_steps[ranks[0]]),
        "global_batch": mean_global_batch,
        "window_s": window,
        "time_per_step_s": window / measured_steps,
        "throughput": {
            "global_samples_per_s": throughput,
            "per_device_samples_per_s": throughput / world,
            "ci_low": ci[0],
            "ci_high": ci[1],
            "ci_method": "global batch / Student-t 95% CI of the mean step time of the longest-window rank",
        },
        "step_time_s": summarize(global_step_s).to_dict(),
        "breakdown_s": breakdown,
        "per_rank_step_time_s": per_rank,
        "slowest_rank": int(slowest),
        "comm": comm_overhead(by_rank),  # all-reduce overhead (analysis.comm_overhead); None if not recorded
    }
