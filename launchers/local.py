"""Local launch: torchrun with the standalone rendezvous on this machine, one agent, N processes.

Threads per rank default to the usable cores divided by the process count (at least 1); what was
chosen, and whether the cores are oversubscribed, is recorded with the run.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from trainscale.analysis import schema
from trainscale.analysis.files import read_json
from trainscale.scaling.provenance import usable_cores
from trainscale.scaling.spec import RunSpec

ProgressCallback = Callable[[dict], None]
POLL_S = 0.25
KILL_GRACE_S = 10.0


@dataclass
class LaunchResult:
    ok: bool
    reason: str | None
    wall_s: float
    failures: list[dict] = field(default_factory=list)
    facts: dict = field(default_factory=dict)  # what the launcher decided (threads, commands ...)


def threads_per_rank(spec: RunSpec) -> int:
    return spec.threads_per_rank or max(1, usable_cores() // spec.nproc)


def worker_command(run_dir: Path) -> list[str]:
    return ["-m", "trainscale.scaling.worker", "--run-dir", str(run_dir)]


def describe_failures(failures: list[dict]) -> str:
    """One line naming the first failed rank and why (failures are sorted by time)."""
    if not failures:
        return "workers failed without a failure record"
    f = failures[0]
    where = f"rank {f['rank']} (local rank {f['local_rank']} on {f['host']})"
    if f.get("signal"):
        why = f"killed by {f['signal']}"
    elif f.get("message") and not f["message"].startswith("To enable traceback"):
        why = f"failed: {f['message'].splitlines()[-1]}"
    else:
        why = f"exited with code {f['exitcode']}"
    more = f" ({len(failures) - 1} more rank(s) failed after it)" if len(failures) > 1 else ""
    return f"{where} {why}{more}"


def run_agent(cmd: list[str], env: dict[str, str], run_dir: Path, timeout_s: float,
              on_progress: ProgressCallback | None, log_name: str = "agent.log") -> LaunchResult:
    """Start one agent process, follow rank 0's progress, enforce the timeout, read failures."""
    logs = run_dir / schema.LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    failures_file = run_dir / schema.FAILURES
    t0 = time.monotonic()
    with open(logs / log_name, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        timed_out = False
        while proc.poll() is None:
            if time.monotonic() - t0 > timeout_s:
                timed_out = True
                _kill_group(proc)
                break
            if on_progress and (run_dir / schema.PROGRESS).exists():
                try:
                    on_progress(read_json(run_dir / schema.PROGRESS))
                except (OSError, ValueError):
                    pass
            time.sleep(POLL_S)
    wall = time.monotonic() - t0
    if timed_out:
        return LaunchResult(False, f"timed out after {timeout_s:g} s (timeout_s); all processes killed", wall)
    if proc.returncode == 0:
        return LaunchResult(True, None, wall)
    failures = read_json(failures_file)["failures"] if failures_file.exists() else []
    if failures:
        return LaunchResult(False, describe_failures(failures), wall, failures)
    return LaunchResult(False, f"launcher exited with code {proc.returncode} (see logs/{log_name})", wall)


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def launch(spec: RunSpec, run_dir: Path, on_progress: ProgressCallback | None = None) -> LaunchResult:
    threads = threads_per_rank(spec)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=run_dir))  # torchrun leaves files in TMPDIR
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "trainscale.launchers.agent", "--failures", str(run_dir / schema.FAILURES), "--",
           "--standalone", "--nnodes=1", f"--nproc-per-node={spec.nproc}", "--max-restarts=0",
           *worker_command(run_dir)]
    try:
        result = run_agent(cmd, env, run_dir, spec.timeout_s, on_progress)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cores = usable_cores()
    result.facts = {"threads_per_rank": threads, "cores": cores,
                    "oversubscribed": threads * spec.nproc > cores, "command": cmd}
    return result
