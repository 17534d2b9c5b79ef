"""Multi-node torchrun: one agent per node, ranks found through the c10d rendezvous that node rank 0
hosts at --rdzv-endpoint.

On every node users run the same command with that node's rank (``--node-rank``, or NODE_RANK /
SLURM_NODEID from the environment); ``--dry-run`` prints it for each node:

    trainscale run --launcher torchrun --nodes 2 --nproc 8 --rdzv-endpoint node0:29400 \
        --run-id exp1 --out /shared/results --node-rank R ...

All nodes write into one results folder, OUT/RUN_ID, on a file system they share. Node rank 0 writes
the run record (config, provenance, summary); its config is what every worker reads (the rendezvous
cannot complete before node 0's agent joins, which is after the config is written). Each node's
agent writes logs/agent-nodeR.log and, when ranks fail, failures-nodeR.json.

SIGTERM and SIGUSR2 (Slurm's --signal warning before the time limit, or a preemption notice) stop
the node's agent and workers cleanly; node 0 records the run as stopped by that signal and, inside
a Slurm job, requeues it (``scontrol requeue``; the next attempt is RUN_ID with the restart count).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from typing import TYPE_CHECKING

from trainscale.launchers.base import (Agent, LaunchResult, Launcher, ProgressCallback, agent_env, core_facts,
                                       describe_failures, order_failures, requeue_this_job, run_agents,
                                       threads_per_rank, worker_command)
from trainscale.scaling.results import schema
from trainscale.scaling.results.files import read_json
from trainscale.scaling.spec import SpecError

if TYPE_CHECKING:
    from trainscale.scaling.spec import RunSpec

NODE_RANK_ENV = ("NODE_RANK", "SLURM_NODEID")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$|^\[[0-9A-Fa-f:.]+\]$")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def parse_endpoint(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not _HOST.match(host) or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise SpecError(f"--rdzv-endpoint must be HOST:PORT (node rank 0's address), got {text!r}")
    return host, int(port)


def check_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise SpecError(f"--run-id must be letters, digits, '.', '_' or '-' (at most 128), got {run_id!r}")
    return run_id


def node_rank(spec: RunSpec) -> int | None:
    if spec.launch.node_rank >= 0:
        return spec.launch.node_rank
    for name in NODE_RANK_ENV:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0 if spec.nodes == 1 else None


def check_multi_node(spec: RunSpec) -> None:
    if spec.launch.max_restarts < 0:
        raise SpecError(f"--max-restarts must be 0 or more, got {spec.launch.max_restarts}")
    if spec.launch.run_id:
        check_run_id(spec.launch.run_id)
    if spec.nodes == 1 and not spec.launch.rdzv_endpoint:
        return
    if not spec.launch.rdzv_endpoint:
        raise SpecError(f"--launcher torchrun with --nodes {spec.nodes} needs --rdzv-endpoint HOST:PORT "
                        "(an address of node rank 0, where the c10d rendezvous runs)")
    parse_endpoint(spec.launch.rdzv_endpoint)
    if not spec.launch.run_id:
        raise SpecError(f"--launcher torchrun with --nodes {spec.nodes} needs --run-id ID: every node writes "
                        "into OUT/ID (on a shared file system), and ID names the rendezvous")
    if spec.launch.local_addr and not _HOST.match(spec.launch.local_addr):
        raise SpecError(f"--local-addr must be a host name or address, got {spec.launch.local_addr!r}")
    rank = node_rank(spec)
    if rank is None:
        raise SpecError(f"--launcher torchrun with --nodes {spec.nodes} needs this node's rank: --node-rank R "
                        f"or {' / '.join(NODE_RANK_ENV)} in the environment")
    if not 0 <= rank < spec.nodes:
        raise SpecError(f"node rank must be 0..{spec.nodes - 1} for --nodes {spec.nodes}, got {rank}")


def failures_file(run_dir: Path, spec: RunSpec, rank: int) -> Path:
    return run_dir / (schema.FAILURES if spec.nodes == 1 else f"failures-node{rank}.json")


ELASTIC_LAST_CALL_S = 8


def min_nodes(spec: RunSpec) -> int:
    """The nodes the job can go on with: one fewer than --nodes when its fault takes a node away for
    good (fault.kind lose-node), so the rendezvous is elastic (--nnodes MIN:N); else all of them."""
    from trainscale.faults.kinds import FAULT_KINDS, NO_FAULT

    if spec.fault.kind != NO_FAULT and FAULT_KINDS.get(spec.fault.kind).shrinks_world:
        return spec.nodes - 1
    return spec.nodes


def torchrun_args(spec: RunSpec, run_dir: Path, rank: int, local_addr: str | None = None) -> list[str]:
    """torchrun's arguments on node `rank` (the same list on every node but for --node-rank and
    --local-addr). c10d assigns group ranks in join order; --node-rank names the node for us."""
    if spec.nodes == 1 and not spec.launch.rdzv_endpoint:
        rdzv = ["--standalone"]
    else:
        # is_host said outright: torch's guess resolves this machine's hostname, which emulated
        # nodes (and some clusters) cannot do; node rank 0 is where the endpoint is.
        conf = f"is_host={'true' if rank == 0 else 'false'}"
        if min_nodes(spec) < spec.nodes:
            # A round closes this long after its smallest number of nodes joined (at once when all did):
            # how long the nodes left wait for a lost one, and how late a node may join the first round.
            # A lost node's agent is dropped from the rendezvous after keep_alive_max_attempt missed
            # beats keep_alive_interval apart (default 3 x 5 s); 1 s apart finds it sooner.
            conf += f",last_call_timeout={ELASTIC_LAST_CALL_S},keep_alive_interval=1"
        rdzv = ["--rdzv-backend=c10d", f"--rdzv-endpoint={spec.launch.rdzv_endpoint}",
                f"--rdzv-id={spec.launch.run_id or 'trainscale'}", f"--rdzv-conf={conf}"]
    nnodes = str(spec.nodes) if min_nodes(spec) == spec.nodes else f"{min_nodes(spec)}:{spec.nodes}"
    args = [f"--nnodes={nnodes}", f"--node-rank={rank}", f"--nproc-per-node={spec.nproc}", *rdzv,
            f"--max-restarts={spec.launch.max_restarts}"]
    local_addr = local_addr or spec.launch.local_addr
    if local_addr:
        args.append(f"--local-addr={local_addr}")
    return args + worker_command(run_dir)


def agent_command(spec: RunSpec, run_dir: Path, rank: int, local_addr: str | None = None) -> list[str]:
    """The agent process: torchrun in trainscale's failure-recording wrapper (launchers/agent.py)."""
    return [sys.executable, "-m", "trainscale.launchers.agent", "--failures",
            str(failures_file(run_dir, spec, rank)), "--events", str(run_dir / f"agent_events-node{rank}.jsonl"),
            "--", *torchrun_args(spec, run_dir, rank, local_addr)]


