"""One ``trainscale comm`` sweep end to end: the folder, config and provenance, one torchrun launch
per world size through the local launcher's agent (so failed ranks are recorded as for training
runs), then the results recomputed from the raw files, and the summary written last.

The sweep fails (exit 1) when a launch fails or when any result element fails the check.
"""
from __future__ import annotations

import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from trainscale.scaling.results import schema
from trainscale.launchers.ownership import Stopped
from trainscale.scaling.results.records import CommSummary, process_identity
from trainscale.analysis.comm_report import write_comm_report
from trainscale.scaling.results.files import read_json, write_json_atomic
from trainscale.launchers.base import LaunchResult, agent_env, core_facts, run_agent, threads_per_rank

from trainscale.scaling import provenance
from trainscale.scaling.comm.spec import CommSpec
from trainscale.scaling.orchestration.runner import RunObserver
from trainscale.scaling.orchestration.folders import new_run_dir, timestamp


@dataclass
class CommOutcome:
    comm_dir: Path
    summary: dict
    results: dict

    @property
    def ok(self) -> bool:
        return self.summary["status"] == schema.STATUS_OK


def comm_provenance(config: dict) -> dict:
    return {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": provenance.versions(),
        "git": provenance.git_commit(),
        "config": config,
        "backend": config["backend"],
        "launcher": "local",
        "world_sizes": config["nproc"],
        "node_layout": {"nodes": 1, "procs_per_node": config["nproc"]},
        "orchestrator_host": provenance.host_facts(),
        "gpu": provenance.gpu_facts(),
        "env": provenance.relevant_env(),
        "platform": platform.platform(),
    }


def launch_world(spec: CommSpec, comm_dir: Path, nproc: int, on_progress=None) -> LaunchResult:
    world_dir = schema.comm_world_dir(comm_dir, nproc)
    world_dir.mkdir(parents=True, exist_ok=True)
    threads = threads_per_rank(spec.threads_per_rank, nproc)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=world_dir))  # torchrun leaves files in TMPDIR
    env = agent_env(threads, tmp)
    cmd = [sys.executable, "-m", "trainscale.launchers.agent", "--failures", str(world_dir / schema.FAILURES), "--",
           "--standalone", "--nnodes=1", f"--nproc-per-node={nproc}", "--max-restarts=0",
           "-m", "trainscale.scaling.comm.bench", "--config", str(comm_dir / schema.COMM_CONFIG),
           "--out", str(world_dir)]
    try:
        result = run_agent(cmd, env, world_dir, spec.timeout_s, on_progress)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result.facts = {**core_facts(threads, nproc), "command": cmd}
    return result


def default_name(spec: CommSpec) -> str:
    ops = spec.ops[0] if len(spec.ops) == 1 else f"{len(spec.ops)}ops"
    return f"{timestamp()}-comm-{ops}-{spec.dtype}"


def _verdict(doc: dict, launches: dict[int, LaunchResult]) -> tuple[bool, str | None]:
    for world, result in launches.items():
        if not result.ok:
            return False, f"world size {world}: {result.reason}"
    for world, w in doc["worlds"].items():
        if w["status"] != schema.STATUS_OK:
            return False, f"world size {world}: {w['reason']}"
    bad = [r for r in doc["results"] if r["wrong"]]
    if bad:
        first = bad[0]
        return False, (f"{doc['wrong_total']} result element(s) failed the correctness check in {len(bad)} size(s); "
                       f"first: {first['op']} {first['bytes']} B at world size {first['world_size']} "
                       f"({first['wrong']} wrong)")
    return True, None


def execute_comm(spec: CommSpec, observer: RunObserver | None = None) -> CommOutcome:
    """Run a validated CommSpec, one launch per world size (each reported to observer); results under
    a new folder in spec.out."""
    comm_dir = new_run_dir(Path(spec.out), default_name(spec))
    config = spec.to_dict()
    write_json_atomic(comm_dir / schema.COMM_CONFIG, config)
    prov = comm_provenance(config)
    write_json_atomic(comm_dir / schema.PROVENANCE, prov)
    write_json_atomic(comm_dir / schema.SUMMARY, CommSummary(status=schema.STATUS_STARTED, run_id=comm_dir.name,
                                                             started_utc=prov["time_utc"],
                                                             orchestrator=process_identity()).to_dict())
    t0 = time.monotonic()
    launches: dict[int, LaunchResult] = {}
    try:
        for nproc in spec.nproc:
            label = f"comm world {nproc}"
            on_progress = observer.run_started(label, len(spec.sizes()) * len(spec.ops_for_world(nproc))) \
                if observer else None
            launches[nproc] = r = launch_world(spec, comm_dir, nproc, on_progress)
            if observer:
                observer.run_finished(label, {"status": schema.STATUS_OK if r.ok else schema.STATUS_FAILED,
                                              "reason": r.reason, "wall_s": r.wall_s})
    except (Stopped, KeyboardInterrupt) as e:  # the launch stopped its processes on the way out
        write_json_atomic(comm_dir / schema.SUMMARY, CommSummary(
            status=schema.STATUS_STOPPED, run_id=comm_dir.name,
            reason=f"stopped by {e.name if isinstance(e, Stopped) else 'SIGINT'}", wall_s=time.monotonic() - t0).to_dict())
        raise
    doc = write_comm_report(comm_dir, {n: {"ok": r.ok, "reason": r.reason} for n, r in launches.items()})
    ok, reason = _verdict(doc, launches)
    prov["launch"] = {str(n): r.facts for n, r in launches.items()}
    prov["hostnames"] = sorted({read_json(p).get("hostname") for n in spec.nproc
                                for p in (schema.comm_world_dir(comm_dir, n) / schema.RANKS_DIR).glob("rank*.json")}
                               - {None})
    write_json_atomic(comm_dir / schema.PROVENANCE, prov)
    summary = CommSummary(
        status=schema.STATUS_OK if ok else schema.STATUS_FAILED, reason=reason, run_id=comm_dir.name, ops=spec.ops,
        world_sizes=spec.nproc, dtype=spec.dtype, backend=spec.backend, wall_s=time.monotonic() - t0,
        wrong_total=doc["wrong_total"],
        launches={str(n): {"ok": r.ok, "reason": r.reason, "wall_s": r.wall_s, "failures": r.failures,
                           **{k: v for k, v in r.facts.items() if k != "command"}}
                  for n, r in launches.items()}).to_dict()
    write_json_atomic(comm_dir / schema.SUMMARY, summary)
    return CommOutcome(comm_dir, summary, doc)
