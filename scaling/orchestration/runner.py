"""One run, end to end: make its folder, record config and provenance, launch, summarise.

The summary is written last and atomically. Before the launch it says "started"; a run whose
ranks fail or time out is summarised as "failed" with the reason; analysis treats a summary still
saying "started" as a run whose orchestrator died.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from trainscale.launchers.ownership import Stopped
from trainscale.faults.trace import TRACE_FILE
from trainscale.scaling.results import schema
from trainscale.scaling.results.records import RunSummary, process_identity
from trainscale.scaling.results.files import ResultsError, write_json_atomic
from trainscale.analysis.gpu_telemetry import run_gpu_summary
from trainscale.analysis.strategies import parallel_summary
from trainscale.analysis.runs import reduce_run, run_metrics
from trainscale.scaling.results.sample_files import pack_per_node, read_rank_infos, should_pack
from trainscale.analysis.tta import run_tta

from trainscale.scaling import provenance
from trainscale.scaling.orchestration.folders import new_run_dir, timestamp
from trainscale.scaling.spec import RunSpec, SpecError


class RunObserver(Protocol):
    """Who follows runs as they go (the command line's progress display): told when a run starts
    (returning the callback for its progress reports) and when it has its summary."""

    def run_started(self, label: str, steps: int) -> Callable[[dict], None]: ...

    def run_finished(self, label: str, summary: dict) -> None: ...


@dataclass
class RunOutcome:
    run_dir: Path
    summary: dict

    @property
    def ok(self) -> bool:
        return self.summary["status"] == schema.STATUS_OK


def _pack(run_dir: Path) -> dict:
    """Per-node files in place of per-rank ones (sample_files.pack_per_node); a failure leaves the
    per-rank files, which read the same, and says why."""
    try:
        files = pack_per_node(run_dir)
    except (OSError, ValueError) as e:
        return {"files": [], "error": f"left the per-rank files: {e}"}
    return {"files": [str(p.relative_to(run_dir)) for p in files]}


def default_run_name(spec: RunSpec) -> str:
    return f"{timestamp()}-{spec.workload}-{spec.parallel}-{spec.nodes}x{spec.nproc}"


def rank_infos(run_dir: Path) -> list[dict]:
    return list(read_rank_infos(run_dir).values())


def _identity(spec: RunSpec) -> dict:
    """What a summary says of the run whatever its outcome."""
    return dict(workload=spec.workload, parallel=spec.parallel, launcher=spec.launcher, nodes=spec.nodes,
                nproc=spec.nproc, world_size=spec.world_size, batch_size_per_rank=spec.batch_size,
                global_batch=spec.global_batch, data_kind=spec.data.kind, precision=spec.precision,
                **({"target_accuracy": spec.target_accuracy} if spec.is_tta else {}))


def summarise(spec: RunSpec, run_dir: Path, ok: bool, reason: str | None, wall_s: float,
              failures: list[dict], launch_facts: dict) -> RunSummary:
    s = RunSummary(status=schema.STATUS_OK if ok else schema.STATUS_FAILED, run_id=run_dir.name, reason=reason,
                   wall_s=wall_s, launch={k: v for k, v in launch_facts.items() if k != "command"},
                   failures=failures, **_identity(spec))
    if not ok:
        return s
    infos = rank_infos(run_dir)
    if spec.is_tta:
        try:
            s.tta = run_tta(run_dir, spec.target_accuracy).to_dict()
        except (ValueError, OSError, KeyError) as e:
            s.status, s.reason = schema.STATUS_FAILED, f"event log unusable: {e}"
            return s
    try:
        s.metrics = run_metrics(reduce_run(run_dir))
    except (ValueError, OSError) as e:
        if spec.launcher == "torchft" and not isinstance(e, ResultsError):
            # Groups that lost a peer ran steps again, a healed one started late: their rows are the
            # drill's (faults/torchft_drill.py), not one synchronous window.
            s.metrics, s.metrics_note = None, f"no throughput window across replica groups: {e}"
        elif not spec.is_tta:
            s.status, s.reason = schema.STATUS_FAILED, f"samples unusable: {e}"
            return s
        else:  # a TTA run that reached its target within the warmup steps has no throughput window
            s.metrics, s.metrics_note = None, f"no throughput figures: {e}"
    s.init_s = max((i["init_s"] for i in infos), default=None)
    s.sample_unit = infos[0]["sample_unit"] if infos else "samples"
    s.parallelism = parallel_summary(run_dir, s.metrics)
    window_samples = s.metrics["global_batch"] * s.metrics["measured_steps"] if s.metrics else None
    s.gpu = run_gpu_summary(run_dir, window_samples, s.sample_unit,
                            {int(i["pid"]) for i in infos if i.get("pid") is not None})
    return s


def execute(spec: RunSpec, run_dir: Path | None = None, observer: RunObserver | None = None,
            label: str | None = None) -> RunOutcome:
    """Run one validated spec. run_dir: where to put it (made if missing); default the launcher's
    fixed folder (multi-node: OUT/RUN_ID, shared by all nodes) or a new folder under spec.out.
    observer: told of the run's start, progress and summary under label."""
    label = label or f"{spec.workload} {spec.parallel} {spec.nodes}x{spec.nproc}"
    on_progress = observer.run_started(label, spec.steps) if observer is not None else None
    outcome = _execute(spec, run_dir, on_progress)
    if observer is not None:
        observer.run_finished(label, outcome.summary)
    return outcome


def _execute(spec: RunSpec, run_dir: Path | None, on_progress: Callable[[dict], None] | None) -> RunOutcome:
    from trainscale.launchers.registry import LAUNCHERS

    launcher = LAUNCHERS.get(spec.launcher)
    fixed = launcher.run_dir_for(spec) if run_dir is None else None
    if not launcher.records_run(spec):
        # Another node writes the record; this one only runs its agent into the shared folder.
        run_dir = run_dir or fixed
        run_dir.mkdir(parents=True, exist_ok=True)
        result = launcher.launch(spec, run_dir, on_progress)
        return RunOutcome(run_dir, {"status": schema.STATUS_OK if result.ok else schema.STATUS_FAILED,
                                    "reason": result.reason, "recorded_by_another_node": True})
    if fixed is not None:
        # Other nodes may have made the folder for their logs already; a config means an earlier run.
        if (fixed / schema.CONFIG).exists():
            raise SpecError(f"results folder {fixed} already holds a run: choose another --run-id")
        fixed.mkdir(parents=True, exist_ok=True)
        run_dir = fixed
    elif run_dir is None:
        run_dir = new_run_dir(Path(spec.out), default_run_name(spec))
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
    if spec.fault.trace and Path(spec.fault.trace).resolve() != (run_dir / TRACE_FILE).resolve():
        # The run keeps its own copy of the trace: what its ranks fire, and what --trace replays.
        shutil.copyfile(spec.fault.trace, run_dir / TRACE_FILE)
        own_copy = str((run_dir / TRACE_FILE).resolve())
        spec = dataclasses.replace(spec, fault=dataclasses.replace(spec.fault, trace=own_copy))
    config = spec.to_dict()
    write_json_atomic(run_dir / schema.CONFIG, config)
    prov = provenance.collect(config)
    write_json_atomic(run_dir / schema.PROVENANCE, prov)
    write_json_atomic(run_dir / schema.SUMMARY, RunSummary(status=schema.STATUS_STARTED, run_id=run_dir.name,
                                                           started_utc=prov["time_utc"], orchestrator=process_identity(),
                                                           **_identity(spec)).to_dict())
    t0 = time.monotonic()
    try:
        result = launcher.launch(spec, run_dir, on_progress)
    except (Stopped, KeyboardInterrupt) as e:  # the launch stopped every process of the run on its way out
        name = e.name if isinstance(e, Stopped) else "SIGINT"
        stopped = summarise(spec, run_dir, False, f"stopped by {name}{launcher.stop_note(spec, name)}",
                            time.monotonic() - t0, [], {"stopped_by": name})
        stopped.status = schema.STATUS_STOPPED
        write_json_atomic(run_dir / schema.SUMMARY, stopped.to_dict())
        launcher.after_record(spec, run_dir, stopped.to_dict())
        launcher.stopped(spec, name)
        e.handled = True  # a sweep around this run need not tell the launcher again
        raise
    ok, reason, failures, facts = result.ok, result.reason, result.failures, result.facts
    summary = summarise(spec, run_dir, ok, reason, time.monotonic() - t0, failures, facts).to_dict()
    prov["launch"] = facts
    infos = rank_infos(run_dir)
    prov["ranks"] = [{k: i.get(k) for k in ("rank", "node_rank", "local_rank", "hostname", "node_name", "addresses", "pid",
                                              "threads", "device", "cpu_model", "cores", "memory_bytes")}
                     for i in infos]
    prov["hostnames"] = sorted({r["hostname"] for r in prov["ranks"] if r.get("hostname")})
    if infos and infos[0].get("step_options"):  # precision, TF32, autocast, scaler, channels_last, compile
        prov["step_options"] = infos[0]["step_options"]
        prov["step_timing"] = infos[0].get("step_timing")
    if "emulated_cluster" in facts:
        prov["emulated_cluster"] = facts["emulated_cluster"]
    # Drills keep per-rank files: recovery analysis reads every attempt's rows (samples/attempts/).
    if summary["status"] == schema.STATUS_OK and spec.fault.kind == "none" and \
            should_pack(spec.results.pack, spec.world_size):
        prov["packed"] = _pack(run_dir)
    write_json_atomic(run_dir / schema.PROVENANCE, prov)
    write_json_atomic(run_dir / schema.SUMMARY, summary)
    launcher.after_record(spec, run_dir, summary)
    return RunOutcome(run_dir, summary)
