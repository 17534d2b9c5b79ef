"""The torchft launcher (``--launcher torchft``, the drill engine ``torchft``): per-step fault
tolerance. It starts the run's Lighthouse (launchers/torchft_lighthouse.py), then the replica groups,
each under a torchrun agent of its own that restarts it when it fails (``--max-restarts``); a
restarted group heals from a healthy one while the others train on (scaling/runtime/torchft_loop.py).

  this machine       one group per process (``--nproc N``: N groups), all on loopback
  emulated cluster   one group per node (``--nodes N --nproc 1``), each inside its node's namespace
                     on the node's address; the Lighthouse runs on the cluster's switch (its own
                     address, on no node), so a lost or cut-off node never takes the quorum with it

Every address torchft uses or advertises is given here: the Lighthouse's bind address, each group's
store, Manager and state-transfer server (TRAINSCALE_FT_ADDR). The groups' files: logs/group-G.log,
failures-groupG.json and agent_events-groupG.jsonl (its agent's restarts), events-groupG.log,
samples/rankG.csv (rank G is group G, on node G of a cluster).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from trainscale.launchers import emulated
from trainscale.launchers import emulated_cluster as cluster
from trainscale.launchers import namespaces as netns
from trainscale.launchers.base import (Agent, LaunchResult, Launcher, ProgressCallback, agent_env, core_facts,
                                       run_agents, threads_per_rank, worker_command)
from trainscale.launchers.ownership import PARENT_PID_ENV
from trainscale.scaling.results import schema
from trainscale.scaling.results.files import read_json
from trainscale.scaling.runtime import torchft_loop
from trainscale.scaling.spec import SpecError

if TYPE_CHECKING:
    from trainscale.scaling.spec import RunSpec

LIGHTHOUSE_FILE = "lighthouse.json"
LIGHTHOUSE_START_S = 60.0
HEARTBEAT_TIMEOUT_MS = 500  # how soon the Lighthouse drops a dead group from the quorum: the survivors' stall
ADDRESS = "127.0.0.1"


@dataclass
class Site:
    """Where a process runs: the command prefix that puts it there, the address it serves on, and
    what else its environment needs (the interface gloo binds on an emulated node)."""
    name: str
    address: str
    prefix: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def replica_groups(spec: RunSpec) -> int:
    """One group per process on this machine, one per node on an emulated cluster (--nproc 1)."""
    return spec.world_size


def torchft_available() -> bool:
    try:
        import torchft  # noqa: F401
    except ImportError:
        return False
    return True


class TorchftLauncher(Launcher):
    name = "torchft"
    summary = "torchft replica groups on this machine: a Lighthouse, one torchrun agent per group (per-step fault tolerance)"
    engine, engine_label = "torchft", "torchft (Lighthouse quorum; a restarted group heals from a live peer)"

    def validate(self, spec: RunSpec) -> None:
        super().validate(spec)
        if emulated.uses_cluster(spec):
            if spec.nproc != 1:
                raise SpecError(f"--launcher torchft on an emulated cluster runs one replica group per node: "
                                f"--nproc 1, got --nproc {spec.nproc}")
            emulated.validate(spec)
        if spec.parallel != "ddp":
            raise SpecError(f"--launcher torchft trains with torchft's fault-tolerant DDP: --parallel ddp, "
                            f"got {spec.parallel!r}")
        if spec.backend != "gloo":
            raise SpecError(f"--launcher torchft runs over gloo here (--backend gloo), got {spec.backend!r}")
        if spec.is_tta:
            raise SpecError("--launcher torchft runs throughput runs (a step count), not time-to-accuracy runs")
        if spec.checkpoint.enabled or spec.checkpoint.resume_from:
            raise SpecError("--launcher torchft recovers from a live peer, not from checkpoints: "
                            "set --ckpt-every 0 (and no resume_from)")
        if spec.launch.max_restarts < 0:
            raise SpecError(f"--max-restarts must be 0 or more, got {spec.launch.max_restarts}")
        if not torchft_available():
            raise SpecError("--launcher torchft needs torchft: pip install 'trainscale[torchft]'")

    def launch(self, spec: RunSpec, run_dir: Path, on_progress: ProgressCallback | None = None) -> LaunchResult:
        groups = replica_groups(spec)
        threads = threads_per_rank(spec.threads_per_rank, groups)
        logs = run_dir / schema.LOGS_DIR
        logs.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with ExitStack() as stack:
            tmp = Path(tempfile.mkdtemp(prefix="trainscale-torchft-"))
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
            try:
                lighthouse_site, group_sites, facts = self._sites(spec, stack)
            except SpecError as e:  # another run holds the cluster
                return LaunchResult(False, str(e), 0.0)
            lighthouse, address = self._start_lighthouse(lighthouse_site, run_dir, logs, stack)
            if address is None:
                return LaunchResult(False, f"the torchft Lighthouse did not start (see logs/lighthouse.log; exit "
                                           f"code {lighthouse.poll()})", time.monotonic() - t0)
            agents = [self._agent(spec, run_dir, g, groups, threads, tmp, address, site)
                      for g, site in enumerate(group_sites)]
            result = run_agents(agents, run_dir, spec.timeout_s, on_progress)
        result.facts = {"replica_groups": groups, "lighthouse": address,
                        "heartbeat_timeout_ms": HEARTBEAT_TIMEOUT_MS, "max_restarts": spec.launch.max_restarts,
                        **core_facts(threads, groups), **facts(), "command": agents[0].cmd}
        return result

    @staticmethod
    def _sites(spec: RunSpec, stack: ExitStack) -> tuple[Site, list[Site], Callable[[], dict]]:
        """The Lighthouse's site, each group's, and the facts of where they ran (read after the run).
        On an emulated cluster the cluster is held for the run, the switch gets its service address,
        and on the way out every node's link is up again and the address gone."""
        if not emulated.uses_cluster(spec):
            return Site("localhost", ADDRESS), [Site(f"group{g}", ADDRESS) for g in range(spec.nproc)], dict
        name = emulated.cluster_name(spec)
        state = cluster.require(name, spec.nodes)
        nodes = state.nodes[:spec.nodes]
        stack.enter_context(cluster.in_use(name))
        service, prefixlen = cluster.service_address(state)
        netns.add_address(state.switch_netns, cluster.BRIDGE, service, prefixlen)
        stack.callback(netns.remove_address, state.switch_netns, cluster.BRIDGE, service, prefixlen)
        stack.callback(emulated.links_up, nodes)
        before = emulated.link_counters(nodes)
        lighthouse = Site(state.switch_netns, service, netns.enter_command(state.switch_netns))
        groups = [Site(n.hostname, n.address, netns.enter_command(n.netns, n.hostname),
                       {"GLOO_SOCKET_IFNAME": n.interface, "NCCL_SOCKET_IFNAME": n.interface}) for n in nodes]
        return lighthouse, groups, lambda: {"emulated_cluster": emulated.cluster_facts(state, nodes, before)}

    @staticmethod
    def _start_lighthouse(site: Site, run_dir: Path, logs: Path, stack: ExitStack) -> tuple[subprocess.Popen, str | None]:
        address_file = run_dir / LIGHTHOUSE_FILE
        cmd = [*site.prefix, sys.executable, "-m", "trainscale.launchers.torchft_lighthouse",
               "--bind", f"{site.address}:0", "--address-file", str(address_file.resolve()),
               "--heartbeat-timeout-ms", str(HEARTBEAT_TIMEOUT_MS)]
        env = {**os.environ, "RUST_LOG": "warn", PARENT_PID_ENV: str(os.getpid())}
        with open(logs / "lighthouse.log", "w") as log:
            lighthouse = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        stack.callback(_stop, lighthouse)
        return lighthouse, _wait_for_address(lighthouse, address_file)

    @staticmethod
    def _agent(spec: RunSpec, run_dir: Path, group: int, groups: int, threads: int, tmp: Path,
               lighthouse: str, site: Site) -> Agent:
        failures = run_dir / f"failures-group{group}.json"
        cmd = [*site.prefix, sys.executable, "-m", "trainscale.launchers.agent", "--failures", str(failures),
               "--events", str(run_dir / f"agent_events-group{group}.jsonl"), "--",
               "--standalone", "--nnodes=1", "--nproc-per-node=1", f"--max-restarts={spec.launch.max_restarts}",
               f"--local-addr={site.address}", *worker_command(run_dir)]
        group_tmp = tmp / f"group{group}"
        group_tmp.mkdir()
        env = {**agent_env(threads, group_tmp, spec.launch.max_restarts), **site.env, "RUST_LOG": "warn",
               torchft_loop.LIGHTHOUSE_ENV: lighthouse, torchft_loop.GROUP_ENV: str(group),
               torchft_loop.GROUPS_ENV: str(groups), torchft_loop.ADDRESS_ENV: site.address}
        return Agent(cmd, env, failures, log_name=f"group-{group}.log", node=site.name)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_address(lighthouse: subprocess.Popen, address_file: Path) -> str | None:
    deadline = time.monotonic() + LIGHTHOUSE_START_S
    while time.monotonic() < deadline and lighthouse.poll() is None:
        if address_file.exists():
            return read_json(address_file)["address"]
        time.sleep(0.05)
    return None