class TorchrunLauncher(Launcher):
    name = "torchrun"
    summary = "one torchrun agent per real node (run the same command on every node, with its node rank)"

    def validate(self, spec: RunSpec) -> None:
        super().validate(spec)
        check_multi_node(spec)

    def records_run(self, spec: RunSpec) -> bool:
        return node_rank(spec) == 0

    def run_dir_for(self, spec: RunSpec) -> Path | None:
        return Path(spec.out) / spec.launch.run_id if spec.launch.run_id else None

    def launch(self, spec: RunSpec, run_dir: Path, on_progress: ProgressCallback | None = None) -> LaunchResult:
        rank = node_rank(spec)
        assert rank is not None  # validate() checked
        threads = threads_per_rank(spec.threads_per_rank, spec.nproc, inherit_env=True)  # a batch script's OMP_NUM_THREADS
        tmp = Path(tempfile.mkdtemp(prefix="trainscale-torchrun-"))  # node-local: torchrun leaves files in TMPDIR
        cmd = agent_command(spec, run_dir, rank)
        agent = Agent(cmd, agent_env(threads, tmp, spec.launch.max_restarts), failures_file(run_dir, spec, rank),
                      log_name="agent.log" if spec.nodes == 1 else f"agent-node{rank}.log", node=f"node{rank}")

        try:  # Slurm's warning before the time limit (SIGUSR2) stops the node as SIGTERM does (cli/main.py)
            result = run_agents([agent], run_dir, spec.timeout_s, on_progress if rank == 0 else None)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if rank == 0 and spec.nodes > 1 and not result.ok:
            result.failures = all_nodes_failures(run_dir)
            if result.failures:
                result.reason = describe_failures(result.failures)
        result.facts = {"node_rank": rank, "nodes": spec.nodes, "rdzv_endpoint": spec.launch.rdzv_endpoint or None,
                        "run_id": spec.launch.run_id or None, "max_restarts": spec.launch.max_restarts,
                        **core_facts(threads, spec.nproc), "command": cmd}
        return result

    def stop_note(self, spec: RunSpec, signal_name: str) -> str:
        return f" on node {node_rank(spec)} " + ("(Slurm's warning before the time limit, or a preemption notice)"
                                                 if signal_name == "SIGUSR2" else "(asked to terminate)")

    def stopped(self, spec: RunSpec, signal_name: str) -> None:
        """Inside a Slurm job, node rank 0 requeues a run stopped by SIGUSR2 once its record is written."""
        if signal_name == "SIGUSR2" and self.records_run(spec):
            requeue_this_job()


