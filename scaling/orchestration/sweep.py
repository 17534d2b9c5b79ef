"""Sweeps over world sizes: strong scaling (fixed global batch) or weak scaling (fixed per-rank
batch), R repeats each. Repeats are interleaved (every size once, then again) so slow drift of the
machine spreads over all sizes instead of biasing one. A failed run is recorded and the sweep goes on.

A sweep may compare several parallel strategies (``--parallel ddp,fsdp,tp,pp``): every strategy runs
at every size, interleaved too (for each repeat, for each size, each strategy in turn). The batch is
per data-parallel rank, so strong scaling gives every strategy at a size the same global batch.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from trainscale.analysis.scaling import SCALING_MODES, STRONG
from trainscale.scaling.results import schema
from trainscale.scaling.results.files import write_json_atomic
from trainscale.launchers.ownership import Stopped
from trainscale.launchers.registry import LAUNCHERS
from trainscale.scaling.results.files import ResultsError, read_json
from trainscale.scaling.results.records import ABSENT, SweepEntry, SweepIndex, process_identity, writer_alive

from trainscale.scaling.orchestration.folders import new_run_dir, timestamp
from trainscale.scaling.orchestration.runner import RunObserver, execute
from trainscale.scaling.resolve import validate
from trainscale.scaling.spec import FaultConfig, RunSpec, SpecError, from_dict




@dataclass(frozen=True)
class SweepPoint:
    name: str  # folder under runs/
    repeat: int
    spec: RunSpec


def _data_parallel_degree(base: RunSpec, nodes: int, nproc: int) -> int:
    try:
        return dataclasses.replace(base, nodes=nodes, nproc=nproc).degrees.dp
    except ValueError as e:
        raise SpecError(f"parallel {base.parallel!r} at world size {nodes * nproc}: {e}") from None


def plan(base: RunSpec | list[RunSpec], nprocs: list[int], nodes: list[int], mode: str, repeats: int,
         global_batch: int | None = None) -> list[SweepPoint]:
    """The runs of a sweep; ``base`` is one spec per strategy when the sweep compares strategies."""
    bases = base if isinstance(base, list) else [base]
    if mode not in SCALING_MODES:
        raise SpecError(f"--scaling must be one of {', '.join(SCALING_MODES)}, got {mode!r}")
    if repeats < 1:
        raise SpecError(f"--repeats must be at least 1, got {repeats}")
    sizes = [(n, p) for n in nodes for p in nprocs]
    if mode == STRONG:
        if global_batch is None:
            global_batch = bases[0].batch_size * min(n * p for n, p in sizes)
        elif global_batch < 1:
            raise SpecError(f"--global-batch-size must be 1 or more, got {global_batch}")
        for b in bases:
            for n, p in sizes:
                dp = _data_parallel_degree(b, n, p)
                if global_batch % dp:
                    raise SpecError(f"strong scaling: global batch {global_batch} does not divide over world size "
                                    f"{n * p} ({b.parallel}: {dp} data-parallel ranks) (set --global-batch-size)")
    points = []
    for r in range(repeats):
        for n, p in sizes:
            for b in bases:
                per_rank = global_batch // _data_parallel_degree(b, n, p) if mode == STRONG else b.batch_size
                # A fault aimed at a rank that this world size lacks is not injected in its runs.
                fault = b.fault if b.fault.rank < n * p else FaultConfig()
                spec = dataclasses.replace(b, nodes=n, nproc=p, batch_size=per_rank, seed=b.seed + r, fault=fault)
                validate(spec)
                name = f"{n}x{p}-r{r}" if len(bases) == 1 else f"{b.parallel}-{n}x{p}-r{r}"
                points.append(SweepPoint(name, r, spec))
    return points


def execute_sweep(base: RunSpec, points: list[SweepPoint], mode: str, out: Path | None = None,
                  observer: RunObserver | None = None, sweep_dir: Path | None = None) -> Path:
    """Run the points into a new sweep folder (sweep_dir, or a new one under out) that records its
    plan, so that a stopped sweep can be resumed (resume_sweep)."""
    strategies = list(dict.fromkeys(p.spec.parallel for p in points)) or [base.parallel]
    if sweep_dir is None:
        sweep_dir = new_run_dir(Path(out or base.out), f"{timestamp()}-sweep-{base.workload}-{'+'.join(strategies)}")
    else:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    index = SweepIndex(scaling=mode, workload=base.workload, parallel=",".join(strategies), status="running",
                       orchestrator=process_identity(),
                       plan=[{"name": p.name, "repeat": p.repeat, "spec": p.spec.to_dict()} for p in points])
    _run_all(points, strategies, sweep_dir, index, observer)
    return sweep_dir


def resume_sweep(sweep_dir: Path, observer: RunObserver | None = None) -> tuple[list[str], list[str]]:
    """Continue a stopped sweep with its recorded plan: points that finished (ok or failed) stay as they
    are; a point that was in flight is moved aside (runs/.partial/, kept as evidence) and run again into
    a fresh folder with the points not yet run. Returns (kept, run) point names."""
    path = Path(sweep_dir) / schema.SWEEP_INDEX
    index = SweepIndex.from_dict(read_json(path), str(path))
    if not index.plan:
        raise SpecError(f"{path} records no plan (a sweep made before sweeps recorded one): it cannot be resumed")
    if index.status == "done":
        raise SpecError(f"sweep {sweep_dir} is done: every point of its plan ran")
    if index.status == "running" and writer_alive(index.orchestrator):
        raise SpecError(f"sweep {sweep_dir} is still running (trainscale process {index.orchestrator.get('pid')})")
    finished = {e.name for e in index.runs if e.status in (schema.STATUS_OK, schema.STATUS_FAILED)
                and _finished(Path(sweep_dir) / e.path)}
    points = [SweepPoint(p["name"], p["repeat"], from_dict(p["spec"])) for p in index.plan]
    todo = [p for p in points if p.name not in finished]
    for p in todo:
        validate(p.spec)  # this machine and allocation must still suit them
    for p in todo:
        _put_aside(Path(sweep_dir), p.name)
    index.runs = [e for e in index.runs if e.name in finished]
    index.status, index.reason, index.orchestrator = "running", ABSENT, process_identity()
    index.resumes = [*(index.resumes or []), {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                              "kept": sorted(finished), "run": [p.name for p in todo]}]
    strategies = [s for s in index.parallel.split(",")] if index.parallel else []
    _run_all(todo, strategies, Path(sweep_dir), index, observer)
    return sorted(finished), [p.name for p in todo]


def _finished(run_dir: Path) -> bool:
    """The run wrote its outcome (its summary says ok or failed)."""
    try:
        return read_json(run_dir / schema.SUMMARY).get("status") in (schema.STATUS_OK, schema.STATUS_FAILED)
    except ResultsError:
        return False


def _put_aside(sweep_dir: Path, name: str) -> None:
    """A point's unfinished folder goes to runs/.partial/NAME-K (never read by reports), kept as evidence."""
    run = sweep_dir / schema.SWEEP_RUNS_DIR / name
    if not run.exists():
        return
    aside = sweep_dir / schema.SWEEP_RUNS_DIR / schema.PARTIAL_DIR
    aside.mkdir(exist_ok=True)
    k = 1
    while (aside / f"{name}-{k}").exists():
        k += 1
    run.rename(aside / f"{name}-{k}")


