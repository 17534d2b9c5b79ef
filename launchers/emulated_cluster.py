"""Emulated nodes: N network namespaces on one bridge, each link shaped, described by a state file.

    node i (1..N): namespace tsc-<name>-node<i>, interface eth0 with 10.77.K.i/24, hostname
                   tsc-<name>-node<i> for the processes started on it (a UTS namespace per launch)
    switch:        namespace tsc-<name>-sw with bridge br0 and one port per node (p<i>)
    links:         both directions of every node link shaped to --bandwidth (tbf on eth0 and on p<i>),
                   so a node sends and receives at most that rate, like a full-duplex NIC

The subnet 10.77.K.0/24 is the first K whose root-namespace guard route can be added (see netns.py),
so several clusters (or another tool's namespaces) never share one. The state file
(``$TRAINSCALE_STATE_DIR`` or /run/trainscale, ``clusters/<name>.json``) is written before the first
namespace and removed after the last, so ``cluster down`` can always clean up. A run holds the
cluster's lock file; ``cluster down`` refuses while it is held.
"""
from __future__ import annotations

import dataclasses
import fcntl
import ipaddress
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from trainscale.scaling.results.files import read_json, write_json_atomic
from trainscale.scaling.spec import SpecError

from trainscale.launchers import namespaces as netns
from trainscale.launchers import ownership
PREFIX = "tsc"
DEFAULT_NAME = "default"
SUBNET_POOL = "10.77.{k}.0/24"
MAX_NODES = 250
BRIDGE = "br0"
NODE_IF = "eth0"
_NAME = re.compile(r"^[a-z][a-z0-9]{0,15}$")


@dataclass
class Node:
    index: int  # 1-based; node rank = index - 1
    netns: str
    address: str
    hostname: str
    interface: str
    switch_port: str


@dataclass
class ClusterState:
    name: str
    subnet: str
    switch_netns: str
    bandwidth: str | None
    bandwidth_bps: int | None
    latency: str | None
    nodes: list[Node] = field(default_factory=list)
    created_utc: str = ""
    complete: bool = False  # False while being built (a crashed 'up' leaves this for 'down' to clean)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ClusterState":
        return cls(**{**d, "nodes": [Node(**n) for n in d.get("nodes", [])]})

    def describe(self) -> str:
        link = self.bandwidth or "unshaped"
        if self.latency:
            link += f", {self.latency} latency"
        return f"cluster '{self.name}': {len(self.nodes)} node(s) on {self.subnet}, links {link}"


def state_dir() -> Path:
    return Path(os.environ.get("TRAINSCALE_STATE_DIR", "/run/trainscale")) / "clusters"


def state_path(name: str) -> Path:
    return state_dir() / f"{name}.json"


def lock_path(name: str) -> Path:
    return state_dir() / f"{name}.lock"


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise SpecError(f"cluster name must be a lowercase letter then up to 15 lowercase letters or digits, "
                        f"got {name!r}")
    return name


def netns_names(name: str) -> tuple[str, str]:
    """(switch namespace, node namespace prefix) of a cluster."""
    return f"{PREFIX}-{name}-sw", f"{PREFIX}-{name}-node"


def load(name: str) -> ClusterState | None:
    path = state_path(check_name(name))
    return ClusterState.from_dict(read_json(path)) if path.exists() else None


def all_clusters() -> list[ClusterState]:
    d = state_dir()
    return [ClusterState.from_dict(read_json(p)) for p in sorted(d.glob("*.json"))] if d.is_dir() else []


def require(name: str, nodes: int) -> ClusterState:
    """The cluster a run with `nodes` nodes uses, or a SpecError saying what to do."""
    state = load(name)
    if state is None or not state.complete:
        raise SpecError(f"--nodes {nodes} with --launcher local needs an emulated cluster and '{name}' is not up "
                        f"(run as root: trainscale cluster up --nodes {nodes} --name {name}; on real nodes use "
                        "--launcher torchrun)")
    if nodes > len(state.nodes):
        raise SpecError(f"--nodes {nodes} but emulated cluster '{name}' has {len(state.nodes)} node(s) "
                        f"(trainscale cluster down --name {name}, then cluster up --nodes {nodes})")
    return state


def service_address(state: ClusterState) -> tuple[str, int]:
    """(address, prefix length) of the switch itself: the subnet's last host, never a node's. A
    cluster-wide service (torchft's Lighthouse) runs there, on no node, so losing or cutting off a
    node never takes it along."""
    subnet = ipaddress.ip_network(state.subnet)
    return str(subnet.broadcast_address - 1), subnet.prefixlen


def _save(state: ClusterState) -> None:
    write_json_atomic(state_path(state.name), state.to_dict())