def all_nodes_failures(run_dir: Path, node_names: list[str] | None = None) -> list[dict]:
    """The failure records every node's agent wrote into the shared run folder (failures-nodeR.json),
    cause first; each names its node: node_names[R] when given, else nodeR."""
    failures = []
    for f in Path(run_dir).glob("failures-node*.json"):
        rank = f.stem.removeprefix("failures-node")
        if rank.isdigit():
            node = node_names[int(rank)] if node_names and int(rank) < len(node_names) else f"node{rank}"
            failures += [{**rec, "node": node} for rec in read_json(f)["failures"]]
    return order_failures(failures)


def dry_run(spec: RunSpec, argv: list[str]) -> str:
    """What to run on each node: the trainscale command (argv with --node-rank set), and the torchrun
    command it starts there. --local-addr is per node, so it is left for the user to add."""
    import dataclasses

    base = _without_flags(argv, {"--dry-run": 0, "--node-rank": 1, "--local-addr": 1})
    spec = dataclasses.replace(spec, launch=dataclasses.replace(spec.launch, local_addr=""))
    run_dir = TorchrunLauncher().run_dir_for(spec) or Path(spec.out) / "RUN_ID"
    where = (f"c10d rendezvous at {spec.launch.rdzv_endpoint} (node rank 0 hosts it)"
             if spec.launch.rdzv_endpoint else "standalone rendezvous")
    lines = [f"# {spec.nodes} node(s) x {spec.nproc} process(es) = world size {spec.world_size}; {where}; "
             f"results in {run_dir}" + (" (on a file system all nodes share)" if spec.nodes > 1 else ""),
             "# Add --local-addr ADDR on a node whose hostname does not resolve to an address the others reach."]
    for r in range(spec.nodes):
        lines.append(f"# node rank {r}:")
        lines.append(shlex.join(["trainscale", "run", *base, "--node-rank", str(r)]))
        lines.append("#   which starts: " + shlex.join(["torchrun", *torchrun_args(spec, run_dir, r)]))
    return "\n".join(lines)


def _without_flags(argv: list[str], flags: dict[str, int]) -> list[str]:
    """argv without the given flags (name -> number of values), in both --flag v and --flag=v forms."""
    out, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
            continue
        name = arg.split("=", 1)[0]
        if name in flags:
            skip = flags[name] if "=" not in arg else 0
            continue
        out.append(arg)
    return out
