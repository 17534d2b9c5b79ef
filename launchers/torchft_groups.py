"""The torchft launcher (``--launcher torchft``, the drill engine ``torchft``): per-step fault
tolerance on this machine. It starts the run's Lighthouse (launchers/torchft_lighthouse.py), then one
replica group per process (``--nproc N``: N groups), each under a torchrun agent of its own that
restarts it when it fails (``--max-restarts``); a restarted group heals from a healthy one while the
others train on (scaling/runtime/torchft_loop.py).

Every address torchft uses or advertises is given here: the Lighthouse's bind address, each group's
store, Manager and state-transfer server (TRAINSCALE_FT_ADDR). The groups' files: logs/group-G.log,
failures-groupG.json and agent_events-groupG.jsonl (its agent's restarts), events-groupG.log,
samples/rankG.csv (rank G is group G).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

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
HEARTBEAT_TIMEOUT_MS = 1000  # how soon the Lighthouse drops a dead group from the quorum: the survivors' stall
ADDRESS = "127.0.0.1"


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
        if spec.nodes != 1 or spec.launch.cluster:
            raise SpecError(f"--launcher torchft runs its replica groups on this machine (--nodes 1), got --nodes "
                            f"{spec.nodes}")
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
        groups = spec.nproc
        threads = threads_per_rank(spec.threads_per_rank, groups)
        tmp = Path(tempfile.mkdtemp(prefix="trainscale-torchft-"))
        logs = run_dir / schema.LOGS_DIR
        logs.mkdir(parents=True, exist_ok=True)
        address_file = run_dir / LIGHTHOUSE_FILE
        lighthouse_cmd = [sys.executable, "-m", "trainscale.launchers.torchft_lighthouse", "--bind", f"{ADDRESS}:0",
                          "--address-file", str(address_file.resolve()),
                          "--heartbeat-timeout-ms", str(HEARTBEAT_TIMEOUT_MS)]
        env = {**os.environ, "RUST_LOG": "warn", PARENT_PID_ENV: str(os.getpid())}
        t0 = time.monotonic()
        with open(logs / "lighthouse.log", "w") as log:
            lighthouse = subprocess.Popen(lighthouse_cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True)
        try:
            address = _wait_for_address(lighthouse, address_file)
            if address is None:
                return LaunchResult(False, f"the torchft Lighthouse did not start (see logs/lighthouse.log; exit "
                                           f"code {lighthouse.poll()})", time.monotonic() - t0)
            agents = [self._agent(spec, run_dir, g, groups, threads, tmp, address) for g in range(groups)]
            result = run_agents(agents, run_dir, spec.timeout_s, on_progress)
        finally:
            if lighthouse.poll() is None:
                lighthouse.terminate()
                try:
                    lighthouse.wait(10)
                except subprocess.TimeoutExpired:
                    lighthouse.kill()
                    lighthouse.wait()
            shutil.rmtree(tmp, ignore_errors=True)
        result.facts = {"replica_groups": groups, "lighthouse": address,
                        "heartbeat_timeout_ms": HEARTBEAT_TIMEOUT_MS, "max_restarts": spec.launch.max_restarts,
                        **core_facts(threads, groups), "command": agents[0].cmd}
        return result

    @staticmethod
    def _agent(spec: RunSpec, run_dir: Path, group: int, groups: int, threads: int, tmp: Path,
               lighthouse: str) -> Agent:
        failures = run_dir / f"failures-group{group}.json"
        cmd = [sys.executable, "-m", "trainscale.launchers.agent", "--failures", str(failures),
               "--events", str(run_dir / f"agent_events-group{group}.jsonl"), "--",
               "--standalone", "--nnodes=1", "--nproc-per-node=1", f"--max-restarts={spec.launch.max_restarts}",
               *worker_command(run_dir)]
        group_tmp = tmp / f"group{group}"
        group_tmp.mkdir()
        env = {**agent_env(threads, group_tmp, spec.launch.max_restarts), "RUST_LOG": "warn",
               torchft_loop.LIGHTHOUSE_ENV: lighthouse, torchft_loop.GROUP_ENV: str(group),
               torchft_loop.GROUPS_ENV: str(groups), torchft_loop.ADDRESS_ENV: ADDRESS}
        return Agent(cmd, env, failures, log_name=f"group-{group}.log", node=f"group{group}")


def _wait_for_address(lighthouse: subprocess.Popen, address_file: Path) -> str | None:
    deadline = time.monotonic() + LIGHTHOUSE_START_S
    while time.monotonic() < deadline and lighthouse.poll() is None:
        if address_file.exists():
            return read_json(address_file)["address"]
        time.sleep(0.05)
    return None
