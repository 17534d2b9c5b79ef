"""Emulated nodes for real: network namespaces on a bridge with shaped links, torchrun agents inside
them talking over TCP. Needs root (CI runs as root); everything is torn down even when a test fails,
and the teardown itself is checked (no namespace, guard route or state file left)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainscale.scaling.results import schema
from trainscale.launchers import emulated_cluster as cluster_mod
from trainscale.launchers import namespaces as netns
from .conftest import TINY_RESNET, read_json, run_cli

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not netns.has_net_admin(), reason="needs root (network namespaces)")]

NAME = f"t{os.getpid() % 100000}"
STEPS = ["--steps", "6", "--warmup", "2", "--batch-size", "4"]


def ts(*args: str, state: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=timeout, env={"TRAINSCALE_STATE_DIR": str(state)})


def ours(name: str) -> list[str]:
    switch, node_prefix = cluster_mod.netns_names(name)
    return [ns for ns in netns.list_netns() if ns == switch or ns.startswith(node_prefix)]


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module")
def cluster2(state_dir: Path):
    """Two emulated nodes with 1 Gbit/s links, removed at the end whatever happened."""
    up = ts("cluster", "up", "--nodes", "2", "--bandwidth", "1gbit", "--name", NAME, state=state_dir)
    try:
        assert up.returncode == 0, up.stderr
        os.environ["TRAINSCALE_STATE_DIR"] = str(state_dir)
        yield cluster_mod.load(NAME)
    finally:
        os.environ.pop("TRAINSCALE_STATE_DIR", None)
        down = ts("cluster", "down", "--name", NAME, state=state_dir)
        assert down.returncode == 0, down.stderr
        assert ours(NAME) == []
        assert not (state_dir / "clusters" / f"{NAME}.json").exists()


def test_cluster_up_builds_shaped_links_and_guards_the_subnet(cluster2, state_dir: Path):
    status = ts("cluster", "status", "--json", state=state_dir)
    assert status.returncode == 0, status.stderr
    [entry] = [c for c in json.loads(status.stdout) if c["name"] == NAME]
    assert entry["complete"] and entry["problems"] == [] and len(entry["nodes"]) == 2
    assert sorted(ours(NAME)) == sorted([cluster2.switch_netns, *(n.netns for n in cluster2.nodes)])
    # Both directions of every link are shaped to 1 Gbit/s.
    for n in cluster2.nodes:
        assert "tbf" in netns.qdisc(n.netns, n.interface) and "rate 1Gbit" in netns.qdisc(n.netns, n.interface)
        assert "rate 1Gbit" in netns.qdisc(cluster2.switch_netns, n.switch_port)
    # The root namespace holds no cluster address, and its route for the subnet is 'unreachable'.
    root_addrs = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, timeout=10).stdout
    assert all(n.address not in root_addrs.split() and f"{n.address}/" not in root_addrs for n in cluster2.nodes)
    route = subprocess.run(["ip", "route", "get", cluster2.nodes[0].address], capture_output=True, text=True,
                           timeout=10)
    assert route.returncode != 0 or "unreachable" in route.stdout


def test_two_node_run_records_each_node(cluster2, tmp_path: Path):
    proc = run_cli("run", "--nodes", "2", "--nproc", "1", "--cluster", NAME, *STEPS, "--out", str(tmp_path),
                   *TINY_RESNET, timeout=300)
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    summary = read_json(run_dir / schema.SUMMARY)
    assert summary["status"] == "ok" and summary["world_size"] == 2 and summary["nodes"] == 2
    prov = read_json(run_dir / schema.PROVENANCE)
    by_rank = {r["rank"]: r for r in prov["ranks"]}
    expected = {n.hostname: n.address for n in cluster2.nodes}
    # Every rank ran on its own node: own hostname, and the node's address among its interfaces.
    assert sorted(r["hostname"] for r in by_rank.values()) == sorted(expected)
    for r in by_rank.values():
        assert expected[r["hostname"]] in r["addresses"]
    assert prov["hostnames"] == sorted(expected)
    emu = prov["emulated_cluster"]
    assert emu["name"] == NAME and emu["bandwidth"] == "1gbit" and emu["physical_host"]
    assert [(n["hostname"], n["address"]) for n in emu["nodes"]] == [(n.hostname, n.address) for n in cluster2.nodes]
    # Gradients crossed the shaped links: each node sent at least one gradient's worth per step.
    assert all(n["link_tx_bytes"] > 100_000 for n in emu["nodes"]), emu["nodes"]
    assert summary["launch"]["rdzv_endpoint"] == f"{cluster2.nodes[0].address}:29400"
    for rank in (0, 1):
        assert schema.samples_path(run_dir, rank).exists()
    rep = run_cli("report", str(run_dir), timeout=120)
    assert rep.returncode == 0, rep.stderr
    report = (run_dir / "report" / "report.md").read_text()
    assert "Emulated nodes" in report


def test_a_failing_rank_is_named_with_its_node(cluster2, tmp_path: Path):
    proc = run_cli("run", "--nodes", "2", "--nproc", "1", "--cluster", NAME, *STEPS, "--out", str(tmp_path),
                   *TINY_RESNET, "--set", "fault.kind=kill-rank", "--set", "fault.rank=1", "--set",
                   "fault.at_step=3", timeout=300)
    assert proc.returncode == 1, proc.stderr
    summary = read_json(Path(proc.stdout.strip().splitlines()[-1]) / schema.SUMMARY)
    assert summary["status"] == "failed"
    first = summary["failures"][0]
    assert first["rank"] == 1 and first["signal"] == "SIGKILL"
    node = first["host"]
    assert node in {n.hostname for n in cluster2.nodes}
    assert summary["reason"].startswith(f"rank 1 (local rank 0 on {node}) killed by SIGKILL"), summary["reason"]


def test_torchrun_launcher_on_two_nodes_as_users_run_it(cluster2, tmp_path: Path):
    """The multi-node torchrun path exactly as on a cluster: the same `trainscale run` on each node
    (here: inside each node's namespace), node rank 0 hosting the c10d rendezvous."""
    n1, n2 = cluster2.nodes
    procs = []
    for rank, node in enumerate((n1, n2)):
        cmd = [*netns.enter_command(node.netns), sys.executable, "-m", "trainscale.scaling", "run",
               "--launcher", "torchrun", "--nodes", "2", "--nproc", "1", "--rdzv-endpoint", f"{n1.address}:29500",
               "--run-id", "tr1", "--out", str(tmp_path), "--node-rank", str(rank), "--local-addr", node.address,
               *STEPS, *TINY_RESNET]
        env = {**os.environ, "GLOO_SOCKET_IFNAME": node.interface}
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    run_dir = tmp_path / "tr1"
    summary = read_json(run_dir / schema.SUMMARY)
    assert summary["status"] == "ok" and summary["launcher"] == "torchrun" and summary["world_size"] == 2
    prov = read_json(run_dir / schema.PROVENANCE)
    addresses = {a for r in prov["ranks"] for a in r["addresses"]}
    assert {n1.address, n2.address} <= addresses
    assert (run_dir / "logs" / "agent-node0.log").exists() and (run_dir / "logs" / "agent-node1.log").exists()


def test_more_nodes_than_the_cluster_has_is_one_line_exit_2(cluster2, tmp_path: Path):
    proc = run_cli("run", "--nodes", "3", "--nproc", "1", "--cluster", NAME, "--out", str(tmp_path / "r"),
                   timeout=120)
    assert proc.returncode == 2
    assert f"--nodes 3 but emulated cluster '{NAME}' has 2 node(s)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_no_cluster_up_is_one_line_exit_2(tmp_path: Path):
    proc = ts("run", "--nodes", "2", "--cluster", "nosuch", "--out", str(tmp_path / "r"), state=tmp_path / "s")
    assert proc.returncode == 2 and "'nosuch' is not up" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def _guard_routes() -> str:
    return subprocess.run(["ip", "route", "show", "type", "unreachable"], capture_output=True, text=True,
                          timeout=10).stdout


def test_latency_without_netem_is_refused_and_leaves_nothing(tmp_path: Path):
    name = f"l{os.getpid() % 100000}"
    routes = _guard_routes()
    proc = ts("cluster", "up", "--nodes", "2", "--latency", "1ms", "--name", name, state=tmp_path)
    try:
        if proc.returncode == 0:  # a kernel with netem: the delay must really be there
            state = cluster_mod.ClusterState.from_dict(read_json(tmp_path / "clusters" / f"{name}.json"))
            assert "netem" in netns.qdisc(state.nodes[0].netns, "eth0")
            return
        assert proc.returncode == 2 and "no netem qdisc" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert ours(name) == [] and _guard_routes() == routes
        assert not (tmp_path / "clusters" / f"{name}.json").exists()
    finally:
        ts("cluster", "down", "--name", name, state=tmp_path)


def test_cluster_down_removes_namespaces_route_and_state(tmp_path: Path):
    name = f"d{os.getpid() % 100000}"
    routes = _guard_routes()
    try:
        up = ts("cluster", "up", "--nodes", "1", "--bandwidth", "100mbit", "--name", name, state=tmp_path)
        assert up.returncode == 0, up.stderr
        subnet = read_json(tmp_path / "clusters" / f"{name}.json")["subnet"]
        assert len(ours(name)) == 2 and subnet in _guard_routes()
    finally:
        down = ts("cluster", "down", "--name", name, state=tmp_path)
    assert down.returncode == 0, down.stderr
    assert ours(name) == [] and _guard_routes() == routes
    assert not (tmp_path / "clusters" / f"{name}.json").exists()
    again = ts("cluster", "down", "--name", name, state=tmp_path)
    assert again.returncode == 0 and "nothing to remove" in again.stderr