def _run_all(points: list[SweepPoint], strategies: list[str], sweep_dir: Path, index: SweepIndex,
             observer: RunObserver | None) -> None:
    write_json_atomic(sweep_dir / schema.SWEEP_INDEX, index.to_dict())
    try:
        _run_points(points, strategies, sweep_dir, index, observer)
    except (Stopped, KeyboardInterrupt) as e:
        index.status = schema.STATUS_STOPPED
        index.reason = f"stopped by {getattr(e, 'name', 'SIGINT')} in run {len(index.runs)} of {len(index.plan)}"
        write_json_atomic(sweep_dir / schema.SWEEP_INDEX, index.to_dict())
        if isinstance(e, Stopped) and not getattr(e, "handled", False) and points:  # between two runs
            LAUNCHERS.get(points[0].spec.launcher).stopped(points[0].spec, e.name)
        raise
    index.status = "done"
    write_json_atomic(sweep_dir / schema.SWEEP_INDEX, index.to_dict())


def _run_points(points: list[SweepPoint], strategies: list[str], sweep_dir: Path, index: SweepIndex,
                observer: RunObserver | None) -> None:
    for point in points:
        s = point.spec
        label = f"{s.nodes}x{s.nproc} (world {s.world_size}) repeat {point.repeat}"
        if len(strategies) > 1:
            label = f"{s.parallel} {label}"
        entry = SweepEntry(
            name=point.name, path=f"{schema.SWEEP_RUNS_DIR}/{point.name}", parallel=s.parallel,
            degrees=dataclasses.asdict(s.degrees), nodes=s.nodes, nproc=s.nproc, world_size=s.world_size,
            repeat=point.repeat, seed=s.seed, batch_size_per_rank=s.batch_size, global_batch=s.global_batch,
            status=schema.STATUS_STARTED)
        index.runs.append(entry)  # listed before it starts: a sweep killed during it still names it
        write_json_atomic(sweep_dir / schema.SWEEP_INDEX, index.to_dict())
        try:
            outcome = execute(s, sweep_dir / schema.SWEEP_RUNS_DIR / point.name, observer, label)
            entry.status, entry.reason = outcome.summary["status"], outcome.summary.get("reason")
        except (Stopped, KeyboardInterrupt) as e:  # the run's own record says stopped; so does the index
            entry.status, entry.reason = schema.STATUS_STOPPED, f"stopped by {getattr(e, 'name', 'SIGINT')}"
            raise
        except Exception as e:
            entry.status, entry.reason = schema.STATUS_FAILED, f"{type(e).__name__}: {e}"
            raise
        finally:
            write_json_atomic(sweep_dir / schema.SWEEP_INDEX, index.to_dict())