def up(name: str, nodes: int, bandwidth: str | None = None, latency: str | None = None) -> ClusterState:
    check_name(name)
    if not 1 <= nodes <= MAX_NODES:
        raise SpecError(f"--nodes must be 1..{MAX_NODES}, got {nodes}")
    rate = netns.parse_rate(bandwidth) if bandwidth else None
    delay = netns.parse_delay(latency) if latency else None
    netns.require_root_and_tools("cluster up")
    if state_path(name).exists():
        raise SpecError(f"emulated cluster '{name}' is already up ({state_path(name)}); "
                        f"trainscale cluster down --name {name} first")
    switch, node_prefix = netns_names(name)
    stale = [ns for ns in netns.list_netns() if ns == switch or ns.startswith(node_prefix)]
    if stale:
        raise SpecError(f"namespaces of cluster '{name}' exist without its state file ({', '.join(stale)}); "
                        f"trainscale cluster down --name {name} removes them")
    subnet = _reserve_subnet()
    hosts = list(subnet.hosts())
    state = ClusterState(name=name, subnet=str(subnet), switch_netns=switch, bandwidth=bandwidth,
                         bandwidth_bps=rate, latency=latency,
                         created_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    try:
        _save(state)  # from here on, 'cluster down' can remove whatever exists
        netns.add_netns(switch)
        if delay and not netns.netem_available(switch):
            raise SpecError(f"--latency {latency}: this kernel has no netem qdisc, so link delay cannot be "
                            "emulated here (only --bandwidth shaping, with tbf, is available)")
        netns.add_bridge(switch, BRIDGE)
        for i in range(1, nodes + 1):
            node = Node(index=i, netns=f"{node_prefix}{i}", address=str(hosts[i - 1]),
                        hostname=f"{node_prefix}{i}", interface=NODE_IF, switch_port=f"p{i}")
            netns.add_netns(node.netns)
            netns.add_link(node.netns, NODE_IF, node.address, subnet.prefixlen, switch, node.switch_port, BRIDGE)
            # Half the one-way delay on each side: node -> switch -> node adds up to `latency`.
            half = delay / 2 if delay else None
            netns.shape(node.netns, NODE_IF, rate, half)
            netns.shape(switch, node.switch_port, rate, half)
            state.nodes.append(node)
        state.complete = True
        _save(state)
    except BaseException:
        _teardown(state)
        raise
    return state


def _reserve_subnet() -> ipaddress.IPv4Network:
    for k in range(256):
        subnet = ipaddress.ip_network(SUBNET_POOL.format(k=k))
        if netns.add_guard_route(subnet):
            return subnet
    raise SpecError("no free subnet in 10.77.0.0/16 for an emulated cluster")


def _teardown(state: ClusterState) -> list[str]:
    switch, node_prefix = netns_names(state.name)
    removed = [ns for ns in netns.list_netns() if ns == switch or ns.startswith(node_prefix)]
    stop_processes_on(removed)
    for ns in removed:
        netns.delete_netns(ns)
    netns.remove_guard_route(state.subnet)  # last: no namespace holds a cluster address any more
    state_path(state.name).unlink(missing_ok=True)
    return removed


def stop_processes_on(namespaces: list[str]) -> int:
    """Stop what still runs on the nodes (a Ray head and its workers started there, say): a deleted
    namespace lives on while a process holds it."""
    pids = [pid for ns in namespaces for pid in netns.processes_in(ns)]
    return ownership.stop_all((pid, ticks) for pid in pids if (ticks := ownership.start_ticks(pid)) is not None)


def down(name: str) -> list[str]:
    """Stop every process still on the cluster's nodes, remove its namespaces, its guard route and its
    state file; returns the namespaces removed. Refused while a run holds the cluster."""
    check_name(name)
    netns.require_root_and_tools("cluster down")
    state = load(name)
    switch, node_prefix = netns_names(name)
    if state is None:
        # No state: remove namespaces a crashed 'up' may have left (never a guard route we did not record).
        leftovers = [ns for ns in netns.list_netns() if ns == switch or ns.startswith(node_prefix)]
        stop_processes_on(leftovers)
        for ns in leftovers:
            netns.delete_netns(ns)
        return leftovers
    with _try_lock(name) as held:
        if not held:
            raise SpecError(f"emulated cluster '{name}' is in use by a run (lock {lock_path(name)}); "
                            "wait for it to end")
        removed = _teardown(state)
    lock_path(name).unlink(missing_ok=True)
    return removed


@contextmanager
def _try_lock(name: str) -> Iterator[bool]:
    lock_path(name).parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path(name), "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def in_use(name: str) -> Iterator[None]:
    """Held by a run for its whole launch: one run at a time per cluster, and no teardown under it."""
    with _try_lock(name) as held:
        if not held:
            raise SpecError(f"emulated cluster '{name}' is in use by another run")
        yield


def health(state: ClusterState) -> list[str]:
    """Problems with a cluster that is up (missing namespaces, missing guard route); empty if none."""
    present = set(netns.list_netns())
    problems = [f"namespace {ns} missing" for ns in [state.switch_netns, *(n.netns for n in state.nodes)]
                if ns not in present]
    if not netns.guard_route_present(state.subnet):
        problems.append(f"guard route 'unreachable {state.subnet}' missing from the root namespace")
    return problems
