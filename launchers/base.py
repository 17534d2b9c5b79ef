"""What every launcher shares: the launcher's component (capability row and checks), the launch
result, the supervision of agent processes (progress, timeout, killing what is left), the ordering and
description of failed ranks, the agents' environment and the threads each rank gets."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from trainscale.launchers import ownership
from trainscale.launchers.ownership import PARENT_PID_ENV
from trainscale.scaling.provenance import usable_cores
from trainscale.scaling.results import schema
from trainscale.scaling.results.files import read_json

if TYPE_CHECKING:
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
    lost_nodes: list[dict] = field(default_factory=list)  # agents gone while the others went on: node, exit code


class Launcher:
    name: str = ""
    summary: str = ""
    engine: str = ""  # the recovery engine of drills ("torchrun", "ray"); "" when drills cannot use it
    engine_label: str = ""  # how a drill record names that engine
    places_ranks_here: bool = True  # its ranks start on this machine (nccl: one visible GPU per process)

    def validate(self, spec: RunSpec) -> None:
        """ValueError naming the value when the run cannot be launched this way (before anything is written)."""
        if spec.backend == "nccl":
            check_visible_gpus(spec.nproc if self.places_ranks_here else 0)

    def records_run(self, spec: RunSpec) -> bool:
        """Whether this process writes the run record (multi-node torchrun: only node rank 0)."""
        return True

    def run_dir_for(self, spec: RunSpec) -> Path | None:
        """A fixed results folder (one all nodes share), or None for a new one under spec.out."""
        return None

    def launch(self, spec: RunSpec, run_dir: Path, on_progress: ProgressCallback | None = None) -> LaunchResult:
        raise NotImplementedError

    def after_record(self, spec: RunSpec, run_dir: Path, summary: dict) -> None:
        """What to do once the run's summary is written."""

    def stop_note(self, spec: RunSpec, signal_name: str) -> str:
        """What the record adds to "stopped by SIGNAL" (where, and what the signal means here)."""
        return ""

    def stopped(self, spec: RunSpec, signal_name: str) -> None:
        """A signal stopped this process's work and its records are written: what else to do (a node of
        a Slurm job that got the warning before its time limit requeues the job)."""


def requeue_this_job() -> bool:
    """Put the Slurm job this process runs in back in the queue (scontrol requeue; the job needs
    --requeue); whether Slurm took the request."""
    job = os.environ.get("SLURM_JOB_ID", "")
    if not job.isdigit() or shutil.which("scontrol") is None:
        return False
    try:
        return subprocess.run(["scontrol", "requeue", job], timeout=30).returncode == 0  # errors go to the job log
    except (OSError, subprocess.SubprocessError):  # the record is written; a requeue that fails is Slurm's to report
        return False


def check_visible_gpus(nproc: int) -> None:
    """NCCL needs CUDA, and (when the ranks start on this node) one visible GPU per process."""
    import torch

    if not torch.cuda.is_available():
        raise ValueError("backend 'nccl' needs CUDA GPUs and none is visible (use --backend gloo)")
    visible = torch.cuda.device_count()
    if nproc > visible:
        note = (f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r}" if "CUDA_VISIBLE_DEVICES" in os.environ
                else "CUDA_VISIBLE_DEVICES unset")
        raise ValueError(f"nproc {nproc} needs one GPU per process but {visible} CUDA GPU(s) are visible "
                         f"on this node ({note})")


