"""The local launcher: torchrun with the standalone rendezvous on this machine, one agent, N processes;
with --nodes > 1 (or --cluster), one agent per node of an emulated cluster (launchers/emulated.py).

Threads per rank default to the usable cores divided by the process count (at least 1); what was
chosen, and whether the cores are oversubscribed, is recorded with the run.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from trainscale.launchers import emulated
from trainscale.launchers.base import (LaunchResult, Launcher, ProgressCallback, agent_env, core_facts, run_agent,
                                       threads_per_rank, worker_command)
from trainscale.scaling.results import schema

if TYPE_CHECKING:
    from trainscale.scaling.spec import RunSpec


class LocalLauncher(Launcher):
    name = "local"
    summary = "this machine, one torchrun agent (--nodes N: one agent per emulated node)"
    engine, engine_label = "torchrun", "torchrun elastic agent (--max-restarts)"

    def validate(self, spec: RunSpec) -> None:
        super().validate(spec)
        if emulated.uses_cluster(spec):
            emulated.validate(spec)

    def launch(self, spec: RunSpec, run_dir: Path, on_progress: ProgressCallback | None = None) -> LaunchResult:
        if emulated.uses_cluster(spec):
            return emulated.launch(spec, run_dir, on_progress)
        threads = threads_per_rank(spec.threads_per_rank, spec.nproc)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=run_dir))  # torchrun leaves files in TMPDIR
        cmd = [sys.executable, "-m", "trainscale.launchers.agent", "--failures", str(run_dir / schema.FAILURES),
               "--events", str(run_dir / schema.AGENT_EVENTS), "--",
               "--standalone", "--nnodes=1", f"--nproc-per-node={spec.nproc}",
               f"--max-restarts={spec.launch.max_restarts}", *worker_command(run_dir)]
        try:
            result = run_agent(cmd, agent_env(threads, tmp, spec.launch.max_restarts), run_dir, spec.timeout_s,
                               on_progress)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        result.facts = {**core_facts(threads, spec.nproc), "command": cmd}
        return result
