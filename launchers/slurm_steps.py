"""The Slurm launcher: inside an sbatch allocation, each run is one srun step on the first --nodes nodes
of the allocation, one torchrun agent per node (the same command on every node; the agent takes its
node rank from SLURM_PROCID), joined through the c10d rendezvous on the step's first node at a fresh
port. The trainscale process (the batch script, on the allocation's first node) writes the run record;
every node's agent writes its log and failures into the run folder, which all nodes share.

A sweep run this way (``trainscale sweep --launcher slurm --nodes 1,2,4,8,16``) measures the whole
scaling curve in one job. Slurm's warning before the time limit (SIGUSR2, --signal=B:USR2@...) stops
the step, records the run as stopped and requeues the job; the requeued job resumes its sweep.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from trainscale.launchers.base import (Agent, LaunchResult, Launcher, ProgressCallback, agent_env, core_facts,
                                       describe_failures, requeue_this_job, run_agents)
from trainscale.launchers.torchrun import all_nodes_failures, torchrun_args
from trainscale.scaling.spec import SpecError

if TYPE_CHECKING:
    from trainscale.scaling.spec import RunSpec


def allocation_nodes() -> list[str]:
    """The job's nodes in Slurm's order (the first is the batch host)."""
    out = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def node_address(node: str) -> str:
    """The address Slurm reaches a node at (its NodeAddr)."""
    out = subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%o"], capture_output=True, text=True, timeout=30,
                         check=True).stdout.split()
    return out[0] if out else node


def free_port() -> int:
    """A port free on this host, the step's first node, where the rendezvous is hosted."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


_SRUN_TASK_ERROR = re.compile(r"^srun: error: (\S+): task (\d+): (.+)$", re.MULTILINE)


def lost_task(srun_log: Path) -> str | None:
    """When an agent itself died (killed, its node lost) it wrote no failure record; srun says which
    task (node rank) on which node ended first, and how."""
    try:
        m = _SRUN_TASK_ERROR.search(srun_log.read_text(errors="replace"))
    except OSError:
        return None
    if m is None:
        return None
    node, task, how = m.groups()
    return f"the agent on {node} (node rank {task}) ended first: {how.strip()} (srun; see logs/srun.log)"


class SlurmLauncher(Launcher):
    name = "slurm"
    summary = "inside an sbatch allocation: each run an srun step on the allocation's first --nodes nodes"
    places_ranks_here = False  # Slurm places them (and their GPUs) on the allocation's nodes

    def validate(self, spec: RunSpec) -> None:
        super().validate(spec)
        job = os.environ.get("SLURM_JOB_ID", "")
        if not job.isdigit() or "SLURM_JOB_NODELIST" not in os.environ:
            raise SpecError(f"--launcher slurm runs inside an sbatch allocation (SLURM_JOB_ID is {job!r}); "
                            "submit the command in a batch script, or use trainscale slurm render")
        if shutil.which("srun") is None:
            raise SpecError("--launcher slurm needs srun on the PATH")
        allocated = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
        if spec.nodes > allocated:
            raise SpecError(f"--nodes {spec.nodes} but the allocation (job {job}) has {allocated} node(s)")

    def launch(self, spec: RunSpec, run_dir: Path, on_progress: ProgressCallback | None = None) -> LaunchResult:
        nodes = allocation_nodes()[:spec.nodes]
        endpoint = f"{node_address(nodes[0])}:{free_port()}"
        multi = dataclasses.replace(spec, launch=dataclasses.replace(spec.launch, rdzv_endpoint=endpoint,
                                                                      run_id=run_dir.name))
        cpus = int(os.environ.get("SLURM_CPUS_PER_TASK", "0") or 0)
        threads = spec.threads_per_rank or max(1, (cpus or os.cpu_count() or 1) // spec.nproc)
        tmp = run_dir / ".tmp"  # torchrun leaves files in TMPDIR: in the shared folder, which every node reaches
        tmp.mkdir(exist_ok=True)
        agent = [sys.executable, "-m", "trainscale.launchers.agent", "--node-rank-from", "SLURM_PROCID",
                 "--failures", str(run_dir / "failures-node{node_rank}.json"),
                 "--events", str(run_dir / "agent_events-node{node_rank}.jsonl"),
                 "--", *torchrun_args(multi, run_dir, 0)]
        # --kill-on-bad-exit: a node whose agent gives up ends the step (the others would wait on it)
        srun = ["srun", f"--nodes={len(nodes)}", f"--ntasks={len(nodes)}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                f"--nodelist={','.join(nodes)}", f"--output={run_dir / 'logs' / 'agent-node%t.log'}",
                *([f"--cpus-per-task={cpus}"] if cpus else []), *agent]
        try:
            result = run_agents([Agent(srun, agent_env(threads, tmp, spec.launch.max_restarts),
                                       run_dir / "failures-node0.json", "srun.log", node=nodes[0], owned=False)],
                                run_dir, spec.timeout_s, on_progress)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if not result.ok:
            result.failures = all_nodes_failures(run_dir, nodes) or result.failures
            if result.failures:
                result.reason = describe_failures(result.failures)
            elif (lost := lost_task(run_dir / "logs" / "srun.log")) is not None:
                result.reason = lost
        result.facts = {**core_facts(threads, spec.nproc), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                        "slurm_nodes": nodes, "rdzv_endpoint": endpoint, "command": srun}
        return result

    def stop_note(self, spec: RunSpec, signal_name: str) -> str:
        return (" (Slurm's warning before the time limit, or a preemption notice: the job is requeued)"
                if signal_name == "SIGUSR2" else "")

    def stopped(self, spec: RunSpec, signal_name: str) -> None:
        if signal_name == "SIGUSR2":
            requeue_this_job()