def threads_per_rank(configured: int, ranks_here: int, inherit_env: bool = False) -> int:
    """CPU threads of each rank: the configured number; else (inherit_env) OMP_NUM_THREADS as a batch
    script set it; else this machine's usable cores divided by the ranks it runs, at least 1."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    if not configured and inherit_env and given.isdigit() and int(given) > 0:
        return int(given)
    return configured or max(1, usable_cores() // ranks_here)


def core_facts(threads: int, ranks_here: int) -> dict:
    """What a launch records of its CPU threads."""
    cores = usable_cores()
    return {"threads_per_rank": threads, "cores": cores, "oversubscribed": threads * ranks_here > cores}


def agent_env(threads: int, tmp: Path, max_restarts: int = 0) -> dict[str, str]:
    """The environment of a torchrun agent: its ranks' threads; a private TMPDIR (torchrun leaves files
    there); and, when it may restart them, no sharing of its rendezvous store with the workers:
    restarted gloo ranks would find the previous attempt's keys there and fail to connect or hang
    (pytorch/pytorch#135712; docs/platform-notes.md)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
    if max_restarts > 0:
        env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    return env


def worker_command(run_dir: Path) -> list[str]:
    """The rank's entry point; the folder absolute, so that the supervisor finds the workers by it."""
    return ["-m", "trainscale.scaling.runtime.worker", "--run-dir", str(Path(run_dir).resolve())]


def describe_failures(failures: list[dict]) -> str:
    """One line naming the first failed rank and why (failures come sorted, cause first)."""
    if not failures:
        return "workers failed without a failure record"
    f = failures[0]
    node = f.get("node")
    host = f"{f['host']} as {node}" if node and node != f["host"] else f["host"]  # several nodes on one host
    where = f"rank {f['rank']} (local rank {f['local_rank']} on {host})" if f["rank"] >= 0 else host
    if f.get("signal"):
        why = f"killed by {f['signal']}"
    elif f.get("message") and not f["message"].startswith("To enable traceback"):
        why = f"failed: {f['message'].splitlines()[-1]}"
    else:
        why = f"exited with code {f['exitcode']}"
    more = f" ({len(failures) - 1} more rank(s) failed after it)" if len(failures) > 1 else ""
    return f"{where} {why}{more}"


# Errors a rank gets because a peer died first: consequences, listed after the cause.
_PEER_LOSS = ("connection closed by peer", "connection reset by peer", "broken pipe", "connection refused",
              "distnetworkerror", "socket timeout", "rendezvousclosederror")


def is_peer_loss(failure: dict) -> bool:
    return not failure.get("signal") and any(p in str(failure.get("message", "")).lower() for p in _PEER_LOSS)


def order_failures(failures: list[dict]) -> list[dict]:
    """Cause first: ranks that died of their own error or a signal before ranks whose collectives broke
    because a peer had gone, each by time. Time alone cannot order them: torchrun records whole seconds,
    and a survivor's error can be stamped a second before the agent records the killed rank."""
    return sorted(failures, key=lambda f: (is_peer_loss(f), f.get("timestamp") or 0, f.get("agent_order", 0)))


@dataclass
class Agent:
    """One torchrun agent process: its command line and where it reports."""
    cmd: list[str]
    env: dict[str, str]
    failures_file: Path
    log_name: str = "agent.log"
    node: str = ""  # the node's name when there are several agents
    owned: bool = True  # this process is its parent (it dies with it); False: srun starts it on the nodes


FAILED_AGENT_GRACE_S = 20.0  # after one agent fails, how long the others get to fail or finish on their own


def run_agent(cmd: list[str], env: dict[str, str], run_dir: Path, timeout_s: float,
              on_progress: ProgressCallback | None, log_name: str = "agent.log") -> LaunchResult:
    """Start one agent process, follow rank 0's progress, enforce the timeout, read failures."""
    return run_agents([Agent(cmd, env, run_dir / schema.FAILURES, log_name)], run_dir, timeout_s, on_progress)


def run_agents(agents: list[Agent], run_dir: Path, timeout_s: float,
               on_progress: ProgressCallback | None, may_lose: int = 0) -> LaunchResult:
    """Start agents (one per node), follow rank 0's progress, enforce the timeout; when one agent
    fails, give the others FAILED_AGENT_GRACE_S, then kill them; merge every node's failure records.
    may_lose: agents (never the first: its node hosts the rendezvous) that may die while the others go
    on, as an elastic job loses a node; they are recorded as lost, and the run's outcome is the others'.
    However it ends (a Stopped signal or any error included), every process of the launch is stopped
    on the way out (launchers/ownership.py)."""
    logs = run_dir / schema.LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    procs: list[subprocess.Popen] = []
    exit_order: list[int] = []
    timed_out = False
    first_failure_at: float | None = None
    seen: set[tuple[int, int]] = set()  # every process of the launch seen so far (pid, start ticks)
    lost: list[int] = []
    try:
        for agent in agents:
            env = {**agent.env, PARENT_PID_ENV: str(os.getpid())} if agent.owned else agent.env
            with open(logs / agent.log_name, "w") as log:
                procs.append(subprocess.Popen(agent.cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                              start_new_session=True))
        while True:
            seen |= ownership.descendants(p.pid for p in procs)
            for i, proc in enumerate(procs):
                if i not in exit_order and proc.poll() is not None:
                    exit_order.append(i)
                    if proc.returncode != 0 and i > 0 and len(lost) < may_lose and len(exit_order) < len(procs):
                        lost.append(i)
                    elif proc.returncode != 0 and first_failure_at is None:
                        first_failure_at = time.monotonic()
            if len(exit_order) == len(procs):
                break
            now = time.monotonic()
            if now - t0 > timeout_s:
                timed_out = True
                break
            if first_failure_at is not None and now - first_failure_at > FAILED_AGENT_GRACE_S:
                break
            if on_progress and (run_dir / schema.PROGRESS).exists():
                try:
                    on_progress(read_json(run_dir / schema.PROGRESS))
                except (OSError, ValueError):
                    pass
            time.sleep(POLL_S)
    finally:
        seen |= ownership.descendants(p.pid for p in procs)
        _kill_groups([p for p in procs if p.poll() is None])
        ownership.stop_all(seen | ownership.mentioning(run_dir))
    wall = time.monotonic() - t0
    if timed_out:
        return LaunchResult(False, f"timed out after {timeout_s:g} s (timeout_s); all processes killed", wall)
    lost_nodes = [{"node": agents[i].node, "agent_exit_code": procs[i].returncode} for i in lost]
    if all(p.returncode == 0 for i, p in enumerate(procs) if i not in lost):
        return LaunchResult(True, None, wall, lost_nodes=lost_nodes)
    failures = []
    for order, i in enumerate(exit_order + [i for i in range(len(procs)) if i not in exit_order]):
        f = agents[i].failures_file
        if f.exists():
            extra = {"node": agents[i].node} if agents[i].node else {}
            failures += [{**rec, **extra, "agent_order": order} for rec in read_json(f)["failures"]]
    failures = order_failures(failures)
    if failures:
        return LaunchResult(False, describe_failures(failures), wall, failures)
    i = next((i for i in exit_order if procs[i].returncode != 0), exit_order[0] if exit_order else 0)
    where = f" on {agents[i].node}" if len(agents) > 1 else ""
    return LaunchResult(False, f"launcher{where} exited with code {procs[i].returncode} "
                               f"(see logs/{agents[i].log_name})", wall)


def _kill_groups(procs: list[subprocess.Popen]) -> None:
    """SIGTERM every agent's process group (torchrun then stops its workers), SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        for proc in procs:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        procs = [p for p in procs if p.poll() is None]
        if not procs:
            return


