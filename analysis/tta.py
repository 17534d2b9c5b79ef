"""Time-to-accuracy (docs/method.md), defined once and used by summaries, reports and comparisons.

TTA of a run = mono_s of the first ``eval_accuracy`` event whose value reaches the target
               - mono_s of the ``run_start`` event,
both read from the run's event log (rank 0's monotonic clock), so the number in a summary is exactly
the difference of those two log lines. The clock includes everything after run_start: data loading,
training, warmup steps and every evaluation. Init is timed apart (init_start..init_stop).
A run restarted inside its job (a fault, its own checkpoint restored) keeps that clock: it counts from
the first attempt's run_start, so the failure, the restart and the steps run again are in its TTA. A
run resumed from another run's checkpoint adds the clock carried in that checkpoint (the
``ts_tta_carried_clock`` event: the saving run's TTA clock at the save) to its own; the time between
the two runs is not counted. Both are recorded (``attempts``, ``carried_s``, ``resumed_from``).
A run whose evaluations never reach the target is INVALID: it has no TTA and, across repeats, counts
as the slowest run (stats.summarize_repeats).

TTA-based efficiency uses the strong-scaling formula with T = TTA (the work is fixed: reach the
target): S(N) = TTA(N0) / TTA(N), E(N) = S(N) / (N / N0), whatever the batch policy of the sweep.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from trainscale.scaling.results import schema
from trainscale.analysis.eventlog import all_of, first, mono_s, read_events
from trainscale.scaling.results.files import read_json
from trainscale.analysis.scaling import STRONG, scaling_points
from trainscale.analysis.stats import RepeatSummary, summarize_repeats

DEFINITION = ("seconds from run_start to the first eval_accuracy event reaching the target "
              "(rank 0's monotonic clock, mono_s in the event log)")
STATUS_SUCCESS, STATUS_ABORTED = "success", "aborted"  # MLPerf run_stop statuses


@dataclass
class EvalPoint:
    epoch_num: float
    step: int | None
    t_s: float  # seconds since run_start at the eval_accuracy event
    accuracy: float
    eval_s: float | None  # eval_start to eval_stop


@dataclass
class TTAResult:
    target: float
    valid: bool
    tta_s: float | None
    reached: dict | None  # the EvalPoint that reached the target
    evals: list[EvalPoint]
    epochs_run: int
    run_status: str | None  # run_stop's status ("success" / "aborted"); None if the log has no run_stop
    eval_s_total: float
    attempts: int = 1  # run_start events in the log: more than one when the job restarted the run
    carried_s: float = 0.0  # TTA clock carried from another run's checkpoint (checkpoint.resume_from)
    resumed_from: dict | None = None  # that checkpoint: {"path", "step"}
    definition: str = DEFINITION

    def to_dict(self) -> dict:
        return asdict(self)


def tta_from_events(events: list[dict], target: float | None = None) -> TTAResult:
    """The TTA of one run from its events. target: the run's target (default: the log's own
    ts_target_accuracy event)."""
    start = first(events, "run_start")
    if start is None:
        raise ValueError("event log has no run_start")
    if target is None:
        logged = first(events, schema.EVENT_TARGET_ACCURACY)
        if logged is None:
            raise ValueError("no target given and the event log has none")
        target = float(logged["value"])
    carried = first(events, schema.EVENT_TTA_CARRIED)
    carried_s = carried["value"] if carried else 0.0
    if isinstance(carried_s, bool) or not isinstance(carried_s, (int, float)) or not 0 <= carried_s < float("inf"):
        raise ValueError(f"{schema.EVENT_TTA_CARRIED} must be a finite number of seconds >= 0, got {carried_s!r}")
    t0 = mono_s(start) - carried_s  # the clock's zero: this run's run_start less what it carries
    starts, stops = all_of(events, "eval_start"), all_of(events, "eval_stop")
    evals = []
    for i, e in enumerate(all_of(events, "eval_accuracy")):
        eval_s = mono_s(stops[i]) - mono_s(starts[i]) if i < len(starts) and i < len(stops) else None
        evals.append(EvalPoint(epoch_num=e["metadata"].get("epoch_num"), step=e["metadata"].get("step"),
                               t_s=mono_s(e) - t0, accuracy=float(e["value"]), eval_s=eval_s))
    reached = next((p for p in evals if p.accuracy >= target), None)
    stop = first(events, "run_stop")
    status = stop["metadata"].get("status") if stop else None
    if reached is not None and status == STATUS_ABORTED:
        raise ValueError("event log is inconsistent: an evaluation reached the target but run_stop says aborted")
    epochs = [int(e["metadata"]["epoch_num"]) for e in all_of(events, "epoch_stop")]
    return TTAResult(target=target, valid=reached is not None, tta_s=reached.t_s if reached else None,
                     reached=asdict(reached) if reached else None, evals=evals, epochs_run=max(epochs, default=0),
                     run_status=status, eval_s_total=sum(p.eval_s or 0.0 for p in evals),
                     attempts=len(all_of(events, "run_start")), carried_s=carried_s,
                     resumed_from={k: carried.get("metadata", {}).get(k) for k in ("path", "step")} if carried else None)


def run_tta(run_dir: Path, target: float | None = None) -> TTAResult:
    return tta_from_events(read_events(Path(run_dir) / schema.EVENTS), target)


def run_target(config: dict) -> float | None:
    """The quality target of a run from its config.json; None for a throughput run."""
    t = config.get("target_accuracy")
    return None if t is None else float(t)


@dataclass
class TTARow:
    """The TTA of one world size over its repeats."""
    world_size: int
    runs: list[str]  # run names, in the order of values
    values: list[float | None]  # TTA per run; None = INVALID
    summary: RepeatSummary
    speedup: float | None = None
    efficiency: float | None = None
    curves: list[dict] = field(default_factory=list)  # per run: {"run", "t_s": [...], "accuracy": [...]}


def tta_rows(groups: dict[int, list[tuple[str, TTAResult]]]) -> list[TTARow]:
    """Per world size (sorted), the repeat summary of TTA and the TTA-based speedup and efficiency
    (relative to the smallest world size; None where a headline TTA is INVALID)."""
    rows = []
    for world in sorted(groups):
        members = groups[world]
        values = [r.tta_s if r.valid else None for _, r in members]
        curves = [{"run": name, "t_s": [p.t_s for p in r.evals], "accuracy": [p.accuracy for p in r.evals],
                   "valid": r.valid} for name, r in members]
        rows.append(TTARow(world_size=world, runs=[n for n, _ in members], values=values,
                           summary=summarize_repeats(values), curves=curves))
    usable = [r for r in rows if r.summary.headline is not None]
    if usable and usable[0] is rows[0]:
        points = scaling_points(STRONG, [r.world_size for r in usable], [r.summary.headline for r in usable],
                                [0.0] * len(usable))
        for row, p in zip(usable, points):
            row.speedup, row.efficiency = p.speedup, p.efficiency
    return rows


def load_tta(run_dir: Path) -> TTAResult | None:
    """The TTA result of a finished run folder, or None for a throughput run."""
    target = run_target(read_json(Path(run_dir) / schema.CONFIG))
    return None if target is None else run_tta(run_dir, target)
