"""Multi-node Ray for real: a Ray head on one emulated node and a Ray worker node on another (`ray
start` inside each network namespace, each with its own hostname), and `trainscale run` / `sweep
--launcher ray --ray-address` run from the head node, as on a Ray cluster. One rank per node, the
gradients crossing the emulated link, failures named by node. `cluster down` stops the Ray
daemons with the nodes; the test checks that nothing is left."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainscale.launchers import emulated_cluster as cluster_mod
from trainscale.launchers import namespaces as netns
from trainscale.scaling.results import schema
from .conftest import TINY_RESNET, read_json, run_cli

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not netns.has_net_admin(), reason="needs root (network namespaces)")]

NAME = f"ray{os.getpid() % 100000}"
RAY_PORT = 6380  # inside the head node's namespace: no other process there
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
STEPS = ["--steps", "6", "--warmup", "2", "--batch-size", "4", *TINY_RESNET]


def on_node(node: cluster_mod.Node, *cmd: str, timeout: float = 300, hostname: bool = False,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """A command inside an emulated node's namespace (every client of a node address runs in one)."""
    return subprocess.run([*netns.enter_command(node.netns, node.hostname if hostname else None), *cmd],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **RAY_ENV, **(env or {})})


def ts_on(node: cluster_mod.Node, *args: str, timeout: float = 540) -> subprocess.CompletedProcess:
    # The collectives bind to the node's interface (its hostname resolves nowhere); the driver hands
    # GLOO_* settings to every Ray worker.
    return on_node(node, sys.executable, "-m", "trainscale.scaling", *args, timeout=timeout,
                   env={"GLOO_SOCKET_IFNAME": node.interface})


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """Two emulated nodes, a Ray head on node1 and a Ray worker node on node2; all of it removed at
    the end whatever happened, and checked to be gone."""
    state = tmp_path_factory.mktemp("state")
    env = {"TRAINSCALE_STATE_DIR": str(state)}
    sessions = [Path(f"/tmp/ts-ray-mn{os.getpid()}-{i}") for i in (1, 2)]  # short: Ray's unix sockets
    up = run_cli("cluster", "up", "--nodes", "2", "--name", NAME, env=env, timeout=300)
    try:
        assert up.returncode == 0, up.stderr
        os.environ["TRAINSCALE_STATE_DIR"] = str(state)
        cluster = cluster_mod.load(NAME)
        head, worker = cluster.nodes
        ray = str(Path(sys.executable).parent / "ray")
        started = on_node(head, ray, "start", "--head", f"--port={RAY_PORT}", f"--node-ip-address={head.address}",
                          "--num-cpus=2", f"--temp-dir={sessions[0]}", "--include-dashboard=false", hostname=True)
        assert started.returncode == 0, started.stderr[-2000:]
        joined = on_node(worker, ray, "start", f"--address={head.address}:{RAY_PORT}",
                         f"--node-ip-address={worker.address}", "--num-cpus=2", f"--temp-dir={sessions[1]}",
                         hostname=True)
        assert joined.returncode == 0, joined.stderr[-2000:]
        yield cluster
    finally:
        os.environ.pop("TRAINSCALE_STATE_DIR", None)
        down = run_cli("cluster", "down", "--name", NAME, env=env, timeout=120)
        assert down.returncode == 0, down.stderr
        leftovers = [p for p in Path("/proc").glob("[0-9]*/cmdline")
                     if any(str(s).encode() in _read(p) for s in sessions)]
        for s in sessions:
            subprocess.run(["rm", "-rf", str(s)], timeout=60)
        assert leftovers == [], "Ray processes outlived cluster down"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_a_sweep_over_one_and_two_ray_nodes_places_one_rank_per_node(ray_cluster, tmp_path: Path):
    head, worker = ray_cluster.nodes
    sent_before = netns.link_bytes(worker.netns, worker.interface)[0]
    proc = ts_on(head, "sweep", "--launcher", "ray", "--ray-address", f"{head.address}:{RAY_PORT}",
                 "--nodes", "1,2", "--nproc", "1", *STEPS, "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    sent = netns.link_bytes(worker.netns, worker.interface)[0] - sent_before
    sweep_dir = Path(proc.stdout.strip().splitlines()[-1])
    one = read_json(sweep_dir / "runs" / "1x1-r0" / schema.SUMMARY)
    two = read_json(sweep_dir / "runs" / "2x1-r0" / schema.SUMMARY)
    assert one["status"] == two["status"] == "ok" and one["launcher"] == two["launcher"] == "ray"
    assert two["nodes"] == 2 and two["world_size"] == 2
    assert two["launch"]["placement_strategy"] == "STRICT_SPREAD"
    # One rank on each Ray node (each named by its node's hostname), as the record and the ranks say.
    assert two["launch"]["placement"] == {head.hostname: [0], worker.hostname: [1]} or \
        two["launch"]["placement"] == {head.hostname: [1], worker.hostname: [0]}
    prov = read_json(sweep_dir / "runs" / "2x1-r0" / schema.PROVENANCE)
    assert sorted(r["hostname"] for r in prov["ranks"]) == sorted([head.hostname, worker.hostname])
    by_host = {r["hostname"]: r for r in prov["ranks"]}
    assert head.address in by_host[head.hostname]["addresses"]
    assert worker.address in by_host[worker.hostname]["addresses"]
    assert len(one["launch"]["placement"]) == 1
    # The 2-node run's gradients crossed the emulated link: node2 sent at least a gradient per step.
    grad_bytes = two["parallelism"]["per_rank"]["0"]["comm_by_kind"]["all_reduce"]["payload_bytes"]
    assert sent > grad_bytes * two["metrics"]["measured_steps"], (sent, grad_bytes)
    report = read_json(sweep_dir / "report" / "report.json")
    assert [(r["world_size"], r["nodes"], r["runs_ok"]) for r in report["rows"]] == [(1, 1, 1), (2, 2, 1)]


def test_a_killed_rank_on_the_worker_node_is_named_with_its_node(ray_cluster, tmp_path: Path):
    head, worker = ray_cluster.nodes
    proc = ts_on(head, "run", "--launcher", "ray", "--ray-address", f"{head.address}:{RAY_PORT}", "--nodes", "2",
                 "--nproc", "1", *STEPS, "--set", "fault.kind=kill-rank", "--set", "fault.rank=1",
                 "--set", "fault.at_step=3", "--out", str(tmp_path))
    assert proc.returncode == 1, proc.stderr[-3000:]
    summary = read_json(Path(proc.stdout.strip().splitlines()[-1]) / schema.SUMMARY)
    assert summary["status"] == "failed"
    rank1_host = next(h for h, ranks in summary["launch"]["placement"].items() if 1 in ranks)
    first = summary["failures"][0]
    assert first["rank"] == 1 and first["host"] == rank1_host
    assert summary["reason"].startswith(f"rank 1 (local rank 0 on {rank1_host})"), summary["reason"]


def test_more_nodes_than_the_ray_cluster_has_is_a_recorded_failure(ray_cluster, tmp_path: Path):
    head, _ = ray_cluster.nodes
    proc = ts_on(head, "run", "--launcher", "ray", "--ray-address", f"{head.address}:{RAY_PORT}", "--nodes", "3",
                 "--nproc", "1", *STEPS, "--out", str(tmp_path))
    assert proc.returncode == 1, proc.stderr[-3000:]
    summary = read_json(Path(proc.stdout.strip().splitlines()[-1]) / schema.SUMMARY)
    assert summary["status"] == "failed"
    assert "has 2 alive node(s); --nodes 3 needs 3" in summary["reason"], summary["reason"]


def test_several_nodes_without_a_ray_cluster_is_refused(cli, tmp_path: Path):
    proc = cli("run", "--launcher", "ray", "--nodes", "2", "--nproc", "1", *STEPS, "--out", str(tmp_path))
    assert proc.returncode == 2 and "needs --ray-address" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not any(tmp_path.iterdir())
