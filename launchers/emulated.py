"""A run on an emulated cluster (trainscale cluster up): one torchrun agent inside each node's
network namespace, with its own hostname, joined through the c10d rendezvous on node 1's address.
Ranks of different nodes talk over real TCP through the shaped veth links and the bridge.

This process (the orchestrator) stays in the root namespace and only starts the agents and reads
files; every process that uses a cluster address runs inside a node namespace. The nodes share
this machine's cores: threads per rank = cores / (nodes x processes per node), recorded with the run.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from typing import TYPE_CHECKING

from trainscale.launchers import emulated_cluster as cluster
from trainscale.launchers import namespaces as netns
from trainscale.launchers.base import (Agent, LaunchResult, ProgressCallback, agent_env, core_facts, run_agents,
                                       threads_per_rank)
from trainscale.launchers.torchrun import agent_command, min_nodes
from trainscale.scaling.spec import SpecError

if TYPE_CHECKING:
    from trainscale.scaling.spec import RunSpec

RDZV_PORT = 29400


def uses_cluster(spec: RunSpec) -> bool:
    """Runs on an emulated cluster: more than one node, or a cluster named explicitly."""
    return spec.nodes > 1 or bool(spec.launch.cluster)


def cluster_name(spec: RunSpec) -> str:
    return spec.launch.cluster or cluster.DEFAULT_NAME


def validate(spec: RunSpec) -> None:
    name = cluster.check_name(cluster_name(spec))
    state = cluster.require(name, spec.nodes)
    netns.require_root_and_tools(f"--nodes {spec.nodes} on emulated cluster '{name}'")
    problems = cluster.health(state)
    if problems:
        raise SpecError(f"emulated cluster '{name}' is broken ({problems[0]}); "
                        f"trainscale cluster down --name {name}, then up again")


def launch(spec: RunSpec, run_dir: Path, on_progress: ProgressCallback | None = None) -> LaunchResult:
    name = cluster_name(spec)
    state = cluster.require(name, spec.nodes)
    nodes = state.nodes[:spec.nodes]
    endpoint = f"{nodes[0].address}:{RDZV_PORT}"
    run_id = spec.launch.run_id or run_dir.name
    # The agents are torchrun's multi-node path exactly: only the rendezvous comes from the cluster.
    multi = dataclasses.replace(spec, launch=dataclasses.replace(spec.launch, rdzv_endpoint=endpoint,
                                                                  run_id=run_id))
    threads = threads_per_rank(spec.threads_per_rank, spec.nproc * spec.nodes)  # the nodes share this machine
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=run_dir))
    agents = []
    for node in nodes:
        rank = node.index - 1
        env = agent_env(threads, tmp, spec.launch.max_restarts)
        # gloo binds to the node's own interface (the shared hostname resolves to loopback).
        env.update(GLOO_SOCKET_IFNAME=node.interface, NCCL_SOCKET_IFNAME=node.interface)
        cmd = netns.enter_command(node.netns, node.hostname) + agent_command(multi, run_dir, rank, node.address)
        agents.append(Agent(cmd, env, run_dir / f"failures-node{rank}.json", f"agent-node{rank}.log",
                            node=node.hostname))
    before = link_counters(nodes)
    try:
        with cluster.in_use(name):
            result = run_agents(agents, run_dir, spec.timeout_s, on_progress, may_lose=spec.nodes - min_nodes(spec))
    except SpecError as e:  # another run holds the cluster
        result = LaunchResult(False, str(e), 0.0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        links_up(nodes)
    result.facts = {
        **core_facts(threads, spec.nproc * spec.nodes),
        "rdzv_endpoint": endpoint, "run_id": run_id,
        "emulated_cluster": cluster_facts(state, nodes, before),
        **({"lost_nodes": result.lost_nodes} if result.lost_nodes else {}),
        "command": [a.cmd for a in agents],
    }
    return result


def link_counters(nodes: list[cluster.Node]) -> dict[int, tuple[int, int]]:
    return {n.index: netns.link_bytes(n.netns, n.interface) for n in nodes}


def links_up(nodes: list[cluster.Node]) -> None:
    """A partition drill's link is up again, however the launch ended."""
    for n in nodes:
        netns.link_up(n.netns, n.interface)


def cluster_facts(state: cluster.ClusterState, nodes: list[cluster.Node], before: dict[int, tuple[int, int]]) -> dict:
    """The run record's description of the emulated cluster, with what went over each node's link
    since `before` (link_counters at the launch's start)."""
    import socket

    after = link_counters(nodes)
    return {"name": state.name, "subnet": state.subnet, "bandwidth": state.bandwidth,
            "bandwidth_bps": state.bandwidth_bps, "latency": state.latency, "physical_host": socket.gethostname(),
            "nodes": [{"node_rank": n.index - 1, "hostname": n.hostname, "address": n.address, "netns": n.netns,
                       "link_tx_bytes": after[n.index][0] - before[n.index][0],
                       "link_rx_bytes": after[n.index][1] - before[n.index][1]} for n in nodes]}
