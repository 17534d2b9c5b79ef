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

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainscale.scaling.results import schema
from trainscale.analysis.comm_overhead import comm_overhead
from trainscale.analysis.reduction import RunReduction, measured, rank_step_tiles, reduce_ranks
from trainscale.scaling.results.files import ResultsError, read_json
from trainscale.scaling.results.records import RunSummary, writer_alive
from trainscale.scaling.results.sample_files import iter_rank_samples, load_rank_samples, read_rank_infos
from trainscale.analysis.stats import summarize, t_confidence_interval

__all__ = ["Run", "load_run", "load_rank_samples", "measured", "rank_step_tiles", "run_metrics", "reduce_run"]


def reduce_run(run_dir: Path) -> RunReduction:
    """A run folder's samples in one streaming pass (ResultsError when a file is damaged, ValueError
    when the ranks disagree on their measured steps)."""
    return reduce_ranks(iter_rank_samples(run_dir))


@dataclass
class Run:
    path: Path
    config: dict
    summary: dict
    provenance: dict = field(default_factory=dict)
    _reduction: RunReduction | ValueError | None = field(default=None, repr=False)
    _metrics: dict | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.summary.get("status") == schema.STATUS_OK

    @property
    def world_size(self) -> int:
        return int(self.config["nproc"]) * int(self.config["nodes"])

    def reduction(self) -> RunReduction:
        """The run's samples reduced in one streaming pass, once (ResultsError when a file is damaged;
        ValueError when the ranks disagree on their measured steps or a TTA run measured none)."""
        if self._reduction is None:
            try:
                self._reduction = reduce_run(self.path)
            except ResultsError:
                raise
            except ValueError as e:
                self._reduction = e
        if isinstance(self._reduction, ValueError):
            raise self._reduction
        return self._reduction

    def metrics(self) -> dict:
        """run_metrics of the run, computed once."""
        if self._metrics is None:
            self._metrics = run_metrics(self.reduction())
        return self._metrics

    def check_files(self) -> None:
        """Read every raw file analysis will read of an ok run, so that a damaged one shows here, as a
        ResultsError naming it, and the run can be left out whole."""
        if not self.ok:
            return
        try:
            self.reduction()
        except ResultsError:
            raise
        except ValueError:  # ranks that disagree, or a TTA run with no window: reported later, not damage
            pass
        if (self.path / schema.EVENTS).exists():
            from trainscale.analysis.eventlog import read_events

            read_events(self.path / schema.EVENTS)
        read_rank_infos(self.path)
        for p in sorted((self.path / schema.TELEMETRY_DIR).glob("node*.json")):
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


def run_metrics(source: dict[int, dict[str, np.ndarray]] | RunReduction) -> dict:
    """The performance metrics of one run, from its samples alone (per-rank columns, or their reduction)."""
    red = source if isinstance(source, RunReduction) else reduce_ranks(source.items())
    ranks, world = red.ranks, red.world_size
    window = float(red.window_s.max())
    measured_steps = red.measured_steps
    total_samples = float(red.samples_per_step.sum())
    throughput = total_samples / window
    mean_global_batch = total_samples / measured_steps
    # The CI belongs to the same estimate: X = global batch / mean tile of the longest-window rank
    # (its tiles sum to the window), with the Student-t CI of that mean, so X always lies inside it.
    lo, hi = t_confidence_interval(red.window_tiles)
    # With few, noisy steps the step-time interval can reach below zero: throughput then has no
    # finite upper bound (inf), never a negative one.
    ci = (mean_global_batch / hi, mean_global_batch / lo if lo > 0 else float("inf"))
    breakdown = {c: float(red.column_means[c].mean()) for c in ("data_s", "compute_s", "optimizer_s")
                 if c in red.column_means}
    per_rank = {str(r): {**dict(zip(("mean", "p50", "p95", "p99", "max"), map(float, red.step_stats[i]))),
                         "window_s": float(red.window_s[i])} for i, r in enumerate(ranks)}
    slowest = ranks[int(np.argmax(red.step_stats[:, 0]))]
    return {
        "world_size": world,
        "warmup_steps_discarded": red.warmup_steps,
        "measured_steps": measured_steps,
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
        "step_time_s": summarize(red.global_step_s).to_dict(),
        "breakdown_s": breakdown,
        "per_rank_step_time_s": per_rank,
        "slowest_rank": int(slowest),
        "comm": comm_overhead(red),  # all-reduce overhead (analysis.comm_overhead); None if not recorded
    }
